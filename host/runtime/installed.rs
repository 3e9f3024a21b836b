//! What the owner sees of the installed components and changes about them:
//! the list (`skills list`, `inspect`), grants and approvals of builds, the
//! diff of a changed build, and removal. A part of `runtime` (its registry,
//! database and config), kept apart so the runtime reads as what a call needs.
//!
//! Invariants: a grant is checked before it is stored (valid URL patterns
//! and secret names, never one of the host's own secrets, never a
//! link-local or metadata address); an approval names the build the owner
//! read when the agent may still revise it; a removal takes the component's
//! rights with it, and what it stored only with `erase`.

use super::{Runtime, RuntimeError, stem};
use crate::component::{ChannelSpec, Compiling, Entry, Manifest, ToolSpec, short_sha};
use crate::grants::{self, Capabilities, GrantChange, GrantSet, UrlPattern};
use crate::store::now_ms;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How a component's `pending` list begins when its build waits for the
/// owner's approval (the rights not granted follow).
pub const APPROVE_BUILD: &str = "approval of this build";

/// What a component waits for, in a phrase: approval of its build (the
/// first of `pending`, if so), then the rights not granted.
pub fn waiting_for(pending: &[String]) -> String {
    let (build, rights): (Vec<&String>, Vec<&String>) = pending.iter().partition(|p| p.starts_with(APPROVE_BUILD));
    let mut parts: Vec<String> = build.iter().map(|b| format!("awaiting {b}")).collect();
    if !rights.is_empty() {
        parts.push(format!("not granted: {}", rights.iter().map(|r| r.as_str()).collect::<Vec<_>>().join("; ")));
    }
    parts.join("; ")
}

/// Whether a component may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkillState {
    /// Being compiled for the first time (in the background, by the daemon).
    Compiling,
    /// Approved, with everything it asks for granted.
    Active,
    /// Waiting for the owner: this build's approval, or rights it asks for.
    NeedsApproval,
    /// It cannot load (the reason says why) and never runs.
    Rejected,
    /// Its file is gone; its grant is still stored.
    Removed,
}

impl std::fmt::Display for SkillState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::text::variant_name(self))
    }
}

/// What `skills remove` did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Removed {
    /// The component's name.
    pub name: String,
    /// Its file, deleted; None if none was installed (only what it left).
    pub file: Option<PathBuf>,
    /// What it left in the database, and what went.
    pub forgot: crate::store::Forgot,
    /// Bytes in its files directory (`/data`).
    pub files_bytes: u64,
    /// What it stored was erased (else kept).
    pub erased: bool,
    /// Jobs that call its tools (skipped until it is back).
    pub jobs: Vec<u64>,
    /// Jobs that report to its chats (to the owner's notifications until
    /// it is back).
    #[serde(default)]
    pub reports: Vec<u64>,
}

/// One skill as `wasiclaw skills list --json` prints it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SkillInfo {
    /// Its name.
    pub name: String,
    /// Its own version string.
    pub version: Option<String>,
    /// What it does.
    pub description: Option<String>,
    /// Its file.
    pub file: PathBuf,
    /// The file's sha256.
    pub sha256: String,
    /// Whether it may run.
    pub status: SkillState,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// What it asks for but may not use (yet).
    pub pending: Vec<String>,
    /// Its tools.
    pub tools: Vec<ToolSpec>,
    /// What it asks for.
    pub requested: Option<Capabilities>,
    /// What the owner granted.
    pub granted: Option<GrantSet>,
    /// The component version the grants were last approved for.
    pub granted_sha256: Option<String>,
    /// `OLD → NEW` (sha256 prefixes) when this build is not the approved one.
    #[serde(default)]
    pub changed: Option<String>,
    /// Keys and bytes in its kv namespace, for a component that asks for kv.
    #[serde(default)]
    pub kv_usage: Option<(u64, u64)>,
    /// Memories it keeps and the most it may, for a component that asks
    /// to write memory.
    #[serde(default)]
    pub memories: Option<(u64, u64)>,
    /// Set for a chat channel: how it reaches its platform.
    #[serde(default)]
    pub channel: Option<ChannelSpec>,
}

impl Runtime {
    /// What `skills list` shows of a component still compiling.
    fn compiling_info(&self, file: &Path, c: &Compiling) -> SkillInfo {
        let secs = (now_ms() - c.since_ms) / 1000;
        SkillInfo {
            name: stem(file),
            version: None,
            description: None,
            file: file.to_path_buf(),
            sha256: c.sha256.clone(),
            status: SkillState::Compiling,
            reason: Some(format!(
                "not compiled yet (waiting {secs} s): the daemon compiles it in the background, or run `wasiclaw skills precompile`"
            )),
            pending: vec![],
            tools: vec![],
            requested: None,
            granted: None,
            granted_sha256: None,
            changed: None,
            kv_usage: None,
            memories: None,
            channel: None,
        }
    }

