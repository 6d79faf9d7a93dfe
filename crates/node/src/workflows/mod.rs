//! Workflows: deployed functions chained into a graph of steps, started by a trigger or a call.
//!
//! A workflow (`PUT /v1/workflows/{name}`, `limes workflow deploy FILE`) names its steps, each a
//! deployed function, and where each step's result goes: to every step in `next` (fan-out), or,
//! for a step with `outputs` (like EDGELESS' `output_mapping`), by name: the function answers a
//! JSON object whose keys are output names and whose values are what each output carries, and
//! each output goes to the steps it maps to. An empty answer (or `null`) ends the run's branch
//! there: a step may filter. Graphs have no cycles.
//!
//! Between steps the payload travels durably: in the node's outbox (`crate::outbox`) on a node
//! alone, in JetStream in a cluster, de-duplicated by run and step, retried with the workflow's
//! backoff up to `max_deliver` attempts, then dead-lettered per step. Every step's outcome is
//! recorded in the run's record ([`StepRun`]). An `urgent` workflow runs every step as urgent; a
//! `batch` one waits while an emergency lasts.
//!
//! [`spec`] is the format and its checks; [`store`] keeps workflows and run records on a node.

pub mod spec;
pub mod store;

pub use spec::{Step, Workflow};

use serde::{Deserialize, Serialize};

/// A payload on its way to a step of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// The workflow.
    pub workflow: String,
    /// The run.
    pub run: String,
    /// The step it goes to.
    pub step: String,
    /// What the step's function gets as `args`.
    pub payload: String,
}

impl Handoff {
    /// The id that makes a hand-off happen once: one run reaches one step once.
    pub fn dedup_id(&self) -> String {
        format!("{}.{}.{}", self.workflow, self.run, self.step)
    }
}

/// Where a step of a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Handed on: queued or running now.
    Waiting,
    /// Failed; it runs again after its backoff.
    Retrying,
    /// Done: its result has been handed on.
    Succeeded,
    /// Given up after its attempts: dead-lettered.
    DeadLettered,
}

/// One step of one run, as its record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRun {
    /// Where it is.
    pub status: Status,
    /// The node that ran it (last).
    pub node: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When its latest attempt began, ms since the Unix epoch.
    pub started_ms: u64,
    /// When its latest attempt ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// Its latest error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A run id: unique, and sortable by when it began.
pub fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    // Random per process (std's hasher keys are), so two nodes do not make the same id.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!(
        "{:x}{:04x}{:06x}",
        crate::outbox::now_ms(),
        SEQ.fetch_add(1, Ordering::Relaxed) & 0xffff,
        random & 0xff_ffff
    )
}
