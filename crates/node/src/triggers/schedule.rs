//! Schedules: a function run by the clock, as a cron pattern or a fixed interval.
//!
//! Manifest keys: `schedule` (`every 5m`, or a cron pattern such as `*/5 * * * *`, seconds
//! optional), `schedule_tz` (a time zone of the system's database, such as `Europe/Rome`;
//! default UTC), `schedule_overlap` (`forbid`, the default: a tick is skipped while the
//! function's previous scheduled run is still going; or `allow`) and `schedule_args` (the
//! `args` each run gets; default the tick's time, RFC 3339).
//!
//! Every node computes the same ticks (intervals are aligned to the Unix epoch), and in a
//! cluster each tick is claimed once, through the cluster, before it runs: a tick fires once
//! per cluster, not once per node.

use std::time::Duration;

use clap::Args;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

/// The shortest interval a schedule may have: it bounds the load one manifest can cause.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The manifest's section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// `every DURATION` or a cron pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The time zone of a cron pattern; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_tz: Option<String>,
    /// Whether a tick may start while the previous run goes on.
    #[serde(default, skip_serializing_if = "is_forbid")]
    pub schedule_overlap: Overlap,
    /// What each run gets as `args`; the tick's time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_args: Option<String>,
}

/// Whether runs of one schedule may overlap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// A tick is skipped while the previous run goes on.
    #[default]
    Forbid,
    /// Every tick runs.
    Allow,
}

fn is_forbid(o: &Overlap) -> bool {
    *o == Overlap::Forbid
}

/// A parsed schedule: when it fires.
#[derive(Debug, Clone)]
pub enum When {
    /// Every multiple of this period since the Unix epoch.
    Every(Duration),
    /// A cron pattern in a time zone.
    Cron(Box<Cron>, TimeZone),
}

/// The keys and what each means.
pub const KEYS: &[(&str, &str)] = &[
    (
        "schedule",
        "Run the function by the clock: `every DURATION` (at least 100ms) or a cron pattern (seconds optional)",
    ),
    (
        "schedule_tz",
        "The time zone of a cron schedule, from the system's database (such as Europe/Rome); default UTC",
    ),
    (
        "schedule_overlap",
        "forbid (default: skip a tick while the previous run goes on) or allow",
    ),
    (
        "schedule_args",
        "The args each scheduled run gets; default the tick's time (RFC 3339)",
    ),
];

impl Schedule {
    /// Takes one of its keys.
    pub fn parse(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "schedule" => self.schedule = Some(value.trim().to_owned()),
            "schedule_tz" => self.schedule_tz = Some(value.trim().to_owned()),
            "schedule_overlap" => {
                self.schedule_overlap = match value {
                    "forbid" => Overlap::Forbid,
                    "allow" => Overlap::Allow,
                    other => {
                        return Err(format!(
                            "schedule_overlap={other:?}: expected forbid or allow"
                        ));
                    }
                }
            }
            _ => self.schedule_args = Some(value.to_owned()),
        }
        Ok(())
    }

    /// Checks the section as a whole: the pattern and zone parse, and the other keys come
    /// with a schedule.
    pub fn finish(&self) -> Result<(), String> {
        match &self.schedule {
            Some(_) => self.when().map(drop),
            None if self.schedule_tz.is_some() || self.schedule_args.is_some() => {
                Err("schedule_tz and schedule_args need a schedule".into())
            }
            None => Ok(()),
        }
    }

    /// Its pairs.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(s) = &self.schedule {
            pairs.push(("schedule", s.clone()));
        }
        if let Some(tz) = &self.schedule_tz {
            pairs.push(("schedule_tz", tz.clone()));
        }
        if self.schedule_overlap == Overlap::Allow {
            pairs.push(("schedule_overlap", "allow".into()));
        }
        if let Some(args) = &self.schedule_args {
            pairs.push(("schedule_args", args.clone()));
        }
        pairs
    }

    /// When it fires; the error names what is wrong.
    pub fn when(&self) -> Result<When, String> {
        let Some(schedule) = &self.schedule else {
            return Err("no schedule".into());
        };
        if let Some(every) = schedule.strip_prefix("every ") {
            let period = humantime::parse_duration(every.trim())
                .map_err(|e| format!("schedule {schedule:?}: {e}"))?;
            if period < MIN_INTERVAL {
                return Err(format!(
                    "schedule {schedule:?}: the shortest interval is {}",
                    humantime::format_duration(MIN_INTERVAL)
                ));
            }
            return Ok(When::Every(period));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(schedule)
            .map_err(|e| {
                format!("schedule {schedule:?}: not `every DURATION` nor a cron pattern ({e})")
            })?;
        let tz = match &self.schedule_tz {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name)
                .map_err(|e| format!("schedule_tz {name:?}: not a known time zone ({e})"))?,
        };
        Ok(When::Cron(Box::new(cron), tz))
    }
}

