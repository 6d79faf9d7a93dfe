//! Messaging: `wasi:messaging` `producer` for guests, and the NATS subjects a function may
//! touch, as the operator allows them.
//!
//! A manifest names the subjects its guest may publish to (`publish`, patterns, repeatable); a
//! function's message trigger (`on_message`) subscribes to a subject, and its dead letters go to
//! another. All must lie inside a pattern the operator allows with `limes serve
//! --allow-subject PATTERN` (default none: no function touches NATS). Limes' own subjects
//! (`limes.…`) and the server's (`$…`) are never a function's. The runtime checks each publish
//! against the manifest's patterns (`limes_runtime::messaging`); the node's broker is the
//! cluster's NATS once it has joined one ([`NodeMessaging`]).

use std::sync::{Arc, RwLock};

use clap::Args;
use limes_runtime::Policy;
use limes_runtime::messaging::{Message, MessagingBackend, NoBroker, PublishFuture};
use serde::{Deserialize, Serialize};

use super::{Capability, Place};
use crate::error::NodeError;
use crate::subject::Pattern;

/// The manifest's section: the subjects the guest may publish to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Messaging {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<Pattern>,
}

impl Capability for Messaging {
    const KEYS: &'static [(&'static str, &'static str)] = &[(
        "publish",
        "A NATS subject pattern the guest may publish to through wasi:messaging; inside --allow-subject; repeatable",
    )];
    type Grant = Grant;

    fn parse(&mut self, _key: &str, value: &str) -> Result<(), String> {
        let pattern = Pattern::parse(value.trim())?;
        if pattern.is_reserved() {
            return Err(format!(
                "publish={pattern}: the subjects limes.… are Limes' own"
            ));
        }
        self.publish.push(pattern);
        Ok(())
    }

    fn pairs(&self) -> Vec<(&'static str, String)> {
        self.publish
            .iter()
            .map(|p| ("publish", p.to_string()))
            .collect()
    }

    fn check(&self, grant: &Grant) -> Result<(), NodeError> {
        self.publish
            .iter()
            .try_for_each(|p| grant.check("publish", p))
    }

    fn apply(&self, _grant: &Grant, _place: &Place, policy: &mut Policy) -> Result<(), NodeError> {
        policy.messaging.publish = self.publish.clone();
        Ok(())
    }
}

/// `limes deploy` and `limes run`: `--publish`.
#[derive(Args, Debug, Clone, Default)]
// No argument group of its own: every capability's struct has this name.
#[group(skip)]
pub struct DeployArgs {
    /// A NATS subject pattern the guest may publish to (wasi:messaging); repeatable [default: none]
    #[arg(long = "publish", value_name = "PATTERN", value_parser = Pattern::parse)]
    pub publish: Vec<Pattern>,
}

impl DeployArgs {
    /// The flags as manifest pairs.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        self.publish
            .iter()
            .map(|p| ("publish", p.to_string()))
            .collect()
    }

    /// `limes run` takes the patterns as given (it has no broker: a publish fails, saying so).
    pub fn apply_locally(&self, policy: &mut Policy) {
        policy.messaging.publish = self.publish.clone();
    }
}

/// The node's broker for guests' messages, which a cluster replaces once joined (NATS); alone,
/// a node has none and every publish fails, saying so.
#[derive(Clone)]
pub struct NodeMessaging {
    current: Arc<RwLock<Arc<dyn MessagingBackend>>>,
}

impl Default for NodeMessaging {
    fn default() -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(NoBroker))),
        }
    }
}

impl NodeMessaging {
    /// Moves every later publish to `backend`.
    pub fn replace(&self, backend: Arc<dyn MessagingBackend>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = backend;
    }
}

impl MessagingBackend for NodeMessaging {
    fn publish(&self, subject: String, message: Message) -> PublishFuture {
        let backend = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        backend.publish(subject, message)
    }
}

/// The subject patterns functions on this node may subscribe and publish to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub subjects: Vec<Pattern>,
}

impl Grant {
    /// Refuses `subject` unless a granted pattern covers every subject it matches; `what` says
    /// which key asked for it.
    pub fn check(&self, what: &str, subject: &Pattern) -> Result<(), NodeError> {
        if self.subjects.iter().any(|g| g.covers(subject)) {
            return Ok(());
        }
        Err(NodeError::NotPermitted(format!(
            "{what} {subject} is outside the subjects this node allows (limes serve --allow-subject; now {})",
            super::list_or_none(&self.subjects)
        )))
    }
}

/// `limes serve`: `--allow-subject`.
#[derive(Args, Debug, Clone, Default)]
// No argument group of its own: every capability's struct has this name.
#[group(skip)]
pub struct GrantArgs {
    /// A NATS subject pattern functions may subscribe and publish to (`sensors.>`); repeatable [default: none]
    #[arg(long = "allow-subject", value_name = "PATTERN", value_parser = Pattern::parse)]
    pub allow_subject: Vec<Pattern>,
}

impl GrantArgs {
    /// The grant.
    pub fn grant(&self) -> Result<Grant, String> {
        Ok(Grant {
            subjects: self.allow_subject.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_must_lie_inside_a_granted_pattern() {
        let grant = Grant {
            subjects: vec![Pattern::parse("sensors.>").unwrap()],
        };
        let subject = |s: &str| Pattern::parse(s).unwrap();
        assert!(
            grant
                .check("on_message", &subject("sensors.*.level"))
                .is_ok()
        );
        let err = grant
            .check("on_message", &subject("alerts.x"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("alerts.x") && err.contains("--allow-subject"),
            "{err}"
        );
        assert!(
            Grant::default()
                .check("on_message", &subject("sensors.a"))
                .is_err()
        );
    }
}
