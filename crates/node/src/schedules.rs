//! The node's scheduler: runs every function's schedule (see [`crate::triggers`]) for as long
//! as the node lives.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use jiff::Timestamp;

use crate::admission::Priority;
use crate::node::Node;
use crate::triggers::{ScheduleState, schedule};

/// One function's schedule as the loop follows it.
struct Due {
    name: String,
    when: schedule::When,
    section: schedule::Schedule,
    priority: Priority,
    next: Timestamp,
}

/// The longest the loop sleeps without looking again: a clock step (NTP) is noticed this soon.
const RECHECK: Duration = Duration::from_secs(1);

/// Runs the node's schedules for as long as the node lives.
pub async fn run(node: Weak<Node>) {
    let mut seen = u64::MAX;
    let mut due: Vec<Due> = Vec::new();
    loop {
        let Some(node) = node.upgrade() else { return };
        // A change while this pass runs leaves a permit, so the wait below ends at once.
        let changed = node.schedules.changed.clone();
        let generation = node.schedules.generation.load(Ordering::Relaxed);
        if generation != seen {
            seen = generation;
            due = plan(&node, &due);
        }
        let now = Timestamp::now();
        for d in &mut due {
            if d.next > now {
                continue;
            }
            // Only the latest tick that passed fires: after a pause (a suspended machine, a
            // slow loop) the node does not replay a burst of missed ones.
            let mut tick = d.next;
            while let Some(next) = d.when.next_after(tick).filter(|n| *n <= now) {
                tick = next;
            }
            d.next = d.when.next_after(tick).unwrap_or(Timestamp::MAX);
            tokio::spawn(fire(
                node.clone(),
                d.name.clone(),
                d.section.clone(),
                d.priority,
                tick,
            ));
        }
        let sleep = due
            .iter()
            .map(|d| d.next)
            .min()
            .and_then(|next| {
                let span = next.as_nanosecond() - Timestamp::now().as_nanosecond();
                u64::try_from(span).ok().map(Duration::from_nanos)
            })
            .unwrap_or(Duration::ZERO)
            .min(RECHECK);
        // Only a weak reference waits: a node that stops is not kept alive by its schedules.
        drop(node);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = changed.notified() => {}
        }
    }
}

/// The functions with a schedule, each keeping its next tick if it had one and its schedule
/// did not change.
fn plan(node: &Node, before: &[Due]) -> Vec<Due> {
    let records = match node.list() {
        Ok(records) => records,
        Err(e) => {
            tracing::warn!(error = %e, "the scheduler cannot read the registry");
            return Vec::new();
        }
    };
    let now = Timestamp::now();
    records
        .into_iter()
        .filter_map(|record| {
            let manifest = &record.active_version().manifest;
            let section = manifest.triggers.schedule.clone();
            section.schedule.as_ref()?;
            let when = section.when().ok()?;
            let next = before
                .iter()
                .find(|d| d.name == record.name && d.section == section)
                .map(|d| d.next)
                .or_else(|| when.next_after(now))?;
            Some(Due {
                name: record.name.clone(),
                priority: manifest.priority,
                when,
                section,
                next,
            })
        })
        .collect()
}

/// Removes a function from the running set when its run ends.
struct Running<'a>(&'a ScheduleState, String);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut running = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
        running.remove(&self.1);
    }
}

/// Fires one tick of `name`, unless it is paused, overlapping or another node's.
async fn fire(
    node: Arc<Node>,
    name: String,
    section: schedule::Schedule,
    priority: Priority,
    tick: Timestamp,
) {
    let scheduler = &node.schedules;
    let cluster = node.cluster();
    if priority == Priority::Batch && cluster.as_ref().is_some_and(|c| c.emergency().is_some()) {
        scheduler.count(&name, "paused");
        return;
    }
    let _running = match section.schedule_overlap {
        schedule::Overlap::Allow => None,
        schedule::Overlap::Forbid => {
            let mut running = scheduler.running.lock().unwrap_or_else(|p| p.into_inner());
            if !running.insert(name.clone()) {
                drop(running);
                scheduler.count(&name, "overlap");
                return;
            }
            Some(Running(scheduler, name.clone()))
        }
    };
    if let Some(cluster) = cluster {
        let tick_ms = u64::try_from(tick.as_millisecond()).unwrap_or(0);
        match cluster.claim_tick(name.clone(), tick_ms).await {
            Ok(true) => {}
            Ok(false) => {
                scheduler.count(&name, "elsewhere");
                return;
            }
            Err(e) => {
                tracing::warn!(function = name, error = %e, "cannot claim a scheduled tick");
                scheduler.count(&name, "failed");
                return;
            }
        }
    }
    let args = section.schedule_args.unwrap_or_else(|| tick.to_string());
    match node.invoke(&name, &args, 0).await {
        Ok(_) => scheduler.count(&name, "ran"),
        Err(e) => {
            tracing::warn!(function = name, tick = %tick, error = %e, "a scheduled run failed");
            scheduler.count(&name, "failed");
        }
    }
}
