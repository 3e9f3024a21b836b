//! The owner's config file (`<state-dir>/config.toml`) and the state-dir
//! layout. Secrets never live here (see `secrets.rs`).
//!
//! A missing config file means defaults; an unknown key is an error that
//! names the key, so a typo never silently turns a limit off.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The owner's `config.toml`, with defaults for everything left out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Per-call limits of every component.
    #[serde(default)]
    pub limits: Limits,
    /// `[skills.NAME]` tables: non-secret settings a skill reads via `config`.
    #[serde(default)]
    pub skills: BTreeMap<String, toml::Table>,
    /// The agent loop.
    #[serde(default)]
    pub agent: AgentConfig,
    /// The model chain: the first that answers wins; later ones are fallbacks.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// The web chat and webhook listener.
    #[serde(default)]
    pub gateway: GatewayConfig,
    /// Long-term memory.
    #[serde(default)]
    pub memory: MemoryConfig,
    /// `[channels.NAME]` tables: who a chat channel serves.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelConfig>,
    /// How long audit records are kept.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The database.
    #[serde(default)]
    pub storage: StorageConfig,
    /// How components are compiled to machine code.
    #[serde(default)]
    pub compile: CompileConfig,
    /// `[tools."SKILL.TOOL"]` (or a host tool's name): the owner's policy
    /// for one tool.
    #[serde(default)]
    pub tools: BTreeMap<String, crate::approvals::ToolConfig>,
}

/// The database file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// redb's page cache, in MiB: more is faster for large memories, less
    /// keeps a board's RSS down.
    pub cache_mb: u64,
    /// Where the daemon writes a checked copy of the database every
    /// `backup_every_hours`: a directory on another device. Unset, none.
    pub backup_dir: Option<PathBuf>,
    /// Hours between automatic copies.
    pub backup_every_hours: u64,
    /// Automatic copies kept; older ones are removed.
    pub backup_keep: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { cache_mb: 64, backup_dir: None, backup_every_hours: 24, backup_keep: 7 }
    }
}

impl StorageConfig {
    fn check(&self) -> Result<(), String> {
        if self.backup_dir.as_ref().is_some_and(|d| !d.is_absolute()) {
            return Err(
                "[storage] backup_dir must be an absolute path (the service does not run from your home)".into()
            );
        }
        if self.backup_every_hours == 0 || self.backup_keep == 0 {
            return Err("[storage] backup_every_hours and backup_keep must be at least 1".into());
        }
        Ok(())
    }
}

/// `[compile]`: how a component becomes machine code, once per build of
/// it (the result is cached). BENCHMARKS.md ("Compiling") has the figures
/// behind the defaults.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompileConfig {
    /// `cranelift` (optimizing; the default) or `winch` (a baseline
    /// compiler: faster to compile, slower to run; x86_64 only, and only in
    /// builds with the `winch` feature).
    pub compiler: Compiler,
    /// Compile a component's functions on every core at once: about twice
    /// as fast on two cores, but each core adds to the compile's peak
    /// memory. Unset: on where the machine has 2 GiB of memory or more.
    pub parallel: Option<bool>,
}

impl Default for CompileConfig {
    fn default() -> Self {
        CompileConfig { compiler: Compiler::Cranelift, parallel: None }
    }
}

impl CompileConfig {
    /// Whether compiles use every core, `parallel` or the machine's memory.
    pub fn parallel(&self) -> bool {
        self.parallel.unwrap_or_else(|| total_memory().is_none_or(|bytes| bytes >= 2 << 30))
    }
}

/// The machine's memory in bytes, if the system says.
fn total_memory() -> Option<u64> {
    // SAFETY: sysinfo only fills the struct it is given.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    (unsafe { libc::sysinfo(&mut info) } == 0).then(|| info.totalram as u64 * u64::from(info.mem_unit))
}

