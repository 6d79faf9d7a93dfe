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
    /// Join the edge cluster whose NATS server (with JetStream) is at URL [default: run alone]
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// This node's id in the cluster: a-z, 0-9, '-', '_' [default: the host name]
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// Where this node is, X,Y; invocations go to the nearest node with room
    #[arg(
        long,
        value_name = "X,Y",
        value_delimiter = ',',
        num_args = 1,
        default_value = "0,0"
    )]
    location: Vec<f64>,
    /// JSON file of one-way latencies in ms, {"a": {"b": 3.5}}, overriding locations
    #[arg(long, value_name = "FILE")]
    latency_matrix: Option<PathBuf>,
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
    if let Some(id) = args.node_id.clone().or_else(host_name) {
        config.node_id = id;
    }
    let data_dir = config.data_dir.clone();
    let node = tokio::task::spawn_blocking(move || Node::open(config))
        .await
        .map_err(|e| CliError::new("io", e.to_string()))??;
    let cluster = match &args.cluster {
        Some(url) => {
            let [x, y] = args.location[..] else {
                return Err(CliError::new("bad-request", "--location takes X,Y"));
            };
            let mut config = limes_cluster::ClusterConfig::new(url, [x, y]);
            config.listen = Some(format!("http://{}", args.listen));
            if let Some(file) = &args.latency_matrix {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| CliError::new("not-found", format!("{}: {e}", file.display())))?;
                config.latency = serde_json::from_str(&text).map_err(|e| {
                    CliError::new("bad-request", format!("{}: {e}", file.display()))
                })?;
            }
            let cluster = limes_cluster::join(&node, config).await?;
            eprintln!(
                "node {} joining the cluster at {url}",
                node.config().node_id
            );
            Some(cluster)
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError::new("io", format!("cannot listen on {}: {e}", args.listen)))?;
    eprintln!(
        "limes node listening on http://{} (data in {})",
        args.listen,
        data_dir.display()
    );
    let served = limes_node::serve(node, listener, shutdown_signal(), args.shutdown_grace).await;
    if let Some(cluster) = cluster {
        cluster.leave().await;
    }
    served.map_err(|e| CliError::new("io", e.to_string()))
}

/// The host name, made into a valid node id, when it can be read.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let id: String = name
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    limes_node::validate_name(&id).is_ok().then_some(id)
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
