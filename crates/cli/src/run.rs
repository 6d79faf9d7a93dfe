//! `limes run`: load a component and invoke it, once or repeatedly with timings.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use hdrhistogram::Histogram;
use limes_runtime::{Invocation, Runtime, RuntimeConfig};

use crate::CliError;
use crate::policy_args::PolicyArgs;

#[derive(Args)]
pub struct RunArgs {
    /// The component (.wasm) to run
    file: PathBuf,
    /// The string passed to run(args)
    #[arg(long, default_value = "")]
    args: String,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Invoke N times, each in a fresh instance, and print the p50/p99/min of cold start and
    /// execution
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// With --repeat, also print the timings of every run
    #[arg(long, short)]
    verbose: bool,
    /// Run the function's initialization step (`limes_guest::init!`) once first and invoke the
    /// initialized component, as a node does at deploy
    #[arg(long)]
    preinit: bool,
    /// AOT cache directory [default: $LIMES_CACHE_DIR, else ~/.cache/limes/aot]
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

pub async fn run(cli: RunArgs) -> Result<(), CliError> {
    let config = RuntimeConfig {
        cache_dir: Some(cli.cache_dir.unwrap_or_else(crate::default_cache_dir)),
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(config)?;
    let (file, policy) = (cli.file.clone(), cli.policy.to_policy());
    let function = if cli.preinit {
        let wasm = std::fs::read(&file)
            .map_err(|e| CliError::new("io", format!("{}: {e}", file.display())))?;
        let started = std::time::Instant::now();
        let initialized = runtime.preinit(&wasm, &policy).await?;
        tracing::info!(
            preinit_ms = started.elapsed().as_secs_f64() * 1e3,
            bytes = initialized.len(),
            "pre-initialized"
        );
        let runtime = runtime.clone();
        tokio::task::spawn_blocking(move || runtime.load(&initialized, policy))
            .await
            .map_err(|e| CliError::new("io", format!("the loader stopped: {e}")))??
    } else {
        let runtime = runtime.clone();
        tokio::task::spawn_blocking(move || runtime.load_file(file, policy))
            .await
            .map_err(|e| CliError::new("io", format!("the loader stopped: {e}")))??
    };
    let stats = runtime.cache_stats();
    if stats.compiles > 0 {
        tracing::info!(
            compile_ms = stats.compile_time.as_secs_f64() * 1e3,
            "compiled"
        );
    }

    // Nanoseconds from 1 ns to 1 hour, at 3 significant figures.
    let mut cold = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)
        .expect("these bounds and precision are valid");
    let mut exec = cold.clone();
    let mut last = None;
    for i in 1..=cli.repeat {
        let invocation = function.invoke(&cli.args).await?;
        if cli.repeat > 1 && cli.verbose {
            eprintln!(
                "run {i}: cold start {} execution {}",
                micros(invocation.cold_start),
                micros(invocation.execution)
            );
        }
        record(&mut cold, invocation.cold_start);
        record(&mut exec, invocation.execution);
        last = Some(invocation);
    }
    if let Some(invocation) = last {
        print_guest_output(&invocation);
        println!("{}", invocation.result);
    }
    if cli.repeat > 1 {
        eprintln!("{} runs", cli.repeat);
        eprintln!("cold start: {}", summary(&cold));
        eprintln!("execution:  {}", summary(&exec));
    }
    Ok(())
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    // Saturates at the histogram's bound rather than failing on an absurd sample.
    h.saturating_record(d.as_nanos() as u64);
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn summary(h: &Histogram<u64>) -> String {
    let at = |q: f64| micros(Duration::from_nanos(h.value_at_quantile(q)));
    format!(
        "p50 {} p99 {} min {} (n={})",
        at(0.5),
        at(0.99),
        micros(Duration::from_nanos(h.min())),
        h.len()
    )
}

/// The guest's own stdout and stderr go to our stderr, keeping our stdout for the result.
fn print_guest_output(invocation: &Invocation) {
    let mut err = std::io::stderr().lock();
    for (name, out) in [
        ("stdout", &invocation.stdout),
        ("stderr", &invocation.stderr),
    ] {
        let _ = err.write_all(&out.bytes);
        if out.truncated {
            let _ = writeln!(
                err,
                "[limes: guest {name} truncated at the policy's output limit]"
            );
        }
    }
}
