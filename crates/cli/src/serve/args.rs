//! The flags of `limes serve`, grouped by concern. Each group's heading names the section of the
//! config file (`[listen]`, `[data]`, …) that holds the same settings: a flag `--some-flag` is
//! the key `some_flag` of its group's section (see [`super::config`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use limes_node::AuthMode;

/// Every flag of `limes serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Read settings from this TOML file (see deploy/limes.toml); flags given here override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (file, flags and defaults; secrets redacted) and exit
    #[arg(long)]
    pub print_config: bool,
    #[command(flatten)]
    pub listen: Listen,
    #[command(flatten)]
    pub data: Data,
    #[command(flatten)]
    pub admission: Admission,
    #[command(flatten, next_help_heading = "Grants to functions [grants]")]
    pub grants: limes_node::capabilities::GrantArgs,
    #[command(flatten)]
    pub registry: Registry,
    #[command(flatten)]
    pub cluster: Cluster,
    #[command(flatten)]
    pub auth: Auth,
}

/// Where and how the node listens.
#[derive(Args)]
#[command(next_help_heading = "Listen and TLS [listen]")]
pub struct Listen {
    /// Address to listen on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Largest request body, such as 32MiB; more gets 413 [default: 32MiB]
    #[arg(long, value_name = "SIZE", value_parser = limes_node::manifest::parse_size)]
    pub max_body: Option<u64>,
    /// Connections open at once (TLS handshakes included); past it new ones are closed
    /// [default: 1024]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Of --max-connections, how many are kept for GET /healthz and admin requests [default: 16]
    #[arg(long, value_name = "N")]
    pub reserved_connections: Option<usize>,
    /// How long a client may take to send a request's headers, and an idle keep-alive
    /// connection stays open [default: 10s]
    #[arg(long, value_name = "DUR", value_parser = limes_node::manifest::parse_duration)]
    pub header_read_timeout: Option<Duration>,
    /// How long in-flight requests may run on after SIGTERM or ctrl-c
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = limes_node::manifest::parse_duration)]
    pub shutdown_grace: Duration,
    /// `human`: lines for people; `json`: one JSON object a line, with the request id
    #[arg(long, value_name = "FORMAT", default_value = "human", value_parser = ["human", "json"])]
    pub log_format: String,
}

/// Where the node keeps its state.
#[derive(Args)]
#[command(next_help_heading = "Data [data]")]
pub struct Data {
    /// Directory of the registry, artifacts and AOT cache
    #[arg(long, value_name = "DIR", default_value_os_t = crate::default_data_dir())]
    pub data_dir: PathBuf,
}

/// How many calls run at once, and how long the others wait.
#[derive(Args)]
#[command(next_help_heading = "Admission [admission]")]
pub struct Admission {
    /// Instances running at once over all functions; more get 429 [default: 64]
    #[arg(long, value_name = "N")]
    pub capacity: Option<u32>,
    /// Guests running at once; more wait in their class's queue [default: the number of cores]
    #[arg(long, value_name = "N")]
    pub run_slots: Option<usize>,
    /// How long calls of a class may wait for a run slot before 429, CLASS=DUR; repeatable
    /// [default: urgent=1s, regular=10ms, batch=50ms]
    #[arg(long = "queue-deadline", value_name = "CLASS=DUR")]
    pub queue_deadline: Vec<String>,
}

/// OCI registries the node pulls components from (`limes deploy NAME oci://…`).
#[derive(Args)]
#[command(next_help_heading = "OCI registries [registry]")]
pub struct Registry {
    /// A registry the node may pull components from over HTTPS: HOST[:PORT], HOST/PREFIX (its
    /// repositories below PREFIX only) or `*` for any; repeatable [default: none: deploys from
    /// registries are off]
    #[arg(long, value_name = "HOST")]
    pub registry_allow: Vec<String>,
    /// Registry credentials, in the format of Docker's config.json ({"auths": {"HOST": {"auth":
    /// base64("USER:PASSWORD")}}}), as `docker login` writes it [default: anonymous pulls]
    #[arg(long, value_name = "FILE")]
    pub registry_auth: Option<PathBuf>,
    /// A CA certificate (PEM) trusted for registries besides the system's; repeatable
    #[arg(long, value_name = "FILE")]
    pub registry_ca: Vec<PathBuf>,
    /// A registry (HOST:PORT) pulled from over plain HTTP, on a trusted link only; repeatable
    /// [default: none]
    #[arg(long, value_name = "HOST")]
    pub registry_insecure: Vec<String>,
}

