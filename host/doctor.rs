//! `wasiclaw doctor`: checks a setup the way an owner would debug it, and
//! says for each problem what to run. It reads and probes; it changes
//! nothing (a model is asked for one tiny completion).
//!
//! Order: the state directory and its files first (later checks need
//! them), then the database or the running daemon, then the model, then
//! what the daemon reports about skills and channels.

use crate::api::{self, Reply, Request, Response};
use crate::config::{Config, Paths};
use crate::llm::{ChatRequest, Llm, Message};
use crate::runtime::{Runtime, RuntimeError, SkillInfo, SkillState};
use crate::store::StoreError;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// One thing checked.
#[derive(Debug, serde::Serialize)]
pub struct Finding {
    /// Whether the check passed.
    pub ok: bool,
    /// What was checked.
    pub check: String,
    /// What was found.
    pub said: String,
    /// What to run or change, for a problem.
    pub fix: Option<String>,
}

fn ok(check: &str, said: impl Into<String>) -> Finding {
    Finding { ok: true, check: check.into(), said: said.into(), fix: None }
}

fn problem(check: &str, said: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding { ok: false, check: check.into(), said: said.into(), fix: Some(fix.into()) }
}

/// Free bytes on the filesystem holding `path`.
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `s` a valid out-pointer.
    (unsafe { libc::statvfs(c.as_ptr(), &mut s) } == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
}

/// A `[tools."NAME"]` policy that applies to nothing: a typo there would
/// leave a tool the owner meant to deny, or be asked about, as it was.
fn unknown_tool(name: &str, skills: &[SkillInfo]) -> Option<Finding> {
    if crate::tools::HOST_TOOLS.iter().any(|t| t.name == name) {
        return None;
    }
    let fix = "write it as SKILL.TOOL, as `wasiclaw skills inspect SKILL` lists the tools, or a host tool's name (memory_save)";
    let Some((skill, tool)) = name.split_once('.') else {
        return Some(problem(
            "tools",
            format!("[tools.\"{name}\"] is not SKILL.TOOL nor a host tool, so it applies to nothing"),
            fix,
        ));
    };
    match skills.iter().find(|s| s.name == skill) {
        None => Some(problem("tools", format!("[tools.\"{name}\"]: no skill {skill} is installed"), fix)),
        // Still compiling or rejected: its tools are not known yet.
        Some(s) if s.tools.is_empty() || s.tools.iter().any(|t| t.name == tool) => None,
        Some(s) => {
            let offered: Vec<&str> = s.tools.iter().map(|t| t.name.as_str()).collect();
            let said = format!("[tools.\"{name}\"]: {skill} has no tool {tool} (it has {})", offered.join(", "));
            Some(problem("tools", crate::text::one_line(&said), fix))
        }
    }
}

