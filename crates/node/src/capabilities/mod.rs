//! The host surface: every capability a node can grant a function, one module each.
//!
//! | capability | what a guest gets (linked by `limes-runtime`) | manifest keys | the operator's grant (`limes serve`) | module |
//! | --- | --- | --- | --- | --- |
//! | files | `wasi:filesystem` preopens | `dir` | `--allow-host-dir` | [`files`] |
//! | network | `wasi:sockets`, inside allowlists | `allow_bind`, `allow_connect` | `--allow-egress` | [`network`] |
//! | HTTP | `wasi:http` requests in; none out | `pass_headers` | — | [`http`] |
//! | key-value | `wasi:keyvalue` (draft2 and draft) | `kv`, `kv_shared` | `--allow-kv-shared`, `--kv-max-*` | [`kv`] |
//! | messaging | `wasi:messaging` `producer`, inside its subjects; its triggers' subjects | `publish` (and the triggers' keys) | `--allow-subject` | [`messaging`] |
//!
//! Each module owns, for its capability: its section of the manifest (typed, parsed once), the
//! operator's grant and the check of a manifest against it, its part of one function's runtime
//! policy, and its flags (for `limes deploy` and `limes run`, and for `limes serve`). What a
//! capability links into a component and the state of one instance are the runtime's, in its
//! own module there (`limes_runtime::kv`, and WASI's). The aggregates below are the only place
//! that lists them all: adding a capability is its module, a line in each, and its runtime part.

pub mod files;
pub mod http;
pub mod kv;
pub mod messaging;
pub mod network;

use std::path::Path;

use clap::Args;
use limes_runtime::{Anchor, Policy};
use serde::{Deserialize, Serialize};

use crate::error::NodeError;

/// One host capability, as the node grants it.
pub trait Capability {
    /// Its manifest keys, each with what it means (shown by the OpenAPI document).
    const KEYS: &'static [(&'static str, &'static str)];
    /// The operator's settings that bound it.
    type Grant;

    /// Takes one `key=value` pair of its keys.
    fn parse(&mut self, key: &str, value: &str) -> Result<(), String>;
    /// Checks the section as a whole, once every pair is in.
    fn finish(&self) -> Result<(), String> {
        Ok(())
    }
    /// Its pairs, as [`Capability::parse`] takes them back.
    fn pairs(&self) -> Vec<(&'static str, String)>;
    /// Refuses what `grant` does not allow, with [`NodeError::NotPermitted`] naming the flag.
    fn check(&self, grant: &Self::Grant) -> Result<(), NodeError>;
    /// Adds its part to the runtime policy of the function at `place`.
    fn apply(
        &self,
        grant: &Self::Grant,
        place: &Place,
        policy: &mut Policy,
    ) -> Result<(), NodeError>;
}

/// Where a function lives on this node: what a capability may need to build its policy.
pub struct Place<'a> {
    /// The function's name.
    pub name: &'a str,
    /// Its private directory (see [`files::PRIVATE_DIR`]).
    pub private_dir: &'a Path,
    /// The held-open directory the private directories lie below.
    pub functions_dir: &'a Anchor,
}

/// Every capability's section of a manifest. Flattened into it: the keys stay top-level.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sections {
    #[serde(flatten)]
    pub files: files::Files,
    #[serde(flatten)]
    pub network: network::Network,
    #[serde(flatten)]
    pub http: http::Http,
    #[serde(flatten)]
    pub kv: kv::Kv,
    #[serde(flatten)]
    pub messaging: messaging::Messaging,
}

/// Every capability's grant: the most a manifest may ask for on this node. The default grants
/// nothing beyond each function's own directory and stores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub files: files::Grant,
    pub network: network::Grant,
    pub kv: kv::Grant,
    pub messaging: messaging::Grant,
}

impl Sections {
    /// Every capability's keys, with what each means.
    pub fn keys() -> impl Iterator<Item = (&'static str, &'static str)> {
        [
            files::Files::KEYS,
            network::Network::KEYS,
            http::Http::KEYS,
            kv::Kv::KEYS,
            messaging::Messaging::KEYS,
        ]
        .into_iter()
        .flatten()
        .copied()
    }

