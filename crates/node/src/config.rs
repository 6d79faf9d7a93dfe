//! A node's configuration: what `limes serve`'s flags set, with their defaults.

use std::path::PathBuf;
use std::time::Duration;

use limes_runtime::PoolConfig;

use crate::admission::AdmissionConfig;
use crate::auth::AuthMode;
use crate::capabilities::Grants;
use crate::signing::TrustedKeys;

/// Settings of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where the registry, the artifacts and the AOT cache live.
    pub data_dir: PathBuf,
    /// Instances the node runs at once, over all functions; past it invocations get 429.
    ///
    /// Default 64: four times the default per-function limit, and well inside the runtime's
    /// instance pool, so that admission refuses work before the pool would.
    pub capacity: u32,
    /// Largest request body accepted (components and invocation arguments); past it, 413.
    ///
    /// Default 32 MiB: larger than any reasonable component (an 18 MB Python component fits).
    pub body_limit: usize,
    /// The runtime's instance pool.
    pub pool: PoolConfig,
    /// The node's name in a cluster and in every response's `x-limes-node`.
    ///
    /// Default `local`: a node that runs alone needs no name.
    pub node_id: String,
    /// How requests are checked.
    ///
    /// Default [`AuthMode::Tokens`]: secure by default; `none` must be asked for, and only on
    /// loopback.
    pub auth: AuthMode,
    /// The most a manifest may ask for (host directories, network egress).
    ///
    /// Default: nothing beyond each function's own directory.
    pub grants: Grants,
    /// Keys whose signatures this node requires on every component; `None` runs unsigned
    /// components.
    ///
    /// Default `None`: signing is the operator's choice, per node.
    pub trusted_keys: Option<TrustedKeys>,
    /// Run slots and queue deadlines: see [`crate::admission`].
    pub admission: AdmissionConfig,
    /// Bounds on HTTP connections: see [`crate::server`].
    pub connections: ConnectionLimits,
    /// The OCI registries components are pulled from: credentials, CAs, plain-HTTP ones.
    ///
    /// Default: anonymous, HTTPS with the system's CAs only.
    pub registries: crate::oci::RegistryConfig,
}

impl NodeConfig {
    /// The defaults, with state under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            capacity: 64,
            body_limit: 32 << 20,
            pool: PoolConfig::default(),
            node_id: "local".into(),
            auth: AuthMode::Tokens,
            grants: Grants::default(),
            trusted_keys: None,
            admission: AdmissionConfig::default(),
            connections: Default::default(),
            registries: Default::default(),
        }
    }
}

/// Limits on the node's connections; see the [`crate::server`] documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once, TLS handshakes included; past it new ones are closed.
    ///
    /// Default 1024: the usual soft limit on a process's file descriptors is 1024 and the node
    /// needs some for its files, so this is meant to be raised together with `LimitNOFILE`.
    pub max_connections: usize,
    /// Of [`Self::max_connections`], how many are kept for `GET /healthz` and admin requests.
    ///
    /// Default 16.
    pub reserved: usize,
    /// How long a connection may take to send a request's headers, and how long an idle
    /// keep-alive connection stays open.
    ///
    /// Default 10 s: a client on a slow field link still sends a few hundred bytes of headers
    /// well within it.
    pub header_read_timeout: Duration,
    /// How long a TLS handshake may take.
    ///
    /// Default 10 s.
    pub handshake_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            reserved: 16,
            header_read_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}
