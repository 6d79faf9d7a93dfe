//! Tokens and the audit log (the admin role's routes).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{client_request_id, request_id};
use crate::audit::Change;
use crate::auth::tokens::{TokenRecord, mint, now_secs};
use crate::auth::{Caller, Role};
use crate::error::NodeError;
use crate::node::{Node, blocking, validate_name};

fn token_json(record: &TokenRecord, last_used: Option<u64>) -> serde_json::Value {
    json!({
        "name": record.name,
        "role": record.role,
        "created_at": record.created_at,
        "created_by": record.created_by,
        "expires_at": record.expires_at,
        "revoked_at": record.revoked_at,
        "last_used": last_used,
        "status": record.status(now_secs()),
    })
}

pub(super) async fn tokens(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let all: Vec<_> = node
        .tokens()
        .list()
        .iter()
        .map(|(r, used)| token_json(r, *used))
        .collect();
    Json(json!({"tokens": all}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTokenRequest {
    role: String,
    #[serde(default)]
    name: Option<String>,
    /// A duration such as `30d` or `12h`; never, when absent.
    #[serde(default)]
    expires: Option<String>,
}

/// Stores `record` in the cluster first (when there is one), then here.
async fn store(node: &Arc<Node>, record: TokenRecord, create: bool) -> Result<(), NodeError> {
    if let Some(cluster) = node.cluster() {
        cluster.share_token(record.clone(), create).await?;
    } else if create && node.tokens().get(&record.name).is_some() {
        return Err(NodeError::Conflict(format!(
            "a token named {:?} exists; pick another name",
            record.name
        )));
    }
    let node = node.clone();
    blocking(move || node.tokens().put(&record)).await
}

/// `POST /v1/tokens`: the token is in the answer, and nowhere else, ever.
pub(super) async fn create_token(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, NodeError> {
    let request: NewTokenRequest = serde_json::from_slice(&body).map_err(|e| {
        NodeError::BadRequest(format!(
            "expected {{\"role\": ROLE, \"name\": NAME, \"expires\": DURATION}}: {e}"
        ))
    })?;
    let role: Role = request.role.parse().map_err(NodeError::BadRequest)?;
    let ttl = request
        .expires
        .as_deref()
        .map(crate::manifest::parse_duration)
        .transpose()
        .map_err(NodeError::BadRequest)?
        .map(|d| d.as_secs());
    let name = match request.name {
        Some(name) => name,
        None => {
            let suffix = mint("x", role, "", None)?.record.id;
            format!("{}-{}", role.as_str(), &suffix[..6])
        }
    };
    validate_name(&name).map_err(|_| {
        NodeError::BadRequest(format!(
            "invalid token name {name:?}: use a-z, 0-9, '-' and '_'"
        ))
    })?;
    let new = mint(&name, role, &caller.name, ttl)?;
    store(&node, new.record.clone(), true).await?;
    node.audit(Change {
        actor: &caller.name,
        action: "token.create",
        target: &name,
        request_id: request_id(&headers),
        client_request_id: client_request_id(&headers),
        detail: json!({"role": role, "expires_at": new.record.expires_at}),
    })
    .await?;
    let mut body = token_json(&new.record, None);
    body["token"] = json!(new.token);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `DELETE /v1/tokens/{name}`: works from the next request on, on every node of a cluster.
pub(super) async fn revoke_token(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, NodeError> {
    let mut record = node
        .tokens()
        .get(&name)
        .ok_or_else(|| NodeError::NotFound(format!("token {name}")))?;
    if record.revoked_at.is_none() {
        record.revoked_at = Some(now_secs());
        record.revoked_by = Some(caller.name.clone());
        store(&node, record.clone(), false).await?;
        node.audit(Change {
            actor: &caller.name,
            action: "token.revoke",
            target: &name,
            request_id: request_id(&headers),
            client_request_id: client_request_id(&headers),
            detail: json!({"role": record.role}),
        })
        .await?;
    }
    Ok(Json(token_json(&record, None)))
}

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    #[serde(default = "default_limit")]
    limit: usize,
}

/// Entries `GET /v1/audit` returns unless asked for more.
fn default_limit() -> usize {
    100
}

pub(super) async fn audit(
    State(node): State<Arc<Node>>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, NodeError> {
    let Query(AuditQuery { limit }) =
        query.map_err(|_| NodeError::BadRequest("limit must be a whole number".into()))?;
    let node2 = node.clone();
    let entries = blocking(move || node2.audit_log().recent(limit.min(10_000))).await?;
    Ok(Json(json!({"entries": entries})))
}
