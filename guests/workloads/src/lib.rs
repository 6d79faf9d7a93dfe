//! The study's workloads (no-op, Mandelbrot, image processing) as plain Rust.
//!
//! The same source is compiled twice: into Wasm components (`guests/noop`, `guests/mandelbrot`,
//! `guests/image-processing`) and into a static native binary for the benchmark's native,
//! container and microVM baselines. Inputs are generated from fixed seeds and every result
//! carries a checksum, so every backend can be shown to have done the same work.
//!
//! Arguments are `key=value` pairs separated by spaces, for example
//! `mode=io size=512 iterations=2 dir=/data`. With `timed=1` the result ends with
//! ` work_ns=N`: the nanoseconds the workload measured around its own work by the monotonic
//! clock of wherever it runs, so that backends can be compared on the work alone, without what
//! each adds around it (process spawn, instantiation, argument passing).

pub mod args;
pub mod image_processing;
pub mod mandelbrot;

pub use args::{Args, Mode};

/// Runs the workload called `name` with `args`, as a guest or the native binary would.
pub fn run(name: &str, args: &str) -> Result<String, String> {
    let args = Args::parse(args)?;
    let timed = args.number("timed", 0)? == 1;
    let started = std::time::Instant::now();
    let mut result = match name {
        "noop" => Ok(String::new()),
        "mandelbrot" => mandelbrot::run(&args),
        "image-processing" => image_processing::run(&args),
        other => Err(format!(
            "unknown workload {other:?}; expected noop, mandelbrot or image-processing"
        )),
    }?;
    if timed {
        let ns = started.elapsed().as_nanos();
        result = format!("{result} work_ns={ns}").trim_start().to_owned();
    }
    Ok(result)
}

/// Splits what [`run`] returned with `timed=1` into the result proper and the nanoseconds of
/// work it reported; a result without the field comes back whole, with `None`.
pub fn split_timing(result: &str) -> (&str, Option<u64>) {
    match result.rsplit_once("work_ns=") {
        Some((rest, ns)) if !rest.contains("work_ns=") => match ns.parse() {
            Ok(ns) => (rest.trim_end(), Some(ns)),
            Err(_) => (result, None),
        },
        _ => (result, None),
    }
}

/// FNV-1a, 64 bit: a checksum that is the same on every target, to compare backends' outputs.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_timed_run_reports_its_work_and_splits_back_to_the_plain_result() {
        let plain = super::run("mandelbrot", "size=16 iterations=8").unwrap();
        let timed = super::run("mandelbrot", "size=16 iterations=8 timed=1").unwrap();
        let (result, ns) = super::split_timing(&timed);
        assert_eq!(result, plain);
        assert!(ns.is_some_and(|ns| ns > 0), "{timed}");
        assert_eq!(super::split_timing(&plain), (plain.as_str(), None));

        let noop = super::run("noop", "timed=1").unwrap();
        assert!(noop.starts_with("work_ns="), "{noop}");
        assert_eq!(super::split_timing(&noop).0, "");
    }
}
