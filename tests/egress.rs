//! Outbound HTTP: only granted scheme/host/port/path/method gets through,
//! denials are values the guest handles, the DNS-rebinding defence holds,
//! and responses are capped. Hook decisions are also tested directly.

use crate::support::{Env, Server, call};
use std::sync::{Arc, Mutex};
use wasiclaw::egress::authorize;
use wasiclaw::engine::HostCtx;
use wasiclaw::grants::{self, Capabilities, GrantChange, GrantRecord, GrantSet, HttpRule, parse_granted_rule};
use wasiclaw::runtime::Runtime;
use wasiclaw::secrets::Secrets;
use wasiclaw::store::Store;

/// The hostile fixture, its rule pointed at `base`, the secret it names set.
pub async fn hostile(base: &str, limits: &str) -> (Env, Runtime) {
    let env = Env::new();
    env.install("hostile");
    env.config(&format!("[skills.hostile]\necho_base = \"{base}\"\n{limits}"));
    let rt = env.runtime().await;
    rt.secrets.set("API_TOKEN", "tok-3f9a1c77").unwrap();
    (env, rt)
}

pub fn grant(rt: &Runtime, skill: &str, http: &[&str], secrets: &[&str]) {
    let rights = GrantSet {
        http: http.iter().map(|h| parse_granted_rule(h).unwrap()).collect(),
        secrets: secrets.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let change = GrantChange { rights, all: false };
    rt.change_grant(skill, &change, false).unwrap();
}

fn fetch_args(url: &str) -> String {
    serde_json::json!({ "url": url }).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_grant_means_no_network() {
    let server = Server::start().await;
    let (_env, rt) = hostile(&server.base, "").await;
    let out = call(&rt, "hostile.fetch", &fetch_args(&format!("{}/echo/x", server.base))).await;
    assert!(!out.ok);
    assert_eq!(out.error_kind.as_deref(), Some("denied"), "the guest sees a denial value, not a crash: {}", out.output);
    assert!(out.denials[0].contains("no network access"), "{:?}", out.denials);
    assert!(
        out.denials[0].contains(&format!("wasiclaw skills grant hostile --http {}/", server.base)),
        "{:?}",
        out.denials
    );
    assert!(server.seen().is_empty(), "a denied request reached the server");
    let audit = rt.audit(Some("hostile"), 10).unwrap();
    assert!(audit.iter().any(|r| r.capability == "http" && !r.allowed), "{audit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_granted_prefix_method_and_port_get_through() {
    let server = Server::start().await;
    let (_env, rt) = hostile(&server.base, "").await;
    grant(&rt, "hostile", &[&format!("{}/echo/,GET", server.base)], &["API_TOKEN"]);
    let base = &server.base;
    let allowed = call(&rt, "hostile.fetch", &fetch_args(&format!("{base}/echo/{{API_TOKEN}}/a"))).await;
    assert!(allowed.ok, "{}", allowed.output);
    for (url, method) in [
        (format!("{base}/echo/other"), "GET"),
        (format!("{base}/other"), "GET"),
        (format!("{base}/echo/{{API_TOKEN}}/a"), "POST"),
        (format!("http://127.0.0.1:{}/echo/{{API_TOKEN}}/a", server.port + 1), "GET"),
        (format!("https://127.0.0.1:{}/echo/{{API_TOKEN}}/a", server.port), "GET"),
        (format!("{base}/echo/{{API_TOKEN}}/../../other"), "GET"),
        (format!("{base}/echo/{{API_TOKEN}}/%2e%2e/%2e%2e/other"), "GET"),
    ] {
        let args = serde_json::json!({"url": url, "method": method}).to_string();
        let out = call(&rt, "hostile.fetch", &args).await;
        assert_eq!(out.error_kind.as_deref(), Some("denied"), "{method} {url} was not denied: {}", out.output);
    }
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "only the one granted request may arrive: {seen:?}");
    assert_eq!(seen[0].method, "GET");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_name_resolving_to_loopback_is_refused() {
    let server = Server::start().await;
    let named = format!("http://localhost:{}", server.port);
    let (_env, rt) = hostile(&named, "").await;
    grant(&rt, "hostile", &[&format!("{named}/")], &["API_TOKEN"]);
    let out = call(&rt, "hostile.fetch", &fetch_args(&format!("{named}/echo/{{API_TOKEN}}/a"))).await;
    assert_eq!(out.error_kind.as_deref(), Some("denied"), "{}", out.output);
    assert!(out.denials[0].contains("non-public address"), "{:?}", out.denials);
    assert!(server.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_are_capped_and_hung_servers_time_out() {
    let server = Server::start().await;
    let (_env, rt) = hostile(&server.base, "[limits]\nhttp_response_kb = 64\ntimeout_ms = 1500").await;
    grant(&rt, "hostile", &[&format!("{}/echo/", server.base)], &["API_TOKEN"]);
    let big = call(&rt, "hostile.fetch", &fetch_args(&format!("{}/echo/{{API_TOKEN}}/big", server.base))).await;
    assert!(!big.ok && big.output.contains("HttpResponseBodySize"), "{big:?}");
    let started = std::time::Instant::now();
    let hang = call(&rt, "hostile.fetch", &fetch_args(&format!("{}/echo/{{API_TOKEN}}/hang", server.base))).await;
    assert_eq!(hang.error_kind.as_deref(), Some("timeout"), "{hang:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// The hook's decision alone, without a guest (Spin style).
#[tokio::test(flavor = "multi_thread")]
async fn hook_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let requested = Capabilities {
        http: vec![
            HttpRule { url: "http://*:*/".into(), methods: vec![], headers: vec![] },
            HttpRule {
                url: "https://93.184.216.34/bot{TOKEN}/".into(),
                methods: vec!["POST".into()],
                headers: vec![("authorization".into(), "Bearer {TOKEN}".into())],
            },
        ],
        ..Default::default()
    };
    let mut record = GrantRecord::default();
    let rights = GrantSet {
        http: ["http://*:*/", "http://127.0.0.1:8080/", "https://93.184.216.34/"]
            .iter()
            .map(|u| parse_granted_rule(u).unwrap())
            .collect(),
        secrets: ["TOKEN".to_string()].into(),
        ..Default::default()
    };
    let change = GrantChange { rights, all: false };
    grants::apply_grant(&mut record, &requested, "sha", &change);
    let secrets = Secrets::new(dir.path().join("s.json"));
    secrets.set("TOKEN", "a b/c").unwrap();
    let ctx = HostCtx {
        skill: "t".into(),
        sha256: "sha".into(),
        effective: Arc::new(grants::effective(&requested, "sha", Some(&record))),
        db: Arc::new(Store::open(&dir.path().join("db")).unwrap()),
        secrets,
        settings: None,
        embedder: None,
        denials: Arc::new(Mutex::new(vec![])),
        owner_chat: None,
    };
    let check = |method: &'static str, url: &'static str| {
        let ctx = ctx.clone();
        async move { authorize(&ctx, method, &url.parse().unwrap()).await }
    };
    // A wildcard grant never reaches private addresses; a literal one does.
    assert!(check("GET", "http://10.0.0.1/").await.unwrap_err().contains("private"));
    assert!(check("GET", "http://169.254.169.254/latest/meta-data").await.is_err());
    assert!(check("GET", "http://127.0.0.1:8080/x").await.is_ok());
    assert!(check("GET", "http://127.0.0.1:8081/x").await.is_err());
    assert!(check("GET", "http://user@127.0.0.1:8080/x").await.unwrap_err().contains("credentials"));
    // Secrets go into the URL percent-encoded, and into the rule's headers.
    let ok = check("POST", "https://93.184.216.34/bot%7BTOKEN%7D/send").await.unwrap();
    assert_eq!(ok.uri.to_string(), "https://93.184.216.34/bota%20b%2Fc/send");
    assert_eq!(ok.headers[0].1, "Bearer a b/c");
    assert_eq!(ok.injected, vec!["a b/c".to_string()]);
    assert!(
        check("GET", "https://93.184.216.34/bot{TOKEN}/send").await.unwrap_err().contains("method GET not granted")
    );
}
