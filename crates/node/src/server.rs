//! The node's HTTP server: it accepts connections, bounds them, and serves each with hyper.
//!
//! A server that keeps every connection as long as its client likes can be starved by a few
//! clients that never finish a request: each holds a socket, a file descriptor and a task. So:
//!
//! - **HTTP/1.1 only**, so that every connection is under the header timer from its first
//!   byte: HTTP/2's detection would wait for a preface, and an HTTP/2 connection answers pings
//!   forever, with no timer of hyper's to end either. (TLS offers only `http/1.1` too.)
//! - **Header-read timeout.** A request's headers must arrive within
//!   [`ConnectionLimits::header_read_timeout`](crate::ConnectionLimits::header_read_timeout) of the connection's wait for them starting (its
//!   opening, or the end of the previous response), or the connection is closed. A silent
//!   connection and an idle keep-alive one are both waiting for headers, so the same timer
//!   closes them: this is the idle timeout too.
//! - **TLS handshakes** must finish within [`ConnectionLimits::handshake_timeout`](crate::ConnectionLimits::handshake_timeout); they run in
//!   the connection's own task, so a slow one holds up nobody else, and after it the same
//!   header-read timeout applies inside TLS.
//! - **A cap on open connections** ([`ConnectionLimits::max_connections`](crate::ConnectionLimits::max_connections), TLS handshakes
//!   included). Past it a new connection is closed at once, freeing its descriptor. The last
//!   [`ConnectionLimits::reserved`](crate::ConnectionLimits::reserved) of them are headroom: a request on such a connection is served
//!   only if it is `GET /healthz` or made with an admin token (others get 503
//!   `too-many-connections`), and the connection closes after that one request (no keep-alive),
//!   so that nobody can sit on the headroom: an operator and the load balancer still get in
//!   when clients fill the rest.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::node::Node;

/// Marks a request that arrived on a connection inside the reserved headroom.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reserved;

/// Serves `app` (the node's routes) on `listener`, over TLS when `tls` is given, until
/// `shutdown` completes; then stops accepting and lets open connections finish their requests
/// for up to `grace`.
pub(crate) async fn run(
    node: Arc<Node>,
    app: Router,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let limits = node.config().connections.clone();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let acceptor = tls.map(TlsAcceptor::from);
    let builder = |keep_alive: bool| {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(keep_alive);
        Arc::new(builder)
    };
    // Connections in the headroom serve one request each: see the module documentation.
    let (regular, one_request) = (builder(true), builder(false));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            node.metrics.connection_refused();
            tracing::debug!(%peer, "connection refused: at --max-connections");
            continue;
        };
        let reserved = slots.available_permits() < limits.reserved;
        // Nagle's algorithm would hold a streamed body's second write until the client's
        // delayed ACK (40 ms on Linux) whenever a response goes out in more than one write.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = app
            .clone()
            .map_request(move |mut request: http::Request<Incoming>| {
                if reserved {
                    request.extensions_mut().insert(Reserved);
                }
                request
            });
        let service = TowerToHyperService::new(service);
        let (builder, watcher, acceptor, node) = (
            Arc::clone(if reserved { &one_request } else { &regular }),
            graceful.watcher(),
            acceptor.clone(),
            node.clone(),
        );
        let handshake = limits.handshake_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            node.metrics.connections().inc();
            let served = match acceptor {
                None => {
                    let connection = builder.serve_connection(TokioIo::new(tcp), service);
                    watcher.watch(connection).await
                }
                Some(tls) => match tokio::time::timeout(handshake, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(connection).await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        Ok(())
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        Ok(())
                    }
                },
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            node.metrics.connections().dec();
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_secs = grace.as_secs_f64(), "in-flight requests outlived the shutdown grace; stopping anyway");
        }
    }
    Ok(())
}
