//! Who a chat channel serves: senders in the channel's `allow` list, and
//! senders the owner approved with a pairing code.
//!
//! Invariants:
//! - An unknown sender's message is never stored or shown to the agent.
//!   The first one gets a code; only the sender's id, name and chat are
//!   kept, so the owner can see who is asking.
//! - A code is 8 random characters, valid for an hour, single use.
//! - The first sender ever approved becomes an admin (the owner pairing
//!   their own chat); later ones only with `--admin`. Admins may approve
//!   codes from their chat with `/approve CODE`.
//! - Pending requests are capped per channel so strangers cannot fill the disk.
//! - A message that changes nothing (a paired sender, a code still valid)
//!   is decided without a commit: only a new code, or forgetting stale
//!   requests, writes.
//! - In a group chat a sender is paired for that chat only, never as an
//!   admin by default: being served in one chat says nothing of another,
//!   where other people read the answers.
//! - A channel's pairings go with it (`skills remove`): a component added
//!   again under its name serves nobody the owner did not pair again.

use crate::config::ChannelConfig;
use crate::store::{Store, StoreError, now_ms};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const PAIRINGS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("pairings");

/// The record key of a sender: their id for direct chats; in a group,
/// their id and the group's (`SENDER@CHAT`).
pub fn key(sender_id: &str, group_chat: Option<&str>) -> String {
    match group_chat {
        Some(chat) => format!("{sender_id}@{chat}"),
        None => sender_id.to_string(),
    }
}

/// Who a sender is across the host, `CHANNEL:KEY` (their share of the
/// daily token budget is kept under it).
pub fn person_id(channel: &str, key: &str) -> String {
    format!("{channel}:{key}")
}

/// The pairing under `key` in `channel`, from a read or write table.
fn read(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    channel: &str,
    key: &str,
) -> Result<Option<Pairing>, StoreError> {
    match table.get((channel, key))? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
        None => Ok(None),
    }
}
const CODE_TTL_MS: i64 = 60 * 60 * 1000;
const MAX_PENDING: usize = 50;
/// A request whose code expired this long ago is forgotten when the next
/// stranger asks, so strangers cannot grow the table (or its scans) without
/// end: at most about `MAX_PENDING` a TTL, kept this long.
const FORGET_AFTER_MS: i64 = 7 * 24 * 3600 * 1000;
/// No 0/O, 1/I/L: codes are read aloud and typed.
const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// Drop every pairing of `channel` in `txn`, approved or pending: being
/// served through a channel is a right the owner gave through that
/// component, and goes with it (`skills remove`). How many were approved.
pub(crate) fn forget_channel_in(txn: &redb::WriteTransaction, channel: &str) -> Result<usize, StoreError> {
    let mut approved = 0;
    for entry in txn.open_table(PAIRINGS)?.extract_if(|(c, _), _| c == channel)? {
        let (_, v) = entry?;
        approved += usize::from(serde_json::from_slice::<Pairing>(v.value()).is_ok_and(|p| p.approved));
    }
    Ok(approved)
}

pub(crate) fn create_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(PAIRINGS)?;
    Ok(())
}

/// A sender's pairing with a channel: pending or approved.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Pairing {
    /// The channel.
    pub channel: String,
    /// The sender's platform id.
    pub sender_id: String,
    /// The sender's name, as the platform gave it.
    pub sender_name: String,
    /// The chat the request came from.
    pub chat_id: String,
    /// While pending: the code the sender was given.
    pub code: Option<String>,
    /// When the code expires (Unix ms).
    pub code_expires_ms: i64,
    /// Approved by the owner.
    pub approved: bool,
    /// Acts as the owner.
    pub admin: bool,
    /// When they first asked (Unix ms).
    pub created_ms: i64,
    /// When they were approved (Unix ms).
    pub approved_ms: Option<i64>,
    /// What a non-admin may use (`wasiclaw pairing grant`).
    #[serde(default)]
    pub scope: Scope,
    /// Paired for the group chat `chat_id` only.
    #[serde(default)]
    pub group: bool,
}

