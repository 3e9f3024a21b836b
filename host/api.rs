//! The local API: one JSON request and one JSON reply per connection on
//! `<state-dir>/wasiclaw.sock` (mode 0600). While the daemon runs it owns
//! the database (redb locks it to one process), so the CLI sends it the
//! same `Request` it would otherwise run itself.

use crate::agent::{Agent, Emit};
use crate::channels::{ChannelStatus, Channels};
use crate::grants::GrantChange;
use crate::jobs::{Job, Run};
use crate::memory::{Hit, Memory};
use crate::pairing::{Pairing, PairingView};
use crate::queue::{Notification, OutboxItem};
use crate::requests::Seen;
use crate::runtime::{ErrorKind, Runtime, RuntimeError, SkillInfo, SkillState, ToolOutcome};
use crate::scheduler::Scheduler;
use crate::session::Totals;
use crate::store::{AuditRecord, StoreError, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Everything the CLI can ask of a running daemon.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// The daemon's and the database's state (`wasiclaw status`).
    Status,
    /// Every component in the skills folder.
    SkillsList,
    /// One component in full.
    SkillsInspect {
        /// The component's name.
        name: String,
    },
    /// What changed since the approved build of a component.
    SkillsDiff {
        /// The component's name.
        name: String,
    },
    /// Take a component away (`skills remove`).
    SkillsRemove {
        /// The component's name.
        name: String,
        /// Erase what it stored too.
        erase: bool,
    },
    /// Grant rights to a component (or approve its build).
    Grant {
        /// The component's name.
        name: String,
        /// What to grant.
        change: GrantChange,
        /// The build the owner read (its sha256, or the start of it): the
        /// grant is refused if the component changed since.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        build: Option<String>,
    },
    /// Take rights back.
    Revoke {
        /// The component's name.
        name: String,
        /// What to take back.
        change: GrantChange,
    },
    /// Call one tool.
    Tool {
        /// The skill's name.
        skill: String,
        /// The tool's name.
        tool: String,
        /// The arguments, a JSON object.
        args: String,
    },
    /// The newest audit records.
    Audit {
        /// Only this component's.
        skill: Option<String>,
        /// At most this many.
        limit: usize,
    },
    /// Messages components sent the owner.
    Notifications {
        /// At most this many.
        limit: usize,
    },
    /// Token and cost totals per day.
    Usage {
        /// The last this many days.
        days: usize,
    },
    /// Save a memory.
    MemoryAdd {
        /// The memory.
        text: String,
        /// Its tags.
        tags: Vec<String>,
        /// Keep it in every context.
        pinned: bool,
    },
    /// Search memories.
    MemorySearch {
        /// Words to look for.
        query: String,
        /// At most this many hits.
        limit: usize,
    },
    /// Every memory.
    MemoryList,
    /// Embed the memories that have no embedding.
    MemoryEmbed,
    /// Forget a memory.
    MemoryForget {
        /// Its id.
        id: u64,
    },
    /// What the model forgot, kept to be brought back.
    MemoryForgotten,
    /// Bring back a memory the model forgot.
    MemoryRestore {
        /// Its id.
        id: u64,
    },
    /// Pin or unpin a memory.
    MemoryPin {
        /// Its id.
        id: u64,
        /// Pin (true) or unpin.
        pinned: bool,
    },
    /// Every memory as JSON lines.
    MemoryExport,
    /// Add memories from JSON lines (those already kept, by text, are skipped).
    MemoryImport {
        /// The JSON lines.
        jsonl: String,
    },
    /// Schedule a job.
    CronAdd {
        /// What, when and where.
        job: crate::jobs::NewJob,
    },
    /// Every job.
    CronList,
    /// Remove a job.
    CronRm {
        /// Its id.
        id: u64,
    },
    /// What the model cancelled, kept to be brought back.
    CronCancelled,
    /// Bring back a job the model cancelled.
    CronRestore {
        /// Its id.
        id: u64,
    },
    /// Run a job now.
    CronRunNow {
        /// Its id.
        id: u64,
    },
    /// Runs of jobs, newest last.
    CronHistory {
        /// Only this job's.
        id: Option<u64>,
        /// At most this many.
        limit: usize,
    },
    /// One chat turn; the daemon streams `Reply::Event` lines before the reply.
    Chat {
        /// The session (`terminal:NAME`, `web:NAME`).
        session: String,
        /// What the owner said.
        text: String,
    },
    /// Paired senders and pending requests.
    PairingList,
    /// Approve the sender who was given a code.
    PairingApprove {
        /// The code.
        code: String,
        /// Make them an admin.
        admin: bool,
    },
    /// Forget a sender.
    PairingRevoke {
        /// The channel.
        channel: String,
        /// The sender's pairing key (`pairing::key`).
        sender: String,
    },
    /// Messages waiting to be sent through channels.
    Outbox,
    /// Give up on a queued message.
    OutboxDrop {
        /// The message's id.
        id: u64,
    },
    /// Send a held message again.
    OutboxRetry {
        /// The message's id.
        id: u64,
    },
    /// What a paired non-admin may use.
    PairingGrant {
        /// The channel.
        channel: String,
        /// The sender's pairing key (`pairing::key`).
        sender: String,
        /// What they may use.
        scope: crate::pairing::Scope,
    },
    /// The owner's answer to a tool call waiting for approval.
    Answer {
        /// The question's id.
        id: u64,
        /// Once, always, or deny.
        answer: crate::approvals::Answer,
    },
    /// Tools the owner answered "always" for.
    ApprovalsList,
    /// Write a consistent copy of the database.
    Backup {
        /// Where (an absolute path, not the database itself).
        path: std::path::PathBuf,
    },
    /// Make a tool ask again.
    ApprovalsRevoke {
        /// `SKILL.TOOL` or a host tool's name.
        tool: String,
    },
    /// Change or list secrets: what the CLI asks of the daemon when the
    /// store is sealed with a key only the service has.
    Secrets {
        /// What to do.
        change: SecretsChange,
    },
    /// The web chat's address with its token (`wasiclaw open`).
    OpenUrl,
    /// A chat session's kept turns (the web chat after a reload).
    SessionHistory {
        /// The session's key, e.g. `web:ID`.
        session: String,
    },
}

