//! Network: `wasi:sockets` inside the function's allowlists.
//!
//! A manifest names the addresses a guest may bind (`allow_bind`) and connect to
//! (`allow_connect`), IPs or CIDRs; none by default. On a node each must lie inside a network
//! the operator allows (`--allow-egress`, default none). The runtime enforces the allowlists at
//! every socket operation (`limes_runtime::NetworkPolicy`).

use clap::Args;
use ipnet::IpNet;
use limes_runtime::{NetworkPolicy, Policy};
use serde::{Deserialize, Serialize};

use super::{Capability, Place, list_or_none};
use crate::error::NodeError;

/// The manifest's section: the allowlists, IPs or CIDRs as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    #[serde(default)]
    pub allow_bind: Vec<String>,
    #[serde(default)]
    pub allow_connect: Vec<String>,
}

/// The networks that `allow_bind` and `allow_connect` entries must lie inside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub egress: Vec<IpNet>,
}

fn nets(list: &[String]) -> Result<Vec<IpNet>, NodeError> {
    list.iter()
        .map(|s| NetworkPolicy::parse_entry(s).map_err(NodeError::BadRequest))
        .collect()
}

impl Capability for Network {
    const KEYS: &'static [(&'static str, &'static str)] = &[
        (
            "allow_bind",
            "An IP or CIDR the guest may bind (TCP, UDP) and listen on; inside --allow-egress; repeatable",
        ),
        (
            "allow_connect",
            "An IP or CIDR the guest may connect to; inside --allow-egress; repeatable",
        ),
    ];
    type Grant = Grant;

    fn parse(&mut self, key: &str, value: &str) -> Result<(), String> {
        NetworkPolicy::parse_entry(value)?;
        let list = if key == "allow_bind" {
            &mut self.allow_bind
        } else {
            &mut self.allow_connect
        };
        list.push(value.to_owned());
        Ok(())
    }

    fn pairs(&self) -> Vec<(&'static str, String)> {
        let bind = self.allow_bind.iter().map(|a| ("allow_bind", a.clone()));
        let connect = self
            .allow_connect
            .iter()
            .map(|a| ("allow_connect", a.clone()));
        bind.chain(connect).collect()
    }

    fn check(&self, grant: &Grant) -> Result<(), NodeError> {
        for (key, list) in [
            ("allow_bind", &self.allow_bind),
            ("allow_connect", &self.allow_connect),
        ] {
            for (entry, net) in list.iter().zip(nets(list)?) {
                if !grant.egress.iter().any(|allowed| allowed.contains(&net)) {
                    return Err(NodeError::NotPermitted(format!(
                        "{key}={entry} is outside the networks this node allows (--allow-egress: {})",
                        list_or_none(&grant.egress)
                    )));
                }
            }
        }
        Ok(())
    }

    fn apply(&self, _grant: &Grant, _place: &Place, policy: &mut Policy) -> Result<(), NodeError> {
        policy.network = NetworkPolicy {
            bind: nets(&self.allow_bind)?,
            connect: nets(&self.allow_connect)?,
        };
        Ok(())
    }
}

/// `limes deploy` and `limes run`: `--allow-bind`, `--allow-connect`.
#[derive(Args, Debug, Clone, Default)]
// No argument group of its own: every capability's struct has this name.
#[group(skip)]
pub struct DeployArgs {
    /// Allow binding (TCP, UDP) to an IP or CIDR; repeatable [default: none]
    #[arg(long = "allow-bind", value_name = "IP/CIDR", value_parser = NetworkPolicy::parse_entry)]
    pub allow_bind: Vec<IpNet>,
    /// Allow connecting to an IP or CIDR; repeatable [default: none]
    #[arg(long = "allow-connect", value_name = "IP/CIDR", value_parser = NetworkPolicy::parse_entry)]
    pub allow_connect: Vec<IpNet>,
}

impl DeployArgs {
    /// The flags as manifest pairs.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let bind = self
            .allow_bind
            .iter()
            .map(|a| ("allow_bind", a.to_string()));
        let connect = self
            .allow_connect
            .iter()
            .map(|a| ("allow_connect", a.to_string()));
        bind.chain(connect).collect()
    }

    /// `limes run` takes the allowlists as given.
    pub fn apply_locally(&self, policy: &mut Policy) {
        policy.network = NetworkPolicy {
            bind: self.allow_bind.clone(),
            connect: self.allow_connect.clone(),
        };
    }
}

/// `limes serve`: `--allow-egress`.
#[derive(Args, Debug, Clone, Default)]
// No argument group of its own: every capability's struct has this name.
#[group(skip)]
pub struct GrantArgs {
    /// A network that manifests' allow_bind/allow_connect may name; repeatable [default: none]
    #[arg(long = "allow-egress", value_name = "CIDR", value_parser = NetworkPolicy::parse_entry)]
    pub allow_egress: Vec<IpNet>,
}

impl GrantArgs {
    /// The grant.
    pub fn grant(&self) -> Result<Grant, String> {
        Ok(Grant {
            egress: self.allow_egress.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(pairs: &[(&str, &str)]) -> Network {
        let mut n = Network::default();
        for (k, v) in pairs {
            n.parse(k, v).unwrap();
        }
        n
    }

    #[test]
    fn egress_must_lie_inside_a_granted_network() {
        let grant = Grant {
            egress: vec!["10.1.0.0/16".parse().unwrap()],
        };
        assert!(
            network(&[("allow_connect", "10.1.2.3")])
                .check(&grant)
                .is_ok()
        );
        assert!(
            network(&[("allow_bind", "10.1.2.0/24")])
                .check(&grant)
                .is_ok()
        );
        assert!(
            network(&[("allow_connect", "10.0.0.0/8")])
                .check(&grant)
                .is_err()
        );
        assert!(
            network(&[("allow_connect", "0.0.0.0/0")])
                .check(&grant)
                .is_err()
        );
        let err = network(&[("allow_connect", "10.0.0.1")])
            .check(&Grant::default())
            .unwrap_err();
        assert!(err.to_string().contains("allow_connect=10.0.0.1"), "{err}");
    }
}