impl Pairing {
    /// Its record key (see [`key`]).
    pub fn key(&self) -> String {
        key(&self.sender_id, self.group.then_some(self.chat_id.as_str()))
    }
}

/// A pairing as the owner sees it: the record, what it allows in words,
/// and the tokens spent today.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairingView {
    /// The record.
    #[serde(flatten)]
    pub pairing: Pairing,
    /// [`Scope::describe`] of an approved non-admin; empty otherwise.
    pub may: String,
    /// Model tokens they spent today (UTC).
    pub tokens_today: u64,
    /// Their daily share; 0 when only the owner's budget binds them.
    pub daily_tokens: u64,
}

/// What a paired non-admin may use besides read-only tools in their own
/// session. Admins act as the owner and need none of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// The owner's long-term memory: recall, search and save.
    #[serde(default)]
    pub memory: bool,
    /// The riskiest tools they may cause to run; read-only when unset.
    #[serde(default)]
    pub max_risk: Option<crate::approvals::Risk>,
    /// `/tool SKILL.TOOL {json}` in their chat.
    #[serde(default)]
    pub direct_tools: bool,
    /// Model tokens they may spend per UTC day; unset: `[agent]
    /// person_daily_token_budget`. Their turns also count against the
    /// owner's daily budget.
    #[serde(default)]
    pub daily_tokens: Option<u64>,
}

impl Scope {
    /// What it allows, for the owner: `read-only tools, memory, /tool`.
    pub fn describe(&self) -> String {
        let mut parts = vec![match self.max_risk {
            None | Some(crate::approvals::Risk::Read) => "read-only tools".to_string(),
            Some(risk) => format!("tools up to {}", crate::text::variant_name(&risk)),
        }];
        if self.memory {
            parts.push("your memory".into());
        }
        if self.direct_tools {
            parts.push("/tool".into());
        }
        if let Some(tokens) = self.daily_tokens {
            parts.push(format!("{tokens} tokens a day"));
        }
        parts.join(", ")
    }

    /// Their tokens a day: their own, or `default` (`[agent]
    /// person_daily_token_budget`); 0 means only the owner's budget binds.
    pub fn daily_share(&self, default: u64) -> u64 {
        self.daily_tokens.unwrap_or(default)
    }
}

/// What to do with a message from a sender.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Allowed or paired: hand it to the agent.
    Serve {
        /// They act as the owner.
        admin: bool,
        /// What they may use.
        scope: Scope,
    },
    /// Unknown and already told (or pairing is off): drop it unseen.
    Ignore,
    /// First contact: send this code, drop the message.
    SendCode(String),
}

fn new_code() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// The reply an unknown sender gets.
pub fn code_message(code: &str) -> String {
    format!(
        "Hi! I only talk to people my owner has approved. To pair this chat, ask them to run\n\n\
         wasiclaw pairing approve {code}\n\nor to send `/approve {code}` from their own chat. The code expires in an hour."
    )
}