/// A change to the secrets store, made by the daemon for the CLI.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretsChange {
    /// Store a secret.
    Set {
        /// Its name.
        name: String,
        /// Its value.
        value: crate::secrets::Hidden,
    },
    /// Delete a secret.
    Remove {
        /// Its name.
        name: String,
    },
    /// Only list the names.
    Names,
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
                | Request::SkillsDiff { .. }
                | Request::SkillsRemove { .. }
                | Request::Grant { .. }
                | Request::Revoke { .. }
                | Request::Tool { .. }
                | Request::Chat { .. }
                | Request::CronAdd { .. }
                | Request::CronRunNow { .. }
        )
    }

    /// Whether the request changes stored state (so a lost reply leaves
    /// it unknown whether it was applied).
    pub fn changes_state(&self) -> bool {
        !matches!(
            self,
            Request::Status
                | Request::SkillsList
                | Request::SkillsInspect { .. }
                | Request::SkillsDiff { .. }
                | Request::Audit { .. }
                | Request::Notifications { .. }
                | Request::Usage { .. }
                | Request::MemorySearch { .. }
                | Request::MemoryList
                | Request::MemoryForgotten
                | Request::MemoryExport
                | Request::OpenUrl
                | Request::SessionHistory { .. }
                | Request::Secrets { change: SecretsChange::Names }
                | Request::CronList
                | Request::CronCancelled
                | Request::CronHistory { .. }
                | Request::PairingList
                | Request::Outbox
                | Request::ApprovalsList
        )
    }

    /// Whether the request carries an id so a retry does not apply it
    /// twice: it changes state only in the database (a chat turn or job
    /// run asks the model anew).
    pub fn deduplicated(&self) -> bool {
        // A tool call may act outside the database (a message sent, a
        // request made), which no record here can vouch for.
        self.changes_state() && !self.needs_agent() && !matches!(self, Request::Tool { .. })
    }

    /// Whether answering needs the agent (and so a model connection).
    pub fn needs_agent(&self) -> bool {
        matches!(self, Request::Chat { .. } | Request::CronRunNow { .. })
    }
}

