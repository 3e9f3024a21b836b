//! The bundled skills doing their jobs, against loopback stand-ins for the
//! services they call.

use crate::egress::grant;
use crate::support::{Env, Server, call};
use wasiclaw::grants::{GrantChange, GrantSet};

#[tokio::test(flavor = "multi_thread")]
async fn clock_converts_across_daylight_saving() {
    let env = Env::new();
    env.install("clock");
    let rt = env.runtime().await;
    // 2026-03-29: Berlin has just gone to CEST (+2), New York is on EDT (-4).
    let out =
        call(&rt, "clock.convert", r#"{"time":"2026-03-29T09:30","from":"Europe/Berlin","to":"America/New_York"}"#)
            .await;
    assert!(out.output.contains("2026-03-29T03:30:00-04:00"), "{}", out.output);
    let now = call(&rt, "clock.now", r#"{"tz":"Asia/Kolkata"}"#).await;
    assert!(now.output.contains("+05:30"), "{}", now.output);
}

#[tokio::test(flavor = "multi_thread")]
async fn notes_keeps_notes() {
    let env = Env::new();
    env.install("notes");
    let rt = env.runtime().await;
    rt.change_grant(
        "notes",
        &GrantChange {
            rights: GrantSet { rights: wasiclaw::grants::Rights::KV, ..Default::default() },
            all: false,
            carry_over: None,
        },
        false,
    )
    .unwrap();
    for text in ["Buy oat milk", "Call the plumber", "milk the cows"] {
        assert!(call(&rt, "notes.add", &serde_json::json!({"text": text}).to_string()).await.ok);
    }
    let found = call(&rt, "notes.search", r#"{"query":"MILK"}"#).await.output;
    assert!(found.contains("oat milk") && found.contains("cows") && !found.contains("plumber"), "{found}");
    assert!(call(&rt, "notes.delete", r#"{"id":2}"#).await.ok);
    let missing = call(&rt, "notes.delete", r#"{"id":2}"#).await;
    assert_eq!(missing.error_kind, Some(wasiclaw::runtime::Failure::NotFound));
    let all = call(&rt, "notes.list", "{}").await.output;
    assert!(!all.contains("plumber") && all.contains("\"id\":3"), "{all}");
}

/// A call's kv writes and audit records cost one durable commit, made
/// before the caller hears back: a tool call with no rights used makes
/// none, and a note the CLI saw saved survives the daemon being killed
/// right after.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_commits_once_and_what_it_wrote_survives_a_kill() {
    let env = Env::new();
    env.install("notes");
    env.install("clock");
    {
        let rt = env.runtime().await;
        let kv = GrantSet { rights: wasiclaw::grants::Rights::KV, ..Default::default() };
        rt.change_grant("notes", &GrantChange { rights: kv, all: false, carry_over: None }, false).unwrap();
        let commits = || rt.db.durable_commits();
        let before = commits();
        // Reads next-id, writes it and the note: three audited kv uses.
        assert!(call(&rt, "notes.add", r#"{"text":"first"}"#).await.ok);
        assert_eq!(commits() - before, 1, "one notes.add made {} durable commits", commits() - before);
        let uses = rt.audit(Some("notes"), 10).unwrap();
        assert_eq!(uses.iter().filter(|r| r.capability == "kv").count(), 3, "{uses:?}");
        let before = commits();
        assert!(call(&rt, "clock.now", r#"{"tz":"UTC"}"#).await.ok);
        assert_eq!(commits(), before, "a call that used no right committed");
    }
    let daemon = env.daemon();
    env.ok(&["tool", "notes.add", r#"{"text":"kept through a kill"}"#]);
    drop(daemon); // SIGKILL at once
    let all = env.ok(&["tool", "notes.list", "{}"]);
    assert!(all.contains("first") && all.contains("kept through a kill"), "{all}");
}

/// A call's kv writes are its own until it ends: it reads and lists them,
/// another call of the same component does not see them, and its one end
/// commit makes them everyone's at once.
#[test]
fn a_calls_kv_writes_are_its_own_until_it_ends() {
    use std::sync::Arc;
    let env = Env::new();
    let limits = wasiclaw::config::Limits::default();
    let db = Arc::new(wasiclaw::store::Store::open(&env.path().join("db.redb"), &wasiclaw::runtime::TABLES).unwrap());
    let call = || {
        wasiclaw::engine::HostCtx::new(
            "notes",
            "0",
            Default::default(),
            db.clone(),
            wasiclaw::secrets::Secrets::new(env.path().join("secrets.json")),
            Arc::new(limits.clone()),
            Arc::new(wasiclaw::budget::Budget::new(&limits)),
            wasiclaw::context::system_resolver(),
        )
    };
    let first = call();
    first.kv_put("a", Some(b"1".to_vec())).unwrap();
    first.kv_put("b", Some(b"2".to_vec())).unwrap();
    assert_eq!(first.finish(), None);

    let (writer, other) = (call(), call());
    writer.kv_put("c", Some(b"3".to_vec())).unwrap();
    writer.kv_put("a", None).unwrap();
    assert_eq!(writer.kv_get("c").unwrap().as_deref(), Some(&b"3"[..]));
    assert_eq!(writer.kv_get("a").unwrap(), None);
    assert_eq!(writer.kv_keys("", 10).unwrap(), ["b", "c"]);
    assert_eq!(writer.kv_keys("", 1).unwrap(), ["b"]);
    assert_eq!(other.kv_get("c").unwrap(), None);
    assert_eq!(other.kv_get("a").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(other.kv_keys("", 10).unwrap(), ["a", "b"]);
    let commits = db.durable_commits();
    assert_eq!(writer.finish(), None);
    assert_eq!(db.durable_commits(), commits + 1, "one commit for the call's writes");
    assert_eq!(other.kv_keys("", 10).unwrap(), ["b", "c"]);
    assert_eq!(db.kv_usage("notes").unwrap(), (2, 4), "keys b and c, a byte of key and one of value each");
}

#[tokio::test(flavor = "multi_thread")]
async fn web_fetch_reads_only_hosts_the_owner_chose() {
    let server = Server::start().await;
    let env = Env::new();
    env.install("web-fetch");
    let rt = env.runtime().await;
    let page = serde_json::json!({"url": format!("{}/page", server.base)}).to_string();
    assert_eq!(call(&rt, "web-fetch.fetch", &page).await.error_kind, Some(wasiclaw::runtime::Failure::Denied));
    grant(&rt, "web-fetch", &[&format!("{}/", server.base)], &[]);
    let out = call(&rt, "web-fetch.fetch", &page).await;
    assert!(out.ok, "{}", out.output);
    let text = serde_json::from_str::<serde_json::Value>(&out.output).unwrap()["text"].as_str().unwrap().to_string();
    assert!(text.contains("Hello & welcome") && text.contains("First para."), "{text}");
    assert!(!text.contains("evil()") && !text.contains("<p>"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn weather_calls_its_api_through_a_granted_rule() {
    let server = Server::start().await;
    let env = Env::new();
    env.install("weather");
    env.config(&format!("[skills.weather]\napi_base = \"{0}\"\ngeocoding_base = \"{0}\"", server.base));
    let rt = env.runtime().await;
    let info = rt.inspect("weather").unwrap();
    assert_eq!(info.requested.unwrap().http[0].url, format!("{}/v1/", server.base), "rules follow the configured base");
    rt.change_grant("weather", &GrantChange { all: true, ..Default::default() }, false).unwrap();
    let out = call(&rt, "weather.current", r#"{"city":"Berlin"}"#).await;
    assert!(out.ok, "{}", out.output);
    let v: serde_json::Value = serde_json::from_str(&out.output).unwrap();
    assert_eq!(v["place"], "Berlin, Germany");
    assert_eq!(v["temperature_c"], 4.2);
    assert_eq!(v["conditions"], "rain");
    let seen = server.seen();
    assert!(seen[0].uri.starts_with("/v1/search?count=1&name=Berlin"), "{seen:?}");
    assert!(seen[1].uri.contains("latitude=52.52437&longitude=13.41053"), "{seen:?}");
}

/// An unchanged component is neither read, hashed nor described again at
/// the next start; a change of its settings describes it anew.
#[tokio::test(flavor = "multi_thread")]
async fn what_a_component_describes_is_cached_with_its_settings() {
    let env = Env::new();
    env.install("clock");
    env.install("weather");
    let describes = |rt: &wasiclaw::runtime::Runtime| rt.engine.describes.load(std::sync::atomic::Ordering::Relaxed);
    let first = env.runtime().await;
    assert!(describes(&first) >= 2, "the first start describes every component");
    drop(first);
    let again = env.runtime().await;
    assert_eq!(describes(&again), 0, "an unchanged component was described again");
    let reads = again.registry.reads.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(reads, 0, "an unchanged file was read and hashed again");
    assert_eq!(again.inspect("clock").unwrap().tools.len(), 2);
    drop(again);
    env.config("[skills.weather]\napi_base = \"http://127.0.0.1:9\"\n");
    let changed = env.runtime().await;
    assert!(describes(&changed) >= 1, "new settings were not described");
    let rules = changed.inspect("weather").unwrap().requested.unwrap().http;
    assert!(rules.iter().any(|r| r.url.starts_with("http://127.0.0.1:9")), "{rules:?}");
}

/// A skill's compiled code is mapped and linked at its first call, not
/// when it is loaded (after its compile, or at a warm start); if its cached
/// copy is gone by then, the call compiles it again from the file.
#[tokio::test(flavor = "multi_thread")]
async fn a_skill_is_linked_at_its_first_call_after_a_warm_start() {
    use wasiclaw::component::Kind;
    let env = Env::new();
    env.install("clock");
    env.install("notes");
    let linked = |rt: &wasiclaw::runtime::Runtime, name: &str| {
        let entry = rt.registry.find(name).unwrap();
        match &entry.loaded.as_ref().unwrap().kind {
            Kind::Skill(code) => code.linked().is_some(),
            Kind::Channel(..) => panic!("{name} is a skill"),
        }
    };
    let first = env.runtime().await;
    assert!(!linked(&first, "clock"), "a skill just compiled and described stayed linked");
    drop(first);
    let warm = env.runtime().await;
    assert!(!linked(&warm, "clock") && !linked(&warm, "notes"), "a warm start linked skills nobody called");
    assert!(call(&warm, "clock.now", r#"{"tz":"UTC"}"#).await.ok);
    assert!(linked(&warm, "clock") && !linked(&warm, "notes"));
    drop(warm);
    let again = env.runtime().await;
    for cached in std::fs::read_dir(env.dir.path().join("cache")).unwrap() {
        let path = cached.unwrap().path();
        if path.extension().is_some_and(|x| x == "cwasm") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let out = call(&again, "clock.now", r#"{"tz":"UTC"}"#).await;
    assert!(out.ok, "a call after the compile cache went: {}", out.output);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_minimal_skill_is_under_20_lines_and_works() {
    let source =
        std::fs::read_to_string(format!("{}/skills-wasm/fixtures/minimal/src/lib.rs", crate::support::ROOT)).unwrap();
    assert!(source.lines().count() < 20, "the minimal skill grew to {} lines", source.lines().count());
    let env = Env::new();
    env.install("minimal");
    let rt = env.runtime().await;
    assert_eq!(call(&rt, "hello.greet", r#"{"name":"Ada"}"#).await.output, "Hello, Ada!");
    // A missing argument is the skill's invalid-input error, naming the field.
    let missing = call(&rt, "hello.greet", "{}").await;
    assert_eq!(missing.error_kind, Some(wasiclaw::runtime::Failure::InvalidInput), "{}", missing.output);
    assert!(missing.output.contains("missing field `name`"), "{}", missing.output);
}

/// An upgrade of wasiclaw (a new engine) compiles every component again:
/// the copies the old engine made go with the next scan that loads or
/// drops a component, those of this engine stay.
#[tokio::test(flavor = "multi_thread")]
async fn compiled_code_of_an_earlier_engine_is_dropped() {
    let env = Env::new();
    env.install("clock");
    let rt = env.runtime().await;
    assert!(call(&rt, "clock.now", r#"{"tz":"UTC"}"#).await.ok);
    let cache = env.path().join("cache");
    let ours: Vec<_> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
    let sha = rt.inspect("clock").unwrap().sha256;
    let old = [format!("{sha}-0123456789abcdef.cwasm"), format!("{sha}-0123456789abcdef.describe.json")];
    for name in &old {
        std::fs::write(cache.join(name), b"an earlier engine's").unwrap();
    }
    env.install("notes");
    rt.rescan().await;
    for name in &old {
        assert!(!cache.join(name).exists(), "{name} was kept");
    }
    assert!(ours.iter().all(|f| f.exists()), "this engine's copies went: {ours:?}");
    assert!(call(&rt, "clock.now", r#"{"tz":"UTC"}"#).await.ok);
}

/// `[compile]` picks how components are compiled; what a different setting
/// compiled is cached apart, and a compiler this build lacks is refused
/// with what to do.
#[tokio::test(flavor = "multi_thread")]
async fn the_compile_settings_key_the_cache_and_a_missing_compiler_is_explained() {
    let env = Env::new();
    env.install("clock");
    let cached = || std::fs::read_dir(env.path().join("cache")).unwrap().filter_map(Result::ok).count();
    let names = || {
        let files = std::fs::read_dir(env.path().join("cache")).unwrap().filter_map(Result::ok);
        files.map(|e| e.file_name()).collect::<std::collections::BTreeSet<_>>()
    };
    let rt = env.runtime().await;
    assert!(call(&rt, "clock.now", r#"{"tz":"UTC"}"#).await.ok);
    let (before, keys) = (cached(), names());
    drop(rt);
    std::fs::remove_dir_all(env.path().join("cache")).unwrap();
    env.config("[compile]\nparallel = false\n");
    let serial = env.runtime().await;
    assert!(call(&serial, "clock.now", r#"{"tz":"UTC"}"#).await.ok, "a one-thread compile works");
    assert_eq!(cached(), before, "parallelism does not change the compiled code's key");
    drop(serial);
    env.config("[compile]\ncompiler = \"winch\"\n");
    let winch = env.cli(&["skills", "list"]);
    if cfg!(feature = "winch") {
        assert!(winch.status.success(), "{}", String::from_utf8_lossy(&winch.stderr));
        // Under keys of its own (cranelift's copies, stale now, are gone).
        assert_ne!(names(), keys, "winch's code must be cached apart from cranelift's");
    } else {
        let err = String::from_utf8_lossy(&winch.stderr);
        assert!(!winch.status.success() && err.contains("--features winch"), "{err}");
    }
    env.config("[compile]\ncompiler = \"llvm\"\n");
    let bad = env.cli(&["skills", "list"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("llvm") && err.contains("cranelift"), "{err}");
}
