//! Workflows in a cluster (see [`limes_node::workflows`]): specs in the KV bucket
//! [`store::WORKFLOWS`], hand-offs in the stream [`store::HANDOFFS`], step records in the KV
//! bucket [`store::RUNS`].
//!
//! Each step of each workflow has a durable pull consumer `wf-WORKFLOWXSTEP`, shared by every
//! node: whichever node has room takes the next hand-off, runs the step, publishes what it hands
//! on, and only then acks. A hand-off carries the id `WORKFLOW.RUN.STEP` (`Nats-Msg-Id`), so
//! JetStream keeps one of each within [`store::HANDOFF_DEDUP`]: a step that ran again after its
//! node died hands on nothing twice. A workflow's message trigger is a consumer `wfs-WORKFLOW`
//! on the durable triggers' stream (or a core queue group), each message starting a run.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{consumer, stream};
use futures::StreamExt;
use futures::future::BoxFuture;
use limes_node::NodeError;
use limes_node::cluster::Workflows;
use limes_node::triggers::message::Mode;
use limes_node::workflows::{Handoff, StepRun, Workflow};
use tokio::sync::Semaphore;

use crate::durable::{self, Delivery, Job, Work};
use crate::{NatsCluster, store, unavailable};

/// The subject of hand-offs to `step` of `workflow`.
pub fn handoff_subject(workflow: &str, step: &str) -> String {
    format!("limes.wf.{workflow}.{step}")
}

/// The consumer of `step` of `workflow`. Names are lowercase, so the uppercase `X` cannot occur
/// in either: no two steps of any workflows share a consumer.
pub fn step_consumer(workflow: &str, step: &str) -> String {
    format!("wf-{workflow}X{step}")
}

/// The consumer of `workflow`'s durable trigger.
pub fn trigger_consumer(workflow: &str) -> String {
    format!("wfs-{workflow}")
}

/// The header that names a hand-off's run.
const RUN_HEADER: &str = "Limes-Run";

fn handoffs_config() -> stream::Config {
    stream::Config {
        name: store::HANDOFFS.to_owned(),
        subjects: vec!["limes.wf.>".into()],
        // A hand-off goes to one step's consumer, and is gone once that step succeeded.
        retention: stream::RetentionPolicy::WorkQueue,
        duplicate_window: store::HANDOFF_DEDUP,
        max_age: store::EVENTS_MAX_AGE,
        max_bytes: store::EVENTS_MAX_BYTES,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    }
}

impl Workflows for NatsCluster {
    fn publish_workflow(&self, workflow: Workflow) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(async move {
            let handoffs = self.handoffs().await?;
            // Consumers first: a hand-off published once the workflow is known is kept.
            for step in &workflow.steps {
                let name = step_consumer(&workflow.name, &step.name);
                handoffs
                    .create_consumer(consumer::pull::Config {
                        durable_name: Some(name),
                        description: Some(format!(
                            "step {} of workflow {}",
                            step.name, workflow.name
                        )),
                        filter_subject: handoff_subject(&workflow.name, &step.name),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: durable::ACK_WAIT,
                        max_deliver: -1,
                        max_ack_pending: 1024,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| unavailable("creating a step's consumer", e))?;
            }
            if let Some(subject) = &workflow.trigger.on_message
                && workflow.trigger.delivery == Mode::Durable
            {
                self.capture_subject(subject).await?;
                self.events()
                    .await?
                    .create_consumer(consumer::pull::Config {
                        durable_name: Some(trigger_consumer(&workflow.name)),
                        filter_subject: subject.to_string(),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: durable::ACK_WAIT,
                        max_deliver: -1,
                        deliver_policy: consumer::DeliverPolicy::New,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| unavailable("creating a workflow trigger's consumer", e))?;
            }
            let value =
                serde_json::to_vec(&workflow).map_err(|e| NodeError::Storage(e.to_string()))?;
            self.buckets()
                .await?
                .workflows
                .put(&workflow.name, value.into())
                .await
                .map_err(|e| unavailable("storing a workflow", e))?;
            Ok(())
        })
    }

    fn withdraw_workflow(&self, name: String) -> BoxFuture<'_, Result<bool, NodeError>> {
        Box::pin(async move {
            let bucket = self.buckets().await?.workflows;
            let existed = bucket
                .get(&name)
                .await
                .map_err(|e| unavailable("reading a workflow", e))?
                .is_some();
            if existed {
                bucket
                    .delete(&name)
                    .await
                    .map_err(|e| unavailable("removing a workflow", e))?;
            }
            self.forget_workflow_consumers(&name, &[], true).await;
            Ok(existed)
        })
    }

