//! Loading skill components from the skills folder: sha256, compile (with
//! the disk cache), contract-version check, `describe`, and the registry
//! that a file watcher plus a periodic rescan keep in step with the folder.
//! A script skill (`NAME.js`) loads as the built-in script runner plus its
//! source; its identity is the sha256 of both (`script_identity`).
//!
//! Invariants: a file that fails to load is listed as `rejected` with the
//! reason and never runs; a replaced file is reloaded by sha256; a removed
//! file is unloaded; two files may not claim one skill name.

use crate::contract::{self, ChannelAnswer, ChannelCall, ChannelGuest, SkillGuest};
use crate::engine::{CallError, HostCtx, SkillEngine};
use crate::grants::{Capabilities, HttpRule, Rights, UrlPattern, valid_secret_name};
use crate::markup::Markup;
use crate::stamp::Stamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The contract this host speaks (`wit/plugin.wit`).
pub const CONTRACT_PACKAGE: &str = "wasiclaw:plugin";
/// The contract version components are built against by default.
pub const CONTRACT_VERSION: &str = contract::CURRENT;
const CLASH: &str = "skill name ";

/// A tool a skill offers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ToolSpec {
    /// Its name within the skill.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
}

/// What a component says about itself (`describe`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Its name, which its rights are stored under.
    pub name: String,
    /// Its own version string.
    pub version: String,
    /// What it does.
    pub description: String,
    /// Its tools (none for a channel).
    pub tools: Vec<ToolSpec>,
    /// What it asks for.
    pub capabilities: Capabilities,
}

/// Why a file in the skills folder does not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// Not WebAssembly at all.
    #[error("not a WebAssembly file (no `\\0asm` header)")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component; build skills for `wasm32-wasip2` (or wrap the module with `wasm-tools component new`)"
    )]
    /// A core module instead of a component.
    CoreModule,
    /// The compiler refused it.
    #[error("{0}")]
    Compile(String),
    #[error(
        "built for contract {CONTRACT_PACKAGE}@{found}, but this wasiclaw speaks {CONTRACT_PACKAGE}@{CONTRACT_VERSION} (and still loads {}); rebuild the skill against {CONTRACT_VERSION} or use a wasiclaw that speaks {found}",
        contract::OLDER.join(", ")
    )]
    /// Built for a contract version this host does not speak.
    Version {
        /// The version it was built for.
        found: String,
    },
    #[error(
        "not a wasiclaw skill or channel: it exports neither {CONTRACT_PACKAGE}/tool-api@{CONTRACT_VERSION} nor {CONTRACT_PACKAGE}/channel-api@{CONTRACT_VERSION}"
    )]
    /// It exports neither interface of the contract.
    NotASkill,
    /// Its imports cannot be satisfied.
    #[error("cannot link: {0}")]
    Link(String),
    /// Its `describe` failed.
    #[error("describe() failed: {0}")]
    Describe(CallError),
    /// What it describes breaks a rule or a limit.
    #[error("invalid manifest: {0}")]
    Manifest(String),
}

/// How the host reaches a channel's platform (WIT `transport`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// The host calls `poll` in a loop.
    Poll {
        /// The wait after an empty poll (0 for long polling).
        interval_ms: u32,
    },
    /// Through `/hooks/NAME/` on the gateway.
    Webhook,
    /// The host holds a websocket to this URL.
    Websocket {
        /// The URL, granted like an HTTP rule.
        url: String,
    },
}

/// What a channel component declares besides its manifest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChannelSpec {
    /// How the host reaches the platform.
    pub transport: Transport,
    /// The markup replies are converted to.
    pub markup: Markup,
    /// The longest message the platform takes, in characters.
    pub max_length: usize,
}

/// A component ready to be called: a skill (tools) or a chat channel.
pub enum Kind {
    /// A skill: tools.
    Skill(SkillCode),
    /// A chat channel, and what it declares.
    Channel(ChannelGuest, ChannelSpec),
}

/// A skill's code, mapped and linked at its first call once described (and
/// at a warm start not even read before), so a skill never called costs
/// neither start time nor memory (about 0.35 MiB of mapped code each, and
/// its metadata).
#[derive(Clone)]
pub enum SkillCode {
    /// Linked.
    Ready(SkillGuest),
    /// Linked at first use.
    Deferred(Arc<Deferred>),
}

/// What a [`SkillCode::Deferred`] links from.
pub struct Deferred {
    engine: SkillEngine,
    file: PathBuf,
    sha256: String,
    version: &'static str,
    linked: std::sync::Mutex<Option<SkillGuest>>,
}

impl SkillCode {
    /// Skill `file` (build `sha256`, speaking `version`), linked at its
    /// first call; None if its compiled code is not in the cache.
    fn deferred(engine: &SkillEngine, file: &Path, sha256: &str, version: &'static str) -> Option<SkillCode> {
        engine.artifact(sha256, "cwasm").exists().then(|| {
            let (file, sha256, linked) = (file.to_path_buf(), sha256.to_string(), Default::default());
            SkillCode::Deferred(Arc::new(Deferred { engine: engine.clone(), file, sha256, version, linked }))
        })
    }

    /// The skill, linked (on its first call, from the compile cache, or
    /// compiled again from its file if the cached copy is gone).
    pub fn guest(&self) -> Result<SkillGuest, LoadError> {
        let d = match self {
            SkillCode::Ready(guest) => return Ok(guest.clone()),
            SkillCode::Deferred(d) => d,
        };
        let mut linked = d.linked.lock().unwrap();
        if let Some(guest) = linked.as_ref() {
            return Ok(guest.clone());
        }
        let component = match d.engine.compile(&d.file, None, &d.sha256) {
            Ok(c) => c,
            Err(_) => {
                let bytes = read_skill_file(&d.file).map_err(|e| LoadError::Read(d.file.clone(), e))?;
                if sha256_hex(&bytes) != d.sha256 {
                    return Err(LoadError::Manifest("the file changed; it is loaded again at the next rescan".into()));
                }
                d.engine.compile(&d.file, Some(&bytes), &d.sha256).map_err(|e| LoadError::Compile(e.to_string()))?
            }
        };
        let link = |e: wasmtime::Error| LoadError::Link(format!("{e:#}"));
        let guest = SkillGuest::new(d.engine.linker(&component).instantiate_pre(&component).map_err(link)?, d.version)
            .map_err(link)?;
        *linked = Some(guest.clone());
        Ok(guest)
    }

