//! A Limes edge cluster on NATS: nodes share one registry, forward what they have no room for,
//! and free whole nodes for urgent functions in an emergency (the SPARE scheme).
//!
//! This crate sits on `limes-node` and implements its [`limes_node::Cluster`] seam. Everything shared
//! lives in JetStream (see [`store`]): function records in a KV bucket, components in the
//! object store, heartbeats in a KV bucket with a TTL, the emergency plan and its decision
//! lease in KV. Forwarded invocations are NATS request/reply ([`forward`]).
//!
//! A node never depends on NATS to serve what it has: when the server is unreachable it keeps
//! running its local functions, reports `disconnected`, and reconnects by itself.

mod connect;
mod durable;
mod emergency;
pub mod forward;
pub mod kv;
mod lease;
pub mod messages;
pub mod plan;
mod seam;
pub mod server;
pub mod store;
mod tokens;
pub mod view;
pub mod workflows;

pub use connect::{NatsAuth, redacted as redacted_url};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use limes_node::{Call, FunctionRecord, HttpCall, HttpRan, Node, NodeError, Ran};

use crate::plan::Plan;
use crate::store::Buckets;
use crate::view::{LatencyMatrix, Member, View, nearest_with_room};

/// How often a node heartbeats. Four heartbeats fit in [`VIEW_HORIZON`], so one lost message
/// does not drop a live node.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// A node not heard from for this long leaves the view. With the heartbeat period and delivery
/// this keeps the promise that a dead node leaves within 3 s.
pub const VIEW_HORIZON: Duration = Duration::from_secs(2);

/// The longest a node spends saying goodbye to the cluster when it stops.
pub const LEAVE_TIMEOUT: Duration = Duration::from_millis(1500);

/// How a node joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The NATS server, e.g. `nats://10.0.0.1:4222`.
    pub url: String,
    /// Where this node is, `[x, y]`; nearer nodes are tried first.
    pub location: [f64; 2],
    /// One-way latencies in ms between node ids, overriding locations where given.
    pub latency: LatencyMatrix,
    /// The node's HTTP address, shown to others.
    pub listen: Option<String>,
    /// Sleep the configured latency on each forwarded call, both ways: an in-process latency
    /// model for experiments on one machine (`limes bench cluster`). Off for real clusters.
    pub simulate_latency: bool,
    /// The node's credentials for NATS.
    pub auth: NatsAuth,
    /// A CA certificate (PEM) to verify NATS's TLS certificate with; TLS is required when set.
    pub ca: Option<std::path::PathBuf>,
}

impl ClusterConfig {
    /// A node at `location` joining the NATS server at `url`.
    pub fn new(url: impl Into<String>, location: [f64; 2]) -> Self {
        Self {
            url: url.into(),
            location,
            latency: LatencyMatrix::new(),
            listen: None,
            simulate_latency: false,
            auth: NatsAuth::None,
            ca: None,
        }
    }
}

