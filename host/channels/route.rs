//! What happens to a message: admission (dedup, groups, pairing, answers
//! to questions), the per-chat workers that ask the agent and queue its
//! reply, and the outbox worker that sends, retries and keeps each chat in
//! order.

use super::{
    Answer, Call, ChannelError, Channels, INBOX_TRIES, MAX_BACKOFF, MAX_INBOUND_ID, MAX_INBOUND_TEXT, PRUNE_EVERY,
    TURNS_AT_ONCE, TYPING_EVERY, invoke,
};
use crate::agent::{Event, Who};
use crate::component::ChannelSpec;
use crate::config::Groups;
use crate::contract::Inbound;
use crate::contract::Outbound;
use crate::pairing::Verdict;
use crate::queue::{Accepted, InboxItem, OutboxItem};
use crate::runtime::Runtime;
use crate::store::{StoreError, now_ms};
use crate::text::one_line;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Failed attempts after which a message no longer holds back the later
/// messages to its chat (tries at 0, 2 and 6 s): past it, a later one that
/// goes through while it fails shows the platform refuses it, not the chat.
const STUCK_AFTER: u32 = 3;
/// Stuck messages of one chat that may fail again in one pass before the
/// rest of them wait for the next (see `send_chat`).
const STUCK_TRIES_PER_PASS: usize = 2;

impl Channels {
    /// Admit messages from the platform: dedup, pairing, then the inbox.
    /// Returns how many were news (not seen before), however they fared.
    pub(super) fn inbound(&self, name: &str, messages: Vec<Inbound>) -> Result<usize, ChannelError> {
        let db = &self.rt().db;
        let cfg = self.rt().config.channels.get(name).cloned().unwrap_or_default();
        let (mut dropped, mut news) = (0, 0);
        // Chats told in this batch that no call waits for their answer.
        let mut told = HashSet::new();
        for mut m in messages {
            let ids = [&m.message_id, &m.sender_id, &m.chat_id];
            if ids.iter().any(|id| id.len() > MAX_INBOUND_ID) {
                tracing::warn!("{name}: a message with an id over {MAX_INBOUND_ID} bytes was dropped");
                continue;
            }
            if m.text.trim().is_empty() || m.text.len() > MAX_INBOUND_TEXT || db.seen(name, &m.message_id)? {
                continue;
            }
            news += 1;
            m.sender_name = crate::text::truncate(&m.sender_name, MAX_INBOUND_ID);
            // Group chatter not meant for the bot is neither stored nor
            // answered, not even with a pairing code; nor marked seen, since
            // a platform may deliver the same message again as a mention.
            let heard = match cfg.groups {
                _ if !m.group => true,
                Groups::Mentioned => m.addressed,
                Groups::All => true,
                Groups::Off => false,
            };
            if !heard {
                continue;
            }
            let verdict = db.pairing_check(name, &m.sender_id, &m.sender_name, &m.chat_id, m.group, &cfg)?;
            match verdict {
                Verdict::Serve { admin, .. } => {
                    // An admin's answer to a waiting tool call is taken at
                    // once: the turn that asked holds this chat's worker.
                    if let Some((answer, id)) = approval_answer(&m.text).filter(|_| admin) {
                        // One that answers nothing is not kept, and told once
                        // a batch: a channel can make up answers "from the
                        // owner" by the thousand, each otherwise a seen id
                        // kept for a week and a reply.
                        if self.rt().questions.answer(id, answer) {
                            db.mark_seen(name, &m.message_id)?;
                        } else if told.insert(m.chat_id.clone()) {
                            db.outbox_enqueue(name, &m.chat_id, &format!("No tool call is waiting for answer {id}."))?;
                        }
                    } else if let Some(code) = m.text.trim().strip_prefix("/approve ").filter(|_| admin)
                        && let Some(p) = crate::queue::approve(db, code, false)?
                    {
                        // Anything else `/approve`s a skill: the agent's.
                        db.mark_seen(name, &m.message_id)?;
                        let reply = format!("Approved {} ({}:{}).", p.sender_name, p.channel, p.sender_id);
                        db.outbox_enqueue(name, &m.chat_id, &reply)?;
                    } else {
                        let item = InboxItem {
                            id: 0,
                            channel: name.into(),
                            chat_id: m.chat_id,
                            group: m.group,
                            sender_id: m.sender_id,
                            text: m.text,
                            message_id: m.message_id,
                            received_ms: now_ms(),
                            tries: 0,
                        };
                        match db.inbox_accept(item)? {
                            Accepted::New => self.status(name, |s| s.received += 1),
                            Accepted::Seen => {}
                            Accepted::Full => dropped += 1,
                        }
                    }
                }
                Verdict::SendCode(code) => {
                    db.mark_seen(name, &m.message_id)?;
                    // A stranger's name and id, on one line: a newline in a
                    // display name would forge a log line of its own.
                    tracing::info!(
                        "{name}: {} ({}) asks to pair; approve with `wasiclaw pairing approve {code}`",
                        one_line(&m.sender_name),
                        one_line(&m.sender_id)
                    );
                    db.outbox_enqueue(name, &m.chat_id, &crate::pairing::code_message(&code))?;
                }
                // Not marked seen: heard again, it is ignored again, and
                // strangers sending without end would fill the seen table.
                Verdict::Ignore => {}
            }
        }
        if dropped > 0 {
            tracing::warn!(
                "channel {name}: {dropped} message(s) dropped: a chat may have {} waiting, the channel {}",
                crate::queue::INBOX_PER_CHAT,
                crate::queue::INBOX_PER_CHANNEL
            );
            self.status(name, |s| s.dropped += dropped);
        }
        Ok(news)
    }

