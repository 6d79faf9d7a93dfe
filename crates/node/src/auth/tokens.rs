//! API tokens: made once, shown once, stored only as a hash.
//!
//! A token reads `limes_<id>_<secret>`: the id (8 random bytes, hex) finds the record without
//! a search, the secret (32 random bytes, hex) proves possession. Only SHA-256 of the secret is
//! stored. A fast hash is enough here, unlike for passwords: the secret has 256 bits of entropy,
//! so there is nothing to brute-force. The stored and presented hashes are compared in constant
//! time.
//!
//! Records live in the registry database (table `tokens`, by name) and in memory (by id), so
//! checking a token costs no I/O. A revoked token keeps its record, marked revoked: in a cluster
//! that tombstone is what stops a node that was away from bringing the token back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Role;
use crate::error::NodeError;

const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// When each token was last used, seconds since the epoch; kept apart from the records because
/// it changes often and is this node's own observation, never shared.
const LAST_USED: TableDefinition<&str, u64> = TableDefinition::new("token_last_used");

/// How stale the stored "last used" may get: it is written at most this often per token, so
/// that a stream of requests does not become a stream of disk syncs.
const LAST_USED_RESOLUTION_SECS: u64 = 60;

/// What is stored of a token. Never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Unique name, for `limes token ls` and `revoke`, and for the audit log.
    pub name: String,
    /// The public part of the token, which finds this record.
    pub id: String,
    /// What the token may do.
    pub role: Role,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// Seconds since the epoch.
    pub created_at: u64,
    /// The token that made this one (its name), or `bootstrap` for a node's first admin token.
    pub created_by: String,
    /// After this (seconds since the epoch) the token no longer works.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// When it was revoked; a revoked token never works again.
    #[serde(default)]
    pub revoked_at: Option<u64>,
    /// The token that revoked it (its name), so that every node that applies the revocation
    /// can record who made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
}

impl TokenRecord {
    /// Whether the token works at `now`.
    pub fn is_active(&self, now: u64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }

    /// `active`, `expired` or `revoked`.
    pub fn status(&self, now: u64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.is_active(now) {
            "active"
        } else {
            "expired"
        }
    }
}

/// A token made just now: the secret, shown to its maker once, and its record.
pub struct NewToken {
    /// The whole token, `limes_<id>_<secret>`.
    pub token: String,
    /// What is stored.
    pub record: TokenRecord,
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random_hex(bytes: usize) -> Result<String, NodeError> {
    let mut buf = vec![0u8; bytes];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf)
        .map_err(|_| NodeError::Storage("the system has no randomness for a token".into()))?;
    Ok(hex::encode(buf))
}

fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Makes a token for `role` named `name`, made by `created_by`, valid for `ttl_secs` if given.
pub fn mint(
    name: &str,
    role: Role,
    created_by: &str,
    ttl_secs: Option<u64>,
) -> Result<NewToken, NodeError> {
    let (id, secret) = (random_hex(8)?, random_hex(32)?);
    let now = now_secs();
    Ok(NewToken {
        token: format!("limes_{id}_{secret}"),
        record: TokenRecord {
            name: name.to_owned(),
            id,
            role,
            hash: hex::encode(hash_secret(&secret)),
            created_at: now,
            created_by: created_by.to_owned(),
            expires_at: ttl_secs.map(|t| now.saturating_add(t)),
            revoked_at: None,
            revoked_by: None,
        },
    })
}

fn storage(e: impl std::fmt::Display) -> NodeError {
    NodeError::Storage(format!("tokens: {e}"))
}

