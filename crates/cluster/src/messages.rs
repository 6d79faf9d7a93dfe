//! Message triggers (see [`limes_node::triggers::message`]): the node's subscriptions, kept in
//! step with its registry, and the stream and consumers of durable ones.
//!
//! - **core**: every node that holds the function subscribes in the queue group
//!   `limes.FUNCTION`, so NATS gives each message to one of them.
//! - **durable**: [`store::EVENTS`] captures the subject (interest retention); one durable pull
//!   consumer per function, `fn-FUNCTION`, is shared by every node, which pulls only as many
//!   messages as it has room to run. A message is acked once the function succeeded, negatively
//!   acked with the trigger's backoff when it failed, and dead-lettered (then acked) once its
//!   attempts are spent. The consumer's `max_ack_pending` is the trigger's `max_in_flight`, so
//!   the bound holds across the cluster and 1 keeps the order.

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use limes_node::NodeError;
use limes_node::admission::Priority;
use limes_node::cluster::Messages;
use limes_node::subject::{Pattern, cover};
use limes_node::triggers::Triggers;
use tokio::sync::Semaphore;

use crate::durable::{self, Delivery, Job, Work, dead_headers, header_value};
use crate::{NatsCluster, store, unavailable};

/// The name of `function`'s durable consumer.
pub fn consumer_name(function: &str) -> String {
    format!("fn-{function}")
}

/// The queue group of `function`'s core subscription.
pub fn queue_group(function: &str) -> String {
    format!("limes.{function}")
}

/// What one function's message trigger asks of this node.
#[derive(Clone, PartialEq)]
struct Wanted {
    triggers: Triggers,
    priority: Priority,
    /// The function's own bound on runs at once: a node takes no more messages than it may run.
    max_concurrency: u32,
}

/// One running subscription of this node.
pub(crate) struct Subscription {
    wanted: Wanted,
    task: tokio::task::AbortHandle,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Run ids of core deliveries, unique on this node.
static CORE_RUNS: AtomicU64 = AtomicU64::new(0);

/// Guests' messages (`wasi:messaging` `producer`), on the cluster's NATS: a core publish,
/// flushed, so the server has it when `send` returns (a stream that captures the subject keeps
/// it). Not a JetStream publish: on a subject without a stream that would wait for an
/// acknowledgement nobody sends, and on one with a core subscriber that answers, take the
/// answer for one.
pub(crate) struct NatsPublisher {
    pub client: async_nats::Client,
}

impl limes_runtime::messaging::MessagingBackend for NatsPublisher {
    fn publish(
        &self,
        subject: String,
        message: limes_runtime::messaging::Message,
    ) -> limes_runtime::messaging::PublishFuture {
        let client = self.client.clone();
        Box::pin(async move {
            let headers = guest_headers(&message)?;
            client
                .publish_with_headers(subject, headers, Bytes::from(message.data))
                .await
                .map_err(|e| e.to_string())?;
            client.flush().await.map_err(|e| e.to_string())
        })
    }
}

/// The NATS headers of a guest's message: its content type and metadata. A name NATS cannot
/// carry is refused (async-nats would panic on it), and so are NATS' own (`Nats-…`), which
/// steer JetStream (de-duplication ids, expected sequences) rather than describe a message.
pub(crate) fn guest_headers(
    message: &limes_runtime::messaging::Message,
) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    if let Some(ct) = &message.content_type {
        headers.insert("Content-Type", header_value(ct).as_str());
    }
    for (key, value) in &message.metadata {
        let name = async_nats::HeaderName::from_str(key)
            .ok()
            .filter(|_| !key.is_empty() && !key.to_ascii_lowercase().starts_with("nats-"))
            .ok_or_else(|| format!("metadata {key:?}: not a name a message may carry"))?;
        headers.insert(name, header_value(value).as_str());
    }
    Ok(headers)
}

impl Messages for NatsCluster {
    fn prepare_durable(
        &self,
        name: String,
        triggers: Triggers,
    ) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(async move { self.consumer(&name, &triggers).await.map(drop) })
    }

    fn forget_durable(&self, name: String) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(async move {
            let stream = self.events().await?;
            match stream.delete_consumer(&consumer_name(&name)).await {
                Ok(_) => Ok(()),
                Err(e) if e.to_string().contains("not found") => Ok(()),
                Err(e) => Err(unavailable("removing a durable trigger's consumer", e)),
            }
        })
    }
}

impl NatsCluster {
    /// The stream of durable triggers, created on first use.
    pub(crate) async fn events(&self) -> Result<stream::Stream, NodeError> {
        match self.js.get_stream(store::EVENTS).await {
            Ok(s) => Ok(s),
            Err(_) => {
                // No subjects yet would be refused; the dead letters' own prefix is never a
                // function's, so it stands in until the first trigger comes.
                self.js
                    .get_or_create_stream(events_config(vec!["limes.none".into()]))
                    .await
                    .map_err(|e| unavailable("creating the stream of durable triggers", e))
            }
        }
    }

