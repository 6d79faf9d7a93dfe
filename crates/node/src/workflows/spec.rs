//! The workflow format, as `PUT /v1/workflows/{name}` takes it (JSON) and `limes workflow
//! deploy` reads it (TOML or JSON), and its checks.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::Handoff;
use crate::admission::Priority;
use crate::parse::is_name;
use crate::subject::Pattern;
use crate::triggers::message::Mode;
use crate::triggers::policy::{DEFAULT_MAX_DELIVER, MAX_MAX_DELIVER, MAX_RETRY_BACKOFF};

/// The most steps a workflow may have.
pub const MAX_STEPS: usize = 64;

/// A workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// Its name (from the URL).
    #[serde(default)]
    pub name: String,
    /// Every step runs at this class: `urgent`, `regular` (default) or `batch`.
    #[serde(default)]
    pub priority: Priority,
    /// What starts a run besides `POST /v1/workflows/{name}/runs`.
    #[serde(default, skip_serializing_if = "Trigger::is_none")]
    pub trigger: Trigger,
    /// Attempts of each step before it is dead-lettered.
    #[serde(default = "default_max_deliver")]
    pub max_deliver: u32,
    /// The wait before a step's first retry, doubling each time.
    #[serde(default = "default_backoff", with = "duration_text")]
    pub retry_backoff: std::time::Duration,
    /// The steps; the first is where a run begins.
    pub steps: Vec<Step>,
}

fn default_max_deliver() -> u32 {
    DEFAULT_MAX_DELIVER
}

fn default_backoff() -> std::time::Duration {
    crate::triggers::policy::DEFAULT_RETRY_BACKOFF
}

/// A duration as people write it (`500ms`, `2s`).
mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        crate::parse::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// What starts a workflow's runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// Each message of this NATS subject starts a run (in a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_message: Option<Pattern>,
    /// `core` or `durable` (default), as a function's `on_message_delivery`.
    #[serde(default = "durable")]
    pub delivery: Mode,
}

fn durable() -> Mode {
    Mode::Durable
}

impl Trigger {
    fn is_none(&self) -> bool {
        self.on_message.is_none()
    }
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Its name in the workflow.
    pub name: String,
    /// The deployed function it runs.
    pub function: String,
    /// The steps its whole result goes to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next: Vec<String>,
    /// Named outputs and the steps each goes to; the function answers `{"OUTPUT": payload}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, Vec<String>>,
}

