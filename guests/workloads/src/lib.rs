//! The study's workloads (no-op, Mandelbrot, image processing) as plain Rust.
//!
//! The same source is compiled twice: into Wasm components (`guests/noop`, `guests/mandelbrot`,
//! `guests/image-processing`) and into a static native binary for the benchmark's native,
//! container and microVM baselines. Inputs are generated from fixed seeds and every result
//! carries a checksum, so every backend can be shown to have done the same work.
//!
//! Arguments are `key=value` pairs separated by spaces, for example
//! `mode=io size=512 iterations=2 dir=/data`.

pub mod args;
pub mod image_processing;
pub mod mandelbrot;

pub use args::{Args, Mode};

/// Runs the workload called `name` with `args`, as a guest or the native binary would.
pub fn run(name: &str, args: &str) -> Result<String, String> {
    let args = Args::parse(args)?;
    match name {
        "noop" => Ok(String::new()),
        "mandelbrot" => mandelbrot::run(&args),
        "image-processing" => image_processing::run(&args),
        other => Err(format!(
            "unknown workload {other:?}; expected noop, mandelbrot or image-processing"
        )),
    }
}

/// FNV-1a, 64 bit: a checksum that is the same on every target, to compare backends' outputs.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
