//! `limes bench cluster`: SPARE's experiment on a Limes cluster. N edge nodes on one real
//! NATS server carry a steady regular load; then emergencies with looser and looser latency
//! bounds release more and more nodes, and the report sets the fraction of nodes released
//! against the latency added to regular work and the latency of urgent functions.
//!
//! Inter-node latency comes from an **in-process latency model**: every forwarded call sleeps
//! the configured one-way latency before its request and after its reply
//! (`ClusterConfig::simulate_latency`). The nodes run in this process on one machine, so NATS
//! itself adds only loopback time. The report says whether this host could have used `tc netem`
//! in network namespaces instead (probed at start, as root), and why not.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use limes_cluster::ClusterConfig;
use limes_node::cluster::plan::Declaration;
use limes_node::{Deploy, Node, NodeConfig};
use plotters::prelude::*;

use crate::stats::Summary;

/// What to run.
pub struct ClusterBench {
    /// Edge nodes (at least 6 for the experiment; fewer only for a smoke run).
    pub nodes: usize,
    /// Instance slots per node.
    pub capacity: u32,
    /// Regular callers per node, each in a closed loop that runs through every phase.
    pub callers: usize,
    /// Length of each measured phase.
    pub phase: Duration,
    /// Latency bounds to declare emergencies with, in ms.
    pub bounds: Vec<f64>,
    /// Where `sleep.wasm` and `echo.wasm` are.
    pub guests: PathBuf,
    /// Where to write report.md and released_vs_latency.svg.
    pub out: PathBuf,
    /// The command line, for the report.
    pub command: String,
}

/// The regular function's work: a 2 ms wait that holds an instance slot (as an I/O-bound
/// function does) without competing with the other nodes for this machine's two cores.
const REGULAR_ARGS: &str = "2";
/// Between two urgent calls on a released node: urgent requests arrive at a steady rate (up to
/// 200/s per node).
const URGENT_PAUSE: Duration = Duration::from_millis(5);
/// One-way latency between grid neighbours, ms.
const SPACING_MS: f64 = 2.0;

/// Whether `tc netem` can delay traffic in a network namespace here: tries it on a throw-away
/// veth pair. `Err` says why not (not root, no `ip`/`tc`, no netem qdisc in the kernel).
pub fn probe_netem() -> Result<(), String> {
    let run = |args: &[&str]| -> Result<(), String> {
        let output = Command::new(args[0])
            .args(&args[1..])
            .output()
            .map_err(|e| format!("{}: {e}", args[0]))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`{}`: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    };
    let ns = format!("limes-probe-{}", std::process::id());
    let (a, b) = (
        &format!("lp{}a", std::process::id()),
        &format!("lp{}b", std::process::id()),
    );
    let outcome = (|| {
        run(&["ip", "netns", "add", &ns])?;
        run(&["ip", "link", "add", a, "type", "veth", "peer", "name", b])?;
        run(&["ip", "link", "set", b, "netns", &ns])?;
        run(&[
            "tc", "qdisc", "add", "dev", a, "root", "netem", "delay", "1ms",
        ])
    })();
    let _ = run(&["ip", "link", "del", a]);
    let _ = run(&["ip", "netns", "del", &ns]);
    outcome
}

/// One phase's figures.
struct Phase {
    bound_ms: Option<f64>,
    released: Vec<String>,
    regular: Summary,
    regular_forwarded: f64,
    urgent: Option<Summary>,
    errors: usize,
}

/// Node `i` of a grid three wide, `SPACING_MS` apart.
fn location(i: usize) -> [f64; 2] {
    [(i % 3) as f64 * SPACING_MS, (i / 3) as f64 * SPACING_MS]
}

