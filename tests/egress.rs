//! Outbound HTTP: only granted scheme/host/port/path/method gets through,
//! denials are values the guest handles, the DNS-rebinding defence holds,
//! and responses are capped. Hook decisions are also tested directly.

use crate::support::{Env, Server, call};
use std::sync::Arc;
use wasiclaw::egress::authorize;
use wasiclaw::grants::{self, Capabilities, GrantChange, GrantRecord, GrantSet, HttpRule, parse_granted_rule};
use wasiclaw::policy::{self, Denial, SecretSource};
use wasiclaw::runtime::Runtime;

/// The hostile fixture, its rule pointed at `base`, the secret it names set.
pub async fn hostile(base: &str, limits: &str) -> (Env, Runtime) {
    let env = Env::new();
    env.install("hostile");
    env.config(&format!("[skills.hostile]\necho_base = \"{base}\"\n{limits}"));
    let rt = env.runtime().await;
    rt.secrets.set("API_TOKEN", "tok-3f9a1c77").unwrap();
    (env, rt)
}

/// A server that echoes what it is sent, and the hostile skill granted
/// it with `API_TOKEN` = `secret`.
async fn echoing(secret: &str) -> (Server, Env, Runtime) {
    let server = Server::start().await;
    let (env, rt) = hostile(&server.base, "").await;
    rt.secrets.set("API_TOKEN", secret).unwrap();
    grant(&rt, "hostile", &[&format!("{}/echo/", server.base)], &["API_TOKEN"]);
    (server, env, rt)
}

