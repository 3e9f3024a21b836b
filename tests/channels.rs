//! What the host guarantees for every channel: a trapping channel is
//! restarted with backoff and reported while everything else keeps
//! working, and a reply the platform refuses is kept and retried until it
//! is delivered, once.

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
    env.install_file(&crate::support::guest("crashy-channel"), "crashy");
    env.install("clock");
    let _daemon = env.daemon();
    let start = Instant::now();
    while channel_status(&env, "crashy")["restarts"].as_u64().unwrap_or(0) < 2 {
        assert!(start.elapsed() < Duration::from_secs(20), "the channel was not restarted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let crashy = channel_status(&env, "crashy");
    let error = crashy["last_error"].as_str().unwrap();
    assert!(error.contains("the component crashed"), "{error}");
    assert!(error.contains("the platform sent something this channel cannot handle"), "{error}");
    // Backoff doubles (1 s, 2 s, 4 s…): a few more seconds add at most two restarts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarts = channel_status(&env, "crashy")["restarts"].as_u64().unwrap();
    assert!((2..=4).contains(&restarts), "{restarts} restarts: no backoff");
    let status = stdout(&env.cli(&["status"]));
    assert!(status.contains("crashy: restarting (long polling)") || status.contains("crashy: running"), "{status}");
    assert!(status.contains("last error: the component crashed"), "{status}");
    assert!(env.ok(&["tool", "clock.now", "{}"]).contains("20"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_reply_is_kept_retried_and_delivered_once() {
    let llm = FakeLlm::start(vec![Reply::Text("Done.")]).await;
    let callback = Recorder::failing(json!({"ok": true}), 2).await;
    let port = free_port();
    let settings = format!(
        "[skills.webhook]\ncallback_url = \"{}/reply\"\n\n[channels.webhook]\nallow = [\"cron-script\"]\n",
        callback.base
    );
    let env = Env::with_channel("webhook", &llm.base, Some(port), &settings, &[("WEBHOOK_TOKEN", "t0ken")]);
    env.ok(&["skills", "grant", "webhook", "--all-requested"]);
    env.ok(&["skills", "grant", "webhook", "--http", &format!("{}/reply", callback.base)]);
    let _daemon = env.daemon();
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/hooks/webhook"))
        .bearer_auth("t0ken")
        .json(&json!({"chat": "c1", "sender": "cron-script", "text": "back up the photos", "id": "b-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    callback.wait("/reply", 1).await;
    let waiting = env.ok(&["outbox"]);
    assert!(waiting.contains("webhook:c1") && waiting.contains("HTTP 503"), "{waiting}");
    let replies = callback.wait("/reply", 3).await;
    assert!(replies.iter().all(|r| r.body["text"] == "Done."));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(callback.seen().len(), 3, "delivered more than once");
    assert!(env.ok(&["outbox"]).contains("nothing waiting to be sent"));
    assert_eq!(llm.requests().len(), 1, "a retry must not ask the model again");
}
