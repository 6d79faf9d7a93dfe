//! Changes: a function run on every change of a key-value store it may open.
//!
//! Manifest keys: `on_change` (a store the function declares with `kv` or `kv_shared`) and
//! `on_change_prefix` (only keys that begin with it). A `component:run/run` function gets, as
//! its `args`, the change as JSON: `{"store", "key", "op": "set"|"delete", "revision",
//! "value"}` (`revision` and `value` for a set; `value` when it is UTF-8).
//!
//! Delivery is at least once, in the order of the writes' announcements, with the
//! [`super::policy`] section's retries and dead letter. Each write to a watched store puts the
//! runs it owes in the node's outbox (`crate::outbox`) before the write and makes them ready
//! after it, so no acknowledged change is lost to a crash, and a restart resumes only what was
//! still owed. The change runs on the node where the write was made (and from there wherever
//! there is room). A function that writes to the store it watches runs again on its own write:
//! give it a prefix it does not write to.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use clap::Args;
use limes_runtime::kv::StoreId;
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::policy::DeliveryPolicy;
use crate::capabilities::kv::{Kv, Write, WriteObserver, parse_store_names, store_of};
use crate::error::NodeError;
use crate::outbox::{Item, Outbox};

/// The longest prefix a watch may have.
pub const MAX_PREFIX: usize = 256;

/// The manifest's section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The store whose changes run the function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_change: Option<String>,
    /// Only keys that begin with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_change_prefix: Option<String>,
}

/// The keys and what each means.
pub const KEYS: &[(&str, &str)] = &[
    (
        "on_change",
        "Run the function on every change of this key-value store (one it declares with kv or kv_shared)",
    ),
    (
        "on_change_prefix",
        "Only changes of keys that begin with this",
    ),
];

impl Change {
    /// Takes one of its keys.
    pub fn parse(&mut self, key: &str, value: &str) -> Result<(), String> {
        if key == "on_change" {
            match parse_store_names(value)?.as_slice() {
                [one] => self.on_change = Some(one.clone()),
                _ => return Err(format!("on_change={value:?}: one store")),
            }
        } else {
            if value.len() > MAX_PREFIX {
                return Err(format!("on_change_prefix: at most {MAX_PREFIX} bytes"));
            }
            self.on_change_prefix = Some(value.to_owned());
        }
        Ok(())
    }

    /// Checks the section against the function's stores.
    pub fn finish(&self, kv: &Kv) -> Result<(), String> {
        match &self.on_change {
            None if self.on_change_prefix.is_some() => {
                Err("on_change_prefix needs on_change".into())
            }
            None => Ok(()),
            Some(store) if self.store(kv, "f").is_none() => Err(format!(
                "on_change={store}: the function has no store {store} (declare it with kv={store} or kv_shared={store})"
            )),
            Some(_) => Ok(()),
        }
    }

    /// Its pairs.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(s) = &self.on_change {
            pairs.push(("on_change", s.clone()));
        }
        if let Some(p) = &self.on_change_prefix {
            pairs.push(("on_change_prefix", p.clone()));
        }
        pairs
    }

    /// The store watched by `function`, whose stores are `kv`.
    pub fn store(&self, kv: &Kv, function: &str) -> Option<StoreId> {
        store_of(function, &kv.stores, &kv.shared, self.on_change.as_ref()?)
    }
}

/// `limes deploy`: the change trigger's flags.
#[derive(Args, Debug, Clone, Default)]
#[group(skip)]
pub struct DeployArgs {
    /// Run the function on every change of this key-value store
    #[arg(long, value_name = "STORE")]
    pub on_change: Option<String>,
    /// Only changes of keys that begin with this
    #[arg(long, value_name = "PREFIX")]
    pub on_change_prefix: Option<String>,
}

impl DeployArgs {
    /// The flags as manifest pairs.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("on_change", &self.on_change),
            ("on_change_prefix", &self.on_change_prefix),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

const WATCHES: TableDefinition<&str, &[u8]> = TableDefinition::new("watches");

/// One function's watch, as the node keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    /// The function that runs.
    pub function: String,
    /// The store's owner ([`StoreId::namespace`]).
    pub namespace: String,
    /// The store's name.
    pub store: String,
    /// Only keys that begin with this.
    pub prefix: String,
    /// Attempts of each run.
    pub max_deliver: u32,
    /// The wait before the first retry, in ms.
    pub backoff_ms: u64,
}

impl Watch {
    /// `function`'s watch as its manifest's sections say, if it has one.
    pub fn of(function: &str, change: &Change, kv: &Kv, policy: &DeliveryPolicy) -> Option<Self> {
        let store = change.store(kv, function)?;
        Some(Self {
            function: function.to_owned(),
            namespace: store.namespace,
            store: store.name,
            prefix: change.on_change_prefix.clone().unwrap_or_default(),
            max_deliver: policy.max_deliver(),
            backoff_ms: policy.backoff(1).as_millis() as u64,
        })
    }
}

fn storage(e: impl std::fmt::Display) -> NodeError {
    NodeError::Storage(format!("watches: {e}"))
}

/// The node's watches: which writes owe which runs. Kept in the registry database, so that a
/// write in the first moment after a restart is watched like any other.
pub struct Watches {
    db: Arc<Database>,
    by_store: RwLock<HashMap<StoreId, Vec<Watch>>>,
    outbox: Arc<Outbox>,
}

