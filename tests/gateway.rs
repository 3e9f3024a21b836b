//! The gateway against hostile web pages and other local users: it answers
//! only to its own names, wants its token on every request (even on
//! loopback), refuses cross-origin writes, and serves webhook answers that
//! cannot act as pages.

use crate::fake_llm::{FakeLlm, Reply};
use crate::support::{Env, free_port};
use reqwest::{StatusCode, redirect};
use serde_json::json;

/// A daemon with the gateway on a free port; returns it with the gateway's
/// address and its token (read as the owner would, with `wasiclaw open`).
fn gateway(env: &Env, llm: &FakeLlm, extra: &str) -> (crate::support::Daemon, String, String) {
    let port = free_port();
    env.config(&format!(
        "[gateway]\nbind = \"127.0.0.1:{port}\"\n{extra}\n[[providers]]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmodel = \"fake\"\n",
        llm.base
    ));
    let daemon = tokio::task::block_in_place(|| env.daemon());
    let open = env.ok(&["open"]);
    let token = open.trim().split("?token=").nth(1).expect("open prints the address with its token").to_string();
    (daemon, format!("http://127.0.0.1:{port}"), token)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(redirect::Policy::none()).build().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_host_is_refused_before_routing() {
    let llm = FakeLlm::start(vec![]).await;
    let env = Env::new();
    let (_daemon, url, token) = gateway(&env, &llm, "");
    let port = url.rsplit(':').next().unwrap();
    // What a DNS-rebinding page sends: its own name, in Host and Origin alike.
    let rebound = client()
        .post(format!("{url}/api/chat"))
        .header("host", format!("evil.example:{port}"))
        .header("origin", format!("http://evil.example:{port}"))
        .bearer_auth(&token)
        .json(&json!({"session": "s", "text": "/tool notes.list {}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), StatusCode::MISDIRECTED_REQUEST);
    let hook = client().get(format!("{url}/hooks/x/")).header("host", "evil.example").send().await.unwrap();
    assert_eq!(hook.status(), StatusCode::MISDIRECTED_REQUEST, "webhook routes too");
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let ok = client().get(&url).header("host", &host).bearer_auth(&token).send().await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK, "{host}");
    }
    assert!(llm.requests().is_empty(), "the agent was driven");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configured_name_is_answered() {
    let llm = FakeLlm::start(vec![]).await;
    let env = Env::new();
    let (_daemon, url, token) = gateway(&env, &llm, "hosts = [\"claw.example.org\"]\n");
    let ok = client().get(&url).header("host", "claw.example.org").bearer_auth(&token).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_needs_the_token_even_on_loopback() {
    let llm = FakeLlm::start(vec![Reply::Text("by bearer"), Reply::Text("by cookie")]).await;
    let env = Env::new();
    let (_daemon, url, token) = gateway(&env, &llm, "");
    let chat = || client().post(format!("{url}/api/chat")).json(&json!({"session": "s", "text": "hi"}));
    assert_eq!(client().get(&url).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(chat().send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(client().get(format!("{url}/?token=wrong")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let on_api = client().post(format!("{url}/api/chat?token={token}")).json(&json!({"session": "s", "text": "hi"}));
    assert_eq!(on_api.send().await.unwrap().status(), StatusCode::UNAUTHORIZED, "?token= is for GET / only");

    // A non-browser client: the bearer header, no Origin.
    let body = chat().bearer_auth(&token).send().await.unwrap().text().await.unwrap();
    assert!(body.contains("by bearer"), "{body}");

    // The browser: `?token=` once, then a cookie the page's scripts cannot read.
    let opened = client().get(format!("{url}/?token={token}")).send().await.unwrap();
    assert_eq!(opened.status(), StatusCode::SEE_OTHER);
    assert_eq!(opened.headers()["location"], "/");
    let set = opened.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let page = client().get(&url).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let csp = csp.to_string();
    // Only the page's own script runs: no inline script or handler that
    // the model's words might smuggle in.
    let html = page.text().await.unwrap();
    let script = html.split_once("<script>").unwrap().1.split_once("</script>").unwrap().0;
    let hash = {
        use base64::Engine as _;
        use sha2::Digest as _;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script))
    };
    let scripts = csp.split(';').find(|d| d.trim().starts_with("script-src")).unwrap().trim();
    assert_eq!(scripts, format!("script-src 'sha256-{hash}'"), "{csp}");
    let same_origin = chat().header("cookie", &cookie).header("origin", &url).send().await.unwrap();
    assert!(same_origin.text().await.unwrap().contains("by cookie"));
    // A cookie alone, without the page's Origin, is not enough to write.
    assert_eq!(chat().header("cookie", &cookie).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    let other_origin = chat().header("cookie", &cookie).header("origin", "http://evil.example").send().await.unwrap();
    assert_eq!(other_origin.status(), StatusCode::FORBIDDEN);
    assert_eq!(llm.requests().len(), 2, "only the two authorized chats reached the model");
}

/// Another account on the same machine can neither read the token nor
/// use the gateway without it.
#[tokio::test(flavor = "multi_thread")]
async fn another_local_user_is_not_the_owner() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc_getuid() } != 0 {
        // Dropping to another uid needs root; CI runs as root.
        eprintln!("skipped: another_local_user_is_not_the_owner needs root to run a process as `nobody`");
        return;
    }
    let llm = FakeLlm::start(vec![]).await;
    let env = Env::new();
    let (_daemon, url, _token) = gateway(&env, &llm, "");
    // The temp dir itself is private to root: let `nobody` reach the state dir, as on a real home.
    let mut dir = env.path().to_path_buf();
    while let Some(parent) = dir.parent() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        if dir != env.path() {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o001)).unwrap();
        }
        dir = parent.to_path_buf();
    }
    let script = format!(
        r#"
import urllib.request, urllib.error, sys
try:
    open({secrets:?}).read(); print("READ-SECRETS")
except OSError: print("no-secrets")
for req in [urllib.request.Request("{url}/"), urllib.request.Request("{url}/api/chat", data=b'{{"session":"x","text":"/tool notes.list {{}}"}}', headers={{"content-type": "application/json"}})]:
    try:
        urllib.request.urlopen(req); print("SERVED")
    except urllib.error.HTTPError as e: print(e.code)
"#,
        secrets = env.path().join("secrets.json").display().to_string(),
    );
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", &script])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(said.split_whitespace().collect::<Vec<_>>(), ["no-secrets", "401", "401"], "{said}");
    assert!(llm.requests().is_empty());
}

unsafe extern "C" {
    #[link_name = "getuid"]
    fn libc_getuid() -> u32;
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_answers_cannot_act_as_pages() {
    let llm = FakeLlm::start(vec![]).await;
    let env = Env::new();
    env.install("hostile-channel");
    let (daemon, url, _token) = gateway(&env, &llm, "\n[skills.hostile-channel]\nmode = \"page\"\n");
    // Asked for nothing, but not approved: it does not answer.
    let held = client().get(format!("{url}/hooks/hostile-channel/")).send().await.unwrap();
    assert_eq!(held.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!held.text().await.unwrap().contains("<script>"));
    env.ok(&["skills", "approve", "hostile-channel"]);
    let page = client().get(format!("{url}/hooks/hostile-channel/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK, "the documented trailing-slash route");
    let h = page.headers().clone();
    assert_eq!(h["content-security-policy"], "sandbox; default-src 'none'");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["content-type"], "text/plain; charset=utf-8");
    assert!(h.get("set-cookie").is_none() && h.get("access-control-allow-origin").is_none(), "{h:?}");
    assert_eq!(h["x-request-id"], "42", "harmless headers pass");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_tool_calls_and_need_the_token() {
    let llm = FakeLlm::start(vec![]).await;
    let env = Env::new();
    env.install("clock");
    let (_daemon, url, token) = gateway(&env, &llm, "");
    assert_eq!(client().get(format!("{url}/metrics")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    tokio::task::block_in_place(|| {
        env.ok(&["tool", "clock.now", "{}"]);
        assert!(!env.cli(&["tool", "clock.now", r#"{"tz":"Mars/Base"}"#]).status.success());
    });
    let page = client().get(format!("{url}/metrics")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = page.text().await.unwrap();
    for line in [
        "wasiclaw_tool_calls_total{outcome=\"ok\"} 1",
        "wasiclaw_tool_calls_total{outcome=\"failed\"} 1",
        "wasiclaw_tool_call_seconds_count 2",
        "wasiclaw_components{state=\"needs-approval\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
}

/// Anyone who can reach the gateway can open connections and send webhooks,
/// so what they hold is bounded: webhooks past the in-flight limit are told
/// to retry before their bodies are read, a body that does not come is
/// answered 408, one for no channel is answered 404 at once without its
/// body or a place, at most `connections` are open at once whatever the
/// flood (the daemon keeps its file descriptors), and idle ones are closed.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_connections_and_webhooks_holds_nothing_for_long() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    let llm = FakeLlm::start(vec![]).await;
    let env = Env::new();
    env.install("webhook");
    let (daemon, url, token) = gateway(&env, &llm, "connections = 24\nrequest_timeout_s = 6\n");
    let compiled = || env.list().iter().any(|s| s["name"] == "webhook" && s["status"] != "compiling");
    crate::support::wait_for("the webhook channel's first compile", std::time::Duration::from_secs(180), compiled);
    let addr = url.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for _ in 0..wasiclaw::gateway::HOOKS_IN_FLIGHT {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let head = format!("POST /hooks/webhook/ HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 100\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        slow.push(s);
    }
    // Once the slow ones hold every place (as `/metrics` shows: a webhook
    // sent before then could take one of theirs), the next webhook is
    // turned away. They hold them for `request_timeout_s`, so a loaded
    // machine has a few seconds to see it. A webhook that reaches the
    // channel, which is not granted its token, is a 503 too, but with no
    // Retry-After.
    let full = format!("wasiclaw_webhooks_in_flight {}", wasiclaw::gateway::HOOKS_IN_FLIGHT);
    let started = std::time::Instant::now();
    loop {
        let page = client().get(format!("{url}/metrics")).bearer_auth(&token).send().await.unwrap();
        if page.text().await.unwrap().lines().any(|l| l == full) {
            break;
        }
        assert!(started.elapsed().as_secs() < 5, "the slow webhooks never held every place");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let started = std::time::Instant::now();
    let busy = loop {
        let r = client().post(format!("{url}/hooks/webhook/")).body("{}").send().await.unwrap();
        if r.headers().contains_key("retry-after") || started.elapsed().as_secs() >= 5 {
            break r;
        }
    };
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.headers()["retry-after"], "1");
    assert!(busy.text().await.unwrap().contains("too many webhook requests"));
    // A body for no channel is not waited for.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let head = format!("POST /hooks/x/ HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 100\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = [0u8; 12];
    tokio::time::timeout(std::time::Duration::from_secs(3), s.read_exact(&mut answer)).await.unwrap().unwrap();
    assert_eq!(&answer, b"HTTP/1.1 404", "the body of a webhook for no channel was waited for");
    let read = |mut s: TcpStream| async move {
        let mut out = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(60), s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the gateway kept the connection open");
        String::from_utf8_lossy(&out).into_owned()
    };
    for s in slow {
        let answer = read(s).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    let freed = client().post(format!("{url}/hooks/webhook/")).body("{}").send().await.unwrap();
    let freed = freed.text().await.unwrap();
    assert!(freed.contains("not fully granted"), "the places were not given back: {freed}");

    let fds = || std::fs::read_dir(format!("/proc/{}/fd", daemon.child.id())).unwrap().count();
    let before = fds();
    let mut flood = Vec::new();
    for _ in 0..60 {
        flood.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let during = fds();
    assert!(during <= before + 24, "{before} descriptors before the flood, {during} during it");
    // Idle connections are closed, so the owner is served in the end.
    let owner = client().get(&url).bearer_auth(&token).send();
    let page = tokio::time::timeout(std::time::Duration::from_secs(60), owner).await;
    assert_eq!(page.expect("the owner was never served").unwrap().status(), StatusCode::OK);
    for s in flood {
        read(s).await;
    }
}

/// A token that was shown or shared can be replaced, and the old one stops
/// working at once, the daemon running: the address, a browser's cookie
/// and a script's bearer header alike. Before, the gateway read its token
/// once at start, and a new one needed knowing its secret's name and a
/// restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_token_shuts_the_old_one_out_at_once() {
    let llm = FakeLlm::start(vec![]).await;
    let env = Env::new();
    let (_daemon, url, old) = gateway(&env, &llm, "");
    let opened = client().get(format!("{url}/?token={old}")).send().await.unwrap();
    let cookie = opened.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let status = async |bearer: Option<&str>, cookie: Option<&str>| {
        let mut request = client().get(format!("{url}/metrics"));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send().await.unwrap().status()
    };
    assert_eq!((status(Some(&old), None).await, status(None, Some(&cookie)).await), (StatusCode::OK, StatusCode::OK));

    let out = tokio::task::block_in_place(|| env.cli(&["open", "--new-token"]));
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
    assert!(crate::support::stderr(&out).contains("made a new token"), "{}", crate::support::stderr(&out));
    let new = crate::support::stdout(&out).trim().split("?token=").nth(1).unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(status(Some(&old), None).await, StatusCode::UNAUTHORIZED, "the old bearer token still works");
    assert_eq!(status(None, Some(&cookie)).await, StatusCode::UNAUTHORIZED, "the old cookie still works");
    let again = client().get(format!("{url}/?token={old}")).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED, "the old address still works");
    assert_eq!(status(Some(&new), None).await, StatusCode::OK);
    assert_eq!(env.ok(&["open"]).trim().split("?token=").nth(1), Some(new.as_str()));

    // Removing the host's own token makes a new one, the same way.
    env.ok(&["secrets", "rm", "WASICLAW_GATEWAY_TOKEN"]);
    assert_eq!(status(Some(&new), None).await, StatusCode::UNAUTHORIZED, "a removed token still works");
    let made = env.ok(&["open"]).trim().split("?token=").nth(1).unwrap().to_string();
    assert_eq!(status(Some(&made), None).await, StatusCode::OK);
}
