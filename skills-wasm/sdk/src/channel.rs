//! Writing chat channels: the `channel` world's bindings and helpers.
//!
//! A channel shares the skill world's imports (kv, log, config, crypto,
//! HTTP), so those types are the same ones skills use.
//!
//! ```ignore
//! struct Telegram;
//! impl wasiclaw_sdk::channel::Channel for Telegram { ... }
//! wasiclaw_sdk::export_channel!(Telegram);
//! ```

pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "wasiclaw:plugin/channel",
        pub_export_macro: true,
        export_macro_name: "export_channel_guest",
        default_bindings_module: "wasiclaw_sdk::channel::bindings",
        with: {
            "wasiclaw:plugin/types@0.2.0": crate::bindings::wasiclaw::plugin::types,
            "wasiclaw:plugin/kv@0.2.0": crate::bindings::wasiclaw::plugin::kv,
            "wasiclaw:plugin/log@0.2.0": crate::bindings::wasiclaw::plugin::log,
            "wasiclaw:plugin/config@0.2.0": crate::bindings::wasiclaw::plugin::config,
            "wasiclaw:plugin/crypto@0.2.0": crate::bindings::wasiclaw::plugin::crypto,
            "wasi:http/types@0.2.12": crate::bindings::wasi::http::types,
            "wasi:http/outgoing-handler@0.2.12": crate::bindings::wasi::http::outgoing_handler,
            "wasi:io/error@0.2.12": crate::bindings::wasi::io::error,
            "wasi:io/poll@0.2.12": crate::bindings::wasi::io::poll,
            "wasi:io/streams@0.2.12": crate::bindings::wasi::io::streams,
            "wasi:clocks/monotonic-clock@0.2.12": crate::bindings::wasi::clocks::monotonic_clock,
        },
    });
}

use crate::Error;
pub use crate::bindings::wasiclaw::plugin::types::{Inbound, Outbound};
pub use crate::http::encode;
pub use bindings::exports::wasiclaw::plugin::channel_api::{
    ChannelManifest, HttpRequest, HttpResponse, Markup, SocketEvent, SocketReply, Transport, WebhookReply,
};

/// A chat channel. `describe` and `send` are required; a channel
/// implements the calls of the transport it declares, and the others answer
/// that this channel does not use them.
pub trait Channel {
    fn describe() -> ChannelManifest;
    /// Send a message; returns the platform's message id.
    fn send(message: Outbound) -> Result<String, Error>;
    /// `Transport::Poll`: fetch new messages and the next cursor.
    fn poll(_cursor: Option<String>) -> Result<(Vec<Inbound>, Option<String>), Error> {
        Err(Error::InvalidInput("this channel does not poll".into()))
    }
    /// `Transport::Webhook`: answer a request on `/hooks/NAME/`.
    fn on_webhook(_request: HttpRequest) -> Result<WebhookReply, Error> {
        Ok(reply(respond(404, "this channel takes no webhooks")))
    }
    /// `Transport::Websocket`: handle an event of the host-held socket.
    fn on_socket(_event: SocketEvent, _state: Option<String>) -> Result<SocketReply, Error> {
        Err(Error::InvalidInput("this channel uses no websocket".into()))
    }
    /// Show "typing…" where the platform can; by default nothing.
    fn typing(_chat_id: String) -> Result<(), Error> {
        Ok(())
    }
}

/// Export a type implementing [`Channel`] as the component's `channel-api`.
#[macro_export]
macro_rules! export_channel {
    ($channel:ident) => {
        impl $crate::channel::bindings::exports::wasiclaw::plugin::channel_api::Guest for $channel {
            fn describe() -> $crate::channel::ChannelManifest {
                <$channel as $crate::channel::Channel>::describe()
            }
            fn poll(cursor: Option<String>) -> Result<(Vec<$crate::channel::Inbound>, Option<String>), $crate::Error> {
                <$channel as $crate::channel::Channel>::poll(cursor)
            }
            fn on_webhook(
                request: $crate::channel::HttpRequest,
            ) -> Result<$crate::channel::WebhookReply, $crate::Error> {
                <$channel as $crate::channel::Channel>::on_webhook(request)
            }
            fn on_socket(
                event: $crate::channel::SocketEvent,
                state: Option<String>,
            ) -> Result<$crate::channel::SocketReply, $crate::Error> {
                <$channel as $crate::channel::Channel>::on_socket(event, state)
            }
            fn send(message: $crate::channel::Outbound) -> Result<String, $crate::Error> {
                <$channel as $crate::channel::Channel>::send(message)
            }
            fn typing(chat_id: String) -> Result<(), $crate::Error> {
                <$channel as $crate::channel::Channel>::typing(chat_id)
            }
        }
        $crate::channel::bindings::export_channel_guest!($channel);
    };
}

impl HttpRequest {
    /// A header by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A query parameter, form-decoded (`%XX` and `+`).
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }
}

/// Decode `%XX` and `+` in a query value; invalid escapes stay as written.
pub fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned()
}

/// A response with a status and a short text body.
pub fn respond(status: u16, body: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
        body: body.as_bytes().to_vec(),
    }
}

/// A JSON response.
pub fn respond_json(status: u16, body: &serde_json::Value) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_string().into_bytes(),
    }
}

/// A webhook reply with no messages.
pub fn reply(response: HttpResponse) -> WebhookReply {
    WebhookReply { response, messages: vec![] }
}

/// Send JSON and parse a JSON answer, failing on a non-2xx status.
pub fn post_json(url: &str, body: &serde_json::Value) -> Result<serde_json::Value, Error> {
    let resp =
        crate::http::request("POST", url, &[("content-type", "application/json")], Some(body.to_string().as_bytes()))?;
    json_of(url, resp)
}

pub fn get_json(url: &str) -> Result<serde_json::Value, Error> {
    json_of(url, crate::http::get(url)?)
}

fn json_of(url: &str, resp: crate::http::Response) -> Result<serde_json::Value, Error> {
    let path = url.split('?').next().unwrap_or(url);
    if !(200..300).contains(&resp.status) {
        return Err(Error::Failed(format!("{path} answered HTTP {}: {}", resp.status, resp.text())));
    }
    serde_json::from_slice(&resp.body).map_err(|e| Error::Failed(format!("{path} sent bad JSON: {e}")))
}

/// Compare two byte strings in constant time.
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A socket reply that only keeps the state.
pub fn socket_reply(state: Option<String>) -> SocketReply {
    SocketReply { send: vec![], messages: vec![], tick_ms: None, reconnect: false, url: None, state }
}

/// Seconds since the Unix epoch (the host's wall clock).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Whether `presented` (e.g. `v0=ab12…`) is `prefix` + hex HMAC-SHA256 of
/// `data` under the secret `secret`, compared in constant time.
pub fn signature_matches(secret: &str, data: &[u8], prefix: &str, presented: &str) -> Result<bool, Error> {
    let mac = crate::crypto::hmac_sha256(secret, data)?;
    Ok(equal(format!("{prefix}{}", hex(&mac)).as_bytes(), presented.as_bytes()))
}