/// The edge cluster and its NATS server.
#[derive(Args)]
#[command(next_help_heading = "Cluster and NATS [cluster]")]
pub struct Cluster {
    /// Join the edge cluster whose NATS server (with JetStream) is at URL [default: run alone]
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,
    /// This node's id in the cluster: a-z, 0-9, '-', '_' [default: the host name]
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// Where this node is, X,Y; invocations go to the nearest node with room
    #[arg(
        long,
        value_name = "X,Y",
        value_delimiter = ',',
        num_args = 1,
        default_value = "0,0"
    )]
    pub location: Vec<f64>,
    /// JSON file of one-way latencies in ms, {"a": {"b": 3.5}}, overriding locations
    #[arg(long, value_name = "FILE")]
    pub latency_matrix: Option<PathBuf>,
    /// NATS credentials file (.creds: user JWT and NKey seed)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["nats_user", "nats_token", "nats_token_file"])]
    pub nats_creds: Option<PathBuf>,
    /// NATS user; the password comes from --nats-password-file, --nats-password or
    /// $LIMES_NATS_PASSWORD
    #[arg(long, value_name = "USER", conflicts_with_all = ["nats_token", "nats_token_file"])]
    pub nats_user: Option<String>,
    /// NATS password of --nats-user (prefer --nats-password-file: flags show in `ps`)
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "LIMES_NATS_PASSWORD",
        hide_env_values = true,
        conflicts_with = "nats_password_file"
    )]
    pub nats_password: Option<String>,
    /// A file whose first line is the NATS password of --nats-user
    #[arg(long, value_name = "FILE")]
    pub nats_password_file: Option<PathBuf>,
    /// NATS token (prefer --nats-token-file)
    #[arg(
        long,
        value_name = "TOKEN",
        env = "LIMES_NATS_TOKEN",
        hide_env_values = true,
        conflicts_with = "nats_token_file"
    )]
    pub nats_token: Option<String>,
    /// A file whose first line is the NATS token
    #[arg(long, value_name = "FILE")]
    pub nats_token_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify the NATS server's TLS with; TLS is then required
    #[arg(long, value_name = "FILE")]
    pub nats_ca: Option<PathBuf>,
}

/// Who may do what.
#[derive(Args)]
#[command(next_help_heading = "Auth and trust [auth]")]
pub struct Auth {
    /// `tokens`: every route but /healthz, the OpenAPI document and public functions needs a
    /// bearer token; `none`: no checks, allowed only on a loopback --listen address
    #[arg(long, value_name = "MODE", default_value = "tokens", value_parser = str::parse::<AuthMode>)]
    pub auth: AuthMode,
    /// Run only components signed by a key in DIR (its *.pub files, from `limes keygen`)
    #[arg(long, value_name = "DIR")]
    pub trusted_keys: Option<PathBuf>,
}

impl Cluster {
    /// How the node authenticates to NATS; secrets given as files are read now.
    pub fn nats_auth(&self) -> Result<limes_cluster::NatsAuth, String> {
        use limes_cluster::NatsAuth;
        let password = secret(&self.nats_password, &self.nats_password_file)?;
        let token = secret(&self.nats_token, &self.nats_token_file)?;
        Ok(match (&self.nats_creds, &self.nats_user, token) {
            (Some(file), _, _) => NatsAuth::Creds(file.clone()),
            (_, Some(user), _) => NatsAuth::UserPassword {
                user: user.clone(),
                password: password.ok_or("--nats-user needs a password: --nats-password-file")?,
            },
            (_, _, Some(token)) => NatsAuth::Token(token),
            _ => NatsAuth::None,
        })
    }
}

/// A secret given as itself or as a file whose first line it is.
fn secret(value: &Option<String>, file: &Option<PathBuf>) -> Result<Option<String>, String> {
    match (value, file) {
        (Some(v), _) => Ok(Some(v.clone())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let line = text.lines().next().unwrap_or_default().trim_end();
            if line.is_empty() {
                return Err(format!("{} is empty", path.display()));
            }
            Ok(Some(line.to_owned()))
        }
        (None, None) => Ok(None),
    }
}
