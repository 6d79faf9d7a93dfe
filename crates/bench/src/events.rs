//! `limes bench events`: functions run by messages and workflows, each beside a plain invoke of
//! the same work in the same run.
//!
//! A `nats-server` and a `limes serve` child that joins it (node `a`). Latency rows take turns
//! in a new random order each round, one call in flight:
//! - the no-op invoked over HTTP, and a core message to a no-op with a reply (NATS
//!   request/reply through the trigger);
//! - a key-value write (`kv-script`, `set k I`) invoked over HTTP, the same write run by a
//!   durable message (from the JetStream publish until a watch of the function's KV bucket sees
//!   the value), and by a three-step workflow `echo → echo → kv-script` started over HTTP (until
//!   the watch sees it).
//!
//! Then the throughput of a durable trigger running the no-op from a backlog: on node `a`
//! alone, and on `a`, `b` and `c` sharing its consumer.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;

use crate::functions::Node;
use crate::process::admin_bearer;
use crate::stats::{Summary, ratio_of_percentiles};

/// What to run.
pub struct EventsBench {
    /// The `limes` binary to start as the nodes.
    pub limes: PathBuf,
    /// Where the guests are.
    pub guests: PathBuf,
    /// Calls per row and round.
    pub requests: usize,
    /// Rounds of the rows.
    pub rounds: usize,
    /// Messages of each throughput run.
    pub messages: usize,
}

/// The latency rows, and the row each is compared with.
const ROWS: &[(&str, usize)] = &[
    ("invoke no-op (HTTP)", 0),
    ("core message → no-op, reply", 0),
    ("invoke kv set (HTTP)", 2),
    ("durable message → kv set", 2),
    ("3-step workflow → kv set", 2),
];

/// Publish acknowledgements awaited together in the throughput runs.
const ACKS_AT_ONCE: usize = 1_000;

/// A node of the run, with what calling it needs.
struct Member {
    node: Node,
    bearer: String,
    _data: tempfile::TempDir,
}

impl EventsBench {
    /// Runs the benchmark and returns a Markdown report.
    pub async fn run(&self) -> Result<String, String> {
        if self.rounds == 0 || self.requests == 0 || self.messages == 0 {
            return Err("--rounds, --requests and --messages must be at least 1".into());
        }
        if limes_cluster::server::binary().is_none() {
            return Err(
                "limes bench events needs nats-server (apt-get install nats-server)".into(),
            );
        }
        let nats = limes_cluster::server::NatsServer::start()?;
        let url = nats.url();
        let a = self.member(&url, "a").await?;
        let http = reqwest::Client::new();
        let deploy = async |name: &str, file: &str, query: &str| -> Result<(), String> {
            let wasm = std::fs::read(self.guests.join(file)).map_err(|e| format!("{file}: {e}"))?;
            let response = http
                .put(a.node.url(&format!(
                    "/v1/functions/{name}?priority=urgent&max_concurrency=64&{query}"
                )))
                .header("authorization", &a.bearer)
                .body(wasm)
                .send()
                .await
                .map_err(|e| format!("deploying {name}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!(
                    "deploying {name}: {}",
                    response.text().await.unwrap_or_default()
                ));
            }
            Ok(())
        };
        deploy("noop", "noop.wasm", "").await?;
        deploy("noop-core", "noop.wasm", "on_message=bench.core").await?;
        deploy("sink", "kv-script.wasm", "kv=default").await?;
        deploy(
            "sink-durable",
            "kv-script.wasm",
            "kv=default&on_message=bench.durable&on_message_delivery=durable",
        )
        .await?;
        deploy("pass", "echo.wasm", "").await?;
        deploy("sink-wf", "kv-script.wasm", "kv=default").await?;
        let workflow = serde_json::json!({"priority": "urgent", "steps": [
            {"name": "one", "function": "pass", "next": ["two"]},
            {"name": "two", "function": "pass", "next": ["three"]},
            {"name": "three", "function": "sink-wf"}
        ]});
        let put = http
            .put(a.node.url("/v1/workflows/chain"))
            .header("authorization", &a.bearer)
            .json(&workflow)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !put.status().is_success() {
            return Err(format!(
                "deploying the workflow: {}",
                put.text().await.unwrap_or_default()
            ));
        }

