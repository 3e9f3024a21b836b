//! Webhook channels through the daemon's gateway (`/hooks/<channel>/`):
//! Slack and WhatsApp with payloads and signing schemes from their
//! documentation (bad signatures, stale and replayed events), and the
//! generic JSON webhook. Platform APIs are loopback recorders.

use crate::fake_llm::{FakeLlm, Reply};
use crate::support::{Daemon, Env, Recorder, free_port};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use std::time::Duration;

fn sign(secret: &str, data: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

struct Hooked {
    env: Env,
    _daemon: Daemon,
    base: String,
    http: reqwest::Client,
}

/// A daemon with `channel` installed, configured and granted.
fn start(channel: &str, llm: &FakeLlm, settings: &str, secrets: &[(&str, &str)], grant: &[&str]) -> Hooked {
    let port = free_port();
    let env = Env::with_channel(channel, &llm.base, Some(port), settings, secrets);
    let mut args = vec!["skills", "grant", channel];
    args.extend_from_slice(grant);
    env.ok(&args);
    let daemon = env.daemon();
    Hooked {
        env,
        _daemon: daemon,
        base: format!("http://127.0.0.1:{port}/hooks/{channel}"),
        http: reqwest::Client::new(),
    }
}

impl Hooked {
    async fn post(&self, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
        let mut req = self.http.post(format!("{}{path}", self.base)).body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

fn slack_headers(ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let mut signed = format!("v0:{ts}:").into_bytes();
    signed.extend_from_slice(body);
    vec![
        ("x-slack-request-timestamp", ts.to_string()),
        ("x-slack-signature", format!("v0={}", sign(SLACK_SECRET, &signed))),
        ("content-type", "application/json".into()),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn slack_events_are_verified_answered_once_and_replied_in_mrkdwn() {
    let llm = FakeLlm::start(vec![Reply::Text("**Three** cats & a <dog>"), Reply::Text("second")]).await;
    let api = Recorder::start(json!({"ok": true, "channel": "C024BE91L", "ts": "1525215130.000200"})).await;
    let hook = start(
        "slack",
        &llm,
        &format!("[skills.slack]\napi_base = \"{}/api\"\n\n[channels.slack]\nallow = [\"U061F7AUR\"]\n", api.base),
        &[("SLACK_SIGNING_SECRET", SLACK_SECRET), ("SLACK_BOT_TOKEN", "xoxb-test-token")],
        &["--http", &format!("{}/api/", api.base), "--secret", "SLACK_SIGNING_SECRET", "--secret", "SLACK_BOT_TOKEN"],
    );

    // Slack's documented example request: correctly signed, but from 2018.
    let doc_body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let doc_headers = vec![
        ("x-slack-request-timestamp", "1531420618".to_string()),
        ("x-slack-signature", "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503".to_string()),
    ];
    assert_eq!(slack_headers(1531420618, doc_body.as_bytes())[1].1, doc_headers[1].1, "our signing matches Slack's");
    let (status, text) = hook.post("/commands", &doc_headers, doc_body.as_bytes()).await;
    assert_eq!((status, text.trim()), (401, "stale or missing X-Slack-Request-Timestamp"));

    let challenge = json!({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"});
    let body = challenge.to_string().into_bytes();
    let (status, text) = hook.post("/events", &slack_headers(now(), &body), &body).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["challenge"], challenge["challenge"]);

    // In a channel, a message that does not mention the app is not for it.
    let event = |text: &str, ts: &str| {
        json!({
            "token": "XXYYZZ", "team_id": "T061EG9R6", "api_app_id": "A0PNCHHK2",
            "event": {"type": "message", "channel": "C024BE91L", "user": "U061F7AUR",
                      "text": text, "ts": ts, "event_ts": ts, "channel_type": "channel"},
            "type": "event_callback", "authed_teams": ["T061EG9R6"], "event_id": format!("Ev{ts}"),
            "event_time": 1525215129, "authorizations": [{"user_id": "U0APPBOT", "is_bot": true}]
        })
    };
    let chatter = event("lunch anyone?", "1525215128.000001").to_string().into_bytes();
    assert_eq!(hook.post("/events", &slack_headers(now(), &chatter), &chatter).await.0, 200);
    let event = event("<@U0APPBOT> How many cats did we herd yesterday?", "1525215129.000001");
    let body = event.to_string().into_bytes();
    let mut forged = slack_headers(now(), &body);
    forged[1].1 = format!("v0={}", sign("not-the-secret", &body));
    assert_eq!(hook.post("/events", &forged, &body).await.0, 401);

    assert_eq!(hook.post("/events", &slack_headers(now(), &body), &body).await.0, 200);
    let posted = api.wait("/api/chat.postMessage", 1).await;
    assert_eq!((posted[0].method.as_str(), &posted[0].body["channel"]), ("POST", &json!("C024BE91L")));
    assert_eq!(posted[0].body["text"], "*Three* cats &amp; a &lt;dog&gt;");
    assert_eq!(posted[0].body["unfurl_links"], false, "Slack would fetch links in a reply");
    assert_eq!(posted[0].header("authorization"), Some("Bearer xoxb-test-token"));

    // Slack retries an event it thinks was lost: answered once.
    let mut retry = slack_headers(now(), &body);
    retry.push(("x-slack-retry-num", "1".into()));
    assert_eq!(hook.post("/events", &retry, &body).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(api.seen().len(), 1, "a retried event was answered twice");
    assert_eq!(llm.requests().len(), 1);
    assert!(llm.requests()[0]["messages"].to_string().contains("How many cats did we herd yesterday?"));
    assert!(!llm.requests()[0]["messages"].to_string().contains("lunch"), "group chatter reached the model");
}

const WA_SECRET: &str = "whatsapp-app-secret";

/// A text-message notification as Meta documents it.
fn wa_notification() -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
        "messages": [{"from": "16505551234", "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
                      "timestamp": "1749416383", "type": "text", "text": {"body": "Does it come in another color?"}}]
    }, "field": "messages"}]}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn whatsapp_verifies_the_handshake_and_signatures_and_answers_once() {
    let llm = FakeLlm::start(vec![Reply::Text("**Yes**, in blue."), Reply::Text("second")]).await;
    let api = Recorder::start(json!({"messaging_product": "whatsapp", "messages": [{"id": "wamid.OUT1"}]})).await;
    let hook = start(
        "whatsapp",
        &llm,
        &format!(
            "[skills.whatsapp]\napi_base = \"{}/v21.0\"\nphone_number_id = \"106540352242922\"\n\n\
             [channels.whatsapp]\nallow = [\"16505551234\"]\n",
            api.base
        ),
        &[
            ("WHATSAPP_APP_SECRET", WA_SECRET),
            ("WHATSAPP_VERIFY_TOKEN", "meatyhamhock"),
            ("WHATSAPP_TOKEN", "EAAtoken"),
        ],
        &[
            "--http",
            &format!("{}/v21.0/", api.base),
            "--secret",
            "WHATSAPP_APP_SECRET",
            "--secret",
            "WHATSAPP_VERIFY_TOKEN",
            "--secret",
            "WHATSAPP_TOKEN",
        ],
    );
    let verify =
        |token: &str| format!("{}?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={token}", hook.base);
    let ok = hook.http.get(verify("meatyhamhock")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    assert_eq!(hook.http.get(verify("guess")).send().await.unwrap().status(), 403);

    let body = wa_notification().to_string().into_bytes();
    let forged = vec![("x-hub-signature-256", format!("sha256={}", sign("wrong", &body)))];
    assert_eq!(hook.post("", &forged, &body).await.0, 401);
    let signed = vec![("x-hub-signature-256", format!("sha256={}", sign(WA_SECRET, &body)))];
    assert_eq!(hook.post("", &signed, &body).await.0, 200);
    let sent = api.wait("/v21.0/106540352242922/messages", 1).await;
    assert_eq!(sent[0].body["to"], "16505551234");
    assert_eq!(sent[0].body["text"]["body"], "*Yes*, in blue.");
    assert_eq!(sent[0].body["text"]["preview_url"], false, "WhatsApp would fetch links in a reply");
    assert_eq!(sent[0].body["context"]["message_id"], "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=");
    assert_eq!(sent[0].header("authorization"), Some("Bearer EAAtoken"));

    // Meta redelivers the same notification: answered once.
    assert_eq!(hook.post("", &signed, &body).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(api.seen().len(), 1, "a redelivered message was answered twice");
    assert_eq!(llm.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_generic_webhook_needs_its_token_pairs_strangers_and_calls_back() {
    let llm = FakeLlm::start(vec![Reply::Text("Lights are off.")]).await;
    let callback = Recorder::start(json!({"ok": true})).await;
    let hook = start(
        "webhook",
        &llm,
        &format!(
            "[skills.webhook]\ncallback_url = \"{}/reply\"\n\n[channels.webhook]\nallow = [\"home-assistant\"]\n",
            callback.base
        ),
        &[("WEBHOOK_TOKEN", "hook-token-1")],
        &["--http", &format!("{}/reply", callback.base), "--secret", "WEBHOOK_TOKEN"],
    );
    let bearer = vec![("authorization", "Bearer hook-token-1".to_string())];
    let msg = json!({"chat": "living-room", "sender": "home-assistant", "text": "turn off the lights", "id": "evt-1"});
    let body = msg.to_string().into_bytes();
    assert_eq!(hook.post("", &[("authorization", "Bearer nope".into())], &body).await.0, 401);
    let (status, text) = hook.post("", &bearer, b"not json").await;
    assert_eq!(status, 400);
    assert!(text.contains("body is not JSON"), "{text}");

    assert_eq!(hook.post("", &bearer, &body).await.0, 202);
    let replies = callback.wait("/reply", 1).await;
    assert_eq!(replies[0].body["chat"], "living-room");
    assert_eq!(replies[0].body["text"], "Lights are off.");
    assert_eq!(replies[0].body["reply_to"], "evt-1");

    // A sender nobody approved gets a pairing code, not the agent.
    let stranger = json!({"chat": "garage", "sender": "mallory", "text": "open the garage"}).to_string();
    assert_eq!(hook.post("", &bearer, stranger.as_bytes()).await.0, 202);
    let replies = callback.wait("/reply", 2).await;
    assert_eq!(replies[1].body["chat"], "garage");
    assert!(replies[1].body["text"].as_str().unwrap().contains("wasiclaw pairing approve"));
    assert_eq!(llm.requests().len(), 1);
    assert!(hook.env.ok(&["pairing", "list"]).contains("webhook:mallory"));
}

/// A stranger who can reach the gateway sends wrong tokens; with a token
/// made by `secrets set --random` none of them spends a budget, so the
/// platform's next real delivery is still served.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_tokens_cannot_lock_out_a_long_webhook_token() {
    let llm = FakeLlm::start(vec![Reply::Text("Door locked.")]).await;
    let callback = Recorder::start(json!({"ok": true})).await;
    let port = free_port();
    let settings = format!(
        "[limits]\nsecret_checks_per_minute = 3\n\n[skills.webhook]\ncallback_url = \"{}/reply\"\n\n[channels.webhook]\nallow = [\"home-assistant\"]\n",
        callback.base
    );
    let env = Env::with_channel("webhook", &llm.base, Some(port), &settings, &[]);
    let token = env.ok(&["secrets", "set", "WEBHOOK_TOKEN", "--random"]).trim().to_string();
    assert!(token.len() == 64 && token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");
    env.ok(&["skills", "grant", "webhook", "--http", &format!("{}/reply", callback.base), "--secret", "WEBHOOK_TOKEN"]);
    let hook = Hooked {
        _daemon: env.daemon(),
        env,
        base: format!("http://127.0.0.1:{port}/hooks/webhook"),
        http: reqwest::Client::new(),
    };
    let body = json!({"chat": "hall", "sender": "home-assistant", "text": "lock the door"}).to_string();
    for i in 0..10 {
        let wrong = vec![("authorization", format!("Bearer guess-{i}"))];
        assert_eq!(hook.post("", &wrong, body.as_bytes()).await.0, 401);
    }
    let right = vec![("authorization", format!("Bearer {token}"))];
    let (status, text) = hook.post("", &right, body.as_bytes()).await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(callback.wait("/reply", 1).await[0].body["text"], "Door locked.");
    assert!(!hook.env.ok(&["secrets", "list"]).contains(&token), "a secret's value is never listed");
}