/// Every token this node knows: its own and, in a cluster, everyone's.
pub struct TokenStore {
    db: Arc<Database>,
    by_id: RwLock<HashMap<String, TokenRecord>>,
    /// Last use seen by this node, and last use written to disk, by name.
    last_used: Mutex<HashMap<String, (u64, u64)>>,
    /// Uses for [`write_last_uses`] to write.
    notes: std::sync::mpsc::Sender<(String, u64)>,
    /// Joined on drop, so the database is closed once the store is: a node that stops can be
    /// opened again at once.
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TokenStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has written what is queued.
        let (closed, _) = std::sync::mpsc::channel();
        drop(std::mem::replace(&mut self.notes, closed));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Writes "last used" off the request path: a lost one costs nothing, a slow disk must not
/// slow a call.
fn write_last_uses(db: Arc<Database>, notes: std::sync::mpsc::Receiver<(String, u64)>) {
    for (name, at) in notes {
        let write = || -> Result<(), NodeError> {
            let tx = db.begin_write().map_err(storage)?;
            tx.open_table(LAST_USED)
                .map_err(storage)?
                .insert(name.as_str(), at)
                .map_err(storage)?;
            tx.commit().map_err(storage)
        };
        if let Err(e) = write() {
            tracing::debug!(error = %e, "could not note a token's last use");
        }
    }
}

impl TokenStore {
    /// Opens the tables in `db` and loads every token into memory.
    pub fn open(db: Arc<Database>) -> Result<Self, NodeError> {
        let tx = db.begin_write().map_err(storage)?;
        tx.open_table(TOKENS).map_err(storage)?;
        tx.open_table(LAST_USED).map_err(storage)?;
        tx.commit().map_err(storage)?;
        let (notes, queued) = std::sync::mpsc::channel();
        let writer = {
            let db = db.clone();
            std::thread::Builder::new()
                .name("limes-token-uses".into())
                .spawn(move || write_last_uses(db, queued))
                .map_err(storage)?
        };
        let store = Self {
            db,
            by_id: RwLock::default(),
            last_used: Mutex::default(),
            notes,
            writer: Some(writer),
        };
        let mut by_id = HashMap::new();
        let mut last_used = HashMap::new();
        {
            let tx = store.db.begin_read().map_err(storage)?;
            let table = tx.open_table(TOKENS).map_err(storage)?;
            for entry in table.iter().map_err(storage)? {
                let (_, value) = entry.map_err(storage)?;
                let record: TokenRecord = serde_json::from_slice(value.value()).map_err(storage)?;
                by_id.insert(record.id.clone(), record);
            }
            let table = tx.open_table(LAST_USED).map_err(storage)?;
            for entry in table.iter().map_err(storage)? {
                let (name, at) = entry.map_err(storage)?;
                last_used.insert(name.value().to_owned(), (at.value(), at.value()));
            }
        }
        *store.by_id.write().unwrap_or_else(|p| p.into_inner()) = by_id;
        *store.last_used.lock().unwrap_or_else(|p| p.into_inner()) = last_used;
        Ok(store)
    }

