//! `limes bench functions`: a node holding many functions.
//!
//! One node gets N copies of the no-op deployed under N names. Then, in rounds that take turns
//! in a random order: one function called over and over, a function chosen at random among the
//! N for every call, and `GET /healthz` (the HTTP stack alone), each with one request in flight.
//! The report gives p50 and p99 of each with the ratio random / one function and its bootstrap
//! interval, the node's resident memory per deployed function, and restarts of the node with all
//! N deployed: the time until `/healthz` answers and until a function chosen at random does.
//!
//! The node is whatever binary `limes` names, so two builds can be compared with the same
//! client (`--limes`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;

use crate::load::{self, Target};
use crate::process::{admin_bearer, free_port};
use crate::stats::{Summary, ratio_of_percentiles};

/// What to run.
pub struct FunctionsBench {
    /// The `limes` binary to start as the node.
    pub limes: PathBuf,
    /// Where `noop.wasm` is.
    pub guests: PathBuf,
    /// Functions to deploy.
    pub functions: usize,
    /// Requests per row and round.
    pub requests: usize,
    /// Rounds of the three rows.
    pub rounds: usize,
    /// Restarts to time.
    pub restarts: usize,
}

/// A `limes serve` child on a loopback port with its data dir.
pub(crate) struct Node {
    child: Child,
    pub port: u16,
}

impl Node {
    /// Starts the node and returns it with the time until `/healthz` answered 200.
    async fn start(limes: &PathBuf, data: &std::path::Path) -> Result<(Self, Duration), String> {
        Self::start_with(limes, data, &[]).await
    }