/// A compiler for components.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Compiler {
    /// Cranelift, wasmtime's optimizing compiler.
    #[default]
    Cranelift,
    /// Winch, wasmtime's baseline compiler.
    Winch,
}

/// How long the audit log keeps records.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Records older than this many days are pruned.
    pub keep_days: u64,
    /// At most this many records are kept; the oldest go first.
    pub max_records: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { keep_days: 90, max_records: 200_000 }
    }
}

/// Who one chat channel serves, besides senders paired with a code.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelConfig {
    /// Sender ids served without pairing (the platform's user ids), with a
    /// paired non-admin's scope.
    pub allow: Vec<String>,
    /// Sender ids served as admins without pairing (the owner's own ids).
    pub admins: Vec<String>,
    /// Answer unknown senders with a pairing code; with `false` they are
    /// ignored and only `allow` is served.
    pub pairing: bool,
    /// Which group-chat messages are answered (direct chats always are).
    pub groups: Groups,
}

/// Which messages in a group chat the bot answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Groups {
    /// Only those that mention the bot or reply to it.
    #[default]
    Mentioned,
    /// Every message from a paired or allowed sender.
    All,
    /// None: the bot is silent in groups.
    Off,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig { allow: Vec::new(), admins: Vec::new(), pairing: true, groups: Groups::default() }
    }
}

/// Long-term memory.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Memories recalled into the context for each message.
    pub recall: usize,
    /// Cap on the recalled (and pinned) text, in characters.
    pub recall_max_chars: usize,
    /// Optional embeddings for hybrid search; keywords alone without it.
    pub embeddings: Option<EmbeddingsConfig>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig { recall: 3, recall_max_chars: 2000, embeddings: None }
    }
}

/// An OpenAI-compatible embeddings endpoint (`POST {base_url}/embeddings`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsConfig {
    /// e.g. https://api.openai.com/v1 or http://127.0.0.1:11434/v1
    pub base_url: String,
    /// The embedding model.
    pub model: String,
    /// The secret holding its API key, if it needs one.
    #[serde(default)]
    pub api_key_secret: Option<String>,
}

/// How the agent loop behaves.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Model rounds with tool calls per user message.
    pub max_tool_iterations: usize,
    /// Longer tool results are cut, with a marker the model can see.
    pub tool_result_max_chars: usize,
    /// The model's context window in tokens (estimated as characters / 4).
    pub context_window: usize,
    /// Tokens the model may produce per reply.
    pub max_output_tokens: u32,
    /// Tokens (input + output) per UTC day; 0 means no limit.
    pub daily_token_budget: u64,
    /// Tokens per UTC day each paired non-admin may spend, within the daily
    /// budget; 0 means only the daily budget binds them. `wasiclaw pairing
    /// grant --daily-tokens` sets one person's.
    pub person_daily_token_budget: u64,
    /// Retries per provider on 429, 5xx and timeouts, before falling back.
    pub retries: u32,
    /// Probed when no provider is configured.
    pub ollama_url: String,
    /// Where `notify` messages and results of jobs without a chat go, as
    /// `CHANNEL:CHAT-ID` (e.g. `telegram:12345`). Unset: the first admin's chat.
    pub owner_chat: Option<String>,
    /// How long a tool call waits for the owner's answer before it counts
    /// as denied.
    pub approval_timeout_s: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            max_tool_iterations: 8,
            tool_result_max_chars: 16_000,
            context_window: 32_000,
            max_output_tokens: 1024,
            daily_token_budget: 0,
            person_daily_token_budget: 100_000,
            retries: 3,
            ollama_url: "http://127.0.0.1:11434".into(),
            owner_chat: None,
            approval_timeout_s: 300,
        }
    }
}

/// The API family a provider speaks.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI chat completions and everything compatible: OpenRouter,
    /// Ollama, llama.cpp server, vLLM, LM Studio.
    Openai,
    /// Anthropic Messages API.
    Anthropic,
}