    /// The skill if its code is mapped and linked already.
    pub fn linked(&self) -> Option<SkillGuest> {
        match self {
            SkillCode::Ready(guest) => Some(guest.clone()),
            SkillCode::Deferred(d) => d.linked.lock().unwrap().clone(),
        }
    }
}

/// A loaded component.
pub struct Loaded {
    /// What it describes.
    pub manifest: Manifest,
    /// What it is.
    pub kind: Kind,
}

impl Loaded {
    /// The channel and its declaration, if it is one.
    pub fn channel(&self) -> Option<(&ChannelGuest, &ChannelSpec)> {
        match &self.kind {
            Kind::Channel(pre, spec) => Some((pre, spec)),
            Kind::Skill(_) => None,
        }
    }
}

/// One `.wasm` file in the skills folder.
#[derive(Clone)]
pub struct Entry {
    /// The file.
    pub file: PathBuf,
    /// The file's sha256, its identity.
    pub sha256: String,
    /// The component, or why it did not load.
    pub loaded: Result<Arc<Loaded>, String>,
    /// Size, mtime and inode when read: an unchanged file is not read again.
    pub stamp: Option<Stamp>,
}

impl Entry {
    /// The manifest name, or the file stem of a rejected file.
    pub fn name(&self) -> String {
        match &self.loaded {
            Ok(l) => l.manifest.name.clone(),
            Err(_) => self.file.file_stem().unwrap_or_default().to_string_lossy().into_owned(),
        }
    }
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The contract version (current or older) that `found` is compatible
/// with under semver: 0.x versions only within the same minor.
fn compatible(found: &str) -> Option<&'static str> {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let mut parts = v.split(['.', '-', '+']);
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    };
    let same = |ours: &str| match (parse(found), parse(ours)) {
        (Some((0, a)), Some((0, b))) => a == b,
        (Some((a, _)), Some((b, _))) => a == b,
        _ => false,
    };
    std::iter::once(contract::CURRENT).chain(contract::OLDER.iter().copied()).find(|ours| same(ours))
}

/// Check the contract version named in the component's imports and exports.
/// Returns whether it is a channel, and the version it speaks.
fn check_contract(component: &wasmtime::component::Component) -> Result<(bool, &'static str), LoadError> {
    let ty = component.component_type();
    let names: Vec<String> = ty
        .imports(component.engine())
        .map(|(n, _)| n.to_string())
        .chain(ty.exports(component.engine()).map(|(n, _)| n.to_string()))
        .collect();
    let mut exports_tool_api = false;
    let mut exports_channel = false;
    let mut speaks = None;
    for name in &names {
        let Some(rest) = name.strip_prefix(CONTRACT_PACKAGE).and_then(|r| r.strip_prefix('/')) else { continue };
        let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
        let ours = compatible(version).ok_or_else(|| LoadError::Version { found: version.to_string() })?;
        // One component, one contract: mixing versions is not a build any toolchain makes.
        if speaks.replace(ours).is_some_and(|v| v != ours) {
            return Err(LoadError::Version { found: version.to_string() });
        }
        exports_tool_api |= interface == "tool-api";
        exports_channel |= interface == "channel-api";
    }
    let exported = |iface: &str| {
        ty.exports(component.engine()).any(|(n, _)| n.starts_with(&format!("{CONTRACT_PACKAGE}/{iface}@")))
    };
    exports_tool_api &= exported("tool-api");
    exports_channel &= exported("channel-api");
    let version = speaks.unwrap_or(CONTRACT_VERSION);
    match (exports_tool_api, exports_channel) {
        (true, _) => Ok((false, version)),
        (false, true) => Ok((true, version)),
        (false, false) => Err(LoadError::NotASkill),
    }
}

/// Whether `name` may name a skill or a tool: 1-64 of a-z, 0-9, `-` and
/// `_` (so it is also a plain file name), with no `__` and no `_` at either
/// end. The model calls a tool `SKILL__TOOL` and the host reads that back
/// at its `__`, so without this rule two skills could offer the same name
/// (`a_` + `b` and `a` + `_b`), and a call meant for one would reach the other.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.contains("__")
        && !name.starts_with('_')
        && !name.ends_with('_')
}

/// Names a component may not take: the host's own conversations are
/// `terminal:NAME` (the CLI's chat) and `web:NAME` (the web page's), and a
/// conversation or a job's target `CHANNEL:CHAT` is found by the part before
/// the `:`, so a channel under one of these names would be handed the
/// owner's terminal or web conversation, and the results of every job
/// sent there (`terminal:default` is where jobs report by default).
pub const HOST_NAMES: &[&str] = &["terminal", "web"];

/// What [`valid_name`] asks, for error messages.
pub const NAME_RULE: &str = "1-64 of a-z, 0-9, - and _, with no `__` and no `_` at either end";

/// Bounds on what a manifest may declare: every tool of an approved skill
/// goes to the model on every turn, so each byte here costs tokens.
pub const MAX_TOOLS: usize = 64;
/// The longest description of a skill or a tool.
pub const MAX_DESCRIPTION: usize = 1024;
/// The largest parameter schema of a tool.
pub const MAX_SCHEMA: usize = 8 * 1024;
/// The most HTTP rules (and secrets) a component may ask for.
pub const MAX_RULES: usize = 32;
/// The longest tool name OpenAI's and Anthropic's APIs take. The model sees
/// `SKILL__TOOL`, and one tool past it would fail every request of every
/// turn, so such a tool never loads.
pub const MAX_TOOL_NAME: usize = 64;

