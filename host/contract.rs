//! The contract versions this host speaks: the bindings of `wit/` (the
//! current version) and of `wit/0.1.0/`, and the adapters that let the rest
//! of the host use only the current types.
//!
//! Invariants:
//! - Callers see one set of types, the current contract's. A 0.1.0
//!   component is called through the same methods; its values are converted
//!   at this boundary, in both directions.
//! - A 0.1.0 component gets exactly the host imports a current one gets
//!   (same checks, same audit): its import functions delegate to the
//!   current implementations.
//! - A 0.1.0 channel's messages are direct and addressed (`group: false`,
//!   `addressed: true`): that contract could not say otherwise, and it is
//!   how the host treated them before.

use crate::state::SkillState;
use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

/// The contract version this host speaks (`wit/plugin.wit`).
pub const CURRENT: &str = "0.2.0";
/// Older versions whose components still load, each in `wit/VERSION/`.
pub const OLDER: &[&str] = &["0.1.0"];

/// Bindings of the current contract (`wit/`), generated.
#[allow(missing_docs)]
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "wasiclaw:plugin/skill",
        // Imports that touch the database or the network are async: their
        // work runs off the async workers, so the wall-clock limit holds.
        imports: {
            "wasiclaw:plugin/memory": async | trappable,
            "wasiclaw:plugin/kv": async | trappable,
            "wasiclaw:plugin/notify": async | trappable,
            default: trappable,
        },
        exports: { default: async },
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

/// The `channel` world. Its imports are the skill world's, so the same
/// host implementations (and linker) serve both.
#[allow(missing_docs)]
pub mod channel_bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "wasiclaw:plugin/channel",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasiclaw:plugin/types": super::bindings::wasiclaw::plugin::types,
            "wasiclaw:plugin/kv": super::bindings::wasiclaw::plugin::kv,
            "wasiclaw:plugin/log": super::bindings::wasiclaw::plugin::log,
            "wasiclaw:plugin/config": super::bindings::wasiclaw::plugin::config,
            "wasiclaw:plugin/crypto": super::bindings::wasiclaw::plugin::crypto,
        },
    });
}

/// The `script-runner` world (the interpreter of script skills). Its
/// imports are the skill world's.
#[allow(missing_docs)]
pub mod script_bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "wasiclaw:plugin/script-runner",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasiclaw:plugin/types": super::bindings::wasiclaw::plugin::types,
            "wasiclaw:plugin/kv": super::bindings::wasiclaw::plugin::kv,
            "wasiclaw:plugin/log": super::bindings::wasiclaw::plugin::log,
            "wasiclaw:plugin/config": super::bindings::wasiclaw::plugin::config,
            "wasiclaw:plugin/crypto": super::bindings::wasiclaw::plugin::crypto,
            "wasiclaw:plugin/memory": super::bindings::wasiclaw::plugin::memory,
            "wasiclaw:plugin/notify": super::bindings::wasiclaw::plugin::notify,
        },
    });
}

/// Contract 0.1.0, as frozen in `wit/0.1.0/`.
#[allow(missing_docs)]
pub mod v0_1 {
    pub mod skill {
        wasmtime::component::bindgen!({
            path: "wit/0.1.0",
            world: "wasiclaw:plugin/skill",
            imports: {
                "wasiclaw:plugin/memory": async | trappable,
                "wasiclaw:plugin/kv": async | trappable,
                "wasiclaw:plugin/notify": async | trappable,
                default: trappable,
            },
            exports: { default: async },
            with: {
                "wasi:http": wasmtime_wasi_http::p2::bindings::http,
                "wasi:io": wasmtime_wasi::p2::bindings::io,
                "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            },
        });
    }

