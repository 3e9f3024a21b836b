//! Property tests for the parsers that take outside input: URL patterns and
//! the egress decision, manifests, config, model replies, tool-call
//! arguments and webhook payloads through the bundled channels. Each
//! property runs a bounded number of cases so the suite stays inside CI's
//! time; none may panic, and each checks what must hold of its output.

use crate::support::Env;
use proptest::prelude::*;
use std::sync::{Arc, Mutex, OnceLock};
use wasiclaw::grants::{
    self, Capabilities, GrantChange, GrantRecord, GrantSet, HttpRule, UrlPattern, parse_granted_rule,
};
use wasiclaw::policy::{self, Denial, SecretSource};

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig { cases: n, failure_persistence: None, ..ProptestConfig::default() }
}

/// One tokio runtime for the async properties.
fn tokio() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap())
}

struct OneSecret;

impl SecretSource for OneSecret {
    fn secret(&self, name: &str) -> Result<Option<String>, String> {
        Ok((name == "TOKEN").then(|| "S3CR3T-VALUE".to_string()))
    }
}

fn telegram_like() -> grants::Effective {
    let requested = Capabilities {
        http: vec![HttpRule { url: "https://api.example.com/bot{TOKEN}/".into(), methods: vec![], headers: vec![] }],
        ..Default::default()
    };
    let mut record = GrantRecord::default();
    let rights = GrantSet {
        http: vec![parse_granted_rule("https://api.example.com/").unwrap()],
        secrets: ["TOKEN".to_string()].into(),
        ..Default::default()
    };
    grants::apply_grant(&mut record, &requested, "sha", &GrantChange { rights, all: false, carry_over: None });
    grants::effective(&requested, "sha", Some(&record))
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn url_patterns_never_panic(s in "\\PC{0,60}") {
        let _ = UrlPattern::parse(&s);
        let _ = parse_granted_rule(&s);
        let _ = policy::has_dot_segments(&s);
    }

    /// Whatever path and query a guest writes, the secret appears exactly
    /// once in the outgoing URL, where the rule put it, or the request is
    /// refused.
    #[test]
    fn a_decision_never_moves_a_secret(path in "[a-zA-Z0-9/%{}._;~+-]{0,30}", query in "[a-zA-Z0-9=&%{}_+]{0,30}") {
        let eff = telegram_like();
        let url = format!("https://api.example.com/bot{{TOKEN}}/{path}?{query}");
        let Ok(uri) = url.parse::<http::Uri>() else { return Ok(()) };
        match policy::decide("t", &eff, &OneSecret, "GET", &uri) {
            Ok(d) => {
                let out = d.uri.to_string();
                prop_assert!(out.starts_with("https://api.example.com/botS3CR3T-VALUE/"), "{}", out);
                prop_assert_eq!(out.matches("S3CR3T-VALUE").count(), 1, "{}", out);
                prop_assert!(!policy::has_dot_segments(d.uri.path()), "{}", out);
            }
            Err(Denial::SecretMisplaced { .. } | Denial::DotSegments | Denial::NotGranted { .. } | Denial::Pattern(_)) => {}
            Err(other) => prop_assert!(false, "unexpected denial {:?}", other),
        }
    }

    #[test]
    fn address_checks_never_panic(bytes in proptest::array::uniform16(any::<u8>())) {
        let ip = std::net::IpAddr::V6(bytes.into());
        // Whatever embeds a non-public IPv4 address is non-public itself.
        let public = policy::is_public(ip);
        if let Some(v4) = std::net::Ipv6Addr::from(bytes).to_ipv4_mapped() {
            prop_assert_eq!(public, policy::is_public(v4.into()));
        }
        let _ = policy::never_reachable(ip);
    }

    #[test]
    fn config_files_never_panic(text in "\\PC{0,200}") {
        let _ = toml::from_str::<wasiclaw::config::Config>(&text);
    }
}

fn tool_spec(name: String, description: String, schema_len: usize) -> wasiclaw::component::ToolSpec {
    wasiclaw::component::ToolSpec {
        name,
        description,
        parameters: serde_json::json!({"type": "object", "description": "d".repeat(schema_len)}),
    }
}