/// What a request returns. `--json` prints the value inside the variant.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    /// `wasiclaw status`.
    Status(Box<Status>),
    /// Every component.
    Skills(Vec<SkillInfo>),
    /// One component.
    Skill(Box<SkillInfo>),
    /// A component taken away.
    Removed(Box<crate::runtime::Removed>),
    /// A grant changed: the new state, and notes on grants with no effect.
    Granted {
        /// The component's state after the change.
        skill: Box<SkillInfo>,
        /// Why part of the grant has no effect.
        notes: Vec<String>,
    },
    /// A tool call's result.
    Tool(ToolOutcome),
    /// Audit records, oldest first.
    Audit(Vec<AuditRecord>),
    /// Messages to the owner, oldest first.
    Notifications(Vec<Notification>),
    /// Per UTC day, newest first.
    Usage(Vec<(String, Totals)>),
    /// The memory saved.
    Remembered(Memory),
    /// Search hits, best first.
    Hits(Vec<Hit>),
    /// Memories.
    Memories(Vec<Memory>),
    /// Jobs the model cancelled, kept to be brought back.
    Cancelled(Vec<crate::jobs::Cancelled>),
    /// Memories the model forgot, kept to be brought back.
    Forgotten(Vec<crate::memory::Forgotten>),
    /// Memories as JSON lines.
    Exported(String),
    /// Memories imported from JSON lines.
    Imported(crate::memory::Imported),
    /// Memories given embeddings.
    Embedded(crate::memory::Embedded),
    /// The job added.
    Job(Job),
    /// Every job.
    Jobs(Vec<Job>),
    /// Runs.
    Runs(Vec<Run>),
    /// Pairings.
    Pairings(Vec<PairingView>),
    /// The pairing changed.
    Pairing(Pairing),
    /// Messages waiting to be sent.
    Outbox(Vec<OutboxItem>),
    /// Tools answered "always", with when (Unix ms).
    Approvals(Vec<(String, i64)>),
    /// Whether a tool call was waiting for that answer.
    Answered(bool),
    /// A chat turn's reply.
    Chat {
        /// The reply.
        reply: String,
    },
    /// A backup was written.
    BackedUp {
        /// Where.
        path: std::path::PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// Done, and nothing to show but what was asked (a removal, a pin).
    Done,
    /// Names (of secrets).
    Names(Vec<String>),
    /// An address.
    Url(String),
    /// A chat session.
    Session(Box<crate::session::Session>),
    /// Diff lines.
    Diff(Vec<String>),
}

impl Response {
    /// The response as `--json` prints it: the value inside the variant.
    pub fn to_json(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) if map.len() == 1 => map.into_iter().next().map(|(_, v)| v).unwrap_or_default(),
            Ok(other) => other,
            Err(e) => json!({ "error": e.to_string() }),
        }
    }
}

