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
    // None yet: said so on stderr, stdout stays one name a line.
    let none = env.cli(&["secrets", "list"]);
    assert!(none.status.success() && stdout(&none).is_empty(), "{}", stdout(&none));
    assert!(crate::support::stderr(&none).contains("no secrets stored yet: `wasiclaw secrets set NAME`"));
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

    // A store broken by hand says where and why, once, and what to do.
    std::fs::write(env.path().join("secrets.json"), "{\"API_TOKEN\":").unwrap();
    let broken = env.cli(&["secrets", "list"]);
    let said = String::from_utf8_lossy(&broken.stderr);
    assert!(!broken.status.success() && said.contains("secrets.json is corrupt: EOF while parsing"), "{said}");
    assert_eq!(said.matches("EOF while parsing").count(), 1, "the cause said twice: {said}");
    let doctor = env.cli(&["doctor"]);
    assert!(stdout(&doctor).contains("restore it from a backup, or remove it and set the secrets again"));
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

/// What systemd hands a service for `LoadCredentialEncrypted=`: a directory
/// with the decrypted credential.
fn credentials(key: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wasiclaw-secrets-key"), key).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sealed_store_opens_only_with_the_service_key_and_still_feeds_egress() {
    let server = Server::start().await;
    let env = Env::new();
    env.install("hostile");
    env.config(&format!("[skills.hostile]\necho_base = \"{}\"\n", server.base));
    env.cli_stdin(&["secrets", "set", "API_TOKEN"], &format!("{TOKEN}\n"));
    let key = credentials(b"32 random bytes would be here...");
    let creds = [("CREDENTIALS_DIRECTORY", key.path().to_str().unwrap()), ("WASICLAW_GATEWAY_BIND", "127.0.0.1:0")];
    let daemon = env.daemon_env(&creds);

    // The daemon sealed the plain store at start: no value left in the file.
    let file = env.path().join("secrets.json");
    let sealed = std::fs::read_to_string(&file).unwrap();
    assert!(sealed.contains("chacha20-poly1305") && !sealed.contains(TOKEN), "{sealed}");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    // The CLI has no key: it asks the daemon, which has.
    let names = || stdout(&env.cli(&["secrets", "list"]));
    assert_eq!(names(), "API_TOKEN\nWASICLAW_GATEWAY_TOKEN\n", "the daemon made its gateway token");
    let set = env.cli_stdin(&["secrets", "set", "OTHER_TOKEN"], "other-value-91\n");
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let sealed = std::fs::read_to_string(&file).unwrap();
    assert!(sealed.contains("chacha20-poly1305") && !sealed.contains("other-value-91"), "{sealed}");
    assert_eq!(names(), "API_TOKEN\nOTHER_TOKEN\nWASICLAW_GATEWAY_TOKEN\n");
    assert!(env.ok(&["open"]).starts_with("http://127.0.0.1:"), "the gateway token is read through the daemon");

    // The host still injects a sealed secret into a granted request.
    env.ok(&["skills", "approve", "hostile"]);
    env.ok(&["skills", "grant", "hostile", "--http", &format!("{}/echo/", server.base), "--secret", "API_TOKEN"]);
    let url = format!("{}/echo/{{API_TOKEN}}/me", server.base);
    env.ok(&["tool", "hostile.fetch", &serde_json::json!({ "url": url }).to_string()]);
    assert_eq!(server.seen()[0].uri, format!("/echo/{TOKEN}/me"));
    drop(daemon);

    // Without the daemon, a process without the key cannot read it, and says what to do.
    let out = env.cli(&["secrets", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("start the service"), "{out:?}");
    // Another key is told apart from damage.
    let wrong = credentials(b"another key");
    let out = env.cli_env(&["secrets", "list"], "", &[("CREDENTIALS_DIRECTORY", wrong.path().to_str().unwrap())]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("another key"), "{out:?}");
    let mut damaged: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    damaged["data"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into();
    std::fs::write(&file, damaged.to_string()).unwrap();
    let out = env.cli_env(&["secrets", "list"], "", &[("CREDENTIALS_DIRECTORY", key.path().to_str().unwrap())]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("corrupt"), "{out:?}");
}

/// The key `systemd-creds` sealed into `file`, as systemd decrypts it for the unit.
fn decrypt(file: &std::path::Path) -> tempfile::TempDir {
    let out = std::process::Command::new("systemd-creds")
        .args(["decrypt", "--name=wasiclaw-secrets-key"])
        .arg(file)
        .arg("-")
        .output()
        .expect("systemd-creds is missing: apt-get install systemd (.ci/setup does this)");
    assert!(out.status.success(), "systemd-creds decrypt: {}", String::from_utf8_lossy(&out.stderr));
    credentials(&out.stdout)
}

#[test]
fn service_install_seals_with_a_systemd_credential_and_rotate_reseals() {
    let env = Env::new();
    env.cli_stdin(&["secrets", "set", "API_TOKEN"], &format!("{TOKEN}\n"));
    let units = tempfile::tempdir().unwrap();
    let units_dir = units.path().to_str().unwrap();
    let out = env.ok(&["service", "install", "--encrypt-secrets", "--no-start", "--unit-dir", units_dir]);
    assert!(out.contains("sealed"), "{out}");
    let credential = env.path().join("secrets.key.cred");
    let unit = std::fs::read_to_string(units.path().join("wasiclaw.service")).unwrap();
    assert!(
        unit.contains(&format!("LoadCredentialEncrypted=wasiclaw-secrets-key:{}\n", credential.display())),
        "{unit}"
    );
    let file = env.path().join("secrets.json");
    assert!(!std::fs::read_to_string(&file).unwrap().contains(TOKEN));

    let list = |key: &tempfile::TempDir| {
        env.cli_env(&["secrets", "list"], "", &[("CREDENTIALS_DIRECTORY", key.path().to_str().unwrap())])
    };
    let first = decrypt(&credential);
    assert_eq!(stdout(&list(&first)), "API_TOKEN\n", "the unit's credential opens the store");

    let out = env.ok(&["secrets", "rotate"]);
    assert!(out.contains("new key"), "{out}");
    let second = decrypt(&credential);
    assert_eq!(stdout(&list(&second)), "API_TOKEN\n");
    assert!(String::from_utf8_lossy(&list(&first).stderr).contains("another key"), "the old key no longer opens it");

    // A rotation cut short after resealing (the new credential not yet in
    // place) is finished by running it again.
    std::fs::rename(&credential, credential.with_extension("cred.new")).unwrap();
    std::fs::write(&credential, b"the old credential").unwrap();
    assert!(env.ok(&["secrets", "rotate"]).contains("cut short"));
    assert_eq!(stdout(&list(&decrypt(&credential))), "API_TOKEN\n");
}
