//! How a function's triggered runs are delivered, whatever triggers them: how many at once,
//! how many attempts, the wait between them, and where a message goes when they are spent.
//!
//! Manifest keys: `max_in_flight` (every trigger), and for durable deliveries (a durable message
//! trigger, a change trigger) `max_deliver`, `retry_backoff` and `dead_letter`.

use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::subject::{Pattern, RESERVED_PREFIX};

/// Attempts of a durable delivery unless the manifest says otherwise.
pub const DEFAULT_MAX_DELIVER: u32 = 5;
/// The most attempts a manifest may ask for.
pub const MAX_MAX_DELIVER: u32 = 100;
/// Runs in flight unless the manifest says otherwise (per node for core messages, across the
/// cluster for durable ones).
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 16;
/// The most runs in flight a manifest may ask for.
pub const MAX_MAX_IN_FLIGHT: u32 = 1024;
/// The wait before the first retry unless the manifest says otherwise; it doubles each time.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(60);

/// The wait after failed attempt `attempt` (1 for the first) when the first wait is `base`:
/// doubling each time, at most [`MAX_RETRY_BACKOFF`].
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(MAX_RETRY_BACKOFF)
}

/// The manifest's section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryPolicy {
    /// Attempts before a durable delivery is dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deliver: Option<u32>,
    /// Runs in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// The wait before the first retry, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff_ms: Option<u64>,
    /// Where deliveries that exhausted their attempts go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<Pattern>,
}

/// The keys and what each means.
pub const KEYS: &[(&str, &str)] = &[
    (
        "max_in_flight",
        "Triggered runs in flight at once: per node for core messages, across the cluster for durable ones (1 keeps order; default 16)",
    ),
    (
        "max_deliver",
        "Attempts of a durable delivery (durable message, key change) before it is dead-lettered (default 5)",
    ),
    (
        "retry_backoff",
        "The wait before a durable delivery's first retry, doubling each time up to 1m (default 1s)",
    ),
    (
        "dead_letter",
        "The NATS subject of deliveries that exhausted their attempts (default limes.dead.FUNCTION); inside --allow-subject",
    ),
];

fn number(key: &str, value: &str, max: u32) -> Result<u32, String> {
    match value.trim().parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{key}={value:?}: expected a whole number from 1 to {max}"
        )),
    }
}

impl DeliveryPolicy {
    /// Takes one of its keys.
    pub fn parse(&mut self, key: &str, value: &str) -> Result<(), String> {
        let value = value.trim();
        match key {
            "max_deliver" => self.max_deliver = Some(number(key, value, MAX_MAX_DELIVER)?),
            "max_in_flight" => self.max_in_flight = Some(number(key, value, MAX_MAX_IN_FLIGHT)?),
            "retry_backoff" => {
                let d = crate::parse::parse_duration(value)
                    .map_err(|e| format!("retry_backoff={value:?}: {e}"))?;
                if d.is_zero() || d > MAX_RETRY_BACKOFF {
                    return Err(format!(
                        "retry_backoff={value:?}: expected more than 0 and at most 1m"
                    ));
                }
                self.retry_backoff_ms = Some(d.as_millis() as u64);
            }
            _ => {
                let subject = Pattern::parse(value)?;
                if subject.is_wildcard() || subject.is_reserved() {
                    return Err(format!(
                        "dead_letter={value:?}: one subject, no wildcards, not Limes' own"
                    ));
                }
                self.dead_letter = Some(subject);
            }
        }
        Ok(())
    }

    /// Its pairs.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(n) = self.max_in_flight {
            pairs.push(("max_in_flight", n.to_string()));
        }
        if let Some(n) = self.max_deliver {
            pairs.push(("max_deliver", n.to_string()));
        }
        if let Some(ms) = self.retry_backoff_ms {
            pairs.push(("retry_backoff", format!("{ms}ms")));
        }
        if let Some(s) = &self.dead_letter {
            pairs.push(("dead_letter", s.to_string()));
        }
        pairs
    }

    /// The first key set that only durable deliveries use, if any.
    pub fn durable_key(&self) -> Option<&'static str> {
        [
            ("max_deliver", self.max_deliver.is_some()),
            ("retry_backoff", self.retry_backoff_ms.is_some()),
            ("dead_letter", self.dead_letter.is_some()),
        ]
        .into_iter()
        .find_map(|(k, set)| set.then_some(k))
    }

    /// Attempts of a durable delivery.
    pub fn max_deliver(&self) -> u32 {
        self.max_deliver.unwrap_or(DEFAULT_MAX_DELIVER)
    }

    /// Runs in flight at once.
    pub fn max_in_flight(&self) -> u32 {
        self.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT)
    }

    /// The wait before attempt `attempt + 1`, after `attempt` failed (1 for the first).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .retry_backoff_ms
            .map_or(DEFAULT_RETRY_BACKOFF, Duration::from_millis);
        backoff(base, attempt)
    }

    /// Where `function`'s dead letters go.
    pub fn dead_letter_subject(&self, function: &str) -> String {
        self.dead_letter.as_ref().map_or_else(
            || format!("{RESERVED_PREFIX}dead.{function}"),
            |s| s.to_string(),
        )
    }
}

/// `limes deploy`: the delivery flags.
#[derive(Args, Debug, Clone, Default)]
#[group(skip)]
pub struct DeployArgs {
    /// Triggered runs in flight at once (1 keeps order) [default: 16]
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<String>,
    /// Attempts of a durable delivery before it is dead-lettered [default: 5]
    #[arg(long, value_name = "N")]
    pub max_deliver: Option<String>,
    /// The wait before a durable delivery's first retry, doubling [default: 1s]
    #[arg(long, value_name = "DURATION")]
    pub retry_backoff: Option<String>,
    /// The subject of deliveries that exhausted their attempts [default: limes.dead.FUNCTION]
    #[arg(long, value_name = "SUBJECT")]
    pub dead_letter: Option<String>,
}

impl DeployArgs {
    /// The flags as manifest pairs.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("max_in_flight", &self.max_in_flight),
            ("max_deliver", &self.max_deliver),
            ("retry_backoff", &self.retry_backoff),
            ("dead_letter", &self.dead_letter),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap_and_pairs_round_trip() {
        let mut p = DeliveryPolicy::default();
        for (k, v) in [
            ("max_deliver", "3"),
            ("max_in_flight", "1"),
            ("retry_backoff", "250ms"),
            ("dead_letter", "alerts.dead"),
        ] {
            p.parse(k, v).unwrap();
        }
        let mut again = DeliveryPolicy::default();
        for (k, v) in p.pairs() {
            again.parse(k, &v).unwrap();
        }
        assert_eq!(again, p);
        assert_eq!(p.backoff(1), Duration::from_millis(250));
        assert_eq!(p.backoff(3), Duration::from_millis(1000));
        assert_eq!(p.backoff(40), MAX_RETRY_BACKOFF);
        assert_eq!(p.dead_letter_subject("f"), "alerts.dead");
        assert_eq!(
            DeliveryPolicy::default().dead_letter_subject("f"),
            "limes.dead.f"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = |k: &str, v: &str| DeliveryPolicy::default().parse(k, v).unwrap_err();
        assert!(err("max_deliver", "0").contains("1 to 100"));
        assert!(err("max_in_flight", "many").contains("1 to 1024"));
        assert!(err("retry_backoff", "2h").contains("at most 1m"));
        assert!(err("dead_letter", "b.*").contains("no wildcards"));
        assert!(err("dead_letter", "limes.x").contains("Limes' own"));
    }
}
