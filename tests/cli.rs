//! The CLI as a user runs it: help, list/inspect/grant/tool/audit, and the
//! same answers with and without a running daemon.

use crate::support::{Env, stderr, stdout};
use std::time::Duration;

#[test]
fn help_teaches() {
    let env = Env::new();
    let top = env.ok(&["--help"]);
    for word in ["skills", "secrets", "tool", "audit", "run", "Getting started"] {
        assert!(top.contains(word), "--help lacks {word}:\n{top}");
    }
    let grant = env.ok(&["skills", "grant", "--help"]);
    assert!(grant.contains("--all-requested") && grant.contains("Examples"), "{grant}");
}

#[test]
fn list_and_inspect_show_what_each_skill_may_do() {
    let env = Env::new();
    env.install("notes");
    env.install("clock");
    let list = env.list();
    assert_eq!(list.len(), 2);
    let notes = list.iter().find(|s| s["name"] == "notes").unwrap();
    for field in ["name", "version", "sha256", "requested", "granted", "status"] {
        assert!(notes.get(field).is_some(), "skills list --json lacks {field}: {notes}");
    }
    assert_eq!(notes["status"], "needs-approval");
    assert_eq!(notes["requested"]["kv"], true);
    assert_eq!(notes["sha256"].as_str().unwrap().len(), 64);
    let inspect = env.ok(&["skills", "inspect", "notes"]);
    assert!(inspect.contains("notes.add") && inspect.contains("\"required\":[\"text\"]"), "{inspect}");
    assert!(inspect.contains("kv") && inspect.contains("NOT GRANTED"), "{inspect}");
    // Pinned to a build it is not, a grant is refused; to its own, it holds.
    let stale = env.cli(&["skills", "grant", "notes", "--all-requested", "--build", "0123456789ab"]);
    assert!(!stale.status.success() && stderr(&stale).contains("changed since you read it"), "{}", stderr(&stale));
    let build = &notes["sha256"].as_str().unwrap()[..12];
    env.ok(&["skills", "grant", "notes", "--all-requested", "--build", build]);
    let inspect = env.ok(&["skills", "inspect", "notes"]);
    assert!(!inspect.contains("NOT GRANTED"), "{inspect}");
    let text = env.ok(&["skills", "list"]);
    assert!(text.lines().any(|l| l.starts_with("notes") && l.contains("active")), "{text}");
}

