//! What the node asks of its cluster: the [`limes_node::Cluster`] implementation, on top of the
//! buckets, forwarding and plans of the rest of this crate.

use bytes::Bytes;
use futures::future::BoxFuture;
use limes_node::auth::tokens::TokenRecord;
use limes_node::cluster::plan::{Declaration, Plan, plan_json};
use limes_node::cluster::{Emergencies, Forwarding, Replication, Schedules, TokenSharing};
use limes_node::{
    Call, Cluster, FunctionRecord, HttpCall, HttpRan, NewVersion, NodeError, Placement, Ran,
};
use serde_json::json;

use crate::{NatsCluster, plan, unavailable};

impl Replication for NatsCluster {
    fn publish(
        &self,
        name: String,
        version: NewVersion,
        component: Bytes,
    ) -> BoxFuture<'_, Result<FunctionRecord, NodeError>> {
        Box::pin(async move {
            // The artifact first: a record must never name a component the store lacks.
            self.put_artifact(version.digest.clone(), component).await?;
            self.update_record(&name, |current| {
                let mut record = current.unwrap_or_else(|| FunctionRecord::new(&name));
                record.push_version(version.clone());
                Ok(record)
            })
            .await
        })
    }

    fn activate(
        &self,
        name: String,
        version: u32,
    ) -> BoxFuture<'_, Result<FunctionRecord, NodeError>> {
        Box::pin(async move {
            self.update_record(&name, |current| {
                let mut record = current.ok_or_else(|| NodeError::NotFound(name.clone()))?;
                if !record.versions.iter().any(|v| v.version == version) {
                    return Err(NodeError::NoSuchVersion {
                        name: name.clone(),
                        version,
                    });
                }
                record.active = version;
                Ok(record)
            })
            .await
        })
    }

    fn withdraw(&self, name: String) -> BoxFuture<'_, Result<bool, NodeError>> {
        Box::pin(async move {
            let functions = self.buckets().await?.functions;
            let existed = functions
                .get(&name)
                .await
                .map_err(|e| unavailable("reading a function record", e))?
                .is_some();
            if existed {
                functions
                    .delete(&name)
                    .await
                    .map_err(|e| unavailable("removing a function record", e))?;
            }
            Ok(existed)
        })
    }

    fn lookup(&self, name: String) -> BoxFuture<'_, Result<Option<FunctionRecord>, NodeError>> {
        Box::pin(async move {
            let value = self
                .buckets()
                .await?
                .functions
                .get(&name)
                .await
                .map_err(|e| unavailable("reading a function record", e))?;
            value
                .map(|v| {
                    serde_json::from_slice(&v).map_err(|e| {
                        NodeError::Storage(format!("the cluster's record of {name}: {e}"))
                    })
                })
                .transpose()
        })
    }

    fn put_artifact(&self, digest: String, bytes: Bytes) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(async move {
            let buckets = self.buckets().await?;
            if buckets.artifacts.info(&digest).await.is_err() {
                let mut reader = std::io::Cursor::new(bytes);
                buckets
                    .artifacts
                    .put(digest.as_str(), &mut reader)
                    .await
                    .map_err(|e| unavailable("storing the component", e))?;
            }
            Ok(())
        })
    }

    fn artifact(&self, digest: String) -> BoxFuture<'_, Result<Bytes, NodeError>> {
        Box::pin(async move {
            use tokio::io::AsyncReadExt;
            let mut object = self
                .buckets()
                .await?
                .artifacts
                .get(&digest)
                .await
                .map_err(|e| unavailable(&format!("fetching component {digest}"), e))?;
            let mut bytes = Vec::new();
            object
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| unavailable(&format!("reading component {digest}"), e))?;
            Ok(bytes.into())
        })
    }
}

impl Forwarding for NatsCluster {
    fn placement(&self, name: &str) -> Placement {
        let Some(plan) = self.plan_now() else {
            return Placement::default();
        };
        if plan.is_urgent(name) {
            return Placement {
                urgent: true,
                ..Placement::default()
            };
        }
        let capacity = self.node.upgrade().map_or(0, |n| n.config().capacity);
        Placement {
            elsewhere: plan.releases(&self.id),
            reserve: (f64::from(capacity) * (1.0 - plan::REGULAR_SHARE)).ceil() as u32,
            urgent: false,
        }
    }

    fn forward(&self, call: Call) -> BoxFuture<'_, Result<Ran, NodeError>> {
        Box::pin(self.forward_call(call))
    }

    fn forward_http(&self, call: HttpCall) -> BoxFuture<'_, Result<HttpRan, NodeError>> {
        Box::pin(self.forward_http_call(call))
    }
}

impl Cluster for NatsCluster {
    fn status(&self) -> serde_json::Value {
        let state = match self.client.connection_state() {
            async_nats::connection::State::Connected => "connected",
            async_nats::connection::State::Disconnected => "disconnected",
            async_nats::connection::State::Pending => "connecting",
        };
        let members = self.members();
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        json!({
            "mode": "cluster",
            "nats": crate::connect::redacted(&self.config.url),
            "state": state,
            "node": self.id,
            "location": self.config.location,
            "members": members,
            "emergency": plan_json(self.plan_now().as_deref()),
            "triggers": self.subscribed(),
            "last_error": last_error,
        })
    }
}

impl Emergencies for NatsCluster {
    fn declare(&self, declaration: Declaration) -> BoxFuture<'_, Result<Plan, NodeError>> {
        Box::pin(self.declare_plan(declaration))
    }

    fn emergency(&self) -> Option<Plan> {
        self.plan_now().as_deref().cloned()
    }

    fn end(&self) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(self.end_plan())
    }
}

impl Schedules for NatsCluster {
    fn claim_tick(&self, function: String, tick_ms: u64) -> BoxFuture<'_, Result<bool, NodeError>> {
        Box::pin(async move {
            let ticks = self.buckets().await?.ticks;
            match ticks
                .create(format!("{function}.{tick_ms}"), self.id.clone().into())
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
                    Ok(false)
                }
                Err(e) => Err(unavailable("claiming a scheduled tick", e)),
            }
        })
    }
}

impl TokenSharing for NatsCluster {
    fn share_token(
        &self,
        record: TokenRecord,
        create: bool,
    ) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(self.put_token(record, create))
    }
}
