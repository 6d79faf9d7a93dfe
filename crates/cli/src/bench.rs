//! `limes bench`: the benchmarks.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use limes_bench::node::NodeBench;

use crate::CliError;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    mode: BenchMode,
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
}

pub async fn bench(args: BenchArgs) -> Result<(), CliError> {
    match args.mode {
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
    }
}
