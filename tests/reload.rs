//! Hot reload: the daemon picks up added, replaced and removed skill files
//! without a restart.

use crate::support::{Env, guest, rebuilt, wait_for};
use std::time::Duration;

#[test]
fn the_daemon_follows_the_skills_folder() {
    let env = Env::new();
    let _daemon = env.daemon();
    assert!(env.list().is_empty());
    let file = env.install("clock");
    let sha =
        |env: &Env| env.list().iter().find(|s| s["name"] == "clock").map(|s| s["sha256"].as_str().unwrap().to_string());
    wait_for("clock to load", Duration::from_secs(20), || sha(&env).is_some());
    assert!(env.ok(&["tool", "clock.now", r#"{"tz":"Asia/Tokyo"}"#]).contains("+09:00"));
    let first = sha(&env).unwrap();

    let cached = |sha: &str| {
        std::fs::read_dir(env.path().join("cache"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(sha))
            .count()
    };
    assert!(cached(&first) > 0, "the first build is compiled into the cache");
    std::fs::copy(rebuilt(&guest("clock"), "reload"), &file).unwrap();
    wait_for("clock to reload", Duration::from_secs(20), || sha(&env).is_some_and(|s| s != first));
    assert_eq!(cached(&first), 0, "the replaced build's compiled code stayed in the cache");

    std::fs::remove_file(&file).unwrap();
    wait_for("clock to unload", Duration::from_secs(20), || sha(&env).is_none());
    assert!(!env.cli(&["tool", "clock.now"]).status.success());
}

#[test]
fn a_settled_daemon_does_not_rescan() {
    let env = Env::new();
    env.install("clock");
    env.install("notes");
    let _daemon = env.daemon();
    let rescans = || -> u64 {
        let status: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
        status["rescans"].as_u64().unwrap()
    };
    // A change wakes it: the rescan then reads every file in the folder,
    // and reading must not wake another rescan.
    let start = rescans();
    std::fs::copy(crate::support::guest("web-fetch"), env.skills().join("web-fetch.wasm")).unwrap();
    // Listed at once as compiling; loaded (by one more rescan) when compiled.
    wait_for("the new skill to load", Duration::from_secs(30), || {
        env.list().iter().any(|s| s["name"] == "web-fetch" && s["status"] != "compiling")
    });
    assert!(rescans() > start);
    std::thread::sleep(Duration::from_secs(1));
    let settled = rescans();
    std::thread::sleep(Duration::from_secs(3));
    env.ok(&["tool", "clock.now"]);
    assert_eq!(rescans(), settled, "the daemon rescanned with nothing changed");
}
