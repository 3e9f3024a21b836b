//! LLM providers: one conversation model, two wire formats (OpenAI chat
//! completions and Anthropic Messages), both streamed over SSE.
//!
//! Invariants: `Llm::chat` retries a provider on 429, 5xx and transport
//! failures with exponential backoff, honouring `Retry-After`, then falls
//! back to the next provider in the chain; one that failed so is tried
//! last for a minute (after the others); any other error is final for
//! that provider. Provider output is never trusted: a malformed stream is a
//! `Protocol` error, and tool-call arguments stay raw text for the agent to
//! validate. A reply is read up to [`reply_limit`] bytes and an error body
//! up to [`MAX_ERROR_BODY`]: a broken or hostile endpoint that streams
//! without end gets a `Protocol` error, not the board's memory.

pub mod anthropic;
pub mod openai;

use crate::config::{ProviderConfig, ProviderKind};
use crate::secrets::Secrets;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One message of a conversation, provider-neutral.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum Message {
    /// What the owner (or a person) said.
    User {
        /// The text.
        text: String,
    },
    /// What the model said.
    Assistant {
        /// The text.
        text: String,
        /// The tools it called.
        #[serde(default)]
        tool_calls: Vec<ToolCall>,
    },
    /// A tool's result.
    Tool {
        /// The call it answers.
        call_id: String,
        /// The tool.
        name: String,
        /// The result, wrapped with its provenance.
        content: String,
        /// Whether the call failed.
        #[serde(default)]
        is_error: bool,
    },
}

impl Message {
    /// Characters of content, for the token estimate.
    pub fn chars(&self) -> usize {
        match self {
            Message::User { text } => text.len(),
            Message::Assistant { text, tool_calls } => {
                text.len() + tool_calls.iter().map(|c| c.name.len() + c.arguments.len()).sum::<usize>()
            }
            Message::Tool { content, .. } => content.len(),
        }
    }
}

/// A tool call the model made.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ToolCall {
    /// The provider's id for it.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The model's JSON text, unparsed: it may be malformed.
    pub arguments: String,
}

/// A tool offered to the model.
#[derive(Clone, Debug)]
pub struct ToolDef {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: serde_json::Value,
}

/// One request to the model.
pub struct ChatRequest<'a> {
    /// The system prompt.
    pub system: &'a str,
    /// The conversation.
    pub messages: &'a [Message],
    /// The tools on offer.
    pub tools: &'a [ToolDef],
    /// The longest answer wanted.
    pub max_tokens: u32,
}

/// The JSON body `req` makes for a provider of `config`'s kind.
pub fn body(config: &ProviderConfig, req: &ChatRequest<'_>) -> serde_json::Value {
    match config.kind {
        ProviderKind::Openai => openai::body(config, req),
        ProviderKind::Anthropic => anthropic::body(config, req),
    }
}

/// Tokens a request used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
}

/// The model's answer.
#[derive(Debug, Default)]
pub struct ChatResponse {
    /// Its text.
    pub text: String,
    /// Tools it called.
    pub tool_calls: Vec<ToolCall>,
    /// Tokens it used.
    pub usage: Usage,
}

/// Why a model request failed.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("HTTP {status}: {body}")]
    /// The provider answered with an error status.
    Http {
        /// The status.
        status: u16,
        /// The body.
        body: String,
        /// How long it asked us to wait.
        retry_after: Option<Duration>,
    },
    /// It could not be reached.
    #[error("{0}")]
    Transport(String),
    /// It is overloaded.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// Its answer made no sense.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// The provider is configured wrong.
    #[error("{0}")]
    Config(String),
}

impl LlmError {
    /// Whether the provider refused the request as longer than the model's
    /// context window. No two APIs say it alike (OpenAI and vLLM "maximum
    /// context length", Anthropic "prompt is too long", llama.cpp "exceeds
    /// the available context size"), so this reads the words.
    pub fn too_long(&self) -> bool {
        let LlmError::Http { status, body, .. } = self else { return false };
        let body = body.to_ascii_lowercase();
        let said = ["context", "too long", "too many tokens", "exceeds the maximum", "reduce the length"];
        *status == 413 || (*status == 400 && said.iter().any(|w| body.contains(w)))
    }