    /// Takes `key=value` if a capability owns `key`; `None` if none does.
    pub fn parse(&mut self, key: &str, value: &str) -> Option<Result<(), String>> {
        let owns = |keys: &[(&str, &str)]| keys.iter().any(|(k, _)| *k == key);
        Some(if owns(files::Files::KEYS) {
            self.files.parse(key, value)
        } else if owns(network::Network::KEYS) {
            self.network.parse(key, value)
        } else if owns(http::Http::KEYS) {
            self.http.parse(key, value)
        } else if owns(kv::Kv::KEYS) {
            self.kv.parse(key, value)
        } else if owns(messaging::Messaging::KEYS) {
            self.messaging.parse(key, value)
        } else {
            return None;
        })
    }

    /// Checks each section as a whole.
    pub fn finish(&self) -> Result<(), String> {
        self.files.finish()?;
        self.network.finish()?;
        self.http.finish()?;
        self.kv.finish()?;
        self.messaging.finish()
    }

    /// Every section's pairs.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = self.files.pairs();
        pairs.extend(self.network.pairs());
        pairs.extend(self.http.pairs());
        pairs.extend(self.kv.pairs());
        pairs.extend(self.messaging.pairs());
        pairs
    }

    /// Whether every section stays within its grant; the first refusal names its flag.
    pub fn check(&self, grants: &Grants) -> Result<(), NodeError> {
        self.files.check(&grants.files)?;
        self.network.check(&grants.network)?;
        self.http.check(&())?;
        self.kv.check(&grants.kv)?;
        self.messaging.check(&grants.messaging)
    }

    /// Adds every section's part to the runtime policy of the function at `place`.
    pub fn apply(
        &self,
        grants: &Grants,
        place: &Place,
        policy: &mut Policy,
    ) -> Result<(), NodeError> {
        self.files.apply(&grants.files, place, policy)?;
        self.network.apply(&grants.network, place, policy)?;
        self.http.apply(&(), place, policy)?;
        self.kv.apply(&grants.kv, place, policy)?;
        self.messaging.apply(&grants.messaging, place, policy)
    }
}

/// Every capability's flags of `limes deploy` and `limes run`.
#[derive(Args, Debug, Clone, Default)]
// No argument group of its own: every capability's struct has this name.
#[group(skip)]
pub struct DeployArgs {
    #[command(flatten)]
    pub files: files::DeployArgs,
    #[command(flatten)]
    pub network: network::DeployArgs,
    #[command(flatten)]
    pub http: http::DeployArgs,
    #[command(flatten)]
    pub kv: kv::DeployArgs,
    #[command(flatten)]
    pub messaging: messaging::DeployArgs,
}

impl DeployArgs {
    /// The flags given, as manifest pairs (the node API's query parameters).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = self.files.pairs();
        pairs.extend(self.network.pairs());
        pairs.extend(self.http.pairs());
        pairs.extend(self.kv.pairs());
        pairs.extend(self.messaging.pairs());
        pairs
    }

    /// What `limes run` grants, on its user's own machine: exactly the flags, unbounded.
    pub fn apply_locally(&self, policy: &mut Policy) {
        self.files.apply_locally(policy);
        self.network.apply_locally(policy);
        self.kv.apply_locally(policy);
        self.messaging.apply_locally(policy);
    }
}

/// Every capability's flags of `limes serve`: the operator's grants.
#[derive(Args, Debug, Clone, Default)]
// No argument group of its own: every capability's struct has this name.
#[group(skip)]
pub struct GrantArgs {
    #[command(flatten)]
    pub files: files::GrantArgs,
    #[command(flatten)]
    pub network: network::GrantArgs,
    #[command(flatten)]
    pub kv: kv::GrantArgs,
    #[command(flatten)]
    pub messaging: messaging::GrantArgs,
}

impl GrantArgs {
    /// The grants these flags describe; an error names the flag.
    pub fn grants(&self) -> Result<Grants, String> {
        Ok(Grants {
            files: self.files.grant()?,
            network: self.network.grant()?,
            kv: self.kv.grant()?,
            messaging: self.messaging.grant()?,
        })
    }
}

/// `items` joined with commas, or `none`.
pub(crate) fn list_or_none<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
