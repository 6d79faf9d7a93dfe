//! `limes bench kv`: key-value operations from a guest, on redb (one node) and on NATS
//! JetStream KV (a node in a cluster), each beside the no-op invoke of the same node.
//!
//! For each backend a `limes serve` child gets the no-op and the `kv-script` fixture (store
//! `default`). Rows take turns in a new random order each round, one request in flight: the
//! no-op, the fixture opening its store and nothing more, and the same plus one `get`, `set` or
//! `increment`. The difference to the open-only row is what the operation costs a guest. Then
//! a counter under 8 concurrent callers: its throughput next to the no-op's, and a check that
//! the count equals the increments answered.

use std::fmt::Write as _;
use std::path::PathBuf;

use bytes::Bytes;
use hyper::Method;

use crate::functions::Node;
use crate::load::{self, Target};
use crate::process::admin_bearer;
use crate::stats::{Summary, ratio_of_percentiles};

/// What to run.
pub struct KvBench {
    /// The `limes` binary to start as the node.
    pub limes: PathBuf,
    /// Where `noop.wasm` and `kv-script.wasm` are.
    pub guests: PathBuf,
    /// Requests per row and round.
    pub requests: usize,
    /// Rounds of the rows.
    pub rounds: usize,
    /// Increments by the 8 concurrent callers.
    pub increments: usize,
}

/// The rows: what the request asks of the fixture (`None`: the no-op function), and the
/// answer it must give when it is always the same.
const ROWS: &[(&str, Option<&str>, Option<&str>)] = &[
    ("no-op invoke", None, Some("")),
    ("open the store", Some("open default"), Some("ok")),
    (
        "open + get",
        Some("open default; get k"),
        Some("ok;0123456789"),
    ),
    (
        "open + set",
        Some("open default; set k 0123456789"),
        Some("ok;ok"),
    ),
    ("open + increment", Some("open default; inc n 1"), None),
];

/// Concurrent callers of the throughput runs.
const CALLERS: usize = 8;

struct Measured {
    backend: &'static str,
    samples: Vec<Vec<f64>>,
    noop_throughput: f64,
    counter_throughput: f64,
    counted: String,
}

impl KvBench {
    /// Runs the benchmark on both backends (NATS only where `nats-server` is installed) and
    /// returns a Markdown report.
    pub async fn run(&self) -> Result<String, String> {
        if self.rounds == 0 || self.requests == 0 {
            return Err("--rounds and --requests must be at least 1".into());
        }
        let mut measured = vec![self.backend("redb (one node)", &[]).await?];
        let nats = match limes_cluster::server::binary() {
            Some(_) => Some(limes_cluster::server::NatsServer::start()?),
            None => None,
        };
        if let Some(nats) = &nats {
            let url = nats.url();
            measured.push(
                self.backend("NATS JetStream KV (a cluster node)", &["--cluster", &url])
                    .await?,
            );
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "## Key-value operations from a guest\n\nNode: `{}`. Each row {} requests a round, {} rounds in a new random order each, one request in flight, keep-alive, loopback, after a warm-up round. Every row but the no-op invokes the `kv-script` fixture; *cost* is its p50 minus the open-only row's p50, what the operation adds to an invocation.\n",
            crate::node::version(&self.limes),
            self.requests,
            self.rounds
        );
        for m in &measured {
            let _ = writeln!(out, "### {}\n", m.backend);
            let _ = writeln!(
                out,
                "| invoke of | p50 µs | p99 µs | cost µs (p50) | p50 / no-op (95% CI) | n |"
            );
            let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
            let open_p50 = Summary::of(&m.samples[1]).map_or(0.0, |s| s.p50);
            for (i, (what, _, _)) in ROWS.iter().enumerate() {
                let Some(s) = Summary::of(&m.samples[i]) else {
                    continue;
                };
                let cost = if i >= 2 {
                    format!("{:.1}", s.p50 - open_p50)
                } else {
                    "–".into()
                };
                let ratio = ratio_of_percentiles(&m.samples[i], &m.samples[0], 50.0)
                    .map_or("–".into(), |r| {
                        format!("{:.2}x ({:.2}–{:.2})", r.value, r.low, r.high)
                    });
                let _ = writeln!(
                    out,
                    "| {what} | {:.1} | {:.1} | {cost} | {ratio} | {} |",
                    s.p50, s.p99, s.n
                );
            }
            let _ = writeln!(
                out,
                "\n- Counter under {CALLERS} concurrent callers: {:.0} increments/s, the no-op {:.0} invocations/s ({:.2}x); {}\n",
                m.counter_throughput,
                m.noop_throughput,
                m.counter_throughput / m.noop_throughput,
                m.counted
            );
        }
        if nats.is_none() {
            let _ = writeln!(
                out,
                "NATS JetStream KV: not measured, no `nats-server` on PATH (apt-get install nats-server)."
            );
        }
        Ok(out)
    }

