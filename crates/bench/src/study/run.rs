//! Running the study: detect backends, measure every workload on each, sweep concurrency.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::backends::{self, Backend, Context, Measurement};

use super::kvm::{self, Acceleration};
use super::workload::Workload;
use crate::stats::Summary;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Built guests and `workload-native`.
    pub guests: PathBuf,
    /// The `limes` binary (for `limes-http`).
    pub limes: PathBuf,
    /// Few iterations and small inputs, for CI.
    pub quick: bool,
    /// Measured iterations per backend and workload (after a warm-up).
    pub iterations: Option<usize>,
    /// Backends to try; all of [`backends::ALL`] by default.
    pub backends: Option<Vec<String>>,
    /// Workloads to run (`noop`, `mandelbrot`, `image-processing`); all by default.
    pub workloads: Option<Vec<String>>,
    /// Run emulated microVMs (labelled as such).
    pub allow_emulated: bool,
}

/// One measured invocation.
#[derive(Debug, Clone)]
pub struct Sample {
    pub backend: String,
    pub workload: &'static str,
    pub mode: &'static str,
    pub iteration: usize,
    pub emulated: bool,
    pub m: Measurement,
}

/// One point of the concurrency sweep.
#[derive(Debug, Clone)]
pub struct SweepPoint {
    pub backend: String,
    pub in_flight: usize,
    pub throughput: f64,
    pub latency_ms: Summary,
}

/// Facts about the host, written beside every figure.
#[derive(Debug, Clone)]
pub struct Host {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub memory_gib: f64,
}

impl Host {
    fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel,
            memory_gib: kib / 1048576.0,
        }
    }
}

/// Everything the study measured.
pub struct Study {
    pub host: Host,
    pub accel: Acceleration,
    pub options: Options,
    pub workloads: Vec<Workload>,
    /// Backends that ran, in order.
    pub ran: Vec<String>,
    /// Backends that did not, with why.
    pub unavailable: Vec<(String, String)>,
    /// Runs that failed or returned a wrong result, with why.
    pub failures: Vec<String>,
    pub samples: Vec<Sample>,
    pub sweep: Vec<SweepPoint>,
    /// Backends whose figures are emulated.
    pub emulated: Vec<String>,
    /// The image pipeline's stages on Limes and native.
    pub stages: Vec<StageSample>,
}

/// Runs the study.
pub async fn run(options: Options) -> Result<Study, String> {
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data = scratch.path().join("data");
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    let mut workloads: Vec<Workload> = Workload::all(options.quick);
    if let Some(keep) = &options.workloads {
        workloads.retain(|w| keep.iter().any(|k| k == w.name));
    }
    // The image workload's input, written once by the native build of the same source.
    if let Some(w) = workloads.iter().find(|w| w.name == "image-processing") {
        workloads::run(
            w.name,
            &format!("mode=prepare {} dir={}", w.params, data.display()),
        )?;
    }
    let accel = tokio::task::spawn_blocking(kvm::detect)
        .await
        .map_err(|e| e.to_string())?;
    let ctx = Arc::new(Context {
        guests: options.guests.clone(),
        data,
        limes: options.limes.clone(),
        scratch: scratch.path().into(),
        accel: accel.clone(),
    });

    let names: Vec<String> = options
        .backends
        .clone()
        .unwrap_or_else(|| backends::ALL.iter().map(|s| s.to_string()).collect());
    let mut ready = Vec::new();
    let mut unavailable = Vec::new();
    for name in &names {
        match backends::detect(name, &ctx, options.allow_emulated).await {
            Ok(b) => ready.push((name.clone(), Arc::new(b))),
            Err(reason) => unavailable.push((name.clone(), reason)),
        }
    }
    let iterations = options
        .iterations
        .unwrap_or(if options.quick { 5 } else { 30 });
    let warmup = if options.quick { 1 } else { 3 };
    let emulated: Vec<String> = ready
        .iter()
        .filter(|(_, b)| b.emulated(&accel))
        .map(|(n, _)| n.clone())
        .collect();
    // Emulated boots take seconds each: a few iterations are enough to show the shape.
    let runs_of = |name: &String| {
        if emulated.contains(name) {
            warmup.min(1) + iterations.min(3)
        } else {
            warmup + iterations
        }
    };
    let total: usize = ready
        .iter()
        .map(|(n, _)| runs_of(n) * workloads.len())
        .sum();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    // Backends take turns within each iteration, in a new random order each time, so that a
    // machine that drifts (another job, frequency scaling) moves every backend alike instead of
    // whichever ran last.
    let mut rng = fastrand::Rng::new();
    let mut order: Vec<usize> = (0..ready.len()).collect();
    let rounds = ready.iter().map(|(n, _)| runs_of(n)).max().unwrap_or(0);
    let (mut samples, mut failures) = (Vec::new(), Vec::new());
    for w in &workloads {
        let expected = w.expected()?;
        let mut broken = vec![false; ready.len()];
        for i in 0..rounds {
            rng.shuffle(&mut order);
            for &b in &order {
                let (name, backend) = &ready[b];
                if i >= runs_of(name) || broken[b] {
                    continue;
                }
                bar.set_message(format!("{name} {}", w.key()));
                bar.inc(1);
                let is_emulated = emulated.contains(name);
                let skip = if is_emulated { warmup.min(1) } else { warmup };
                match backend.invoke(w, &ctx).await {
                    Ok(m) if m.result == expected => {
                        if i >= skip {
                            samples.push(Sample {
                                backend: name.clone(),
                                workload: w.name,
                                mode: w.mode(),
                                iteration: i - skip,
                                emulated: is_emulated,
                                m,
                            });
                        }
                    }
                    Ok(m) => {
                        failures.push(format!(
                            "{name} {}: wrong result {:?}, expected {expected:?}",
                            w.key(),
                            m.result
                        ));
                        broken[b] = true;
                    }
                    Err(e) => {
                        failures.push(format!("{name} {}: {e}", w.key()));
                        broken[b] = true;
                    }
                }
            }
        }
    }
    bar.finish_and_clear();

    let stages = stages(
        &ready,
        &workloads,
        &ctx,
        iterations,
        &mut rng,
        &mut failures,
    )
    .await;
    let sweep = sweep(&ready, &emulated, &ctx, options.quick).await;
    Ok(Study {
        host: Host::read(),
        accel,
        ran: ready.iter().map(|(n, _)| n.clone()).collect(),
        options,
        workloads,
        unavailable,
        failures,
        samples,
        sweep,
        emulated,
        stages,
    })
}

