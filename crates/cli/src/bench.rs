//! `limes bench`: the benchmarks.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use limes_bench::node::NodeBench;

use crate::CliError;

/// Without a mode, `limes bench` runs the study: every workload on every backend it finds.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    mode: Option<BenchMode>,
    #[command(flatten)]
    study: StudyArgs,
}

#[derive(Args)]
struct StudyArgs {
    /// A few iterations on small inputs (what CI runs)
    #[arg(long)]
    quick: bool,
    /// Where to write raw.csv, report.md, report.html and the SVG plots
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// Backends to try, comma-separated [default: all]
    #[arg(long, value_delimiter = ',')]
    backends: Option<Vec<String>>,
    /// Workloads to run, comma-separated: noop, mandelbrot, image-processing [default: all]
    #[arg(long, value_delimiter = ',')]
    workloads: Option<Vec<String>>,
    /// Measured iterations per backend and workload [default: 30, or 5 with --quick]
    #[arg(long)]
    iterations: Option<usize>,
    /// Run microVMs under emulation (TCG) when no hardware virtualization is usable; their
    /// figures are labelled "emulated — not comparable"
    #[arg(long)]
    allow_emulated: bool,
    /// Directory of the built guests and workload-native
    #[arg(long, default_value = "target/guests")]
    guests: PathBuf,
}

#[derive(Subcommand)]
enum BenchMode {
    /// A node under HTTP load: no-op invoke latency and throughput, and a wasi:http function
    /// against `wasmtime serve` in the same run.
    Node {
        /// Measured requests per row
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        /// Requests in flight at once for the throughput rows
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Directory of the built guests
        #[arg(long, default_value = "target/guests")]
        guests: PathBuf,
        /// The wasmtime binary to compare with [default: `wasmtime` on PATH]
        #[arg(long)]
        wasmtime: Option<PathBuf>,
    },
    /// Urgent first: a node unloaded, then under 2× and 4× the regular load it can serve with a
    /// trickle of urgent calls; per class p50/p99, admitted and shed per second, 5xx, RSS.
    Overload {
        /// Short phases and fewer baseline calls (what CI runs)
        #[arg(long)]
        quick: bool,
        /// Length of each overload phase [default: 10s, or 2s with --quick]
        #[arg(long, value_parser = limes_node::manifest::parse_duration)]
        phase: Option<std::time::Duration>,
        /// Overload factors, × what the node serves
        #[arg(long, value_delimiter = ',', default_value = "2,4")]
        factors: Vec<f64>,
        /// Time between urgent calls under overload
        #[arg(long, default_value = "20ms", value_parser = limes_node::manifest::parse_duration)]
        urgent_every: std::time::Duration,
        /// The node's --capacity
        #[arg(long, default_value_t = 32)]
        capacity: u32,
        /// Arguments of the CPU-bound workload (Mandelbrot)
        #[arg(long, default_value = "size=96 iterations=128")]
        args: String,
        /// Directory of the built guests
        #[arg(long, default_value = "target/guests")]
        guests: PathBuf,
        /// Where to write report.md and overload.svg
        #[arg(long, default_value = "bench-out/overload")]
        out: PathBuf,
    },
    /// Pre-initialization: cold start and first result of a function with a heavy
    /// initialization (map-index), as deployed and pre-initialized, and the no-op, same run.
    Preinit {
        /// Fresh instances per component
        #[arg(long, default_value_t = 200)]
        iterations: usize,
        /// The point each call looks up
        #[arg(long, default_value = "5000 5000")]
        point: String,
        /// Directory of the built guests
        #[arg(long, default_value = "target/guests")]
        guests: PathBuf,
        /// Where to write report.md
        #[arg(long, default_value = "bench-out/preinit")]
        out: PathBuf,
    },
    /// A node holding many functions: a random one among them against one called over and over
    /// (p50, p99), resident memory per function, and restarts until healthy.
    Functions {
        /// Copies of the no-op to deploy
        #[arg(long, default_value_t = 10_000)]
        functions: usize,
        /// Requests per row and round
        #[arg(long, default_value_t = 2_000)]
        requests: usize,
        /// Rounds, the rows in a new random order each
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Restarts to time
        #[arg(long, default_value_t = 3)]
        restarts: usize,
        /// The node binary [default: this one]; another build compares with the same client
        #[arg(long)]
        limes: Option<PathBuf>,
        /// Directory of the built guests
        #[arg(long, default_value = "target/guests")]
        guests: PathBuf,
        /// Where to write report.md
        #[arg(long, default_value = "bench-out/functions")]
        out: PathBuf,
    },
    /// Functions run by messages and workflows (core and durable triggers, a three-step
    /// workflow), each beside a plain invoke, and a durable trigger's throughput on 1 and 3 nodes.
    Events {
        /// Calls per row and round
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// Rounds, the rows in a new random order each
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Messages of each throughput run
        #[arg(long, default_value_t = 5_000)]
        messages: usize,
        /// Directory of the built guests
        #[arg(long, default_value = "target/guests")]
        guests: PathBuf,
        /// Where to write report.md
        #[arg(long, default_value = "bench-out/events")]
        out: PathBuf,
    },
    /// Key-value operations from a guest (get, set, increment) on redb and on NATS JetStream KV,
    /// each beside the no-op invoke, and a counter's throughput under 8 callers.
    Kv {
        /// Requests per row and round
        #[arg(long, default_value_t = 2_000)]
        requests: usize,
        /// Rounds, the rows in a new random order each
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Increments by the 8 concurrent callers (and no-op calls to compare)
        #[arg(long, default_value_t = 4_000)]
        increments: usize,
        /// Directory of the built guests
        #[arg(long, default_value = "target/guests")]
        guests: PathBuf,
        /// Where to write report.md
        #[arg(long, default_value = "bench-out/kv")]
        out: PathBuf,
    },
    /// Cold start of the same small function in Rust, C and Python (componentize-py), next to
    /// the no-op's, same run.
    Languages {
        /// Fresh instances per component
        #[arg(long, default_value_t = 1000)]
        iterations: usize,
        /// Directory of the built guests
        #[arg(long, default_value = "target/guests")]
        guests: PathBuf,
        /// Where to write report.md
        #[arg(long, default_value = "bench-out/languages")]
        out: PathBuf,
    },
    /// SPARE's experiment: N nodes on NATS under regular load, then emergencies with looser and
    /// looser latency bounds; nodes released against latency added (in-process latency model).
    Cluster {
        /// Edge nodes
        #[arg(long, default_value_t = 6)]
        nodes: usize,
        /// Instance slots per node
        #[arg(long, default_value_t = 8)]
        capacity: u32,
        /// Regular callers per node
        #[arg(long, default_value_t = 2)]
        callers: usize,
        /// Length of each phase
        #[arg(long, default_value = "5s", value_parser = limes_node::manifest::parse_duration)]
        phase: std::time::Duration,
        /// Latency bounds of the emergencies, ms
        #[arg(long, value_delimiter = ',', default_value = "2,4,6,10")]
        bounds: Vec<f64>,
        /// Directory of the built guests
        #[arg(long, default_value = "target/guests")]
        guests: PathBuf,
        /// Where to write report.md and the plot
        #[arg(long, default_value = "bench-out/cluster")]
        out: PathBuf,
    },
}

