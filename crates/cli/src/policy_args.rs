//! The policy flags shared by every command that loads a function (`run`, `deploy`).

use std::time::Duration;

use clap::Args;
use limes_node::manifest::{parse_duration, parse_env, parse_size};
use limes_runtime::{DirMount, NetworkPolicy, Policy};

/// A function's limits and grants, as command-line flags.
#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Memory limit, such as 64MiB or 1GiB [default: 128MiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub mem: Option<u64>,
    /// Wall-clock timeout per invocation, such as 500ms or 10s [default: 30s]
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
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
    /// A key-value store of its own the function may open; repeatable [default: none]
    #[arg(long = "kv", value_name = "STORE")]
    pub kv: Vec<String>,
    /// A store shared with other functions, which the node's operator allows; repeatable
    #[arg(long = "kv-shared", value_name = "STORE")]
    pub kv_shared: Vec<String>,
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
            // `limes run` keeps stores in memory, for the process's life.
            kv: limes_runtime::KvPolicy::new(
                "local",
                &self.kv,
                &self.kv_shared,
                limes_runtime::KvLimits::default(),
            ),
            ..defaults
        }
    }

    /// The flags given, as the node API's manifest query parameters.
    pub fn to_query(&self) -> Vec<(String, String)> {
        let mut q = Vec::new();
        let mut push = |k: &str, v: String| q.push((k.to_owned(), v));
        if let Some(m) = self.mem {
            push("memory", m.to_string());
        }
        if let Some(t) = self.timeout {
            push("timeout", format!("{}ms", t.as_millis()));
        }
        if let Some(f) = self.fuel {
            push("fuel", f.to_string());
        }
        for d in &self.dirs {
            let ro = if d.writable { "" } else { ":ro" };
            push("dir", format!("{}::{}{ro}", d.host.display(), d.guest));
        }
        for (k, v) in &self.env {
            push("env", format!("{k}={v}"));
        }
        for a in &self.allow_bind {
            push("allow_bind", a.to_string());
        }
        for a in &self.allow_connect {
            push("allow_connect", a.to_string());
        }
        for s in &self.kv {
            push("kv", s.clone());
        }
        for s in &self.kv_shared {
            push("kv_shared", s.clone());
        }
        q
    }
}
