//! A node's state and operations: the deployed functions, their admission and their invocation.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use bytes::Bytes;
use limes_runtime::{Function, PoolConfig, Runtime, RuntimeConfig};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::artifacts::ArtifactStore;
use crate::cluster::{Call, Cluster, MAX_HOPS, NewVersion, Ran};
use crate::error::NodeError;
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::registry::{FunctionRecord, Registry, Version};

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
        }
    }
}

/// A deployed function's active version, ready to run.
pub struct Live {
    /// The loaded function.
    pub function: Function,
    /// Its version number.
    pub version: u32,
    /// One permit per invocation that may run at once.
    slots: Arc<Semaphore>,
}

/// An invocation let in by admission control; dropping it frees its slots.
pub struct Admitted {
    /// The function to run.
    pub live: Arc<Live>,
    _function_slot: OwnedSemaphorePermit,
    _node_slot: OwnedSemaphorePermit,
    node: Arc<Node>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.node.metrics.in_flight().dec();
    }
}

/// Where a call runs, as decided by [`Node::route`].
pub(crate) enum Route<'a> {
    /// Here, in the slot it was given.
    Here(Admitted),
    /// On another node of `cluster`; `reason` (`full` or `released`) labels the metric.
    Elsewhere {
        cluster: &'a Arc<dyn Cluster>,
        reason: &'static str,
    },
}

/// A Limes node.
pub struct Node {
    runtime: Runtime,
    registry: Registry,
    artifacts: ArtifactStore,
    live: RwLock<HashMap<String, Arc<Live>>>,
    capacity: Arc<Semaphore>,
    /// Serializes deploys, rollbacks and deletes, so the live table follows the registry's order.
    writes: tokio::sync::Mutex<()>,
    /// Serializes loading functions on first use, so that a burst of first calls compiles once.
    loading: tokio::sync::Mutex<()>,
    /// The cluster, once joined.
    cluster: OnceLock<Arc<dyn Cluster>>,
    /// Most instances running at once since [`Node::take_peak_in_flight`] was last called.
    peak: std::sync::atomic::AtomicU32,
    /// The node's metrics.
    pub metrics: Metrics,
    config: NodeConfig,
}

