//! The key-value capability: `wasi:keyvalue` for guests, on a store the host chooses.
//!
//! Three parts, in the manner of `wasmtime-wasi`'s interface families:
//! - [`KvPolicy`]: which stores a function may open, and the operator's limits (data, part of
//!   the function's [`Policy`](crate::Policy));
//! - [`KvCtx`]: one instance's state, built from the policy and the runtime's [`KvBackend`];
//! - [`add_to_linker`]: links `wasi:keyvalue@0.2.0-draft2` (`store`, `atomics`, `batch`) and the
//!   earlier `@0.2.0-draft` onto one implementation, so components built for either run.
//!
//! Every failure reaches the guest as the interface's `error` (`access-denied` for a store its
//! manifest does not declare, `other(...)` with a sentence for a limit or an unavailable
//! backend). Only a guest's misuse of its own handles traps.

/// The host of one draft, for what both drafts share: its `add_to_linker`, the error, `open`,
/// the bucket's calls but `list-keys` (whose cursor differs), and `batch`. Expanded in each
/// draft's module, after its `bindgen!`, with that draft's `list-keys` as the argument.
macro_rules! draft_host {
    ($($list_keys:tt)*) => {
        /// Links the draft's three interfaces.
        pub(super) fn add_to_linker<T: Send + 'static>(
            linker: &mut wasmtime::component::Linker<T>,
            get: fn(&mut T) -> KvCtxView<'_>,
        ) -> wasmtime::Result<()> {
            store::add_to_linker::<T, HasKv>(linker, get)?;
            atomics::add_to_linker::<T, HasKv>(linker, get)?;
            batch::add_to_linker::<T, HasKv>(linker, get)
        }

        impl From<Failure> for store::Error {
            fn from(f: Failure) -> Self {
                match f {
                    Failure::AccessDenied => store::Error::AccessDenied,
                    Failure::Other(text) => store::Error::Other(text),
                }
            }
        }

        type Result<T> = wasmtime::Result<std::result::Result<T, store::Error>>;

        fn spell<T>(outcome: wasmtime::Result<std::result::Result<T, Failure>>) -> Result<T> {
            outcome.map(|r| r.map_err(Into::into))
        }

        impl store::Host for KvCtxView<'_> {
            async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>> {
                spell(KvCtxView::open(self, &identifier))
            }
        }

        impl store::HostBucket for KvCtxView<'_> {
            async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> Result<Option<Vec<u8>>> {
                spell(
                    KvCtxView::get(self, &bucket, &key)
                        .await
                        .map(|r| r.map(|e| e.map(|e| e.value))),
                )
            }

            async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> Result<()> {
                spell(KvCtxView::set(self, &bucket, &key, value).await)
            }

            async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<()> {
                spell(KvCtxView::delete(self, &bucket, &key).await)
            }

            async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool> {
                spell(
                    KvCtxView::get(self, &bucket, &key)
                        .await
                        .map(|r| r.map(|e| e.is_some())),
                )
            }

                $($list_keys)*

            async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
                self.table.delete(bucket)?;
                Ok(())
            }
        }

        impl batch::Host for KvCtxView<'_> {
            async fn get_many(
                &mut self,
                bucket: Resource<Bucket>,
                keys: Vec<String>,
            ) -> Result<Vec<Option<(String, Vec<u8>)>>> {
                spell(KvCtxView::get_many(self, &bucket, keys).await)
            }

            async fn set_many(
                &mut self,
                bucket: Resource<Bucket>,
                key_values: Vec<(String, Vec<u8>)>,
            ) -> Result<()> {
                spell(KvCtxView::set_many(self, &bucket, key_values).await)
            }

            async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> Result<()> {
                spell(KvCtxView::delete_many(self, &bucket, keys).await)
            }
        }
    };
}

mod backend;
pub mod conformance;
mod draft;
mod draft2;

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

pub use backend::{
    Entry, Expect, KvBackend, KvError, KvFuture, MemoryKv, PAGE, Quota, SHARED_NAMESPACE, StoreId,
    Usage, add, check_quota, parse_integer,
};

/// The stores a function may open and the limits of its state.
///
/// The default grants no store: `open` answers `access-denied` for every name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvPolicy {
    /// Each store the function may open: the name it opens it by, and the store behind it.
    pub stores: Vec<(String, StoreId)>,
    /// Bounds on keys, values and totals.
    pub limits: KvLimits,
}

