//! Ways a function runs besides a request: triggers, declared with the function. (A capability
//! is a way out of the sandbox; a trigger is a way in.)
//!
//! | trigger | manifest keys | module |
//! | --- | --- | --- |
//! | schedule | `schedule`, `schedule_tz`, `schedule_overlap`, `schedule_args` | [`schedule`] |
//! | message | `on_message`, `on_message_delivery` | [`message`] |
//! | change | `on_change`, `on_change_prefix` | [`change`] |
//! | (how runs are delivered) | `max_in_flight`, `max_deliver`, `retry_backoff`, `dead_letter` | [`policy`] |
//!
//! The node's one scheduler (`crate::schedules`) follows the registry, sleeps until the next
//! tick of any function and fires it through the same admission as a request, at the
//! function's priority. In a cluster each tick is claimed through [`crate::cluster::Schedules`]
//! first, so it runs on one node only; in an emergency, `batch` functions' ticks are skipped.
//!
//! Messages come from NATS, so the cluster (`limes-cluster`) subscribes for the node: it
//! follows [`Node::changes`](crate::Node::changes) and runs each message through
//! [`Node::invoke`](crate::Node::invoke), counting deliveries in [`Deliveries`].

pub mod change;
pub mod message;
pub mod policy;
pub mod schedule;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use clap::Args;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::capabilities::{Grants, Sections};
use crate::error::NodeError;

/// Every trigger's section of a manifest. Flattened into it: the keys stay top-level.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Triggers {
    #[serde(flatten)]
    pub schedule: schedule::Schedule,
    #[serde(flatten)]
    pub message: message::Message,
    #[serde(flatten)]
    pub change: change::Change,
    #[serde(flatten)]
    pub delivery: policy::DeliveryPolicy,
}

impl Triggers {
    /// Every trigger's keys, with what each means.
    pub fn keys() -> impl Iterator<Item = (&'static str, &'static str)> {
        [schedule::KEYS, message::KEYS, change::KEYS, policy::KEYS]
            .into_iter()
            .flatten()
            .copied()
    }

    /// Takes `key=value` if a trigger owns `key`; `None` if none does.
    pub fn parse(&mut self, key: &str, value: &str) -> Option<Result<(), String>> {
        let owns = |keys: &[(&str, &str)]| keys.iter().any(|(k, _)| *k == key);
        Some(if owns(schedule::KEYS) {
            self.schedule.parse(key, value)
        } else if owns(message::KEYS) {
            self.message.parse(key, value)
        } else if owns(change::KEYS) {
            self.change.parse(key, value)
        } else if owns(policy::KEYS) {
            self.delivery.parse(key, value)
        } else {
            return None;
        })
    }

    /// Checks each section as a whole, and against the function's capabilities.
    pub fn finish(&self, capabilities: &Sections) -> Result<(), String> {
        self.schedule.finish()?;
        self.message.finish(&self.delivery)?;
        self.change.finish(&capabilities.kv)?;
        let durable = self.message.is_durable() || self.change.on_change.is_some();
        let triggered = durable || self.message.on_message.is_some();
        match (self.delivery.durable_key(), self.delivery.max_in_flight) {
            (Some(key), _) if !durable => Err(format!(
                "{key} needs a durable trigger (on_message_delivery=durable, or on_change): core messages are never retried"
            )),
            (_, Some(_)) if !triggered => Err("max_in_flight needs on_message or on_change".into()),
            _ => Ok(()),
        }
    }

    /// Every section's pairs.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = self.schedule.pairs();
        pairs.extend(self.message.pairs());
        pairs.extend(self.change.pairs());
        pairs.extend(self.delivery.pairs());
        pairs
    }

    /// Whether every trigger stays within the operator's grants and what the node can do
    /// (`clustered`: it has NATS).
    pub fn check(&self, grants: &Grants, clustered: bool) -> Result<(), NodeError> {
        self.message.check(&grants.messaging, clustered)?;
        match &self.delivery.dead_letter {
            Some(dead) if clustered => grants.messaging.check("dead_letter", dead),
            Some(dead) => Err(NodeError::BadRequest(format!(
                "dead_letter={dead}: dead-letter subjects need a cluster (limes serve --nats URL); alone, a node keeps its dead letters itself"
            ))),
            None => Ok(()),
        }
    }
}

