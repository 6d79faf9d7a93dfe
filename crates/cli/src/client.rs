//! The client commands: `deploy`, `ls`, `invoke`, `rm`, `rollback`, talking to a node's API,
//! and [`Api`], the authenticated connection every client command uses.

use std::path::{Path, PathBuf};

use clap::Args;
use reqwest::{Client, Method, RequestBuilder, Response};

use crate::CliError;
use crate::policy_args::PolicyArgs;

/// The default node address, where `limes serve` listens by default.
pub const DEFAULT_NODE: &str = "http://127.0.0.1:7878";

/// Which node to talk to, and how.
#[derive(Args)]
pub struct NodeArg {
    /// The node's base URL
    #[arg(long, global = true, value_name = "URL", default_value = DEFAULT_NODE, env = "LIMES_NODE")]
    pub node: String,
    /// API token [default: for a node on this machine, <data-dir>/admin-token if readable]
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "LIMES_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// CA certificate (PEM) to verify an https node with, beside the system's roots
    #[arg(long, global = true, value_name = "FILE", env = "LIMES_CACERT")]
    pub cacert: Option<PathBuf>,
    /// The local node's data directory, where its admin token is [default: ~/.local/share/limes]
    #[arg(
        long = "node-data-dir",
        global = true,
        value_name = "DIR",
        env = "LIMES_DATA_DIR"
    )]
    pub data_dir: Option<PathBuf>,
}

/// A node's API, with the caller's token on every request.
pub struct Api {
    base: String,
    client: Client,
    token: Option<String>,
}

