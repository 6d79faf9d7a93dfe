//! The one-node backend of key-value stores: a redb file in the node's data directory.
//!
//! Every write is one redb write transaction, committed with redb's default durability (an
//! fsync) before the guest's call returns, so an acknowledged `set` survives a crash or
//! `kill -9`. `increment` and compare-and-swap read, check and write in that one transaction, so
//! they are atomic against every other writer of the node.

use std::path::Path;
use std::sync::Arc;

use limes_runtime::kv::{
    Entry, Expect, KvBackend, KvError, KvFuture, Quota, StoreId, Usage, add, check_quota,
    parse_integer,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// (namespace, store, key) → (revision, value).
const ENTRIES: TableDefinition<(&str, &str, &str), (u64, &[u8])> = TableDefinition::new("entries");
/// (namespace, store) → (keys, bytes of keys and values).
const USAGE: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("usage");
/// The last revision given out.
const REVISION: TableDefinition<(), u64> = TableDefinition::new("revision");

/// Stores in `<data-dir>/kv.redb`.
pub struct RedbKv {
    db: Arc<Database>,
}

fn unavailable(e: impl std::fmt::Display) -> KvError {
    KvError::Unavailable(e.to_string())
}

impl RedbKv {
    /// Opens (or creates) the file at `path`.
    pub fn open(path: &Path) -> Result<Self, String> {
        let db = Database::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let tx = db.begin_write().map_err(|e| e.to_string())?;
        tx.open_table(ENTRIES).map_err(|e| e.to_string())?;
        tx.open_table(USAGE).map_err(|e| e.to_string())?;
        tx.open_table(REVISION).map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Runs `write` in one write transaction on a blocking thread (the commit waits for the
    /// disk; the async workers must not) and commits it if it succeeds.
    fn write<T: Send + 'static>(
        &self,
        write: impl FnOnce(&redb::WriteTransaction) -> Result<T, KvError> + Send + 'static,
    ) -> KvFuture<'static, T> {
        let db = self.db.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let tx = db.begin_write().map_err(unavailable)?;
                let value = write(&tx)?;
                tx.commit().map_err(unavailable)?;
                Ok(value)
            })
            .await
            .map_err(unavailable)?
        })
    }
}

/// The store's key count and the namespace's bytes, as the write transaction sees them.
fn usage(tx: &redb::WriteTransaction, store: &StoreId) -> Result<(u64, u64), KvError> {
    let table = tx.open_table(USAGE).map_err(unavailable)?;
    let keys = table
        .get((store.namespace.as_str(), store.name.as_str()))
        .map_err(unavailable)?
        .map_or(0, |v| v.value().0);
    let mut bytes = 0;
    for row in table
        .range((store.namespace.as_str(), "")..)
        .map_err(unavailable)?
    {
        let (k, v) = row.map_err(unavailable)?;
        if k.value().0 != store.namespace {
            break;
        }
        bytes += v.value().1;
    }
    Ok((keys, bytes))
}

/// Writes `value` at `key` if `expect` holds, within `quota`: the body of `set` and
/// `increment`, in the caller's transaction.
fn put(
    tx: &redb::WriteTransaction,
    store: &StoreId,
    key: &str,
    value: &[u8],
    expect: Expect,
    quota: Quota,
) -> Result<u64, KvError> {
    let (keys, bytes) = usage(tx, store)?;
    let mut entries = tx.open_table(ENTRIES).map_err(unavailable)?;
    let id = (store.namespace.as_str(), store.name.as_str(), key);
    let current = entries
        .get(id)
        .map_err(unavailable)?
        .map(|v| (v.value().0, v.value().1.len()));
    match (expect, current) {
        (Expect::Absent, Some(_)) => return Err(KvError::Conflict),
        (Expect::Revision(_), None) => return Err(KvError::Conflict),
        (Expect::Revision(want), Some((have, _))) if want != have => {
            return Err(KvError::Conflict);
        }
        _ => {}
    }
    let replaced = current.map(|(_, len)| len);
    check_quota(quota, store, keys, bytes, key, replaced, value.len())?;
    let mut counter = tx.open_table(REVISION).map_err(unavailable)?;
    let revision = counter
        .get(())
        .map_err(unavailable)?
        .map_or(0, |v| v.value())
        + 1;
    counter.insert((), revision).map_err(unavailable)?;
    entries.insert(id, (revision, value)).map_err(unavailable)?;
    let before = replaced.map_or(0, |len| (key.len() + len) as u64);
    let (new_keys, new_bytes) = (
        keys + u64::from(replaced.is_none()),
        usage_of(tx, store)?.saturating_sub(before) + (key.len() + value.len()) as u64,
    );
    tx.open_table(USAGE)
        .map_err(unavailable)?
        .insert(
            (store.namespace.as_str(), store.name.as_str()),
            (new_keys, new_bytes),
        )
        .map_err(unavailable)?;
    Ok(revision)
}

/// The bytes of one store.
fn usage_of(tx: &redb::WriteTransaction, store: &StoreId) -> Result<u64, KvError> {
    Ok(tx
        .open_table(USAGE)
        .map_err(unavailable)?
        .get((store.namespace.as_str(), store.name.as_str()))
        .map_err(unavailable)?
        .map_or(0, |v| v.value().1))
}