/// Check a manifest against the naming rules and the bounds above; the
/// error names the rule or limit broken.
pub fn validate(m: &Manifest) -> Result<(), String> {
    if !valid_name(&m.name) {
        return Err(format!("skill name `{}` must be {NAME_RULE}", m.name));
    }
    if HOST_NAMES.contains(&m.name.as_str()) {
        return Err(format!(
            "the name `{}` is the host's own: its conversations (`{}:…`) are the owner's, and a component \
             under that name would be handed them; rename the component",
            m.name, m.name
        ));
    }
    if m.tools.len() > MAX_TOOLS {
        return Err(format!("{} tools declared; at most {MAX_TOOLS} are allowed", m.tools.len()));
    }
    if m.description.len() > MAX_DESCRIPTION || m.version.len() > 64 {
        return Err(format!("the description is at most {MAX_DESCRIPTION} bytes and the version at most 64"));
    }
    if m.capabilities.http.len() > MAX_RULES || m.capabilities.secrets.len() > MAX_RULES {
        return Err(format!("at most {MAX_RULES} http rules and {MAX_RULES} secrets are allowed"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for tool in &m.tools {
        if tool.description.len() > MAX_DESCRIPTION {
            return Err(format!("tool `{}`: description over {MAX_DESCRIPTION} bytes", tool.name));
        }
        if tool.parameters.to_string().len() > MAX_SCHEMA {
            return Err(format!("tool `{}`: parameter schema over {MAX_SCHEMA} bytes", tool.name));
        }
        if !valid_name(&tool.name) {
            return Err(format!("tool name `{}` must be {NAME_RULE}", tool.name));
        }
        if !seen.insert(&tool.name) {
            return Err(format!("tool `{}` is declared twice", tool.name));
        }
        let seen_as = m.name.len() + 2 + tool.name.len();
        if seen_as > MAX_TOOL_NAME {
            return Err(format!(
                "tool `{}`: the model calls it `{}__{}`, {seen_as} characters, and model APIs take at most {MAX_TOOL_NAME}; shorten the skill's or the tool's name",
                tool.name, m.name, tool.name
            ));
        }
        // Model APIs refuse a request whose tool takes anything but an object.
        if !tool.parameters.is_object() || tool.parameters.get("type").is_some_and(|t| t != "object") {
            return Err(format!(
                "tool `{}`: parameters must be a JSON Schema of an object (`{{\"type\": \"object\", ...}}`), not {}",
                tool.name,
                crate::text::truncate(&tool.parameters.to_string(), 80)
            ));
        }
    }
    for rule in &m.capabilities.http {
        UrlPattern::parse(&rule.url).map_err(|e| format!("http rule: {e}"))?;
        // Shown to the owner as asked for, so only what a request could carry.
        for (name, value) in &rule.headers {
            if http::HeaderName::try_from(name.as_str()).is_err() || http::HeaderValue::from_str(value).is_err() {
                return Err(format!(
                    "http rule {}: header {:?}: {:?} is not a valid header name and value (visible ASCII)",
                    rule.url, name, value
                ));
            }
        }
        for method in rule.methods() {
            if !["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"].contains(&method.as_str()) {
                return Err(format!("http rule {}: unknown method {method}", rule.url));
            }
        }
    }
    if let Some(bad) = m.capabilities.all_secrets().into_iter().find(|s| !valid_secret_name(s)) {
        return Err(format!("secret name `{bad}` must be upper-case letters, digits and _"));
    }
    Ok(())
}

fn to_manifest(m: contract::Manifest) -> Result<Manifest, String> {
    if m.tools.len() > MAX_TOOLS {
        return Err(format!("{} tools declared; at most {MAX_TOOLS} are allowed", m.tools.len()));
    }
    let mut tools = Vec::new();
    for t in m.tools {
        if t.parameters.len() > MAX_SCHEMA {
            return Err(format!("tool `{}`: parameter schema over {MAX_SCHEMA} bytes", t.name));
        }
        let parameters = serde_json::from_str(&t.parameters)
            .map_err(|e| format!("tool `{}` has parameters that are not JSON: {e}", t.name))?;
        tools.push(ToolSpec { name: t.name, description: t.description, parameters });
    }
    let c = m.capabilities;
    let capabilities = Capabilities {
        http: c
            .http
            .into_iter()
            .map(|r| HttpRule {
                url: r.url,
                methods: r.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
                headers: r.headers,
            })
            .collect(),
        secrets: c.secrets,
        rights: {
            use contract::bindings::wasiclaw::plugin::types::Rights as Wit;
            let pairs = [
                (Wit::KV, Rights::KV),
                (Wit::NOTIFY, Rights::NOTIFY),
                (Wit::FILES, Rights::FILES),
                (Wit::MEMORY_READ, Rights::MEMORY_READ),
                (Wit::MEMORY_WRITE, Rights::MEMORY_WRITE),
            ];
            pairs.into_iter().filter(|(wit, _)| c.rights.contains(*wit)).fold(Rights::default(), |set, (_, r)| set | r)
        },
    };
    let manifest = Manifest { name: m.name, version: m.version, description: m.description, tools, capabilities };
    validate(&manifest)?;
    Ok(manifest)
}

/// Call a skill's `describe()` in a fresh sandbox with no rights.
async fn describe_skill(engine: &SkillEngine, guest: &SkillGuest, ctx: HostCtx) -> Result<Manifest, LoadError> {
    engine.describes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut store = engine.store(guest.engine(), ctx, None).map_err(LoadError::Describe)?;
    let guest = guest.clone();
    let raw = engine
        .guarded(&mut store, move |store| Box::pin(async move { guest.describe(store).await }))
        .await
        .map_err(LoadError::Describe)?;
    let raw = raw.map_err(|e| {
        use contract::Error as E;
        let (E::Denied(why) | E::InvalidInput(why) | E::NotFound(why) | E::Failed(why)) = e;
        LoadError::Manifest(why)
    })?;
    to_manifest(raw).map_err(LoadError::Manifest)
}

/// Call a channel's `describe()` in a fresh sandbox with no rights.
async fn describe_channel(
    engine: &SkillEngine,
    guest: &ChannelGuest,
    ctx: HostCtx,
) -> Result<(Manifest, ChannelSpec), LoadError> {
    engine.describes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut store = engine.store(guest.engine(), ctx, None).map_err(LoadError::Describe)?;
    let guest = guest.clone();
    let answer = engine
        .guarded(&mut store, move |store| Box::pin(async move { guest.call(store, ChannelCall::Describe).await }))
        .await
        .map_err(LoadError::Describe)?;
    let Ok(ChannelAnswer::Described(raw)) = answer else { unreachable!("describe answers with a manifest") };
    let manifest = to_manifest(raw.manifest).map_err(LoadError::Manifest)?;
    if !manifest.tools.is_empty() {
        return Err(LoadError::Manifest("a channel has no tools; make the tools a separate skill".into()));
    }
    let transport = match raw.transport {
        contract::Transport::Poll(ms) => Transport::Poll { interval_ms: ms },
        contract::Transport::Webhook => Transport::Webhook,
        contract::Transport::Websocket(url) => {
            let pattern = UrlPattern::parse(&url).map_err(|e| LoadError::Manifest(format!("websocket: {e}")))?;
            if !matches!(pattern.scheme.as_str(), "ws" | "wss") {
                return Err(LoadError::Manifest(format!("websocket URL `{url}` must start with wss:// or ws://")));
            }
            Transport::Websocket { url }
        }
    };
    let markup = match raw.markup {
        contract::Markup::Plain => Markup::Plain,
        contract::Markup::Markdown => Markup::Markdown,
        contract::Markup::TelegramHtml => Markup::TelegramHtml,
        contract::Markup::SlackMrkdwn => Markup::SlackMrkdwn,
        contract::Markup::Whatsapp => Markup::Whatsapp,
    };
    if raw.max_length < 64 {
        return Err(LoadError::Manifest(format!(
            "max-length {} is below the 64 characters a reply needs",
            raw.max_length
        )));
    }
    Ok((manifest, ChannelSpec { transport, markup, max_length: raw.max_length as usize }))
}

/// Compile and check a component file. `ctx_for` gives the describe-time
/// context for a component name (its config settings, no rights).
pub async fn load(
    engine: &SkillEngine,
    file: &Path,
    bytes: Option<&[u8]>,
    sha256: &str,
    ctx_for: impl Fn(&str) -> HostCtx,
) -> Result<Loaded, LoadError> {
    if is_script(file) {
        return load_script(engine, file, bytes, sha256, &ctx_for).await;
    }
    // What a build said last time, under the same settings, is what it
    // says now: describing runs guest code at every start.
    let cached = described(engine, sha256, &ctx_for);
    // A skill described before is not even mapped until its first call.
    if let Some(d) = cached.as_ref().filter(|d| d.channel.is_none())
        && let Some(version) = d.version.as_deref().and_then(compatible)
        && let Some(code) = SkillCode::deferred(engine, file, sha256, version)
    {
        return Ok(Loaded { manifest: d.manifest.clone(), kind: Kind::Skill(code) });
    }
    // Without bytes the file is known: unchanged since it was compiled.
    if let Some(bytes) = bytes {
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(LoadError::NotWasm);
        }
        if bytes[4..8] == [1, 0, 0, 0] {
            return Err(LoadError::CoreModule);
        }
    }
    let component = engine.compile(file, bytes, sha256).map_err(|e| LoadError::Compile(e.to_string()))?;
    let (is_channel, version) = check_contract(&component)?;
    let instance_pre =
        engine.linker(&component).instantiate_pre(&component).map_err(|e| LoadError::Link(format!("{e:#}")))?;
    let link = |e: wasmtime::Error| LoadError::Link(format!("{e:#}"));
    let mut loaded = match cached {
        Some(d) => {
            let kind = match d.channel {
                Some(spec) if is_channel => {
                    Kind::Channel(ChannelGuest::new(instance_pre, version).map_err(link)?, spec)
                }
                None if !is_channel => {
                    Kind::Skill(SkillCode::Ready(SkillGuest::new(instance_pre, version).map_err(link)?))
                }
                _ => return Err(LoadError::Manifest("the cached description does not match the component".into())),
            };
            let loaded = Loaded { manifest: d.manifest, kind };
            if d.version.is_none() {
                // Cached before descriptions named the contract version.
                keep_description(engine, file, sha256, &loaded, version, &ctx_for);
            }
            loaded
        }
        None => {
            let loaded = describe(engine, instance_pre, is_channel, version, &ctx_for).await?;
            keep_description(engine, file, sha256, &loaded, version, &ctx_for);
            loaded
        }
    };
    // Its code is mapped again at its first call, so a skill never called
    // holds no memory (what compiling it left is freed).
    if let Kind::Skill(_) = loaded.kind
        && let Some(code) = SkillCode::deferred(engine, file, sha256, version)
    {
        loaded.kind = Kind::Skill(code);
    }
    Ok(loaded)
}

/// The sha256 whose compiled code build `sha256` of `file` runs on: its
/// own, or for a script the script runner's (None in a build without one).
fn compiled_as<'a>(file: &Path, sha256: &'a str) -> Option<&'a str> {
    if !is_script(file) {
        return Some(sha256);
    }
    crate::bundled::script_runner().map(|r| r.sha256)
}

