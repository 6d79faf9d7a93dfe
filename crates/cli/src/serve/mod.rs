//! `limes serve`: run a node.

mod args;
pub mod config;
mod notify;

use std::ffi::OsString;

use clap::FromArgMatches;
use limes_node::{AuthMode, Node, NodeConfig};

pub use args::ServeArgs;

use crate::CliError;

/// Runs `limes serve` with the arguments after `serve`: the config file's settings, then the
/// command line's.
pub async fn serve(argv: Vec<OsString>) -> Result<(), CliError> {
    let bad = |e: String| CliError::new("bad-request", e);
    let given = config::command()
        .try_get_matches_from(std::iter::once(OsString::from("limes serve")).chain(argv.clone()))
        .map_err(|e| bad(e.to_string()))?;
    let matches = match given.get_one::<std::path::PathBuf>("config") {
        Some(file) => config::merge(file, &argv).map_err(bad)?,
        None => given,
    };
    let args = ServeArgs::from_arg_matches(&matches).map_err(|e| bad(e.to_string()))?;
    if args.print_config {
        print!("{}", config::print(&matches));
        return Ok(());
    }
    crate::logs::init(args.listen.log_format == "json");
    run(args).await
}

async fn run(args: ServeArgs) -> Result<(), CliError> {
    let ServeArgs {
        listen,
        data,
        admission,
        grants,
        registry,
        cluster: cluster_args,
        auth,
        ..
    } = args;
    let mut config = NodeConfig::new(data.data_dir);
    config.auth = auth.auth;
    config.registries = limes_node::oci::RegistryConfig {
        auth_file: registry.registry_auth,
        ca: registry.registry_ca,
        insecure: registry.registry_insecure,
        allow: registry.registry_allow,
    };
    if let Some(n) = admission.run_slots {
        if n == 0 {
            return Err(CliError::new(
                "bad-request",
                "--run-slots must be at least 1",
            ));
        }
        config.admission.run_slots = n;
    }
    for spec in &admission.queue_deadline {
        config
            .admission
            .set_deadline(spec)
            .map_err(|e| CliError::new("bad-request", format!("--queue-deadline {e}")))?;
    }
    config.grants = grants
        .grants()
        .map_err(|e| CliError::new("bad-request", e))?;
    if let Some(dir) = &auth.trusted_keys {
        config.trusted_keys = Some(
            limes_node::signing::TrustedKeys::load(dir)
                .map_err(|e| CliError::new("bad-request", e))?,
        );
    }
    let tls = match (&listen.tls_cert, &listen.tls_key) {
        (Some(cert), Some(key)) => Some(
            limes_node::tls::server_config(cert, key)
                .map_err(|e| CliError::new("bad-request", e))?,
        ),
        _ => None,
    };
    if let Some(c) = admission.capacity {
        config.capacity = c;
    }
    let connections = &mut config.connections;
    if let Some(n) = listen.max_connections {
        connections.max_connections = n;
    }
    if let Some(n) = listen.reserved_connections {
        connections.reserved = n;
    }
    if connections.reserved >= connections.max_connections {
        return Err(CliError::new(
            "bad-request",
            "--reserved-connections must be less than --max-connections",
        ));
    }
    if let Some(t) = listen.header_read_timeout {
        connections.header_read_timeout = t;
    }
    if let Some(b) = listen.max_body {
        config.body_limit = b as usize;
    }
    if let Some(id) = cluster_args.node_id.clone().or_else(host_name) {
        config.node_id = id;
    }
    let data_dir = config.data_dir.clone();
    let node = tokio::task::spawn_blocking(move || Node::open(config))
        .await
        .map_err(|e| CliError::new("io", e.to_string()))??;
    let cluster = match &cluster_args.cluster {
        Some(url) => {
            let [x, y] = cluster_args.location[..] else {
                return Err(CliError::new("bad-request", "--location takes X,Y"));
            };
            let mut config = limes_cluster::ClusterConfig::new(url, [x, y]);
            let scheme = if tls.is_some() { "https" } else { "http" };
            config.listen = Some(format!("{scheme}://{}", listen.listen));
            config.auth = cluster_args
                .nats_auth()
                .map_err(|e| CliError::new("bad-request", e))?;
            config.ca = cluster_args.nats_ca.clone();
            if let Some(file) = &cluster_args.latency_matrix {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| CliError::new("not-found", format!("{}: {e}", file.display())))?;
                config.latency = serde_json::from_str(&text).map_err(|e| {
                    CliError::new("bad-request", format!("{}: {e}", file.display()))
                })?;
            }
            let cluster = limes_cluster::join(&node, config).await?;
            crate::logs::notice(&format!(
                "node {} joining the cluster at {}",
                node.config().node_id,
                limes_cluster::redacted_url(url)
            ));
            Some(cluster)
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(listen.listen)
        .await
        .map_err(|e| CliError::new("io", format!("cannot listen on {}: {e}", listen.listen)))?;
    // Serve at once; deployed functions load in the background (or on their first call).
    tokio::spawn({
        let node = node.clone();
        async move { node.warm_up().await }
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    let auth = match auth.auth {
        AuthMode::Tokens => format!(
            "tokens; the first admin token is in {}",
            data_dir.join(limes_node::auth::ADMIN_TOKEN_FILE).display()
        ),
        AuthMode::None => "none (loopback only)".into(),
    };
    crate::logs::notice(&format!(
        "limes node listening on {scheme}://{} (data in {}; auth: {auth})",
        listen.listen,
        data_dir.display()
    ));
    // Where this data dir's node listens: the CLI sends the admin token it finds beside it only
    // to this address (see `client::Api::new`), never to another listener on this machine.
    let url_file = data_dir.join(crate::client::NODE_URL_FILE);
    let local = listener
        .local_addr()
        .map_err(|e| CliError::new("io", e.to_string()))?;
    std::fs::write(&url_file, format!("{scheme}://{local}\n"))
        .map_err(|e| CliError::new("io", format!("{}: {e}", url_file.display())))?;
    // Listening (connections queue until the accept loop takes them): tell systemd.
    notify::ready();
    let served = match tls {
        Some(tls) => {
            limes_node::serve_tls(node, listener, tls, stop_requested(), listen.shutdown_grace)
                .await
        }
        None => limes_node::serve(node, listener, stop_requested(), listen.shutdown_grace).await,
    };
    if let Some(cluster) = cluster {
        cluster.leave().await;
    }
    let _ = std::fs::remove_file(&url_file);
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

/// Completes on the first ctrl-c or SIGTERM, which starts a graceful stop; a second one ends
/// the process at once, whatever it is waiting for.
async fn stop_requested() {
    shutdown_signal().await;
    notify::stopping();
    tokio::spawn(async {
        shutdown_signal().await;
        crate::logs::notice("second stop signal: exiting now");
        std::process::exit(130);
    });
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