impl ClusterBench {
    /// Runs the experiment, writes its report and plot, and returns the report.
    pub async fn run(&self) -> Result<String, String> {
        let nats = limes_cluster::server::NatsServer::start()?;
        let data = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut nodes = Vec::new();
        for i in 0..self.nodes {
            let mut config = NodeConfig::new(data.path().join(format!("n{i}")));
            config.node_id = format!("n{i}");
            config.capacity = self.capacity;
            config.pool.max_instances = self.capacity * 2;
            // In-process nodes, driven directly: there are no HTTP requests to check.
            config.auth = limes_node::AuthMode::None;
            let node = tokio::task::spawn_blocking(move || Node::open(config))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let mut cluster = ClusterConfig::new(nats.url(), location(i));
            cluster.simulate_latency = true;
            limes_cluster::join(&node, cluster)
                .await
                .map_err(|e| e.to_string())?;
            nodes.push(node);
        }
        wait_for(
            Duration::from_secs(15),
            "every node to see the others",
            || nodes.iter().all(|n| members(n) == self.nodes),
        )
        .await?;
        let read = |f: &str| {
            std::fs::read(self.guests.join(f))
                .map_err(|e| format!("{f}: {e}; run cargo xtask guests"))
        };
        let regular = bytes::Bytes::from(read("sleep.wasm")?);
        let urgent = bytes::Bytes::from(read("echo.wasm")?);
        let manifest = |c: u32| limes_node::Manifest {
            max_concurrency: c,
            ..Default::default()
        };
        nodes[0]
            .deploy("regular", Deploy::new(regular, manifest(self.capacity)))
            .await
            .map_err(|e| e.to_string())?;
        nodes[0]
            .deploy("alert", Deploy::new(urgent, manifest(self.capacity)))
            .await
            .map_err(|e| e.to_string())?;
        // Every node compiles both before anything is measured.
        for node in &nodes {
            for (name, args) in [("regular", "0"), ("alert", "")] {
                node.invoke(name, args, 0)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }

        // The regular load runs throughout; each call is counted in the phase it started and
        // ended in, and calls across a change of plan are not counted.
        let clock = Arc::new(PhaseClock::default());
        let mut callers = tokio::task::JoinSet::new();
        for node in &nodes {
            for _ in 0..self.callers {
                callers.spawn(caller(
                    node.clone(),
                    "regular",
                    REGULAR_ARGS,
                    None,
                    clock.clone(),
                ));
            }
            callers.spawn(caller(
                node.clone(),
                "alert",
                "alert",
                Some(URGENT_PAUSE),
                clock.clone(),
            ));
        }
        let mut plans = vec![(None, Vec::new())];
        clock.start(0);
        tokio::time::sleep(self.phase).await;
        let cluster = nodes[0].cluster().ok_or("node 0 is not clustered")?;
        for (i, &bound) in self.bounds.iter().enumerate() {
            clock.pause();
            let declaration = Declaration {
                urgent: vec!["alert".into()],
                area: None,
                max_added_ms: bound,
                declared_by: Some("limes-bench".into()),
            };
            let released = cluster
                .declare(declaration)
                .await
                .map_err(|e| e.to_string())?
                .released;
            wait_for(
                Duration::from_secs(10),
                "the plan to reach every node",
                || {
                    nodes.iter().all(|n| {
                        n.cluster().is_some_and(|c| {
                            c.emergency()
                                .is_some_and(|p| p.declaration.max_added_ms == bound)
                        })
                    })
                },
            )
            .await?;
            plans.push((Some(bound), released));
            clock.start(i + 1);
            tokio::time::sleep(self.phase).await;
            clock.pause();
            cluster.end().await.map_err(|e| e.to_string())?;
            wait_for(
                Duration::from_secs(10),
                "the end to reach every node",
                || {
                    nodes
                        .iter()
                        .all(|n| n.cluster().is_some_and(|c| c.emergency().is_none()))
                },
            )
            .await?;
            // Back to normal placement for a while, so that the next plan sees the steady load
            // in the heartbeats, not the previous plan's consolidation.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        clock.stop();
        let mut calls = Vec::new();
        while let Some(done) = callers.join_next().await {
            calls.extend(done.map_err(|e| e.to_string())?);
        }
        let phases = plans
            .into_iter()
            .enumerate()
            .map(|(i, (bound_ms, released))| phase(i, bound_ms, released, &calls))
            .collect::<Result<Vec<_>, String>>()?;
        let report = self.report(&phases, probe_netem());
        std::fs::create_dir_all(&self.out).map_err(|e| e.to_string())?;
        std::fs::write(self.out.join("report.md"), &report).map_err(|e| e.to_string())?;
        plot(
            &phases,
            self.nodes,
            &self.out.join("released_vs_latency.svg"),
        )?;
        Ok(report)
    }

    fn report(&self, phases: &[Phase], netem: Result<(), String>) -> String {
        let base = &phases[0].regular;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Emergency consolidation on a Limes cluster (SPARE's experiment)\n"
        );
        let _ = writeln!(
            out,
            "{} nodes on one `nats-server -js`, {} slots each, on a grid three wide with {SPACING_MS} ms \
             one-way between neighbours. Every node has {} closed-loop callers of the regular \
             function (a {REGULAR_ARGS} ms wait); during an emergency each released node also calls the \
             urgent function every {URGENT_PAUSE:?}. The regular load runs throughout: a phase \
             without emergency, then one emergency per bound, each measured for {:?} once its \
             plan has reached every node, with 2 s of normal placement between them.\n",
            self.nodes, self.capacity, self.callers, self.phase
        );
        let _ = writeln!(out, "Command: `{}`\n", self.command);
        let _ = writeln!(
            out,
            "**Latency model: in-process** (`ClusterConfig::simulate_latency`): each forwarded call \
             sleeps the one-way latency before its request and after its reply. Not `tc netem`; \
             NATS itself runs on loopback.\n"
        );
        let _ = writeln!(
            out,
            "`tc netem` in network namespaces on this host: {}.\n",
            match netem {
                Ok(()) => "available, but this harness injects latency in process".to_owned(),
                Err(why) => format!("unavailable ({why})"),
            }
        );
        let _ = writeln!(
            out,
            "| bound ms | released | fraction | regular p50 ms | p99 ms | added p50 ms | added p99 ms | forwarded | urgent p50 ms | urgent p99 ms | errors |"
        );
        let _ = writeln!(
            out,
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for p in phases {
            let (u50, u99) = p.urgent.as_ref().map_or(("—".into(), "—".into()), |u| {
                (format!("{:.2}", u.p50), format!("{:.2}", u.p99))
            });
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} | {:.2} | {:.2} | {:+.2} | {:+.2} | {:.0} % | {u50} | {u99} | {} |",
                p.bound_ms.map_or("no emergency".into(), |b| format!("{b}")),
                if p.released.is_empty() {
                    "—".into()
                } else {
                    p.released.join(", ")
                },
                p.released.len() as f64 / self.nodes as f64,
                p.regular.p50,
                p.regular.p99,
                p.regular.p50 - base.p50,
                p.regular.p99 - base.p99,
                p.regular_forwarded * 100.0,
                p.errors
            );
        }
        let _ = writeln!(
            out,
            "\n\"added\" is against the no-emergency phase of the same run. Urgent latencies are \
             measured on the released nodes. The bound limits the modelled round trip of a \
             forward; what is measured adds NATS, timer rounding (each modelled sleep rounds up \
             to the next millisecond) and queueing on this machine's two cores, which is why p99 \
             exceeds it. Plot: `released_vs_latency.svg`."
        );
        out
    }
}

/// Which phase is being measured; calls made while it changes are not counted.
#[derive(Default)]
struct PhaseClock {
    /// 0: between phases; n: phase n − 1; `usize::MAX`: the experiment is over.
    state: std::sync::atomic::AtomicUsize,
}

impl PhaseClock {
    fn start(&self, phase: usize) {
        self.state.store(phase + 1, Ordering::SeqCst);
    }
    fn pause(&self) {
        self.state.store(0, Ordering::SeqCst);
    }
    fn stop(&self) {
        self.state.store(usize::MAX, Ordering::SeqCst);
    }
    fn now(&self) -> usize {
        self.state.load(Ordering::SeqCst)
    }
}

/// One finished call: its phase, function, latency (ms), whether it was forwarded; or a failure.
struct Call {
    phase: usize,
    name: &'static str,
    outcome: Result<(f64, bool), String>,
}

/// Calls `name` on `node` until the experiment is over. Urgent callers (`pause` set) call only
/// while their node is released, at a steady rate rather than in a tight loop that would take
/// this machine's cores from the rest.
async fn caller(
    node: Arc<Node>,
    name: &'static str,
    args: &'static str,
    pause: Option<Duration>,
    clock: Arc<PhaseClock>,
) -> Vec<Call> {
    let mut calls = Vec::new();
    loop {
        let phase = clock.now();
        if phase == usize::MAX {
            return calls;
        }
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
            let released = node.cluster().is_some_and(|c| {
                c.emergency()
                    .is_some_and(|p| p.releases(&node.config().node_id))
            });
            if !released {
                continue;
            }
        }
        let sent = Instant::now();
        let outcome = match node.invoke(name, args, 0).await {
            Ok(ran) => Ok((
                sent.elapsed().as_secs_f64() * 1e3,
                ran.forward_added.is_some(),
            )),
            Err(e) => {
                // A 429 answer is immediate: back off so as not to spin.
                tokio::time::sleep(Duration::from_millis(1)).await;
                Err(e.to_string())
            }
        };
        if phase != 0 && clock.now() == phase {
            calls.push(Call {
                phase: phase - 1,
                name,
                outcome,
            });
        }
    }
}