/// What `wasiclaw status` shows.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    /// Answered by a running daemon (else by the CLI itself).
    pub daemon: bool,
    /// This binary's version.
    pub version: String,
    /// The answering process.
    pub pid: u32,
    /// Seconds since it started.
    pub uptime_s: i64,
    /// Where the database, skills, secrets and config live.
    pub state_dir: std::path::PathBuf,
    /// Each configured model, in the order they are tried.
    pub models: Vec<String>,
    /// Skills (not channels) installed.
    pub skills: usize,
    /// How many components are in each state.
    pub components_by_state: BTreeMap<SkillState, usize>,
    /// The daemon's channels.
    pub channels: Vec<ChannelStatus>,
    /// Scheduled jobs.
    pub jobs: usize,
    /// When the next one fires (Unix ms).
    pub next_run_ms: Option<i64>,
    /// Model tokens used today (UTC).
    pub tokens_today: u64,
    /// 0 for none.
    pub daily_token_budget: u64,
    /// The database file's size.
    pub database_bytes: u64,
    /// The compiled-component cache's size.
    pub cache_bytes: u64,
    /// Messages waiting to be sent.
    pub outbox_pending: usize,
    /// Audit records kept.
    pub audit_records: u64,
    /// Full rescans of the skills folder since start.
    pub rescans: u64,
    /// Why the embeddings endpoint is not asked just now (it failed).
    #[serde(default)]
    pub embeddings_paused: Option<String>,
    /// Providers tried after the others just now (they failed even their
    /// retries): the model and why.
    #[serde(default)]
    pub models_resting: Vec<(String, String)>,
    /// The automatic backups, if configured.
    #[serde(default)]
    pub backups: Option<crate::backups::Report>,
    /// The daemon's config.toml was edited since it started: what that means.
    #[serde(default)]
    pub config_edited: Option<String>,
}

/// One line of the local API's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reply {
    /// The answer.
    Ok(Response),
    /// The request failed.
    Err {
        /// What kind of failure (the CLI's exit code).
        kind: ErrorKind,
        /// What went wrong and what to do.
        message: String,
    },
    /// Progress of a chat turn, streamed before the final reply.
    Event(crate::agent::Event),
}

/// What `answer` found, as a reply.
fn reply(answered: Result<Response, RuntimeError>) -> Reply {
    match answered {
        Ok(response) => Reply::Ok(response),
        Err(e) => Reply::Err { kind: e.kind(), message: e.to_string() },
    }
}

