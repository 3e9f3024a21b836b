//! The host's state and the operations every front end shares: the daemon,
//! its local API and the CLI without a daemon all call these, so a command
//! behaves the same either way.
//!
//! Invariant: effective rights are recomputed from the stored grant and
//! the component's current sha256 on every call, so a grant, a revoke or a
//! replaced file takes effect at the next call.
//!
//! What the owner sees and changes of the installed components (the list,
//! grants, removal) is `installed.rs`.

use crate::budget::Budgets;
use crate::component::{ChannelSpec, Entry, Kind, Manifest, Registry, ScanReport};
use crate::config::{Config, ConfigError, Paths};
use crate::context::{Resolver, system_resolver};
use crate::contract::SkillGuest;
use crate::engine::{CallError, EngineError, HostCtx, SkillEngine, ToolError};
use crate::grants::{self, Capabilities, Effective};
use crate::jobs::{
    Action, Check, JOB_TEXT_MAX, Job, MODEL_CHECKED_EVERY_MS, MODEL_PROMPT_EVERY_MS, Missed, NewJob, ScheduleError,
    When, parse_when, tool_ref,
};
use crate::memory::{Embedder, Memories};
use crate::queue::Notification;
use crate::secrets::Secrets;
use crate::store::{AuditRecord, Store, StoreError, now_ms};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a request to the runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The config file is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine cannot run components.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A directory cannot be created.
    #[error("cannot create {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// No component by that name.
    #[error("no skill named `{0}`; `wasiclaw skills list` shows what is installed in {1}")]
    NoSkill(String, String),
    /// The component is rejected.
    #[error("skill `{0}` is rejected and cannot run: {1}")]
    Rejected(String, String),
    #[error("skill `{skill}` has no tool `{tool}`; it has: {available}")]
    /// The skill has no such tool.
    NoTool {
        /// The skill.
        skill: String,
        /// The tool asked for.
        tool: String,
        /// Its tools.
        available: String,
    },
    /// The request is wrong (the text says how).
    #[error("{0}")]
    Invalid(String),
    /// The component is still being compiled (for this many seconds).
    #[error(
        "skill `{0}` is still compiling (for {1} s; a big one takes minutes on a small board); `wasiclaw skills list` shows when it is active"
    )]
    Compiling(String, i64),
    /// Something the request names (a job, a memory, a pairing) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The work itself failed (a model turn, a schedule run).
    #[error("{0}")]
    Failed(String),
    /// A reply cannot be encoded.
    #[error("cannot encode the reply: {0}")]
    Encode(#[from] serde_json::Error),
    /// A job cannot be scheduled or read.
    #[error(transparent)]
    Schedule(#[from] crate::jobs::ScheduleError),
}

/// A file's name without `.wasm`.
fn stem(file: &Path) -> String {
    file.file_stem().unwrap_or_default().to_string_lossy().into_owned()
}

mod installed;
pub use installed::{APPROVE_BUILD, Removed, SkillInfo, SkillState, waiting_for};

/// Every feature's tables, created when the database opens.
pub const TABLES: [crate::store::Tables; 6] = [
    crate::session::create_tables,
    crate::memory::create_tables,
    crate::jobs::create_tables,
    crate::pairing::create_tables,
    crate::queue::create_tables,
    crate::requests::create_tables,
];

/// Why a tool call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Failure {
    /// The host refused a capability (the output says how to grant it).
    Denied,
    /// The arguments are wrong.
    InvalidInput,
    /// Something the arguments name does not exist.
    NotFound,
    /// The component reported a failure.
    Failed,
    /// Over the wall-clock limit.
    Timeout,
    /// Over the CPU budget.
    Cpu,
    /// Over the memory cap.
    Memory,
    /// The result was over the output cap.
    Output,
    /// The component trapped.
    Crashed,
}

/// What kind of error a request met; the CLI's exit code says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The request itself is wrong (exit code 2).
    Invalid,
    /// What it names does not exist (exit code 3).
    NotFound,
    /// A component is rejected or a tool call failed (exit code 4).
    Refused,
    /// The database is held by another process (exit code 5).
    Busy,
    /// Anything else: storage, engine, configuration (exit code 1).
    Failed,
}

impl ErrorKind {
    /// The process exit code of this kind of error.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Failed => 1,
            ErrorKind::Invalid => 2,
            ErrorKind::NotFound => 3,
            ErrorKind::Refused => 4,
            ErrorKind::Busy => 5,
        }
    }
}