    /// Whether no token was ever made here (nor arrived from a cluster).
    pub fn is_empty(&self) -> bool {
        self.by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// The record named `name`.
    pub fn get(&self, name: &str) -> Option<TokenRecord> {
        let by_id = self.by_id.read().unwrap_or_else(|p| p.into_inner());
        by_id.values().find(|r| r.name == name).cloned()
    }

    /// Every record, by name, with when this node last saw it used.
    pub fn list(&self) -> Vec<(TokenRecord, Option<u64>)> {
        let by_id = self.by_id.read().unwrap_or_else(|p| p.into_inner());
        let used = self.last_used.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = by_id
            .values()
            .map(|r| (r.clone(), used.get(&r.name).map(|(seen, _)| *seen)))
            .collect();
        all.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        all
    }

    /// Stores `record` durably, replacing the one of the same name, except that a revocation
    /// is never undone: a record arriving unrevoked for a revoked token is ignored.
    pub fn put(&self, record: &TokenRecord) -> Result<(), NodeError> {
        if self
            .get(&record.name)
            .is_some_and(|old| old.revoked_at.is_some() && record.revoked_at.is_none())
        {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(storage)?;
        {
            let mut table = tx.open_table(TOKENS).map_err(storage)?;
            let bytes = serde_json::to_vec(record).map_err(storage)?;
            table
                .insert(record.name.as_str(), bytes.as_slice())
                .map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        let mut by_id = self.by_id.write().unwrap_or_else(|p| p.into_inner());
        by_id.retain(|_, r| r.name != record.name);
        by_id.insert(record.id.clone(), record.clone());
        Ok(())
    }

    /// The record of `token` if the token is genuine and works now; the reason otherwise.
    /// Notes the use.
    pub fn verify(&self, token: &str) -> Result<TokenRecord, String> {
        let malformed = || "the token is not a Limes token (limes_<id>_<secret>)".to_owned();
        let rest = token.strip_prefix("limes_").ok_or_else(malformed)?;
        let (id, secret) = rest.split_once('_').ok_or_else(malformed)?;
        let record = {
            let by_id = self.by_id.read().unwrap_or_else(|p| p.into_inner());
            by_id.get(id).cloned()
        };
        // Hash even when the id is unknown, so that both failures take the same time.
        let presented = hash_secret(secret);
        let stored = record
            .as_ref()
            .and_then(|r| hex::decode(&r.hash).ok())
            .unwrap_or_else(|| vec![0; 32]);
        let genuine: bool = presented.ct_eq(stored.as_slice()).into();
        let record = match record {
            Some(r) if genuine => r,
            _ => return Err("unknown token".into()),
        };
        let now = now_secs();
        match record.status(now) {
            "revoked" => return Err(format!("token {:?} was revoked", record.name)),
            "expired" => return Err(format!("token {:?} has expired", record.name)),
            _ => {}
        }
        self.used(&record.name, now);
        Ok(record)
    }

    /// Notes a use at `now`; writes it to disk when the stored one is stale.
    fn used(&self, name: &str, now: u64) {
        let stale = {
            let mut used = self.last_used.lock().unwrap_or_else(|p| p.into_inner());
            // No allocation on the hot path once the token has been seen.
            if !used.contains_key(name) {
                used.insert(name.to_owned(), (now, 0));
            }
            let Some(entry) = used.get_mut(name) else {
                return;
            };
            entry.0 = now;
            let stale = now.saturating_sub(entry.1) >= LAST_USED_RESOLUTION_SECS;
            if stale {
                entry.1 = now;
            }
            stale
        };
        if stale {
            let _ = self.notes.send((name.to_owned(), now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, TokenStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("db.redb")).unwrap());
        (dir, TokenStore::open(db).unwrap())
    }

    #[test]
    fn a_minted_token_verifies_and_a_changed_one_does_not() {
        let (_dir, store) = store();
        let new = mint("ci", Role::Deploy, "admin", None).unwrap();
        assert!(
            !new.record.hash.contains(&new.token[23..]),
            "the secret is not stored"
        );
        store.put(&new.record).unwrap();
        assert_eq!(store.verify(&new.token).unwrap().role, Role::Deploy);
        let mut tampered = new.token.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == '0' { '1' } else { '0' });
        assert_eq!(store.verify(&tampered).unwrap_err(), "unknown token");
        assert!(store.verify("Bearer nonsense").is_err());
        assert!(store.verify("limes_0011_22").is_err());
    }

    #[test]
    fn revoked_and_expired_tokens_fail_and_revocation_sticks() {
        let (_dir, store) = store();
        let new = mint("old", Role::Invoke, "admin", Some(0)).unwrap();
        store.put(&new.record).unwrap();
        assert!(store.verify(&new.token).unwrap_err().contains("expired"));

        let live = mint("live", Role::Invoke, "admin", Some(3600)).unwrap();
        store.put(&live.record).unwrap();
        assert!(store.verify(&live.token).is_ok());
        let mut revoked = live.record.clone();
        revoked.revoked_at = Some(now_secs());
        store.put(&revoked).unwrap();
        assert!(store.verify(&live.token).unwrap_err().contains("revoked"));
        // A stale copy from elsewhere does not bring it back.
        store.put(&live.record).unwrap();
        assert!(store.verify(&live.token).is_err());
    }

    #[test]
    fn tokens_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let new = mint("keep", Role::Admin, "bootstrap", None).unwrap();
        {
            let store = TokenStore::open(Arc::new(Database::create(&path).unwrap())).unwrap();
            store.put(&new.record).unwrap();
        }
        let store = TokenStore::open(Arc::new(Database::create(&path).unwrap())).unwrap();
        assert_eq!(store.verify(&new.token).unwrap().name, "keep");
    }
}
