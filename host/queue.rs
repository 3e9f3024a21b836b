//! Messages waiting to move: the channels' inbox (received, waiting for
//! the agent), outbox (replies and notices, waiting to be sent), seen
//! message ids and poll cursors, and the record of `notify` messages.
//!
//! Invariants:
//! - A received message is stored and marked seen in one transaction, so
//!   a redelivered one is answered once. A channel keeps the ids of its
//!   newest [`SEEN_PER_CHANNEL`] messages at most (for a week): it decides
//!   the ids, and could make up new ones without end.
//! - A reply is queued in the transaction that retires its inbox entry:
//!   a crash loses neither.
//! - Every commit that queues work bumps `Store::changes`, so a worker
//!   waiting on it never misses a wake-up.
//! - The inbox is bounded: at most [`INBOX_PER_CHAT`] messages of one chat
//!   and [`INBOX_PER_CHANNEL`] of one channel wait at once. A chat that
//!   floods (or a channel that makes messages up) fills its own share, not
//!   the disk, and does not keep other chats from being heard.
//! - The outbox is bounded too: a channel keeps at most
//!   [`OUTBOX_PER_CHANNEL`] messages waiting, the oldest going in the
//!   commit that queues a new one. Replies, job results and notices go to a
//!   channel however long it refuses them, so without the bound a dead
//!   platform or a channel that fails every send would fill the disk.
//! - A turn for a message is counted in a durable commit before it begins
//!   ([`Store::inbox_try`]), so a message whose turn never ends (the daemon
//!   dies in it, or its answer cannot be saved) is tried a bounded number
//!   of times, not once per restart for ever.
//! - Nothing waiting is dropped but by that bound or the owner: a message
//!   the platform refuses for good is held (`OutboxItem::held`), not
//!   deleted, so the owner can see it and send it again.

use crate::store::{Store, StoreError, next_id, now_ms};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

const SEEN: TableDefinition<(&str, &str), i64> = TableDefinition::new("channel_seen");
/// (channel, n) → (time ms, message id): the seen ids of a channel in the
/// order they were seen, to drop the oldest past [`SEEN_PER_CHANNEL`].
/// Ids seen before it existed are not in it; they go with their week.
const SEEN_ORDER: TableDefinition<(&str, u64), (i64, &str)> = TableDefinition::new("channel_seen_order");
const INBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("channel_inbox");
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("channel_outbox");
const CURSORS: TableDefinition<&str, &str> = TableDefinition::new("channel_cursors");

/// Notifications kept for `wasiclaw notifications` (each up to 16 KiB):
/// the oldest go as new ones come, so a component with `notify` cannot
/// fill the disk over months, however its budget is set.
pub const NOTIFICATIONS_KEPT: u64 = 1000;

/// Messages of one chat that may wait for the agent at once.
pub const INBOX_PER_CHAT: usize = 50;
/// Messages of one channel that may wait for the agent at once.
pub const INBOX_PER_CHANNEL: usize = 500;

/// Messages waiting to be sent through one channel. The oldest go first:
/// after weeks down, the newest replies matter most.
pub const OUTBOX_PER_CHANNEL: usize = 1000;

/// What became of a received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Stored, to be answered.
    New,
    /// Seen before: already stored or answered.
    Seen,
    /// Dropped: its chat's or its channel's share of the inbox is full.
    /// It is not marked seen, so a platform that delivers it again is heard.
    Full,
}

/// Seen message ids are kept this long for deduplication.
const SEEN_TTL_MS: i64 = 7 * 24 * 3600 * 1000;
/// Seen message ids kept per channel: weeks of a person's messages, and a
/// platform delivers again only recent ones.
pub const SEEN_PER_CHANNEL: u64 = 10_000;