/// The first 12 hex digits of a build's sha256, as lists show it.
pub fn short_sha(sha256: &str) -> &str {
    &sha256[..12.min(sha256.len())]
}

/// Refuse a script too large to hand to every call's sandbox.
pub fn check_script_size(len: usize) -> Result<(), String> {
    if len > MAX_SCRIPT { Err(format!("a script may be at most {} KiB", MAX_SCRIPT / 1024)) } else { Ok(()) }
}

/// The largest script: its source goes into every call's sandbox.
pub const MAX_SCRIPT: usize = 256 * 1024;

/// The largest component file read: the script-language runtimes are
/// under 20 MB, and a file is read whole to be hashed.
pub const MAX_COMPONENT: u64 = 128 << 20;

/// A file of the skills folder, read whole within its kind's bound
/// ([`MAX_SCRIPT`], [`MAX_COMPONENT`]): every read of a component or a
/// script goes through here (see [`crate::stamp::read`]).
pub fn read_skill_file(file: &Path) -> std::io::Result<Vec<u8>> {
    crate::stamp::read(file, if is_script(file) { MAX_SCRIPT as u64 } else { MAX_COMPONENT })
}

/// Why a file in the skills folder could not be read, for `skills list`.
fn unreadable(file: &Path, e: &std::io::Error) -> String {
    let link = std::fs::read_link(file).map(|to| format!("a link to {}: ", to.display())).unwrap_or_default();
    match e.kind() {
        // Its text names both sizes.
        std::io::ErrorKind::FileTooLarge => e.to_string(),
        std::io::ErrorKind::NotFound => format!("{link}there is no such file"),
        std::io::ErrorKind::InvalidInput => {
            format!("{link}{e}; a component (.wasm) or a script (.js) here must be a file, or a link to one")
        }
        _ => format!("{link}cannot read it ({e}); it must be readable by the user running wasiclaw"),
    }
}