async fn answer(
    rt: &Runtime,
    agent: Option<&Agent>,
    channels: Option<&Channels>,
    request: Request,
    emit: Emit<'_>,
) -> Result<Response, RuntimeError> {
    let missing = |what: String| Err(RuntimeError::NotFound(what));
    Ok(match request {
        Request::Status => Response::Status(Box::new(status(rt, agent, channels)?)),
        Request::PairingList => {
            let mut out = Vec::new();
            for pairing in rt.db.pairings()? {
                let tokens_today =
                    rt.db.person_tokens_today(&crate::pairing::person_id(&pairing.channel, &pairing.key()))?;
                let bound = (pairing.approved && !pairing.admin).then(|| {
                    let share = pairing.scope.daily_share(rt.config.agent.person_daily_token_budget);
                    (pairing.scope.describe(), share)
                });
                let (may, daily_tokens) = bound.unwrap_or_default();
                out.push(PairingView { pairing, may, tokens_today, daily_tokens });
            }
            Response::Pairings(out)
        }
        Request::PairingApprove { code, admin } => match crate::queue::approve(&rt.db, &code, admin)? {
            Some(p) => Response::Pairing(p),
            None => {
                return missing(format!(
                    "no pending pairing has the code {code} (codes expire after an hour); `wasiclaw pairing list` shows requests"
                ));
            }
        },
        Request::PairingGrant { channel, sender, scope }
            if scope.memory && rt.db.pairing(&channel, &sender)?.is_some_and(|p| p.group) =>
        {
            return Err(RuntimeError::Invalid(format!(
                "{sender} is paired for a group chat, and your memory never reaches a group (everyone there \
                 reads the replies, even an admin's); grant --memory to their direct chat's pairing instead"
            )));
        }
        Request::PairingGrant { channel, sender, scope } => match rt.db.pairing_grant(&channel, &sender, scope)? {
            Some(p) => Response::Pairing(p),
            None => {
                return missing(format!(
                    "{channel} has no approved pairing for sender {sender}; `wasiclaw pairing list` shows them"
                ));
            }
        },
        Request::Answer { id, answer } => Response::Answered(rt.questions.answer(id, answer)),
        Request::ApprovalsList => Response::Approvals(rt.db.approvals()?),
        Request::ApprovalsRevoke { tool } => {
            if !rt.db.approval_revoke(&tool)? {
                return missing(format!("no \"always\" answer for {tool}; `wasiclaw approvals list` shows them"));
            }
            Response::Done
        }
        Request::PairingRevoke { channel, sender } => {
            if !rt.db.pairing_revoke(&channel, &sender)? {
                return missing(format!(
                    "{channel} has no pairing for sender {sender}; `wasiclaw pairing list` shows them"
                ));
            }
            Response::Done
        }
        Request::Outbox => Response::Outbox(rt.db.outbox(None)?),
        Request::Secrets { change } => {
            let failed = |e: crate::secrets::SecretsError| RuntimeError::Invalid(e.to_string());
            match change {
                SecretsChange::Set { name, value } => rt.secrets.set(&name, &value.0).map_err(failed)?,
                SecretsChange::Remove { name } => rt.secrets.remove(&name).map_err(failed)?,
                SecretsChange::Names => {}
            }
            Response::Names(rt.secrets.names().map_err(failed)?)
        }
        Request::SkillsDiff { name } => Response::Diff(rt.diff(&name)?),
        Request::SkillsRemove { name, erase } => Response::Removed(Box::new(rt.remove_component(&name, erase).await?)),
        Request::SessionHistory { session } => Response::Session(Box::new(rt.db.session(&session)?)),
        Request::OpenUrl => {
            Response::Url(rt.config.gateway.open_url(&rt.secrets).map_err(|e| RuntimeError::Invalid(format!("{e:#}")))?)
        }
        Request::Backup { path } => {
            // A directory gets a copy named as the automatic ones are.
            let path = if path.is_dir() { path.join(crate::backups::name_now()) } else { path };
            if !path.is_absolute() || path == rt.paths.database() {
                return Err(RuntimeError::Invalid(format!(
                    "{} must be an absolute path other than the database itself",
                    path.display()
                )));
            }
            Response::BackedUp { bytes: rt.db.backup(&path, &rt.paths.kept_with_backups())?, path }
        }
        Request::OutboxDrop { id } => {
            if !rt.db.outbox_remove(id)? {
                return missing(format!("no queued message {id}; `wasiclaw outbox` lists them"));
            }
            Response::Done
        }
        Request::OutboxRetry { id } => {
            if !rt.db.outbox_retry(id)? {
                return missing(format!("no queued message {id}; `wasiclaw outbox` lists them"));
            }
            Response::Done
        }
        Request::SkillsList => Response::Skills(rt.skills()?),
        Request::SkillsInspect { name } => {
            rt.ready(&name).await;
            Response::Skill(Box::new(rt.inspect(&name)?))
        }
        Request::Grant { name, change, build } => {
            rt.ready(&name).await;
            let (info, notes) = rt.grant_to_build(&name, &change, build.as_deref())?;
            Response::Granted { skill: Box::new(info), notes }
        }
        Request::Revoke { name, change } => {
            let (info, notes) = rt.change_grant(&name, &change, true)?;
            Response::Granted { skill: Box::new(info), notes }
        }
        Request::Tool { skill, tool, args } => Response::Tool(rt.call_tool(&skill, &tool, &args).await?),
        Request::Audit { skill, limit } => Response::Audit(rt.audit(skill.as_deref(), limit)?),
        Request::Notifications { limit } => Response::Notifications(rt.notifications(limit)?),
        Request::Usage { days } => Response::Usage(rt.db.usage(days)?),
        Request::MemoryAdd { text, tags, pinned } => {
            crate::memory::check(&text, &tags).map_err(RuntimeError::Invalid)?;
            Response::Remembered(rt.memories().save(&text, tags, "cli", pinned).await?)
        }
        Request::MemorySearch { query, limit } => Response::Hits(rt.memories().search(&query, limit).await?),
        Request::MemoryList => Response::Memories(rt.db.memory_all()?),
        Request::MemoryForget { id } => memory_found(id, rt.db.memory_forget(id)?)?,
        Request::MemoryForgotten => Response::Forgotten(rt.db.memory_forgotten()?),
        Request::MemoryRestore { id } => {
            if !rt.db.memory_restore(id)? {
                return missing(format!(
                    "the model forgot no memory {id} in the last {} days; `wasiclaw memory forgotten` lists what it did",
                    crate::memory::FORGOTTEN_DAYS
                ));
            }
            Response::Done
        }
        Request::MemoryPin { id, pinned } => memory_found(id, rt.db.memory_pin(id, pinned)?)?,
        Request::MemoryExport => Response::Exported(rt.memories().export()?),
        Request::MemoryEmbed => {
            let progress = |text: String| emit(crate::agent::Event::Notice { text });
            Response::Embedded(rt.memories().embed_missing(&progress).await.map_err(RuntimeError::Invalid)?)
        }
        Request::MemoryImport { jsonl } => {
            let progress = |text: String| emit(crate::agent::Event::Notice { text });
            Response::Imported(rt.memories().import(&jsonl, &progress).await.map_err(RuntimeError::Invalid)?)
        }
        Request::CronAdd { job } => Response::Job(rt.schedule(job, now_ms())?),
        Request::CronList => Response::Jobs(rt.db.jobs()?),
        Request::CronRm { id } => {
            if !rt.db.job_remove(id)? {
                return missing(format!("no job {id}; `wasiclaw cron list` shows them"));
            }
            Response::Done
        }
        Request::CronCancelled => Response::Cancelled(rt.db.jobs_cancelled()?),
        Request::CronRestore { id } => {
            let Some(job) = rt.db.job_restore(id, now_ms())? else {
                return missing(format!(
                    "the model cancelled no job {id} in the last {} days; `wasiclaw cron cancelled` lists what it did",
                    crate::jobs::CANCELLED_DAYS
                ));
            };
            rt.schedule_changed.notify_one();
            Response::Job(job)
        }
        Request::CronRunNow { id } => {
            let agent = agent.ok_or_else(|| RuntimeError::Failed("running a job needs the agent".into()))?;
            let now = now_ms();
            if !rt.db.job_due_now(id, now)? {
                return missing(format!("no job {id}; `wasiclaw cron list` shows them"));
            }
            let ran = Scheduler { agent }.tick(jiff::Timestamp::from_millisecond(now).expect("now")).await?;
            Response::Runs(ran.into_iter().filter(|r| r.job == id).collect())
        }
        Request::CronHistory { id, limit } => Response::Runs(rt.db.runs(id, limit)?),
        Request::Chat { session, text } => {
            let agent = agent.ok_or_else(|| RuntimeError::Failed("chat needs the agent".into()))?;
            let reply = agent.turn(&session, &text, emit).await.map_err(|e| RuntimeError::Failed(e.to_string()))?;
            Response::Chat { reply }
        }
    })
}

