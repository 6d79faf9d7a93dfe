//! Key-value stores (`wasi:keyvalue`, linked by `limes_runtime::kv`): the manifest's `kv` and
//! `kv_shared` keys, the operator's grant and limits, and the backend the node's guests use.
//!
//! A function declares the stores it opens (`kv=default,alarms`). Each is its own, kept under
//! its name, unless it is listed in `kv_shared` instead: then it is the node's (or cluster's)
//! one store of that name, which the operator must allow (`limes serve --allow-kv-shared NAME`).
//! On one node the stores live in `<data-dir>/kv.redb` ([`RedbKv`]); a node in a cluster moves
//! them to NATS JetStream KV (`limes_cluster::kv`).

mod metrics;
mod redb;

use std::sync::{Arc, OnceLock, RwLock};

use clap::Args;
use limes_runtime::kv::{Entry, Expect, KvBackend, KvError, KvFuture, Quota, StoreId, Usage};
use limes_runtime::{KvLimits, KvPolicy, Policy};
use serde::{Deserialize, Serialize};

use super::{Capability, Place};
use crate::error::NodeError;

pub use self::metrics::KvMetrics;
pub use self::redb::RedbKv;

/// The manifest's section: the stores the function may open.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    /// Its own stores (`kv`).
    #[serde(rename = "kv", default, skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<String>,
    /// Shared stores (`kv_shared`), each allowed by the operator.
    #[serde(rename = "kv_shared", default, skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<String>,
}

impl Capability for Kv {
    const KEYS: &'static [(&'static str, &'static str)] = &[
        (
            "kv",
            "Key-value stores of its own the function may open, comma-separated (1-64 of a-z, 0-9, - and _)",
        ),
        (
            "kv_shared",
            "Stores shared with other functions, each allowed by --allow-kv-shared, comma-separated",
        ),
    ];
    type Grant = Grant;

    fn parse(&mut self, key: &str, value: &str) -> Result<(), String> {
        let list = if key == "kv" {
            &mut self.stores
        } else {
            &mut self.shared
        };
        for name in parse_store_names(value)? {
            if !list.contains(&name) {
                list.push(name);
            }
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), String> {
        match self.stores.iter().find(|s| self.shared.contains(s)) {
            Some(both) => Err(format!(
                "store {both:?} is in both kv and kv_shared: a store is the function's own or shared"
            )),
            None => Ok(()),
        }
    }

    fn pairs(&self) -> Vec<(&'static str, String)> {
        let own = self.stores.iter().map(|s| ("kv", s.clone()));
        let shared = self.shared.iter().map(|s| ("kv_shared", s.clone()));
        own.chain(shared).collect()
    }

    fn check(&self, grant: &Grant) -> Result<(), NodeError> {
        grant.check(&self.shared)
    }

    fn apply(&self, grant: &Grant, place: &Place, policy: &mut Policy) -> Result<(), NodeError> {
        policy.kv = KvPolicy::new(place.name, &self.stores, &self.shared, grant.limits);
        Ok(())
    }
}

impl Kv {
    /// The store this function opens as `store`, if it declares it.
    pub fn store(&self, function: &str, store: &str) -> Option<StoreId> {
        store_of(function, &self.stores, &self.shared, store)
    }
}

/// The operator's settings of the capability.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// Shared stores a manifest may name in `kv_shared`. Default none.
    pub shared: Vec<String>,
    /// Limits of every function's state (see [`KvLimits`] for the defaults).
    pub limits: KvLimits,
}

impl Grant {
    /// Whether a manifest's `kv_shared` names only shared stores the operator allows;
    /// [`NodeError::NotPermitted`] names the first it does not.
    pub fn check(&self, kv_shared: &[String]) -> Result<(), NodeError> {
        match kv_shared.iter().find(|s| !self.shared.contains(s)) {
            Some(store) => Err(NodeError::NotPermitted(format!(
                "kv_shared {store:?}: this node shares no store of that name \
                 (the operator allows one with `limes serve --allow-kv-shared {store}`)"
            ))),
            None => Ok(()),
        }
    }
}

/// Longest store name: a NATS bucket name holds it with the function's name.
const MAX_STORE_NAME: usize = 64;

/// Parses a manifest's list of store names (`default,alarms`): each 1–64 of `a-z`, `0-9`, `-`
/// and `_`, so that every backend can name it as it is.
pub fn parse_store_names(value: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let valid = name.len() <= MAX_STORE_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            return Err(format!(
                "store name {name:?}: use 1 to {MAX_STORE_NAME} of a-z, 0-9, '-' and '_'"
            ));
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

/// The store function `name` opens as `store`, if its manifest declares it (`kv`, `kv_shared`).
pub(crate) fn store_of(
    name: &str,
    kv: &[String],
    kv_shared: &[String],
    store: &str,
) -> Option<StoreId> {
    if kv_shared.iter().any(|s| s == store) {
        Some(StoreId::new(limes_runtime::kv::SHARED_NAMESPACE, store))
    } else if kv.iter().any(|s| s == store) {
        Some(StoreId::new(name, store))
    } else {
        None
    }
}

/// The node's backend, which a cluster may replace once joined (its stores then live in NATS
/// JetStream KV), and its metrics. The runtime holds this one handle for the node's whole life.
#[derive(Clone)]
pub struct NodeKv {
    current: Arc<RwLock<Arc<dyn KvBackend>>>,
    /// Operations and conflicts of every call that passes through.
    pub metrics: Arc<KvMetrics>,
    /// What hears of writes (the change triggers), once set.
    observer: Arc<OnceLock<Arc<dyn WriteObserver>>>,
}

/// A write to a store, as a [`WriteObserver`] hears of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// A set, or else a delete.
    pub set: bool,
    /// The revision the store gave it, once known.
    pub revision: Option<u64>,
    /// The value set, once known.
    pub value: Option<Vec<u8>>,
}

