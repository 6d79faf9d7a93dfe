//! The registry of functions and their versions, in an embedded database (redb).
//!
//! One table maps a function's name to its record (JSON): every version ever deployed, and which
//! one is active. Each change is one write transaction, committed durably before the API
//! acknowledges it.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;

const FUNCTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("functions");
/// This node's own pre-initializations: the digest of a deployed component → the digest of the
/// form this node derived from it. Never replicated: it is what a node that requires signatures
/// trusts instead of a record's `preinit` (see `Node::serving`).
const DERIVED: TableDefinition<&str, &str> = TableDefinition::new("derived");

/// A version to add: what the node learned by compiling the component, and who sent it.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// SHA-256 of the component, hex.
    pub digest: String,
    /// `run` or `http`.
    pub kind: String,
    /// Its policy and limits.
    pub manifest: Manifest,
    /// Its detached signature, hex, if it came with one.
    pub signature: Option<String>,
    /// The trusted key the signature verified with, on a node that checks signatures.
    pub signed_by: Option<String>,
    /// The name of the token that deployed it.
    pub deployed_by: Option<String>,
    /// SHA-256 of the pre-initialized component, when the function has an initialization step.
    pub preinit: Option<String>,
    /// Where the component came from, when it was pulled: `oci://HOST/REPO@sha256:…`.
    pub source: Option<String>,
}

/// A failure of the registry's storage.
#[derive(Debug, thiserror::Error)]
#[error("registry: {0}")]
pub struct RegistryError(String);

fn storage<E: std::fmt::Display>(e: E) -> RegistryError {
    RegistryError(e.to_string())
}

/// A deployed function and all its versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionRecord {
    /// The function's name.
    pub name: String,
    /// The version that serves invocations.
    pub active: u32,
    /// Every version, oldest first.
    pub versions: Vec<Version>,
}

impl FunctionRecord {
    /// A function with no version yet.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            active: 0,
            versions: Vec::new(),
        }
    }

    /// Adds the next version and makes it active; returns it.
    pub fn push_version(&mut self, new: NewVersion) -> Version {
        let version = Version {
            version: self.versions.last().map_or(1, |v| v.version + 1),
            digest: new.digest,
            kind: new.kind,
            manifest: new.manifest,
            signature: new.signature,
            signed_by: new.signed_by,
            deployed_by: new.deployed_by,
            preinit: new.preinit,
            source: new.source,
            deployed_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        self.active = version.version;
        self.versions.push(version.clone());
        version
    }

    /// The version that serves invocations.
    pub fn active_version(&self) -> &Version {
        self.versions
            .iter()
            .find(|v| v.version == self.active)
            .expect("the active version is kept")
    }
}

/// One deployed version of a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// 1, 2, …: the order of deployment.
    pub version: u32,
    /// SHA-256 of the component.
    pub digest: String,
    /// `run` or `http`.
    pub kind: String,
    /// The policy and limits.
    pub manifest: Manifest,
    /// The detached Ed25519 signature of the component, hex, if it came with one; see
    /// [`crate::signing`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The trusted key that the deploying node verified the signature with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// The name of the token that deployed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_by: Option<String>,
    /// Seconds since the Unix epoch.
    pub deployed_at: u64,
    /// SHA-256 of the pre-initialized component that serves invocations, when the function has
    /// an initialization step (see [`limes_runtime::has_init`]); `digest` stays the component as
    /// deployed (and signed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preinit: Option<String>,
    /// Where the component came from when the node pulled it from an OCI registry, pinned to
    /// the manifest's digest: `oci://HOST/REPO@sha256:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The function registry.
pub struct Registry {
    db: Arc<Database>,
}

impl Registry {
    /// Opens (or creates) the registry database at `path`.
    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        let db = Database::create(path).map_err(storage)?;
        let tx = db.begin_write().map_err(storage)?;
        tx.open_table(FUNCTIONS).map_err(storage)?;
        tx.open_table(DERIVED).map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// The database, which also holds the tokens and the audit log.
    pub(crate) fn database(&self) -> Arc<Database> {
        self.db.clone()
    }

    /// How many functions there are.
    pub fn count(&self) -> Result<u64, RegistryError> {
        use redb::ReadableTableMetadata as _;
        let tx = self.db.begin_read().map_err(storage)?;
        let table = tx.open_table(FUNCTIONS).map_err(storage)?;
        table.len().map_err(storage)
    }

    /// Every function, by name.
    pub fn list(&self) -> Result<Vec<FunctionRecord>, RegistryError> {
        let tx = self.db.begin_read().map_err(storage)?;
        let table = tx.open_table(FUNCTIONS).map_err(storage)?;
        let mut all = Vec::new();
        for entry in table.iter().map_err(storage)? {
            let (_, value) = entry.map_err(storage)?;
            all.push(serde_json::from_slice(value.value()).map_err(storage)?);
        }
        Ok(all)
    }

