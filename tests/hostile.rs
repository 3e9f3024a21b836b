//! The hostile fixture attacks its sandbox; each attack must be contained,
//! and the daemon must keep serving afterwards.

use crate::egress::hostile;
use crate::fake_llm::{FakeLlm, Reply};
use crate::support::{Env, Server, call, stderr, stdout};
use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn infinite_loop_and_memory_bomb_are_stopped() {
    let (_env, rt) = hostile("http://127.0.0.1:9", "[limits]\ncpu_ms = 300\nmemory_mb = 32").await;
    let spin = call(&rt, "hostile.spin", "{}").await;
    assert_eq!(spin.error_kind, Some(wasiclaw::runtime::Failure::Cpu), "{spin:?}");
    let bomb = call(&rt, "hostile.bomb", "{}").await;
    assert_eq!(bomb.error_kind, Some(wasiclaw::runtime::Failure::Memory), "{bomb:?}");
    let flood = call(&rt, "hostile.flood", "{}").await;
    assert_eq!(flood.error_kind, Some(wasiclaw::runtime::Failure::Output), "{:?}", flood.error_kind);
}

/// Small components run on linear memories kept between calls
/// (`host/memories.rs`): what one call leaves in its memory must be gone
/// for the next, and what it grew must be out of bounds again.
#[tokio::test(flavor = "multi_thread")]
async fn a_kept_memory_carries_nothing_into_the_next_call() {
    let (_env, rt) = hostile("http://127.0.0.1:9", "").await;
    let marker = serde_json::json!({"text": "left-behind-7f3a9c"}).to_string();
    let planted = call(&rt, "hostile.plant", &marker).await;
    assert!(planted.ok, "{}", planted.output);
    let (kept, reused) = (rt.engine.memories.kept(), rt.engine.memories.reused());
    assert!(kept >= 1, "the planting call's memory was not kept");
    let scavenged = call(&rt, "hostile.scavenge", &marker).await;
    assert!(scavenged.output.starts_with("clean"), "{}", scavenged.output);
    assert_eq!(rt.engine.memories.reused(), reused + 1, "the search did not run on a kept memory");

    call(&rt, "hostile.plant", &marker).await;
    let beyond = call(&rt, "hostile.beyond", "{}").await;
    assert_eq!(beyond.error_kind, Some(wasiclaw::runtime::Failure::Crashed), "{}", beyond.output);
    assert!(beyond.output.contains("out of bounds"), "{}", beyond.output);
    assert!(call(&rt, "hostile.scavenge", &marker).await.output.starts_with("clean"));
}

