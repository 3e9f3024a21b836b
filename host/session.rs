//! Conversations and what they cost: one `Session` per (channel, chat),
//! token and cost totals per UTC day, and each paired person's tokens of
//! the day.
//!
//! Invariants:
//! - A turn's session and its usage (the day's and its person's) are saved
//!   in one transaction, so a daily budget never misses a turn that was
//!   kept, or counts one that was lost.
//! - Only today's tokens per person are kept: the first save of a day
//!   drops the days before, so the table holds at most one row per
//!   paired person.
//! - One channel (the part of the key before `:`) keeps at most
//!   [`SESSIONS_PER_CHANNEL`] sessions: a new one drops the least recently
//!   saved in the same transaction. A channel decides chat ids, so one that
//!   makes them up would otherwise fill the disk a conversation at a time.
//!   Long-term memory is apart and never dropped.

use crate::store::{Store, StoreError};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// When each session was last saved (Unix ms), read to pick the one to
/// drop without reading the sessions themselves.
const SAVED: TableDefinition<&str, i64> = TableDefinition::new("session_saved");
const USAGE: TableDefinition<&str, &[u8]> = TableDefinition::new("usage");
/// Tokens per (UTC day, person).
const PERSON_USAGE: TableDefinition<(&str, &str), u64> = TableDefinition::new("person_usage");

/// Sessions one channel keeps.
pub const SESSIONS_PER_CHANNEL: usize = 1000;

/// The conversations through `channel` (keys `CHANNEL:CHAT`) in `txn`,
/// dropped with `erase`; how many.
pub(crate) fn forget_channel_in(txn: &redb::WriteTransaction, channel: &str, erase: bool) -> Result<usize, StoreError> {
    let prefix = format!("{channel}:");
    let ours = |key: &str| key.starts_with(&prefix);
    if !erase {
        let sessions = txn.open_table(SESSIONS)?;
        let mut kept = 0;
        for entry in sessions.range(prefix.as_str()..)? {
            if !ours(entry?.0.value()) {
                break;
            }
            kept += 1;
        }
        return Ok(kept);
    }
    txn.open_table(SAVED)?.retain(|k, _| !ours(k))?;
    let mut sessions = txn.open_table(SESSIONS)?;
    let gone = sessions.extract_if(|k, _| ours(k))?.collect::<Result<Vec<_>, _>>()?;
    Ok(gone.len())
}

pub(crate) fn create_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let sessions = txn.open_table(SESSIONS)?;
    let mut saved = txn.open_table(SAVED)?;
    txn.open_table(USAGE)?;
    txn.open_table(PERSON_USAGE)?;
    // Sessions from before the bound get a time: the oldest possible.
    if saved.len()? < sessions.len()? {
        for entry in sessions.iter()? {
            let key = entry?.0.value().to_string();
            if saved.get(key.as_str())?.is_none() {
                saved.insert(key.as_str(), 0)?;
            }
        }
    }
    Ok(())
}

