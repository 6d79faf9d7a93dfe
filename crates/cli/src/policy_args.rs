//! The policy flags shared by every command that loads a function.

use std::time::Duration;

use clap::Args;
use limes_runtime::{DirMount, NetworkPolicy, Policy};

/// A function's limits and grants, as command-line flags.
#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Memory limit, such as 64MiB or 1GiB [default: 128MiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub mem: Option<u64>,
    /// Wall-clock timeout per invocation, such as 500ms or 10s [default: 30s]
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// CPU budget in fuel units (about one per Wasm instruction) [default: unmetered]
    #[arg(long, value_name = "N")]
    pub fuel: Option<u64>,
    /// Preopen a host directory: HOST::GUEST, or HOST::GUEST:ro for read-only
    #[arg(long = "dir", value_name = "HOST::GUEST[:ro]", value_parser = str::parse::<DirMount>)]
    pub dirs: Vec<DirMount>,
    /// Set an environment variable in the guest
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Allow binding (TCP, UDP) to an IP or CIDR; repeatable [default: none]
    #[arg(long = "allow-bind", value_name = "IP/CIDR", value_parser = NetworkPolicy::parse_entry)]
    pub allow_bind: Vec<ipnet::IpNet>,
    /// Allow connecting to an IP or CIDR; repeatable [default: none]
    #[arg(long = "allow-connect", value_name = "IP/CIDR", value_parser = NetworkPolicy::parse_entry)]
    pub allow_connect: Vec<ipnet::IpNet>,
}

impl PolicyArgs {
    /// The policy these flags describe, with [`Policy::default`] for every flag not given.
    pub fn to_policy(&self) -> Policy {
        let defaults = Policy::default();
        Policy {
            memory_limit: self.mem.unwrap_or(defaults.memory_limit),
            timeout: self.timeout.unwrap_or(defaults.timeout),
            fuel: self.fuel,
            dirs: self.dirs.clone(),
            env: self.env.clone(),
            network: NetworkPolicy {
                bind: self.allow_bind.clone(),
                connect: self.allow_connect.clone(),
            },
            ..defaults
        }
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{s:?}: {e}"))
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?}: expected K=V")),
    }
}