/// One model endpoint.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Its API family.
    pub kind: ProviderKind,
    /// e.g. https://api.openai.com/v1, http://127.0.0.1:11434/v1, https://api.anthropic.com
    pub base_url: String,
    /// The model's name.
    pub model: String,
    /// Name of the secret (see `wasiclaw secrets set`) holding the API key.
    #[serde(default)]
    pub api_key_secret: Option<String>,
    /// USD per million input / output tokens, for cost accounting.
    #[serde(default)]
    pub price_input_per_mtok: f64,
    /// US dollars per million output tokens, for the cost in `usage`.
    #[serde(default)]
    pub price_output_per_mtok: f64,
    /// Seconds before a request without progress counts as timed out.
    #[serde(default = "default_provider_timeout")]
    pub timeout_s: u64,
}

/// Whether a key sent to `base_url` crosses a network unencrypted: plain
/// http to any host but this machine's loopback (a LAN is a network too).
pub fn key_in_clear(base_url: &str) -> bool {
    let Ok(uri) = base_url.parse::<http::Uri>() else { return false };
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let local = host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    uri.scheme_str() == Some("http") && !local
}

fn default_provider_timeout() -> u64 {
    120
}

/// The HTTP gateway of `wasiclaw run`: web chat and API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Loopback by default; any other address needs `token_secret`.
    pub bind: String,
    /// Name of the secret holding the token clients must present; without
    /// it the host creates `WASICLAW_GATEWAY_TOKEN` on first start.
    pub token_secret: Option<String>,
    /// Serve the gateway at all.
    pub enabled: bool,
    /// Host names the gateway also answers to (e.g. the name a reverse
    /// proxy forwards), besides its bind address, 127.0.0.1, [::1] and
    /// localhost.
    pub hosts: Vec<String>,
    /// Connections open at once. More wait in the kernel's queue, so a
    /// flood of them cannot take the file descriptors the daemon needs.
    pub connections: u32,
    /// Seconds a client has to send a request's headers (a connection idle
    /// that long is closed) and a webhook's body.
    pub request_timeout_s: u64,
}

/// The gateway token's secret name when the owner names none.
pub const DEFAULT_GATEWAY_TOKEN: &str = "WASICLAW_GATEWAY_TOKEN";

/// The shortest gateway token served: the gateway does not count wrong
/// tries (a flood of them costs it nothing), so a token must be beyond
/// guessing. The host's own is 64 hex digits.
pub const MIN_GATEWAY_TOKEN: usize = 32;

impl GatewayConfig {
    /// The name of the secret holding the gateway token.
    pub fn token_name(&self) -> &str {
        self.token_secret.as_deref().unwrap_or(DEFAULT_GATEWAY_TOKEN)
    }

    /// The gateway token: the owner's `token_secret`, or the host's own,
    /// created with 256 random bits the first time it is needed.
    pub fn token(&self, secrets: &crate::secrets::Secrets) -> anyhow::Result<String> {
        use anyhow::Context;
        let name = self.token_name();
        if let Some(token) = secrets.get(name)? {
            if token.len() < MIN_GATEWAY_TOKEN {
                anyhow::bail!(
                    "the gateway's token {name} is {} characters, short enough for anyone who reaches the gateway to \
                     guess; make one of {MIN_GATEWAY_TOKEN} or more: `wasiclaw secrets set {name} --random`",
                    token.len()
                );
            }
            return Ok(token);
        }
        if self.token_secret.is_some() {
            anyhow::bail!("[gateway] token_secret {name} is not set; run `wasiclaw secrets set {name}`");
        }
        secrets.get_or_insert_with(name, crate::secrets::random_token).context("cannot make a gateway token")
    }