    fn retryable(&self) -> bool {
        match self {
            LlmError::Http { status, .. } => *status == 429 || *status >= 500,
            LlmError::Transport(_) | LlmError::Overloaded(_) => true,
            _ => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl From<reqwest::Error> for LlmError {
    fn from(e: reqwest::Error) -> Self {
        LlmError::Transport(if e.is_timeout() { format!("timed out: {e}") } else { e.to_string() })
    }
}

/// An endpoint left alone for a while after it failed, and why: asking a
/// dead one again would add its timeout to every request meanwhile. Model
/// providers and the embeddings endpoint both rest this way.
#[derive(Default)]
pub struct Rest(std::sync::Mutex<Option<(std::time::Instant, String)>>);

impl Rest {
    /// Why it rests just now, if it does.
    pub fn why(&self) -> Option<String> {
        let rest = self.0.lock().unwrap();
        rest.as_ref().filter(|(until, _)| std::time::Instant::now() < *until).map(|(_, why)| why.clone())
    }

    /// Rest for `how_long` because of `why`; `None` ends the rest.
    pub fn set(&self, how_long: Duration, why: Option<String>) {
        *self.0.lock().unwrap() = why.map(|why| (std::time::Instant::now() + how_long, why));
    }
}

/// A configured provider with its prices.
pub struct Provider {
    /// Its settings.
    pub config: ProviderConfig,
    /// Until when it is tried after the others: it failed even its
    /// retries, and asking it first again would add them to every model
    /// call while it is down (a local server switched off).
    resting: Rest,
}

/// How long a provider that failed its retries is tried after the others.
pub const PROVIDER_REST: Duration = Duration::from_secs(60);

impl Provider {
    /// Why it is tried after the others just now, if it is.
    pub fn resting(&self) -> Option<String> {
        self.resting.why()
    }

    /// Stream one reply; `on_text` gets each text delta as it arrives.
    async fn chat(
        &self,
        client: &reqwest::Client,
        secrets: &Secrets,
        req: &ChatRequest<'_>,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<ChatResponse, LlmError> {
        let key = match &self.config.api_key_secret {
            Some(name) => Some(secrets.get(name).map_err(|e| LlmError::Config(e.to_string()))?.ok_or_else(|| {
                LlmError::Config(format!("secret {name} is not set; run `wasiclaw secrets set {name}`"))
            })?),
            None => None,
        };
        let timeout = Duration::from_secs(self.config.timeout_s);
        let post = match self.config.kind {
            ProviderKind::Openai => openai::post(client, &self.config, key.as_deref()),
            ProviderKind::Anthropic => anthropic::post(client, &self.config, key.as_deref()),
        };
        let response = post.json(&body(&self.config, req)).send().await?;
        let status = response.status();
        if status.is_redirection() {
            return Err(LlmError::Config(redirected(&response)));
        }
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let (body, _) = read_upto(response, MAX_ERROR_BODY).await;
            return Err(LlmError::Http {
                status: status.as_u16(),
                body: crate::text::truncate(&String::from_utf8_lossy(&body), 500),
                retry_after,
            });
        }
        let mut events = Sse::new(response, timeout, reply_limit(req.max_tokens));
        match self.config.kind {
            ProviderKind::Openai => openai::read(&mut events, on_text).await,
            ProviderKind::Anthropic => anthropic::read(&mut events, on_text).await,
        }
    }

    /// What `usage` cost, in US dollars.
    pub fn cost(&self, usage: Usage) -> f64 {
        (usage.input as f64 * self.config.price_input_per_mtok
            + usage.output as f64 * self.config.price_output_per_mtok)
            / 1e6
    }
}

/// The provider chain with retries and fallback.
pub struct Llm {
    client: reqwest::Client,
    secrets: Secrets,
    /// The providers, in the order they are tried.
    pub providers: Vec<Provider>,
    retries: u32,
    /// First backoff; doubles per attempt.
    pub backoff: Duration,
}

/// The most of an error response's body read (it is shown cut to 500 bytes).
pub const MAX_ERROR_BODY: usize = 64 << 10;

/// Up to `max` bytes of `response`'s body, and whether there was more. A
/// read error ends the body where it happened.
pub async fn read_upto(mut response: reqwest::Response, max: usize) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if body.len() + chunk.len() > max {
            body.extend_from_slice(&chunk[..max - body.len()]);
            return (body, true);
        }
        body.extend_from_slice(&chunk);
    }
    (body, false)
}

/// The most bytes of stream one reply of up to `max_tokens` may take. A
/// streamed token costs a few hundred bytes of JSON framing at most, so
/// 1 KiB a token (and 4 MiB whatever the setting) is never reached by a
/// working provider.
pub fn reply_limit(max_tokens: u32) -> usize {
    (max_tokens as usize * 1024).max(4 << 20)
}

/// Why a redirect is not followed, and where it pointed. A key goes to the
/// configured address alone: reqwest keeps headers such as `x-api-key`
/// across a redirect to another host, and an API has no need to move.
pub fn redirected(response: &reqwest::Response) -> String {
    let to = response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("nowhere");
    format!(
        "{} answered {} (a redirect to {}); redirects are not followed, so the key goes nowhere else: \
         set base_url to the address it names if you trust it",
        response.url(),
        response.status(),
        crate::text::truncate(to, 200)
    )
}

/// Longest wait honoured from `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

