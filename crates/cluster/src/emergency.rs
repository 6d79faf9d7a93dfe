//! Declaring and ending emergencies: one node decides at a time, holding the KV lease.

use std::sync::Arc;

use limes_node::NodeError;
use serde_json::json;

use crate::plan::{self, Declaration, Plan};
use crate::{NatsCluster, now_ms, store, unavailable};

impl NatsCluster {
    /// Decides a plan for `request` (a [`Declaration`], recorded as made by `declared_by`) from the members alive now, stores it
    /// for every node and returns it.
    pub(crate) async fn declare_plan(
        &self,
        request: serde_json::Value,
        declared_by: String,
    ) -> Result<serde_json::Value, NodeError> {
        let mut declaration: Declaration = serde_json::from_value(request)
            .map_err(|e| NodeError::BadRequest(format!("emergency: {e}")))?;
        declaration.declared_by = Some(declared_by);
        declaration.validate().map_err(NodeError::BadRequest)?;
        self.with_lease(|| async {
            let members = self.members();
            if members.is_empty() {
                return Err(NodeError::Cluster("no node is alive in the view".into()));
            }
            let plan = plan::decide(
                &declaration,
                &members,
                &self.config.latency,
                &self.id,
                now_ms(),
            );
            let value = serde_json::to_vec(&plan).map_err(|e| NodeError::Storage(e.to_string()))?;
            self.buckets()
                .await?
                .emergency
                .put(store::PLAN_KEY, value.into())
                .await
                .map_err(|e| unavailable("storing the plan", e))?;
            *self.plan.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(plan.clone()));
            self.publish_metrics();
            Ok(plan_json(Some(&plan)))
        })
        .await
    }

    /// Removes the plan in force: normal placement everywhere.
    pub(crate) async fn end_plan(&self) -> Result<serde_json::Value, NodeError> {
        self.with_lease(|| async {
            self.buckets()
                .await?
                .emergency
                .delete(store::PLAN_KEY)
                .await
                .map_err(|e| unavailable("ending the plan", e))?;
            *self.plan.write().unwrap_or_else(|p| p.into_inner()) = None;
            self.publish_metrics();
            Ok(json!({"active": false, "ended_by": self.id}))
        })
        .await
    }

    /// Runs `decide` holding the decision lease, so that no two nodes decide at once. The lease
    /// is a KV create (which fails if the key exists), released by a delete, and expires by
    /// itself should this node die holding it.
    async fn with_lease<F, Fut>(&self, decide: F) -> Result<serde_json::Value, NodeError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<serde_json::Value, NodeError>>,
    {
        let lease = self.buckets().await?.lease;
        match lease.create(store::LEASE_KEY, self.id.clone().into()).await {
            Ok(_) => {}
            Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
                let holder = lease
                    .get(store::LEASE_KEY)
                    .await
                    .ok()
                    .flatten()
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_else(|| "another node".into());
                return Err(NodeError::Conflict(format!(
                    "node {holder} is deciding an emergency plan now; retry in a moment"
                )));
            }
            Err(e) => return Err(unavailable("taking the decision lease", e)),
        }
        let outcome = decide().await;
        if let Err(e) = lease.delete(store::LEASE_KEY).await {
            tracing::warn!(error = %e, "could not release the decision lease; it expires by itself");
        }
        outcome
    }
}

/// The plan in force as the API shows it.
pub(crate) fn plan_json(plan: Option<&Plan>) -> serde_json::Value {
    match plan {
        Some(p) => json!({"active": true, "plan": p}),
        None => json!({"active": false}),
    }
}
