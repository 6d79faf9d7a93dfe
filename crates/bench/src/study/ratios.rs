//! The study's ratios. Each is a ratio of medians of two backends measured in the same run
//! (interleaved, see `run`), with a bootstrap 95 % confidence interval, so that a claim holds
//! only where the whole interval supports it: Limes against the baselines, the unikernel
//! against the Linux microVM, snapshot restore against boot, Limes against its targets, and
//! the image pipeline stage by stage.

use super::run::{STAGE_BACKENDS, Sample, Study};
use crate::stats::{Ratio, ratio_of_medians};

/// Reads one figure of a sample.
pub type Pick = fn(&Sample) -> Option<f64>;

/// The cold start of a sample.
pub const COLD: Pick = |s| s.m.cold_ms;
/// The execution of a sample, as the host saw it.
pub const EXEC: Pick = |s| s.m.exec_ms;
/// The work of a sample, as the workload timed it inside the guest.
pub const WORK: Pick = |s| s.m.work_ms;

/// The figures execution is compared by, and how the report names each.
pub const EXECUTION_FIGURES: [(Pick, &str); 2] =
    [(WORK, "in-guest clock"), (EXEC, "host-side execution")];

/// One figure of every sample of `backend` on `workload` in `mode`.
pub fn values(study: &Study, backend: &str, workload: &str, mode: &str, pick: Pick) -> Vec<f64> {
    study
        .samples
        .iter()
        .filter(|s| s.backend == backend && s.workload == workload && s.mode == mode)
        .filter_map(pick)
        .collect()
}

/// `a`'s figure over `b`'s, medians of the same run.
pub fn ratio(
    study: &Study,
    a: &str,
    b: &str,
    workload: &str,
    mode: &str,
    pick: Pick,
) -> Option<Ratio> {
    ratio_of_medians(
        &values(study, a, workload, mode, pick),
        &values(study, b, workload, mode, pick),
    )
}

fn median(v: &[f64]) -> Option<f64> {
    crate::stats::Summary::of(v).map(|s| s.p50)
}

/// `95% CI 1.19–1.21`, with whole numbers for large ratios.
fn interval(r: &Ratio) -> String {
    let digits = if r.high >= 100.0 { 0 } else { 2 };
    format!("95% CI {:.*}–{:.*}", digits, r.low, digits, r.high)
}

/// Baselines whose no-op cold start the headline sets against Limes's.
const COLD_BASELINES: &[&str] = &[
    "native-process",
    "container",
    "microvm-qemu",
    "microvm-qemu-snapshot",
    "microvm-firecracker",
    "microvm-firecracker-snapshot",
    "unikernel-qemu",
    "unikernel-qemu-snapshot",
    "unikernel-firecracker",
    "unikernel-firecracker-snapshot",
    "limes-first-cold",
];

/// Limes against the baselines: cold start of the no-op, and execution against native.
pub fn headline(study: &Study, label: impl Fn(&str) -> String) -> Vec<String> {
    let mut lines = Vec::new();
    let limes = median(&values(study, "limes-cold", "noop", "noio", COLD));
    for base in COLD_BASELINES {
        let (Some(limes), Some(b), Some(r)) = (
            limes,
            median(&values(study, base, "noop", "noio", COLD)),
            ratio(study, base, "limes-cold", "noop", "noio", COLD),
        ) else {
            continue;
        };
        lines.push(format!(
            "Cold start (no-op): {} p50 {b:.3} ms vs limes-cold {limes:.4} ms: Limes is {:.0}x faster ({})",
            label(base),
            r.value,
            interval(&r)
        ));
    }
    // Execution against native, and what Limes' own configuration costs: the same component
    // under Wasmtime's default `Config`.
    let against = [
        ("Execution", "native-process", "native", "x native"),
        (
            "Configuration",
            "wasmtime-defaults",
            "wasmtime-defaults",
            "x",
        ),
    ];
    for (what, base, shown, unit) in against {
        for (pick, figure) in EXECUTION_FIGURES {
            for w in study.workloads.iter().filter(|w| w.name != "noop") {
                let (Some(l), Some(b), Some(r)) = (
                    median(&values(study, "limes-cold", w.name, w.mode(), pick)),
                    median(&values(study, base, w.name, w.mode(), pick)),
                    ratio(study, "limes-cold", base, w.name, w.mode(), pick),
                ) else {
                    continue;
                };
                lines.push(format!(
                    "{what} {} ({figure}): limes-cold {l:.2} ms / {shown} {b:.2} ms = {:.2}{unit} ({})",
                    w.key(),
                    r.value,
                    interval(&r)
                ));
            }
        }
    }
    lines
}

/// One backend's work on one workload against native's, by the workload's own clock.
pub struct WorkRow {
    pub backend: String,
    pub workload: String,
    pub p50_ms: f64,
    pub ratio: Option<Ratio>,
}

/// Every backend's work by the workload's own clock, and its ratio to native's, so that
/// backends compare on the same timed section whatever each adds around it.
pub fn work(study: &Study) -> Vec<WorkRow> {
    let mut rows = Vec::new();
    for w in study.workloads.iter().filter(|w| w.name != "noop") {
        for b in &study.ran {
            let Some(p50) = median(&values(study, b, w.name, w.mode(), WORK)) else {
                continue;
            };
            rows.push(WorkRow {
                backend: b.clone(),
                workload: w.key(),
                p50_ms: p50,
                ratio: ratio(study, b, "native-process", w.name, w.mode(), WORK),
            });
        }
    }
    rows
}

