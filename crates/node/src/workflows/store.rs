//! Workflows and run records on one node, in the registry database. In a cluster the node keeps
//! its copy of every workflow here too (learned from the cluster), while run records live in
//! the cluster, where any node can read them.

use std::collections::BTreeMap;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{StepRun, Workflow};
use crate::error::NodeError;

const WORKFLOWS: TableDefinition<&str, &[u8]> = TableDefinition::new("workflows");
/// Step records by (workflow, run, step).
const RUN_STEPS: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("run_steps");

fn storage(e: impl std::fmt::Display) -> NodeError {
    NodeError::Storage(format!("workflows: {e}"))
}

/// The node's workflows and its run records.
pub struct WorkflowStore {
    db: Arc<Database>,
}

impl WorkflowStore {
    /// Opens (creating) the tables in `db`.
    pub fn open(db: Arc<Database>) -> Result<Self, NodeError> {
        let tx = db.begin_write().map_err(storage)?;
        tx.open_table(WORKFLOWS).map_err(storage)?;
        tx.open_table(RUN_STEPS).map_err(storage)?;
        tx.commit().map_err(storage)?;
        Ok(Self { db })
    }

    /// Stores `workflow` (`None`: removes `name`), durably.
    pub fn put(&self, name: &str, workflow: Option<&Workflow>) -> Result<(), NodeError> {
        let tx = self.db.begin_write().map_err(storage)?;
        {
            let mut table = tx.open_table(WORKFLOWS).map_err(storage)?;
            match workflow {
                Some(w) => {
                    let bytes = serde_json::to_vec(w).map_err(storage)?;
                    table.insert(name, bytes.as_slice()).map_err(storage)?;
                }
                None => {
                    table.remove(name).map_err(storage)?;
                }
            }
        }
        tx.commit().map_err(storage)
    }

    /// The workflow `name`.
    pub fn get(&self, name: &str) -> Result<Option<Workflow>, NodeError> {
        let tx = self.db.begin_read().map_err(storage)?;
        let table = tx.open_table(WORKFLOWS).map_err(storage)?;
        table
            .get(name)
            .map_err(storage)?
            .map(|b| serde_json::from_slice(b.value()).map_err(storage))
            .transpose()
    }

    /// Every workflow, by name.
    pub fn list(&self) -> Result<Vec<Workflow>, NodeError> {
        let tx = self.db.begin_read().map_err(storage)?;
        let table = tx.open_table(WORKFLOWS).map_err(storage)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(storage)? {
            let (_, bytes) = row.map_err(storage)?;
            out.push(serde_json::from_slice(bytes.value()).map_err(storage)?);
        }
        Ok(out)
    }

    /// Records step `step` of run `run` of `workflow` (when `first`, only if it has no record
    /// yet), durably when `durable` (alone, this is the run's record; in a cluster, the record
    /// is the cluster's and this a local note of the runs this node took part in, which a crash
    /// may lose).
    pub fn record(
        &self,
        workflow: &str,
        run: &str,
        step: &str,
        record: &StepRun,
        first: bool,
        durable: bool,
    ) -> Result<(), NodeError> {
        let mut tx = self.db.begin_write().map_err(storage)?;
        if !durable {
            tx.set_durability(redb::Durability::None).map_err(storage)?;
        }
        {
            let mut table = tx.open_table(RUN_STEPS).map_err(storage)?;
            let exists = first && table.get((workflow, run, step)).map_err(storage)?.is_some();
            if !exists {
                let bytes = serde_json::to_vec(record).map_err(storage)?;
                table
                    .insert((workflow, run, step), bytes.as_slice())
                    .map_err(storage)?;
            }
        }
        tx.commit().map_err(storage)
    }

    /// The records of run `run` of `workflow`, by step.
    pub fn run(&self, workflow: &str, run: &str) -> Result<BTreeMap<String, StepRun>, NodeError> {
        let tx = self.db.begin_read().map_err(storage)?;
        let table = tx.open_table(RUN_STEPS).map_err(storage)?;
        let mut out = BTreeMap::new();
        for row in table.range((workflow, run, "")..).map_err(storage)? {
            let (key, bytes) = row.map_err(storage)?;
            let (w, r, step) = key.value();
            if (w, r) != (workflow, run) {
                break;
            }
            out.insert(
                step.to_owned(),
                serde_json::from_slice(bytes.value()).map_err(storage)?,
            );
        }
        Ok(out)
    }

    /// The latest `limit` run ids of `workflow` recorded here (ids sort by when they began),
    /// newest first.
    pub fn runs(&self, workflow: &str, limit: usize) -> Result<Vec<String>, NodeError> {
        let tx = self.db.begin_read().map_err(storage)?;
        let table = tx.open_table(RUN_STEPS).map_err(storage)?;
        let mut ids: Vec<String> = Vec::new();
        for row in table.range((workflow, "", "")..).map_err(storage)? {
            let (key, _) = row.map_err(storage)?;
            let (w, r, _) = key.value();
            if w != workflow {
                break;
            }
            if ids.last().map(String::as_str) != Some(r) {
                ids.push(r.to_owned());
            }
        }
        ids.reverse();
        ids.truncate(limit);
        Ok(ids)
    }
}
