//! Delivering triggered runs: [`Node::deliver`], which hands a trigger's message to a function
//! of either kind, and the node's delivery loop, which runs what its outbox owes (see [`crate::outbox`]) for as long as
//! the node lives, each item through the same admission as a request, at most the node's
//! capacity at once; a failed run is retried after its backoff, and given up to the dead
//! letters once its attempts are spent.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::admission::Priority;
use crate::cluster::Ran;
use crate::error::NodeError;
use crate::node::{Node, blocking};
use crate::outbox::{Item, now_ms};
use crate::runs::{handoff_of, step_item};
use crate::triggers::policy::backoff;

/// The longest the loop sleeps without looking again.
const RECHECK: Duration = Duration::from_secs(1);

/// How long an item waits when the node or its function is at capacity.
const CAPACITY_PAUSE: Duration = Duration::from_millis(20);

/// How long a batch function's delivery waits while an emergency lasts, before it looks again.
const PAUSED: Duration = Duration::from_secs(1);

/// Runs the outbox's items for as long as the node lives.
pub async fn run(node: Weak<Node>) {
    let room = match node.upgrade() {
        Some(n) => Arc::new(Semaphore::new(n.config().capacity.max(1) as usize)),
        None => return,
    };
    loop {
        let Some(node) = node.upgrade() else { return };
        let outbox = node.outbox.clone();
        // Registered before looking, so an item added meanwhile is not missed. Only the bell is
        // held while waiting: a node that stops closes its database at once.
        let wake = outbox.wake.clone();
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let (items, next) = outbox.take_due(now_ms(), room.available_permits());
        for (id, item) in items {
            let Ok(permit) = room.clone().try_acquire_owned() else {
                outbox.put_back(id, &item);
                continue;
            };
            tokio::spawn(deliver(node.clone(), id, item, permit));
        }
        let sleep = match next {
            Some(due) if room.available_permits() > 0 => {
                Duration::from_millis(due.saturating_sub(now_ms())).min(RECHECK)
            }
            _ => RECHECK,
        };
        // Only a weak reference waits: a node that stops is not kept alive by its outbox.
        drop((node, outbox));
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = woken => {}
        }
    }
}

