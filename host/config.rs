//! The owner's config file (`<state-dir>/config.toml`) and the state-dir
//! layout. Secrets never live here (see `secrets.rs`).
//!
//! A missing config file means defaults; an unknown key is an error that
//! names the key, so a typo never silently turns a limit off.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub limits: Limits,
    /// `[skills.NAME]` tables: non-secret settings a skill reads via `config`.
    #[serde(default)]
    pub skills: BTreeMap<String, toml::Table>,
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory_mb: 128, cpu_ms: 10_000, timeout_ms: 30_000, output_kb: 1024, http_response_kb: 4096 }
    }
}

impl Limits {
    pub fn memory_bytes(&self) -> usize {
        (self.memory_mb as usize) << 20
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
    pub fn output_bytes(&self) -> usize {
        (self.output_kb as usize) << 10
    }
    pub fn http_response_bytes(&self) -> usize {
        (self.http_response_kb as usize) << 10
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => return Err(ConfigError::Read { path: path.into(), source }),
        };
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })
    }

    /// A skill setting as a string: strings verbatim, other values as TOML.
    pub fn skill_setting(&self, skill: &str, key: &str) -> Option<String> {
        self.skills.get(skill)?.get(key).map(|v| match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// Where everything lives under the state directory.
#[derive(Clone, Debug)]
pub struct Paths {
    pub state_dir: PathBuf,
}

impl Paths {
    pub fn new(state_dir: PathBuf) -> Self {
        Paths { state_dir }
    }
    /// `$WASICLAW_STATE_DIR`, else the platform data dir (`~/.local/share/wasiclaw`).
    pub fn default_state_dir() -> PathBuf {
        dirs::data_dir().unwrap_or_else(|| PathBuf::from(".")).join("wasiclaw")
    }
    pub fn skills_dir(&self) -> PathBuf {
        self.state_dir.join("skills")
    }
    pub fn database(&self) -> PathBuf {
        self.state_dir.join("wasiclaw.redb")
    }
    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("wasiclaw.sock")
    }
    pub fn secrets(&self) -> PathBuf {
        self.state_dir.join("secrets.json")
    }
    pub fn config(&self) -> PathBuf {
        self.state_dir.join("config.toml")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.state_dir.join("cache")
    }
    /// The private directory a skill with the `files` grant sees as `/data`.
    pub fn files_dir(&self, skill: &str) -> PathBuf {
        self.state_dir.join("files").join(skill)
    }
}