/// Whether `file` is a script skill (JavaScript, run by the script runner).
pub fn is_script(file: &Path) -> bool {
    file.extension().is_some_and(|x| x == "js")
}

/// A script's identity: the runner's sha256 and the source's, together,
/// so a change to either is a new build that waits for approval.
pub fn script_identity(source: &[u8]) -> String {
    let runner = crate::bundled::script_runner().map_or("", |r| r.sha256);
    sha256_hex(&[runner.as_bytes(), b"\n", source].concat())
}

/// Load a script skill: the shared script runner, given this source.
async fn load_script(
    engine: &SkillEngine,
    file: &Path,
    bytes: Option<&[u8]>,
    sha256: &str,
    ctx_for: &impl Fn(&str) -> HostCtx,
) -> Result<Loaded, LoadError> {
    let source = match bytes {
        Some(b) => b.to_vec(),
        None => read_skill_file(file).map_err(|e| LoadError::Read(file.into(), e))?,
    };
    check_script_size(source.len()).map_err(LoadError::Manifest)?;
    if script_identity(&source) != sha256 {
        return Err(LoadError::Manifest("the script changed while it was read".into()));
    }
    let source = String::from_utf8(source).map_err(|_| LoadError::Manifest("a script must be UTF-8 text".into()))?;
    let pre = engine.script_runner().map_err(|e| LoadError::Compile(e.to_string()))?;
    let guest = SkillGuest::Script(pre, source.into());
    if let Some(d) = described(engine, sha256, ctx_for).filter(|d| d.channel.is_none()) {
        return Ok(Loaded { manifest: d.manifest, kind: Kind::Skill(SkillCode::Ready(guest)) });
    }
    let manifest = describe_in_context(engine, &guest, ctx_for).await?;
    let loaded = Loaded { manifest, kind: Kind::Skill(SkillCode::Ready(guest)) };
    keep_description(engine, file, sha256, &loaded, contract::CURRENT, ctx_for);
    Ok(loaded)
}

/// The settings a component named `name` is described with, as text.
fn settings_of(ctx_for: &impl Fn(&str) -> HostCtx, name: &str) -> String {
    ctx_for(name).settings.map(|t| t.to_string()).unwrap_or_default()
}

/// What build `sha256` described last time, if its settings are unchanged.
fn described(engine: &SkillEngine, sha256: &str, ctx_for: &impl Fn(&str) -> HostCtx) -> Option<Described> {
    let cached: Described =
        serde_json::from_slice(&std::fs::read(engine.artifact(sha256, "describe.json")).ok()?).ok()?;
    (cached.settings == settings_of(ctx_for, &cached.manifest.name) && validate(&cached.manifest).is_ok())
        .then_some(cached)
}

/// Keep what `loaded` described next to its compiled code.
fn keep_description(
    engine: &SkillEngine,
    file: &Path,
    sha256: &str,
    loaded: &Loaded,
    version: &str,
    ctx_for: &impl Fn(&str) -> HostCtx,
) {
    let described = Described {
        settings: settings_of(ctx_for, &loaded.manifest.name),
        manifest: loaded.manifest.clone(),
        channel: loaded.channel().map(|(_, spec)| spec.clone()),
        version: Some(version.to_string()),
    };
    let cache = engine.artifact(sha256, "describe.json");
    if let Err(e) =
        serde_json::to_vec(&described).map_err(std::io::Error::other).and_then(|b| std::fs::write(&cache, b))
    {
        tracing::warn!("cannot cache what {} describes: {e}", file.display());
    }
}

/// A component's `describe()` answer as cached next to its compiled code,
/// with the settings it was given.
#[derive(Serialize, Deserialize)]
struct Described {
    manifest: Manifest,
    channel: Option<ChannelSpec>,
    settings: String,
    /// The contract version it speaks (absent in caches of older hosts).
    #[serde(default)]
    version: Option<String>,
}

