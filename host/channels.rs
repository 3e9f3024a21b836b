//! Chat channels: the host side of every channel component. The host owns
//! the transport (poll loop, webhook route, websocket), the inbox and
//! outbox, pairing, formatting and retries; the component only translates
//! platform payloads.
//!
//! Invariants:
//! - An inbound message is stored (inbox) and marked seen in one
//!   transaction before its cursor moves on, so a crash redelivers it and a
//!   redelivered message is answered once.
//! - Messages from senders who are not paired or allowed never reach the
//!   inbox, the agent or a session (see `pairing.rs`).
//! - A reply is queued in the outbox in the same transaction that retires
//!   its inbox entry; sending retries with backoff, piece by piece, and
//!   messages to one chat leave in order. Nothing is dropped on failure.
//! - A channel that fails (a trap, a denial, a dead connection) is
//!   restarted with backoff and shown in `wasiclaw status`; other channels
//!   and the agent are untouched.
//! - Secrets reach the platform only through the host: egress rules for
//!   HTTP, `{NAME}` placeholders in websocket frames; values are scrubbed
//!   from frames before the component sees them.

use crate::agent::{Agent, Event, Who};
use crate::component::{ChannelSpec, Transport};
use crate::config::Groups;
use crate::contract::{self as api, ChannelAnswer as Answer, ChannelCall as Call, ChannelGuest, Inbound, Outbound};
use crate::engine::{CallError, HostCtx, describe_tool_error};
use crate::pairing::Verdict;
use crate::queue::InboxItem;
use crate::runtime::Runtime;
use crate::store::{StoreError, now_ms};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// The shortest wait between polls, whatever the component asks.
const MIN_POLL_GAP: Duration = Duration::from_millis(200);
const PRUNE_EVERY: Duration = Duration::from_secs(6 * 3600);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often "typing…" is refreshed while the agent works (Telegram's lasts 5 s).
const TYPING_EVERY: Duration = Duration::from_secs(4);
const MAX_INBOUND_TEXT: usize = 32 * 1024;

/// Where a channel is in its life, as `wasiclaw status` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelState {
    #[default]
    Running,
    /// Failed; waiting out its backoff before the next start.
    Restarting,
    /// Not started (its transport cannot work, e.g. a webhook with the gateway off).
    Stopped,
    /// This build is not approved; it does not start until it is.
    NeedsApproval,
}

impl std::fmt::Display for ChannelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::text::variant_name(self))
    }
}

/// One channel as `wasiclaw status` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChannelStatus {
    pub name: String,
    pub transport: String,
    pub state: ChannelState,
    pub last_error: Option<String>,
    pub restarts: u32,
    pub retry_at_ms: Option<i64>,
    pub received: u64,
    pub sent: u64,
    pub outbox_pending: usize,
    /// Rights it asks for that are not granted.
    pub pending_rights: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("no channel named `{0}` is loaded; `wasiclaw skills list` shows what is installed")]
    Missing(String),
    #[error("{0}")]
    Call(#[from] CallError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("websocket: {0}")]
    Socket(String),
    #[error("host denied {0}")]
    Denied(String),
}

/// Run one call in a fresh sandbox with the channel's effective rights.
async fn invoke(rt: &Runtime, name: &str, call: Call) -> Result<(Answer, HostCtx), ChannelError> {
    let (pre, ctx) = loaded_channel(rt, name)?;
    // Calls of one component beyond the cap wait their turn.
    let _permit = ctx.budget.running.clone().acquire_owned().await.expect("the semaphore is never closed");
    let mut store = rt.engine.store(ctx.clone(), None)?;
    let answer = rt.engine.guarded(&mut store, move |store| Box::pin(async move { pre.call(store, call).await })).await;
    // The host's own denial says what to grant; prefer it to the guest's words.
    let denied = ctx.denials.lock().unwrap().first().cloned();
    match (answer, denied) {
        (Ok(Ok(answer)), _) => Ok((answer, ctx)),
        (Ok(Err(_)) | Err(_), Some(denial)) => Err(ChannelError::Denied(denial)),
        (Ok(Err(e)), None) => Err(CallError::Tool(e).into()),
        (Err(e), None) => Err(e.into()),
    }
}