    /// The owner's page's address with the token, for `wasiclaw open`.
    pub fn open_url(&self, secrets: &crate::secrets::Secrets) -> anyhow::Result<String> {
        use anyhow::Context;
        let token = self.token(secrets)?;
        let bind: std::net::SocketAddr = self.bind.parse().with_context(|| "[gateway] bind is not IP:PORT")?;
        let host = if bind.ip().is_unspecified() { "127.0.0.1".to_string() } else { bind.ip().to_string() };
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        Ok(format!("http://{host}:{}/?token={token}", bind.port()))
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            bind: "127.0.0.1:8787".into(),
            token_secret: None,
            enabled: true,
            hosts: Vec::new(),
            connections: 128,
            request_timeout_s: 10,
        }
    }
}

/// Per-call limits for every component.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory cap per call.
    pub memory_mb: u64,
    /// CPU time the guest may spend executing per call.
    pub cpu_ms: u64,
    /// Wall-clock cap on a whole call, host calls and HTTP included.
    pub timeout_ms: u64,
    /// Cap on a tool's result text.
    pub output_kb: u64,
    /// Cap on one HTTP response body a component receives.
    pub http_response_kb: u64,
    /// Cap on one HTTP request body a component sends.
    pub http_request_kb: u64,
    /// Requests one call keeps open at once (sent, response not dropped):
    /// each response is buffered in the host, up to `http_response_kb`.
    pub http_open: u32,
    /// Handles (header maps, requests, streams, its own resources) one call
    /// holds at once; each costs the host at most about 16 KiB.
    pub handles: u32,
    /// Log a component may write per minute, all its calls together;
    /// beyond it lines are dropped and counted.
    pub log_kb_per_minute: u64,
    /// Audit records a component may cause per minute; further denials are
    /// coalesced into one record per call with a count.
    pub audit_per_minute: u64,
    /// `notify` messages a component may send per hour.
    pub notify_per_hour: u64,
    /// `crypto.secret-equals` checks a component may make per minute (the
    /// first in a call of a secret of 32 bytes or more is not counted: it
    /// cannot be guessed online).
    pub secret_checks_per_minute: u64,
    /// Memories a component may save per hour (each stays on disk and may
    /// cost an embedding request); the model too, after untrusted content.
    pub memory_saves_per_hour: u64,
    /// Memory searches a component may make per minute (each may cost an
    /// embedding request).
    pub memory_searches_per_minute: u64,
    /// Memories a component may keep at once (each at most 16 KiB); the
    /// owner frees room with `wasiclaw memory forget ID`.
    pub memories_kept: u64,
    /// Total size of a component's kv values and keys.
    pub kv_mb: u64,
    /// Number of a component's kv keys.
    pub kv_keys: u64,
    /// Size of a component's files directory; beyond it `/data` is read-only.
    pub files_mb: u64,
    /// Calls of one component running at once; more wait their turn.
    pub concurrent_calls: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 128,
            cpu_ms: 10_000,
            timeout_ms: 30_000,
            output_kb: 1024,
            http_response_kb: 4096,
            http_request_kb: 1024,
            http_open: 8,
            handles: 1000,
            log_kb_per_minute: 64,
            audit_per_minute: 120,
            notify_per_hour: 30,
            secret_checks_per_minute: 120,
            memory_saves_per_hour: 60,
            memory_searches_per_minute: 60,
            memories_kept: 1000,
            kv_mb: 16,
            kv_keys: 10_000,
            files_mb: 256,
            concurrent_calls: 4,
        }
    }
}

impl Limits {
    /// Sizes within what the host can count in bytes (a MiB or KiB figure is
    /// shifted into bytes, and past the bound the shift drops its high
    /// bits: a huge `files_mb` would have become a tiny quota), and the
    /// per-call limits without which no call can run.
    fn check(&self) -> Result<(), String> {
        let mib =
            [("memory_mb", self.memory_mb, 4096), ("kv_mb", self.kv_mb, 1 << 20), ("files_mb", self.files_mb, 1 << 20)];
        let kib = [
            ("output_kb", self.output_kb),
            ("http_response_kb", self.http_response_kb),
            ("http_request_kb", self.http_request_kb),
            ("log_kb_per_minute", self.log_kb_per_minute),
        ];
        for (name, value, most) in mib.into_iter().chain(kib.map(|(name, value)| (name, value, 1 << 30))) {
            if value > most {
                return Err(format!("[limits] {name} = {value} is past the most it can be, {most}"));
            }
        }
        for (name, value) in [("memory_mb", self.memory_mb), ("cpu_ms", self.cpu_ms), ("timeout_ms", self.timeout_ms)] {
            if value == 0 {
                return Err(format!("[limits] {name} must be at least 1: no call could run"));
            }
        }
        Ok(())
    }

