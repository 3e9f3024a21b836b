//! The hostile fixture attacks its sandbox; each attack must be contained,
//! and the daemon must keep serving afterwards.

use crate::egress::hostile;
use crate::support::{Env, Server, call, stderr, stdout};

#[tokio::test(flavor = "multi_thread")]
async fn infinite_loop_and_memory_bomb_are_stopped() {
    let (_env, rt) = hostile("http://127.0.0.1:9", "[limits]\ncpu_ms = 300\nmemory_mb = 32").await;
    let spin = call(&rt, "hostile.spin", "{}").await;
    assert_eq!(spin.error_kind.as_deref(), Some("cpu"), "{spin:?}");
    let bomb = call(&rt, "hostile.bomb", "{}").await;
    assert_eq!(bomb.error_kind.as_deref(), Some("memory"), "{bomb:?}");
    let flood = call(&rt, "hostile.flood", "{}").await;
    assert_eq!(flood.error_kind.as_deref(), Some("output"), "{:?}", flood.error_kind);
}

#[tokio::test(flavor = "multi_thread")]
async fn host_files_sockets_env_and_ungranted_imports_are_out_of_reach() {
    let server = Server::start().await;
    let (env, rt) = hostile(&server.base, "").await;
    for path in ["/etc/passwd", &env.path().join("secrets.json").display().to_string(), "/data/x", "."] {
        let out = call(&rt, "hostile.read-file", &serde_json::json!({"path": path}).to_string()).await;
        assert!(!out.ok, "read {path}: {}", out.output);
        assert!(!out.output.contains("root:") && !out.output.contains("tok-"), "{}", out.output);
    }
    let connect =
        call(&rt, "hostile.connect", &serde_json::json!({"addr": format!("127.0.0.1:{}", server.port)}).to_string())
            .await;
    assert!(!connect.ok, "{}", connect.output);
    assert!(server.seen().is_empty());
    let env_out = call(&rt, "hostile.env", "{}").await;
    assert_eq!(env_out.output, r#"{"args":[],"vars":[]}"#);
    let kv = call(&rt, "hostile.kv-write", "{}").await;
    assert!(kv.output.contains("kv not granted"), "{}", kv.output);
    let notify = call(&rt, "hostile.notify", "{}").await;
    assert_eq!(notify.error_kind.as_deref(), Some("denied"));
    assert!(rt.notifications(10).unwrap().is_empty());
}

#[test]
fn bad_components_are_rejected_with_reasons() {
    let env = Env::new();
    env.install("future-skill");
    std::fs::write(env.skills().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(env.skills().join("junk.wasm"), b"#!/bin/sh\necho hi\n").unwrap();
    env.install("clock");
    let list = env.list();
    let reason = |name: &str| {
        let s = list.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("{name} not listed: {list:?}"));
        assert_eq!(s["status"], "rejected");
        s["reason"].as_str().unwrap().to_string()
    };
    let future = reason("future-skill");
    assert!(future.contains("wasiclaw:plugin@2.0.0") && future.contains("wasiclaw:plugin@0.1.0"), "{future}");
    assert!(reason("core").contains("core WebAssembly module, not a component"));
    assert!(reason("junk").contains("not a WebAssembly file"));
    assert_eq!(list.iter().find(|s| s["name"] == "clock").unwrap()["status"], "active");
    let run = env.cli(&["tool", "future-skill.describe"]);
    assert!(!run.status.success() && stderr(&run).contains("rejected"), "{}", stderr(&run));
}

#[test]
fn the_daemon_survives_every_attack() {
    let env = Env::new();
    env.install("hostile");
    env.install("clock");
    env.config("[limits]\ncpu_ms = 300\nmemory_mb = 32");
    let _daemon = env.daemon();
    for tool in ["spin", "bomb", "flood", "kv-write"] {
        let out = env.cli(&["tool", &format!("hostile.{tool}")]);
        assert!(!out.status.success(), "hostile.{tool} succeeded: {}", stdout(&out));
    }
    let now = env.cli(&["tool", "clock.now"]);
    assert!(now.status.success() && stdout(&now).contains("\"tz\":\"UTC\""), "{}", stderr(&now));
    assert!(env.ok(&["status"]).contains("daemon running"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_files_grant_opens_one_private_directory_and_nothing_else() {
    let (env, rt) = hostile("http://127.0.0.1:9", "").await;
    let write = |path: &str| serde_json::json!({"path": path, "text": "hello"}).to_string();
    assert!(!call(&rt, "hostile.write-file", &write("/data/note.txt")).await.ok, "no grant, no directory");
    let files = wasiclaw::grants::GrantSet { files: true, ..Default::default() };
    rt.change_grant("hostile", &wasiclaw::grants::GrantChange { rights: files, all: false }, false).unwrap();
    let out = call(&rt, "hostile.write-file", &write("/data/note.txt")).await;
    assert!(out.ok, "{}", out.output);
    assert_eq!(std::fs::read_to_string(env.path().join("files/hostile/note.txt")).unwrap(), "hello");
    let back = call(&rt, "hostile.read-file", r#"{"path":"/data/note.txt"}"#).await;
    assert_eq!(back.output, "hello");
    for escape in ["/data/../secrets.json", "/etc/passwd", "/data/../../secrets.json"] {
        let out = call(&rt, "hostile.read-file", &serde_json::json!({"path": escape}).to_string()).await;
        assert!(!out.ok, "read {escape}: {}", out.output);
    }
    assert!(!call(&rt, "hostile.write-file", &write("/tmp/x")).await.ok);
}
