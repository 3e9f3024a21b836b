//! The HTTP gateway of `wasiclaw run`: the owner's page (web chat and the
//! owner's views), its streaming chat API, the owner API the views use (a
//! fixed list of local-API requests), and the webhook routes of chat
//! channels (`/hooks/<channel>/...`).
//!
//! Invariants, in the order the guard checks them:
//! - It answers only to its own names: a `Host` that is not its bind
//!   address, 127.0.0.1, [::1], localhost (with its port) or a name in
//!   `[gateway] hosts` gets 421 before routing, so a DNS-rebinding page
//!   cannot reach it under the attacker's name.
//! - Every request but a webhook carries the token, even on loopback
//!   (another local user is not the owner): a bearer header, or the cookie
//!   that `GET /?token=` sets. `?token=` is accepted on `GET /` only, and
//!   comparison is constant-time. The token lives in the host's own secret
//!   namespace and is never grantable to a component.
//! - A state-changing request needs an `Origin` naming this gateway, or no
//!   `Origin` and a bearer header (a non-browser client).
//! - Webhooks are authenticated by each platform's signature, checked by
//!   the channel component; their responses cannot act as pages (a sandbox
//!   CSP, nosniff, no cookies, only JSON or plain text).
//!
//! Anyone who can reach it can open connections and send webhooks, so what
//! they hold is bounded: at most `[gateway] connections` are open (the
//! rest wait in the kernel's queue, and the daemon's file descriptors are
//! not theirs to take); headers, and a webhook's body, must arrive within
//! `request_timeout_s`, and a connection idle that long is closed; at most
//! [`HOOKS_IN_FLIGHT`] webhooks are read or handled at once, and the next
//! is told to retry (503) before its body is read. A webhook for no channel
//! is answered 404 before its body is read or a place is taken.

use crate::agent::{Agent, Event};
use crate::api::Reply;
use crate::channels::Channels;
use crate::contract::{HttpRequest, HttpResponse};
use crate::runtime::Runtime;
use crate::stamp::Stamp;
use anyhow::Context;
use axum::extract::Path;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

const INDEX: &str = include_str!("web/index.html");
const MAX_HOOK_BODY: usize = 1 << 20;
/// Webhooks read or handled at once: each may hold a body of up to
/// [`MAX_HOOK_BODY`], and the platforms retry a 503.
pub const HOOKS_IN_FLIGHT: usize = 16;

/// What the webhook routes share.
#[derive(Clone)]
struct Hooks {
    channels: Arc<Channels>,
    in_flight: Arc<Semaphore>,
    timeout: Duration,
}

#[derive(Clone)]
struct Gate {
    agent: Arc<Agent>,
    channels: Arc<Channels>,
    token: Arc<Token>,
    /// `Host` values this gateway answers to, lower-case.
    hosts: Arc<Vec<String>>,
    /// Configured names, answered on any port.
    names: Arc<Vec<String>>,
    /// The webhooks' places ([`HOOKS_IN_FLIGHT`]), shown by `/metrics`.
    hooks_in_flight: Arc<Semaphore>,
}

const COOKIE: &str = "wasiclaw_token";

/// The token, read again whenever the secrets file changed (its stamp is
/// taken at each request), so a new one (`wasiclaw open --new-token`, or
/// `secrets set` of the owner's own) shuts the old one out at once: a
/// token that was shown or shared must not need a restart to stop working.
struct Token {
    file: std::path::PathBuf,
    /// The stamp it was read at, and the token; None if it cannot be read
    /// (every request is then refused: a token the owner removed must not
    /// go on working). None before the first read.
    known: std::sync::Mutex<Option<ReadAt>>,
}

/// The secrets file's stamp when the token was read, and what was read.
type ReadAt = (Option<Stamp>, Option<Arc<String>>);

impl Token {
    fn current(&self, rt: &Runtime) -> Option<Arc<String>> {
        let stamp = crate::stamp::of(&self.file);
        let mut known = self.known.lock().unwrap();
        match known.as_ref() {
            Some((read_at, token)) if *read_at == stamp => token.clone(),
            _ => {
                let token = rt.config.gateway.token(&rt.secrets).map(Arc::new);
                if let Err(e) = &token {
                    tracing::error!("gateway: every request is refused until the token can be read: {e:#}");
                }
                // Stamped before the read, so a change during it is read at
                // the next request (making the host's own token changes the
                // file too: read once more, the same).
                known.insert((stamp, token.ok())).1.clone()
            }
        }
    }
}

