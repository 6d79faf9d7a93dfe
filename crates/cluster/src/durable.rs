//! Durable consumers, whatever they carry (a durable trigger's messages, a workflow's
//! hand-offs): pull only what this node has room for, run each message while telling JetStream
//! the run goes on, then ack it, retry it after its backoff, or dead-letter it once its attempts
//! are spent. A message is acked only once its outcome is safe (the run succeeded and what it
//! hands on is stored, or its dead letter is); anything else leaves it to come back.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures::StreamExt;
use futures::future::BoxFuture;
use limes_node::NodeError;
use limes_node::admission::Priority;
use limes_node::triggers::policy::backoff;
use tokio::sync::Semaphore;

use crate::{NatsCluster, store};

/// How long a durable message may go without news from the node running it before JetStream
/// gives it to another: a node that dies mid-run (kill -9) loses its messages to others this
/// soon. A live node reports progress every third of it for as long as the run takes.
pub const ACK_WAIT: Duration = Duration::from_secs(5);

/// How long a message waits on its node for room (the node or the function at capacity)
/// before that counts as a failed attempt, and how long between two tries.
const CAPACITY_WAIT: Duration = Duration::from_secs(30);
const CAPACITY_PAUSE: Duration = Duration::from_millis(20);

/// How often a consumer's lag is read for the metrics.
const LAG_EVERY: Duration = Duration::from_secs(2);

/// How long a pull waits for messages before asking again.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

pub use limes_node::NOT_UTF8;

/// What a consumer's messages are, for counting, retrying and dead-lettering them.
pub(crate) struct Work {
    /// Whose runs these are in metrics and logs: a function, or `WORKFLOW.STEP`.
    pub label: String,
    /// The trigger label of its metrics.
    pub trigger: &'static str,
    /// Attempts before a message is dead-lettered.
    pub max_deliver: u32,
    /// The wait after the first failed attempt; it doubles.
    pub backoff: Duration,
    /// The subject of its dead letters.
    pub dead_letter: String,
    /// Its class: `batch` work waits while an emergency lasts.
    pub priority: Priority,
}

/// One delivery of a message, as a [`Job`] sees it.
pub(crate) struct Delivery {
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The message's sequence number in its stream.
    pub sequence: u64,
    /// The subject it came on.
    pub subject: String,
    /// Its payload.
    pub payload: bytes::Bytes,
    /// Its headers.
    pub headers: Option<HeaderMap>,
}

impl Delivery {
    /// The payload as a run function's `args`.
    pub fn args(&self) -> Result<String, NodeError> {
        String::from_utf8(self.payload.to_vec()).map_err(|_| NodeError::BadRequest(NOT_UTF8.into()))
    }

    /// The message as a message function gets it.
    pub fn message(&self) -> limes_runtime::messaging::Message {
        message_of(&self.subject, &self.payload, self.headers.as_ref())
    }

    /// Header `name`, if the message has it.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.to_string())
    }
}

/// What runs each message of a consumer.
pub(crate) trait Job: Send + Sync + 'static {
    /// Runs one delivery; success is final, an error is retried or dead-lettered.
    fn run(&self, c: Arc<NatsCluster>, d: Delivery) -> BoxFuture<'static, Result<(), NodeError>>;

    /// Hears that a delivery was given up, after its dead letter was stored.
    fn given_up(
        &self,
        _c: Arc<NatsCluster>,
        _d: Delivery,
        _error: String,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// The settings of [`store::DEAD`].
pub(crate) fn dead_config() -> stream::Config {
    stream::Config {
        name: store::DEAD.to_owned(),
        subjects: vec![format!("{}dead.>", limes_node::subject::RESERVED_PREFIX)],
        max_age: store::DEAD_MAX_AGE,
        // Bounded: past it the oldest dead letters go, not the cluster's disk.
        max_bytes: store::DEAD_MAX_BYTES,
        discard: stream::DiscardPolicy::Old,
        storage: stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    }
}

/// Runs `consumer`'s messages through `job`, at most `room`'s permits at once, until the
/// consumer fails or the cluster goes.
pub(crate) async fn pull(
    cluster: Weak<NatsCluster>,
    mut consumer: consumer::Consumer<consumer::pull::Config>,
    room: Arc<Semaphore>,
    work: Arc<Work>,
    job: Arc<dyn Job>,
) -> Result<(), String> {
    {
        let c = cluster.upgrade().ok_or("the cluster is gone")?;
        c.js.get_or_create_stream(dead_config())
            .await
            .map_err(|e| format!("the dead letters' stream: {e}"))?;
    }
    let mut lag_seen = std::time::Instant::now() - LAG_EVERY;
    loop {
        if lag_seen.elapsed() >= LAG_EVERY {
            lag_seen = std::time::Instant::now();
            if let (Ok(info), Some(node)) = (
                consumer.info().await,
                cluster.upgrade().and_then(|c| c.node().ok()),
            ) {
                node.deliveries
                    .set_lag(&work.label, work.trigger, info.num_pending);
            }
        }
        let first = room
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        {
            let c = cluster.upgrade().ok_or("the cluster is gone")?;
            if c.paused(&work.label, work.priority) {
                drop(c);
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        }
        let mut batch = consumer
            .fetch()
            .max_messages(1 + room.available_permits())
            .expires(PULL_EXPIRES)
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        let mut first = Some(first);
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| e.to_string())?;
            let permit = match first.take() {
                Some(p) => p,
                None => room
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| e.to_string())?,
            };
            let c = cluster.upgrade().ok_or("the cluster is gone")?;
            let (work, job) = (work.clone(), job.clone());
            tokio::spawn(async move {
                settle(c, &work, job, message).await;
                drop(permit);
            });
        }
    }
}