pub async fn bench(args: BenchArgs) -> Result<(), CliError> {
    let Some(mode) = args.mode else {
        return study(args.study).await;
    };
    match mode {
        BenchMode::Node {
            requests,
            concurrency,
            guests,
            wasmtime,
        } => {
            let limes = std::env::current_exe().map_err(|e| CliError::new("io", e.to_string()))?;
            let bench = NodeBench {
                limes,
                guests,
                wasmtime,
                requests,
                concurrency,
            };
            let report = bench.run().await.map_err(|e| CliError::new("bench", e))?;
            println!("{report}");
            Ok(())
        }
        BenchMode::Overload {
            quick,
            phase,
            factors,
            urgent_every,
            capacity,
            args,
            guests,
            out,
        } => {
            let bench = limes_bench::overload::OverloadBench {
                limes: std::env::current_exe().map_err(|e| CliError::new("io", e.to_string()))?,
                guests,
                args,
                baseline_calls: if quick { 100 } else { 1000 },
                phase: phase.unwrap_or(std::time::Duration::from_secs(if quick { 2 } else { 10 })),
                factors,
                urgent_every,
                capacity,
                out: out.clone(),
                command: command_line(),
            };
            written(bench.run().await, &out)
        }
        BenchMode::Preinit {
            iterations,
            point,
            guests,
            out,
        } => {
            let bench = limes_bench::preinit::PreinitBench {
                guests,
                iterations,
                point,
                out: out.clone(),
                command: command_line(),
            };
            written(bench.run().await, &out)
        }
        BenchMode::Functions {
            functions,
            requests,
            rounds,
            restarts,
            limes,
            guests,
            out,
        } => {
            let limes = match limes {
                Some(limes) => limes,
                None => std::env::current_exe().map_err(|e| CliError::new("io", e.to_string()))?,
            };
            let bench = limes_bench::functions::FunctionsBench {
                limes,
                guests,
                functions,
                requests,
                rounds,
                restarts,
            };
            let report = bench.run().await.map(|r| {
                format!(
                    "# Limes: many functions on one node\n\nCommand: `{}`\n\n{r}",
                    command_line()
                )
            });
            if let Ok(report) = &report {
                std::fs::create_dir_all(&out)
                    .and_then(|()| std::fs::write(out.join("report.md"), report))
                    .map_err(|e| CliError::new("io", format!("{}: {e}", out.display())))?;
            }
            written(report, &out)
        }
        BenchMode::Events {
            requests,
            rounds,
            messages,
            guests,
            out,
        } => {
            let bench = limes_bench::events::EventsBench {
                limes: std::env::current_exe().map_err(|e| CliError::new("io", e.to_string()))?,
                guests,
                requests,
                rounds,
                messages,
            };
            let report = bench.run().await.map(|r| {
                format!(
                    "# Limes: events and workflows\n\nCommand: `{}`\n\n{r}",
                    command_line()
                )
            });
            if let Ok(report) = &report {
                std::fs::create_dir_all(&out)
                    .and_then(|()| std::fs::write(out.join("report.md"), report))
                    .map_err(|e| CliError::new("io", format!("{}: {e}", out.display())))?;
            }
            written(report, &out)
        }
        BenchMode::Kv {
            requests,
            rounds,
            increments,
            guests,
            out,
        } => {
            let bench = limes_bench::kv::KvBench {
                limes: std::env::current_exe().map_err(|e| CliError::new("io", e.to_string()))?,
                guests,
                requests,
                rounds,
                increments,
            };
            let report = bench.run().await.map(|r| {
                format!(
                    "# Limes: key-value state\n\nCommand: `{}`\n\n{r}",
                    command_line()
                )
            });
            if let Ok(report) = &report {
                std::fs::create_dir_all(&out)
                    .and_then(|()| std::fs::write(out.join("report.md"), report))
                    .map_err(|e| CliError::new("io", format!("{}: {e}", out.display())))?;
            }
            written(report, &out)
        }
        BenchMode::Languages {
            iterations,
            guests,
            out,
        } => {
            let bench = limes_bench::languages::LanguagesBench {
                guests,
                iterations,
                out: out.clone(),
                command: command_line(),
            };
            written(bench.run().await, &out)
        }
        BenchMode::Cluster {
            nodes,
            capacity,
            callers,
            phase,
            bounds,
            guests,
            out,
        } => {
            let bench = limes_bench::cluster::ClusterBench {
                nodes,
                capacity,
                callers,
                phase,
                bounds,
                guests,
                out: out.clone(),
                command: command_line(),
            };
            written(bench.run().await, &out)
        }
    }
}

