//! Messages: a function run on every message of a NATS subject.
//!
//! Manifest keys: `on_message` (a subject pattern, `sensors.*.level`), `on_message_delivery`
//! (`core`, the default, or `durable`), `max_in_flight`, and for durable delivery
//! `max_deliver`, `retry_backoff` and `dead_letter`.
//!
//! - **core**: at most once. Every node that holds the function subscribes in one queue group,
//!   so each message runs on one node; a message that arrives while no node listens, or whose
//!   run fails, is gone. A message with a reply subject gets the function's result.
//! - **durable**: at least once, through JetStream. The message is kept until the function
//!   succeeded on some node; a failed run is retried after `retry_backoff`, doubling each
//!   time, and after `max_deliver` attempts the message goes to the dead-letter subject with
//!   the error, the attempt count and the run id. `max_in_flight` bounds the runs in flight
//!   across the cluster: 1 keeps the subject's order.
//!
//! A plain `component:run/run` function gets the payload as its `args`; a payload that is not
//! UTF-8 is dead-lettered with that error. Message triggers need a cluster (`limes serve
//! --nats`): NATS is where the messages are.

use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::capabilities::messaging::Grant;
use crate::error::NodeError;
use crate::subject::Pattern;

/// Attempts of a durable message unless the manifest says otherwise.
pub const DEFAULT_MAX_DELIVER: u32 = 5;
/// The most attempts a manifest may ask for.
pub const MAX_MAX_DELIVER: u32 = 100;
/// Runs in flight unless the manifest says otherwise (per node for core delivery, across the
/// cluster for durable).
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 16;
/// The most runs in flight a manifest may ask for.
pub const MAX_MAX_IN_FLIGHT: u32 = 1024;
/// The wait before the first retry unless the manifest says otherwise; it doubles each time.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(60);

/// How messages are delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Core NATS: at most once.
    #[default]
    Core,
    /// JetStream: at least once, retried, dead-lettered.
    Durable,
}

fn is_core(d: &Delivery) -> bool {
    *d == Delivery::Core
}

/// The manifest's section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The subject pattern whose messages run the function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_message: Option<Pattern>,
    /// Core or durable.
    #[serde(default, skip_serializing_if = "is_core")]
    pub on_message_delivery: Delivery,
    /// Attempts before a durable message is dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deliver: Option<u32>,
    /// Runs in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// The wait before the first retry, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff_ms: Option<u64>,
    /// Where messages that exhausted their attempts go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<Pattern>,
}

/// The keys and what each means.
pub const KEYS: &[(&str, &str)] = &[
    (
        "on_message",
        "Run the function on every message of this NATS subject (wildcards * and >); inside --allow-subject",
    ),
    (
        "on_message_delivery",
        "core (default: at most once, spread over the nodes) or durable (JetStream: at least once, retried, dead-lettered)",
    ),
    (
        "max_deliver",
        "Attempts of a durable message before it is dead-lettered (default 5)",
    ),
    (
        "max_in_flight",
        "Runs in flight at once: per node for core delivery, across the cluster for durable (1 keeps order; default 16)",
    ),
    (
        "retry_backoff",
        "The wait before a durable message's first retry, doubling each time up to 1m (default 1s)",
    ),
    (
        "dead_letter",
        "The subject of messages that exhausted their attempts (default limes.dead.FUNCTION); inside --allow-subject",
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

impl Message {
    /// Takes one of its keys.
    pub fn parse(&mut self, key: &str, value: &str) -> Result<(), String> {
        let value = value.trim();
        match key {
            "on_message" => self.on_message = Some(Pattern::parse(value)?),
            "on_message_delivery" => {
                self.on_message_delivery = match value {
                    "core" => Delivery::Core,
                    "durable" => Delivery::Durable,
                    other => {
                        return Err(format!(
                            "on_message_delivery={other:?}: expected core or durable"
                        ));
                    }
                }
            }
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
                if subject.is_wildcard() {
                    return Err(format!("dead_letter={value:?}: one subject, no wildcards"));
                }
                self.dead_letter = Some(subject);
            }
        }
        Ok(())
    }

    /// Checks the section as a whole: the other keys come with a subject, the durable ones
    /// with durable delivery, and the subject is a function's to take.
    pub fn finish(&self) -> Result<(), String> {
        let Some(subject) = &self.on_message else {
            return match self.pairs().first() {
                Some((key, _)) => Err(format!("{key} needs on_message")),
                None => Ok(()),
            };
        };
        if subject.is_reserved() {
            return Err(format!(
                "on_message={subject}: the subjects limes.… are Limes' own"
            ));
        }
        if let Some(dead) = &self.dead_letter
            && (dead.is_reserved() || subject.covers(dead))
        {
            return Err(format!(
                "dead_letter={dead}: not Limes' own subjects nor the trigger's own"
            ));
        }
        if self.on_message_delivery == Delivery::Core {
            if let Some(key) = [
                ("max_deliver", self.max_deliver.is_some()),
                ("retry_backoff", self.retry_backoff_ms.is_some()),
                ("dead_letter", self.dead_letter.is_some()),
            ]
            .into_iter()
            .find_map(|(k, set)| set.then_some(k))
            {
                return Err(format!(
                    "{key} needs on_message_delivery=durable: core delivery never retries"
                ));
            }
        } else if subject.as_str().starts_with(['*', '>']) {
            // A stream captures what durable triggers listen to, and must not reach the
            // cluster's own streams; a literal first token keeps it in the functions' space.
            return Err(format!(
                "on_message={subject}: a durable subject begins with a literal token"
            ));
        }
        Ok(())
    }

    /// Its pairs.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(s) = &self.on_message {
            pairs.push(("on_message", s.to_string()));
        }
        if self.on_message_delivery == Delivery::Durable {
            pairs.push(("on_message_delivery", "durable".into()));
        }
        if let Some(n) = self.max_deliver {
            pairs.push(("max_deliver", n.to_string()));
        }
        if let Some(n) = self.max_in_flight {
            pairs.push(("max_in_flight", n.to_string()));
        }
        if let Some(ms) = self.retry_backoff_ms {
            pairs.push(("retry_backoff", format!("{ms}ms")));
        }
        if let Some(s) = &self.dead_letter {
            pairs.push(("dead_letter", s.to_string()));
        }
        pairs
    }

    /// Refuses subjects outside the operator's grant, and a trigger on a node that has no
    /// NATS to take messages from.
    pub fn check(&self, grant: &Grant, clustered: bool) -> Result<(), NodeError> {
        let Some(subject) = &self.on_message else {
            return Ok(());
        };
        if !clustered {
            return Err(NodeError::BadRequest(format!(
                "on_message={subject}: message triggers need a cluster (limes serve --nats URL)"
            )));
        }
        grant.check("on_message", subject)?;
        if let Some(dead) = &self.dead_letter {
            grant.check("dead_letter", dead)?;
        }
        Ok(())
    }

    /// Whether it is a durable trigger.
    pub fn is_durable(&self) -> bool {
        self.on_message.is_some() && self.on_message_delivery == Delivery::Durable
    }

    /// Attempts of a durable message.
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
        base.saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(MAX_RETRY_BACKOFF)
    }

    /// Where `function`'s dead letters go.
    pub fn dead_letter_subject(&self, function: &str) -> String {
        self.dead_letter.as_ref().map_or_else(
            || format!("{}dead.{function}", crate::subject::RESERVED_PREFIX),
            |s| s.to_string(),
        )
    }
}

