//! Tool-call benchmark: the host's time for one call (a fresh sandbox, the
//! call, its result and its one commit), measured in-process through
//! `Runtime::call_tool`, for a skill that uses no right (`clock.now`), a kv
//! write (`notes.add`: one read, two writes) and, when componentize-py is
//! installed, the 18 MB Python example (`wordstats.count`). The kv write
//! is timed again with the database on tmpfs (`/dev/shm`), where its one
//! fsync costs nothing: the host's own share of the call. Run with
//! `just bench` (or `cargo bench --bench calls [-- SKILL]` for one skill);
//! prints figures only. `CALLS=N` times N calls instead of 3,000 (e.g.
//! for a profile of the call path alone).

mod common;

use std::time::Instant;
use wasiclaw::config::Paths;
use wasiclaw::grants::{GrantChange, GrantSet, Rights};
use wasiclaw::runtime::Runtime;

const WARMUP: usize = 200;
fn calls() -> usize {
    std::env::var("CALLS").ok().and_then(|n| n.parse().ok()).unwrap_or(3000)
}

fn main() {
    let built = common::guests();
    let state = tempfile::tempdir().unwrap();
    let skills = state.path().join("skills");
    std::fs::create_dir_all(&skills).unwrap();
    for name in ["clock", "notes"] {
        std::fs::copy(built.join(format!("{name}.wasm")), skills.join(format!("{name}.wasm"))).unwrap();
    }
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |skill: &str| only.as_deref().is_none_or(|o| o == skill);
    let python = wanted("wordstats") && common::python_skill(&skills.join("wordstats.wasm"));
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    tokio.block_on(async {
        let rt = runtime(state.path()).await;
        println!("tool calls in the host ({} after {WARMUP} warm-up calls each)", calls());
        println!("{:<28} {:>9} {:>9} {:>9} {:>9}", "call", "p50 µs", "p99 µs", "max µs", "commits");
        if wanted("clock") {
            measure(&rt, "clock.now (no rights)", "clock", "now", r#"{"tz":"UTC"}"#).await;
        }
        if wanted("notes") {
            measure(&rt, "notes.add (kv write)", "notes", "add", r#"{"text":"benchmark note"}"#).await;
        }
        let tmpfs = std::path::Path::new("/dev/shm");
        if wanted("notes") && tmpfs.is_dir() {
            let memory = tempfile::tempdir_in(tmpfs).unwrap();
            std::fs::create_dir_all(memory.path().join("skills")).unwrap();
            std::fs::copy(skills.join("notes.wasm"), memory.path().join("skills/notes.wasm")).unwrap();
            let rt = runtime(memory.path()).await;
            measure(&rt, "notes.add, database on tmpfs", "notes", "add", r#"{"text":"benchmark note"}"#).await;
        }
        if python {
            measure(&rt, "wordstats.count (Python)", "wordstats", "count", r#"{"text":"one two three"}"#).await;
        } else if wanted("wordstats") {
            println!("wordstats.count (Python): not measured, componentize-py is not installed");
        }
    });
}

/// A runtime on `state` with its skills loaded and kv granted to the two that use it.
async fn runtime(state: &std::path::Path) -> Runtime {
    let rt = Runtime::open(Paths { state_dir: state.to_path_buf() }).unwrap();
    rt.rescan().await;
    for skill in ["notes", "wordstats"] {
        let kv = GrantSet { rights: Rights::KV, ..Default::default() };
        let _ = rt.change_grant(skill, &GrantChange { rights: kv, all: false, carry_over: None }, false);
    }
    rt
}

async fn measure(rt: &Runtime, label: &str, skill: &str, tool: &str, args: &str) {
    for _ in 0..WARMUP {
        assert!(rt.call_tool(skill, tool, args).await.unwrap().ok);
    }
    let commits = rt.db.durable_commits();
    let n = calls();
    let mut times: Vec<f64> = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let out = rt.call_tool(skill, tool, args).await.unwrap();
        times.push(start.elapsed().as_secs_f64() * 1e6);
        assert!(out.ok, "{label}: {}", out.output);
    }
    times.sort_by(f64::total_cmp);
    let per_call = (rt.db.durable_commits() - commits) as f64 / n as f64;
    println!("{label:<28} {:>9.0} {:>9.0} {:>9.0} {:>9.2}", times[n / 2], times[n * 99 / 100], times[n - 1], per_call);
}
