//! The local API: one JSON request and one JSON reply per connection on
//! `<state-dir>/wasiclaw.sock` (mode 0600). While the daemon runs it owns
//! the database (redb locks it to one process), so the CLI sends it the
//! same `Request` it would otherwise run itself.

use crate::agent::{Agent, Emit};
use crate::channels::{ChannelStatus, Channels};
use crate::grants::GrantChange;
use crate::runtime::{Runtime, RuntimeError};
use crate::scheduler::Scheduler;
use crate::store::now_ms;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Everything the CLI can ask of a running daemon.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Status,
    SkillsList,
    SkillsInspect {
        name: String,
    },
    Grant {
        name: String,
        change: GrantChange,
    },
    Revoke {
        name: String,
        change: GrantChange,
    },
    Tool {
        skill: String,
        tool: String,
        args: String,
    },
    Audit {
        skill: Option<String>,
        limit: usize,
    },
    Notifications {
        limit: usize,
    },
    Usage {
        days: usize,
    },
    MemoryAdd {
        text: String,
        tags: Vec<String>,
        pinned: bool,
    },
    MemorySearch {
        query: String,
        limit: usize,
    },
    MemoryList,
    MemoryForget {
        id: u64,
    },
    MemoryPin {
        id: u64,
        pinned: bool,
    },
    MemoryExport,
    MemoryImport {
        jsonl: String,
    },
    CronAdd {
        job: crate::jobs::NewJob,
    },
    CronList,
    CronRm {
        id: u64,
    },
    CronRunNow {
        id: u64,
    },
    CronHistory {
        id: Option<u64>,
        limit: usize,
    },
    /// One chat turn; the daemon streams `Reply::Event` lines before the reply.
    Chat {
        session: String,
        text: String,
    },
    PairingList,
    PairingApprove {
        code: String,
        admin: bool,
    },
    PairingRevoke {
        channel: String,
        sender: String,
    },
    /// Messages waiting to be sent through channels.
    Outbox,
    /// Give up on a queued message.
    OutboxDrop {
        id: u64,
    },
    /// What a paired non-admin may use.
    PairingGrant {
        channel: String,
        sender: String,
        scope: crate::pairing::Scope,
    },
    /// The owner's answer to a tool call waiting for approval.
    Answer {
        id: u64,
        answer: crate::approvals::Answer,
    },
    /// Tools the owner answered "always" for.
    ApprovalsList,
    ApprovalsRevoke {
        tool: String,
    },
}

impl Request {
    /// Whether answering needs the skills folder loaded (a CLI without a
    /// daemon skips compiling skills otherwise).
    pub fn needs_skills(&self) -> bool {
        matches!(
            self,
            Request::Status
                | Request::SkillsList
                | Request::SkillsInspect { .. }
                | Request::Grant { .. }
                | Request::Revoke { .. }
                | Request::Tool { .. }
                | Request::Chat { .. }
                | Request::CronAdd { .. }
                | Request::CronRunNow { .. }
        )
    }