        let client = async_nats::connect(&url).await.map_err(|e| e.to_string())?;
        let js = jetstream::new(client.clone());
        let caller = Caller {
            http: http.clone(),
            node: &a,
            client: client.clone(),
            js: js.clone(),
        };
        // A first write of each sink makes its bucket, which the watches need.
        let mut watches = Vec::new();
        for (row, bucket) in [
            (3, "limes-kv-sink-durableXdefault"),
            (4, "limes-kv-sink-wfXdefault"),
        ] {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                caller.send(row, 0).await?;
                if let Ok(kv) = js.get_key_value(bucket).await {
                    watches.push(kv.watch("k").await.map_err(|e| e.to_string())?);
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("{bucket} never appeared"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); ROWS.len()];
        let mut order: Vec<usize> = (0..ROWS.len()).collect();
        let mut seq = 0u64;
        for round in 0..=self.rounds {
            fastrand::shuffle(&mut order);
            for &row in &order {
                let n = if round == 0 {
                    self.requests / 10 + 1
                } else {
                    self.requests
                };
                for _ in 0..n {
                    seq += 1;
                    let started = Instant::now();
                    caller.send(row, seq).await?;
                    if row >= 3 {
                        let watch = &mut watches[row - 3];
                        let wanted = seq.to_string();
                        loop {
                            let entry = tokio::time::timeout(Duration::from_secs(30), watch.next())
                                .await
                                .map_err(|_| format!("{}: no write within 30 s", ROWS[row].0))?
                                .ok_or("the watch ended")?
                                .map_err(|e| e.to_string())?;
                            if entry.value == wanted.as_bytes() {
                                break;
                            }
                        }
                    }
                    if round > 0 {
                        samples[row].push(started.elapsed().as_secs_f64() * 1e6);
                    }
                }
            }
        }

        // Throughput from a backlog: one node, then three.
        let one = self.throughput(&caller, &[&a], "tp1").await?;
        let b = self.member(&url, "b").await?;
        let c = self.member(&url, "c").await?;
        let three = self.throughput(&caller, &[&a, &b, &c], "tp3").await?;
        for m in [b, c, a] {
            m.node.stop()?;
        }

        let mut out = String::new();
        let _ = writeln!(
            out,
            "## Events and workflows\n\nNode: `{}`, joined to a `nats-server` on loopback. Each row {} calls a round, {} rounds in a new random order each, one call in flight, after a warm-up round. A durable row runs from the JetStream publish (acknowledged) until a watch of the function's KV bucket sees its write; the workflow row from `POST /v1/workflows/chain/runs` until the watch sees the last step's write. *vs* is the row's p50 over the p50 of the invoke of the same work, with its 95% interval.\n",
            crate::node::version(&self.limes),
            self.requests,
            self.rounds
        );
        let _ = writeln!(out, "| row | p50 µs | p99 µs | vs (p50) | n |");
        let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
        for (i, (what, base)) in ROWS.iter().enumerate() {
            let Some(s) = Summary::of(&samples[i]) else {
                continue;
            };
            let ratio = if i == *base {
                "–".into()
            } else {
                ratio_of_percentiles(&samples[i], &samples[*base], 50.0).map_or("–".into(), |r| {
                    format!(
                        "{:.2}x ({:.2}–{:.2}) of {}",
                        r.value, r.low, r.high, ROWS[*base].0
                    )
                })
            };
            let _ = writeln!(
                out,
                "| {what} | {:.1} | {:.1} | {ratio} | {} |",
                s.p50, s.p99, s.n
            );
        }
        let _ = writeln!(
            out,
            "\nDurable trigger throughput ({} messages of the no-op published, then run from the backlog; from the first publish to the last ack):\n\n| nodes | messages/s | took |\n| --- | --- | --- |\n| 1 | {:.0} | {:.2} s |\n| 3 | {:.0} | {:.2} s |",
            self.messages,
            self.messages as f64 / one.as_secs_f64(),
            one.as_secs_f64(),
            self.messages as f64 / three.as_secs_f64(),
            three.as_secs_f64(),
        );
        drop(nats);
        Ok(out)
    }

    /// Starts node `id` on the NATS at `url`, allowing the bench's subjects.
    async fn member(&self, url: &str, id: &str) -> Result<Member, String> {
        let data = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (node, _) = Node::start_with(
            &self.limes,
            data.path(),
            &[
                "--cluster",
                url,
                "--node-id",
                id,
                "--allow-subject",
                "bench.>",
            ],
        )
        .await?;
        let bearer = admin_bearer(data.path())?;
        Ok(Member {
            node,
            bearer,
            _data: data,
        })
    }

