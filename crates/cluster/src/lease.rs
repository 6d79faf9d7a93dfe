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

/// Keeps what a node runs for each of some names in step with it: `reconcile` looks at every
/// name `names` gives now, then at each name `changes` announces, and at all of them again
/// when the follower fell behind the announcements.
pub(crate) async fn follow(
    mut changes: tokio::sync::broadcast::Receiver<String>,
    names: impl Fn() -> Result<Vec<String>, String>,
    reconcile: impl Fn(String) -> BoxFuture<'static, ()>,
) -> Result<(), String> {
    use tokio::sync::broadcast::error::RecvError;
    let mut due = names()?;
    loop {
        for name in due.drain(..) {
            reconcile(name).await;
        }
        match changes.recv().await {
            Ok(name) => due.push(name),
            Err(RecvError::Lagged(_)) => due = names()?,
            Err(RecvError::Closed) => return Ok(()),
        }
    }
}