fn status(rt: &Runtime, agent: Option<&Agent>, channels: Option<&Channels>) -> Result<Status, RuntimeError> {
    let skills = rt.skills()?;
    let mut board: Vec<ChannelStatus> = channels.map(Channels::board).unwrap_or_default();
    let outbox = rt.db.outbox(None)?;
    for c in &mut board {
        let (held, pending) =
            outbox.iter().filter(|o| o.channel == c.name).partition::<Vec<_>, _>(|o| o.held.is_some());
        (c.outbox_pending, c.outbox_held) = (pending.len(), held.len());
        c.pending_rights = skills.iter().find(|s| s.name == c.name).map(|s| s.pending.clone()).unwrap_or_default();
    }
    let mut components_by_state = BTreeMap::new();
    for s in &skills {
        *components_by_state.entry(s.status).or_default() += 1;
    }
    let jobs = rt.db.jobs()?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let cache_bytes = std::fs::read_dir(rt.paths.cache_dir())
        .map(|d| d.filter_map(Result::ok).map(|e| size(&e.path())).sum())
        .unwrap_or(0);
    Ok(Status {
        daemon: channels.is_some(),
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        uptime_s: (now_ms() - rt.started_ms) / 1000,
        state_dir: rt.paths.state_dir.clone(),
        models: rt.config.providers.iter().map(|p| format!("{} ({:?}, {})", p.model, p.kind, p.base_url)).collect(),
        skills: skills.iter().filter(|s| s.channel.is_none()).count(),
        components_by_state,
        channels: board,
        jobs: jobs.len(),
        next_run_ms: jobs.iter().filter_map(|j| j.next_ms).min(),
        tokens_today: rt.db.usage_today()?.tokens(),
        daily_token_budget: rt.config.agent.daily_token_budget,
        database_bytes: size(&rt.paths.database()),
        cache_bytes,
        outbox_pending: outbox.len(),
        audit_records: rt.db.audit_count()?,
        rescans: rt.rescans.load(std::sync::atomic::Ordering::Relaxed),
        embeddings_paused: rt.embedder.as_ref().and_then(|e| e.paused()),
        models_resting: agent
            .and_then(Agent::llm)
            .map(|llm| llm.providers.iter().filter_map(|p| Some((p.config.model.clone(), p.resting()?))).collect())
            .unwrap_or_default(),
        backups: rt.backups.as_ref().map(|b| b.report()),
        config_edited: channels.and_then(|_| rt.config_edited()),
    })
}

