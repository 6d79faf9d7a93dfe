//! A function's life on a node: deploy, load (on first use, in a cluster), roll back, remove.
//!
//! Every version is vetted before it runs, wherever it came from: its manifest must stay within
//! the node's [`Grants`](crate::capabilities::Grants) and, on a node with trusted keys, its component
//! must carry a signature one of them made. A version that arrives through the cluster and fails
//! is not run; the node says so in its log and in `limes_refused_versions_total`.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::cluster::NewVersion;
use crate::deploys::{Progress, Stage};
use crate::error::NodeError;
use crate::manifest::Manifest;
use crate::node::{Live, Node, blocking, validate_name};
use crate::registry::{FunctionRecord, Version};
use limes_runtime::kv::KvBackend as _;

/// A deploy as the API receives it.
pub struct Deploy {
    /// The component's bytes.
    pub component: Bytes,
    /// Its manifest.
    pub manifest: Manifest,
    /// Its detached signature, hex, if sent.
    pub signature: Option<String>,
    /// The name of the token that sent it.
    pub deployed_by: Option<String>,
    /// An `oci://` reference the node pulls the component from; `component` is then empty.
    pub source: Option<String>,
}

impl Deploy {
    /// An unsigned deploy of `component` with `manifest`, by nobody in particular (a program
    /// that drives a node directly, such as a benchmark).
    pub fn new(component: Bytes, manifest: Manifest) -> Self {
        Self {
            component,
            manifest,
            signature: None,
            deployed_by: None,
            source: None,
        }
    }
}

impl Node {
    /// The private directory of function `name`, which its manifest may preopen as `@data`.
    pub fn private_dir(&self, name: &str) -> PathBuf {
        // Below the held-open `functions` dir's canonical path, which the runtime resolves the
        // mount against (a relative or symlinked --data-dir would not match it).
        self.functions_dir.path().join(name)
    }

    /// Whether `name` may be invoked without a token. Unknown functions are not public. A
    /// function this node has not heard of is looked up in the cluster (a node follows only the
    /// changes made since it joined).
    pub async fn is_public(self: &Arc<Self>, name: &str) -> bool {
        if let Some(live) = self.loaded(name) {
            return live.public;
        }
        self.get(name)
            .await
            .is_ok_and(|r| r.active_version().manifest.public)
    }

    /// Checks that `manifest` stays within this node's grants and, on a node with trusted keys,
    /// that `signature` verifies for the component with `digest`. Returns the trusted key's
    /// name. A refusal is counted.
    fn vet(
        &self,
        manifest: &Manifest,
        digest: &str,
        signature: Option<&str>,
    ) -> Result<Option<String>, NodeError> {
        let verdict = manifest
            .capabilities
            .check(&self.config().grants)
            .and_then(|()| {
                self.config()
                    .trusted_keys
                    .as_ref()
                    .map(|keys| keys.verify(digest, signature))
                    .transpose()
            });
        if let Err(e) = &verdict {
            self.metrics.refused_version(e.kind());
        }
        verdict
    }

    /// The digest of the component that serves `version` on this node, when it knows it: the
    /// deployed component, or its pre-initialized form.
    ///
    /// A node that requires signatures does not take a record's `preinit` on trust: any cluster
    /// member can write one naming an unsigned component the store holds, and the signature
    /// covers only the deployed component. It runs only a form it derived itself from the
    /// signed component ([`Node::derive`]); `None` until it has.
    fn serving(&self, version: &Version) -> Result<Option<String>, NodeError> {
        match (&self.config().trusted_keys, &version.preinit) {
            (Some(_), Some(_)) => Ok(self.registry.derived(&derivation_key(version))?),
            _ => Ok(Some(runs(version).to_owned())),
        }
    }

    pub(crate) fn load_version(
        &self,
        name: &str,
        version: &Version,
    ) -> Result<Arc<Live>, NodeError> {
        let serving = self.serving(version)?.ok_or_else(|| {
            NodeError::Storage(format!(
                "{name} version {} is not yet pre-initialized by this node, which runs only what \
                 it derives from signed components; it will be on its first invocation",
                version.version
            ))
        })?;
        let digest = serving.parse().map_err(NodeError::Storage)?;
        let bytes = self
            .artifacts
            .get(&digest)
            .map_err(|e| NodeError::Storage(format!("artifact {digest}: {e}")))?;
        self.load_bytes(name, version, &serving, &bytes)
    }

