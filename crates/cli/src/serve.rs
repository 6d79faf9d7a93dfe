//! `limes serve`: run a node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use limes_node::{AuthMode, Node, NodeConfig};

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
    /// Guests running at once; more wait in their class's queue [default: the number of cores]
    #[arg(long, value_name = "N")]
    run_slots: Option<usize>,
    /// How long calls of a class may wait for a run slot before 429, CLASS=DUR; repeatable
    /// [default: urgent=1s, regular=10ms, batch=50ms]
    #[arg(long = "queue-deadline", value_name = "CLASS=DUR")]
    queue_deadlines: Vec<String>,
    /// `tokens`: every route but /healthz, the OpenAPI document and public functions needs a
    /// bearer token; `none`: no checks, allowed only on a loopback --listen address
    #[arg(long, value_name = "MODE", default_value = "tokens", value_parser = str::parse::<AuthMode>)]
    auth: AuthMode,
    #[command(flatten)]
    grants: limes_node::capabilities::GrantArgs,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Run only components signed by a key in DIR (its *.pub files, from `limes keygen`)
    #[arg(long, value_name = "DIR")]
    trusted_keys: Option<PathBuf>,
    /// NATS credentials file (.creds: user JWT and NKey seed)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["nats_user", "nats_token"])]
    nats_creds: Option<PathBuf>,
    /// NATS user; the password comes from --nats-password or $LIMES_NATS_PASSWORD
    #[arg(
        long,
        value_name = "USER",
        requires = "nats_password",
        conflicts_with = "nats_token"
    )]
    nats_user: Option<String>,
    /// NATS password of --nats-user
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "LIMES_NATS_PASSWORD",
        hide_env_values = true
    )]
    nats_password: Option<String>,
    /// NATS token
    #[arg(
        long,
        value_name = "TOKEN",
        env = "LIMES_NATS_TOKEN",
        hide_env_values = true
    )]
    nats_token: Option<String>,
    /// CA certificate (PEM) to verify the NATS server's TLS with; TLS is then required
    #[arg(long, value_name = "FILE")]
    nats_ca: Option<PathBuf>,
    /// Connections open at once (TLS handshakes included); past it new ones are closed
    /// [default: 1024]
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Of --max-connections, how many are kept for GET /healthz and admin requests [default: 16]
    #[arg(long, value_name = "N")]
    reserved_connections: Option<usize>,
    /// How long a client may take to send a request's headers, and an idle keep-alive
    /// connection stays open [default: 10s]
    #[arg(long, value_name = "DUR", value_parser = limes_node::manifest::parse_duration)]
    header_read_timeout: Option<Duration>,
}

impl ServeArgs {
    fn nats_auth(&self) -> limes_cluster::NatsAuth {
        use limes_cluster::NatsAuth;
        match (&self.nats_creds, &self.nats_user, &self.nats_token) {
            (Some(file), _, _) => NatsAuth::Creds(file.clone()),
            (_, Some(user), _) => NatsAuth::UserPassword {
                user: user.clone(),
                password: self.nats_password.clone().unwrap_or_default(),
            },
            (_, _, Some(token)) => NatsAuth::Token(token.clone()),
            _ => NatsAuth::None,
        }
    }
}

pub async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let mut config = NodeConfig::new(
        args.data_dir
            .clone()
            .unwrap_or_else(crate::default_data_dir),
    );
    config.auth = args.auth;
    if let Some(n) = args.run_slots {
        if n == 0 {
            return Err(CliError::new(
                "bad-request",
                "--run-slots must be at least 1",
            ));
        }
        config.admission.run_slots = n;
    }
    for spec in &args.queue_deadlines {
        config
            .admission
            .set_deadline(spec)
            .map_err(|e| CliError::new("bad-request", format!("--queue-deadline {e}")))?;
    }
    config.grants = args
        .grants
        .grants()
        .map_err(|e| CliError::new("bad-request", e))?;
    if let Some(dir) = &args.trusted_keys {
        config.trusted_keys = Some(
            limes_node::signing::TrustedKeys::load(dir)
                .map_err(|e| CliError::new("bad-request", e))?,
        );
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            limes_node::tls::server_config(cert, key)
                .map_err(|e| CliError::new("bad-request", e))?,
        ),
        _ => None,
    };
    if let Some(c) = args.capacity {
        config.capacity = c;
    }
    let connections = &mut config.connections;
    if let Some(n) = args.max_connections {
        connections.max_connections = n;
    }
    if let Some(n) = args.reserved_connections {
        connections.reserved = n;
    }
    if connections.reserved >= connections.max_connections {
        return Err(CliError::new(
            "bad-request",
            "--reserved-connections must be less than --max-connections",
        ));
    }
    if let Some(t) = args.header_read_timeout {
        connections.header_read_timeout = t;
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
            let scheme = if tls.is_some() { "https" } else { "http" };
            config.listen = Some(format!("{scheme}://{}", args.listen));
            config.auth = args.nats_auth();
            config.ca = args.nats_ca.clone();
            if let Some(file) = &args.latency_matrix {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| CliError::new("not-found", format!("{}: {e}", file.display())))?;
                config.latency = serde_json::from_str(&text).map_err(|e| {
                    CliError::new("bad-request", format!("{}: {e}", file.display()))
                })?;
            }
            let cluster = limes_cluster::join(&node, config).await?;
            eprintln!(
                "node {} joining the cluster at {}",
                node.config().node_id,
                limes_cluster::redacted_url(url)
            );
            Some(cluster)
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError::new("io", format!("cannot listen on {}: {e}", args.listen)))?;
    // Serve at once; deployed functions load in the background (or on their first call).
    tokio::spawn({
        let node = node.clone();
        async move { node.warm_up().await }
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    let auth = match args.auth {
        AuthMode::Tokens => format!(
            "tokens; the first admin token is in {}",
            data_dir.join(limes_node::auth::ADMIN_TOKEN_FILE).display()
        ),
        AuthMode::None => "none (loopback only)".into(),
    };
    eprintln!(
        "limes node listening on {scheme}://{} (data in {}; auth: {auth})",
        args.listen,
        data_dir.display()
    );
    // Where this data dir's node listens: the CLI sends the admin token it finds beside it only
    // to this address (see `client::Api::new`), never to another listener on this machine.
    let url_file = data_dir.join(crate::client::NODE_URL_FILE);
    let local = listener
        .local_addr()
        .map_err(|e| CliError::new("io", e.to_string()))?;
    std::fs::write(&url_file, format!("{scheme}://{local}\n"))
        .map_err(|e| CliError::new("io", format!("{}: {e}", url_file.display())))?;
    let served = match tls {
        Some(tls) => {
            limes_node::serve_tls(node, listener, tls, stop_requested(), args.shutdown_grace).await
        }
        None => limes_node::serve(node, listener, stop_requested(), args.shutdown_grace).await,
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
    tokio::spawn(async {
        shutdown_signal().await;
        eprintln!("second stop signal: exiting now");
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