fn memory_found(id: u64, found: bool) -> Result<Response, RuntimeError> {
    if !found {
        return Err(RuntimeError::NotFound(format!("no memory with id {id}; `wasiclaw memory list` shows them")));
    }
    Ok(Response::Done)
}

/// Serve the local API until the task is dropped.
pub async fn serve(agent: Arc<Agent>, channels: Arc<Channels>, listener: UnixListener) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors, most likely: wait for one to free
                // rather than spin on a listener that stays readable.
                tracing::warn!("local API: cannot accept a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
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
            let mut replies = match serde_json::from_str::<Envelope>(&line) {
                Ok(request) => streaming(agent, Some(channels), request),
                Err(e) => {
                    let message = format!("bad request (is the CLI the same version as the daemon?): {e}");
                    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                    let _ = tx.send(Reply::Err { kind: ErrorKind::Invalid, message });
                    rx
                }
            };
            while let Some(reply) = replies.recv().await {
                let mut out = serde_json::to_vec(&reply).expect("replies serialize");
                out.push(b'\n');
                if write.write_all(&out).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// A request as it travels over the socket. One that changes state
/// carries a random id, so that a retry after a lost reply is recognized
/// (see `requests.rs`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// The request's id, for a retry to name (`request_id` on the wire:
    /// requests have fields called `id`).
    #[serde(default, rename = "request_id", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The request.
    #[serde(flatten)]
    pub request: Request,
}

impl Envelope {
    /// `request` with a fresh id if it is deduplicated.
    pub fn new(request: Request) -> Self {
        let id = request.deduplicated().then(|| crate::secrets::random_token().ok()).flatten();
        Envelope { id: id.map(|t| t[..32].to_string()), request }
    }
}

impl From<Request> for Envelope {
    /// `request` without an id: a retry of it is not recognized.
    fn from(request: Request) -> Self {
        Envelope { id: None, request }
    }
}

/// Run one request. Chat needs the agent; `emit` receives its events.
/// `channels` are the daemon's running channels (none outside it).
/// With an id it runs once: a retry of a finished request gets the first
/// reply again, and one whose first try stopped mid-way is refused with
/// what to check, since it may have been applied.
pub async fn dispatch(
    rt: &Runtime,
    agent: Option<&Agent>,
    channels: Option<&Channels>,
    envelope: Envelope,
    emit: Emit<'_>,
) -> Reply {
    let Envelope { id, request } = envelope;
    let Some(id) = id.filter(|_| request.deduplicated()) else {
        return reply(answer(rt, agent, channels, request, emit).await);
    };
    match rt.db.request_begin(&id) {
        Ok(Seen::New) => {}
        Ok(Seen::Done(first)) => {
            // Applied already: never run it again, even if its reply is
            // unreadable (kept by another version).
            return serde_json::from_str(&first).unwrap_or_else(|e| Reply::Err {
                kind: ErrorKind::Failed,
                message: format!("this request was applied already, but its first reply cannot be read ({e})"),
            });
        }
        Ok(Seen::Pending) => {
            return Reply::Err {
                kind: ErrorKind::Failed,
                message: "an earlier try of this request stopped before it finished, so it may or may not have been \
                          applied; check (`wasiclaw status`, `skills list`, `memory list`, `cron list`) before you \
                          run it again"
                    .into(),
            };
        }
        Err(e) => return Reply::Err { kind: ErrorKind::Failed, message: format!("cannot record the request: {e}") },
    }
    let reply = reply(answer(rt, agent, channels, request, emit).await);
    let kept = serde_json::to_string(&reply).map_err(StoreError::from).and_then(|json| rt.db.request_done(&id, json));
    if let Err(e) = kept {
        tracing::warn!("cannot keep the reply of request {id} for a retry: {e}");
    }
    reply
}

/// Run `request` in a task of its own: its events as they happen, then
/// its reply, arrive on the returned channel. The local API and the
/// gateway's web chat both stream a turn this way, and a slow or vanished
/// reader never holds the turn up.
pub fn streaming(
    agent: Arc<Agent>,
    channels: Option<Arc<Channels>>,
    request: Envelope,
) -> tokio::sync::mpsc::UnboundedReceiver<Reply> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let events = tx.clone();
        let emit = move |e| {
            let _ = events.send(Reply::Event(e));
        };
        let reply = dispatch(&agent.rt, Some(&agent), channels.as_deref(), request, &emit).await;
        let _ = tx.send(reply);
    });
    rx
}