/// Mark `message_id` of `channel` seen in `txn`; past `cap` ids the
/// channel's oldest is forgotten.
fn see_in(txn: &redb::WriteTransaction, channel: &str, message_id: &str, cap: u64) -> Result<(), StoreError> {
    let (mut seen, mut order) = (txn.open_table(SEEN)?, txn.open_table(SEEN_ORDER)?);
    let now = now_ms();
    if seen.insert((channel, message_id), now)?.is_some() {
        return Ok(());
    }
    let mine = (channel, 0)..=(channel, u64::MAX);
    let next = order.range(mine.clone())?.next_back().transpose()?.map_or(0, |(k, _)| k.value().1 + 1);
    order.insert((channel, next), (now, message_id))?;
    let first = order.range(mine)?.next().transpose()?.map_or(next, |(k, _)| k.value().1);
    // Ids go from the front only (here, or by age), so they are contiguous.
    if next + 1 - first > cap {
        let oldest = order.remove((channel, first))?.map(|v| v.value().1.to_string());
        if let Some(oldest) = oldest {
            seen.remove((channel, oldest.as_str()))?;
        }
    }
    Ok(())
}
/// Messages components sent the owner (`notify`), for `wasiclaw notifications`:
/// the newest [`NOTIFICATIONS_KEPT`].
const NOTIFICATIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

/// Whether `item`'s chat or channel has its whole share of the inbox
/// waiting already. The inbox is small by this very bound, so it is read
/// whole.
fn inbox_full(inbox: &redb::Table<u64, &[u8]>, item: &InboxItem) -> Result<bool, StoreError> {
    let (mut chat, mut channel) = (0, 0);
    for entry in inbox.iter()? {
        let waiting: InboxItem = serde_json::from_slice(entry?.1.value())?;
        if waiting.channel == item.channel {
            channel += 1;
            chat += usize::from(waiting.chat_id == item.chat_id);
        }
    }
    Ok(chat >= INBOX_PER_CHAT || channel >= INBOX_PER_CHANNEL)
}

/// Messages through `channel` waiting in `txn`, for the agent or to be
/// sent; with `erase` they go, with its cursor and the ids of the messages
/// it delivered (kept to drop a repeat). How many were waiting.
pub(crate) fn forget_channel_in(txn: &redb::WriteTransaction, channel: &str, erase: bool) -> Result<usize, StoreError> {
    /// What inbox and outbox items share.
    #[derive(Deserialize)]
    struct Via {
        channel: String,
    }
    let ours = |v: &[u8]| serde_json::from_slice::<Via>(v).is_ok_and(|via| via.channel == channel);
    let mut waiting = 0;
    for table in [INBOX, OUTBOX] {
        let mut table = txn.open_table(table)?;
        if erase {
            waiting += table.extract_if(|_, v| ours(v))?.collect::<Result<Vec<_>, _>>()?.len();
        } else {
            for entry in table.iter()? {
                waiting += usize::from(ours(entry?.1.value()));
            }
        }
    }
    if erase {
        txn.open_table(CURSORS)?.remove(channel)?;
        txn.open_table(SEEN)?.retain(|(c, _), _| c != channel)?;
        txn.open_table(SEEN_ORDER)?.retain_in((channel, 0)..=(channel, u64::MAX), |_, _| false)?;
    }
    Ok(waiting)
}

pub(crate) fn create_tables(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(SEEN)?;
    txn.open_table(SEEN_ORDER)?;
    txn.open_table(INBOX)?;
    txn.open_table(OUTBOX)?;
    txn.open_table(CURSORS)?;
    txn.open_table(NOTIFICATIONS)?;
    Ok(())
}

/// A message waiting for the agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InboxItem {
    /// Its id.
    pub id: u64,
    /// The channel it came through.
    pub channel: String,
    /// The chat it came from.
    pub chat_id: String,
    /// The chat is a group: the sender's pairing is for this chat only.
    #[serde(default)]
    pub group: bool,
    /// Who sent it.
    pub sender_id: String,
    /// The text.
    pub text: String,
    /// The platform's id of the message.
    pub message_id: String,
    /// When it arrived (Unix ms).
    pub received_ms: i64,
    /// Turns begun for it (see [`Store::inbox_try`]).
    #[serde(default)]
    pub tries: u32,
}