impl KvPolicy {
    /// The function `namespace`'s own stores `names`, and the shared stores `shared`.
    pub fn new<'a>(
        namespace: &str,
        names: impl IntoIterator<Item = &'a String>,
        shared: impl IntoIterator<Item = &'a String>,
        limits: KvLimits,
    ) -> Self {
        let own = names
            .into_iter()
            .map(|n| (n.clone(), StoreId::new(namespace, n.as_str())));
        let shared = shared
            .into_iter()
            .map(|n| (n.clone(), StoreId::new(SHARED_NAMESPACE, n.as_str())));
        Self {
            stores: own.chain(shared).collect(),
            limits,
        }
    }

    /// The store opened by `name`, if the function may open it.
    pub fn store(&self, name: &str) -> Option<&StoreId> {
        self.stores
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| id)
    }
}

/// Limits on what a function keeps, set by the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    /// Longest key, in bytes. Default 256.
    pub max_key_bytes: usize,
    /// Largest value, in bytes. Default 512 KiB: within NATS' default 1 MiB message, headers
    /// included, so both backends take the same values.
    pub max_value_bytes: usize,
    /// Most keys in one store. Default 10 000.
    pub max_keys: u64,
    /// Most bytes, keys and values, in all of one function's stores. Default 64 MiB.
    pub max_bytes: u64,
}

impl Default for KvLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: 256,
            max_value_bytes: 512 << 10,
            max_keys: 10_000,
            max_bytes: 64 << 20,
        }
    }
}

impl KvLimits {
    fn quota(&self) -> Quota {
        Quota {
            max_keys: self.max_keys,
            max_bytes: self.max_bytes,
        }
    }
}

/// A store opened by a guest (the `bucket` resource of both drafts).
pub struct Bucket {
    store: StoreId,
}

/// A compare-and-swap in progress: the value read and its revision (draft2's `cas` resource).
pub struct Cas {
    store: StoreId,
    key: String,
    current: Option<Entry>,
}

/// One instance's key-value state.
pub struct KvCtx {
    backend: Arc<dyn KvBackend>,
    policy: KvPolicy,
}

impl KvCtx {
    /// The state of an instance of a function with `policy`, on `backend`.
    pub fn new(backend: Arc<dyn KvBackend>, policy: &KvPolicy) -> Self {
        Self {
            backend,
            policy: policy.clone(),
        }
    }
}

/// What the host functions work on: the instance's key-value state and its resource table.
pub struct KvCtxView<'a> {
    /// The instance's state.
    pub ctx: &'a KvCtx,
    /// The instance's resources (shared with WASI's).
    pub table: &'a mut ResourceTable,
}

/// A store's data that provides the key-value capability.
pub trait KvView: Send {
    /// The view of this instance's key-value state.
    fn kv(&mut self) -> KvCtxView<'_>;
}

struct HasKv;

impl HasData for HasKv {
    type Data<'a> = KvCtxView<'a>;
}

/// Links both drafts of `wasi:keyvalue` (`store`, `atomics`, `batch`) into `linker`.
pub fn add_to_linker<T: KvView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    draft2::add_to_linker(linker, T::kv)?;
    draft::add_to_linker(linker, T::kv)
}

/// Why an operation failed, before each draft spells it in its own `error` type.
enum Failure {
    AccessDenied,
    Other(String),
}

impl From<KvError> for Failure {
    fn from(e: KvError) -> Self {
        Failure::Other(e.to_string())
    }
}

type Outcome<T> = wasmtime::Result<Result<T, Failure>>;

