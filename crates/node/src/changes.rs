//! What changed on a node, for what follows it: the scheduler, the change triggers' watches,
//! and (through [`Node::changes`] and [`Node::workflow_changes`]) the cluster's subscriptions.

use crate::node::Node;

impl Node {
    /// Says that function `name` changed (deployed, rolled back, removed, learned from the
    /// cluster): the scheduler and [`Node::changes`]' followers look again.
    pub(crate) fn changed(&self, name: &str) {
        self.schedules.touch(name);
        let watch = match self.registry.get(name) {
            Ok(record) => record.and_then(|r| {
                let m = &r.active_version().manifest;
                crate::triggers::change::Watch::of(
                    name,
                    &m.triggers.change,
                    &m.capabilities.kv,
                    &m.triggers.delivery,
                )
            }),
            Err(e) => {
                tracing::warn!(function = name, error = %e, "cannot read a function's watch");
                None
            }
        };
        if let Err(e) = self.watches.set(name, watch) {
            tracing::error!(function = name, error = %e, "cannot keep a function's watch");
        }
        // No receiver is fine: nobody follows.
        let _ = self.changes.send(name.to_owned());
    }

    /// The names of functions as they change from now on, for what follows the registry
    /// (the cluster's message triggers). A follower that falls more than [`CHANGES_BUFFER`](crate::node::CHANGES_BUFFER)
    /// names behind gets `Lagged` and should read every function again.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    /// Says that workflow `name` changed.
    pub(crate) fn workflow_changed(&self, name: &str) {
        let _ = self.workflow_changes.send(name.to_owned());
    }

    /// The names of workflows as they change from now on (as [`Node::changes`] for functions).
    pub fn workflow_changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.workflow_changes.subscribe()
    }
}
