//! What the host guarantees for every channel: a trapping channel is
//! restarted with backoff and reported while everything else keeps
//! working; a channel cannot get secrets it was not granted into its
//! frames, nor read a granted one back; and a reply the platform refuses
//! is kept and retried until it is delivered, once, or held for the owner
//! when the platform takes later ones but not it.

use crate::fake_llm::{FakeLlm, Reply};
use crate::support::{Env, Recorder, free_port, stdout};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn channel_status(env: &Env, name: &str) -> Value {
    let status: Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    status["channels"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trapping_channel_is_restarted_with_backoff_and_nothing_else_stops() {
    let env = Env::new();
    env.install("hostile-channel");
    env.install("clock");
    env.config("[skills.hostile-channel]\nmode = \"crash\"\n");
    env.ok(&["skills", "approve", "hostile-channel"]);
    let _daemon = env.daemon();
    let start = Instant::now();
    while channel_status(&env, "hostile-channel")["restarts"].as_u64().unwrap_or(0) < 2 {
        assert!(start.elapsed() < Duration::from_secs(20), "the channel was not restarted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hostile = channel_status(&env, "hostile-channel");
    let error = hostile["last_error"].as_str().unwrap();
    assert!(error.contains("the component crashed"), "{error}");
    assert!(error.contains("the platform sent something this channel cannot handle"), "{error}");
    // Backoff doubles (1 s, 2 s, 4 s…): a few more seconds add at most two restarts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarts = channel_status(&env, "hostile-channel")["restarts"].as_u64().unwrap();
    assert!((2..=4).contains(&restarts), "{restarts} restarts: no backoff");
    let status = stdout(&env.cli(&["status"]));
    assert!(
        status.contains("hostile-channel: restarting (long polling)") || status.contains("hostile-channel: running"),
        "{status}"
    );
    assert!(status.contains("last error: the component crashed"), "{status}");
    assert!(env.ok(&["tool", "clock.now", "{}"]).contains("20"));
}

/// A script's message to the webhook channel; returns the HTTP status.
async fn hook(port: u16, text: &str, id: &str) -> u16 {
    let body = json!({"chat": "c1", "sender": "cron-script", "text": text, "id": id});
    let url = format!("http://127.0.0.1:{port}/hooks/webhook");
    reqwest::Client::new().post(url).bearer_auth("t0ken").json(&body).send().await.unwrap().status().as_u16()
}

/// A daemon with the webhook channel serving `cron-script`, replying to
/// `callback`; `before` opens the config. Returns the gateway's port.
fn webhook_daemon(llm: &FakeLlm, callback: &Recorder, before: &str) -> (Env, crate::support::Daemon, u16) {
    let port = free_port();
    let settings = format!(
        "{before}[skills.webhook]\ncallback_url = \"{}/reply\"\n\n[channels.webhook]\nallow = [\"cron-script\"]\n",
        callback.base
    );
    let env = Env::with_channel("webhook", &llm.base, Some(port), &settings, &[("WEBHOOK_TOKEN", "t0ken")]);
    env.ok(&["skills", "grant", "webhook", "--all-requested", "--http", &format!("{}/reply", callback.base)]);
    let daemon = env.daemon();
    (env, daemon, port)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_reply_is_kept_retried_and_delivered_once() {
    let llm = FakeLlm::start(vec![Reply::Text("Done."), Reply::Text("Again.")]).await;
    let callback = Recorder::failing(json!({"ok": true}), 2).await;
    let (env, _daemon, port) = webhook_daemon(&llm, &callback, "");
    assert_eq!(hook(port, "back up the photos", "b-1").await, 202);
    callback.wait("/reply", 1).await;
    // The refusal is recorded once the delivering call has ended.
    crate::support::wait_for("the outbox to show the refusal", Duration::from_secs(10), || {
        let waiting = env.ok(&["outbox"]);
        waiting.contains("webhook:c1") && waiting.contains("HTTP 503")
    });
    let replies = callback.wait("/reply", 3).await;
    assert!(replies.iter().all(|r| r.body["text"] == "Done."));
    // The reply is retired once the delivering call has ended (and committed).
    crate::support::wait_for("the outbox to empty", Duration::from_secs(10), || {
        env.ok(&["outbox"]).contains("nothing waiting to be sent")
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(callback.seen().len(), 3, "delivered more than once");
    assert_eq!(llm.requests().len(), 1, "a retry must not ask the model again");

    // A message nobody will ever take can be given up on.
    env.ok(&["skills", "revoke", "webhook", "--all"]);
    assert_eq!(hook(port, "again", "b-2").await, 503, "a revoked channel cannot check tokens");
    env.ok(&["skills", "grant", "webhook", "--secret", "WEBHOOK_TOKEN"]);
    let llm_before = llm.requests().len();
    assert_eq!(hook(port, "again", "b-3").await, 202);
    let start = Instant::now();
    let queued: Vec<Value> = loop {
        let items: Vec<Value> = serde_json::from_str(&env.ok(&["outbox", "--json"])).unwrap();
        if items.iter().any(|i| i["attempts"].as_u64() > Some(0)) {
            break items;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the reply was never attempted: {items:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let error = queued[0]["last_error"].as_str().unwrap();
    assert!(error.contains("wasiclaw skills grant webhook --http"), "{error}");
    let id = queued[0]["id"].to_string();
    assert!(env.ok(&["outbox", "--drop", &id]).contains("will not be sent"));
    assert!(env.ok(&["outbox"]).contains("nothing waiting to be sent"));
    assert!(!env.cli(&["outbox", "--drop", &id]).status.success());
    assert_eq!(llm.requests().len(), llm_before + 1);
}

/// A reply the platform refuses for good (here: any message holding
/// "POISON") does not hold back the chat for ever: once it failed a few
/// times, the next reply first tries it again, goes through itself, and the
/// refused one is held for the owner, who is told and can send it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_reply_the_platform_refuses_is_held_and_the_chat_goes_on() {
    let llm = FakeLlm::start(vec![
        Reply::Text("A POISON reply."),
        Reply::Text("Fine."),
        Reply::Text("More POISON."),
        Reply::Text("Fine again."),
    ])
    .await;
    let callback = Recorder::start(json!({"ok": true})).await;
    *callback.refuse.lock().unwrap() = Some("POISON".into());
    let (env, _daemon, port) = webhook_daemon(&llm, &callback, "[agent]\nowner_chat = \"webhook:owner\"\n\n");
    assert_eq!(hook(port, "first", "p-1").await, 202);
    assert_eq!(hook(port, "second", "p-2").await, 202);
    let sent = |text: &str| {
        callback.seen().into_iter().filter(|r| r.body["text"].as_str().unwrap_or("").contains(text)).count()
    };
    crate::support::wait_for("the later reply to go through", Duration::from_secs(40), || sent("Fine.") == 1);
    assert!(sent("POISON") >= 3, "held after {} tries", sent("POISON"));

    let outbox = || serde_json::from_str::<Vec<Value>>(&env.ok(&["outbox", "--json"])).unwrap();
    // Only the held reply is left once the owner's notice is delivered.
    crate::support::wait_for("the owner's notice to go", Duration::from_secs(10), || {
        let items = outbox();
        items.len() == 1 && items[0]["held"].is_string()
    });
    let items = outbox();
    assert_eq!(items[0]["text"], "A POISON reply.");
    let id = items[0]["id"].to_string();
    assert!(env.ok(&["outbox"]).contains(&format!("HELD, not retried: refused 3 times while a later message to this chat went through; `wasiclaw outbox --retry {id}`")));
    assert!(env.ok(&["status"]).contains("1 refused by the platform and held"));
    let notes = env.ok(&["notifications"]);
    assert!(notes.contains("webhook:c1 is held, unsent") && notes.contains("HTTP 400"), "{notes}");
    // In the host's words alone: the chat id and the error are the channel's.
    let notice = callback.seen().into_iter().find(|r| r.body["chat"] == "owner").expect("the owner was told");
    let text = notice.body["text"].as_str().unwrap();
    assert!(text.contains(&format!("--retry {id}")) && !text.contains("c1") && !text.contains("400"), "{text}");
    // Held means not retried.
    let tries = sent("A POISON");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sent("A POISON"), tries);

    // A second held message of the channel is recorded, but the owner's
    // chat heard once: a channel that refused message after message would
    // otherwise speak there at its pace.
    assert_eq!(hook(port, "third", "p-3").await, 202);
    assert_eq!(hook(port, "fourth", "p-4").await, 202);
    crate::support::wait_for("the fourth reply to go through", Duration::from_secs(40), || sent("Fine again.") == 1);
    crate::support::wait_for("two held", Duration::from_secs(10), || {
        outbox().iter().filter(|i| i["held"].is_string()).count() == 2
    });
    assert!(env.ok(&["notifications"]).contains(&format!("--retry {}", outbox()[1]["id"])));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(callback.seen().iter().filter(|r| r.body["chat"] == "owner").count(), 1);
    let doctor = stdout(&env.cli(&["doctor"]));
    assert!(doctor.contains("webhook: 2 message(s) the platform refused are held, unsent"), "{doctor}");

    // The owner sends the first again once the platform takes it.
    *callback.refuse.lock().unwrap() = None;
    assert!(env.ok(&["outbox", "--retry", &id]).contains("sent again"));
    crate::support::wait_for("the held reply to go", Duration::from_secs(10), || outbox().len() == 1);
    assert_eq!(sent("A POISON"), tries + 1);
    assert_eq!(outbox()[0]["text"], "More POISON.");
    assert!(!env.cli(&["outbox", "--retry", &id]).status.success());
}

/// A platform that refuses everything (down, or the chat gone) holds
/// nothing back for good: no later message went through, so nothing is
/// held, and once it takes messages again they go in order.
/// A chat that refuses everything (a group the bot was removed from, that
/// a job still reports to) is tried at its own pace, not each message at
/// its own: once every reply to it is stuck, the newer ones are not tried
/// again while the oldest fails. Before, each stuck message was retried on
/// its own timer (and all of them before each other), every few minutes,
/// for good: a platform could throttle the bot for it.
#[tokio::test(flavor = "multi_thread")]
async fn a_chat_that_refuses_everything_is_tried_at_one_pace() {
    let replies = ["DEAD one.", "DEAD two.", "DEAD three.", "DEAD four."];
    let llm = FakeLlm::start(replies.iter().map(|r| Reply::Text(r)).collect()).await;
    let callback = Recorder::start(json!({"ok": true})).await;
    *callback.refuse.lock().unwrap() = Some("DEAD".into());
    let (env, _daemon, port) = webhook_daemon(&llm, &callback, "");
    for (i, text) in ["a", "b", "c", "d"].iter().enumerate() {
        assert_eq!(hook(port, text, &format!("dead-{i}")).await, 202);
    }
    let outbox = || serde_json::from_str::<Vec<Value>>(&env.ok(&["outbox", "--json"])).unwrap();
    let attempts = || outbox().iter().map(|i| i["attempts"].as_u64().unwrap()).collect::<Vec<_>>();
    crate::support::wait_for("every reply refused 3 times", Duration::from_secs(90), || {
        let a = attempts();
        a.len() == 4 && a.iter().all(|n| *n >= 3)
    });
    let stuck = attempts();
    // Long past the newer ones' next try of their own (8 s after a third).
    tokio::time::sleep(Duration::from_secs(20)).await;
    let after = attempts();
    assert_eq!(after[2..], stuck[2..], "the newer replies were tried again on their own: {stuck:?} → {after:?}");
    assert!(outbox().iter().all(|i| i["held"].is_null()), "nothing went through, so nothing is held");
    // The chat comes back: everything goes, in order.
    *callback.refuse.lock().unwrap() = None;
    env.ok(&["outbox", "--retry", &outbox()[0]["id"].to_string()]);
    crate::support::wait_for("every reply to go", Duration::from_secs(60), || outbox().is_empty());
    let seen = callback.seen();
    let last: Vec<&str> = seen[seen.len() - 4..].iter().map(|r| r.body["text"].as_str().unwrap()).collect();
    assert_eq!(last, replies);
}

#[tokio::test(flavor = "multi_thread")]
async fn replies_a_platform_refuses_all_alike_wait_and_go_in_order() {
    let llm = FakeLlm::start(vec![Reply::Text("One."), Reply::Text("Two.")]).await;
    let callback = Recorder::start(json!({"ok": true})).await;
    *callback.refuse.lock().unwrap() = Some(String::new());
    let (env, _daemon, port) = webhook_daemon(&llm, &callback, "");
    assert_eq!(hook(port, "first", "o-1").await, 202);
    assert_eq!(hook(port, "second", "o-2").await, 202);
    let outbox = || serde_json::from_str::<Vec<Value>>(&env.ok(&["outbox", "--json"])).unwrap();
    crate::support::wait_for(
        "both replies to be refused, the first past holding back",
        Duration::from_secs(30),
        || {
            let items = outbox();
            items.len() == 2 && items[0]["attempts"].as_u64() >= Some(3) && items[1]["attempts"].as_u64() >= Some(1)
        },
    );
    assert!(outbox().iter().all(|i| i["held"].is_null()), "{:?}", outbox());
    *callback.refuse.lock().unwrap() = None;
    crate::support::wait_for("both replies to go", Duration::from_secs(30), || outbox().is_empty());
    let seen = callback.seen();
    let last: Vec<&str> = seen[seen.len() - 2..].iter().map(|r| r.body["text"].as_str().unwrap()).collect();
    assert_eq!(last, ["One.", "Two."]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_channel_cannot_smuggle_or_read_secrets_through_its_websocket() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let env = Env::new();
    env.install("hostile-channel");
    env.config(&format!("[skills.hostile-channel]\nurl = \"{url}\"\n"));
    let secrets =
        [("VICTIM_SECRET", "victim-value-1"), ("OWN_SECRET", "own-value-2"), ("FRAME_SECRET", "frame-value-3")];
    for (name, value) in secrets {
        env.cli_stdin(&["secrets", "set", name], &format!("{value}\n"));
    }
    env.ok(&["skills", "grant", "hostile-channel", "--all-requested", "--http", &url]);
    let daemon = env.daemon();
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(20), listener.accept()).await.unwrap().unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    async fn next(ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> String {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
            other => panic!("no frame: {other:?}"),
        }
    }
    assert_eq!(next(&mut ws).await, "steal:{VICTIM_SECRET}", "the host filled in a secret the channel was not granted");
    assert_eq!(next(&mut ws).await, "crypto:{OWN_SECRET}", "a crypto-only secret went out in a frame");
    assert_eq!(next(&mut ws).await, "frame:frame-value-3", "the socket rule's own secret is filled in");
    // The platform echoes granted secrets: the channel sees them scrubbed.
    ws.send(Message::text("echo own-value-2 FRAME-VALUE-3")).await.unwrap();
    let seen = next(&mut ws).await;
    assert!(seen.starts_with("seen:echo ") && !seen.to_lowercase().contains("value-"), "{seen}");
    let audit = env.ok(&["audit", "--skill", "hostile-channel"]);
    assert!(audit.contains("VICTIM_SECRET") && audit.contains("OWN_SECRET"), "the attempts are audited: {audit}");

    // A changed build is held: no connection, no frames, until approved.
    let v2 = crate::support::rebuilt(&crate::support::guest("hostile-channel"), "swapped");
    std::fs::copy(&v2, env.skills().join("hostile-channel.wasm")).unwrap();
    crate::support::wait_for("the swapped build to be held", Duration::from_secs(30), || {
        channel_status(&env, "hostile-channel")["state"] == "needs-approval"
    });
    drop(ws);
    let held = tokio::time::timeout(Duration::from_secs(3), listener.accept()).await;
    assert!(held.is_err(), "a swapped build connected before approval");
    env.ok(&["skills", "approve", "hostile-channel"]);
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(20), listener.accept()).await.unwrap().unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    assert_eq!(next(&mut ws).await, "steal:{VICTIM_SECRET}");

    // A frame over 8 MiB is refused, not held: the channel says why and
    // connects again.
    // (The host may close the connection before the frame is all sent.)
    let _ = ws.send(Message::text("x".repeat(9 << 20))).await;
    crate::support::wait_for("the oversized frame to be refused", Duration::from_secs(20), || {
        channel_status(&env, "hostile-channel")["last_error"].as_str().is_some_and(|e| e.contains("too long"))
    });
    let again = tokio::time::timeout(Duration::from_secs(20), listener.accept()).await;
    assert!(again.is_ok(), "the channel did not connect again");
    drop(daemon);
}

/// A channel decides who spoke, so a hostile one can make up any number of
/// messages "from the owner". The inbox holds at most 50 waiting messages
/// of a chat and 500 of a channel: the flood fills that share, not the
/// disk, and is counted in `status`; and only a few of its chats are
/// answered at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_channel_that_floods_the_inbox_fills_only_its_share() {
    use wasiclaw::queue::{INBOX_PER_CHANNEL, INBOX_PER_CHAT};
    // A model that never answers: every message stored stays waiting.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free_port();
    let env = Env::new();
    env.install("hostile-channel");
    env.config(&format!(
        "[gateway]\nbind = \"127.0.0.1:{port}\"\n[[providers]]\nkind = \"openai\"\nbase_url = \"http://{}/v1\"\nmodel = \"fake\"\n\
         [skills.hostile-channel]\nmode = \"flood\"\n[channels.hostile-channel]\nadmins = [\"owner\"]\n",
        silent.local_addr().unwrap()
    ));
    let daemon = tokio::task::block_in_place(|| env.daemon());
    env.ok(&["skills", "approve", "hostile-channel"]);
    let hook = |path: &str| {
        reqwest::Client::new().post(format!("http://127.0.0.1:{port}/hooks/hostile-channel/{path}")).send()
    };
    // Ids the host would store, 4 KiB each: none is taken.
    assert_eq!(hook("p?n=10&chats=1&pad=4").await.unwrap().status(), 200);
    assert_eq!(channel_status(&env, "hostile-channel")["received"], 0, "a message with 4 KiB ids was stored");
    // An answer of 1,001 messages: refused whole.
    assert_ne!(hook("big?n=1001").await.unwrap().status(), 200);
    // 1,000 messages of 10 KiB: over 8 MiB, refused whole.
    assert_ne!(hook("huge?n=1000&pad=5").await.unwrap().status(), 200);
    assert_eq!(channel_status(&env, "hostile-channel")["received"], 0, "an answer of 1,001 messages was taken");
    // 100 messages in one chat: that chat's share is taken.
    assert_eq!(hook("a?n=100&chats=1").await.unwrap().status(), 200);
    let status = channel_status(&env, "hostile-channel");
    assert_eq!(status["received"], INBOX_PER_CHAT as u64, "{status}");
    assert_eq!(status["dropped"], 100 - INBOX_PER_CHAT as u64, "{status}");
    // 1,000 messages in 1,000 chats: the channel's share is taken.
    assert_eq!(hook("b?n=1000&chats=1000").await.unwrap().status(), 200);
    let status = channel_status(&env, "hostile-channel");
    assert_eq!(status["received"], INBOX_PER_CHANNEL as u64, "{status}");
    assert_eq!(status["dropped"], 1100 - INBOX_PER_CHANNEL as u64, "{status}");
    let shown = env.ok(&["status"]);
    assert!(shown.contains("600 dropped (inbox full)"), "{shown}");
    // 451 chats wait, and the channel answers TURNS_AT_ONCE at a time: the
    // model (silent here) is asked that many times at once, not 451.
    silent.set_nonblocking(true).unwrap();
    let mut asked = Vec::new();
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < until {
        match silent.accept() {
            Ok((request, _)) => asked.push(request),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(asked.len(), wasiclaw::channels::TURNS_AT_ONCE, "model requests at once");
    // 200 strangers: the first 50 get a pairing code (the pending cap), and
    // the rest are ignored without a trace, not even their message ids.
    assert_eq!(hook("s?n=200&strangers=1").await.unwrap().status(), 200);
    // 1,000 answers "from the owner" to no question, which skip the inbox:
    // none is kept, and the chat is told once, not 1,000 times.
    assert_eq!(hook("v?n=1000&answers=1").await.unwrap().status(), 200);
    tokio::task::block_in_place(|| drop(daemon));
    let rt = env.runtime().await;
    let seen = (0..200).filter(|i| rt.db.seen("hostile-channel", &format!("/s-{i}")).unwrap()).count();
    assert_eq!(seen, 50, "ignored strangers' message ids were kept");
    let seen = (0..1000).filter(|i| rt.db.seen("hostile-channel", &format!("/v-{i}")).unwrap()).count();
    assert_eq!(seen, 0, "answers to no question were kept");
    let told =
        rt.db.outbox(None).unwrap().into_iter().filter(|m| m.text.starts_with("No tool call is waiting")).count();
    assert_eq!(told, 1, "replies to answers to no question");
}

/// A message whose turn never ends (here the daemon is killed while the
/// model is asked, at every start) is given up after a few turns instead of
/// being begun again at every restart, each maybe a model request. Its
/// sender is told, and the owner finds it in `wasiclaw notifications`.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_whose_turn_never_ends_is_given_up_after_a_few_tries() {
    let tries = wasiclaw::channels::INBOX_TRIES as usize;
    let mut script = vec![Reply::Hang; tries];
    script.push(Reply::Text("never asked"));
    let llm = FakeLlm::start(script).await;
    let callback = Recorder::start(json!({"ok": true})).await;
    let (env, daemon, port) = webhook_daemon(&llm, &callback, "");
    assert_eq!(hook(port, "summarise my week", "m-1").await, 202);
    let mut daemon = Some(daemon);
    for n in 1..=tries {
        crate::support::wait_for("the model to be asked", Duration::from_secs(30), || llm.chat_requests().len() >= n);
        drop(daemon.take());
        daemon = Some(env.daemon());
    }
    let replies = callback.wait("/reply", 1).await;
    assert_eq!(replies[0].body["text"], "Sorry, I could not answer this message. Please try again later.");
    assert_eq!(llm.chat_requests().len(), tries, "the model was asked again");
    let notes = env.ok(&["notifications"]);
    assert!(notes.contains(&format!("its turn began {tries} times and never ended")), "{notes}");
    drop(daemon);
}
