//! A closed-loop HTTP/1.1 load generator with keep-alive connections.
//!
//! Each connection is a bare `hyper` client connection driven by one single-threaded runtime on
//! its own thread (as `wrk -t1` does): no connection pool, no extra task hops. A heavier client
//! (reqwest) added about 60 µs to every request here, more than the server work being measured.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use crate::stats::Summary;

/// What one load run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Requests that answered 2xx with the expected body.
    pub ok: usize,
    /// Requests that failed or answered something else.
    pub errors: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Latency of the successful requests, in microseconds.
    pub latency_us: Summary,
    /// Successful requests per second over the whole run.
    pub throughput: f64,
    /// Every successful request's latency, in microseconds, for intervals across runs.
    pub samples: Vec<f64>,
}

/// One kind of request, sent over and over.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's address.
    pub addr: SocketAddr,
    /// `GET`, `POST`, …
    pub method: hyper::Method,
    /// Path and query.
    pub path: String,
    /// When not empty, each request takes one of these at random instead of `path`.
    pub paths: Vec<String>,
    /// The request body.
    pub body: Bytes,
    /// The body a successful answer must have, when it matters.
    pub expect: Option<Bytes>,
    /// The `Authorization` header, if the server wants one.
    pub authorization: Option<String>,
}

/// Sends `total` requests to `target`, `concurrency` at a time, each connection waiting for its
/// answer before sending the next (a closed loop). Connections are kept alive, so this measures
/// the server, not TCP set-up. A request counts as successful when its status is 2xx and its
/// body is the expected one.
pub fn run(target: &Target, total: usize, concurrency: usize) -> Result<LoadReport, String> {
    let target = Arc::new(target.clone());
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("load generator runtime: {e}"))?
                    .block_on(closed_loop(target.clone(), total, concurrency))
            })
            .join()
            .map_err(|_| "the load generator panicked".to_owned())?
    })
}

async fn closed_loop(
    target: Arc<Target>,
    total: usize,
    concurrency: usize,
) -> Result<LoadReport, String> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut connections = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (target, next) = (target.clone(), next.clone());
        connections.spawn(async move { connection(&target, &next, total).await });
    }
    let (mut latencies, mut errors) = (Vec::with_capacity(total), 0);
    while let Some(joined) = connections.join_next().await {
        let (l, e) = joined.map_err(|e| format!("a load connection failed: {e}"))??;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().max(Duration::from_nanos(1));
    Ok(LoadReport {
        ok: latencies.len(),
        errors,
        concurrency,
        throughput: latencies.len() as f64 / elapsed.as_secs_f64(),
        latency_us: Summary::of(&latencies).ok_or("no request succeeded")?,
        samples: latencies,
    })
}

/// One keep-alive connection's share of the run; reconnects after a failed request.
async fn connection(
    target: &Target,
    next: &AtomicUsize,
    total: usize,
) -> Result<(Vec<f64>, usize), String> {
    let (mut latencies, mut errors) = (Vec::new(), 0usize);
    let mut sender = None;
    while next.fetch_add(1, Ordering::Relaxed) < total {
        if sender.is_none() {
            sender = Some(connect(target.addr).await?);
        }
        let Some(send) = sender.as_mut() else {
            unreachable!("connected above")
        };
        let path = match target.paths.len() {
            0 => &target.path,
            n => &target.paths[fastrand::usize(..n)],
        };
        let mut request = hyper::Request::builder()
            .method(target.method.clone())
            .uri(path.as_str())
            .header(hyper::header::HOST, "localhost");
        if let Some(auth) = &target.authorization {
            request = request.header(hyper::header::AUTHORIZATION, auth.as_str());
        }
        let request = request
            .body(Full::new(target.body.clone()))
            .map_err(|e| format!("bad request {}: {e}", target.path))?;
        let sent = Instant::now();
        let outcome = async {
            let response = send.send_request(request).await.ok()?;
            let ok = response.status().is_success();
            let body = response.into_body().collect().await.ok()?.to_bytes();
            Some(ok && target.expect.as_ref().is_none_or(|e| *e == body))
        }
        .await;
        match outcome {
            Some(true) => latencies.push(sent.elapsed().as_secs_f64() * 1e6),
            Some(false) => errors += 1,
            None => {
                errors += 1;
                sender = None;
            }
        }
    }
    Ok((latencies, errors))
}

/// A keep-alive HTTP/1.1 connection to `addr`, its driver spawned on the current runtime.
pub async fn connect(addr: SocketAddr) -> Result<http1::SendRequest<Full<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
