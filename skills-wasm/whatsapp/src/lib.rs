//! `whatsapp`: the WhatsApp Business Cloud API.
//!
//! The host routes `/hooks/whatsapp/` here. Meta's verification handshake
//! (`GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`) is
//! answered only when the token equals the secret WHATSAPP_VERIFY_TOKEN;
//! every notification must carry `X-Hub-Signature-256: sha256=` + the
//! HMAC-SHA256 of the body under WHATSAPP_APP_SECRET. Only text messages
//! are read, and nothing else in a notification is kept. Replies go to
//! the Graph API with `Authorization: Bearer {WHATSAPP_TOKEN}` added by
//! the host.
//!
//! Settings: `phone_number_id` (required to send), `api_base` (default
//! https://graph.facebook.com/v21.0).

use serde_json::{Value, json};
use wasiclaw_sdk::channel::{
    Channel, ChannelManifest, HttpRequest, Inbound, Markup, Outbound, Transport, WebhookReply, post_json, reply,
    respond, signature_matches,
};
use wasiclaw_sdk::{Capabilities, Error, HttpRule, Manifest, config, crypto};

struct WhatsApp;

const APP_SECRET: &str = "WHATSAPP_APP_SECRET";
const VERIFY_TOKEN: &str = "WHATSAPP_VERIFY_TOKEN";

fn messages_url() -> Option<String> {
    let base = config::get("api_base").unwrap_or_else(|| "https://graph.facebook.com/v21.0".into());
    let phone = config::get("phone_number_id")?;
    Some(format!("{}/{phone}/messages", base.trim_end_matches('/')))
}

/// Text messages in a notification (`entry[].changes[].value.messages[]`).
fn messages(body: &Value) -> Vec<Inbound> {
    let mut out = Vec::new();
    for change in
        body["entry"].as_array().into_iter().flatten().flat_map(|e| e["changes"].as_array().into_iter().flatten())
    {
        let value = &change["value"];
        let name_of = |wa_id: &str| {
            value["contacts"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["wa_id"] == wa_id)
                .and_then(|c| c["profile"]["name"].as_str().map(String::from))
        };
        for m in value["messages"].as_array().into_iter().flatten() {
            let (Some("text"), Some(from), Some(id), Some(text)) =
                (m["type"].as_str(), m["from"].as_str(), m["id"].as_str(), m["text"]["body"].as_str())
            else {
                continue;
            };
            out.push(Inbound {
                chat_id: from.into(),
                sender_id: from.into(),
                sender_name: name_of(from).unwrap_or_else(|| from.into()),
                text: text.into(),
                message_id: id.into(),
                // The Cloud API delivers one-to-one chats only.
                group: false,
                addressed: true,
            });
        }
    }
    out
}

impl Channel for WhatsApp {
    fn describe() -> ChannelManifest {
        let http = messages_url()
            .map(|url| HttpRule {
                url,
                methods: vec!["POST".into()],
                headers: vec![("authorization".into(), "Bearer {WHATSAPP_TOKEN}".into())],
            })
            .into_iter()
            .collect();
        ChannelManifest {
            manifest: Manifest {
                name: "whatsapp".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                description: "WhatsApp Business (Cloud API webhook, Graph API messages)".into(),
                tools: vec![],
                capabilities: Capabilities {
                    http,
                    secrets: vec![APP_SECRET.into(), VERIFY_TOKEN.into()],
                    ..Default::default()
                },
            },
            transport: Transport::Webhook,
            markup: Markup::Whatsapp,
            max_length: 4096,
        }
    }

    fn on_webhook(request: HttpRequest) -> Result<WebhookReply, Error> {
        if request.method == "GET" {
            let token = request.query_param("hub.verify_token").unwrap_or_default();
            let subscribe = request.query_param("hub.mode").as_deref() == Some("subscribe");
            if subscribe && crypto::secret_equals(VERIFY_TOKEN, token.as_bytes())? {
                return Ok(reply(respond(200, &request.query_param("hub.challenge").unwrap_or_default())));
            }
            return Ok(reply(respond(403, "verify token does not match")));
        }
        let signature = request.header("x-hub-signature-256").unwrap_or_default();
        if !signature_matches(APP_SECRET, &request.body, "sha256=", signature)? {
            return Ok(reply(respond(401, "bad X-Hub-Signature-256")));
        }
        let body: Value = serde_json::from_slice(&request.body)
            .map_err(|e| Error::InvalidInput(format!("notification is not JSON: {e}")))?;
        Ok(WebhookReply { response: respond(200, "ok"), messages: messages(&body) })
    }

    fn send(message: Outbound) -> Result<String, Error> {
        let url = messages_url()
            .ok_or_else(|| Error::InvalidInput("set phone_number_id in [skills.whatsapp] of config.toml".into()))?;
        let mut body = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": message.chat_id,
            "type": "text",
            "text": {"preview_url": false, "body": message.text},
        });
        if let Some(id) = message.reply_to {
            body["context"] = json!({ "message_id": id });
        }
        let answer = post_json(&url, &body)?;
        Ok(answer["messages"][0]["id"].as_str().unwrap_or_default().into())
    }

    // The Cloud API has no plain typing indicator: the default does nothing.
}

wasiclaw_sdk::export_channel!(WhatsApp);