/// Call `describe()`: once to learn the name, then again with that
/// component's settings, since what it requests may depend on them.
async fn describe(
    engine: &SkillEngine,
    instance_pre: wasmtime::component::InstancePre<crate::engine::SkillState>,
    is_channel: bool,
    version: &str,
    ctx_for: &impl Fn(&str) -> HostCtx,
) -> Result<Loaded, LoadError> {
    let link = |e: wasmtime::Error| LoadError::Link(format!("{e:#}"));
    if is_channel {
        let pre = ChannelGuest::new(instance_pre, version).map_err(link)?;
        let (first, spec) = describe_channel(engine, &pre, ctx_for("")).await?;
        let ctx = ctx_for(&first.name);
        let (manifest, spec) = if ctx.settings.is_some() {
            let (second, spec) = describe_channel(engine, &pre, ctx).await?;
            (same_name(&first, second)?, spec)
        } else {
            (first, spec)
        };
        return Ok(Loaded { manifest, kind: Kind::Channel(pre, spec) });
    }
    let pre = SkillGuest::new(instance_pre, version).map_err(link)?;
    let manifest = describe_in_context(engine, &pre, ctx_for).await?;
    Ok(Loaded { manifest, kind: Kind::Skill(SkillCode::Ready(pre)) })
}

/// What a drafted script declares, described under `ctx` (no rights).
pub async fn describe_draft(engine: &SkillEngine, guest: &SkillGuest, ctx: HostCtx) -> Result<Manifest, LoadError> {
    let manifest = describe_skill(engine, guest, ctx).await?;
    validate(&manifest).map_err(LoadError::Manifest)?;
    Ok(manifest)
}

/// A skill's manifest: described once to learn its name, then again with
/// that name's settings if it has any.
async fn describe_in_context(
    engine: &SkillEngine,
    guest: &SkillGuest,
    ctx_for: &impl Fn(&str) -> HostCtx,
) -> Result<Manifest, LoadError> {
    let first = describe_skill(engine, guest, ctx_for("")).await?;
    let ctx = ctx_for(&first.name);
    if ctx.settings.is_some() { same_name(&first, describe_skill(engine, guest, ctx).await?) } else { Ok(first) }
}

/// The second description, if it keeps the first one's name: the settings
/// it was given were chosen by that name, so it may not then take another.
fn same_name(first: &Manifest, second: Manifest) -> Result<Manifest, LoadError> {
    if second.name == first.name {
        return Ok(second);
    }
    Err(LoadError::Manifest(format!(
        "it said it is `{}`, then `{}` once given that name's settings; a component's name may not depend on its settings",
        first.name, second.name
    )))
}

/// The loaded skills folder.
#[derive(Default)]
pub struct Registry {
    entries: RwLock<BTreeMap<PathBuf, Entry>>,
    /// Components waiting for their first compile (the daemon compiles
    /// them in the background, one at a time), by file.
    compiling: RwLock<BTreeMap<PathBuf, Compiling>>,
    /// Builds (sha256) that failed to compile, with why: the next rescan
    /// records the reason instead of compiling again (in this process,
    /// where a compile that ran out of memory would take the daemon). A
    /// new process tries once more.
    uncompilable: RwLock<BTreeMap<String, String>>,
    /// Files read and hashed, for tests that a warm start reads none.
    pub reads: std::sync::atomic::AtomicUsize,
}

/// A component waiting for its first compile.
#[derive(Clone, Debug)]
pub struct Compiling {
    /// The file's sha256.
    pub sha256: String,
    /// Since when it waits (Unix ms).
    pub since_ms: i64,
    /// Size, mtime and inode when read: while they hold, it is not read again.
    pub stamp: Option<Stamp>,
}

/// The daemon's compiler: `wasiclaw __compile FILE SHA256` in a child
/// process. A compile's memory grows with the component (about 18× its
/// size); in a child, the kernel reclaims it first when memory runs out
/// (the child raises its own `oom_score_adj`), and the daemon records the
/// failure instead of dying with it and failing the same way at every
/// restart. The child frees all of its memory when it exits, too.
#[derive(Clone, Debug)]
pub struct CompileChild {
    /// This wasiclaw's binary.
    pub exe: PathBuf,
    /// The state dir, whose config and cache the child uses.
    pub state_dir: PathBuf,
}

impl CompileChild {
    /// Compile `file` (build `sha256`) into the cache; why not, if not.
    fn compile(&self, file: &Path, sha256: &str) -> Result<(), String> {
        use std::os::unix::process::ExitStatusExt;
        let out = std::process::Command::new(&self.exe)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("__compile")
            .arg(file)
            .arg(sha256)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot start the compiler ({}): {e}", self.exe.display()))?;
        match out.status.signal() {
            _ if out.status.success() => Ok(()),
            Some(libc::SIGKILL) => Err(format!(
                "the compiler was killed (signal {}), most likely for memory: the kernel's log (`dmesg`) says if so. \
                 Compiling takes about 18 times the component's size; the daemon tries again when it restarts",
                libc::SIGKILL
            )),
            Some(signal) => {
                Err(format!("the compiler stopped on signal {signal}; the daemon tries again when it restarts"))
            }
            None => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("no reason given");
                Err(last.trim_start_matches("error: ").to_string())
            }
        }
    }
}

/// Compile every component file in `dir` that has no compiled copy in the
/// cache, one at a time, off the async workers; returns how many. Nothing
/// is loaded and no database is needed: a CLI does this before it takes
/// the database, so a daemon starting meanwhile never waits for a compile.
pub async fn compile_uncached(engine: &SkillEngine, dir: &Path) -> usize {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "wasm")).collect()
        })
        .unwrap_or_default();
    let known = known_stamps(engine);
    let mut compiled = 0;
    for file in files {
        // Unchanged since a scan recorded it, with its compiled copy there:
        // not read again (a warm CLI reads no component).
        let recorded = known.get(&file).filter(|(s, _)| Some(*s) == crate::stamp::of(&file));
        if recorded.is_some_and(|(_, sha)| engine.artifact(sha, "cwasm").exists()) {
            continue;
        }
        let engine = engine.clone();
        let done = tokio::task::spawn_blocking(move || {
            let bytes = read_skill_file(&file).ok()?;
            let sha256 = sha256_hex(&bytes);
            if !looks_like_component(&bytes) || engine.artifact(&sha256, "cwasm").exists() {
                return None;
            }
            // A failure is recorded by the rescan that loads it.
            engine.compile(&file, Some(&bytes), &sha256).ok()
        })
        .await;
        compiled += usize::from(matches!(done, Ok(Some(_))));
    }
    compiled
}