    /// Vets and compiles (or loads from the AOT cache) `version` of `name`, served by `bytes`,
    /// which must have the digest `serving`.
    fn load_bytes(
        &self,
        name: &str,
        version: &Version,
        serving: &str,
        bytes: &[u8],
    ) -> Result<Arc<Live>, NodeError> {
        // The digest is recomputed: what runs must be what was asked for, the deployed
        // component or its pre-initialized form; the signature is of the deployed component.
        let digest = limes_runtime::Digest::of(bytes).to_string();
        if digest != serving {
            return Err(NodeError::Storage(format!(
                "the artifact of {name} version {} has digest {digest}, not {serving}",
                version.version,
            )));
        }
        if let Err(e) = self.vet(
            &version.manifest,
            &version.digest,
            version.signature.as_deref(),
        ) {
            tracing::warn!(function = name, version = version.version, error = %e, "refusing to run a version");
            return Err(e);
        }
        let function = self
            .runtime
            .load(bytes, self.policy(name, &version.manifest)?)?;
        Ok(Live::new(function, version.version, &version.manifest))
    }

    /// The runtime policy of `manifest` for function `name`: its own limits, and each
    /// capability's part within this node's grants (which may create its private directory).
    fn policy(&self, name: &str, manifest: &Manifest) -> Result<limes_runtime::Policy, NodeError> {
        let private_dir = self.private_dir(name);
        let place = crate::capabilities::Place {
            name,
            private_dir: &private_dir,
            functions_dir: &self.functions_dir,
        };
        let mut policy = manifest.to_policy();
        manifest
            .capabilities
            .apply(&self.config().grants, &place, &mut policy)?;
        Ok(policy)
    }