/// Check the state dir, config, secrets, models, disk, database and components.
pub async fn run(paths: &Paths) -> Vec<Finding> {
    let mut out = Vec::new();
    let dir = &paths.state_dir;
    match std::fs::metadata(dir) {
        Err(_) => out.push(problem(
            "state dir",
            format!("{} does not exist", dir.display()),
            "run `wasiclaw run` once to create it",
        )),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => out.push(problem(
            "state dir",
            format!("{} is readable by others (mode {:o})", dir.display(), m.permissions().mode() & 0o777),
            format!("chmod 700 {}", dir.display()),
        )),
        Ok(_) => out.push(ok("state dir", format!("{} (owner only)", dir.display()))),
    }
    let loaded = Config::load(&paths.config());
    let config_parses = loaded.is_ok();
    let config = match loaded {
        Ok(c) => {
            out.push(ok("config", format!("{} parses", paths.config().display())));
            c
        }
        Err(e) => {
            out.push(problem(
                "config",
                e.to_string(),
                "fix the line it names; examples/config.toml shows every setting",
            ));
            Config::default()
        }
    };
    let secrets = paths.secrets();
    match std::fs::metadata(&secrets) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => out.push(problem(
            "secrets",
            format!("{} is readable by others (mode {:o})", secrets.display(), m.permissions().mode() & 0o777),
            format!("chmod 600 {}", secrets.display()),
        )),
        Ok(_) => match crate::secrets::Secrets::new(secrets.clone()).names() {
            Ok(names) => out.push(ok("secrets", format!("{} secret(s), owner only", names.len()))),
            Err(crate::secrets::SecretsError::Sealed(_)) => {
                out.push(ok("secrets", "sealed at rest with the service's credential key (owner only)"))
            }
            Err(e) => out.push(problem(
                "secrets",
                e.to_string(),
                "restore it from a backup, or remove it and set the secrets again",
            )),
        },
        Err(_) => out.push(ok("secrets", "none stored yet")),
    }
    if config.gateway.enabled {
        // Read, never made here: doctor changes nothing.
        let name = config.gateway.token_name();
        let fix = format!("wasiclaw secrets set {name} --random");
        match crate::secrets::Secrets::new(secrets.clone()).get(name) {
            Ok(Some(t)) if t.len() < crate::config::MIN_GATEWAY_TOKEN => out.push(problem(
                "gateway",
                format!(
                    "its token {name} is {} characters, short enough to guess; the gateway will not serve",
                    t.len()
                ),
                fix,
            )),
            Ok(None) if config.gateway.token_secret.is_some() => {
                out.push(problem("gateway", format!("[gateway] token_secret {name} is not set"), fix))
            }
            _ => {}
        }
    }
    for (name, url) in config.keys_in_clear() {
        out.push(problem(
            "secrets",
            format!("{name} goes to {url} over plain http: anyone on the way can read it"),
            "use https:// in that base_url (plain http only to this machine's loopback)",
        ));
    }
    for name in config.providers.iter().filter_map(|p| p.api_key_secret.as_deref()) {
        let store = crate::secrets::Secrets::new(secrets.clone());
        if matches!(store.get(name), Ok(None) | Err(crate::secrets::SecretsError::Missing(_))) {
            out.push(problem(
                "secrets",
                format!("{name} (a provider key) is not set"),
                format!("wasiclaw secrets set {name}"),
            ));
        }
    }
    let now = jiff::Timestamp::now();
    if now < jiff::Timestamp::from_second(1_767_225_600).expect("a valid time") {
        out.push(problem(
            "clock",
            format!("the system clock says {now}"),
            "enable time sync (e.g. `timedatectl set-ntp true`); TLS and schedules need a correct clock",
        ));
    } else {
        out.push(ok("clock", now.strftime("%Y-%m-%d %H:%M UTC").to_string()));
    }
    match free_bytes(if dir.exists() { dir } else { std::path::Path::new("/") }) {
        Some(free) if free < 200 << 20 => out.push(problem(
            "disk",
            format!("{} MiB free", free >> 20),
            "free some space: the database and compiled skills need room to grow",
        )),
        Some(free) => out.push(ok("disk", format!("{} MiB free", free >> 20))),
        None => {}
    }

    // The database, through the daemon when one runs.
    let mut backups = crate::backups::Backups::new(&config, paths).map(|b| b.report());
    let skills: Option<Vec<SkillInfo>> = match api::call_daemon(&paths.socket(), &Request::Status.into(), &mut |_| {})
        .await
    {
        Ok(Some(Reply::Ok(Response::Status(status)))) => {
            out.push(ok("daemon", format!("running (pid {}), database open", status.pid)));
            // (One that does not parse is a problem above already.)
            if let Some(edited) = status.config_edited.as_ref().filter(|_| config_parses) {
                out.push(problem(
                    "config",
                    edited.clone(),
                    "`systemctl --user restart wasiclaw` (or `sudo systemctl restart wasiclaw`), or stop `wasiclaw run` and start it again",
                ));
            }
            // Only the daemon knows whether its last attempt failed.
            if let (Some(mine), Some(its)) = (backups.as_mut(), status.backups.as_ref()) {
                mine.failing = its.failing.clone();
            }
            let stuck = |c: &&crate::channels::ChannelStatus| {
                c.restarts > 0 || c.state == crate::channels::ChannelState::NeedsApproval
            };
            for c in status.channels.iter().filter(stuck) {
                let why = c.last_error.clone().unwrap_or_else(|| c.state.to_string());
                out.push(problem(
                    "channel",
                    format!("{} ({} restarts): {}", c.name, c.restarts, crate::text::one_line(&why)),
                    format!("`wasiclaw status` and `wasiclaw skills inspect {}` show what it needs", c.name),
                ));
            }
            for c in status.channels.iter().filter(|c| c.outbox_held > 0) {
                out.push(problem(
                    "channel",
                    format!("{}: {} message(s) the platform refused are held, unsent", c.name, c.outbox_held),
                    "`wasiclaw outbox` shows them; `wasiclaw outbox --retry ID` sends one again, `--drop ID` gives it up",
                ));
            }
            match api::call_daemon(&paths.socket(), &Request::SkillsList.into(), &mut |_| {}).await {
                Ok(Some(Reply::Ok(Response::Skills(list)))) => Some(list),
                _ => None,
            }
        }
        Ok(_) | Err(_) => match Runtime::open(paths.clone()) {
            Ok(rt) => {
                out.push(ok("database", format!("{} opens (no daemon running)", paths.database().display())));
                rt.rescan().await;
                rt.skills().ok()
            }
            Err(RuntimeError::Store(StoreError::Locked(_))) => {
                out.push(problem(
                    "database",
                    "locked by another process, but no daemon answers on the socket",
                    "a daemon may be starting (wait a moment); otherwise find the process with `fuser wasiclaw.redb` in the state dir",
                ));
                None
            }
            Err(RuntimeError::Store(StoreError::Open { path, why, fix })) => {
                out.push(problem("database", format!("{path}: {why}"), fix));
                None
            }
            Err(e) => {
                out.push(problem(
                    "database",
                    e.to_string(),
                    "restore the state dir from a backup; keep the broken file for a bug report",
                ));
                None
            }
        },
    };
    out.push(match backups.as_ref().map(crate::backups::Report::verdict) {
        None => {
            ok("backup", "none automatic: set [storage] backup_dir to a directory on another drive for a daily copy")
        }
        Some((said, None)) => ok("backup", said),
        Some((said, Some(fix))) => problem("backup", said, fix),
    });
    // An installed service that would not run this setup as configured.
    let state = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
    for user in [true, false] {
        let Ok(svc) = crate::service::Service::new(user, None) else { continue };
        let Ok(unit) = std::fs::read_to_string(svc.unit_file()) else { continue };
        if let Some(said) = crate::service::stale(&unit, &state, config.storage.backup_dir.as_deref()) {
            let (flag, sudo) = if user { (" --user", "") } else { ("", "sudo ") };
            let sealed = if unit.contains("LoadCredentialEncrypted=") { " --encrypt-secrets" } else { "" };
            let fix = format!(
                "{sudo}wasiclaw service install{flag}{sealed} writes it again for this binary and config; then \
                 `{sudo}systemctl{flag} restart wasiclaw`"
            );
            out.push(problem("service", format!("{}: {said}", svc.unit_file().display()), fix));
        }
    }
    for s in skills.iter().flatten() {
        match s.status {
            SkillState::Rejected => out.push(problem(
                "skill",
                format!("{} is rejected: {}", s.name, crate::text::one_line(s.reason.as_deref().unwrap_or_default())),
                format!("replace or remove {}", s.file.display()),
            )),
            SkillState::NeedsApproval => out.push(problem(
                "skill",
                format!("{}: {}", s.name, crate::text::one_line(&crate::runtime::waiting_for(&s.pending))),
                if s.pending.iter().all(|p| p.starts_with(crate::runtime::APPROVE_BUILD)) {
                    format!(
                        "read what it asks for (`wasiclaw skills inspect {0}`), then `wasiclaw skills approve {0}`",
                        s.name
                    )
                } else {
                    format!(
                        "read what it asks for (`wasiclaw skills inspect {0}`), then `wasiclaw skills grant {0} \
                         --all-requested` (this build and all it asks for), or grant the rights you allow by name",
                        s.name
                    )
                },
            )),
            _ => {}
        }
    }
    if let Some(list) = &skills {
        let active = list.iter().filter(|s| s.status == SkillState::Active).count();
        out.push(ok("skills", format!("{active} of {} active", list.len())));
        out.extend(config.tools.keys().filter_map(|name| unknown_tool(name, list)));
        // Settings for a name nothing answers to: a typo there leaves a
        // channel's admins, or a skill's settings, unset.
        let installed = |name: &String| list.iter().any(|s| &s.name == name);
        for (table, name) in
            config.skills.keys().map(|n| ("skills", n)).chain(config.channels.keys().map(|n| ("channels", n)))
        {
            if !installed(name) {
                out.push(problem(
                    "config",
                    format!("[{table}.{name}]: nothing named {name} is installed, so these settings apply to nothing"),
                    "`wasiclaw skills list` shows the names; fix the table's name, or `wasiclaw skills add` the skill",
                ));
            }
        }
    }

    // The model: one tiny completion from each configured provider.
    if config.providers.is_empty() {
        out.push(problem(
            "model",
            "no provider in config.toml (a local Ollama is tried when the agent starts)",
            "add a [[providers]] table; see examples/config.toml",
        ));
    }
    for provider in &config.providers {
        let llm = Llm::new(vec![provider.clone()], crate::secrets::Secrets::new(secrets.clone()), 0);
        let messages = [Message::User { text: "Reply with the word OK.".into() }];
        let req = ChatRequest { system: "You are a health check.", messages: &messages, tools: &[], max_tokens: 5 };
        let what = format!("{} at {}", provider.model, provider.base_url);
        match tokio::time::timeout(Duration::from_secs(30), llm.chat(&req, &mut |_| {})).await {
            Ok(Ok(_)) => out.push(ok("model", format!("{what} answers"))),
            Ok(Err(e)) => out.push(problem(
                "model",
                format!("{what}: {e}"),
                "check base_url and model in config.toml, and the key with `wasiclaw secrets set`",
            )),
            Err(_) => out.push(problem(
                "model",
                format!("{what} did not answer in 30 s"),
                "check that the server runs and is reachable from here",
            )),
        }
    }
    out
}