#[tokio::test(flavor = "multi_thread")]
async fn host_files_sockets_env_and_ungranted_imports_are_out_of_reach() {
    let server = Server::start().await;
    let (env, rt) = hostile(&server.base, "").await;
    for path in ["/etc/passwd", &env.path().join("secrets.json").display().to_string(), "/data/x", "."] {
        let out = call(&rt, "hostile.read-file", &serde_json::json!({"path": path}).to_string()).await;
        assert!(!out.ok, "read {path}: {}", out.output);
        assert!(!out.output.contains("root:") && !out.output.contains("tok-"), "{}", out.output);
    }
    let connect =
        call(&rt, "hostile.connect", &serde_json::json!({"addr": format!("127.0.0.1:{}", server.port)}).to_string())
            .await;
    assert!(!connect.ok, "{}", connect.output);
    assert!(server.seen().is_empty());
    let env_out = call(&rt, "hostile.env", "{}").await;
    assert_eq!(env_out.output, r#"{"args":[],"vars":[]}"#);
    let kv = call(&rt, "hostile.kv-write", "{}").await;
    assert!(kv.output.contains("kv not granted"), "{}", kv.output);
    let notify = call(&rt, "hostile.notify", "{}").await;
    assert_eq!(notify.error_kind, Some(wasiclaw::runtime::Failure::Denied));
    assert!(rt.notifications(10).unwrap().is_empty());
}

/// Whoever can put a file in the skills folder (a skill pack unpacked, a
/// link) chooses what sits under a component's, a script's or a knowledge
/// file's name: a FIFO, whose open waits for a writer that never comes, or
/// a link to `/dev/zero`, which never ends. Before, a `.wasm` FIFO hung every
/// CLI command that looks at the skills, a `.md` one every chat turn, and
/// the link had the CLI read zeros until memory ran out.
#[tokio::test(flavor = "multi_thread")]
async fn no_file_at_a_skills_name_stalls_a_command_or_a_turn() {
    let llm = FakeLlm::start(vec![Reply::Text("still answering")]).await;
    let env = Env::new();
    env.install("clock");
    env.config(&format!("[[providers]]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmodel = \"fake\"", llm.base));
    // Under bundled skills' names too, which `skills available` compares.
    for (fifo, zero) in [("weather.wasm", "web-fetch.wasm"), ("fifo.js", "zero.js"), ("fifo.md", "zero.md")] {
        let fifo = std::ffi::CString::new(env.skills().join(fifo).into_os_string().into_vec()).unwrap();
        // SAFETY: a valid C path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink("/dev/zero", env.skills().join(zero)).unwrap();
    }
    let within = |args: &[&str], stdin: &str| env.cli_within(args, stdin, &[], Duration::from_secs(60));
    let chat = tokio::task::block_in_place(|| within(&["chat"], "hello\n"));
    assert!(stdout(&chat).contains("still answering"), "{}{}", stdout(&chat), stderr(&chat));
    let list = tokio::task::block_in_place(|| within(&["skills", "list"], ""));
    assert!(stdout(&list).contains("clock"), "{}{}", stdout(&list), stderr(&list));
    let available = tokio::task::block_in_place(|| within(&["skills", "available"], ""));
    for name in ["weather", "web-fetch"] {
        let line = stdout(&available).lines().find(|l| l.starts_with(name)).map(str::to_string);
        assert!(line.is_some_and(|l| l.contains("other build installed")), "{}", stdout(&available));
    }
}

#[test]
fn bad_components_are_rejected_with_reasons() {
    let env = Env::new();
    env.install("future-skill");
    std::fs::write(env.skills().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(env.skills().join("junk.wasm"), b"#!/bin/sh\necho hi\n").unwrap();
    // A stray huge file is refused by its size, not read whole (sparse here:
    // it takes no disk, but reading it would take 4 GiB of memory).
    let huge = std::fs::File::create(env.skills().join("huge.wasm")).unwrap();
    huge.set_len(4 << 30).unwrap();
    std::fs::write(env.skills().join("long.js"), "// ".repeat(100_000)).unwrap();
    // What is no file is listed with why, not skipped without a word.
    std::fs::create_dir(env.skills().join("folder.wasm")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/x.wasm", env.skills().join("gone.wasm")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", env.skills().join("zero.js")).unwrap();
    env.install("clock");
    let list = env.list();
    let reason = |name: &str| {
        let s = list.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("{name} not listed: {list:?}"));
        assert_eq!(s["status"], "rejected");
        s["reason"].as_str().unwrap().to_string()
    };
    let future = reason("future-skill");
    assert!(future.contains("wasiclaw:plugin@2.0.0") && future.contains("wasiclaw:plugin@0.2.0"), "{future}");
    assert!(future.contains("still loads 0.1.0"), "{future}");
    assert!(reason("core").contains("core WebAssembly module, not a component"));
    assert!(reason("junk").contains("not a WebAssembly file"));
    assert_eq!(reason("huge"), "the file is 4194304 KiB; one is at most 131072 KiB");
    assert_eq!(reason("long"), "the file is 292 KiB; one is at most 256 KiB");
    assert!(reason("folder").starts_with("it is a directory, not a regular file; a component (.wasm)"));
    assert_eq!(reason("gone"), "a link to /nonexistent/x.wasm: there is no such file");
    assert!(reason("zero").starts_with("a link to /dev/zero: it is a device, not a regular file"));
    let clock = list.iter().find(|s| s["name"] == "clock").unwrap();
    assert_eq!(clock["status"], "needs-approval", "a good component loads and waits for the owner: {clock}");
    assert!(clock["pending"][0].as_str().unwrap().contains("wasiclaw skills approve clock"), "{clock}");
    let run = env.cli(&["tool", "future-skill.describe"]);
    assert!(!run.status.success() && stderr(&run).contains("rejected"), "{}", stderr(&run));
}

#[test]
fn the_daemon_survives_every_attack() {
    let env = Env::new();
    env.install("hostile");
    env.install("clock");
    env.config("[limits]\ncpu_ms = 300\nmemory_mb = 32");
    let _daemon = env.daemon();
    for tool in ["spin", "bomb", "flood", "kv-write"] {
        let out = env.cli(&["tool", &format!("hostile.{tool}")]);
        assert!(!out.status.success(), "hostile.{tool} succeeded: {}", stdout(&out));
    }
    let now = env.cli(&["tool", "clock.now"]);
    assert!(now.status.success() && stdout(&now).contains("\"tz\":\"UTC\""), "{}", stderr(&now));
    assert!(env.ok(&["status"]).contains("daemon running"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_files_grant_opens_one_private_directory_and_nothing_else() {
    let (env, rt) = hostile("http://127.0.0.1:9", "").await;
    let write = |path: &str| serde_json::json!({"path": path, "text": "hello"}).to_string();
    assert!(!call(&rt, "hostile.write-file", &write("/data/note.txt")).await.ok, "no grant, no directory");
    let files = wasiclaw::grants::GrantSet { rights: wasiclaw::grants::Rights::FILES, ..Default::default() };
    rt.change_grant("hostile", &wasiclaw::grants::GrantChange { rights: files, all: false, carry_over: None }, false)
        .unwrap();
    let out = call(&rt, "hostile.write-file", &write("/data/note.txt")).await;
    assert!(out.ok, "{}", out.output);
    assert_eq!(std::fs::read_to_string(env.path().join("files/hostile/note.txt")).unwrap(), "hello");
    let back = call(&rt, "hostile.read-file", r#"{"path":"/data/note.txt"}"#).await;
    assert_eq!(back.output, "hello");
    for escape in ["/data/../secrets.json", "/etc/passwd", "/data/../../secrets.json"] {
        let out = call(&rt, "hostile.read-file", &serde_json::json!({"path": escape}).to_string()).await;
        assert!(!out.ok, "read {escape}: {}", out.output);
    }
    assert!(!call(&rt, "hostile.write-file", &write("/tmp/x")).await.ok);
}

/// The hostile fixture granted files, with a quota of 1 MiB and `limits`.
async fn hostile_with_files(limits: &str) -> (crate::support::Env, wasiclaw::runtime::Runtime) {
    let (env, rt) = hostile("http://127.0.0.1:9", &format!("[limits]\nfiles_mb = 1\n{limits}")).await;
    let files = wasiclaw::grants::GrantSet { rights: wasiclaw::grants::Rights::FILES, ..Default::default() };
    rt.change_grant("hostile", &wasiclaw::grants::GrantChange { rights: files, all: false, carry_over: None }, false)
        .unwrap();
    (env, rt)
}

/// `files_mb` holds as a call writes, not only at its next call: a write
/// past the room left fails (through a stream, a positioned write, or
/// growing the file), the file keeps what fitted, and the refusal is
/// audited. Each file made
/// costs 4 KiB of room, so empty files cannot pile up either.
#[tokio::test(flavor = "multi_thread")]
async fn one_call_cannot_write_past_the_files_quota() {
    let (env, rt) = hostile_with_files("").await;
    let fill = env.path().join("files/hostile/fill");
    for how in ["stream", "pwrite", "blocking", "grow"] {
        let out = call(&rt, "hostile.fill", &serde_json::json!({"n": 4096, "text": how}).to_string()).await;
        assert!(!out.ok, "{how}: {}", out.output);
        // The file itself costs 4 KiB of the 1 MiB.
        assert!(out.output.contains("after 1020 KiB"), "{how}: {}", out.output);
        assert_eq!(std::fs::metadata(&fill).unwrap().len(), 1020 << 10, "{how}");
        std::fs::remove_file(&fill).unwrap();
    }
    let within = call(&rt, "hostile.fill", r#"{"n": 1000}"#).await;
    assert!(within.ok, "{}", within.output);
    std::fs::remove_file(&fill).unwrap();
    let empty = call(&rt, "hostile.fill", r#"{"n": 100000, "text": "files"}"#).await;
    assert!(empty.output.contains("after 256 files"), "{}", empty.output);
    let next = call(&rt, "hostile.fill", r#"{"n": 1, "text": "files"}"#).await;
    assert!(!next.ok, "256 empty files fill 1 MiB: the directory is read-only now: {}", next.output);
    let audit = rt.audit(Some("hostile"), 50).unwrap();
    assert!(audit.iter().any(|r| r.capability == "files" && !r.allowed && r.detail.contains("files_mb")), "{audit:?}");
}

/// Calls that overlap share the room left: four started together, each
/// writing what would fit alone, cannot put four times the quota on disk.
#[tokio::test(flavor = "multi_thread")]
async fn calls_at_once_cannot_pass_the_files_quota_together() {
    let (env, rt) = hostile_with_files("concurrent_calls = 4").await;
    let fill = |i: usize| serde_json::json!({"n": 900, "path": format!("f{i}"), "hold_ms": 700}).to_string();
    let (a, b, c, d) = (fill(0), fill(1), fill(2), fill(3));
    let outs = tokio::join!(
        call(&rt, "hostile.fill", &a),
        call(&rt, "hostile.fill", &b),
        call(&rt, "hostile.fill", &c),
        call(&rt, "hostile.fill", &d)
    );
    let outs = [outs.0, outs.1, outs.2, outs.3];
    // They write at once, so the room may run out for all of them.
    let wrote = outs.iter().filter(|o| o.ok).count();
    assert!(wrote <= 1, "900 KiB fits a 1 MiB quota once: {:?}", outs.map(|o| o.output));
    let used = wasiclaw::files::size(&env.path().join("files/hostile"));
    assert!(used <= 1 << 20, "{used} bytes on disk past a 1 MiB quota");
    let next = call(&rt, "hostile.fill", r#"{"n": 200, "path": "g"}"#).await;
    assert!(!next.ok, "the room was taken: {}", next.output);
}

/// Size of the database file, for "bytes on disk bounded" checks.
fn db_bytes(env: &Env) -> u64 {
    std::fs::metadata(env.path().join("wasiclaw.redb")).unwrap().len()
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_floods_are_coalesced_and_bounded() {
    let (env, rt) = hostile("http://127.0.0.1:9", "[limits]\naudit_per_minute = 20").await;
    let before = rt.db.audit_count().unwrap();
    let out = call(&rt, "hostile.audit-flood", r#"{"n": 5000}"#).await;
    assert_eq!(out.output, "denied 5000", "every attempt is still refused");
    assert!(out.denials.len() <= 16, "denial texts kept per call are capped: {}", out.denials.len());
    let records = rt.audit(Some("hostile"), 1000).unwrap();
    let written = rt.db.audit_count().unwrap() - before;
    assert!(written <= 21, "{written} audit records for one flood");
    let coalesced = records.iter().find(|r| r.capability == "audit").expect("one coalescing record");
    assert!(coalesced.detail.contains("kv denied ×4980"), "{coalesced:?}");
    assert!(records.iter().all(|r| r.target.len() <= 300 && r.detail.len() <= 300), "fields are truncated");
    assert!(db_bytes(&env) < 8 << 20, "database grew to {} bytes", db_bytes(&env));
}

/// The hostile fixture granted kv, with a quota of 1 MiB and 100 keys.
async fn hostile_with_kv() -> (crate::support::Env, wasiclaw::runtime::Runtime) {
    let (env, rt) = hostile("http://127.0.0.1:9", "[limits]\nkv_mb = 1\nkv_keys = 100").await;
    let kv = wasiclaw::grants::GrantSet { rights: wasiclaw::grants::Rights::KV, ..Default::default() };
    rt.change_grant("hostile", &wasiclaw::grants::GrantChange { rights: kv, all: false, carry_over: None }, false)
        .unwrap();
    (env, rt)
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_quota_holds_across_calls() {
    let (_env, rt) = hostile_with_kv().await;
    let out = call(&rt, "hostile.kv-flood", r#"{"n": 1000}"#).await;
    assert_eq!(out.error_kind, Some(wasiclaw::runtime::Failure::Denied), "{}", out.output);
    // 64 KiB values: the 16th would pass 1 MiB.
    assert!(out.output.contains("after 15 keys") && out.output.contains("kv quota"), "{}", out.output);
    let again = call(&rt, "hostile.kv-flood", r#"{"n": 1}"#).await;
    assert!(again.ok, "overwriting an existing key fits: {}", again.output);
    let info = rt.inspect("hostile").unwrap();
    let (keys, bytes) = info.kv_usage.unwrap();
    assert_eq!(keys, 15);
    assert!(bytes <= 1 << 20, "{bytes}");
}

/// Deletes are staged like writes (the call reads its own delete back), so
/// deletes of keys that do not exist, which change no usage, must not pile
/// up in the host's memory either: a call touches at most twice `kv_keys`
/// distinct keys.
#[tokio::test(flavor = "multi_thread")]
async fn deletes_cannot_pile_up_in_the_hosts_memory() {
    let (_env, rt) = hostile_with_kv().await;
    let out = call(&rt, "hostile.kv-erase", r#"{"n": 100000}"#).await;
    assert_eq!(out.error_kind, Some(wasiclaw::runtime::Failure::Denied), "{}", out.output);
    assert!(out.output.contains("after 200 deletes") && out.output.contains("kv_keys"), "{}", out.output);
    let within = call(&rt, "hostile.kv-erase", r#"{"n": 200}"#).await;
    assert!(within.ok, "a call within the bound is not refused: {}", within.output);
    assert_eq!(rt.inspect("hostile").unwrap().kv_usage.unwrap(), (0, 0));
}

/// What a call holds in the host through handles is bounded: a header map
/// holds at most 16 KiB, and a call at most `[limits] handles` handles at
/// once (clones of a full header map would otherwise pile up gigabytes).
#[tokio::test(flavor = "multi_thread")]
async fn handles_cannot_pile_up_host_memory() {
    let (_env, rt) = hostile_with_kv().await;
    let out = call(&rt, "hostile.hoard-fields", r#"{"n": 1500}"#).await;
    assert_eq!(out.error_kind, Some(wasiclaw::runtime::Failure::Memory), "{}", out.output);
    assert!(out.output.contains("1000 handles") && out.output.contains("[limits] handles"), "{}", out.output);
    let within = call(&rt, "hostile.hoard-fields", r#"{"n": 900}"#).await;
    assert!(within.ok && within.output.contains("kept 900"), "{}", within.output);
    let big = call(&rt, "hostile.hoard-fields", r#"{"text": "big"}"#).await;
    assert_eq!(big.error_kind, Some(wasiclaw::runtime::Failure::Memory), "{}", big.output);
    assert!(big.output.contains("16 KiB"), "{}", big.output);
}

/// A call's kv writes are staged until its end commit, where the quota is
/// counted again: two calls racing, each within the quota on its own,
/// cannot commit past it together.
#[tokio::test(flavor = "multi_thread")]
async fn racing_calls_cannot_pass_the_kv_quota_together() {
    let (_env, rt) = hostile_with_kv().await;
    // 10 values of 64 KiB each: either call fits 1 MiB alone, both do not.
    let slow = r#"{"n": 10, "text": "a", "hold_ms": 1500}"#;
    let (first, second) = tokio::join!(call(&rt, "hostile.kv-flood", slow), async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        call(&rt, "hostile.kv-flood", r#"{"n": 10, "text": "b"}"#).await
    });
    assert!(second.ok, "the second call ends first and fits: {}", second.output);
    assert_eq!(first.error_kind, Some(wasiclaw::runtime::Failure::Denied), "{}", first.output);
    assert!(first.output.contains("kv quota"), "{}", first.output);
    let (keys, bytes) = rt.inspect("hostile").unwrap().kv_usage.unwrap();
    assert_eq!(keys, 10, "only the call that fitted committed");
    assert!(bytes <= 1 << 20, "{bytes}");
    let refused = rt.audit(Some("hostile"), 50).unwrap();
    assert!(refused.iter().any(|r| !r.allowed && r.capability == "kv" && r.detail.contains("kv quota")), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn notify_and_secret_checks_are_rate_limited() {
    let limits = "[limits]\nnotify_per_hour = 3\nsecret_checks_per_minute = 5";
    let (_env, rt) = hostile("http://127.0.0.1:9", limits).await;
    rt.secrets.set("SIGNING_KEY", "sign-me").unwrap();
    let rights = wasiclaw::grants::GrantSet {
        rights: wasiclaw::grants::Rights::NOTIFY,
        secrets: ["SIGNING_KEY".to_string()].into(),
        ..Default::default()
    };
    rt.change_grant("hostile", &wasiclaw::grants::GrantChange { rights, all: false, carry_over: None }, false).unwrap();
    let out = call(&rt, "hostile.notify", r#"{"n": 10}"#).await;
    assert!(!out.ok && out.output.contains("notify_per_hour"), "{}", out.output);
    assert_eq!(rt.notifications(100).unwrap().len(), 3);
    let guess = call(&rt, "hostile.guess", r#"{"secret": "SIGNING_KEY", "n": 100}"#).await;
    assert!(guess.output.contains("after 5 guesses"), "{}", guess.output);
    assert!(guess.output.contains("wasiclaw secrets set SIGNING_KEY --random"), "{}", guess.output);
}

/// A secret of 32 bytes or more cannot be guessed online, so the first
/// check of it in a call spends no budget (strangers' wrong webhook tokens
/// would otherwise lock out real deliveries,
/// `webhooks::wrong_tokens_cannot_lock_out_a_long_webhook_token`); more in
/// one call do, so a component granted it cannot try a dictionary at host
/// speed. What a check hashes is bounded either way.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_secrets_checks_are_not_budgeted_but_bounded() {
    let (_env, rt) = hostile("http://127.0.0.1:9", "[limits]\nsecret_checks_per_minute = 5").await;
    rt.secrets.set("SIGNING_KEY", &"k".repeat(wasiclaw::host_api::UNGUESSABLE)).unwrap();
    let rights = wasiclaw::grants::GrantSet { secrets: ["SIGNING_KEY".to_string()].into(), ..Default::default() };
    rt.change_grant("hostile", &wasiclaw::grants::GrantChange { rights, all: false, carry_over: None }, false).unwrap();
    for _ in 0..10 {
        let one = call(&rt, "hostile.guess", r#"{"secret": "SIGNING_KEY", "n": 1}"#).await;
        assert_eq!(one.output, "guessed", "{}", one.output);
    }
    let many = call(&rt, "hostile.guess", r#"{"secret": "SIGNING_KEY", "n": 100}"#).await;
    assert!(many.output.contains("after 6 guesses"), "{}", many.output);
    let huge = call(&rt, "hostile.guess", r#"{"secret": "SIGNING_KEY", "n": 1, "body_kb": 65}"#).await;
    assert!(!huge.ok && huge.output.contains("at most 64 KiB"), "{}", huge.output);
    let fits = call(&rt, "hostile.guess", r#"{"secret": "SIGNING_KEY", "n": 1, "body_kb": 63}"#).await;
    assert_eq!(fits.output, "guessed", "{}", fits.output);
}

/// What a component sends the owner is kept for `wasiclaw notifications`,
/// but only the newest 1,000, whatever the budget allows.
#[tokio::test(flavor = "multi_thread")]
async fn notifications_kept_are_bounded() {
    let (_env, rt) = hostile("http://127.0.0.1:9", "[limits]\nnotify_per_hour = 100000").await;
    let rights = wasiclaw::grants::GrantSet { rights: wasiclaw::grants::Rights::NOTIFY, ..Default::default() };
    rt.change_grant("hostile", &wasiclaw::grants::GrantChange { rights, all: false, carry_over: None }, false).unwrap();
    let kept = wasiclaw::queue::NOTIFICATIONS_KEPT as usize;
    let out = call(&rt, "hostile.notify", &serde_json::json!({"n": kept + 20}).to_string()).await;
    assert!(out.ok, "{}", out.output);
    let last = call(&rt, "hostile.notify", r#"{"n": 1, "text": "the newest"}"#).await;
    assert!(last.ok, "{}", last.output);
    let notes = rt.notifications(10 * kept).unwrap();
    assert_eq!(notes.len(), kept);
    assert_eq!(notes.last().unwrap().text, "the newest");
}

/// Each memory a component saves stays on disk and may cost an embedding
/// request, and so may each search: both are rate-limited per component.
#[tokio::test(flavor = "multi_thread")]
async fn memory_saves_and_searches_are_rate_limited() {
    let limits = "[limits]\nmemory_saves_per_hour = 5\nmemory_searches_per_minute = 7";
    let (_env, rt) = hostile("http://127.0.0.1:9", limits).await;
    let rights = wasiclaw::grants::Rights::MEMORY_READ | wasiclaw::grants::Rights::MEMORY_WRITE;
    let rights = wasiclaw::grants::GrantSet { rights, ..Default::default() };
    rt.change_grant("hostile", &wasiclaw::grants::GrantChange { rights, all: false, carry_over: None }, false).unwrap();
    let saves = call(&rt, "hostile.remember", r#"{"text": "flood", "n": 50}"#).await;
    assert_eq!(saves.error_kind, Some(wasiclaw::runtime::Failure::Denied), "{}", saves.output);
    assert!(
        saves.output.contains("after 5 saves") && saves.output.contains("memory_saves_per_hour"),
        "{}",
        saves.output
    );
    assert_eq!(rt.db.memory_all().unwrap().len(), 5);
    let searches = call(&rt, "hostile.recall", r#"{"query": "flood", "n": 50}"#).await;
    assert!(searches.output.contains("after 7 searches"), "{}", searches.output);
    let audit = rt.audit(Some("hostile"), 100).unwrap();
    assert!(audit.iter().any(|r| !r.allowed && r.detail.contains("memory_saves_per_hour")), "{audit:?}");
}

/// A budget bounds how fast a component saves memories; `memories_kept`
/// bounds how many it keeps, so a year of saves cannot fill the disk.
/// Forgetting one frees room; the owner's own memories do not count.
#[tokio::test(flavor = "multi_thread")]
async fn a_component_keeps_at_most_memories_kept() {
    let (_env, rt) = hostile("http://127.0.0.1:9", "[limits]\nmemories_kept = 5").await;
    let rights = wasiclaw::grants::GrantSet { rights: wasiclaw::grants::Rights::MEMORY_WRITE, ..Default::default() };
    rt.change_grant("hostile", &wasiclaw::grants::GrantChange { rights, all: false, carry_over: None }, false).unwrap();
    rt.memories().save("the owner's own", vec![], "cli", false).await.unwrap();
    let saves = call(&rt, "hostile.remember", r#"{"text": "flood", "n": 8}"#).await;
    assert_eq!(saves.error_kind, Some(wasiclaw::runtime::Failure::Denied), "{}", saves.output);
    assert!(saves.output.contains("after 5 saves") && saves.output.contains("memories_kept"), "{}", saves.output);
    assert_eq!(rt.db.memory_count("skill:hostile").unwrap(), 5);
    assert_eq!(rt.inspect("hostile").unwrap().memories, Some((5, 5)), "skills inspect shows it");
    let audit = rt.audit(Some("hostile"), 100).unwrap();
    assert!(audit.iter().any(|r| !r.allowed && r.detail.contains("memories_kept")), "{audit:?}");
    let theirs = rt.db.memory_all().unwrap().into_iter().find(|m| m.source == "skill:hostile").unwrap();
    assert!(rt.db.memory_forget(theirs.id).unwrap());
    let again = call(&rt, "hostile.remember", r#"{"text": "room again", "n": 1}"#).await;
    assert!(again.ok, "{}", again.output);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_granted_for_a_rule_is_not_an_hmac_key() {
    let (_env, rt) = hostile("http://127.0.0.1:9", "").await;
    rt.secrets.set("SIGNING_KEY", "sign-me").unwrap();
    crate::egress::grant(&rt, "hostile", &["http://127.0.0.1:9/"], &["API_TOKEN", "SIGNING_KEY"]);
    let rule_secret = call(&rt, "hostile.hmac", r#"{"secret": "API_TOKEN"}"#).await;
    assert_eq!(rule_secret.error_kind, Some(wasiclaw::runtime::Failure::Denied), "{}", rule_secret.output);
    assert!(rule_secret.denials[0].contains("only for the HTTP rules"), "{:?}", rule_secret.denials);
    let crypto = call(&rt, "hostile.hmac", r#"{"secret": "SIGNING_KEY"}"#).await;
    assert!(crypto.ok && crypto.output.len() == 64, "{}", crypto.output);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_inputs_are_refused_before_use() {
    let (_env, rt) = hostile("http://127.0.0.1:9", "").await;
    let rights = wasiclaw::grants::GrantSet { rights: wasiclaw::grants::Rights::MEMORY_READ, ..Default::default() };
    rt.change_grant("hostile", &wasiclaw::grants::GrantChange { rights, all: false, carry_over: None }, false).unwrap();
    let query = "q ".repeat(4 << 20);
    let out = call(&rt, "hostile.recall", &serde_json::json!({"query": query}).to_string()).await;
    assert_eq!(out.error_kind, Some(wasiclaw::runtime::Failure::InvalidInput), "{}", out.output);
    assert!(out.output.contains("at most 1024 bytes"), "{}", out.output);
    // Hashing is host CPU, and a random request a host allocation.
    let hmac = call(&rt, "hostile.hmac", r#"{"secret": "SIGNING_KEY", "n": 4096}"#).await;
    assert_eq!(hmac.error_kind, Some(wasiclaw::runtime::Failure::InvalidInput), "{}", hmac.output);
    assert!(hmac.output.contains("at most 2 MiB"), "{}", hmac.output);
    let random = call(&rt, "hostile.random", r#"{"n": 2048}"#).await;
    assert!(!random.ok && random.output.contains("exceeds limit 1048576"), "{}", random.output);
    let random = call(&rt, "hostile.random", r#"{"n": 1024}"#).await;
    assert_eq!(random.output, "1048576 bytes");
}

#[test]
fn an_oversized_manifest_is_rejected_naming_the_limit() {
    let env = Env::new();
    env.install("hostile");
    env.config("[skills.hostile]\nextra_tools = 2000\n");
    let s = env.list().into_iter().find(|s| s["name"] == "hostile").unwrap();
    assert_eq!(s["status"], "rejected");
    assert!(s["reason"].as_str().unwrap().contains("at most 64 are allowed"), "{s}");
}

/// The model calls a tool SKILL__TOOL: a name with `__` in it (or `_` at
/// an end) could make two skills' tools one name, so it is refused; and a
/// component given its settings may not then claim another name.
#[test]
fn names_that_could_pass_for_another_skill_are_refused() {
    let env = Env::new();
    env.install("hostile");
    for (settings, why) in [
        ("tool_name = \"x__y\"", "tool name `x__y` must be 1-64 of a-z, 0-9, - and _, with no `__`"),
        ("tool_name = \"_y\"", "no `_` at either end"),
        ("rename = \"notes\"", "it said it is `hostile`, then `notes` once given that name's settings"),
    ] {
        env.config(&format!("[skills.hostile]\n{settings}\n"));
        let s = env.list().into_iter().find(|s| s["name"] == "hostile").unwrap_or_else(|| panic!("{settings}"));
        assert_eq!(s["status"], "rejected", "{settings}: {s}");
        assert!(s["reason"].as_str().unwrap().contains(why), "{settings}: {s}");
    }
}

/// One tool a model API refuses would fail every request of every turn, so
/// it keeps its component from loading, with the reason, and nothing else.
#[test]
fn tools_a_model_api_would_refuse_never_load() {
    let env = Env::new();
    env.install("hostile");
    env.install("clock");
    // `hostile__` + 55 characters is 64, the most OpenAI and Anthropic take.
    let (longest, too_long) = ("t".repeat(55), "t".repeat(56));
    for (settings, why) in [
        (format!("tool_name = \"{too_long}\""), "65 characters, and model APIs take at most 64"),
        ("tool_name = \"odd\"\ntool_schema = '\"text\"'".into(), "parameters must be a JSON Schema of an object"),
        ("tool_name = \"odd\"\ntool_schema = '{\"type\": \"array\"}'".into(), "not {\"type\":\"array\"}"),
        (format!("tool_name = \"{longest}\""), ""),
    ] {
        env.config(&format!("[skills.hostile]\n{settings}\n"));
        let list = env.list();
        let s = list.iter().find(|s| s["name"] == "hostile").unwrap_or_else(|| panic!("{settings}"));
        if why.is_empty() {
            assert_ne!(s["status"], "rejected", "{settings}: {s}");
        } else {
            assert_eq!(s["status"], "rejected", "{settings}: {s}");
            assert!(s["reason"].as_str().unwrap().contains(why), "{settings}: {s}");
        }
        assert!(list.iter().any(|s| s["name"] == "clock" && s["status"] != "rejected"), "{list:?}");
    }
}

/// A component's error text goes to logs, the outbox and the model: it is
/// cut to 4 KiB, its control characters escaped.
#[tokio::test(flavor = "multi_thread")]
async fn a_components_error_text_is_bounded_and_escaped() {
    let (_env, rt) = hostile("http://127.0.0.1:9", "").await;
    let out = call(&rt, "hostile.shout", r#"{"n": 512}"#).await;
    assert_eq!(out.error_kind, Some(wasiclaw::runtime::Failure::Failed));
    assert!(out.output.len() < wasiclaw::engine::MAX_ERROR_TEXT + 100, "{} bytes", out.output.len());
    assert!(out.output.contains("\\u{1b}[2J") && !out.output.contains('\x1b'), "{}", &out.output[..40]);
}

#[tokio::test(flavor = "multi_thread")]
async fn log_floods_are_dropped_past_the_budget() {
    let (_env, rt) = hostile("http://127.0.0.1:9", "[limits]\nlog_kb_per_minute = 10").await;
    let budget = rt.budgets.of("hostile", &rt.config.limits);
    let out = call(&rt, "hostile.log-flood", r#"{"n": 1000}"#).await;
    assert!(out.ok, "{}", out.output);
    // 1000 lines of 1000 bytes were written; at most 10 KiB passed, so the
    // budget is spent and the next line is refused too.
    assert!(!budget.take(wasiclaw::budget::Spend::LogBytes, 1000), "the flood was not counted");
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_attempts_and_planted_symlinks_are_audited() {
    let (env, rt) = hostile("http://127.0.0.1:9", "").await;
    let connect = call(&rt, "hostile.connect", r#"{"addr": "127.0.0.1:22"}"#).await;
    assert!(!connect.ok);
    let audit = rt.audit(Some("hostile"), 50).unwrap();
    // wasi-libc binds before it connects; the first address it tries is refused.
    assert!(audit.iter().any(|r| r.capability == "socket" && !r.allowed && r.target.starts_with("Tcp")), "{audit:?}");
    let files = wasiclaw::grants::GrantSet { rights: wasiclaw::grants::Rights::FILES, ..Default::default() };
    rt.change_grant("hostile", &wasiclaw::grants::GrantChange { rights: files, all: false, carry_over: None }, false)
        .unwrap();
    let planted = call(&rt, "hostile.symlink", r#"{"target": "../../secrets.json"}"#).await;
    // WASI lets a guest make a link inside its directory; none may remain
    // on the host, where the owner's tools would follow it out.
    assert!(planted.ok, "{}", planted.output);
    let link = env.path().join("files/hostile/link");
    assert!(std::fs::symlink_metadata(&link).is_err(), "a symlink survived the call");
    let audit = rt.audit(Some("hostile"), 50).unwrap();
    assert!(
        audit.iter().any(|r| r.capability == "files" && r.detail.contains("symlink to ../../secrets.json removed")),
        "{audit:?}"
    );
}

#[test]
fn control_characters_from_a_component_reach_the_terminal_escaped() {
    let env = Env::new();
    env.install("hostile");
    env.ok(&["skills", "grant", "hostile", "--notify"]);
    let evil = "\u{1b}]0;owned\u{7}\u{1b}[2Jcleared";
    env.ok(&["tool", "hostile.notify", &serde_json::json!({"text": evil}).to_string()]);
    let shown = env.ok(&["notifications"]);
    assert!(!shown.contains('\u{1b}') && shown.contains("\\u{1b}]0;owned"), "{shown:?}");
    let audit = env.ok(&["audit"]);
    assert!(!audit.contains('\u{1b}'), "{audit:?}");
}

#[test]
fn the_audit_log_is_rotated() {
    let env = Env::new();
    let db = wasiclaw::store::Store::open(&env.path().join("db.redb"), &wasiclaw::runtime::TABLES).unwrap();
    *db.audit_retention.lock().unwrap() = wasiclaw::config::AuditConfig { keep_days: 1, max_records: 300 };
    let record = |time_ms: i64| wasiclaw::store::AuditRecord {
        id: 0,
        time_ms,
        skill: "s".into(),
        sha256: "0".into(),
        capability: "kv".into(),
        target: "t".into(),
        allowed: false,
        detail: String::new(),
    };
    let now = wasiclaw::store::now_ms();
    // 100 records from two days ago, then 1,000 fresh ones.
    for _ in 0..100 {
        db.audit(vec![record(now - 2 * 86_400_000)]).unwrap();
    }
    for _ in 0..1000 {
        db.audit(vec![record(now)]).unwrap();
    }
    let kept = db.audit_count().unwrap();
    assert!(kept <= 300 + 256, "{kept} records kept with max_records = 300");
    let oldest = db.audit_tail(None, 10_000).unwrap();
    assert!(oldest.iter().all(|r| r.time_ms == now), "records older than keep_days survived");
}
