//! Grants through the CLI: requested ∩ granted, bound to the sha256, and
//! revocation.

use crate::support::{Env, Server, guest, rebuilt, stderr};

fn status(env: &Env, name: &str) -> serde_json::Value {
    env.list().into_iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("{name} not listed"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_component_keeps_old_rights_but_inherits_nothing_new() {
    let server = Server::start().await;
    let env = Env::new();
    env.install("hostile");
    env.config(&format!("[skills.hostile]\necho_base = \"{}\"", server.base));
    env.cli_stdin(&["secrets", "set", "API_TOKEN"], "tok");
    // A broad grant: the whole loopback server.
    env.ok(&["skills", "grant", "hostile", "--http", &format!("{}/", server.base), "--secret", "API_TOKEN"]);
    let fetch = |path: &str| {
        let args = serde_json::json!({"url": format!("{}{path}", server.base)}).to_string();
        env.cli(&["tool", "hostile.fetch", &args])
    };
    assert!(fetch("/echo/{API_TOKEN}/v1").status.success());

    // Version 2: new sha256, and it asks for a new path the broad grant covers.
    let v2 = rebuilt(&guest("hostile"), "v2");
    std::fs::copy(&v2, env.skills().join("hostile.wasm")).unwrap();
    env.config(&format!("[skills.hostile]\necho_base = \"{}/v2\"", server.base));
    let s = status(&env, "hostile");
    assert_eq!(s["status"], "needs-approval");
    assert_ne!(s["sha256"], s["granted_sha256"]);
    let pending: Vec<String> = serde_json::from_value(s["pending"].clone()).unwrap();
    assert!(pending.iter().any(|p| p.contains("/v2/echo/{API_TOKEN}/")), "{pending:?}");
    let denied = fetch("/v2/echo/{API_TOKEN}/x");
    assert!(!denied.status.success(), "the new request was inherited from the broad grant");
    assert!(stderr(&denied).contains("denied"), "{}", stderr(&denied));

    env.ok(&["skills", "grant", "hostile", "--all-requested"]);
    assert!(fetch("/v2/echo/{API_TOKEN}/x").status.success());
    assert_eq!(server.seen().len(), 2);
}

#[test]
fn unchanged_requests_carry_over_to_a_new_build() {
    let env = Env::new();
    env.install("notes");
    env.ok(&["skills", "grant", "notes", "--kv"]);
    env.ok(&["tool", "notes.add", r#"{"text":"before"}"#]);
    std::fs::copy(rebuilt(&guest("notes"), "n2"), env.skills().join("notes.wasm")).unwrap();
    let s = status(&env, "notes");
    assert_eq!(s["status"], "active", "{s}");
    assert!(env.ok(&["tool", "notes.list"]).contains("before"), "kv survives the upgrade");
}

#[test]
fn revoke_takes_rights_back() {
    let env = Env::new();
    env.install("notes");
    let denied = env.cli(&["tool", "notes.add", r#"{"text":"x"}"#]);
    assert!(stderr(&denied).contains("wasiclaw skills grant notes --kv"), "{}", stderr(&denied));
    env.ok(&["skills", "grant", "notes", "--kv"]);
    env.ok(&["tool", "notes.add", r#"{"text":"x"}"#]);
    env.ok(&["skills", "revoke", "notes", "--kv"]);
    assert!(!env.cli(&["tool", "notes.add", r#"{"text":"y"}"#]).status.success());
    assert_eq!(status(&env, "notes")["status"], "needs-approval");
    let nothing = env.cli(&["skills", "grant", "notes"]);
    assert!(!nothing.status.success() && stderr(&nothing).contains("nothing to grant"));
    let unasked = env.cli(&["skills", "grant", "notes", "--notify"]);
    assert!(stderr(&unasked).contains("does not ask for notify"), "{}", stderr(&unasked));
}