pub fn grant(rt: &Runtime, skill: &str, http: &[&str], secrets: &[&str]) {
    let rights = GrantSet {
        http: http.iter().map(|h| parse_granted_rule(h).unwrap()).collect(),
        secrets: secrets.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let change = GrantChange { rights, all: false, carry_over: None };
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
    assert_eq!(
        out.error_kind,
        Some(wasiclaw::runtime::Failure::Denied),
        "the guest sees a denial value, not a crash: {}",
        out.output
    );
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
        assert_eq!(
            out.error_kind,
            Some(wasiclaw::runtime::Failure::Denied),
            "{method} {url} was not denied: {}",
            out.output
        );
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
    assert_eq!(out.error_kind, Some(wasiclaw::runtime::Failure::Denied), "{}", out.output);
    assert!(out.denials[0].contains("non-public address"), "{:?}", out.denials);
    assert!(out.denials[0].contains("grant it by literal address"), "{:?}", out.denials);
    assert!(server.seen().is_empty());
}

/// Each response is buffered in the host (up to `http_response_kb`), so
/// how many requests a call keeps open at once is bounded too
/// (`[limits] http_open`); a response dropped frees its place.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_keeps_at_most_http_open_requests_open() {
    let server = Server::start().await;
    let (_env, rt) = hostile(&server.base, "[limits]\nhttp_open = 3").await;
    grant(&rt, "hostile", &[&format!("{}/echo/", server.base)], &["API_TOKEN"]);
    let url = format!("{}/echo/{{API_TOKEN}}/open", server.base);
    let held = call(&rt, "hostile.hold-requests", &serde_json::json!({"url": url, "n": 20}).to_string()).await;
    assert_eq!(held.error_kind, Some(wasiclaw::runtime::Failure::Denied), "{}", held.output);
    assert!(held.output.contains("after 3 requests"), "{}", held.output);
    assert!(held.denials.iter().any(|d| d.contains("[limits] http_open")), "{:?}", held.denials);
    assert_eq!(server.seen().len(), 3, "the refused request was not sent");
    let dropped =
        call(&rt, "hostile.hold-requests", &serde_json::json!({"url": url, "n": 20, "text": "drop"}).to_string()).await;
    assert!(dropped.ok, "{}", dropped.output);
    // An unsent request body buffers at most 16 KiB in the host.
    let body = call(&rt, "hostile.hold-requests", &serde_json::json!({"url": url, "text": "body"}).to_string()).await;
    let permit: usize = body.output.trim_start_matches("permit ").parse().expect(&body.output);
    assert!(permit > 0 && permit <= 16 << 10, "{}", body.output);
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_are_capped_and_hung_servers_time_out() {
    let server = Server::start().await;
    let limits = "[limits]\nhttp_response_kb = 64\nhttp_request_kb = 1024\ntimeout_ms = 1500";
    let (_env, rt) = hostile(&server.base, limits).await;
    grant(&rt, "hostile", &[&format!("{}/echo/", server.base)], &["API_TOKEN"]);
    let big = call(&rt, "hostile.fetch", &fetch_args(&format!("{}/echo/{{API_TOKEN}}/big", server.base))).await;
    assert!(!big.ok && big.output.contains("HttpResponseBodySize"), "{big:?}");
    let body =
        serde_json::json!({"url": format!("{}/echo/{{API_TOKEN}}/up", server.base), "method": "POST", "body_kb": 2048});
    let up = call(&rt, "hostile.fetch", &body.to_string()).await;
    assert!(!up.ok && up.output.contains("HttpRequestBodySize"), "{up:?}");
    assert!(!server.seen().iter().any(|s| s.uri.ends_with("/up")), "an oversized body was sent");
    let started = std::time::Instant::now();
    let hang = call(&rt, "hostile.fetch", &fetch_args(&format!("{}/echo/{{API_TOKEN}}/hang", server.base))).await;
    assert_eq!(hang.error_kind, Some(wasiclaw::runtime::Failure::Timeout), "{hang:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// Secrets for a decision, without a file or a database.
struct Fixed(Vec<(&'static str, &'static str)>);

impl SecretSource for Fixed {
    fn secret(&self, name: &str) -> Result<Option<String>, String> {
        Ok(self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()))
    }
}

/// Effective rights for `requested` with everything in `granted` granted.
fn rights(requested: Vec<HttpRule>, granted: &[&str], secrets: &[&str]) -> wasiclaw::grants::Effective {
    let requested = Capabilities { http: requested, ..Default::default() };
    let mut record = GrantRecord::default();
    let rights = GrantSet {
        http: granted.iter().map(|u| parse_granted_rule(u).unwrap()).collect(),
        secrets: secrets.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    grants::apply_grant(&mut record, &requested, "sha", &GrantChange { rights, all: false, carry_over: None });
    grants::effective(&requested, "sha", Some(&record))
}

fn rule(url: &str, methods: &[&str], headers: &[(&str, &str)]) -> HttpRule {
    HttpRule {
        url: url.into(),
        methods: methods.iter().map(|m| m.to_string()).collect(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

/// The policy's decision alone: no guest, no database, no network (Spin style).
#[test]
fn policy_decisions() {
    let eff = rights(
        vec![
            rule("http://*:*/", &[], &[]),
            rule("https://93.184.216.34/bot{TOKEN}/", &["POST"], &[("authorization", "Bearer {TOKEN}")]),
        ],
        &["http://*:*/", "http://127.0.0.1:8080/", "https://93.184.216.34/"],
        &["TOKEN"],
    );
    let secrets = Fixed(vec![("TOKEN", "a b/c")]);
    let decide = |method: &str, url: &str| policy::decide("t", &eff, &secrets, method, &url.parse().unwrap());
    let address = |url: &str| {
        let d = decide("GET", url).unwrap();
        policy::check_address(&d, d.host.parse().unwrap())
    };
    // A wildcard grant never reaches private addresses; a literal one does.
    assert!(matches!(address("http://10.0.0.1/"), Err(Denial::NonPublicAddress(_))));
    assert!(address("http://127.0.0.1:8080/x").is_ok());
    assert!(matches!(address("http://127.0.0.1:8081/x"), Err(Denial::NonPublicAddress(_))));
    assert_eq!(decide("GET", "http://user@127.0.0.1:8080/x").unwrap_err(), Denial::Credentials);
    // Secrets go into the rule's place percent-encoded, and into its headers.
    let ok = decide("POST", "https://93.184.216.34/bot%7BTOKEN%7D/send").unwrap();
    assert_eq!(ok.uri.to_string(), "https://93.184.216.34/bota%20b%2Fc/send");
    assert_eq!(ok.headers[0].1, "Bearer a b/c");
    assert_eq!(ok.injected(), vec!["a b/c".to_string()]);
    let method = decide("GET", "https://93.184.216.34/bot{TOKEN}/send").unwrap_err();
    assert!(matches!(method, Denial::MethodNotGranted { .. }), "{method:?}");
    assert!(method.to_string().contains("wasiclaw skills grant t --http https://93.184.216.34/,GET"), "{method}");
}

#[test]
fn a_secret_goes_only_where_its_rule_puts_it() {
    let eff = rights(
        vec![
            rule("https://api.telegram.org/bot{TELEGRAM_TOKEN}/", &["POST"], &[]),
            rule("https://api.example.com/v1/", &["GET"], &[("x-api-key", "{KEY}")]),
        ],
        &["https://api.telegram.org/", "https://api.example.com/"],
        &["TELEGRAM_TOKEN", "KEY"],
    );
    let secrets = Fixed(vec![("TELEGRAM_TOKEN", "123:abc"), ("KEY", "k-9")]);
    let decide = |method: &str, url: &str| policy::decide("t", &eff, &secrets, method, &url.parse().unwrap());
    let ok = decide("POST", "https://api.telegram.org/bot{TELEGRAM_TOKEN}/sendMessage?chat_id=1&text=hi").unwrap();
    assert_eq!(ok.uri.to_string(), "https://api.telegram.org/bot123%3Aabc/sendMessage?chat_id=1&text=hi");
    for (method, url) in [
        ("POST", "https://api.telegram.org/bot{TELEGRAM_TOKEN}/sendMessage?chat_id=X&text={TELEGRAM_TOKEN}"),
        ("POST", "https://api.telegram.org/bot{TELEGRAM_TOKEN}/sendMessage?text=%7BTELEGRAM_TOKEN%7D"),
        ("POST", "https://api.telegram.org/bot{TELEGRAM_TOKEN}/sendMessage?text=%257BTELEGRAM_TOKEN%257D"),
        ("POST", "https://api.telegram.org/bot{TELEGRAM_TOKEN}/{TELEGRAM_TOKEN}/sendMessage"),
        ("GET", "https://api.example.com/v1/search?q={KEY}"),
        ("GET", "https://api.example.com/v1/{KEY}"),
    ] {
        match decide(method, url) {
            Err(Denial::SecretMisplaced { name, .. }) => assert!(name == "TELEGRAM_TOKEN" || name == "KEY"),
            other => panic!("{url} was not refused as a misplaced secret: {other:?}"),
        }
    }
    // A name that is not a granted secret is just text.
    assert!(decide("GET", "https://api.example.com/v1/search?q={NOT_MINE}").is_ok());
}

#[test]
fn every_address_form_of_loopback_is_refused_under_a_wildcard() {
    let eff = rights(vec![rule("http://*:*/", &[], &[])], &["http://*:*/"], &[]);
    let secrets = Fixed(vec![]);
    for url in [
        "http://[::7f00:1]:8080/",
        "http://[::ffff:0:7f00:1]:8080/",
        "http://[::ffff:127.0.0.1]:8080/",
        "http://[2002:7f00:1::]:8080/",
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:8080/",
        "http://[64:ff9b::7f00:1]:8080/",
        "http://[fd00::1]:8080/",
    ] {
        let d = policy::decide("t", &eff, &secrets, "GET", &url.parse().unwrap()).unwrap();
        let verdict = policy::check_address(&d, d.host.parse().unwrap());
        assert!(matches!(verdict, Err(Denial::NonPublicAddress(_))), "{url}: {verdict:?}");
    }
    for path in ["/api/..;/admin", "/api/.;x/admin", "/api/%2e%2e;/admin"] {
        let url = format!("http://example.com:8080{path}");
        let verdict = policy::decide("t", &eff, &secrets, "GET", &url.parse().unwrap());
        assert_eq!(verdict.unwrap_err(), Denial::DotSegments, "{path}");
    }
}

#[test]
fn metadata_addresses_are_never_offered_for_granting() {
    let eff = rights(
        vec![rule("http://*:*/", &[], &[]), rule("http://169.254.169.254/", &[], &[])],
        &["http://*:*/", "http://169.254.169.254/"],
        &[],
    );
    for url in ["http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/", "http://[fd00:ec2::254]/"] {
        let d = policy::decide("t", &eff, &Fixed(vec![]), "GET", &url.parse().unwrap()).unwrap();
        let denial = policy::check_address(&d, d.host.parse().unwrap()).unwrap_err();
        let text = denial.to_string();
        assert!(text.contains("never reachable") && !text.contains("--http"), "{url}: {text}");
    }
}

/// The name is resolved once, every answer is vetted, and what `connect`
/// dials is that vetted answer: a rebinding name cannot hand out a second,
/// private address. (Nothing here connects: the public answer is not ours.)
#[tokio::test(flavor = "multi_thread")]
async fn a_name_is_resolved_once_and_pinned() {
    let (_env, mut rt) = hostile("http://rebind.test:8080", "").await;
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    // First a public answer, then loopback: what a rebinding attacker's
    // DNS server does. The third lookup mixes both.
    rt.resolver = Arc::new(move |_, _| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let answer: Vec<std::net::IpAddr> = match n {
            0 => vec!["1.1.1.1".parse().unwrap()],
            1 => vec!["127.0.0.1".parse().unwrap()],
            _ => vec!["1.1.1.1".parse().unwrap(), "127.0.0.1".parse().unwrap()],
        };
        Box::pin(async move { Ok(answer) })
    });
    grant(&rt, "hostile", &["http://rebind.test:8080/"], &["API_TOKEN"]);
    let entry = rt.registry.find("hostile").unwrap();
    let caps = entry.loaded.as_ref().unwrap().manifest.capabilities.clone();
    let ctx = rt.rights("hostile", &entry.sha256, &caps).unwrap();
    let url: http::Uri = "http://rebind.test:8080/echo/{API_TOKEN}/x".parse().unwrap();
    let first = authorize(&ctx, "GET", &url).await.unwrap();
    assert_eq!(first.addr, "1.1.1.1:8080".parse().unwrap(), "the connection goes to the vetted answer");
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1, "one lookup per request");
    assert_eq!(first.decision.host, "rebind.test", "the name is kept for Host, SNI and the certificate");
    let second = authorize(&ctx, "GET", &url).await.unwrap_err();
    assert!(matches!(second, Denial::NonPublicAddress(_)), "{second:?}");
    let mixed = authorize(&ctx, "GET", &url).await.unwrap_err();
    assert!(matches!(mixed, Denial::NonPublicAddress(_)), "every answer is vetted: {mixed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_moved_into_the_query_never_leaves() {
    let server = Server::start().await;
    let (_env, rt) = hostile(&server.base, "").await;
    grant(&rt, "hostile", &[&format!("{}/echo/", server.base)], &["API_TOKEN"]);
    let base = &server.base;
    for url in [
        format!("{base}/echo/{{API_TOKEN}}/send?text={{API_TOKEN}}"),
        format!("{base}/echo/{{API_TOKEN}}/send?text=%7BAPI_TOKEN%7D"),
        format!("{base}/echo/{{API_TOKEN}}/{{API_TOKEN}}"),
    ] {
        let out = call(&rt, "hostile.fetch", &fetch_args(&url)).await;
        assert_eq!(out.error_kind, Some(wasiclaw::runtime::Failure::Denied), "{url}: {}", out.output);
        assert!(out.denials[0].contains("may only go where its rule puts it"), "{:?}", out.denials);
    }
    // The guest cannot take over the header the rule's template sets.
    let args = serde_json::json!({"url": format!("{base}/echo/{{API_TOKEN}}/h"), "x-api-key": "attacker"});
    let out = call(&rt, "hostile.fetch", &args.to_string()).await;
    assert!(out.ok, "{}", out.output);
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "only the well-placed request arrived: {seen:?}");
    assert!(!seen[0].uri.contains("tok-3f9a1c77/h?") && seen[0].uri.ends_with("/echo/tok-3f9a1c77/h"), "{:?}", seen[0]);
    let header = |name: &str| seen[0].headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(header("x-api-key").as_deref(), Some("tok-3f9a1c77"), "the rule's header, not the guest's");
    assert_eq!(header("x-guest").as_deref(), Some("{API_TOKEN}"), "a guest's own header is never filled in");
    let audit = rt.audit(Some("hostile"), 20).unwrap();
    assert!(audit.iter().filter(|r| r.capability == "http" && !r.allowed).count() >= 3, "{audit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_echoed_spelling_of_a_secret_is_scrubbed() {
    let secret = "tok:3f9a/Z c+1";
    let (server, _env, rt) = echoing(secret).await;
    for how in LEAKS {
        let url = format!("{}/echo/{{API_TOKEN}}/leak?how={how}", server.base);
        let out = call(&rt, "hostile.fetch", &fetch_args(&url)).await;
        assert!(out.ok, "{how}: {}", out.output);
        let seen: serde_json::Value = serde_json::from_str(&out.output).unwrap();
        let headers = seen["headers"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_string());
        let text =
            std::iter::once(seen["body"].as_str().unwrap().to_string()).chain(headers).collect::<Vec<_>>().join("\n");
        for spelled in spellings(secret) {
            assert!(!text.contains(&spelled), "{how}: the guest read {spelled} in {text}");
        }
        if *how != "header-name" && *how != "split" {
            assert!(text.contains("[REDACTED]"), "{how}: {text}");
        }
    }
}

/// A grant names a host; a `Host` header naming another would reach
/// another site behind the same address (a CDN, a shared server routes by
/// it) with the granted one's connection. The guest cannot set it: the
/// request goes with the granted host's name, or not at all.
#[tokio::test(flavor = "multi_thread")]
async fn a_component_cannot_name_another_site_in_the_host_header() {
    let (server, _env, rt) = echoing("tok-3f9a-Zc1").await;
    let args = serde_json::json!({ "url": format!("{}/echo/{{API_TOKEN}}/x", server.base), "host": "admin.internal" });
    let out = call(&rt, "hostile.fetch", &args.to_string()).await;
    assert!(!out.ok && out.output.contains("header host"), "{}", out.output);
    assert!(server.seen().iter().all(|s| s.headers.iter().all(|(k, v)| k != "host" || !v.contains("admin"))));
    let fine = call(&rt, "hostile.fetch", &fetch_args(&format!("{}/echo/{{API_TOKEN}}/x", server.base))).await;
    let authority = server.base.trim_start_matches("http://");
    let host = server.seen().last().unwrap().headers.iter().find(|(k, _)| k == "host").cloned();
    assert!(fine.ok && host == Some(("host".into(), authority.into())), "{host:?} {}", fine.output);
}

/// A compressed answer cannot be scrubbed: a request carrying a secret
/// asks for none whatever the guest asked, and one that comes anyway is
/// refused before the guest reads it.
#[tokio::test(flavor = "multi_thread")]
async fn a_secret_cannot_come_back_compressed() {
    let secret = "tok-3f9a-Zc1";
    let (server, _env, rt) = echoing(secret).await;
    let url = format!("{}/echo/{{API_TOKEN}}/leak?how=coded", server.base);
    let args = serde_json::json!({ "url": url, "accept_encoding": "gzip" }).to_string();
    let out = call(&rt, "hostile.fetch", &args).await;
    let asked = server.seen().last().unwrap().headers.clone();
    assert!(asked.contains(&("accept-encoding".into(), "identity".into())), "{asked:?}");
    assert!(!out.ok, "a compressed answer reached the guest: {}", out.output);
    let reversed: String = secret.chars().rev().collect();
    assert!(!out.output.contains(&reversed), "{}", out.output);
    assert!(rt.audit(Some("hostile"), 20).unwrap().iter().any(|r| r.detail.contains("cannot be scrubbed")));
}

/// An honest server echoing a secret would hand it back a byte range at a
/// time, each piece too short to be recognised: a request carrying a
/// secret asks for no range, whatever the guest asked.
#[tokio::test(flavor = "multi_thread")]
async fn a_secret_cannot_come_back_in_pieces() {
    let secret = "tok-3f9a-Zc1";
    let (server, _env, rt) = echoing(secret).await;
    let url = format!("{}/echo/{{API_TOKEN}}/leak?how=raw", server.base);
    let mut pieces = String::new();
    for range in ["bytes=1-6", "bytes=7-12"] {
        let out = call(&rt, "hostile.fetch", &serde_json::json!({ "url": url, "range": range }).to_string()).await;
        let asked = server.seen().last().unwrap().headers.clone();
        assert!(!asked.iter().any(|(k, _)| k == "range"), "the range reached the server: {asked:?}");
        let body: serde_json::Value = serde_json::from_str(&out.output).unwrap();
        pieces.push_str(body["body"].as_str().unwrap());
    }
    assert!(!pieces.contains("tok-3f") && !pieces.contains("Zc1"), "the secret came back in pieces: {pieces}");
}

/// How `/echo/.../leak?how=` sends the secret back.
pub const LEAKS: &[&str] = &[
    "raw",
    "upper",
    "percent",
    "percent-lower",
    "form",
    "json",
    "base64",
    "base64url",
    "base64-1",
    "base64-2",
    "hex",
    "html",
    "header",
    "header-name",
    "split",
];

/// The spellings a leak test must not find in what the guest read.
pub fn spellings(secret: &str) -> Vec<String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let pct = percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC).to_string();
    vec![
        secret.to_string(),
        secret.to_uppercase(),
        pct.clone(),
        pct.to_lowercase(),
        serde_json::to_string(secret).unwrap().trim_matches('"').replace('/', "\\/"),
        STANDARD.encode(secret),
        URL_SAFE.encode(secret),
        hex::encode(secret),
        secret
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("&#x{b:X};") })
            .collect(),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_tls_handshake_is_audited() {
    let server = Server::start().await;
    // The rule names the literal loopback address, over https, but the
    // server speaks plain HTTP: the handshake fails.
    let tls = format!("https://127.0.0.1:{}", server.port);
    let (_env, rt) = hostile(&tls, "").await;
    grant(&rt, "hostile", &[&format!("{tls}/")], &["API_TOKEN"]);
    let out = call(&rt, "hostile.fetch", &fetch_args(&format!("{tls}/echo/{{API_TOKEN}}/x"))).await;
    assert!(!out.ok, "{}", out.output);
    let audit = rt.audit(Some("hostile"), 10).unwrap();
    assert!(audit.iter().any(|r| !r.allowed && r.detail.contains("TLS handshake failed")), "{audit:?}");
}