    /// Publishes the bench's messages for a durable no-op function `name` that `nodes` all
    /// run, and returns the time from the first publish to the last ack.
    async fn throughput(
        &self,
        caller: &Caller<'_>,
        nodes: &[&Member],
        name: &str,
    ) -> Result<Duration, String> {
        let subject = format!("bench.{name}");
        let wasm = std::fs::read(self.guests.join("noop.wasm")).map_err(|e| e.to_string())?;
        let first = nodes[0];
        let response = caller
            .http
            .put(first.node.url(&format!(
                "/v1/functions/{name}?priority=urgent&max_concurrency=64&on_message={subject}&on_message_delivery=durable&max_in_flight=256"
            )))
            .header("authorization", &first.bearer)
            .body(wasm)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!(
                "deploying {name}: {}",
                response.text().await.unwrap_or_default()
            ));
        }
        // Every node has loaded the function and pulls before the clock starts.
        for n in nodes {
            caller
                .http
                .post(n.node.url(&format!("/v1/functions/{name}/invoke")))
                .header("authorization", &n.bearer)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while !subscribed(caller, n, name).await {
                if Instant::now() > deadline {
                    return Err(format!("{name} never subscribed on every node"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let started = Instant::now();
        // Acknowledgements are awaited a thousand at a time: the client allows only so many
        // in flight, and a publisher that never awaits them stops.
        let mut acks = Vec::with_capacity(ACKS_AT_ONCE);
        for i in 0..self.messages {
            acks.push(
                caller
                    .js
                    .publish(subject.clone(), "".into())
                    .await
                    .map_err(|e| e.to_string())?,
            );
            if acks.len() == ACKS_AT_ONCE || i + 1 == self.messages {
                for ack in acks.drain(..) {
                    ack.await.map_err(|e| e.to_string())?;
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let mut acked = 0;
            for n in nodes {
                acked += acked_count(caller, n, name).await?;
            }
            if acked >= self.messages as u64 {
                return Ok(started.elapsed());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{acked} of {} messages acked in 300 s",
                    self.messages
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether `name` is among the triggers `n` subscribes for.
async fn subscribed(caller: &Caller<'_>, n: &Member, name: &str) -> bool {
    let Ok(response) = caller
        .http
        .get(n.node.url("/v1/cluster"))
        .header("authorization", &n.bearer)
        .send()
        .await
    else {
        return false;
    };
    let status: serde_json::Value = response.json().await.unwrap_or_default();
    status["triggers"]
        .as_array()
        .is_some_and(|t| t.iter().any(|f| f == name))
}

/// How many of `name`'s durable messages `n` has acked.
async fn acked_count(caller: &Caller<'_>, n: &Member, name: &str) -> Result<u64, String> {
    let text = caller
        .http
        .get(n.node.url("/metrics"))
        .header("authorization", &n.bearer)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let wanted = format!(
        "limes_trigger_deliveries_total{{function=\"{name}\",trigger=\"durable\",outcome=\"acked\"}} "
    );
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&wanted))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// Makes the rows' calls.
struct Caller<'a> {
    http: reqwest::Client,
    node: &'a Member,
    client: async_nats::Client,
    js: jetstream::Context,
}

impl Caller<'_> {
    /// One call of row `row`, writing `seq` where the row writes.
    async fn send(&self, row: usize, seq: u64) -> Result<(), String> {
        let script = format!("open default; set k {seq}");
        let invoke = async |function: &str, body: String| -> Result<(), String> {
            let response = self
                .http
                .post(
                    self.node
                        .node
                        .url(&format!("/v1/functions/{function}/invoke")),
                )
                .header("authorization", &self.node.bearer)
                .body(body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("{function}: {}", response.status()));
            }
            response.bytes().await.map(drop).map_err(|e| e.to_string())
        };
        match row {
            0 => invoke("noop", String::new()).await,
            1 => self
                .client
                .request("bench.core", "".into())
                .await
                .map(drop)
                .map_err(|e| format!("the core trigger's reply: {e}")),
            2 => invoke("sink", script).await,
            3 => self
                .js
                .publish("bench.durable", script.into())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            _ => {
                let response = self
                    .http
                    .post(self.node.node.url("/v1/workflows/chain/runs"))
                    .header("authorization", &self.node.bearer)
                    .body(script)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if response.status() != 202 {
                    return Err(format!("starting a run: {}", response.status()));
                }
                Ok(())
            }
        }
    }
}