    fn hand_off(&self, handoffs: Vec<Handoff>) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(async move {
            self.handoffs().await?;
            let mut acks = Vec::with_capacity(handoffs.len());
            for h in handoffs {
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", h.dedup_id().as_str());
                headers.insert(RUN_HEADER, h.run.as_str());
                let ack = self
                    .js
                    .publish_with_headers(
                        handoff_subject(&h.workflow, &h.step),
                        headers,
                        h.payload.into(),
                    )
                    .await
                    .map_err(|e| unavailable("handing a payload on", e))?;
                acks.push(ack);
            }
            // Acknowledged only once JetStream has stored every one.
            for ack in acks {
                ack.await
                    .map_err(|e| unavailable("handing a payload on", e))?;
            }
            Ok(())
        })
    }

    fn record_step(
        &self,
        workflow: String,
        run: String,
        step: String,
        record: StepRun,
        first: bool,
    ) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(async move {
            let value =
                serde_json::to_vec(&record).map_err(|e| NodeError::Storage(e.to_string()))?;
            let runs = self.buckets().await?.runs;
            let key = format!("{workflow}.{run}.{step}");
            if first {
                return match runs.create(key, value.into()).await {
                    Ok(_) => Ok(()),
                    Err(e)
                        if e.kind()
                            == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(unavailable("recording a step", e)),
                };
            }
            runs.put(key, value.into())
                .await
                .map_err(|e| unavailable("recording a step", e))?;
            Ok(())
        })
    }

    fn run_steps(
        &self,
        workflow: Workflow,
        run: String,
    ) -> BoxFuture<'_, Result<BTreeMap<String, StepRun>, NodeError>> {
        Box::pin(async move {
            let runs = self.buckets().await?.runs;
            let mut out = BTreeMap::new();
            for step in &workflow.steps {
                let key = format!("{}.{run}.{}", workflow.name, step.name);
                if let Some(value) = runs
                    .get(&key)
                    .await
                    .map_err(|e| unavailable("reading a run", e))?
                {
                    let record = serde_json::from_slice(&value)
                        .map_err(|e| NodeError::Storage(format!("the record of {key}: {e}")))?;
                    out.insert(step.name.clone(), record);
                }
            }
            Ok(out)
        })
    }
}

/// One workflow's consumers running on this node.
pub(crate) struct Following {
    workflow: Workflow,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Following {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl NatsCluster {
    /// The hand-offs' stream, created on first use.
    async fn handoffs(&self) -> Result<stream::Stream, NodeError> {
        self.js
            .get_or_create_stream(handoffs_config())
            .await
            .map_err(|e| unavailable("opening the hand-offs' stream", e))
    }

    /// Removes workflow `name`'s consumers, but those of `keep` steps; its trigger's too when
    /// `trigger`.
    async fn forget_workflow_consumers(&self, name: &str, keep: &[String], trigger: bool) {
        if let Ok(handoffs) = self.handoffs().await {
            let prefix = format!("wf-{name}X");
            let mut names = handoffs.consumer_names();
            let mut stale = Vec::new();
            while let Some(Ok(consumer)) = names.next().await {
                if let Some(step) = consumer.strip_prefix(&prefix)
                    && !keep.iter().any(|k| k == step)
                {
                    stale.push(consumer);
                }
            }
            for consumer in stale {
                let _ = handoffs.delete_consumer(&consumer).await;
            }
        }
        if trigger && let Ok(events) = self.events().await {
            let _ = events.delete_consumer(&trigger_consumer(name)).await;
        }
    }

    /// Follows the cluster's workflows into this node's registry.
    pub(crate) async fn watch_workflows(self: Arc<Self>) -> Result<(), String> {
        let buckets = self.buckets().await.map_err(|e| e.to_string())?;
        let mut watch = buckets
            .workflows
            .watch_all()
            .await
            .map_err(|e| e.to_string())?;
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| e.to_string())?;
            let node = self.node().map_err(|e| e.to_string())?;
            let workflow = match entry.operation {
                async_nats::jetstream::kv::Operation::Put => {
                    match serde_json::from_slice::<Workflow>(&entry.value) {
                        Ok(w) => Some(w),
                        Err(e) => {
                            tracing::warn!(workflow = entry.key, error = %e, "bad workflow record");
                            continue;
                        }
                    }
                }
                _ => None,
            };
            if let Err(e) = node.apply_workflow(&entry.key, workflow).await {
                tracing::error!(workflow = entry.key, error = %e, "could not apply a workflow");
            }
        }
        Ok(())
    }

