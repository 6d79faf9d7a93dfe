//! The REST API (`/v1`), the `wasi:http` front door (`/fn/{name}/…`), health and metrics.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::json;

use crate::error::NodeError;
use crate::manifest::Manifest;
use crate::node::Node;
use crate::registry::FunctionRecord;

/// Every route of the node, as `(method, path)`; the OpenAPI document must describe each.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
    ("get", "/v1/functions"),
    ("get", "/v1/functions/{name}"),
    ("put", "/v1/functions/{name}"),
    ("delete", "/v1/functions/{name}"),
    ("post", "/v1/functions/{name}/rollback"),
    ("post", "/v1/functions/{name}/invoke"),
    ("get", "/v1/cluster"),
    ("get", "/v1/emergency"),
    ("post", "/v1/emergency"),
    ("delete", "/v1/emergency"),
    ("get", "/fn/{name}/{path}"),
];

/// The node's routes, without middleware.
pub fn routes(node: Arc<Node>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route(
            "/v1/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
        .route("/v1/functions", get(list))
        .route(
            "/v1/functions/{name}",
            get(describe).put(deploy).delete(remove),
        )
        .route("/v1/functions/{name}/rollback", post(rollback))
        .route("/v1/functions/{name}/invoke", post(invoke))
        .route("/v1/cluster", get(cluster_status))
        .route(
            "/v1/emergency",
            get(emergency).post(declare).delete(end_emergency),
        )
        .route("/fn/{name}", any(serve_http))
        .route("/fn/{name}/", any(serve_http))
        .route("/fn/{name}/{*path}", any(serve_http))
        .fallback(|| async {
            NodeError::BadRequest("no such route; see /v1/openapi.json".into())
                .with_kind("no-route", StatusCode::NOT_FOUND)
        })
        .with_state(node)
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
        response
    }
}

async fn healthz(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "node": node.config().node_id,
        "functions": node.list().map(|l| l.len()).unwrap_or(0),
        "in_flight": node.in_flight(),
        "capacity": node.config().capacity,
        "cluster": cluster_json(&node),
    }))
}

fn cluster_json(node: &Node) -> serde_json::Value {
    match node.cluster() {
        Some(cluster) => cluster.status(),
        None => json!({"mode": "standalone"}),
    }
}

async fn cluster_status(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    Json(cluster_json(&node))
}

fn not_clustered() -> NodeError {
    NodeError::Conflict("this node runs alone; start it with --cluster".into())
}

async fn emergency(State(node): State<Arc<Node>>) -> Result<Json<serde_json::Value>, NodeError> {
    Ok(Json(node.cluster().ok_or_else(not_clustered)?.emergency()))
}

