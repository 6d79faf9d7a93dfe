//! `limes push FILE oci://HOST/REPO:TAG`: publish a component to an OCI registry, as the Wasm
//! artifact that `limes deploy NAME oci://…` (and `wkg`, wasmCloud, Spin) pull.

use std::path::PathBuf;

use clap::Args;
use limes_node::oci::{Registries, RegistryConfig};

use crate::CliError;

#[derive(Args)]
pub struct PushArgs {
    /// The component (.wasm)
    file: PathBuf,
    /// Where to publish it: oci://HOST/REPO:TAG
    reference: String,
    /// Registry credentials in the format of Docker's config.json [default:
    /// $DOCKER_CONFIG/config.json or ~/.docker/config.json, if it exists]
    #[arg(long, value_name = "FILE")]
    registry_auth: Option<PathBuf>,
    /// A CA certificate (PEM) trusted for the registry besides the system's; repeatable
    #[arg(long, value_name = "FILE")]
    registry_ca: Vec<PathBuf>,
    /// A registry (HOST:PORT) reached over plain HTTP; repeatable
    #[arg(long, value_name = "HOST")]
    registry_insecure: Vec<String>,
}

pub async fn push(args: PushArgs) -> Result<(), CliError> {
    let component = std::fs::read(&args.file)
        .map_err(|e| CliError::new("not-found", format!("{}: {e}", args.file.display())))?;
    let auth_file = args.registry_auth.or_else(|| {
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))?;
        Some(dir.join("config.json")).filter(|f| f.is_file())
    });
    let registries = Registries::for_push(&RegistryConfig {
        auth_file,
        ca: args.registry_ca,
        insecure: args.registry_insecure,
        allow: Vec::new(),
    })
    .map_err(|e| CliError::new("bad-request", e))?;
    let pinned = registries
        .push(&args.reference, component.into())
        .await
        .map_err(|e| CliError::new(e.kind(), e.to_string()))?;
    println!("pushed {} to {pinned}", args.file.display());
    Ok(())
}