    /// `memory_mb` in bytes.
    pub fn memory_bytes(&self) -> usize {
        (self.memory_mb as usize) << 20
    }
    /// `timeout_ms` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
    /// `output_kb` in bytes.
    pub fn output_bytes(&self) -> usize {
        (self.output_kb as usize) << 10
    }
    /// `http_response_kb` in bytes.
    pub fn http_response_bytes(&self) -> usize {
        (self.http_response_kb as usize) << 10
    }
    /// `http_request_kb` in bytes.
    pub fn http_request_bytes(&self) -> usize {
        (self.http_request_kb as usize) << 10
    }
}

/// Why `config.toml` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    /// The file exists but cannot be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    #[error("config {path} is invalid: {message}")]
    /// It is not valid TOML, or a setting is wrong.
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
}

impl Config {
    /// The API keys set to travel over plain http off this machine (see
    /// [`key_in_clear`]): (secret name, base_url).
    pub fn keys_in_clear(&self) -> Vec<(&str, &str)> {
        let providers = self.providers.iter().map(|p| (&p.api_key_secret, &p.base_url));
        let embeddings = self.memory.embeddings.iter().map(|e| (&e.api_key_secret, &e.base_url));
        providers
            .chain(embeddings)
            .filter_map(|(name, url)| Some((name.as_deref()?, url.as_str())))
            .filter(|(_, url)| key_in_clear(url))
            .collect()
    }

    /// Read the config at `path`; a missing file means all defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => return Err(ConfigError::Read { path: path.into(), source }),
        };
        Config::parse(path, &text)
    }

    /// The config in `bytes`, read from `path` already (None: it could not
    /// be read, and `load` says why).
    pub fn from_read(path: &Path, bytes: Option<&[u8]>) -> Result<Config, ConfigError> {
        match bytes.map(std::str::from_utf8) {
            Some(Ok(text)) => Config::parse(path, text),
            _ => Config::load(path),
        }
    }

    fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Parse { path: path.into(), message };
        let config: Config = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        config.storage.check().map_err(invalid)?;
        config.limits.check().map_err(invalid)?;
        Ok(config)
    }

    /// Secrets the host itself uses (provider keys, the gateway token, the
    /// embeddings key): never grantable to a component.
    pub fn host_secrets(&self) -> std::collections::BTreeSet<String> {
        let mut names: std::collections::BTreeSet<String> =
            self.providers.iter().filter_map(|p| p.api_key_secret.clone()).collect();
        names.insert(self.gateway.token_name().to_string());
        names.extend(self.memory.embeddings.as_ref().and_then(|e| e.api_key_secret.clone()));
        names
    }

    /// A skill setting as a string: strings verbatim, other values as TOML.
    pub fn skill_setting(&self, skill: &str, key: &str) -> Option<String> {
        self.skills.get(skill)?.get(key).map(|v| match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// The files of the state dir a backup carries: the settings and the
/// persona, which a new card needs; not `secrets.json`, as a backup may lie
/// on a shared drive.
pub const BACKED_UP_FILES: [&str; 2] = ["config.toml", "persona.md"];

/// Where everything lives under the state directory.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The state directory.
    pub state_dir: PathBuf,
}

impl Paths {
    /// The files of the state directory `state_dir`.
    pub fn new(state_dir: PathBuf) -> Self {
        Paths { state_dir }
    }
    /// `$WASICLAW_STATE_DIR`, else the platform data dir (`~/.local/share/wasiclaw`).
    pub fn default_state_dir() -> PathBuf {
        dirs::data_dir().unwrap_or_else(|| PathBuf::from(".")).join("wasiclaw")
    }
    /// Where components are installed.
    pub fn skills_dir(&self) -> PathBuf {
        self.state_dir.join("skills")
    }
    /// The redb database.
    pub fn database(&self) -> PathBuf {
        self.state_dir.join("wasiclaw.redb")
    }
    /// The local API socket.
    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("wasiclaw.sock")
    }
    /// The secrets file.
    pub fn secrets(&self) -> PathBuf {
        self.state_dir.join("secrets.json")
    }
    /// The owner's config file.
    pub fn config(&self) -> PathBuf {
        self.state_dir.join("config.toml")
    }
    /// Compiled components and what they describe.
    pub fn cache_dir(&self) -> PathBuf {
        self.state_dir.join("cache")
    }
    /// The persona the model sees first; the owner edits it.
    pub fn persona(&self) -> PathBuf {
        self.state_dir.join("persona.md")
    }
    /// The owner's files a backup carries besides the database (never the
    /// secrets), by name in the state dir, with their contents now.
    pub fn kept_with_backups(&self) -> Vec<(String, Vec<u8>)> {
        BACKED_UP_FILES
            .iter()
            .filter_map(|name| Some((name.to_string(), std::fs::read(self.state_dir.join(name)).ok()?)))
            .collect()
    }
    /// The private directory a skill with the `files` grant sees as `/data`.
    pub fn files_dir(&self, skill: &str) -> PathBuf {
        self.state_dir.join("files").join(skill)
    }
}

