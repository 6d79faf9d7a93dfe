//! A node's state, and the admission and invocation of its functions. Deploys, rollbacks,
//! removals and loading are in [`crate::lifecycle`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use limes_runtime::{Anchor, Function, Runtime, RuntimeConfig};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::admission::{Pool, Priority, RunSlot, Scheduler};
use crate::artifacts::ArtifactStore;
use crate::audit::{AuditLog, Change};
use crate::auth::AuthMode;
use crate::auth::tokens::TokenStore;
use crate::cluster::{Call, Cluster, MAX_HOPS, Placement, Ran};
use crate::error::NodeError;
use crate::guests::{GuestThreads, RecentTime};
use crate::metrics::Metrics;
use crate::registry::Registry;

pub use crate::config::{ConnectionLimits, NodeConfig};

/// A deployed function's active version, ready to run.
pub struct Live {
    /// The loaded function.
    pub function: Function,
    /// Its version number.
    pub version: u32,
    /// Whether it may be invoked without a token.
    pub public: bool,
    /// Its class when the node is busy.
    pub priority: Priority,
    /// The credential headers its manifest lets it see (see [`crate::guest_headers`]).
    pub pass_headers: Vec<String>,
    /// One permit per invocation that may run at once.
    pub(crate) slots: Arc<Semaphore>,
    /// How long its invocations usually take: short ones run inline.
    pub(crate) recent: RecentTime,
}

impl Live {
    /// Version `version` of a function, loaded as `function`, with its `manifest`.
    pub(crate) fn new(function: Function, version: u32, manifest: &crate::Manifest) -> Arc<Self> {
        Arc::new(Self {
            function,
            version,
            public: manifest.public,
            priority: manifest.priority,
            pass_headers: manifest.capabilities.http.pass_headers.clone(),
            slots: Arc::new(Semaphore::new(manifest.max_concurrency as usize)),
            recent: RecentTime::default(),
        })
    }
}

/// An invocation let in by admission control; dropping it frees its slots.
pub struct Admitted {
    /// The function to run.
    pub live: Arc<Live>,
    /// The class it ran as.
    pub class: Priority,
    /// Its run slot, held until it finishes (for `wasi:http`, until its body is sent).
    pub run: RunSlot,
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
    pub(crate) runtime: Runtime,
    pub(crate) registry: Registry,
    pub(crate) artifacts: ArtifactStore,
    /// The OCI registries it pulls components from.
    pub(crate) registries: crate::oci::Registries,
    tokens: TokenStore,
    audit: AuditLog,
    live: RwLock<HashMap<String, Arc<Live>>>,
    capacity: Arc<Semaphore>,
    scheduler: Arc<Scheduler>,
    /// Where guests run: see [`GuestThreads`].
    pub(crate) guests: GuestThreads,
    /// Serializes deploys, rollbacks and deletes, so the live table follows the registry's order.
    pub(crate) writes: tokio::sync::Mutex<()>,
    /// Serializes loading functions on first use, so that a burst of first calls compiles once.
    pub(crate) loading: tokio::sync::Mutex<()>,
    /// The cluster, once joined.
    cluster: OnceLock<Arc<dyn Cluster>>,
    /// `<data-dir>/functions`, held open: private function dirs are opened beneath it.
    pub(crate) functions_dir: Anchor,
    /// Deploys in progress and just finished, for clients that follow or come back for them.
    pub(crate) deploys: crate::deploys::Deploys,
    /// Most instances running at once since [`Node::take_peak_in_flight`] was last called.
    peak: std::sync::atomic::AtomicU32,
    /// The node's metrics.
    pub metrics: Metrics,
    /// Where its functions' key-value stores live.
    pub(crate) kv: crate::capabilities::kv::NodeKv,
    /// Where its functions' messages go.
    messaging: crate::capabilities::messaging::NodeMessaging,
    /// The schedules' state (see [`crate::triggers`]).
    pub(crate) schedules: crate::triggers::ScheduleState,
    /// What became of the messages triggers delivered here.
    pub deliveries: crate::triggers::Deliveries,
    /// The runs this node owes (key changes, workflow steps), durably.
    pub(crate) outbox: Arc<crate::outbox::Outbox>,
    /// Which writes owe which runs (change triggers).
    pub(crate) watches: Arc<crate::triggers::change::Watches>,
    /// Its workflows and, alone, their runs' records.
    pub(crate) workflows: crate::workflows::store::WorkflowStore,
    /// Names of functions as they change (see [`Node::changes`]).
    pub(crate) changes: tokio::sync::broadcast::Sender<String>,
    /// Names of workflows as they change (see [`Node::workflow_changes`]).
    pub(crate) workflow_changes: tokio::sync::broadcast::Sender<String>,
    config: NodeConfig,
}