fn spec_of(rt: &Runtime, name: &str) -> Option<ChannelSpec> {
    rt.channel_spec(name)
}

type Running = (String, Vec<JoinHandle<()>>);

/// The running channels of a daemon.
pub struct Channels {
    agent: Arc<Agent>,
    /// Per channel: the sha256 running and its tasks.
    running: Mutex<HashMap<String, Running>>,
    /// (channel, chat) pairs a task is answering. Shared across restarts
    /// of a channel so a replaced worker never answers a message twice.
    busy: Mutex<HashSet<(String, String)>>,
    /// What `wasiclaw status` shows of each channel.
    board: Mutex<BTreeMap<String, ChannelStatus>>,
}

impl Channels {
    pub fn new(agent: Arc<Agent>) -> Arc<Self> {
        Arc::new(Channels { agent, running: Mutex::default(), busy: Mutex::default(), board: Mutex::default() })
    }

    /// Every channel's status, by name.
    pub fn board(&self) -> Vec<ChannelStatus> {
        self.board.lock().unwrap().values().cloned().collect()
    }

    fn rt(&self) -> &Arc<Runtime> {
        &self.agent.rt
    }

    /// Start channels that appeared or changed, stop those that are gone.
    pub fn reconcile(self: &Arc<Self>) {
        let rt = self.rt().clone();
        let mut wanted: BTreeMap<String, (String, ChannelSpec)> = BTreeMap::new();
        for entry in rt.registry.entries() {
            if let Ok(loaded) = &entry.loaded
                && let Some((_, spec)) = loaded.channel()
            {
                let name = loaded.manifest.name.clone();
                if !rt.approved(&name) {
                    let transport = describe_transport(&name, &spec.transport);
                    let status = ChannelStatus {
                        name: name.clone(),
                        transport,
                        state: ChannelState::NeedsApproval,
                        last_error: Some(unapproved(&name)),
                        ..Default::default()
                    };
                    self.board.lock().unwrap().insert(name, status);
                    continue;
                }
                wanted.insert(name, (entry.sha256.clone(), spec.clone()));
            }
        }
        let mut running = self.running.lock().unwrap();
        running.retain(|name, (sha, tasks)| {
            let keep = wanted.get(name).is_some_and(|(s, _)| s == sha);
            if !keep {
                tasks.iter().for_each(JoinHandle::abort);
                tracing::info!("channel {name} stopped");
                let mut board = self.board.lock().unwrap();
                if !wanted.contains_key(name) && board.get(name).is_none_or(|s| s.state != ChannelState::NeedsApproval)
                {
                    board.remove(name);
                }
            }
            keep
        });
        for (name, (sha, spec)) in wanted {
            if running.contains_key(&name) {
                continue;
            }
            tracing::info!("channel {name} starting ({})", describe_transport(&name, &spec.transport));
            let gateway_off = spec.transport == Transport::Webhook && !rt.config.gateway.enabled;
            self.board.lock().unwrap().insert(
                name.clone(),
                ChannelStatus {
                    name: name.clone(),
                    transport: describe_transport(&name, &spec.transport),
                    state: if gateway_off { ChannelState::Stopped } else { ChannelState::Running },
                    last_error: gateway_off.then(|| {
                        "the gateway is off ([gateway] enabled = false in config.toml), so no webhook can arrive".into()
                    }),
                    ..Default::default()
                },
            );
            let tasks = vec![
                tokio::spawn(self.clone().supervise(name.clone(), spec.transport.clone())),
                tokio::spawn(self.clone().inbox_worker(name.clone())),
                tokio::spawn(self.clone().outbox_worker(name.clone())),
            ];
            running.insert(name, (sha, tasks));
        }
    }

    fn status(&self, name: &str, f: impl FnOnce(&mut ChannelStatus)) {
        if let Some(s) = self.board.lock().unwrap().get_mut(name) {
            f(s);
        }
    }