/// Hears of the writes that pass through [`NodeKv`]: the change triggers
/// (`crate::triggers::change`). `writing` and `written` may block (they write durably); the
/// node calls them off the async workers.
pub trait WriteObserver: Send + Sync {
    /// Whether a write of `key` in `store` concerns it; cheap, no I/O.
    fn watched(&self, store: &StoreId, key: &str) -> bool;
    /// Before the write: records, pending, what it owes; an error refuses the write.
    fn writing(&self, store: &StoreId, key: &str, write: &Write) -> Result<Vec<u64>, String>;
    /// After it: with what the store returned, or `None` when it failed.
    fn written(&self, store: &StoreId, key: &str, ids: &[u64], write: Option<Write>);
}

/// Runs `op`, a write of `key` in `store`, between the observer's `writing` and `written` when
/// it watches that key; `known` is what is known of the write before it, `done` completes it
/// from what `op` returned.
async fn observed<T>(
    observer: Option<Arc<dyn WriteObserver>>,
    store: &StoreId,
    key: &str,
    known: Write,
    op: impl Future<Output = Result<T, KvError>>,
    done: impl FnOnce(&T, Write) -> Write,
) -> Result<T, KvError> {
    let Some(observer) = observer.filter(|o| o.watched(store, key)) else {
        return op.await;
    };
    let ids = {
        let (o, s, k, w) = (
            observer.clone(),
            store.clone(),
            key.to_owned(),
            known.clone(),
        );
        tokio::task::spawn_blocking(move || o.writing(&s, &k, &w))
            .await
            .map_err(|e| KvError::Unavailable(e.to_string()))?
            .map_err(|e| {
                KvError::Unavailable(format!("recording the change for its watchers: {e}"))
            })?
    };
    let outcome = op.await;
    let write = outcome.as_ref().ok().map(|t| done(t, known));
    let (s, k) = (store.clone(), key.to_owned());
    let _ = tokio::task::spawn_blocking(move || observer.written(&s, &k, &ids, write)).await;
    outcome
}

impl NodeKv {
    /// Starts on `backend`.
    pub fn new(backend: Arc<dyn KvBackend>) -> Self {
        Self {
            current: Arc::new(RwLock::new(backend)),
            metrics: Default::default(),
            observer: Default::default(),
        }
    }

    /// Lets `observer` hear of every later write (once).
    pub fn observe(&self, observer: Arc<dyn WriteObserver>) {
        let _ = self.observer.set(observer);
    }

    fn observer(&self) -> Option<Arc<dyn WriteObserver>> {
        self.observer.get().cloned()
    }

    /// Moves every later call to `backend`.
    pub fn replace(&self, backend: Arc<dyn KvBackend>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = backend;
    }

    /// The backend in use now.
    pub fn backend(&self) -> Arc<dyn KvBackend> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Each call goes to the backend in use when it starts, and is counted.
impl KvBackend for NodeKv {
    fn get<'a>(&'a self, store: &'a StoreId, key: &'a str) -> KvFuture<'a, Option<Entry>> {
        let backend = self.backend();
        self.metrics.operation(store, "get");
        Box::pin(async move { backend.get(store, key).await })
    }

    fn set<'a>(
        &'a self,
        store: &'a StoreId,
        key: &'a str,
        value: Vec<u8>,
        expect: Expect,
        quota: Quota,
    ) -> KvFuture<'a, u64> {
        let backend = self.backend();
        self.metrics.operation(store, "set");
        let metrics = self.metrics.clone();
        let known = Write {
            set: true,
            revision: None,
            value: Some(value.clone()),
        };
        let observer = self.observer();
        Box::pin(async move {
            let write = backend.set(store, key, value, expect, quota);
            let written = observed(observer, store, key, known, write, |revision, w| Write {
                revision: Some(*revision),
                ..w
            })
            .await;
            if written == Err(KvError::Conflict) {
                metrics.conflict(store);
            }
            written
        })
    }

    fn delete<'a>(&'a self, store: &'a StoreId, key: &'a str) -> KvFuture<'a, ()> {
        let backend = self.backend();
        self.metrics.operation(store, "delete");
        let known = Write {
            set: false,
            revision: None,
            value: None,
        };
        let observer = self.observer();
        Box::pin(async move {
            let delete = backend.delete(store, key);
            observed(observer, store, key, known, delete, |(), w| w).await
        })
    }

    fn list<'a>(
        &'a self,
        store: &'a StoreId,
        after: Option<&'a str>,
        limit: usize,
    ) -> KvFuture<'a, (Vec<String>, bool)> {
        let backend = self.backend();
        self.metrics.operation(store, "list");
        Box::pin(async move { backend.list(store, after, limit).await })
    }

    fn drop_namespace<'a>(&'a self, namespace: &'a str) -> KvFuture<'a, ()> {
        let backend = self.backend();
        Box::pin(async move { backend.drop_namespace(namespace).await })
    }

    fn usage(&self) -> KvFuture<'_, Vec<Usage>> {
        let backend = self.backend();
        Box::pin(async move { backend.usage().await })
    }

    fn increment<'a>(
        &'a self,
        store: &'a StoreId,
        key: &'a str,
        delta: i64,
        quota: Quota,
    ) -> KvFuture<'a, i64> {
        let backend = self.backend();
        self.metrics.operation(store, "increment");
        let known = Write {
            set: true,
            revision: None,
            value: None,
        };
        let observer = self.observer();
        Box::pin(async move {
            let increment = backend.increment(store, key, delta, quota);
            observed(observer, store, key, known, increment, |sum, w| Write {
                value: Some(sum.to_string().into_bytes()),
                ..w
            })
            .await
        })
    }
}

