//! The agent loop against scripted fake providers: tool use, parallel
//! calls, denials, retries, fallback, malformed output, compaction, the
//! budget stop and sessions that survive a restart.

use crate::fake_llm::{FakeLlm, Reply, SUMMARY};
use crate::support::{Env, Server};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasiclaw::agent::{Agent, Event};

fn provider(kind: &str, base: &str) -> String {
    let url = if kind == "openai" { format!("{base}/v1") } else { base.to_string() };
    format!("[[providers]]\nkind = \"{kind}\"\nbase_url = \"{url}\"\nmodel = \"fake-{kind}\"\n\n")
}

async fn agent(env: &Env, config: &str) -> Agent {
    env.config(config);
    let rt = Arc::new(env.runtime().await);
    let mut agent = Agent::new(rt, None).await;
    if let Some(llm) = agent.llm_mut() {
        llm.backoff = Duration::from_millis(20);
    }
    agent
}

/// The owner approves a skill's build, as `wasiclaw skills approve` does.
fn approve(agent: &Agent, skill: &str) {
    agent.rt.change_grant(skill, &wasiclaw::grants::GrantChange::default(), false).unwrap();
}

/// Run one turn, collecting its events.
async fn turn(agent: &Agent, session: &str, text: &str) -> (String, Vec<Event>) {
    let events = Mutex::new(Vec::new());
    let reply = agent.turn(session, text, &|e| events.lock().unwrap().push(e)).await.unwrap();
    (reply, events.into_inner().unwrap())
}