/// Make room for the new session `key`: past the bound, drop the least
/// recently saved of its channel. Only the small times are read.
fn make_room(txn: &redb::WriteTransaction, key: &str) -> Result<(), StoreError> {
    let mut saved = txn.open_table(SAVED)?;
    if saved.get(key)?.is_some() {
        return Ok(());
    }
    let Some((channel, _)) = key.split_once(':') else { return Ok(()) };
    // Keys of this channel sort together: "name:" up to "name;".
    let (from, to) = (format!("{channel}:"), format!("{channel};"));
    let mut oldest: Option<(i64, String)> = None;
    let mut count = 0;
    for entry in saved.range(from.as_str()..to.as_str())? {
        let (k, at) = entry?;
        count += 1;
        if oldest.as_ref().is_none_or(|(t, _)| at.value() < *t) {
            oldest = Some((at.value(), k.value().to_string()));
        }
    }
    if count >= SESSIONS_PER_CHANNEL
        && let Some((_, k)) = oldest
    {
        txn.open_table(SESSIONS)?.remove(k.as_str())?;
        saved.remove(k.as_str())?;
        tracing::info!("session {k} dropped: {channel} keeps its {SESSIONS_PER_CHANNEL} most recent sessions");
    }
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
    /// A group chat: everyone there reads its replies, so a scheduled run
    /// that reports to it, the owner's own too, recalls no memory.
    #[serde(default)]
    pub group: bool,
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

    /// Save a session and add this turn's usage to today's totals (and to
    /// `person`'s tokens of today), atomically.
    pub fn save_session(
        &self,
        key: &str,
        session: &Session,
        spent: &Totals,
        person: Option<&str>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        make_room(&txn, key)?;
        {
            txn.open_table(SESSIONS)?.insert(key, serde_json::to_vec(session)?.as_slice())?;
            txn.open_table(SAVED)?.insert(key, crate::store::now_ms())?;
            let mut usage = txn.open_table(USAGE)?;
            let day = today();
            let mut totals: Totals = match usage.get(day.as_str())? {
                Some(v) => serde_json::from_slice(v.value())?,
                None => Totals::default(),
            };
            totals.add(spent);
            usage.insert(day.as_str(), serde_json::to_vec(&totals)?.as_slice())?;
            if let Some(person) = person.filter(|_| spent.tokens() > 0) {
                let mut people = txn.open_table(PERSON_USAGE)?;
                let before = people.get((day.as_str(), person))?.map_or(0, |v| v.value());
                if before == 0 {
                    people.retain_in(..(day.as_str(), ""), |_, _| false)?;
                }
                people.insert((day.as_str(), person), before + spent.tokens())?;
            }
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

    /// The tokens `person` spent today (UTC).
    pub fn person_tokens_today(&self, person: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PERSON_USAGE)?;
        Ok(table.get((today().as_str(), person))?.map_or(0, |v| v.value()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(db: &Store, prefix: &str) -> Vec<String> {
        let txn = db.db.begin_read().unwrap();
        let table = txn.open_table(SESSIONS).unwrap();
        let keys = table.iter().unwrap().map(|e| e.unwrap().0.value().to_string());
        keys.filter(|k| k.starts_with(prefix)).collect()
    }

    /// A person's tokens add up over the day, and the first save of a new
    /// day forgets the days before.
    #[test]
    fn only_todays_tokens_per_person_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = Store::open(&dir.path().join("db.redb"), &[create_tables]).unwrap();
        let txn = db.db.begin_write().unwrap();
        txn.open_table(PERSON_USAGE).unwrap().insert(("2020-01-01", "tg:bob"), 500).unwrap();
        db.commit(txn).unwrap();
        let spent = Totals { input: 40, output: 20, ..Default::default() };
        db.save_session("tg:1", &Session::default(), &spent, Some("tg:bob")).unwrap();
        db.save_session("tg:1", &Session::default(), &spent, Some("tg:bob")).unwrap();
        db.save_session("tg:2", &Session::default(), &spent, Some("tg:eve")).unwrap();
        db.save_session("tg:3", &Session::default(), &spent, None).unwrap();
        assert_eq!(db.person_tokens_today("tg:bob").unwrap(), 120);
        assert_eq!(db.person_tokens_today("tg:eve").unwrap(), 60);
        assert_eq!(db.usage_today().unwrap().tokens(), 240);
        let txn = db.db.begin_read().unwrap();
        assert_eq!(txn.open_table(PERSON_USAGE).unwrap().len().unwrap(), 2, "an old day was kept");
    }

    /// A channel that makes up chats keeps its most recent sessions, not
    /// every one; other channels' are untouched.
    #[test]
    fn a_channel_keeps_its_most_recent_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let db = Store::open(&dir.path().join("db.redb"), &[create_tables]).unwrap();
        let (none, wait) = (Totals::default(), || std::thread::sleep(std::time::Duration::from_millis(3)));
        db.save_session("other:x", &Session::default(), &none, None).unwrap();
        db.save_session("hc:first", &Session::default(), &none, None).unwrap();
        wait();
        for i in 0..SESSIONS_PER_CHANNEL - 1 {
            db.save_session(&format!("hc:{i}"), &Session::default(), &none, None).unwrap();
        }
        wait();
        db.save_session("hc:first", &Session::default(), &none, None).unwrap();
        db.save_session("hc:new", &Session::default(), &none, None).unwrap();
        let kept = keys(&db, "hc:");
        assert_eq!(kept.len(), SESSIONS_PER_CHANNEL);
        assert!(kept.contains(&"hc:first".into()) && kept.contains(&"hc:new".into()), "the recent ones went");
        assert_eq!(keys(&db, "other:"), ["other:x"]);
        // A session from before the bound gets a time when the database opens.
        let txn = db.db.begin_write().unwrap();
        txn.open_table(SAVED).unwrap().remove("other:x").unwrap();
        db.commit(txn).unwrap();
        drop(db);
        let db = Store::open(&dir.path().join("db.redb"), &[create_tables]).unwrap();
        let txn = db.db.begin_read().unwrap();
        assert_eq!(txn.open_table(SAVED).unwrap().get("other:x").unwrap().map(|v| v.value()), Some(0));
    }
}
