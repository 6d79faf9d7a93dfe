//! Key-value stores from outside: an operator (or a test) reads, writes and lists a function's
//! stores, with the same limits its guests have (role `deploy`).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use limes_runtime::kv::{Expect, KvBackend, KvError, PAGE, StoreId};
use serde_json::json;

use crate::error::NodeError;
use crate::node::Node;

fn failed(e: KvError) -> NodeError {
    match e {
        KvError::Conflict => NodeError::Conflict(e.to_string()),
        KvError::Quota(text) | KvError::NotAnInteger(text) => NodeError::BadRequest(text),
        KvError::Unavailable(text) => NodeError::Storage(text),
    }
}

/// The store `store` of function `name`, if its active manifest declares it.
async fn resolve(node: &Arc<Node>, name: &str, store: &str) -> Result<StoreId, NodeError> {
    let record = node.get(name).await?;
    let kv = &record.active_version().manifest.capabilities.kv;
    kv.store(name, store).ok_or_else(|| {
        NodeError::NotFound(format!(
            "{name} declares no key-value store {store:?} (manifest keys kv and kv_shared)"
        ))
    })
}

fn check_key(node: &Node, key: &str) -> Result<(), NodeError> {
    let max = node.config().grants.kv.limits.max_key_bytes;
    if key.is_empty() || key.len() > max {
        return Err(NodeError::BadRequest(format!(
            "a key is 1 to {max} bytes; this one is {}",
            key.len()
        )));
    }
    Ok(())
}

/// `GET /v1/functions/{name}/kv/{store}/{key}`: the value's bytes, its revision in
/// `x-limes-revision`.
pub(super) async fn get(
    State(node): State<Arc<Node>>,
    Path((name, store, key)): Path<(String, String, String)>,
) -> Result<Response, NodeError> {
    let id = resolve(&node, &name, &store).await?;
    check_key(&node, &key)?;
    let entry = node
        .kv
        .get(&id, &key)
        .await
        .map_err(failed)?
        .ok_or_else(|| {
            NodeError::NotFound(format!("no key {key:?} in store {store:?} of {name}"))
        })?;
    let mut response = entry.value.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert("x-limes-revision", HeaderValue::from(entry.revision));
    Ok(response)
}

/// `PUT /v1/functions/{name}/kv/{store}/{key}`: the body becomes the value, durably.
pub(super) async fn put(
    State(node): State<Arc<Node>>,
    Path((name, store, key)): Path<(String, String, String)>,
    value: Bytes,
) -> Result<StatusCode, NodeError> {
    let id = resolve(&node, &name, &store).await?;
    check_key(&node, &key)?;
    let limits = node.config().grants.kv.limits;
    if value.len() > limits.max_value_bytes {
        return Err(NodeError::BadRequest(format!(
            "the value is {} bytes, over this node's limit of {}",
            value.len(),
            limits.max_value_bytes
        )));
    }
    let quota = limes_runtime::kv::Quota {
        max_keys: limits.max_keys,
        max_bytes: limits.max_bytes,
    };
    node.kv
        .set(&id, &key, value.to_vec(), Expect::Any, quota)
        .await
        .map_err(failed)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/functions/{name}/kv/{store}/{key}`.
pub(super) async fn delete(
    State(node): State<Arc<Node>>,
    Path((name, store, key)): Path<(String, String, String)>,
) -> Result<StatusCode, NodeError> {
    let id = resolve(&node, &name, &store).await?;
    check_key(&node, &key)?;
    node.kv.delete(&id, &key).await.map_err(failed)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
pub(super) struct ListQuery {
    cursor: Option<String>,
}

/// `GET /v1/functions/{name}/kv/{store}?cursor=KEY`: up to 1 000 keys in order, and the cursor
/// of the next page (`null` on the last).
pub(super) async fn list(
    State(node): State<Arc<Node>>,
    Path((name, store)): Path<(String, String)>,
    Query(query): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, NodeError> {
    let id = resolve(&node, &name, &store).await?;
    let (keys, more) = node
        .kv
        .list(&id, query.cursor.as_deref(), PAGE)
        .await
        .map_err(failed)?;
    let cursor = more.then(|| keys.last().cloned()).flatten();
    Ok(Json(json!({"keys": keys, "cursor": cursor})))
}