/// Every trigger's flags of `limes deploy`.
#[derive(Args, Debug, Clone, Default)]
// No argument group of its own: every trigger's struct has this name.
#[group(skip)]
pub struct DeployArgs {
    #[command(flatten)]
    pub schedule: schedule::DeployArgs,
    #[command(flatten)]
    pub message: message::DeployArgs,
    #[command(flatten)]
    pub change: change::DeployArgs,
    #[command(flatten)]
    pub delivery: policy::DeployArgs,
}

impl DeployArgs {
    /// The flags given, as manifest pairs.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = self.schedule.pairs();
        pairs.extend(self.message.pairs());
        pairs.extend(self.change.pairs());
        pairs.extend(self.delivery.pairs());
        pairs
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabel {
    function: String,
    trigger: &'static str,
    outcome: &'static str,
}

/// What became of the messages triggers delivered, for `/metrics`
/// (`limes_trigger_deliveries_total{function,trigger,outcome}`).
pub struct Deliveries {
    counts: Family<DeliveryLabel, Counter>,
    lag: Family<LagLabel, Gauge>,
    registry: Registry,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabel {
    function: String,
    trigger: &'static str,
}

impl Default for Deliveries {
    fn default() -> Self {
        let counts = Family::default();
        let mut registry = Registry::with_prefix("limes_trigger");
        registry.register(
            "deliveries",
            "Deliveries by function, trigger (message, durable) and outcome: delivered (a run began), acked (it succeeded), failed (it did not; core delivery drops it), retried, dead_lettered",
            counts.clone(),
        );
        let lag = Family::default();
        registry.register(
            "lag",
            "Messages waiting for a durable trigger or a workflow's step, as its consumer last said (in a cluster)",
            lag.clone(),
        );
        Self {
            counts,
            lag,
            registry,
        }
    }
}

impl Deliveries {
    /// Counts one `outcome` of `function`'s `trigger`.
    pub fn count(&self, function: &str, trigger: &'static str, outcome: &'static str) {
        self.counts
            .get_or_create(&DeliveryLabel {
                function: function.to_owned(),
                trigger,
                outcome,
            })
            .inc();
    }

    /// How many `outcome`s of `function`'s `trigger` so far.
    pub fn get(&self, function: &str, trigger: &'static str, outcome: &'static str) -> u64 {
        self.counts
            .get_or_create(&DeliveryLabel {
                function: function.to_owned(),
                trigger,
                outcome,
            })
            .get()
    }

    /// How many messages wait for `function`'s `trigger`, as last set.
    pub fn lag(&self, function: &str, trigger: &'static str) -> i64 {
        self.lag
            .get_or_create(&LagLabel {
                function: function.to_owned(),
                trigger,
            })
            .get()
    }

    /// Sets how many messages wait for `function`'s `trigger`.
    pub fn set_lag(&self, function: &str, trigger: &'static str, waiting: u64) {
        self.lag
            .get_or_create(&LagLabel {
                function: function.to_owned(),
                trigger,
            })
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// The metrics, for `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TickLabel {
    function: String,
    outcome: &'static str,
}

/// The scheduler's state on a node: what changed, what runs, what happened.
pub struct ScheduleState {
    /// Functions that changed since the loop last looked (deployed, rolled back, removed,
    /// learned from the cluster); the loop re-reads only those.
    pub(crate) changed_names: Mutex<HashSet<String>>,
    pub(crate) changed: Arc<Notify>,
    /// Functions whose scheduled run is going on here (for `schedule_overlap=forbid`).
    pub(crate) running: Mutex<HashSet<String>>,
    ticks: Family<TickLabel, Counter>,
    registry: Registry,
}

impl Default for ScheduleState {
    fn default() -> Self {
        let ticks = Family::default();
        let mut registry = Registry::with_prefix("limes_schedule");
        registry.register(
            "ticks",
            "Scheduled ticks by function and outcome: ran, failed, overlap (skipped: the previous run goes on), paused (a batch function in an emergency), elsewhere (another node claimed it)",
            ticks.clone(),
        );
        Self {
            changed_names: Mutex::default(),
            changed: Arc::default(),
            running: Mutex::default(),
            ticks,
            registry,
        }
    }
}

impl ScheduleState {
    /// Says that function `name` changed.
    pub fn touch(&self, name: &str) {
        let mut changed = self.changed_names.lock().unwrap_or_else(|p| p.into_inner());
        changed.insert(name.to_owned());
        drop(changed);
        self.changed.notify_one();
    }

    pub(crate) fn count(&self, function: &str, outcome: &'static str) {
        self.ticks
            .get_or_create(&TickLabel {
                function: function.to_owned(),
                outcome,
            })
            .inc();
    }

    /// The scheduler's metrics, for `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}