    /// Whether answering needs the agent (and so a model connection).
    pub fn needs_agent(&self) -> bool {
        matches!(self, Request::Chat { .. } | Request::CronRunNow { .. })
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reply {
    Ok(Value),
    Err(String),
    /// Progress of a chat turn, streamed before the final reply.
    Event(crate::agent::Event),
}

/// Run one request. Chat needs the agent; `emit` receives its events.
/// `channels` are the daemon's running channels (none outside it).
pub async fn dispatch(
    rt: &Runtime,
    agent: Option<&Agent>,
    channels: Option<&Channels>,
    request: Request,
    emit: Emit<'_>,
) -> Reply {
    let daemon = channels.is_some();
    let value = async {
        Ok::<Value, crate::runtime::RuntimeError>(match request {
            Request::Status => {
                let skills = rt.skills()?;
                let mut channels: Vec<ChannelStatus> = channels.map(Channels::board).unwrap_or_default();
                let outbox = rt.db.outbox(None)?;
                for c in &mut channels {
                    c.outbox_pending = outbox.iter().filter(|o| o.channel == c.name).count();
                    c.pending_rights =
                        skills.iter().find(|s| s.name == c.name).map(|s| s.pending.clone()).unwrap_or_default();
                }
                let mut by_state: std::collections::BTreeMap<&str, usize> = Default::default();
                for s in &skills {
                    *by_state.entry(s.status.as_str()).or_default() += 1;
                }
                let jobs = rt.db.jobs().map_err(|e| RuntimeError::Invalid(e.to_string()))?;
                let next_run = jobs.iter().filter_map(|j| j.next_ms).min();
                let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                let cache: u64 = std::fs::read_dir(rt.paths.cache_dir())
                    .map(|d| d.filter_map(Result::ok).map(|e| size(&e.path())).sum())
                    .unwrap_or(0);
                let models: Vec<String> =
                    rt.config.providers.iter().map(|p| format!("{} ({:?}, {})", p.model, p.kind, p.base_url)).collect();
                json!({
                    "daemon": daemon,
                    "version": env!("CARGO_PKG_VERSION"),
                    "pid": std::process::id(),
                    "uptime_s": (now_ms() - rt.started_ms) / 1000,
                    "state_dir": rt.paths.state_dir,
                    "models": models,
                    "skills": skills.iter().filter(|s| s.channel.is_none()).count(),
                    "components_by_state": by_state,
                    "channels": channels,
                    "jobs": jobs.len(),
                    "next_run_ms": next_run,
                    "tokens_today": rt.db.usage_today()?.tokens(),
                    "daily_token_budget": rt.config.agent.daily_token_budget,
                    "database_bytes": size(&rt.paths.database()),
                    "cache_bytes": cache,
                    "outbox_pending": outbox.len(),
                    "audit_records": rt.db.audit_count()?,
                    "rescans": rt.rescans.load(std::sync::atomic::Ordering::Relaxed),
                })
            }
            Request::PairingList => serde_json::to_value(rt.db.pairings()?)?,
            Request::PairingApprove { code, admin } => match crate::queue::approve(&rt.db, &code, admin)? {
                Some(p) => serde_json::to_value(p)?,
                None => {
                    return Err(RuntimeError::Invalid(format!(
                        "no pending pairing has the code {code} (codes expire after an hour); `wasiclaw pairing list` shows requests"
                    )));
                }
            },
            Request::PairingGrant { channel, sender, scope } => match rt.db.pairing_grant(&channel, &sender, scope)? {
                Some(p) => serde_json::to_value(p)?,
                None => {
                    return Err(RuntimeError::Invalid(format!(
                        "{channel} has no approved pairing for sender {sender}; `wasiclaw pairing list` shows them"
                    )));
                }
            },
            Request::Answer { id, answer } => json!({ "answered": rt.questions.answer(id, answer) }),
            Request::ApprovalsList => json!(rt.db.approvals()?),
            Request::ApprovalsRevoke { tool } => {
                if !rt.db.approval_revoke(&tool)? {
                    return Err(RuntimeError::Invalid(format!(
                        "no \"always\" answer for {tool}; `wasiclaw approvals list` shows them"
                    )));
                }
                json!({ "revoked": tool })
            }
            Request::PairingRevoke { channel, sender } => {
                if !rt.db.pairing_revoke(&channel, &sender)? {
                    return Err(RuntimeError::Invalid(format!(
                        "{channel} has no pairing for sender {sender}; `wasiclaw pairing list` shows them"
                    )));
                }
                json!({ "channel": channel, "sender": sender })
            }
            Request::Outbox => serde_json::to_value(rt.db.outbox(None)?)?,
            Request::OutboxDrop { id } => {
                if !rt.db.outbox_remove(id)? {
                    return Err(RuntimeError::Invalid(format!("no queued message {id}; `wasiclaw outbox` lists them")));
                }
                json!({ "id": id })
            }
            Request::SkillsList => serde_json::to_value(rt.skills()?)?,
            Request::SkillsInspect { name } => serde_json::to_value(rt.inspect(&name)?)?,
            Request::Grant { name, change } => {
                let (info, notes) = rt.change_grant(&name, &change, false)?;
                json!({"skill": info, "notes": notes})
            }
            Request::Revoke { name, change } => {
                let (info, notes) = rt.change_grant(&name, &change, true)?;
                json!({"skill": info, "notes": notes})
            }
            Request::Tool { skill, tool, args } => serde_json::to_value(rt.call_tool(&skill, &tool, &args).await?)?,
            Request::Audit { skill, limit } => serde_json::to_value(rt.audit(skill.as_deref(), limit)?)?,
            Request::Notifications { limit } => serde_json::to_value(rt.notifications(limit)?)?,
            Request::Usage { days } => serde_json::to_value(rt.db.usage(days)?)?,
            Request::MemoryAdd { text, tags, pinned } => {
                if text.trim().is_empty() {
                    return Err(RuntimeError::Invalid("a memory needs some text".into()));
                }
                serde_json::to_value(rt.memories().save(&text, tags, "cli", pinned).await?)?
            }
            Request::MemorySearch { query, limit } => serde_json::to_value(rt.memories().search(&query, limit).await?)?,
            Request::MemoryList => serde_json::to_value(rt.db.memory_all()?)?,
            Request::MemoryForget { id } => found(id, rt.db.memory_forget(id)?)?,
            Request::MemoryPin { id, pinned } => found(id, rt.db.memory_pin(id, pinned)?)?,
            Request::MemoryExport => json!(rt.memories().export()?),
            Request::CronAdd { job } => serde_json::to_value(rt.schedule(job, now_ms()).map_err(sched)?)?,
            Request::CronList => serde_json::to_value(rt.db.jobs().map_err(sched)?)?,
            Request::CronRm { id } => {
                if !rt.db.job_remove(id).map_err(sched)? {
                    return Err(RuntimeError::Invalid(format!("no job {id}; `wasiclaw cron list` shows them")));
                }
                json!({ "id": id })
            }
            Request::CronRunNow { id } => {
                let agent = agent.ok_or_else(|| RuntimeError::Invalid("running a job needs the agent".into()))?;
                let now = now_ms();
                if !rt.db.job_due_now(id, now).map_err(sched)? {
                    return Err(RuntimeError::Invalid(format!("no job {id}; `wasiclaw cron list` shows them")));
                }
                let ran = Scheduler { agent }
                    .tick(jiff::Timestamp::from_millisecond(now).expect("now"))
                    .await
                    .map_err(sched)?;
                serde_json::to_value(ran.into_iter().find(|r| r.job == id))?
            }
            Request::CronHistory { id, limit } => serde_json::to_value(rt.db.runs(id, limit).map_err(sched)?)?,
            Request::MemoryImport { jsonl } => {
                let (imported, skipped) = rt.memories().import(&jsonl).await.map_err(RuntimeError::Invalid)?;
                json!({ "imported": imported, "skipped": skipped })
            }
            Request::Chat { session, text } => {
                let agent = agent.ok_or_else(|| RuntimeError::Invalid("chat needs the agent".into()))?;
                let reply =
                    agent.turn(&session, &text, emit).await.map_err(|e| RuntimeError::Invalid(e.to_string()))?;
                json!({ "reply": reply })
            }
        })
    }
    .await;
    match value {
        Ok(v) => Reply::Ok(v),
        Err(e) => Reply::Err(e.to_string()),
    }
}

fn sched(e: crate::jobs::ScheduleError) -> RuntimeError {
    RuntimeError::Invalid(e.to_string())
}

fn found(id: u64, found: bool) -> Result<Value, RuntimeError> {
    if !found {
        return Err(RuntimeError::Invalid(format!("no memory with id {id}; `wasiclaw memory list` shows them")));
    }
    Ok(json!({ "id": id }))
}

/// Serve the local API until the task is dropped.
pub async fn serve(agent: Arc<Agent>, channels: Arc<Channels>, listener: UnixListener) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("local API accept failed: {e}");
                continue;
            }
        };
        let (agent, channels) = (agent.clone(), channels.clone());
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            if BufReader::new(read).read_line(&mut line).await.is_err() {
                return;
            }
            // Events are written by a separate task so a slow reader never
            // blocks the turn.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Reply>();
            let writer = tokio::spawn(async move {
                while let Some(frame) = rx.recv().await {
                    let mut out = serde_json::to_vec(&frame).expect("replies serialize");
                    out.push(b'\n');
                    if write.write_all(&out).await.is_err() {
                        break;
                    }
                }
            });
            let emit_tx = tx.clone();
            let emit = move |e| {
                let _ = emit_tx.send(Reply::Event(e));
            };
            let reply = match serde_json::from_str::<Request>(&line) {
                Ok(request) => dispatch(&agent.rt, Some(&agent), Some(&channels), request, &emit).await,
                Err(e) => Reply::Err(format!("bad request (is the CLI the same version as the daemon?): {e}")),
            };
            let _ = tx.send(reply);
            drop((tx, emit));
            let _ = writer.await;
        });
    }
}

/// Send a request to the daemon, or `None` if no daemon listens. Streamed
/// events go to `on_event`.
pub async fn call_daemon(
    socket: &Path,
    request: &Request,
    on_event: &mut (dyn FnMut(crate::agent::Event) + Send),
) -> anyhow::Result<Option<Reply>> {
    let stream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        // No socket, or a stale one left by a killed daemon.
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None);
        }
        Err(e) => return Err(anyhow::anyhow!("cannot reach the daemon at {}: {e}", socket.display())),
    };
    let (read, mut write) = stream.into_split();
    let mut out = serde_json::to_vec(request)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str(&line) {
            Ok(Reply::Event(e)) => on_event(e),
            Ok(reply) => return Ok(Some(reply)),
            Err(e) => {
                anyhow::bail!("the daemon sent a reply this CLI does not understand ({e}); are both the same version?")
            }
        }
    }
    anyhow::bail!("the daemon closed the connection without a reply (did it stop?)")
}
