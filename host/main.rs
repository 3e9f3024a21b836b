//! The `wasiclaw` command line. Each command becomes an `api::Request`:
//! sent to the daemon when one runs (it owns the database), run in-process
//! otherwise. The schema is `cli/args.rs`, output `cli/render.rs` (`--json`
//! prints the response's value), the terminal chat `cli/chat.rs`. The exit
//! code says what kind of error there was (see `runtime::ErrorKind`).

mod cli {
    pub(crate) mod args;
    pub(crate) mod chat;
    pub(crate) mod new;
    pub(crate) mod render;
}

use anyhow::{Context, bail};
use clap::Parser;
use cli::args::{Cli, Command, MemoryCommand, SecretsCommand, ServiceCommand, SkillsCommand};
use cli::render;
use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;
use wasiclaw::agent::Agent;
use wasiclaw::api::{self, Reply, Request, Response};
use wasiclaw::config::Paths;
use wasiclaw::runtime::{Runtime, RuntimeError, SkillState};
use wasiclaw::secrets::Secrets;
use wasiclaw::store::StoreError;

fn main() -> ExitCode {
    // `wasiclaw ... | head` ends quietly when the reader goes, as other
    // command-line tools do, instead of panicking on a broken pipe.
    // SAFETY: nothing else runs yet; SIG_DFL is always a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let is_daemon = matches!(cli.command, Command::Run { .. });
    if is_daemon {
        // Before any thread: each would otherwise get its own heap arena.
        wasiclaw::resident::few_arenas();
    }
    let filter = std::env::var("WASICLAW_LOG")
        .unwrap_or_else(|_| if is_daemon { "info" } else { "warn,wasiclaw::engine=info" }.into());
    // `Targets` (levels per module) rather than `EnvFilter`, whose regex
    // engine would be most of the logging code in the binary.
    let targets: Targets = filter.parse().unwrap_or_else(|e| {
        eprintln!("WASICLAW_LOG={filter:?} is not a log filter ({e}); use e.g. `info` or `warn,wasiclaw=debug`");
        Targets::new().with_default(tracing::Level::INFO)
    });
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    if cli.log_format == "json" {
        tracing_subscriber::registry().with(logs.json()).with(targets).init();
    } else {
        tracing_subscriber::registry().with(logs).with(targets).init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", said(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, each said once: a cause whose text the
/// message already holds (its `{source}` in the format) is not repeated.
fn said(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if !out.contains(&cause) {
            out = if out.is_empty() { cause } else { format!("{out}: {cause}") };
        }
    }
    out
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let paths = Paths::new(cli.state_dir.unwrap_or_else(Paths::default_state_dir));
    let (request, json) = match cli.command {
        Command::Run { model, gateway_bind } => {
            return wasiclaw::daemon::run(paths, model.provider(), gateway_bind).await.map(|_| ExitCode::SUCCESS);
        }
        Command::Compile { file, sha256 } => {
            Runtime::compile_one(&paths, &file, &sha256).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Doctor { json } => return Ok(render::findings(&wasiclaw::doctor::run(&paths).await, json)),
        Command::Open { new_token } => {
            std::fs::create_dir_all(&paths.state_dir)
                .with_context(|| format!("cannot create {}", paths.state_dir.display()))?;
            let config = wasiclaw::config::Config::load(&paths.config())?;
            if new_token {
                let name = config.gateway.token_name().to_string();
                let value = wasiclaw::secrets::Hidden(wasiclaw::secrets::random_token()?);
                match Secrets::new(paths.secrets()).set(&name, &value.0) {
                    // Sealed with the service's key: the daemon has it.
                    Err(wasiclaw::secrets::SecretsError::Sealed(_)) => {
                        let change = wasiclaw::api::SecretsChange::Set { name: name.clone(), value };
                        ask_daemon(&paths, Request::Secrets { change })?;
                    }
                    done => done?,
                }
                eprintln!(
                    "made a new token ({name}): the old address and every browser that opened it no longer get in, \
                     nor does anything that sends the old token (a script, a /metrics scraper). Open this one:"
                );
            }
            let url = match config.gateway.open_url(&Secrets::new(paths.secrets())) {
                Err(e) if matches!(e.downcast_ref(), Some(wasiclaw::secrets::SecretsError::Sealed(_))) => {
                    match ask_daemon(&paths, Request::OpenUrl)? {
                        Response::Url(url) => url,
                        _ => bail!("the daemon answered something else than an address"),
                    }
                }
                url => url?,
            };
            println!("{url}");
            return Ok(ExitCode::SUCCESS);
        }
        Command::Chat { session, model } => return cli::chat::chat(paths, &session, model.provider()).await,
        Command::Restore { file } => return restore(&paths, &file).await,
        Command::Secrets(cmd) => return secrets(&paths, cmd),
        Command::Service(cmd) => return service(&paths, cmd),
        Command::New(cmd) => return cli::new::new(&paths, cmd).map(|_| ExitCode::SUCCESS),
        Command::Skills(SkillsCommand::Precompile) => return precompile(paths).await,
        Command::Skills(SkillsCommand::Available { json }) => return available(&paths, json),
        Command::Skills(SkillsCommand::Add { names, all, force }) => return add(&paths, names, all, force),
        Command::Memory(MemoryCommand::Export { file: Some(file) }) => {
            let Reply::Ok(Response::Exported(jsonl)) = execute(paths, &Request::MemoryExport).await? else {
                bail!("the export failed")
            };
            write_owner_only(&file, jsonl.as_bytes()).with_context(|| format!("cannot write {}", file.display()))?;
            return Ok(ExitCode::SUCCESS);
        }
        command => command.request()?,
    };
    match execute(paths, &request).await? {
        Reply::Ok(response) => render::render(&request, response, json),
        Reply::Err { kind, message } => {
            eprintln!("error: {message}");
            Ok(ExitCode::from(kind.exit_code()))
        }
        Reply::Event(_) => bail!("the daemon sent an event where a reply was due"),
    }
}

/// Send the request to the daemon, or run it here if none is running. If
/// the database is busy (a daemon starting up), ask again until it answers.
async fn execute(paths: Paths, request: &Request) -> anyhow::Result<Reply> {
    let start = std::time::Instant::now();
    // One id for every try, so a retry after a lost reply is not applied twice.
    let envelope = api::Envelope::new(request.clone());
    // Progress of long work (an import's embeddings) goes to stderr.
    let progress = |e: wasiclaw::agent::Event| {
        if let wasiclaw::agent::Event::Notice { text } = e {
            eprintln!("{}", wasiclaw::text::printable(&text));
        }
    };
    loop {
        if let Some(reply) = api::call_daemon(&paths.socket(), &envelope, &mut { progress }).await? {
            return Ok(reply);
        }
        // Compile before taking the database, so a daemon starting now
        // does not wait for a long compile.
        if request.needs_skills() {
            Runtime::compile_folder(&paths).await?;
        }
        match Runtime::open(paths.clone()) {
            Ok(rt) => {
                if request.needs_skills() {
                    rt.rescan().await;
                }
                let rt = Arc::new(rt);
                let agent = if request.needs_agent() { Some(Agent::new(rt.clone(), None).await) } else { None };
                return Ok(api::dispatch(&rt, agent.as_ref(), None, envelope, &progress).await);
            }
            Err(RuntimeError::Store(StoreError::Locked(_))) if start.elapsed() < Duration::from_secs(15) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `skills precompile`: compile what is not compiled yet, with progress;
/// with a daemon running, watch it do so.
async fn precompile(paths: Paths) -> anyhow::Result<ExitCode> {
    if api::call_daemon(&paths.socket(), &Request::Status.into(), &mut |_| {}).await?.is_some() {
        loop {
            let Reply::Ok(Response::Skills(list)) = execute(paths.clone(), &Request::SkillsList).await? else {
                bail!("the daemon did not list its skills")
            };
            let compiling: Vec<String> =
                list.iter().filter(|s| s.status == SkillState::Compiling).map(|s| s.name.clone()).collect();
            if compiling.is_empty() {
                println!("everything is compiled");
                return Ok(ExitCode::SUCCESS);
            }
            println!("the daemon is compiling: {}", compiling.join(", "));
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
    let rt = Runtime::open_patiently(paths, Duration::from_secs(15)).await?;
    rt.rescan_deferred().await;
    let waiting = rt.registry.compiling();
    if waiting.is_empty() {
        println!("everything is compiled");
    }
    for file in waiting.keys() {
        let mb = std::fs::metadata(file).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0);
        print!("compiling {} ({mb:.1} MB)… ", file.display());
        std::io::Write::flush(&mut std::io::stdout())?;
        let start = std::time::Instant::now();
        rt.registry.compile_next(&rt.engine, None).await;
        rt.rescan_deferred().await;
        println!("{:.1} s", start.elapsed().as_secs_f64());
    }
    Ok(ExitCode::SUCCESS)
}

/// `skills available`: the bundled components and whether skills/ has them.
fn available(paths: &Paths, json: bool) -> anyhow::Result<ExitCode> {
    use wasiclaw::bundled::{self, Presence};
    let dir = paths.skills_dir();
    if bundled::all().is_empty() {
        bail!("this wasiclaw was built without bundled components (`--no-default-features`)");
    }
    let unpacked = bundled::unpack();
    for b in bundled::all() {
        let presence = b.presence(&dir, &unpacked);
        if json {
            let line =
                serde_json::json!({ "name": b.name, "kind": b.kind, "summary": b.summary, "presence": presence });
            println!("{line}");
        } else {
            let mark = match presence {
                Presence::Installed => "installed",
                Presence::Different => "other build installed",
                Presence::Absent => "",
            };
            println!("{:<10} {:<8} {:<22} {}", b.name, format!("{:?}", b.kind).to_lowercase(), mark, b.summary);
        }
    }
    if !json {
        println!("\ninstall with `wasiclaw skills add NAME` (or --all); each then waits for `wasiclaw skills grant`");
    }
    Ok(ExitCode::SUCCESS)
}

/// `skills add`: write bundled components into skills/.
fn add(paths: &Paths, names: Vec<String>, all: bool, force: bool) -> anyhow::Result<ExitCode> {
    use wasiclaw::bundled::{self, Installed};
    let chosen: Vec<_> = if all {
        bundled::all().iter().collect()
    } else {
        let known = || bundled::all().iter().map(|b| b.name).collect::<Vec<_>>().join(", ");
        names
            .iter()
            .map(|n| {
                bundled::find(n).with_context(|| format!("no bundled component named {n:?}; there are: {}", known()))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let dir = paths.skills_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (mut code, unpacked) = (ExitCode::SUCCESS, bundled::unpack());
    for b in chosen {
        let file = b.path(&dir);
        match b.install(&dir, force, &unpacked).with_context(|| format!("cannot write {}", file.display()))? {
            Installed::Already => println!("{}: already installed", b.name),
            Installed::KeptOther => {
                eprintln!(
                    "{}: {} holds another build; kept it (--force replaces it, and the new build waits for approval)",
                    b.name,
                    file.display()
                );
                code = ExitCode::FAILURE;
            }
            Installed::Written => println!(
                "{}: installed {}; `wasiclaw skills inspect {0}` shows what it asks for, `wasiclaw skills grant {0}` grants it",
                b.name,
                file.display()
            ),
        }
    }
    Ok(code)
}

/// `wasiclaw restore FILE`: never through the daemon, which must not run.
async fn restore(paths: &Paths, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    if api::call_daemon(&paths.socket(), &Request::Status.into(), &mut |_| {}).await.ok().flatten().is_some() {
        bail!(
            "a daemon is running for {}: stop it first (`systemctl --user stop wasiclaw`, `sudo systemctl stop \
             wasiclaw`, or Ctrl-C where `wasiclaw run` runs), run this again, then start it",
            paths.state_dir.display()
        );
    }
    // A new card: the state dir is made, as the first start makes it.
    std::fs::create_dir_all(&paths.state_dir)
        .with_context(|| format!("cannot create {}", paths.state_dir.display()))?;
    let restored = wasiclaw::store::Store::restore(&paths.database(), file, &wasiclaw::runtime::TABLES)?;
    // The settings and persona it carries: put in place where there are
    // none, else beside the owner's own to compare. Only these names: the
    // file could have been made by anyone.
    let mut notes = Vec::new();
    for (name, bytes) in restored.files.iter().filter(|(n, _)| wasiclaw::config::BACKED_UP_FILES.contains(&n.as_str()))
    {
        let here = paths.state_dir.join(name);
        match std::fs::read(&here) {
            Ok(mine) if mine == *bytes => {}
            Ok(_) => {
                let theirs = paths.state_dir.join(format!("{name}.from-backup"));
                write_owner_only(&theirs, bytes).with_context(|| format!("cannot write {}", theirs.display()))?;
                notes.push(format!("{name} differs from the backup's, which is in {} to compare", theirs.display()));
            }
            Err(_) => {
                write_owner_only(&here, bytes).with_context(|| format!("cannot write {}", here.display()))?;
                notes.push(format!("{name} put back from the backup"));
            }
        }
    }
    let rt = Runtime::open(paths.clone())?;
    let (memories, jobs) = (rt.db.memory_total()?, rt.db.jobs().map_err(|e| anyhow::anyhow!("{e}"))?.len());
    let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    println!(
        "restored {}: {}, {}",
        file.display(),
        plural(memories as usize, "memory", "memories"),
        plural(jobs, "scheduled job", "scheduled jobs")
    );
    for note in notes {
        println!("{note}");
    }
    // What the backup lets skills and people do again, so a copy of
    // someone else's cannot bring rights back unseen.
    let (granted, paired) = (rt.db.granted()?, rt.db.pairings()?.into_iter().filter(|p| p.approved).count());
    if !granted.is_empty() {
        println!("rights come back for: {} (`wasiclaw skills list` shows what each may do)", granted.join(", "));
    }
    if paired > 0 {
        println!("{} paired in chat apps (`wasiclaw pairing list`)", plural(paired, "person is", "people are"));
    }
    if let Some(kept) = restored.kept {
        println!("the database it replaced is kept as {}; remove it once all is well", kept.display());
    }
    println!("secrets are never in a backup: `wasiclaw doctor` names any the config needs that are not set");
    Ok(ExitCode::SUCCESS)
}

/// `wasiclaw service install|uninstall|status`.
fn service(paths: &Paths, cmd: ServiceCommand) -> anyhow::Result<ExitCode> {
    use wasiclaw::service::Service;
    match cmd {
        ServiceCommand::Install { at, no_start, encrypt_secrets } => {
            let svc = Service::new(at.user, at.unit_dir)?;
            std::fs::create_dir_all(&paths.state_dir)
                .with_context(|| format!("cannot create {}", paths.state_dir.display()))?;
            let state = std::path::absolute(&paths.state_dir)?;
            let exe = std::env::current_exe().context("cannot find this executable")?;
            if encrypt_secrets {
                let credential = wasiclaw::service::credential_file(&state);
                let key = if credential.exists() {
                    wasiclaw::service::read_credential(&credential)?
                } else {
                    wasiclaw::service::make_credential(&credential)?
                };
                Secrets::with_key(paths.secrets(), Some(key)).seal()?;
                println!("sealed {} with the key in {}", paths.secrets().display(), credential.display());
            }
            std::fs::create_dir_all(&svc.unit_dir)
                .with_context(|| format!("cannot create {}", svc.unit_dir.display()))?;
            let file = svc.unit_file();
            let config = wasiclaw::config::Config::load(&paths.config())?;
            std::fs::write(&file, svc.unit(&exe, &state, encrypt_secrets, config.storage.backup_dir.as_deref()))
                .with_context(|| format!("cannot write {}", file.display()))?;
            println!("wrote {}", file.display());
            if no_start {
                return Ok(ExitCode::SUCCESS);
            }
            svc.systemctl(&["daemon-reload"])?;
            svc.systemctl(&["enable", "--now", "wasiclaw.service"])?;
            println!("enabled and started; `wasiclaw service status` shows how it runs");
        }
        ServiceCommand::Uninstall { at } => {
            let svc = Service::new(at.user, at.unit_dir)?;
            if let Err(e) = svc.systemctl(&["disable", "--now", "wasiclaw.service"]) {
                eprintln!("note: {e}");
            }
            match std::fs::remove_file(svc.unit_file()) {
                Ok(()) => println!("removed {}", svc.unit_file().display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    println!("no unit at {}", svc.unit_file().display())
                }
                Err(e) => bail!("cannot remove {}: {e}", svc.unit_file().display()),
            }
            let _ = svc.systemctl(&["daemon-reload"]);
        }
        ServiceCommand::Status { at } => {
            Service::new(at.user, at.unit_dir)?.systemctl(&["status", "--no-pager", "wasiclaw.service"])?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn secrets(paths: &Paths, cmd: SecretsCommand) -> anyhow::Result<ExitCode> {
    use wasiclaw::api::SecretsChange;
    use wasiclaw::secrets::{Hidden, SecretsError};
    std::fs::create_dir_all(&paths.state_dir)
        .with_context(|| format!("cannot create {}", paths.state_dir.display()))?;
    let store = Secrets::new(paths.secrets());
    let change = match cmd {
        SecretsCommand::Rotate => return rotate(paths),
        SecretsCommand::Set { name, random } => {
            let value = if random {
                let value = wasiclaw::secrets::random_token()?;
                println!("{value}");
                value
            } else if std::io::stdin().is_terminal() {
                rpassword::prompt_password(format!("value for {name} (input hidden): "))?
            } else {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s.trim_end_matches(['\n', '\r']).to_string()
            };
            SecretsChange::Set { name, value: Hidden(value) }
        }
        SecretsCommand::List => SecretsChange::Names,
        SecretsCommand::Rm { name } => SecretsChange::Remove { name },
    };
    let here = match &change {
        SecretsChange::Set { name, value } => store.set(name, &value.0).map(|_| Vec::new()),
        SecretsChange::Remove { name } => store.remove(name).map(|_| Vec::new()),
        SecretsChange::Names => store.names(),
    };
    let names = match here {
        Ok(names) => names,
        // Sealed with the service's key: the daemon has it.
        Err(SecretsError::Sealed(_)) => match ask_daemon(paths, Request::Secrets { change: change.clone() })? {
            Response::Names(names) => names,
            _ => bail!("the daemon answered something else than secret names"),
        },
        Err(e) => return Err(e.into()),
    };
    match change {
        SecretsChange::Set { name, .. } => eprintln!("stored secret {name} in {}", paths.secrets().display()),
        SecretsChange::Remove { name } => eprintln!("removed secret {name}"),
        // Told on stderr: stdout stays one name a line for scripts.
        SecretsChange::Names if names.is_empty() => eprintln!(
            "no secrets stored yet: `wasiclaw secrets set NAME` stores one (the value is read from stdin), \
             `--random` makes one"
        ),
        SecretsChange::Names => names.iter().for_each(|n| println!("{n}")),
    }
    Ok(ExitCode::SUCCESS)
}

/// A request only a running daemon can answer (it holds a key this
/// process lacks).
fn ask_daemon(paths: &Paths, request: Request) -> anyhow::Result<Response> {
    let runtime = tokio::runtime::Handle::current();
    let reply = tokio::task::block_in_place(|| {
        runtime.block_on(api::call_daemon(&paths.socket(), &request.into(), &mut |_| {}))
    })?;
    match reply {
        Some(Reply::Ok(response)) => Ok(response),
        Some(Reply::Err { message, .. }) => bail!("{message}"),
        Some(Reply::Event(_)) => bail!("the daemon sent an event where a reply was due"),
        None => bail!(
            "{} is sealed with the service's key and no daemon is running to use it; start the service \
             (`sudo systemctl start wasiclaw`)",
            paths.secrets().display()
        ),
    }
}

/// `secrets rotate`: seal the store with a new key, made into a new
/// credential. Each step leaves a state the next run can finish: the new
/// credential is written beside the old one first, the store is resealed,
/// then the new credential replaces the old.
fn rotate(paths: &Paths) -> anyhow::Result<ExitCode> {
    use wasiclaw::service::{credential_file, make_credential, read_credential};
    if std::os::unix::net::UnixStream::connect(paths.socket()).is_ok() {
        bail!(
            "the daemon is running and holds the current key: stop it (`sudo systemctl stop wasiclaw`), \
             rotate, then start it again"
        );
    }
    let state = std::path::absolute(&paths.state_dir)?;
    let (old, new) = (credential_file(&state), credential_file(&state).with_extension("cred.new"));
    if !old.exists() {
        bail!(
            "{} is not sealed with a credential; `sudo wasiclaw service install --encrypt-secrets` seals it",
            paths.secrets().display()
        );
    }
    let opens = |key| Secrets::with_key(paths.secrets(), Some(key)).names().is_ok();
    // A rotation cut short after resealing: the store opens with the new key.
    if new.exists() && read_credential(&new).is_ok_and(opens) {
        std::fs::rename(&new, &old).with_context(|| format!("cannot replace {}", old.display()))?;
        println!("finished the rotation that was cut short; start the service again");
        return Ok(ExitCode::SUCCESS);
    }
    let current = read_credential(&old)?;
    if !opens(current.clone()) {
        bail!("the key in {} does not open {}", old.display(), paths.secrets().display());
    }
    let fresh = make_credential(&new)?;
    Secrets::with_key(paths.secrets(), Some(current)).reseal(&fresh)?;
    std::fs::rename(&new, &old).with_context(|| format!("cannot replace {}", old.display()))?;
    println!("sealed {} with a new key ({}); start the service again", paths.secrets().display(), fresh.id);
    Ok(ExitCode::SUCCESS)
}

/// Write `bytes` to `file` readable by the owner alone: a new file (never
/// one someone else left beside it) renamed over the name, so a link at
/// the name is replaced, not written through.
fn write_owner_only(file: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.partial", std::process::id()));
    let tmp = file.with_file_name(name);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
        .and_then(|_| std::fs::rename(&tmp, file));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