    /// [`Node::start`] with `extra` arguments to `limes serve`.
    pub(crate) async fn start_with(
        limes: &PathBuf,
        data: &std::path::Path,
        extra: &[&str],
    ) -> Result<(Self, Duration), String> {
        let port = free_port()?;
        let started = Instant::now();
        let child = Command::new(limes)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--capacity", "256", "--data-dir"])
            .arg(data)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", limes.display()))?;
        let mut node = Self { child, port };
        let url = node.url("/healthz");
        let client = reqwest::Client::new();
        while started.elapsed() < Duration::from_secs(120) {
            if let Ok(Some(status)) = node.child.try_wait() {
                return Err(format!("the node exited early ({status})"));
            }
            if client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok((node, started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        node.kill();
        Err("the node did not answer /healthz within 120 s".into())
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Resident memory of the node process, from `/proc`.
    fn rss_kib(&self) -> Result<u64, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| format!("reading the node's status: {e}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| "no VmRSS in the node's status".into())
    }

    /// Asks the node to stop (SIGTERM) and waits for it.
    pub(crate) fn stop(mut self) -> Result<(), String> {
        // SAFETY: a signal to our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        self.child
            .wait()
            .map(drop)
            .map_err(|e| format!("waiting for the node: {e}"))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The function names.
fn name(i: usize) -> String {
    format!("f{i}")
}

fn invoke_path(i: usize) -> String {
    format!("/v1/functions/{}/invoke", name(i))
}

impl FunctionsBench {
    /// Runs the benchmark and returns a Markdown report.
    pub async fn run(&self) -> Result<String, String> {
        if self.functions == 0 || self.rounds == 0 {
            return Err("--functions and --rounds must be at least 1".into());
        }
        let data = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (node, _) = Node::start(&self.limes, data.path()).await?;
        let bearer = admin_bearer(data.path())?;
        let empty_kib = node.rss_kib()?;

        let noop = std::fs::read(self.guests.join("noop.wasm"))
            .map(Bytes::from)
            .map_err(|e| format!("noop.wasm: {e}"))?;
        let deploying = Instant::now();
        self.deploy_all(&node, &bearer, noop).await?;
        let deploy_time = deploying.elapsed();
        let deployed_kib = node.rss_kib()?;

        let target = |path: String, paths: Vec<String>| Target {
            addr: (std::net::Ipv4Addr::LOCALHOST, node.port).into(),
            method: Method::POST,
            path,
            paths,
            body: Bytes::new(),
            expect: Some(Bytes::new()),
            authorization: Some(bearer.clone()),
        };
        let one = target(invoke_path(0), Vec::new());
        let random = target(
            String::new(),
            (0..self.functions).map(invoke_path).collect(),
        );
        let healthz = Target {
            method: Method::GET,
            expect: None,
            ..target("/healthz".into(), Vec::new())
        };
        let rows = [
            ("one function", one),
            ("a random function", random),
            ("GET /healthz", healthz),
        ];
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
        let mut order: Vec<usize> = (0..rows.len()).collect();
        for round in 0..=self.rounds {
            fastrand::shuffle(&mut order);
            for &i in &order {
                let target = rows[i].1.clone();
                let requests = if round == 0 {
                    self.requests / 10 + 1
                } else {
                    self.requests
                };
                let report = tokio::task::spawn_blocking(move || load::run(&target, requests, 1))
                    .await
                    .map_err(|e| format!("the load generator failed: {e}"))??;
                if report.errors > 0 {
                    return Err(format!(
                        "{} requests of {:?} failed",
                        report.errors, rows[i].0
                    ));
                }
                // Round 0 warms up the connection, the node and the client.
                if round > 0 {
                    samples[i].extend(report.samples);
                }
            }
        }
        let loaded_kib = node.rss_kib()?;
        node.stop()?;

        let mut restarts = Vec::new();
        for _ in 0..self.restarts {
            restarts.push(self.restart(data.path(), &bearer).await?);
        }

        let mut out = String::new();
        let _ = writeln!(
            out,
            "## {} functions on one node\n\nNode: `{}`. Each row {} requests a round, {} rounds in a random order each, one request in flight, keep-alive, loopback, after a warm-up round of a tenth as many requests. With many functions most random calls are a function's first since the node started.\n",
            self.functions,
            crate::node::version(&self.limes),
            self.requests,
            self.rounds
        );
        let _ = writeln!(out, "| no-op invoke of | p50 µs | p99 µs | mean µs | n |");
        let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
        for ((what, _), s) in rows.iter().zip(&samples) {
            let Some(s) = Summary::of(s) else { continue };
            let _ = writeln!(
                out,
                "| {what} | {:.1} | {:.1} | {:.1} | {} |",
                s.p50, s.p99, s.mean, s.n
            );
        }
        let _ = writeln!(out);
        for (p, label) in [(50.0, "p50"), (99.0, "p99")] {
            if let Some(r) = ratio_of_percentiles(&samples[1], &samples[0], p) {
                let _ = writeln!(
                    out,
                    "- A random function / one function, {label}: {:.2}x (95% CI {:.2}–{:.2})",
                    r.value, r.low, r.high
                );
            }
        }
        if let Some(r) = ratio_of_percentiles(&samples[0], &samples[2], 50.0) {
            let _ = writeln!(
                out,
                "- One function / the HTTP stack alone (`GET /healthz`), p50: {:.2}x (95% CI {:.2}–{:.2})",
                r.value, r.low, r.high
            );
        }
        let per = |kib: u64| kib.saturating_sub(empty_kib) as f64 / self.functions as f64;
        let _ = writeln!(
            out,
            "- Resident memory: {:.1} MiB with no function, {:.1} MiB with {} deployed ({:.1} KiB per function), {:.1} MiB after every one ran ({:.1} KiB per function)",
            empty_kib as f64 / 1024.0,
            deployed_kib as f64 / 1024.0,
            self.functions,
            per(deployed_kib),
            loaded_kib as f64 / 1024.0,
            per(loaded_kib),
        );
        let _ = writeln!(
            out,
            "- Deploying them took {:.1} s ({:.1} ms each, 4 at a time)",
            deploy_time.as_secs_f64(),
            deploy_time.as_secs_f64() * 1e3 / self.functions as f64
        );
        if !restarts.is_empty() {
            let healthy: Vec<f64> = restarts.iter().map(|r| r.0).collect();
            let serving: Vec<f64> = restarts.iter().map(|r| r.1).collect();
            let show = |v: &[f64]| {
                v.iter()
                    .map(|ms| format!("{ms:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "- Restart with {} functions deployed (SIGTERM, then a new process): `/healthz` answered after {} ms; a random function answered after {} ms",
                self.functions,
                show(&healthy),
                show(&serving)
            );
        }
        Ok(out)
    }

    /// Deploys the no-op under every name, four at a time.
    async fn deploy_all(&self, node: &Node, bearer: &str, noop: Bytes) -> Result<(), String> {
        let client = reqwest::Client::new();
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (client, next, noop) = (client.clone(), next.clone(), noop.clone());
            let (base, bearer, total) = (node.url(""), bearer.to_owned(), self.functions);
            workers.spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        return Ok::<(), String>(());
                    }
                    let response = client
                        .put(format!("{base}/v1/functions/{}", name(i)))
                        .header("authorization", &bearer)
                        .body(noop.clone())
                        .send()
                        .await
                        .map_err(|e| format!("deploying {}: {e}", name(i)))?;
                    if !response.status().is_success() {
                        return Err(format!("deploying {}: {}", name(i), response.status()));
                    }
                }
            });
        }
        while let Some(done) = workers.join_next().await {
            done.map_err(|e| format!("a deploy worker failed: {e}"))??;
        }
        Ok(())
    }

    /// One restart: milliseconds until `/healthz` answered, and until a random function did.
    async fn restart(&self, data: &std::path::Path, bearer: &str) -> Result<(f64, f64), String> {
        let started = Instant::now();
        let (node, healthy) = Node::start(&self.limes, data).await?;
        let client = reqwest::Client::new();
        let path = invoke_path(fastrand::usize(..self.functions));
        loop {
            let answered = client
                .post(node.url(&path))
                .header("authorization", bearer)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if answered {
                break;
            }
            if started.elapsed() > Duration::from_secs(120) {
                return Err(format!("{path} did not answer within 120 s of a restart"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let serving = started.elapsed();
        node.stop()?;
        Ok((healthy.as_secs_f64() * 1e3, serving.as_secs_f64() * 1e3))
    }
}
