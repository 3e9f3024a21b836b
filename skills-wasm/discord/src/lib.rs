//! `discord`: a Discord bot over the Gateway (websocket) and REST.
//!
//! The host holds the websocket; this component speaks the gateway
//! protocol: Hello → Identify (or Resume with the last session and
//! sequence), heartbeats at the interval Hello gave, a reconnect when a
//! heartbeat goes unacknowledged (a zombie connection) or Discord asks
//! (op 7, op 9). The token appears only as `{DISCORD_TOKEN}`: the host
//! fills it into the Identify/Resume frames and the REST `Authorization`
//! header. Connection state (sequence, session) travels in the host-held
//! socket state, not in storage.
//!
//! Settings: `gateway_url` (default wss://gateway.discord.gg/?v=10&encoding=json),
//! `api_base` (default https://discord.com/api/v10).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wasiclaw_sdk::channel::{
    Channel, ChannelManifest, Inbound, Markup, Outbound, SocketEvent, SocketReply, Transport, post_json,
};
use wasiclaw_sdk::{Capabilities, Error, HttpRule, Manifest, config, http};

struct Discord;

/// GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT.
const INTENTS: u64 = (1 << 9) | (1 << 12) | (1 << 15);

fn gateway_url() -> String {
    config::get("gateway_url").unwrap_or_else(|| "wss://gateway.discord.gg/?v=10&encoding=json".into())
}

fn api() -> String {
    config::get("api_base").unwrap_or_else(|| "https://discord.com/api/v10".into()).trim_end_matches('/').into()
}

/// The URL without its query, as an egress rule.
fn auth() -> (String, String) {
    ("authorization".into(), "Bot {DISCORD_TOKEN}".into())
}

fn origin_rule(url: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    if base.matches('/').count() < 3 { format!("{base}/") } else { base.to_string() }
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    seq: Option<u64>,
    session_id: Option<String>,
    resume_url: Option<String>,
    /// Whether the last heartbeat was acknowledged.
    acked: bool,
    /// The bot's user id (from READY), to tell when a message mentions it.
    #[serde(default)]
    me: Option<String>,
}

fn with_query(url: &str) -> String {
    if url.contains('?') { url.into() } else { format!("{}/?v=10&encoding=json", url.trim_end_matches('/')) }
}

impl Channel for Discord {
    fn describe() -> ChannelManifest {
        let gateway = gateway_url();
        let mut http = vec![
            // The identify and resume frames carry the token: a socket's
            // frames may hold only the secrets its own rule names.
            HttpRule { url: origin_rule(&gateway), methods: vec!["GET".into()], headers: vec![auth()] },
            HttpRule { url: format!("{}/channels/", api()), methods: vec!["POST".into()], headers: vec![auth()] },
        ];
        // Discord hands out regional resume URLs.
        if gateway.starts_with("wss://gateway.discord.gg") {
            http.push(HttpRule {
                url: "wss://*.discord.gg/".into(),
                methods: vec!["GET".into()],
                headers: vec![auth()],
            });
        }
        ChannelManifest {
            manifest: Manifest {
                name: "discord".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                description: "Discord bot (gateway websocket, REST)".into(),
                tools: vec![],
                capabilities: Capabilities { http, ..Default::default() },
            },
            transport: Transport::Websocket(gateway),
            markup: Markup::Markdown,
            max_length: 2000,
        }
    }

