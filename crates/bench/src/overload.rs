//! `limes bench overload`: a node under 2× and 4× the load it can serve, with a steady trickle
//! of urgent calls, against the same node unloaded, in one run.
//!
//! A `limes serve` process (tokens on, as deployed) runs one CPU-bound function three times
//! over, as an `urgent`, a `regular` and a `batch` function. First each class is called alone
//! by one client (the unloaded baseline); then a closed loop finds what the node can serve;
//! then, for each overload factor, regular calls arrive open-loop at that multiple of it while
//! urgent calls arrive every `urgent_every`. Every call's class, status and latency is kept:
//! the report gives per class p50/p99 of admitted calls, admitted and shed per second, 5xx, the
//! node's RSS, and urgent p99 under overload over urgent p99 unloaded.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper::client::conn::http1::SendRequest;
use plotters::prelude::*;
use std::process::Command;

use crate::load::{self, Target};
use crate::process::{Server, free_port};
use crate::stats::Summary;

/// The experiment's settings.
pub struct OverloadBench {
    /// The `limes` binary.
    pub limes: PathBuf,
    /// Built guests.
    pub guests: PathBuf,
    /// The CPU-bound workload's arguments (Mandelbrot).
    pub args: String,
    /// Calls per class for the unloaded baseline.
    pub baseline_calls: usize,
    /// Length of each overload phase.
    pub phase: Duration,
    /// Overload factors.
    pub factors: Vec<f64>,
    /// Time between urgent calls during overload.
    pub urgent_every: Duration,
    /// The node's `--capacity`.
    pub capacity: u32,
    /// Where to write report.md and overload.svg.
    pub out: PathBuf,
    /// The command line, for the report.
    pub command: String,
}

const CLASSES: [&str; 3] = ["urgent", "regular", "batch"];

/// One call's outcome.
#[derive(Clone, Copy)]
struct Outcome {
    class: usize,
    status: u16,
    latency_ms: f64,
}

/// What one phase measured, per class.
struct Phase {
    name: String,
    factor: f64,
    seconds: f64,
    outcomes: Vec<Outcome>,
    rss_kib: (u64, u64),
}

impl Phase {
    fn of(&self, class: usize) -> impl Iterator<Item = &Outcome> {
        self.outcomes.iter().filter(move |o| o.class == class)
    }

    fn admitted(&self, class: usize) -> Option<Summary> {
        let ok: Vec<f64> = self
            .of(class)
            .filter(|o| o.status == 200)
            .map(|o| o.latency_ms)
            .collect();
        Summary::of(&ok)
    }

    fn count(&self, class: usize, pick: impl Fn(u16) -> bool) -> usize {
        self.of(class).filter(|o| pick(o.status)).count()
    }
}

/// The node's resident set now and its peak, KiB, from /proc.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