/// Changed names a follower of [`Node::changes`] may fall behind by.
pub const CHANGES_BUFFER: usize = 1024;

impl Node {
    /// Opens the node's state under `config.data_dir`. Deployed functions load on their first
    /// call, or ahead of it in [`Node::warm_up`].
    pub fn open(config: NodeConfig) -> Result<Arc<Self>, NodeError> {
        let dir = &config.data_dir;
        let storage =
            |what: &Path, e: std::io::Error| NodeError::Storage(format!("{}: {e}", what.display()));
        crate::files::create_private_dir(dir).map_err(|e| storage(dir, e))?;
        let canonical = std::fs::canonicalize(dir).map_err(|e| storage(dir, e))?;
        config
            .grants
            .files
            .check_data_dir(&canonical)
            .map_err(NodeError::NotPermitted)?;
        let functions = dir.join("functions");
        crate::files::create_private_dir(&functions).map_err(|e| storage(&functions, e))?;
        let functions_dir = Anchor::open(&functions).map_err(|e| storage(&functions, e))?;
        let kv_path = dir.join("kv.redb");
        let kv = crate::capabilities::kv::NodeKv::new(Arc::new(
            crate::capabilities::kv::RedbKv::open(&kv_path).map_err(NodeError::Storage)?,
        ));
        crate::files::restrict_file(&kv_path).map_err(|e| storage(&kv_path, e))?;
        let messaging = crate::capabilities::messaging::NodeMessaging::default();
        let runtime = Runtime::with_backends(
            RuntimeConfig {
                cache_dir: Some(dir.join("aot")),
                pool: config.pool.clone(),
                ..RuntimeConfig::default()
            },
            Arc::new(kv.clone()),
            Arc::new(messaging.clone()),
        )?;
        let artifacts = ArtifactStore::open(dir.join("artifacts"))
            .map_err(|e| NodeError::Storage(format!("opening the artifact store: {e}")))?;
        let registry_path = dir.join("registry.redb");
        let registry = Registry::open(&registry_path)?;
        crate::files::restrict_file(&registry_path).map_err(|e| storage(&registry_path, e))?;
        let tokens = TokenStore::open(registry.database())?;
        if config.auth == AuthMode::Tokens {
            crate::auth::bootstrap(&tokens, dir, &config.node_id)?;
        }
        let audit = AuditLog::open(registry.database())?;
        let outbox = Arc::new(crate::outbox::Outbox::open(registry.database())?);
        let watches = Arc::new(crate::triggers::change::Watches::open(
            registry.database(),
            outbox.clone(),
        )?);
        kv.observe(watches.clone());
        let workflows = crate::workflows::store::WorkflowStore::open(registry.database())?;
        let registries =
            crate::oci::Registries::new(&config.registries).map_err(NodeError::BadRequest)?;
        let node = Arc::new(Self {
            registries,
            tokens,
            audit,
            capacity: Arc::new(Semaphore::new(config.capacity as usize)),
            scheduler: Scheduler::new(config.admission.clone()),
            guests: GuestThreads::new(config.admission.run_slots)
                .map_err(|e| NodeError::Storage(format!("starting the guest threads: {e}")))?,
            runtime,
            kv,
            messaging,
            schedules: Default::default(),
            deliveries: Default::default(),
            outbox,
            watches,
            workflows,
            changes: tokio::sync::broadcast::channel(CHANGES_BUFFER).0,
            workflow_changes: tokio::sync::broadcast::channel(CHANGES_BUFFER).0,
            registry,
            artifacts,
            live: RwLock::default(),
            writes: tokio::sync::Mutex::new(()),
            loading: tokio::sync::Mutex::new(()),
            cluster: OnceLock::new(),
            functions_dir,
            deploys: Default::default(),
            peak: Default::default(),
            metrics: Metrics::default(),
            config,
        });
        // Functions load on first use or in `warm_up`, not here: a node with thousands of
        // them answers its first request without waiting for all to load.
        Ok(node)
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Moves its functions' key-value stores to `backend` (a cluster's, once joined).
    pub fn use_kv_backend(&self, backend: Arc<dyn limes_runtime::kv::KvBackend>) {
        self.kv.replace(backend);
    }