#[test]
fn tool_errors_say_what_to_do() {
    let env = Env::new();
    env.install("clock");
    // The exit code says the kind: 1 failed, 2 invalid input, 3 not found.
    for (args, expect, code) in [
        (vec!["tool", "nope.now"], "no skill named `nope`", 3),
        (vec!["tool", "clock.nope"], "has no tool `nope`; it has: now, convert", 3),
        (vec!["tool", "clock"], "is not SKILL.TOOL", 1),
        (vec!["tool", "clock.now", "{oops"], "not valid JSON", 2),
        (vec!["tool", "clock.now", r#"{"tz":"Mars/Olympus"}"#], "unknown time zone", 1),
        (vec!["cron", "rm", "42"], "no job 42", 3),
        (vec!["cron", "add", "every 0s", "--prompt", "hi"], "at least one second", 2),
    ] {
        let out = env.cli(&args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expect), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn every_command_works_the_same_with_a_daemon() {
    let env = Env::new();
    env.install("notes");
    env.ok(&["skills", "grant", "notes", "--kv"]);
    env.ok(&["tool", "notes.add", r#"{"text":"offline note"}"#]);
    let offline_list = env.list();
    let offline_status = env.ok(&["status"]);
    assert!(offline_status.contains("no daemon running"), "{offline_status}");

    let _daemon = env.daemon();
    assert!(env.ok(&["status"]).contains("daemon running"));
    assert_eq!(env.list(), offline_list);
    env.ok(&["tool", "notes.add", r#"{"text":"online note"}"#]);
    let notes = env.ok(&["tool", "notes.list"]);
    assert!(notes.contains("offline note") && notes.contains("online note"), "{notes}");
    env.ok(&["skills", "revoke", "notes", "--kv"]);
    let denied = env.cli(&["tool", "notes.list"]);
    assert!(!denied.status.success() && stderr(&denied).contains("kv not granted"));
    let audit = env.ok(&["audit", "--skill", "notes"]);
    assert!(audit.contains("allowed") && audit.contains("DENIED"), "{audit}");
    let json = stdout(&env.cli(&["audit", "--json", "--limit", "1"]));
    let records: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["allowed"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_names_each_problem_and_what_to_run() {
    let llm = crate::fake_llm::FakeLlm::start(vec![crate::fake_llm::Reply::Text("OK")]).await;
    let env = Env::new();
    env.install("clock");
    env.install("notes");
    std::fs::write(env.skills().join("junk.wasm"), b"not wasm").unwrap();
    let dead = crate::support::free_port();
    env.config(&format!(
        "[[providers]]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmodel = \"fake\"\n\n\
         [[providers]]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{dead}/v1\"\nmodel = \"gone\"\napi_key_secret = \"GONE_KEY\"\n\n\
         [tools.\"clock.nw\"]\npolicy = \"deny\"\n\n[tools.\"clock.now\"]\npolicy = \"ask\"\n\n[tools.memory_save]\npolicy = \"ask\"\n\n\
         [tools.\"clokc.now\"]\npolicy = \"deny\"\n\n[channels.telegrma]\nadmins = [\"1\"]\n\n[skills.clock]\nzone = \"UTC\"\n\n\
         [memory.embeddings]\nbase_url = \"http://192.0.2.1/v1\"\nmodel = \"e\"\napi_key_secret = \"EMBED_KEY\"\n",
        llm.base
    ));
    env.cli_stdin(&["secrets", "set", "OTHER"], "x");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(env.path().join("secrets.json"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = tokio::task::block_in_place(|| env.cli(&["doctor"]));
    let said = stdout(&out);
    assert!(!out.status.success(), "{said}");
    for expected in [
        "chmod 600",
        "GONE_KEY (a provider key) is not set",
        "wasiclaw secrets set GONE_KEY",
        "junk is rejected",
        "clock: awaiting approval of this build",
        "then `wasiclaw skills approve clock`",
        "notes: awaiting approval of this build: run `wasiclaw skills approve notes`; not granted: kv",
        "then `wasiclaw skills grant notes --all-requested` (this build and all it asks for)",
        "fake at ",
        "answers",
        &format!("gone at http://127.0.0.1:{dead}/v1"),
        "[tools.\"clock.nw\"]: clock has no tool nw (it has now",
        "[tools.\"clokc.now\"]: no skill clokc is installed",
        "[channels.telegrma]: nothing named telegrma is installed",
        "EMBED_KEY goes to http://192.0.2.1/v1 over plain http",
    ] {
        assert!(said.contains(expected), "{expected:?} missing:\n{said}");
    }
    assert!(!said.contains("[tools.\"clock.now\"]") && !said.contains("[tools.\"memory_save\"]"), "{said}");
    assert!(!said.contains("[skills.clock]"), "{said}");
    // Fixed, it is content.
    std::fs::set_permissions(env.path().join("secrets.json"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(env.skills().join("junk.wasm")).unwrap();
    env.ok(&["skills", "approve", "clock"]);
    env.ok(&["skills", "grant", "notes", "--all-requested"]);
    env.config(&format!("[[providers]]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmodel = \"fake\"\n", llm.base));
    let out = tokio::task::block_in_place(|| env.cli(&["doctor"]));
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("all good"));
}

#[test]
fn status_tells_the_whole_story() {
    let env = Env::new();
    env.install("clock");
    env.config("[agent]\ndaily_token_budget = 5000\n\n[[providers]]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"tiny\"\n");
    env.ok(&["cron", "add", "every 1h", "--tool", "clock.now"]);
    let status = env.ok(&["status"]);
    for part in [
        &format!("wasiclaw {}", env!("CARGO_PKG_VERSION")),
        "model: tiny (Openai, http://127.0.0.1:9/v1)",
        "skills and channels: 1 needs-approval",
        "jobs: 1 (next run ",
        "tokens today: 0 of a 5000 budget",
        "database: ",
    ] {
        assert!(status.contains(part), "{part:?} missing:\n{status}");
    }
}

#[test]
fn precompile_prepares_the_cache_once() {
    let env = Env::new();
    env.install("clock");
    let first = env.ok(&["skills", "precompile"]);
    assert!(first.contains("compiling") && first.contains("clock.wasm"), "{first}");
    assert_eq!(env.ok(&["skills", "precompile"]).trim(), "everything is compiled");
    let list = env.list();
    assert_eq!(list[0]["status"], "needs-approval", "{list:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_whose_reply_is_lost_says_it_may_have_been_applied() {
    let server = crate::support::Server::start().await;
    let (env, rt) = crate::egress::hostile(&server.base, "[limits]\ntimeout_ms = 60000").await;
    crate::egress::grant(&rt, "hostile", &[&format!("{}/echo/", server.base)], &["API_TOKEN"]);
    drop(rt);
    let daemon = tokio::task::block_in_place(|| env.daemon());
    // A call that hangs in the daemon, which then dies before it answers.
    let url = format!("{}/echo/{{API_TOKEN}}/hang", server.base);
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_wasiclaw"))
        .arg("--state-dir")
        .arg(env.path())
        .args(["tool", "hostile.fetch", &serde_json::json!({ "url": url }).to_string()])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::task::block_in_place(|| {
        crate::support::wait_for("the call to reach the server", std::time::Duration::from_secs(30), || {
            server.seen().iter().any(|s| s.uri.ends_with("/hang"))
        })
    });
    drop(daemon);
    let out = tokio::task::block_in_place(|| cli.wait_with_output()).unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("may or may not have been applied"), "{}", stderr(&out));
}

#[test]
fn logs_are_plain_text_off_a_terminal_or_json_when_asked() {
    let env = Env::new();
    env.install("clock");
    let json = env.cli(&["--log-format", "json", "skills", "list"]);
    let line = stderr(&json).lines().find(|l| l.contains("compiling")).map(String::from);
    let line = line.unwrap_or_else(|| panic!("no compile log line: {}", stderr(&json)));
    let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(parsed["level"], "INFO", "{line}");
    let env = Env::new();
    env.install("clock");
    let text = stderr(&env.cli(&["skills", "list"]));
    assert!(text.contains("compiling") && !text.contains('\u{1b}'), "colour codes in a pipe: {text:?}");
}

#[test]
fn service_install_writes_a_hardened_unit_for_this_binary_and_state_dir() {
    let env = Env::new();
    let units = tempfile::tempdir().unwrap();
    let dir = units.path().to_str().unwrap();
    let said = env.ok(&["service", "install", "--user", "--unit-dir", dir, "--no-start"]);
    assert!(said.contains("wasiclaw.service"), "{said}");
    let unit = std::fs::read_to_string(units.path().join("wasiclaw.service")).unwrap();
    let state = env.path().display().to_string();
    for line in [
        format!("ExecStart={} --state-dir {state} run", env!("CARGO_BIN_EXE_wasiclaw")),
        format!("ReadWritePaths={state}"),
        "Restart=on-failure".into(),
        "Type=notify".into(),
        "TimeoutStartSec=infinity".into(),
        "WatchdogSec=120".into(),
        "NoNewPrivileges=yes".into(),
        "ProtectSystem=strict".into(),
        "PrivateTmp=yes".into(),
        "WantedBy=default.target".into(),
    ] {
        assert!(unit.lines().any(|l| l == line), "no `{line}` in:\n{unit}");
    }
    // Cranelift runs the code it writes: a unit that forbade that would never start.
    assert!(!unit.contains("MemoryDenyWriteExecute"), "{unit}");
    // Automatic backups go to another drive: the unit lets it write there
    // (once it is mounted), and nowhere else.
    env.config("[storage]\nbackup_dir = \"/mnt/usb stick/wasiclaw\"\n");
    env.ok(&["service", "install", "--user", "--unit-dir", dir, "--no-start"]);
    let unit = std::fs::read_to_string(units.path().join("wasiclaw.service")).unwrap();
    let line = format!("ReadWritePaths={state} \"-/mnt/usb stick/wasiclaw\"");
    assert!(unit.lines().any(|l| l == line), "no `{line}` in:\n{unit}");
    env.ok(&["service", "uninstall", "--user", "--unit-dir", dir]);
    assert!(!units.path().join("wasiclaw.service").exists());
}

/// `doctor` finds an installed service that would not run this setup as
/// configured: backups set after it was installed (every copy would fail,
/// the unit letting it write only to the state dir), or a binary moved away.
#[test]
fn doctor_finds_a_service_unit_out_of_date() {
    let env = Env::new();
    let xdg = tempfile::tempdir().unwrap();
    let at = [("XDG_CONFIG_HOME", xdg.path().to_str().unwrap())];
    let doctor = || stdout(&env.cli_env(&["doctor"], "", &at));
    let install = || assert!(env.cli_env(&["service", "install", "--user", "--no-start"], "", &at).status.success());
    install();
    assert!(!doctor().contains("PROBLEM  service"), "{}", doctor());
    let drive = tempfile::tempdir().unwrap();
    env.config(&format!("[storage]\nbackup_dir = \"{}\"\n", drive.path().display()));
    let said = doctor();
    assert!(said.contains("PROBLEM  service") && said.contains("may not write to [storage] backup_dir"), "{said}");
    assert!(said.contains("wasiclaw service install --user writes it again"), "{said}");
    install();
    assert!(!doctor().contains("PROBLEM  service"), "{}", doctor());
    // An upgrade put the binary elsewhere.
    let unit = xdg.path().join("systemd/user/wasiclaw.service");
    let text = std::fs::read_to_string(&unit).unwrap().replace(env!("CARGO_BIN_EXE_wasiclaw"), "/opt/gone/wasiclaw");
    std::fs::write(&unit, text).unwrap();
    assert!(doctor().contains("the service starts /opt/gone/wasiclaw, which is not there any more"), "{}", doctor());
    // One an older wasiclaw wrote, without the watchdog.
    install();
    let text = std::fs::read_to_string(&unit).unwrap().replace("WatchdogSec=120\n", "");
    std::fs::write(&unit, text).unwrap();
    assert!(doctor().contains("the service has no watchdog"), "{}", doctor());
}

/// Out of file descriptors (a flood of connections, a leak), the local API
/// waits for one to free instead of retrying `accept` in a busy loop that
/// would take a core and flood the journal; it answers again once they free.
#[test]
fn a_daemon_out_of_descriptors_waits_instead_of_spinning() {
    let env = Env::new();
    let log = env.path().join("daemon.log");
    let daemon = env.daemon_logging_to(&log);
    let pid = daemon.child.id();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as u64;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    let set = |new: *const libc::rlimit, old: *mut libc::rlimit| unsafe {
        libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, new, old)
    };
    assert_eq!(set(std::ptr::null(), &mut limit), 0);
    limit.rlim_cur = open + 4;
    assert_eq!(set(&limit, std::ptr::null_mut()), 0);
    let socket = env.path().join("wasiclaw.sock");
    let held: Vec<_> = (0..16).map(|_| std::os::unix::net::UnixStream::connect(&socket).unwrap()).collect();
    let cpu_ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // After the name come fields 3, 4, …; utime and stime are 14 and 15 (stat(5)).
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks();
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks() - before;
    // A busy loop spends the whole 2 s of a core (200 ticks); waiting, next to nothing.
    let said = std::fs::read_to_string(&log).unwrap().matches("cannot accept a connection").count();
    assert!((1..=20).contains(&said), "{said} log lines about it in 2.5 s");
    assert!(spent < 40, "the daemon spent {spent} ticks of CPU in 2 s with no descriptor to accept with");
    drop(held);
    crate::support::wait_for("the local API to answer again", Duration::from_secs(10), || {
        env.cli(&["status"]).status.success()
    });
    drop(daemon);
}

/// The daemon reads config.toml when it starts: an edit meanwhile is said
/// to wait for a restart, and one that would keep it from starting says so.
#[test]
fn an_edit_of_the_config_is_said_to_wait_for_a_restart() {
    let env = Env::new();
    env.config("[agent]\nmax_tool_iterations = 8\n");
    let daemon = env.daemon();
    let waiting = "config.toml changed since this daemon started; restart it to apply";
    assert!(!env.ok(&["status"]).contains("config.toml changed"));
    env.config("[agent]\nmax_tool_iterations = 4\n");
    assert!(env.ok(&["status"]).contains(waiting), "{}", env.ok(&["status"]));
    let doctor = stdout(&env.cli(&["doctor"]));
    assert!(doctor.contains(&format!("PROBLEM  config    {waiting}")), "{doctor}");
    env.config("[agent]\nmax_tool_iteration = 4\n");
    let status = env.ok(&["status"]);
    assert!(status.contains("max_tool_iteration") && status.contains("fix it before restarting"), "{status}");
    drop(daemon);
    env.config("[agent]\nmax_tool_iterations = 4\n");
    let _daemon = env.daemon();
    assert!(!env.ok(&["status"]).contains("config.toml changed"));
}

/// An empty list says so, and what would fill it, instead of printing nothing.
#[test]
fn empty_lists_say_what_fills_them() {
    let env = Env::new();
    for (args, said) in [
        (&["memory", "list"][..], "no memories yet: `wasiclaw memory add TEXT`"),
        (&["audit"], "no audit records"),
        (&["cron", "list"], "no scheduled jobs: `wasiclaw cron add --help`"),
        (&["cron", "history"], "no runs recorded"),
        (&["notifications"], "no notifications yet"),
    ] {
        let out = env.ok(args);
        assert!(out.starts_with(said), "{args:?}: {out}");
    }
}

/// Send one request line to the daemon's socket and read its last reply.
fn ask(env: &Env, line: &str) -> serde_json::Value {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(env.path().join("wasiclaw.sock")).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let last = std::io::BufReader::new(s).lines().map(Result::unwrap).last().unwrap();
    serde_json::from_str(&last).unwrap()
}

#[test]
fn a_write_whose_reply_is_lost_is_retried_and_applied_once() {
    use std::io::BufRead;
    let env = Env::new();
    env.ok(&["memory", "list"]);
    // A daemon that takes the request and dies without answering.
    let socket = env.path().join("wasiclaw.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let swallow = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&conn).read_line(&mut line).unwrap();
        std::fs::remove_file(&socket).unwrap();
        line
    });
    let out = env.cli(&["memory", "add", "the boiler code is 4471"]);
    let sent = swallow.join().unwrap();
    assert!(out.status.success(), "the CLI should retry on its own: {}", stderr(&out));
    let request: serde_json::Value = serde_json::from_str(&sent).unwrap();
    assert!(request["request_id"].as_str().is_some_and(|id| id.len() == 32), "a write carries an id: {sent}");
    assert_eq!(env.ok(&["memory", "list"]).matches("boiler").count(), 1);
    // The same request again, to a real daemon: the first reply, no copy.
    let _daemon = env.daemon();
    let again = ask(&env, sent.trim());
    assert!(again["ok"].is_object(), "a retry gets the first reply: {again}");
    assert_eq!(env.ok(&["memory", "list"]).matches("boiler").count(), 1, "the retry was applied twice");
    // A fresh id is a new request.
    let mut fresh = request.clone();
    fresh["request_id"] = "f".repeat(32).into();
    assert!(ask(&env, &fresh.to_string())["ok"].is_object());
    assert_eq!(env.ok(&["memory", "list"]).matches("boiler").count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_of_a_write_that_may_have_landed_is_refused_with_what_to_check() {
    // The daemon recorded the request and committed its write, then died
    // before it recorded the reply: the retry cannot know, and says so.
    let env = Env::new();
    let rt = env.runtime().await;
    assert_eq!(rt.db.request_begin(&"a".repeat(32)).unwrap(), wasiclaw::requests::Seen::New);
    rt.db.memory_insert(vec![]).unwrap();
    // One that finished, with a reply this version cannot read.
    assert_eq!(rt.db.request_begin(&"b".repeat(32)).unwrap(), wasiclaw::requests::Seen::New);
    rt.db.request_done(&"b".repeat(32), "{\"from\":\"another version\"}".into()).unwrap();
    drop(rt);
    let request =
        serde_json::json!({"op": "memory-add", "text": "x", "tags": [], "pinned": false, "request_id": "a".repeat(32)});
    let _daemon = tokio::task::block_in_place(|| env.daemon());
    let reply = tokio::task::block_in_place(|| ask(&env, &request.to_string()));
    let message = reply["err"]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("may or may not have been applied"), "{reply}");
    let mut done = request.clone();
    done["request_id"] = "b".repeat(32).into();
    let reply = tokio::task::block_in_place(|| ask(&env, &done.to_string()));
    let message = reply["err"]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("applied already"), "an applied request must not run again: {reply}");
    assert_eq!(tokio::task::block_in_place(|| env.ok(&["memory", "list", "--json"])).trim(), "[]");
}

/// A database a power cut or a failing card damaged: every command, the
/// daemon too, says what is wrong and what to do, and leaves the file as it
/// was (it may be the only copy of the owner's memories).
#[test]
fn a_damaged_database_is_explained_and_left_as_it_was() {
    let env = Env::new();
    let file = env.paths().database();
    let junk: Vec<u8> = (0..64 << 10).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&file, &junk).unwrap();
    for args in [&["status"][..], &["memory", "list"], &["run"]] {
        let out = env.cli_env(args, "", &[("WASICLAW_GATEWAY_BIND", "127.0.0.1:0")]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} went on with a damaged database");
        assert!(
            err.contains(&format!("cannot open the database {}: it is damaged", file.display()))
                && err.contains("run `wasiclaw restore BACKUP`"),
            "{args:?}: {err}"
        );
    }
    let doctor = stdout(&env.cli(&["doctor"]));
    assert!(doctor.contains("PROBLEM  database") && doctor.contains("aside for a bug report"), "{doctor}");
    assert_eq!(std::fs::read(&file).unwrap(), junk, "the damaged file was changed");
    // What it says to do works, and keeps the damaged file as it was.
    let earlier = Env::new();
    earlier.ok(&["memory", "add", "from the backup"]);
    let backup = earlier.path().join("backup.redb");
    earlier.ok(&["backup", backup.to_str().unwrap()]);
    let said = env.ok(&["restore", backup.to_str().unwrap()]);
    assert!(env.ok(&["memory", "list"]).contains("from the backup"));
    let kept = said.split("kept as ").nth(1).and_then(|k| k.split(';').next()).expect("where it was kept");
    assert_eq!(std::fs::read(kept).unwrap(), junk, "the damaged file was not kept as it was");
}

/// A full disk fails a commit, and redb then refuses every later read and
/// write until the file is opened again. The daemon (its file size limit
/// lowered here, as a full disk would) says the disk is full, exits non-zero
/// for the service to start it again, and what was committed before is all
/// there once it opens again.
#[test]
fn a_daemon_whose_disk_fills_exits_to_be_restarted_and_loses_nothing() {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let env = Env::new();
    env.ok(&["memory", "add", "kept from before the disk filled"]);
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_wasiclaw"));
    daemon
        .env("WASICLAW_GATEWAY_BIND", "127.0.0.1:0")
        .arg("--state-dir")
        .arg(env.path())
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // A full disk answers a write with an error, not a signal.
    unsafe {
        daemon.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut daemon = crate::support::Daemon { child: daemon.spawn().unwrap() };
    env.wait_for_daemon();
    let full = libc::rlimit { rlim_cur: 4096, rlim_max: libc::RLIM_INFINITY };
    let pid = daemon.child.id() as libc::pid_t;
    assert_eq!(unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &full, std::ptr::null_mut()) }, 0);
    let refused = env.cli(&["memory", "add", "this one does not fit"]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("the disk is full"), "{}", stderr(&refused));
    let mut exited = None;
    crate::support::wait_for("the daemon to exit", Duration::from_secs(20), || {
        exited = daemon.child.try_wait().unwrap();
        exited.is_some()
    });
    assert!(!exited.unwrap().success(), "it exited as if all were well");
    let mut log = String::new();
    std::io::Read::read_to_string(daemon.child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("exiting, so that the service starts wasiclaw again"), "{log}");
    let kept = env.ok(&["memory", "list"]);
    assert!(kept.contains("kept from before the disk filled") && !kept.contains("does not fit"), "{kept}");
}

/// Under systemd (`Type=notify`, `WatchdogSec`), the daemon says it is
/// ready once it answers, then keeps saying it is alive at half the
/// watchdog's period, from its runtime, and says when it stops: a daemon
/// that hangs on a board is restarted instead of sitting silent.
#[test]
fn the_daemon_tells_systemd_it_is_ready_and_alive() {
    let env = Env::new();
    let socket_path = env.path().join("notify.sock");
    let systemd = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    systemd.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let heard = || {
        let mut buf = [0u8; 256];
        let n = systemd.recv(&mut buf).expect("the daemon told systemd nothing");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // A watchdog of 0.4 s: a ping every 0.2 s.
    let notify = socket_path.to_str().unwrap();
    let daemon = env.daemon_env(&[
        ("WASICLAW_GATEWAY_BIND", "127.0.0.1:0"),
        ("NOTIFY_SOCKET", notify),
        ("WATCHDOG_USEC", "400000"),
    ]);
    assert_eq!(heard(), "READY=1");
    let start = std::time::Instant::now();
    for _ in 0..5 {
        assert_eq!(heard(), "WATCHDOG=1");
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(3), "pings came {:?} apart", start.elapsed() / 5);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.child.id() as libc::pid_t, libc::SIGTERM) };
    let mut last = heard();
    while last == "WATCHDOG=1" {
        last = heard();
    }
    assert_eq!(last, "STOPPING=1");
    drop(daemon);
}
