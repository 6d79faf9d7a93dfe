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
        // This node records its own change; the watch must not record it again.
        self.own_token_changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((record.name.clone(), record.revoked_at.is_some()));
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
            // What this record changes here, for this node's audit log: the node that took the
            // request recorded it in its own; every node that applies it records it too.
            let known = node.tokens().get(&record.name);
            let own = self
                .own_token_changes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(record.name.clone(), record.revoked_at.is_some()));
            let change = match (&known, &record.revoked_at) {
                _ if own => None,
                (None, _) => Some(("token.create", record.created_by.clone())),
                (Some(k), Some(_)) if k.revoked_at.is_none() => Some((
                    "token.revoke",
                    record
                        .revoked_by
                        .clone()
                        .unwrap_or_else(|| "unknown".into()),
                )),
                _ => None,
            };
            let (applying, name, role) = (node.clone(), record.name.clone(), record.role);
            // A durable write: on the blocking pool.
            let applied = tokio::task::spawn_blocking(move || applying.tokens().put(&record)).await;
            match applied {
                Ok(Ok(())) => {
                    if let Some((action, actor)) = change {
                        let entry = limes_node::audit::Change {
                            actor: &actor,
                            action,
                            target: &name,
                            request_id: "cluster",
                            client_request_id: None,
                            detail: serde_json::json!({"role": role, "applied_from": "cluster"}),
                        };
                        if let Err(e) = node.audit(entry).await {
                            tracing::error!(token = name, error = %e, "could not record a token change in the audit log");
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!(token = entry.key, error = %e, "could not apply a token record")
                }
                Err(e) => return Err(format!("applying a token record: {e}")),
            }
        }
        Ok(())
    }
}