/// A message waiting to be sent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutboxItem {
    /// Its id.
    pub id: u64,
    /// The channel to send through.
    pub channel: String,
    /// The chat to send to.
    pub chat_id: String,
    /// Markdown; converted and split when sent.
    pub text: String,
    /// The message it answers.
    pub reply_to: Option<String>,
    /// Pieces already delivered (a long reply is several messages).
    pub parts_sent: usize,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When to try next (Unix ms).
    pub next_ms: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was queued (Unix ms).
    pub created_ms: i64,
    /// Why it is held, not retried: the platform refused it while a later
    /// message to the same chat went through. `wasiclaw outbox --retry ID`
    /// sends it again.
    #[serde(default)]
    pub held: Option<String>,
}

/// A message a skill sent to the owner through `notify`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Notification {
    /// Its id.
    pub id: u64,
    /// When it was sent (Unix ms).
    pub time_ms: i64,
    /// The component that sent it.
    pub skill: String,
    /// The message.
    pub text: String,
}

impl Store {
    /// Record a component's message to the owner (`notify`).
    pub fn notify(&self, skill: &str, text: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_write()?;
        let id = record_notification(&txn, skill, text)?;
        self.commit(txn)?;
        Ok(id)
    }

    /// The newest `limit` messages to the owner, oldest first.
    pub fn notifications(&self, limit: usize) -> Result<Vec<Notification>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(NOTIFICATIONS)?;
        let mut out = Vec::new();
        for entry in table.iter()?.rev().take(limit) {
            out.push(serde_json::from_slice(entry?.1.value())?);
        }
        out.reverse();
        Ok(out)
    }

    /// Store a served message unless its id was seen or its share of the
    /// inbox is full (see the module's invariants). The item's id is
    /// assigned here.
    pub fn inbox_accept(&self, mut item: InboxItem) -> Result<Accepted, StoreError> {
        let (channel, message_id) = (item.channel.clone(), item.message_id.clone());
        let txn = self.db.begin_write()?;
        let accepted = {
            let mut inbox = txn.open_table(INBOX)?;
            if txn.open_table(SEEN)?.get((channel.as_str(), message_id.as_str()))?.is_some() {
                Accepted::Seen
            } else if inbox_full(&inbox, &item)? {
                Accepted::Full
            } else {
                see_in(&txn, &channel, &message_id, SEEN_PER_CHANNEL)?;
                item.id = next_id(&inbox)?;
                inbox.insert(item.id, serde_json::to_vec(&item)?.as_slice())?;
                Accepted::New
            }
        };
        // A message seen already, or over its share, changes nothing: no
        // commit, so a platform or channel repeating messages wears no disk.
        if accepted == Accepted::New {
            self.commit(txn)?;
            self.changes.send_modify(|v| *v += 1);
        } else {
            txn.abort()?;
        }
        Ok(accepted)
    }

    /// Mark a message id seen without storing the message.
    pub fn mark_seen(&self, channel: &str, message_id: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        see_in(&txn, channel, message_id, SEEN_PER_CHANNEL)?;
        self.commit(txn)?;
        Ok(())
    }

    /// Whether a message id was seen in this channel.
    pub fn seen(&self, channel: &str, message_id: &str) -> Result<bool, StoreError> {
        Ok(self.db.begin_read()?.open_table(SEEN)?.get((channel, message_id))?.is_some())
    }

    /// Forget seen ids older than a week.
    pub fn prune_seen(&self) -> Result<usize, StoreError> {
        let cutoff = now_ms() - SEEN_TTL_MS;
        let txn = self.db.begin_write()?;
        let n = txn.open_table(SEEN)?.extract_if(|_, t| t < cutoff)?.count();
        txn.open_table(SEEN_ORDER)?.retain(|_, (t, _)| t >= cutoff)?;
        self.commit(txn)?;
        Ok(n)
    }

    /// Messages of `channel` waiting for the agent, oldest first.
    pub fn inbox(&self, channel: &str) -> Result<Vec<InboxItem>, StoreError> {
        let items: Vec<InboxItem> = self.all_records(INBOX)?;
        Ok(items.into_iter().filter(|i| i.channel == channel).collect())
    }

    /// Count a turn begun for inbox entry `id`, durably, before the model
    /// is asked (a commit that fails here asks nothing); its tries so far,
    /// or None if it was retired meanwhile.
    pub fn inbox_try(&self, id: u64) -> Result<Option<u32>, StoreError> {
        let mut tries = 0;
        let found = self.update_record(INBOX, id, |item: &mut InboxItem| {
            item.tries += 1;
            tries = item.tries;
        })?;
        Ok(found.then_some(tries))
    }

    /// Retire an inbox entry and queue its reply, atomically.
    pub fn inbox_done(&self, id: u64, reply: Option<(&str, &str, &str, Option<String>)>) -> Result<(), StoreError> {
        self.retire(id, reply, None)
    }

    /// Retire a message whose turns never ended: queue `sorry` to its chat
    /// and record `notice` for the owner, in one commit, so a disk that
    /// fails between them cannot have the owner told twice.
    pub fn inbox_give_up(&self, item: &InboxItem, sorry: &str, notice: &str) -> Result<(), StoreError> {
        let reply = (item.channel.as_str(), item.chat_id.as_str(), sorry, Some(item.message_id.clone()));
        self.retire(item.id, Some(reply), Some(notice))
    }

    /// Retire inbox entry `id` with its reply and a notice for the owner,
    /// if any, in one commit.
    fn retire(
        &self,
        id: u64,
        reply: Option<(&str, &str, &str, Option<String>)>,
        notice: Option<&str>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(INBOX)?.remove(id)?;
        if let Some((channel, chat, text, reply_to)) = reply {
            enqueue(&txn, channel, chat, text, reply_to)?;
        }
        if let Some(notice) = notice {
            record_notification(&txn, "(inbox)", notice)?;
        }
        self.commit(txn)?;
        self.changes.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Queue a message to a chat.
    pub fn outbox_enqueue(&self, channel: &str, chat: &str, text: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_write()?;
        let id = enqueue(&txn, channel, chat, text, None)?;
        self.commit(txn)?;
        self.changes.send_modify(|v| *v += 1);
        Ok(id)
    }

    /// Messages waiting to be sent (of one channel, if given), oldest first.
    pub fn outbox(&self, channel: Option<&str>) -> Result<Vec<OutboxItem>, StoreError> {
        let items: Vec<OutboxItem> = self.all_records(OUTBOX)?;
        Ok(items.into_iter().filter(|i| channel.is_none_or(|c| i.channel == c)).collect())
    }

    pub(crate) fn outbox_save(&self, item: &OutboxItem) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(OUTBOX)?.insert(item.id, serde_json::to_vec(item)?.as_slice())?;
        self.commit(txn)?;
        Ok(())
    }

    /// Save `item`, now held, with the owner's notification of it and the
    /// message `tell` (channel, chat, text) to their chat, if any, in one
    /// commit: a held message is never left untold, and whoever sees it
    /// held finds the notification too.
    pub(crate) fn outbox_hold(
        &self,
        item: &OutboxItem,
        notice: &str,
        tell: Option<(&str, &str, &str)>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(OUTBOX)?.insert(item.id, serde_json::to_vec(item)?.as_slice())?;
        record_notification(&txn, "(outbox)", notice)?;
        if let Some((channel, chat, text)) = tell {
            enqueue(&txn, channel, chat, text, None)?;
        }
        self.commit(txn)?;
        self.changes.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Put a held message back in line, to be sent at once; false if
    /// there is no such message.
    pub fn outbox_retry(&self, id: u64) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let found = {
            let mut table = txn.open_table(OUTBOX)?;
            let item = table.get(id)?.map(|v| serde_json::from_slice::<OutboxItem>(v.value())).transpose()?;
            let found = item.is_some();
            if let Some(mut item) = item {
                (item.held, item.attempts, item.next_ms) = (None, 0, 0);
                table.insert(id, serde_json::to_vec(&item)?.as_slice())?;
            }
            found
        };
        self.commit(txn)?;
        self.changes.send_modify(|v| *v += 1);
        Ok(found)
    }

    /// Remove a queued message (sent, or given up on); false if unknown.
    pub fn outbox_remove(&self, id: u64) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let removed = txn.open_table(OUTBOX)?.remove(id)?.is_some();
        self.commit(txn)?;
        Ok(removed)
    }

    /// A polling channel's cursor.
    pub fn cursor(&self, channel: &str) -> Result<Option<String>, StoreError> {
        Ok(self.db.begin_read()?.open_table(CURSORS)?.get(channel)?.map(|v| v.value().to_string()))
    }

    pub(crate) fn set_cursor(&self, channel: &str, cursor: Option<&str>) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(CURSORS)?;
            match cursor {
                Some(c) => table.insert(channel, c)?,
                None => table.remove(channel)?,
            };
        }
        self.commit(txn)?;
        Ok(())
    }
}