/// Whether `url` names this machine, where the node's admin token file may be readable.
fn is_local(url: &str) -> bool {
    let host = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_owned()));
    host.is_some_and(|h| {
        h == "localhost"
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

impl Api {
    /// The API of the node `arg` names. Without `--token`, a node on this machine is called
    /// with its admin token, read from its data directory, when this user can read it.
    pub fn new(arg: &NodeArg) -> Result<Self, CliError> {
        let mut builder = Client::builder();
        if let Some(file) = &arg.cacert {
            let pem = std::fs::read(file).map_err(|e| {
                CliError::new("not-found", format!("--cacert {}: {e}", file.display()))
            })?;
            let tls = crate::tls::client_config(&pem).map_err(|e| {
                CliError::new("bad-request", format!("--cacert {}: {e}", file.display()))
            })?;
            builder = builder.tls_backend_preconfigured(tls);
        }
        let mut token = arg.token.clone();
        if token.is_none() && is_local(&arg.node) {
            let dir = arg.data_dir.clone().unwrap_or_else(crate::default_data_dir);
            // Only to the node this data dir belongs to: any program may listen on another
            // loopback port (or on the same port of the other address family), and would
            // collect the admin token if it were sent there. The connection is pinned to the
            // very address the node listens on, whatever `localhost` resolves to.
            let listening = std::fs::read_to_string(dir.join(NODE_URL_FILE)).unwrap_or_default();
            if let Some(pinned) = own_listener(&arg.node, listening.trim()) {
                builder = builder.resolve("localhost", pinned);
                token = read_token(&dir.join(limes_node::auth::ADMIN_TOKEN_FILE));
            }
        }
        let client = builder
            .build()
            .map_err(|e| CliError::new("io", format!("an HTTP client: {e}")))?;
        Ok(Self {
            base: arg.node.trim_end_matches('/').to_owned(),
            client,
            token,
        })
    }

    /// The node's base URL.
    pub fn node(&self) -> &str {
        &self.base
    }

    /// A request to `path` on the node, with the token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// The node's URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `request` and returns the body, or the node's error.
    pub async fn send(&self, request: RequestBuilder) -> Result<String, CliError> {
        check(request.send().await, &self.base).await
    }
}

/// The file, in a node's data directory, where `limes serve` writes the URL it listens on
/// while it runs.
pub const NODE_URL_FILE: &str = "node-url";

/// The address a request to the URL `node` must go to so that it reaches the listener at
/// `listening` (`scheme://ip:port`, as `limes serve` wrote it), if it can: same scheme and port,
/// and the same address, or a loopback address of the family a wildcard listener takes
/// (`0.0.0.0` takes IPv4 only; `::` both). `localhost` is pinned to that address, never
/// resolved: it may name `::1` while the node listens on 127.0.0.1 only.
fn own_listener(node: &str, listening: &str) -> Option<std::net::SocketAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let (node, listening) = (
        reqwest::Url::parse(node).ok()?,
        reqwest::Url::parse(listening).ok()?,
    );
    let port = listening.port_or_known_default()?;
    if node.scheme() != listening.scheme() || node.port_or_known_default() != Some(port) {
        return None;
    }
    let ip = |u: &reqwest::Url| {
        u.host_str()?
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .ok()
    };
    let at = ip(&listening)?;
    let reaches = |to: IpAddr| {
        to == at
            || (to.is_loopback()
                && match at {
                    IpAddr::V4(a) => a.is_unspecified() && to.is_ipv4(),
                    IpAddr::V6(a) => a.is_unspecified(),
                })
    };
    let to = match node.host_str()? {
        "localhost" => match at {
            IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            specific => specific,
        },
        _ => ip(&node)?,
    };
    (to.is_loopback() && reaches(to)).then_some(SocketAddr::new(to, port))
}

fn read_token(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_admin_token_goes_only_to_its_own_listener() {
        use super::own_listener;
        let at = |s: &str| Some(s.parse::<std::net::SocketAddr>().unwrap());
        for (node, listening, expected) in [
            (
                "http://127.0.0.1:7878",
                "http://127.0.0.1:7878",
                at("127.0.0.1:7878"),
            ),
            (
                "http://localhost:7878/",
                "http://127.0.0.1:7878",
                at("127.0.0.1:7878"),
            ),
            (
                "http://localhost:7878",
                "http://0.0.0.0:7878",
                at("127.0.0.1:7878"),
            ),
            (
                "http://localhost:7878",
                "http://[::1]:7878",
                at("[::1]:7878"),
            ),
            ("http://[::1]:7878", "http://[::]:7878", at("[::1]:7878")),
            (
                "http://127.0.0.1:7878",
                "http://[::]:7878",
                at("127.0.0.1:7878"),
            ),
            // Another port, scheme, address or family: no token.
            ("http://127.0.0.1:7879", "http://127.0.0.1:7878", None),
            ("https://127.0.0.1:7878", "http://127.0.0.1:7878", None),
            ("http://127.0.0.2:7878", "http://127.0.0.1:7878", None),
            ("http://[::1]:7878", "http://0.0.0.0:7878", None),
            ("http://[::1]:7878", "http://127.0.0.1:7878", None),
            ("http://127.0.0.1:7878", "garbage", None),
        ] {
            assert_eq!(
                own_listener(node, listening),
                expected,
                "{node} to {listening}"
            );
        }
    }
}

#[derive(Args)]
pub struct DeployArgs {
    /// The function's name
    name: String,
    /// The component (.wasm), or oci://HOST/REPO:TAG (or @sha256:DIGEST) for the node to pull
    /// it from that registry with its own credentials
    file: PathBuf,
    #[command(flatten)]
    policy: PolicyArgs,
    #[command(flatten)]
    triggers: limes_node::triggers::DeployArgs,
    /// Invocations of this function in flight at once [default: 16]
    #[arg(long, value_name = "N")]
    max_concurrency: Option<u32>,
    /// Anyone may invoke it, without a token
    #[arg(long)]
    public: bool,
    /// Its class when the node is busy: urgent, regular or batch [default: regular]
    #[arg(long, value_name = "CLASS")]
    priority: Option<String>,
    /// Its detached signature (`limes sign`) [default: FILE.sig, if it exists]
    #[arg(long, value_name = "FILE")]
    signature: Option<PathBuf>,
    /// Show every stage of the deploy, even a quick one [default: only past a moment (1 s)]
    #[arg(long)]
    progress: bool,
}

/// How long a deploy may run before its stages are shown: a quick deploy prints one line.
const MOMENT: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Args)]
pub struct InvokeArgs {
    /// The function's name
    name: String,
    /// The string passed to run(args)
    #[arg(long, default_value = "")]
    args: String,
}

#[derive(Args)]
pub struct RollbackArgs {
    /// The function's name
    name: String,
    /// The version to make active
    version: u32,
}

/// Turns a response into its body text, or into an error that carries the node's message.
pub async fn check(
    response: Result<Response, reqwest::Error>,
    node: &str,
) -> Result<String, CliError> {
    let response = response.map_err(|e| crate::tls::send_error(node, &e))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if status.is_success() {
        return Ok(text);
    }
    let parsed: Option<(String, String)> = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            Some((
                e.get("kind")?.as_str()?.to_owned(),
                e.get("message")?.as_str()?.to_owned(),
            ))
        });
    Err(match parsed {
        Some((kind, message)) => CliError::new(kind, message),
        None => CliError::new("http", format!("{status}: {text}")),
    })
}

