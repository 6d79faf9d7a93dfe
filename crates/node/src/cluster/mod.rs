//! The seam between a node and the cluster it may have joined.
//!
//! The node knows nothing of NATS: `limes-cluster`, a layer above, implements [`Cluster`] and
//! hands it to [`Node::join`](crate::Node::join). A node without one runs alone, exactly as
//! before. The seam is split by job: [`Replication`] of functions and their components,
//! [`Forwarding`] of calls, [`Emergencies`] with a typed [`plan::Plan`], [`TokenSharing`],
//! and triggers' [`Schedules`] and [`Messages`].
//! Every method that talks to other machines returns a boxed future so the traits stay
//! object-safe.

pub mod plan;

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::auth::tokens::TokenRecord;
use crate::error::NodeError;
use crate::registry::FunctionRecord;
pub use crate::registry::NewVersion;

/// How many times one invocation may be forwarded. Two lets a call that raced into a node that
/// just filled up move on once more, and bounds any loop.
pub const MAX_HOPS: u32 = 2;

/// Where an invocation of a function may run, as the cluster sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Placement {
    /// False on a node released for urgent work, for a function that is not urgent.
    pub elsewhere: bool,
    /// Node slots this invocation may not take, kept free for urgent functions.
    pub reserve: u32,
    /// True for a function a declared emergency names urgent: it runs as `urgent` here,
    /// whatever its manifest says.
    pub urgent: bool,
}

/// An invocation to run on another node.
#[derive(Debug, Clone)]
pub struct Call {
    /// The function.
    pub name: String,
    /// Its argument.
    pub args: String,
    /// Forwards so far, this one included.
    pub hops: u32,
}

/// The outcome of an invocation, wherever it ran.
#[derive(Debug, Clone)]
pub struct Ran {
    /// The function's result.
    pub result: String,
    /// The node that ran it.
    pub node: String,
    /// The version that ran.
    pub version: u32,
    /// Cold start on the node that ran it.
    pub cold_start: Duration,
    /// Time in the guest.
    pub execution: Duration,
    /// Forwards it took to find a node with room (0: ran where it arrived).
    pub hops: u32,
    /// What forwarding added to the caller's latency, beyond the time the call took on the
    /// node that ran it; `None` when it ran where it arrived.
    pub forward_added: Option<Duration>,
}

/// Largest request or response body of a `wasi:http` call that may be forwarded: forwarded
/// calls are buffered into one NATS message, whose default limit is 1 MiB.
pub const MAX_FORWARDED_BODY: usize = 512 << 10;

/// A `wasi:http` request to run on another node, buffered.
#[derive(Debug, Clone)]
pub struct HttpCall {
    /// The function.
    pub name: String,
    /// The request as the function sees it (path after `/fn/{name}`).
    pub request: http::Request<Bytes>,
    /// Forwards so far, this one included.
    pub hops: u32,
}

/// The buffered answer of a forwarded `wasi:http` call.
#[derive(Debug)]
pub struct HttpRan {
    /// The function's response.
    pub response: http::Response<Bytes>,
    /// The node that ran it.
    pub node: String,
    /// Forwards it took.
    pub hops: u32,
    /// Time the call took on the node that ran it.
    pub remote: Duration,
}

/// What a node needs from the cluster it has joined, by job; and how the cluster looks from
/// here.
pub trait Cluster:
    Replication + Forwarding + Emergencies + TokenSharing + Schedules + Messages + Workflows + 'static
{
    /// The cluster as this node sees it: connection, members, emergency (for `/healthz` and
    /// `GET /v1/cluster`).
    fn status(&self) -> serde_json::Value;
}

/// Functions and their components, the same on every node.
pub trait Replication: Send + Sync {
    /// Stores a new version of `name` in the cluster (artifact first, then the function's
    /// record) and returns the record with it active. The deploy is acknowledged only once this
    /// returns.
    fn publish(
        &self,
        name: String,
        version: NewVersion,
        component: Bytes,
    ) -> BoxFuture<'_, Result<FunctionRecord, NodeError>>;

    /// Makes `version` the active version of `name` everywhere.
    fn activate(
        &self,
        name: String,
        version: u32,
    ) -> BoxFuture<'_, Result<FunctionRecord, NodeError>>;

    /// Removes `name` everywhere; false when the cluster has no such function.
    fn withdraw(&self, name: String) -> BoxFuture<'_, Result<bool, NodeError>>;

    /// The cluster's record of `name`, for a function this node has not heard of yet.
    fn lookup(&self, name: String) -> BoxFuture<'_, Result<Option<FunctionRecord>, NodeError>>;

    /// The component with this digest.
    fn artifact(&self, digest: String) -> BoxFuture<'_, Result<Bytes, NodeError>>;