    /// Makes sure [`store::EVENTS`] captures `subject`, widening its subjects if need be, under
    /// a lease: two nodes changing the subjects at once could each drop the other's.
    pub(crate) async fn capture_subject(&self, subject: &Pattern) -> Result<(), NodeError> {
        let mut stream = self.events().await?;
        let covered = |subjects: &[String]| {
            subjects
                .iter()
                .filter_map(|s| Pattern::parse(s).ok())
                .any(|s| s.covers(subject))
        };
        let info = stream
            .info()
            .await
            .map_err(|e| unavailable("reading the stream of durable triggers", e))?;
        if covered(&info.config.subjects) {
            return Ok(());
        }
        for _ in 0..50 {
            let outcome = self
                .with_lease(
                    store::EVENTS_LEASE_KEY,
                    "changing the durable subjects",
                    || async {
                        // Read again under the lease: another node may have changed them.
                        let info = stream
                            .info()
                            .await
                            .map_err(|e| unavailable("reading the stream of durable triggers", e))?
                            .clone();
                        if covered(&info.config.subjects) {
                            return Ok(());
                        }
                        let subjects = cover(
                            info.config
                                .subjects
                                .iter()
                                .filter(|s| *s != "limes.none")
                                .filter_map(|s| Pattern::parse(s).ok())
                                .chain([subject.clone()]),
                        );
                        let mut config = info.config;
                        config.subjects = subjects.into_iter().map(String::from).collect();
                        self.js.update_stream(config).await.map_err(|e| {
                            NodeError::BadRequest(format!(
                                "on_message={subject}: JetStream refuses to keep it ({e})"
                            ))
                        })?;
                        Ok(())
                    },
                )
                .await;
            match outcome {
                Err(NodeError::Conflict(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                other => return other,
            }
        }
        Err(NodeError::Cluster(
            "another node kept the durable subjects' lease for 5 s".into(),
        ))
    }

    /// `name`'s durable consumer, created or brought in line with `section`.
    async fn consumer(
        &self,
        name: &str,
        triggers: &Triggers,
    ) -> Result<consumer::Consumer<consumer::pull::Config>, NodeError> {
        let subject = triggers
            .message
            .on_message
            .as_ref()
            .ok_or_else(|| NodeError::BadRequest("no on_message".into()))?;
        self.capture_subject(subject).await?;
        let stream = self.events().await?;
        let config = consumer::pull::Config {
            durable_name: Some(consumer_name(name)),
            description: Some(format!("durable trigger of {name}")),
            filter_subject: subject.to_string(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: durable::ACK_WAIT,
            // Attempts are counted here, not by the server: a message whose last attempt died
            // with its node must come back, to be dead-lettered rather than forgotten.
            max_deliver: -1,
            max_ack_pending: i64::from(triggers.delivery.max_in_flight()),
            // A new trigger starts with what is published from now on.
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        };
        match stream.create_consumer(config.clone()).await {
            Ok(c) => Ok(c),
            Err(first) => {
                // A change the server does not take in place (its subject): start afresh.
                tracing::warn!(function = name, error = %first, "recreating a durable trigger's consumer");
                let _ = stream.delete_consumer(&consumer_name(name)).await;
                stream
                    .create_consumer(config)
                    .await
                    .map_err(|e| unavailable("creating a durable trigger's consumer", e))
            }
        }
    }

    /// Keeps this node's subscriptions in step with its registry, for as long as the cluster
    /// lives: each change of a function looks again at that function, a lag at all of them.
    pub(crate) async fn follow_triggers(self: Arc<Self>) -> Result<(), String> {
        let changes = self.node().map_err(|e| e.to_string())?.changes();
        let names = || {
            let node = self.node().map_err(|e| e.to_string())?;
            let mut names: Vec<String> = node
                .list()
                .map(|records| records.into_iter().map(|r| r.name).collect())
                .unwrap_or_default();
            // Subscriptions this node holds for functions it no longer has.
            names.extend(self.subscriptions().keys().cloned());
            Ok(names)
        };
        crate::lease::follow(changes, names, |name| {
            let me = self.clone();
            Box::pin(async move { me.reconcile(&name).await })
        })
        .await
    }

    /// The functions this node subscribes for, sorted (for the status).
    pub(crate) fn subscribed(&self) -> Vec<String> {
        let mut names: Vec<String> = self.subscriptions().keys().cloned().collect();
        names.sort();
        names
    }

    fn subscriptions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Subscription>> {
        self.subscriptions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts, changes or stops this node's subscription for `name`, as its active version says.
    async fn reconcile(self: &Arc<Self>, name: &str) {
        let Ok(node) = self.node() else { return };
        let wanted = match node.get(name).await {
            Ok(record) => {
                let manifest = &record.active_version().manifest;
                manifest
                    .triggers
                    .message
                    .on_message
                    .is_some()
                    .then(|| Wanted {
                        triggers: manifest.triggers.clone(),
                        priority: manifest.priority,
                        max_concurrency: manifest.max_concurrency,
                    })
            }
            Err(NodeError::NotFound(_)) => None,
            Err(e) => {
                tracing::warn!(function = name, error = %e, "cannot read a function's trigger");
                return;
            }
        };
        let had = self.subscriptions().get(name).map(|s| s.wanted.clone());
        if had == wanted {
            return;
        }
        self.subscriptions().remove(name);
        // A durable trigger that went away takes its consumer (and what only it kept) along;
        // any node may do it, and doing it twice is harmless.
        let durable =
            |w: &Option<Wanted>| w.as_ref().is_some_and(|w| w.triggers.message.is_durable());
        if durable(&had)
            && !durable(&wanted)
            && let Err(e) = self.forget_durable(name.to_owned()).await
        {
            tracing::warn!(function = name, error = %e, "could not remove a durable trigger's consumer");
        }
        let Some(wanted) = wanted else {
            return;
        };
        if let Err(e) = wanted.triggers.check(&node.config().grants, true) {
            tracing::warn!(function = name, error = %e, "not subscribing: this node does not allow the subject");
            return;
        }
        let weak = Arc::downgrade(self);
        let (function, w) = (name.to_owned(), wanted.clone());
        let task = tokio::spawn(async move {
            loop {
                let outcome = if w.triggers.message.is_durable() {
                    pull(weak.clone(), &function, &w).await
                } else {
                    subscribe(weak.clone(), &function, &w).await
                };
                let Some(cluster) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = outcome {
                    tracing::debug!(function, error = %e, "a trigger's subscription ended; again in a moment");
                    cluster.failed(format!("trigger of {function}: {e}")).await;
                }
                drop(cluster);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        self.subscriptions().insert(
            name.to_owned(),
            Subscription {
                wanted,
                task: task.abort_handle(),
            },
        );
    }

    /// Whether `name`'s trigger waits now: a batch function's, in an emergency that does not
    /// name it urgent.
    pub(crate) fn paused(&self, name: &str, priority: Priority) -> bool {
        priority == Priority::Batch && self.plan_now().is_some_and(|p| !p.is_urgent(name))
    }
}

/// Whether `subject` is a client's inbox (`_INBOX.…`, literal), the only place a request is
/// answered.
fn is_inbox(subject: &str) -> bool {
    subject.starts_with("_INBOX.")
        && subject.len() <= 256
        && subject
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>')
}

/// What bounds the runs of one trigger on this node: its `max_in_flight`, the function's
/// `max_concurrency` and the node's capacity, so that a node takes only messages it can run
/// now and leaves the rest in the queue (core) or the stream (durable) for itself later or for
/// another node.
fn room(cluster: &Weak<NatsCluster>, wanted: &Wanted) -> Result<Arc<Semaphore>, String> {
    let c = cluster.upgrade().ok_or("the cluster is gone")?;
    let capacity = c.node().map_err(|e| e.to_string())?.config().capacity;
    let permits = wanted
        .triggers
        .delivery
        .max_in_flight()
        .min(wanted.max_concurrency)
        .min(capacity)
        .max(1);
    Ok(Arc::new(Semaphore::new(permits as usize)))
}

/// The settings of [`store::EVENTS`] with `subjects`.
fn events_config(subjects: Vec<String>) -> stream::Config {
    stream::Config {
        name: store::EVENTS.to_owned(),
        subjects,
        retention: stream::RetentionPolicy::Interest,
        max_age: store::EVENTS_MAX_AGE,
        max_bytes: store::EVENTS_MAX_BYTES,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    }
}

/// A core subscription of `name`: runs each message on this node, at most `max_in_flight` at
/// once, until the subscription fails or the cluster goes.
async fn subscribe(cluster: Weak<NatsCluster>, name: &str, wanted: &Wanted) -> Result<(), String> {
    let (triggers, priority) = (&wanted.triggers, wanted.priority);
    let (client, subject) = {
        let c = cluster.upgrade().ok_or("the cluster is gone")?;
        let subject = triggers.message.on_message.clone().ok_or("no subject")?;
        (c.client.clone(), subject)
    };
    let mut messages = client
        .queue_subscribe(subject.to_string(), queue_group(name))
        .await
        .map_err(|e| e.to_string())?;
    let room = room(&cluster, wanted)?;
    while let Some(message) = messages.next().await {
        let Some(c) = cluster.upgrade() else {
            return Ok(());
        };
        let node = c.node().map_err(|e| e.to_string())?;
        if c.paused(name, priority) {
            node.deliveries.count(name, "message", "paused");
            continue;
        }
        let permit = room
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (name, policy) = (name.to_owned(), triggers.delivery.clone());
        tokio::spawn(async move {
            let run_id = format!("{}-{}", c.id, CORE_RUNS.fetch_add(1, Ordering::Relaxed) + 1);
            node.deliveries.count(&name, "message", "delivered");
            let delivered = durable::message_of(
                message.subject.as_str(),
                &message.payload,
                message.headers.as_ref(),
            );
            let outcome = node.deliver(&name, delivered).await;
            match &outcome {
                Ok(_) => node.deliveries.count(&name, "message", "acked"),
                Err(NodeError::BadRequest(m)) if m == durable::NOT_UTF8 => {
                    let error = NodeError::BadRequest(m.clone());
                    let headers = dead_headers(&name, &message.subject, &error, 1, &run_id);
                    let dead = policy.dead_letter_subject(&name);
                    let _ = c
                        .client
                        .publish_with_headers(dead, headers, message.payload.clone())
                        .await;
                    node.deliveries.count(&name, "message", "dead_lettered");
                }
                Err(e) => {
                    node.deliveries.count(&name, "message", "failed");
                    tracing::info!(function = name, run_id, error = %e, "a message's run failed; core delivery drops it");
                }
            }
            // A request gets the function's result, or its error in a header; only a client's
            // inbox is answered: a reply subject is the sender's to choose, and the node's
            // connection may write where no function may (the cluster's buckets, hand-offs).
            if let Some(reply) = message.reply.filter(|r| is_inbox(r)) {
                let (headers, body) = match outcome {
                    Ok(ran) => (HeaderMap::new(), Bytes::from(ran.result)),
                    Err(e) => {
                        let mut h = HeaderMap::new();
                        h.insert("Limes-Error", header_value(&e.to_string()).as_str());
                        (h, Bytes::new())
                    }
                };
                let _ = c.client.publish_with_headers(reply, headers, body).await;
            }
            drop(permit);
        });
    }
    Ok(())
}

/// The durable side of `name`: its consumer's messages, each run through the function.
async fn pull(cluster: Weak<NatsCluster>, name: &str, wanted: &Wanted) -> Result<(), String> {
    let (triggers, priority) = (&wanted.triggers, wanted.priority);
    let consumer = {
        let c = cluster.upgrade().ok_or("the cluster is gone")?;
        c.consumer(name, triggers)
            .await
            .map_err(|e| e.to_string())?
    };
    let policy = &triggers.delivery;
    let work = Work {
        label: name.to_owned(),
        trigger: "durable",
        max_deliver: policy.max_deliver(),
        backoff: policy.backoff(1),
        dead_letter: policy.dead_letter_subject(name),
        priority,
    };
    let room = room(&cluster, wanted)?;
    durable::pull(
        cluster,
        consumer,
        room,
        Arc::new(work),
        Arc::new(Invoke(name.to_owned())),
    )
    .await
}

/// A durable message's run: the function, with the payload as its args.
struct Invoke(String);

impl Job for Invoke {
    fn run(&self, c: Arc<NatsCluster>, d: Delivery) -> BoxFuture<'static, Result<(), NodeError>> {
        let name = self.0.clone();
        Box::pin(async move {
            let node = c.node()?;
            node.deliver(&name, d.message()).await.map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use limes_runtime::messaging::Message;

    #[test]
    fn a_guests_metadata_becomes_headers_or_is_refused() {
        let message = |key: &str| Message {
            content_type: Some("text/plain".into()),
            metadata: vec![(key.into(), "v\r\nInjected: 1".into())],
            ..Message::default()
        };
        let headers = guest_headers(&message("sensor")).unwrap();
        assert_eq!(headers.get("sensor").unwrap().as_str(), "v  Injected: 1");
        assert_eq!(headers.get("Content-Type").unwrap().as_str(), "text/plain");
        // Names async-nats would panic on, and NATS' own, are refused.
        for bad in ["a b", "a:b", "é", "", "Nats-Msg-Id", "nats-expected-stream"] {
            assert!(guest_headers(&message(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_inboxes_are_answered() {
        assert!(is_inbox("_INBOX.abc.def"));
        for not in [
            "$KV.limes-tokens.evil",
            "limes.wf.a.b",
            "$JS.API.STREAM.DELETE.X",
            "_INBOX.>",
            "x._INBOX.a",
        ] {
            assert!(!is_inbox(not), "{not}");
        }
    }
}