impl KvBackend for RedbKv {
    fn get<'a>(&'a self, store: &'a StoreId, key: &'a str) -> KvFuture<'a, Option<Entry>> {
        // A read transaction sees the last commit without waiting for writers: no thread hop.
        let read = || -> Result<Option<Entry>, KvError> {
            let tx = self.db.begin_read().map_err(unavailable)?;
            let table = tx.open_table(ENTRIES).map_err(unavailable)?;
            Ok(table
                .get((store.namespace.as_str(), store.name.as_str(), key))
                .map_err(unavailable)?
                .map(|v| {
                    let (revision, value) = v.value();
                    Entry {
                        value: value.to_vec(),
                        revision,
                    }
                }))
        };
        Box::pin(std::future::ready(read()))
    }

    fn set<'a>(
        &'a self,
        store: &'a StoreId,
        key: &'a str,
        value: Vec<u8>,
        expect: Expect,
        quota: Quota,
    ) -> KvFuture<'a, u64> {
        let (store, key) = (store.clone(), key.to_owned());
        self.write(move |tx| put(tx, &store, &key, &value, expect, quota))
    }

    fn delete<'a>(&'a self, store: &'a StoreId, key: &'a str) -> KvFuture<'a, ()> {
        let (store, key) = (store.clone(), key.to_owned());
        self.write(move |tx| {
            let removed = tx
                .open_table(ENTRIES)
                .map_err(unavailable)?
                .remove((store.namespace.as_str(), store.name.as_str(), key.as_str()))
                .map_err(unavailable)?
                .map(|v| v.value().1.len());
            if let Some(len) = removed {
                let mut usage = tx.open_table(USAGE).map_err(unavailable)?;
                let id = (store.namespace.as_str(), store.name.as_str());
                let (keys, bytes) = usage
                    .get(id)
                    .map_err(unavailable)?
                    .map_or((1, 0), |v| v.value());
                let freed = (key.len() + len) as u64;
                usage
                    .insert(id, (keys.saturating_sub(1), bytes.saturating_sub(freed)))
                    .map_err(unavailable)?;
            }
            Ok(())
        })
    }

    fn list<'a>(
        &'a self,
        store: &'a StoreId,
        after: Option<&'a str>,
        limit: usize,
    ) -> KvFuture<'a, (Vec<String>, bool)> {
        use std::ops::Bound;
        let read = || -> Result<(Vec<String>, bool), KvError> {
            let tx = self.db.begin_read().map_err(unavailable)?;
            let table = tx.open_table(ENTRIES).map_err(unavailable)?;
            let (ns, name) = (store.namespace.as_str(), store.name.as_str());
            let start = match after {
                Some(a) => Bound::Excluded((ns, name, a)),
                None => Bound::Included((ns, name, "")),
            };
            let mut keys = Vec::new();
            for row in table
                .range::<(&str, &str, &str)>((start, Bound::Unbounded))
                .map_err(unavailable)?
            {
                let (k, _) = row.map_err(unavailable)?;
                let (n, s, key) = k.value();
                if n != ns || s != name || keys.len() > limit {
                    break;
                }
                keys.push(key.to_owned());
            }
            let more = keys.len() > limit;
            keys.truncate(limit);
            Ok((keys, more))
        };
        Box::pin(std::future::ready(read()))
    }

    fn drop_namespace<'a>(&'a self, namespace: &'a str) -> KvFuture<'a, ()> {
        let namespace = namespace.to_owned();
        self.write(move |tx| {
            let mut entries = tx.open_table(ENTRIES).map_err(unavailable)?;
            entries
                .retain_in((namespace.as_str(), "", "").., |(n, _, _), _| {
                    n != namespace
                })
                .map_err(unavailable)?;
            let mut usage = tx.open_table(USAGE).map_err(unavailable)?;
            usage
                .retain_in((namespace.as_str(), "").., |(n, _), _| n != namespace)
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn usage(&self) -> KvFuture<'_, Vec<Usage>> {
        let read = || -> Result<Vec<Usage>, KvError> {
            let tx = self.db.begin_read().map_err(unavailable)?;
            let table = tx.open_table(USAGE).map_err(unavailable)?;
            let mut all = Vec::new();
            for row in table.iter().map_err(unavailable)? {
                let (k, v) = row.map_err(unavailable)?;
                let ((namespace, name), (keys, bytes)) = (k.value(), v.value());
                all.push(Usage {
                    store: StoreId::new(namespace, name),
                    keys,
                    bytes,
                });
            }
            Ok(all)
        };
        Box::pin(std::future::ready(read()))
    }

    fn increment<'a>(
        &'a self,
        store: &'a StoreId,
        key: &'a str,
        delta: i64,
        quota: Quota,
    ) -> KvFuture<'a, i64> {
        let (store, key) = (store.clone(), key.to_owned());
        self.write(move |tx| {
            let now = {
                let entries = tx.open_table(ENTRIES).map_err(unavailable)?;
                let current = entries
                    .get((store.namespace.as_str(), store.name.as_str(), key.as_str()))
                    .map_err(unavailable)?;
                match current {
                    Some(v) => parse_integer(v.value().1)?,
                    None => 0,
                }
            };
            let sum = add(now, delta)?;
            put(
                tx,
                &store,
                &key,
                sum.to_string().as_bytes(),
                Expect::Any,
                quota,
            )?;
            Ok(sum)
        })
    }
}
