//! Compile once per (artifact, engine): an on-disk AOT cache of compiled components.
//!
//! Layout: `DIR/<engine fingerprint>/<sha256 of the artifact>.cwasm`. An entry is written to a
//! temporary file, synced, and renamed into place, so a crash or a second process never sees a
//! partial entry. Entries are loaded with `Component::deserialize_file`, which maps the file
//! instead of compiling: a restart, or another process on the same directory, never compiles an
//! artifact that is already there.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;

use crate::engine::Kernel;
use crate::{Error, error::chain};

/// The SHA-256 of an artifact's bytes: its identity in the cache and the registry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| format!("{s:?} is not a sha256 hex digest"))?;
        Ok(Self(out))
    }
}

/// Counters of the cache since the runtime started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Loads served from compiled code already in memory.
    pub memory_hits: u64,
    /// Loads served by deserializing an entry from disk.
    pub disk_hits: u64,
    /// Loads that had to compile.
    pub compiles: u64,
    /// Time spent compiling, in total.
    pub compile_time: Duration,
    /// Disk entries that could not be loaded (corrupt, or from another Wasmtime) and were
    /// replaced by a fresh compile.
    pub rejected_entries: u64,
}

/// Compiled components kept in memory at most; beyond it the oldest are dropped (they stay on
/// disk). Functions in use hold their own reference, so this only bounds the memo.
const MEMO_CAPACITY: usize = 128;

type Key = (String, Digest);

pub(crate) struct AotCache {
    dir: Option<PathBuf>,
    memo: Mutex<Memo>,
    /// Held while compiling, so that two loads of one new artifact compile it once.
    compiling: Mutex<()>,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    compiles: AtomicU64,
    compile_nanos: AtomicU64,
    rejected: AtomicU64,
}

#[derive(Default)]
struct Memo {
    map: HashMap<Key, Component>,
    order: VecDeque<Key>,
}

impl Memo {
    fn insert(&mut self, key: Key, component: Component) {
        if self.map.insert(key.clone(), component).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > MEMO_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

impl AotCache {
    pub fn new(dir: Option<PathBuf>) -> Result<Self, Error> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating the cache dir {}", dir.display()), e))?;
        }
        Ok(Self {
            dir,
            memo: Mutex::default(),
            compiling: Mutex::default(),
            memory_hits: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            compiles: AtomicU64::new(0),
            compile_nanos: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            memory_hits: self.memory_hits.load(Relaxed),
            disk_hits: self.disk_hits.load(Relaxed),
            compiles: self.compiles.load(Relaxed),
            compile_time: Duration::from_nanos(self.compile_nanos.load(Relaxed)),
            rejected_entries: self.rejected.load(Relaxed),
        }
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, Memo> {
        self.memo.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The compiled form of `wasm` (whose digest is `digest`) for `kernel`'s engine.
    pub fn get_or_compile(
        &self,
        kernel: &Kernel,
        digest: Digest,
        wasm: &[u8],
    ) -> Result<Component, Error> {
        let key = (kernel.fingerprint.clone(), digest);
        if let Some(hit) = self.memo().map.get(&key).cloned() {
            self.memory_hits.fetch_add(1, Relaxed);
            return Ok(hit);
        }
        let _compiling = self.compiling.lock().unwrap_or_else(|p| p.into_inner());
        // Another load may have finished this artifact while we waited.
        if let Some(hit) = self.memo().map.get(&key).cloned() {
            self.memory_hits.fetch_add(1, Relaxed);
            return Ok(hit);
        }
        let path = self
            .dir
            .as_ref()
            .map(|d| d.join(&key.0).join(format!("{digest}.cwasm")));
        if let Some(path) = path.as_deref().filter(|p| p.exists()) {
            // SAFETY: the cache dir is Limes's own: entries are written only by `store` below,
            // from Wasmtime's own serialization, and renamed into place complete. Wasmtime
            // still checks the header (version, target, flags) and rejects a mismatch.
            match unsafe { Component::deserialize_file(&kernel.engine, path) } {
                Ok(component) => {
                    self.disk_hits.fetch_add(1, Relaxed);
                    self.memo().insert(key, component.clone());
                    return Ok(component);
                }
                Err(e) => {
                    self.rejected.fetch_add(1, Relaxed);
                    tracing::warn!(path = %path.display(), error = %chain(&e), "rejected a cache entry; recompiling");
                }
            }
        }
        let started = Instant::now();
        let component = Component::new(&kernel.engine, wasm)
            .map_err(|e| Error::InvalidComponent { message: chain(&e) })?;
        self.compile_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
        self.compiles.fetch_add(1, Relaxed);
        if let Some(path) = path {
            // A cache that cannot be written costs a later compile, not this load.
            if let Err(e) = store(&component, &path) {
                tracing::warn!(path = %path.display(), error = %e, "could not write the AOT cache");
            }
        }
        self.memo().insert(key, component.clone());
        Ok(component)
    }
}

/// Writes `component` to `path` atomically: temporary file, fsync, rename.
fn store(component: &Component, path: &Path) -> Result<(), Error> {
    let bytes = component
        .serialize()
        .map_err(|e| Error::InvalidComponent { message: chain(&e) })?;
    let dir = path
        .parent()
        .expect("cache entries live in a fingerprint dir");
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| Error::io(format!("creating a temporary file in {}", dir.display()), e))?;
    tmp.write_all(&bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io(format!("writing {}", tmp.path().display()), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io(format!("renaming into {}", path.display()), e.error))?;
    Ok(())
}