impl RuntimeError {
    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RuntimeError::Invalid(_) => ErrorKind::Invalid,
            RuntimeError::NoSkill(..) | RuntimeError::NoTool { .. } | RuntimeError::NotFound(_) => ErrorKind::NotFound,
            RuntimeError::Rejected(..) => ErrorKind::Refused,
            RuntimeError::Store(StoreError::Locked(_)) | RuntimeError::Compiling(..) => ErrorKind::Busy,
            RuntimeError::Config(_)
            | RuntimeError::Store(_)
            | RuntimeError::Engine(_)
            | RuntimeError::Io(..)
            | RuntimeError::Failed(_)
            | RuntimeError::Encode(_) => ErrorKind::Failed,
            RuntimeError::Schedule(crate::jobs::ScheduleError::Invalid(_)) => ErrorKind::Invalid,
            RuntimeError::Schedule(_) => ErrorKind::Failed,
        }
    }
}

/// The result of a tool call, with any denials the host made meanwhile.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToolOutcome {
    /// Whether the call succeeded.
    pub ok: bool,
    /// The result text, or the error text.
    pub output: String,
    /// Why it failed.
    pub error_kind: Option<Failure>,
    /// What the host refused during the call.
    pub denials: Vec<String>,
}

/// As the model reads it: the result, or the error with the host's denials.
impl std::fmt::Display for ToolOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ok {
            return f.write_str(&self.output);
        }
        let kind = self.error_kind.map(|k| crate::text::variant_name(&k)).unwrap_or_else(|| "error".into());
        write!(f, "error ({kind}): {}", self.output)?;
        self.denials.iter().try_for_each(|d| write!(f, "\nhost denied {d}"))
    }
}

/// The loaded skills folder, the database, the secrets and the engine: everything a tool call needs.
pub struct Runtime {
    /// The state directory's files.
    pub paths: Paths,
    /// The owner's config.
    pub config: Config,
    /// The database.
    pub db: Arc<Store>,
    /// The secret store.
    pub secrets: Secrets,
    /// The wasmtime engine.
    pub engine: SkillEngine,
    /// The components in the skills folder.
    pub registry: Registry,
    /// Embeddings for memory search, if configured.
    pub embedder: Option<Arc<Embedder>>,
    /// Wakes the scheduler when jobs change.
    pub schedule_changed: Arc<tokio::sync::Notify>,
    /// Wakes the daemon to start or stop channels when grants change (or
    /// a component finished compiling).
    pub grants_changed: Arc<tokio::sync::Notify>,
    /// Wakes the daemon's compiler when a rescan left components waiting.
    pub compile_wanted: Arc<tokio::sync::Notify>,
    /// One rescan at a time (the watcher's and the compiler's).
    scanning: tokio::sync::Mutex<()>,
    /// Counters for `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// What each component may make the host spend, across its calls.
    pub budgets: Budgets,
    /// Name resolution for egress; tests replace it.
    pub resolver: Resolver,
    /// Tool calls waiting for the owner's answer.
    pub questions: crate::approvals::Pending,
    /// When this process opened the state dir, for `status`'s uptime.
    pub started_ms: i64,
    /// Rescans of the skills folder since start, for `status` (a settled
    /// daemon does none).
    pub rescans: std::sync::atomic::AtomicU64,
    /// The knowledge skills of the skills folder, read as they change.
    pub knowledge: crate::knowledge::Knowledges,
    /// The bytes of `config.toml` when it was read (None: no file), to
    /// tell the owner an edit waits for a restart.
    pub config_read: Option<Vec<u8>>,
    /// The automatic backups, if `[storage] backup_dir` is set.
    pub backups: Option<Arc<crate::backups::Backups>>,
    limits: Arc<crate::config::Limits>,
}

/// Script proposals that may wait for the owner at once.
pub const MAX_DRAFTS: usize = 10;