/// Prints a benchmark's report and where it was written.
fn written(report: Result<String, String>, out: &std::path::Path) -> Result<(), CliError> {
    let report = report.map_err(|e| CliError::new("bench", e))?;
    println!("{report}");
    println!("report: {}", out.join("report.md").display());
    Ok(())
}

async fn study(args: StudyArgs) -> Result<(), CliError> {
    use limes_bench::study::{ratios, report, run};
    let command = command_line();
    let limes = std::env::current_exe().map_err(|e| CliError::new("io", e.to_string()))?;
    let options = run::Options {
        guests: args.guests,
        limes,
        quick: args.quick,
        iterations: args.iterations,
        backends: args.backends,
        workloads: args.workloads,
        allow_emulated: args.allow_emulated,
    };
    let study = run::run(options)
        .await
        .map_err(|e| CliError::new("bench", e))?;
    report::write_all(&study, &args.out, &command)
        .map_err(|e| CliError::new("io", e.to_string()))?;
    for (backend, why) in &study.unavailable {
        eprintln!("{backend}: unavailable: {why}");
    }
    for failure in &study.failures {
        eprintln!("failed: {failure}");
    }
    let label = |b: &str| report::label(&study, b);
    for line in ratios::headline(&study, label)
        .into_iter()
        .chain(ratios::boots(&study, label))
    {
        println!("{line}");
    }
    println!("report: {}", args.out.join("report.md").display());
    if study.samples.is_empty() {
        return Err(CliError::new("bench", "no backend produced a measurement"));
    }
    Ok(())
}

/// The command as the user would type it: `limes` and its arguments, without the binary's path
/// (which would put a machine's paths into committed reports).
fn command_line() -> String {
    std::iter::once("limes".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}