/// Record a message to the owner, keeping the newest [`NOTIFICATIONS_KEPT`].
fn record_notification(txn: &redb::WriteTransaction, skill: &str, text: &str) -> Result<u64, StoreError> {
    let mut table = txn.open_table(NOTIFICATIONS)?;
    let id = next_id(&table)?;
    let n = Notification { id, time_ms: now_ms(), skill: skill.into(), text: text.into() };
    table.insert(id, serde_json::to_vec(&n)?.as_slice())?;
    while table.len()? > NOTIFICATIONS_KEPT {
        table.pop_first()?;
    }
    Ok(id)
}

fn enqueue(
    txn: &redb::WriteTransaction,
    channel: &str,
    chat: &str,
    text: &str,
    reply_to: Option<String>,
) -> Result<u64, StoreError> {
    let mut table = txn.open_table(OUTBOX)?;
    // Only a long outbox is read: under the bound in all, no channel is full.
    if table.len()? >= OUTBOX_PER_CHANNEL as u64 {
        #[derive(Deserialize)]
        struct Head {
            id: u64,
            channel: String,
        }
        let mut waiting = Vec::new();
        for entry in table.iter()? {
            let head: Head = serde_json::from_slice(entry?.1.value())?;
            if head.channel == channel {
                waiting.push(head.id);
            }
        }
        let over = (waiting.len() + 1).saturating_sub(OUTBOX_PER_CHANNEL);
        for id in &waiting[..over] {
            table.remove(id)?;
        }
        if over > 0 {
            tracing::warn!(
                "channel {channel}: {over} unsent message(s) dropped, the oldest: {OUTBOX_PER_CHANNEL} wait to be sent already"
            );
        }
    }
    let id = next_id(&table)?;
    let item = OutboxItem {
        id,
        channel: channel.into(),
        chat_id: chat.into(),
        text: text.into(),
        reply_to,
        parts_sent: 0,
        attempts: 0,
        next_ms: 0,
        last_error: None,
        created_ms: now_ms(),
        held: None,
    };
    table.insert(id, serde_json::to_vec(&item)?.as_slice())?;
    Ok(id)
}