/// `limes deploy` and `limes run`: `--kv`, `--kv-shared`. (`limes run` keeps the stores in
/// memory, for as long as it runs.)
#[derive(Args, Debug, Clone, Default)]
// No argument group of its own: every capability's struct has this name.
#[group(skip)]
pub struct DeployArgs {
    /// A key-value store of its own the function may open; repeatable [default: none]
    #[arg(long = "kv", value_name = "STORE")]
    pub stores: Vec<String>,
    /// A store shared with other functions, which the node's operator allows; repeatable
    #[arg(long = "kv-shared", value_name = "STORE")]
    pub shared: Vec<String>,
}

impl DeployArgs {
    /// The flags as manifest pairs.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let own = self.stores.iter().map(|s| ("kv", s.clone()));
        let shared = self.shared.iter().map(|s| ("kv_shared", s.clone()));
        own.chain(shared).collect()
    }

    /// `limes run` opens them in memory under the name `local`.
    pub fn apply_locally(&self, policy: &mut Policy) {
        policy.kv = KvPolicy::new("local", &self.stores, &self.shared, KvLimits::default());
    }
}

/// `limes serve`: the shared stores allowed and the limits.
#[derive(Args, Debug, Clone, Default)]
// No argument group of its own: every capability's struct has this name.
#[group(skip)]
pub struct GrantArgs {
    /// A key-value store that manifests may share (kv_shared=NAME); repeatable [default: none]
    #[arg(long = "allow-kv-shared", value_name = "NAME", value_parser = parse_store_name)]
    pub allow_kv_shared: Vec<String>,
    /// Longest key of a function's key-value store, in bytes [default: 256]
    #[arg(long, value_name = "BYTES")]
    pub kv_max_key: Option<usize>,
    /// Largest value, such as 64KiB [default: 512KiB]
    #[arg(long, value_name = "SIZE", value_parser = crate::parse::parse_size)]
    pub kv_max_value: Option<u64>,
    /// Most keys in one store [default: 10000]
    #[arg(long, value_name = "N")]
    pub kv_max_keys: Option<u64>,
    /// Most bytes of keys and values over all of one function's stores [default: 64MiB]
    #[arg(long, value_name = "SIZE", value_parser = crate::parse::parse_size)]
    pub kv_max_bytes: Option<u64>,
}

impl GrantArgs {
    /// The grant, with the defaults of [`KvLimits`] for each limit not given.
    pub fn grant(&self) -> Result<Grant, String> {
        let d = KvLimits::default();
        Ok(Grant {
            shared: self.allow_kv_shared.clone(),
            limits: KvLimits {
                max_key_bytes: self.kv_max_key.unwrap_or(d.max_key_bytes),
                max_value_bytes: self.kv_max_value.map_or(d.max_value_bytes, |v| {
                    usize::try_from(v).unwrap_or(usize::MAX)
                }),
                max_keys: self.kv_max_keys.unwrap_or(d.max_keys),
                max_bytes: self.kv_max_bytes.unwrap_or(d.max_bytes),
            },
        })
    }
}

/// One store name, as `--allow-kv-shared` takes it.
fn parse_store_name(s: &str) -> Result<String, String> {
    match parse_store_names(s)?.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!("{s:?}: give one store name per --allow-kv-shared")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names_are_checked() {
        assert_eq!(
            parse_store_names("default, alarms").unwrap(),
            ["default", "alarms"]
        );
        assert!(parse_store_names("Default").is_err());
        assert!(parse_store_names("a/b").is_err());
        assert!(parse_store_names(&"x".repeat(65)).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redb_keeps_every_promise_of_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        let kv = Arc::new(RedbKv::open(&dir.path().join("kv.redb")).unwrap());
        limes_runtime::kv::conformance::check(kv, "suite")
            .await
            .unwrap();
    }
}