/// The unikernel's boot against the Linux microVM's, and each snapshot restore against its boot,
/// on the no-op of the same run.
pub fn boots(study: &Study, label: impl Fn(&str) -> String) -> Vec<String> {
    let pairs = [
        ("unikernel-qemu", "microvm-qemu", "boots in"),
        ("unikernel-firecracker", "microvm-firecracker", "boots in"),
        ("microvm-qemu-snapshot", "microvm-qemu", "restores in"),
        ("unikernel-qemu-snapshot", "unikernel-qemu", "restores in"),
        (
            "microvm-firecracker-snapshot",
            "microvm-firecracker",
            "restores in",
        ),
        (
            "unikernel-firecracker-snapshot",
            "unikernel-firecracker",
            "restores in",
        ),
    ];
    pairs
        .into_iter()
        .filter_map(|(a, b, verb)| {
            let r = ratio(study, a, b, "noop", "noio", COLD)?;
            let (ma, mb) = (
                median(&values(study, a, "noop", "noio", COLD))?,
                median(&values(study, b, "noop", "noio", COLD))?,
            );
            Some(format!(
                "{} {verb} {ma:.1} ms, {} boots in {mb:.1} ms: {:.2}x ({})",
                label(a),
                label(b),
                r.value,
                interval(&r)
            ))
        })
        .collect()
}

/// Limes's execution targets (issue 18): against native, and against the same component under
/// Wasmtime's defaults. Judged by the workload's own clock where both sides report it, else by
/// the host-side execution; the line says which. MET only if the whole interval is within the
/// target, MISSED only if the whole interval is beyond it.
pub fn targets(study: &Study) -> Vec<String> {
    let mut lines = Vec::new();
    let goals = [
        ("mandelbrot", "native-process", 1.10),
        ("image-processing", "native-process", 1.25),
        ("mandelbrot", "wasmtime-defaults", 1.05),
        ("image-processing", "wasmtime-defaults", 1.05),
    ];
    for (w, base, target) in goals {
        for mode in ["noio", "io"] {
            let Some((r, figure)) = EXECUTION_FIGURES.into_iter().find_map(|(pick, figure)| {
                Some((ratio(study, "limes-cold", base, w, mode, pick)?, figure))
            }) else {
                continue;
            };
            let verdict = if r.surely_at_most(target) {
                "MET"
            } else if r.surely_above(target) {
                "MISSED"
            } else {
                "UNDECIDED (the interval straddles the target)"
            };
            lines.push(format!(
                "{w} {mode}: Limes {:.2}x {base} by the {figure} ({}), target ≤ {target}x: {verdict}",
                r.value,
                interval(&r)
            ));
        }
    }
    lines
}

/// Candidates whose figure cannot be told from `winner`'s: the interval of their ratio to the
/// winner reaches down to 1.
pub fn tied_with(
    study: &Study,
    winner: &str,
    candidates: &[String],
    workload: &str,
    mode: &str,
    pick: Pick,
) -> Vec<String> {
    candidates
        .iter()
        .filter(|c| c.as_str() != winner)
        .filter(|c| {
            ratio(study, c, winner, workload, mode, pick).is_some_and(|r| !r.surely_above(1.0))
        })
        .cloned()
        .collect()
}

/// One stage of the image pipeline: Limes's and native's medians and their ratio.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: &'static str,
    pub limes_ms: f64,
    pub native_ms: f64,
    pub ratio: Ratio,
}

/// The image pipeline (no I/O) stage by stage, from the study's stage runs.
pub fn stages(study: &Study) -> Vec<Stage> {
    let of = |backend: &str, stage: &str| -> Vec<f64> {
        study
            .stages
            .iter()
            .filter(|s| s.backend == backend && s.stage == stage)
            .map(|s| s.ms)
            .collect()
    };
    workloads::image_processing::STAGES
        .iter()
        .filter_map(|&name| {
            let (l, n) = (of(STAGE_BACKENDS[0], name), of(STAGE_BACKENDS[1], name));
            Some(Stage {
                name,
                limes_ms: median(&l)?,
                native_ms: median(&n)?,
                ratio: ratio_of_medians(&l, &n)?,
            })
        })
        .collect()
}

/// Which stage makes most of Limes's extra time over native, and how much of it.
pub fn worst_stage(stages: &[Stage]) -> Option<String> {
    let extra: f64 = stages
        .iter()
        .map(|s| (s.limes_ms - s.native_ms).max(0.0))
        .sum();
    let worst = stages
        .iter()
        .filter(|s| s.ratio.surely_above(1.0))
        .max_by(|a, b| (a.limes_ms - a.native_ms).total_cmp(&(b.limes_ms - b.native_ms)))?;
    Some(format!(
        "Limes loses most in {}: {:.2}x native ({}), {:.0} % of its {:.2} ms of extra time per run",
        worst.name,
        worst.ratio.value,
        interval(&worst.ratio),
        100.0 * (worst.limes_ms - worst.native_ms) / extra,
        extra
    ))
}
