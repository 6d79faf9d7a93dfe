//! `limes bench preinit`: what pre-initialization buys a function with a heavy initialization.
//!
//! The map-index guest builds a grid index over 200 000 places before its first answer. Each
//! iteration starts a fresh instance of three components, in a new random order: the original
//! (the index is built in the call), its pre-initialized form (`Runtime::preinit`, as a node
//! does at deploy) and the no-op, and times cold start and first result. Ratios are of
//! medians from the same run, with bootstrap 95 % intervals.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use limes_runtime::{Policy, Runtime, RuntimeConfig};

use crate::stats::{Summary, ratio_of_medians};

/// What to run.
pub struct PreinitBench {
    /// Built guests (`map-index.wasm`, `noop.wasm`).
    pub guests: PathBuf,
    /// Fresh instances per component.
    pub iterations: usize,
    /// The point each call looks up.
    pub point: String,
    /// Where to write `report.md`.
    pub out: PathBuf,
    /// The command line, for the report.
    pub command: String,
}

const ROWS: [&str; 3] = ["map-index", "map-index (pre-initialized)", "noop"];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl PreinitBench {
    /// Runs the benchmark, writes `report.md` and returns its text.
    pub async fn run(&self) -> Result<String, String> {
        let read = |name: &str| {
            let path = self.guests.join(format!("{name}.wasm"));
            std::fs::read(&path)
                .map_err(|e| format!("{}: {e} (run `cargo xtask guests`)", path.display()))
        };
        let (original, noop) = (read("map-index")?, read("noop")?);
        let runtime = Runtime::new(RuntimeConfig::default()).map_err(|e| e.to_string())?;
        let policy = Policy::default();
        let started = Instant::now();
        let initialized = runtime
            .preinit(&original, &policy)
            .await
            .map_err(|e| e.to_string())?;
        let preinit_time = started.elapsed();
        let load = |wasm: &[u8]| {
            runtime
                .load(wasm, policy.clone())
                .map_err(|e| e.to_string())
        };
        let functions = [load(&original)?, load(&initialized)?, load(&noop)?];
        let expected = functions[0]
            .invoke(&self.point)
            .await
            .map_err(|e| e.to_string())?
            .result;

        // Per row: cold start, first result (cold start + execution), both in ms.
        let mut cold: [Vec<f64>; 3] = Default::default();
        let mut first: [Vec<f64>; 3] = Default::default();
        let mut rng = fastrand::Rng::new();
        let mut order = [0, 1, 2];
        for _ in 0..self.iterations {
            rng.shuffle(&mut order);
            for &row in &order {
                let args = if row == 2 { "" } else { self.point.as_str() };
                let i = functions[row]
                    .invoke(args)
                    .await
                    .map_err(|e| e.to_string())?;
                if row != 2 && i.result != expected {
                    return Err(format!(
                        "{}: {:?}, expected {expected:?}",
                        ROWS[row], i.result
                    ));
                }
                cold[row].push(ms(i.cold_start));
                first[row].push(ms(i.cold_start + i.execution));
            }
        }

        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Pre-initialization: a function with a heavy initialization\n"
        );
        let _ = writeln!(out, "Command: `{}`\n", self.command);
        let _ = writeln!(
            out,
            "map-index builds a grid index over 200 000 places (from about 4 MB of data embedded in the component) before its first answer. {} fresh instances of each component, interleaved in random order; every answer checked against the original's. Pre-initializing took {:.0} ms once (what a deploy adds); the component grew from {:.1} MB to {:.1} MB.\n",
            self.iterations,
            ms(preinit_time),
            original.len() as f64 / 1e6,
            initialized.len() as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "| component | cold start p50 ms | p99 ms | first result p50 ms | p99 ms |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
        for row in 0..3 {
            let (c, f) = (
                Summary::of(&cold[row]).ok_or("no samples")?,
                Summary::of(&first[row]).ok_or("no samples")?,
            );
            let _ = writeln!(
                out,
                "| {} | {:.3} | {:.3} | {:.3} | {:.3} |",
                ROWS[row], c.p50, c.p99, f.p50, f.p99
            );
        }
        let speedup = ratio_of_medians(&first[0], &first[1]).ok_or("no ratio")?;
        let over_noop = ratio_of_medians(&cold[1], &cold[2]).ok_or("no ratio")?;
        let _ = writeln!(
            out,
            "\nFirst result, original over pre-initialized: {:.0}x (95% CI {:.0}–{:.0}). Cold start of the pre-initialized component over the no-op's: {:.2}x (95% CI {:.2}–{:.2}); its initialized memory is mapped copy-on-write from the compiled image, not copied.",
            speedup.value,
            speedup.low,
            speedup.high,
            over_noop.value,
            over_noop.low,
            over_noop.high
        );
        std::fs::create_dir_all(&self.out).map_err(|e| e.to_string())?;
        std::fs::write(self.out.join("report.md"), &out).map_err(|e| e.to_string())?;
        Ok(out)
    }
}
