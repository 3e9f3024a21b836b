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

    std::fs::copy(rebuilt(&guest("clock"), "reload"), &file).unwrap();
    wait_for("clock to reload", Duration::from_secs(20), || sha(&env).is_some_and(|s| s != first));

    std::fs::remove_file(&file).unwrap();
    wait_for("clock to unload", Duration::from_secs(20), || sha(&env).is_none());
    assert!(!env.cli(&["tool", "clock.now"]).status.success());
}
