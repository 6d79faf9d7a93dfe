//! The cluster backend of key-value stores: NATS JetStream KV, so that a value one node writes
//! is what the next invocation reads on any node.
//!
//! Each store is a bucket of its own, `limes-kv-<function>X<store>` (`SHARED` for shared
//! stores): function and store names are lowercase, so the uppercase `X` cannot occur in
//! either and no two stores share a bucket. Keys are escaped to NATS' key alphabet
//! (`[-/_a-zA-Z0-9]` kept, every other byte `=XX`), so any UTF-8 key works.
//!
//! Consistency: every call is a request to the JetStream leader of the bucket's stream and
//! waits for its answer, so an invocation reads its own writes and, since the stream is the
//! one copy, a write acknowledged on one node is read by any later call on any node.
//! Compare-and-swap is JetStream's revision-checked update; `increment` is the backend
//! interface's own compare-and-swap loop, bounded, with a short random pause after each lost
//! race.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt as _;
use limes_runtime::kv::{
    Entry, Expect, KvBackend, KvError, KvFuture, Quota, SHARED_NAMESPACE, StoreId, Usage,
    check_quota,
};

/// What every store's bucket name starts with.
const PREFIX: &str = "limes-kv-";

/// Stores in NATS JetStream KV buckets.
pub struct NatsKv {
    js: jetstream::Context,
    buckets: tokio::sync::Mutex<HashMap<String, kv::Store>>,
}

fn unavailable(e: impl std::fmt::Display) -> KvError {
    KvError::Unavailable(format!("NATS: {e}"))
}

/// The bucket of `store`.
fn bucket_name(store: &StoreId) -> String {
    let owner = if store.namespace == SHARED_NAMESPACE {
        "SHARED"
    } else {
        &store.namespace
    };
    format!("{PREFIX}{owner}X{}", store.name)
}

/// The store whose bucket is `bucket`, if it is one.
fn store_of_bucket(bucket: &str) -> Option<StoreId> {
    let (owner, name) = bucket.strip_prefix(PREFIX)?.split_once('X')?;
    let namespace = if owner == "SHARED" {
        SHARED_NAMESPACE
    } else {
        owner
    };
    Some(StoreId::new(namespace, name))
}

/// `key` in NATS' key alphabet.
fn escape(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'/' => out.push(b as char),
            _ => out.push_str(&format!("={b:02X}")),
        }
    }
    out
}

/// The key `escape` made `escaped` of.
fn unescape(escaped: &str) -> Option<String> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = escaped.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl NatsKv {
    /// Stores on the JetStream of `js`.
    pub fn new(js: jetstream::Context) -> Self {
        Self {
            js,
            buckets: Default::default(),
        }
    }

    /// The bucket of `store`, created on first use.
    async fn bucket(&self, store: &StoreId) -> Result<kv::Store, KvError> {
        let name = bucket_name(store);
        let mut buckets = self.buckets.lock().await;
        if let Some(bucket) = buckets.get(&name) {
            return Ok(bucket.clone());
        }
        let bucket = crate::store::key_value(&self.js, &name, 1, Duration::ZERO)
            .await
            .map_err(unavailable)?;
        buckets.insert(name, bucket.clone());
        Ok(bucket)
    }

    /// Runs `op` on the bucket of `store`; if it fails, forgets the handle and tries once more
    /// on a fresh one: another node may have removed the bucket (with its function) and a new
    /// deploy made it again.
    async fn on_bucket<T, F, Fut>(&self, store: &StoreId, op: F) -> Result<T, KvError>
    where
        F: Fn(kv::Store) -> Fut,
        Fut: std::future::Future<Output = Result<T, KvError>>,
    {
        match op(self.bucket(store).await?).await {
            Err(KvError::Unavailable(_)) => {
                self.buckets.lock().await.remove(&bucket_name(store));
                op(self.bucket(store).await?).await
            }
            other => other,
        }
    }

    /// The store's key count and bytes, asked of the server (the client's copy is stale).
    async fn usage(&self, store: &StoreId) -> Result<(u64, u64), KvError> {
        let mut stream = self
            .js
            .get_stream(format!("KV_{}", bucket_name(store)))
            .await
            .map_err(unavailable)?;
        let info = stream.info().await.map_err(unavailable)?;
        Ok((info.state.messages, info.state.bytes))
    }
}

