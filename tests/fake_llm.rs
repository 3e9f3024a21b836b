//! A scripted LLM server on loopback that speaks both wire formats the way
//! the real APIs stream them: OpenAI chat completions
//! (`POST /v1/chat/completions`) and Anthropic Messages (`POST /v1/messages`),
//! plus Ollama's `GET /api/tags`. Each request pops the next scripted
//! reply; a summarisation request (system prompt starting "Summarize") is
//! answered with `SUMMARY` without touching the script. Under `/endless/`,
//! every request gets a body that never ends.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const SUMMARY: &str = "SUMMARY: the user talked about numbered facts.";

#[derive(Clone, Debug)]
pub enum Reply {
    /// Streamed in two pieces.
    Text(&'static str),
    /// (name, raw arguments) per call, all in one reply.
    Tools(Vec<(&'static str, &'static str)>),
    /// No text, no tool calls.
    Empty,
    /// An HTTP error with an optional Retry-After in seconds.
    Status(u16, Option<u64>),
    /// Never answers (a model call in progress when the process dies).
    Hang,
    /// A 200 whose stream never ends: valid text events without end
    /// (`true`), or bytes that never close an event (`false`).
    Endless(bool),
    /// An error status whose body never ends.
    EndlessError,
}

#[derive(Clone, Default)]
struct Shared {
    script: Arc<Mutex<VecDeque<Reply>>>,
    seen: Arc<Mutex<Vec<(Instant, String, Value)>>>,
    usage: Arc<Mutex<(u64, u64)>>,
    /// The model's window, as bytes of a request body: a longer request is
    /// refused as llama.cpp's server refuses it.
    window: Arc<Mutex<Option<usize>>>,
}

pub struct FakeLlm {
    pub base: String,
    shared: Shared,
}

impl FakeLlm {
    pub async fn start(script: Vec<Reply>) -> Self {
        let shared = Shared { usage: Arc::new(Mutex::new((40, 10))), ..Default::default() };
        shared.script.lock().unwrap().extend(script);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(respond).with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeLlm { base, shared }
    }

    /// Token usage reported per reply: (input, output).
    pub fn set_usage(&self, input: u64, output: u64) {
        *self.shared.usage.lock().unwrap() = (input, output);
    }

    /// Refuse requests (chat or summary) with bodies over `bytes`.
    pub fn set_window(&self, bytes: usize) {
        *self.shared.window.lock().unwrap() = Some(bytes);
    }

    /// Request bodies received, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.seen.lock().unwrap().iter().map(|(_, _, v)| v.clone()).collect()
    }

    pub fn times(&self) -> Vec<Instant> {
        self.shared.seen.lock().unwrap().iter().map(|(t, _, _)| *t).collect()
    }

    /// Requests that were not summarisation calls.
    pub fn chat_requests(&self) -> Vec<Value> {
        self.requests().into_iter().filter(|r| !is_summary(r)).collect()
    }
}

fn system_of(body: &Value) -> String {
    match body.get("system") {
        Some(s) => s.as_str().unwrap_or_default().to_string(),
        None => body["messages"][0]["content"].as_str().unwrap_or_default().to_string(),
    }
}

fn is_summary(body: &Value) -> bool {
    system_of(body).starts_with("Summarize")
}

fn sse(events: Vec<(Option<&str>, Value)>, done: bool) -> Response {
    let mut text = String::new();
    for (name, data) in events {
        if let Some(name) = name {
            text.push_str(&format!("event: {name}\n"));
        }
        text.push_str(&format!("data: {data}\n\n"));
    }
    if done {
        text.push_str("data: [DONE]\n\n");
    }
    Response::builder().header("content-type", "text/event-stream").body(Body::from(text)).unwrap()
}

fn halves(s: &str) -> (&str, &str) {
    let mut mid = s.len() / 2;
    while !s.is_char_boundary(mid) {
        mid += 1;
    }
    s.split_at(mid)
}

