//! Talking to the agent as a user does: the terminal chat, the gateway's
//! streaming API and its guards, and the web page in a real browser.

use crate::fake_llm::{FakeLlm, Reply};
use crate::support::{Env, free_port, stderr, stdout};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

fn model_env(llm: &FakeLlm) -> Vec<(&'static str, String)> {
    vec![("WASICLAW_BASE_URL", format!("{}/v1", llm.base)), ("WASICLAW_MODEL", "fake".into())]
}

fn chat(env: &Env, llm: &FakeLlm, input: &str) -> std::process::Output {
    let vars = model_env(llm);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.cli_env(&["chat"], input, &vars)
}

#[tokio::test(flavor = "multi_thread")]
async fn terminal_chat_streams_shows_tools_and_resumes_after_a_restart() {
    let llm = FakeLlm::start(vec![
        Reply::Tools(vec![("clock__now", r#"{"tz":"Europe/Berlin"}"#)]),
        Reply::Text("Nice to meet you, Ada."),
        Reply::Text("Your name is Ada."),
    ])
    .await;
    let env = Env::new();
    env.install("clock");
    env.ok(&["skills", "approve", "clock"]);
    let first = tokio::task::block_in_place(|| chat(&env, &llm, "my name is Ada\n/usage\n"));
    let out = stdout(&first);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(out.contains(r#"⚙ clock.now {"tz":"Europe/Berlin"}"#), "{out}");
    assert!(out.contains("↳ clock.now ok"), "{out}");
    assert!(out.contains("Nice to meet you, Ada."), "{out}");
    assert!(out.contains("this session: 80 tokens in, 20 out"), "/usage counts both model calls: {out}");

    // A new process: the session continues from redb.
    let second = tokio::task::block_in_place(|| chat(&env, &llm, "what is my name?\n"));
    assert!(stdout(&second).contains("Your name is Ada."), "{}", stdout(&second));
    let last = llm.requests().pop().unwrap();
    let sent = last["messages"].to_string();
    assert!(sent.contains("my name is Ada") && sent.contains("Nice to meet you, Ada."), "{sent}");

    let usage: Vec<(String, Value)> = serde_json::from_str(&env.ok(&["usage", "--json"])).unwrap();
    assert_eq!(usage[0].1["calls"], 3);
    assert!(env.ok(&["usage"]).contains("120"), "input tokens of three calls");
}

/// The model's words reach the terminal as text, never as escape
/// sequences: a page it read could otherwise have it set the clipboard
/// (OSC 52), retitle the window, or hide the approval question after it.
#[tokio::test(flavor = "multi_thread")]
async fn the_terminal_chat_prints_no_escape_sequence_the_model_wrote() {
    let llm = FakeLlm::start(vec![Reply::Text("copied\x1b]52;c;cHduZWQ=\x07 \x1b[8mconcealed\rover")]).await;
    let env = Env::new();
    let out = tokio::task::block_in_place(|| chat(&env, &llm, "hi\n"));
    let out = stdout(&out);
    assert!(!out.contains(['\x1b', '\x07', '\r']), "{out:?}");
    assert!(out.contains(r"copied\u{1b}]52;c;cHduZWQ=\u{7} \u{1b}[8mconcealed\rover"), "{out:?}");
}

fn gateway_config(port: u16, llm: &FakeLlm) -> String {
    format!(
        "[gateway]\nbind = \"127.0.0.1:{port}\"\n\n[[providers]]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmodel = \"fake\"\n",
        llm.base
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_streams_replies_and_refuses_other_origins() {
    let llm = FakeLlm::start(vec![Reply::Text("Hello over HTTP, streamed."), Reply::Text("and via the socket")]).await;
    let env = Env::new();
    let port = free_port();
    env.config(&gateway_config(port, &llm));
    let _daemon = tokio::task::block_in_place(|| env.daemon());
    let token = env.ok(&["open"]).trim().split("?token=").nth(1).unwrap().to_string();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let page = client.get(&url).bearer_auth(&token).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("<title>wasiclaw</title>"));
    let resp = client
        .post(format!("{url}/api/chat"))
        .bearer_auth(&token)
        .json(&json!({"session": "s1", "text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let body = resp.text().await.unwrap();
    assert_eq!(body.matches("event: text").count(), 2, "{body}");
    assert!(body.contains("event: done") && body.contains("Hello over HTTP, streamed."), "{body}");
    let evil = client
        .post(format!("{url}/api/chat"))
        .header("origin", "http://evil.example")
        .bearer_auth(&token)
        .json(&json!({"session": "s1", "text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), 403);
    // The terminal chat goes through the same daemon.
    let out = tokio::task::block_in_place(|| env.cli_stdin(&["chat"], "hello\n"));
    assert!(stdout(&out).contains("and via the socket"), "{}{}", stdout(&out), stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_public_gateway_requires_a_token_beyond_guessing() {
    let llm = FakeLlm::start(vec![Reply::Text("ok"), Reply::Text("authorized")]).await;
    let env = Env::new();
    let port = free_port();
    env.config(&gateway_config(port, &llm).replace("127.0.0.1", "0.0.0.0"));
    let refused = tokio::task::block_in_place(|| env.cli(&["run"]));
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("without an auth token"), "{}", stderr(&refused));

    let config = gateway_config(port, &llm)
        .replace("127.0.0.1", "0.0.0.0")
        .replace("[gateway]\n", "[gateway]\ntoken_secret = \"GATEWAY_TOKEN\"\n");
    env.config(&config);
    // The gateway counts no wrong tries, so a token short enough to guess is refused.
    env.cli_stdin(&["secrets", "set", "GATEWAY_TOKEN"], "t0ken");
    let short = tokio::task::block_in_place(|| env.cli_within(&["run"], "", &[], Duration::from_secs(30)));
    assert!(!short.status.success());
    assert!(
        stderr(&short).contains("GATEWAY_TOKEN is 5 characters") && stderr(&short).contains("--random"),
        "{}",
        stderr(&short)
    );
    let doctor = tokio::task::block_in_place(|| env.cli(&["doctor"]));
    assert!(stdout(&doctor).contains("GATEWAY_TOKEN is 5 characters"), "{}", stdout(&doctor));
    let token = "t0ken-".repeat(6);
    env.cli_stdin(&["secrets", "set", "GATEWAY_TOKEN"], &token);
    let _daemon = tokio::task::block_in_place(|| env.daemon());
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(client.get(format!("{url}/?token=wrong")).send().await.unwrap().status(), 401);
    assert_eq!(client.get(format!("{url}/?token={token}")).send().await.unwrap().status(), 303);
    let chat = client.post(format!("{url}/api/chat")).bearer_auth(&token).json(&json!({"session": "a", "text": "hi"}));
    assert!(chat.send().await.unwrap().text().await.unwrap().contains("authorized"));
    // Made short while the daemon runs, it lets nobody in.
    env.cli_stdin(&["secrets", "set", "GATEWAY_TOKEN"], "t0ken");
    for presented in [token.as_str(), "t0ken"] {
        let status = client.get(format!("{url}/metrics")).bearer_auth(presented).send().await.unwrap().status();
        assert_eq!(status, 503, "{presented}");
    }
}

/// A minimal WebDriver client for chromedriver.
struct Browser {
    url: String,
    session: String,
    driver: std::process::Child,
    client: reqwest::Client,
}

impl Browser {
    async fn start() -> Self {
        let port = free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver is missing: apt-get install chromium chromium-driver (.ci/run does this)");
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if client.get(format!("{url}/status")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap().keep();
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     format!("--user-data-dir={}", profile.display())]
        }}}});
        let mut b = Browser { url, session: String::new(), driver, client };
        let created = b.call(reqwest::Method::POST, "/session", caps).await;
        b.session =
            created["sessionId"].as_str().unwrap_or_else(|| panic!("no browser session: {created}")).to_string();
        b
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let path = if self.session.is_empty() { path.to_string() } else { format!("/session/{}{path}", self.session) };
        let resp = self.client.request(method, format!("{}{path}", self.url)).json(&body).send().await.unwrap();
        resp.json::<Value>().await.unwrap()["value"].clone()
    }

    async fn element(&self, css: &str) -> String {
        let v = self.call(reqwest::Method::POST, "/element", json!({"using": "css selector", "value": css})).await;
        v["element-6066-11e4-a52e-4f735466cecf"].as_str().unwrap_or_else(|| panic!("no {css}: {v}")).to_string()
    }

    async fn script(&self, js: &str) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", json!({"script": js, "args": []})).await
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The daemon with its gateway (on the returned port), and a browser that
/// opened the page as the owner does: the address `wasiclaw open` prints
/// (also returned), whose token becomes a cookie.
async fn open_page(env: &Env, llm: &FakeLlm) -> (crate::support::Daemon, Browser, u16, String) {
    let port = free_port();
    env.config(&gateway_config(port, llm));
    let daemon = tokio::task::block_in_place(|| env.daemon());
    let browser = Browser::start().await;
    let open = env.ok(&["open"]).trim().to_string();
    browser.call(reqwest::Method::POST, "/url", json!({"url": open})).await;
    (daemon, browser, port, open)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_chat_streams_a_reply_in_a_real_browser() {
    let llm = FakeLlm::start(vec![Reply::Text("Streaming into the page works.")]).await;
    let env = Env::new();
    let (_daemon, browser, port, _) = open_page(&env, &llm).await;
    let address = browser.script("return location.href;").await;
    assert_eq!(address, format!("http://127.0.0.1:{port}/"), "the token left the address bar");
    let input = browser.element("#input").await;
    browser.call(reqwest::Method::POST, &format!("/element/{input}/value"), json!({"text": "hello there"})).await;
    browser.click("#send").await;
    let reply = browser
        .until("the reply", "const b = document.querySelector('.bot[data-done]'); return b && b.textContent;")
        .await;
    assert_eq!(reply, "Streaming into the page works.");
    let user = browser.script("return document.querySelector('.user').textContent;").await;
    assert_eq!(user, "hello there");

    // A page on another origin, in the same browser (with the owner's
    // cookie), tries to drive the agent and read the reply.
    let evil = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil_url = format!("http://{}/", evil.local_addr().unwrap());
    let script = format!(
        "<html><body><script>fetch('http://127.0.0.1:{port}/api/chat', {{method: 'POST', credentials: 'include', \
         headers: {{'content-type': 'text/plain'}}, body: JSON.stringify({{session: 'x', text: 'list my notes'}})}})\
         .then(r => r.text()).then(t => document.title = 'READ ' + t, e => document.title = 'BLOCKED');</script></body></html>"
    );
    let app = axum::Router::new().route("/", axum::routing::get(move || async move { axum::response::Html(script) }));
    tokio::spawn(async move { axum::serve(evil, app).await.unwrap() });
    browser.call(reqwest::Method::POST, "/url", json!({"url": evil_url})).await;
    let title = browser.until("the other page's verdict", "return document.title || null;").await;
    assert_eq!(title, "BLOCKED", "another origin read a reply");
    assert_eq!(llm.requests().len(), 1, "another origin drove the agent");
}

impl Browser {
    /// Poll `js` until it returns something other than null or false.
    async fn until(&self, what: &str, js: &str) -> Value {
        for _ in 0..300 {
            let v = self.script(js).await;
            if !v.is_null() && v != false {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}: {js}");
    }

    async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{e}/click"), json!({})).await;
    }

    /// The text of the dialog the page opens, once it is open.
    async fn dialog(&self, what: &str) -> String {
        for _ in 0..300 {
            if let Value::String(text) = self.call(reqwest::Method::GET, "/alert/text", json!({})).await {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for a dialog: {what}");
    }
}

const MARKDOWN: &str = "**Bold** and `code`\n\n- one\n- two\n\n<img src=x onerror=\"document.title='pwned'\"> \
                        [bad](javascript:document.title='pwned') [good](https://example.org/)";

#[tokio::test(flavor = "multi_thread")]
async fn the_owners_page_keeps_history_renders_markdown_safely_and_grants_a_skill() {
    let llm = FakeLlm::start(vec![Reply::Tools(vec![("clock__now", "{}")]), Reply::Text(MARKDOWN)]).await;
    let env = Env::new();
    env.install("clock");
    env.install("notes");
    env.ok(&["skills", "approve", "clock"]);
    let (_daemon, browser, port, open) = open_page(&env, &llm).await;
    let input = browser.element("#input").await;
    browser.call(reqwest::Method::POST, &format!("/element/{input}/value"), json!({"text": "what time is it?"})).await;
    browser.click("#send").await;
    browser.until("the reply", "return document.querySelector('.bot[data-done]');").await;

    // Markdown became tags; the model's HTML and script links did not.
    let page = browser
        .script(
            "const b = document.querySelector('.bot[data-done]'); return {strong: b.querySelector('strong')?.textContent, \
             items: b.querySelectorAll('li').length, imgs: document.querySelectorAll('#log img').length, \
             links: [...b.querySelectorAll('a')].map(a => a.href), text: b.textContent, title: document.title, \
             tool: document.querySelector('details.tool summary')?.textContent, \
             folded: !document.querySelector('details.tool').open};",
        )
        .await;
    assert_eq!(page["strong"], "Bold", "{page}");
    assert_eq!(page["items"], 2, "{page}");
    assert_eq!(page["imgs"], 0, "the model's HTML must stay text: {page}");
    assert_eq!(page["links"], json!(["https://example.org/"]), "only http(s) links: {page}");
    assert!(page["text"].as_str().unwrap().contains("<img src=x"), "shown as text: {page}");
    assert_ne!(page["title"], "pwned");
    assert_eq!((&page["tool"], &page["folded"]), (&json!("⚙ clock.now"), &json!(true)), "{page}");

    // A reload shows the conversation again.
    browser.call(reqwest::Method::POST, "/refresh", json!({})).await;
    let after = browser
        .until(
            "the history",
            "const b = document.querySelector('.bot strong'); return b && {user: document.querySelector('.user').textContent, \
             bold: b.textContent, tool: document.querySelector('details.tool summary')?.textContent};",
        )
        .await;
    assert_eq!(after, json!({"user": "what time is it?", "bold": "Bold", "tool": "⚙ clock.now"}));

    // On a phone's width, the skills view: notes asks for kv and has nothing.
    browser.call(reqwest::Method::POST, "/window/rect", json!({"width": 390, "height": 800})).await;
    browser.click("nav button[data-view=skills]").await;
    let card = browser.until("the skills", "return document.querySelector('#skill-notes')?.textContent;").await;
    let card = card.as_str().unwrap();
    assert!(
        card.contains("needs-approval") && card.contains("asks for: kv") && card.contains("has: nothing"),
        "{card}"
    );
    let fits = browser.script("return document.documentElement.scrollWidth <= window.innerWidth;").await;
    assert_eq!(fits, true, "the page scrolls sideways on a phone");

    // A grant from the page, confirmed in the browser's dialog.
    browser.click("#skill-notes .grant-all").await;
    let asked = browser.call(reqwest::Method::GET, "/alert/text", json!({})).await;
    assert!(asked.as_str().unwrap().contains("Grant notes: kv?"), "{asked}");
    browser.call(reqwest::Method::POST, "/alert/accept", json!({})).await;
    browser.until("the grant", "return document.querySelector('#skill-notes .state')?.textContent === 'active';").await;
    let notes: Value = serde_json::from_str(&env.ok(&["skills", "inspect", "notes", "--json"])).unwrap();
    assert_eq!((&notes["status"], &notes["granted"]["kv"]), (&json!("active"), &json!(true)), "{notes}");

    // Dismissing the dialog changes nothing.
    browser.click("#skill-notes .revoke-all").await;
    browser.call(reqwest::Method::POST, "/alert/dismiss", json!({})).await;
    let notes: Value = serde_json::from_str(&env.ok(&["skills", "inspect", "notes", "--json"])).unwrap();
    assert_eq!(notes["granted"]["kv"], true);

    // The audit view shows the grant's effect: notes' kv use, filterable.
    env.ok(&["tool", "notes.add", r#"{"text":"oat milk"}"#]);
    browser.click("nav button[data-view=audit]").await;
    let rows = browser.until("audit rows", "return document.querySelector('#audit-rows table')?.textContent;").await;
    assert!(rows.as_str().unwrap().contains("notes"), "{rows}");
    browser.script("const s = document.getElementById('audit-allowed'); s.value = 'false'; s.dispatchEvent(new Event('change'));").await;
    browser
        .until("the filter", "return document.querySelector('#audit-rows')?.textContent === 'No records match.';")
        .await;

    // Jobs, with their history folded.
    env.ok(&["cron", "add", "0 8 * * mon-fri", "--tz", "Europe/Berlin", "--tool", "clock.now", "--name", "morning"]);
    browser.click("nav button[data-view=jobs]").await;
    let job = browser.until("the jobs", "return document.querySelector('.job')?.textContent;").await;
    assert!(job.as_str().unwrap().contains("morning") && job.as_str().unwrap().contains("clock.now"), "{job}");
    browser.click(".job details summary").await;
    browser
        .until("the runs", "return document.querySelector('.job details')?.textContent.includes('never ran');")
        .await;

    // Tokens per day: one bar for today.
    browser.click("nav button[data-view=tokens]").await;
    // Wait for the chart itself: counting bars before it is drawn would count none.
    let bars = browser.until("the chart", "return document.querySelector('#tokens .bars')?.children.length;").await;
    assert_eq!(bars, 1);

    // The owner API takes only what the page shows: no secrets, no tool calls.
    let token = open.split("token=").nth(1).unwrap();
    let client = reqwest::Client::new();
    // A grant pinned to a build the page showed earlier is refused once the
    // component changed (the page sends the build it shows).
    let change = json!({"http": [], "secrets": [], "all": true});
    let stale = json!({"op": "grant", "name": "clock", "change": change, "build": "0123456789ab"});
    let r = client.post(format!("http://127.0.0.1:{port}/api/owner")).bearer_auth(token).json(&stale);
    let answer = r.send().await.unwrap().text().await.unwrap();
    assert!(answer.contains("changed since you read it"), "{answer}");
    for refused in [
        json!({"op": "secrets", "change": "names"}),
        json!({"op": "tool", "skill": "notes", "tool": "list", "args": "{}"}),
    ] {
        let r = client.post(format!("http://127.0.0.1:{port}/api/owner")).bearer_auth(token).json(&refused);
        assert_eq!(r.send().await.unwrap().status(), 403, "{refused}");
    }
}

/// The page shows what the agent remembers, the jobs it keeps and what
/// they reported, and what the model set aside or cancelled, to bring
/// back; every change is confirmed in the browser's dialog first, and
/// lands in the database.
/// What the host says of a grant reaches the owner on the page too: here,
/// that the changed build they approve asks again where they had answered
/// "always" to the old one. Before, the page dropped what a grant said.
#[tokio::test(flavor = "multi_thread")]
async fn the_owners_page_says_what_the_host_said_of_a_grant() {
    let llm = FakeLlm::start(vec![]).await;
    let env = Env::new();
    env.install("notes");
    env.ok(&["skills", "grant", "notes", "--all-requested"]);
    wasiclaw::runtime::Runtime::open(env.paths()).unwrap().db.approve_always("notes.add").unwrap();
    let rebuilt = crate::support::rebuilt(&crate::support::guest("notes"), "page");
    std::fs::copy(rebuilt, env.skills().join("notes.wasm")).unwrap();
    let (_daemon, browser, _, _) = open_page(&env, &llm).await;
    browser.click("nav button[data-view=skills]").await;
    browser.until("the changed build", "return !!document.querySelector('#skill-notes .approve');").await;
    browser.click("#skill-notes .approve").await;
    assert!(browser.dialog("the question").await.starts_with("Approve this build of notes"));
    browser.call(reqwest::Method::POST, "/alert/accept", json!({})).await;
    let said = browser.dialog("what the host said").await;
    assert!(said.contains("the \"always\" answers you gave notes (for 1 tool(s))"), "{said}");
    browser.call(reqwest::Method::POST, "/alert/accept", json!({})).await;
    browser
        .until("the approval", "return document.querySelector('#skill-notes .state')?.textContent === 'active';")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_owners_page_shows_memories_notifications_and_what_the_model_set_aside() {
    let llm = FakeLlm::start(vec![
        Reply::Tools(vec![("memory_forget", r#"{"id":3}"#), ("cancel_task", r#"{"id":2}"#)]),
        Reply::Text("Tidied."),
    ])
    .await;
    let env = Env::new();
    env.install("clock");
    env.ok(&["memory", "add", "Ada likes tulips", "--tag", "people"]);
    env.ok(&["memory", "add", "Always answer in English", "--pin"]);
    env.ok(&["memory", "add", "the boiler code is 4471"]);
    env.ok(&["cron", "add", "every 1h", "--tool", "clock.now", "--name", "hourly"]);
    env.ok(&["cron", "add", "every 2h", "--prompt", "water the plants", "--name", "plants"]);
    let tidied = tokio::task::block_in_place(|| chat(&env, &llm, "tidy up\n"));
    assert!(stdout(&tidied).contains("Tidied."), "{}{}", stdout(&tidied), stderr(&tidied));
    let (_daemon, browser, _, _) = open_page(&env, &llm).await;
    // Click, accept the dialog that asks `question`, and wait until the
    // page shows `shown` and no longer shows `gone`.
    let change = async |css: &str, question: &str, shown: &str, gone: &str| {
        browser.click(css).await;
        let asked = browser.call(reqwest::Method::GET, "/alert/text", json!({})).await;
        assert!(asked.as_str().unwrap().contains(question), "{asked}");
        browser.call(reqwest::Method::POST, "/alert/accept", json!({})).await;
        let js = format!("return document.querySelector('{shown}') && !document.querySelector('{gone}');");
        browser.until(question, &js).await;
    };
    let filter = async |text: &str| {
        let js = format!(
            "const f = document.getElementById('memory-text'); f.value = '{text}'; f.dispatchEvent(new Event('input'));"
        );
        browser.script(&js).await;
    };

    browser.click("nav button[data-view=memory]").await;
    let js = "return document.querySelector('#aside-3') && document.querySelector('#memory-rows').textContent;";
    let rows = browser.until("the memories", js).await;
    let rows = rows.as_str().unwrap();
    assert!(rows.starts_with("2 memories") && rows.contains("Ada likes tulips"), "{rows}");
    let pinned = browser.script("return document.querySelector('#memory-2').textContent;").await;
    assert!(pinned.as_str().unwrap().contains("pinned: in every conversation"), "{pinned}");
    let days = format!("kept {} days", wasiclaw::memory::FORGOTTEN_DAYS);
    assert!(rows.contains(&days) && rows.contains("4471"), "{rows}");
    filter("PEOPLE").await;
    let js = "return document.querySelector('#memory-rows h3')?.textContent === '2 memories, 1 match';";
    browser.until("the filter", js).await;
    filter("").await;

    change("#aside-3 .restore", "Bring memory 3 back?", "#memory-3", "#aside-3").await;
    assert!(env.ok(&["memory", "list"]).contains("the boiler code is 4471"));
    change("#memory-2 .unpin", "Recall memory 2 only when it is relevant?", "#memory-2 .pin", "#memory-2 .unpin").await;
    assert!(!env.ok(&["memory", "list"]).contains('📌'), "still pinned");
    change("#memory-1 .forget", "Forget memory 1 for good?", "#memory-3", "#memory-1").await;
    assert!(!env.ok(&["memory", "list"]).contains("tulips") && !env.ok(&["memory", "forgotten"]).contains("tulips"));

    browser.click("nav button[data-view=jobs]").await;
    let cancelled = browser.until("the job", "return document.querySelector('#cancelled-2')?.textContent;").await;
    assert!(cancelled.as_str().unwrap().contains("water the plants"), "{cancelled}");
    let jobs = browser.script("return document.querySelector('#jobs').textContent;").await;
    assert!(jobs.as_str().unwrap().contains(&format!("kept {} days", wasiclaw::jobs::CANCELLED_DAYS)), "{jobs}");
    change("#cancelled-2 .restore", "Bring job #2 back?", "#job-2", "#cancelled-2").await;
    assert!(env.ok(&["cron", "list"]).contains("water the plants"));
    // A job's result for the terminal (the default) is on the page too.
    env.ok(&["skills", "approve", "clock"]);
    env.ok(&["cron", "run-now", "1"]);
    browser.click("nav button[data-view=notifications]").await;
    let told = browser.until("the result", "return document.querySelector('.notification')?.textContent;").await;
    assert!(told.as_str().unwrap().contains("[hourly → terminal:default]"), "{told}");
    browser.click("nav button[data-view=jobs]").await;
    browser.until("the jobs", "return document.querySelector('#job-1');").await;
    change("#job-1 .remove", "Remove job #1 for good?", "#job-2", "#job-1").await;
    assert!(!env.ok(&["cron", "list"]).contains("hourly"));
}