/// Bind the configured address (or `over`), refusing a non-loopback one
/// without a token.
pub async fn bind(rt: &Runtime, over: Option<&str>) -> anyhow::Result<TcpListener> {
    let bind = over.unwrap_or(&rt.config.gateway.bind);
    let addr: SocketAddr = bind.parse().with_context(|| format!("gateway address {bind:?} is not IP:PORT"))?;
    if !addr.ip().is_loopback() && rt.config.gateway.token_secret.is_none() {
        anyhow::bail!(
            "refusing to serve the gateway on {addr} without an auth token: set [gateway] token_secret = \"GATEWAY_TOKEN\" \
             and run `wasiclaw secrets set GATEWAY_TOKEN`, or bind to 127.0.0.1"
        );
    }
    // A token that cannot serve is said now, not as a gateway that refuses everyone.
    rt.config.gateway.token(&rt.secrets)?;
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} (is another wasiclaw running?)"))
}

/// Serve the web chat, the API and `/hooks/` on `listener`.
pub async fn serve(agent: Arc<Agent>, channels: Arc<Channels>, listener: TcpListener) {
    let token = Token { file: agent.rt.paths.secrets(), known: Default::default() };
    if token.current(&agent.rt).is_none() {
        return;
    }
    let Ok(local) = listener.local_addr() else { return };
    let port = local.port();
    let mut hosts = vec![format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}")];
    hosts.push(if local.is_ipv6() { format!("[{}]:{port}", local.ip()) } else { local.to_string() });
    let names = agent.rt.config.gateway.hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
    let in_flight = Arc::new(Semaphore::new(HOOKS_IN_FLIGHT));
    let gate = Gate {
        agent,
        channels: channels.clone(),
        token: Arc::new(token),
        hosts: Arc::new(hosts),
        names: Arc::new(names),
        hooks_in_flight: in_flight.clone(),
    };
    let api = Router::new()
        .route("/", get(index))
        .route("/api/chat", post(chat))
        .route("/api/answer", post(answer))
        .route("/api/owner", post(owner))
        .route("/metrics", get(metrics))
        .with_state(gate.clone());
    let config = &gate.agent.rt.config.gateway;
    let timeout = Duration::from_secs(config.request_timeout_s.max(1));
    let open = Arc::new(Semaphore::new(config.connections.max(1) as usize));
    let hooks = Hooks { channels, in_flight, timeout };
    let hooks = Router::new()
        .route("/hooks/{channel}", any(hook))
        .route("/hooks/{channel}/", any(hook))
        .route("/hooks/{channel}/{*rest}", any(hook))
        .with_state(hooks);
    let app = api.merge(hooks).layer(middleware::from_fn_with_state(gate, guard));
    loop {
        // A place first, then the connection: past the limit, connections
        // wait in the kernel's queue instead of holding our descriptors.
        let Ok(place) = open.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!("gateway: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            // The header timer also runs while a connection waits for its
            // next request, so an idle connection is closed after it too.
            http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(timeout);
            // A failed connection is the client's business (a timeout, a reset).
            let _ = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
            drop(place);
        });
    }
}

/// Counters and gauges in Prometheus text format (behind the token, as
/// every route but `/hooks/`).
async fn metrics(State(gate): State<Gate>) -> Response {
    let rt = &gate.agent.rt;
    let mut out = String::new();
    rt.metrics.render(&mut out);
    let gauge = |out: &mut String, name: &str, help: &str, lines: Vec<(String, u64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (labels, value) in lines {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let tokens = rt.db.usage_today().map(|t| t.tokens()).unwrap_or(0);
    gauge(&mut out, "wasiclaw_tokens_today", "Model tokens used today (UTC).", vec![(String::new(), tokens)]);
    let uptime = ((crate::store::now_ms() - rt.started_ms) / 1000) as u64;
    gauge(&mut out, "wasiclaw_uptime_seconds", "Seconds since the daemon started.", vec![(String::new(), uptime)]);
    let mut states: BTreeMap<String, u64> = BTreeMap::new();
    for s in rt.skills().unwrap_or_default() {
        *states.entry(s.status.to_string()).or_default() += 1;
    }
    let states = states.into_iter().map(|(s, n)| (format!("{{state=\"{s}\"}}"), n)).collect();
    gauge(&mut out, "wasiclaw_components", "Components in the skills folder, by state.", states);
    let board = gate.channels.board();
    let per = |f: fn(&crate::channels::ChannelStatus) -> u64| {
        board.iter().map(|c| (format!("{{channel=\"{}\"}}", c.name), f(c))).collect::<Vec<_>>()
    };
    gauge(&mut out, "wasiclaw_messages_received", "Messages admitted, per channel.", per(|c| c.received));
    gauge(&mut out, "wasiclaw_messages_sent", "Messages sent, per channel.", per(|c| c.sent));
    // All taken for long is a flood (or a platform sending faster than its
    // channel answers): the next webhooks are told to retry.
    let hooks = (HOOKS_IN_FLIGHT - gate.hooks_in_flight.available_permits()) as u64;
    let help = format!("Webhooks being read or handled (at most {HOOKS_IN_FLIGHT}).");
    gauge(&mut out, "wasiclaw_webhooks_in_flight", &help, vec![(String::new(), hooks)]);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The page's content security policy. Its one script runs by its hash,
/// not as any inline script: the page shows what the model writes (and a
/// page the model read may have written it), so should its escaping ever
/// let markup through, an injected `onerror=` or `<script>` still does not
/// run with the owner's cookie.
fn index_policy() -> &'static HeaderValue {
    static POLICY: std::sync::OnceLock<HeaderValue> = std::sync::OnceLock::new();
    POLICY.get_or_init(|| {
        use base64::Engine as _;
        use sha2::Digest as _;
        let script = INDEX.split_once("<script>").and_then(|(_, rest)| rest.split_once("</script>"));
        let script = script.expect("the page has one inline script").0;
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script));
        HeaderValue::try_from(format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; connect-src 'self'; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        ))
        .expect("a valid header")
    })
}