    /// Answer inbox messages: one task per chat, in order within a chat.
    pub(super) async fn inbox_worker(self: Arc<Self>, name: String) {
        let mut changes = self.rt().db.changes.subscribe();
        let mut pruned: Option<std::time::Instant> = None;
        loop {
            if pruned.is_none_or(|t| t.elapsed() > PRUNE_EVERY) {
                if let Err(e) = self.rt().db.prune_seen() {
                    tracing::warn!("pruning seen message ids: {e}");
                }
                pruned = Some(std::time::Instant::now());
            }
            changes.mark_unchanged();
            match self.rt().db.inbox(&name) {
                Ok(items) => {
                    let chats: HashSet<String> = items.into_iter().map(|i| i.chat_id).collect();
                    for chat in chats {
                        if self.busy.lock().unwrap().insert((name.clone(), chat.clone())) {
                            tokio::spawn(self.clone().answer_chat(name.clone(), chat));
                        }
                    }
                }
                Err(e) => tracing::error!("channel {name}: reading the inbox: {e}"),
            }
            let _ = tokio::time::timeout(Duration::from_secs(60), changes.changed()).await;
        }
    }

    pub(super) async fn answer_chat(self: Arc<Self>, name: String, chat: String) {
        let key = (name.clone(), chat.clone());
        loop {
            let next = self.rt().db.inbox(&name).map(|items| items.into_iter().find(|i| i.chat_id == chat));
            let item = match next {
                Ok(Some(item)) => item,
                Ok(None) => {
                    // Leave, unless a message arrived while the worker saw us busy.
                    self.busy.lock().unwrap().remove(&key);
                    let more = self.rt().db.inbox(&name).is_ok_and(|i| i.iter().any(|i| i.chat_id == chat));
                    if more && self.busy.lock().unwrap().insert(key.clone()) {
                        continue;
                    }
                    return;
                }
                Err(e) => {
                    tracing::error!("channel {name}: reading the inbox: {e}");
                    break;
                }
            };
            // A place among the channel's turns, taken per message so one
            // busy chat does not keep the others waiting for all of its own.
            let places = self
                .turns
                .lock()
                .unwrap()
                .entry(name.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(TURNS_AT_ONCE)))
                .clone();
            let Ok(_place) = places.acquire_owned().await else { break };
            match self.rt().db.inbox_try(item.id) {
                Ok(Some(tries)) if tries > INBOX_TRIES => {
                    if let Err(e) = self.give_up(&name, &item) {
                        tracing::error!("channel {name}: giving up a message: {e}");
                        break;
                    }
                    continue;
                }
                Ok(Some(_)) => {}
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!("channel {name}: cannot record a turn, so the model is not asked: {e}");
                    break;
                }
            }
            // "typing…" goes out before the model is asked (so it shows even
            // for a quick answer), then is refreshed until the reply is ready.
            let show_typing = |rt: Arc<Runtime>, name: String, chat: String| async move {
                match tokio::time::timeout(Duration::from_secs(5), invoke(&rt, &name, Call::Typing(chat))).await {
                    Ok(Ok(_)) => true,
                    Ok(Err(e)) => {
                        tracing::debug!("{name}: typing indicator: {e}");
                        false
                    }
                    Err(_) => false,
                }
            };
            let first = show_typing(self.rt().clone(), name.clone(), chat.clone()).await;
            let typing = tokio::spawn({
                let (rt, name, chat) = (self.rt().clone(), name.clone(), chat.clone());
                async move {
                    if first {
                        loop {
                            tokio::time::sleep(TYPING_EVERY).await;
                            if !show_typing(rt.clone(), name.clone(), chat.clone()).await {
                                break;
                            }
                        }
                    }
                }
            });
            let who = self.who(&name, &item);
            // Everyone but an admin talks in a session of their own.
            let session = match &who {
                Who::Person { admin: false, .. } => format!("{name}:{}:{}", item.chat_id, item.sender_id),
                _ => format!("{name}:{}", item.chat_id),
            };
            // A question for the owner, or a skill proposed to them, goes
            // to this (admin's) chat at once.
            let ask = |e: Event| {
                let text = match e {
                    Event::Approval { id, tool, arguments, reason } => format!(
                        "Allow {tool}? ({reason})\n{}\nReply /allow {id}, /always {id} or /deny {id}.",
                        crate::approvals::arguments_for_owner(&arguments)
                    ),
                    Event::Proposal { text } => text,
                    _ => return,
                };
                if let Err(e) = self.rt().db.outbox_enqueue(&name, &chat, &text) {
                    tracing::error!("channel {name}: queueing a question for the owner: {e}");
                }
            };
            let reply = match crate::agent::contained(self.agent.turn_as(&session, &item.text, &who, &ask)).await {
                Ok(Ok(reply)) => reply.text,
                Ok(Err(e)) => format!("⚠️ {e}"),
                Err(_) => {
                    "⚠️ Something went wrong inside wasiclaw while answering this (a bug, in its log). Please try \
                           again."
                        .into()
                }
            };
            typing.abort();
            let reply_to = Some(item.message_id.clone());
            if let Err(e) = self.rt().db.inbox_done(item.id, Some((&name, &chat, &reply, reply_to))) {
                tracing::error!("channel {name}: saving the reply: {e}");
                break;
            }
        }
        self.busy.lock().unwrap().remove(&key);
    }

    /// Send queued messages, retrying with backoff; one chat stays in order.
    pub(super) async fn outbox_worker(self: Arc<Self>, name: String) {
        let mut changes = self.rt().db.changes.subscribe();
        loop {
            changes.mark_unchanged();
            let wait = match self.send_due(&name).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::error!("channel {name}: outbox: {e}");
                    Duration::from_secs(5)
                }
            };
            let _ = tokio::time::timeout(wait, changes.changed()).await;
        }
    }

    /// One pass over the outbox; returns how long until the next retry.
    pub(super) async fn send_due(&self, name: &str) -> Result<Duration, ChannelError> {
        let rt = self.rt();
        let pending: Vec<OutboxItem> = rt.db.outbox(Some(name))?.into_iter().filter(|i| i.held.is_none()).collect();
        self.status(name, |s| s.outbox_pending = pending.len());
        let Some(spec) = rt.channel_spec(name) else {
            return Ok(Duration::from_secs(30));
        };
        let mut chats: Vec<Vec<OutboxItem>> = Vec::new();
        let mut index = HashMap::new();
        for item in pending {
            let i = *index.entry(item.chat_id.clone()).or_insert_with(|| {
                chats.push(Vec::new());
                chats.len() - 1
            });
            chats[i].push(item);
        }
        let mut wait = Duration::from_secs(60);
        for items in chats {
            wait = wait.min(self.send_chat(name, &spec, items).await?);
        }
        Ok(wait)
    }

    /// Send one chat's due messages in order; returns how long until its
    /// next retry. A message that failed [`STUCK_AFTER`] times no longer
    /// holds back the later ones: each newer one first tries it again, and
    /// if it fails again while the newer one goes through, the platform
    /// refuses that message, not the chat, and it is held for the owner.
    ///
    /// Stuck messages go at the chat's pace, not one try each: one is tried
    /// on its own only as the oldest of its chat, or as the one probe after
    /// the oldest failed; and once [`STUCK_TRIES_PER_PASS`] of them failed in
    /// a pass, the rest wait. A chat that refuses everything (a group the
    /// bot was removed from, that a job still reports to) would otherwise
    /// cost a try of every message waiting for it, every few minutes, for
    /// good.
    async fn send_chat(
        &self,
        name: &str,
        spec: &ChannelSpec,
        items: Vec<OutboxItem>,
    ) -> Result<Duration, ChannelError> {
        let mut wait = Duration::from_secs(60);
        // Stuck messages passed over, those that failed just now, how many
        // stuck ones failed again this pass, and whether one went through
        // (the chat works: what follows is tried now, in order).
        let (mut passed, mut failing, mut refused, mut works) = (Vec::new(), Vec::new(), 0, false);
        for mut item in items {
            let now = now_ms();
            let stuck = item.attempts >= STUCK_AFTER;
            if item.next_ms > now && !works {
                wait = wait.min(Duration::from_millis((item.next_ms - now) as u64));
                if !stuck {
                    break;
                }
                passed.push(item);
                continue;
            }
            if stuck && !works && (!passed.is_empty() || refused >= STUCK_TRIES_PER_PASS) {
                passed.push(item);
                continue;
            }
            if !stuck {
                for mut earlier in std::mem::take(&mut passed) {
                    if refused >= STUCK_TRIES_PER_PASS {
                        passed.push(earlier);
                    } else if let Some(delay) = self.deliver(name, spec, &mut earlier).await? {
                        wait = wait.min(delay);
                        refused += 1;
                        failing.push(earlier);
                    } else {
                        works = true;
                    }
                }
            }
            match self.deliver(name, spec, &mut item).await? {
                None => {
                    works = true;
                    for earlier in failing.drain(..) {
                        self.hold(name, earlier)?;
                    }
                }
                Some(delay) => {
                    wait = wait.min(delay);
                    if item.attempts < STUCK_AFTER {
                        break;
                    }
                    refused += usize::from(stuck);
                    failing.push(item);
                }
            }
        }
        Ok(wait)
    }

    /// Send what is left of one message; `None` once it is all delivered,
    /// else how long until it is tried again.
    async fn deliver(
        &self,
        name: &str,
        spec: &ChannelSpec,
        item: &mut OutboxItem,
    ) -> Result<Option<Duration>, ChannelError> {
        let rt = self.rt();
        let pieces = crate::markup::render(&item.text, spec.markup, spec.max_length);
        for (i, piece) in pieces.iter().enumerate().skip(item.parts_sent) {
            let msg = Outbound {
                id: format!("wasiclaw-{}-{}-{i}", item.created_ms, item.id),
                chat_id: item.chat_id.clone(),
                text: piece.clone(),
                reply_to: if i == 0 { item.reply_to.clone() } else { None },
            };
            match invoke(rt, name, Call::Send(msg)).await {
                Ok((Answer::Sent(id), _)) => {
                    tracing::debug!("channel {name}: sent message {} to {}", one_line(&id), one_line(&item.chat_id));
                    item.parts_sent = i + 1;
                    rt.db.outbox_save(item)?;
                }
                Ok(_) => unreachable!("send answers a send"),
                Err(e) => {
                    let e = e.to_string();
                    item.attempts += 1;
                    let delay = Duration::from_secs(2u64.saturating_pow(item.attempts.min(16))).min(MAX_BACKOFF);
                    item.next_ms = now_ms() + delay.as_millis() as i64;
                    tracing::warn!(
                        "channel {name}: sending to {} failed (attempt {}), retrying in {delay:?}: {e}",
                        one_line(&item.chat_id),
                        item.attempts
                    );
                    self.status(name, |s| s.last_error = Some(format!("sending: {e}")));
                    item.last_error = Some(e);
                    rt.db.outbox_save(item)?;
                    return Ok(Some(delay));
                }
            }
        }
        rt.db.outbox_remove(item.id)?;
        self.status(name, |s| s.sent += 1);
        Ok(None)
    }

    /// Keep a message the platform refuses, unsent, and tell the owner.
    fn hold(&self, name: &str, mut item: OutboxItem) -> Result<(), ChannelError> {
        let rt = self.rt();
        let (id, attempts) = (item.id, item.attempts);
        tracing::warn!("channel {name}: a message to {} is held: refused {attempts} times", one_line(&item.chat_id));
        item.held = Some(format!("refused {attempts} times while a later message to this chat went through"));
        let retry = format!("`wasiclaw outbox --retry {id}` sends it again, `--drop {id}` gives it up.");
        let notice = format!(
            "A message to {name}:{} is held, unsent: the platform refused it {attempts} times while a later one to that chat went through (last error: {}). {retry}",
            item.chat_id,
            crate::text::truncate(item.last_error.as_deref().unwrap_or("none"), 200),
        );
        // The owner's chat hears of a channel's first held message only, in
        // the host's words alone: chat ids and errors are the channel's, and
        // one that refused message after message would speak there at its
        // pace. Nor through the refusing chat: a notice held there would be
        // noticed again, for ever.
        let first = !rt.db.outbox(Some(name))?.iter().any(|i| i.held.is_some() && i.id != id);
        let owner = crate::queue::owner_chat(rt.config.agent.owner_chat.as_deref(), &rt.db);
        let target = format!("{name}:{}", item.chat_id);
        let told = format!(
            "A message through the {name} channel is held, unsent: the platform refused it while later ones went through. `wasiclaw outbox` shows it; {retry}"
        );
        let tell = owner
            .as_deref()
            .filter(|o| first && *o != target)
            .and_then(|o| o.split_once(':'))
            .map(|(channel, chat)| (channel, chat, told.as_str()));
        rt.db.outbox_hold(&item, &notice, tell)?;
        Ok(())
    }

    /// Retire a message whose turns never ended: its sender hears so, in
    /// the host's words, and the owner finds it in `wasiclaw notifications`.
    fn give_up(&self, name: &str, item: &InboxItem) -> Result<(), StoreError> {
        let notice = format!(
            "A message to {name}:{} was not answered: its turn began {INBOX_TRIES} times and never ended (the \
             daemon stopped during it, or its answer could not be saved); the log says why.",
            one_line(&item.chat_id)
        );
        let sorry = "Sorry, I could not answer this message. Please try again later.";
        self.rt().db.inbox_give_up(item, sorry, &notice)
    }

    /// Who a message's sender is to the agent: an admin, or a person with
    /// a scope (in a group, the scope of their pairing for that chat).
    fn who(&self, channel: &str, item: &InboxItem) -> Who {
        let cfg = self.rt().config.channels.get(channel).cloned().unwrap_or_default();
        let key = crate::pairing::key(&item.sender_id, item.group.then_some(item.chat_id.as_str()));
        let id = crate::pairing::person_id(channel, &key);
        if cfg.admins.contains(&item.sender_id) {
            return Who::Person { admin: true, scope: Default::default(), id, group: item.group };
        }
        match self.rt().db.pairing(channel, &key) {
            Ok(Some(p)) if p.approved => Who::Person { admin: p.admin, scope: p.scope, id, group: item.group },
            _ => Who::Person { admin: false, scope: Default::default(), id, group: item.group },
        }
    }
}

/// `/allow 3`, `/always 3`, `/deny 3`: an answer to a waiting tool call.
fn approval_answer(text: &str) -> Option<(crate::approvals::Answer, u64)> {
    let mut words = text.split_whitespace();
    let answer = words.next().filter(|w| w.starts_with('/')).and_then(crate::approvals::Answer::parse)?;
    let id = words.next()?.parse().ok()?;
    words.next().is_none().then_some((answer, id))
}
