//! Messaging: the NATS subjects a function may touch, as the operator allows them.
//!
//! A function's message trigger (`on_message`) subscribes to a subject, and its dead letters
//! go to another; both must lie inside a pattern the operator allows with `limes serve
//! --allow-subject PATTERN` (default none: no function touches NATS). Limes' own subjects
//! (`limes.…`) and the server's (`$…`) are never a function's.

use clap::Args;

use crate::error::NodeError;
use crate::subject::Pattern;

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