impl KvBackend for NatsKv {
    fn get<'a>(&'a self, store: &'a StoreId, key: &'a str) -> KvFuture<'a, Option<Entry>> {
        Box::pin(self.on_bucket(store, move |bucket| async move {
            let entry = bucket.entry(escape(key)).await.map_err(unavailable)?;
            Ok(entry
                .filter(|e| e.operation == kv::Operation::Put)
                .map(|e| Entry {
                    value: e.value.to_vec(),
                    revision: e.revision,
                }))
        }))
    }

    fn set<'a>(
        &'a self,
        store: &'a StoreId,
        key: &'a str,
        value: Vec<u8>,
        expect: Expect,
        quota: Quota,
    ) -> KvFuture<'a, u64> {
        Box::pin(async move {
            let current = self.get(store, key).await?;
            let bucket = self.bucket(store).await?;
            let escaped = escape(key);
            let (keys, bytes) = self.usage(store).await?;
            // A deleted key's marker is a message too; counting it errs on the safe side.
            check_quota(
                quota,
                store,
                keys,
                bytes,
                key,
                current.as_ref().map(|e| e.value.len()),
                value.len(),
            )?;
            let value = bytes::Bytes::from(value);
            match expect {
                Expect::Any => bucket.put(&escaped, value).await.map_err(unavailable),
                Expect::Absent => {
                    bucket
                        .create(&escaped, value)
                        .await
                        .map_err(|e| match e.kind() {
                            kv::CreateErrorKind::AlreadyExists => KvError::Conflict,
                            _ => unavailable(e),
                        })
                }
                Expect::Revision(revision) => bucket
                    .update(&escaped, value, revision)
                    .await
                    .map_err(|e| match e.kind() {
                        kv::UpdateErrorKind::WrongLastRevision => KvError::Conflict,
                        _ => unavailable(e),
                    }),
            }
        })
    }

    fn delete<'a>(&'a self, store: &'a StoreId, key: &'a str) -> KvFuture<'a, ()> {
        Box::pin(self.on_bucket(store, move |bucket| async move {
            bucket.delete(escape(key)).await.map_err(unavailable)
        }))
    }

    fn list<'a>(
        &'a self,
        store: &'a StoreId,
        after: Option<&'a str>,
        limit: usize,
    ) -> KvFuture<'a, (Vec<String>, bool)> {
        Box::pin(async move {
            // JetStream lists keys in no order; a page is a slice of the sorted whole (a store
            // holds at most the operator's key limit, 10 000 by default).
            let mut keys = self
                .on_bucket(store, |bucket| async move {
                    let mut keys = Vec::new();
                    let mut stream = bucket.keys().await.map_err(unavailable)?;
                    while let Some(key) = stream.next().await {
                        keys.extend(unescape(&key.map_err(unavailable)?));
                    }
                    Ok(keys)
                })
                .await?;
            keys.sort();
            let start = after.map_or(0, |a| keys.partition_point(|k| k.as_str() <= a));
            let more = keys.len() > start + limit;
            keys.truncate(start + limit);
            Ok((keys.split_off(start), more))
        })
    }

    fn drop_namespace<'a>(&'a self, namespace: &'a str) -> KvFuture<'a, ()> {
        Box::pin(async move {
            let prefix = format!("KV_{}", bucket_name(&StoreId::new(namespace, "")));
            let mut names = self.js.stream_names();
            let mut doomed = Vec::new();
            while let Some(name) = names.next().await {
                let name = name.map_err(unavailable)?;
                if name.starts_with(&prefix) {
                    doomed.push(name);
                }
            }
            let mut buckets = self.buckets.lock().await;
            for name in doomed {
                buckets.remove(name.trim_start_matches("KV_"));
                self.js.delete_stream(&name).await.map_err(unavailable)?;
            }
            Ok(())
        })
    }

    fn usage(&self) -> KvFuture<'_, Vec<Usage>> {
        Box::pin(async move {
            let mut names = self.js.stream_names();
            let mut all = Vec::new();
            while let Some(name) = names.next().await {
                let name = name.map_err(unavailable)?;
                let Some(store) = name.strip_prefix("KV_").and_then(store_of_bucket) else {
                    continue;
                };
                let mut stream = self.js.get_stream(&name).await.map_err(unavailable)?;
                let state = stream.info().await.map_err(unavailable)?.state.clone();
                all.push(Usage {
                    store,
                    keys: state.messages,
                    bytes: state.bytes,
                });
            }
            Ok(all)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_escape_to_the_nats_alphabet_and_back() {
        for key in ["plain", "sensor 7", "a.b", "ünïcode", "=x=", "path/to/k"] {
            let escaped = escape(key);
            assert!(
                escaped
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_/=".contains(&b)),
                "{escaped}"
            );
            assert_eq!(unescape(&escaped).as_deref(), Some(key));
        }
    }

    #[test]
    fn no_two_stores_share_a_bucket() {
        let a = bucket_name(&StoreId::new("x", "a-b"));
        let b = bucket_name(&StoreId::new("x-a", "b"));
        assert_ne!(a, b);
        assert_ne!(
            bucket_name(&StoreId::new(SHARED_NAMESPACE, "alarms")),
            bucket_name(&StoreId::new("shared", "alarms"))
        );
        for store in [
            StoreId::new("x-a", "b"),
            StoreId::new(SHARED_NAMESPACE, "alarms"),
        ] {
            assert_eq!(store_of_bucket(&bucket_name(&store)), Some(store));
        }
    }
}
