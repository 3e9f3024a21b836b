//! Request ids: a CLI request that changes state carries a random id the
//! database remembers for a day, so the CLI can retry a request whose
//! reply was lost (the daemon died or restarted) without applying it twice.
//!
//! Invariants:
//! - An id is recorded as pending *before* its request runs, in a commit
//!   without an fsync; the request's own durable commit makes the record
//!   durable with it. So after a crash an unknown id means the request's
//!   writes were not kept either and a retry runs it; a pending id means it
//!   may have been applied, and the CLI says so instead of guessing.
//! - A finished request's reply is kept (durably) and replayed to a retry.
//! - At most `KEEP` ids are kept; those older than a day go first.

use crate::store::{Store, StoreError, now_ms};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

const REQUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("requests");
const KEEP: u64 = 1000;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

pub(crate) fn create_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(REQUESTS)?;
    Ok(())
}

/// What the database knows of a request id.
#[derive(Debug, PartialEq)]
pub enum Seen {
    /// Never seen: it is now recorded as pending, and the request may run.
    New,
    /// Started but never finished: it may or may not have been applied.
    Pending,
    /// Finished with this reply (JSON).
    Done(String),
}

#[derive(Serialize, Deserialize)]
struct Record {
    at_ms: i64,
    reply: Option<String>,
}

impl Store {
    /// Look up request `id`, recording it as pending if it is new.
    pub fn request_begin(&self, id: &str) -> Result<Seen, StoreError> {
        let txn = self.write_deferred()?;
        let seen = {
            let mut table = txn.open_table(REQUESTS)?;
            let known: Option<Record> = table.get(id)?.map(|v| serde_json::from_slice(v.value())).transpose()?;
            match known {
                Some(Record { reply: Some(reply), .. }) => Seen::Done(reply),
                Some(Record { reply: None, .. }) => Seen::Pending,
                None => {
                    if table.len()? >= KEEP {
                        prune(&mut table)?;
                    }
                    let record = Record { at_ms: now_ms(), reply: None };
                    table.insert(id, serde_json::to_vec(&record)?.as_slice())?;
                    Seen::New
                }
            }
        };
        self.commit_deferred(txn)?;
        Ok(seen)
    }

    /// Keep the reply of request `id` for a retry, durably: the reply may
    /// be lost on its way the next moment.
    pub fn request_done(&self, id: &str, reply: String) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let record = Record { at_ms: now_ms(), reply: Some(reply) };
            txn.open_table(REQUESTS)?.insert(id, serde_json::to_vec(&record)?.as_slice())?;
        }
        self.commit(txn)
    }
}

/// Drop ids older than a day, or the oldest half if none are.
fn prune(table: &mut redb::Table<&'static str, &'static [u8]>) -> Result<(), StoreError> {
    let mut ages = Vec::new();
    for entry in table.iter()? {
        let (id, value) = entry?;
        let record: Record = serde_json::from_slice(value.value())?;
        ages.push((record.at_ms, id.value().to_string()));
    }
    ages.sort();
    let cutoff = now_ms() - DAY_MS;
    let old = ages.iter().filter(|(at, _)| *at < cutoff).count().max(ages.len() / 2);
    for (_, id) in &ages[..old] {
        table.remove(id.as_str())?;
    }
    Ok(())
}