impl Runtime {
    /// Open the state dir (creating it), the database and the engine.
    pub fn open(paths: Paths) -> Result<Self, RuntimeError> {
        let first_start = !paths.skills_dir().exists();
        for dir in [paths.state_dir.clone(), paths.skills_dir()] {
            std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::Io(dir.clone(), e))?;
        }
        if first_start {
            let dir = paths.skills_dir();
            let names = crate::bundled::first_start(&dir).map_err(|e| RuntimeError::Io(dir.clone(), e))?;
            if !names.is_empty() {
                tracing::info!(
                    "first start: installed the bundled skills {} into {}; `wasiclaw skills list` shows what each \
                     asks for, `wasiclaw skills available` the channels",
                    names.join(", "),
                    dir.display()
                );
            }
        }
        // The database holds skills' data and the audit log: owner only.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&paths.state_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| RuntimeError::Io(paths.state_dir.clone(), e))?;
        let config_read = std::fs::read(paths.config()).ok();
        let config = Config::from_read(&paths.config(), config_read.as_deref())?;
        let db = Arc::new(Store::open_with_cache(&paths.database(), config.storage.cache_mb, &TABLES)?);
        *db.audit_retention.lock().unwrap() = config.audit.clone();
        let engine = SkillEngine::new(paths.cache_dir(), config.limits.clone(), &config.compile)?;
        let secrets = Secrets::new(paths.secrets());
        let backups = crate::backups::Backups::new(&config, &paths);
        let embedder = config.memory.embeddings.clone().map(|c| Arc::new(Embedder::new(c, secrets.clone())));
        Ok(Runtime {
            paths,
            db,
            secrets,
            engine,
            registry: Registry::default(),
            embedder,
            schedule_changed: Arc::default(),
            grants_changed: Arc::default(),
            compile_wanted: Arc::default(),
            scanning: tokio::sync::Mutex::default(),
            metrics: Default::default(),
            budgets: Budgets::default(),
            resolver: system_resolver(),
            questions: Default::default(),
            rescans: Default::default(),
            knowledge: Default::default(),
            backups,
            config_read,
            started_ms: crate::store::now_ms(),
            limits: Arc::new(config.limits.clone()),
            config,
        })
    }

    /// `open`, waiting up to `patience` while another process (a starting
    /// daemon, or a CLI command) holds the database.
    pub async fn open_patiently(paths: Paths, patience: std::time::Duration) -> Result<Self, RuntimeError> {
        let start = std::time::Instant::now();
        loop {
            match Runtime::open(paths.clone()) {
                Err(RuntimeError::Store(StoreError::Locked(_))) if start.elapsed() < patience => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    /// If `config.toml` changed since this process read it: what that
    /// means for the owner (edits take effect at the next start).
    pub fn config_edited(&self) -> Option<String> {
        let path = self.paths.config();
        let now = std::fs::read(&path).ok();
        if now == self.config_read {
            return None;
        }
        Some(match Config::from_read(&path, now.as_deref()) {
            Ok(_) => "config.toml changed since this daemon started; restart it to apply the change".into(),
            Err(e) => format!(
                "config.toml changed since this daemon started, and {e}: fix it before restarting, or the daemon \
                 will not start"
            ),
        })
    }

    /// What the model may spend on the host's own tools after untrusted
    /// content, counted like a component's (`[limits]`) under a name no
    /// component can have.
    pub fn agent_budget(&self) -> (Arc<crate::budget::Budget>, &crate::config::Limits) {
        (self.budgets.of("(agent)", &self.limits), &self.limits)
    }

    /// Long-term memory with the configured embedder, if any.
    pub fn memories(&self) -> Memories<'_> {
        Memories { db: &self.db, embedder: self.embedder.as_deref() }
    }

    fn ctx(&self, skill: &str, sha256: &str, effective: Effective) -> HostCtx {
        // The agent's drafts (`draft:NAME`) share one budget: the model
        // names them, and could make up names to spend a budget each (and
        // leave one behind in this map each).
        let budget = self.budgets.of(if skill.starts_with("draft:") { "draft:" } else { skill }, &self.limits);
        let mut ctx = HostCtx::new(
            skill,
            sha256,
            effective,
            self.db.clone(),
            self.secrets.clone(),
            self.limits.clone(),
            budget,
            self.resolver.clone(),
        );
        ctx.settings = self.config.skills.get(skill).cloned();
        ctx.embedder = self.embedder.clone();
        ctx.owner_chat = self.config.agent.owner_chat.clone();
        ctx
    }

    /// Requested ∩ granted, less the host's own secrets, which no grant
    /// can hand to a component.
    fn effective(&self, requested: &Capabilities, sha256: &str, grant: Option<&grants::GrantRecord>) -> Effective {
        let mut eff = grants::effective(requested, sha256, grant);
        let host = self.config.host_secrets();
        for name in requested.all_secrets().intersection(&host) {
            eff.secrets.remove(name);
            eff.crypto_secrets.remove(name);
            eff.pending.retain(|p| p != &format!("secret {name}"));
            eff.pending.push(format!("secret {name} (the host's own secret; never granted to a component)"));
        }
        eff
    }

    /// The context of one call of component `name` (build `sha256`) that
    /// requests `requested`: its effective rights under the stored grant.
    pub fn rights(&self, name: &str, sha256: &str, requested: &Capabilities) -> Result<HostCtx, StoreError> {
        let grant = self.db.grant(name)?;
        Ok(self.ctx(name, sha256, self.effective(requested, sha256, grant.as_ref())))
    }

    /// The rights in force for the loaded build of `name`, if it is loaded.
    fn loaded_rights(&self, name: &str) -> Option<Arc<Effective>> {
        let entry = self.registry.find(name)?;
        let loaded = entry.loaded.as_ref().ok()?;
        self.rights(name, &entry.sha256, &loaded.manifest.capabilities).ok().map(|c| c.effective)
    }

    /// Whether the loaded build of `name` is one the owner approved.
    pub fn approved(&self, name: &str) -> bool {
        self.loaded_rights(name).is_some_and(|e| e.approved)
    }

    /// Whether the loaded build of `name` may reach hosts the owner did not
    /// name: whatever its tool is given could go to a server anyone can set
    /// up.
    pub fn reaches_unnamed_hosts(&self, name: &str) -> bool {
        self.loaded_rights(name).is_some_and(|e| e.reaches_unnamed_hosts())
    }

    /// Bring the registry in line with the skills folder.
    pub async fn rescan(&self) -> ScanReport {
        self.scan(false).await
    }

    /// Rescan, leaving components never compiled to `compile_pending`
    /// (the daemon's way: it answers while they compile).
    pub async fn rescan_deferred(&self) -> ScanReport {
        self.scan(true).await
    }

    async fn scan(&self, defer: bool) -> ScanReport {
        let _one = self.scanning.lock().await;
        self.rescans.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let approved = |name: &str| self.db.grant(name).ok().flatten().map(|g| g.sha256);
        let ctx = |name: &str| self.ctx(name, "", Effective::default());
        let report = self.registry.rescan(&self.engine, &self.paths.skills_dir(), ctx, approved, defer).await;
        if !report.removed.is_empty() || !report.loaded.is_empty() {
            self.prune_cache();
        }
        report
    }

    /// Compile every component in the folder not compiled yet into the
    /// cache, one at a time, without opening the database; returns how many.
    /// Failures are left for the next rescan to record.
    pub async fn compile_folder(paths: &Paths) -> Result<usize, RuntimeError> {
        let config = Config::load(&paths.config())?;
        let engine = SkillEngine::new(paths.cache_dir(), config.limits.clone(), &config.compile)?;
        Ok(crate::component::compile_uncached(&engine, &paths.skills_dir()).await)
    }

    /// Compile one component file into the cache if it is still build
    /// `sha256`: what `wasiclaw __compile` does in the daemon's child.
    /// Its memory is the first the kernel reclaims when memory runs out.
    pub async fn compile_one(paths: &Paths, file: &Path, sha256: &str) -> Result<(), RuntimeError> {
        // Raising one's own score needs no privilege.
        let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
        let config = Config::load(&paths.config())?;
        let engine = SkillEngine::new(paths.cache_dir(), config.limits.clone(), &config.compile)?;
        let bytes = crate::component::read_skill_file(file)
            .map_err(|e| RuntimeError::Invalid(format!("cannot read {}: {e}", file.display())))?;
        // Replaced meanwhile: the next rescan queues the new build.
        if crate::component::sha256_hex(&bytes) != sha256 {
            return Ok(());
        }
        engine.compile(file, Some(&bytes), sha256)?;
        Ok(())
    }

    /// Compile the components waiting for it, one at a time, loading each
    /// as soon as it is ready; returns how many were compiled. With `child`,
    /// each compile runs in a child process (the daemon's way).
    pub async fn compile_pending(&self, child: Option<&crate::component::CompileChild>) -> usize {
        let mut done = 0;
        while let Some(file) = self.registry.compile_next(&self.engine, child).await {
            done += 1;
            let report = self.rescan_deferred().await;
            for name in &report.loaded {
                tracing::info!("compiled and loaded {name} ({})", file.display());
            }
            for (name, reason) in &report.rejected {
                tracing::warn!("rejected {name}: {reason}");
            }
            // A channel among them can start now.
            self.grants_changed.notify_one();
        }
        done
    }

    /// Drop compiled code and descriptions of components no longer in the
    /// folder (a changed build leaves the old one's behind), and those an
    /// earlier engine made (an upgrade of wasiclaw, or another `[compile]`
    /// setting, compiles every component again: on a board the old copies
    /// would fill the card an upgrade at a time).
    fn prune_cache(&self) {
        let mut live: std::collections::HashSet<String> =
            self.registry.entries().into_iter().map(|e| e.sha256).collect();
        live.extend(self.registry.compiling().into_values().map(|c| c.sha256));
        // The script runner's code serves every script skill, present or to come.
        live.extend(crate::bundled::script_runner().map(|r| r.sha256.to_string()));
        let Ok(dir) = std::fs::read_dir(self.paths.cache_dir()) else { return };
        for file in dir.filter_map(Result::ok).map(|e| e.path()) {
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let sha = name.split('-').next().unwrap_or_default();
            let stale = |ext: &str| name.ends_with(&format!(".{ext}")) && file != self.engine.artifact(sha, ext);
            if sha.len() == 64
                && (!live.contains(sha) || stale("cwasm") || stale("describe.json"))
                && let Err(e) = std::fs::remove_file(&file)
            {
                tracing::warn!("cannot remove stale {}: {e}", file.display());
            }
        }
    }

    /// The file waiting for its first compile that would be component
    /// `name` (known by its file name until it is described).
    fn compiling_as(&self, name: &str) -> Option<(PathBuf, crate::component::Compiling)> {
        let same = |file: &Path| stem(file).replace('_', "-") == name.replace('_', "-");
        self.registry.compiling().into_iter().find(|(file, _)| same(file))
    }

    fn entry(&self, name: &str) -> Result<Entry, RuntimeError> {
        if let Some(entry) = self.registry.find(name) {
            return Ok(entry);
        }
        if let Some((_, c)) = self.compiling_as(name) {
            let secs = (now_ms() - c.since_ms) / 1000;
            return Err(RuntimeError::Compiling(name.into(), secs));
        }
        Err(RuntimeError::NoSkill(name.into(), self.paths.skills_dir().display().to_string()))
    }

    /// Whether component `name` is waiting for its first compile.
    pub fn is_compiling(&self, name: &str) -> bool {
        matches!(self.entry(name), Err(RuntimeError::Compiling(..)))
    }

    /// Wait while component `name` is compiling, up to a call's timeout.
    pub async fn ready(&self, name: &str) {
        let deadline = std::time::Instant::now() + self.engine.limits().timeout();
        while self.is_compiling(name) && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Validate and store a job; the scheduler picks it up at once.
    pub fn schedule(&self, new: NewJob, now_ms: i64) -> Result<Job, ScheduleError> {
        let tz = if new.tz.is_empty() { "UTC".to_string() } else { new.tz.clone() };
        let when = parse_when(&new.when, &tz)?;
        let long = [&new.prompt, &new.args, &new.check_args].into_iter().flatten().any(|t| t.len() > JOB_TEXT_MAX);
        if long {
            return Err(ScheduleError::Invalid(format!(
                "a job's prompt or arguments are at most {} KiB",
                JOB_TEXT_MAX >> 10
            )));
        }
        let args = |a: &Option<String>| -> Result<String, ScheduleError> {
            let a = a.clone().unwrap_or_else(|| "{}".into());
            match serde_json::from_str::<serde_json::Value>(&a) {
                Ok(serde_json::Value::Object(_)) => Ok(a),
                _ => Err(ScheduleError::Invalid(format!("arguments must be a JSON object: {a}"))),
            }
        };
        // A job that names a tool nobody installed would fail at every run.
        let exists = |spec: &str| -> Result<(String, String), ScheduleError> {
            let (skill, tool) = tool_ref(spec)?;
            let loaded = self.registry.find(&skill).and_then(|e| e.loaded.ok());
            match loaded {
                Some(l) if l.manifest.tools.iter().any(|t| t.name == tool) => Ok((skill, tool)),
                Some(l) => {
                    let has: Vec<&str> = l.manifest.tools.iter().map(|t| t.name.as_str()).collect();
                    Err(ScheduleError::Invalid(format!(
                        "skill `{skill}` has no tool `{tool}`; it has: {}",
                        has.join(", ")
                    )))
                }
                None => Err(ScheduleError::Invalid(format!(
                    "no skill `{skill}` is loaded; install it first (`wasiclaw skills list` shows what is)"
                ))),
            }
        };
        let action = match (&new.prompt, &new.tool) {
            (Some(text), None) if !text.trim().is_empty() => Action::Prompt { text: text.clone() },
            (None, Some(spec)) => {
                let (skill, tool) = exists(spec)?;
                Action::Tool { skill, tool, args: args(&new.args)? }
            }
            _ => return Err(ScheduleError::Invalid("give a job either a prompt or a tool (SKILL.TOOL)".into())),
        };
        let check = match &new.check {
            Some(spec) => {
                let (skill, tool) = exists(spec)?;
                Some(Check { skill, tool, args: args(&new.check_args)? })
            }
            None => None,
        };
        let next_ms = when.next_after(now_ms, now_ms);
        if next_ms.is_none() {
            return Err(ScheduleError::Invalid(format!("{} never fires after now", when.describe())));
        }
        let least = if check.is_some() { MODEL_CHECKED_EVERY_MS } else { MODEL_PROMPT_EVERY_MS };
        // Cron's finest step is a minute: a day of fires shows its shortest gap.
        if new.by_model
            && matches!(action, Action::Prompt { .. })
            && when.shortest_gap_ms(now_ms, 1441).is_some_and(|gap| gap < least)
        {
            return Err(ScheduleError::Invalid(format!(
                "{} is too often for a task that asks the model (each run costs tokens): at most every {} minutes, \
                 or every minute with a `check` that must report something first. The owner can schedule it more \
                 often with `wasiclaw cron add`.",
                when.describe(),
                MODEL_PROMPT_EVERY_MS / 60_000
            )));
        }
        let missed = new.missed.unwrap_or(if matches!(when, When::At { .. }) { Missed::RunOnce } else { Missed::Skip });
        let name = new.name.clone().unwrap_or_else(|| action.default_name());
        let chat = if new.chat.is_empty() { "terminal:default".to_string() } else { new.chat.clone() };
        let job = Job {
            id: 0,
            name,
            when,
            action,
            target: chat,
            check,
            missed,
            next_ms,
            created_ms: now_ms,
            untrusted: new.untrusted,
        };
        let job = self.db.job_add(job, new.by_model)?;
        self.schedule_changed.notify_one();
        Ok(job)
    }

    /// What an installed channel declares, if `name` is one.
    pub fn channel_spec(&self, name: &str) -> Option<ChannelSpec> {
        let entry = self.registry.find(name)?;
        entry.loaded.ok()?.channel().map(|(_, spec)| spec.clone())
    }

    /// A `CHANNEL:CHAT` target split, if its channel is installed.
    pub fn channel_chat<'t>(&self, target: &'t str) -> Option<(&'t str, &'t str)> {
        let (channel, chat) = target.split_once(':')?;
        (self.channel_spec(channel).is_some() && !chat.is_empty()).then_some((channel, chat))
    }

    /// Call one tool of one skill in a fresh sandbox with its effective rights.
    pub async fn call_tool(&self, skill: &str, tool: &str, args: &str) -> Result<ToolOutcome, RuntimeError> {
        self.ready(skill).await;
        let entry = self.entry(skill)?;
        let loaded = entry.loaded.as_ref().map_err(|r| RuntimeError::Rejected(skill.into(), r.clone()))?;
        let m = &loaded.manifest;
        if !m.tools.iter().any(|t| t.name == tool) {
            let available = m.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(RuntimeError::NoTool { skill: skill.into(), tool: tool.into(), available });
        }
        match serde_json::from_str::<serde_json::Value>(args) {
            Ok(serde_json::Value::Object(_)) => {}
            Ok(_) => return Err(RuntimeError::Invalid("arguments must be a JSON object, e.g. '{}'".into())),
            Err(e) => return Err(RuntimeError::Invalid(format!("arguments are not valid JSON: {e}"))),
        }
        let Kind::Skill(code) = &loaded.kind else {
            return Err(RuntimeError::Invalid(format!("`{skill}` is a channel; it has no tools")));
        };
        let ctx = self.rights(skill, &entry.sha256, &m.capabilities)?;
        let guest = match code.linked() {
            Some(guest) => Ok(guest),
            None => {
                // Mapping its code (or compiling it again) is blocking work.
                let code = code.clone();
                let linked = tokio::task::spawn_blocking(move || code.guest()).await;
                linked.unwrap_or_else(|e| Err(crate::component::LoadError::Link(e.to_string())))
            }
        };
        let guest = guest.map_err(|e| RuntimeError::Rejected(skill.into(), e.to_string()))?;
        Ok(self.run_tool(&guest, ctx, skill, tool, args).await)
    }

    /// Run one tool of `guest` under `ctx`, with the limits of every call;
    /// its audit records and kv writes are committed before this returns.
    async fn run_tool(&self, pre: &SkillGuest, ctx: HostCtx, skill: &str, tool: &str, args: &str) -> ToolOutcome {
        // Calls of one component beyond the cap wait their turn.
        let _permit = ctx.budget.running.clone().acquire_owned().await.expect("the semaphore is never closed");
        let files = ctx.effective.rights.contains(grants::Rights::FILES).then(|| self.paths.files_dir(skill));
        let room = files.as_deref().and_then(|dir| crate::files::room(&ctx, dir));
        if let Some(dir) = &files {
            ctx.audit("files", &dir.display().to_string(), true, "preopened as /data");
        }
        let started = std::time::Instant::now();
        let result = match self.engine.store(pre.engine(), ctx.clone(), files.as_deref().map(|d| (d, room))) {
            Ok(mut store) => {
                let (guest, tool, args) = (pre.clone(), tool.to_string(), args.to_string());
                self.engine
                    .guarded(&mut store, move |store| Box::pin(async move { guest.invoke(store, &tool, &args).await }))
                    .await
            }
            Err(e) => Err(e),
        };
        if let Some(dir) = &files {
            crate::files::after_call(&ctx, dir);
        }
        // Audit records and kv writes: one durable commit, before the
        // caller hears the outcome. A call whose writes were refused there
        // did not do what it said it did.
        let refused = ctx.finish();
        let cap = self.engine.limits().output_bytes();
        let result = match result {
            Ok(Ok(_)) if let Some(why) = refused => Err(CallError::Tool(ToolError::Denied(why))),
            Ok(Ok(out)) if out.len() > cap => Err(CallError::Output(out.len(), cap)),
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(CallError::Tool(e)),
            Err(e) => Err(e),
        };
        let denials = ctx.denials.lock().unwrap().clone();
        self.metrics.tool_call(result.is_ok(), started.elapsed(), denials.len());
        match result {
            Ok(output) => ToolOutcome { ok: true, output, error_kind: None, denials },
            Err(e) => {
                let kind = match &e {
                    CallError::Tool(ToolError::Denied(_)) => Failure::Denied,
                    CallError::Tool(ToolError::InvalidInput(_)) => Failure::InvalidInput,
                    CallError::Tool(ToolError::NotFound(_)) => Failure::NotFound,
                    CallError::Tool(ToolError::Failed(_)) => Failure::Failed,
                    CallError::Timeout(_) => Failure::Timeout,
                    CallError::Cpu(_) => Failure::Cpu,
                    CallError::Memory(_) | CallError::HostMemory(_) => Failure::Memory,
                    CallError::Output(..) => Failure::Output,
                    CallError::Trap(_) => Failure::Crashed,
                };
                ToolOutcome { ok: false, output: e.to_string(), error_kind: Some(kind), denials }
            }
        }
    }

    /// A script skill the agent drafts, checked without writing it anywhere:
    /// its manifest as the runner reads it (validated as any component's),
    /// and, with `test`, one tool run with no rights at all. Audit records
    /// go under `draft:NAME`, never the name of a real skill.
    pub async fn try_script(
        &self,
        name: &str,
        source: &str,
        test: Option<(&str, &str)>,
    ) -> Result<(Manifest, Option<ToolOutcome>), RuntimeError> {
        crate::component::check_script_size(source.len()).map_err(RuntimeError::Invalid)?;
        let pre = self.engine.script_runner()?;
        let guest = SkillGuest::Script(pre, source.into());
        let draft = format!("draft:{name}");
        let sha256 = crate::component::script_identity(source.as_bytes());
        let ctx = self.ctx(&draft, &sha256, Effective::default());
        let manifest = crate::component::describe_draft(&self.engine, &guest, ctx)
            .await
            .map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        if manifest.name != name {
            return Err(RuntimeError::Invalid(format!(
                "the manifest names the skill `{}`, not `{name}`",
                manifest.name
            )));
        }
        let Some((tool, args)) = test else { return Ok((manifest, None)) };
        if !manifest.tools.iter().any(|t| t.name == tool) {
            return Err(RuntimeError::Invalid(format!("the manifest declares no tool `{tool}`")));
        }
        let ctx = self.ctx(&draft, &sha256, Effective::default());
        Ok((manifest, Some(self.run_tool(&guest, ctx, &draft, tool, args).await)))
    }

    /// Write a script skill the agent proposes, once `try_script` accepted
    /// it under `name`, into the skills folder and load it. It waits for
    /// the owner's approval like any new build; a name held by a component
    /// is refused, and the file is written under a temporary name and
    /// renamed, so no scan sees half of it.
    pub async fn propose_script(&self, name: &str, source: &str) -> Result<SkillInfo, RuntimeError> {
        // `try_script` checked the manifest names it so; this keeps the
        // file name plain whoever calls.
        if !crate::component::valid_name(name) {
            return Err(RuntimeError::Invalid(format!(
                "`{name}` is not a skill name: use {}",
                crate::component::NAME_RULE
            )));
        }
        let dir = self.paths.skills_dir();
        if let Some(held) = self.registry.find(name).filter(|e| !crate::component::is_script(&e.file)) {
            return Err(RuntimeError::Invalid(format!(
                "`{name}` is the name of the component {}; choose another",
                held.file.display()
            )));
        }
        let (tmp, file) = (dir.join(format!(".{name}.js.part")), dir.join(format!("{name}.js")));
        // A skill the owner once approved is theirs: a proposal under its
        // name would swap the code they trust (and, with carry_over, run
        // it with the old rights unreviewed). Nor may it overwrite a
        // script the owner wrote and has not approved yet: only the
        // agent's own draft, unchanged since, may be revised.
        let draft = self.db.draft(name)?;
        let foreign = match crate::component::read_skill_file(&file) {
            Ok(current) => draft.as_deref() != Some(crate::component::sha256_hex(&current).as_str()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => true,
            Err(e) => return Err(RuntimeError::Io(file.clone(), e)),
        };
        if foreign || self.db.grant(name)?.is_some() {
            return Err(RuntimeError::Invalid(format!(
                "`{name}` is a skill the owner approved or wrote; a proposal cannot replace it. Propose it under \
                 a new name (e.g. `{name}-2`), or ask the owner to edit {}",
                file.display()
            )));
        }
        // A model in a loop of proposals would fill the skills folder (and
        // the owner's list): a new one waits until fewer are waiting.
        let waiting: Vec<String> = self.db.drafts()?.into_iter().filter(|n| self.open_draft(n)).collect();
        if !waiting.iter().any(|n| n == name) && waiting.len() >= MAX_DRAFTS {
            return Err(RuntimeError::Invalid(format!(
                "{} proposals wait for the owner already ({}); revise one of them, or ask the owner to approve or reject one first",
                waiting.len(),
                waiting.join(", ")
            )));
        }
        std::fs::write(&tmp, source)
            .and_then(|_| std::fs::rename(&tmp, &file))
            .map_err(|e| RuntimeError::Io(file.clone(), e))?;
        self.db.set_draft(name, &crate::component::sha256_hex(source.as_bytes()))?;
        self.rescan().await;
        self.inspect(name)
    }

    /// Whether `name` is a draft the agent proposed that is still in the
    /// folder and that the owner has not answered with a grant.
    fn open_draft(&self, name: &str) -> bool {
        self.db.draft(name).ok().flatten().is_some()
            && self.paths.skills_dir().join(format!("{name}.js")).exists()
            && self.db.grant(name).ok().flatten().is_none()
    }

    /// The newest `limit` audit records (of one component), oldest first.
    pub fn audit(&self, skill: Option<&str>, limit: usize) -> Result<Vec<AuditRecord>, RuntimeError> {
        Ok(self.db.audit_tail(skill, limit)?)
    }

    /// The newest `limit` messages to the owner, oldest first.
    pub fn notifications(&self, limit: usize) -> Result<Vec<Notification>, RuntimeError> {
        Ok(self.db.notifications(limit)?)
    }
}
