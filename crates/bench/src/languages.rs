//! `limes bench languages`: the cold start of the same small function written in Rust, C and
//! Python, next to the no-op's.
//!
//! Each iteration starts a fresh instance of every component, in a new random order, in one
//! runtime (as on a node), and times cold start (instantiation, until the guest's `run` is
//! entered) and execution. Ratios are of medians from the same run, with bootstrap 95 %
//! intervals. A component that is not built (the Python and C guests are skipped where their
//! toolchain cannot be installed) is reported as missing rather than failing the run.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use limes_runtime::{Policy, Runtime, RuntimeConfig};

use crate::stats::{Summary, ratio_of_medians};

/// What to run.
pub struct LanguagesBench {
    /// Built guests (`noop.wasm`, `c-hello.wasm`, `python-hello.wasm`).
    pub guests: PathBuf,
    /// Fresh instances per component.
    pub iterations: usize,
    /// Where to write `report.md`.
    pub out: PathBuf,
    /// The command line, for the report.
    pub command: String,
}

/// The components compared, the no-op (the baseline) first.
const ROWS: [(&str, &str); 3] = [
    ("noop", "Rust, no-op (baseline)"),
    ("c-hello", "C (wasi-libc)"),
    ("python-hello", "Python (componentize-py)"),
];
/// The arguments every row but the no-op is called with; each answers with the name in it.
const ARGS: &str = "name=edge";

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

impl LanguagesBench {
    /// Runs the benchmark, writes `report.md` and returns its text.
    pub async fn run(&self) -> Result<String, String> {
        let runtime = Runtime::new(RuntimeConfig::default()).map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        let mut missing = Vec::new();
        for (name, label) in ROWS {
            let path = self.guests.join(format!("{name}.wasm"));
            match std::fs::read(&path) {
                Ok(wasm) => {
                    let function = runtime
                        .load(&wasm, Policy::default())
                        .map_err(|e| format!("{name}: {e}"))?;
                    rows.push((name, label, wasm.len(), function));
                }
                Err(e) => missing.push(format!("{label}: {}: {e}", path.display())),
            }
        }
        if rows.first().is_none_or(|r| r.0 != "noop") {
            return Err(format!(
                "the no-op baseline is missing (run `cargo xtask guests`): {missing:?}"
            ));
        }

        let mut cold = vec![Vec::new(); rows.len()];
        let mut exec = vec![Vec::new(); rows.len()];
        let mut order: Vec<usize> = (0..rows.len()).collect();
        let mut rng = fastrand::Rng::new();
        for _ in 0..self.iterations {
            rng.shuffle(&mut order);
            for &row in &order {
                let (name, _, _, function) = &rows[row];
                let args = if row == 0 { "" } else { ARGS };
                let i = function
                    .invoke(args)
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
                if row != 0 && !i.result.contains("edge") {
                    return Err(format!("{name} answered {:?}", i.result));
                }
                cold[row].push(us(i.cold_start));
                exec[row].push(us(i.execution));
            }
        }

        let mut out = String::new();
        let _ = writeln!(out, "# Cold start by language\n");
        let _ = writeln!(out, "Command: `{}`\n", self.command);
        let _ = writeln!(
            out,
            "{} fresh instances of each component, interleaved in random order in one runtime. Cold start: from the call to entering the guest's `run` (instantiation); execution: the call itself. Ratios: cold start over the no-op's, medians of the same run, bootstrap 95 % CI.\n",
            self.iterations
        );
        let _ = writeln!(
            out,
            "| component | size | cold start p50 µs | p99 µs | × no-op (95% CI) | execution p50 µs | p99 µs |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |");
        for (row, (_, label, size, _)) in rows.iter().enumerate() {
            let (c, e) = (
                Summary::of(&cold[row]).ok_or("no samples")?,
                Summary::of(&exec[row]).ok_or("no samples")?,
            );
            let ratio = ratio_of_medians(&cold[row], &cold[0]).ok_or("no ratio")?;
            let _ = writeln!(
                out,
                "| {label} | {} | {:.1} | {:.1} | {:.1} ({:.1}–{:.1}) | {:.1} | {:.1} |",
                bytesize::ByteSize::b(*size as u64).display().si(),
                c.p50,
                c.p99,
                ratio.value,
                ratio.low,
                ratio.high,
                e.p50,
                e.p99
            );
        }
        for m in &missing {
            let _ = writeln!(out, "\nNot measured: {m}");
        }
        std::fs::create_dir_all(&self.out).map_err(|e| e.to_string())?;
        std::fs::write(self.out.join("report.md"), &out).map_err(|e| e.to_string())?;
        Ok(out)
    }
}
