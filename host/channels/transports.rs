//! The transports the host holds for channels: the poll loop, the webhook
//! route and the websocket. Components only translate what arrives; secrets
//! reach frames only through `{NAME}` placeholders the socket's own rule
//! names, and are scrubbed from what the component reads.

use super::{
    Answer, Call, ChannelError, Channels, MAX_ANSWER_BYTES, MAX_BACKOFF, MIN_POLL_GAP, api, invoke, loaded_channel,
};
use crate::component::Transport;
use crate::engine::{CallError, HostCtx, describe_tool_error};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;

impl Channels {
    pub(super) async fn poll_loop(&self, name: &str, interval_ms: u32) -> Result<(), ChannelError> {
        let rt = self.rt();
        loop {
            let cursor = rt.db.cursor(name)?;
            let (Answer::Poll(messages, next), _) = invoke(rt, name, Call::Poll(cursor.clone())).await? else {
                unreachable!("poll answers a poll")
            };
            // Polled again at once only after news: a server that repeats
            // messages already seen (a cache, a bug), under the same cursor
            // or new ones, was otherwise polled hundreds of times a second.
            self.status(name, |s| s.last_error = None);
            let news = self.inbound(name, messages)? > 0 && next != cursor;
            if next != cursor {
                rt.db.set_cursor(name, next.as_deref())?;
            }
            if !news {
                tokio::time::sleep(Duration::from_millis(interval_ms as u64).max(MIN_POLL_GAP)).await;
            }
        }
    }

    /// Why `/hooks/<name>/` cannot take a request now, if it cannot: the
    /// gateway asks before it reads a body nobody would handle.
    pub fn webhook_refusal(&self, name: &str) -> Option<api::HttpResponse> {
        match self.rt().channel_spec(name) {
            Some(spec) if spec.transport == Transport::Webhook => None,
            Some(_) => Some(text(404, &format!("channel {name} does not take webhooks"))),
            // Platforms retry a 503: the message arrives once it is loaded.
            None if self.rt().is_compiling(name) => {
                let mut busy = text(503, &format!("channel {name} is still compiling"));
                busy.headers.push(("retry-after".into(), "10".into()));
                Some(busy)
            }
            None => Some(text(404, &format!("no channel named {name}"))),
        }
    }

    /// A request to `/hooks/<name>/...`.
    pub async fn webhook(&self, name: &str, request: api::HttpRequest) -> api::HttpResponse {
        if let Some(refusal) = self.webhook_refusal(name) {
            return refusal;
        }
        match invoke(self.rt(), name, Call::Webhook(request)).await {
            Ok((Answer::Webhook(reply), _)) => {
                if let Err(e) = self.inbound(name, reply.messages) {
                    tracing::error!("channel {name}: storing inbound messages: {e}");
                    return text(503, "could not store the message; retry later");
                }
                reply.response
            }
            Ok(_) => unreachable!("on-webhook answers a webhook"),
            Err(e) => {
                tracing::warn!("channel {name}: webhook: {e}");
                // Bad input is the sender's problem; a denial or a crash is
                // the owner's, so it shows in `wasiclaw status`.
                let (status, body) = match &e {
                    ChannelError::Call(CallError::Tool(t)) => (400, describe_tool_error(t)),
                    ChannelError::Denied(_) => (503, "this channel is not fully granted yet".to_string()),
                    _ => (500, "the channel failed; the owner can see why in `wasiclaw status`".to_string()),
                };
                if status != 400 {
                    self.status(name, |s| s.last_error = Some(e.to_string()));
                }
                text(status, &body)
            }
        }
    }

