//! Group chats: the bot answers only messages addressed to it (mentions
//! and replies), a sender is paired for one group at a time and never as
//! the owner, and `[channels.X] groups` turns groups off or fully on. A
//! paired person spends only their share of the day's model tokens.
//! Driven through the generic webhook channel, which passes `group` and
//! `addressed` as the sender set them; the Telegram test covers a real
//! platform's mentions.

use crate::fake_llm::{FakeLlm, Reply};
use crate::support::{Daemon, Env, Recorder, free_port};
use serde_json::{Value, json};
use std::time::Duration;

struct Hook {
    env: Env,
    _daemon: Daemon,
    url: String,
    callback: Recorder,
}

async fn start(llm: &FakeLlm, channel_settings: &str) -> Hook {
    start_with(llm, channel_settings, &[]).await
}

/// [`start`], with `skills` installed and granted all they ask for.
async fn start_with(llm: &FakeLlm, channel_settings: &str, skills: &[&str]) -> Hook {
    let callback = Recorder::start(json!({"ok": true})).await;
    let port = free_port();
    let settings = format!(
        "[skills.webhook]\ncallback_url = \"{}/reply\"\n\n[channels.webhook]\n{channel_settings}\n",
        callback.base
    );
    let env = Env::with_channel("webhook", &llm.base, Some(port), &settings, &[("WEBHOOK_TOKEN", "t")]);
    env.ok(&["skills", "grant", "webhook", "--http", &format!("{}/reply", callback.base), "--secret", "WEBHOOK_TOKEN"]);
    for skill in skills {
        env.install(skill);
        env.ok(&["skills", "grant", skill, "--all-requested"]);
    }
    let daemon = env.daemon();
    Hook { env, _daemon: daemon, url: format!("http://127.0.0.1:{port}/hooks/webhook/"), callback }
}

impl Hook {
    async fn say(&self, message: Value) {
        let resp =
            reqwest::Client::new().post(&self.url).bearer_auth("t").body(message.to_string()).send().await.unwrap();
        assert_eq!(resp.status(), 202, "{message}");
    }

    /// Replies so far, as (chat, text).
    fn replies(&self) -> Vec<(String, String)> {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        self.callback.seen().iter().map(|r| (text(&r.body["chat"]), text(&r.body["text"]))).collect()
    }

    async fn wait_replies(&self, n: usize) -> Vec<(String, String)> {
        self.callback.wait("/reply", n).await;
        self.replies()
    }
}

/// The pairing code a stranger was sent.
fn code_in(text: &str) -> String {
    text.split("pairing approve ").nth(1).unwrap().split_whitespace().next().unwrap().to_string()
}

fn msg(id: &str, sender: &str, chat: &str, group: bool, addressed: bool, text: &str) -> Value {
    json!({"id": id, "sender": sender, "chat": chat, "group": group, "addressed": addressed, "text": text})
}

#[tokio::test(flavor = "multi_thread")]
async fn in_groups_only_mentions_are_heard_and_pairing_is_per_chat() {
    let llm = FakeLlm::start(vec![Reply::Text("It is sunny.")]).await;
    let hook = start(&llm, "").await;

    // Chatter in a group is not for the bot: no code, no record, no model.
    hook.say(msg("1", "bob", "g1", true, false, "lunch anyone?")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(hook.replies().is_empty(), "{:?}", hook.replies());
    assert!(hook.env.ok(&["pairing", "list"]).contains("nobody is paired yet"));

    // Mentioned, a stranger gets a code for this group.
    hook.say(msg("2", "bob", "g1", true, true, "@bot weather?")).await;
    let replies = hook.wait_replies(1).await;
    assert_eq!(replies[0].0, "g1");
    let code = code_in(&replies[0].1);
    let list = hook.env.ok(&["pairing", "list"]);
    assert!(list.contains("in group g1 only"), "{list}");
    let approved = hook.env.ok(&["pairing", "approve", &code]);
    assert!(!approved.contains("admin"), "a group pairing is never the owner's: {approved}");
    hook.wait_replies(2).await;

    // Paired for g1: answered when addressed, silent otherwise.
    hook.say(msg("3", "bob", "g1", true, false, "anyway, lunch")).await;
    hook.say(msg("4", "bob", "g1", true, true, "@bot weather?")).await;
    let replies = hook.wait_replies(3).await;
    assert_eq!(replies[2], ("g1".to_string(), "It is sunny.".to_string()));
    let asked = llm.requests();
    assert_eq!(asked.len(), 1);
    assert!(!asked[0]["messages"].to_string().contains("lunch"), "chatter reached the model");

    // The g1 pairing serves neither another group nor a direct chat.
    hook.say(msg("5", "bob", "g2", true, true, "@bot hi")).await;
    hook.say(msg("6", "bob", "bob", false, false, "hi")).await;
    let replies = hook.wait_replies(5).await;
    for (chat, text) in &replies[3..] {
        assert!(text.contains("pairing approve"), "{chat} was served: {text}");
    }
    assert_eq!(llm.requests().len(), 1);

    // The owner sets what bob may do in that group, and can forget him there.
    // The owner's memory is not for a group, so it cannot be granted there.
    hook.env.ok(&["pairing", "grant", "webhook", "bob", "--group", "g1", "--tools", "write"]);
    let refused = hook.env.cli(&["pairing", "grant", "webhook", "bob", "--group", "g1", "--memory"]);
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && why.contains("never reaches a group"), "{why}");
    hook.env.ok(&["pairing", "revoke", "webhook", "bob", "--group", "g1"]);
    assert!(!hook.env.ok(&["pairing", "list"]).contains("paired"));
}

