//! A Limes edge node: deployed functions in a persistent registry, served over HTTP.
//!
//! This crate sits on `limes-runtime`. It adds what a serverless node needs around the runtime:
//! - a registry of functions and versions in redb, and a content-addressed artifact store;
//!   a restart loads every function from the AOT cache without compiling;
//! - the REST API under `/v1`, and `wasi:http` functions under `/fn/{name}/…`;
//! - trust: bearer tokens with roles on every route, what a manifest may grant bounded by the
//!   operator, optional signed components, an audit log, and TLS;
//! - admission control: per-function and per-node limits, run slots with a short queue per
//!   priority class (urgent first), and 429 for what could not start in time;
//! - Prometheus metrics and `tracing` logs with a request id on every line;
//! - graceful shutdown;
//! - the [`Cluster`] seam through which a node joins an edge cluster (implemented one layer up,
//!   in `limes-cluster`): shared deploys, functions loaded on first use, forwarding.

pub mod admission;
mod api;
mod artifacts;
pub mod audit;
pub mod auth;
mod bodies;
pub mod capabilities;
mod changes;
pub mod cluster;
pub mod config;
mod dashboard;
mod delivery;
pub mod deploys;
mod error;
mod files;
pub mod guest_headers;
pub mod guests;
mod http_fn;
#[cfg(test)]
mod layering;
mod lifecycle;
pub mod manifest;
mod metrics;
mod node;
pub mod oci;
pub mod outbox;
mod parse;
mod registry;
mod runs;
mod schedules;
pub mod server;
pub mod signing;
pub mod stats;
/// NATS subjects and patterns (the runtime's, which checks what guests publish).
pub use limes_runtime::messaging::subject;
pub mod tls;
pub mod triggers;
pub mod workflows;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use admission::{AdmissionConfig, Priority};
pub use api::ROUTES;
pub use api::openapi::document as openapi_document;
pub use auth::{AuthMode, Caller, Need, Role};
pub use cluster::{
    Call, Cluster, HttpCall, HttpRan, MAX_FORWARDED_BODY, MAX_HOPS, NewVersion, Placement, Ran,
};
pub use delivery::NOT_UTF8;
pub use error::NodeError;
pub use http_fn::buffer as buffer_response;
pub use lifecycle::Deploy;
pub use manifest::Manifest;
pub use node::ConnectionLimits;
pub use node::{Node, NodeConfig, validate_name};
pub use registry::{FunctionRecord, Version};

/// Where the node keeps the `x-request-id` a client sent: see [`app`].
pub const CLIENT_REQUEST_ID: &str = "x-client-request-id";

/// Moves a client's `x-request-id` to [`CLIENT_REQUEST_ID`] (at most 128 visible characters),
/// so that the id in the node's logs and audit log is always one the node made, never one a
/// client chose.
async fn set_aside_client_request_id(
    mut request: http::Request<axum::body::Body>,
) -> http::Request<axum::body::Body> {
    if let Some(client) = request.headers_mut().remove("x-request-id") {
        let printable = client
            .to_str()
            .is_ok_and(|v| v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()));
        if printable {
            request.headers_mut().insert(CLIENT_REQUEST_ID, client);
        }
    }
    request
}

/// The node's HTTP application: routes, body limit, request ids and request logs.
pub fn app(node: Arc<Node>) -> Router {
    let body_limit = node.config().body_limit;
    api::routes(node)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(body_limit))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|request: &http::Request<_>| {
            let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", id, method = %request.method(), path = %request.uri().path())
        })
        // One line per response at `info` (status and latency, in the request's span): what
        // `RUST_LOG=info` in the service unit logs.
        .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO)))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(axum::middleware::map_request(set_aside_client_request_id))
}

/// Refuses to serve without auth anywhere but on loopback: a node that others can reach must
/// check who they are.
fn check_exposure(node: &Node, listener: &TcpListener) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    if node.config().auth == AuthMode::None && !address.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "--auth none is only allowed on a loopback address, not {address}: anyone who \
                 reaches the node could deploy code and declare emergencies"
            ),
        ));
    }
    Ok(())
}

/// Serves `node` over HTTP on `listener` until `shutdown` completes, then stops accepting and
/// lets in-flight requests finish for up to `grace`. Refuses a node without auth on an address
/// other than loopback. Connections are bounded as [`server`] says.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    check_exposure(&node, &listener)?;
    start_triggers(&node);
    let app = app(node.clone());
    server::run(node, app, listener, None, shutdown, grace).await
}

/// Starts what runs functions besides requests: the scheduler and the outbox's deliveries.
fn start_triggers(node: &Arc<Node>) {
    tokio::spawn(schedules::run(Arc::downgrade(node)));
    tokio::spawn(delivery::run(Arc::downgrade(node)));
}

/// [`serve`] over HTTPS, with the server side of TLS in `tls` (see [`tls::server_config`]).
pub async fn serve_tls(
    node: Arc<Node>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    check_exposure(&node, &listener)?;
    start_triggers(&node);
    let app = app(node.clone());
    server::run(node, app, listener, Some(tls), shutdown, grace).await
}
