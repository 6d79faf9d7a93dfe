//! The outbox: runs a node owes, kept durably until they succeed or are given up.
//!
//! A key change that a function watches, and a workflow's hand-off from one step to the next on
//! a node without NATS, become an [`Item`] here, in the registry database, in a durable
//! transaction, before anything is acknowledged; `crate::delivery` runs them. An item is removed
//! only when its run succeeded (and, in the same transaction, the items that run hands on are
//! added), or moved to the dead letters when its attempts are spent. So a restart, even after
//! `kill -9`, resumes exactly what was owed: nothing is lost, and nothing is replayed that had
//! completed.
//!
//! An item may be written *pending* before the write it announces and made ready after it, so
//! that a crash in between cannot lose the announcement; a pending item found on start is made
//! ready (the write may have happened: delivery is at least once).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::error::NodeError;

const ITEMS: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox_dead");
const META: TableDefinition<&str, u64> = TableDefinition::new("outbox_meta");
const NEXT_ID: &str = "next_id";

/// The most dead letters kept; the oldest go first.
pub const MAX_DEAD: u64 = 10_000;

/// One run owed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The function to run.
    pub function: String,
    /// Its `args`.
    pub args: String,
    /// What owes it, for metrics and dead letters: `change`, `workflow`.
    pub trigger: String,
    /// The run it belongs to (a workflow run, a change), for de-duplication and dead letters;
    /// `FUNCTION-TRIGGER-ID` when added empty.
    pub run_id: String,
    /// Attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// Attempts allowed.
    pub max_deliver: u32,
    /// The wait before the first retry, in ms; it doubles each time.
    pub backoff_ms: u64,
    /// Not before this time (ms since the Unix epoch).
    #[serde(default)]
    pub due_ms: u64,
    /// False while the write it announces may not have happened yet.
    #[serde(default)]
    pub ready: bool,
    /// What its owner needs to hand the result on (a workflow's step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<serde_json::Value>,
}

/// An item given up, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadItem {
    /// The item as it was last tried.
    pub item: Item,
    /// The last attempt's error.
    pub error: String,
    /// When it was given up (ms since the Unix epoch).
    pub at_ms: u64,
}

