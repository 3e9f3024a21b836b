//! Conversations and what they cost: one `Session` per (channel, chat),
//! and token and cost totals per UTC day.
//!
//! Invariant: a turn's session and its usage are saved in one transaction,
//! so the daily budget never misses a turn that was kept, or counts one
//! that was lost.

use crate::store::{Store, StoreError};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const USAGE: TableDefinition<&str, &[u8]> = TableDefinition::new("usage");

pub(crate) fn create_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(SESSIONS)?;
    txn.open_table(USAGE)?;
    Ok(())
}

/// Token and cost totals, per session and per UTC day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// US dollars.
    pub cost: f64,
    /// Model calls.
    pub calls: u64,
}

impl Totals {
    /// Input and output tokens.
    pub fn tokens(&self) -> u64 {
        self.input + self.output
    }

    /// Add `other` to these.
    pub fn add(&mut self, other: &Totals) {
        self.input += other.input;
        self.output += other.output;
        self.cost += other.cost;
        self.calls += other.calls;
    }
}

/// A conversation of one (channel, chat).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Session {
    /// The turns kept verbatim.
    pub messages: Vec<crate::llm::Message>,
    /// The model's summary of turns compacted away.
    pub summary: Option<String>,
    /// Untrusted content has been in this conversation (a skill's output
    /// or memory, a knowledge file). Kept here, not only read off the
    /// messages, so a summary that compacts them away does not clear it.
    #[serde(default)]
    pub untrusted: bool,
    /// What it has cost.
    pub usage: Totals,
}

/// Today's date in UTC, the key of the usage table.
pub fn today() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%d").to_string()
}

impl Store {
    /// The session `key`, empty if there is none.
    pub fn session(&self, key: &str) -> Result<Session, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SESSIONS)?;
        Ok(match table.get(key)? {
            Some(v) => serde_json::from_slice(v.value())?,
            None => Session::default(),
        })
    }

    /// Save a session and add this turn's usage to today's totals, atomically.
    pub fn save_session(&self, key: &str, session: &Session, spent: &Totals) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            txn.open_table(SESSIONS)?.insert(key, serde_json::to_vec(session)?.as_slice())?;
            let mut usage = txn.open_table(USAGE)?;
            let day = today();
            let mut totals: Totals = match usage.get(day.as_str())? {
                Some(v) => serde_json::from_slice(v.value())?,
                None => Totals::default(),
            };
            totals.add(spent);
            usage.insert(day.as_str(), serde_json::to_vec(&totals)?.as_slice())?;
        }
        self.commit(txn)?;
        Ok(())
    }

    /// Usage per day, newest first.
    pub fn usage(&self, days: usize) -> Result<Vec<(String, Totals)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(USAGE)?;
        let mut out = Vec::new();
        for entry in table.iter()?.rev().take(days) {
            let (k, v) = entry?;
            out.push((k.value().to_string(), serde_json::from_slice(v.value())?));
        }
        Ok(out)
    }

    /// Today's totals (UTC).
    pub fn usage_today(&self) -> Result<Totals, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(USAGE)?;
        Ok(match table.get(today().as_str())? {
            Some(v) => serde_json::from_slice(v.value())?,
            None => Totals::default(),
        })
    }
}