/// Runs one message and settles it.
async fn settle(c: Arc<NatsCluster>, work: &Work, job: Arc<dyn Job>, message: jetstream::Message) {
    let Ok(node) = c.node() else { return };
    let label = work.label.as_str();
    let (attempt, sequence) = match message.info() {
        Ok(info) => (
            u32::try_from(info.delivered).unwrap_or(u32::MAX),
            info.stream_sequence,
        ),
        Err(e) => {
            tracing::warn!(label, error = %e, "a durable message without its metadata");
            return;
        }
    };
    let run_id = format!("{label}-{sequence}");
    node.deliveries.count(label, work.trigger, "delivered");
    let delivery = || Delivery {
        attempt,
        sequence,
        subject: message.subject.to_string(),
        payload: message.payload.clone(),
        headers: message.headers.clone(),
    };
    let outcome = if attempt > work.max_deliver {
        // Its last attempt's node died before it could say.
        Err(NodeError::Cluster(format!(
            "{} attempts were made; the last one's node stopped before it ended",
            attempt - 1
        )))
    } else {
        // A node or function at capacity is not the message's fault: it waits here for room
        // (a while), rather than spend one of its attempts.
        let run = async {
            let began = std::time::Instant::now();
            loop {
                match job.run(c.clone(), delivery()).await {
                    Err(e) if e.is_retryable() && began.elapsed() < CAPACITY_WAIT => {
                        tokio::time::sleep(CAPACITY_PAUSE).await;
                    }
                    other => break other,
                }
            }
        };
        tokio::pin!(run);
        // Tell JetStream the run goes on, so no other node gets it meanwhile.
        let mut progress = tokio::time::interval(ACK_WAIT / 3);
        progress.tick().await;
        loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                _ = progress.tick() => { let _ = message.ack_with(AckKind::Progress).await; }
            }
        }
    };
    let error = match outcome {
        Ok(()) => {
            match message.double_ack().await {
                Ok(()) => node.deliveries.count(label, work.trigger, "acked"),
                Err(e) => {
                    tracing::warn!(label, run_id, error = %e, "a run succeeded but its ack was lost; it will run again")
                }
            }
            return;
        }
        Err(e) => e,
    };
    let spent =
        attempt >= work.max_deliver || matches!(&error, NodeError::BadRequest(m) if m == NOT_UTF8);
    let retry_in = backoff(work.backoff, attempt);
    if !spent {
        node.deliveries.count(label, work.trigger, "retried");
        tracing::info!(label, run_id, attempt, error = %error, "a durable message's run failed; retrying");
        let _ = message.ack_with(AckKind::Nak(Some(retry_in))).await;
        return;
    }
    let dead = &work.dead_letter;
    let headers = dead_headers(label, &message.subject, &error, attempt, &run_id);
    let stored = match c
        .js
        .publish_with_headers(dead.clone(), headers.clone(), message.payload.clone())
        .await
    {
        Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let stored = match stored {
        Ok(()) => Ok(()),
        // An operator's own dead-letter subject may have no stream: then it is a plain publish.
        Err(e)
            if !dead.starts_with(limes_node::subject::RESERVED_PREFIX)
                && e.contains("no responders") =>
        {
            c.client
                .publish_with_headers(dead.clone(), headers, message.payload.clone())
                .await
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e),
    };
    match stored {
        Ok(()) => {
            node.deliveries.count(label, work.trigger, "dead_lettered");
            tracing::warn!(label, run_id, attempt, error = %error, dead_letter = dead, "a durable message was dead-lettered");
            job.given_up(c.clone(), delivery(), error.to_string()).await;
            let _ = message.double_ack().await;
        }
        Err(e) => {
            tracing::warn!(label, run_id, error = %e, "could not store a dead letter; the message comes back");
            let _ = message.ack_with(AckKind::Nak(Some(retry_in))).await;
        }
    }
}

/// A NATS message as a message function gets it: `Content-Type` becomes its content type, the
/// other headers its metadata.
pub(crate) fn message_of(
    subject: &str,
    payload: &[u8],
    headers: Option<&HeaderMap>,
) -> limes_runtime::messaging::Message {
    let mut content_type = None;
    let mut metadata = Vec::new();
    for (name, values) in headers.into_iter().flat_map(|h| h.iter()) {
        for value in values {
            if name.to_string().eq_ignore_ascii_case("content-type") {
                content_type = Some(value.to_string());
            } else {
                metadata.push((name.to_string(), value.to_string()));
            }
        }
    }
    limes_runtime::messaging::Message {
        topic: Some(subject.to_owned()),
        content_type,
        data: payload.to_vec(),
        metadata,
    }
}

/// What a dead letter carries besides the payload.
pub(crate) fn dead_headers(
    label: &str,
    subject: &async_nats::Subject,
    error: &NodeError,
    attempts: u32,
    run_id: &str,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Limes-Function", label);
    h.insert("Limes-Subject", subject.as_str());
    h.insert("Limes-Error", header_value(&error.to_string()).as_str());
    h.insert("Limes-Attempts", attempts.to_string().as_str());
    h.insert("Limes-Run-Id", run_id);
    h
}

/// `text` on one line, as a header value must be.
pub(crate) fn header_value(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
