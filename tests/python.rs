//! A skill from another toolchain: Python via componentize-py, which
//! imports all of WASI at newer 0.2.x versions.

use crate::support::{Env, python_skill};

#[test]
fn a_python_skill_loads_and_runs() {
    let env = Env::new();
    env.install_file(python_skill(), "wordstats");
    env.config("[skills.wordstats]\nlanguage = \"en\"");
    let count = env.ok(&["tool", "wordstats.count", r#"{"text":"one two three\nfour"}"#]);
    let v: serde_json::Value = serde_json::from_str(&count).unwrap();
    assert_eq!(v["words"], 4);
    assert_eq!(v["lines"], 2);
    assert_eq!(v["language"], "en", "config settings reach the skill");
    assert!(!env.cli(&["tool", "wordstats.tally", r#"{"text":"a b"}"#]).status.success(), "kv is not granted yet");
    env.ok(&["skills", "grant", "wordstats", "--kv"]);
    env.ok(&["tool", "wordstats.tally", r#"{"text":"a b"}"#]);
    let total = env.ok(&["tool", "wordstats.tally", r#"{"text":"c d e"}"#]);
    assert!(total.contains("\"total_words\": 5"), "{total}");
}

#[test]
fn the_daemon_answers_at_once_while_a_big_component_compiles() {
    let env = Env::new();
    env.install_file(python_skill(), "wordstats");
    // A board may need minutes for the first compile; a call waits up to its timeout.
    env.config("[limits]\ntimeout_ms = 300000\n");
    let _daemon = env.daemon();
    // The socket answered before the 18 MB component was compiled.
    let list = env.list();
    let wordstats = list.iter().find(|s| s["file"].as_str().unwrap().ends_with("wordstats.wasm")).unwrap();
    assert_eq!(wordstats["status"], "compiling", "{wordstats}");
    assert!(env.ok(&["status"]).contains("1 compiling"), "status counts it");
    // A call to it waits for the compile, then runs.
    let count = env.ok(&["tool", "wordstats.count", r#"{"text":"one two three"}"#]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&count).unwrap()["words"], 3);
    let list = env.list();
    let wordstats = list.iter().find(|s| s["name"] == "wordstats").unwrap();
    assert_eq!(wordstats["status"], "needs-approval", "loaded once compiled: {wordstats}");
}