proptest! {
    #![proptest_config(cases(256))]

    /// A manifest is accepted only within its bounds, and a refusal says
    /// which rule it broke.
    #[test]
    fn manifests_are_bounded(
        name in "\\PC{0,70}",
        tools in proptest::collection::vec(("[a-z_-]{0,70}", "\\PC{0,40}", 0usize..10_000), 0..80),
        rules in proptest::collection::vec("\\PC{0,40}", 0..40),
    ) {
        let manifest = wasiclaw::component::Manifest {
            name,
            version: "1".into(),
            description: String::new(),
            tools: tools.iter().cloned().map(|(n, d, s)| tool_spec(n, d, s)).collect(),
            capabilities: Capabilities {
                http: rules.iter().map(|u| HttpRule { url: u.clone(), methods: vec![], headers: vec![] }).collect(),
                ..Default::default()
            },
        };
        match wasiclaw::component::validate(&manifest) {
            Ok(()) => {
                prop_assert!(tools.len() <= wasiclaw::component::MAX_TOOLS);
                prop_assert!(rules.len() <= wasiclaw::component::MAX_RULES);
                prop_assert!(tools.iter().all(|t| t.2 + 64 <= wasiclaw::component::MAX_SCHEMA));
            }
            Err(why) => prop_assert!(!why.is_empty()),
        }
    }
}

/// A loopback model server whose next reply body is set per case.
fn model_server() -> (&'static str, &'static Mutex<String>) {
    static BODY: OnceLock<Mutex<String>> = OnceLock::new();
    static BASE: OnceLock<String> = OnceLock::new();
    let body = BODY.get_or_init(Mutex::default);
    let base = BASE.get_or_init(|| {
        let listener = tokio().block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(|| async {
            let body = BODY.get().unwrap().lock().unwrap().clone();
            ([("content-type", "text/event-stream")], body)
        });
        tokio().spawn(async move { axum::serve(listener, app).await.unwrap() });
        base
    });
    (base.as_str(), body)
}

fn sse_event() -> impl Strategy<Value = String> {
    let text = "\\PC{0,12}".prop_map(|t| serde_json::json!({"choices": [{"delta": {"content": t}}]}).to_string());
    let call = ("\\PC{0,8}", "\\PC{0,16}", 0u32..3).prop_map(|(n, a, i)| {
        serde_json::json!({"choices": [{"delta": {"tool_calls": [{"index": i, "id": "c", "function": {"name": n, "arguments": a}}]}}]})
            .to_string()
    });
    let anthropic = ("\\PC{0,12}", 0u32..3).prop_map(|(t, i)| {
        serde_json::json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": t}})
            .to_string()
    });
    prop_oneof![text, call, anthropic, "\\PC{0,30}", Just("[DONE]".to_string()), Just("{}".to_string())]
}

proptest! {
    #![proptest_config(cases(64))]

    /// Any stream a model server sends ends in a reply or an error.
    #[test]
    fn model_replies_never_panic(events in proptest::collection::vec(sse_event(), 0..8), anthropic in any::<bool>()) {
        let (base, body) = model_server();
        *body.lock().unwrap() = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        let dir = tempfile::tempdir().unwrap();
        let kind = if anthropic { wasiclaw::config::ProviderKind::Anthropic } else { wasiclaw::config::ProviderKind::Openai };
        let provider = wasiclaw::config::ProviderConfig {
            kind,
            base_url: if anthropic { base.to_string() } else { format!("{base}/v1") },
            model: "m".into(),
            api_key_secret: None,
            price_input_per_mtok: 0.0,
            price_output_per_mtok: 0.0,
            timeout_s: 5,
        };
        let llm = wasiclaw::llm::Llm::new(vec![provider], wasiclaw::secrets::Secrets::new(dir.path().join("s")), 0);
        let messages = [wasiclaw::llm::Message::User { text: "hi".into() }];
        let req = wasiclaw::llm::ChatRequest { system: "s", messages: &messages, tools: &[], max_tokens: 10 };
        let _ = tokio().block_on(llm.chat(&req, &mut |_| {}));
    }
}

