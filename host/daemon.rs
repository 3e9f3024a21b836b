//! `wasiclaw run`: the always-on process. It owns the database, serves the
//! local API on the unix socket, the gateway (web chat, channel webhooks)
//! and the chat channels, and keeps the skills folder loaded with a
//! file watcher plus a rare rescan (a watcher can miss events on some
//! filesystems; the rescan is the backstop). Stops cleanly on SIGINT/SIGTERM.
//!
//! Instant start: the socket, gateway and channels open at once; a
//! component never compiled (a new file, or every file after an upgrade)
//! compiles in the background, one at a time, in a child process (a
//! compile the kernel kills for memory must not take the daemon with it),
//! and shows as `compiling`.
//!
//! Idle means idle: only events that change the folder (create, write,
//! rename, remove) wake it, never reads (a rescan reads files, and reacting
//! to that would loop forever), and a rescan only stats unchanged files.
//!
//! Crash-only on storage failure: once the database file fails an I/O (a
//! full disk, a failing card), redb refuses all later reads and writes, so
//! the daemon exits non-zero and the service starts it again.

use crate::agent::Agent;
use crate::channels::Channels;
use crate::config::{Paths, ProviderConfig};
use crate::runtime::Runtime;
use crate::scheduler::Scheduler;
use crate::{api, gateway};
use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};

/// How often the folder is rescanned even without watcher events.
const RESCAN_EVERY: Duration = Duration::from_secs(600);
/// Coalesce bursts of events (a copy writes a file in many chunks).
const SETTLE: Duration = Duration::from_millis(250);

