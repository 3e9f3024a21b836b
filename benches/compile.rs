//! Compile benchmark (issue 13, point 7): for a small Rust skill (`clock`)
//! and the 18 MB Python example (`wordstats`, componentize-py), the time to
//! compile it, the process's peak memory while compiling, the size of the
//! compiled code, and the host's time for a call into the result, for each
//! compiler (Cranelift; Winch when built with `--features winch`) with
//! parallel compilation on and off. Each configuration runs in its own
//! child process so every peak is its own. Run with `just bench` or
//! `cargo bench --bench compile [--features winch]`; prints figures only.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;
use wasiclaw::config::Paths;
use wasiclaw::grants::{GrantChange, GrantSet, Rights};
use wasiclaw::runtime::Runtime;

const CALLS: usize = 300;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, compiler, parallel, wasm, skill, tool, input] = &args[..]
        && flag == "--child"
    {
        return child(compiler, parallel == "on", Path::new(wasm), skill, tool, input);
    }
    let dir = tempfile::tempdir().unwrap();
    let clock = common::guests().join("clock.wasm");
    let python = dir.path().join("wordstats.wasm");
    let mut components = vec![(clock, "clock", "now", r#"{"tz":"UTC"}"#)];
    if common::python_skill(&python) {
        components.push((python, "wordstats", "count", r#"{"text":"one two three"}"#));
    } else {
        println!("wordstats (Python): not measured, componentize-py is not installed");
    }
    let compilers: &[&str] = if cfg!(feature = "winch") { &["cranelift", "winch"] } else { &["cranelift"] };
    println!("compiling on {} cores; calls: p50/p99 of {CALLS}", std::thread::available_parallelism().unwrap());
    println!(
        "{:<10} {:>8} {:<9} {:<8} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "component", "MB", "compiler", "parallel", "compile ms", "peak MiB", "code MiB", "call p50", "call p99"
    );
    for (wasm, skill, tool, input) in &components {
        for compiler in compilers {
            for parallel in ["on", "off"] {
                let out = Command::new(std::env::current_exe().unwrap())
                    .args(["--child", compiler, parallel])
                    .arg(wasm)
                    .args([skill, tool, input])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                let size = std::fs::metadata(wasm).unwrap().len() as f64 / 1e6;
                let figures = String::from_utf8_lossy(&out.stdout);
                println!("{skill:<10} {size:>8.1} {compiler:<9} {parallel:<8} {}", figures.trim());
            }
        }
    }
    if !cfg!(feature = "winch") {
        println!("winch: not measured; run `cargo bench --bench compile --features winch`");
    }
}

/// Compile `wasm` as the daemon would under `[compile]`, then call it.
fn child(compiler: &str, parallel: bool, wasm: &Path, skill: &str, tool: &str, input: &str) {
    let state = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(state.path().join("skills")).unwrap();
    std::fs::write(
        state.path().join("config.toml"),
        format!("[compile]\ncompiler = \"{compiler}\"\nparallel = {parallel}\n"),
    )
    .unwrap();
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    tokio.block_on(async {
        let rt = Runtime::open(Paths { state_dir: state.path().to_path_buf() }).unwrap();
        let bytes = std::fs::read(wasm).unwrap();
        let sha = wasiclaw::component::sha256_hex(&bytes);
        // The peak is measured from here: writing 5 to clear_refs resets it.
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
        let start = Instant::now();
        rt.engine.compile(wasm, Some(&bytes), &sha).unwrap();
        let compile_ms = start.elapsed().as_secs_f64() * 1e3;
        let peak = status_kib("VmHWM") as f64 / 1024.0;
        let code = std::fs::metadata(rt.engine.artifact(&sha, "cwasm")).unwrap().len() as f64 / (1 << 20) as f64;
        std::fs::copy(wasm, state.path().join("skills").join(wasm.file_name().unwrap())).unwrap();
        rt.rescan().await;
        let kv = GrantSet { rights: Rights::KV, ..Default::default() };
        let _ = rt.change_grant(skill, &GrantChange { rights: kv, all: false, carry_over: None }, false);
        let mut times = Vec::with_capacity(CALLS);
        for i in 0..CALLS + 30 {
            let start = Instant::now();
            let out = rt.call_tool(skill, tool, input).await.unwrap();
            assert!(out.ok, "{}", out.output);
            if i >= 30 {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{compile_ms:>10.0} {peak:>10.0} {code:>10.1} {:>7.2}ms {:>7.2}ms",
            times[CALLS / 2],
            times[CALLS * 99 / 100]
        );
    });
}

/// A `VmXXX` figure of this process, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