/// Where owner notifications go: `configured` (`[agent] owner_chat`), else
/// the first admin's chat. Looked up when a message is sent, not per call.
pub fn owner_chat(configured: Option<&str>, db: &Store) -> Option<String> {
    configured
        .map(String::from)
        .or_else(|| db.admin_chat().ok().flatten().map(|(channel, chat)| format!("{channel}:{chat}")))
}

/// Approve a pairing code and welcome the sender in their chat.
pub fn approve(db: &Store, code: &str, admin: bool) -> Result<Option<crate::pairing::Pairing>, StoreError> {
    let approved = db.pairing_approve(code, admin)?;
    if let Some(p) = &approved {
        db.outbox_enqueue(&p.channel, &p.chat_id, "You're paired: I'll answer you here from now on. Say hello!")?;
    }
    Ok(approved)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A channel keeps its newest seen ids up to the bound, its oldest going
    /// first; another channel's are untouched, and a repeat adds nothing.
    #[test]
    fn a_channel_keeps_its_newest_seen_ids() {
        let dir = tempfile::tempdir().unwrap();
        let db = Store::open(&dir.path().join("db.redb"), &[create_tables]).unwrap();
        let see = |channel: &str, id: &str| {
            let txn = db.db.begin_write().unwrap();
            see_in(&txn, channel, id, 3).unwrap();
            db.commit(txn).unwrap();
        };
        see("b", "b0");
        for id in ["a0", "a1", "a2", "a2", "a3", "a4"] {
            see("a", id);
        }
        let kept: Vec<bool> = ["a0", "a1", "a2", "a3", "a4"].iter().map(|id| db.seen("a", id).unwrap()).collect();
        assert_eq!(kept, [false, false, true, true, true]);
        assert!(db.seen("b", "b0").unwrap(), "another channel's ids stay");
        let order = db.db.begin_read().unwrap().open_table(SEEN_ORDER).unwrap().len().unwrap();
        assert_eq!(order, 4, "three of a, one of b");
    }

    /// A channel refusing every send keeps its newest messages waiting, up
    /// to the bound; another channel's are untouched.
    #[test]
    fn a_channel_keeps_at_most_its_share_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let db = Store::open(&dir.path().join("db.redb"), &[create_tables]).unwrap();
        db.outbox_enqueue("other", "c", "keep me").unwrap();
        for i in 0..OUTBOX_PER_CHANNEL + 5 {
            db.outbox_enqueue("dead", "c", &format!("reply {i}")).unwrap();
        }
        db.inbox_done(0, Some(("dead", "c", "last", None))).unwrap();
        let dead = db.outbox(Some("dead")).unwrap();
        assert_eq!(dead.len(), OUTBOX_PER_CHANNEL);
        assert_eq!(dead[0].text, "reply 6", "the oldest go first");
        assert_eq!(dead.last().unwrap().text, "last");
        let other = db.outbox(Some("other")).unwrap();
        assert_eq!(other.iter().map(|i| i.text.as_str()).collect::<Vec<_>>(), ["keep me"]);
    }

    /// A store with one message accepted into its inbox.
    fn one_message() -> (tempfile::TempDir, Store, InboxItem) {
        let dir = tempfile::tempdir().unwrap();
        let db = Store::open(&dir.path().join("db.redb"), &[create_tables]).unwrap();
        let item = InboxItem {
            id: 0,
            channel: "tg".into(),
            chat_id: "c".into(),
            group: false,
            sender_id: "s".into(),
            text: "hi".into(),
            message_id: "m".into(),
            received_ms: 0,
            tries: 0,
        };
        assert_eq!(db.inbox_accept(item.clone()).unwrap(), Accepted::New);
        (dir, db, item)
    }

    /// A message heard again changes nothing, so it commits nothing: a
    /// platform or channel repeating messages wears no disk.
    #[test]
    fn a_message_heard_again_commits_nothing() {
        let (_dir, db, item) = one_message();
        let before = db.durable_commits();
        assert_eq!(db.inbox_accept(item).unwrap(), Accepted::Seen);
        assert_eq!(db.durable_commits(), before, "a message seen already was committed");
    }

    /// A message given up is retired, its chat told and the owner notified
    /// in one commit: no failure between them can repeat the notice.
    #[test]
    fn giving_a_message_up_is_one_commit() {
        let (_dir, db, _) = one_message();
        let item = db.inbox("tg").unwrap().remove(0);
        let before = db.durable_commits();
        db.inbox_give_up(&item, "sorry", "given up").unwrap();
        assert_eq!(db.durable_commits() - before, 1);
        assert!(db.inbox("tg").unwrap().is_empty());
        let sent = db.outbox(Some("tg")).unwrap();
        assert_eq!((sent[0].text.as_str(), sent[0].reply_to.as_deref()), ("sorry", Some("m")));
        assert_eq!(db.notifications(10).unwrap()[0].text, "given up");
    }
}
