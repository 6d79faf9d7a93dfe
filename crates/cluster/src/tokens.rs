//! Tokens across the cluster: a token made on one node works on every node, and a revocation
//! reaches every node as fast as the watch delivers it (milliseconds; well within the
//! heartbeat horizon).
//!
//! The bucket `limes-tokens` holds every token record by name, revoked ones included. A node
//! that joins offers its own tokens with a KV create, which never overwrites (so a token revoked
//! while the node was away stays revoked), then follows the bucket from its start.

use std::sync::Arc;

use futures::StreamExt;
use limes_node::NodeError;
use limes_node::auth::tokens::TokenRecord;

use crate::{NatsCluster, unavailable};

impl NatsCluster {
    /// Stores `record` in the cluster: `create` fails with a conflict if the name is taken.
    pub(crate) async fn put_token(
        &self,
        record: TokenRecord,
        create: bool,
    ) -> Result<(), NodeError> {
        let tokens = self.buckets().await?.tokens;
        let value = serde_json::to_vec(&record).map_err(|e| NodeError::Storage(e.to_string()))?;
        if create {
            match tokens.create(&record.name, value.into()).await {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
                    Err(NodeError::Conflict(format!(
                        "a token named {:?} exists in the cluster; pick another name",
                        record.name
                    )))
                }
                Err(e) => Err(unavailable("storing a token", e)),
            }
        } else {
            tokens
                .put(&record.name, value.into())
                .await
                .map(|_| ())
                .map_err(|e| unavailable("storing a token", e))
        }
    }

    /// Offers this node's tokens to the cluster, then applies every record the cluster has, and
    /// every change from then on, to this node.
    pub(crate) async fn watch_tokens(self: Arc<Self>) -> Result<(), String> {
        let node = self.node().map_err(|e| e.to_string())?;
        for (record, _) in node.tokens().list() {
            match self.put_token(record, true).await {
                Ok(()) | Err(NodeError::Conflict(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        let tokens = self.buckets().await.map_err(|e| e.to_string())?.tokens;
        let mut watch = tokens
            .watch_with_history(">")
            .await
            .map_err(|e| e.to_string())?;
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| e.to_string())?;
            if entry.operation != async_nats::jetstream::kv::Operation::Put {
                continue;
            }
            let record: TokenRecord = match serde_json::from_slice(&entry.value) {
                Ok(record) => record,
                Err(e) => {
                    tracing::warn!(token = entry.key, error = %e, "bad token record");
                    continue;
                }
            };
            let node = self.node().map_err(|e| e.to_string())?;
            // A durable write: on the blocking pool.
            let applied = tokio::task::spawn_blocking(move || node.tokens().put(&record)).await;
            match applied {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(token = entry.key, error = %e, "could not apply a token record")
                }
                Err(e) => return Err(format!("applying a token record: {e}")),
            }
        }
        Ok(())
    }
}
