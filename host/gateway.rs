//! The HTTP gateway of `wasiclaw run`: the web chat page, its streaming
//! chat API, and the webhook routes of chat channels (`/hooks/<channel>/...`).
//!
//! Invariants: it binds to loopback unless a bearer token is configured,
//! and with a token every request must carry it (`Authorization: Bearer`,
//! or `?token=` for the page itself); a POST whose Origin is not this
//! gateway is refused, so other web pages cannot drive the agent.
//! Webhooks are the exception: platforms cannot send our token, so each
//! channel component authenticates its own requests (signatures, verify
//! tokens) and the host only routes them.

use crate::agent::{Agent, Event};
use crate::channels::Channels;
use crate::engine::channel_bindings::exports::wasiclaw::plugin::channel_api::HttpRequest;
use crate::runtime::Runtime;
use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

const INDEX: &str = include_str!("web/index.html");
const MAX_HOOK_BODY: usize = 1 << 20;

#[derive(Clone)]
struct Gate {
    agent: Arc<Agent>,
    token: Option<String>,
}

/// Bind the configured address (or `over`), refusing a non-loopback one
/// without a token.
pub async fn bind(rt: &Runtime, over: Option<&str>) -> anyhow::Result<TcpListener> {
    let bind = over.unwrap_or(&rt.config.gateway.bind);
    let addr: SocketAddr = bind.parse().with_context(|| format!("gateway address {bind:?} is not IP:PORT"))?;
    if !addr.ip().is_loopback() && token(rt)?.is_none() {
        anyhow::bail!(
            "refusing to serve the gateway on {addr} without an auth token: set [gateway] token_secret = \"GATEWAY_TOKEN\" \
             and run `wasiclaw secrets set GATEWAY_TOKEN`, or bind to 127.0.0.1"
        );
    }
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} (is another wasiclaw running?)"))
}

fn token(rt: &Runtime) -> anyhow::Result<Option<String>> {
    match &rt.config.gateway.token_secret {
        None => Ok(None),
        Some(name) => Ok(Some(rt.secrets.get(name)?.with_context(|| {
            format!("[gateway] token_secret {name} is not set; run `wasiclaw secrets set {name}`")
        })?)),
    }
}

pub async fn serve(agent: Arc<Agent>, channels: Arc<Channels>, listener: TcpListener) {
    let gate = match token(&agent.rt) {
        Ok(token) => Gate { agent, token },
        Err(e) => {
            tracing::error!("gateway: {e:#}");
            return;
        }
    };
    let app = Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route("/api/chat", post(chat))
        .layer(middleware::from_fn_with_state(gate.clone(), guard))
        .with_state(gate)
        .route("/hooks/{channel}", any(hook))
        .route("/hooks/{channel}/{*rest}", any(hook))
        .layer(DefaultBodyLimit::max(MAX_HOOK_BODY))
        .with_state(channels);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("gateway stopped: {e}");
    }
}

/// Token and Origin checks for every request.
async fn guard(
    State(gate): State<Gate>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &gate.token {
        let bearer =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        let presented = bearer.or(query.get("token").map(String::as_str));
        if presented != Some(token.as_str()) {
            return (StatusCode::UNAUTHORIZED, "missing or wrong token\n").into_response();
        }
    }
    if request.method() == axum::http::Method::POST {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
            if origin_host != host {
                return (StatusCode::FORBIDDEN, "cross-origin request refused\n").into_response();
            }
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
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<SseEvent>();
    let session: String = input.session.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(64).collect();
    tokio::spawn(async move {
        let events = tx.clone();
        let emit = move |e: Event| {
            let name = match &e {
                Event::Text { .. } => "text",
                Event::ToolCall { .. } => "tool-call",
                Event::ToolResult { .. } => "tool-result",
                Event::Notice { .. } => "notice",
            };
            let _ = events.send(SseEvent::default().event(name).json_data(&e).expect("events serialize"));
        };
        let done = match gate.agent.turn(&format!("web:{session}"), &input.text, &emit).await {
            Ok(reply) => SseEvent::default().event("done").json_data(serde_json::json!({ "reply": reply })),
            Err(e) => SseEvent::default().event("error").json_data(serde_json::json!({ "error": e.to_string() })),
        };
        let _ = tx.send(done.expect("events serialize"));
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx)) });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A platform's request to a channel's webhook route, answered by the channel.
async fn hook(
    State(channels): State<Arc<Channels>>,
    Path(params): Path<HashMap<String, String>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let channel = params.get("channel").cloned().unwrap_or_default();
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
    let reply = channels.webhook(&channel, request).await;
    let mut response = Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        response = response.header(k, v);
    }
    response.body(axum::body::Body::from(reply.body)).unwrap_or_else(|e| {
        tracing::warn!("channel {channel}: bad webhook response: {e}");
        (StatusCode::INTERNAL_SERVER_ERROR, "the channel built a bad response\n").into_response()
    })
}