/// The web chat page, with headers that keep it from being framed or
/// leaking its URL.
async fn index() -> Response {
    let mut response = Html(INDEX).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, index_policy().clone());
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Host, token and Origin checks for every request (see the module doc).
async fn guard(
    State(gate): State<Gate>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let refuse = |status: StatusCode, why: &str| (status, format!("{why}\n")).into_response();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_lowercase();
    let name = host.rsplit_once(':').filter(|(_, port)| port.parse::<u16>().is_ok()).map_or(host.as_str(), |(n, _)| n);
    if !gate.hosts.contains(&host) && !gate.names.iter().any(|n| n == name) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            &format!(
                "this gateway does not answer to {host:?}; add the name to [gateway] hosts in config.toml if it is yours"
            ),
        );
    }
    if request.uri().path().starts_with("/hooks/") {
        return next.run(request).await;
    }
    let Some(token) = gate.token.current(&gate.agent.rt) else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway's token cannot be read; the daemon's log says why",
        );
    };
    let matches = |presented: &str| crate::secrets::constant_time_eq(presented.as_bytes(), token.as_bytes());
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE).and_then(|c| c.strip_prefix('=')));
    // The page itself may be opened with `?token=`: it becomes a cookie
    // and the token leaves the address bar.
    if request.method() == Method::GET
        && request.uri().path() == "/"
        && let Some(presented) = query.get("token")
    {
        if !matches(presented) {
            return refuse(StatusCode::UNAUTHORIZED, "wrong token; `wasiclaw open` prints the right address");
        }
        let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
        return Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, "/")
            .header(header::SET_COOKIE, cookie)
            .header(header::REFERRER_POLICY, "no-referrer")
            .body(axum::body::Body::empty())
            .expect("a valid redirect");
    }
    let by_bearer = bearer.is_some_and(matches);
    if !by_bearer && !cookie.is_some_and(matches) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: open the address `wasiclaw open` prints, or send `Authorization: Bearer TOKEN`",
        );
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            Some(origin) if origin.to_ascii_lowercase() != format!("http://{host}") => {
                return refuse(StatusCode::FORBIDDEN, "cross-origin request refused");
            }
            None if !by_bearer => {
                return refuse(StatusCode::FORBIDDEN, "a request without Origin must carry the bearer token");
            }
            _ => {}
        }
    }
    next.run(request).await
}

#[derive(Deserialize)]
struct ChatIn {
    session: String,
    text: String,
}

/// One turn, streamed as server-sent events: the agent's events, then
/// `done` with the reply (or `error`).
async fn chat(State(gate): State<Gate>, Json(input): Json<ChatIn>) -> impl IntoResponse {
    let session: String = input.session.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(64).collect();
    let request = crate::api::Request::Chat { session: format!("web:{session}"), text: input.text };
    let replies = crate::api::streaming(gate.agent.clone(), None, request.into());
    let sse = |reply: Reply| {
        let event = match &reply {
            Reply::Event(Event::Text { .. }) => "text",
            Reply::Event(Event::ToolCall { .. }) => "tool-call",
            Reply::Event(Event::ToolResult { .. }) => "tool-result",
            Reply::Event(Event::Notice { .. } | Event::Proposal { .. }) => "notice",
            Reply::Event(Event::Approval { .. }) => "approval",
            Reply::Ok(_) => "done",
            Reply::Err { .. } => "error",
        };
        let data = match reply {
            Reply::Event(e) => serde_json::to_value(e).expect("events serialize"),
            Reply::Ok(response) => response.to_json(),
            Reply::Err { message, .. } => serde_json::json!({ "error": message }),
        };
        Ok::<_, Infallible>(SseEvent::default().event(event).data(data.to_string()))
    };
    let stream = futures_util::stream::unfold(replies, |mut rx| async { rx.recv().await.map(|r| (r, rx)) });
    Sse::new(futures_util::StreamExt::map(stream, sse)).keep_alive(KeepAlive::default())
}

