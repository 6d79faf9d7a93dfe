//! Messages: a function run on every message of a NATS subject.
//!
//! Manifest keys: `on_message` (a subject pattern, `sensors.*.level`) and `on_message_delivery`
//! (`core`, the default, or `durable`); how runs are delivered is the [`super::policy`]
//! section's (`max_in_flight`, `max_deliver`, `retry_backoff`, `dead_letter`).
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

use clap::Args;
use serde::{Deserialize, Serialize};

use super::policy::DeliveryPolicy;
use crate::capabilities::messaging::Grant;
use crate::error::NodeError;
use crate::subject::Pattern;

/// How messages are delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Core NATS: at most once.
    #[default]
    Core,
    /// JetStream: at least once, retried, dead-lettered.
    Durable,
}

fn is_core(d: &Mode) -> bool {
    *d == Mode::Core
}

/// The manifest's section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The subject pattern whose messages run the function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_message: Option<Pattern>,
    /// Core or durable.
    #[serde(default, skip_serializing_if = "is_core")]
    pub on_message_delivery: Mode,
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
];

impl Message {
    /// Takes one of its keys.
    pub fn parse(&mut self, key: &str, value: &str) -> Result<(), String> {
        let value = value.trim();
        if key == "on_message" {
            self.on_message = Some(Pattern::parse(value)?);
            return Ok(());
        }
        self.on_message_delivery = match value {
            "core" => Mode::Core,
            "durable" => Mode::Durable,
            other => {
                return Err(format!(
                    "on_message_delivery={other:?}: expected core or durable"
                ));
            }
        };
        Ok(())
    }

    /// Checks the section as a whole, with the delivery `policy` it runs under.
    pub fn finish(&self, policy: &DeliveryPolicy) -> Result<(), String> {
        let Some(subject) = &self.on_message else {
            return match self.on_message_delivery {
                Mode::Durable => Err("on_message_delivery needs on_message".into()),
                Mode::Core => Ok(()),
            };
        };
        if subject.is_reserved() {
            return Err(format!(
                "on_message={subject}: the subjects limes.… are Limes' own"
            ));
        }
        if let Some(dead) = &policy.dead_letter
            && subject.covers(dead)
        {
            return Err(format!(
                "dead_letter={dead}: the trigger's own subject would run it again"
            ));
        }
        if self.on_message_delivery == Mode::Durable && subject.as_str().starts_with(['*', '>']) {
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
        if self.on_message_delivery == Mode::Durable {
            pairs.push(("on_message_delivery", "durable".into()));
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
        grant.check("on_message", subject)
    }

    /// Whether it is a durable trigger.
    pub fn is_durable(&self) -> bool {
        self.on_message.is_some() && self.on_message_delivery == Mode::Durable
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
}

impl DeployArgs {
    /// The flags as manifest pairs.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("on_message", &self.on_message),
            ("on_message_delivery", &self.on_message_delivery),
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
        let mut policy = DeliveryPolicy::default();
        for (k, v) in pairs {
            match *k {
                "on_message" | "on_message_delivery" => m.parse(k, v)?,
                _ => policy.parse(k, v)?,
            }
        }
        m.finish(&policy).map(|()| m)
    }

    #[test]
    fn bad_sections_are_named() {
        let err = |pairs: &[(&str, &str)]| message(pairs).unwrap_err();
        assert!(err(&[("on_message", "a..b")]).contains("empty token"));
        assert!(err(&[("on_message", "limes.dead.x")]).contains("Limes' own"));
        assert!(err(&[("on_message", "*.x")]).contains("Limes' own"));
        assert!(err(&[("on_message_delivery", "durable")]).contains("needs on_message"));
        assert!(
            err(&[
                ("on_message", "a.>"),
                ("on_message_delivery", "durable"),
                ("dead_letter", "a.x")
            ])
            .contains("run it again")
        );
        assert!(
            err(&[("on_message", "a"), ("on_message_delivery", "often")])
                .contains("core or durable")
        );
        let m = message(&[("on_message", "a.b"), ("on_message_delivery", "durable")]).unwrap();
        let mut again = Message::default();
        for (k, v) in m.pairs() {
            again.parse(k, &v).unwrap();
        }
        assert_eq!(again, m);
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
