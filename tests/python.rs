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