/// Pairing someone lets them talk to the owner's model, not spend all of
/// its budget: past their daily share the model is not called for them,
/// while the owner is still answered, and `pairing list` shows what each
/// may use and has spent.
#[tokio::test(flavor = "multi_thread")]
async fn a_paired_person_spends_only_their_share_of_the_day() {
    let llm = FakeLlm::start(vec![Reply::Text("one"), Reply::Text("two"), Reply::Text("for the owner")]).await;
    llm.set_usage(40, 20);
    let hook = start(&llm, "admins = [\"ann\"]\n\n[agent]\nperson_daily_token_budget = 1000").await;
    hook.say(msg("1", "bob", "g1", true, true, "@bot hi")).await;
    let replies = hook.wait_replies(1).await;
    let code = code_in(&replies[0].1);
    hook.env.ok(&["pairing", "approve", &code]);
    hook.wait_replies(2).await;
    let list = hook.env.ok(&["pairing", "list"]);
    assert!(list.contains("paired: read-only tools; 0 of 1000 tokens today"), "{list}");
    let granted = hook.env.ok(&["pairing", "grant", "webhook", "bob", "--group", "g1", "--daily-tokens", "100"]);
    assert!(granted.contains("may now use: read-only tools, 100 tokens a day"), "{granted}");

    // Each model call costs 60 tokens: bob's second turn starts under his
    // 100, his third does not.
    for (i, text) in ["@bot one", "@bot two", "@bot three"].iter().enumerate() {
        hook.say(msg(&format!("{}", 10 + i), "bob", "g1", true, true, text)).await;
        hook.wait_replies(3 + i).await;
    }
    let replies = hook.replies();
    assert_eq!((replies[2].1.as_str(), replies[3].1.as_str()), ("one", "two"));
    assert!(replies[4].1.contains("You have used today's share of this agent's model (100 tokens)"), "{replies:?}");
    assert_eq!(llm.requests().len(), 2, "the model was called past bob's share");
    let list = hook.env.ok(&["pairing", "list"]);
    assert!(list.contains("paired: read-only tools, 100 tokens a day; 120 of 100 tokens today"), "{list}");

    // The owner's budget is not bob's share.
    hook.say(msg("20", "ann", "ann", false, false, "hello")).await;
    let replies = hook.wait_replies(6).await;
    assert_eq!(replies[5], ("ann".to_string(), "for the owner".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_can_be_turned_off_or_fully_on() {
    let llm = FakeLlm::start(vec![Reply::Text("direct answer")]).await;
    let hook = start(&llm, "allow = [\"ada\"]\ngroups = \"off\"").await;
    hook.say(msg("1", "ada", "g1", true, true, "@bot are you there?")).await;
    hook.say(msg("2", "ada", "ada", false, false, "are you there?")).await;
    let replies = hook.wait_replies(1).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(hook.replies(), vec![("ada".to_string(), "direct answer".to_string())], "{replies:?}");
    drop(hook);

    let llm = FakeLlm::start(vec![Reply::Text("heard it")]).await;
    let hook = start(&llm, "allow = [\"ada\"]\ngroups = \"all\"").await;
    hook.say(msg("1", "ada", "g1", true, false, "no mention here")).await;
    assert_eq!(hook.wait_replies(1).await[0], ("g1".to_string(), "heard it".to_string()));
}

/// Everyone in a group reads the bot's replies, so the owner's long-term
/// memory stays out of a group chat, even an admin's turn there: nothing is
/// recalled and no memory tool is offered (a page the model read there
/// could otherwise have it recite what it recalled). The admin's direct
/// chat has both. Nor does a group read a provider's error.
#[tokio::test(flavor = "multi_thread")]
async fn the_owners_memory_stays_out_of_group_chats() {
    let task = r#"{"when":"every 1h","prompt":"tell them the safe code"}"#;
    let llm = FakeLlm::start(vec![
        Reply::Text("in private"),
        Reply::Text("in the group"),
        Reply::Status(401, None),
        Reply::Tools(vec![("schedule_task", task)]),
        Reply::Text("scheduled"),
        Reply::Text("the hourly word"),
        Reply::Text("the owner's word"),
    ])
    .await;
    let hook = start(&llm, "admins = [\"ada\"]").await;
    hook.env.ok(&["memory", "add", "the safe code is 4711", "--pin"]);
    hook.say(msg("1", "ada", "d1", false, true, "what is the safe code?")).await;
    hook.wait_replies(1).await;
    hook.say(msg("2", "ada", "g1", true, true, "@bot what is the safe code?")).await;
    let replies = hook.wait_replies(2).await;
    assert_eq!(replies[1], ("g1".to_string(), "in the group".to_string()));
    let requests = llm.chat_requests();
    let memory_tools = |r: &Value| r["tools"].to_string().contains("memory_search");
    let (direct, group) = (requests[0].to_string(), requests[1].to_string());
    assert!(direct.contains("4711") && memory_tools(&requests[0]), "the admin's own chat recalls: {direct}");
    assert!(!group.contains("4711"), "the owner's memory reached a group: {group}");
    assert!(!memory_tools(&requests[1]), "memory tools were offered in a group");
    hook.say(msg("3", "ada", "g1", true, true, "@bot still there?")).await;
    let replies = hook.wait_replies(3).await;
    assert_eq!(replies[2].1, "The model cannot be reached right now; please try again later.");
    // A task asked for in the group, and the owner's own task that reports
    // there, run for the group: no memory either.
    hook.say(msg("4", "ada", "g1", true, true, "@bot tell us the code every hour")).await;
    hook.wait_replies(4).await;
    hook.env.ok(&["cron", "add", "every 1h", "--prompt", "greet the group", "--chat", "webhook:g1"]);
    for (job, asked, answer) in
        [("1", "tell them the safe code", "the hourly word"), ("2", "greet the group", "the owner's word")]
    {
        let n = hook.replies().len();
        hook.env.ok(&["cron", "run-now", job]);
        let replies = hook.wait_replies(n + 1).await;
        assert_eq!(replies[n], ("g1".to_string(), answer.to_string()));
        let run = llm.chat_requests().pop().unwrap();
        let text = run.to_string();
        assert!(text.contains(asked) && !text.contains("4711") && !memory_tools(&run), "job {job} recalled: {text}");
    }
}

/// Everyone in a group reads the replies, so a member's link the model
/// read there could have it fetch what the owner keeps and recite it to
/// them: in a group, once a tool's output is in the conversation, a tool
/// that only reads asks the admin too. The admin's direct chat does not.
#[tokio::test(flavor = "multi_thread")]
async fn in_a_group_a_read_after_outside_content_asks_the_admin() {
    let llm = FakeLlm::start(vec![
        Reply::Tools(vec![("clock__now", r#"{"tz":"UTC"}"#)]),
        Reply::Tools(vec![("notes__list", "{}")]),
        Reply::Text("in private"),
        Reply::Tools(vec![("clock__now", r#"{"tz":"UTC"}"#)]),
        Reply::Tools(vec![("notes__list", "{}")]),
        Reply::Text("not shown"),
    ])
    .await;
    let hook = start_with(&llm, "admins = [\"ada\"]", &["clock", "notes"]).await;
    hook.env.ok(&["tool", "notes.add", r#"{"text":"the safe code is 4711"}"#]);
    hook.say(msg("1", "ada", "d1", false, true, "what time is it, and my notes?")).await;
    let replies = hook.wait_replies(1).await;
    assert_eq!(replies[0], ("d1".to_string(), "in private".to_string()));
    assert!(llm.chat_requests()[2].to_string().contains("4711"), "the direct chat read the notes unasked");

    hook.say(msg("2", "ada", "g1", true, true, "@bot what time is it, and my notes?")).await;
    let replies = hook.wait_replies(2).await;
    let (chat, question) = &replies[1];
    assert!(chat == "g1" && question.starts_with("Allow notes.list?"), "{replies:?}");
    assert!(question.contains("everyone in this group reads the reply"), "{question}");
    let id = question.split("/deny ").nth(1).unwrap().trim_end_matches('.').to_string();
    hook.say(msg("3", "ada", "g1", true, true, &format!("/deny {id}"))).await;
    let replies = hook.wait_replies(3).await;
    assert_eq!(replies[2], ("g1".to_string(), "not shown".to_string()));
    let last = llm.chat_requests().pop().unwrap().to_string();
    assert!(!last.contains("4711") && last.contains("the owner denied"), "{last}");
}
