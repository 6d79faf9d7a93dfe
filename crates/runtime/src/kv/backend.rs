//! Where key-value stores live: the interface a backend implements, and the in-memory one.
//!
//! The host side of `wasi:keyvalue` speaks only to [`KvBackend`]; the node gives it a durable
//! one (redb on one node, NATS JetStream KV in a cluster). A backend knows nothing of guests,
//! policies or interface versions, so the same backend serves both drafts, the operator API and
//! the tests.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

/// A boxed future of a backend call.
pub type KvFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, KvError>> + Send + 'a>>;

/// The namespace of stores shared between functions (a function's own stores live under its
/// name, and function names cannot start with `@`).
pub const SHARED_NAMESPACE: &str = "@shared";

/// One store: whose it is and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreId {
    /// The function that owns it, or [`SHARED_NAMESPACE`].
    pub namespace: String,
    /// Its name, as the function opens it.
    pub name: String,
}

impl StoreId {
    /// The store `name` of function `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for StoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A value and its revision, which changes at every write of its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value's bytes.
    pub value: Vec<u8>,
    /// Increases at every write; compare-and-swap checks it.
    pub revision: u64,
}

/// What a write requires of the key's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Nothing: a plain `set`.
    Any,
    /// That the key does not exist.
    Absent,
    /// That the key's revision is still this one.
    Revision(u64),
}

/// Bounds a write must stay within; the operator sets them (see [`KvLimits`](super::KvLimits)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Most keys in one store.
    pub max_keys: u64,
    /// Most bytes (keys and values) in all the stores of one namespace.
    pub max_bytes: u64,
}

/// How much one store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// The store.
    pub store: StoreId,
    /// Its keys.
    pub keys: u64,
    /// Bytes of its keys and values.
    pub bytes: u64,
}

/// Why a backend call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// A conditional write found the key changed.
    #[error("the key changed since it was read")]
    Conflict,
    /// The write would pass a quota; the text says which.
    #[error("{0}")]
    Quota(String),
    /// `increment` met a value that is not a decimal integer, or the sum overflowed.
    #[error("{0}")]
    NotAnInteger(String),
    /// The backend could not do it (I/O, connection, corruption); the text says why.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// How many keys one `list-keys` page holds.
pub const PAGE: usize = 1000;

/// Most attempts of the compare-and-swap loop behind [`KvBackend::increment`]'s default.
const INCREMENT_ATTEMPTS: usize = 200;

/// A place where stores live. Every method is one atomic step: a write is durable (as far as
/// the backend promises durability) when its future resolves.
pub trait KvBackend: Send + Sync + 'static {
    /// The key's value and revision, or `None`.
    fn get<'a>(&'a self, store: &'a StoreId, key: &'a str) -> KvFuture<'a, Option<Entry>>;

    /// Writes `value` if the key's state meets `expect`, within `quota`; returns the new
    /// revision. [`KvError::Conflict`] if `expect` failed.
    fn set<'a>(
        &'a self,
        store: &'a StoreId,
        key: &'a str,
        value: Vec<u8>,
        expect: Expect,
        quota: Quota,
    ) -> KvFuture<'a, u64>;

    /// Removes the key; removing a missing key succeeds.
    fn delete<'a>(&'a self, store: &'a StoreId, key: &'a str) -> KvFuture<'a, ()>;

    /// Up to `limit` keys after `after` (all from the first if `None`), in order, and whether
    /// more follow.
    fn list<'a>(
        &'a self,
        store: &'a StoreId,
        after: Option<&'a str>,
        limit: usize,
    ) -> KvFuture<'a, (Vec<String>, bool)>;

    /// Removes every store of `namespace` (a function's state, when it is removed).
    fn drop_namespace<'a>(&'a self, namespace: &'a str) -> KvFuture<'a, ()>;

    /// Every store with its key count and bytes, for metrics. As exact as the backend can
    /// afford: JetStream counts its own per-message overhead in the bytes.
    fn usage(&self) -> KvFuture<'_, Vec<Usage>>;

    /// Adds `delta` to the decimal integer at `key` (0 if absent) and returns the sum.
    ///
    /// The default is a bounded compare-and-swap loop with a short random pause after each
    /// lost race, which spreads the next round of writers; a backend with transactions does it
    /// in one.
    fn increment<'a>(
        &'a self,
        store: &'a StoreId,
        key: &'a str,
        delta: i64,
        quota: Quota,
    ) -> KvFuture<'a, i64> {
        Box::pin(async move {
            for _ in 0..INCREMENT_ATTEMPTS {
                let current = self.get(store, key).await?;
                let (now, expect) = match &current {
                    Some(entry) => (
                        parse_integer(&entry.value)?,
                        Expect::Revision(entry.revision),
                    ),
                    None => (0, Expect::Absent),
                };
                let sum = add(now, delta)?;
                match self
                    .set(store, key, sum.to_string().into_bytes(), expect, quota)
                    .await
                {
                    Ok(_) => return Ok(sum),
                    Err(KvError::Conflict) => {
                        let pause = std::time::Duration::from_micros(fastrand::u64(100..2_000));
                        tokio::time::sleep(pause).await;
                    }
                    Err(other) => return Err(other),
                }
            }
            Err(KvError::Unavailable(format!(
                "increment of {key:?} lost the race {INCREMENT_ATTEMPTS} times in a row"
            )))
        })
    }
}