    /// Sends its functions' messages (`wasi:messaging` `producer`) to `backend` (a cluster's NATS,
    /// once joined).
    pub fn use_messaging_backend(
        &self,
        backend: Arc<dyn limes_runtime::messaging::MessagingBackend>,
    ) {
        self.messaging.replace(backend);
    }

    /// The runtime the node runs functions on.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The tokens this node accepts.
    pub fn tokens(&self) -> &TokenStore {
        &self.tokens
    }

    /// The audit log.
    pub fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    /// Appends `change` to the audit log, durably, off the async workers.
    pub async fn audit(self: &Arc<Self>, change: Change<'_>) -> Result<(), NodeError> {
        let (node, actor, action, target, request_id, client_request_id) = (
            self.clone(),
            change.actor.to_owned(),
            change.action.to_owned(),
            change.target.to_owned(),
            change.request_id.to_owned(),
            change.client_request_id.map(str::to_owned),
        );
        let detail = change.detail;
        blocking(move || {
            node.audit
                .record(Change {
                    actor: &actor,
                    action: &action,
                    target: &target,
                    request_id: &request_id,
                    client_request_id: client_request_id.as_deref(),
                    detail,
                })
                .map(|_| ())
        })
        .await
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

    /// Makes `live` the active version of `name` here (`None`: not loaded).
    pub(crate) fn set_live(&self, name: &str, live: Option<Arc<Live>>) {
        let mut table = self.live.write().unwrap_or_else(|p| p.into_inner());
        match live {
            Some(live) => table.insert(name.to_owned(), live),
            None => table.remove(name),
        };
        self.metrics.set_loaded(table.len());
        drop(table);
        // Every deploy, rollback and removal passes here.
        self.changed(name);
    }

    /// Makes `live` the active version of `name` here if the registry still says it is: a
    /// function loaded on first use must not come back after a delete or a newer deploy that
    /// landed while it loaded. The check runs under the table's lock, which a delete or a deploy
    /// takes after writing the registry, so one of the two always sees the other.
    pub(crate) fn set_live_if_current(&self, name: &str, live: Arc<Live>) -> Result<(), NodeError> {
        let mut table = self.live.write().unwrap_or_else(|p| p.into_inner());
        let current = self.registry.get(name)?;
        if current.is_some_and(|r| r.active == live.version) {
            table.insert(name.to_owned(), live);
            self.metrics.set_loaded(table.len());
        }
        Ok(())
    }

    /// The active version of `name`, if loaded here.
    pub(crate) fn loaded(&self, name: &str) -> Option<Arc<Live>> {
        let table = self.live.read().unwrap_or_else(|p| p.into_inner());
        table.get(name).cloned()
    }

    /// Whether `name`, as loaded here, is urgent by its manifest (not loaded: not known to be).
    pub fn is_urgent(&self, name: &str) -> bool {
        self.loaded(name)
            .is_some_and(|live| live.priority == Priority::Urgent)
    }

    /// The run slots and their queues.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Lets an invocation of `name` in, or refuses it: past the function's or the node's limit
    /// at once, and when it could not start within its class's queue deadline (see
    /// [`crate::admission`]). `placement.reserve` node slots stay free for others (urgent
    /// functions, during an emergency); `placement.urgent` makes it urgent whatever its
    /// manifest says.
    pub async fn admit(
        self: &Arc<Self>,
        name: &str,
        placement: Placement,
    ) -> Result<Admitted, NodeError> {
        let live = self.live(name).await?;
        let reserve = placement.reserve;
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
        let class = if placement.urgent {
            Priority::Urgent
        } else {
            live.priority
        };
        self.metrics.queued(class, 1);
        let run = self.scheduler.acquire(class).await;
        self.metrics.queued(class, -1);
        let run = run.map_err(|shed| {
            self.metrics.shed(class.as_str(), shed.as_str());
            NodeError::Shed {
                class: class.as_str(),
                reason: shed.as_str(),
            }
        })?;
        self.metrics.admitted(class.as_str(), run.waited);
        self.metrics.in_flight().inc();
        self.peak
            .fetch_max(self.in_flight(), std::sync::atomic::Ordering::Relaxed);
        Ok(Admitted {
            live,
            class,
            run,
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
        self.route_as(name, hops, false).await
    }

    /// [`Node::route`], as urgent whatever the function's class when `urgent` (a step of an
    /// urgent workflow).
    pub(crate) async fn route_as(
        self: &Arc<Self>,
        name: &str,
        hops: u32,
        urgent: bool,
    ) -> Result<Route<'_>, NodeError> {
        let cluster = self.cluster();
        let mut placement = cluster.map(|c| c.placement(name)).unwrap_or_default();
        // A function urgent by its manifest is urgent in an emergency too: it stays on a
        // released node and may use the slots kept for urgent work.
        if urgent || self.is_urgent(name) {
            placement = Placement {
                urgent: true,
                ..Placement::default()
            };
        }
        let released = placement.elsewhere && hops < MAX_HOPS;
        if !released {
            match self.admit(name, placement).await {
                Ok(admitted) => return Ok(Route::Here(admitted)),
                Err(NodeError::Busy(_) | NodeError::Full | NodeError::Shed { .. })
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
        let route = self.route(name, hops).await?;
        self.invoke_routed(route, name, args, hops).await
    }

    pub(crate) async fn invoke_routed(
        self: &Arc<Self>,
        route: Route<'_>,
        name: &str,
        args: &str,
        hops: u32,
    ) -> Result<Ran, NodeError> {
        let (cluster, reason) = match route {
            Route::Here(admitted) => {
                return self
                    .run_admitted(admitted, name, Input::Args(args.to_owned()), hops)
                    .await;
            }
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

    /// Runs `work` (a guest's invocation of `live`) on a guest thread of `pool`, or inline
    /// when `inline_ok` and `live` may run inline (see [`RecentTime::may_run_inline`]); notes
    /// how long it took. `inline_ok` must be false for work that outlives its future, such as
    /// a `wasi:http` guest that goes on writing its body in a task of its own: that task would
    /// stay on the HTTP threads, unbounded by the inline claim.
    pub(crate) async fn run_guest<T: Send + 'static>(
        &self,
        live: &Live,
        pool: Pool,
        inline_ok: bool,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, NodeError> {
        let started = Instant::now();
        let inline = (inline_ok && live.recent.may_run_inline())
            .then(|| self.guests.try_inline())
            .flatten();
        let outcome = match inline {
            Some(_claim) => work.await,
            None => self
                .guests
                .run(pool, work)
                .await
                .map_err(NodeError::Storage)?,
        };
        live.recent.note(started.elapsed());
        Ok(outcome)
    }

    pub(crate) async fn run_admitted(
        &self,
        admitted: Admitted,
        name: &str,
        input: Input,
        hops: u32,
    ) -> Result<Ran, NodeError> {
        let started = Instant::now();
        let function = admitted.live.function.clone();
        let version = admitted.live.version;
        // The admission (and its run slot) goes with the guest: a caller that hangs up does not
        // free the slot of a guest still running.
        let (pool, live) = (admitted.run.pool(), admitted.live.clone());
        let outcome = self
            .run_guest(&live, pool, true, async move {
                let outcome = match input {
                    Input::Args(args) => function.invoke(&args).await,
                    Input::Message(message) => function.handle_message(message).await,
                };
                drop(admitted);
                outcome
            })
            .await?;
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
            version,
            cold_start: invocation.cold_start,
            execution: invocation.execution,
            hops,
            forward_added: None,
        })
    }
}

/// What an admitted invocation hands its guest.
pub(crate) enum Input {
    /// A run function's `args`.
    Args(String),
    /// A message function's message.
    Message(limes_runtime::messaging::Message),
}

/// Runs blocking work on the blocking pool; a panic there becomes a storage error.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| NodeError::Storage(format!("a blocking task failed: {e}")))?
}

/// Function names: 1–63 of `a-z 0-9 - _`, starting with a letter or digit, so that a name is
/// safe in a URL path, a file name, a metric label and a NATS subject.
pub fn validate_name(name: &str) -> Result<(), NodeError> {
    if crate::parse::is_name(name) {
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
