//! Functions: list, describe, deploy, remove, roll back, invoke, and `wasi:http` requests.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, FromRequest, Multipart, Path, Query, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt as _;
use serde_json::json;

use super::{client_request_id, request_id};
use crate::audit::Change;
use crate::auth::Caller;
use crate::error::NodeError;
use crate::lifecycle::Deploy;
use crate::manifest::Manifest;
use crate::node::Node;
use crate::registry::FunctionRecord;

/// The header that carries a component's detached signature; see [`crate::signing`].
pub const SIGNATURE_HEADER: &str = "x-limes-signature";

/// The header that names an `oci://` reference to pull the component from, instead of a body.
pub const SOURCE_HEADER: &str = "x-limes-source";

fn summary(record: &FunctionRecord) -> serde_json::Value {
    let active = record.active_version();
    json!({
        "name": record.name,
        "version": record.active,
        "kind": active.kind,
        "digest": active.digest,
        "versions": record.versions.len(),
        "public": active.manifest.public,
        "priority": active.manifest.priority,
        "signed_by": active.signed_by,
        "preinitialized": active.preinit.is_some(),
        "kv": active.manifest.capabilities.kv.stores,
        "kv_shared": active.manifest.capabilities.kv.shared,
    })
}

pub(super) async fn list(
    State(node): State<Arc<Node>>,
) -> Result<Json<serde_json::Value>, NodeError> {
    let all = node.list()?;
    Ok(Json(
        json!({"functions": all.iter().map(summary).collect::<Vec<_>>()}),
    ))
}

/// What `GET /v1/functions/{name}` shows of an `env` value: the API takes values and never
/// gives them back, as they are often secrets and the route is open to the invoke role.
pub const HIDDEN_ENV_VALUE: &str = "(write-only)";

pub(super) async fn describe(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
) -> Result<Json<FunctionRecord>, NodeError> {
    let mut record = node.get(&name).await?;
    for version in &mut record.versions {
        for (_, value) in &mut version.manifest.env {
            *value = HIDDEN_ENV_VALUE.to_owned();
        }
    }
    Ok(Json(record))
}

/// `PUT /v1/functions/{name}`: the component as the raw body with the manifest in the query, or
/// a multipart form with a `component` part (or a `source` part, an `oci://` reference the node
/// pulls the component from) and a JSON `manifest` part.
pub(super) async fn deploy(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Result<Response, NodeError> {
    let request_id = request_id(request.headers()).to_owned();
    let client_request_id = client_request_id(request.headers()).map(str::to_owned);
    let follow = wants_progress(request.headers());
    let mut signature = request
        .headers()
        .get(SIGNATURE_HEADER)
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| NodeError::BadSignature(format!("{SIGNATURE_HEADER} is not text")))?;
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let query = query.unwrap_or_default();
    let query_pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let mut source = request
        .headers()
        .get(SOURCE_HEADER)
        .map(|v| v.to_str().map(|s| s.trim().to_owned()))
        .transpose()
        .map_err(|_| NodeError::BadRequest(format!("{SOURCE_HEADER} is not text")))?;
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
                "signature" => {
                    signature = Some(String::from_utf8_lossy(&bytes).trim().to_owned());
                }
                "source" => source = Some(String::from_utf8_lossy(&bytes).trim().to_owned()),
                other => {
                    return Err(NodeError::BadRequest(format!(
                        "unexpected form part {other:?}; expected component or source, manifest and signature"
                    )));
                }
            }
        }
        let component = match (component, &source) {
            (Some(_), Some(_)) => {
                return Err(NodeError::BadRequest(
                    "the form has both a `component` and a `source`: send one".into(),
                ));
            }
            (None, None) => {
                return Err(NodeError::BadRequest(
                    "the form has no `component` part (nor a `source`)".into(),
                ));
            }
            (component, _) => component.unwrap_or_default(),
        };
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
    match (component.is_empty(), &source) {
        (true, None) => {
            return Err(NodeError::BadRequest(
                "the request has no component: send its bytes as the body".into(),
            ));
        }
        (false, Some(_)) => {
            return Err(NodeError::BadRequest(format!(
                "the request has both a component and {SOURCE_HEADER}: send one"
            )));
        }
        _ => {}
    }
    let progress = node.deploys.start(&name);
    let function = name.clone();
    let deploy = Deploy {
        component,
        manifest,
        signature,
        deployed_by: Some(caller.name.clone()),
        source,
    };
    // The deploy runs in a task of its own: a client that disconnects does not cancel it, and
    // can learn its outcome from `GET /v1/deploys/{id}`.
    let task = tokio::spawn({
        let (node, progress) = (node.clone(), progress.clone());
        async move {
            let work = async {
                let granted = granted(&deploy.manifest);
                let version = match node.deploy_with(&name, deploy, &progress).await {
                    Ok(version) => version,
                    Err(e) => {
                        // A deploy refused for what it asked (grants, signature) is recorded
                        // too: an attempt to widen a function's reach is worth an entry.
                        if matches!(e.kind(), "not-permitted" | "unsigned" | "bad-signature") {
                            node.audit(Change {
                                actor: &caller.name,
                                action: "deploy.refused",
                                target: &name,
                                request_id: &request_id,
                                client_request_id: client_request_id.as_deref(),
                                detail: json!({"error": e.kind(), "message": e.to_string(), "manifest": granted}),
                            })
                            .await?;
                        }
                        return Err(e);
                    }
                };
                node.audit(Change {
                    actor: &caller.name,
                    action: "deploy",
                    target: &name,
                    request_id: &request_id,
                    client_request_id: client_request_id.as_deref(),
                    detail: json!({"version": version.version, "digest": version.digest, "source": version.source, "signed_by": version.signed_by, "manifest": granted}),
                })
                .await?;
                Ok(version)
            };
            let result = AssertUnwindSafe(work)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(NodeError::Storage("the deploy panicked".into())));
            progress.finish(&result);
            result
        }
    });
    let id = HeaderValue::from_str(&progress.id()).expect("deploy ids are ASCII");
    if follow {
        let mut response = crate::api::progress::stream(progress.watch());
        response.headers_mut().insert(DEPLOY_HEADER, id);
        return Ok(response);
    }
    let version = task
        .await
        .map_err(|e| NodeError::Storage(format!("the deploy task ended: {e}")))??;
    let body = json!({"name": function, "version": version.version, "digest": version.digest, "source": version.source, "kind": version.kind, "signed_by": version.signed_by, "preinitialized": version.preinit.is_some()});
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    response.headers_mut().insert(DEPLOY_HEADER, id);
    Ok(response)
}

