//! Deploys in progress and just finished: the stage each has reached, for clients that follow a
//! long deploy, and its outcome, for clients that lost their connection before it ended.
//!
//! A deploy runs to its end whether or not its client is still there: compiling a large
//! component takes seconds, and a client that gave up must still learn whether the function is
//! deployed. `GET /v1/deploys/{id}` answers from here. Only this node's deploys are known, and
//! only the most recent [`KEPT`] finished ones: the registry, not this table, is the record of
//! what is deployed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::watch;

use crate::error::NodeError;
use crate::registry::Version;

/// Finished deploys kept for `GET /v1/deploys/{id}`. Enough for every client of a small node to
/// come back for its outcome; each entry is a few hundred bytes.
pub const KEPT: usize = 64;

/// What a deploy is doing, in the order a deploy goes through them. Pre-initializing happens
/// only for a function with an initialization step; replicating only on a node in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// The upload has arrived; checking the name, the manifest, the signature.
    Validate,
    /// Pulling the component from its OCI registry (`oci://…`).
    Pull,
    /// Running the function's initialization step and snapshotting what it leaves.
    PreInitialize,
    /// Compiling to native code (and writing the AOT cache).
    Compile,
    /// Writing the artifact and the registry entry to disk.
    Store,
    /// Publishing the artifact and the version to the cluster.
    Replicate,
    /// Finished; the outcome says how.
    Done,
}

/// How a finished deploy ended.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The version now serves invocations.
    Deployed(Box<Version>),
    /// Nothing was deployed; as the synchronous API would have answered.
    Failed {
        /// The HTTP status the error maps to.
        status: u16,
        /// The error's kind, as in `{"error": {"kind": …}}`.
        kind: String,
        /// The error's message.
        message: String,
    },
}

/// A stage reached, and when, in milliseconds since the upload arrived.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// The stage.
    pub stage: Stage,
    /// When it began.
    pub at_ms: u64,
}

/// The state of one deploy, as `GET /v1/deploys/{id}` and the progress stream show it.
#[derive(Debug, Clone, Serialize)]
pub struct DeployState {
    /// The deploy's id on this node.
    pub id: String,
    /// The function being deployed.
    pub function: String,
    /// Every stage reached so far, the current one last.
    pub steps: Vec<Step>,
    /// Set once the deploy has finished.
    pub outcome: Option<Outcome>,
}

impl DeployState {
    /// The stage the deploy is in.
    pub fn stage(&self) -> Stage {
        self.steps.last().map_or(Stage::Validate, |s| s.stage)
    }
}

/// One deploy's handle: moves it through its stages and, at the end, records its outcome.
#[derive(Clone)]
pub struct Progress {
    started: Instant,
    state: Arc<watch::Sender<DeployState>>,
}

impl Progress {
    /// Records that the deploy has entered `stage`.
    pub fn enter(&self, stage: Stage) {
        let at_ms = self.elapsed_ms();
        self.state
            .send_modify(|s| s.steps.push(Step { stage, at_ms }));
    }

    /// Records how the deploy ended.
    pub fn finish(&self, result: &Result<Version, NodeError>) {
        let outcome = match result {
            Ok(version) => Outcome::Deployed(Box::new(version.clone())),
            Err(e) => Outcome::Failed {
                status: e.status().as_u16(),
                kind: e.kind().to_owned(),
                message: e.to_string(),
            },
        };
        let at_ms = self.elapsed_ms();
        // One change, so that a follower never sees `done` without its outcome.
        self.state.send_modify(|s| {
            s.steps.push(Step {
                stage: Stage::Done,
                at_ms,
            });
            s.outcome = Some(outcome);
        });
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The deploy's id, for `GET /v1/deploys/{id}`.
    pub fn id(&self) -> String {
        self.state.borrow().id.clone()
    }

    /// A receiver that sees every change of the deploy's state.
    pub fn watch(&self) -> watch::Receiver<DeployState> {
        self.state.subscribe()
    }

    /// A progress handle that records nowhere, for deploys no client follows.
    pub fn untracked(function: &str) -> Self {
        Self::new(String::new(), function)
    }

    fn new(id: String, function: &str) -> Self {
        let state = DeployState {
            id,
            function: function.to_owned(),
            steps: vec![Step {
                stage: Stage::Validate,
                at_ms: 0,
            }],
            outcome: None,
        };
        Self {
            started: Instant::now(),
            state: Arc::new(watch::Sender::new(state)),
        }
    }
}

/// The deploys of this node: every one in progress, and the last [`KEPT`] finished.
#[derive(Default)]
pub struct Deploys {
    next: AtomicU64,
    recent: Mutex<VecDeque<Progress>>,
}

impl Deploys {
    /// Starts tracking a deploy of `function`.
    pub fn start(&self, function: &str) -> Progress {
        let id = format!("d{}", self.next.fetch_add(1, Ordering::Relaxed) + 1);
        let progress = Progress::new(id, function);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        // Forget the oldest finished deploys past the bound; never one still running.
        while recent.len() >= KEPT {
            match recent
                .iter()
                .position(|p| p.state.borrow().outcome.is_some())
            {
                Some(i) => drop(recent.remove(i)),
                None => break,
            }
        }
        recent.push_back(progress.clone());
        progress
    }

    /// The state of the deploy `id`, if this node still knows it.
    pub fn get(&self, id: &str) -> Option<DeployState> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .iter()
            .map(|p| p.state.borrow())
            .find(|s| s.id == id)
            .map(|s| s.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_recorded_in_order_and_old_finished_deploys_are_forgotten() {
        let deploys = Deploys::default();
        let first = deploys.start("f");
        first.enter(Stage::Compile);
        first.finish(&Err(NodeError::BadRequest("no".into())));
        let state = deploys.get("d1").unwrap();
        let stages: Vec<Stage> = state.steps.iter().map(|s| s.stage).collect();
        assert_eq!(stages, [Stage::Validate, Stage::Compile, Stage::Done]);
        assert!(matches!(
            state.outcome,
            Some(Outcome::Failed { status: 400, .. })
        ));

        let running = deploys.start("g");
        for _ in 0..KEPT {
            deploys.start("h").finish(&Err(NodeError::Full));
        }
        assert!(deploys.get("d1").is_none(), "the oldest finished one goes");
        assert_eq!(
            deploys.get("d2").map(|s| s.outcome.is_none()),
            Some(true),
            "a running deploy is never forgotten"
        );
        drop(running);
    }
}
