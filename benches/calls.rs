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
//!
//! Two floors are printed beside the calls, so a reader can tell the code's
//! tail from the machine's: the p99 of fixed CPU work as long as a call's
//! p50 (a shared VM's steal and interrupts), and the p99 of the least a
//! durable commit needs from the database's disk (one 4 KiB write into
//! blocks the file already has, then fdatasync).

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
            let p50 = measure(&rt, "clock.now (no rights)", "clock", "now", r#"{"tz":"UTC"}"#).await;
            cpu_floor(p50);
        }
        if wanted("notes") {
            measure(&rt, "notes.add (kv write)", "notes", "add", r#"{"text":"benchmark note"}"#).await;
            disk_floor(state.path());
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
            let p50 =
                measure(&rt, "wordstats.count (Python)", "wordstats", "count", r#"{"text":"one two three"}"#).await;
            cpu_floor(p50);
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

/// Time `calls()` calls after the warm-up, print their figures and return the p50 in µs.
async fn measure(rt: &Runtime, label: &str, skill: &str, tool: &str, args: &str) -> f64 {
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
    let per_call = (rt.db.durable_commits() - commits) as f64 / n as f64;
    report(label, times, &format!("{per_call:.2}"))
}

/// Print p50, p99 and max of `times` (µs) under `label`; return the p50.
fn report(label: &str, mut times: Vec<f64>, last: &str) -> f64 {
    times.sort_by(f64::total_cmp);
    let n = times.len();
    println!("{label:<28} {:>9.0} {:>9.0} {:>9.0} {last:>9}", times[n / 2], times[n * 99 / 100], times[n - 1]);
    times[n / 2]
}

/// `calls()` timings of `work` after the warm-up, in µs.
fn timed(mut work: impl FnMut()) -> Vec<f64> {
    for _ in 0..WARMUP {
        work();
    }
    (0..calls())
        .map(|_| {
            let start = Instant::now();
            work();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

/// The machine's own tail: fixed CPU work (copies of 256 KiB) as long as
/// `p50` µs, timed like the calls.
fn cpu_floor(p50: f64) {
    let (from, mut to) = (vec![1u8; 256 << 10], vec![0u8; 256 << 10]);
    let mut copy = |times: usize| {
        for _ in 0..times {
            to.copy_from_slice(std::hint::black_box(&from));
        }
        std::hint::black_box(&to);
    };
    let mut one = timed(|| copy(1));
    one.sort_by(f64::total_cmp);
    let times = (p50 / one[one.len() / 2]).round().max(1.0) as usize;
    report("  floor: same CPU work", timed(|| copy(times)), "-");
}

/// The disk's own tail under a durable commit: a 4 KiB write into blocks
/// the file already has, then fdatasync, in `dir` (beside the database).
fn disk_floor(dir: &std::path::Path) {
    use std::os::unix::fs::FileExt;
    let path = dir.join("floor");
    let file = std::fs::File::create(&path).unwrap();
    file.write_all_at(&vec![0u8; 1 << 20], 0).unwrap();
    file.sync_all().unwrap();
    let mut at = 0;
    let times = timed(|| {
        file.write_all_at(&[7u8; 4096], at).unwrap();
        file.sync_data().unwrap();
        at = (at + 4096) % (1 << 20);
    });
    report("  floor: 4 KiB + fdatasync", times, "-");
    std::fs::remove_file(path).unwrap();
}
