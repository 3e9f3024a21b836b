//! Contract versions: components built for 0.1.0 (`wit/0.1.0/`) still
//! load, ask for what they asked for, are denied and granted like current
//! ones, and a 0.1.0 channel's messages go through the agent and back out
//! through its 0.1.0 `send`.

use crate::fake_llm::{FakeLlm, Reply};
use crate::support::{Env, call, free_port, wait_for};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_skill_built_for_0_1_0_loads_is_denied_then_granted() {
    let env = Env::new();
    env.install("legacy-skill");
    let inspect = env.ok(&["skills", "inspect", "legacy"]);
    assert!(inspect.contains("kv") && inspect.contains("count"), "{inspect}");
    let rt = env.runtime().await;
    let denied = call(&rt, "legacy.count", "{}").await;
    assert_eq!(denied.error_kind, Some(wasiclaw::runtime::Failure::Denied), "{}", denied.output);
    assert!(denied.output.contains("wasiclaw skills grant legacy --kv"), "{}", denied.output);
    drop(rt);
    env.ok(&["skills", "grant", "legacy", "--kv"]);
    let rt = env.runtime().await;
    assert_eq!(call(&rt, "legacy.count", "{}").await.output, "count 1");
    assert_eq!(call(&rt, "legacy.count", "{}").await.output, "count 2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_channel_built_for_0_1_0_is_answered_through_its_own_send() {
    let llm = FakeLlm::start(vec![Reply::Text("hello from the agent")]).await;
    let port = free_port();
    let env = Env::with_channel(
        "legacy-channel",
        &llm.base,
        Some(port),
        "[channels.legacy-channel]\nallow = [\"ada\"]\n",
        &[],
    );
    env.ok(&["skills", "grant", "legacy-channel", "--kv"]);
    let _daemon = env.daemon();
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/hooks/legacy-channel/"))
        .body("hi there")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    wait_for("the reply to be sent", Duration::from_secs(30), || {
        let status: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
        status["channels"].as_array().into_iter().flatten().any(|c| c["name"] == "legacy-channel" && c["sent"] == 1)
    });
    assert!(llm.requests()[0]["messages"].to_string().contains("hi there"));
    // The 0.1.0 `send` got the reply and stored it through the 0.1.0 kv import.
    let info: serde_json::Value =
        serde_json::from_str(&env.ok(&["skills", "inspect", "legacy-channel", "--json"])).unwrap();
    assert_eq!(info["kv_usage"][0], 1, "{info}");
    assert_eq!(info["kv_usage"][1], json!("last-sent".len() + "hello from the agent".len()), "{info}");
}