    pub mod channel {
        wasmtime::component::bindgen!({
            path: "wit/0.1.0",
            world: "wasiclaw:plugin/channel",
            imports: { default: trappable },
            exports: { default: async },
            with: {
                "wasi:http": wasmtime_wasi_http::p2::bindings::http,
                "wasi:io": wasmtime_wasi::p2::bindings::io,
                "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
                "wasiclaw:plugin/types": super::skill::wasiclaw::plugin::types,
                "wasiclaw:plugin/kv": super::skill::wasiclaw::plugin::kv,
                "wasiclaw:plugin/log": super::skill::wasiclaw::plugin::log,
                "wasiclaw:plugin/config": super::skill::wasiclaw::plugin::config,
                "wasiclaw:plugin/crypto": super::skill::wasiclaw::plugin::crypto,
            },
        });
    }
}

use bindings::wasiclaw::plugin as now;
use channel_bindings::exports::wasiclaw::plugin::channel_api as api;
use v0_1::channel::exports::wasiclaw::plugin::channel_api as old_api;
use v0_1::skill::wasiclaw::plugin as old;

pub use api::{ChannelManifest, HttpRequest, HttpResponse, Markup, SocketEvent, SocketReply, Transport, WebhookReply};
pub use now::types::{Error, Inbound, Manifest, Outbound};

/// Link the host side of every contract version's imports.
pub fn add_to_linker(linker: &mut Linker<SkillState>) -> wasmtime::Result<()> {
    now::kv::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    now::log::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    now::config::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    now::notify::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    now::crypto::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    now::memory::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    now::types::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    old::kv::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    old::log::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    old::config::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    old::notify::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    old::crypto::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    old::memory::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    old::types::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

/// A compiled skill ready to instantiate, of either contract version, or
/// a script skill: the script runner and the script's source.
#[derive(Clone)]
pub enum SkillGuest {
    /// Built for the current contract.
    Current(bindings::SkillPre<SkillState>),
    /// Built for 0.1.0.
    V0_1(v0_1::skill::SkillPre<SkillState>),
    /// A script, run by the script runner.
    Script(script_bindings::ScriptRunnerPre<SkillState>, std::sync::Arc<str>),
}

impl SkillGuest {
    /// Prepare a skill speaking contract `version`.
    pub fn new(pre: InstancePre<SkillState>, version: &str) -> wasmtime::Result<Self> {
        Ok(match version {
            CURRENT => SkillGuest::Current(bindings::SkillPre::new(pre)?),
            _ => SkillGuest::V0_1(v0_1::skill::SkillPre::new(pre)?),
        })
    }

    /// The engine it was compiled for, which its stores must use.
    pub fn engine(&self) -> &wasmtime::Engine {
        match self {
            SkillGuest::Current(pre) => pre.engine(),
            SkillGuest::V0_1(pre) => pre.engine(),
            SkillGuest::Script(pre, _) => pre.engine(),
        }
    }

    /// Instantiate in `store` and ask what it is. Only a script can answer
    /// with an error: its source declares no usable manifest.
    pub async fn describe(&self, store: &mut Store<SkillState>) -> wasmtime::Result<Result<Manifest, Error>> {
        Ok(match self {
            SkillGuest::Current(pre) => {
                Ok(pre.instantiate_async(&mut *store).await?.wasiclaw_plugin_tool_api().call_describe(store).await?)
            }
            SkillGuest::V0_1(pre) => Ok(pre
                .instantiate_async(&mut *store)
                .await?
                .wasiclaw_plugin_tool_api()
                .call_describe(store)
                .await?
                .into()),
            SkillGuest::Script(pre, source) => {
                let runner = pre.instantiate_async(&mut *store).await?;
                runner.wasiclaw_plugin_script_api().call_describe(store, source).await?
            }
        })
    }

    /// Instantiate in `store` and call one tool.
    pub async fn invoke(
        &self,
        store: &mut Store<SkillState>,
        tool: &str,
        args: &str,
    ) -> wasmtime::Result<Result<String, Error>> {
        Ok(match self {
            SkillGuest::Current(pre) => {
                let skill = pre.instantiate_async(&mut *store).await?;
                skill.wasiclaw_plugin_tool_api().call_invoke(store, tool, args).await?
            }
            SkillGuest::V0_1(pre) => {
                let skill = pre.instantiate_async(&mut *store).await?;
                skill.wasiclaw_plugin_tool_api().call_invoke(store, tool, args).await?.map_err(Into::into)
            }
            SkillGuest::Script(pre, source) => {
                let runner = pre.instantiate_async(&mut *store).await?;
                runner.wasiclaw_plugin_script_api().call_invoke(store, source, tool, args).await?
            }
        })
    }
}

/// A compiled channel ready to instantiate, of either contract version.
#[derive(Clone)]
pub enum ChannelGuest {
    /// Built for the current contract.
    Current(channel_bindings::ChannelPre<SkillState>),
    /// Built for 0.1.0.
    V0_1(v0_1::channel::ChannelPre<SkillState>),
}

/// One call of a channel's exports.
pub enum ChannelCall {
    /// What it is.
    Describe,
    /// Fetch messages after a cursor.
    Poll(Option<String>),
    /// A request to its webhook route.
    Webhook(HttpRequest),
    /// An event of its websocket, and its kept state.
    Socket(SocketEvent, Option<String>),
    /// Send a message.
    Send(Outbound),
    /// Show "typing…" in a chat.
    Typing(String),
}

/// What a channel call returned, by call.
pub enum ChannelAnswer {
    /// Its manifest and transport.
    Described(ChannelManifest),
    /// New messages and the next cursor.
    Poll(Vec<Inbound>, Option<String>),
    /// The response and the messages in it.
    Webhook(WebhookReply),
    /// What to send, and state to keep.
    Socket(SocketReply),
    /// The platform's id of the sent message.
    Sent(String),
    /// Done.
    Typing,
}

impl ChannelAnswer {
    /// Its size in bytes and the messages in it, which the host bounds.
    pub fn size(&self) -> (usize, usize) {
        let bytes = |ms: &[Inbound]| -> usize {
            ms.iter()
                .map(|m| m.chat_id.len() + m.sender_id.len() + m.sender_name.len() + m.text.len() + m.message_id.len())
                .sum()
        };
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        match self {
            ChannelAnswer::Described(_) | ChannelAnswer::Typing => (0, 0),
            ChannelAnswer::Poll(ms, cursor) => (bytes(ms) + text(cursor), ms.len()),
            ChannelAnswer::Webhook(r) => {
                let headers: usize = r.response.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
                (headers + r.response.body.len() + bytes(&r.messages), r.messages.len())
            }
            ChannelAnswer::Socket(r) => {
                let sent: usize = r.send.iter().map(String::len).sum();
                (sent + bytes(&r.messages) + text(&r.url) + text(&r.state), r.messages.len())
            }
            ChannelAnswer::Sent(id) => (id.len(), 0),
        }
    }
}

impl ChannelGuest {
    /// Prepare a channel speaking contract `version`.
    pub fn new(pre: InstancePre<SkillState>, version: &str) -> wasmtime::Result<Self> {
        Ok(match version {
            CURRENT => ChannelGuest::Current(channel_bindings::ChannelPre::new(pre)?),
            _ => ChannelGuest::V0_1(v0_1::channel::ChannelPre::new(pre)?),
        })
    }

    /// The engine it was compiled for, which its stores must use.
    pub fn engine(&self) -> &wasmtime::Engine {
        match self {
            ChannelGuest::Current(pre) => pre.engine(),
            ChannelGuest::V0_1(pre) => pre.engine(),
        }
    }

    /// Instantiate in `store` and make one call.
    pub async fn call(
        &self,
        store: &mut Store<SkillState>,
        call: ChannelCall,
    ) -> wasmtime::Result<Result<ChannelAnswer, Error>> {
        use ChannelAnswer as A;
        use ChannelCall as C;
        let s = &mut *store;
        Ok(match self {
            ChannelGuest::Current(pre) => {
                let instance = pre.instantiate_async(&mut *s).await?;
                let api = instance.wasiclaw_plugin_channel_api();
                match call {
                    C::Describe => Ok(A::Described(api.call_describe(s).await?)),
                    C::Poll(cursor) => api.call_poll(s, cursor.as_deref()).await?.map(|(m, c)| A::Poll(m, c)),
                    C::Webhook(req) => api.call_on_webhook(s, &req).await?.map(A::Webhook),
                    C::Socket(event, state) => api.call_on_socket(s, &event, state.as_deref()).await?.map(A::Socket),
                    C::Send(msg) => api.call_send(s, &msg).await?.map(A::Sent),
                    C::Typing(chat) => api.call_typing(s, &chat).await?.map(|()| A::Typing),
                }
            }
            ChannelGuest::V0_1(pre) => {
                let instance = pre.instantiate_async(&mut *s).await?;
                let api = instance.wasiclaw_plugin_channel_api();
                let answer = match call {
                    C::Describe => Ok(A::Described(api.call_describe(s).await?.into())),
                    C::Poll(cursor) => api
                        .call_poll(s, cursor.as_deref())
                        .await?
                        .map(|(m, c)| A::Poll(m.into_iter().map(Into::into).collect(), c)),
                    C::Webhook(req) => api.call_on_webhook(s, &req.into()).await?.map(|r| A::Webhook(r.into())),
                    C::Socket(event, state) => {
                        api.call_on_socket(s, &event.into(), state.as_deref()).await?.map(|r| A::Socket(r.into()))
                    }
                    C::Send(msg) => api.call_send(s, &msg.into()).await?.map(A::Sent),
                    C::Typing(chat) => api.call_typing(s, &chat).await?.map(|()| A::Typing),
                };
                answer.map_err(Into::into)
            }
        })
    }
}

// 0.1.0 → current: values a 0.1.0 component returns.

impl From<old::types::Error> for Error {
    fn from(e: old::types::Error) -> Self {
        use old::types::Error as E;
        match e {
            E::Denied(m) => Error::Denied(m),
            E::InvalidInput(m) => Error::InvalidInput(m),
            E::NotFound(m) => Error::NotFound(m),
            E::Failed(m) => Error::Failed(m),
        }
    }
}

impl From<old::types::Manifest> for Manifest {
    fn from(m: old::types::Manifest) -> Self {
        use now::types::{Capabilities, HttpRule, Rights, Tool};
        let c = m.capabilities;
        let mut rights = Rights::empty();
        for (held, right) in [
            (c.kv, Rights::KV),
            (c.notify, Rights::NOTIFY),
            (c.files, Rights::FILES),
            (c.memory_read, Rights::MEMORY_READ),
            (c.memory_write, Rights::MEMORY_WRITE),
        ] {
            if held {
                rights |= right;
            }
        }
        let http =
            c.http.into_iter().map(|r| HttpRule { url: r.url, methods: r.methods, headers: r.headers }).collect();
        Manifest {
            name: m.name,
            version: m.version,
            description: m.description,
            tools: m
                .tools
                .into_iter()
                .map(|t| Tool { name: t.name, description: t.description, parameters: t.parameters })
                .collect(),
            capabilities: Capabilities { http, secrets: c.secrets, rights },
        }
    }
}

impl From<old_api::ChannelManifest> for ChannelManifest {
    fn from(m: old_api::ChannelManifest) -> Self {
        let transport = match m.transport {
            old_api::Transport::Poll(ms) => Transport::Poll(ms),
            old_api::Transport::Webhook => Transport::Webhook,
            old_api::Transport::Websocket(url) => Transport::Websocket(url),
        };
        let markup = match m.markup {
            old_api::Markup::Plain => Markup::Plain,
            old_api::Markup::Markdown => Markup::Markdown,
            old_api::Markup::TelegramHtml => Markup::TelegramHtml,
            old_api::Markup::SlackMrkdwn => Markup::SlackMrkdwn,
            old_api::Markup::Whatsapp => Markup::Whatsapp,
        };
        ChannelManifest { manifest: m.manifest.into(), transport, markup, max_length: m.max_length }
    }
}

impl From<old::types::Inbound> for Inbound {
    fn from(m: old::types::Inbound) -> Self {
        Inbound {
            chat_id: m.chat_id,
            sender_id: m.sender_id,
            sender_name: m.sender_name,
            text: m.text,
            message_id: m.message_id,
            group: false,
            addressed: true,
        }
    }
}

impl From<old_api::WebhookReply> for WebhookReply {
    fn from(r: old_api::WebhookReply) -> Self {
        let o = r.response;
        WebhookReply {
            response: HttpResponse { status: o.status, headers: o.headers, body: o.body },
            messages: r.messages.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<old_api::SocketReply> for SocketReply {
    fn from(r: old_api::SocketReply) -> Self {
        SocketReply {
            send: r.send,
            messages: r.messages.into_iter().map(Into::into).collect(),
            tick_ms: r.tick_ms,
            reconnect: r.reconnect,
            url: r.url,
            state: r.state,
        }
    }
}

// Current → 0.1.0: values the host passes to a 0.1.0 component.

impl From<HttpRequest> for old_api::HttpRequest {
    fn from(r: HttpRequest) -> Self {
        old_api::HttpRequest { method: r.method, path: r.path, query: r.query, headers: r.headers, body: r.body }
    }
}

impl From<SocketEvent> for old_api::SocketEvent {
    fn from(e: SocketEvent) -> Self {
        match e {
            SocketEvent::Opened => old_api::SocketEvent::Opened,
            SocketEvent::Frame(f) => old_api::SocketEvent::Frame(f),
            SocketEvent::Tick => old_api::SocketEvent::Tick,
        }
    }
}

impl From<Outbound> for old::types::Outbound {
    fn from(m: Outbound) -> Self {
        old::types::Outbound { id: m.id, chat_id: m.chat_id, text: m.text, reply_to: m.reply_to }
    }
}

impl From<Error> for old::types::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Denied(m) => old::types::Error::Denied(m),
            Error::InvalidInput(m) => old::types::Error::InvalidInput(m),
            Error::NotFound(m) => old::types::Error::NotFound(m),
            Error::Failed(m) => old::types::Error::Failed(m),
        }
    }
}

// The 0.1.0 imports: the same host functions, with the old types.

type OldResult<T> = wasmtime::Result<Result<T, old::types::Error>>;

impl old::types::Host for SkillState {}

impl old::kv::Host for SkillState {
    async fn get(&mut self, key: String) -> OldResult<Option<Vec<u8>>> {
        Ok(now::kv::Host::get(self, key).await?.map_err(Into::into))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> OldResult<()> {
        Ok(now::kv::Host::set(self, key, value).await?.map_err(Into::into))
    }

    async fn delete(&mut self, key: String) -> OldResult<()> {
        Ok(now::kv::Host::delete(self, key).await?.map_err(Into::into))
    }

    async fn list_keys(&mut self, prefix: String) -> OldResult<Vec<String>> {
        Ok(now::kv::Host::list_keys(self, prefix).await?.map_err(Into::into))
    }
}

impl old::log::Host for SkillState {
    fn log(&mut self, level: old::log::Level, message: String) -> wasmtime::Result<()> {
        use now::log::Level as N;
        use old::log::Level as L;
        let level = match level {
            L::Trace => N::Trace,
            L::Debug => N::Debug,
            L::Info => N::Info,
            L::Warn => N::Warn,
            L::Error => N::Error,
        };
        now::log::Host::log(self, level, message)
    }
}

impl old::config::Host for SkillState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        now::config::Host::get(self, key)
    }
}

impl old::notify::Host for SkillState {
    async fn send(&mut self, text: String) -> OldResult<()> {
        Ok(now::notify::Host::send(self, text).await?.map_err(Into::into))
    }
}

impl old::crypto::Host for SkillState {
    fn hmac_sha256(&mut self, secret: String, data: Vec<u8>) -> OldResult<Vec<u8>> {
        Ok(now::crypto::Host::hmac_sha256(self, secret, data)?.map_err(Into::into))
    }

    fn secret_equals(&mut self, secret: String, candidate: Vec<u8>) -> OldResult<bool> {
        Ok(now::crypto::Host::secret_equals(self, secret, candidate)?.map_err(Into::into))
    }
}

impl old::memory::Host for SkillState {
    async fn search(&mut self, query: String, limit: u32) -> OldResult<Vec<old::memory::MemoryHit>> {
        let hits = now::memory::Host::search(self, query, limit).await?;
        Ok(hits
            .map(|hits| {
                hits.into_iter()
                    .map(|h| old::memory::MemoryHit {
                        id: h.id,
                        text: h.text,
                        tags: h.tags,
                        created: h.created,
                        score: h.score,
                    })
                    .collect()
            })
            .map_err(Into::into))
    }

    async fn save(&mut self, text: String, tags: Vec<String>) -> OldResult<u64> {
        Ok(now::memory::Host::save(self, text, tags).await?.map_err(Into::into))
    }
}
