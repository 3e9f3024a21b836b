//! Secrets: injected by the host into granted requests only, never visible
//! to the component, stored 0600 and never listed by value.

use crate::egress::{grant, hostile};
use crate::support::{Env, Server, call, stdout};
use hmac::{Hmac, Mac};
use std::os::unix::fs::PermissionsExt;

const TOKEN: &str = "tok-3f9a1c77";

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_reaches_the_server_but_never_the_guest() {
    let server = Server::start().await;
    let (_env, rt) = hostile(&server.base, "").await;
    grant(&rt, "hostile", &[&format!("{}/echo/", server.base)], &["API_TOKEN"]);
    let args = serde_json::json!({"url": format!("{}/echo/{{API_TOKEN}}/me", server.base)}).to_string();
    let out = call(&rt, "hostile.fetch", &args).await;
    assert!(out.ok, "{}", out.output);
    let seen = &server.seen()[0];
    assert_eq!(seen.uri, format!("/echo/{TOKEN}/me"), "the host substitutes the secret into the URL");
    let header = |name: &str| seen.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(header("x-api-key").as_deref(), Some(TOKEN), "the host sets the rule's header");
    assert_eq!(header("x-guest").as_deref(), Some("{API_TOKEN}"), "headers the guest sets are never substituted");
    assert!(!out.output.contains(TOKEN), "the echoed secret reached the guest: {}", out.output);
    assert!(out.output.contains("[REDACTED]"), "{}", out.output);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_must_be_granted_and_set() {
    let server = Server::start().await;
    let (_env, rt) = hostile(&server.base, "").await;
    grant(&rt, "hostile", &[&format!("{}/echo/", server.base)], &[]);
    let args = serde_json::json!({"url": format!("{}/echo/{{API_TOKEN}}/me", server.base)}).to_string();
    let out = call(&rt, "hostile.fetch", &args).await;
    assert!(out.denials[0].contains("secret API_TOKEN is not granted"), "{:?}", out.denials);
    grant(&rt, "hostile", &[], &["API_TOKEN"]);
    rt.secrets.remove("API_TOKEN").unwrap();
    let out = call(&rt, "hostile.fetch", &args).await;
    assert!(out.denials[0].contains("wasiclaw secrets set API_TOKEN"), "{:?}", out.denials);
    assert!(server.seen().is_empty());
}

#[test]
fn the_store_is_private_and_lists_names_only() {
    let env = Env::new();
    let set = env.cli_stdin(&["secrets", "set", "API_TOKEN"], &format!("{TOKEN}\n"));
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let mode = std::fs::metadata(env.path().join("secrets.json")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    env.ok(&["skills", "list"]);
    let dir_mode = std::fs::metadata(env.path()).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700, "the state dir is the owner's alone");
    let list = stdout(&env.cli(&["secrets", "list"]));
    assert_eq!(list, "API_TOKEN\n");
    let config_and_db: Vec<u8> = ["config.toml", "wasiclaw.redb"]
        .iter()
        .flat_map(|f| std::fs::read(env.path().join(f)).unwrap_or_default())
        .collect();
    assert!(!String::from_utf8_lossy(&config_and_db).contains(TOKEN));
    let bad = env.cli_stdin(&["secrets", "set", "lower-case"], "x");
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("not a valid secret name"));
}

#[tokio::test(flavor = "multi_thread")]
async fn hmac_uses_a_granted_secret_without_revealing_it() {
    let (_env, rt) = hostile("http://127.0.0.1:9", "").await;
    rt.secrets.set("SIGNING_KEY", "k3y").unwrap();
    let denied = call(&rt, "hostile.hmac", r#"{"secret":"SIGNING_KEY"}"#).await;
    assert_eq!(denied.error_kind, Some(wasiclaw::runtime::Failure::Denied));
    grant(&rt, "hostile", &[], &["SIGNING_KEY"]);
    let ok = call(&rt, "hostile.hmac", r#"{"secret":"SIGNING_KEY"}"#).await;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"k3y").unwrap();
    mac.update(b"data");
    assert_eq!(ok.output, hex::encode(mac.finalize().into_bytes()));
    // A secret it never asked for stays out of reach even if it exists.
    let other = call(&rt, "hostile.hmac", r#"{"secret":"API_TOKEN"}"#).await;
    assert_eq!(other.error_kind, Some(wasiclaw::runtime::Failure::Denied));
}

#[test]
fn writers_racing_on_the_store_lose_nothing() {
    // A daemon and CLI commands may write the store at once: the first
    // start creating the gateway token while `wasiclaw open` does too.
    let env = Env::new();
    let (opens, sets): (Vec<_>, Vec<_>) = std::thread::scope(|s| {
        let opens: Vec<_> = (0..6).map(|_| s.spawn(|| env.cli(&["open"]))).collect();
        let sets: Vec<_> = (0..6)
            .map(|i| {
                let env = &env;
                s.spawn(move || env.cli_stdin(&["secrets", "set", &format!("KEY_{i}")], &format!("value-{i}\n")))
            })
            .collect();
        (opens.into_iter().map(|h| h.join().unwrap()).collect(), sets.into_iter().map(|h| h.join().unwrap()).collect())
    });
    for out in opens.iter().chain(&sets) {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let urls: std::collections::BTreeSet<String> = opens.iter().map(stdout).collect();
    assert_eq!(urls.len(), 1, "every `open` must print the one token that was stored: {urls:?}");
    let names = stdout(&env.cli(&["secrets", "list"]));
    let expected = "KEY_0\nKEY_1\nKEY_2\nKEY_3\nKEY_4\nKEY_5\nWASICLAW_GATEWAY_TOKEN\n";
    assert_eq!(names, expected, "a concurrent write was lost");
    let token = urls.first().unwrap().rsplit("token=").next().unwrap().trim().to_string();
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path().join("secrets.json")).unwrap()).unwrap();
    assert_eq!(stored["WASICLAW_GATEWAY_TOKEN"], token.as_str());
}