/// Runs item `id` once and records what became of it.
async fn deliver(node: Arc<Node>, id: u64, mut item: Item, permit: OwnedSemaphorePermit) {
    let outbox = node.outbox.clone();
    let trigger = trigger_label(&item.trigger);
    let step = handoff_of(&item);
    // Counted by function, or by `WORKFLOW.STEP` for a workflow's step (as in a cluster).
    let label = step.as_ref().map_or_else(
        || item.function.clone(),
        |h| format!("{}.{}", h.workflow, h.step),
    );
    let class = match &step {
        Some(h) => node.workflow_priority(&h.workflow),
        None => priority(&node, &item.function).await,
    };
    let paused = class == Priority::Batch
        && node.cluster().is_some_and(|c| {
            c.emergency()
                .is_some_and(|p| !p.declaration.urgent.contains(&item.function))
        });
    if paused {
        item.due_ms = now_ms() + PAUSED.as_millis() as u64;
        outbox.put_back(id, &item);
        drop(permit);
        outbox.wake.notify_one();
        return;
    }
    node.deliveries.count(&label, trigger, "delivered");
    item.attempts += 1;
    // What a success hands on: nothing for a change, the next steps for a workflow's step.
    let outcome = match &step {
        // A change: a run function gets it as `args`, a message function as a JSON message.
        None => node
            .deliver(
                &item.function,
                limes_runtime::messaging::Message {
                    topic: None,
                    content_type: Some("application/json".into()),
                    data: item.args.clone().into_bytes(),
                    metadata: Vec::new(),
                },
            )
            .await
            .map(|_| Vec::new()),
        Some(h) => match node.run_step(h, item.attempts).await {
            Ok(next) => node
                .workflow(&h.workflow)
                .and_then(|w| w.ok_or_else(|| NodeError::NotFound(h.workflow.clone())))
                .map(|w| next.iter().map(|n| step_item(&w, n)).collect()),
            Err(e) => Err(e),
        },
    };
    // The node or the function at capacity is not the item's fault: it comes back in a moment
    // without spending an attempt (nothing stored changes, so nothing is written).
    if let Err(e) = &outcome
        && e.is_retryable()
    {
        item.attempts -= 1;
        item.due_ms = now_ms() + CAPACITY_PAUSE.as_millis() as u64;
        outbox.put_back(id, &item);
        drop(permit);
        outbox.wake.notify_one();
        return;
    }
    let recorded = match outcome {
        Ok(next) => {
            let done = blocking({
                let outbox = outbox.clone();
                move || outbox.complete(id, next).map(drop)
            })
            .await;
            if done.is_ok() {
                node.deliveries.count(&label, trigger, "acked");
            }
            done
        }
        Err(e) if item.attempts >= item.max_deliver || matches!(e, NodeError::NotFound(_)) => {
            tracing::warn!(function = item.function, run_id = item.run_id, attempts = item.attempts, error = %e, "a delivery was given up to the dead letters");
            node.deliveries.count(&label, trigger, "dead_lettered");
            if let Some(h) = &step {
                node.give_up_step(h, item.attempts, e.to_string()).await;
            }
            let outbox = outbox.clone();
            blocking(move || outbox.bury(id, item, e.to_string())).await
        }
        Err(e) => {
            let wait = backoff(Duration::from_millis(item.backoff_ms), item.attempts);
            tracing::info!(function = item.function, run_id = item.run_id, attempt = item.attempts, error = %e, retry_in = ?wait, "a delivery failed; retrying");
            node.deliveries.count(&label, trigger, "retried");
            item.due_ms = now_ms() + wait.as_millis() as u64;
            let outbox = outbox.clone();
            blocking(move || outbox.retry(id, &item)).await
        }
    };
    if let Err(e) = recorded {
        // The item stays as it was stored: the next start runs it again.
        tracing::error!(error = %e, "could not record a delivery's outcome");
    }
    drop(permit);
    // Room for the next one.
    outbox.wake.notify_one();
}

async fn priority(node: &Arc<Node>, function: &str) -> Priority {
    node.get(function)
        .await
        .map_or(Priority::Regular, |r| r.active_version().manifest.priority)
}

/// The metric label of a trigger (the label set is static).
fn trigger_label(trigger: &str) -> &'static str {
    match trigger {
        "change" => "change",
        "workflow" => "workflow",
        _ => "other",
    }
}

/// Why a run function cannot take a message's payload.
pub const NOT_UTF8: &str = "the message's payload is not UTF-8, and a run function takes text args";

impl Node {
    /// Delivers `message` (from a trigger) to function `name`: a message function's
    /// `incoming-handler` gets it whole; a run function gets its payload as `args` (refused
    /// with [`NOT_UTF8`] when it is not text). A message function runs here or not at all (a
    /// message is not forwarded: a durable one is retried, a core one is gone); a run function
    /// runs where [`Node::invoke`] puts it.
    pub async fn deliver(
        self: &Arc<Self>,
        name: &str,
        message: limes_runtime::messaging::Message,
    ) -> Result<Ran, NodeError> {
        let live = self.live(name).await?;
        match live.function.kind() {
            limes_runtime::FunctionKind::Message => {
                match self.route(name, crate::cluster::MAX_HOPS).await? {
                    crate::node::Route::Here(admitted) => {
                        self.run_admitted(admitted, name, crate::node::Input::Message(message), 0)
                            .await
                    }
                    crate::node::Route::Elsewhere { .. } => Err(NodeError::Full),
                }
            }
            _ => {
                let args = String::from_utf8(message.data)
                    .map_err(|_| NodeError::BadRequest(NOT_UTF8.into()))?;
                self.invoke(name, &args, 0).await
            }
        }
    }
}