impl Watches {
    /// Opens (creating) the table in `db`; the runs owed go to `outbox`.
    pub fn open(db: Arc<Database>, outbox: Arc<Outbox>) -> Result<Self, NodeError> {
        let tx = db.begin_write().map_err(storage)?;
        let mut by_store: HashMap<StoreId, Vec<Watch>> = HashMap::new();
        {
            let table = tx.open_table(WATCHES).map_err(storage)?;
            for row in table.iter().map_err(storage)? {
                let (_, bytes) = row.map_err(storage)?;
                let watch: Watch = serde_json::from_slice(bytes.value()).map_err(storage)?;
                by_store
                    .entry(StoreId::new(&watch.namespace, &watch.store))
                    .or_default()
                    .push(watch);
            }
        }
        tx.commit().map_err(storage)?;
        Ok(Self {
            db,
            by_store: RwLock::new(by_store),
            outbox,
        })
    }

    /// Sets `function`'s watch (`None`: it has none), durably when it changed.
    pub fn set(&self, function: &str, watch: Option<Watch>) -> Result<(), NodeError> {
        let current = self
            .by_store
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flatten()
            .find(|w| w.function == function)
            .cloned();
        if current == watch {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(storage)?;
        {
            let mut table = tx.open_table(WATCHES).map_err(storage)?;
            match &watch {
                Some(w) => {
                    let bytes = serde_json::to_vec(w).map_err(storage)?;
                    table.insert(function, bytes.as_slice()).map_err(storage)?;
                }
                None => {
                    table.remove(function).map_err(storage)?;
                }
            }
        }
        tx.commit().map_err(storage)?;
        let mut by_store = self.by_store.write().unwrap_or_else(|p| p.into_inner());
        for watches in by_store.values_mut() {
            watches.retain(|w| w.function != function);
        }
        by_store.retain(|_, w| !w.is_empty());
        if let Some(w) = watch {
            by_store
                .entry(StoreId::new(&w.namespace, &w.store))
                .or_default()
                .push(w);
        }
        Ok(())
    }

    fn matching(&self, store: &StoreId, key: &str) -> Vec<Watch> {
        self.by_store
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(store)
            .map(|ws| {
                ws.iter()
                    .filter(|w| key.starts_with(&w.prefix))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The JSON a watching function gets.
fn args(store: &str, key: &str, write: &Write) -> String {
    let mut change = serde_json::json!({
        "store": store,
        "key": key,
        "op": if write.set { "set" } else { "delete" },
    });
    if let Some(revision) = write.revision {
        change["revision"] = revision.into();
    }
    if let Some(text) = write
        .value
        .as_deref()
        .and_then(|v| std::str::from_utf8(v).ok())
    {
        change["value"] = text.into();
    }
    change.to_string()
}

impl WriteObserver for Watches {
    fn watched(&self, store: &StoreId, key: &str) -> bool {
        !self.matching(store, key).is_empty()
    }

    fn writing(&self, store: &StoreId, key: &str, write: &Write) -> Result<Vec<u64>, String> {
        // What a restart finds if the write is not done: the change as far as it is known.
        let items: Vec<Item> = self
            .matching(store, key)
            .into_iter()
            .map(|w| Item {
                args: args(&store.name, key, write),
                trigger: "change".into(),
                run_id: String::new(),
                attempts: 0,
                max_deliver: w.max_deliver,
                backoff_ms: w.backoff_ms,
                due_ms: 0,
                ready: false,
                step: None,
                function: w.function,
            })
            .collect();
        self.outbox.put(items).map_err(|e| e.to_string())
    }

    fn written(&self, store: &StoreId, key: &str, ids: &[u64], write: Option<Write>) {
        let outcome = match write {
            Some(write) => self.outbox.release(ids, |item| {
                item.args = args(&store.name, key, &write);
            }),
            None => self.outbox.cancel(ids),
        };
        if let Err(e) = outcome {
            // The items stay pending; the next start makes them ready.
            tracing::warn!(store = store.name, key, error = %e, "could not release a change's runs");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use limes_runtime::kv::SHARED_NAMESPACE;

    fn kv(own: &[&str], shared: &[&str]) -> Kv {
        Kv {
            stores: own.iter().map(|s| s.to_string()).collect(),
            shared: shared.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_watch_names_a_store_the_function_declares() {
        let mut c = Change::default();
        c.parse("on_change", "readings").unwrap();
        assert!(c.finish(&kv(&[], &[])).unwrap_err().contains("kv=readings"));
        assert_eq!(
            c.store(&kv(&["readings"], &[]), "f"),
            Some(StoreId::new("f", "readings"))
        );
        assert_eq!(
            c.store(&kv(&[], &["readings"]), "f"),
            Some(StoreId::new(SHARED_NAMESPACE, "readings"))
        );
        let mut p = Change::default();
        p.parse("on_change_prefix", "ward-").unwrap();
        assert!(
            p.finish(&kv(&[], &[]))
                .unwrap_err()
                .contains("needs on_change")
        );
        assert!(Change::default().parse("on_change", "A B").is_err());
    }

    #[test]
    fn the_args_say_what_changed() {
        let set = Write {
            set: true,
            revision: Some(7),
            value: Some(b"high".to_vec()),
        };
        let v: serde_json::Value = serde_json::from_str(&args("readings", "ward-3", &set)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"store": "readings", "key": "ward-3", "op": "set", "revision": 7, "value": "high"})
        );
        let v: serde_json::Value = serde_json::from_str(&args(
            "readings",
            "ward-3",
            &Write {
                set: false,
                revision: None,
                value: None,
            },
        ))
        .unwrap();
        assert_eq!(v["op"], "delete");
    }
}