/// Whether `bytes` start like a component (not a core module, not junk).
fn looks_like_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[..4] == b"\0asm" && bytes[4..8] != [1, 0, 0, 0]
}

/// Stamps and hashes of loaded files, kept in the cache across restarts so
/// an unchanged file is neither read nor hashed at the next start.
type Stamps = BTreeMap<PathBuf, (Stamp, String)>;
const STAMPS: &str = "stamps.json";

/// The stamps a previous scan left in the cache.
fn known_stamps(engine: &SkillEngine) -> Stamps {
    std::fs::read(engine.cache_file(STAMPS)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// What a rescan changed, for logs and progress.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Components loaded or reloaded.
    pub loaded: Vec<String>,
    /// Files refused, with the reason.
    pub rejected: Vec<(String, String)>,
    /// Components whose file is gone.
    pub removed: Vec<String>,
}

impl Registry {
    /// Every file's entry.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries.read().unwrap().values().cloned().collect()
    }

    /// Components waiting for their first compile, by file.
    pub fn compiling(&self) -> BTreeMap<PathBuf, Compiling> {
        self.compiling.read().unwrap().clone()
    }

    /// Whether build `sha256` waits for the background compiler: never
    /// compiled, and not known to fail.
    /// A script waits for the script runner's first compile instead.
    fn must_compile(&self, engine: &SkillEngine, file: &Path, sha256: &str) -> bool {
        let Some(code) = compiled_as(file, sha256) else { return false };
        !engine.artifact(code, "cwasm").exists() && !self.uncompilable.read().unwrap().contains_key(code)
    }

    /// Why build `sha256` of `file` failed to compile, if it did.
    fn uncompilable(&self, file: &Path, sha256: &str) -> Option<String> {
        let code = compiled_as(file, sha256).unwrap_or(sha256);
        self.uncompilable.read().unwrap().get(code).cloned()
    }

    /// Compile the next waiting component into the cache (off the async
    /// workers: a big one takes seconds, minutes on a board); returns its
    /// file, or None if none waits. The next rescan loads it from the cache.
    pub async fn compile_next(&self, engine: &SkillEngine, child: Option<&CompileChild>) -> Option<PathBuf> {
        let (file, waiting) = self.compiling.read().unwrap().iter().next().map(|(f, c)| (f.clone(), c.clone()))?;
        let code = compiled_as(&file, &waiting.sha256).unwrap_or(&waiting.sha256).to_string();
        let cached = engine.artifact(&code, "cwasm");
        let (engine, path, build, child) = (engine.clone(), file.clone(), waiting.sha256.clone(), child.cloned());
        let compiled = tokio::task::spawn_blocking(move || {
            // A script waits for the script runner, which serves them all.
            if is_script(&path) {
                return engine.script_runner().map(drop).map_err(|e| e.to_string());
            }
            if let Some(child) = child {
                return child.compile(&path, &build);
            }
            let bytes = read_skill_file(&path).map_err(|e| e.to_string())?;
            // Replaced meanwhile: the next rescan queues the new build.
            if sha256_hex(&bytes) != build {
                return Ok(());
            }
            engine.compile(&path, Some(&bytes), &build).map(drop).map_err(|e| e.to_string())
        })
        .await;
        let failed = compiled.map_err(|e| e.to_string()).and_then(|r| r).err();
        if let Some(e) = &failed {
            tracing::warn!("compiling {}: {e}", file.display());
        }
        // It stays listed as compiling until the rescan that follows loads
        // it, or records why it failed instead of trying again.
        if !cached.exists() {
            let why = failed.unwrap_or_else(|| format!("its compiled copy could not be kept in {}", cached.display()));
            self.uncompilable.write().unwrap().insert(code, why);
        }
        Some(file)
    }

    /// The entry of component `name` (a loaded one first).
    pub fn find(&self, name: &str) -> Option<Entry> {
        let entries = self.entries.read().unwrap();
        entries
            .values()
            .find(|e| e.loaded.is_ok() && e.name() == name)
            .or_else(|| entries.values().find(|e| e.name() == name))
            .cloned()
    }

    /// Bring the registry in line with the folder. `approved` gives the
    /// sha256 the owner approved for a name, if any.
    ///
    /// A name belongs to the file that already holds it, else to the build
    /// the owner approved, else to the first file by name: a new file never
    /// displaces a loaded component by claiming its name.
    ///
    /// With `defer`, a component that was never compiled is not compiled
    /// here: it waits in `compiling` for `compile_next`, so a daemon
    /// answers at once even when an upgrade invalidated every artifact.
    pub async fn rescan(
        &self,
        engine: &SkillEngine,
        dir: &Path,
        ctx_for: impl Fn(&str) -> HostCtx,
        approved: impl Fn(&str) -> Option<String>,
        defer: bool,
    ) -> ScanReport {
        let mut report = ScanReport::default();
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "wasm") || is_script(p))
                .collect(),
            Err(e) => {
                tracing::warn!("cannot read skills folder {}: {e}", dir.display());
                Vec::new()
            }
        };
        files.sort();
        let old = self.entries.read().unwrap().clone();
        let stamps_file = engine.cache_file(STAMPS);
        let known = known_stamps(engine);
        let mut candidates = Vec::new();
        let mut waiting = BTreeMap::new();
        for file in files {
            let stamp = crate::stamp::of(&file);
            // Unchanged on disk: no read, no hash. A file refused for a name
            // clash is read again: the other file may be gone.
            let clashed = |e: &Entry| e.loaded.as_ref().is_err_and(|r| r.starts_with(CLASH));
            if let Some(e) = old.get(&file).filter(|e| stamp.is_some() && e.stamp == stamp && !clashed(e)) {
                candidates.push((file, e.clone()));
                continue;
            }
            // Waiting for its first compile and unchanged: it waits on, unread.
            let waited =
                self.compiling.read().unwrap().get(&file).filter(|c| stamp.is_some() && c.stamp == stamp).cloned();
            if let Some(c) = waited.as_ref().filter(|c| defer && self.must_compile(engine, &file, &c.sha256)) {
                waiting.insert(file, c.clone());
                continue;
            }
            // Unchanged since a previous process loaded it, or since it
            // waited for the compile that has now happened: its compiled
            // copy answers, without reading the file.
            let cached = known.get(&file).filter(|(s, _)| Some(*s) == stamp).map(|(_, sha)| sha.clone());
            if let Some(sha256) = cached.or(waited.map(|c| c.sha256))
                && !old.contains_key(&file)
                && let Ok(loaded) = load(engine, &file, None, &sha256, &ctx_for).await
            {
                let entry = Entry { file: file.clone(), sha256, loaded: Ok(Arc::new(loaded)), stamp };
                report.loaded.push(entry.name());
                candidates.push((file, entry));
                continue;
            }
            let bytes = match read_skill_file(&file) {
                Ok(b) => {
                    self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    b
                }
                // Gone since the folder was listed: the next scan drops it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !file.is_symlink() => continue,
                // Listed, not loaded, so the owner sees why: refused by its
                // size, unread (a stray multi-gigabyte file would take a
                // board's memory), or a FIFO, a link to nothing, a file they
                // may not read. Only the size's refusal keeps the stamp (a
                // write changes it); a chmod changes none, and trying again
                // costs one open.
                Err(e) => {
                    let too_big = e.kind() == std::io::ErrorKind::FileTooLarge;
                    let reason = unreadable(&file, &e);
                    let stamp = stamp.filter(|_| too_big);
                    let entry = Entry { file: file.clone(), sha256: String::new(), loaded: Err(reason.clone()), stamp };
                    report.rejected.push((entry.name(), reason));
                    candidates.push((file, entry));
                    continue;
                }
            };
            let sha256 = if is_script(&file) { script_identity(&bytes) } else { sha256_hex(&bytes) };
            let entry = match old.get(&file) {
                // A name clash is re-checked each scan: the other file may be gone.
                Some(e) if e.sha256 == sha256 && !e.loaded.as_ref().is_err_and(|r| r.starts_with(CLASH)) => {
                    Entry { stamp, ..e.clone() }
                }
                _ if defer
                    && (looks_like_component(&bytes) || is_script(&file))
                    && self.must_compile(engine, &file, &sha256) =>
                {
                    let since_ms = self
                        .compiling
                        .read()
                        .unwrap()
                        .get(&file)
                        .filter(|c| c.sha256 == sha256)
                        .map_or_else(|| jiff::Timestamp::now().as_millisecond(), |c| c.since_ms);
                    waiting.insert(file, Compiling { sha256, since_ms, stamp });
                    continue;
                }
                _ if let Some(why) = self.uncompilable(&file, &sha256) => {
                    let entry =
                        Entry { file: file.clone(), sha256, loaded: Err(format!("it did not compile: {why}")), stamp };
                    report.rejected.push((entry.name(), format!("it did not compile: {why}")));
                    entry
                }
                _ => {
                    let loaded = load(engine, &file, Some(&bytes), &sha256, &ctx_for).await;
                    let loaded = loaded.map(Arc::new).map_err(|e| e.to_string());
                    let entry = Entry { file: file.clone(), sha256, loaded, stamp };
                    match &entry.loaded {
                        Ok(_) => report.loaded.push(entry.name()),
                        Err(reason) => report.rejected.push((entry.name(), reason.clone())),
                    }
                    entry
                }
            };
            candidates.push((file, entry));
        }
        let holds =
            |file: &PathBuf, entry: &Entry| old.get(file).is_some_and(|o| o.loaded.is_ok() && o.name() == entry.name());
        // Stable sort: holders first, then approved builds, then by file name.
        candidates.sort_by_key(|(file, entry)| {
            (!holds(file, entry), approved(&entry.name()).as_deref() != Some(entry.sha256.as_str()))
        });
        let mut next: BTreeMap<PathBuf, Entry> = BTreeMap::new();
        for (file, mut entry) in candidates {
            if let Ok(loaded) = &entry.loaded {
                let name = &loaded.manifest.name;
                if let Some(other) = next.values().find(|e| e.loaded.as_ref().is_ok_and(|l| &l.manifest.name == name)) {
                    let reason = format!("{CLASH}`{name}` is already used by {}", other.file.display());
                    report.rejected.push((name.clone(), reason.clone()));
                    entry.loaded = Err(reason);
                }
            }
            next.insert(file, entry);
        }
        for (file, entry) in &old {
            if !next.contains_key(file) {
                report.removed.push(entry.name());
            }
        }
        let stamps: Stamps = next
            .iter()
            .filter(|(_, e)| e.loaded.is_ok())
            .filter_map(|(file, e)| Some((file.clone(), (e.stamp?, e.sha256.clone()))))
            .collect();
        if stamps != known {
            let written = serde_json::to_vec(&stamps)
                .map_err(std::io::Error::other)
                .and_then(|b| std::fs::write(&stamps_file, b));
            if let Err(e) = written {
                tracing::warn!("cannot write {}: {e}", stamps_file.display());
            }
        }
        *self.entries.write().unwrap() = next;
        *self.compiling.write().unwrap() = waiting;
        report
    }
}