    /// Keeps this node's consumers of workflows' steps and triggers in step with its
    /// workflows, for as long as the cluster lives.
    pub(crate) async fn follow_workflows(self: Arc<Self>) -> Result<(), String> {
        let changes = self.node().map_err(|e| e.to_string())?.workflow_changes();
        let names = || {
            let node = self.node().map_err(|e| e.to_string())?;
            let mut names: Vec<String> = node
                .list_workflows()
                .map(|ws| ws.into_iter().map(|w| w.name).collect())
                .unwrap_or_default();
            names.extend(self.following().keys().cloned());
            Ok(names)
        };
        crate::lease::follow(changes, names, |name| {
            let me = self.clone();
            Box::pin(async move { me.reconcile_workflow(&name).await })
        })
        .await
    }

    fn following(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Following>> {
        self.workflows_followed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    async fn reconcile_workflow(self: &Arc<Self>, name: &str) {
        let Ok(node) = self.node() else { return };
        let wanted = match node.workflow(name) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(workflow = name, error = %e, "cannot read a workflow");
                return;
            }
        };
        let had = self.following().get(name).map(|f| f.workflow.clone());
        if had == wanted {
            return;
        }
        self.following().remove(name);
        let Some(workflow) = wanted else { return };
        // Steps dropped by a new version lose their consumers (any node may do it).
        if had.is_some() {
            let keep: Vec<String> = workflow.steps.iter().map(|s| s.name.clone()).collect();
            self.forget_workflow_consumers(name, &keep, false).await;
        }
        // A room for each consumer, the node's capacity: a consumer waiting for messages holds
        // one place of its own room, never one another consumer needs (a shared one let idle
        // steps' pulls starve a busy step for a pull's whole expiry). Admission bounds the runs.
        let capacity = node.config().capacity.max(1) as usize;
        let room = || Arc::new(Semaphore::new(capacity));
        let mut tasks = Vec::new();
        for step in &workflow.steps {
            let work = Arc::new(Work {
                label: format!("{}.{}", workflow.name, step.name),
                trigger: "workflow",
                max_deliver: workflow.max_deliver,
                backoff: workflow.retry_backoff,
                dead_letter: format!("limes.dead.{}.{}", workflow.name, step.name),
                priority: workflow.priority,
            });
            let job: Arc<dyn Job> = Arc::new(RunStep {
                workflow: workflow.name.clone(),
                step: step.name.clone(),
            });
            let consumer = step_consumer(&workflow.name, &step.name);
            tasks.push(self.keep_pulling(store::HANDOFFS, consumer, room(), work, job));
        }
        if let Some(subject) = workflow.trigger.on_message.clone()
            && let Err(e) = node.config().grants.messaging.check("on_message", &subject)
        {
            tracing::warn!(workflow = name, error = %e, "not subscribing: this node does not allow the subject");
        } else if let Some(subject) = workflow.trigger.on_message.clone() {
            let start = Arc::new(StartRun(workflow.name.clone()));
            tasks.push(match workflow.trigger.delivery {
                Mode::Durable => {
                    let work = Arc::new(Work {
                        label: workflow.name.clone(),
                        trigger: "workflow",
                        max_deliver: workflow.max_deliver,
                        backoff: workflow.retry_backoff,
                        dead_letter: format!("limes.dead.{}", workflow.name),
                        priority: workflow.priority,
                    });
                    self.keep_pulling(
                        store::EVENTS,
                        trigger_consumer(&workflow.name),
                        room(),
                        work,
                        start,
                    )
                }
                Mode::Core => self.keep_subscribed(subject.to_string(), workflow.name.clone()),
            });
        }
        self.following()
            .insert(name.to_owned(), Following { workflow, tasks });
    }

