//! The node's scheduler: runs every function's schedule (see [`crate::triggers`]) for as long
//! as the node lives.

use std::sync::{Arc, Weak};
use std::time::Duration;

use jiff::Timestamp;

use crate::admission::Priority;
use crate::node::Node;
use crate::registry::FunctionRecord;
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
    let mut due: Vec<Due> = match node.upgrade() {
        Some(node) => node.list().map_or_else(
            |e| {
                tracing::warn!(error = %e, "the scheduler cannot read the registry");
                Vec::new()
            },
            |records| records.iter().filter_map(|r| scheduled(r, None)).collect(),
        ),
        None => return,
    };
    loop {
        let Some(node) = node.upgrade() else { return };
        // A change while this pass runs leaves a permit, so the wait below ends at once.
        let changed = node.schedules.changed.clone();
        let names = std::mem::take(
            &mut *node
                .schedules
                .changed_names
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for name in names {
            update(&node, &mut due, &name);
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
        let sleep = match due.iter().map(|d| d.next).min() {
            None => RECHECK,
            Some(next) => {
                let span = next.as_nanosecond() - Timestamp::now().as_nanosecond();
                u64::try_from(span)
                    .map_or(Duration::ZERO, Duration::from_nanos)
                    .min(RECHECK)
            }
        };
        // Only a weak reference waits: a node that stops is not kept alive by its schedules.
        drop(node);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = changed.notified() => {}
        }
    }
}

/// Reads function `name` again: its schedule, if it still has one, keeps its next tick unless
/// the schedule changed.
fn update(node: &Node, due: &mut Vec<Due>, name: &str) {
    let before = due
        .iter()
        .position(|d| d.name == name)
        .map(|i| due.swap_remove(i));
    match node.registry.get(name) {
        Ok(Some(record)) => due.extend(scheduled(&record, before.as_ref())),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(function = name, error = %e, "the scheduler cannot read a function");
            due.extend(before);
        }
    }
}

/// The schedule of `record`'s active version, if it has one; its next tick is `before`'s when
/// the schedule is the same.
fn scheduled(record: &FunctionRecord, before: Option<&Due>) -> Option<Due> {
    let manifest = &record.active_version().manifest;
    let section = manifest.triggers.schedule.clone();
    section.schedule.as_ref()?;
    let when = section.when().ok()?;
    let next = before
        .filter(|d| d.section == section)
        .map(|d| d.next)
        .or_else(|| when.next_after(Timestamp::now()))?;
    Some(Due {
        name: record.name.clone(),
        priority: manifest.priority,
        when,
        section,
        next,
    })
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