/// A node's membership in a NATS cluster.
pub struct NatsCluster {
    config: ClusterConfig,
    id: String,
    client: async_nats::Client,
    js: jetstream::Context,
    /// The node; weak because the node holds this cluster.
    node: Weak<Node>,
    buckets: tokio::sync::Mutex<Option<Buckets>>,
    view: Mutex<View>,
    /// Shared, because every invocation reads it.
    plan: RwLock<Option<Arc<Plan>>>,
    /// The last thing that went wrong talking to NATS, for the status.
    last_error: Mutex<Option<String>>,
    /// Calls this node forwarded and another node answered, by that node's id; sent with each
    /// heartbeat.
    forwarded: Mutex<BTreeMap<String, u64>>,
    /// Token changes this node made and shares, by (name, revoked), until the watch brings
    /// them back: this node's audit log has them already (see `watch_tokens`).
    own_token_changes: Mutex<std::collections::HashSet<(String, bool)>>,
    /// This node's subscriptions for message triggers, by function (see [`messages`]).
    subscriptions: Mutex<std::collections::HashMap<String, messages::Subscription>>,
    /// The workflows whose steps this node takes, by name (see [`workflows`]).
    workflows_followed: Mutex<std::collections::HashMap<String, workflows::Following>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> NodeError {
    NodeError::Cluster(format!("{what}: {e}"))
}

/// Joins `node` to the cluster at `config.url` and starts heartbeats, watchers and the
/// forwarding service. Returns at once even when NATS is unreachable: the node serves its own
/// functions meanwhile, and the cluster comes up when NATS does. Fails at once when NATS
/// refuses the node's credentials or TLS.
pub async fn join(node: &Arc<Node>, config: ClusterConfig) -> Result<Arc<NatsCluster>, NodeError> {
    let id = node.config().node_id.clone();
    limes_node::validate_name(&id).map_err(|_| {
        NodeError::BadRequest(format!("invalid node id {id:?}: use a-z, 0-9, '-' and '_'"))
    })?;
    let client = connect::connect(&config.url, &id, &config.auth, config.ca.as_ref()).await?;
    let js = jetstream::new(client.clone());
    let cluster = Arc::new(NatsCluster {
        config,
        id,
        client: client.clone(),
        js,
        node: Arc::downgrade(node),
        buckets: tokio::sync::Mutex::new(None),
        view: Mutex::default(),
        plan: RwLock::default(),
        last_error: Mutex::default(),
        forwarded: Mutex::default(),
        own_token_changes: Mutex::default(),
        subscriptions: Mutex::default(),
        workflows_followed: Mutex::default(),
    });
    node.join(cluster.clone())?;
    // From now on the node's functions keep their state in the cluster, not on this node.
    node.use_kv_backend(Arc::new(kv::NatsKv::new(cluster.js.clone())));
    // And publish their messages to it.
    node.use_messaging_backend(Arc::new(messages::NatsPublisher {
        client: cluster.client.clone(),
    }));
    let weak = Arc::downgrade(&cluster);
    tokio::spawn(heartbeats(weak.clone()));
    tokio::spawn(supervise(weak.clone(), "membership", |c| {
        Box::pin(c.watch_nodes())
    }));
    tokio::spawn(supervise(weak.clone(), "functions", |c| {
        Box::pin(c.watch_functions())
    }));
    tokio::spawn(supervise(weak.clone(), "tokens", |c| {
        Box::pin(c.watch_tokens())
    }));
    tokio::spawn(supervise(weak.clone(), "emergency", |c| {
        Box::pin(c.watch_plan())
    }));
    tokio::spawn(supervise(weak.clone(), "triggers", |c| {
        Box::pin(c.follow_triggers())
    }));
    tokio::spawn(supervise(weak.clone(), "workflows", |c| {
        Box::pin(c.watch_workflows())
    }));
    tokio::spawn(supervise(weak.clone(), "workflow steps", |c| {
        Box::pin(c.follow_workflows())
    }));
    tokio::spawn(supervise(weak.clone(), "forwarding", |c| {
        Box::pin(async move {
            let node = c.node().map_err(|e| e.to_string())?;
            forward::serve(c.client.clone(), node).await
        })
    }));
    tokio::spawn(supervise(weak, "http forwarding", |c| {
        Box::pin(async move {
            let node = c.node().map_err(|e| e.to_string())?;
            forward::serve_http(c.client.clone(), node).await
        })
    }));
    Ok(cluster)
}

/// Runs `task` again (after a pause) whenever it fails or ends, for as long as the cluster lives.
async fn supervise(
    cluster: Weak<NatsCluster>,
    what: &'static str,
    task: impl Fn(Arc<NatsCluster>) -> BoxFuture<'static, Result<(), String>> + Send + 'static,
) {
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let outcome = task(c.clone()).await;
        let message = match outcome {
            Ok(()) => format!("{what}: stream ended"),
            Err(e) => format!("{what}: {e}"),
        };
        tracing::debug!(node = c.id, "{message}; restarting");
        c.failed(message).await;
        drop(c);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn heartbeats(cluster: Weak<NatsCluster>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(c) = cluster.upgrade() else { return };
        if let Err(e) = c.heartbeat().await {
            c.failed(e).await;
        }
    }
}

impl NatsCluster {
    fn node(&self) -> Result<Arc<Node>, NodeError> {
        self.node
            .upgrade()
            .ok_or_else(|| NodeError::Cluster("the node is shutting down".into()))
    }

    /// The buckets, opened (and created if need be) on first use and after a failure.
    async fn buckets(&self) -> Result<Buckets, NodeError> {
        let mut cached = self.buckets.lock().await;
        if let Some(b) = cached.as_ref() {
            return Ok(b.clone());
        }
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(NodeError::Cluster(format!(
                "NATS at {} is unreachable; reconnecting",
                connect::redacted(&self.config.url)
            )));
        }
        let b = Buckets::open(&self.js).await.map_err(NodeError::Cluster)?;
        *cached = Some(b.clone());
        Ok(b)
    }