pub async fn deploy(api: &Api, args: DeployArgs) -> Result<(), CliError> {
    let source = args
        .file
        .to_str()
        .filter(|f| f.starts_with(limes_node::oci::SCHEME));
    let bytes = match source {
        Some(_) => Vec::new(),
        None => std::fs::read(&args.file)
            .map_err(|e| CliError::new("not-found", format!("{}: {e}", args.file.display())))?,
    };
    let mut query = args.policy.to_query();
    query.extend(
        args.triggers
            .pairs()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
    );
    if let Some(n) = args.max_concurrency {
        query.push(("max_concurrency".into(), n.to_string()));
    }
    if args.public {
        query.push(("public".into(), "true".into()));
    }
    if let Some(priority) = &args.priority {
        query.push(("priority".into(), priority.clone()));
    }
    let signature_file = args.signature.clone().or_else(|| {
        // A component in a registry has no file beside it.
        if source.is_some() {
            return None;
        }
        let mut default = args.file.clone().into_os_string();
        default.push(".sig");
        Some(PathBuf::from(default)).filter(|p| p.is_file())
    });
    let size = bytes.len() as f64 / 1e6;
    let mut request = api
        .request(Method::PUT, &format!("/v1/functions/{}", args.name))
        .query(&query)
        .header("content-type", "application/wasm")
        .body(bytes);
    if let Some(reference) = source {
        request = request.header("x-limes-source", reference);
    }
    if let Some(file) = signature_file {
        let signature = std::fs::read_to_string(&file)
            .map_err(|e| CliError::new("not-found", format!("{}: {e}", file.display())))?;
        request = request.header("x-limes-signature", signature.trim());
    }
    // Follow the deploy's stages (see the node's `api::progress`); an older node answers with
    // the JSON of the finished deploy instead, which is handled the same way.
    let started = std::time::Instant::now();
    let response = request
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .map_err(|e| crate::tls::send_error(api.node(), &e))?;
    let streamed = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/x-ndjson"));
    if !streamed {
        let body = check(Ok(response), api.node()).await?;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        print_deployed(&v, &args.name, started);
        return Ok(());
    }
    // The node answers once it has the whole body: the upload is over.
    let mut shown = Shown::new(args.progress);
    if source.is_none() {
        shown.line(format!(
            "upload          {size:.1} MB in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
    }
    let id = response
        .headers()
        .get("x-limes-deploy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned();
    let outcome = follow(response, started, &mut shown).await.map_err(|e| {
        CliError::new(
            "node-unreachable",
            format!(
                "{e}; the deploy goes on: GET /v1/deploys/{id} on {} tells how it ended",
                api.node()
            ),
        )
    })?;
    if let Some(version) = outcome.get("deployed") {
        print_deployed(version, &args.name, started);
        return Ok(());
    }
    let failed = &outcome["failed"];
    Err(CliError::new(
        failed["kind"].as_str().unwrap_or("http"),
        failed["message"].as_str().unwrap_or("the deploy failed"),
    ))
}

/// Prints each stage of a deploy's progress stream as the node enters it; returns the outcome.
async fn follow(
    mut response: Response,
    started: std::time::Instant,
    shown: &mut Shown,
) -> Result<serde_json::Value, String> {
    let mut pending = Vec::new();
    let mut stage = String::new();
    loop {
        // Until the moment has passed, wait for the next bytes no longer than that.
        let next = match MOMENT.checked_sub(started.elapsed()) {
            Some(left) if !shown.live => tokio::time::timeout(left, response.chunk()).await,
            _ => Ok(response.chunk().await),
        };
        let Ok(chunk) = next else {
            shown.go_live();
            continue;
        };
        let Some(chunk) = chunk.map_err(|e| e.to_string())? else {
            return Err("the connection closed before the deploy ended".into());
        };
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let v: serde_json::Value =
                serde_json::from_slice(&line).map_err(|e| format!("a progress line: {e}"))?;
            if let Some(outcome) = v.get("outcome") {
                return Ok(outcome.clone());
            }
            let now = v["stage"].as_str().unwrap_or("?");
            if now != stage {
                stage = now.to_owned();
                let at = started.elapsed().as_secs_f64();
                shown.line(format!("{stage:<15} at {at:.1} s"));
            }
        }
    }
}

/// Progress lines, held back until the deploy has taken more than a [`MOMENT`] (or shown at
/// once with `--progress`), then printed to stderr as they come.
struct Shown {
    live: bool,
    held: Vec<String>,
}

impl Shown {
    fn new(live: bool) -> Self {
        Self {
            live,
            held: Vec::new(),
        }
    }

    fn line(&mut self, line: String) {
        if self.live {
            eprintln!("{line}");
        } else {
            self.held.push(line);
        }
    }

    fn go_live(&mut self) {
        self.live = true;
        for line in self.held.drain(..) {
            eprintln!("{line}");
        }
    }
}

/// Prints the one stdout line of a deploy, from the node's 201 body or from the `deployed`
/// version of a progress stream (which names no function: `name` does).
fn print_deployed(v: &serde_json::Value, name: &str, started: std::time::Instant) {
    println!(
        "deployed {} version {} ({}{}, sha256 {}) in {:.1} s",
        v["name"].as_str().unwrap_or(name),
        v["version"],
        v["kind"].as_str().unwrap_or("?"),
        if v["preinitialized"].as_bool().unwrap_or(false) || v["preinit"].is_string() {
            ", pre-initialized"
        } else {
            ""
        },
        v["digest"].as_str().unwrap_or("?"),
        started.elapsed().as_secs_f64()
    );
    if let Some(source) = v["source"].as_str() {
        println!("  pulled from {source}");
    }
}

pub async fn list(api: &Api, json: bool) -> Result<(), CliError> {
    let body = api.send(api.request(Method::GET, "/v1/functions")).await?;
    if json {
        print_json(&body);
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    println!(
        "{:<24} {:>7} {:>8} {:<5} {:<8} {:<6} {:<7} DIGEST",
        "NAME", "VERSION", "VERSIONS", "KIND", "PRIORITY", "PUBLIC", "PREINIT"
    );
    let yes_no = |v: &serde_json::Value| {
        if v.as_bool().unwrap_or(false) {
            "yes"
        } else {
            "no"
        }
    };
    for f in v["functions"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:>7} {:>8} {:<5} {:<8} {:<6} {:<7} {}",
            f["name"].as_str().unwrap_or("?"),
            f["version"].as_u64().unwrap_or(0),
            f["versions"].as_u64().unwrap_or(0),
            f["kind"].as_str().unwrap_or("?"),
            f["priority"].as_str().unwrap_or("regular"),
            yes_no(&f["public"]),
            yes_no(&f["preinitialized"]),
            f["digest"].as_str().map_or("?", |d| &d[..d.len().min(16)])
        );
    }
    Ok(())
}

pub async fn invoke(api: &Api, args: InvokeArgs) -> Result<(), CliError> {
    let request = api
        .request(Method::POST, &format!("/v1/functions/{}/invoke", args.name))
        .body(args.args);
    let response = request.send().await;
    // Where it ran goes to stderr, so that stdout is the result alone.
    if let Ok(r) = &response
        && let Some(added) = r.headers().get("x-limes-forward-us")
    {
        let ran_on = r.headers().get("x-limes-node");
        let text = |v: Option<&reqwest::header::HeaderValue>| {
            v.and_then(|v| v.to_str().ok()).unwrap_or("?").to_owned()
        };
        eprintln!(
            "ran on {} (forwarding added {} µs)",
            text(ran_on),
            text(Some(added))
        );
    }
    println!("{}", check(response, api.node()).await?);
    Ok(())
}

pub async fn remove(api: &Api, name: &str, keep_state: bool) -> Result<(), CliError> {
    let mut request = api.request(Method::DELETE, &format!("/v1/functions/{name}"));
    if keep_state {
        request = request.query(&[("keep_state", "true")]);
    }
    api.send(request).await?;
    match keep_state {
        true => println!("removed {name}; its key-value stores are kept"),
        false => println!("removed {name}"),
    }
    Ok(())
}

pub async fn rollback(api: &Api, args: RollbackArgs) -> Result<(), CliError> {
    let request = api
        .request(
            Method::POST,
            &format!("/v1/functions/{}/rollback", args.name),
        )
        .query(&[("version", args.version)]);
    api.send(request).await?;
    println!("{} now serves version {}", args.name, args.version);
    Ok(())
}

/// A node's JSON answer as it is, pretty-printed: what listings print with `--json`.
pub fn print_json(body: &str) {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
        Err(_) => println!("{body}"),
    }
}