/// Reads a counter: a decimal integer, as `increment` writes it.
pub fn parse_integer(value: &[u8]) -> Result<i64, KvError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            KvError::NotAnInteger(
                "the value is not a decimal integer, so it cannot be incremented".into(),
            )
        })
}

/// `now + delta`, or an error naming the overflow.
pub fn add(now: i64, delta: i64) -> Result<i64, KvError> {
    now.checked_add(delta)
        .ok_or_else(|| KvError::NotAnInteger(format!("{now} + {delta} overflows a 64-bit integer")))
}

/// Checks a write against `quota`, given the store's key count and the namespace's bytes
/// before it, and the size of what it replaces (`None` for a new key).
pub fn check_quota(
    quota: Quota,
    store: &StoreId,
    keys: u64,
    bytes: u64,
    key: &str,
    replaced: Option<usize>,
    value: usize,
) -> Result<(), KvError> {
    if replaced.is_none() && keys >= quota.max_keys {
        return Err(KvError::Quota(format!(
            "store {:?} already holds {keys} keys, the most this node allows",
            store.name
        )));
    }
    let before = replaced.map_or(0, |old| (key.len() + old) as u64);
    let after = bytes - before.min(bytes) + (key.len() + value) as u64;
    if after > quota.max_bytes {
        return Err(KvError::Quota(format!(
            "the write would make {} bytes of state, over this node's limit of {} bytes per function",
            after, quota.max_bytes
        )));
    }
    Ok(())
}

/// Stores in this process's memory: for `limes run` and tests. Nothing survives the process.
#[derive(Default)]
pub struct MemoryKv {
    stores: Mutex<HashMap<StoreId, BTreeMap<String, Entry>>>,
    revision: std::sync::atomic::AtomicU64,
}

impl MemoryKv {
    fn bytes(stores: &HashMap<StoreId, BTreeMap<String, Entry>>, namespace: &str) -> u64 {
        stores
            .iter()
            .filter(|(id, _)| id.namespace == namespace)
            .flat_map(|(_, keys)| keys.iter())
            .map(|(k, e)| (k.len() + e.value.len()) as u64)
            .sum()
    }
}

impl KvBackend for MemoryKv {
    fn get<'a>(&'a self, store: &'a StoreId, key: &'a str) -> KvFuture<'a, Option<Entry>> {
        let stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        let entry = stores.get(store).and_then(|s| s.get(key)).cloned();
        Box::pin(std::future::ready(Ok(entry)))
    }

    fn set<'a>(
        &'a self,
        store: &'a StoreId,
        key: &'a str,
        value: Vec<u8>,
        expect: Expect,
        quota: Quota,
    ) -> KvFuture<'a, u64> {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = Self::bytes(&stores, &store.namespace);
        let keys = stores.entry(store.clone()).or_default();
        let current = keys.get(key);
        let result = match (expect, current) {
            (Expect::Absent, Some(_)) => Err(KvError::Conflict),
            (Expect::Revision(r), Some(e)) if e.revision != r => Err(KvError::Conflict),
            (Expect::Revision(_), None) => Err(KvError::Conflict),
            _ => check_quota(
                quota,
                store,
                keys.len() as u64,
                bytes,
                key,
                current.map(|e| e.value.len()),
                value.len(),
            )
            .map(|()| {
                let revision = self
                    .revision
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    + 1;
                keys.insert(key.to_owned(), Entry { value, revision });
                revision
            }),
        };
        Box::pin(std::future::ready(result))
    }

    fn delete<'a>(&'a self, store: &'a StoreId, key: &'a str) -> KvFuture<'a, ()> {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(keys) = stores.get_mut(store) {
            keys.remove(key);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn list<'a>(
        &'a self,
        store: &'a StoreId,
        after: Option<&'a str>,
        limit: usize,
    ) -> KvFuture<'a, (Vec<String>, bool)> {
        use std::ops::Bound;
        let stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys: Vec<String> = match stores.get(store) {
            Some(keys) => {
                let start = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_owned()));
                keys.range((start, Bound::Unbounded))
                    .take(limit + 1)
                    .map(|(k, _)| k.clone())
                    .collect()
            }
            None => Vec::new(),
        };
        let more = keys.len() > limit;
        keys.truncate(limit);
        Box::pin(std::future::ready(Ok((keys, more))))
    }

    fn drop_namespace<'a>(&'a self, namespace: &'a str) -> KvFuture<'a, ()> {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        stores.retain(|id, _| id.namespace != namespace);
        Box::pin(std::future::ready(Ok(())))
    }

    fn usage(&self) -> KvFuture<'_, Vec<Usage>> {
        let stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        let usage = stores
            .iter()
            .map(|(id, keys)| Usage {
                store: id.clone(),
                keys: keys.len() as u64,
                bytes: keys
                    .iter()
                    .map(|(k, e)| (k.len() + e.value.len()) as u64)
                    .sum(),
            })
            .collect();
        Box::pin(std::future::ready(Ok(usage)))
    }
}