impl OverloadBench {
    /// Runs the experiment; writes `report.md` and `overload.svg` into `out` and returns the
    /// report.
    pub async fn run(&self) -> Result<String, String> {
        let port = free_port()?;
        let data = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut serve = Command::new(&self.limes);
        serve
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--capacity", &self.capacity.to_string()])
            .arg("--data-dir")
            .arg(data.path());
        let mut node = Server::start(serve, port, "/healthz").await?;
        node.authorization = Some(crate::process::admin_bearer(data.path())?);
        let pid = node.pid().ok_or("the node has no pid")?;
        let component = std::fs::read(self.guests.join("mandelbrot.wasm"))
            .map_err(|e| format!("mandelbrot.wasm: {e}"))?;
        let client = reqwest::Client::new();
        for class in CLASSES {
            let url = node.url(&format!(
                "/v1/functions/work-{class}?priority={class}&max_concurrency={}",
                self.capacity
            ));
            let response = client
                .put(url)
                .header(
                    "authorization",
                    node.authorization.clone().unwrap_or_default(),
                )
                .body(component.clone())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("deploying work-{class}: {}", response.status()));
            }
        }
        let regular = Target {
            addr: node.addr(),
            method: Method::POST,
            path: "/v1/functions/work-regular/invoke".into(),
            paths: Vec::new(),
            body: Bytes::from(self.args.clone()),
            expect: None,
            authorization: node.authorization.clone(),
        };

        // Unloaded: one client, with the same client code as under load; the classes take
        // turns, so that the machine's drift falls on all of them alike.
        let mut phases = Vec::new();
        let started = Instant::now();
        let mut outcomes = Vec::new();
        let pool = Mutex::default();
        for _ in 0..self.baseline_calls {
            for (class, name) in CLASSES.iter().enumerate() {
                let sent = Instant::now();
                let body = Bytes::from(self.args.clone());
                let status = call(node.addr(), &pool, name, body, node.authorization.clone()).await;
                if status != 200 {
                    return Err(format!("an unloaded {name} call answered {status}"));
                }
                outcomes.push(Outcome {
                    class,
                    status,
                    latency_ms: sent.elapsed().as_secs_f64() * 1e3,
                });
            }
        }
        phases.push(Phase {
            name: "unloaded".into(),
            factor: 0.0,
            seconds: started.elapsed().as_secs_f64(),
            outcomes,
            rss_kib: rss(pid),
        });

        // What the node can serve: a closed loop of regular calls one more than its run slots
        // (one per core, on this machine), so that every slot stays busy while the queue stays
        // within its deadline; a longer loop would count shed calls as lost time.
        let loop_size = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
        let capacity = load::run(&regular, self.baseline_calls * 4, loop_size)?;
        if capacity.errors > capacity.ok / 10 {
            return Err(format!(
                "measuring capacity: {} of {} calls failed",
                capacity.errors,
                capacity.errors + capacity.ok
            ));
        }
        let served_per_s = capacity.throughput;

        for &factor in &self.factors {
            let rate = served_per_s * factor;
            let before = rss(pid).0;
            let (seconds, outcomes) = open_loop(
                node.addr(),
                node.authorization.clone(),
                &self.args,
                rate,
                self.urgent_every,
                self.phase,
            )
            .await?;
            phases.push(Phase {
                name: format!("{factor}× overload"),
                factor,
                seconds,
                outcomes,
                rss_kib: (before, rss(pid).0),
            });
        }
        let peak_rss = rss(pid).1;
        drop(node);

        std::fs::create_dir_all(&self.out).map_err(|e| e.to_string())?;
        plot(&phases, &self.out.join("overload.svg"))?;
        let report = self.report(&phases, served_per_s, peak_rss);
        std::fs::write(self.out.join("report.md"), &report).map_err(|e| e.to_string())?;
        Ok(report)
    }

    fn report(&self, phases: &[Phase], served_per_s: f64, peak_rss: u64) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Overload: urgent first\n");
        let _ = writeln!(out, "Command: `{}`\n", self.command);
        let _ = writeln!(
            out,
            "One `limes serve` (tokens on, `--capacity {}`, default run slots and queue deadlines) \
             runs Mandelbrot (`{}`) as `work-urgent`, `work-regular` and `work-batch`. The node \
             served {served_per_s:.0} regular calls/s in a closed loop of one more than its cores; each overload phase \
             sends regular calls open-loop at that rate times the factor for {:?}, and an urgent \
             call every {:?}. The load generator shares the machine's cores with the node.\n",
            self.capacity, self.args, self.phase, self.urgent_every,
        );
        let _ = writeln!(
            out,
            "| phase | class | sent | admitted/s | shed (429)/s | 5xx | p50 ms | p99 ms | RSS KiB before → after |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---|");
        for phase in phases {
            for (class, name) in CLASSES.iter().enumerate() {
                let sent = phase.of(class).count();
                if sent == 0 {
                    continue;
                }
                let admitted = phase.admitted(class);
                let per_s = |n: usize| n as f64 / phase.seconds.max(1e-9);
                let _ = writeln!(
                    out,
                    "| {} | {name} | {sent} | {:.0} | {:.0} | {} | {} | {} | {} → {} |",
                    phase.name,
                    per_s(phase.count(class, |s| s == 200)),
                    per_s(phase.count(class, |s| s == 429)),
                    phase.count(class, |s| s >= 500),
                    admitted.map_or("-".into(), |s| format!("{:.2}", s.p50)),
                    admitted.map_or("-".into(), |s| format!("{:.2}", s.p99)),
                    phase.rss_kib.0,
                    phase.rss_kib.1,
                );
            }
        }
        let _ = writeln!(
            out,
            "\nPeak RSS of the node over the run: {peak_rss} KiB.\n"
        );
        let _ = writeln!(out, "## Against the targets\n");
        let base = |class: usize| phases[0].admitted(class).map_or(f64::NAN, |s| s.p99);
        for phase in &phases[1..] {
            let urgent_ratio = phase.admitted(0).map_or(f64::NAN, |s| s.p99) / base(0);
            let regular_ratio = phase.admitted(1).map_or(f64::NAN, |s| s.p99) / base(1);
            let urgent_shed = phase.count(0, |s| s == 429);
            let errors: usize = (0..3).map(|c| phase.count(c, |s| s >= 500)).sum();
            let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
            let _ = writeln!(
                out,
                "- {}: urgent p99 / unloaded urgent p99 = **{urgent_ratio:.2}×** (target ≤ 2× at 2×: {}); \
                 urgent 429s: {urgent_shed} (target 0: {}); regular admitted p99 / unloaded = \
                 {regular_ratio:.2}× (target ≤ 5×: {}); 5xx: {errors} (target 0: {})",
                phase.name,
                if phase.factor <= 2.0 {
                    verdict(urgent_ratio <= 2.0)
                } else {
                    "—"
                },
                verdict(urgent_shed == 0),
                verdict(regular_ratio <= 5.0),
                verdict(errors == 0),
            );
        }
        let rss_growth: Vec<String> = phases
            .iter()
            .map(|p| format!("{} {}→{}", p.name, p.rss_kib.0, p.rss_kib.1))
            .collect();
        let _ = writeln!(out, "- RSS by phase (KiB): {}", rss_growth.join(", "));
        let _ = writeln!(
            out,
            "\nPlot: [`overload.svg`](overload.svg) (p99 of admitted calls per class and phase)."
        );
        out
    }
}