/// Run the daemon until SIGTERM or Ctrl-C.
pub async fn run(paths: Paths, provider: Option<ProviderConfig>, gateway_bind: Option<String>) -> anyhow::Result<()> {
    let socket = paths.socket();
    if api::call_daemon(&socket, &api::Request::Status.into(), &mut |_| {}).await?.is_some() {
        anyhow::bail!("a wasiclaw daemon is already running for {}", paths.state_dir.display());
    }
    // A CLI command may hold the database for a moment; wait it out.
    let rt = Arc::new(Runtime::open_patiently(paths.clone(), Duration::from_secs(15)).await?);
    // Under the service with `--encrypt-secrets`: a store still plain (say,
    // a secret set before) is sealed now.
    if rt.secrets.has_key() {
        rt.secrets.seal().context("cannot seal the secrets store with the credential key")?;
        tracing::info!("secrets store sealed with the {} credential", crate::secrets::CREDENTIAL);
    }
    for (name, url) in rt.config.keys_in_clear() {
        tracing::warn!("{name} goes to {url} over plain http: anyone on the way can read it; use https://");
    }
    // Only what is already compiled loads before the socket opens; the rest
    // compiles in the background, one component at a time.
    let report = rescan(&rt).await;
    let waiting = rt.registry.compiling().len();
    tracing::info!(
        "state dir {}; {} skill(s) loaded, {} rejected, {waiting} to compile",
        paths.state_dir.display(),
        report.loaded.len(),
        report.rejected.len()
    );

    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).with_context(|| format!("cannot listen on {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    let agent = Arc::new(Agent::new(rt.clone(), provider).await);
    if !agent.no_model().is_empty() {
        tracing::warn!("{}", agent.no_model());
    }
    let channels = Channels::new(agent.clone());
    channels.reconcile();
    let gateway = if rt.config.gateway.enabled {
        let listener = gateway::bind(&rt, gateway_bind.as_deref()).await?;
        tracing::info!("web chat on http://{}/, channel webhooks under /hooks/", listener.local_addr()?);
        Some(tokio::spawn(gateway::serve(agent.clone(), channels.clone(), listener)))
    } else {
        None
    };
    let scheduling = agent.clone();
    let scheduler = tokio::spawn(async move { Scheduler { agent: &scheduling }.run().await });
    let compiling = rt.clone();
    // Compiles run in a child (see `CompileChild`), unless this binary
    // cannot be found again (replaced by an upgrade while running).
    let child = std::env::current_exe()
        .ok()
        .filter(|exe| exe.exists())
        .map(|exe| crate::component::CompileChild { exe, state_dir: paths.state_dir.clone() });
    let compiler = tokio::spawn(async move {
        loop {
            compiling.compile_pending(child.as_ref()).await;
            compiling.compile_wanted.notified().await;
        }
    });
    let backups = rt.backups.clone().map(|b| tokio::spawn(b.run(rt.db.clone())));
    let server = tokio::spawn(api::serve(agent, channels.clone(), listener));
    let engine = rt.engine.clone();
    let settler = tokio::spawn(crate::resident::settle_when_idle(move || engine.release_kept()));

    // Answering now: systemd's `Type=notify` start is done, and its
    // watchdog hears from the runtime itself, so a runtime that hangs is
    // restarted.
    crate::service::notify("READY=1");
    let watchdog = crate::service::watchdog_every().map(|every| {
        tokio::spawn(async move {
            loop {
                crate::service::notify("WATCHDOG=1");
                tokio::time::sleep(every).await;
            }
        })
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        use notify::EventKind::{Any, Create, Modify, Remove};
        use notify::event::ModifyKind;
        let changes = |kind: &notify::EventKind| match kind {
            Create(_) | Remove(_) | Any => true,
            Modify(m) => !matches!(m, ModifyKind::Metadata(_)),
            _ => false,
        };
        if event.is_ok_and(|e| changes(&e.kind)) {
            let _ = tx.send(());
        }
    })?;
    let skills_dir = paths.skills_dir();
    watcher
        .watch(&skills_dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", skills_dir.display()))?;
    tracing::info!("watching {} for skills; local API on {}", skills_dir.display(), socket.display());

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(RESCAN_EVERY);
    tick.tick().await;
    let mut failed = None;
    loop {
        tokio::select! {
            Some(()) = rx.recv() => {
                tokio::time::sleep(SETTLE).await;
                while rx.try_recv().is_ok() {}
                rescan(&rt).await;
                channels.reconcile();
            }
            _ = rt.grants_changed.notified() => channels.reconcile(),
            _ = tick.tick() => {
                rescan(&rt).await;
                channels.reconcile();
            }
            why = crate::store::io_failure() => {
                // The request whose write failed answers first ("the disk
                // is full"); a CLI that saw the daemon vanish instead would
                // try the write again on its own.
                tokio::time::sleep(Duration::from_millis(250)).await;
                failed = Some(why);
                break;
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    tracing::info!("shutting down");
    crate::service::notify("STOPPING=1");
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    server.abort();
    scheduler.abort();
    compiler.abort();
    settler.abort();
    if let Some(backups) = backups {
        backups.abort();
    }
    if let Some(gateway) = gateway {
        gateway.abort();
    }
    let _ = std::fs::remove_file(&socket);
    if let Some(why) = failed {
        // What was committed is safe; redb repairs the file when it opens.
        anyhow::bail!(
            "the database file failed a read or write ({why}), and it cannot be used again until it is opened \
             again: exiting, so that the service starts wasiclaw again (free some space first if the disk is full; \
             `wasiclaw doctor` checks)"
        );
    }
    Ok(())
}

/// Rescan the folder; components never compiled wait for the compiler.
async fn rescan(rt: &Runtime) -> crate::component::ScanReport {
    let report = rt.rescan_deferred().await;
    if !rt.registry.compiling().is_empty() {
        rt.compile_wanted.notify_one();
    }
    for name in &report.loaded {
        tracing::info!("loaded skill {name}");
    }
    for (name, reason) in &report.rejected {
        tracing::warn!("rejected {name}: {reason}");
    }
    for name in &report.removed {
        tracing::info!("unloaded skill {name}");
    }
    report
}