/// What a deploy grants, for the audit log: the manifest with `env` values left out (names
/// only: the log is no place for secrets).
fn granted(manifest: &Manifest) -> serde_json::Value {
    let mut value = serde_json::to_value(manifest).unwrap_or_default();
    value["env"] = json!(manifest.env.iter().map(|(k, _)| k).collect::<Vec<_>>());
    value
}

/// The header that names a deploy, for `GET /v1/deploys/{id}`.
pub const DEPLOY_HEADER: &str = "x-limes-deploy";

/// Whether the client asked to follow the deploy's stages (`Accept: application/x-ndjson`).
fn wants_progress(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().starts_with(crate::api::progress::NDJSON))
        })
}

/// `GET /v1/deploys/{id}`: the stages and outcome of a deploy this node ran or is running.
pub(super) async fn deploy_status(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Response {
    match node.deploys.get(&id) {
        Some(state) => Json(state).into_response(),
        None => NodeError::BadRequest(format!(
            "no deploy {id:?} on this node (it keeps its last {} finished deploys)",
            crate::deploys::KEPT
        ))
        .with_kind("not-found", StatusCode::NOT_FOUND),
    }
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

/// `DELETE /v1/functions/{name}?keep_state=true` keeps its key-value stores.
#[derive(serde::Deserialize)]
pub(super) struct RemoveQuery {
    #[serde(default)]
    keep_state: bool,
}

pub(super) async fn remove(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query<RemoveQuery>,
) -> Result<StatusCode, NodeError> {
    node.remove(&name, query.keep_state).await?;
    node.audit(Change {
        actor: &caller.name,
        action: "remove",
        target: &name,
        request_id: request_id(&headers),
        client_request_id: client_request_id(&headers),
        detail: json!({"keep_state": query.keep_state}),
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
pub(super) struct RollbackQuery {
    version: u32,
}

pub(super) async fn rollback(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(name): Path<String>,
    query: Result<axum::extract::Query<RollbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, NodeError> {
    let axum::extract::Query(RollbackQuery { version }) = query.map_err(|_| {
        NodeError::BadRequest("rollback needs ?version=N with a version number".into())
    })?;
    let record = node.rollback(&name, version).await?;
    node.audit(Change {
        actor: &caller.name,
        action: "rollback",
        target: &name,
        request_id: request_id(&headers),
        client_request_id: client_request_id(&headers),
        detail: json!({"version": version}),
    })
    .await?;
    Ok(Json(summary(&record)))
}

/// `POST /v1/functions/{name}/invoke`: the body is `args`, the response body the result.
pub(super) async fn invoke(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, NodeError> {
    // Admitted before the body is read: see `Node::invoke_body`.
    let limit = node.config().body_limit;
    let ran = node.invoke_body(&name, request.into_body(), limit).await?;
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
pub(super) async fn serve_http(
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
    let mut response = node
        .serve_http(&name, Request::from_parts(parts, body), 0)
        .await?;
    // A function's pages share the dashboard's origin. Sandboxed, they run in an opaque origin
    // of their own: their scripts cannot read the dashboard's stored token or call the API with
    // it. Appended, so that a function's own policy still applies as well.
    response.headers_mut().append(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(FUNCTION_CSP),
    );
    Ok(response)
}

/// The policy of every `/fn/…` response: see [`serve_http`].
pub(crate) const FUNCTION_CSP: &str =
    "sandbox allow-scripts allow-forms allow-popups allow-downloads";