/// Sends regular calls at `rate` per second and urgent calls every `urgent_every` for `length`,
/// each at its planned time whatever the answers before it (an open loop), over a pool of
/// keep-alive connections.
async fn open_loop(
    addr: std::net::SocketAddr,
    authorization: Option<String>,
    args: &str,
    rate: f64,
    urgent_every: Duration,
    length: Duration,
) -> Result<(f64, Vec<Outcome>), String> {
    let pool: Arc<Mutex<Vec<SendRequest<Full<Bytes>>>>> = Arc::default();
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let body = Bytes::from(args.to_owned());
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    let regular_gap = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let (mut next_regular, mut next_urgent) = (Duration::ZERO, Duration::ZERO);
    while next_regular.min(next_urgent) < length {
        let (class, at) = if next_urgent <= next_regular {
            next_urgent += urgent_every;
            (0, next_urgent - urgent_every)
        } else {
            next_regular += regular_gap;
            (1, next_regular - regular_gap)
        };
        tokio::time::sleep_until((started + at).into()).await;
        let (pool, outcomes, body, authorization) = (
            pool.clone(),
            outcomes.clone(),
            body.clone(),
            authorization.clone(),
        );
        calls.spawn(async move {
            let sent = Instant::now();
            let status = call(addr, &pool, CLASSES[class], body, authorization).await;
            outcomes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Outcome {
                    class,
                    status,
                    latency_ms: sent.elapsed().as_secs_f64() * 1e3,
                });
        });
        // Reap finished calls as we go, so that the set stays small.
        while calls.try_join_next().is_some() {}
    }
    while calls.join_next().await.is_some() {}
    let seconds = started.elapsed().as_secs_f64();
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap_or_else(|p| p.into_inner()));
    Ok((seconds, outcomes))
}

/// One call on a pooled connection (a new one if none is idle); its status, or 0 if it failed.
async fn call(
    addr: std::net::SocketAddr,
    pool: &Mutex<Vec<SendRequest<Full<Bytes>>>>,
    class: &str,
    body: Bytes,
    authorization: Option<String>,
) -> u16 {
    let idle = pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
    let mut sender = match idle {
        Some(s) if s.is_ready() => s,
        _ => match load::connect(addr).await {
            Ok(s) => s,
            Err(_) => return 0,
        },
    };
    let mut request = hyper::Request::builder()
        .method(Method::POST)
        .uri(format!("/v1/functions/work-{class}/invoke"))
        .header(hyper::header::HOST, "localhost");
    if let Some(auth) = &authorization {
        request = request.header(hyper::header::AUTHORIZATION, auth.as_str());
    }
    let Ok(request) = request.body(Full::new(body)) else {
        return 0;
    };
    let Ok(response) = sender.send_request(request).await else {
        return 0;
    };
    let status = response.status().as_u16();
    if response.into_body().collect().await.is_ok() {
        pool.lock().unwrap_or_else(|p| p.into_inner()).push(sender);
    }
    status
}

fn plot(phases: &[Phase], path: &Path) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let series: Vec<(usize, Vec<(f64, f64)>)> = (0..2)
        .map(|class| {
            let points = phases
                .iter()
                .filter_map(|p| Some((p.factor, p.admitted(class)?.p99)))
                .collect();
            (class, points)
        })
        .collect();
    let top = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .fold(1.0, f64::max)
        * 1.2;
    let right = phases.iter().map(|p| p.factor).fold(1.0, f64::max) + 0.5;
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "p99 of admitted calls: unloaded (0) and under overload",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.2..right, 0.0..top)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("offered regular load, × what the node serves (0: unloaded)")
        .y_desc("p99 latency, ms")
        .draw()
        .map_err(|e| err(&e))?;
    for (class, points) in series {
        let colour = if class == 0 { RED } else { BLUE };
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(CLASSES[class])
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
