//! The REST API (`/v1`), the `wasi:http` front door (`/fn/{name}/…`), health and metrics.
//!
//! [`ROUTES`] lists every route with what it needs of the caller; the auth middleware, the
//! OpenAPI document and the tests read it from there.

mod admin;
mod functions;
mod guard;
mod kv;
pub(crate) mod openapi;
mod operations;
mod progress;
mod workflows;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use serde_json::json;

use crate::auth::Need;
use crate::error::NodeError;
use crate::node::Node;

/// Every route of the node, as `(method, path, need)`; the OpenAPI document must describe each.
pub const ROUTES: &[(&str, &str, Need)] = &[
    ("get", "/healthz", Need::Nothing),
    ("get", "/metrics", Need::AnyToken),
    ("get", "/v1/openapi.json", Need::Nothing),
    ("get", "/v1/stats", Need::Invoke),
    ("get", "/ui", Need::Nothing),
    ("get", "/ui/{asset}", Need::Nothing),
    ("get", "/v1/functions", Need::Invoke),
    ("get", "/v1/functions/{name}", Need::Invoke),
    ("put", "/v1/functions/{name}", Need::Deploy),
    ("delete", "/v1/functions/{name}", Need::Deploy),
    ("post", "/v1/functions/{name}/rollback", Need::Deploy),
    ("get", "/v1/functions/{name}/kv/{store}", Need::Deploy),
    ("get", "/v1/functions/{name}/kv/{store}/{key}", Need::Deploy),
    ("put", "/v1/functions/{name}/kv/{store}/{key}", Need::Deploy),
    (
        "delete",
        "/v1/functions/{name}/kv/{store}/{key}",
        Need::Deploy,
    ),
    ("get", "/v1/deploys/{id}", Need::Deploy),
    ("get", "/v1/workflows", Need::Invoke),
    ("get", "/v1/workflows/{name}", Need::Invoke),
    ("put", "/v1/workflows/{name}", Need::Deploy),
    ("delete", "/v1/workflows/{name}", Need::Deploy),
    ("post", "/v1/workflows/{name}/runs", Need::Invoke),
    ("get", "/v1/workflows/{name}/runs/{run}", Need::Invoke),
    ("post", "/v1/functions/{name}/invoke", Need::Function),
    ("get", "/v1/cluster", Need::Emergency),
    ("get", "/v1/emergency", Need::Emergency),
    ("post", "/v1/emergency", Need::Emergency),
    ("delete", "/v1/emergency", Need::Emergency),
    ("get", "/v1/tokens", Need::Admin),
    ("post", "/v1/tokens", Need::Admin),
    ("delete", "/v1/tokens/{name}", Need::Admin),
    ("get", "/v1/audit", Need::Admin),
    ("get", "/fn/{name}/{path}", Need::Function),
];

/// The node's routes, each behind the auth check; no other middleware.
pub fn routes(node: Arc<Node>) -> Router {
    use functions::*;
    use operations::*;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route(
            "/v1/openapi.json",
            get(|| async { Json(openapi::document()) }),
        )
        .route("/v1/stats", get(stats))
        .route("/ui", get(crate::dashboard::page))
        .route("/ui/{asset}", get(crate::dashboard::asset))
        .route("/v1/functions", get(list))
        .route(
            "/v1/functions/{name}",
            get(describe).put(deploy).delete(remove),
        )
        .route("/v1/functions/{name}/rollback", post(rollback))
        .route("/v1/functions/{name}/kv/{store}", get(kv::list))
        .route(
            "/v1/functions/{name}/kv/{store}/{key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .route("/v1/deploys/{id}", get(deploy_status))
        .route("/v1/workflows", get(workflows::list))
        .route(
            "/v1/workflows/{name}",
            get(workflows::describe)
                .put(workflows::deploy)
                .delete(workflows::remove),
        )
        .route("/v1/workflows/{name}/runs", post(workflows::start))
        .route("/v1/workflows/{name}/runs/{run}", get(workflows::run))
        .route("/v1/functions/{name}/invoke", post(invoke))
        .route("/v1/cluster", get(cluster_status))
        .route(
            "/v1/emergency",
            get(emergency).post(declare).delete(end_emergency),
        )
        .route("/v1/tokens", get(admin::tokens).post(admin::create_token))
        .route("/v1/tokens/{name}", delete(admin::revoke_token))
        .route("/v1/audit", get(admin::audit))
        .route("/fn/{name}", any(serve_http))
        .route("/fn/{name}/", any(serve_http))
        .route("/fn/{name}/{*path}", any(serve_http))
        .route_layer(axum::middleware::from_fn_with_state(
            node.clone(),
            guard::middleware,
        ))
        .fallback(|| async {
            NodeError::BadRequest("no such route; see /v1/openapi.json".into())
                .with_kind("no-route", StatusCode::NOT_FOUND)
        })
        .with_state(node)
}

/// The request's id, as the node set it (see [`crate::app`]), for the audit log.
fn request_id(headers: &HeaderMap) -> &str {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

/// The `x-request-id` the client sent, moved aside by [`crate::app`], for the audit log.
fn client_request_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(crate::CLIENT_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
}

impl IntoResponse for NodeError {
    fn into_response(self) -> Response {
        let kind = self.kind().to_owned();
        let status = self.status();
        self.with_kind(&kind, status)
    }
}

impl NodeError {
    fn with_kind(self, kind: &str, status: StatusCode) -> Response {
        let body = Json(json!({"error": {"kind": kind, "message": self.to_string()}}));
        let mut response = (status, body).into_response();
        if self.is_retryable() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"limes\""),
            );
        }
        response
    }
}