/// The operations of both drafts, once.
impl KvCtxView<'_> {
    fn open(&mut self, name: &str) -> Outcome<Resource<Bucket>> {
        let Some(store) = self.ctx.policy.store(name) else {
            return Ok(Err(Failure::AccessDenied));
        };
        let bucket = Bucket {
            store: store.clone(),
        };
        Ok(Ok(self.table.push(bucket)?))
    }

    fn store(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<StoreId> {
        Ok(self.table.get(bucket)?.store.clone())
    }

    fn check_key(&self, key: &str) -> Result<(), Failure> {
        let max = self.ctx.policy.limits.max_key_bytes;
        if key.is_empty() {
            return Err(Failure::Other("a key must not be empty".into()));
        }
        if key.len() > max {
            return Err(Failure::Other(format!(
                "the key is {} bytes, over this node's limit of {max}",
                key.len()
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Failure> {
        let max = self.ctx.policy.limits.max_value_bytes;
        if value.len() > max {
            return Err(Failure::Other(format!(
                "the value is {} bytes, over this node's limit of {max}",
                value.len()
            )));
        }
        Ok(())
    }

    async fn get(&mut self, bucket: &Resource<Bucket>, key: &str) -> Outcome<Option<Entry>> {
        let store = self.store(bucket)?;
        if let Err(e) = self.check_key(key) {
            return Ok(Err(e));
        }
        Ok(self.ctx.backend.get(&store, key).await.map_err(Into::into))
    }

    async fn set(&mut self, bucket: &Resource<Bucket>, key: &str, value: Vec<u8>) -> Outcome<()> {
        let store = self.store(bucket)?;
        if let Err(e) = self.check_key(key).and_then(|()| self.check_value(&value)) {
            return Ok(Err(e));
        }
        let quota = self.ctx.policy.limits.quota();
        let written = self.ctx.backend.set(&store, key, value, Expect::Any, quota);
        Ok(written.await.map(drop).map_err(Into::into))
    }

    async fn delete(&mut self, bucket: &Resource<Bucket>, key: &str) -> Outcome<()> {
        let store = self.store(bucket)?;
        if let Err(e) = self.check_key(key) {
            return Ok(Err(e));
        }
        Ok(self
            .ctx
            .backend
            .delete(&store, key)
            .await
            .map_err(Into::into))
    }

    /// A page of keys after `after`, and the key to continue after if more follow.
    async fn list(
        &mut self,
        bucket: &Resource<Bucket>,
        after: Option<&str>,
    ) -> Outcome<(Vec<String>, Option<String>)> {
        let store = self.store(bucket)?;
        let page = self.ctx.backend.list(&store, after, PAGE).await;
        Ok(page
            .map(|(keys, more)| {
                let next = more.then(|| keys.last().cloned()).flatten();
                (keys, next)
            })
            .map_err(Into::into))
    }

    async fn increment(
        &mut self,
        bucket: &Resource<Bucket>,
        key: &str,
        delta: i64,
    ) -> Outcome<i64> {
        let store = self.store(bucket)?;
        if let Err(e) = self.check_key(key) {
            return Ok(Err(e));
        }
        let quota = self.ctx.policy.limits.quota();
        let sum = self.ctx.backend.increment(&store, key, delta, quota).await;
        Ok(sum.map_err(Into::into))
    }

    async fn get_many(
        &mut self,
        bucket: &Resource<Bucket>,
        keys: Vec<String>,
    ) -> Outcome<Vec<Option<(String, Vec<u8>)>>> {
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            match self.get(bucket, &key).await? {
                Ok(entry) => found.push(entry.map(|e| (key, e.value))),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(found))
    }

    async fn set_many(
        &mut self,
        bucket: &Resource<Bucket>,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> Outcome<()> {
        for (key, value) in pairs {
            if let Err(e) = self.set(bucket, &key, value).await? {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }

    async fn delete_many(&mut self, bucket: &Resource<Bucket>, keys: Vec<String>) -> Outcome<()> {
        for key in keys {
            if let Err(e) = self.delete(bucket, &key).await? {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }

    /// Reads `key` for a later compare-and-swap.
    async fn cas_new(&mut self, bucket: &Resource<Bucket>, key: String) -> Outcome<Resource<Cas>> {
        let store = self.store(bucket)?;
        if let Err(e) = self.check_key(&key) {
            return Ok(Err(e));
        }
        self.cas_read(store, key).await
    }

    async fn cas_read(&mut self, store: StoreId, key: String) -> Outcome<Resource<Cas>> {
        match self.ctx.backend.get(&store, &key).await {
            Ok(current) => Ok(Ok(self.table.push(Cas {
                store,
                key,
                current,
            })?)),
            Err(e) => Ok(Err(e.into())),
        }
    }

    /// Writes `value` if the key is unchanged since `cas` read it; [`Swap`] tells how it ended.
    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> wasmtime::Result<Swap> {
        let Cas {
            store,
            key,
            current,
        } = self.table.delete(cas)?;
        if let Err(e) = self.check_value(&value) {
            return Ok(Swap::Failed(e));
        }
        let expect = current
            .as_ref()
            .map_or(Expect::Absent, |e| Expect::Revision(e.revision));
        let quota = self.ctx.policy.limits.quota();
        match self
            .ctx
            .backend
            .set(&store, &key, value, expect, quota)
            .await
        {
            Ok(_) => Ok(Swap::Done),
            Err(KvError::Conflict) => match self.cas_read(store, key).await? {
                Ok(fresh) => Ok(Swap::Conflict(fresh)),
                Err(e) => Ok(Swap::Failed(e)),
            },
            Err(e) => Ok(Swap::Failed(e.into())),
        }
    }
}

/// How a compare-and-swap ended.
enum Swap {
    Done,
    /// The key changed; a new `cas` holds what it is now.
    Conflict(Resource<Cas>),
    Failed(Failure),
}
