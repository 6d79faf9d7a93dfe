//! HTTP: a `wasi:http/proxy` function serves requests at `/fn/{name}/…`; its own outgoing
//! requests are refused (it reaches the network only through `wasi:sockets`, where the network
//! allowlists apply; see `limes_runtime`'s host).
//!
//! The manifest's one key, `pass_headers`, names the credential headers (`authorization`,
//! `cookie`, …) the function receives from its callers; by default they are removed before a
//! request reaches it (see [`crate::guest_headers`]). No operator grant bounds it: it gives a
//! function nothing of the node's, only what its own callers send.

use clap::Args;
use limes_runtime::Policy;
use serde::{Deserialize, Serialize};

use super::{Capability, Place};
use crate::error::NodeError;

/// The manifest's section: the credential headers passed on, lowercase.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Http {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pass_headers: Vec<String>,
}

impl Capability for Http {
    const KEYS: &'static [(&'static str, &'static str)] = &[(
        "pass_headers",
        "Credential headers a wasi:http function receives from its callers (authorization, cookie, …), comma-separated; none by default",
    )];
    type Grant = ();

    fn parse(&mut self, _key: &str, value: &str) -> Result<(), String> {
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            self.pass_headers
                .push(crate::guest_headers::check_pass_header(name)?);
        }
        Ok(())
    }

    fn pairs(&self) -> Vec<(&'static str, String)> {
        self.pass_headers
            .iter()
            .map(|h| ("pass_headers", h.clone()))
            .collect()
    }

    fn check(&self, _grant: &()) -> Result<(), NodeError> {
        Ok(())
    }

    /// Nothing at instantiation: the headers are chosen per request, by the node's front door.
    fn apply(&self, _grant: &(), _place: &Place, _policy: &mut Policy) -> Result<(), NodeError> {
        Ok(())
    }
}

/// `limes deploy`: `--pass-header`.
#[derive(Args, Debug, Clone, Default)]
// No argument group of its own: every capability's struct has this name.
#[group(skip)]
pub struct DeployArgs {
    /// A credential header a wasi:http function receives from its callers (authorization,
    /// cookie, …); repeatable [default: none: they are removed]
    #[arg(long = "pass-header", value_name = "NAME")]
    pub pass_headers: Vec<String>,
}

impl DeployArgs {
    /// The flags as manifest pairs.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        self.pass_headers
            .iter()
            .map(|h| ("pass_headers", h.clone()))
            .collect()
    }
}
