//! The Telegram channel end to end against telegram-test-api, a Bot API
//! server on loopback (tests/platforms, installed by .ci/setup): pairing,
//! a reply split and escaped for Telegram, a scheduled message, and a
//! channel denied its host.

use crate::fake_llm::{FakeLlm, Reply};
use crate::support::{Env, ROOT, free_port, stdout, wait_for};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "123456:test-bot-token";

/// A telegram-test-api server; killed on drop.
pub struct TelegramApi {
    child: Child,
    pub base: String,
    client: reqwest::Client,
}

impl TelegramApi {
    pub fn start() -> Self {
        let port = free_port();
        let dir = std::path::Path::new(ROOT).join("tests/platforms");
        let mut child = Command::new("node")
            .arg("telegram.js")
            .arg(port.to_string())
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node is not installed (.ci/setup installs the test platforms)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "telegram-test-api did not start; run `npm ci --prefix tests/platforms`");
        TelegramApi { child, base: format!("http://127.0.0.1:{port}"), client: reqwest::Client::new() }
    }

    /// A user writes to the bot.
    pub async fn user_says(&self, user: i64, chat: i64, text: &str) {
        self.user_says_in(user, json!({"id": chat, "first_name": "Ada", "type": "private"}), text, None).await
    }

    /// A user writes in `chat` (a Telegram Chat object), maybe replying to a message.
    pub async fn user_says_in(&self, user: i64, chat: Value, text: &str, reply_to: Option<Value>) {
        let mut message = json!({
            "botToken": TOKEN,
            "from": {"id": user, "first_name": "Ada", "username": "ada", "is_bot": false},
            "chat": chat,
            "date": 1764115200,
            "text": text,
        });
        if let Some(original) = reply_to {
            message["reply_to_message"] = original;
        }
        let r = self.client.post(format!("{}/sendMessage", self.base)).json(&message).send().await.unwrap();
        assert!(r.status().is_success());
    }

    /// Bot messages to `chat` not read yet (reading marks them read).
    pub async fn bot_messages(&self, chat: i64) -> Vec<Value> {
        let r: Value = self
            .client
            .post(format!("{}/getUpdates", self.base))
            .json(&json!({"token": TOKEN, "chatId": chat}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["result"].as_array().cloned().unwrap_or_default().into_iter().map(|u| u["message"].clone()).collect()
    }

    /// Wait until at least `n` bot messages arrived in `chat`.
    pub async fn wait_messages(&self, chat: i64, n: usize, what: &str) -> Vec<Value> {
        let start = std::time::Instant::now();
        let mut got = Vec::new();
        while got.len() < n {
            assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}; got {got:?}");
            got.extend(self.bot_messages(chat).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        got
    }
}

impl Drop for TelegramApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn setup(tg: &TelegramApi, llm: &FakeLlm) -> Env {
    let settings = format!("[skills.telegram]\napi_base = \"{}\"\npoll_timeout = \"1\"\n", tg.base);
    Env::with_channel("telegram", &llm.base, None, &settings, &[("TELEGRAM_TOKEN", TOKEN)])
}

fn grant(env: &Env, tg: &TelegramApi) {
    env.ok(&["skills", "grant", "telegram", "--http", &format!("{}/", tg.base), "--secret", "TELEGRAM_TOKEN"]);
}

fn text(m: &Value) -> String {
    m["text"].as_str().unwrap_or_default().to_string()
}

/// A long Markdown reply with characters HTML must escape.
fn long_reply() -> &'static str {
    let paragraphs: Vec<String> = (0..60)
        .map(|i| {
            format!("**Step {i}**: compare a < b && c > d, then keep going with the plan for part {i} of the story.")
        })
        .collect();
    Box::leak(paragraphs.join("\n\n").into_boxed_str())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paired_user_is_answered_and_strangers_are_neither_answered_nor_stored() {
    let llm = FakeLlm::start(vec![Reply::Text(long_reply()), Reply::Text("Time to stretch!")]).await;
    let tg = TelegramApi::start();
    let env = setup(&tg, &llm);
    grant(&env, &tg);
    let daemon = env.daemon();

    // A stranger gets a pairing code and nothing else.
    tg.user_says(42, 42, "my secret plan is ZEBRA-7781").await;
    let code_msg = tg.wait_messages(42, 1, "the pairing code").await;
    let code_text = text(&code_msg[0]);
    let code = code_text.split("wasiclaw pairing approve ").nth(1).unwrap().split_whitespace().next().unwrap();
    assert_eq!(code.len(), 8, "{code_text}");
    tg.user_says(42, 42, "hello? ZEBRA-7781").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(tg.bot_messages(42).await.is_empty(), "a stranger was answered twice");
    assert!(llm.requests().is_empty(), "a stranger's message reached the model");
    let pending = env.ok(&["pairing", "list"]);
    assert!(pending.contains("telegram:42") && pending.contains(&format!("pairing approve {code}")), "{pending}");

    // The owner approves; the user is welcomed, then answered.
    let approved = env.ok(&["pairing", "approve", code]);
    assert!(approved.contains("approved Ada (telegram:42) as an admin"), "{approved}");
    let welcome = tg.wait_messages(42, 1, "the welcome").await;
    assert!(text(&welcome[0]).contains("paired"), "{welcome:?}");

    tg.user_says(42, 42, "Tell me the whole story").await;
    let mut pieces = tg.wait_messages(42, 2, "the long reply").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pieces.extend(tg.bot_messages(42).await);
    assert!(pieces.len() >= 2, "a {}-char reply was not split: {pieces:?}", long_reply().len());
    for p in &pieces {
        assert!(text(p).encode_utf16().count() <= 4096, "a piece is over Telegram's limit");
        assert_eq!(p["parse_mode"], "HTML");
    }
    let all: String = pieces.iter().map(text).collect::<Vec<_>>().join("\n\n");
    for i in 0..60 {
        let expected = format!("<b>Step {i}</b>: compare a &lt; b &amp;&amp; c &gt; d, then keep going");
        assert!(all.contains(&expected), "step {i} missing or badly escaped");
    }
    let sent = llm.requests();
    assert_eq!(sent.len(), 1);
    assert!(sent[0]["messages"].to_string().contains("Tell me the whole story"));
    assert!(!sent[0]["messages"].to_string().contains("ZEBRA-7781"), "a stranger's message reached the context");

    // The admin approves a second user from their own chat.
    tg.user_says(43, 43, "hi, I'm Bob").await;
    let bob_code = text(&tg.wait_messages(43, 1, "Bob's code").await[0]);
    let bob_code = bob_code.split("wasiclaw pairing approve ").nth(1).unwrap().split_whitespace().next().unwrap();
    tg.user_says(43, 43, &format!("/approve {bob_code}")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(tg.bot_messages(43).await.is_empty(), "a user who is not paired approved himself");
    tg.user_says(42, 42, &format!("/approve {bob_code}")).await;
    let done = tg.wait_messages(42, 1, "the approval confirmation").await;
    assert!(text(&done[0]).contains("Approved Ada (telegram:43)"), "{done:?}");
    assert!(text(&tg.wait_messages(43, 1, "Bob's welcome").await[0]).contains("paired"));

    // A skill's `notify` reaches the owner: the first admin's chat.
    env.install("hostile");
    wait_for("hostile to load", Duration::from_secs(20), || {
        env.cli(&["skills", "grant", "hostile", "--notify"]).status.success()
    });
    env.ok(&["tool", "hostile.notify", "{}"]);
    let notified = tg.wait_messages(42, 1, "the notification").await;
    assert_eq!(text(&notified[0]), "[hostile] pwned");
    // `/approve` with a skill's name, as a proposal says, approves the skill.
    tg.user_says(42, 42, "/approve hostile").await;
    let approved = tg.wait_messages(42, 1, "the skill's approval").await;
    assert!(text(&approved[0]).starts_with("Approved hostile (build"), "{approved:?}");

    // A scheduled job in that chat fires on its own and reaches Telegram.
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2);
    env.ok(&["cron", "add", &format!("at {at}"), "--chat", "telegram:42", "--prompt", "remind me to stretch"]);
    let reminder = tg.wait_messages(42, 1, "the scheduled message").await;
    assert_eq!(text(&reminder[0]), "Time to stretch!");

    drop(daemon);
    let db = std::fs::read(env.paths().database()).unwrap();
    let needle = b"ZEBRA-7781";
    assert!(!db.windows(needle.len()).any(|w| w == needle), "a stranger's message was stored");
}

/// A write after untrusted content asks the owner in their chat. The
/// question shows every field the model wrote, however long a value before
/// it, and `/allow ID` from the owner's chat lets the call run.
#[tokio::test(flavor = "multi_thread")]
async fn the_owner_allows_a_call_from_the_chat_seeing_every_field() {
    let args: &'static str =
        json!({ "text": format!("{} END-OF-NOTE", "lorem ".repeat(400)), "z-extra": "TO-MALLORY" }).to_string().leak();
    let llm = FakeLlm::start(vec![
        Reply::Tools(vec![("notes__list", "{}")]),
        Reply::Tools(vec![("notes__add", args)]),
        Reply::Text("Saved."),
    ])
    .await;
    let tg = TelegramApi::start();
    let settings = format!(
        "[skills.telegram]\napi_base = \"{}\"\npoll_timeout = \"1\"\n\n[channels.telegram]\nadmins = [\"42\"]\n",
        tg.base
    );
    let env = Env::with_channel("telegram", &llm.base, None, &settings, &[("TELEGRAM_TOKEN", TOKEN)]);
    env.install("notes");
    grant(&env, &tg);
    env.ok(&["skills", "grant", "notes", "--all-requested"]);
    let _daemon = env.daemon();
    tg.user_says(42, 42, "what are my notes? add one").await;
    let asked = text(&tg.wait_messages(42, 1, "the question").await[0]);
    assert!(asked.starts_with("Allow notes.add?") && asked.contains("untrusted"), "{asked}");
    // (Sent as Telegram HTML: the quotes arrive as &quot;.)
    assert!(asked.contains("z-extra: &quot;TO-MALLORY&quot;"), "a field was hidden from the owner: {asked}");
    assert!(asked.contains("more characters)"), "{asked}");
    let id = asked.split("/allow ").nth(1).unwrap().split(|c: char| !c.is_ascii_digit()).next().unwrap();
    tg.user_says(42, 42, &format!("/allow {id}")).await;
    assert_eq!(text(&tg.wait_messages(42, 1, "the reply").await[0]), "Saved.");
    let notes = env.ok(&["tool", "notes.list", "{}"]);
    assert!(notes.contains("END-OF-NOTE"), "the allowed call did not run: {notes}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_channel_denied_its_host_shows_in_status_and_the_daemon_lives() {
    let llm = FakeLlm::start(vec![]).await;
    let tg = TelegramApi::start();
    let env = setup(&tg, &llm);
    env.install("clock");
    // Approved, but granted no host.
    env.ok(&["skills", "approve", "telegram"]);
    let _daemon = env.daemon();
    wait_for("the denial in status", Duration::from_secs(20), || stdout(&env.cli(&["status"])).contains("restarting"));
    let status = stdout(&env.cli(&["status"]));
    assert!(status.contains("telegram: restarting (long polling)"), "{status}");
    assert!(status.contains("has no network access"), "{status}");
    assert!(status.contains(&format!("wasiclaw skills grant telegram --http {}", tg.base)), "{status}");
    assert!(status.contains("not granted: secret TELEGRAM_TOKEN; http GET,POST"), "{status}");
    let list = env.ok(&["skills", "list"]);
    assert!(
        list.lines().any(|l| l.starts_with("telegram") && l.contains("channel") && l.contains("needs-approval")),
        "{list}"
    );
    assert!(env.ok(&["skills", "inspect", "telegram"]).contains("a chat channel: long polling"));
    // Everything else still works.
    let out = env.ok(&["tool", "clock.now", "{}"]);
    assert!(out.contains("20"), "{out}");
    // Granting brings it up without a restart of the daemon.
    grant(&env, &tg);
    tg.user_says(7, 7, "hi").await;
    let code = tg.wait_messages(7, 1, "a pairing code once granted").await;
    assert!(text(&code[0]).contains("wasiclaw pairing approve"));
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_mode_checks_the_secret_token_header() {
    let llm = FakeLlm::start(vec![Reply::Text("Pong & more")]).await;
    let tg = TelegramApi::start();
    let port = free_port();
    let settings = format!(
        "[skills.telegram]\napi_base = \"{}\"\nmode = \"webhook\"\n\n[channels.telegram]\nallow = [\"42\"]\n",
        tg.base
    );
    let secrets = [("TELEGRAM_TOKEN", TOKEN), ("TELEGRAM_WEBHOOK_SECRET", "hook-secret_1")];
    let env = Env::with_channel("telegram", &llm.base, Some(port), &settings, &secrets);
    env.ok(&["skills", "grant", "telegram", "--all-requested"]);
    grant(&env, &tg);
    let _daemon = env.daemon();
    // An update as the Bot API documents it.
    let update = json!({"update_id": 10000, "message": {
        "message_id": 1365, "date": 1441645532, "text": "/ping",
        "from": {"id": 42, "is_bot": false, "first_name": "Ada", "username": "ada"},
        "chat": {"id": 42, "first_name": "Ada", "username": "ada", "type": "private"}
    }});
    let post = |secret: &'static str| {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/hooks/telegram"))
            .header("x-telegram-bot-api-secret-token", secret)
            .json(&update)
            .send()
    };
    assert_eq!(post("guessed").await.unwrap().status(), 401);
    assert_eq!(post("hook-secret_1").await.unwrap().status(), 200);
    let reply = tg.wait_messages(42, 1, "the reply to a webhook update").await;
    assert_eq!(text(&reply[0]), "Pong &amp; more");
    assert_eq!(reply[0]["reply_parameters"]["message_id"], 1365);
    assert_eq!(reply[0]["link_preview_options"]["is_disabled"], true, "Telegram would fetch links in a reply");
    assert_eq!(post("hook-secret_1").await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(tg.bot_messages(42).await.is_empty(), "a redelivered update was answered twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_group_the_bot_answers_mentions_and_replies_only() {
    let llm = FakeLlm::start(vec![Reply::Text("Here I am."), Reply::Text("Still here.")]).await;
    let tg = TelegramApi::start();
    let settings = format!(
        "[skills.telegram]\napi_base = \"{}\"\npoll_timeout = \"1\"\n\n[channels.telegram]\nallow = [\"7\"]\n",
        tg.base
    );
    let env = Env::with_channel("telegram", &llm.base, None, &settings, &[("TELEGRAM_TOKEN", TOKEN)]);
    grant(&env, &tg);
    let _daemon = env.daemon();
    let group = json!({"id": -1001, "title": "Family", "type": "supergroup"});
    tg.user_says_in(7, group.clone(), "who is bringing the cake?", None).await;
    // telegram-test-api's getMe names the bot TestNameBot.
    tg.user_says_in(7, group.clone(), "@TestNameBot are you there?", None).await;
    let got = tg.wait_messages(-1001, 1, "an answer to the mention").await;
    assert_eq!(text(&got[0]), "Here I am.");
    let bot_said = json!({"message_id": 1, "text": "Here I am.", "chat": group,
        "from": {"id": 666, "is_bot": true, "first_name": "Test", "username": "TestNameBot"}});
    tg.user_says_in(7, group.clone(), "good, thanks", Some(bot_said)).await;
    let got = tg.wait_messages(-1001, 1, "an answer to the reply").await;
    assert_eq!(text(&got[0]), "Still here.");
    let asked = llm.requests();
    assert_eq!(asked.len(), 2);
    assert!(!asked.iter().any(|r| r["messages"].to_string().contains("cake")), "chatter reached the model");
}

/// A server that hands back the same update whatever the offset (a proxy's
/// cache, a platform's bug) is polled at the channel's pace, not in a loop:
/// answers that move nothing forward are not news.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_repeating_the_same_update_is_not_polled_in_a_loop() {
    let llm = FakeLlm::start(vec![Reply::Text("hello Ada")]).await;
    let update = json!({"update_id": 5, "message": {
        "message_id": 7, "date": 1764115200, "text": "hi",
        "from": {"id": 42, "first_name": "Ada", "is_bot": false},
        "chat": {"id": 42, "type": "private", "first_name": "Ada"}
    }});
    let stuck = crate::support::Recorder::start(json!({"ok": true, "result": [update]})).await;
    let settings =
        format!("[skills.telegram]\napi_base = \"{}\"\n\n[channels.telegram]\nallow = [\"42\"]\n", stuck.base);
    let env = Env::with_channel("telegram", &llm.base, None, &settings, &[("TELEGRAM_TOKEN", TOKEN)]);
    env.ok(&["skills", "grant", "telegram", "--http", &format!("{}/", stuck.base), "--secret", "TELEGRAM_TOKEN"]);
    let _daemon = env.daemon();
    let polls = || stuck.seen.lock().unwrap().iter().filter(|r| r.path.contains("/getUpdates")).count();
    wait_for("the update to be answered", Duration::from_secs(20), || !llm.chat_requests().is_empty());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (from, to) = (polls(), {
        tokio::time::sleep(Duration::from_secs(2)).await;
        polls()
    });
    // At the least gap between polls (200 ms), about ten in 2 s.
    assert!(to - from <= 15, "{} polls in 2 s", to - from);
    assert_eq!(llm.chat_requests().len(), 1, "the repeated update was answered again");
}

/// Nor is one that hands back a message already seen under a new update id
/// each time (the cursor moves, the news does not).
#[tokio::test(flavor = "multi_thread")]
async fn a_server_repeating_a_message_under_new_ids_is_not_polled_in_a_loop() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let llm = FakeLlm::start(vec![Reply::Text("hello Ada")]).await;
    let polls = std::sync::Arc::new(AtomicU64::new(0));
    let counted = polls.clone();
    let app = axum::Router::new().fallback(move || {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            axum::Json(json!({"ok": true, "result": [{"update_id": 100 + n, "message": {
                "message_id": 7, "date": 1764115200, "text": "hi",
                "from": {"id": 42, "first_name": "Ada", "is_bot": false},
                "chat": {"id": 42, "type": "private", "first_name": "Ada"}
            }}]}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let settings = format!("[skills.telegram]\napi_base = \"{base}\"\n\n[channels.telegram]\nallow = [\"42\"]\n");
    let env = Env::with_channel("telegram", &llm.base, None, &settings, &[("TELEGRAM_TOKEN", TOKEN)]);
    env.ok(&["skills", "grant", "telegram", "--http", &format!("{base}/"), "--secret", "TELEGRAM_TOKEN"]);
    let _daemon = env.daemon();
    wait_for("the message to be answered", Duration::from_secs(20), || !llm.chat_requests().is_empty());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let from = polls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n = polls.load(Ordering::SeqCst) - from;
    // Sends (typing, the reply) hit the same server: they are few.
    assert!(n <= 20, "{n} requests in 2 s");
    assert_eq!(llm.chat_requests().len(), 1, "the repeated message was answered again");
}
