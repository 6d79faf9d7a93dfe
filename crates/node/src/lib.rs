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
pub mod cluster;
mod dashboard;
pub mod deploys;
mod error;
pub mod grants;
pub mod guests;
mod http_fn;
mod lifecycle;
pub mod manifest;
mod metrics;
mod node;
mod openapi;
mod registry;
pub mod signing;
pub mod stats;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use admission::{AdmissionConfig, Priority};
pub use api::ROUTES;
pub use auth::{AuthMode, Caller, Need, Role};
pub use cluster::{
    Call, Cluster, HttpCall, HttpRan, MAX_FORWARDED_BODY, MAX_HOPS, NewVersion, Placement, Ran,
};
pub use error::NodeError;
pub use http_fn::buffer as buffer_response;
pub use lifecycle::Deploy;
pub use manifest::Manifest;
pub use node::{Node, NodeConfig, validate_name};
pub use openapi::document as openapi_document;
pub use registry::{FunctionRecord, Version};

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
        }))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
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
/// other than loopback.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    check_exposure(&node, &listener)?;
    // Nagle's algorithm would hold a streamed body's second write until the client's delayed
    // ACK (40 ms on Linux) whenever a response goes out in more than one write.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    serve_on(node, listener, shutdown, grace).await
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
    serve_on(node, tls::TlsListener::new(listener, tls)?, shutdown, grace).await
}

async fn serve_on<L>(
    node: Arc<Node>,
    listener: L,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let stopping = Arc::new(tokio::sync::Notify::new());
    let signal = stopping.clone();
    let server = axum::serve(listener, app(node)).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing in-flight requests");
        signal.notify_one();
    });
    tokio::select! {
        outcome = server.into_future() => outcome,
        () = async { stopping.notified().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_secs = grace.as_secs_f64(), "in-flight requests outlived the shutdown grace; stopping anyway");
            Ok(())
        }
    }
}