/// The figures of phase `index` from every caller's calls.
fn phase(
    index: usize,
    bound_ms: Option<f64>,
    released: Vec<String>,
    calls: &[Call],
) -> Result<Phase, String> {
    let (mut regular, mut urgent, mut forwarded, mut errors) = (vec![], vec![], 0usize, 0);
    for call in calls.iter().filter(|c| c.phase == index) {
        match (&call.outcome, call.name) {
            (Ok((ms, was_forwarded)), "regular") => {
                regular.push(*ms);
                forwarded += usize::from(*was_forwarded);
            }
            (Ok((ms, _)), _) => urgent.push(*ms),
            (Err(_), _) => errors += 1,
        }
    }
    Ok(Phase {
        bound_ms,
        released,
        regular_forwarded: forwarded as f64 / regular.len().max(1) as f64,
        regular: Summary::of(&regular)
            .ok_or_else(|| format!("no regular call succeeded in phase {index}"))?,
        urgent: Summary::of(&urgent),
        errors,
    })
}

fn members(node: &Node) -> usize {
    node.cluster()
        .and_then(|c| c.status()["members"].as_array().map(Vec::len))
        .unwrap_or(0)
}

async fn wait_for(limit: Duration, what: &str, check: impl Fn() -> bool) -> Result<(), String> {
    let started = Instant::now();
    while !check() {
        if started.elapsed() > limit {
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn plot(phases: &[Phase], nodes: usize, path: &Path) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let base = &phases[0].regular;
    // Ordered by the fraction released, so that each line reads left to right.
    let points = |pick: fn(&Summary) -> f64| -> Vec<(f64, f64)> {
        let mut points: Vec<(f64, f64)> = phases
            .iter()
            .map(|p| {
                (
                    p.released.len() as f64 / nodes as f64,
                    pick(&p.regular) - pick(base),
                )
            })
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        points
    };
    let (p50, p99) = (points(|s| s.p50), points(|s| s.p99));
    let top = p50.iter().chain(&p99).map(|p| p.1).fold(1.0, f64::max) * 1.15;
    let bottom = p50
        .iter()
        .chain(&p99)
        .map(|p| p.1)
        .fold(0.0, f64::min)
        .min(0.0);
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Nodes released vs latency added to regular work (in-process latency model)",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..1.0, bottom..top)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("fraction of nodes released")
        .y_desc("added latency, ms")
        .draw()
        .map_err(|e| err(&e))?;
    for (points, colour, name) in [(p50, BLUE, "p50"), (p99, RED, "p99")] {
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))
            .map_err(|e| err(&e))?;
    }
    // Each emergency's bound next to its p99 point.
    let labels = phases.iter().filter_map(|p| {
        let bound = p.bound_ms?;
        let x = p.released.len() as f64 / nodes as f64;
        let y = p.regular.p99 - base.p99;
        Some(Text::new(
            format!("  bound {bound} ms"),
            (x, y),
            ("sans-serif", 12).into_font(),
        ))
    });
    chart.draw_series(labels).map_err(|e| err(&e))?;
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