impl Store {
    /// Decide on a message from `sender_id` in `chat_id` (a group chat if
    /// `group`), recording a pairing request for a new sender.
    pub fn pairing_check(
        &self,
        channel: &str,
        sender_id: &str,
        sender_name: &str,
        chat_id: &str,
        group: bool,
        cfg: &ChannelConfig,
    ) -> Result<Verdict, StoreError> {
        if cfg.admins.iter().any(|a| a == sender_id) {
            return Ok(Verdict::Serve { admin: true, scope: Scope::default() });
        }
        if cfg.allow.iter().any(|a| a == sender_id) {
            return Ok(Verdict::Serve { admin: false, scope: Scope::default() });
        }
        let now = now_ms();
        let key = key(sender_id, group.then_some(chat_id));
        let txn = self.db.begin_write()?;
        // Most messages change nothing (a paired sender, a code still valid):
        // those end without a commit, so a sender's every message is not a
        // disk write.
        let mut wrote = false;
        let verdict = {
            let mut table = txn.open_table(PAIRINGS)?;
            let existing = read(&table, channel, &key)?;
            match existing {
                Some(p) if p.approved => Verdict::Serve { admin: p.admin, scope: p.scope },
                _ if !cfg.pairing => Verdict::Ignore,
                Some(p) if p.code_expires_ms > now => Verdict::Ignore,
                existing => {
                    let requests: Vec<Pairing> = table
                        .range((channel, "")..)?
                        .filter_map(Result::ok)
                        .take_while(|(k, _)| k.value().0 == channel)
                        .filter_map(|(_, v)| serde_json::from_slice::<Pairing>(v.value()).ok())
                        .filter(|p| !p.approved)
                        .collect();
                    for stale in requests.iter().filter(|p| p.code_expires_ms + FORGET_AFTER_MS < now) {
                        table.remove((channel, stale.key().as_str()))?;
                        wrote = true;
                    }
                    let pending = requests.iter().filter(|p| p.code_expires_ms > now).count();
                    if pending >= MAX_PENDING {
                        tracing::warn!("{channel}: {MAX_PENDING} pairing requests pending; ignoring {key}");
                        Verdict::Ignore
                    } else {
                        let code = new_code();
                        let p = Pairing {
                            channel: channel.into(),
                            sender_id: sender_id.into(),
                            sender_name: sender_name.into(),
                            chat_id: chat_id.into(),
                            code: Some(code.clone()),
                            code_expires_ms: now + CODE_TTL_MS,
                            approved: false,
                            admin: false,
                            created_ms: existing.map(|p| p.created_ms).unwrap_or(now),
                            approved_ms: None,
                            scope: Scope::default(),
                            group,
                        };
                        table.insert((channel, key.as_str()), serde_json::to_vec(&p)?.as_slice())?;
                        wrote = true;
                        Verdict::SendCode(code)
                    }
                }
            }
        };
        if wrote {
            self.commit(txn)?;
        } else {
            txn.abort()?;
        }
        Ok(verdict)
    }

    /// The pairing under `key` (see [`key`]), approved or pending.
    pub fn pairing(&self, channel: &str, key: &str) -> Result<Option<Pairing>, StoreError> {
        let txn = self.db.begin_read()?;
        read(&txn.open_table(PAIRINGS)?, channel, key)
    }

    /// Set what the paired sender under `key` of `channel` may use; None
    /// if there is no such pairing.
    pub fn pairing_grant(&self, channel: &str, key: &str, scope: Scope) -> Result<Option<Pairing>, StoreError> {
        let txn = self.db.begin_write()?;
        let updated = {
            let mut table = txn.open_table(PAIRINGS)?;
            let existing = read(&table, channel, key)?;
            match existing.filter(|p| p.approved) {
                Some(mut p) => {
                    p.scope = scope;
                    table.insert((channel, key), serde_json::to_vec(&p)?.as_slice())?;
                    Some(p)
                }
                None => None,
            }
        };
        self.commit(txn)?;
        Ok(updated)
    }

    /// Approve the pending request holding `code`. The first approval
    /// ever of a direct chat makes an admin.
    pub fn pairing_approve(&self, code: &str, admin: bool) -> Result<Option<Pairing>, StoreError> {
        let code = code.trim().to_ascii_uppercase();
        let now = now_ms();
        let txn = self.db.begin_write()?;
        let approved = {
            let mut table = txn.open_table(PAIRINGS)?;
            let all: Vec<Pairing> = table
                .iter()?
                .filter_map(Result::ok)
                .filter_map(|(_, v)| serde_json::from_slice(v.value()).ok())
                .collect();
            let first = !all.iter().any(|p| p.approved && !p.group);
            match all.into_iter().find(|p| p.code.as_deref() == Some(&code) && p.code_expires_ms > now) {
                None => None,
                Some(mut p) => {
                    p.approved = true;
                    p.admin = admin || (first && !p.group);
                    p.code = None;
                    p.approved_ms = Some(now);
                    table.insert((p.channel.as_str(), p.key().as_str()), serde_json::to_vec(&p)?.as_slice())?;
                    Some(p)
                }
            }
        };
        self.commit(txn)?;
        Ok(approved)
    }

