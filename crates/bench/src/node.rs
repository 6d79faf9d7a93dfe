//! `limes bench node`: a Limes node under HTTP load, against `wasmtime serve` in the same run.
//!
//! Both servers run as child processes on loopback and get the same closed-loop load with
//! keep-alive connections from this process.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use bytes::Bytes;
use hyper::Method;

use crate::load::{self, LoadReport, Target};
use crate::process::{Server, find_on_path, free_port};

/// What to run.
pub struct NodeBench {
    /// The `limes` binary to start as the node.
    pub limes: PathBuf,
    /// Where `noop.wasm` and `http-hello.wasm` are.
    pub guests: PathBuf,
    /// A `wasmtime` binary for the comparison; looked up on PATH when `None`.
    pub wasmtime: Option<PathBuf>,
    /// Measured requests per load run (after a warm-up of a tenth as many).
    pub requests: usize,
    /// Requests in flight at once for the throughput runs.
    pub concurrency: usize,
}

fn row(out: &mut String, what: &str, r: &LoadReport) {
    let l = &r.latency_us;
    let _ = writeln!(
        out,
        "| {what} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {} |",
        r.concurrency, r.throughput, l.p50, l.p99, l.mean, r.errors
    );
}

/// A warm-up of a tenth as many requests, then the measured run; any failed request fails it.
async fn measure(
    target: Target,
    requests: usize,
    concurrency: usize,
) -> Result<LoadReport, String> {
    tokio::task::spawn_blocking(move || {
        load::run(&target, requests / 10 + 1, concurrency)?;
        let report = load::run(&target, requests, concurrency)?;
        if report.errors > 0 {
            return Err(format!(
                "{} of {requests} requests to {} failed",
                report.errors, target.path
            ));
        }
        Ok(report)
    })
    .await
    .map_err(|e| format!("the load generator failed: {e}"))?
}

/// A request to `server`.
fn target(server: &Server, method: Method, path: &str, expect: Option<&str>) -> Target {
    Target {
        addr: server.addr(),
        method,
        path: path.to_owned(),
        paths: Vec::new(),
        body: Bytes::new(),
        expect: expect.map(|e| Bytes::copy_from_slice(e.as_bytes())),
        authorization: server.authorization.clone(),
    }
}

impl NodeBench {
    /// Runs the benchmark and returns a Markdown report.
    pub async fn run(&self) -> Result<String, String> {
        let port = free_port()?;
        let data = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut serve = Command::new(&self.limes);
        serve
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--capacity",
                "256",
            ])
            .arg("--data-dir")
            .arg(data.path());
        let mut limes = Server::start(serve, port, "/healthz").await?;
        // Every request carries the node's admin token, as a real client's would: the
        // figures include checking it.
        limes.authorization = Some(crate::process::admin_bearer(data.path())?);
        let client = reqwest::Client::new();
        for (name, file) in [("noop", "noop.wasm"), ("hello", "http-hello.wasm")] {
            let bytes =
                std::fs::read(self.guests.join(file)).map_err(|e| format!("{file}: {e}"))?;
            let response = client
                .put(limes.url(&format!("/v1/functions/{name}?max_concurrency=256")))
                .header(
                    "authorization",
                    limes.authorization.clone().unwrap_or_default(),
                )
                .body(bytes)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("deploying {name}: {}", response.status()));
            }
        }

        let mut out = String::new();
        let _ = writeln!(
            out,
            "## Node under load (keep-alive, loopback, {} requests per row)\n",
            self.requests
        );
        let _ = writeln!(
            out,
            "| what | in flight | req/s | p50 µs | p99 µs | mean µs | errors |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |");
        let floor = measure(
            target(&limes, Method::GET, "/healthz", None),
            self.requests,
            1,
        )
        .await?;
        row(
            &mut out,
            "Limes: GET /healthz (the HTTP stack alone)",
            &floor,
        );
        let invoke = target(&limes, Method::POST, "/v1/functions/noop/invoke", Some(""));
        for concurrency in [1, self.concurrency] {
            let r = measure(invoke.clone(), self.requests, concurrency).await?;
            row(&mut out, "Limes: no-op invoke", &r);
        }

        let hello = "hello from wasi:http: GET /\n";
        let ours = measure(
            target(&limes, Method::GET, "/fn/hello/", Some(hello)),
            self.requests,
            self.concurrency,
        )
        .await?;
        row(&mut out, "Limes: wasi:http hello", &ours);
        drop(limes);

        let wasmtime = self.wasmtime.clone().or_else(|| find_on_path("wasmtime"));
        let Some(wasmtime) = wasmtime else {
            let _ = writeln!(
                out,
                "\nwasmtime-serve: unavailable: no `wasmtime` on PATH (cargo install wasmtime-cli --version 48.0.8)"
            );
            return Ok(out);
        };
        let port = free_port()?;
        let mut serve = Command::new(&wasmtime);
        serve
            .args(["serve", "-Scli", "--addr", &format!("127.0.0.1:{port}")])
            .arg(self.guests.join("http-hello.wasm"));
        let theirs = Server::start(serve, port, "/").await?;
        let peer = measure(
            target(&theirs, Method::GET, "/", Some(hello)),
            self.requests,
            self.concurrency,
        )
        .await?;
        row(
            &mut out,
            &format!("wasmtime serve ({}): wasi:http hello", version(&wasmtime)),
            &peer,
        );
        let _ = writeln!(
            out,
            "\nLimes / wasmtime serve throughput on the same wasi:http component: {:.2}x",
            ours.throughput / peer.throughput
        );
        Ok(out)
    }
}

/// What `BINARY --version` says, so that a report names a build and not a path.
pub(crate) fn version(binary: &std::path::Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "version unknown".into())
}