async fn respond(State(shared): State<Shared>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if path.contains("/endless/") {
        return endless(200, false);
    }
    if path.ends_with("/embeddings") {
        let bytes = axum::body::to_bytes(req.into_body(), 1 << 24).await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let v = embed(body["input"].as_str().unwrap_or_default());
        return Response::builder()
            .body(Body::from(json!({"data": [{"embedding": v, "index": 0}]}).to_string()))
            .unwrap();
    }
    if path == "/api/tags" {
        return Response::builder()
            .body(Body::from(json!({"models": [{"name": "fake-llama:latest"}]}).to_string()))
            .unwrap();
    }
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 24).await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    shared.seen.lock().unwrap().push((Instant::now(), path.clone(), body.clone()));
    if shared.window.lock().unwrap().is_some_and(|w| bytes.len() > w) {
        let error = json!({"error": {"code": 400, "type": "exceed_context_size_error",
            "message": "the request exceeds the available context size, try increasing it"}});
        return Response::builder().status(400).body(Body::from(error.to_string())).unwrap();
    }
    let reply = if is_summary(&body) {
        Reply::Text(SUMMARY)
    } else {
        shared.script.lock().unwrap().pop_front().unwrap_or(Reply::Text("(script exhausted)"))
    };
    if let Reply::Hang = reply {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
    let (input, output) = *shared.usage.lock().unwrap();
    let anthropic = path.ends_with("/messages");
    match reply {
        Reply::Endless(events) => endless(200, events),
        Reply::EndlessError => endless(500, false),
        Reply::Status(code, retry_after) => {
            let mut r = Response::builder().status(code);
            if let Some(secs) = retry_after {
                r = r.header("retry-after", secs.to_string());
            }
            r.body(Body::from(json!({"error": {"message": "scripted failure"}}).to_string())).unwrap()
        }
        reply if anthropic => anthropic_stream(reply, input, output),
        reply => openai_stream(reply, input, output),
    }
}

fn endless(status: u16, events: bool) -> Response {
    use futures_util::StreamExt;
    let piece: &[u8] = if events {
        br#"data: {"choices":[{"index":0,"delta":{"content":"more and more "},"finish_reason":null}]}

"#
    } else {
        b"no end in sight "
    };
    let chunk = bytes::Bytes::from(piece.repeat(16 << 10 >> 4));
    let body = futures_util::stream::repeat(chunk).map(Ok::<_, std::convert::Infallible>);
    Response::builder()
        .status(status)
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap()
}

fn openai_stream(reply: Reply, input: u64, output: u64) -> Response {
    let chunk = |delta: Value, finish: Value| json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let mut events = vec![(None, chunk(json!({"role": "assistant", "content": ""}), Value::Null))];
    let finish = match reply {
        Reply::Text(t) => {
            let (a, b) = halves(t);
            events.push((None, chunk(json!({"content": a}), Value::Null)));
            events.push((None, chunk(json!({"content": b}), Value::Null)));
            "stop"
        }
        Reply::Tools(calls) => {
            for (i, (name, args)) in calls.iter().enumerate() {
                let head = json!({"tool_calls": [{"index": i, "id": format!("call_{i}"), "type": "function", "function": {"name": name, "arguments": ""}}]});
                events.push((None, chunk(head, Value::Null)));
                let (a, b) = halves(args);
                for part in [a, b] {
                    events.push((
                        None,
                        chunk(json!({"tool_calls": [{"index": i, "function": {"arguments": part}}]}), Value::Null),
                    ));
                }
            }
            "tool_calls"
        }
        _ => "stop",
    };
    events.push((None, chunk(json!({}), json!(finish))));
    events.push((None, json!({"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}})));
    sse(events, true)
}

fn anthropic_stream(reply: Reply, input: u64, output: u64) -> Response {
    let mut events = vec![(
        Some("message_start"),
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-fake", "stop_reason": null, "usage": {"input_tokens": input, "output_tokens": 1}}}),
    )];
    events.push((Some("ping"), json!({"type": "ping"})));
    let stop = match reply {
        Reply::Text(t) => {
            events.push((
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ));
            let (a, b) = halves(t);
            for part in [a, b] {
                events.push((
                    Some("content_block_delta"),
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": part}}),
                ));
            }
            events.push((Some("content_block_stop"), json!({"type": "content_block_stop", "index": 0})));
            "end_turn"
        }
        Reply::Tools(calls) => {
            for (i, (name, args)) in calls.iter().enumerate() {
                let start = json!({"type": "content_block_start", "index": i, "content_block": {"type": "tool_use", "id": format!("toolu_{i}"), "name": name, "input": {}}});
                events.push((Some("content_block_start"), start));
                let (a, b) = halves(args);
                for part in [a, b] {
                    events.push((Some("content_block_delta"), json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": part}})));
                }
                events.push((Some("content_block_stop"), json!({"type": "content_block_stop", "index": i})));
            }
            "tool_use"
        }
        _ => "end_turn",
    };
    events.push((Some("message_delta"), json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": output}})));
    events.push((Some("message_stop"), json!({"type": "message_stop"})));
    sse(events, false)
}

/// A toy embedding: hashed words over 32 dimensions, with a few synonyms
/// sharing a dimension, so meaning can match where keywords do not.
fn embed(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; 32];
    for word in text.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() > 2) {
        let word = match word {
            "feline" | "kitty" | "cats" => "cat",
            "automobile" | "vehicle" => "car",
            w => w,
        };
        let h = word.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
        v[(h % 32) as usize] += 1.0;
    }
    v
}