    /// Every pairing, pending or approved.
    pub fn pairings(&self) -> Result<Vec<Pairing>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PAIRINGS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            out.push(serde_json::from_slice(entry?.1.value())?);
        }
        Ok(out)
    }

    /// Forget a sender under `key` (approved or pending); false if unknown.
    pub fn pairing_revoke(&self, channel: &str, key: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let removed = txn.open_table(PAIRINGS)?.remove((channel, key))?.is_some();
        self.commit(txn)?;
        Ok(removed)
    }

    /// The chat of the first admin, where owner notifications go by default.
    pub fn admin_chat(&self) -> Result<Option<(String, String)>, StoreError> {
        Ok(self
            .pairings()?
            .into_iter()
            .filter(|p| p.admin && !p.group)
            .min_by_key(|p| p.approved_ms)
            .map(|p| (p.channel, p.chat_id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb"), &[create_tables]).unwrap();
        (dir, store)
    }

    fn code_of(v: Verdict) -> String {
        match v {
            Verdict::SendCode(code) => code,
            other => panic!("expected a code, got {other:?}"),
        }
    }

    /// Only a new code is a commit: a paired sender's messages, and a
    /// stranger's while their code is valid, write nothing.
    #[test]
    fn a_message_that_changes_nothing_commits_nothing() {
        let (_dir, db) = store();
        let cfg = ChannelConfig::default();
        let before = db.durable_commits();
        let code = code_of(db.pairing_check("tg", "1", "Ada", "c1", false, &cfg).unwrap());
        assert_eq!(db.durable_commits(), before + 1, "the code is stored");
        for _ in 0..5 {
            assert_eq!(db.pairing_check("tg", "1", "Ada", "c1", false, &cfg).unwrap(), Verdict::Ignore);
        }
        db.pairing_approve(&code, false).unwrap().unwrap();
        let approved = db.durable_commits();
        for _ in 0..5 {
            assert!(matches!(db.pairing_check("tg", "1", "Ada", "c1", false, &cfg).unwrap(), Verdict::Serve { .. }));
        }
        let off = ChannelConfig { pairing: false, ..Default::default() };
        assert_eq!(db.pairing_check("tg", "2", "Bob", "c2", false, &off).unwrap(), Verdict::Ignore);
        assert_eq!(db.durable_commits(), approved, "a message that changed nothing was committed");
        assert_eq!(approved, before + 2, "a valid code's repeats were committed");
    }

    #[test]
    fn strangers_get_one_code_and_approval_makes_the_first_an_admin() {
        let (_dir, db) = store();
        let cfg = ChannelConfig::default();
        let code = code_of(db.pairing_check("tg", "1", "Ada", "c1", false, &cfg).unwrap());
        assert!(code.len() == 8 && code.bytes().all(|b| ALPHABET.contains(&b)), "{code}");
        assert_eq!(db.pairing_check("tg", "1", "Ada", "c1", false, &cfg).unwrap(), Verdict::Ignore, "a second code");
        assert!(db.pairing_approve("WRONG123", false).unwrap().is_none());
        let ada = db.pairing_approve(&code.to_lowercase(), false).unwrap().unwrap();
        assert!(ada.approved && ada.admin, "the first approval is the owner's");
        assert_eq!(
            db.pairing_check("tg", "1", "Ada", "c1", false, &cfg).unwrap(),
            Verdict::Serve { admin: true, scope: Scope::default() }
        );
        assert!(db.pairing_approve(&code, false).unwrap().is_none(), "a code works once");
        let bob = code_of(db.pairing_check("tg", "2", "Bob", "c2", false, &cfg).unwrap());
        assert!(!db.pairing_approve(&bob, false).unwrap().unwrap().admin);
        assert_eq!(db.admin_chat().unwrap(), Some(("tg".into(), "c1".into())));
        assert!(db.pairing_revoke("tg", "2").unwrap());
        assert_ne!(
            db.pairing_check("tg", "2", "Bob", "c2", false, &cfg).unwrap(),
            Verdict::Serve { admin: false, scope: Scope::default() }
        );
    }

    #[test]
    fn allow_lists_pairing_off_and_the_pending_cap() {
        let (_dir, db) = store();
        let closed = ChannelConfig { allow: vec!["7".into()], pairing: false, ..Default::default() };
        assert_eq!(
            db.pairing_check("x", "7", "", "c", false, &closed).unwrap(),
            Verdict::Serve { admin: false, scope: Scope::default() }
        );
        assert_eq!(db.pairing_check("x", "8", "", "c", false, &closed).unwrap(), Verdict::Ignore);
        assert!(db.pairings().unwrap().is_empty(), "nothing is recorded with pairing off");
        let open = ChannelConfig::default();
        for i in 0..MAX_PENDING {
            code_of(db.pairing_check("x", &format!("s{i}"), "", "c", false, &open).unwrap());
        }
        assert_eq!(db.pairing_check("x", "one-too-many", "", "c", false, &open).unwrap(), Verdict::Ignore);
        code_of(db.pairing_check("other-channel", "s0", "", "c", false, &open).unwrap());
    }

    #[test]
    fn requests_expired_a_week_ago_are_forgotten_when_the_next_stranger_asks() {
        let (_dir, db) = store();
        let cfg = ChannelConfig::default();
        code_of(db.pairing_check("x", "old", "", "c", false, &cfg).unwrap());
        code_of(db.pairing_check("x", "recent", "", "c", false, &cfg).unwrap());
        // Age them: one expired eight days ago, the other a day ago.
        let txn = db.db.begin_write().unwrap();
        {
            let mut table = txn.open_table(PAIRINGS).unwrap();
            for (who, days) in [("old", 8), ("recent", 1)] {
                let mut p = read(&table, "x", who).unwrap().unwrap();
                p.code_expires_ms = now_ms() - days * 24 * 3600 * 1000;
                table.insert(("x", who), serde_json::to_vec(&p).unwrap().as_slice()).unwrap();
            }
        }
        db.commit(txn).unwrap();
        code_of(db.pairing_check("x", "new", "", "c", false, &cfg).unwrap());
        let mut left: Vec<String> = db.pairings().unwrap().into_iter().map(|p| p.sender_id).collect();
        left.sort();
        assert_eq!(left, ["new", "recent"]);
    }

    #[test]
    fn in_a_group_a_sender_is_paired_for_that_chat_only_and_never_first_admin() {
        let (_dir, db) = store();
        let cfg = ChannelConfig::default();
        let code = code_of(db.pairing_check("tg", "1", "Ada", "g1", true, &cfg).unwrap());
        let p = db.pairing_approve(&code, false).unwrap().unwrap();
        assert!(p.group && !p.admin, "a group pairing is not the owner's, even the first");
        assert_eq!(p.key(), "1@g1");
        let served = Verdict::Serve { admin: false, scope: Scope::default() };
        assert_eq!(db.pairing_check("tg", "1", "Ada", "g1", true, &cfg).unwrap(), served);
        // Neither another group nor a direct chat is served by it.
        code_of(db.pairing_check("tg", "1", "Ada", "g2", true, &cfg).unwrap());
        code_of(db.pairing_check("tg", "1", "Ada", "1", false, &cfg).unwrap());
        assert_eq!(db.admin_chat().unwrap(), None, "owner notifications never go to a group");
        assert!(db.pairing_revoke("tg", &key("1", Some("g1"))).unwrap());
    }
}