impl Node {
    /// Opens the node's state under `config.data_dir` and loads every deployed function from
    /// the AOT cache. A function that no longer loads (say, a preopened dir was removed) is
    /// logged and skipped; its registry entry is kept.
    pub fn open(config: NodeConfig) -> Result<Arc<Self>, NodeError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| NodeError::Storage(format!("creating {}: {e}", dir.display())))?;
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(dir.join("aot")),
            pool: config.pool.clone(),
            ..RuntimeConfig::default()
        })?;
        let artifacts = ArtifactStore::open(dir.join("artifacts"))
            .map_err(|e| NodeError::Storage(format!("opening the artifact store: {e}")))?;
        let registry = Registry::open(&dir.join("registry.redb"))?;
        let node = Arc::new(Self {
            capacity: Arc::new(Semaphore::new(config.capacity as usize)),
            runtime,
            registry,
            artifacts,
            live: RwLock::default(),
            writes: tokio::sync::Mutex::new(()),
            loading: tokio::sync::Mutex::new(()),
            cluster: OnceLock::new(),
            peak: Default::default(),
            metrics: Metrics::default(),
            config,
        });
        for record in node.registry.list()? {
            let version = record.active_version();
            match node.load_version(version) {
                Ok(live) => node.set_live(&record.name, Some(live)),
                Err(e) => {
                    tracing::error!(function = %record.name, version = version.version, error = %e, "could not load a deployed function")
                }
            }
        }
        Ok(node)
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The runtime the node runs functions on.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Joins `cluster`: from now on deploys are published to it, functions unknown here are
    /// looked up in it, and invocations without room here are forwarded through it. A node joins
    /// at most once.
    pub fn join(&self, cluster: Arc<dyn Cluster>) -> Result<(), NodeError> {
        self.cluster
            .set(cluster)
            .map_err(|_| NodeError::Conflict("the node has already joined a cluster".into()))
    }

    /// The cluster this node has joined, if any.
    pub fn cluster(&self) -> Option<&Arc<dyn Cluster>> {
        self.cluster.get()
    }

    /// Instances running now.
    pub fn in_flight(&self) -> u32 {
        self.config.capacity - self.capacity.available_permits() as u32
    }

    /// Most instances running at once since the previous call, which starts a new period. A
    /// cluster heartbeat reports this rather than a snapshot, which would miss short calls.
    pub fn take_peak_in_flight(&self) -> u32 {
        self.peak
            .swap(self.in_flight(), std::sync::atomic::Ordering::Relaxed)
            .max(self.in_flight())
    }

    fn load_version(&self, version: &Version) -> Result<Arc<Live>, NodeError> {
        let digest = version.digest.parse().map_err(NodeError::Storage)?;
        let bytes = self
            .artifacts
            .get(&digest)
            .map_err(|e| NodeError::Storage(format!("artifact {digest}: {e}")))?;
        self.load_bytes(version, &bytes)
    }

    fn load_bytes(&self, version: &Version, bytes: &[u8]) -> Result<Arc<Live>, NodeError> {
        let policy = version
            .manifest
            .to_policy()
            .map_err(NodeError::BadRequest)?;
        let function = self.runtime.load(bytes, policy)?;
        Ok(Arc::new(Live {
            function,
            version: version.version,
            slots: Arc::new(Semaphore::new(version.manifest.max_concurrency as usize)),
        }))
    }

    fn set_live(&self, name: &str, live: Option<Arc<Live>>) {
        let mut table = self.live.write().unwrap_or_else(|p| p.into_inner());
        match live {
            Some(live) => table.insert(name.to_owned(), live),
            None => table.remove(name),
        };
        self.metrics.set_functions(table.len());
    }

    fn loaded(&self, name: &str) -> Option<Arc<Live>> {
        let table = self.live.read().unwrap_or_else(|p| p.into_inner());
        table.get(name).cloned()
    }

    /// The active version of `name`, loaded on first use: a function deployed on another node
    /// of the cluster is looked up there, its artifact fetched and compiled here once.
    pub async fn live(self: &Arc<Self>, name: &str) -> Result<Arc<Live>, NodeError> {
        if let Some(live) = self.loaded(name) {
            return Ok(live);
        }
        validate_name(name)?;
        let Some(cluster) = self.cluster() else {
            return Err(NodeError::NotFound(name.to_owned()));
        };
        let _loading = self.loading.lock().await;
        if let Some(live) = self.loaded(name) {
            return Ok(live);
        }
        let record = match self.registry.get(name)? {
            Some(record) => record,
            None => {
                let record = cluster
                    .lookup(name.to_owned())
                    .await?
                    .ok_or_else(|| NodeError::NotFound(name.to_owned()))?;
                self.registry.put(&record)?;
                record
            }
        };
        let version = record.active_version().clone();
        let digest: limes_runtime::Digest = version.digest.parse().map_err(NodeError::Storage)?;
        let bytes = match self.artifacts.get(&digest) {
            Ok(bytes) => Bytes::from(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes = cluster.artifact(version.digest.clone()).await?;
                let node = self.clone();
                let stored = bytes.clone();
                blocking(move || {
                    node.artifacts
                        .put(&stored)
                        .map_err(|e| NodeError::Storage(format!("storing the artifact: {e}")))
                })
                .await?;
                bytes
            }
            Err(e) => return Err(NodeError::Storage(format!("artifact {digest}: {e}"))),
        };
        let node = self.clone();
        let live = blocking(move || node.load_bytes(&version, &bytes)).await?;
        self.set_live(name, Some(live.clone()));
        Ok(live)
    }

    /// Takes in the cluster's record of `name` (`None`: removed), as announced by another
    /// node. The function loads again on its next invocation if its active version changed.
    pub fn apply(&self, name: &str, record: Option<FunctionRecord>) -> Result<(), NodeError> {
        match record {
            Some(record) => {
                self.registry.put(&record)?;
                if self
                    .loaded(name)
                    .is_some_and(|live| live.version != record.active)
                {
                    self.set_live(name, None);
                }
            }
            None => {
                self.registry.remove(name)?;
                self.set_live(name, None);
            }
        }
        Ok(())
    }

    /// Deploys `component` as a new version of `name`. When this returns, the artifact and the
    /// registry entry are durable (in the cluster too, when the node has joined one), and the
    /// version serves invocations.
    pub async fn deploy(
        self: &Arc<Self>,
        name: &str,
        component: Bytes,
        manifest: Manifest,
    ) -> Result<Version, NodeError> {
        validate_name(name)?;
        let policy = manifest.to_policy().map_err(NodeError::BadRequest)?;
        let _writing = self.writes.lock().await;
        let node = self.clone();
        let stored = component.clone();
        // Compiling and syncing block; keep them off the async workers. Compiling first means a
        // component that is not valid is refused before anything is stored.
        let (function, digest) = blocking(move || {
            let function = node.runtime.load(&stored, policy)?;
            let digest = node
                .artifacts
                .put(&stored)
                .map_err(|e| NodeError::Storage(format!("storing the artifact: {e}")))?;
            Ok((function, digest.to_string()))
        })
        .await?;
        let kind = function.kind().as_str().to_owned();
        let version = match self.cluster() {
            Some(cluster) => {
                let new = NewVersion {
                    digest,
                    kind,
                    manifest: manifest.clone(),
                };
                let record = cluster.publish(name.to_owned(), new, component).await?;
                let version = record.active_version().clone();
                let node = self.clone();
                // A durable write (fsync): on the blocking pool, like the artifact's.
                blocking(move || Ok(node.registry.put(&record)?)).await?;
                version
            }
            None => {
                let (node, name, manifest) = (self.clone(), name.to_owned(), manifest.clone());
                blocking(move || Ok(node.registry.add_version(&name, digest, &kind, manifest)?))
                    .await?
            }
        };
        self.set_live(
            name,
            Some(Arc::new(Live {
                function,
                version: version.version,
                slots: Arc::new(Semaphore::new(manifest.max_concurrency as usize)),
            })),
        );
        tracing::info!(function = name, version = version.version, digest = %version.digest, "deployed");
        Ok(version)
    }

    /// Every deployed function.
    pub fn list(&self) -> Result<Vec<FunctionRecord>, NodeError> {
        Ok(self.registry.list()?)
    }

    /// The function `name` with all its versions.
    pub async fn get(&self, name: &str) -> Result<FunctionRecord, NodeError> {
        validate_name(name)?;
        if let Some(record) = self.registry.get(name)? {
            return Ok(record);
        }
        match self.cluster() {
            Some(cluster) => cluster.lookup(name.to_owned()).await?,
            None => None,
        }
        .ok_or_else(|| NodeError::NotFound(name.to_owned()))
    }

    /// Removes `name` and its versions (everywhere, in a cluster). Invocations already running
    /// finish.
    pub async fn remove(&self, name: &str) -> Result<(), NodeError> {
        validate_name(name)?;
        let _writing = self.writes.lock().await;
        let existed = match self.cluster() {
            Some(cluster) => {
                let existed = cluster.withdraw(name.to_owned()).await?;
                self.registry.remove(name)? || existed
            }
            None => self.registry.remove(name)?,
        };
        if !existed {
            return Err(NodeError::NotFound(name.to_owned()));
        }
        self.set_live(name, None);
        tracing::info!(function = name, "removed");
        Ok(())
    }

    /// Makes an earlier (or later) version of `name` the active one.
    pub async fn rollback(
        self: &Arc<Self>,
        name: &str,
        version: u32,
    ) -> Result<FunctionRecord, NodeError> {
        let no_such_version = || NodeError::NoSuchVersion {
            name: name.to_owned(),
            version,
        };
        let record = self.get(name).await?;
        if !record.versions.iter().any(|v| v.version == version) {
            return Err(no_such_version());
        }
        let _writing = self.writes.lock().await;
        let record = match self.cluster() {
            Some(cluster) => {
                let record = cluster.activate(name.to_owned(), version).await?;
                self.registry.put(&record)?;
                // Loads (fetching the artifact if need be) on the next invocation.
                self.set_live(name, None);
                record
            }
            None => {
                let node = self.clone();
                let target = record
                    .versions
                    .iter()
                    .find(|v| v.version == version)
                    .cloned();
                let target = target.ok_or_else(no_such_version)?;
                let live = blocking(move || node.load_version(&target)).await?;
                let record = self
                    .registry
                    .set_active(name, version)?
                    .ok_or_else(no_such_version)?;
                self.set_live(name, Some(live));
                record
            }
        };
        tracing::info!(function = name, version, "rolled back");
        Ok(record)
    }

    /// Lets an invocation of `name` in, or refuses it at once: never a queue. `reserve` node
    /// slots stay free for others (urgent functions, during an emergency).
    pub async fn admit(self: &Arc<Self>, name: &str, reserve: u32) -> Result<Admitted, NodeError> {
        let live = self.live(name).await?;
        if reserve > 0 && self.capacity.available_permits() as u32 <= reserve {
            self.metrics.rejected("reserved_for_urgent");
            return Err(NodeError::Full);
        }
        let Ok(function_slot) = live.slots.clone().try_acquire_owned() else {
            self.metrics.rejected("function_busy");
            return Err(NodeError::Busy(name.to_owned()));
        };
        let Ok(node_slot) = self.capacity.clone().try_acquire_owned() else {
            self.metrics.rejected("node_full");
            return Err(NodeError::Full);
        };
        self.metrics.in_flight().inc();
        self.peak
            .fetch_max(self.in_flight(), std::sync::atomic::Ordering::Relaxed);
        Ok(Admitted {
            live,
            _function_slot: function_slot,
            _node_slot: node_slot,
            node: self.clone(),
        })
    }

    /// Decides where a call of `name`, forwarded `hops` times so far, runs: here (admitted) or
    /// on another node. Past the hop limit a call runs here if it can, rather than fail.
    pub(crate) async fn route(
        self: &Arc<Self>,
        name: &str,
        hops: u32,
    ) -> Result<Route<'_>, NodeError> {
        let cluster = self.cluster();
        let placement = cluster.map(|c| c.placement(name)).unwrap_or_default();
        let released = placement.elsewhere && hops < MAX_HOPS;
        if !released {
            match self.admit(name, placement.reserve).await {
                Ok(admitted) => return Ok(Route::Here(admitted)),
                Err(NodeError::Busy(_) | NodeError::Full)
                    if cluster.is_some() && hops < MAX_HOPS => {}
                Err(e) => return Err(e),
            }
        }
        let cluster = cluster.ok_or(NodeError::Full)?;
        Ok(Route::Elsewhere {
            cluster,
            reason: if released { "released" } else { "full" },
        })
    }

    /// Runs one invocation of the `run` function `name` that has been forwarded `hops` times:
    /// here when the node has room (and, in an emergency, takes this function), otherwise on
    /// the nearest node of the cluster that has.
    pub async fn invoke(
        self: &Arc<Self>,
        name: &str,
        args: &str,
        hops: u32,
    ) -> Result<Ran, NodeError> {
        let (cluster, reason) = match self.route(name, hops).await? {
            Route::Here(admitted) => return self.run_admitted(admitted, name, args, hops).await,
            Route::Elsewhere { cluster, reason } => (cluster, reason),
        };
        let started = Instant::now();
        let mut ran = cluster
            .forward(Call {
                name: name.to_owned(),
                args: args.to_owned(),
                hops: hops + 1,
            })
            .await?;
        let added = started
            .elapsed()
            .saturating_sub(ran.cold_start + ran.execution);
        ran.forward_added = Some(added);
        self.metrics.forwarded(reason, added);
        Ok(ran)
    }

    async fn run_admitted(
        &self,
        admitted: Admitted,
        name: &str,
        args: &str,
        hops: u32,
    ) -> Result<Ran, NodeError> {
        let started = Instant::now();
        let outcome = admitted.live.function.invoke(args).await;
        match &outcome {
            Ok(i) => self
                .metrics
                .invocation(name, "ok", Some((i.cold_start, i.execution))),
            Err(e) => {
                tracing::debug!(function = name, error = %e, elapsed_us = started.elapsed().as_micros() as u64, "invocation failed");
                self.metrics.invocation(name, e.kind(), None);
            }
        }
        let invocation = outcome?;
        Ok(Ran {
            result: invocation.result,
            node: self.config.node_id.clone(),
            version: admitted.live.version,
            cold_start: invocation.cold_start,
            execution: invocation.execution,
            hops,
            forward_added: None,
        })
    }
}

/// Runs blocking work on the blocking pool; a panic there becomes a storage error.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| NodeError::Storage(format!("a blocking task failed: {e}")))?
}

/// Function names: 1–63 of `a-z 0-9 - _`, starting with a letter or digit, so that a name is
/// safe in a URL path, a file name, a metric label and a NATS subject.
pub fn validate_name(name: &str) -> Result<(), NodeError> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(NodeError::InvalidName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        for good in ["sort", "a", "img-2_x"] {
            assert!(super::validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "Sort", "a/b", "a.b", &"x".repeat(64)] {
            assert!(super::validate_name(bad).is_err(), "{bad}");
        }
    }
}