    fn on_socket(event: SocketEvent, state: Option<String>) -> Result<SocketReply, Error> {
        let mut st: State = state.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
        let mut out =
            SocketReply { send: vec![], messages: vec![], tick_ms: None, reconnect: false, url: None, state: None };
        match event {
            SocketEvent::Opened => {}
            SocketEvent::Tick => {
                if !st.acked {
                    // No ACK since the last beat: the connection is dead. Resume elsewhere.
                    out.reconnect = true;
                } else {
                    out.send.push(json!({"op": 1, "d": st.seq}).to_string());
                    st.acked = false;
                }
            }
            SocketEvent::Frame(text) => {
                let frame: Value = serde_json::from_str(&text)
                    .map_err(|e| Error::InvalidInput(format!("gateway sent a frame that is not JSON: {e}")))?;
                if let Some(s) = frame["s"].as_u64() {
                    st.seq = Some(s);
                }
                let d = &frame["d"];
                match frame["op"].as_u64() {
                    Some(10) => {
                        let interval = d["heartbeat_interval"].as_u64().unwrap_or(41_250) as u32;
                        out.tick_ms = Some(interval);
                        st.acked = true;
                        let resume = st.session_id.as_ref().zip(st.seq);
                        out.send.push(match resume {
                            Some((session, seq)) => json!({"op": 6, "d": {"token": "{DISCORD_TOKEN}", "session_id": session, "seq": seq}}),
                            None => json!({"op": 2, "d": {
                                "token": "{DISCORD_TOKEN}",
                                "intents": INTENTS,
                                "properties": {"os": "wasiclaw", "browser": "wasiclaw", "device": "wasiclaw"},
                            }}),
                        }
                        .to_string());
                    }
                    Some(11) => st.acked = true,
                    Some(1) => out.send.push(json!({"op": 1, "d": st.seq}).to_string()),
                    Some(7) => out.reconnect = true,
                    Some(9) => {
                        if d.as_bool() != Some(true) {
                            st = State::default();
                            out.url = Some(gateway_url());
                        }
                        out.reconnect = true;
                    }
                    Some(0) => match frame["t"].as_str() {
                        Some("READY") => {
                            st.me = d["user"]["id"].as_str().map(String::from);
                            st.session_id = d["session_id"].as_str().map(String::from);
                            st.resume_url = d["resume_gateway_url"].as_str().map(String::from);
                            out.url = st.resume_url.as_deref().map(with_query);
                        }
                        Some("MESSAGE_CREATE") if d["author"]["bot"].as_bool() != Some(true) => {
                            let author = &d["author"];
                            if let (Some(chat), Some(sender), Some(text), Some(id)) = (
                                d["channel_id"].as_str(),
                                author["id"].as_str(),
                                d["content"].as_str(),
                                d["id"].as_str(),
                            ) {
                                let name =
                                    author["global_name"].as_str().or(author["username"].as_str()).unwrap_or(sender);
                                // Server channels have a guild; direct messages do not.
                                let group = d.get("guild_id").is_some_and(|g| !g.is_null());
                                let me = st.me.as_deref().unwrap_or_default();
                                let mentioned = d["mentions"].as_array().into_iter().flatten().any(|u| u["id"] == me)
                                    || d["referenced_message"]["author"]["id"] == me;
                                out.messages.push(Inbound {
                                    chat_id: chat.into(),
                                    sender_id: sender.into(),
                                    sender_name: name.into(),
                                    text: text.into(),
                                    message_id: id.into(),
                                    group,
                                    addressed: !group || (!me.is_empty() && mentioned),
                                });
                            }
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        out.state = Some(serde_json::to_string(&st).expect("state serializes"));
        Ok(out)
    }

    fn send(message: Outbound) -> Result<String, Error> {
        // SUPPRESS_EMBEDS (1 << 2): Discord would fetch any link in a reply
        // for its embed, so a URL holding the owner's data would go out
        // unclicked.
        let mut body = json!({"content": message.text, "allowed_mentions": {"parse": []}, "flags": 4});
        if let Some(id) = message.reply_to {
            body["message_reference"] = json!({"message_id": id, "fail_if_not_exists": false});
        }
        let sent = post_json(&format!("{}/channels/{}/messages", api(), message.chat_id), &body)?;
        Ok(sent["id"].as_str().unwrap_or_default().into())
    }

    fn typing(chat_id: String) -> Result<(), Error> {
        let resp = http::request("POST", &format!("{}/channels/{chat_id}/typing", api()), &[], Some(b""))?;
        if (200..300).contains(&resp.status) {
            Ok(())
        } else {
            Err(Error::Failed(format!("typing: HTTP {}", resp.status)))
        }
    }
}

wasiclaw_sdk::export_channel!(Discord);