/// An in-process runtime with the clock skill and the generic webhook and
/// WhatsApp channels, approved and configured.
struct Hooks {
    _env: Env,
    rt: Arc<wasiclaw::runtime::Runtime>,
    channels: Arc<wasiclaw::channels::Channels>,
}

fn hooks() -> &'static Hooks {
    static HOOKS: OnceLock<Hooks> = OnceLock::new();
    HOOKS.get_or_init(|| {
        let env = Env::new();
        for c in ["clock", "webhook", "whatsapp"] {
            env.install(c);
        }
        env.config(
            "[agent]\nollama_url = \"http://127.0.0.1:1\"\n\n[skills.webhook]\ncallback_url = \"http://127.0.0.1:9/reply\"\n\n\
             [skills.whatsapp]\nphone_number_id = \"1\"\napi_base = \"http://127.0.0.1:9\"\n",
        );
        tokio().block_on(async {
            let rt = Arc::new(env.runtime().await);
            for (name, value) in [("WEBHOOK_TOKEN", "hook-token"), ("WHATSAPP_VERIFY_TOKEN", "verify"), ("WHATSAPP_APP_SECRET", "app"), ("WHATSAPP_TOKEN", "t")] {
                rt.secrets.set(name, value).unwrap();
            }
            for c in ["clock", "webhook", "whatsapp"] {
                rt.change_grant(c, &GrantChange { all: true, ..Default::default() }, false).unwrap();
            }
            let agent = Arc::new(wasiclaw::agent::Agent::new(rt.clone(), None).await);
            let channels = wasiclaw::channels::Channels::new(agent);
            Hooks { _env: env, rt, channels }
        })
    })
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "\\PC{0,16}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("chat|sender|text|id|[a-z]{1,6}", inner, 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn request(
    method: &str,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> wasiclaw::contract::HttpRequest {
    wasiclaw::contract::HttpRequest { method: method.into(), path: String::new(), query, headers, body }
}

proptest! {
    #![proptest_config(cases(48))]

    /// The generic webhook channel takes any JSON with its token: the
    /// answer is never a crash (5xx).
    #[test]
    fn webhook_payloads_never_crash_the_channel(value in json_value(), raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        let h = hooks();
        let bearer = vec![("authorization".to_string(), "Bearer hook-token".to_string())];
        for body in [value.to_string().into_bytes(), raw.clone()] {
            let reply = tokio().block_on(h.channels.webhook("webhook", request("POST", String::new(), bearer.clone(), body)));
            prop_assert!(reply.status < 500, "{} {}", reply.status, String::from_utf8_lossy(&reply.body));
        }
    }

    /// WhatsApp's verification handshake reads the query: any query,
    /// escapes and multi-byte characters included, gets an answer.
    #[test]
    fn webhook_queries_never_crash_the_channel(query in "[a-z.=&%+é0-9A-F]{0,40}") {
        let h = hooks();
        let reply = tokio().block_on(h.channels.webhook("whatsapp", request("GET", query.clone(), vec![], vec![])));
        prop_assert!(reply.status < 500, "{query:?}: {} {}", reply.status, String::from_utf8_lossy(&reply.body));
    }

    /// Tool-call arguments from a model are taken as untrusted text.
    #[test]
    fn tool_arguments_never_crash_a_call(args in "\\PC{0,40}", value in json_value()) {
        let h = hooks();
        for args in [args.clone(), value.to_string()] {
            let _ = tokio().block_on(h.rt.call_tool("clock", "now", &args));
        }
    }
}

/// One step of two calls of one component using kv: a call stages a write
/// (`None`: a delete) of one of ten keys (more than one call may touch
/// with a quota of 3 keys), or ends.
#[derive(Debug, Clone)]
enum KvStep {
    Put(usize, u8, Option<usize>),
    End(usize),
}