    /// Notes a failure; the buckets are opened afresh next time (the server may have lost them).
    async fn failed(&self, error: String) {
        *self.buckets.lock().await = None;
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    /// This node as a member; `in_flight` is what its heartbeat reports.
    fn me(&self, in_flight: u32) -> Member {
        Member {
            id: self.id.clone(),
            location: self.config.location,
            capacity: self.node.upgrade().map_or(0, |n| n.config().capacity),
            in_flight,
            listen: self.config.listen.clone(),
            forwarded: BTreeMap::new(),
        }
    }

    async fn heartbeat(&self) -> Result<(), String> {
        let peak = self.node.upgrade().map_or(0, |n| n.take_peak_in_flight());
        let mut me = self.me(peak);
        me.forwarded = self
            .forwarded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let value = serde_json::to_vec(&me).map_err(|e| e.to_string())?;
        let buckets = self.buckets().await.map_err(|e| e.to_string())?;
        buckets
            .nodes
            .put(&self.id, value.into())
            .await
            .map_err(|e| format!("heartbeat: {e}"))?;
        // This node is always in its own view while it can reach NATS.
        self.view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .heard(me);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.publish_metrics();
        Ok(())
    }

    fn publish_metrics(&self) {
        if let Some(node) = self.node.upgrade() {
            let released = self.plan_now().map_or(0, |p| p.released.len());
            node.metrics.set_cluster(self.members().len(), released);
        }
    }

    /// Members alive now, this node included when it is connected.
    pub fn members(&self) -> Vec<Member> {
        let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
        view.prune(VIEW_HORIZON * 2);
        view.alive(VIEW_HORIZON)
    }

    fn plan_now(&self) -> Option<Arc<Plan>> {
        self.plan.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Follows heartbeats. A watch that goes quiet longer than the horizon (this node's own
    /// heartbeats stopped arriving: the server restarted, say) is restarted.
    async fn watch_nodes(self: Arc<Self>) -> Result<(), String> {
        let buckets = self.buckets().await.map_err(|e| e.to_string())?;
        let mut watch = buckets.nodes.watch_all().await.map_err(|e| e.to_string())?;
        loop {
            let entry = match tokio::time::timeout(VIEW_HORIZON, watch.next()).await {
                Err(_) => return Err("no heartbeat seen, not even this node's".into()),
                Ok(None) => return Ok(()),
                Ok(Some(entry)) => entry.map_err(|e| e.to_string())?,
            };
            let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
            match entry.operation {
                async_nats::jetstream::kv::Operation::Put => {
                    match serde_json::from_slice::<Member>(&entry.value) {
                        Ok(member) => view.heard(member),
                        Err(e) => tracing::warn!(key = entry.key, error = %e, "bad heartbeat"),
                    }
                }
                _ => view.left(&entry.key),
            }
        }
    }

    /// Follows function records: every node learns of every deploy, rollback and removal.
    async fn watch_functions(self: Arc<Self>) -> Result<(), String> {
        let buckets = self.buckets().await.map_err(|e| e.to_string())?;
        let mut watch = buckets
            .functions
            .watch_all()
            .await
            .map_err(|e| e.to_string())?;
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| e.to_string())?;
            let node = self.node().map_err(|e| e.to_string())?;
            let record = match entry.operation {
                async_nats::jetstream::kv::Operation::Put => {
                    match serde_json::from_slice::<FunctionRecord>(&entry.value) {
                        Ok(record) => Some(record),
                        Err(e) => {
                            tracing::warn!(function = entry.key, error = %e, "bad function record");
                            continue;
                        }
                    }
                }
                _ => None,
            };
            // A durable registry write: on the blocking pool.
            let key = entry.key.clone();
            let applied = tokio::task::spawn_blocking(move || node.apply(&key, record)).await;
            match applied {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(function = entry.key, error = %e, "could not apply a function record")
                }
                Err(e) => return Err(format!("applying a function record: {e}")),
            }
        }
        Ok(())
    }

    /// Updates the record of `name` with compare-and-set, retrying when another node changed
    /// it in between.
    async fn update_record(
        &self,
        name: &str,
        change: impl Fn(Option<FunctionRecord>) -> Result<FunctionRecord, NodeError>,
    ) -> Result<FunctionRecord, NodeError> {
        let functions = self.buckets().await?.functions;
        loop {
            let entry = functions
                .entry(name)
                .await
                .map_err(|e| unavailable("reading a function record", e))?;
            let (current, revision) = match entry {
                Some(e) if e.operation == async_nats::jetstream::kv::Operation::Put => (
                    Some(serde_json::from_slice(&e.value).map_err(|e| {
                        NodeError::Storage(format!("the cluster's record of {name}: {e}"))
                    })?),
                    e.revision,
                ),
                Some(e) => (None, e.revision),
                None => (None, 0),
            };
            let next = change(current)?;
            let value: Bytes = serde_json::to_vec(&next)
                .map_err(|e| NodeError::Storage(e.to_string()))?
                .into();
            match functions.update(name, value, revision).await {
                Ok(_) => return Ok(next),
                Err(e)
                    if e.kind()
                        == async_nats::jetstream::kv::UpdateErrorKind::WrongLastRevision =>
                {
                    continue;
                }
                Err(e) => return Err(unavailable("storing a function record", e)),
            }
        }
    }

