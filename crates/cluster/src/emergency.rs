//! Emergencies: declaring and ending one (one node decides at a time, holding the KV lease),
//! and following the plan in force, recorded in each node's audit log.

use std::sync::Arc;

use futures::StreamExt;
use limes_node::NodeError;

use crate::plan::{self, Declaration, Plan};
use crate::{NatsCluster, now_ms, store, unavailable};

impl NatsCluster {
    /// Follows the emergency plan.
    pub(crate) async fn watch_plan(self: Arc<Self>) -> Result<(), String> {
        let buckets = self.buckets().await.map_err(|e| e.to_string())?;
        let mut watch = buckets
            .emergency
            .watch_with_history(store::PLAN_KEY)
            .await
            .map_err(|e| e.to_string())?;
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| e.to_string())?;
            let plan: Option<Plan> = match entry.operation {
                async_nats::jetstream::kv::Operation::Put => serde_json::from_slice(&entry.value)
                    .map_err(|e| tracing::warn!(error = %e, "bad emergency plan"))
                    .ok(),
                _ => None,
            };
            match &plan {
                Some(p) => {
                    tracing::warn!(released = ?p.released, urgent = ?p.declaration.urgent, "emergency plan in force")
                }
                None => tracing::info!("no emergency plan in force"),
            }
            let previous = std::mem::replace(
                &mut *self.plan.write().unwrap_or_else(|p| p.into_inner()),
                plan.clone().map(Arc::new),
            );
            self.publish_metrics();
            self.audit_plan_change(previous.as_deref(), plan.as_ref())
                .await;
        }
        Ok(())
    }

    /// Records in this node's audit log a plan that another node declared or ended (the node
    /// that took the request records its own, and has set its plan already, so for it nothing
    /// changes here). Who ended a plan is not in the cluster's record: the entry says `cluster`.
    async fn audit_plan_change(&self, previous: Option<&Plan>, next: Option<&Plan>) {
        let decided = |p: Option<&Plan>| p.map(|p| (p.decided_by.clone(), p.decided_at_ms));
        if decided(previous) == decided(next) {
            return;
        }
        let Ok(node) = self.node() else { return };
        let (actor, action, detail) = match next {
            Some(p) => (
                p.declaration
                    .declared_by
                    .clone()
                    .unwrap_or_else(|| "unknown".into()),
                "emergency.declare",
                serde_json::json!({"applied_from": p.decided_by, "urgent": p.declaration.urgent, "released": p.released}),
            ),
            None => (
                "cluster".to_owned(),
                "emergency.end",
                serde_json::json!({"applied_from": "cluster"}),
            ),
        };
        let change = limes_node::audit::Change {
            actor: &actor,
            action,
            target: "cluster",
            request_id: "cluster",
            client_request_id: None,
            detail,
        };
        if let Err(e) = node.audit(change).await {
            tracing::error!(error = %e, "could not record an emergency change in the audit log");
        }
    }

    /// Decides a plan for `request` (a [`Declaration`], recorded as made by `declared_by`) from the members alive now, stores it
    /// for every node and returns it.
    pub(crate) async fn declare_plan(&self, declaration: Declaration) -> Result<Plan, NodeError> {
        plan::validate(&declaration).map_err(NodeError::BadRequest)?;
        self.with_lease(store::LEASE_KEY, "deciding an emergency plan", || async {
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
            Ok(plan)
        })
        .await
    }

    /// Removes the plan in force: normal placement everywhere.
    pub(crate) async fn end_plan(&self) -> Result<(), NodeError> {
        self.with_lease(store::LEASE_KEY, "deciding an emergency plan", || async {
            self.buckets()
                .await?
                .emergency
                .delete(store::PLAN_KEY)
                .await
                .map_err(|e| unavailable("ending the plan", e))?;
            *self.plan.write().unwrap_or_else(|p| p.into_inner()) = None;
            self.publish_metrics();
            Ok(())
        })
        .await
    }
}
