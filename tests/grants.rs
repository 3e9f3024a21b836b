//! Grants through the CLI: requested ∩ granted, bound to the sha256, and
//! revocation.

use crate::support::{Env, Server, guest, rebuilt, stderr, stdout};

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
    assert_eq!(s["changed"].as_str().unwrap().split(" → ").count(), 2, "{s}");
    let denied = fetch("/v2/echo/{API_TOKEN}/x");
    assert!(!denied.status.success(), "the new request was inherited from the broad grant");
    assert!(stderr(&denied).contains("denied"), "{}", stderr(&denied));

    // Approving the build keeps what v1 also asked for, nothing new.
    env.ok(&["skills", "approve", "hostile"]);
    let s = status(&env, "hostile");
    assert_eq!(s["status"], "needs-approval", "the new rule still waits: {s}");
    assert!(s["changed"].is_null(), "{s}");
    assert!(!fetch("/v2/echo/{API_TOKEN}/x").status.success());
    env.ok(&["skills", "grant", "hostile", "--all-requested"]);
    assert!(fetch("/v2/echo/{API_TOKEN}/x").status.success());
    assert_eq!(server.seen().len(), 2);
}

#[test]
fn a_changed_build_carries_nothing_until_the_owner_approves_it() {
    let env = Env::new();
    env.install("notes");
    env.ok(&["skills", "grant", "notes", "--kv"]);
    // The list says what each may use, in one command.
    let listed = env.ok(&["skills", "list"]);
    assert!(
        listed.lines().any(|l| l.starts_with("notes ") && l.contains(" active ") && l.ends_with("may use kv")),
        "{listed}"
    );
    env.ok(&["tool", "notes.add", r#"{"text":"before"}"#]);
    std::fs::copy(rebuilt(&guest("notes"), "n2"), env.skills().join("notes.wasm")).unwrap();
    let s = status(&env, "notes");
    assert_eq!(s["status"], "needs-approval", "{s}");
    let listed = env.ok(&["skills", "list"]);
    assert!(listed.contains("needs-approval (changed: "), "{listed}");
    assert!(listed.contains("awaiting approval of this build: run `wasiclaw skills approve notes`"), "{listed}");
    let denied = env.cli(&["tool", "notes.list"]);
    assert!(!denied.status.success(), "a swapped build read the old build's kv");
    env.ok(&["skills", "approve", "notes"]);
    assert_eq!(status(&env, "notes")["status"], "active");
    assert!(env.ok(&["tool", "notes.list"]).contains("before"), "kv survives the approved upgrade");

    // Opting in: later builds keep their rights without asking.
    env.ok(&["skills", "approve", "notes", "--carry-over"]);
    std::fs::copy(rebuilt(&guest("notes"), "n3"), env.skills().join("notes.wasm")).unwrap();
    assert_eq!(status(&env, "notes")["status"], "active");
    assert!(env.ok(&["tool", "notes.list"]).contains("before"));
}

#[test]
fn a_second_file_claiming_an_installed_name_is_refused() {
    let env = Env::new();
    env.install("notes");
    env.ok(&["skills", "grant", "notes", "--kv"]);
    env.ok(&["tool", "notes.add", r#"{"text":"mine"}"#]);
    // Sorted before notes.wasm, so the first file read on a fresh start.
    std::fs::copy(rebuilt(&guest("notes"), "impostor"), env.skills().join("aaa-notes.wasm")).unwrap();
    let list = env.list();
    let by_file = |f: &str| list.iter().find(|s| s["file"].as_str().unwrap().ends_with(f)).unwrap().clone();
    let impostor = by_file("aaa-notes.wasm");
    assert_eq!(impostor["status"], "rejected", "{impostor}");
    assert!(impostor["reason"].as_str().unwrap().contains("already used by"), "{impostor}");
    assert_eq!(by_file("/notes.wasm")["status"], "active");
    assert!(env.ok(&["tool", "notes.list"]).contains("mine"), "the approved build still answers");
}

#[test]
fn a_running_daemon_never_lets_a_new_file_take_a_loaded_name() {
    let env = Env::new();
    env.install("clock");
    let _daemon = env.daemon();
    std::fs::copy(rebuilt(&guest("clock"), "squat"), env.skills().join("a-clock.wasm")).unwrap();
    // It is listed as compiling first (in the background), then loaded.
    crate::support::wait_for("the squatter to be compiled and scanned", std::time::Duration::from_secs(20), || {
        env.list().iter().any(|s| s["file"].as_str().unwrap().ends_with("a-clock.wasm") && s["status"] != "compiling")
    });
    let list = env.list();
    let squatter = list.iter().find(|s| s["file"].as_str().unwrap().ends_with("a-clock.wasm")).unwrap();
    assert_eq!(squatter["status"], "rejected", "{squatter}");
    let held = list.iter().find(|s| s["file"].as_str().unwrap().ends_with("/clock.wasm")).unwrap();
    assert_eq!(held["name"], "clock");
}

#[test]
fn the_hosts_own_secrets_are_never_granted() {
    let env = Env::new();
    env.install("hostile");
    env.config("[[providers]]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\napi_key_secret = \"SIGNING_KEY\"\n");
    let refused = env.cli(&["skills", "grant", "hostile", "--secret", "SIGNING_KEY"]);
    assert!(!refused.status.success() && stderr(&refused).contains("host's own secrets"), "{}", stderr(&refused));
    env.ok(&["skills", "grant", "hostile", "--all-requested"]);
    let s = status(&env, "hostile");
    let granted: Vec<String> = serde_json::from_value(s["granted"]["secrets"].clone()).unwrap();
    assert!(!granted.contains(&"SIGNING_KEY".to_string()), "{granted:?}");
    assert!(s["pending"].to_string().contains("the host's own secret"), "{s}");
    let hmac = env.cli(&["tool", "hostile.hmac", r#"{"secret":"SIGNING_KEY"}"#]);
    assert!(!hmac.status.success(), "a provider key answered an HMAC");
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

/// Searching the owner's memory and reaching any host are each the owner's
/// call, but together they let a component send what it reads anywhere,
/// unasked: a grant that puts them together says so; named hosts do not.
#[test]
fn a_grant_of_memory_and_any_host_says_what_they_allow_together() {
    let env = Env::new();
    let reader = r#"const manifest = {
  name: "reader",
  description: "Reads the owner's memory and the web",
  tools: [{ name: "look", description: "Look", parameters: { type: "object", properties: {} } }],
  capabilities: { http: [{ url: "https://*/", methods: ["GET"] }], memory_read: true },
};
function look() { return "ok"; }
"#;
    std::fs::write(env.skills().join("reader.js"), reader).unwrap();
    let named = env.cli(&["skills", "grant", "reader", "--memory-read", "--http", "https://api.example.com/"]);
    assert!(named.status.success(), "{}", stderr(&named));
    assert!(!stderr(&named).contains("could go anywhere"), "{}", stderr(&named));
    let any = env.cli(&["skills", "grant", "reader", "--http", "https://*/"]);
    assert!(any.status.success(), "{}", stderr(&any));
    assert!(stderr(&any).contains("search your long-term memory and reach hosts you did not name"), "{}", stderr(&any));
}

/// The owner's terminal and web conversations are `terminal:NAME` and
/// `web:NAME`, and a conversation or a job's target `CHANNEL:CHAT` is found
/// by its channel's name. A channel calling itself `terminal` was loaded
/// (waiting for approval) and every job reporting to `terminal:default`,
/// the default, went into its outbox instead of to the owner; approved,
/// it would have been handed the owner's terminal conversation too.
#[test]
fn a_component_cannot_take_the_name_of_the_hosts_own_conversations() {
    let env = Env::new();
    env.install("clock");
    env.install_file(&guest("impostor-channel"), "terminal");
    env.ok(&["skills", "approve", "clock"]);
    env.ok(&["cron", "add", "every 1h", "--tool", "clock.now"]);
    let ran = env.ok(&["cron", "run-now", "1"]);
    assert!(ran.contains("ok"), "{ran}");
    let outbox = env.ok(&["outbox"]);
    assert!(!outbox.contains("terminal"), "a job's result waits for the impostor: {outbox}");
    let told = env.ok(&["notifications"]);
    assert!(told.contains("→ terminal:default") && told.contains("UTC"), "{told}");
    let list = env.list();
    let impostor = list.iter().find(|s| s["name"] == "terminal").unwrap_or_else(|| panic!("{list:?}"));
    assert_eq!(impostor["status"], "rejected", "{impostor}");
    assert!(impostor["reason"].as_str().unwrap().contains("the host's own"), "{impostor}");
    let approve = env.cli(&["skills", "approve", "terminal"]);
    assert!(!approve.status.success(), "{}", stdout(&approve));
}

/// `skills remove` takes a component away with its rights: its grant and
/// the owner's "always" answers go, so the name added again (by anyone)
/// asks again. What it stored stays unless `--erase`, which takes its kv,
/// the memories it saved and its files directory.
#[test]
fn removing_a_component_takes_its_rights_and_erase_what_it_stored() {
    let env = Env::new();
    let file = env.install("hostile");
    env.install("clock");
    {
        let rt = wasiclaw::runtime::Runtime::open(env.paths()).unwrap();
        rt.db.approve_always("hostile.fetch").unwrap();
        rt.db.approve_always("clock.now").unwrap();
    }
    // Through a running daemon, which keeps grants in memory.
    let _daemon = env.daemon();
    env.ok(&["skills", "grant", "hostile", "--kv", "--memory-write", "--files"]);
    env.ok(&["tool", "hostile.kv-write", "{}"]);
    env.ok(&["tool", "hostile.remember", r#"{"text":"hostile was here"}"#]);
    env.ok(&["tool", "hostile.write-file", r#"{"path":"/data/note","text":"left behind"}"#]);
    env.ok(&["cron", "add", "every 1h", "--tool", "hostile.kv-write"]);

    let out = env.ok(&["skills", "remove", "hostile"]);
    for said in [
        "removed hostile",
        "its grant and 1 \"always\" answer(s) are gone",
        "kept what it stored: 1 kv key(s) (1 KiB), 1 memory(ies), 4 KiB of files",
        "job(s) 1 call its tools",
    ] {
        assert!(out.contains(said), "{said:?} missing:\n{out}");
    }
    assert!(!file.exists());
    assert!(env.list().iter().all(|s| s["name"] != "hostile"));
    let always = env.ok(&["approvals", "list"]);
    assert!(always.contains("clock.now") && !always.contains("hostile"), "{always}");
    assert!(env.ok(&["memory", "list"]).contains("hostile was here"), "kept without --erase");

    // Added again, it asks again.
    env.install("hostile");
    crate::support::wait_for("the daemon to load it again", std::time::Duration::from_secs(20), || {
        env.list().iter().any(|s| s["name"] == "hostile" && s["status"] != "compiling")
    });
    let back = env.list().into_iter().find(|s| s["name"] == "hostile").unwrap();
    assert_eq!((&back["status"], &back["granted"]), (&serde_json::json!("needs-approval"), &serde_json::Value::Null));

    let out = env.ok(&["skills", "remove", "hostile", "--erase"]);
    assert!(out.contains("erased what it stored: 1 kv key(s) (1 KiB), 1 memory(ies), 4 KiB of files"), "{out}");
    assert!(!env.ok(&["memory", "list"]).contains("hostile was here"));
    assert!(!env.paths().files_dir("hostile").exists());
    let again = env.cli(&["skills", "remove", "hostile"]);
    assert_eq!(again.status.code(), Some(3), "nothing left, nothing to remove: {}", stderr(&again));
    // A name is a path under files/: only a component's name is taken.
    let outside = env.cli(&["skills", "remove", "../skills", "--erase"]);
    assert_eq!(outside.status.code(), Some(2), "{}", stderr(&outside));
    assert!(env.skills().join("clock.wasm").exists());
    assert!(env.list().iter().any(|s| s["name"] == "clock"));
}

/// Being served through a channel is a right given through that
/// component: removed, its people are unpaired, so a component added again
/// under its name (whoever wrote it) starts with nobody; what it carried
/// (conversations, waiting messages) goes with `--erase`. Other channels'
/// and the host's own are untouched, and the host's names are not taken.
#[test]
fn removing_a_channel_unpairs_its_people_and_erase_takes_its_chats() {
    use wasiclaw::pairing::Verdict;
    let env = Env::new();
    env.install("webhook");
    let cfg = wasiclaw::config::ChannelConfig::default();
    {
        let rt = wasiclaw::runtime::Runtime::open(env.paths()).unwrap();
        for (channel, sender) in [("webhook", "alice"), ("telegram", "bob")] {
            let Verdict::SendCode(code) = rt.db.pairing_check(channel, sender, sender, "c1", false, &cfg).unwrap()
            else {
                panic!("no code for {sender}")
            };
            rt.db.pairing_approve(&code, false).unwrap().unwrap();
        }
        let session = wasiclaw::session::Session { summary: Some("what was said".into()), ..Default::default() };
        for key in ["webhook:c1", "webhook:c2", "telegram:c1", "terminal:default"] {
            rt.db.save_session(key, &session, &Default::default(), None).unwrap();
        }
        rt.db.outbox_enqueue("webhook", "c1", "a reply waiting").unwrap();
        rt.db.outbox_enqueue("telegram", "c1", "another channel's").unwrap();
    }
    env.ok(&["cron", "add", "every 1h", "--prompt", "report", "--chat", "webhook:c1"]);
    let _daemon = env.daemon();
    let host = env.cli(&["skills", "remove", "terminal", "--erase"]);
    assert_eq!(host.status.code(), Some(2), "{}", stderr(&host));

    let out = env.ok(&["skills", "remove", "webhook"]);
    for said in [
        "1 person(s) paired through it are unpaired",
        "kept what it stored: 0 kv key(s) (0 KiB), 0 memory(ies), 0 KiB of files, 2 conversation(s), 1 message(s) waiting",
        "job(s) 1 report to its chats: to your notifications",
    ] {
        assert!(out.contains(said), "{said:?} missing:\n{out}");
    }
    let pairings = env.ok(&["pairing", "list"]);
    assert!(!pairings.contains("alice") && pairings.contains("telegram:bob"), "{pairings}");
    assert!(env.ok(&["outbox"]).contains("a reply waiting"), "kept without --erase");

    let out = env.ok(&["skills", "remove", "webhook", "--erase"]);
    assert!(out.contains("erased what it stored: 0 kv key(s) (0 KiB), 0 memory(ies), 0 KiB of files, 2 conversation(s), 1 message(s) waiting"), "{out}");
    let outbox = env.ok(&["outbox"]);
    assert!(!outbox.contains("a reply waiting") && outbox.contains("another channel's"), "{outbox}");
    drop(_daemon);
    let rt = wasiclaw::runtime::Runtime::open(env.paths()).unwrap();
    for (key, kept) in [("webhook:c1", false), ("webhook:c2", false), ("telegram:c1", true), ("terminal:default", true)]
    {
        assert_eq!(rt.db.session(key).unwrap().summary.is_some(), kept, "{key}");
    }
}
