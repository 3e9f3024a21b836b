//! Chat channels: the host side of every channel component. The host owns
//! the transport (`transports.rs`: poll loop, webhook route, websocket),
//! admission, the agent's turn and sending (`route.rs`, over the inbox and
//! outbox of `queue.rs`); this file starts, supervises and reports them.
//! The component only translates platform payloads.
//!
//! Invariants:
//! - An inbound message is stored (inbox) and marked seen in one
//!   transaction before its cursor moves on, so a crash redelivers it and a
//!   redelivered message is answered once.
//! - Messages from senders who are not paired or allowed never reach the
//!   inbox, the agent or a session (see `pairing.rs`).
//! - A reply is queued in the outbox in the same transaction that retires
//!   its inbox entry; sending retries with backoff, piece by piece, and
//!   messages to one chat leave in order. Nothing is dropped on failure,
//!   except the oldest once a channel has `queue::OUTBOX_PER_CHANNEL`
//!   waiting (a platform down for weeks, or a channel refusing every send).
//! - A channel that fails (a trap, a denial, a dead connection) is
//!   restarted with backoff and shown in `wasiclaw status`; other channels
//!   and the agent are untouched.
//! - Secrets reach the platform only through the host: egress rules for
//!   HTTP, `{NAME}` placeholders in websocket frames; values are scrubbed
//!   from frames before the component sees them.

mod route;
mod transports;

use crate::agent::Agent;
use crate::component::{ChannelSpec, Transport};
use crate::contract::{self as api, ChannelAnswer as Answer, ChannelCall as Call, ChannelGuest};
use crate::engine::{CallError, HostCtx};
use crate::runtime::Runtime;
use crate::store::{StoreError, now_ms};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use transports::SocketState;

/// The shortest wait between polls, whatever the component asks.
const MIN_POLL_GAP: Duration = Duration::from_millis(200);
const PRUNE_EVERY: Duration = Duration::from_secs(6 * 3600);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often "typing…" is refreshed while the agent works (Telegram's lasts 5 s).
const TYPING_EVERY: Duration = Duration::from_secs(4);
const MAX_INBOUND_TEXT: usize = 32 * 1024;
/// The longest message, sender or chat id, and sender name, a channel may
/// give: the host stores them (inbox, seen, pairings, sessions' keys).
const MAX_INBOUND_ID: usize = 256;
/// Chats of one channel answered at once; the rest wait their turn, in
/// order. Each turn holds a model request, its session and its tool calls,
/// and a channel can make up 500 waiting chats, so without this a flood
/// would run 500 turns at once (the board's memory, the day's tokens).
pub const TURNS_AT_ONCE: usize = 4;

/// Turns begun for one message before it is given up: each may cost a
/// model request, and one that never ends (the daemon dies in it, or its
/// answer cannot be saved) would otherwise begin again at every restart.
pub const INBOX_TRIES: u32 = 3;

/// Where a channel is in its life, as `wasiclaw status` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelState {
    /// Started and serving.
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
    /// The channel's name.
    pub name: String,
    /// The transport in words.
    pub transport: String,
    /// Where it is in its life.
    pub state: ChannelState,
    /// The last failure, if it has not recovered since.
    pub last_error: Option<String>,
    /// Restarts since the daemon started.
    pub restarts: u32,
    /// When the next start is due (Unix ms), while restarting.
    pub retry_at_ms: Option<i64>,
    /// Messages received and admitted.
    pub received: u64,
    /// Messages sent.
    pub sent: u64,
    /// Messages dropped because their chat's or the channel's share of the
    /// inbox was full.
    #[serde(default)]
    pub dropped: u64,
    /// Messages waiting to be sent.
    pub outbox_pending: usize,
    /// Messages the platform refused, held for the owner.
    #[serde(default)]
    pub outbox_held: usize,
    /// Rights it asks for that are not granted.
    pub pending_rights: Vec<String>,
}

/// Why a channel call failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// No such channel is loaded.
    #[error("no channel named `{0}` is loaded; `wasiclaw skills list` shows what is installed")]
    Missing(String),
    /// The call failed in the sandbox.
    #[error("{0}")]
    Call(#[from] CallError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The websocket failed.
    #[error("websocket: {0}")]
    Socket(String),
    /// The host refused something the component asked for.
    #[error("host denied {0}")]
    Denied(String),
    /// An answer over [`MAX_ANSWER_BYTES`] or [`MAX_ANSWER_MESSAGES`].
    #[error(
        "answered {0} bytes in {1} messages; a channel may answer at most {mib} MiB and {MAX_ANSWER_MESSAGES} messages at once",
        mib = MAX_ANSWER_BYTES >> 20
    )]
    TooBig(usize, usize),
}

/// The most a channel may answer in one call. Fixed, not `output_kb`: a
/// real platform's batch (100 Telegram updates of 4,096 emoji) can pass
/// 1 MiB, and a refused batch is asked for again, so it must fit.
const MAX_ANSWER_BYTES: usize = 8 << 20;
/// The most messages in one answer: each costs dedup and pairing reads.
const MAX_ANSWER_MESSAGES: usize = 1000;

/// Run one call in a fresh sandbox with the channel's effective rights.
async fn invoke(rt: &Runtime, name: &str, call: Call) -> Result<(Answer, HostCtx), ChannelError> {
    let (pre, ctx) = loaded_channel(rt, name)?;
    // Calls of one component beyond the cap wait their turn.
    let _permit = ctx.budget.running.clone().acquire_owned().await.expect("the semaphore is never closed");
    let mut store = rt.engine.store(pre.engine(), ctx.clone(), None)?;
    let answer = rt.engine.guarded(&mut store, move |store| Box::pin(async move { pre.call(store, call).await })).await;
    // The host's own denial says what to grant; prefer it to the guest's words.
    let denied = ctx.denials.lock().unwrap().first().cloned();
    match (answer, denied) {
        (Ok(Ok(answer)), _) => match answer.size() {
            (bytes, messages) if bytes > MAX_ANSWER_BYTES || messages > MAX_ANSWER_MESSAGES => {
                Err(ChannelError::TooBig(bytes, messages))
            }
            _ => Ok((answer, ctx)),
        },
        (Ok(Err(_)) | Err(_), Some(denial)) => Err(ChannelError::Denied(denial)),
        (Ok(Err(e)), None) => Err(CallError::Tool(e).into()),
        (Err(e), None) => Err(e.into()),
    }
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
    /// Per channel: places for turns running at once ([`TURNS_AT_ONCE`]),
    /// shared across restarts like `busy`.
    turns: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// What `wasiclaw status` shows of each channel.
    board: Mutex<BTreeMap<String, ChannelStatus>>,
}

impl Channels {
    /// Channels of the daemon running `agent`.
    pub fn new(agent: Arc<Agent>) -> Arc<Self> {
        Arc::new(Channels {
            agent,
            running: Mutex::default(),
            busy: Mutex::default(),
            turns: Mutex::default(),
            board: Mutex::default(),
        })
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

/// The transport in words, for status and inspect.
pub fn describe_transport(name: &str, t: &Transport) -> String {
    match t {
        Transport::Poll { interval_ms: 0 } => "long polling".into(),
        Transport::Poll { interval_ms } => format!("polling every {interval_ms} ms"),
        Transport::Webhook => format!("webhook at /hooks/{name}/"),
        Transport::Websocket { url } => format!("websocket {url}"),
    }
}
