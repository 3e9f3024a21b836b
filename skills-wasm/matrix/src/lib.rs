//! `matrix`: a Matrix bot over the client-server API.
//!
//! Long-polls `/sync` with the `since` token the host keeps as the cursor.
//! The first sync after install only learns where "now" is, so old room
//! history is never answered. Invites are accepted (joining reads no
//! messages; the host still pairs every sender). Messages go out with
//! `PUT …/send/m.room.message/{txn}`, the host's stable message id as the
//! transaction id, so a retried send is not posted twice. The access token
//! appears only as `{MATRIX_TOKEN}` in the host-set `Authorization` header.
//!
//! Settings: `homeserver` (e.g. https://matrix.example.org), `poll_timeout`
//! (seconds, default 20).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wasiclaw_sdk::channel::{
    Channel, ChannelManifest, HttpRequest, Inbound, Markup, Outbound, SocketEvent, SocketReply, Transport,
    WebhookReply, encode, get_json, post_json,
};
use wasiclaw_sdk::{Capabilities, Error, HttpRule, Manifest, config, http};

/// A poll must end inside the host's call timeout (30 s by default).
const MAX_POLL_S: u64 = 25;

struct Matrix;

fn homeserver() -> Option<String> {
    config::get("homeserver").map(|h| h.trim_end_matches('/').to_string())
}

fn api() -> Result<String, Error> {
    homeserver()
        .map(|h| format!("{h}/_matrix/client/v3"))
        .ok_or_else(|| Error::InvalidInput("set homeserver in [skills.matrix] of config.toml".into()))
}

/// The cursor: the sync token and who we are.
#[derive(Serialize, Deserialize)]
struct Cursor {
    since: String,
    me: String,
}

fn put_json(url: &str, body: &Value) -> Result<Value, Error> {
    let resp = http::request("PUT", url, &[("content-type", "application/json")], Some(body.to_string().as_bytes()))?;
    if !(200..300).contains(&resp.status) {
        return Err(Error::Failed(format!(
            "{} answered HTTP {}: {}",
            url.split('?').next().unwrap_or(url),
            resp.status,
            resp.text()
        )));
    }
    serde_json::from_slice(&resp.body).map_err(|e| Error::Failed(format!("bad JSON from the homeserver: {e}")))
}

fn whoami(api: &str) -> Result<String, Error> {
    let me = get_json(&format!("{api}/account/whoami"))?;
    me["user_id"].as_str().map(String::from).ok_or_else(|| Error::Failed("whoami returned no user_id".into()))
}

/// Accept the invites in a sync response.
fn join_invites(api: &str, sync: &Value) {
    for room in sync["rooms"]["invite"].as_object().into_iter().flat_map(|r| r.keys()) {
        if let Err(e) = post_json(&format!("{api}/rooms/{}/join", encode(room)), &json!({})) {
            wasiclaw_sdk::log_warn(&format!("cannot join {room}: {e:?}"));
        }
    }
}

impl Channel for Matrix {
    fn describe() -> ChannelManifest {
        let http = homeserver()
            .map(|h| HttpRule {
                url: format!("{h}/_matrix/client/v3/"),
                methods: vec!["GET".into(), "POST".into(), "PUT".into()],
                headers: vec![("authorization".into(), "Bearer {MATRIX_TOKEN}".into())],
            })
            .into_iter()
            .collect();
        ChannelManifest {
            manifest: Manifest {
                name: "matrix".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                description: "Matrix bot (client-server API, /sync long polling)".into(),
                tools: vec![],
                capabilities: Capabilities { http, ..Default::default() },
            },
            transport: Transport::Poll(0),
            markup: Markup::Markdown,
            max_length: 16_000,
        }
    }

    fn poll(cursor: Option<String>) -> Result<(Vec<Inbound>, Option<String>), Error> {
        let api = api()?;
        let cursor: Option<Cursor> = cursor.and_then(|c| serde_json::from_str(&c).ok());
        let Some(Cursor { since, me }) = cursor else {
            // First run: learn who we are and where "now" is; answer nothing old.
            let me = whoami(&api)?;
            let sync = get_json(&format!("{api}/sync?timeout=0"))?;
            join_invites(&api, &sync);
            let since = sync["next_batch"].as_str().unwrap_or_default().to_string();
            return Ok((vec![], Some(serde_json::to_string(&Cursor { since, me }).expect("serializes"))));
        };
        let timeout: u64 = config::get("poll_timeout").and_then(|t| t.parse().ok()).unwrap_or(20).min(MAX_POLL_S);
        let sync = get_json(&format!("{api}/sync?timeout={}&since={}", timeout * 1000, encode(&since)))?;
        join_invites(&api, &sync);
        let mut out = Vec::new();
        for (room, data) in sync["rooms"]["join"].as_object().into_iter().flatten() {
            for ev in data["timeline"]["events"].as_array().into_iter().flatten() {
                let content = &ev["content"];
                let sender = ev["sender"].as_str().unwrap_or_default();
                if ev["type"] != "m.room.message" || content["msgtype"] != "m.text" || sender == me {
                    continue;
                }
                let (Some(text), Some(id)) = (content["body"].as_str(), ev["event_id"].as_str()) else { continue };
                out.push(Inbound {
                    chat_id: room.clone(),
                    sender_id: sender.into(),
                    sender_name: sender.into(),
                    text: text.into(),
                    message_id: id.into(),
                });
            }
        }
        let since = sync["next_batch"].as_str().map(String::from).unwrap_or(since);
        Ok((out, Some(serde_json::to_string(&Cursor { since, me }).expect("serializes"))))
    }

    fn on_webhook(_: HttpRequest) -> Result<WebhookReply, Error> {
        Err(Error::InvalidInput("matrix uses /sync long polling".into()))
    }

    fn on_socket(_: SocketEvent, _: Option<String>) -> Result<SocketReply, Error> {
        Err(Error::InvalidInput("matrix uses /sync long polling".into()))
    }

    fn send(message: Outbound) -> Result<String, Error> {
        let url = format!("{}/rooms/{}/send/m.room.message/{}", api()?, encode(&message.chat_id), encode(&message.id));
        let mut body = json!({"msgtype": "m.text", "body": message.text});
        if let Some(id) = message.reply_to {
            body["m.relates_to"] = json!({"m.in_reply_to": {"event_id": id}});
        }
        let sent = put_json(&url, &body)?;
        Ok(sent["event_id"].as_str().unwrap_or_default().into())
    }

    fn typing(chat_id: String) -> Result<(), Error> {
        let api = api()?;
        let me = whoami(&api)?;
        let url = format!("{api}/rooms/{}/typing/{}", encode(&chat_id), encode(&me));
        put_json(&url, &json!({"typing": true, "timeout": 5000})).map(drop)
    }
}

wasiclaw_sdk::export_channel!(Matrix);