/// One stage of the image pipeline in one run.
#[derive(Debug, Clone)]
pub struct StageSample {
    pub backend: String,
    pub stage: &'static str,
    pub ms: f64,
}

/// The backends whose image pipelines are compared stage by stage: Limes and native.
pub const STAGE_BACKENDS: [&str; 2] = ["limes-cold", "native-process"];

/// Times each stage of the image pipeline (no I/O) on [`STAGE_BACKENDS`], interleaved, to say
/// where Wasm loses on it. Empty unless both ran and the image workload is in the study.
async fn stages(
    ready: &[(String, Arc<Backend>)],
    workloads: &[Workload],
    ctx: &Context,
    iterations: usize,
    rng: &mut fastrand::Rng,
    failures: &mut Vec<String>,
) -> Vec<StageSample> {
    let Some(w) = workloads
        .iter()
        .find(|w| w.name == "image-processing" && !w.io)
    else {
        return Vec::new();
    };
    let mut pair: Vec<&(String, Arc<Backend>)> = ready
        .iter()
        .filter(|(n, _)| STAGE_BACKENDS.contains(&n.as_str()))
        .collect();
    if pair.len() != STAGE_BACKENDS.len() {
        return Vec::new();
    }
    let staged = Workload {
        params: format!("{} stages=1", w.params),
        ..w.clone()
    };
    let Ok(expected) = w.expected() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for _ in 0..iterations {
        rng.shuffle(&mut pair);
        for (name, backend) in &pair {
            match backend.invoke(&staged, ctx).await {
                Ok(m) if m.result.starts_with(&expected) => {
                    let before = out.len();
                    for field in m.result.split_whitespace() {
                        let Some((key, ns)) = field.split_once("_ns=") else {
                            continue;
                        };
                        let (Some(stage), Ok(ns)) = (
                            workloads::image_processing::STAGES
                                .iter()
                                .find(|s| **s == key),
                            ns.parse::<f64>(),
                        ) else {
                            continue;
                        };
                        out.push(StageSample {
                            backend: name.clone(),
                            stage,
                            ms: ns / 1e6,
                        });
                    }
                    if out.len() == before {
                        failures.push(format!(
                            "{name} image stages: no stage timings in {:?} (a stale build?)",
                            m.result
                        ));
                        return out;
                    }
                }
                Ok(m) => {
                    failures.push(format!("{name} image stages: wrong result {:?}", m.result));
                    return out;
                }
                Err(e) => {
                    failures.push(format!("{name} image stages: {e}"));
                    return out;
                }
            }
        }
    }
    out
}

/// Throughput and tail latency with 1, 2, 4 and 8 invocations in flight, on Mandelbrot without
/// I/O, for the backends that isolate each invocation and are not emulated.
async fn sweep(
    ready: &[(String, Arc<Backend>)],
    emulated: &[String],
    ctx: &Arc<Context>,
    quick: bool,
) -> Vec<SweepPoint> {
    let w = Workload::all(true)
        .into_iter()
        .find(|w| w.name == "mandelbrot" && !w.io)
        .expect("mandelbrot is a workload");
    let mut points = Vec::new();
    for (name, backend) in ready
        .iter()
        .filter(|(n, b)| b.concurrent() && !emulated.contains(n))
    {
        for in_flight in [1, 2, 4, 8] {
            let per_worker = if quick { 3 } else { 12 };
            let started = Instant::now();
            let workers: Vec<_> = (0..in_flight)
                .map(|_| {
                    let (backend, ctx, w) = (backend.clone(), ctx.clone(), w.clone());
                    tokio::spawn(async move {
                        let mut latencies = Vec::new();
                        for _ in 0..per_worker {
                            if let Ok(m) = backend.invoke(&w, &ctx).await {
                                latencies.push(m.e2e_ms);
                            }
                        }
                        latencies
                    })
                })
                .collect();
            let mut latencies = Vec::new();
            for worker in workers {
                latencies.extend(worker.await.unwrap_or_default());
            }
            let elapsed = started.elapsed().as_secs_f64();
            if let Some(latency_ms) = Summary::of(&latencies) {
                points.push(SweepPoint {
                    backend: name.clone(),
                    in_flight,
                    throughput: latencies.len() as f64 / elapsed,
                    latency_ms,
                });
            }
        }
    }
    points
}