    /// The function called `name`.
    pub fn get(&self, name: &str) -> Result<Option<FunctionRecord>, RegistryError> {
        let tx = self.db.begin_read().map_err(storage)?;
        let table = tx.open_table(FUNCTIONS).map_err(storage)?;
        let value = table.get(name).map_err(storage)?;
        value
            .map(|v| serde_json::from_slice(v.value()).map_err(storage))
            .transpose()
    }

    /// Adds a version to `name` (creating the function) and makes it active.
    pub fn add_version(&self, name: &str, new: NewVersion) -> Result<Version, RegistryError> {
        self.update(name, |record| {
            let mut record = record.unwrap_or_else(|| FunctionRecord::new(name));
            let version = record.push_version(new);
            (Some(record), version)
        })
    }

    /// Makes `version` the active version of `name`. `Ok(None)` when there is no such function
    /// or version.
    pub fn set_active(
        &self,
        name: &str,
        version: u32,
    ) -> Result<Option<FunctionRecord>, RegistryError> {
        self.update(name, |record| match record {
            Some(mut r) if r.versions.iter().any(|v| v.version == version) => {
                r.active = version;
                (Some(r.clone()), Some(r))
            }
            other => (other, None),
        })
    }

    /// Stores `record` as it is, replacing what was there: the cluster's copy is authoritative.
    pub fn put(&self, record: &FunctionRecord) -> Result<(), RegistryError> {
        self.update(&record.name, |_| (Some(record.clone()), ()))
    }

    /// Removes `name` and all its versions. Returns whether it existed.
    pub fn remove(&self, name: &str) -> Result<bool, RegistryError> {
        let tx = self.db.begin_write().map_err(storage)?;
        let existed = {
            let mut table = tx.open_table(FUNCTIONS).map_err(storage)?;
            table.remove(name).map_err(storage)?.is_some()
        };
        tx.commit().map_err(storage)?;
        Ok(existed)
    }

    /// The digest of the form this node derived from the component with digest `original`.
    pub fn derived(&self, original: &str) -> Result<Option<String>, RegistryError> {
        let tx = self.db.begin_read().map_err(storage)?;
        let table = tx.open_table(DERIVED).map_err(storage)?;
        Ok(table
            .get(original)
            .map_err(storage)?
            .map(|v| v.value().to_owned()))
    }

    /// Notes, durably, that this node derived `derived` from `original`.
    pub fn set_derived(&self, original: &str, derived: &str) -> Result<(), RegistryError> {
        let tx = self.db.begin_write().map_err(storage)?;
        tx.open_table(DERIVED)
            .map_err(storage)?
            .insert(original, derived)
            .map_err(storage)?;
        tx.commit().map_err(storage)
    }

    /// Reads, changes and writes one record in a single durable transaction.
    fn update<T>(
        &self,
        name: &str,
        change: impl FnOnce(Option<FunctionRecord>) -> (Option<FunctionRecord>, T),
    ) -> Result<T, RegistryError> {
        let tx = self.db.begin_write().map_err(storage)?;
        let out = {
            let mut table = tx.open_table(FUNCTIONS).map_err(storage)?;
            let current = match table.get(name).map_err(storage)? {
                Some(v) => Some(serde_json::from_slice(v.value()).map_err(storage)?),
                None => None,
            };
            let (next, out) = change(current);
            if let Some(next) = next {
                let bytes = serde_json::to_vec(&next).map_err(storage)?;
                table.insert(name, bytes.as_slice()).map_err(storage)?;
            }
            out
        };
        tx.commit().map_err(storage)?;
        Ok(out)
    }
}

impl From<RegistryError> for crate::error::NodeError {
    fn from(e: RegistryError) -> Self {
        crate::error::NodeError::Storage(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(digest: &str) -> NewVersion {
        NewVersion {
            digest: digest.into(),
            kind: "run".into(),
            manifest: Manifest::default(),
            signature: None,
            signed_by: None,
            deployed_by: None,
            preinit: None,
            source: None,
        }
    }

    #[test]
    fn versions_accumulate_survive_reopen_and_roll_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.redb");
        {
            let registry = Registry::open(&path).unwrap();
            assert_eq!(registry.add_version("f", new("aa")).unwrap().version, 1);
            assert_eq!(registry.add_version("f", new("bb")).unwrap().version, 2);
        }
        let registry = Registry::open(&path).unwrap();
        let record = registry.get("f").unwrap().unwrap();
        assert_eq!((record.active, record.versions.len()), (2, 2));
        assert_eq!(
            registry
                .set_active("f", 1)
                .unwrap()
                .unwrap()
                .active_version()
                .digest,
            "aa"
        );
        assert!(registry.set_active("f", 9).unwrap().is_none());
        assert!(registry.remove("f").unwrap());
        assert!(registry.get("f").unwrap().is_none());
        assert!(registry.list().unwrap().is_empty());
    }
}
