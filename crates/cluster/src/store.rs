//! The cluster's shared state in JetStream: which buckets, with which settings, and why.

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store};

/// Function records (every version's digest, kind and manifest; the active version), by name.
pub const FUNCTIONS: &str = "limes-functions";
/// Heartbeats, by node id. Entries expire after [`HEARTBEAT_TTL`], so the bucket holds only
/// nodes that are alive or just died.
pub const NODES: &str = "limes-nodes";
/// The emergency plan in force, under [`PLAN_KEY`].
pub const EMERGENCY: &str = "limes-emergency";
/// The decision lease, under [`LEASE_KEY`]; it expires after [`LEASE_TTL`] should its holder
/// die while deciding.
pub const LEASE: &str = "limes-lease";
/// API tokens (hashed, never the secret), by name. Revoked tokens stay, marked, so that a node
/// that was away cannot bring one back.
pub const TOKENS: &str = "limes-tokens";
/// Scheduled ticks claimed, by `function.tick_ms`; the first node to create a key runs the
/// tick. Entries expire after [`TICK_TTL`].
pub const TICKS: &str = "limes-ticks";
/// How long a claimed tick is remembered: far longer than nodes' clocks disagree.
pub const TICK_TTL: Duration = Duration::from_secs(3600);
/// Components, named by their SHA-256.
pub const ARTIFACTS: &str = "limes-artifacts";

/// The stream that keeps the messages of durable triggers' subjects until every function that
/// listens has taken them (interest retention; one consumer per function). Its subjects are
/// the fewest patterns that cover every durable trigger's subject, since a stream refuses
/// overlapping ones (see [`limes_node::subject::cover`]).
pub const EVENTS: &str = "LIMES_EVENTS";
/// How long [`EVENTS`] keeps a message no function took: an edge site may be cut off for days.
pub const EVENTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most [`EVENTS`] holds; past it, publishers are refused (not old messages dropped), so
/// they know.
pub const EVENTS_MAX_BYTES: i64 = 1 << 30;
/// The stream of dead letters on `limes.dead.>`, kept for an operator to read.
pub const DEAD: &str = "LIMES_DEAD";
/// The most [`DEAD`] keeps; past it the oldest dead letters go.
pub const DEAD_MAX_BYTES: i64 = 256 << 20;
/// How long [`DEAD`] keeps a dead letter.
pub const DEAD_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Key of the lease in [`LEASE`] held while changing [`EVENTS`]' subjects.
pub const EVENTS_LEASE_KEY: &str = "events";

/// Workflows, by name.
pub const WORKFLOWS: &str = "limes-workflows";
/// Workflow runs' step records, by `WORKFLOW.RUN.STEP`. Entries expire after [`RUNS_TTL`].
pub const RUNS: &str = "limes-runs";
/// How long a run's record is kept.
pub const RUNS_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The stream of workflows' hand-offs, on `limes.wf.WORKFLOW.STEP` (work-queue retention: one
/// consumer per step).
pub const HANDOFFS: &str = "LIMES_HANDOFFS";
/// How long the same hand-off (by `Nats-Msg-Id`) is kept from happening twice: far longer than
/// a node takes to be noticed dead and its step to run again.
pub const HANDOFF_DEDUP: Duration = Duration::from_secs(3600);

/// Key of the plan in [`EMERGENCY`].
pub const PLAN_KEY: &str = "plan";
/// Key of the lease in [`LEASE`].
pub const LEASE_KEY: &str = "decider";

/// How long a heartbeat stays in the membership bucket.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(3);
/// How long an unreleased lease lasts: far longer than a decision takes (milliseconds).
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// Handles to every bucket.
#[derive(Clone)]
pub struct Buckets {
    pub functions: kv::Store,
    pub nodes: kv::Store,
    pub emergency: kv::Store,
    pub lease: kv::Store,
    pub tokens: kv::Store,
    pub ticks: kv::Store,
    pub workflows: kv::Store,
    pub runs: kv::Store,
    pub artifacts: object_store::ObjectStore,
}

/// Opens the KV bucket `bucket`, creating its stream if need be.
///
/// The stream is created directly, with the settings async-nats gives a KV bucket, because
/// `create_key_value` first asks for the account's limits, a reply that Debian's nats-server
/// 2.9 words in a way async-nats 0.51 cannot read.
pub(crate) async fn key_value(
    js: &jetstream::Context,
    bucket: &str,
    history: i64,
    max_age: Duration,
) -> Result<kv::Store, String> {
    let stream = jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: history,
        max_age,
        // The server refuses a duplicate window longer than the age limit.
        duplicate_window: if max_age.is_zero() {
            Duration::from_secs(120)
        } else {
            max_age
        },
        storage: jetstream::stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    };
    js.get_or_create_stream(stream)
        .await
        .map_err(|e| format!("bucket {bucket}: {e}"))?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| format!("bucket {bucket}: {e}"))
}

impl Buckets {
    /// Opens the buckets, creating those that do not exist yet. Every node does this on start;
    /// creating a bucket that exists with the same settings is a no-op in JetStream.
    pub async fn open(js: &jetstream::Context) -> Result<Self, String> {
        let artifacts = match js
            .create_object_store(object_store::Config {
                bucket: ARTIFACTS.to_owned(),
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
        {
            Ok(store) => store,
            Err(create) => js
                .get_object_store(ARTIFACTS)
                .await
                .map_err(|e| format!("object store {ARTIFACTS}: {create}; {e}"))?,
        };
        Ok(Self {
            functions: key_value(js, FUNCTIONS, 1, Duration::ZERO).await?,
            nodes: key_value(js, NODES, 1, HEARTBEAT_TTL).await?,
            emergency: key_value(js, EMERGENCY, 1, Duration::ZERO).await?,
            lease: key_value(js, LEASE, 1, LEASE_TTL).await?,
            tokens: key_value(js, TOKENS, 1, Duration::ZERO).await?,
            ticks: key_value(js, TICKS, 1, TICK_TTL).await?,
            workflows: key_value(js, WORKFLOWS, 1, Duration::ZERO).await?,
            runs: key_value(js, RUNS, 1, RUNS_TTL).await?,
            artifacts,
        })
    }
}