    /// Stores a component under its digest unless the store has it; a record that names an
    /// artifact is published only after this returns.
    fn put_artifact(&self, digest: String, bytes: Bytes) -> BoxFuture<'_, Result<(), NodeError>>;
}

/// Where calls run.
pub trait Forwarding: Send + Sync {
    /// Where an invocation of `name` that arrives here may run.
    fn placement(&self, name: &str) -> Placement;

    /// Runs `call` on the nearest other node with room; [`NodeError::Full`] when none has.
    fn forward(&self, call: Call) -> BoxFuture<'_, Result<Ran, NodeError>>;

    /// Runs a buffered `wasi:http` call on the nearest other node with room.
    fn forward_http(&self, call: HttpCall) -> BoxFuture<'_, Result<HttpRan, NodeError>>;
}

/// Emergencies: one plan for the whole cluster.
pub trait Emergencies: Send + Sync {
    /// Decides and stores the plan for `declaration` (`POST /v1/emergency`), whose
    /// `declared_by` the node has set to the caller's token name.
    fn declare(
        &self,
        declaration: plan::Declaration,
    ) -> BoxFuture<'_, Result<plan::Plan, NodeError>>;

    /// The emergency plan in force, if any (`GET /v1/emergency`).
    fn emergency(&self) -> Option<plan::Plan>;

    /// Ends the emergency (`DELETE /v1/emergency`).
    fn end(&self) -> BoxFuture<'_, Result<(), NodeError>>;
}

/// Scheduled ticks, each run on one node only.
pub trait Schedules: Send + Sync {
    /// Claims tick `tick_ms` (ms since the Unix epoch) of `function`'s schedule for this node;
    /// false when another node has. Every node asks; the first to ask gets it.
    fn claim_tick(&self, function: String, tick_ms: u64) -> BoxFuture<'_, Result<bool, NodeError>>;
}

/// Message triggers (see [`crate::triggers::message`]). The cluster follows
/// [`Node::changes`](crate::Node::changes) and subscribes for the node by itself; the node asks
/// only for what must happen before a deploy is acknowledged.
pub trait Messages: Send + Sync {
    /// Makes ready what `name`'s durable trigger needs to keep every message published from
    /// now on: the stream that captures its subject and the consumer that delivers them.
    fn prepare_durable(
        &self,
        name: String,
        triggers: crate::triggers::Triggers,
    ) -> BoxFuture<'_, Result<(), NodeError>>;

    /// Removes what [`Messages::prepare_durable`] made for `name` (a deploy that failed after
    /// it, a function removed): its consumer, and the messages kept only for it.
    fn forget_durable(&self, name: String) -> BoxFuture<'_, Result<(), NodeError>>;
}

/// Workflows, the same on every node, and their runs, whose steps any node may take.
pub trait Workflows: Send + Sync {
    /// Stores `workflow` for every node and makes ready what carries its hand-offs (and its
    /// trigger's messages) before the deploy is acknowledged.
    fn publish_workflow(
        &self,
        workflow: crate::workflows::Workflow,
    ) -> BoxFuture<'_, Result<(), NodeError>>;

    /// Removes workflow `name` everywhere; false when the cluster has none.
    fn withdraw_workflow(&self, name: String) -> BoxFuture<'_, Result<bool, NodeError>>;

    /// Hands payloads on to steps, durably; each hand-off happens once (by its
    /// [`dedup_id`](crate::workflows::Handoff::dedup_id)), however often it is made.
    fn hand_off(
        &self,
        handoffs: Vec<crate::workflows::Handoff>,
    ) -> BoxFuture<'_, Result<(), NodeError>>;

    /// Records step `step` of run `run` of `workflow`; when `first`, only if it has no record
    /// yet (a step handed on again after its node died must not look waiting once more).
    fn record_step(
        &self,
        workflow: String,
        run: String,
        step: String,
        record: crate::workflows::StepRun,
        first: bool,
    ) -> BoxFuture<'_, Result<(), NodeError>>;

    /// The records of the steps of run `run` of `workflow` that have any.
    fn run_steps(
        &self,
        workflow: crate::workflows::Workflow,
        run: String,
    ) -> BoxFuture<
        '_,
        Result<std::collections::BTreeMap<String, crate::workflows::StepRun>, NodeError>,
    >;
}

/// API tokens, the same on every node.
pub trait TokenSharing: Send + Sync {
    /// Shares a token record with every node: a new token (`create`: refused with
    /// [`NodeError::Conflict`] if the cluster has one of that name) or a revocation. Tokens are
    /// never deleted from the cluster: a revoked record stays, so that no node brings it back.
    fn share_token(
        &self,
        record: TokenRecord,
        create: bool,
    ) -> BoxFuture<'_, Result<(), NodeError>>;
}