    fn info(&self, entry: &Entry) -> Result<SkillInfo, RuntimeError> {
        let name = entry.name();
        let grant = self.db.grant(&name)?;
        let mut info = SkillInfo {
            name,
            version: None,
            description: None,
            file: entry.file.clone(),
            sha256: entry.sha256.clone(),
            status: SkillState::Rejected,
            reason: None,
            pending: vec![],
            tools: vec![],
            requested: None,
            granted: grant.as_ref().map(|g| g.granted.clone()),
            granted_sha256: grant.as_ref().map(|g| g.sha256.clone()),
            changed: None,
            kv_usage: None,
            memories: None,
            channel: None,
        };
        match &entry.loaded {
            Err(reason) => info.reason = Some(reason.clone()),
            Ok(loaded) => {
                let m: &Manifest = &loaded.manifest;
                let eff = self.effective(&m.capabilities, &entry.sha256, grant.as_ref());
                let active = eff.approved && eff.pending.is_empty();
                info.status = if active { SkillState::Active } else { SkillState::NeedsApproval };
                info.pending = eff.pending;
                if !eff.approved {
                    info.changed =
                        eff.changed_from.map(|old| format!("{} → {}", short_sha(&old), short_sha(&entry.sha256)));
                    let hint = format!("{APPROVE_BUILD}: run `wasiclaw skills approve {}`", m.name);
                    info.pending.insert(0, hint);
                }
                if m.capabilities.rights.contains(grants::Rights::KV) {
                    info.kv_usage = Some(self.db.kv_usage(&m.name)?);
                }
                if m.capabilities.rights.contains(grants::Rights::MEMORY_WRITE) {
                    let kept = self.db.memory_count(&format!("skill:{}", m.name))?;
                    info.memories = Some((kept, self.config.limits.memories_kept));
                }
                info.version = Some(m.version.clone());
                info.description = Some(m.description.clone());
                info.tools = m.tools.clone();
                info.requested = Some(m.capabilities.clone());
                info.channel = loaded.channel().map(|(_, spec)| spec.clone());
            }
        }
        Ok(info)
    }

    /// Every component, in file order.
    pub fn skills(&self) -> Result<Vec<SkillInfo>, RuntimeError> {
        let mut all: Vec<SkillInfo> = self.registry.entries().iter().map(|e| self.info(e)).collect::<Result<_, _>>()?;
        all.extend(self.registry.compiling().iter().map(|(file, c)| self.compiling_info(file, c)));
        Ok(all)
    }

    /// `skills remove`: take component `name` away. Its file goes (the
    /// daemon unloads it), and its grant, the owner's "always" answers for
    /// its tools and a channel's pairings, so the name added again asks
    /// again. What it stored (kv, memories, its files directory, a
    /// channel's conversations and waiting messages) goes with `erase`, or
    /// is counted and kept. A name neither installed nor leaving anything
    /// is not found.
    pub async fn remove_component(&self, name: &str, erase: bool) -> Result<Removed, RuntimeError> {
        // The name becomes a path (its files directory): only a name a
        // component could have.
        if !crate::component::valid_name(name) {
            return Err(RuntimeError::Invalid(format!(
                "`{name}` is not a component's name ({})",
                crate::component::NAME_RULE
            )));
        }
        // Its conversations (`terminal:…`) would go with `--erase`.
        if crate::component::HOST_NAMES.contains(&name) {
            return Err(RuntimeError::Invalid(format!(
                "`{name}` is the host's own conversations, not a component; `/new` there starts afresh"
            )));
        }
        let file = match self.registry.find(name) {
            Some(entry) => Some(entry.file),
            None => self.compiling_as(name).map(|(file, _)| file),
        };
        let files_dir = self.paths.files_dir(name);
        let (files, files_bytes) = (files_dir.exists(), crate::files::size(&files_dir));
        if let Some(file) = &file {
            std::fs::remove_file(file).map_err(|e| RuntimeError::Io(file.clone(), e))?;
        }
        if erase && files {
            std::fs::remove_dir_all(&files_dir).map_err(|e| RuntimeError::Io(files_dir.clone(), e))?;
        }
        let forgot = self.db.forget_component(name, erase)?;
        if file.is_none() && !files && forgot == crate::store::Forgot::default() {
            return Err(RuntimeError::NoSkill(name.into(), self.paths.skills_dir().display().to_string()));
        }
        self.rescan().await;
        // A channel of that name stops.
        self.grants_changed.notify_one();
        let all = self.db.jobs()?;
        let ids = |of: &dyn Fn(&crate::jobs::Job) -> bool| all.iter().filter(|j| of(j)).map(|j| j.id).collect();
        let jobs = ids(&|j| matches!(&j.action, crate::jobs::Action::Tool { skill, .. } if skill == name));
        let reports = ids(&|j| j.target.split_once(':').is_some_and(|(channel, _)| channel == name));
        Ok(Removed { name: name.into(), file, forgot, files_bytes, erased: erase, jobs, reports })
    }

