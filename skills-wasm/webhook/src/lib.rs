//! `webhook`: a generic JSON channel for scripts and home automation.
//!
//! In: `POST /hooks/webhook/` with `Authorization: Bearer <WEBHOOK_TOKEN>`
//! and a body `{"chat": "...", "sender": "...", "text": "...", "id": "..."}`
//! (`id` optional but lets a retried delivery be answered once; `"group":
//! true` marks a chat others read, where the host answers only messages
//! with `"addressed": true`, the default). Answered
//! `202 {"accepted": n}`; the agent's reply arrives later at `callback_url`
//! as `POST {"chat": "...", "text": "...", "reply_to": "..."}`.
//! Senders are paired or allowed like any channel's: list your scripts in
//! `[channels.webhook] allow = ["home-assistant"]`.
//!
//! Settings: `callback_url` (where replies go; without it replies wait in
//! the outbox with an error saying so).

use serde_json::{Value, json};
use wasiclaw_sdk::channel::{
    Channel, ChannelManifest, HttpRequest, Inbound, Markup, Outbound, Transport, WebhookReply, reply, respond,
    respond_json,
};
use wasiclaw_sdk::{Capabilities, Error, HttpRule, Manifest, config, crypto, http};

struct Webhook;

const TOKEN: &str = "WEBHOOK_TOKEN";

fn field(v: &Value, name: &str) -> Result<String, Error> {
    match &v[name] {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(Error::InvalidInput(format!("`{name}` is missing; send {{\"chat\", \"sender\", \"text\"}}"))),
    }
}

impl Channel for Webhook {
    fn describe() -> ChannelManifest {
        let http = config::get("callback_url")
            .map(|url| HttpRule { url, methods: vec!["POST".into()], headers: vec![] })
            .into_iter()
            .collect();
        ChannelManifest {
            manifest: Manifest {
                name: "webhook".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                description: "Generic JSON webhook in, JSON callback out".into(),
                tools: vec![],
                capabilities: Capabilities { http, secrets: vec![TOKEN.into()], ..Default::default() },
            },
            transport: Transport::Webhook,
            markup: Markup::Markdown,
            max_length: 16_000,
        }
    }

    fn on_webhook(request: HttpRequest) -> Result<WebhookReply, Error> {
        if request.method != "POST" {
            return Ok(reply(respond(405, "POST a JSON message")));
        }
        let bearer = request.header("authorization").and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default();
        if !crypto::secret_equals(TOKEN, bearer.as_bytes())? {
            return Ok(reply(respond(401, "missing or wrong bearer token")));
        }
        let body: Value =
            serde_json::from_slice(&request.body).map_err(|e| Error::InvalidInput(format!("body is not JSON: {e}")))?;
        let (chat, sender, text) = (field(&body, "chat")?, field(&body, "sender")?, field(&body, "text")?);
        // Without an id every delivery is new.
        let id = field(&body, "id").unwrap_or_else(|_| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            format!("unnamed-{}", now.as_nanos())
        });
        let flag = |name: &str, default: bool| body[name].as_bool().unwrap_or(default);
        let message = Inbound {
            chat_id: chat,
            sender_id: sender.clone(),
            sender_name: sender,
            text,
            message_id: id,
            group: flag("group", false),
            addressed: flag("addressed", true),
        };
        Ok(WebhookReply { response: respond_json(202, &json!({"accepted": 1})), messages: vec![message] })
    }

    fn send(message: Outbound) -> Result<String, Error> {
        let url = config::get("callback_url").ok_or_else(|| {
            Error::InvalidInput("no callback_url: set it in [skills.webhook] of config.toml to receive replies".into())
        })?;
        let body = json!({"chat": message.chat_id, "text": message.text, "reply_to": message.reply_to});
        let resp =
            http::request("POST", &url, &[("content-type", "application/json")], Some(body.to_string().as_bytes()))?;
        if !(200..300).contains(&resp.status) {
            return Err(Error::Failed(format!("callback_url answered HTTP {}: {}", resp.status, resp.text())));
        }
        Ok(message.id)
    }
}

wasiclaw_sdk::export_channel!(Webhook);
