//! The client commands: `deploy`, `ls`, `invoke`, `rm`, `rollback`, talking to a node's API.

use std::path::PathBuf;

use clap::Args;
use reqwest::{Client, Response};

use crate::CliError;
use crate::policy_args::PolicyArgs;

/// The default node address, where `limes serve` listens by default.
pub const DEFAULT_NODE: &str = "http://127.0.0.1:7878";

#[derive(Args)]
pub struct NodeArg {
    /// The node's base URL
    #[arg(long, global = true, value_name = "URL", default_value = DEFAULT_NODE, env = "LIMES_NODE")]
    pub node: String,
}

#[derive(Args)]
pub struct DeployArgs {
    /// The function's name
    name: String,
    /// The component (.wasm)
    file: PathBuf,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Invocations of this function in flight at once [default: 16]
    #[arg(long, value_name = "N")]
    max_concurrency: Option<u32>,
}

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

pub fn url(node: &str, path: &str) -> String {
    format!("{}{path}", node.trim_end_matches('/'))
}

/// Turns a response into its body text, or into an error that carries the node's message.
pub async fn check(
    response: Result<Response, reqwest::Error>,
    node: &str,
) -> Result<String, CliError> {
    let response =
        response.map_err(|e| CliError::new("node-unreachable", format!("{node}: {e}")))?;
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

pub async fn deploy(node: &str, args: DeployArgs) -> Result<(), CliError> {
    let bytes = std::fs::read(&args.file)
        .map_err(|e| CliError::new("not-found", format!("{}: {e}", args.file.display())))?;
    let mut query = args.policy.to_query();
    if let Some(n) = args.max_concurrency {
        query.push(("max_concurrency".into(), n.to_string()));
    }
    let request = Client::new()
        .put(url(node, &format!("/v1/functions/{}", args.name)))
        .query(&query)
        .header("content-type", "application/wasm")
        .body(bytes);
    let body = check(request.send().await, node).await?;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    println!(
        "deployed {} version {} ({}, sha256 {})",
        v["name"].as_str().unwrap_or(&args.name),
        v["version"],
        v["kind"].as_str().unwrap_or("?"),
        v["digest"].as_str().unwrap_or("?")
    );
    Ok(())
}

pub async fn list(node: &str) -> Result<(), CliError> {
    let body = check(
        Client::new().get(url(node, "/v1/functions")).send().await,
        node,
    )
    .await?;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    println!(
        "{:<24} {:>7} {:>8} {:<5} DIGEST",
        "NAME", "VERSION", "VERSIONS", "KIND"
    );
    for f in v["functions"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:>7} {:>8} {:<5} {}",
            f["name"].as_str().unwrap_or("?"),
            f["version"].as_u64().unwrap_or(0),
            f["versions"].as_u64().unwrap_or(0),
            f["kind"].as_str().unwrap_or("?"),
            f["digest"].as_str().map_or("?", |d| &d[..d.len().min(16)])
        );
    }
    Ok(())
}

pub async fn invoke(node: &str, args: InvokeArgs) -> Result<(), CliError> {
    let request = Client::new()
        .post(url(node, &format!("/v1/functions/{}/invoke", args.name)))
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
    println!("{}", check(response, node).await?);
    Ok(())
}

pub async fn remove(node: &str, name: &str) -> Result<(), CliError> {
    check(
        Client::new()
            .delete(url(node, &format!("/v1/functions/{name}")))
            .send()
            .await,
        node,
    )
    .await?;
    println!("removed {name}");
    Ok(())
}

pub async fn rollback(node: &str, args: RollbackArgs) -> Result<(), CliError> {
    let request = Client::new()
        .post(url(node, &format!("/v1/functions/{}/rollback", args.name)))
        .query(&[("version", args.version)]);
    check(request.send().await, node).await?;
    println!("{} now serves version {}", args.name, args.version);
    Ok(())
}
