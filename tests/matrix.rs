//! The Matrix channel end to end against a real homeserver: Synapse on
//! loopback (installed into tests/platforms/synapse by .ci/setup). A user
//! invites the bot, writes to it, and reads the reply in the room.

use crate::fake_llm::{FakeLlm, Reply};
use crate::support::{Env, ROOT, free_port};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Synapse homeserver in a temporary directory; killed on drop.
struct Synapse {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Synapse {
    async fn start() -> Self {
        let python = std::path::Path::new(ROOT).join("tests/platforms/synapse/bin/python");
        assert!(python.exists(), "Synapse is not installed; run .ci/setup (it makes tests/platforms/synapse)");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let port = free_port();
        let limit = "{per_second: 1000, burst_count: 1000}";
        let config = format!(
            "server_name: localhost\npid_file: {d}/homeserver.pid\n\
             listeners:\n  - port: {port}\n    bind_addresses: ['127.0.0.1']\n    type: http\n    tls: false\n    \
             resources:\n      - names: [client]\n        compress: false\n\
             database:\n  name: sqlite3\n  args:\n    database: {d}/homeserver.db\n\
             media_store_path: {d}/media\nsigning_key_path: {d}/signing.key\nreport_stats: false\n\
             enable_registration: true\nenable_registration_without_verification: true\n\
             trusted_key_servers: []\nsuppress_key_server_warning: true\n\
             macaroon_secret_key: test-macaroon\nform_secret: test-form\n\
             rc_message: {limit}\nrc_registration: {limit}\n\
             rc_login: {{address: {limit}, account: {limit}, failed_attempts: {limit}}}\n\
             rc_joins: {{local: {limit}, remote: {limit}}}\n\
             rc_invites: {{per_room: {limit}, per_user: {limit}}}\n"
        );
        let cfg = dir.path().join("homeserver.yaml");
        std::fs::write(&cfg, config).unwrap();
        let keys = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "--generate-keys", "-c"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(keys.status.success(), "synapse --generate-keys: {}", String::from_utf8_lossy(&keys.stderr));
        let log = std::fs::File::create(dir.path().join("synapse.log")).unwrap();
        let child = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let hs = Synapse { child, base: format!("http://127.0.0.1:{port}"), _dir: dir, http: reqwest::Client::new() };
        let start = Instant::now();
        loop {
            let up = hs.http.get(format!("{}/_matrix/client/versions", hs.base)).send().await;
            if up.is_ok_and(|r| r.status().is_success()) {
                return hs;
            }
            let log = std::fs::read_to_string(hs._dir.path().join("synapse.log")).unwrap_or_default();
            assert!(start.elapsed() < Duration::from_secs(60), "Synapse did not start:\n{log}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Register a user; returns (user id, access token).
    async fn register(&self, name: &str) -> (String, String) {
        let body = json!({"username": name, "password": "correct horse battery", "auth": {"type": "m.login.dummy"}});
        let r: Value = self.call(reqwest::Method::POST, "register", None, body).await;
        (r["user_id"].as_str().unwrap().into(), r["access_token"].as_str().unwrap().into())
    }

    async fn call(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Value) -> Value {
        let mut req = self.http.request(method.clone(), format!("{}/_matrix/client/v3/{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if method != reqwest::Method::GET {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {status}, not JSON ({e}): {text}"));
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value
    }
}

fn enc(s: &str) -> String {
    s.replace('!', "%21").replace(':', "%3A").replace('@', "%40")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_invites_the_bot_and_gets_a_reply_in_the_room() {
    let llm = FakeLlm::start(vec![Reply::Text("Hello from **wasiclaw**")]).await;
    let hs = Synapse::start().await;
    let (bot, bot_token) = hs.register("wasiclaw").await;
    let (alice, alice_token) = hs.register("alice").await;
    let alice_token = Some(alice_token.as_str());
    let room = hs
        .call(
            reqwest::Method::POST,
            "createRoom",
            alice_token,
            json!({"preset": "private_chat", "invite": [bot], "is_direct": true}),
        )
        .await["room_id"]
        .as_str()
        .unwrap()
        .to_string();

    let settings = format!(
        "[skills.matrix]\nhomeserver = \"{}\"\npoll_timeout = \"2\"\n\n[channels.matrix]\nallow = [\"{alice}\"]\n",
        hs.base
    );
    let env = Env::with_channel("matrix", &llm.base, None, &settings, &[("MATRIX_TOKEN", &bot_token)]);
    env.ok(&[
        "skills",
        "grant",
        "matrix",
        "--http",
        &format!("{}/_matrix/client/v3/", hs.base),
        "--secret",
        "MATRIX_TOKEN",
    ]);
    let _daemon = env.daemon();

    // The bot accepts the invite.
    let start = Instant::now();
    loop {
        let members = hs
            .call(reqwest::Method::GET, &format!("rooms/{}/joined_members", enc(&room)), alice_token, json!({}))
            .await;
        if members["joined"].get(&bot).is_some() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the bot never joined: {members}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let sent = hs
        .call(
            reqwest::Method::PUT,
            &format!("rooms/{}/send/m.room.message/t1", enc(&room)),
            alice_token,
            json!({"msgtype": "m.text", "body": "hello matrix"}),
        )
        .await;
    let asked = sent["event_id"].as_str().unwrap().to_string();
    let start = Instant::now();
    let reply = loop {
        let page = hs
            .call(
                reqwest::Method::GET,
                &format!("rooms/{}/messages?dir=b&limit=20", enc(&room)),
                alice_token,
                json!({}),
            )
            .await;
        let found = page["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["sender"] == bot.as_str() && e["type"] == "m.room.message")
            .cloned();
        if let Some(ev) = found {
            break ev;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no reply from the bot");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(reply["content"]["body"], "Hello from **wasiclaw**");
    assert_eq!(reply["content"]["m.mentions"], json!({}), "a reply may ping by name or @room");
    assert_eq!(reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"], asked.as_str());
    assert!(llm.requests()[0]["messages"].to_string().contains("hello matrix"));
}
