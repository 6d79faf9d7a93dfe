//! `limes serve`: run a node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use limes_node::{Node, NodeConfig};

use crate::CliError;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// Directory of the registry, artifacts and AOT cache [default: ~/.local/share/limes]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Instances running at once over all functions; more get 429 [default: 64]
    #[arg(long, value_name = "N")]
    capacity: Option<u32>,
    /// Largest request body, such as 32MiB; more gets 413 [default: 32MiB]
    #[arg(long, value_name = "SIZE", value_parser = limes_node::manifest::parse_size)]
    max_body: Option<u64>,
    /// How long in-flight requests may run on after SIGTERM or ctrl-c
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = limes_node::manifest::parse_duration)]
    shutdown_grace: Duration,
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir)
        .join("limes")
}

pub async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let mut config = NodeConfig::new(args.data_dir.unwrap_or_else(default_data_dir));
    if let Some(c) = args.capacity {
        config.capacity = c;
    }
    if let Some(b) = args.max_body {
        config.body_limit = b as usize;
    }
    let data_dir = config.data_dir.clone();
    let node = tokio::task::spawn_blocking(move || Node::open(config))
        .await
        .map_err(|e| CliError::new("io", e.to_string()))??;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError::new("io", format!("cannot listen on {}: {e}", args.listen)))?;
    eprintln!(
        "limes node listening on http://{} (data in {})",
        args.listen,
        data_dir.display()
    );
    limes_node::serve(node, listener, shutdown_signal(), args.shutdown_grace)
        .await
        .map_err(|e| CliError::new("io", e.to_string()))
}

/// Completes on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
