//! The key-value capability on a node: the manifest's `kv` and `kv_shared` keys, the
//! operator's grant and limits, the backend the node's guests use, and the stores' removal.
//!
//! A function declares the stores it opens (`kv=default,alarms`). Each is its own, kept under
//! its name, unless it is listed in `kv_shared` instead: then it is the node's (or cluster's)
//! one store of that name, which the operator must allow (`limes serve --allow-kv-shared NAME`).
//! On one node the stores live in `<data-dir>/kv.redb` ([`RedbKv`]).

mod metrics;
mod redb;

use std::sync::{Arc, RwLock};

use limes_runtime::KvLimits;
use limes_runtime::kv::{Entry, Expect, KvBackend, KvError, KvFuture, Quota, StoreId, Usage};

use crate::error::NodeError;

pub use self::metrics::KvMetrics;
pub use self::redb::RedbKv;

/// The operator's settings of the capability.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvConfig {
    /// Shared stores a manifest may name in `kv_shared`. Default none.
    pub shared: Vec<String>,
    /// Limits of every function's state (see [`KvLimits`] for the defaults).
    pub limits: KvLimits,
}

impl KvConfig {
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
pub fn store_of(name: &str, kv: &[String], kv_shared: &[String], store: &str) -> Option<StoreId> {
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
}

impl NodeKv {
    /// Starts on `backend`.
    pub fn new(backend: Arc<dyn KvBackend>) -> Self {
        Self {
            current: Arc::new(RwLock::new(backend)),
            metrics: Default::default(),
        }
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
        Box::pin(async move {
            let written = backend.set(store, key, value, expect, quota).await;
            if written == Err(KvError::Conflict) {
                metrics.conflict(store);
            }
            written
        })
    }

    fn delete<'a>(&'a self, store: &'a StoreId, key: &'a str) -> KvFuture<'a, ()> {
        let backend = self.backend();
        self.metrics.operation(store, "delete");
        Box::pin(async move { backend.delete(store, key).await })
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
        Box::pin(async move { backend.increment(store, key, delta, quota).await })
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