    /// One component by name.
    pub fn inspect(&self, name: &str) -> Result<SkillInfo, RuntimeError> {
        self.info(&self.entry(name)?)
    }

    /// Grant (or with `revoke`, take back) rights; returns the new state
    /// and notes about grants that have no effect.
    pub fn change_grant(
        &self,
        name: &str,
        change: &GrantChange,
        revoke: bool,
    ) -> Result<(SkillInfo, Vec<String>), RuntimeError> {
        self.grant_build(name, change, revoke, None)
    }

    /// [`Runtime::change_grant`], if the build is still the one whose
    /// sha256 starts with `build` (what the owner read), when given.
    pub fn grant_to_build(
        &self,
        name: &str,
        change: &GrantChange,
        build: Option<&str>,
    ) -> Result<(SkillInfo, Vec<String>), RuntimeError> {
        self.grant_build(name, change, false, build)
    }

    fn grant_build(
        &self,
        name: &str,
        change: &GrantChange,
        revoke: bool,
        build: Option<&str>,
    ) -> Result<(SkillInfo, Vec<String>), RuntimeError> {
        let rights = &change.rights;
        for rule in &rights.http {
            UrlPattern::parse(&rule.url).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
        }
        if let Some(bad) = rights.secrets.iter().find(|s| !grants::valid_secret_name(s)) {
            return Err(RuntimeError::Invalid(format!("`{bad}` is not a valid secret name")));
        }
        let host_secrets = self.config.host_secrets();
        if let Some(own) = rights.secrets.iter().find(|s| host_secrets.contains(*s)) {
            return Err(RuntimeError::Invalid(format!(
                "`{own}` is one of the host's own secrets (a provider key, the gateway token or the embeddings key in config.toml); it is never granted to a component"
            )));
        }
        for rule in &rights.http {
            let pattern = UrlPattern::parse(&rule.url).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
            if let Ok(ip) = pattern.host.parse()
                && crate::policy::never_reachable(ip)
            {
                return Err(RuntimeError::Invalid(format!(
                    "{ip} is a link-local or cloud-metadata address; components can never reach it"
                )));
            }
        }
        let mut notes = Vec::new();
        if revoke {
            if self.db.grant(name)?.is_none() && self.registry.find(name).is_none() {
                return Err(RuntimeError::NoSkill(name.into(), self.paths.skills_dir().display().to_string()));
            }
            self.db.update_grant(name, |record| grants::apply_revoke(record, change))?;
        } else {
            let entry = self.entry(name)?;
            let now = crate::component::short_sha(&entry.sha256);
            // The agent may revise its draft after the owner read it: a
            // grant by name alone would take whatever it is now.
            if build.is_none() && self.open_draft(name) {
                return Err(RuntimeError::Invalid(format!(
                    "{name} is a draft the agent wrote and may still revise: approve the build you read, \
                     `/approve {name} {now}` or `wasiclaw skills approve {name} --build {now}` (read it first with \
                     `wasiclaw skills inspect {name}`)"
                )));
            }
            if let Some(build) = build.filter(|b| b.len() < 6 || !entry.sha256.starts_with(*b)) {
                return Err(RuntimeError::Invalid(format!(
                    "{name} is build {now} now, not {build}: it changed since you read it. Read what it asks for \
                     (`wasiclaw skills inspect {name}`), then /approve {name} {now}"
                )));
            }
            let loaded = entry.loaded.as_ref().map_err(|r| RuntimeError::Rejected(name.into(), r.clone()))?;
            let asked = &loaded.manifest.capabilities;
            let unasked = |granted: bool, requested: bool, what: &str, notes: &mut Vec<String>| {
                if granted && !requested {
                    notes.push(format!("{name} does not ask for {what}; the grant has no effect until it does"));
                }
            };
            for name in (rights.rights - asked.rights).names() {
                unasked(true, false, name, &mut notes);
            }
            let secrets = asked.all_secrets();
            for s in rights.secrets.iter().filter(|s| !secrets.contains(*s)) {
                unasked(true, false, &format!("secret {s}"), &mut notes);
            }
            for rule in &rights.http {
                let g = UrlPattern::parse(&rule.url).expect("validated above");
                let meets = asked
                    .http
                    .iter()
                    .filter_map(|r| UrlPattern::parse(&r.url).ok())
                    .any(|r| r.covers(&g) || g.covers(&r));
                unasked(!meets, false, &format!("http {}", rule.url), &mut notes);
            }
            // What the owner approves of a script is its source: kept, so
            // `skills diff` can show what a later edit changes.
            let source = crate::component::is_script(&entry.file)
                .then(|| crate::component::read_skill_file(&entry.file).ok())
                .flatten()
                .filter(|s| crate::component::script_identity(s) == entry.sha256)
                .and_then(|s| String::from_utf8(s).ok());
            let (_, always) = self.db.update_grant(name, |record| {
                grants::apply_grant(record, asked, &entry.sha256, change);
                record.granted.secrets.retain(|s| !host_secrets.contains(s));
                if record.sha256 == entry.sha256 && source.is_some() {
                    record.source = source.clone();
                }
            })?;
            if always > 0 {
                notes.push(format!(
                    "the \"always\" answers you gave {name} (for {always} tool(s)) were for the build you approved \
                     before; this one asks again the first time a tool needs you"
                ));
            }
        }
        self.grants_changed.notify_one();
        // Each right alone is the owner's call; together these two let a
        // component send what it reads of their memory anywhere, unasked.
        if !revoke
            && self
                .loaded_rights(name)
                .is_some_and(|e| e.reaches_unnamed_hosts() && e.rights.contains(grants::Rights::MEMORY_READ))
        {
            notes.push(format!(
                "{name} may now search your long-term memory and reach hosts you did not name, so what it reads \
                 could go anywhere; grant it named hosts instead (`skills revoke {name} --http URL`, then \
                 `skills grant {name} --http https://HOST/`) unless you trust it with both"
            ));
        }
        let info = match self.registry.find(name) {
            Some(entry) => self.info(&entry)?,
            None => self.removed_info(name)?,
        };
        Ok((info, notes))
    }