    fn remove_private_dir(&self, name: &str) {
        let dir = self.private_dir(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(function = name, dir = %dir.display(), error = %e, "could not remove the function's directory")
            }
        }
    }

    /// The active version of `name`, loaded on first use: a function deployed on another node
    /// of the cluster is looked up there, its artifact fetched and compiled here once.
    pub async fn live(self: &Arc<Self>, name: &str) -> Result<Arc<Live>, NodeError> {
        if let Some(live) = self.loaded(name) {
            return Ok(live);
        }
        validate_name(name)?;
        // Alone, a node loads a function here from the local store only (also one that needs
        // a pre-initialized version it has yet to derive, as after an upgrade).
        let cluster = self.cluster();
        let _loading = self.loading.lock().await;
        if let Some(live) = self.loaded(name) {
            return Ok(live);
        }
        let record = match (self.registry.get(name)?, cluster) {
            (Some(record), _) => record,
            (None, Some(cluster)) => {
                let record = cluster
                    .lookup(name.to_owned())
                    .await?
                    .ok_or_else(|| NodeError::NotFound(name.to_owned()))?;
                self.registry.put(&record)?;
                // New to this node, as by `apply`: it may bring a trigger to follow.
                self.changed(name);
                record
            }
            (None, None) => return Err(NodeError::NotFound(name.to_owned())),
        };
        let version = record.active_version().clone();
        let (serving, bytes) = match self.serving(&version)? {
            Some(serving) => {
                let bytes = self.artifact(cluster, &serving).await?;
                (serving, bytes)
            }
            None => {
                let original = self.artifact(cluster, &version.digest).await?;
                self.derive(name, &version, original).await?
            }
        };
        let (node, name_owned) = (self.clone(), name.to_owned());
        let live =
            blocking(move || node.load_bytes(&name_owned, &version, &serving, &bytes)).await?;
        self.set_live_if_current(name, live.clone())?;
        Ok(live)
    }

    /// Loads every deployed function not loaded yet, one after the other, so that first calls
    /// after a start do not pay for loading. The node serves meanwhile: a call that comes first
    /// loads its function itself. A function that does not load (say, a preopened dir was
    /// removed) is logged and skipped; its registry entry is kept.
    pub async fn warm_up(self: &Arc<Self>) {
        let node = self.clone();
        let names = match blocking(move || Ok(node.registry.list()?)).await {
            Ok(records) => records.into_iter().map(|r| r.name),
            Err(e) => {
                tracing::error!(error = %e, "cannot list the deployed functions to load them");
                return;
            }
        };
        for name in names {
            if let Err(e) = self.live(&name).await {
                tracing::error!(function = %name, error = %e, "could not load a deployed function");
            }
        }
    }

    /// The artifact with `digest`, from the store here or else from `cluster` (then kept here).
    async fn artifact(
        self: &Arc<Self>,
        cluster: Option<&Arc<dyn crate::Cluster>>,
        digest: &str,
    ) -> Result<Bytes, NodeError> {
        let parsed: limes_runtime::Digest = digest.parse().map_err(NodeError::Storage)?;
        match (self.artifacts.get(&parsed), cluster) {
            (Ok(bytes), _) => Ok(Bytes::from(bytes)),
            (Err(e), Some(cluster)) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes = cluster.artifact(digest.to_owned()).await?;
                let node = self.clone();
                let stored = bytes.clone();
                blocking(move || {
                    node.artifacts
                        .put(&stored)
                        .map_err(|e| NodeError::Storage(format!("storing the artifact: {e}")))
                })
                .await?;
                Ok(bytes)
            }
            (Err(e), _) => Err(NodeError::Storage(format!("artifact {digest}: {e}"))),
        }
    }

    /// Pre-initializes `version` of `name` here from its deployed component `original`, after
    /// vetting it (its signature included), stores the result and notes it as derived by this
    /// node. Returns its digest and bytes.
    async fn derive(
        self: &Arc<Self>,
        name: &str,
        version: &Version,
        original: Bytes,
    ) -> Result<(String, Bytes), NodeError> {
        let digest = limes_runtime::Digest::of(&original).to_string();
        if digest != version.digest {
            return Err(NodeError::Storage(format!(
                "the artifact of {name} version {} has digest {digest}, not {}",
                version.version, version.digest
            )));
        }
        self.vet(
            &version.manifest,
            &version.digest,
            version.signature.as_deref(),
        )?;
        let policy = self.policy(name, &version.manifest)?;
        let (node, key) = (self.clone(), derivation_key(version));
        tracing::info!(
            function = name,
            version = version.version,
            "pre-initializing a replicated version here"
        );
        blocking(move || {
            let bytes = tokio::runtime::Handle::current()
                .block_on(node.runtime.preinit(&original, &policy))
                .map_err(|e| {
                    NodeError::BadRequest(format!("pre-initializing the function: {e}"))
                })?;
            let derived = node
                .artifacts
                .put(&bytes)
                .map_err(|e| NodeError::Storage(format!("storing the artifact: {e}")))?
                .to_string();
            node.registry.set_derived(&key, &derived)?;
            Ok((derived, Bytes::from(bytes)))
        })
        .await
    }

    /// Takes in the cluster's record of `name` (`None`: removed), as announced by another
    /// node. The function loads again on its next invocation if its active version changed.
    pub fn apply(&self, name: &str, record: Option<FunctionRecord>) -> Result<(), NodeError> {
        match record {
            Some(record) => {
                self.registry.put(&record)?;
                // A function new to this node (or a changed one) may bring a trigger.
                self.changed(name);
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
                self.remove_private_dir(name);
            }
        }
        Ok(())
    }

    /// Deploys a new version of `name`. When this returns, the artifact and the registry entry
    /// are durable (in the cluster too, when the node has joined one), and the version serves
    /// invocations.
    pub async fn deploy(
        self: &Arc<Self>,
        name: &str,
        deploy: Deploy,
    ) -> Result<Version, NodeError> {
        self.deploy_with(name, deploy, &Progress::untracked(name))
            .await
    }

    /// [`Node::deploy`], reporting each stage it enters to `progress`.
    pub async fn deploy_with(
        self: &Arc<Self>,
        name: &str,
        deploy: Deploy,
        progress: &Progress,
    ) -> Result<Version, NodeError> {
        validate_name(name)?;
        let Deploy {
            mut component,
            manifest,
            signature,
            deployed_by,
            mut source,
        } = deploy;
        // A component in a registry: its manifest first, so that everything a deploy can be
        // refused for is checked before a byte of the component is fetched. One turn among
        // the node's few pulls is held until the component is stored.
        let _turn = match &source {
            Some(_) => Some(self.registries.turn().await),
            None => None,
        };
        let artifact = match source.take() {
            Some(reference) => {
                progress.enter(Stage::Pull);
                Some(
                    self.registries
                        .resolve(&reference, self.config().body_limit as u64)
                        .await?,
                )
            }
            None => None,
        };
        let digest = match &artifact {
            Some(artifact) => artifact.component_digest().to_owned(),
            None => limes_runtime::Digest::of(&component).to_string(),
        };
        let signed_by = self.vet(&manifest, &digest, signature.as_deref())?;
        manifest
            .triggers
            .check(&self.config().grants, self.cluster().is_some())
            .inspect_err(|e| self.metrics.refused_version(e.kind()))?;
        let policy = self.policy(name, &manifest)?;
        if let Some(artifact) = artifact {
            // A pull that fails leaves the active version serving, as any refused deploy does.
            component = self.registries.fetch(&artifact).await?;
            source = Some(artifact.source);
        }
        let _writing = self.writes.lock().await;
        let (node, stored, stages) = (self.clone(), component.clone(), progress.clone());
        let key = derivation_key_of(&digest, &manifest_text(&manifest));
        // Compiling, initializing and syncing block; keep them off the async workers. They come
        // before anything is stored, so that a component that is not valid, or whose
        // initialization step fails, leaves nothing behind. A function with an initialization
        // step runs it now, once, and is served by what it leaves: a component of its own,
        // content-addressed beside the original. The original is then stored, not compiled.
        let (function, initialized) = blocking(move || {
            let initialized = if limes_runtime::has_init(&stored) {
                stages.enter(Stage::PreInitialize);
                let bytes = tokio::runtime::Handle::current()
                    .block_on(node.runtime.preinit(&stored, &policy))
                    .map_err(|e| {
                        NodeError::BadRequest(format!("pre-initializing the function: {e}"))
                    })?;
                Some(Bytes::from(bytes))
            } else {
                None
            };
            stages.enter(Stage::Compile);
            let function = node
                .runtime
                .load(initialized.as_deref().unwrap_or(&stored), policy)?;
            stages.enter(Stage::Store);
            let store = |bytes: &[u8]| {
                node.artifacts
                    .put(bytes)
                    .map_err(|e| NodeError::Storage(format!("storing the artifact: {e}")))
            };
            store(&stored)?;
            // Storing hashes the initialized component; its digest is the one the record keeps.
            let initialized = initialized
                .map(|bytes| Ok::<_, NodeError>((store(&bytes)?.to_string(), bytes)))
                .transpose()?;
            if let Some((derived, _)) = &initialized {
                node.registry.set_derived(&key, derived)?;
            }
            Ok((function, initialized))
        })
        .await?;
        let new = NewVersion {
            digest,
            kind: function.kind().as_str().to_owned(),
            manifest: manifest.clone(),
            signature,
            signed_by,
            deployed_by,
            preinit: initialized.as_ref().map(|(digest, _)| digest.clone()),
            source,
        };
        let version = match self.cluster() {
            Some(cluster) => {
                progress.enter(Stage::Replicate);
                if let Some((digest, bytes)) = initialized {
                    cluster.put_artifact(digest, bytes).await?;
                }
                let is_durable = manifest.triggers.message.is_durable();
                if is_durable {
                    cluster
                        .prepare_durable(name.to_owned(), manifest.triggers.clone())
                        .await?;
                }
                let record = match cluster.publish(name.to_owned(), new, component).await {
                    Ok(record) => record,
                    Err(e) => {
                        // Nothing half-created: a new function's consumer goes with the deploy.
                        if is_durable
                            && self.registry.get(name)?.is_none()
                            && let Err(e) = cluster.forget_durable(name.to_owned()).await
                        {
                            tracing::warn!(function = name, error = %e, "could not remove the consumer of a failed deploy");
                        }
                        return Err(e);
                    }
                };
                let version = record.active_version().clone();
                let node = self.clone();
                // A durable write (fsync): on the blocking pool, like the artifact's.
                blocking(move || Ok(node.registry.put(&record)?)).await?;
                version
            }
            None => {
                let (node, name) = (self.clone(), name.to_owned());
                blocking(move || Ok(node.registry.add_version(&name, new)?)).await?
            }
        };
        self.set_live(name, Some(Live::new(function, version.version, &manifest)));
        tracing::info!(function = name, version = version.version, digest = %version.digest, preinitialized = version.preinit.is_some(), "deployed");
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

    /// Removes `name`, its versions and its private directory (everywhere, in a cluster).
    /// Invocations already running finish.
    pub async fn remove(&self, name: &str, keep_state: bool) -> Result<(), NodeError> {
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
        self.remove_private_dir(name);
        if !keep_state {
            self.kv
                .drop_namespace(name)
                .await
                .map_err(|e| NodeError::Storage(format!("removing the stores of {name}: {e}")))?;
        }
        self.metrics.stats().forget(name);
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
                let name_owned = name.to_owned();
                let live = blocking(move || node.load_version(&name_owned, &target)).await?;
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
}

/// The digest of the component that serves `version`: its pre-initialized form if it has one.
fn runs(version: &Version) -> &str {
    version.preinit.as_deref().unwrap_or(&version.digest)
}

/// What this node's derivations are noted under: the deployed component and the manifest it
/// was initialized with (an initialization step sees the function's env and dirs).
fn derivation_key(version: &Version) -> String {
    derivation_key_of(&version.digest, &manifest_text(&version.manifest))
}

fn derivation_key_of(digest: &str, manifest: &str) -> String {
    limes_runtime::Digest::of(format!("{digest}\n{manifest}").as_bytes()).to_string()
}

fn manifest_text(manifest: &Manifest) -> String {
    serde_json::to_string(manifest).unwrap_or_default()
}
