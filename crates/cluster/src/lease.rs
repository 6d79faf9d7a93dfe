//! Work one node does at a time for the whole cluster (deciding an emergency plan, changing the
//! durable triggers' subjects), and keeping a node's work in step with its registry.

use futures::future::BoxFuture;
use limes_node::NodeError;

use crate::{NatsCluster, unavailable};

impl NatsCluster {
    /// Runs `work` holding the lease `key` of the lease bucket, so that no two nodes do it at
    /// once; refused with [`NodeError::Conflict`] (naming the holder and `what` it does) while
    /// another node holds it. The lease is a KV create (which fails if the key exists),
    /// released by a delete, and expires by itself should its holder die holding it.
    pub(crate) async fn with_lease<T, F, Fut>(
        &self,
        key: &str,
        what: &str,
        work: F,
    ) -> Result<T, NodeError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, NodeError>>,
    {
        let lease = self.buckets().await?.lease;
        match lease.create(key, self.id.clone().into()).await {
            Ok(_) => {}
            Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
                let holder = lease
                    .get(key)
                    .await
                    .ok()
                    .flatten()
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_else(|| "another node".into());
                return Err(NodeError::Conflict(format!(
                    "node {holder} is {what} now; retry in a moment"
                )));
            }
            Err(e) => return Err(unavailable(&format!("taking the lease for {what}"), e)),
        }
        let outcome = work().await;
        if let Err(e) = lease.delete(key).await {
            tracing::warn!(error = %e, key, "could not release a lease; it expires by itself");
        }
        outcome
    }
}

/// How often [`follow`] looks at every name again, announced or not.
const RESYNC: std::time::Duration = std::time::Duration::from_secs(10);

/// Keeps what a node runs for each of some names in step with it: `reconcile` looks at every
/// name `names` gives now, then at each name `changes` announces, and at all of them again
/// when the follower fell behind the announcements, and every [`RESYNC`]: an announcement
/// missed or late (a record that reached the node another way first, a watch that stalled)
/// must not leave a trigger unfollowed for good. `reconcile` does nothing for a name already
/// in step, so the resync costs a read of each.
pub(crate) async fn follow(
    mut changes: tokio::sync::broadcast::Receiver<String>,
    names: impl Fn() -> Result<Vec<String>, String>,
    reconcile: impl Fn(String) -> BoxFuture<'static, ()>,
) -> Result<(), String> {
    use tokio::sync::broadcast::error::RecvError;
    let mut due = names()?;
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    loop {
        for name in due.drain(..) {
            reconcile(name).await;
        }
        tokio::select! {
            change = changes.recv() => match change {
                Ok(name) => due.push(name),
                Err(RecvError::Lagged(_)) => due = names()?,
                Err(RecvError::Closed) => return Ok(()),
            },
            _ = resync.tick() => due = names()?,
        }
    }
}
