//! The policy flags shared by every command that loads a function (`run`, `deploy`).

use std::time::Duration;

use clap::Args;
use limes_node::capabilities::DeployArgs as CapabilityArgs;
use limes_node::manifest::{parse_duration, parse_env, parse_size};
use limes_runtime::Policy;

/// A function's limits and grants, as command-line flags: its own limits here, each host
/// capability's flags from its module (`limes_node::capabilities`).
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
    /// Set an environment variable in the guest
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    #[command(flatten)]
    pub capabilities: CapabilityArgs,
}

impl PolicyArgs {
    /// The policy these flags describe, with [`Policy::default`] for every flag not given: what
    /// `limes run` grants on its user's own machine, unbounded by any node's grants.
    pub fn to_policy(&self) -> Policy {
        let defaults = Policy::default();
        let mut policy = Policy {
            memory_limit: self.mem.unwrap_or(defaults.memory_limit),
            timeout: self.timeout.unwrap_or(defaults.timeout),
            fuel: self.fuel,
            env: self.env.clone(),
            ..defaults
        };
        self.capabilities.apply_locally(&mut policy);
        policy
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
        for (k, v) in &self.env {
            push("env", format!("{k}={v}"));
        }
        for (k, v) in self.capabilities.pairs() {
            push(k, v);
        }
        q
    }
}
