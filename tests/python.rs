//! A skill from another toolchain: Python via componentize-py, which
//! imports all of WASI at newer 0.2.x versions.

use crate::support::{Env, python_skill, wait_for};
use std::time::Duration;

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

/// A compile takes memory in proportion to the component (about 18× its
/// size), and on a small board the kernel may kill it. It runs in a child
/// that offers itself first to the kernel's out-of-memory killer, so the
/// daemon lives on, says why, and serves the rest.
#[test]
fn a_compile_the_kernel_kills_does_not_take_the_daemon() {
    let env = Env::new();
    env.install("clock");
    env.install_file(python_skill(), "wordstats");
    let mut daemon = env.daemon();
    let parent = daemon.child.id().to_string();
    // The child compiling wordstats, once it has offered itself.
    let mut compiler = None;
    wait_for("the compiler's child process", Duration::from_secs(120), || {
        compiler = std::fs::read_dir("/proc").unwrap().filter_map(Result::ok).find_map(|e| {
            let dir = e.path();
            let status = std::fs::read_to_string(dir.join("status")).ok()?;
            let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
            let ours = status.lines().any(|l| l.split_whitespace().eq(["PPid:", parent.as_str()]));
            let compiling = String::from_utf8_lossy(&cmdline).contains("wordstats.wasm");
            let offered = std::fs::read_to_string(dir.join("oom_score_adj")).is_ok_and(|s| s.trim() == "1000");
            (ours && compiling && offered).then(|| e.file_name().to_string_lossy().parse::<i32>().unwrap())
        });
        compiler.is_some()
    });
    // What the kernel's out-of-memory killer does.
    // SAFETY: a plain kill(2) of the child found above.
    assert_eq!(unsafe { libc::kill(compiler.unwrap(), libc::SIGKILL) }, 0);
    let mut wordstats = serde_json::Value::Null;
    wait_for("wordstats to be rejected", Duration::from_secs(60), || {
        wordstats = env.list().into_iter().find(|s| s["name"] == "wordstats").unwrap_or_default();
        wordstats["status"] == "rejected"
    });
    let reason = wordstats["reason"].as_str().unwrap();
    assert!(reason.contains("the compiler was killed") && reason.contains("dmesg"), "{reason}");
    assert!(daemon.child.try_wait().unwrap().is_none(), "the daemon died with its compiler");
    env.ok(&["tool", "clock.now", "{}"]);
}