/// The text of every message a request carried, whatever the wire format.
fn texts(request: &Value) -> String {
    request["messages"].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_step_tool_use() {
    let llm = FakeLlm::start(vec![
        Reply::Tools(vec![("notes__add", r#"{"text":"buy oat milk"}"#)]),
        Reply::Tools(vec![("notes__list", "{}")]),
        Reply::Text("You have one note: buy oat milk."),
    ])
    .await;
    let env = Env::new();
    env.install("notes");
    let agent = agent(&env, &provider("openai", &llm.base)).await;
    agent.rt.change_grant("notes", &wasiclaw::grants::GrantChange { all: true, ..Default::default() }, false).unwrap();
    let (reply, events) = turn(&agent, "t:1", "remember to buy oat milk").await;
    assert_eq!(reply, "You have one note: buy oat milk.");
    let requests = llm.requests();
    assert_eq!(requests.len(), 3);
    let tools: Vec<&str> =
        requests[0]["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert!(tools.contains(&"notes__add") && tools.contains(&"notes__list"), "{tools:?}");
    assert!(texts(&requests[1]).contains(r#"{\"id\":1}"#), "the add result reached the model: {}", texts(&requests[1]));
    assert!(texts(&requests[2]).contains("buy oat milk"));
    assert!(
        events.contains(&Event::ToolCall { name: "notes.add".into(), arguments: r#"{"text":"buy oat milk"}"#.into() })
    );
    let streamed: String =
        events.iter().filter_map(|e| if let Event::Text { text } = e { Some(text.as_str()) } else { None }).collect();
    assert_eq!(streamed, reply, "the reply streamed in pieces");
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_tool_calls_each_get_their_result() {
    let llm = FakeLlm::start(vec![
        Reply::Tools(vec![("clock__now", r#"{"tz":"Asia/Tokyo"}"#), ("clock__now", r#"{"tz":"Asia/Kolkata"}"#)]),
        Reply::Text("Tokyo and Kolkata, done."),
    ])
    .await;
    let env = Env::new();
    env.install("clock");
    let agent = agent(&env, &provider("anthropic", &llm.base)).await;
    approve(&agent, "clock");
    let (reply, _) = turn(&agent, "t:1", "time in Tokyo and Kolkata?").await;
    assert_eq!(reply, "Tokyo and Kolkata, done.");
    let second = &llm.requests()[1];
    let last = second["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["role"], "user");
    let results = last["content"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{last}");
    assert_eq!(results[0]["tool_use_id"], "toolu_0");
    assert!(results[0]["content"].as_str().unwrap().contains("+09:00"));
    assert_eq!(results[1]["tool_use_id"], "toolu_1");
    assert!(results[1]["content"].as_str().unwrap().contains("+05:30"));
}

/// A reply with more tool calls than one round runs gets the rest answered
/// without running them.
#[tokio::test(flavor = "multi_thread")]
async fn one_reply_runs_a_bounded_number_of_calls() {
    use wasiclaw::agent::MAX_CALLS_PER_REPLY;
    let llm =
        FakeLlm::start(vec![Reply::Tools(vec![("clock__now", "{}"); MAX_CALLS_PER_REPLY + 8]), Reply::Text("done")])
            .await;
    let env = Env::new();
    env.install("clock");
    let agent = agent(&env, &provider("openai", &llm.base)).await;
    approve(&agent, "clock");
    let (reply, events) = turn(&agent, "t:1", "what time is it, many times").await;
    assert_eq!(reply, "done");
    let ran = events.iter().filter(|e| matches!(e, Event::ToolCall { .. })).count();
    assert_eq!(ran, MAX_CALLS_PER_REPLY, "calls run");
    let results = &llm.requests()[1]["messages"];
    let answers: Vec<&str> = results
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(answers.len(), MAX_CALLS_PER_REPLY + 8, "every call is answered");
    assert!(answers[MAX_CALLS_PER_REPLY..].iter().all(|a| a.contains("not run")), "{answers:?}");
    assert!(answers[..MAX_CALLS_PER_REPLY].iter().all(|a| !a.contains("not run")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denial_reaches_the_model_as_text() {
    let server = Server::start().await;
    let llm = FakeLlm::start(vec![
        Reply::Tools(vec![("web-fetch__fetch", r#"{"url":"http://127.0.0.1:1/secret"}"#)]),
        Reply::Text("I may not fetch that."),
    ])
    .await;
    let env = Env::new();
    env.install("web-fetch");
    let agent = agent(&env, &provider("openai", &llm.base)).await;
    crate::egress::grant(&agent.rt, "web-fetch", &[&format!("{}/", server.base)], &[]);
    let (reply, events) = turn(&agent, "t:1", "fetch it").await;
    assert_eq!(reply, "I may not fetch that.");
    let tool_msg = llm.requests()[1]["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(tool_msg["role"], "tool");
    let content = tool_msg["content"].as_str().unwrap();
    assert!(
        content.contains("error (denied)")
            && content.contains("wasiclaw skills grant web-fetch --http http://127.0.0.1:1/"),
        "{content}"
    );
    assert!(events.iter().any(|e| matches!(e, Event::ToolResult { ok: false, .. })));
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_on_429_and_500_honouring_retry_after() {
    let llm =
        FakeLlm::start(vec![Reply::Status(429, Some(1)), Reply::Status(500, None), Reply::Text("third time lucky")])
            .await;
    let env = Env::new();
    let agent = agent(&env, &provider("openai", &llm.base)).await;
    let (reply, _) = turn(&agent, "t:1", "hi").await;
    assert_eq!(reply, "third time lucky");
    let times = llm.times();
    assert_eq!(times.len(), 3);
    assert!(times[1] - times[0] >= Duration::from_millis(950), "Retry-After: 1 was not honoured");
}

#[tokio::test(flavor = "multi_thread")]
async fn falls_back_to_the_second_provider() {
    let broken =
        FakeLlm::start(vec![Reply::Status(503, None), Reply::Status(503, None), Reply::Text("the first is back")])
            .await;
    let good = FakeLlm::start(vec![
        Reply::Text("from the fallback"),
        Reply::Text("again from the fallback"),
        Reply::Status(503, None),
        Reply::Status(503, None),
    ])
    .await;
    let env = Env::new();
    let config =
        format!("[agent]\nretries = 1\n\n{}{}", provider("openai", &broken.base), provider("anthropic", &good.base));
    let agent = agent(&env, &config).await;
    let (reply, _) = turn(&agent, "t:1", "hi").await;
    assert_eq!(reply, "from the fallback");
    assert_eq!(broken.requests().len(), 2, "one try and one retry before falling back");
    assert_eq!(good.requests().len(), 1);
    // A provider that failed its retries is passed over for a while: its
    // retries would otherwise delay every model call while it is down.
    let (reply, _) = turn(&agent, "t:1", "and now?").await;
    assert_eq!(reply, "again from the fallback");
    assert_eq!(broken.requests().len(), 2, "the failed provider was asked first again");
    // `wasiclaw status` says which one is passed over, and why.
    let envelope = wasiclaw::api::Envelope::new(wasiclaw::api::Request::Status);
    let wasiclaw::api::Reply::Ok(wasiclaw::api::Response::Status(status)) =
        wasiclaw::api::dispatch(&agent.rt, Some(&agent), None, envelope, &|_| {}).await
    else {
        panic!("no status")
    };
    assert_eq!(status.models_resting.len(), 1, "{:?}", status.models_resting);
    let (model, why) = &status.models_resting[0];
    assert!(model == "fake-openai" && why.contains("503"), "{model}: {why}");
    // It is still tried, last, when the others fail too.
    let (reply, _) = turn(&agent, "t:1", "still there?").await;
    assert_eq!(reply, "the first is back");
}

/// A provider's error text (an organisation id, a key's last digits) and
/// the owner's config are for the owner: a paired person, maybe in a group,
/// is told the model cannot be reached, no more.
#[tokio::test(flavor = "multi_thread")]
async fn a_paired_person_is_not_shown_the_providers_error() {
    let llm = FakeLlm::start(vec![Reply::Status(401, None), Reply::Status(401, None)]).await;
    let env = Env::new();
    let agent = agent(&env, &format!("[agent]\nretries = 0\n\n{}", provider("openai", &llm.base))).await;
    let person =
        wasiclaw::agent::Who::Person { admin: false, scope: Default::default(), id: "t:friend".into(), group: false };
    let reply = agent.turn_as("t:2:friend", "hi", &person, &|_| {}).await.unwrap().text;
    assert_eq!(reply, "The model cannot be reached right now; please try again later.");
    let (owner, _) = turn(&agent, "t:1", "hi").await;
    assert!(owner.contains("HTTP 401") && owner.contains("scripted failure"), "{owner}");
}

/// Two turns of one session go one at a time (the second sees the first's
/// reply), and a session's lock goes when its turns end: a channel decides
/// chat ids, so locks kept for every session ever seen would grow for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_sessions_turns_go_one_at_a_time_and_leave_no_lock_behind() {
    let llm = FakeLlm::start(vec![Reply::Text("the first answer"), Reply::Text("the second answer")]).await;
    let env = Env::new();
    let agent = agent(&env, &provider("openai", &llm.base)).await;
    let (a, b) = tokio::join!(turn(&agent, "t:1", "one"), turn(&agent, "t:1", "two"));
    let mut replies = [a.0, b.0];
    replies.sort();
    assert_eq!(replies, ["the first answer", "the second answer"]);
    let second = texts(&llm.chat_requests()[1]);
    assert!(second.contains("the first answer"), "the second turn ran beside the first: {second}");
    assert_eq!(agent.sessions_in_turn(), 0, "a finished session kept its lock");
    for chat in 0..20 {
        turn(&agent, &format!("t:made-up-{chat}"), "/help").await;
    }
    assert_eq!(agent.sessions_in_turn(), 0, "made-up chats left locks behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_model_output_never_crashes_the_loop() {
    let llm = FakeLlm::start(vec![
        Reply::Empty,
        Reply::Tools(vec![("clock__now", "{not json"), ("nope__x", "{}")]),
        Reply::Text("recovered"),
    ])
    .await;
    let env = Env::new();
    env.install("clock");
    let agent = agent(&env, &provider("openai", &llm.base)).await;
    let (reply, _) = turn(&agent, "t:1", "hi").await;
    assert_eq!(reply, "recovered");
    let requests = llm.requests();
    assert_eq!(requests.len(), 3, "the empty reply was retried");
    let msgs = texts(&requests[2]);
    assert!(msgs.contains("not a JSON object"), "{msgs}");
    assert!(msgs.contains("there is no tool `nope__x`"), "{msgs}");
}

/// An endpoint that streams without end (a broken local server, or a hostile
/// one) is read up to a bound, and the turn ends with an error that says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_reply_that_never_ends_is_cut_off() {
    let limit = wasiclaw::llm::reply_limit(1024) >> 10;
    for (reply, expect) in [
        (Reply::Endless(true), format!("passed {limit} KiB")),
        (Reply::Endless(false), format!("passed {limit} KiB")),
        (Reply::EndlessError, "HTTP 500".to_string()),
    ] {
        // A 500 is tried four times (three retries).
        let llm = FakeLlm::start(vec![reply; 4]).await;
        let env = Env::new();
        let agent = agent(&env, &provider("openai", &llm.base)).await;
        let turn = tokio::time::timeout(Duration::from_secs(60), turn(&agent, "t:1", "hi")).await;
        let (text, _) = turn.expect("the turn never ended");
        assert!(text.contains(&expect), "{text}");
        assert!(text.contains("could not be reached"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn long_sessions_are_compacted_keeping_the_latest_message() {
    let llm = FakeLlm::start((0..12).map(|_| Reply::Text("noted")).collect()).await;
    let env = Env::new();
    let agent = agent(&env, &format!("[agent]\ncontext_window = 400\n\n{}", provider("openai", &llm.base))).await;
    for i in 0..8 {
        turn(&agent, "t:1", &format!("fact number {i}: {}", "lorem ipsum ".repeat(20))).await;
    }
    let (reply, events) = turn(&agent, "t:1", "the latest question").await;
    assert_eq!(reply, "noted");
    assert!(llm.requests().len() > llm.chat_requests().len(), "no summarisation request was made");
    let last = llm.chat_requests().pop().unwrap();
    let system = last["messages"][0]["content"].as_str().unwrap();
    assert!(system.starts_with("You are wasiclaw") && system.contains(SUMMARY), "{system}");
    let sent = texts(&last);
    assert!(sent.contains("the latest question"));
    assert!(!sent.contains("fact number 0"), "old turns were not compacted away");
    let _ = events;
}

/// A model whose window is smaller than `context_window` (a small local
/// model on a board) refuses a request as too long: older turns are then
/// summarised at once and the request made again, so the conversation goes
/// on; one that does not fit even so says what to do.
#[tokio::test(flavor = "multi_thread")]
async fn a_conversation_the_model_finds_too_long_is_summarised_or_says_what_to_do() {
    let llm = FakeLlm::start((0..20).map(|_| Reply::Text("noted")).collect()).await;
    let env = Env::new();
    let agent = agent(&env, &provider("openai", &llm.base)).await;
    let fact = |i: usize| format!("fact number {i}: {}", "lorem ipsum ".repeat(100));
    turn(&agent, "t:1", &fact(0)).await;
    let first = serde_json::to_vec(&llm.requests()[0]).unwrap().len();
    // Room for about four more facts than the first request held.
    llm.set_window(first + 4 * 1300);
    for i in 1..10 {
        let (reply, _) = turn(&agent, "t:1", &fact(i)).await;
        assert_eq!(reply, "noted", "turn {i}");
    }
    assert!(llm.requests().len() > llm.chat_requests().len(), "no summarisation request was made");
    let last = texts(&llm.chat_requests().pop().unwrap());
    assert!(last.contains("fact number 9") && !last.contains("fact number 0"), "{last}");
    // One round allowed: asking again after the summary is not a round of tools.
    let strict = Env::new();
    let one =
        self::agent(&strict, &format!("[agent]\nmax_tool_iterations = 1\n\n{}", provider("openai", &llm.base))).await;
    for i in 0..8 {
        let (reply, _) = turn(&one, "t:1", &fact(i)).await;
        assert_eq!(reply, "noted", "turn {i} with one round");
    }
    // One message longer than the window: nothing to summarise makes it fit.
    let (reply, _) = turn(&agent, "t:2", &"word ".repeat(3000)).await;
    assert!(reply.contains("/new") && reply.contains("context_window"), "{reply}");
    assert!(!reply.contains("could not be reached"), "{reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daily_budget_stops_model_calls() {
    let llm = FakeLlm::start(vec![Reply::Text("one"), Reply::Text("two")]).await;
    llm.set_usage(40, 20);
    let env = Env::new();
    let agent = agent(&env, &format!("[agent]\ndaily_token_budget = 50\n\n{}", provider("openai", &llm.base))).await;
    assert_eq!(turn(&agent, "t:1", "hi").await.0, "one");
    let (reply, _) = turn(&agent, "t:1", "again").await;
    assert!(reply.contains("token budget (50 tokens) is spent"), "{reply}");
    assert_eq!(llm.requests().len(), 1, "the model was called after the budget was spent");
    let (usage, _) = turn(&agent, "t:1", "/usage").await;
    assert!(usage.contains("this session: 40 tokens in, 20 out") && usage.contains("0 left"), "{usage}");
}

/// A provider's key goes to its base_url and nowhere else: a redirect
/// (which reqwest would follow with Anthropic's `x-api-key` still on, to
/// any host) is not followed, by the model's client or the embeddings',
/// and the owner is told where it pointed.
#[tokio::test(flavor = "multi_thread")]
async fn a_providers_key_does_not_follow_a_redirect() {
    let (redirector, elsewhere) = (Server::start().await, Server::start().await);
    let env = Env::new();
    for name in ["ANTHROPIC_API_KEY", "EMBED_KEY"] {
        assert!(env.cli_stdin(&["secrets", "set", name], "sk-secret-value\n").status.success());
    }
    let to = format!("{}/to/{}", redirector.base, elsewhere.port);
    let config = format!(
        "[agent]\nretries = 0\n\n[memory.embeddings]\nbase_url = \"{to}/v1\"\nmodel = \"e\"\napi_key_secret = \"EMBED_KEY\"\n\n\
         [[providers]]\nkind = \"anthropic\"\nbase_url = \"{to}\"\nmodel = \"m\"\napi_key_secret = \"ANTHROPIC_API_KEY\"\n"
    );
    let agent = agent(&env, &config).await;
    let (reply, _) = turn(&agent, "t:1", "hello").await;
    assert!(elsewhere.seen().is_empty(), "a redirect was followed: {:?}", elsewhere.seen());
    let asked: Vec<String> = redirector.seen().iter().map(|s| s.uri.clone()).collect();
    assert!(asked.iter().any(|u| u.ends_with("/v1/embeddings")) && asked.iter().any(|u| u.ends_with("/v1/messages")));
    let target = format!("a redirect to http://127.0.0.1:{}/v1/messages", elsewhere.port);
    assert!(reply.contains(&target) && reply.contains("set base_url"), "{reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_model_tools_still_work() {
    let env = Env::new();
    env.install("clock");
    let agent = agent(&env, "[agent]\nollama_url = \"http://127.0.0.1:1\"").await;
    let (reply, _) = turn(&agent, "t:1", "hello?").await;
    assert!(reply.contains("No model is configured") && reply.contains("[[providers]]"), "{reply}");
    let (now, _) = turn(&agent, "t:1", r#"/tool clock.now {"tz":"Asia/Tokyo"}"#).await;
    assert!(now.contains("+09:00"), "{now}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_ollama_is_used_when_nothing_is_configured() {
    let llm = FakeLlm::start(vec![Reply::Text("hello from ollama")]).await;
    let env = Env::new();
    let agent = agent(&env, &format!("[agent]\nollama_url = \"{}\"", llm.base)).await;
    assert_eq!(turn(&agent, "t:1", "hi").await.0, "hello from ollama");
    assert_eq!(llm.requests()[0]["model"], "fake-llama:latest");
}

#[tokio::test(flavor = "multi_thread")]
async fn knowledge_skills_load_on_demand_and_the_persona_is_the_owners() {
    let llm = FakeLlm::start(vec![
        Reply::Tools(vec![("read_skill", r#"{"name":"packing"}"#)]),
        Reply::Tools(vec![("clock__now", "{}")]),
        Reply::Text("Pack light."),
    ])
    .await;
    let env = Env::new();
    env.install("clock");
    std::fs::create_dir_all(env.skills().join("packing")).unwrap();
    std::fs::write(
        env.skills().join("packing/SKILL.md"),
        "---\nname: packing\ndescription: How to pack for a trip\n---\nSTEP ONE: roll clothes, never fold.\n",
    )
    .unwrap();
    std::fs::write(env.path().join("persona.md"), "You are Claw, terse and kind.").unwrap();
    let agent = agent(&env, &format!("[agent]\ntool_result_max_chars = 12\n\n{}", provider("openai", &llm.base))).await;
    approve(&agent, "clock");
    let (reply, _) = turn(&agent, "t:1", "help me pack").await;
    assert_eq!(reply, "Pack light.");
    let requests = llm.requests();
    let system = requests[0]["messages"][0]["content"].as_str().unwrap();
    assert!(system.starts_with("You are Claw, terse and kind."), "{system}");
    // Listed as data: nobody approved the file its words come from.
    let listed =
        system.split("<tool-output source=\"knowledge\"").nth(1).and_then(|d| d.split("</tool-output>").next());
    assert!(listed.is_some_and(|d| d.contains("- packing: How to pack for a trip")), "{system}");
    assert!(!system.contains("STEP ONE"), "instructions load only on demand");
    let tools = requests[0]["tools"].to_string();
    assert!(tools.contains("read_skill"));
    // Tool results are capped (12 characters here) with a visible marker.
    let loaded = texts(&requests[1]);
    assert!(loaded.contains("STEP ONE: ro") && loaded.contains("[truncated:"), "{loaded}");
    assert!(!loaded.contains("never fold"), "{loaded}");

    // /tools lists them; /new starts over.
    let (tools, _) = turn(&agent, "t:1", "/tools").await;
    assert!(tools.contains("clock.now") && tools.contains("read_skill"), "{tools}");
    assert!(turn(&agent, "t:1", "/new").await.0.contains("fresh session"));
    let (help, _) = turn(&agent, "t:1", "/help").await;
    assert!(help.contains("/usage"));
    llm.set_usage(1, 1);
    turn(&agent, "t:1", "after new").await;
    let last = texts(&llm.requests().pop().unwrap());
    assert!(last.contains("after new") && !last.contains("help me pack"), "{last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_approved_skills_reach_the_model() {
    let llm = FakeLlm::start(vec![Reply::Text("one"), Reply::Text("two")]).await;
    let env = Env::new();
    env.install("clock");
    let agent = agent(&env, &provider("openai", &llm.base)).await;
    let tools = |request: &Value| -> Vec<String> {
        request["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap().into()).collect()
    };
    turn(&agent, "t:1", "what time is it?").await;
    assert!(!tools(&llm.requests()[0]).contains(&"clock__now".to_string()), "an unapproved skill reached the model");
    approve(&agent, "clock");
    turn(&agent, "t:1", "and now?").await;
    assert!(tools(&llm.requests()[1]).contains(&"clock__now".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_reports_no_usage_still_counts_against_the_budget() {
    let llm = FakeLlm::start(vec![Reply::Text("a reply of some length"), Reply::Text("never sent")]).await;
    llm.set_usage(0, 0);
    let env = Env::new();
    let agent = agent(&env, &format!("[agent]\ndaily_token_budget = 50\n\n{}", provider("openai", &llm.base))).await;
    turn(&agent, "t:1", "hello").await;
    let today = agent.rt.db.usage_today().unwrap();
    assert!(today.input > 0 && today.output > 0, "no usage was counted: {today:?}");
    let (reply, _) = turn(&agent, "t:1", "and again").await;
    assert!(reply.contains("token budget"), "{reply}");
    assert_eq!(llm.requests().len(), 1, "the estimate did not stop the second call");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_stays_lean_and_context_shows_its_parts() {
    let llm = FakeLlm::start(vec![Reply::Text("one")]).await;
    let env = Env::new();
    env.install("clock");
    env.install("notes");
    let agent = agent(&env, &provider("openai", &llm.base)).await;
    approve(&agent, "clock");
    approve(&agent, "notes");
    turn(&agent, "t:1", "hi").await;
    let request = &llm.requests()[0];
    let system = request["messages"][0]["content"].as_str().unwrap().to_string();
    // Only the date: the prompt is the same all day, so providers can cache it.
    assert!(system.contains("Today is"), "{system}");
    assert!(!has_time_of_day(&system), "the system prompt carries the time of day: {system}");
    for tool in request["tools"].as_array().unwrap() {
        let description = tool["function"]["description"].as_str().unwrap();
        assert!(!description.starts_with('['), "the skill name is repeated: {description}");
        assert!(tool["function"]["parameters"].get("x-risk").is_none(), "the host's risk went to the model");
    }
    let (context, _) = turn(&agent, "t:1", "/context").await;
    for part in ["persona and rules", "tools: clock", "tools: notes", "tools: host tools", "history", "total"] {
        assert!(context.contains(part), "{part} missing from /context: {context}");
    }
    // "as sent" is the real request's JSON: the first one, plus the two
    // messages of history since (but no recall, which /context cannot know).
    let figure = |label: &str| -> usize {
        let line = context.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no {label}: {context}"));
        line[label.len()..].split_whitespace().next().unwrap().parse().unwrap()
    };
    let first = request.to_string().len() / 4;
    let sent = figure("as sent");
    assert!(sent >= first && sent <= first + 40, "as sent {sent}, the first request was {first}: {context}");
    assert!(sent > figure("total"), "the JSON around the parts is not counted: {context}");
    assert_eq!(llm.requests().len(), 1, "/context asks no model");
}

/// Whether `s` holds a time of day like `12:34`.
fn has_time_of_day(s: &str) -> bool {
    s.as_bytes().windows(5).any(|w| {
        w[0].is_ascii_digit() && w[1].is_ascii_digit() && w[2] == b':' && w[3].is_ascii_digit() && w[4].is_ascii_digit()
    })
}