impl Llm {
    /// A client of `providers`, retrying each `retries` times.
    pub fn new(providers: Vec<ProviderConfig>, secrets: Secrets, retries: u32) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("TLS backend");
        Llm {
            client,
            secrets,
            providers: providers.into_iter().map(|config| Provider { config, resting: Default::default() }).collect(),
            retries,
            backoff: Duration::from_millis(500),
        }
    }

    /// One model reply through the chain; returns it with the provider used.
    pub async fn chat(
        &self,
        req: &ChatRequest<'_>,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(ChatResponse, &Provider), LlmError> {
        let mut last = LlmError::Config("no model provider is configured".into());
        // Those resting go last: still tried when the others fail too.
        let (rested, awake): (Vec<&Provider>, Vec<&Provider>) =
            self.providers.iter().partition(|p| p.resting().is_some());
        for provider in awake.into_iter().chain(rested) {
            for attempt in 0..=self.retries {
                match provider.chat(&self.client, &self.secrets, req, on_text).await {
                    Ok(response) => {
                        provider.resting.set(PROVIDER_REST, None);
                        return Ok((response, provider));
                    }
                    Err(e) if e.retryable() && attempt < self.retries => {
                        let wait =
                            e.retry_after().map(|d| d.min(MAX_RETRY_AFTER)).unwrap_or(self.backoff * 2u32.pow(attempt));
                        tracing::warn!(model = %provider.config.model, "attempt {} failed ({e}); retrying in {wait:?}", attempt + 1);
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => {
                        tracing::warn!(model = %provider.config.model, "provider failed: {e}");
                        if e.retryable() {
                            provider.resting.set(PROVIDER_REST, Some(crate::text::truncate(&e.to_string(), 300)));
                        }
                        last = e;
                        break;
                    }
                }
            }
        }
        Err(last)
    }
}

/// Server-sent events from a streaming response, with a per-chunk timeout.
pub struct Sse {
    response: reqwest::Response,
    /// Raw bytes, `\r` removed; events end at a blank line, so a block is
    /// never cut inside a UTF-8 character.
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no event end, so each chunk is
    /// searched once, not the whole buffer again.
    scanned: usize,
    /// Bytes read so far, and the most that may be.
    read: usize,
    limit: usize,
    timeout: Duration,
}

/// One SSE event: its `event:` name (if any) and joined `data:` lines.
pub struct Event {
    /// The event's name.
    pub name: Option<String>,
    /// Its data.
    pub data: String,
}

impl Sse {
    fn new(response: reqwest::Response, timeout: Duration, limit: usize) -> Self {
        Sse { response, buf: Vec::new(), scanned: 0, read: 0, limit, timeout }
    }

    /// The next event, or None at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<Event>, LlmError> {
        loop {
            let from = self.scanned.saturating_sub(1);
            self.scanned = self.buf.len();
            if let Some(end) = self.buf[from..].windows(2).position(|w| w == b"\n\n").map(|at| from + at) {
                let raw: Vec<u8> = self.buf.drain(..end + 2).collect();
                self.scanned = 0;
                let block = String::from_utf8_lossy(&raw);
                let mut event = Event { name: None, data: String::new() };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event.name = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !event.data.is_empty() {
                            event.data.push('\n');
                        }
                        event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if event.name.is_some() || !event.data.is_empty() {
                    return Ok(Some(event));
                }
                continue;
            }
            let chunk = tokio::time::timeout(self.timeout, self.response.chunk())
                .await
                .map_err(|_| LlmError::Transport(format!("no data for {:?}", self.timeout)))??;
            match chunk {
                Some(bytes) => {
                    self.read += bytes.len();
                    if self.read > self.limit {
                        return Err(LlmError::Protocol(format!(
                            "the reply passed {} KiB without ending; the provider sends more than max_output_tokens allows",
                            self.limit >> 10
                        )));
                    }
                    self.buf.extend(bytes.iter().filter(|b| **b != b'\r'))
                }
                None if self.buf.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                // A last event without its blank line.
                None => self.buf.extend_from_slice(b"\n\n"),
            }
        }
    }
}

/// Parse an SSE data payload as JSON, naming the provider's bad output.
pub fn json(data: &str) -> Result<serde_json::Value, LlmError> {
    serde_json::from_str(data)
        .map_err(|e| LlmError::Protocol(format!("not JSON ({e}): {}", crate::text::truncate(data, 200))))
}

#[cfg(test)]
mod tests {
    use super::LlmError;

    /// Each API's words for a request over the model's window, and errors
    /// that are not that.
    #[test]
    fn a_request_over_the_window_is_told_apart() {
        let http = |status, body: &str| LlmError::Http { status, body: body.into(), retry_after: None };
        let too_long = [
            r#"{"error":{"message":"This model's maximum context length is 8192 tokens","code":"context_length_exceeded"}}"#,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 212000 tokens > 200000 maximum"}}"#,
            r#"{"error":{"type":"exceed_context_size_error","message":"the request exceeds the available context size"}}"#,
            r#"{"error":{"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."}}"#,
        ];
        for body in too_long {
            assert!(http(400, body).too_long(), "{body}");
        }
        assert!(http(413, "Request Entity Too Large").too_long());
        assert!(!http(400, r#"{"error":{"message":"Invalid value for 'tool_choice'"}}"#).too_long());
        assert!(!http(401, "invalid api key: context missing").too_long(), "only a refused request");
        assert!(!http(500, "context deadline exceeded").too_long());
        assert!(!LlmError::Transport("context".into()).too_long());
    }
}