    /// Keep the transport up: restart it with backoff when it fails.
    async fn supervise(self: Arc<Self>, name: String, transport: Transport) {
        let mut backoff = Duration::from_secs(1);
        let mut socket_state = SocketState::default();
        loop {
            let started = std::time::Instant::now();
            let result = match &transport {
                Transport::Poll { interval_ms } => self.poll_loop(&name, *interval_ms).await,
                Transport::Webhook => return, // the gateway drives it
                Transport::Websocket { url } => self.socket_loop(&name, url, &mut socket_state).await,
            };
            let Err(e) = result else { return };
            if started.elapsed() > Duration::from_secs(60) {
                backoff = Duration::from_secs(1);
            }
            tracing::warn!("channel {name} failed, restarting in {backoff:?}: {e}");
            self.status(&name, |s| {
                s.state = ChannelState::Restarting;
                s.last_error = Some(e.to_string());
                s.restarts += 1;
                s.retry_at_ms = Some(now_ms() + backoff.as_millis() as i64);
            });
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            self.status(&name, |s| {
                s.state = ChannelState::Running;
                s.retry_at_ms = None;
            });
        }
    }

    async fn poll_loop(&self, name: &str, interval_ms: u32) -> Result<(), ChannelError> {
        let rt = self.rt();
        loop {
            let cursor = rt.db.cursor(name)?;
            let (Answer::Poll(messages, next), _) = invoke(rt, name, Call::Poll(cursor.clone())).await? else {
                unreachable!("poll answers a poll")
            };
            let got = !messages.is_empty();
            self.status(name, |s| s.last_error = None);
            self.inbound(name, messages)?;
            if next != cursor {
                rt.db.set_cursor(name, next.as_deref())?;
            }
            if !got {
                tokio::time::sleep(Duration::from_millis(interval_ms as u64).max(MIN_POLL_GAP)).await;
            }
        }
    }