    /// What changed between the build of `name` the owner approved and the
    /// one in the folder: what it asks for and, for a script, its source,
    /// as diff lines (`-` approved, `+` now, `  ` both).
    pub fn diff(&self, name: &str) -> Result<Vec<String>, RuntimeError> {
        let entry = self.entry(name)?;
        let loaded = entry.loaded.as_ref().map_err(|r| RuntimeError::Rejected(name.into(), r.clone()))?;
        let Some(grant) = self.db.grant(name)? else {
            return Err(RuntimeError::Invalid(format!(
                "{name} was never approved, so there is nothing to compare; `wasiclaw skills inspect {name}` shows it all"
            )));
        };
        if grant.sha256 == entry.sha256 {
            return Ok(vec![format!(
                "{name}: the build in the folder is the one you approved ({})",
                short_sha(&entry.sha256)
            )]);
        }
        let mut out = vec![format!("{name}: approved {} → now {}", short_sha(&grant.sha256), short_sha(&entry.sha256))];
        out.push("asks for:".into());
        let asks = crate::text::diff_lines(&grant.approved.describe(), &loaded.manifest.capabilities.describe());
        out.extend(asks);
        if crate::component::is_script(&entry.file) {
            let now =
                crate::component::read_skill_file(&entry.file).map_err(|e| RuntimeError::Io(entry.file.clone(), e))?;
            let now = String::from_utf8_lossy(&now);
            match &grant.source {
                Some(was) => {
                    out.push(format!("source ({}):", entry.file.display()));
                    let lines = |s: &str| s.lines().map(str::to_string).collect::<Vec<_>>();
                    let changed = crate::text::diff_lines(&lines(was), &lines(&now));
                    out.extend(changed.into_iter().filter(|l| !l.starts_with("  ")));
                }
                None => out.push("(the approved source was not kept: it was approved by an older wasiclaw)".into()),
            }
        }
        Ok(out)
    }

    /// The grant of a skill whose file is gone.
    fn removed_info(&self, name: &str) -> Result<SkillInfo, RuntimeError> {
        let gone = Entry { file: PathBuf::new(), sha256: String::new(), loaded: Err(String::new()), stamp: None };
        let mut info = self.info(&gone)?;
        info.name = name.into();
        let grant = self.db.grant(name)?;
        info.granted = grant.as_ref().map(|g| g.granted.clone());
        info.granted_sha256 = grant.map(|g| g.sha256);
        info.status = SkillState::Removed;
        info.reason = None;
        Ok(info)
    }
}
