//! Health, metrics, the cluster and emergencies.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::{client_request_id, request_id};
use crate::audit::Change;
use crate::auth::Caller;
use crate::cluster::plan::{Declaration, plan_json};
use crate::error::NodeError;
use crate::node::Node;

/// `GET /healthz`, which anyone may call: whether the node is alive and serving, and whether
/// it is in a cluster. Nothing more: the cluster's members, addresses, load and emergency plan
/// are behind `GET /v1/cluster` and its role, and a load balancer needs none of them.
pub(super) async fn healthz(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "clustered": node.cluster().is_some(),
    }))
}

fn cluster_json(node: &Node) -> serde_json::Value {
    match node.cluster() {
        Some(cluster) => cluster.status(),
        None => json!({"mode": "standalone"}),
    }
}

pub(super) async fn cluster_status(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    Json(cluster_json(&node))
}

fn not_clustered() -> NodeError {
    NodeError::Conflict("this node runs alone; start it with --cluster".into())
}

pub(super) async fn emergency(
    State(node): State<Arc<Node>>,
) -> Result<Json<serde_json::Value>, NodeError> {
    let plan = node.cluster().ok_or_else(not_clustered)?.emergency();
    Ok(Json(plan_json(plan.as_ref())))
}

pub(super) async fn declare(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, NodeError> {
    let cluster = node.cluster().ok_or_else(not_clustered)?;
    let mut declaration: Declaration = serde_json::from_slice(&body)
        .map_err(|e| NodeError::BadRequest(format!("emergency: {e}")))?;
    // Whoever the request says declared it, the caller did.
    declaration.declared_by = Some(caller.name.clone());
    let plan = plan_json(Some(&cluster.declare(declaration).await?));
    node.audit(Change {
        actor: &caller.name,
        action: "emergency.declare",
        target: "cluster",
        request_id: request_id(&headers),
        client_request_id: client_request_id(&headers),
        detail: plan.clone(),
    })
    .await?;
    Ok(Json(plan))
}

pub(super) async fn end_emergency(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, NodeError> {
    node.cluster().ok_or_else(not_clustered)?.end().await?;
    let ended = json!({"active": false, "ended_by": node.config().node_id});
    node.audit(Change {
        actor: &caller.name,
        action: "emergency.end",
        target: "cluster",
        request_id: request_id(&headers),
        client_request_id: client_request_id(&headers),
        detail: ended.clone(),
    })
    .await?;
    Ok(Json(ended))
}

/// `GET /v1/stats`: the live figures the dashboard draws (see [`crate::stats`]).
pub(super) async fn stats(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let stats = node.metrics.stats();
    // What the stores hold; a backend that cannot say now leaves the list empty.
    let kv: Vec<_> = limes_runtime::kv::KvBackend::usage(&node.kv)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|u| json!({"function": u.store.namespace, "store": u.store.name, "keys": u.keys, "bytes": u.bytes}))
        .collect();
    Json(json!({
        "node": node.config().node_id,
        "in_flight": node.in_flight(),
        "capacity": node.config().capacity,
        "functions": stats.functions(),
        "seconds": stats.seconds(),
        "kv": kv,
        "workflows": node.workflow_stats(),
    }))
}

pub(super) async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    // Deployed functions are counted where they are kept: the registry (not all are loaded).
    match node.registry.count() {
        Ok(n) => node.metrics.set_functions(n),
        Err(e) => tracing::warn!(error = %e, "cannot count the deployed functions"),
    }
    match limes_runtime::kv::KvBackend::usage(&node.kv).await {
        Ok(usage) => node.kv.metrics.set_usage(&usage),
        Err(e) => tracing::warn!(error = %e, "cannot measure the key-value stores"),
    }
    let text = node.metrics.render(
        node.runtime().cache_stats(),
        &[
            node.kv.metrics.registry(),
            node.schedules.registry(),
            node.deliveries.registry(),
        ],
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}
