//! The context of one call into a component: who it is, what it may do,
//! and the tally of what it made the host spend.
//!
//! Invariants:
//! - Every audit record is bounded: target and detail are cut to
//!   `AUDIT_FIELD` bytes with the original length noted.
//! - A call's audit records and kv writes are kept in its `Journal` and
//!   written in one durable commit when the call ends (`HostCtx::finish`,
//!   or the last clone of its context dropping, e.g. after a timeout): one
//!   write transaction and one fsync per call. An audit record is never
//!   lost unless the call's own writes are too. Until then the call reads
//!   its own writes and no other call sees them.
//! - Records over the component's per-minute budget are written as one
//!   record with a count per capability, and dropped log lines as one
//!   "N lines dropped" line.
//! - The denial texts kept for the caller are capped in number and size.

use crate::budget::{Budget, Spend};
use crate::config::Limits;
use crate::grants::Effective;
use crate::secrets::Secrets;
use crate::store::{AuditRecord, KvQuota, KvStage, Store as Db, StoreError, now_ms};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
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
    journal: Arc<Journal>,
}

/// What one call wrote and was refused, committed once when it ends.
struct Journal {
    skill: String,
    sha256: String,
    db: Arc<Db>,
    records: Mutex<Vec<AuditRecord>>,
    kv: Mutex<KvStage>,
    quota: KvQuota,
    dropped_log_lines: AtomicU64,
    coalesced: Mutex<BTreeMap<String, u64>>,
}

impl Journal {
    /// Commit what the call has kept so far, once, durably; why its kv
    /// writes were refused, if they were.
    fn flush(&self) -> Option<String> {
        let lines = self.dropped_log_lines.swap(0, Ordering::Relaxed);
        if lines > 0 {
            tracing::warn!(skill = %self.skill, "{lines} log lines dropped (over [limits] log_kb_per_minute)");
        }
        let mut records = std::mem::take(&mut *self.records.lock().unwrap());
        let coalesced = std::mem::take(&mut *self.coalesced.lock().unwrap());
        if !coalesced.is_empty() {
            let detail = coalesced.iter().map(|(what, n)| format!("{what} ×{n}")).collect::<Vec<_>>().join(", ");
            records.push(self.record("audit", "coalesced (over [limits] audit_per_minute)", false, &detail));
        }
        let kv = std::mem::take(&mut *self.kv.lock().unwrap());
        if records.is_empty() && kv.is_empty() {
            return None;
        }
        let dropped = |why: &str| self.record("kv", "the call's writes", false, why);
        match self.db.end_call(records, (&self.skill, kv, self.quota), dropped) {
            Ok(Some(why)) => {
                // Audited too; logged for calls whose caller shows no outcome (a channel's).
                tracing::warn!(skill = %self.skill, "the call's kv writes were not saved: {why}");
                Some(why)
            }
            Ok(None) => None,
            Err(e) => {
                // Logged and told, not fatal: refusing calls would turn a
                // full disk into an outage.
                tracing::error!(skill = %self.skill, "the call's commit failed: {e}");
                Some(format!("its kv writes and audit records were not saved: {e}"))
            }
        }
    }

    fn record(&self, capability: &str, target: &str, allowed: bool, detail: &str) -> AuditRecord {
        AuditRecord {
            id: 0,
            time_ms: now_ms(),
            skill: self.skill.clone(),
            sha256: self.sha256.clone(),
            capability: capability.into(),
            target: crate::text::truncate(target, AUDIT_FIELD),
            allowed,
            detail: crate::text::truncate(detail, AUDIT_FIELD),
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.flush();
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
        let journal = Arc::new(Journal {
            skill: skill.into(),
            sha256: sha256.into(),
            db: db.clone(),
            records: Mutex::default(),
            kv: Mutex::default(),
            quota: KvQuota { keys: limits.kv_keys, bytes: limits.kv_mb << 20 },
            dropped_log_lines: AtomicU64::new(0),
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
            journal,
        }
    }

    /// End the call: commit its audit records and kv writes durably; why
    /// its kv writes were refused, if they were (another call of the same
    /// component filled the quota first, or the disk failed). Later uses
    /// (there should be none) are committed when the last clone of the
    /// context drops.
    pub fn finish(&self) -> Option<String> {
        self.journal.flush()
    }

    /// `key` as this call sees it: its own staged write, else the committed value.
    pub fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.journal.kv.lock().unwrap().get(key) {
            Some(staged) => Ok(staged.map(<[u8]>::to_vec)),
            None => self.db.kv_get(&self.skill, key),
        }
    }

    /// Stage a write (`None`: a delete) for the call's end commit.
    pub fn kv_put(&self, key: &str, value: Option<Vec<u8>>) -> Result<(), StoreError> {
        let mut stage = self.journal.kv.lock().unwrap();
        self.db.kv_stage(&self.skill, &mut stage, key, value, self.journal.quota)
    }

    /// Keys starting with `prefix`, at most `limit`, as this call sees them.
    pub fn kv_keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.db.kv_keys(&self.skill, prefix, limit, &self.journal.kv.lock().unwrap())
    }

    /// Record a capability use (kept until the call's end commit).
    pub fn audit(&self, capability: &str, target: &str, allowed: bool, detail: &str) {
        if !allowed {
            let mut denials = self.denials.lock().unwrap();
            if denials.len() < DENIALS_KEPT {
                denials.push(crate::text::truncate(&format!("{capability} {target}: {detail}"), 512));
            }
        }
        if !self.budget.take(Spend::AuditRecords, 1) {
            let key = format!("{capability} {}", if allowed { "allowed" } else { "denied" });
            *self.journal.coalesced.lock().unwrap().entry(key).or_default() += 1;
            return;
        }
        let record = self.journal.record(capability, target, allowed, detail);
        self.journal.records.lock().unwrap().push(record);
    }

    /// Whether a log line of `bytes` fits the budget; a line that does not
    /// is counted as dropped.
    pub fn take_log(&self, bytes: usize) -> bool {
        let ok = self.budget.take(Spend::LogBytes, bytes as u64);
        if !ok {
            self.journal.dropped_log_lines.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}
