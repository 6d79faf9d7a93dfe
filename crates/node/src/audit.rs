//! The audit log: who changed what, and when, durably.
//!
//! Every deploy, removal, rollback, emergency declaration and end, and token change is appended
//! to the table `audit` of the registry database in its own durable transaction before the API
//! acknowledges the change, so an acknowledged change is never missing from the log, even after
//! `kill -9`. Entries are never changed or removed by the node.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::NodeError;

const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// One change, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 1, 2, …: the order of the changes on this node.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The name of the token that made the change (`anonymous` without auth).
    pub actor: String,
    /// What was done: `deploy`, `remove`, `rollback`, `emergency.declare`, `emergency.end`,
    /// `token.create`, `token.revoke`.
    pub action: String,
    /// What it was done to: a function, a token, or `cluster`.
    pub target: String,
    /// The id the node gave the request (its `x-request-id` answer header and log lines).
    pub request_id: String,
    /// The `x-request-id` the client sent, if any, kept as the client's: never taken for the
    /// node's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<String>,
    /// The particulars: version, digest, role, plan.
    pub detail: serde_json::Value,
}

/// What a caller records; the log adds the sequence number and the time.
pub struct Change<'a> {
    /// See [`AuditEntry::actor`].
    pub actor: &'a str,
    /// See [`AuditEntry::action`].
    pub action: &'a str,
    /// See [`AuditEntry::target`].
    pub target: &'a str,
    /// See [`AuditEntry::request_id`].
    pub request_id: &'a str,
    /// See [`AuditEntry::client_request_id`].
    pub client_request_id: Option<&'a str>,
    /// See [`AuditEntry::detail`].
    pub detail: serde_json::Value,
}

fn storage(e: impl std::fmt::Display) -> NodeError {
    NodeError::Storage(format!("audit log: {e}"))
}

/// The audit log of one node.
pub struct AuditLog {
    db: Arc<Database>,
}

impl AuditLog {
    /// Opens (creating) the table in `db`.
    pub fn open(db: Arc<Database>) -> Result<Self, NodeError> {
        let tx = db.begin_write().map_err(storage)?;
        tx.open_table(AUDIT).map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok(Self { db })
    }

    /// Appends `change` durably and returns the entry as stored.
    pub fn record(&self, change: Change<'_>) -> Result<AuditEntry, NodeError> {
        let tx = self.db.begin_write().map_err(storage)?;
        let entry = {
            let mut table = tx.open_table(AUDIT).map_err(storage)?;
            let last = table.last().map_err(storage)?.map_or(0, |(k, _)| k.value());
            let entry = AuditEntry {
                seq: last + 1,
                at_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                actor: change.actor.to_owned(),
                action: change.action.to_owned(),
                target: change.target.to_owned(),
                request_id: change.request_id.to_owned(),
                client_request_id: change.client_request_id.map(str::to_owned),
                detail: change.detail,
            };
            let bytes = serde_json::to_vec(&entry).map_err(storage)?;
            table.insert(entry.seq, bytes.as_slice()).map_err(storage)?;
            entry
        };
        tx.commit().map_err(storage)?;
        Ok(entry)
    }

    /// The newest `limit` entries, oldest first.
    pub fn recent(&self, limit: usize) -> Result<Vec<AuditEntry>, NodeError> {
        let tx = self.db.begin_read().map_err(storage)?;
        let table = tx.open_table(AUDIT).map_err(storage)?;
        let mut entries = Vec::new();
        for item in table.iter().map_err(storage)?.rev().take(limit) {
            let (_, value) = item.map_err(storage)?;
            entries.push(serde_json::from_slice(value.value()).map_err(storage)?);
        }
        entries.reverse();
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_numbered_kept_and_listed_newest_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        {
            let log = AuditLog::open(Arc::new(Database::create(&path).unwrap())).unwrap();
            for target in ["a", "b", "c"] {
                log.record(Change {
                    actor: "ci",
                    action: "deploy",
                    target,
                    request_id: "r",
                    client_request_id: None,
                    detail: serde_json::json!({"version": 1}),
                })
                .unwrap();
            }
        }
        let log = AuditLog::open(Arc::new(Database::create(&path).unwrap())).unwrap();
        let recent = log.recent(2).unwrap();
        assert_eq!(
            recent
                .iter()
                .map(|e| (e.seq, e.target.as_str()))
                .collect::<Vec<_>>(),
            [(2, "b"), (3, "c")]
        );
        assert_eq!(log.recent(10).unwrap().len(), 3);
    }
}