    /// Pulls consumer `consumer` of stream `stream` through `job`, again after any failure,
    /// until aborted or the cluster goes.
    fn keep_pulling(
        self: &Arc<Self>,
        stream: &'static str,
        consumer: String,
        room: Arc<Semaphore>,
        work: Arc<Work>,
        job: Arc<dyn Job>,
    ) -> tokio::task::AbortHandle {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let outcome = async {
                    let c = weak.upgrade().ok_or("the cluster is gone")?;
                    let source = c.js.get_stream(stream).await.map_err(|e| e.to_string())?;
                    let pull = source
                        .get_consumer::<consumer::pull::Config>(&consumer)
                        .await
                        .map_err(|e| e.to_string())?;
                    drop(c);
                    durable::pull(weak.clone(), pull, room.clone(), work.clone(), job.clone()).await
                }
                .await;
                let Some(c) = weak.upgrade() else { return };
                if let Err(e) = outcome {
                    tracing::debug!(consumer, error = %e, "a workflow's consumer ended; again in a moment");
                    c.failed(format!("consumer {consumer}: {e}")).await;
                }
                drop(c);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
        .abort_handle()
    }

    /// Starts a run of `workflow` for each core message of `subject` (queue group
    /// `limes.wf.WORKFLOW`), until aborted.
    fn keep_subscribed(
        self: &Arc<Self>,
        subject: String,
        workflow: String,
    ) -> tokio::task::AbortHandle {
        let weak: Weak<NatsCluster> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(c) = weak.upgrade() else { return };
                let subscribed = c
                    .client
                    .queue_subscribe(subject.clone(), format!("limes.wf.{workflow}"))
                    .await;
                drop(c);
                let Ok(mut messages) = subscribed else {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                };
                while let Some(message) = messages.next().await {
                    let Some(node) = weak.upgrade().and_then(|c| c.node().ok()) else {
                        return;
                    };
                    let payload = String::from_utf8_lossy(&message.payload).into_owned();
                    if let Err(e) = node.start_run(&workflow, payload, None).await {
                        tracing::warn!(workflow, error = %e, "a message could not start a run");
                    }
                }
            }
        })
        .abort_handle()
    }
}

/// Runs one step of a run and hands its result on.
struct RunStep {
    workflow: String,
    step: String,
}

impl Job for RunStep {
    fn run(&self, c: Arc<NatsCluster>, d: Delivery) -> BoxFuture<'static, Result<(), NodeError>> {
        let h = self.handoff(&d);
        Box::pin(async move {
            let node = c.node()?;
            let next = node.run_step(&h, d.attempt).await?;
            // What it hands on is stored before this hand-off is acked.
            if !next.is_empty() {
                c.hand_off(next).await?;
            }
            Ok(())
        })
    }

    fn given_up(&self, c: Arc<NatsCluster>, d: Delivery, error: String) -> BoxFuture<'static, ()> {
        let h = self.handoff(&d);
        Box::pin(async move {
            if let Ok(node) = c.node() {
                node.give_up_step(&h, d.attempt, error).await;
            }
        })
    }
}

impl RunStep {
    fn handoff(&self, d: &Delivery) -> Handoff {
        Handoff {
            workflow: self.workflow.clone(),
            run: d.header(RUN_HEADER).unwrap_or_else(|| "unknown".into()),
            step: self.step.clone(),
            // Hand-offs are made of text results.
            payload: String::from_utf8_lossy(&d.payload).into_owned(),
        }
    }
}

/// Starts a run for each message of a workflow's durable trigger. The run's id comes from the
/// message, so a message delivered again starts no second run.
struct StartRun(String);

impl Job for StartRun {
    fn run(&self, c: Arc<NatsCluster>, d: Delivery) -> BoxFuture<'static, Result<(), NodeError>> {
        let workflow = self.0.clone();
        Box::pin(async move {
            let node = c.node()?;
            let run = format!("m{}", d.sequence);
            node.start_run(&workflow, d.args()?, Some(run))
                .await
                .map(drop)
        })
    }
}