async fn declare(
    State(node): State<Arc<Node>>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, NodeError> {
    let request = serde_json::from_slice(&body)
        .map_err(|e| NodeError::BadRequest(format!("the emergency must be JSON: {e}")))?;
    let cluster = node.cluster().ok_or_else(not_clustered)?;
    Ok(Json(cluster.declare(request).await?))
}

async fn end_emergency(
    State(node): State<Arc<Node>>,
) -> Result<Json<serde_json::Value>, NodeError> {
    Ok(Json(node.cluster().ok_or_else(not_clustered)?.end().await?))
}

async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let text = node.metrics.render(node.runtime().cache_stats());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

fn summary(record: &FunctionRecord) -> serde_json::Value {
    let active = record.active_version();
    json!({
        "name": record.name,
        "version": record.active,
        "kind": active.kind,
        "digest": active.digest,
        "versions": record.versions.len(),
    })
}

async fn list(State(node): State<Arc<Node>>) -> Result<Json<serde_json::Value>, NodeError> {
    let all = node.list()?;
    Ok(Json(
        json!({"functions": all.iter().map(summary).collect::<Vec<_>>()}),
    ))
}

async fn describe(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
) -> Result<Json<FunctionRecord>, NodeError> {
    Ok(Json(node.get(&name).await?))
}

/// `PUT /v1/functions/{name}`: the component as the raw body with the manifest in the query, or
/// a multipart form with a `component` part and a JSON `manifest` part.
async fn deploy(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Result<Response, NodeError> {
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let query = query.unwrap_or_default();
    let query_pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let (component, manifest) = if multipart {
        let mut form = Multipart::from_request(request, &())
            .await
            .map_err(|e| NodeError::BadRequest(e.body_text()))?;
        let (mut component, mut manifest) = (
            None,
            Manifest::from_pairs(query_pairs).map_err(NodeError::BadRequest)?,
        );
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| NodeError::BadRequest(e.body_text()))?
        {
            let part = field.name().unwrap_or_default().to_owned();
            let bytes = field
                .bytes()
                .await
                .map_err(|e| NodeError::BadRequest(e.body_text()))?;
            match part.as_str() {
                "component" => component = Some(bytes),
                "manifest" => {
                    manifest = Manifest::from_json(&bytes).map_err(NodeError::BadRequest)?
                }
                other => {
                    return Err(NodeError::BadRequest(format!(
                        "unexpected form part {other:?}; expected component and manifest"
                    )));
                }
            }
        }
        let component = component
            .ok_or_else(|| NodeError::BadRequest("the form has no `component` part".into()))?;
        (component, manifest)
    } else {
        let body = Bytes::from_request(request, &())
            .await
            .map_err(|e| too_large_or_bad(e.into_response()))?;
        (
            body,
            Manifest::from_pairs(query_pairs).map_err(NodeError::BadRequest)?,
        )
    };
    if component.is_empty() {
        return Err(NodeError::BadRequest(
            "the request has no component: send its bytes as the body".into(),
        ));
    }
    let version = node.deploy(&name, component, manifest).await?;
    let body = json!({"name": name, "version": version.version, "digest": version.digest, "kind": version.kind});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Body extraction fails when the body limit is exceeded; keep its 413.
fn too_large_or_bad(response: Response) -> NodeError {
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        NodeError::BadRequest("request body too large".into())
    } else {
        NodeError::BadRequest(format!(
            "cannot read the request body ({})",
            response.status()
        ))
    }
}

async fn remove(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
) -> Result<StatusCode, NodeError> {
    node.remove(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
struct RollbackQuery {
    version: u32,
}

async fn rollback(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    query: Result<axum::extract::Query<RollbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, NodeError> {
    let axum::extract::Query(RollbackQuery { version }) = query.map_err(|_| {
        NodeError::BadRequest("rollback needs ?version=N with a version number".into())
    })?;
    Ok(Json(summary(&node.rollback(&name, version).await?)))
}

/// `POST /v1/functions/{name}/invoke`: the body is `args`, the response body the result.
async fn invoke(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, NodeError> {
    let args = std::str::from_utf8(&body)
        .map_err(|_| NodeError::BadRequest("args must be UTF-8 text".into()))?;
    let ran = node.invoke(&name, args, 0).await?;
    let mut headers = HeaderMap::new();
    let micros = |d: std::time::Duration| HeaderValue::from(d.as_micros() as u64);
    headers.insert("x-limes-cold-start-us", micros(ran.cold_start));
    headers.insert("x-limes-execution-us", micros(ran.execution));
    headers.insert("x-limes-version", HeaderValue::from(ran.version));
    headers.insert("x-limes-hops", HeaderValue::from(ran.hops));
    if let Ok(node) = HeaderValue::from_str(&ran.node) {
        headers.insert("x-limes-node", node);
    }
    if let Some(added) = ran.forward_added {
        headers.insert("x-limes-forward-us", micros(added));
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok((headers, ran.result).into_response())
}

/// `/fn/{name}/…`: a request to a `wasi:http` function, which sees the path after its name.
async fn serve_http(
    State(node): State<Arc<Node>>,
    request: Request,
) -> Result<Response, NodeError> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path().strip_prefix("/fn/").unwrap_or_default();
    let (name, rest) = path.split_once('/').map_or((path, ""), |(n, r)| (n, r));
    let name = name.to_owned();
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    parts.uri = path_and_query
        .parse()
        .map_err(|_| NodeError::BadRequest("invalid request path".into()))?;
    if !parts.headers.contains_key(header::HOST) {
        parts
            .headers
            .insert(header::HOST, HeaderValue::from_static("localhost"));
    }
    node.serve_http(&name, Request::from_parts(parts, body), 0)
        .await
}
