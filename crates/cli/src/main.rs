//! `limes`: the command line of the Limes serverless platform.

mod admin;
#[cfg(feature = "bench")]
mod bench;
mod client;
mod cluster;
mod kv;
mod logs;
mod policy_args;
mod push;
mod run;
mod serve;
mod tls;
mod workflow;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use client::Api;

/// `limes --version`: the crate's version, the git revision built and the Wasmtime linked.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("LIMES_GIT_REV"),
    ", wasmtime ",
    env!("LIMES_WASMTIME_VERSION"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "limes",
    version = VERSION,
    about = "Serverless WebAssembly functions for edge nodes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of its largest variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a function (a component exporting component:run/run) once or --repeat times.
    Run(run::RunArgs),
    /// Run a node: the REST API, wasi:http functions, registry and metrics.
    Serve(serve::ServeArgs),
    /// Benchmarks; see `limes bench --help`.
    #[cfg(feature = "bench")]
    Bench(bench::BenchArgs),
    /// Deploy a component to a node as a new version of NAME.
    Deploy {
        #[command(flatten)]
        node: client::NodeArg,
        #[command(flatten)]
        args: client::DeployArgs,
    },
    /// List the functions of a node.
    Ls {
        #[command(flatten)]
        node: client::NodeArg,
        /// Print the node's JSON as it is
        #[arg(long)]
        json: bool,
    },
    /// Invoke a function on a node.
    Invoke {
        #[command(flatten)]
        node: client::NodeArg,
        #[command(flatten)]
        args: client::InvokeArgs,
    },
    /// Remove a function and all its versions from a node.
    Rm {
        #[command(flatten)]
        node: client::NodeArg,
        /// The function's name
        name: String,
        /// Keep its key-value stores (a function deployed again under the name finds them)
        #[arg(long)]
        keep_state: bool,
    },
    /// Read and write a function's key-value stores.
    Kv {
        #[command(flatten)]
        node: client::NodeArg,
        #[command(subcommand)]
        command: kv::KvCommand,
    },
    /// Workflows: functions chained into a graph of steps.
    Workflow {
        #[command(flatten)]
        node: client::NodeArg,
        #[command(subcommand)]
        command: workflow::WorkflowCommand,
    },
    /// Make another version of a function active.
    Rollback {
        #[command(flatten)]
        node: client::NodeArg,
        #[command(flatten)]
        args: client::RollbackArgs,
    },
    /// The edge cluster a node belongs to.
    Cluster {
        #[command(flatten)]
        node: client::NodeArg,
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Emergency mode: urgent functions first, nodes released for them.
    Emergency {
        #[command(flatten)]
        node: client::NodeArg,
        #[command(subcommand)]
        command: cluster::EmergencyCommand,
    },
    /// API tokens of a node (admin role).
    Token {
        #[command(flatten)]
        node: client::NodeArg,
        #[command(subcommand)]
        command: admin::TokenCommand,
    },
    /// The audit log of a node: who deployed, removed, rolled back, declared (admin role).
    Audit {
        #[command(flatten)]
        node: client::NodeArg,
        #[command(flatten)]
        args: admin::AuditArgs,
    },
    /// Make an Ed25519 key pair for signing components.
    Keygen(admin::KeygenArgs),
    /// Sign a component: writes a detached signature that `limes deploy` sends along.
    Sign(admin::SignArgs),
    /// Publish a component to an OCI registry, for `limes deploy NAME oci://…`.
    Push(push::PushArgs),
}

/// A failure, printed as `error: <kind>: <message>`.
#[derive(Debug)]
pub struct CliError {
    kind: String,
    message: String,
}

impl CliError {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

impl From<limes_runtime::Error> for CliError {
    fn from(e: limes_runtime::Error) -> Self {
        Self::new(e.kind(), e.to_string())
    }
}

impl From<limes_node::NodeError> for CliError {
    fn from(e: limes_node::NodeError) -> Self {
        Self::new(e.kind(), e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `limes serve` starts its logs once its config file says in which format.
    if !matches!(cli.command, Command::Serve(_)) {
        logs::init(false);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: io: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            // Parsed again with the config file's settings before the command line's.
            Command::Serve(_) => serve::serve(std::env::args_os().skip(2).collect()).await,
            #[cfg(feature = "bench")]
            Command::Bench(args) => bench::bench(args).await,
            Command::Deploy { node, args } => client::deploy(&Api::new(&node)?, args).await,
            Command::Ls { node, json } => client::list(&Api::new(&node)?, json).await,
            Command::Invoke { node, args } => client::invoke(&Api::new(&node)?, args).await,
            Command::Rm {
                node,
                name,
                keep_state,
            } => client::remove(&Api::new(&node)?, &name, keep_state).await,
            Command::Kv { node, command } => kv::kv(&Api::new(&node)?, command).await,
            Command::Workflow { node, command } => {
                workflow::workflow(&Api::new(&node)?, command).await
            }
            Command::Rollback { node, args } => client::rollback(&Api::new(&node)?, args).await,
            Command::Cluster { node, command } => {
                cluster::cluster(&Api::new(&node)?, command).await
            }
            Command::Emergency { node, command } => {
                cluster::emergency(&Api::new(&node)?, command).await
            }
            Command::Token { node, command } => admin::token(&Api::new(&node)?, command).await,
            Command::Audit { node, args } => admin::audit(&Api::new(&node)?, args).await,
            Command::Keygen(args) => admin::keygen(args),
            Command::Sign(args) => admin::sign(args),
            Command::Push(args) => push::push(args).await,
        }
    });
    // Blocking work still running (a compile, a sync) must not hold the exit up for long.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}: {}", e.kind, e.message);
            ExitCode::FAILURE
        }
    }
}

/// A node's data directory when none is given: `$XDG_DATA_HOME/limes`, else
/// `~/.local/share/limes`, else a directory under the system's temporary directory.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir)
        .join("limes")
}

/// The AOT cache directory when none is given: `$LIMES_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/limes/aot`, else `~/.cache/limes/aot`, else a directory under the system's
/// temporary directory.
fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LIMES_CACHE_DIR") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("limes").join("aot")
}