/// A local-API request from the owner's views: only what the page shows
/// or changes (no tool calls, secrets, backups, imports or chat), so the
/// page can do no more than its buttons say.
async fn owner(State(gate): State<Gate>, Json(request): Json<crate::api::Request>) -> Response {
    use crate::api::Request as R;
    let shown = matches!(
        request,
        R::Status
            | R::SkillsList
            | R::SkillsInspect { .. }
            | R::Grant { .. }
            | R::Revoke { .. }
            | R::Audit { .. }
            | R::Usage { .. }
            | R::CronList
            | R::CronHistory { .. }
            | R::CronRm { .. }
            | R::CronCancelled
            | R::CronRestore { .. }
            | R::MemoryList
            | R::MemoryPin { .. }
            | R::MemoryForget { .. }
            | R::MemoryForgotten
            | R::MemoryRestore { .. }
            | R::PairingList
            | R::PairingApprove { .. }
            | R::PairingRevoke { .. }
            | R::ApprovalsList
            | R::ApprovalsRevoke { .. }
            | R::Notifications { .. }
            | R::SessionHistory { .. }
    );
    if !shown {
        return (StatusCode::FORBIDDEN, Json(serde_json::json!({ "error": "the page cannot make this request" })))
            .into_response();
    }
    match crate::api::dispatch(&gate.agent.rt, Some(&gate.agent), Some(&gate.channels), request.into(), &|_| {}).await {
        Reply::Ok(response) => Json(response.to_json()).into_response(),
        Reply::Err { message, .. } => {
            (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": message }))).into_response()
        }
        Reply::Event(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[derive(Deserialize)]
struct AnswerIn {
    id: u64,
    answer: crate::approvals::Answer,
}

/// The owner's answer to a tool call waiting for approval.
async fn answer(State(gate): State<Gate>, Json(input): Json<AnswerIn>) -> impl IntoResponse {
    let answered = gate.agent.rt.questions.answer(input.id, input.answer);
    Json(serde_json::json!({ "answered": answered }))
}

/// A platform's request to a channel's webhook route, answered by the channel.
async fn hook(
    State(hooks): State<Hooks>,
    Path(params): Path<HashMap<String, String>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let channels = hooks.channels;
    let channel = params.get("channel").cloned().unwrap_or_default();
    // A body nobody would handle is not read, nor given a place.
    if let Some(refusal) = channels.webhook_refusal(&channel) {
        return webhook_response(&channel, refusal);
    }
    let Ok(_place) = hooks.in_flight.clone().try_acquire_owned() else {
        let busy = "too many webhook requests at once; retry\n";
        return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], busy).into_response();
    };
    let body = match tokio::time::timeout(hooks.timeout, axum::body::to_bytes(body, MAX_HOOK_BODY)).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return (StatusCode::PAYLOAD_TOO_LARGE, "a webhook body is at most 1 MiB\n").into_response(),
        Err(_) => return (StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time\n").into_response(),
    };
    let request = HttpRequest {
        method: method.to_string(),
        path: params.get("rest").map(|r| format!("/{r}")).unwrap_or_default(),
        query: uri.query().unwrap_or_default().to_string(),
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body: body.to_vec(),
    };
    webhook_response(&channel, channels.webhook(&channel, request).await)
}

/// A channel's answer to a webhook, as the gateway sends it.
fn webhook_response(channel: &str, reply: HttpResponse) -> Response {
    let mut response = Response::builder().status(reply.status);
    // A component's response must not act as a page on this origin: only
    // JSON or plain text, sandboxed, never sniffed, and no cookies or CORS.
    let json = reply.headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("content-type") && v.trim_start().to_ascii_lowercase().starts_with("application/json")
    });
    let content_type = if json { "application/json" } else { "text/plain; charset=utf-8" };
    for (k, v) in &reply.headers {
        let k = k.to_ascii_lowercase();
        let kept = matches!(k.as_str(), "cache-control" | "retry-after")
            || (k.starts_with("x-") && k != "x-content-type-options");
        if kept {
            response = response.header(k, v);
        }
    }
    response = response
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    response.body(axum::body::Body::from(reply.body)).unwrap_or_else(|e| {
        tracing::warn!("channel {channel}: bad webhook response: {e}");
        (StatusCode::INTERNAL_SERVER_ERROR, "the channel built a bad response\n").into_response()
    })
}