#[cfg(test)]
mod tests {
    /// A key over plain http is said to be in the clear unless it stays on
    /// this machine.
    #[test]
    fn a_key_over_plain_http_is_in_the_clear_off_this_machine() {
        for url in ["http://llm.example.com/v1", "http://192.168.1.20:11434/v1", "http://[fe80::1]/v1"] {
            assert!(super::key_in_clear(url), "{url}");
        }
        for url in
            ["https://api.openai.com/v1", "http://127.0.0.1:11434/v1", "http://[::1]:8080", "http://localhost/v1"]
        {
            assert!(!super::key_in_clear(url), "{url}");
        }
    }

    #[test]
    fn the_annotated_example_config_is_valid() {
        let config: super::Config = toml::from_str(include_str!("../examples/config.toml")).unwrap();
        assert_eq!(config.providers.len(), 2);
        assert_eq!(config.limits.memory_mb, 128);
    }

    #[test]
    fn a_relative_backup_dir_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[storage]\nbackup_dir = \"backups\"\n").unwrap();
        let e = super::Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("backup_dir must be an absolute path"), "{e}");
        std::fs::write(&path, "[storage]\nbackup_dir = \"/mnt/usb\"\nbackup_keep = 0\n").unwrap();
        assert!(super::Config::load(&path).unwrap_err().to_string().contains("at least 1"));
    }

    /// A size the host cannot count in bytes, or a per-call limit of zero,
    /// is refused naming the setting (a huge files_mb became a tiny quota).
    #[test]
    fn limits_past_what_the_host_can_count_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        for (limits, said) in [
            ("files_mb = 17592186044416", "files_mb = 17592186044416 is past the most"),
            ("output_kb = 18014398509481984", "output_kb"),
            ("memory_mb = 5000", "memory_mb"),
            ("timeout_ms = 0", "timeout_ms must be at least 1"),
        ] {
            std::fs::write(&path, format!("[limits]\n{limits}\n")).unwrap();
            let e = super::Config::load(&path).unwrap_err().to_string();
            assert!(e.contains(said), "{limits}: {e}");
        }
        std::fs::write(&path, "[limits]\nfiles_mb = 1048576\nmemory_mb = 4096\n").unwrap();
        assert!(super::Config::load(&path).is_ok());
    }
}
