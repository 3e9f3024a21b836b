//! `telegram`: a Telegram Bot API channel.
//!
//! Long polling with `getUpdates` by default; with `mode = "webhook"` in
//! `[skills.telegram]` the host routes `/hooks/telegram/` here and the
//! `X-Telegram-Bot-Api-Secret-Token` header is checked against the secret
//! TELEGRAM_WEBHOOK_SECRET (register the URL with `setWebhook` and that
//! `secret_token`). The bot token is put into the URL by the host: this
//! component only ever writes `{TELEGRAM_TOKEN}`.
//!
//! Settings: `api_base` (default https://api.telegram.org), `mode`
//! (`polling` or `webhook`), `poll_timeout` (seconds, default 20).

use serde_json::{Value, json};
use wasiclaw_sdk::channel::{
    Channel, ChannelManifest, HttpRequest, Inbound, Markup, Outbound, Transport, WebhookReply, get_json, post_json,
    reply, respond,
};
use wasiclaw_sdk::{Capabilities, Error, HttpRule, Manifest, config, crypto};

/// A poll must end inside the host's call timeout (30 s by default).
const MAX_POLL_S: u32 = 25;

struct Telegram;

const WEBHOOK_SECRET: &str = "TELEGRAM_WEBHOOK_SECRET";

fn api() -> String {
    let base = config::get("api_base").unwrap_or_else(|| "https://api.telegram.org".into());
    format!("{}/bot{{TELEGRAM_TOKEN}}", base.trim_end_matches('/'))
}

fn webhook_mode() -> bool {
    config::get("mode").as_deref() == Some("webhook")
}

/// The bot's own username, asked of `getMe` only when a group message
/// needs it: a group message addresses the bot by `@username` or by
/// replying to it.
fn username() -> Result<String, Error> {
    let me = ok_result(get_json(&format!("{}/getMe", api()))?, "getMe")?;
    me["username"].as_str().map(String::from).ok_or_else(|| Error::Failed("getMe returned no username".into()))
}

/// Messages of the updates, as inbound messages. Ids are `CHAT:MESSAGE`
/// because Telegram numbers messages per chat.
fn messages(updates: &[Value]) -> Result<Vec<Inbound>, Error> {
    let in_group = |u: &Value| u["message"]["chat"]["type"].as_str().is_some_and(|t| t != "private");
    let me = if updates.iter().any(in_group) { username()?.to_lowercase() } else { String::new() };
    let addressed = |m: &Value| {
        let text = m["text"].as_str().unwrap_or_default().to_lowercase();
        let replied = &m["reply_to_message"]["from"];
        text.contains(&format!("@{me}")) || replied["username"].as_str().is_some_and(|u| u.to_lowercase() == me)
    };
    Ok(updates
        .iter()
        .filter_map(|u| {
            let m = u.get("message")?;
            let group = in_group(u);
            let chat = m["chat"]["id"].as_i64()?;
            let from = &m["from"];
            let name = [from["first_name"].as_str(), from["last_name"].as_str()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            Some(Inbound {
                chat_id: chat.to_string(),
                sender_id: from["id"].as_i64()?.to_string(),
                sender_name: if name.is_empty() { from["username"].as_str().unwrap_or("?").to_string() } else { name },
                text: m["text"].as_str()?.to_string(),
                message_id: format!("{chat}:{}", m["message_id"].as_i64()?),
                group,
                addressed: !group || addressed(m),
            })
        })
        .collect())
}

fn chat_value(chat: &str) -> Value {
    chat.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(chat))
}

fn ok_result(v: Value, what: &str) -> Result<Value, Error> {
    if v["ok"].as_bool() == Some(true) {
        Ok(v["result"].clone())
    } else {
        Err(Error::Failed(format!("{what}: {}", v["description"].as_str().unwrap_or("Telegram said no"))))
    }
}

/// HTML as plain text, for a platform that refused our markup.
fn strip_html(s: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&amp;", "&")
}

impl Channel for Telegram {
    fn describe() -> ChannelManifest {
        let mut capabilities = Capabilities {
            http: vec![HttpRule {
                url: format!("{}/", api()),
                methods: vec!["GET".into(), "POST".into()],
                headers: vec![],
            }],
            ..Default::default()
        };
        if webhook_mode() {
            capabilities.secrets.push(WEBHOOK_SECRET.into());
        }
        ChannelManifest {
            manifest: Manifest {
                name: "telegram".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                description: "Telegram bot (Bot API): long polling, or a webhook".into(),
                tools: vec![],
                capabilities,
            },
            transport: if webhook_mode() { Transport::Webhook } else { Transport::Poll(0) },
            markup: Markup::TelegramHtml,
            max_length: 4096,
        }
    }

    fn poll(cursor: Option<String>) -> Result<(Vec<Inbound>, Option<String>), Error> {
        let timeout: u32 = config::get("poll_timeout").and_then(|t| t.parse().ok()).unwrap_or(20).min(MAX_POLL_S);
        let offset = cursor.as_deref().unwrap_or("0");
        let url = format!("{}/getUpdates?offset={offset}&timeout={timeout}&allowed_updates=%5B%22message%22%5D", api());
        let updates = ok_result(get_json(&url)?, "getUpdates")?;
        let updates = updates.as_array().cloned().unwrap_or_default();
        let next = updates.iter().filter_map(|u| u["update_id"].as_i64()).max().map(|id| (id + 1).to_string());
        Ok((messages(&updates)?, next.or(cursor)))
    }

    fn on_webhook(request: HttpRequest) -> Result<WebhookReply, Error> {
        if !webhook_mode() {
            return Ok(reply(respond(404, "webhook mode is off")));
        }
        let token = request.header("x-telegram-bot-api-secret-token").unwrap_or_default();
        if !crypto::secret_equals(WEBHOOK_SECRET, token.as_bytes())? {
            return Ok(reply(respond(401, "bad secret token")));
        }
        let update: Value = serde_json::from_slice(&request.body)
            .map_err(|e| Error::InvalidInput(format!("update is not JSON: {e}")))?;
        Ok(WebhookReply { response: respond(200, "ok"), messages: messages(&[update])? })
    }

    fn send(message: Outbound) -> Result<String, Error> {
        // No link previews: Telegram's servers would fetch any link in a
        // reply at once, so a model talked into writing a URL holding the
        // owner's data would send it out unclicked.
        let mut body = json!({
            "chat_id": chat_value(&message.chat_id),
            "text": message.text,
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": true},
        });
        if let Some(id) = message.reply_to.as_deref().and_then(|r| r.rsplit(':').next()?.parse::<i64>().ok()) {
            body["reply_parameters"] = json!({"message_id": id, "allow_sending_without_reply": true});
        }
        let url = format!("{}/sendMessage", api());
        let sent = match post_json(&url, &body) {
            // Telegram refuses markup it cannot parse; the text still matters more.
            Err(Error::Failed(e)) if e.contains("can't parse entities") => {
                body["text"] = strip_html(&message.text).into();
                body.as_object_mut().map(|o| o.remove("parse_mode"));
                post_json(&url, &body)?
            }
            other => other?,
        };
        let sent = ok_result(sent, "sendMessage")?;
        Ok(sent["message_id"].as_i64().map(|id| id.to_string()).unwrap_or_default())
    }

    fn typing(chat_id: String) -> Result<(), Error> {
        let body = json!({"chat_id": chat_value(&chat_id), "action": "typing"});
        ok_result(post_json(&format!("{}/sendChatAction", api()), &body)?, "sendChatAction").map(drop)
    }
}

wasiclaw_sdk::export_channel!(Telegram);