    async fn forward_call(&self, call: Call) -> Result<Ran, NodeError> {
        let headers = forward::request(&call.name, call.hops);
        let payload = Bytes::from(call.args);
        self.route(
            &call.name,
            forward::subject,
            headers,
            payload,
            forward::reply,
        )
        .await
    }

    async fn forward_http_call(&self, call: HttpCall) -> Result<HttpRan, NodeError> {
        let (headers, payload) = forward::http_request(&call)?;
        self.route(
            &call.name,
            forward::http_subject,
            headers,
            payload,
            forward::http_reply,
        )
        .await
    }

    /// Sends a forwarded call of `name` to the nearest node with room, and to the next one if
    /// that fails (once). `decode` reads the reply; an error the function itself raised there
    /// is final, a refusal (429) or a failure of the node moves on.
    async fn route<T>(
        &self,
        name: &str,
        subject: fn(&str) -> String,
        headers: async_nats::HeaderMap,
        payload: Bytes,
        decode: fn(&str, &async_nats::Message) -> Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        let plan = self.plan_now();
        // Urgent by the emergency, or by the function's own manifest.
        let urgent = plan.as_ref().is_some_and(|p| p.is_urgent(name))
            || self.node.upgrade().is_some_and(|n| n.is_urgent(name));
        let members = self.members();
        let me = self.me(0);
        // Regular work never goes to a released node; urgent work may go anywhere.
        let candidates: Vec<Member> = nearest_with_room(&me, &members, &self.config.latency, |m| {
            !urgent && plan.as_ref().is_some_and(|p| p.releases(&m.id))
        })
        .into_iter()
        .cloned()
        .collect();
        let timeout = self.call_timeout(name).await;
        let mut last = NodeError::Full;
        for target in candidates.iter().take(2) {
            let outcome = self
                .request(
                    target,
                    subject(&target.id),
                    headers.clone(),
                    payload.clone(),
                    timeout,
                )
                .await
                .and_then(|message| decode(&target.id, &message));
            match outcome {
                Ok(answer) => {
                    *self
                        .forwarded
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(target.id.clone())
                        .or_default() += 1;
                    return Ok(answer);
                }
                Err(e @ NodeError::Remote { .. }) if !e.is_retryable() => return Err(e),
                Err(e) => {
                    tracing::info!(target = target.id, error = %e, "forwarding failed; failing over");
                    last = e;
                }
            }
        }
        Err(match last {
            NodeError::Remote { .. } => NodeError::Full,
            other => other,
        })
    }

    /// The function's timeout plus a margin for the trip, from its manifest.
    async fn call_timeout(&self, name: &str) -> Duration {
        let record = match self.node.upgrade() {
            Some(node) => node.get(name).await.ok(),
            None => None,
        };
        let limit = record.map_or(limes_node::Manifest::default().timeout_ms, |r| {
            r.active_version().manifest.timeout_ms
        });
        Duration::from_millis(limit) + Duration::from_secs(2)
    }

    /// One request to `target`. Gives up early if `target` leaves the view meanwhile.
    async fn request(
        &self,
        target: &Member,
        subject: String,
        headers: async_nats::HeaderMap,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<async_nats::Message, NodeError> {
        let one_way = view::distance(&self.config.latency, &self.me(0), target);
        let simulate = self.config.simulate_latency && one_way > 0.0;
        if simulate {
            tokio::time::sleep(Duration::from_secs_f64(one_way / 1e3)).await;
        }
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(payload)
            .timeout(Some(timeout));
        let sent = self.client.send_request(subject, request);
        let watch_target = async {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                if !self.members().iter().any(|m| m.id == target.id) {
                    return;
                }
            }
        };
        let started = Instant::now();
        let message = tokio::select! {
            reply = sent => reply.map_err(|e| unavailable(&format!("calling node {}", target.id), e))?,
            () = watch_target => {
                return Err(NodeError::Cluster(format!(
                    "node {} left the cluster after {:?} into the call",
                    target.id,
                    started.elapsed()
                )));
            }
        };
        if simulate {
            tokio::time::sleep(Duration::from_secs_f64(one_way / 1e3)).await;
        }
        Ok(message)
    }

    /// Leaves the cluster on purpose: other nodes drop this one at once instead of after the
    /// horizon. Gives up after [`LEAVE_TIMEOUT`]: with NATS gone, the goodbye could wait
    /// forever, and the others notice a silent node within the horizon anyway.
    pub async fn leave(&self) {
        let goodbye = async {
            if let Ok(b) = self.buckets().await {
                let _ = b.nodes.delete(&self.id).await;
            }
            let _ = self.client.flush().await;
        };
        if tokio::time::timeout(LEAVE_TIMEOUT, goodbye).await.is_err() {
            tracing::warn!(
                node = self.id,
                "NATS did not take the goodbye in time; leaving without it"
            );
        }
    }
}