    /// Admit messages from the platform: dedup, pairing, then the inbox.
    fn inbound(&self, name: &str, messages: Vec<Inbound>) -> Result<(), ChannelError> {
        let db = &self.rt().db;
        let cfg = self.rt().config.channels.get(name).cloned().unwrap_or_default();
        for m in messages {
            if m.text.trim().is_empty() || m.text.len() > MAX_INBOUND_TEXT || db.seen(name, &m.message_id)? {
                continue;
            }
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
                        db.mark_seen(name, &m.message_id)?;
                        if !self.rt().questions.answer(id, answer) {
                            db.outbox_enqueue(name, &m.chat_id, &format!("No tool call is waiting for answer {id}."))?;
                        }
                    } else if let Some(code) = m.text.trim().strip_prefix("/approve ").filter(|_| admin) {
                        db.mark_seen(name, &m.message_id)?;
                        let reply = match crate::queue::approve(db, code, false)? {
                            Some(p) => format!("Approved {} ({}:{}).", p.sender_name, p.channel, p.sender_id),
                            None => format!("No pending pairing has the code {}.", code.trim()),
                        };
                        db.outbox_enqueue(name, &m.chat_id, &reply)?;
                    } else if db.inbox_accept(InboxItem {
                        id: 0,
                        channel: name.into(),
                        chat_id: m.chat_id,
                        group: m.group,
                        sender_id: m.sender_id,
                        text: m.text,
                        message_id: m.message_id,
                        received_ms: now_ms(),
                    })? {
                        self.status(name, |s| s.received += 1);
                    }
                }
                Verdict::SendCode(code) => {
                    db.mark_seen(name, &m.message_id)?;
                    tracing::info!(
                        "{name}: {} ({}) asks to pair; approve with `wasiclaw pairing approve {code}`",
                        m.sender_name,
                        m.sender_id
                    );
                    db.outbox_enqueue(name, &m.chat_id, &crate::pairing::code_message(&code))?;
                }
                Verdict::Ignore => {
                    db.mark_seen(name, &m.message_id)?;
                }
            }
        }
        Ok(())
    }

    /// Answer inbox messages: one task per chat, in order within a chat.
    async fn inbox_worker(self: Arc<Self>, name: String) {
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

    async fn answer_chat(self: Arc<Self>, name: String, chat: String) {
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
            // A question for the owner goes to this (admin's) chat at once.
            let ask = |e: Event| {
                if let Event::Approval { id, tool, arguments, reason } = e {
                    let text = format!(
                        "Allow {tool} {}? ({reason})\nReply /allow {id}, /always {id} or /deny {id}.",
                        crate::text::truncate(&arguments, 300)
                    );
                    if let Err(e) = self.rt().db.outbox_enqueue(&name, &chat, &text) {
                        tracing::error!("channel {name}: queueing an approval question: {e}");
                    }
                }
            };
            let reply = match self.agent.turn_as(&session, &item.text, &who, &ask).await {
                Ok(reply) => reply.text,
                Err(e) => format!("⚠️ {e}"),
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
    async fn outbox_worker(self: Arc<Self>, name: String) {
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
    async fn send_due(&self, name: &str) -> Result<Duration, ChannelError> {
        let rt = self.rt();
        let mut wait = Duration::from_secs(60);
        let mut blocked = HashSet::new();
        let pending = rt.db.outbox(Some(name))?;
        self.status(name, |s| s.outbox_pending = pending.len());
        let spec = spec_of(rt, name);
        for mut item in pending {
            if blocked.contains(&item.chat_id) {
                continue;
            }
            let now = now_ms();
            if item.next_ms > now {
                wait = wait.min(Duration::from_millis((item.next_ms - now) as u64));
                blocked.insert(item.chat_id.clone());
                continue;
            }
            let Some(spec) = &spec else {
                return Ok(Duration::from_secs(30));
            };
            let pieces = crate::markup::render(&item.text, spec.markup, spec.max_length);
            let mut failed = None;
            for (i, piece) in pieces.iter().enumerate().skip(item.parts_sent) {
                let msg = Outbound {
                    id: format!("wasiclaw-{}-{}-{i}", item.created_ms, item.id),
                    chat_id: item.chat_id.clone(),
                    text: piece.clone(),
                    reply_to: if i == 0 { item.reply_to.clone() } else { None },
                };
                match invoke(rt, name, Call::Send(msg)).await {
                    Ok((Answer::Sent(id), _)) => {
                        tracing::debug!("channel {name}: sent message {id} to {}", item.chat_id);
                        item.parts_sent = i + 1;
                        rt.db.outbox_save(&item)?;
                    }
                    Ok(_) => unreachable!("send answers a send"),
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            match failed {
                None => {
                    rt.db.outbox_remove(item.id)?;
                    self.status(name, |s| s.sent += 1);
                }
                Some(e) => {
                    item.attempts += 1;
                    let delay = Duration::from_secs(2u64.saturating_pow(item.attempts.min(16))).min(MAX_BACKOFF);
                    item.next_ms = now_ms() + delay.as_millis() as i64;
                    tracing::warn!(
                        "channel {name}: sending to {} failed (attempt {}), retrying in {delay:?}: {e}",
                        item.chat_id,
                        item.attempts
                    );
                    item.last_error = Some(e.clone());
                    rt.db.outbox_save(&item)?;
                    self.status(name, |s| s.last_error = Some(format!("sending: {e}")));
                    blocked.insert(item.chat_id.clone());
                    wait = wait.min(delay);
                }
            }
        }
        Ok(wait)
    }

    /// A request to `/hooks/<name>/...`.
    pub async fn webhook(&self, name: &str, request: api::HttpRequest) -> api::HttpResponse {
        let text = |status: u16, body: &str| api::HttpResponse {
            status,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: format!("{body}\n").into_bytes(),
        };
        match spec_of(self.rt(), name) {
            Some(spec) if spec.transport == Transport::Webhook => {}
            Some(_) => return text(404, &format!("channel {name} does not take webhooks")),
            None => return text(404, &format!("no channel named {name}")),
        }
        match invoke(self.rt(), name, Call::Webhook(request)).await {
            Ok((Answer::Webhook(reply), _)) => {
                if let Err(e) = self.inbound(name, reply.messages) {
                    tracing::error!("channel {name}: storing inbound messages: {e}");
                    return text(503, "could not store the message; retry later");
                }
                reply.response
            }
            Ok(_) => unreachable!("on-webhook answers a webhook"),
            Err(e) => {
                tracing::warn!("channel {name}: webhook: {e}");
                // Bad input is the sender's problem; a denial or a crash is
                // the owner's, so it shows in `wasiclaw status`.
                let (status, body) = match &e {
                    ChannelError::Call(CallError::Tool(t)) => (400, describe_tool_error(t)),
                    ChannelError::Denied(_) => (503, "this channel is not fully granted yet".to_string()),
                    _ => (500, "the channel failed; the owner can see why in `wasiclaw status`".to_string()),
                };
                if status != 400 {
                    self.status(name, |s| s.last_error = Some(e.to_string()));
                }
                text(status, &body)
            }
        }
    }

    /// One websocket connection, until it closes or fails.
    async fn socket_loop(&self, name: &str, first_url: &str, st: &mut SocketState) -> Result<(), ChannelError> {
        let rt = self.rt();
        loop {
            let url = st.url.clone().unwrap_or_else(|| first_url.to_string());
            let (_, ctx) = loaded_channel(rt, name)?;
            let uri: http::Uri = url.parse().map_err(|e| ChannelError::Socket(format!("bad URL {url}: {e}")))?;
            let authorized = match crate::egress::authorize(&ctx, "GET", &uri).await {
                Ok(a) => {
                    ctx.audit("http", &format!("websocket {url}"), true, &format!("to {}", a.addr));
                    a
                }
                Err(reason) => {
                    let reason = reason.to_string();
                    ctx.audit("http", &format!("websocket {url}"), false, &reason);
                    return Err(ChannelError::Call(CallError::Tool(crate::engine::ToolError::Denied(format!(
                        "websocket {url}: {reason}"
                    )))));
                }
            };
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut request = authorized
                .decision
                .uri
                .to_string()
                .into_client_request()
                .map_err(|e| ChannelError::Socket(format!("bad URL {url}: {e}")))?;
            for (k, v) in &authorized.decision.headers {
                request.headers_mut().insert(k.clone(), v.clone());
            }
            // To the vetted address, with TLS checked against the name.
            let stream = match crate::egress::connect(&authorized).await {
                Ok(stream) => stream,
                Err(e) => {
                    ctx.audit("http", &format!("websocket {url}"), false, &format!("cannot connect: {e}"));
                    return Err(ChannelError::Socket(format!("cannot connect to {url}: {e}")));
                }
            };
            let connect = tokio_tungstenite::client_async(request, stream);
            let (mut ws, _) = tokio::time::timeout(Duration::from_secs(30), connect)
                .await
                .map_err(|_| ChannelError::Socket(format!("connecting to {url} timed out")))?
                .map_err(|e| ChannelError::Socket(format!("cannot connect to {url}: {e}")))?;
            // Frames may carry only the secrets the socket's own rule names.
            let frame_secrets = authorized.decision.secrets.clone();
            tracing::info!("channel {name}: connected to {url}");
            self.status(name, |s| s.last_error = None);
            let mut ticker: Option<tokio::time::Interval> = None;
            let mut event = Some(api::SocketEvent::Opened);
            loop {
                if let Some(ev) = event.take() {
                    let (Answer::Socket(reply), ctx) = invoke(rt, name, Call::Socket(ev, st.state.clone())).await?
                    else {
                        unreachable!("on-socket answers a socket event")
                    };
                    st.state = reply.state;
                    if let Some(u) = reply.url {
                        st.url = Some(u);
                    }
                    if let Some(ms) = reply.tick_ms {
                        let every = Duration::from_millis(ms.max(100) as u64);
                        ticker = Some(tokio::time::interval_at(tokio::time::Instant::now() + every, every));
                    }
                    for frame in reply.send {
                        let frame = fill_secrets(&ctx, &frame, &frame_secrets);
                        ws.send(tokio_tungstenite::tungstenite::Message::text(frame))
                            .await
                            .map_err(|e| ChannelError::Socket(format!("sending a frame: {e}")))?;
                    }
                    self.inbound(name, reply.messages)?;
                    if reply.reconnect {
                        let _ = ws.close(None).await;
                        break;
                    }
                }
                let tick = async {
                    match ticker.as_mut() {
                        Some(t) => t.tick().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tick => event = Some(api::SocketEvent::Tick),
                    frame = ws.next() => {
                        use tokio_tungstenite::tungstenite::Message;
                        match frame {
                            Some(Ok(Message::Text(t))) => {
                                let secrets = secret_values(&loaded_channel(rt, name)?.1);
                                let clean = crate::redact::redact(t.as_bytes(), &secrets);
                                event = Some(api::SocketEvent::Frame(String::from_utf8_lossy(&clean).into_owned()));
                            }
                            // Backed off like a failure: a server that keeps
                            // closing at once must not be hammered.
                            Some(Ok(Message::Close(_))) | None => {
                                return Err(ChannelError::Socket(format!("{url} closed the connection")));
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => return Err(ChannelError::Socket(format!("{url}: {e}"))),
                        }
                    }
                }
            }
        }
    }
}

/// What a websocket channel keeps across reconnects.
#[derive(Default)]
struct SocketState {
    state: Option<String>,
    url: Option<String>,
}

/// `/allow 3`, `/always 3`, `/deny 3`: an answer to a waiting tool call.
fn approval_answer(text: &str) -> Option<(crate::approvals::Answer, u64)> {
    let mut words = text.split_whitespace();
    let answer = words.next().filter(|w| w.starts_with('/')).and_then(crate::approvals::Answer::parse)?;
    let id = words.next()?.parse().ok()?;
    words.next().is_none().then_some((answer, id))
}

impl Channels {
    /// Who a message's sender is to the agent: an admin, or a person with
    /// a scope (in a group, the scope of their pairing for that chat).
    fn who(&self, channel: &str, item: &InboxItem) -> Who {
        let cfg = self.rt().config.channels.get(channel).cloned().unwrap_or_default();
        if cfg.admins.contains(&item.sender_id) {
            return Who::Person { admin: true, scope: Default::default() };
        }
        let key = crate::pairing::key(&item.sender_id, item.group.then_some(item.chat_id.as_str()));
        match self.rt().db.pairing(channel, &key) {
            Ok(Some(p)) if p.approved => Who::Person { admin: p.admin, scope: p.scope },
            _ => Who::Person { admin: false, scope: Default::default() },
        }
    }
}

/// A loaded channel's component and the context of a call with its
/// current rights (recomputed each time, so grants apply at once).
fn loaded_channel(rt: &Runtime, name: &str) -> Result<(ChannelGuest, HostCtx), ChannelError> {
    let missing = || ChannelError::Missing(name.into());
    let entry = rt.registry.find(name).ok_or_else(missing)?;
    let loaded = entry.loaded.as_ref().map_err(|_| missing())?;
    let (pre, _) = loaded.channel().ok_or_else(missing)?;
    let ctx = rt.rights(name, &entry.sha256, &loaded.manifest.capabilities)?;
    // A changed or unapproved build never sees the channel's cursor,
    // messages or outbox: they wait for the owner's approval.
    if !ctx.effective.approved {
        return Err(ChannelError::Denied(unapproved(name)));
    }
    Ok((pre.clone(), ctx))
}

fn unapproved(name: &str) -> String {
    format!(
        "this build of channel {name} is not approved; run `wasiclaw skills approve {name}` (see `wasiclaw skills inspect {name}`)"
    )
}

/// Values of the secrets granted to a channel, to scrub from what it reads.
fn secret_values(ctx: &HostCtx) -> Vec<String> {
    let names = ctx.effective.secrets.iter().chain(&ctx.effective.crypto_secrets);
    names.filter_map(|n| ctx.secrets.get(n).ok().flatten()).collect()
}

/// Fill `{NAME}` placeholders of the secrets the socket's rule names
/// (`allowed`), JSON-string-escaped (frames are JSON on every platform we
/// speak). Any other placeholder is left as written and audited.
fn fill_secrets(ctx: &HostCtx, frame: &str, allowed: &[(String, String)]) -> String {
    let mut out = frame.to_string();
    for name in crate::grants::placeholders(frame) {
        match allowed.iter().find(|(n, _)| *n == name) {
            Some((_, value)) => {
                ctx.audit("secret", &name, true, "websocket frame");
                let escaped = serde_json::to_string(value).expect("strings serialize");
                out = out.replace(&format!("{{{name}}}"), &escaped[1..escaped.len() - 1]);
            }
            None => ctx.audit("secret", &name, false, "websocket frame: not named by the rule of this socket's URL"),
        }
    }
    out
}

/// The transport in words, for status and inspect.
pub fn describe_transport(name: &str, t: &Transport) -> String {
    match t {
        Transport::Poll { interval_ms: 0 } => "long polling".into(),
        Transport::Poll { interval_ms } => format!("polling every {interval_ms} ms"),
        Transport::Webhook => format!("webhook at /hooks/{name}/"),
        Transport::Websocket { url } => format!("websocket {url}"),
    }
}