    /// One websocket connection, until it closes or fails.
    pub(super) async fn socket_loop(
        &self,
        name: &str,
        first_url: &str,
        st: &mut SocketState,
    ) -> Result<(), ChannelError> {
        let rt = self.rt();
        loop {
            let url = st.url.clone().unwrap_or_else(|| first_url.to_string());
            let (_, ctx) = loaded_channel(rt, name)?;
            let uri: http::Uri = url.parse().map_err(|e| ChannelError::Socket(format!("bad URL {url}: {e}")))?;
            let authorized = match crate::egress::authorize(&ctx, "GET", &uri).await {
                Ok(a) => {
                    ctx.audit("http", &format!("websocket {url}"), true, &format!("to {}", a.addr));
                    a
                }
                Err(reason) => {
                    let reason = reason.to_string();
                    ctx.audit("http", &format!("websocket {url}"), false, &reason);
                    return Err(ChannelError::Call(CallError::Tool(crate::engine::ToolError::Denied(format!(
                        "websocket {url}: {reason}"
                    )))));
                }
            };
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut request = authorized
                .decision
                .uri
                .to_string()
                .into_client_request()
                .map_err(|e| ChannelError::Socket(format!("bad URL {url}: {e}")))?;
            for (k, v) in &authorized.decision.headers {
                request.headers_mut().insert(k.clone(), v.clone());
            }
            // To the vetted address, with TLS checked against the name.
            let stream = match crate::egress::connect(&authorized).await {
                Ok(stream) => stream,
                Err(e) => {
                    ctx.audit("http", &format!("websocket {url}"), false, &format!("cannot connect: {e}"));
                    return Err(ChannelError::Socket(format!("cannot connect to {url}: {e}")));
                }
            };
            // A frame is held whole, scrubbed and copied into the guest:
            // tungstenite's default of 64 MiB would be the board's memory.
            let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .max_message_size(Some(MAX_ANSWER_BYTES))
                .max_frame_size(Some(MAX_ANSWER_BYTES));
            let connect = tokio_tungstenite::client_async_with_config(request, stream, Some(config));
            let (mut ws, _) = tokio::time::timeout(Duration::from_secs(30), connect)
                .await
                .map_err(|_| ChannelError::Socket(format!("connecting to {url} timed out")))?
                .map_err(|e| ChannelError::Socket(format!("cannot connect to {url}: {e}")))?;
            // The connection outlives this context: its records go now.
            ctx.finish();
            // Frames may carry only the secrets the socket's own rule names.
            let frame_secrets = authorized.decision.secrets.clone();
            tracing::info!("channel {name}: connected to {url}");
            let opened = std::time::Instant::now();
            self.status(name, |s| s.last_error = None);
            let mut ticker: Option<tokio::time::Interval> = None;
            let mut event = Some(api::SocketEvent::Opened);
            loop {
                if let Some(ev) = event.take() {
                    let (Answer::Socket(reply), ctx) = invoke(rt, name, Call::Socket(ev, st.state.clone())).await?
                    else {
                        unreachable!("on-socket answers a socket event")
                    };
                    st.state = reply.state;
                    if let Some(u) = reply.url {
                        st.url = Some(u);
                    }
                    if let Some(ms) = reply.tick_ms {
                        let every = Duration::from_millis(ms.max(100) as u64);
                        ticker = Some(tokio::time::interval_at(tokio::time::Instant::now() + every, every));
                    }
                    for frame in reply.send {
                        let frame = fill_secrets(&ctx, &frame, &frame_secrets);
                        ws.send(tokio_tungstenite::tungstenite::Message::text(frame))
                            .await
                            .map_err(|e| ChannelError::Socket(format!("sending a frame: {e}")))?;
                    }
                    self.inbound(name, reply.messages)?;
                    if reply.reconnect {
                        let _ = ws.close(None).await;
                        // Asked for soon after connecting, again and again (a
                        // platform's loop, a channel's bug), a reconnect backs
                        // off as a failure does: at once, it reconnected
                        // hundreds of times a second, each an audit record,
                        // and would get the bot's token rate-limited.
                        let quick = opened.elapsed() < QUICK_RECONNECT;
                        st.gap = if quick { (st.gap * 2).clamp(MIN_RECONNECT, MAX_BACKOFF) } else { Duration::ZERO };
                        tokio::time::sleep(st.gap).await;
                        break;
                    }
                }
                let tick = async {
                    match ticker.as_mut() {
                        Some(t) => t.tick().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tick => event = Some(api::SocketEvent::Tick),
                    frame = ws.next() => {
                        use tokio_tungstenite::tungstenite::Message;
                        match frame {
                            Some(Ok(Message::Text(t))) => {
                                let secrets = secret_values(&loaded_channel(rt, name)?.1);
                                let clean = crate::redact::redact(t.as_bytes(), &secrets);
                                event = Some(api::SocketEvent::Frame(String::from_utf8_lossy(&clean).into_owned()));
                            }
                            // Backed off like a failure: a server that keeps
                            // closing at once must not be hammered.
                            Some(Ok(Message::Close(_))) | None => {
                                return Err(ChannelError::Socket(format!("{url} closed the connection")));
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => return Err(ChannelError::Socket(format!("{url}: {e}"))),
                        }
                    }
                }
            }
        }
    }
}

/// What a websocket channel keeps across reconnects.
#[derive(Default)]
pub(super) struct SocketState {
    state: Option<String>,
    url: Option<String>,
    /// The wait before the last reconnect.
    gap: Duration,
}

/// A connection shorter than this that asks to reconnect waits first.
const QUICK_RECONNECT: Duration = Duration::from_secs(60);
const MIN_RECONNECT: Duration = Duration::from_secs(1);

/// Values of the secrets granted to a channel, to scrub from what it reads.
fn secret_values(ctx: &HostCtx) -> Vec<String> {
    let names = ctx.effective.secrets.iter().chain(&ctx.effective.crypto_secrets);
    names.filter_map(|n| ctx.secrets.get(n).ok().flatten()).collect()
}

/// Fill `{NAME}` placeholders of the secrets the socket's rule names
/// (`allowed`), JSON-string-escaped (frames are JSON on every platform we
/// speak). Any other placeholder is left as written and audited.
fn fill_secrets(ctx: &HostCtx, frame: &str, allowed: &[(String, String)]) -> String {
    let mut out = frame.to_string();
    for name in crate::grants::placeholders(frame) {
        match allowed.iter().find(|(n, _)| *n == name) {
            Some((_, value)) => {
                ctx.audit("secret", &name, true, "websocket frame");
                let escaped = serde_json::to_string(value).expect("strings serialize");
                out = out.replace(&format!("{{{name}}}"), &escaped[1..escaped.len() - 1]);
            }
            None => ctx.audit("secret", &name, false, "websocket frame: not named by the rule of this socket's URL"),
        }
    }
    out
}

/// A plain-text answer to a webhook.
fn text(status: u16, body: &str) -> api::HttpResponse {
    api::HttpResponse {
        status,
        headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
        body: format!("{body}\n").into_bytes(),
    }
}
