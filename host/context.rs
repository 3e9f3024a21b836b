//! The context of one call into a component: who it is, what it may do,
//! and the tally of what it made the host spend.
//!
//! Invariants:
//! - Every audit record is bounded: target and detail are cut to
//!   `AUDIT_FIELD` bytes with the original length noted.
//! - Records over the component's per-minute budget are not written one by
//!   one; when the call ends (the last clone of its context drops) they are
//!   written as one record with a count per capability, and dropped log
//!   lines as one "N lines dropped" line.
//! - The denial texts kept for the caller are capped in number and size.

use crate::budget::{Budget, Spend};
use crate::config::Limits;
use crate::grants::Effective;
use crate::secrets::Secrets;
use crate::store::{AuditRecord, Store as Db, now_ms};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// Bytes kept of an audit record's target and detail.
pub const AUDIT_FIELD: usize = 256;
/// Denial texts kept per call for the caller (and the model) to read.
const DENIALS_KEPT: usize = 16;

/// Name resolution, replaceable so tests can answer for names on loopback.
pub type Resolver =
    Arc<dyn Fn(String, u16) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> + Send + Sync>;

/// The system resolver.
pub fn system_resolver() -> Resolver {
    Arc::new(|host, port| {
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), port)).await?.map(|a| a.ip()).collect()) })
    })
}

/// What a call may touch, fixed when the call starts.
#[derive(Clone)]
pub struct HostCtx {
    /// The component's name.
    pub skill: String,
    /// The component's sha256.
    pub sha256: String,
    /// What it may do in this call.
    pub effective: Arc<Effective>,
    /// The database.
    pub db: Arc<Db>,
    /// The secret store.
    pub secrets: Secrets,
    /// Its `[skills.NAME]` settings.
    pub settings: Option<toml::Table>,
    /// Embeddings for memory search, if configured.
    pub embedder: Option<Arc<crate::memory::Embedder>>,
    /// Denials during this call, in words, for the caller to show.
    pub denials: Arc<Mutex<Vec<String>>>,
    /// `[agent] owner_chat`: the `CHANNEL:CHAT` that `notify` messages are
    /// also sent to (without it, the first admin's chat).
    pub owner_chat: Option<String>,
    /// The limits of this call.
    pub limits: Arc<Limits>,
    /// Shared by every call of this component.
    pub budget: Arc<Budget>,
    /// Name lookups for egress checks.
    pub resolver: Resolver,
    tally: Arc<Tally>,
}

/// What one call was refused for being over budget; written when it ends.
struct Tally {
    skill: String,
    sha256: String,
    db: Arc<Db>,
    dropped_log_lines: Mutex<u64>,
    coalesced: Mutex<BTreeMap<String, u64>>,
}

impl Drop for Tally {
    fn drop(&mut self) {
        let lines = *self.dropped_log_lines.get_mut().unwrap();
        if lines > 0 {
            tracing::warn!(skill = %self.skill, "{lines} log lines dropped (over [limits] log_kb_per_minute)");
        }
        let coalesced = std::mem::take(self.coalesced.get_mut().unwrap());
        if coalesced.is_empty() {
            return;
        }
        let detail = coalesced.iter().map(|(what, n)| format!("{what} ×{n}")).collect::<Vec<_>>().join(", ");
        let record = AuditRecord {
            id: 0,
            time_ms: now_ms(),
            skill: self.skill.clone(),
            sha256: self.sha256.clone(),
            capability: "audit".into(),
            target: "coalesced (over [limits] audit_per_minute)".into(),
            allowed: false,
            detail: crate::text::truncate(&detail, AUDIT_FIELD),
        };
        if let Err(e) = self.db.audit(record) {
            tracing::error!(skill = %self.skill, "audit write failed: {e}");
        }
    }
}

impl HostCtx {
    /// A context for one call of `skill` (build `sha256`) with `effective` rights.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        skill: &str,
        sha256: &str,
        effective: Effective,
        db: Arc<Db>,
        secrets: Secrets,
        limits: Arc<Limits>,
        budget: Arc<Budget>,
        resolver: Resolver,
    ) -> Self {
        let tally = Arc::new(Tally {
            skill: skill.into(),
            sha256: sha256.into(),
            db: db.clone(),
            dropped_log_lines: Mutex::default(),
            coalesced: Mutex::default(),
        });
        HostCtx {
            skill: skill.into(),
            sha256: sha256.into(),
            effective: Arc::new(effective),
            db,
            secrets,
            settings: None,
            embedder: None,
            denials: Arc::default(),
            owner_chat: None,
            limits,
            budget,
            resolver,
            tally,
        }
    }

    /// Record a capability use. An audit write that fails is logged, not
    /// fatal: refusing the call would turn a full disk into an outage.
    pub fn audit(&self, capability: &str, target: &str, allowed: bool, detail: &str) {
        if !allowed {
            let mut denials = self.denials.lock().unwrap();
            if denials.len() < DENIALS_KEPT {
                denials.push(crate::text::truncate(&format!("{capability} {target}: {detail}"), 512));
            }
        }
        if !self.budget.take(Spend::AuditRecords, 1) {
            let key = format!("{capability} {}", if allowed { "allowed" } else { "denied" });
            *self.tally.coalesced.lock().unwrap().entry(key).or_default() += 1;
            return;
        }
        let record = AuditRecord {
            id: 0,
            time_ms: now_ms(),
            skill: self.skill.clone(),
            sha256: self.sha256.clone(),
            capability: capability.into(),
            target: crate::text::truncate(target, AUDIT_FIELD),
            allowed,
            detail: crate::text::truncate(detail, AUDIT_FIELD),
        };
        if let Err(e) = self.db.audit(record) {
            tracing::error!(skill = %self.skill, "audit write failed: {e}");
        }
    }

    /// Whether a log line of `bytes` fits the budget; a line that does not
    /// is counted as dropped.
    pub fn take_log(&self, bytes: usize) -> bool {
        let ok = self.budget.take(Spend::LogBytes, bytes as u64);
        if !ok {
            *self.tally.dropped_log_lines.lock().unwrap() += 1;
        }
        ok
    }
}