impl When {
    /// The first tick strictly after `now`.
    pub fn next_after(&self, now: Timestamp) -> Option<Timestamp> {
        match self {
            When::Every(period) => {
                let period = i128::try_from(period.as_nanos()).ok()?;
                let now = now.as_nanosecond();
                let next = (now.div_euclid(period) + 1) * period;
                Timestamp::from_nanosecond(next).ok()
            }
            When::Cron(cron, tz) => cron
                .find_next_occurrence(&now.to_zoned(tz.clone()), false)
                .ok()
                .map(|z| z.timestamp()),
        }
    }
}

/// `limes deploy`: the schedule flags.
#[derive(Args, Debug, Clone, Default)]
#[group(skip)]
pub struct DeployArgs {
    /// Run the function by the clock: `every 5m`, or a cron pattern such as `*/5 * * * *`
    #[arg(long, value_name = "WHEN")]
    pub schedule: Option<String>,
    /// The time zone of a cron schedule, such as Europe/Rome [default: UTC]
    #[arg(long, value_name = "ZONE")]
    pub schedule_tz: Option<String>,
    /// `allow` lets a tick start while the previous run goes on [default: forbid]
    #[arg(long, value_name = "forbid|allow")]
    pub schedule_overlap: Option<String>,
    /// The args each scheduled run gets [default: the tick's time]
    #[arg(long, value_name = "ARGS")]
    pub schedule_args: Option<String>,
}

impl DeployArgs {
    /// The flags as manifest pairs.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("schedule", &self.schedule),
            ("schedule_tz", &self.schedule_tz),
            ("schedule_overlap", &self.schedule_overlap),
            ("schedule_args", &self.schedule_args),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(pairs: &[(&str, &str)]) -> Result<Schedule, String> {
        let mut s = Schedule::default();
        for (k, v) in pairs {
            s.parse(k, v)?;
        }
        s.finish().map(|()| s)
    }

    #[test]
    fn intervals_tick_on_multiples_of_their_period_on_every_node() {
        let every = schedule(&[("schedule", "every 2s")])
            .unwrap()
            .when()
            .unwrap();
        let now = Timestamp::from_second(1_000_001).unwrap();
        assert_eq!(
            every.next_after(now),
            Some(Timestamp::from_second(1_000_002).unwrap())
        );
        let on_a_tick = Timestamp::from_second(1_000_002).unwrap();
        assert_eq!(
            every.next_after(on_a_tick),
            Some(Timestamp::from_second(1_000_004).unwrap())
        );
    }

    #[test]
    fn cron_patterns_follow_their_time_zone() {
        // 09:00 every day in Rome is 08:00 UTC in winter (2026-01-15).
        let s = schedule(&[("schedule", "0 9 * * *"), ("schedule_tz", "Europe/Rome")]).unwrap();
        let now: Timestamp = "2026-01-15T07:00:00Z".parse().unwrap();
        let next = s.when().unwrap().next_after(now).unwrap();
        assert_eq!(next.to_string(), "2026-01-15T08:00:00Z");
        // Seconds are optional: six fields work too.
        let s = schedule(&[("schedule", "*/10 * * * * *")]).unwrap();
        let next = s.when().unwrap().next_after(now).unwrap();
        assert_eq!(next.to_string(), "2026-01-15T07:00:10Z");
    }

    #[test]
    fn bad_schedules_are_named() {
        let err = |pairs: &[(&str, &str)]| schedule(pairs).unwrap_err();
        assert!(err(&[("schedule", "every 10ms")]).contains("shortest"));
        assert!(err(&[("schedule", "every now and then")]).contains("every now and then"));
        assert!(err(&[("schedule", "61 * * * *")]).contains("cron"));
        assert!(
            err(&[("schedule", "* * * * *"), ("schedule_tz", "Mars/Olympus")]).contains("Mars")
        );
        assert!(err(&[("schedule_overlap", "sometimes")]).contains("forbid or allow"));
        assert!(err(&[("schedule_args", "x")]).contains("need a schedule"));
        let s = schedule(&[("schedule", "every 1m"), ("schedule_overlap", "allow")]).unwrap();
        let mut again = Schedule::default();
        for (k, v) in s.pairs() {
            again.parse(k, &v).unwrap();
        }
        assert_eq!(again, s);
    }
}