fn storage(e: impl std::fmt::Display) -> NodeError {
    NodeError::Storage(format!("outbox: {e}"))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, NodeError> {
    serde_json::to_vec(value).map_err(storage)
}

/// The outbox of one node.
pub struct Outbox {
    db: Arc<Database>,
    /// Ready items not being run, by (due, id): what the delivery loop takes next.
    due: Mutex<BTreeSet<(u64, u64)>>,
    /// Rings when an item becomes due sooner than the loop sleeps. Its own `Arc`, so that the
    /// loop waits on it without keeping the outbox (and the database) open.
    pub(crate) wake: Arc<Notify>,
}

impl Outbox {
    /// Opens (creating) its tables in `db`; pending items left by a crash are made ready.
    pub fn open(db: Arc<Database>) -> Result<Self, NodeError> {
        let tx = db.begin_write().map_err(storage)?;
        let mut due = BTreeSet::new();
        {
            let mut items = tx.open_table(ITEMS).map_err(storage)?;
            tx.open_table(DEAD).map_err(storage)?;
            tx.open_table(META).map_err(storage)?;
            let mut pending = Vec::new();
            for row in items.iter().map_err(storage)? {
                let (id, bytes) = row.map_err(storage)?;
                let item: Item = serde_json::from_slice(bytes.value()).map_err(storage)?;
                if !item.ready {
                    pending.push((id.value(), item.clone()));
                }
                due.insert((item.due_ms, id.value()));
            }
            for (id, mut item) in pending {
                item.ready = true;
                items
                    .insert(id, encode(&item)?.as_slice())
                    .map_err(storage)?;
            }
        }
        tx.commit().map_err(storage)?;
        Ok(Self {
            db,
            due: Mutex::new(due),
            wake: Arc::default(),
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, BTreeSet<(u64, u64)>> {
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `items` in one durable transaction; returns their ids. Ready ones are due at once
    /// (or at their `due_ms`).
    pub fn put(&self, items: Vec<Item>) -> Result<Vec<u64>, NodeError> {
        let tx = self.db.begin_write().map_err(storage)?;
        let ids = insert(&tx, &items)?;
        tx.commit().map_err(storage)?;
        self.schedule(ids.iter().copied().zip(&items));
        Ok(ids)
    }

    fn schedule<'a>(&self, items: impl Iterator<Item = (u64, &'a Item)>) {
        let mut index = self.index();
        let mut any = false;
        for (id, item) in items.filter(|(_, i)| i.ready) {
            index.insert((item.due_ms, id));
            any = true;
        }
        drop(index);
        if any {
            self.wake.notify_one();
        }
    }

    /// Makes pending items ready, each changed by `fill` first (to add what the write it
    /// announced returned).
    pub fn release(&self, ids: &[u64], fill: impl Fn(&mut Item)) -> Result<(), NodeError> {
        let tx = self.db.begin_write().map_err(storage)?;
        let mut released = Vec::new();
        {
            let mut table = tx.open_table(ITEMS).map_err(storage)?;
            for id in ids {
                let Some(bytes) = table.get(id).map_err(storage)?.map(|b| b.value().to_vec())
                else {
                    continue;
                };
                let mut item: Item = serde_json::from_slice(&bytes).map_err(storage)?;
                fill(&mut item);
                item.ready = true;
                table
                    .insert(id, encode(&item)?.as_slice())
                    .map_err(storage)?;
                released.push((*id, item));
            }
        }
        tx.commit().map_err(storage)?;
        self.schedule(released.iter().map(|(id, item)| (*id, item)));
        Ok(())
    }

    /// Removes items whose write did not happen.
    pub fn cancel(&self, ids: &[u64]) -> Result<(), NodeError> {
        let tx = self.db.begin_write().map_err(storage)?;
        {
            let mut table = tx.open_table(ITEMS).map_err(storage)?;
            for id in ids {
                table.remove(id).map_err(storage)?;
            }
        }
        tx.commit().map_err(storage)
    }

    /// Takes the items due by `now` off the index (they are being run) and returns them with
    /// the time the next one is due.
    pub fn take_due(&self, now: u64, most: usize) -> (Vec<(u64, Item)>, Option<u64>) {
        let ids: Vec<(u64, u64)> = {
            let mut index = self.index();
            let ids: Vec<_> = index
                .iter()
                .take_while(|(due, _)| *due <= now)
                .take(most)
                .copied()
                .collect();
            for key in &ids {
                index.remove(key);
            }
            ids
        };
        let mut out = Vec::new();
        if let Ok(tx) = self.db.begin_read()
            && let Ok(table) = tx.open_table(ITEMS)
        {
            for (_, id) in ids {
                if let Ok(Some(bytes)) = table.get(id)
                    && let Ok(item) = serde_json::from_slice::<Item>(bytes.value())
                {
                    out.push((id, item));
                }
            }
        }
        let next = self.index().first().map(|(due, _)| *due);
        (out, next)
    }

    /// Ends item `id` whose run succeeded, and adds `next` (what it hands on) in the same
    /// durable transaction: the hand-off happens exactly once.
    pub fn complete(&self, id: u64, next: Vec<Item>) -> Result<Vec<u64>, NodeError> {
        let tx = self.db.begin_write().map_err(storage)?;
        tx.open_table(ITEMS)
            .map_err(storage)?
            .remove(id)
            .map_err(storage)?;
        let ids = insert(&tx, &next)?;
        tx.commit().map_err(storage)?;
        self.schedule(ids.iter().copied().zip(&next));
        Ok(ids)
    }

    /// Stores `item` (one more attempt made) to run again at its `due_ms`.
    pub fn retry(&self, id: u64, item: &Item) -> Result<(), NodeError> {
        let tx = self.db.begin_write().map_err(storage)?;
        tx.open_table(ITEMS)
            .map_err(storage)?
            .insert(id, encode(item)?.as_slice())
            .map_err(storage)?;
        tx.commit().map_err(storage)?;
        self.schedule([(id, item)].into_iter());
        Ok(())
    }

    /// Moves item `id` to the dead letters with `error`.
    pub fn bury(&self, id: u64, item: Item, error: String) -> Result<(), NodeError> {
        let tx = self.db.begin_write().map_err(storage)?;
        {
            tx.open_table(ITEMS)
                .map_err(storage)?
                .remove(id)
                .map_err(storage)?;
            let mut dead = tx.open_table(DEAD).map_err(storage)?;
            let dead_item = DeadItem {
                item,
                error,
                at_ms: now_ms(),
            };
            dead.insert(id, encode(&dead_item)?.as_slice())
                .map_err(storage)?;
            while dead.len().map_err(storage)? > MAX_DEAD {
                dead.pop_first().map_err(storage)?;
            }
        }
        tx.commit().map_err(storage)
    }

    /// Puts an item the loop took but could not run (the node stops) back on the index.
    pub fn put_back(&self, id: u64, item: &Item) {
        self.schedule([(id, item)].into_iter());
    }

    /// Items owed now, ready or not.
    pub fn len(&self) -> Result<u64, NodeError> {
        let tx = self.db.begin_read().map_err(storage)?;
        tx.open_table(ITEMS)
            .map_err(storage)?
            .len()
            .map_err(storage)
    }

    /// Whether nothing is owed.
    pub fn is_empty(&self) -> Result<bool, NodeError> {
        Ok(self.len()? == 0)
    }

    /// The dead letters, newest first, at most `limit`.
    pub fn dead(&self, limit: usize) -> Result<Vec<DeadItem>, NodeError> {
        let tx = self.db.begin_read().map_err(storage)?;
        let table = tx.open_table(DEAD).map_err(storage)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(storage)?.rev().take(limit) {
            let (_, bytes) = row.map_err(storage)?;
            out.push(serde_json::from_slice(bytes.value()).map_err(storage)?);
        }
        Ok(out)
    }
}

/// Inserts `items` under fresh ids in `tx`.
fn insert(tx: &redb::WriteTransaction, items: &[Item]) -> Result<Vec<u64>, NodeError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let mut meta = tx.open_table(META).map_err(storage)?;
    let mut next = meta.get(NEXT_ID).map_err(storage)?.map_or(1, |v| v.value());
    let mut table = tx.open_table(ITEMS).map_err(storage)?;
    let mut ids = Vec::with_capacity(items.len());
    for item in items {
        let mut item = item.clone();
        if item.run_id.is_empty() {
            item.run_id = format!("{}-{}-{next}", item.function, item.trigger);
        }
        table
            .insert(next, encode(&item)?.as_slice())
            .map_err(storage)?;
        ids.push(next);
        next += 1;
    }
    meta.insert(NEXT_ID, next).map_err(storage)?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(function: &str) -> Item {
        Item {
            function: function.into(),
            args: "x".into(),
            trigger: "change".into(),
            run_id: "r1".into(),
            attempts: 0,
            max_deliver: 3,
            backoff_ms: 10,
            due_ms: 0,
            ready: true,
            step: None,
        }
    }

    #[test]
    fn what_is_owed_survives_a_reopen_and_pending_items_come_back_ready() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("db.redb")).unwrap());
        let outbox = Outbox::open(db.clone()).unwrap();
        let [a, b] = outbox
            .put(vec![
                item("a"),
                Item {
                    ready: false,
                    ..item("b")
                },
            ])
            .unwrap()[..]
        else {
            panic!()
        };
        // Only the ready one is due.
        let (due, _) = outbox.take_due(now_ms(), 10);
        assert_eq!(due.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [a]);
        // Completing `a` hands on `c`, in the same transaction.
        let [c] = outbox.complete(a, vec![item("c")]).unwrap()[..] else {
            panic!()
        };
        drop(outbox);
        // After a crash: `b` (pending) and `c` are owed; `a` is not.
        let outbox = Outbox::open(db).unwrap();
        let (due, _) = outbox.take_due(now_ms(), 10);
        let mut ids: Vec<u64> = due.iter().map(|(id, _)| *id).collect();
        ids.sort();
        assert_eq!(ids, [b, c]);
        outbox.bury(b, item("b"), "it failed".into()).unwrap();
        assert_eq!(outbox.len().unwrap(), 1);
        assert_eq!(outbox.dead(10).unwrap()[0].error, "it failed");
    }
}
