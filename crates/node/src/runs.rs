//! Workflows on a node (see [`crate::workflows`]): deploying them, starting runs, running one
//! step of a run and handing its result on, and reading a run's record. Alone, hand-offs go
//! through the node's outbox and records into its registry database; in a cluster, through
//! [`crate::cluster::Workflows`].

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::admission::Priority;
use crate::error::NodeError;
use crate::node::{Node, blocking};
use crate::outbox::{Item, now_ms};
use crate::workflows::{Handoff, Status, StepRun, Workflow, new_run_id};

impl Node {
    /// Deploys `workflow` as `name`: checked whole (its steps' functions deployed, its trigger's
    /// subject allowed) before anything is stored, so a refused workflow leaves nothing behind.
    pub async fn put_workflow(
        self: &Arc<Self>,
        name: &str,
        mut workflow: Workflow,
    ) -> Result<Workflow, NodeError> {
        workflow.name = name.to_owned();
        workflow.validate().map_err(NodeError::BadRequest)?;
        for step in &workflow.steps {
            match self.get(&step.function).await {
                Ok(_) => {}
                Err(NodeError::NotFound(_)) => {
                    return Err(NodeError::BadRequest(format!(
                        "step {}: no function {} is deployed",
                        step.name, step.function
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(subject) = &workflow.trigger.on_message {
            if self.cluster().is_none() {
                return Err(NodeError::BadRequest(format!(
                    "on_message={subject}: message triggers need a cluster (limes serve --nats URL)"
                )));
            }
            self.config()
                .grants
                .messaging
                .check("on_message", subject)?;
        }
        if let Some(cluster) = self.cluster() {
            cluster.publish_workflow(workflow.clone()).await?;
        }
        self.apply_workflow(name, Some(workflow.clone())).await?;
        Ok(workflow)
    }

    /// Removes workflow `name`; false when there is none. Runs under way end at their next
    /// hand-off.
    pub async fn remove_workflow(self: &Arc<Self>, name: &str) -> Result<bool, NodeError> {
        let existed = match self.cluster() {
            Some(cluster) => cluster.withdraw_workflow(name.to_owned()).await?,
            None => self.workflow(name)?.is_some(),
        };
        self.apply_workflow(name, None).await?;
        Ok(existed)
    }

    /// Takes in workflow `name` (`None`: removed), from an API call or from the cluster.
    pub async fn apply_workflow(
        self: &Arc<Self>,
        name: &str,
        workflow: Option<Workflow>,
    ) -> Result<(), NodeError> {
        let (node, key) = (self.clone(), name.to_owned());
        blocking(move || node.workflows.put(&key, workflow.as_ref())).await?;
        self.workflow_changed(name);
        Ok(())
    }

    /// The workflow `name`.
    pub fn workflow(&self, name: &str) -> Result<Option<Workflow>, NodeError> {
        self.workflows.get(name)
    }

    /// Every workflow.
    pub fn list_workflows(&self) -> Result<Vec<Workflow>, NodeError> {
        self.workflows.list()
    }

    /// Starts a run of workflow `name` with `payload` for its first step; returns the run's id
    /// once the hand-off is durable.
    pub async fn start_run(
        self: &Arc<Self>,
        name: &str,
        payload: String,
        run: Option<String>,
    ) -> Result<String, NodeError> {
        let workflow = self
            .workflow(name)?
            .ok_or_else(|| NodeError::NotFound(format!("workflow {name}")))?;
        let run = run.unwrap_or_else(new_run_id);
        let first = workflow.start(&run, payload);
        self.record_waiting(std::slice::from_ref(&first)).await;
        self.hand_on(&workflow, vec![first]).await?;
        Ok(run)
    }

    /// Hands `handoffs` on, durably: to the cluster, or to this node's outbox.
    async fn hand_on(
        self: &Arc<Self>,
        workflow: &Workflow,
        handoffs: Vec<Handoff>,
    ) -> Result<(), NodeError> {
        if let Some(cluster) = self.cluster() {
            return cluster.hand_off(handoffs).await;
        }
        let items: Vec<Item> = handoffs.iter().map(|h| step_item(workflow, h)).collect();
        let node = self.clone();
        blocking(move || node.outbox.put(items).map(drop)).await
    }

    /// The record of run `run` of workflow `name`, by step.
    pub async fn run_record(
        self: &Arc<Self>,
        name: &str,
        run: &str,
    ) -> Result<BTreeMap<String, StepRun>, NodeError> {
        let workflow = self
            .workflow(name)?
            .ok_or_else(|| NodeError::NotFound(format!("workflow {name}")))?;
        let steps = match self.cluster() {
            Some(cluster) => cluster.run_steps(workflow, run.to_owned()).await?,
            None => self.workflows.run(name, run)?,
        };
        if steps.is_empty() {
            return Err(NodeError::NotFound(format!("run {run} of workflow {name}")));
        }
        Ok(steps)
    }

    /// The latest runs of workflow `name` that this node took a step of, newest first.
    pub fn recent_runs(&self, name: &str, limit: usize) -> Result<Vec<String>, NodeError> {
        self.workflows.runs(name, limit)
    }

    /// Records step `h.step` of its run (when `first`, only if it has no record yet).
    pub async fn record_step(self: &Arc<Self>, h: &Handoff, record: StepRun, first: bool) {
        let cluster = self.cluster().cloned();
        let local = {
            let (node, h, record) = (self.clone(), h.clone(), record.clone());
            let durable = cluster.is_none();
            blocking(move || {
                node.workflows
                    .record(&h.workflow, &h.run, &h.step, &record, first, durable)
            })
            .await
        };
        let outcome = match cluster {
            Some(cluster) => {
                if let Err(e) = local {
                    tracing::debug!(error = %e, "could not note a step here");
                }
                cluster
                    .record_step(
                        h.workflow.clone(),
                        h.run.clone(),
                        h.step.clone(),
                        record,
                        first,
                    )
                    .await
            }
            None => local,
        };
        if let Err(e) = outcome {
            tracing::warn!(workflow = h.workflow, run = h.run, step = h.step, error = %e, "could not record a step");
        }
    }

    /// Runs attempt `attempt` (1 for the first) of the step `h` goes to, records it, and
    /// returns what it hands on. The caller hands that on and then lets go of `h`, or, on an
    /// error, retries `h` or gives it up with [`Node::give_up_step`].
    pub async fn run_step(
        self: &Arc<Self>,
        h: &Handoff,
        attempt: u32,
    ) -> Result<Vec<Handoff>, NodeError> {
        let workflow = self
            .workflow(&h.workflow)?
            .ok_or_else(|| NodeError::NotFound(format!("workflow {}", h.workflow)))?;
        let step = workflow.step(&h.step).ok_or_else(|| {
            NodeError::NotFound(format!("step {} of workflow {}", h.step, h.workflow))
        })?;
        let mut record = StepRun {
            status: Status::Waiting,
            node: self.config().node_id.clone(),
            attempts: attempt,
            started_ms: now_ms(),
            ended_ms: None,
            error: None,
        };
        let urgent = workflow.priority == Priority::Urgent;
        let outcome = match self.route_as(&step.function, 0, urgent).await {
            Ok(route) => {
                self.invoke_routed(route, &step.function, &h.payload, 0)
                    .await
            }
            Err(e) => Err(e),
        };
        record.ended_ms = Some(now_ms());
        let next = outcome.and_then(|ran| {
            record.node = ran.node;
            workflow
                .next(&h.run, &h.step, &ran.result)
                .map_err(NodeError::BadRequest)
        });
        match &next {
            Ok(handed) => {
                // The next steps wait before this one says it is done: a run never looks
                // finished while a hand-off is on its way.
                self.record_waiting(handed).await;
                record.status = Status::Succeeded;
            }
            Err(e) => {
                record.status = Status::Retrying;
                record.error = Some(e.to_string());
            }
        }
        self.record_step(h, record, false).await;
        next
    }

    /// Records each step of `handed` as waiting, unless it has a record already.
    async fn record_waiting(self: &Arc<Self>, handed: &[Handoff]) {
        for h in handed {
            let waiting = StepRun {
                status: Status::Waiting,
                node: String::new(),
                attempts: 0,
                started_ms: now_ms(),
                ended_ms: None,
                error: None,
            };
            self.record_step(h, waiting, true).await;
        }
    }

    /// Records that the step `h` goes to was given up after `attempts` with `error`.
    pub async fn give_up_step(self: &Arc<Self>, h: &Handoff, attempts: u32, error: String) {
        let now = now_ms();
        self.record_step(
            h,
            StepRun {
                status: Status::DeadLettered,
                node: self.config().node_id.clone(),
                attempts,
                started_ms: now,
                ended_ms: Some(now),
                error: Some(error),
            },
            false,
        )
        .await;
    }

    /// Every workflow with each step's edges and counters on this node, for the dashboard.
    pub fn workflow_stats(&self) -> Vec<serde_json::Value> {
        let count = |label: &str, outcome| self.deliveries.get(label, "workflow", outcome);
        self.list_workflows()
            .unwrap_or_default()
            .iter()
            .map(|w| {
                let steps: Vec<_> = w
                    .steps
                    .iter()
                    .map(|s| {
                        let label = format!("{}.{}", w.name, s.name);
                        let mut to: Vec<_> = s
                            .next
                            .iter()
                            .map(|n| serde_json::json!({"step": n}))
                            .collect();
                        for (output, targets) in &s.outputs {
                            to.extend(
                                targets
                                    .iter()
                                    .map(|n| serde_json::json!({"step": n, "output": output})),
                            );
                        }
                        serde_json::json!({
                            "name": s.name,
                            "function": s.function,
                            "to": to,
                            "delivered": count(&label, "delivered"),
                            "acked": count(&label, "acked"),
                            "retried": count(&label, "retried"),
                            "dead_lettered": count(&label, "dead_lettered"),
                            "lag": self.deliveries.lag(&label, "workflow"),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "name": w.name,
                    "priority": w.priority,
                    "trigger": w.trigger.on_message,
                    "steps": steps,
                })
            })
            .collect()
    }

    /// The class of workflow `name`'s steps.
    pub fn workflow_priority(&self, name: &str) -> Priority {
        self.workflow(name)
            .ok()
            .flatten()
            .map_or(Priority::Regular, |w| w.priority)
    }
}

/// The outbox item that carries `h` on a node alone.
pub(crate) fn step_item(workflow: &Workflow, h: &Handoff) -> Item {
    let function = workflow
        .step(&h.step)
        .map_or_else(String::new, |s| s.function.clone());
    Item {
        function,
        args: h.payload.clone(),
        trigger: "workflow".into(),
        run_id: h.dedup_id(),
        attempts: 0,
        max_deliver: workflow.max_deliver,
        backoff_ms: workflow.retry_backoff.as_millis() as u64,
        due_ms: 0,
        ready: true,
        step: serde_json::to_value(h).ok(),
    }
}

/// The hand-off an outbox item carries, if it is a workflow's.
pub(crate) fn handoff_of(item: &Item) -> Option<Handoff> {
    item.step
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}