/// `limes deploy`: the message trigger's flags.
#[derive(Args, Debug, Clone, Default)]
#[group(skip)]
pub struct DeployArgs {
    /// Run the function on every message of this NATS subject (`sensors.*.level`)
    #[arg(long, value_name = "SUBJECT")]
    pub on_message: Option<String>,
    /// `durable`: at least once through JetStream, retried and dead-lettered [default: core]
    #[arg(long, value_name = "core|durable")]
    pub on_message_delivery: Option<String>,
    /// Attempts of a durable message before it is dead-lettered [default: 5]
    #[arg(long, value_name = "N")]
    pub max_deliver: Option<String>,
    /// Runs in flight at once (1 keeps order) [default: 16]
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<String>,
    /// The wait before a durable message's first retry, doubling [default: 1s]
    #[arg(long, value_name = "DURATION")]
    pub retry_backoff: Option<String>,
    /// The subject of messages that exhausted their attempts [default: limes.dead.FUNCTION]
    #[arg(long, value_name = "SUBJECT")]
    pub dead_letter: Option<String>,
}

impl DeployArgs {
    /// The flags as manifest pairs.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("on_message", &self.on_message),
            ("on_message_delivery", &self.on_message_delivery),
            ("max_deliver", &self.max_deliver),
            ("max_in_flight", &self.max_in_flight),
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

    fn message(pairs: &[(&str, &str)]) -> Result<Message, String> {
        let mut m = Message::default();
        for (k, v) in pairs {
            m.parse(k, v)?;
        }
        m.finish().map(|()| m)
    }

    #[test]
    fn sections_round_trip_through_their_pairs() {
        let m = message(&[
            ("on_message", "sensors.*.level"),
            ("on_message_delivery", "durable"),
            ("max_deliver", "3"),
            ("max_in_flight", "1"),
            ("retry_backoff", "250ms"),
            ("dead_letter", "alerts.dead"),
        ])
        .unwrap();
        let mut again = Message::default();
        for (k, v) in m.pairs() {
            again.parse(k, &v).unwrap();
        }
        assert_eq!(again, m);
        assert_eq!(m.backoff(1), Duration::from_millis(250));
        assert_eq!(m.backoff(3), Duration::from_millis(1000));
        assert_eq!(m.backoff(40), MAX_RETRY_BACKOFF);
    }

    #[test]
    fn bad_sections_are_named() {
        let err = |pairs: &[(&str, &str)]| message(pairs).unwrap_err();
        assert!(err(&[("on_message", "a..b")]).contains("empty token"));
        assert!(err(&[("on_message", "limes.dead.x")]).contains("Limes' own"));
        assert!(err(&[("on_message", "*.x")]).contains("Limes' own"));
        assert!(err(&[("max_in_flight", "2")]).contains("needs on_message"));
        assert!(err(&[("on_message", "a.b"), ("max_deliver", "0")]).contains("1 to 100"));
        assert!(err(&[("on_message", "a.b"), ("max_deliver", "3")]).contains("durable"));
        assert!(
            err(&[
                ("on_message", "a.>"),
                ("on_message_delivery", "durable"),
                ("dead_letter", "a.x")
            ])
            .contains("trigger's own")
        );
        assert!(err(&[("on_message", "a"), ("dead_letter", "b.*")]).contains("no wildcards"));
        assert!(
            err(&[("on_message", "a"), ("on_message_delivery", "often")])
                .contains("core or durable")
        );
    }

    #[test]
    fn subjects_outside_the_grant_and_nodes_without_nats_are_refused() {
        let m = message(&[("on_message", "sensors.a")]).unwrap();
        let grant = Grant {
            subjects: vec![Pattern::parse("sensors.>").unwrap()],
        };
        assert!(m.check(&grant, true).is_ok());
        assert!(
            m.check(&grant, false)
                .unwrap_err()
                .to_string()
                .contains("--nats")
        );
        assert!(matches!(
            m.check(&Grant::default(), true),
            Err(NodeError::NotPermitted(_))
        ));
    }
}
