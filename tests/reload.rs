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

/// Settling (what the daemon does once idle after work) unmaps the code
/// pages: this test binary's code, all mapped first, is mostly unmapped
/// after it, and everything the binary runs afterwards still runs.
#[test]
fn settling_unmaps_code_pages_and_nothing_breaks() {
    let exe = std::fs::read_link("/proc/self/exe").unwrap().to_string_lossy().into_owned();
    // (start, end, resident KiB) of each code mapping of this executable.
    let code = || -> Vec<(usize, usize, u64)> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut found = Vec::new();
        let mut ours = false;
        for line in smaps.lines() {
            if line.contains('-') && !line.starts_with(|c: char| c.is_ascii_uppercase()) {
                ours = line.contains(" r-xp ") && line.ends_with(&exe);
                if ours {
                    let (a, b) = line.split_whitespace().next().unwrap().split_once('-').unwrap();
                    found.push((usize::from_str_radix(a, 16).unwrap(), usize::from_str_radix(b, 16).unwrap(), 0));
                }
            } else if ours && let Some(rss) = line.strip_prefix("Rss:") {
                found.last_mut().unwrap().2 = rss.trim().trim_end_matches("kB").trim().parse().unwrap();
            }
        }
        found
    };
    let resident = || code().iter().map(|m| m.2).sum::<u64>();
    for (start, end, _) in code() {
        // SAFETY: maps the pages of a read-only mapping of this binary.
        assert_eq!(unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_POPULATE_READ) }, 0);
    }
    let before = resident();
    let total = code().iter().map(|m| (m.1 - m.0) as u64 / 1024).sum::<u64>();
    assert!(before > total * 9 / 10, "populating mapped only {before} of {total} KiB");
    assert!(wasiclaw::resident::drop_code_pages() as u64 / 1024 >= total);
    let after = resident();
    assert!(after < before / 4, "resident code went from {before} KiB to only {after} KiB");
    // The code comes back as it runs.
    assert_eq!(wasiclaw::component::short_sha("0123456789abcdef"), "0123456789ab");
}