/// Send a request to the daemon, or `None` if no daemon listens. Streamed
/// events go to `on_event`. A request with an id whose reply is lost also
/// gets `None`, so the caller tries again (the daemon, or the database
/// itself) and the id keeps it from being applied twice.
pub async fn call_daemon(
    socket: &Path,
    envelope: &Envelope,
    on_event: &mut (dyn FnMut(crate::agent::Event) + Send),
) -> anyhow::Result<Option<Reply>> {
    let request = &envelope.request;
    let stream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        // No socket, or a stale one left by a killed daemon.
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None);
        }
        Err(e) => return Err(anyhow::anyhow!("cannot reach the daemon at {}: {e}", socket.display())),
    };
    let (read, mut write) = stream.into_split();
    let mut out = serde_json::to_vec(envelope)?;
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
    if envelope.id.is_some() {
        tracing::warn!(
            "the daemon stopped before answering; trying again (the request id keeps it from applying twice)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        return Ok(None);
    }
    if request.changes_state() {
        anyhow::bail!(
            "the daemon stopped before answering, so this change may or may not have been applied; check (`wasiclaw status`, `skills list`, `memory list`, `cron list`) before you retry"
        )
    }
    anyhow::bail!("the daemon closed the connection without a reply (did it stop?); it is safe to retry")
}
