//! A closed-loop HTTP load generator with keep-alive connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Client, RequestBuilder};

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
}

/// Sends `total` requests made by `request`, `concurrency` at a time, each worker waiting for
/// its answer before sending the next (a closed loop). Connections are kept alive, so this
/// measures the server, not TCP set-up. A request counts as successful when its status is 2xx
/// and, if `expect` is given, its body equals it.
pub async fn run<F>(
    request: F,
    total: usize,
    concurrency: usize,
    expect: Option<String>,
) -> Option<LoadReport>
where
    F: Fn(&Client) -> RequestBuilder + Send + Sync + 'static,
{
    let client = Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .ok()?;
    let request = Arc::new(request);
    let next = Arc::new(AtomicUsize::new(0));
    let expect = Arc::new(expect);
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, request, next, expect) = (
                client.clone(),
                request.clone(),
                next.clone(),
                expect.clone(),
            );
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0usize);
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let sent = Instant::now();
                    let outcome = async {
                        let response = request(&client).send().await.ok()?;
                        let ok = response.status().is_success();
                        let body = response.text().await.ok()?;
                        (ok && expect.as_ref().as_ref().is_none_or(|e| *e == body)).then_some(())
                    }
                    .await;
                    match outcome {
                        Some(()) => latencies.push(sent.elapsed().as_secs_f64() * 1e6),
                        None => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut latencies, mut errors) = (Vec::with_capacity(total), 0);
    for worker in workers {
        let (l, e) = worker.await.ok()?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().max(Duration::from_nanos(1));
    Some(LoadReport {
        ok: latencies.len(),
        errors,
        concurrency,
        throughput: latencies.len() as f64 / elapsed.as_secs_f64(),
        latency_us: Summary::of(&latencies)?,
    })
}