fn kv_step() -> impl Strategy<Value = KvStep> {
    let len = prop_oneof![Just(0usize), Just(10), Just(300_000), Just(500_000)];
    prop_oneof![
        4 => (0..2usize, 0..10u8, proptest::option::weighted(0.6, len)).prop_map(|(c, k, v)| KvStep::Put(c, k, v)),
        1 => (0..2usize).prop_map(KvStep::End),
    ]
}

proptest! {
    #![proptest_config(cases(48))]

    /// Two calls staging kv writes against a model: each reads its own
    /// writes over what is committed and lists the same; an end commit
    /// applies all of a call's writes, or none exactly when together with
    /// what is committed they would pass the quota; the kept usage always
    /// equals what is committed and stays within the quota.
    #[test]
    fn staged_kv_writes_keep_the_quota_and_read_their_own(steps in proptest::collection::vec(kv_step(), 1..40)) {
        use std::collections::BTreeMap;
        let env = Env::new();
        let limits = wasiclaw::config::Limits { kv_keys: 3, kv_mb: 1, ..Default::default() };
        let db = Arc::new(wasiclaw::store::Store::open(&env.path().join("db.redb"), &wasiclaw::runtime::TABLES).unwrap());
        let call = || wasiclaw::engine::HostCtx::new(
            "k", "0", Default::default(), db.clone(),
            wasiclaw::secrets::Secrets::new(env.path().join("secrets.json")),
            Arc::new(limits.clone()), Arc::new(wasiclaw::budget::Budget::new(&limits)),
            wasiclaw::context::system_resolver(),
        );
        let size = |key: &str, len: usize| (key.len() + len) as u64;
        let mut calls = [call(), call()];
        let mut committed: BTreeMap<String, usize> = BTreeMap::new();
        let mut staged: [BTreeMap<String, Option<usize>>; 2] = Default::default();
        for step in steps {
            match step {
                KvStep::Put(c, k, len) => {
                    let key = format!("key{k}");
                    // A call touches at most twice kv_keys distinct keys.
                    let full = !staged[c].contains_key(&key) && staged[c].len() as u64 >= 2 * limits.kv_keys;
                    let put = calls[c].kv_put(&key, len.map(|n| vec![b'v'; n]));
                    match put {
                        Ok(()) => {
                            prop_assert!(!full, "a call touched more than twice kv_keys keys");
                            staged[c].insert(key, len);
                        }
                        Err(wasiclaw::store::StoreError::Quota(_)) => prop_assert!(len.is_some() || full, "a delete was refused"),
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                }
                KvStep::End(c) => {
                    let mut after = committed.clone();
                    for (key, len) in std::mem::take(&mut staged[c]) {
                        match len {
                            Some(len) => drop(after.insert(key, len)),
                            None => drop(after.remove(&key)),
                        }
                    }
                    let bytes: u64 = after.iter().map(|(k, len)| size(k, *len)).sum();
                    let fits = after.len() as u64 <= limits.kv_keys && bytes <= limits.kv_mb << 20;
                    let refused = calls[c].finish();
                    prop_assert_eq!(refused.is_none(), fits, "{:?}", refused);
                    if fits {
                        committed = after;
                    }
                    calls[c] = call();
                }
            }
            for (c, ctx) in calls.iter().enumerate() {
                let mut seen = committed.clone();
                for (key, len) in &staged[c] {
                    match len {
                        Some(len) => drop(seen.insert(key.clone(), *len)),
                        None => drop(seen.remove(key)),
                    }
                }
                prop_assert_eq!(ctx.kv_keys("", 100).unwrap(), seen.keys().cloned().collect::<Vec<_>>());
                for k in 0..10 {
                    let key = format!("key{k}");
                    prop_assert_eq!(ctx.kv_get(&key).unwrap().map(|v| v.len()), seen.get(&key).copied());
                }
            }
            let bytes: u64 = committed.iter().map(|(k, len)| size(k, *len)).sum();
            prop_assert_eq!(db.kv_usage("k").unwrap(), (committed.len() as u64, bytes));
        }
    }
}
