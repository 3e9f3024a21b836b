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
    Channel, ChannelManifest, Inbound, Markup, Outbound, Transport, encode, get_json, post_json,
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

/// The cursor: the sync token, who we are, and how many joined each room
/// (a room of two is a direct chat; a bigger one is a group).
#[derive(Serialize, Deserialize)]
struct Cursor {
    since: String,
    me: String,
    #[serde(default)]
    members: std::collections::BTreeMap<String, u64>,
}

/// Member counts from the sync's room summaries (sent when they change);
/// a room seen for the first time without one is asked directly.
fn count_members(api: &str, sync: &Value, members: &mut std::collections::BTreeMap<String, u64>) {
    for (room, data) in sync["rooms"]["join"].as_object().into_iter().flatten() {
        if let Some(n) = data["summary"]["m.joined_member_count"].as_u64() {
            members.insert(room.clone(), n);
        } else if !members.contains_key(room)
            && let Ok(joined) = get_json(&format!("{api}/rooms/{}/joined_members", encode(room)))
        {
            members.insert(room.clone(), joined["joined"].as_object().map_or(0, |j| j.len() as u64));
        }
    }
}

/// Whether a message names the bot: in `m.mentions`, or its id or local
/// part in the text (how clients write a mention and a reply's fallback).
fn mentions(content: &Value, me: &str) -> bool {
    let local = me.trim_start_matches('@').split(':').next().unwrap_or(me).to_lowercase();
    let body = content["body"].as_str().unwrap_or_default().to_lowercase();
    content["m.mentions"]["user_ids"].as_array().into_iter().flatten().any(|u| u == me)
        || body.contains(&me.to_lowercase())
        || (!local.is_empty() && body.contains(&local))
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
        let Some(Cursor { since, me, mut members }) = cursor else {
            // First run: learn who we are and where "now" is; answer nothing old.
            let me = whoami(&api)?;
            let sync = get_json(&format!("{api}/sync?timeout=0"))?;
            join_invites(&api, &sync);
            let mut members = Default::default();
            count_members(&api, &sync, &mut members);
            let since = sync["next_batch"].as_str().unwrap_or_default().to_string();
            return Ok((vec![], Some(serde_json::to_string(&Cursor { since, me, members }).expect("serializes"))));
        };
        let timeout: u64 = config::get("poll_timeout").and_then(|t| t.parse().ok()).unwrap_or(20).min(MAX_POLL_S);
        let sync = get_json(&format!("{api}/sync?timeout={}&since={}", timeout * 1000, encode(&since)))?;
        join_invites(&api, &sync);
        count_members(&api, &sync, &mut members);
        let mut out = Vec::new();
        for (room, data) in sync["rooms"]["join"].as_object().into_iter().flatten() {
            let group = members.get(room).is_none_or(|n| *n > 2);
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
                    group,
                    addressed: !group || mentions(content, &me),
                });
            }
        }
        let since = sync["next_batch"].as_str().map(String::from).unwrap_or(since);
        Ok((out, Some(serde_json::to_string(&Cursor { since, me, members }).expect("serializes"))))
    }

    fn send(message: Outbound) -> Result<String, Error> {
        let url = format!("{}/rooms/{}/send/m.room.message/{}", api()?, encode(&message.chat_id), encode(&message.id));
        // An empty `m.mentions` turns the body-based push rules off for this
        // event: a name or `@room` the model was talked into writing pings
        // nobody.
        let mut body = json!({"msgtype": "m.text", "body": message.text, "m.mentions": {}});
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