    /// Measures one backend: the node started with `extra` arguments.
    async fn backend(&self, backend: &'static str, extra: &[&str]) -> Result<Measured, String> {
        let data = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (node, _) = Node::start_with(&self.limes, data.path(), extra).await?;
        let bearer = admin_bearer(data.path())?;
        let client = reqwest::Client::new();
        for (name, file, query) in [
            ("noop", "noop.wasm", "priority=urgent"),
            (
                "kv",
                "kv-script.wasm",
                "kv=default&priority=urgent&max_concurrency=64",
            ),
        ] {
            let wasm = std::fs::read(self.guests.join(file)).map_err(|e| format!("{file}: {e}"))?;
            let response = client
                .put(node.url(&format!("/v1/functions/{name}?{query}")))
                .header("authorization", &bearer)
                .body(wasm)
                .send()
                .await
                .map_err(|e| format!("deploying {name}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("deploying {name}: {}", response.status()));
            }
        }
        let target = |function: &str, body: &str| Target {
            addr: (std::net::Ipv4Addr::LOCALHOST, node.port).into(),
            method: Method::POST,
            path: format!("/v1/functions/{function}/invoke"),
            paths: Vec::new(),
            body: Bytes::copy_from_slice(body.as_bytes()),
            expect: None,
            authorization: Some(bearer.clone()),
        };
        let targets: Vec<Target> = ROWS
            .iter()
            .map(|(_, script, answer)| Target {
                expect: answer.map(|a| Bytes::copy_from_slice(a.as_bytes())),
                ..match script {
                    None => target("noop", ""),
                    Some(script) => target("kv", script),
                }
            })
            .collect();
        // `get` reads a key that exists.
        run_load(target("kv", "open default; set k 0123456789"), 1, 1).await?;

        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); ROWS.len()];
        let mut order: Vec<usize> = (0..ROWS.len()).collect();
        for round in 0..=self.rounds {
            fastrand::shuffle(&mut order);
            for &i in &order {
                let requests = if round == 0 {
                    self.requests / 10 + 1
                } else {
                    self.requests
                };
                let report = run_load(targets[i].clone(), requests, 1).await?;
                if round > 0 {
                    samples[i].extend(report.samples);
                }
            }
        }

        // Throughput: the counter from zero, then the no-op, each with 8 callers.
        run_load(target("kv", "open default; del n"), 1, 1).await?;
        let counter = run_load(
            target("kv", "open default; inc n 1"),
            self.increments,
            CALLERS,
        )
        .await?;
        let noop = run_load(targets[0].clone(), self.increments, CALLERS).await?;
        let count = client
            .post(node.url("/v1/functions/kv/invoke"))
            .header("authorization", &bearer)
            .body("open default; get n")
            .send()
            .await
            .map_err(|e| format!("reading the count: {e}"))?
            .text()
            .await
            .map_err(|e| format!("reading the count: {e}"))?;
        let counted = match count.strip_prefix("ok;") {
            Some(n) if n == self.increments.to_string() => {
                format!("the count is {n}, one per increment answered: none lost")
            }
            _ => {
                return Err(format!(
                    "{} increments answered but the store says {count:?}",
                    self.increments
                ));
            }
        };
        node.stop()?;
        Ok(Measured {
            backend,
            samples,
            noop_throughput: noop.throughput,
            counter_throughput: counter.throughput,
            counted,
        })
    }
}

/// `total` requests, `concurrency` at a time, every one of which must succeed.
async fn run_load(
    target: Target,
    total: usize,
    concurrency: usize,
) -> Result<load::LoadReport, String> {
    let path = target.path.clone();
    let report = tokio::task::spawn_blocking(move || load::run(&target, total, concurrency))
        .await
        .map_err(|e| format!("the load generator failed: {e}"))??;
    if report.errors > 0 {
        return Err(format!(
            "{} of {total} requests to {path} failed",
            report.errors
        ));
    }
    Ok(report)
}
