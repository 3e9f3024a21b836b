//! The components built into the binary: a first start installs the
//! bundled skills (waiting for approval, as any new build), `skills add`
//! installs a channel or skill without a wasm toolchain, and never
//! overwrites another build unless told.

use crate::support::*;

/// A state dir that has never been started: no `skills/` yet.
fn fresh() -> Env {
    let env = Env::new();
    std::fs::remove_dir(env.skills()).unwrap();
    env
}

#[test]
fn a_first_start_installs_the_bundled_skills_waiting_for_approval() {
    let env = fresh();
    let listed = env.list();
    let mut names: Vec<&str> = listed.iter().map(|s| s["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["clock", "notes", "weather", "web-fetch"], "skills only, no channels: {listed:?}");
    for skill in &listed {
        assert_eq!(skill["status"], "needs-approval", "a bundled build is approved like any other: {skill}");
    }
    // The embedded bytes are the guests this checkout builds.
    assert_eq!(std::fs::read(env.skills().join("web-fetch.wasm")).unwrap(), std::fs::read(guest("web-fetch")).unwrap());

    // `clock` asks for nothing, as `skills available` says: approval alone makes it work.
    let inspect: serde_json::Value = serde_json::from_str(&env.ok(&["skills", "inspect", "clock", "--json"])).unwrap();
    let available = env.ok(&["skills", "available"]);
    assert!(available.lines().any(|l| l.starts_with("clock") && l.contains("asks for nothing")), "{available}");
    let asks = inspect["requested"].as_object().unwrap();
    assert!(asks.values().all(|v| v == false || v == &serde_json::json!([])), "{inspect}");
    env.ok(&["skills", "approve", "clock"]);
    assert!(env.ok(&["tool", "clock.now", "{}"]).contains("\"tz\""));

    // A second start installs nothing again: a removed skill stays removed.
    std::fs::remove_file(env.skills().join("weather.wasm")).unwrap();
    assert_eq!(env.list().len(), 3);
}

#[test]
fn skills_add_installs_a_bundled_channel_and_keeps_the_owners_own_build() {
    let env = Env::new();
    let available: Vec<serde_json::Value> =
        env.ok(&["skills", "available", "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(available.len(), 10, "{available:?}");
    let telegram = available.iter().find(|c| c["name"] == "telegram").unwrap();
    assert_eq!((&telegram["kind"], &telegram["presence"]), (&"channel".into(), &"absent".into()));

    let out = env.ok(&["skills", "add", "telegram"]);
    assert!(out.contains("installed"), "{out}");
    let listed = env.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "telegram");
    assert!(listed[0]["channel"]["transport"].is_object(), "loaded as a channel: {}", listed[0]);
    assert!(env.ok(&["skills", "add", "telegram"]).contains("already installed"));

    // The owner's own build of a bundled name is theirs: kept unless --force.
    let own = env.install_file(&guest("hostile"), "notes");
    let out = env.cli(&["skills", "add", "notes"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("holds another build") && stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&own).unwrap(), std::fs::read(guest("hostile")).unwrap());
    env.ok(&["skills", "add", "notes", "--force"]);
    assert_eq!(std::fs::read(&own).unwrap(), std::fs::read(guest("notes")).unwrap());

    let out = env.cli(&["skills", "add", "nope"]);
    assert!(!out.status.success() && stderr(&out).contains("there are: clock"), "{}", stderr(&out));
    env.ok(&["skills", "add", "--all"]);
    assert_eq!(env.list().len(), 10);
    assert!(
        !std::fs::read_dir(env.skills()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".part"))
    );
}