impl Workflow {
    /// Checks the workflow on its own: names, edges, no cycles, bounds. Whether its functions
    /// exist and its subject is allowed is the node's to check.
    pub fn validate(&self) -> Result<(), String> {
        if !is_name(&self.name) {
            return Err(format!(
                "workflow name {:?}: use a-z, 0-9, '-' and '_'",
                self.name
            ));
        }
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            return Err(format!("a workflow has 1 to {MAX_STEPS} steps"));
        }
        if !(1..=MAX_MAX_DELIVER).contains(&self.max_deliver) {
            return Err(format!("max_deliver: 1 to {MAX_MAX_DELIVER}"));
        }
        if self.retry_backoff.is_zero() || self.retry_backoff > MAX_RETRY_BACKOFF {
            return Err("retry_backoff: more than 0 and at most 1m".into());
        }
        let mut names = HashSet::new();
        for step in &self.steps {
            if !is_name(&step.name) {
                return Err(format!("step {:?}: use a-z, 0-9, '-' and '_'", step.name));
            }
            if !is_name(&step.function) {
                return Err(format!(
                    "step {}: {:?} is not a function name",
                    step.name, step.function
                ));
            }
            if !names.insert(step.name.as_str()) {
                return Err(format!("step {} appears twice", step.name));
            }
            if !step.next.is_empty() && !step.outputs.is_empty() {
                return Err(format!(
                    "step {}: next or outputs, not both (outputs route each named result)",
                    step.name
                ));
            }
        }
        for step in &self.steps {
            for to in step.targets() {
                if !names.contains(to) {
                    return Err(format!("step {}: no step {to} to go to", step.name));
                }
            }
        }
        if let Some(cycle) = self.cycle() {
            return Err(format!(
                "the steps form a cycle ({}): a workflow's graph has none",
                cycle.join(" → ")
            ));
        }
        // A tree from the first step: every other step has exactly one way in. A join would
        // run its step once per way in (and a chain of them exponentially often), and a step
        // nothing leads to would never run.
        let mut into: HashMap<&str, &str> = HashMap::new();
        for step in &self.steps {
            for to in step.targets() {
                if let Some(other) = into.insert(to, &step.name) {
                    return Err(format!(
                        "step {to} is reached from both {other} and {}: each step has one way in",
                        step.name
                    ));
                }
            }
        }
        let first = &self.steps[0].name;
        if let Some(from) = into.get(first.as_str()) {
            return Err(format!(
                "step {first} is the first: nothing may lead back to it (it is reached from {from})"
            ));
        }
        if let Some(lost) = self.steps[1..]
            .iter()
            .find(|s| !into.contains_key(s.name.as_str()))
        {
            return Err(format!(
                "step {} is not reached from the first step, {first}",
                lost.name
            ));
        }
        if let Some(subject) = &self.trigger.on_message {
            // The same rules as a function's trigger.
            crate::triggers::message::Message {
                on_message: Some(subject.clone()),
                on_message_delivery: self.trigger.delivery,
            }
            .finish(&Default::default())?;
        }
        Ok(())
    }

    /// A cycle of steps, if the graph has one.
    fn cycle(&self) -> Option<Vec<String>> {
        let edges: HashMap<&str, Vec<&str>> = self
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.targets().collect()))
            .collect();
        // Depth-first search, with the path so far to name the cycle.
        fn visit<'a>(
            at: &'a str,
            edges: &HashMap<&'a str, Vec<&'a str>>,
            path: &mut Vec<&'a str>,
            done: &mut HashSet<&'a str>,
        ) -> Option<Vec<String>> {
            if let Some(i) = path.iter().position(|s| *s == at) {
                let mut cycle: Vec<String> = path[i..].iter().map(|s| s.to_string()).collect();
                cycle.push(at.to_owned());
                return Some(cycle);
            }
            if !done.insert(at) {
                return None;
            }
            path.push(at);
            for next in edges.get(at).into_iter().flatten() {
                if let Some(c) = visit(next, edges, path, done) {
                    return Some(c);
                }
            }
            path.pop();
            None
        }
        let mut done = HashSet::new();
        self.steps
            .iter()
            .find_map(|s| visit(&s.name, &edges, &mut Vec::new(), &mut done))
    }

    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The hand-off that begins run `run` with `payload`.
    pub fn start(&self, run: &str, payload: String) -> Handoff {
        Handoff {
            workflow: self.name.clone(),
            run: run.to_owned(),
            step: self.steps[0].name.clone(),
            payload,
        }
    }

    /// What step `step` of run `run` hands on, given its function's `result`; an error when
    /// the result does not fit the step's outputs.
    pub fn next(&self, run: &str, step: &str, result: &str) -> Result<Vec<Handoff>, String> {
        let Some(step) = self.step(step) else {
            return Err(format!("the workflow has no step {step} any more"));
        };
        let hand = |to: &str, payload: String| Handoff {
            workflow: self.name.clone(),
            run: run.to_owned(),
            step: to.to_owned(),
            payload,
        };
        let trimmed = result.trim();
        if trimmed.is_empty() || trimmed == "null" {
            return Ok(Vec::new());
        }
        if step.outputs.is_empty() {
            return Ok(step
                .next
                .iter()
                .map(|to| hand(to, result.to_owned()))
                .collect());
        }
        let Ok(serde_json::Value::Object(outputs)) = serde_json::from_str(trimmed) else {
            return Err(format!(
                "step {} has outputs ({}); its function must answer a JSON object of them",
                step.name,
                step.outputs.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        };
        let mut out = Vec::new();
        for (name, value) in outputs {
            let Some(targets) = step.outputs.get(&name) else {
                return Err(format!("step {}: no output named {name}", step.name));
            };
            let payload = match value {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            out.extend(targets.iter().map(|to| hand(to, payload.clone())));
        }
        Ok(out)
    }

    /// Every function its steps run.
    pub fn functions(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().map(|s| s.function.as_str())
    }
}

impl Step {
    /// Every step it may go to.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.next
            .iter()
            .chain(self.outputs.values().flatten())
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flood() -> Workflow {
        let mut w: Workflow = serde_json::from_value(serde_json::json!({
            "priority": "urgent",
            "steps": [
                {"name": "detect", "function": "detect", "next": ["classify"]},
                {"name": "classify", "function": "classify",
                 "outputs": {"alert": ["alert"], "record": ["archive"]}},
                {"name": "alert", "function": "alert"},
                {"name": "archive", "function": "archive"}
            ]
        }))
        .unwrap();
        w.name = "flood".into();
        w
    }

    #[test]
    fn results_go_to_the_next_steps_or_by_output() {
        let w = flood();
        w.validate().unwrap();
        let next = w.next("r1", "detect", "ward-3 4.2").unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(
            (next[0].step.as_str(), next[0].payload.as_str()),
            ("classify", "ward-3 4.2")
        );
        let next = w
            .next(
                "r1",
                "classify",
                r#"{"alert": "ward-3 severe", "record": {"ward": 3}}"#,
            )
            .unwrap();
        let mut to: Vec<(&str, &str)> = next
            .iter()
            .map(|h| (h.step.as_str(), h.payload.as_str()))
            .collect();
        to.sort();
        assert_eq!(
            to,
            [("alert", "ward-3 severe"), ("archive", r#"{"ward":3}"#)]
        );
        // An empty answer ends the branch; an output left out or null goes nowhere.
        assert!(w.next("r1", "detect", "").unwrap().is_empty());
        assert_eq!(
            w.next("r1", "classify", r#"{"record": "x", "alert": null}"#)
                .unwrap()
                .len(),
            1
        );
        assert!(
            w.next("r1", "classify", "not json")
                .unwrap_err()
                .contains("JSON object")
        );
        assert!(
            w.next("r1", "classify", r#"{"page": 1}"#)
                .unwrap_err()
                .contains("no output named page")
        );
        assert_eq!(next[0].dedup_id(), format!("flood.r1.{}", next[0].step));
    }

    #[test]
    fn bad_workflows_are_named() {
        let mut w = flood();
        w.steps[3].next = vec!["detect".into()];
        let e = w.validate().unwrap_err();
        assert!(
            e.contains("cycle") && e.contains("detect → classify"),
            "{e}"
        );
        let mut w = flood();
        w.steps[0].next = vec!["nowhere".into()];
        assert!(w.validate().unwrap_err().contains("no step nowhere"));
        let mut w = flood();
        w.steps[1].name = "detect".into();
        assert!(w.validate().unwrap_err().contains("twice"));
        // A join (two ways into one step), or a step nothing leads to.
        let mut w = flood();
        w.steps[2].next = vec!["archive".into()];
        assert!(w.validate().unwrap_err().contains("one way in"));
        let mut w = flood();
        w.steps[0].next = vec!["classify".into(), "classify".into()];
        assert!(w.validate().unwrap_err().contains("one way in"));
        let mut w = flood();
        w.steps[1].outputs.remove("record");
        assert!(w.validate().unwrap_err().contains("archive is not reached"));
        let mut w = flood();
        w.trigger.on_message = Some(crate::subject::Pattern::parse("*.level").unwrap());
        assert!(w.validate().is_err());
        let mut w = flood();
        w.max_deliver = 0;
        assert!(w.validate().unwrap_err().contains("max_deliver"));
        let unknown =
            serde_json::from_value::<Workflow>(serde_json::json!({"steps": [], "stepz": 1}));
        assert!(unknown.unwrap_err().to_string().contains("stepz"));
    }
}
