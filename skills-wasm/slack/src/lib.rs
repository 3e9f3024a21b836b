//! `slack`: a Slack app over the Events API.
//!
//! The host routes `/hooks/slack/` here. Every request must carry a valid
//! `X-Slack-Signature` (v0: HMAC-SHA256 of `v0:TIMESTAMP:BODY` under
//! SLACK_SIGNING_SECRET, computed by the host) with a timestamp within five
//! minutes, so a captured request cannot be replayed later; a retried
//! event is answered once by the host's deduplication. Replies go out with
//! `chat.postMessage`; the host adds `Authorization: Bearer
//! {SLACK_BOT_TOKEN}`.
//!
//! Settings: `api_base` (default https://slack.com/api).

use serde_json::{Value, json};
use wasiclaw_sdk::channel::{
    Channel, ChannelManifest, HttpRequest, Inbound, Markup, Outbound, Transport, WebhookReply, post_json, reply,
    respond, respond_json, signature_matches, unix_now,
};
use wasiclaw_sdk::{Capabilities, Error, HttpRule, Manifest, config};

struct Slack;

const SIGNING_SECRET: &str = "SLACK_SIGNING_SECRET";
/// Slack's guidance: refuse requests older than five minutes.
const MAX_AGE_S: i64 = 300;

fn api() -> String {
    config::get("api_base").unwrap_or_else(|| "https://slack.com/api".into()).trim_end_matches('/').into()
}

/// A user's message in the event, if it is one we answer. `me` is the
/// app's bot user, from the envelope's `authorizations`.
fn message(event: &Value, me: Option<&str>) -> Option<Inbound> {
    let kind = event["type"].as_str()?;
    // Bots (including this app) and edits/joins carry a subtype or bot_id.
    if !(kind == "message" || kind == "app_mention") || event.get("subtype").is_some() || event.get("bot_id").is_some()
    {
        return None;
    }
    let channel = event["channel"].as_str()?;
    let user = event["user"].as_str()?;
    let text = event["text"].as_str()?;
    // Direct-message channel ids start with D.
    let group = match event["channel_type"].as_str() {
        Some(kind) => kind != "im",
        None => !channel.starts_with('D'),
    };
    let mentioned = kind == "app_mention" || me.is_some_and(|me| text.contains(&format!("<@{me}>")));
    Some(Inbound {
        chat_id: channel.into(),
        sender_id: user.into(),
        sender_name: user.into(),
        text: text.into(),
        message_id: format!("{channel}:{}", event["ts"].as_str()?),
        group,
        addressed: !group || mentioned,
    })
}

impl Channel for Slack {
    fn describe() -> ChannelManifest {
        ChannelManifest {
            manifest: Manifest {
                name: "slack".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                description: "Slack app (Events API webhook, chat.postMessage)".into(),
                tools: vec![],
                capabilities: Capabilities {
                    http: vec![HttpRule {
                        url: format!("{}/chat.postMessage", api()),
                        methods: vec!["POST".into()],
                        headers: vec![("authorization".into(), "Bearer {SLACK_BOT_TOKEN}".into())],
                    }],
                    secrets: vec![SIGNING_SECRET.into()],
                    ..Default::default()
                },
            },
            transport: Transport::Webhook,
            markup: Markup::SlackMrkdwn,
            max_length: 4000,
        }
    }

    fn on_webhook(request: HttpRequest) -> Result<WebhookReply, Error> {
        if request.method != "POST" {
            return Ok(reply(respond(405, "POST only")));
        }
        let timestamp = request.header("x-slack-request-timestamp").unwrap_or_default();
        let signature = request.header("x-slack-signature").unwrap_or_default();
        let age = timestamp.parse::<i64>().map(|t| (unix_now() - t).abs());
        if !age.is_ok_and(|a| a <= MAX_AGE_S) {
            return Ok(reply(respond(401, "stale or missing X-Slack-Request-Timestamp")));
        }
        let mut signed = format!("v0:{timestamp}:").into_bytes();
        signed.extend_from_slice(&request.body);
        if !signature_matches(SIGNING_SECRET, &signed, "v0=", signature)? {
            return Ok(reply(respond(401, "bad X-Slack-Signature")));
        }
        let body: Value = serde_json::from_slice(&request.body)
            .map_err(|e| Error::InvalidInput(format!("event is not JSON: {e}")))?;
        match body["type"].as_str() {
            Some("url_verification") => {
                let challenge = body["challenge"].as_str().unwrap_or_default();
                Ok(reply(respond_json(200, &json!({ "challenge": challenge }))))
            }
            Some("event_callback") => Ok(WebhookReply {
                response: respond(200, "ok"),
                messages: message(&body["event"], body["authorizations"][0]["user_id"].as_str()).into_iter().collect(),
            }),
            _ => Ok(reply(respond(200, "ignored"))),
        }
    }

    fn send(message: Outbound) -> Result<String, Error> {
        let body = json!({"channel": message.chat_id, "text": message.text, "unfurl_links": false});
        let answer = post_json(&format!("{}/chat.postMessage", api()), &body)?;
        if answer["ok"].as_bool() != Some(true) {
            return Err(Error::Failed(format!("chat.postMessage: {}", answer["error"].as_str().unwrap_or("not ok"))));
        }
        Ok(answer["ts"].as_str().unwrap_or_default().into())
    }
    // Slack has no typing indicator for apps: the default does nothing.
}

wasiclaw_sdk::export_channel!(Slack);
