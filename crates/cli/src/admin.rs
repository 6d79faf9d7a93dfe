//! `limes token create|ls|revoke`, `limes audit`, `limes keygen` and `limes sign`.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use reqwest::Method;

use crate::CliError;
use crate::client::Api;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it, once: it cannot be shown again.
    Create(CreateArgs),
    /// List tokens: name, role, created, expiry, last use, status (never the secret).
    Ls {
        /// Print the node's JSON as it is
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token; it fails from the next request on (on every node of a cluster).
    Revoke {
        /// The token's name
        name: String,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    /// admin, deploy, invoke or emergency
    #[arg(long, value_name = "ROLE")]
    role: String,
    /// A unique name, shown in `ls` and in the audit log [default: ROLE-xxxxxx]
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// How long it works, such as 30d or 12h [default: until revoked]
    #[arg(long, value_name = "DUR", value_parser = limes_node::manifest::parse_duration)]
    expires: Option<Duration>,
}

#[derive(Args)]
pub struct AuditArgs {
    /// How many of the newest entries
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: usize,
    /// Print the node's JSON as it is
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct KeygenArgs {
    /// The key's name: writes NAME.key (private, mode 0600) and NAME.pub
    name: String,
    /// Where to write them
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,
}

#[derive(Args)]
pub struct SignArgs {
    /// The component (.wasm)
    file: PathBuf,
    /// The private key (`limes keygen`)
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Where to write the signature [default: FILE.sig]
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Seconds since the epoch as a UTC time, or `-`.
fn when(v: &serde_json::Value) -> String {
    v.as_u64().map_or("-".into(), |s| {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string()
    })
}

pub async fn token(api: &Api, command: TokenCommand) -> Result<(), CliError> {
    match command {
        TokenCommand::Create(args) => {
            let body = serde_json::json!({
                "role": args.role,
                "name": args.name,
                "expires": args.expires.map(|d| format!("{}s", d.as_secs())),
            });
            let answer = api
                .send(api.request(Method::POST, "/v1/tokens").json(&body))
                .await?;
            let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
            eprintln!(
                "token {} ({}, expires {}); keep it safe, it is not shown again:",
                v["name"].as_str().unwrap_or("?"),
                v["role"].as_str().unwrap_or("?"),
                when(&v["expires_at"]),
            );
            println!("{}", v["token"].as_str().unwrap_or_default());
        }
        TokenCommand::Ls { json } => {
            let answer = api.send(api.request(Method::GET, "/v1/tokens")).await?;
            if json {
                crate::client::print_json(&answer);
                return Ok(());
            }
            let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
            println!(
                "{:<24} {:<9} {:<8} {:<20} {:<20} LAST USED",
                "NAME", "ROLE", "STATUS", "CREATED", "EXPIRES"
            );
            for t in v["tokens"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<9} {:<8} {:<20} {:<20} {}",
                    t["name"].as_str().unwrap_or("?"),
                    t["role"].as_str().unwrap_or("?"),
                    t["status"].as_str().unwrap_or("?"),
                    when(&t["created_at"]),
                    when(&t["expires_at"]),
                    when(&t["last_used"]),
                );
            }
        }
        TokenCommand::Revoke { name } => {
            api.send(api.request(Method::DELETE, &format!("/v1/tokens/{name}")))
                .await?;
            println!("revoked {name}");
        }
    }
    Ok(())
}

pub async fn audit(api: &Api, args: AuditArgs) -> Result<(), CliError> {
    let answer = api
        .send(
            api.request(Method::GET, "/v1/audit")
                .query(&[("limit", args.limit)]),
        )
        .await?;
    if args.json {
        crate::client::print_json(&answer);
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    for e in v["entries"].as_array().into_iter().flatten() {
        let at = e["at_ms"].as_u64().unwrap_or(0);
        println!(
            "{:>5} {} {:<20} {:<18} {:<20} {} {}",
            e["seq"].as_u64().unwrap_or(0),
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(at)),
            e["actor"].as_str().unwrap_or("?"),
            e["action"].as_str().unwrap_or("?"),
            e["target"].as_str().unwrap_or("?"),
            e["request_id"].as_str().unwrap_or("-"),
            e["detail"],
        );
    }
    Ok(())
}

pub fn keygen(args: KeygenArgs) -> Result<(), CliError> {
    let (private, public) =
        limes_node::signing::keygen(&args.dir, &args.name).map_err(|e| CliError::new("io", e))?;
    println!(
        "private key {} (keep it secret); public key {} (give it to nodes: --trusted-keys DIR)",
        private.display(),
        public.display()
    );
    Ok(())
}

pub fn sign(args: SignArgs) -> Result<(), CliError> {
    let component = std::fs::read(&args.file)
        .map_err(|e| CliError::new("not-found", format!("{}: {e}", args.file.display())))?;
    let signature = limes_node::signing::sign(&args.key, &component)
        .map_err(|e| CliError::new("bad-key", e))?;
    let out = args.out.unwrap_or_else(|| {
        let mut p = args.file.clone().into_os_string();
        p.push(".sig");
        p.into()
    });
    std::fs::write(&out, format!("{signature}\n"))
        .map_err(|e| CliError::new("io", format!("{}: {e}", out.display())))?;
    println!("signed {} -> {}", args.file.display(), out.display());
    Ok(())
}
