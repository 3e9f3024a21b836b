//! What a component may make the host spend, counted per component across
//! all of its calls, not per call: a model reply with eight parallel calls,
//! a job and a channel share one budget.
//!
//! Invariants:
//! - At most `[limits] concurrent_calls` calls of one component run at
//!   once; the rest wait for a permit.
//! - Log bytes, audit records, secret checks and memory searches are
//!   counted per minute, `notify` messages and memory saves per hour; a use
//!   over the limit is refused (a log line or an audit record is dropped
//!   and counted, so the call still learns nothing from it).
//! - Calls that overlap share one count of what they may still write
//!   under `/data` ([`Budget::files_left`]), measured when the first of
//!   them starts: four calls at once, each starting below the quota, would
//!   otherwise each be given the whole room left.
//! - The counters live in memory: a restart resets them, which is fine
//!   because a restart also ends every call.

use crate::config::Limits;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// A countable use of host resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Spend {
    /// Bytes of log lines.
    LogBytes,
    /// Audit records written.
    AuditRecords,
    /// Messages to the owner.
    Notify,
    /// Secret comparisons (`crypto::secret-equals`).
    SecretChecks,
    /// Memories saved.
    MemorySaves,
    /// Memory searches.
    MemorySearches,
}

impl Spend {
    fn window(self) -> Duration {
        match self {
            Spend::Notify | Spend::MemorySaves => Duration::from_secs(3600),
            _ => Duration::from_secs(60),
        }
    }

    /// Why a use was refused: "more than N {what} this hour ([limits] …)".
    pub fn refusal(self, limits: &Limits, what: &str) -> String {
        let setting = match self {
            Spend::LogBytes => "log_kb_per_minute",
            Spend::AuditRecords => "audit_per_minute",
            Spend::Notify => "notify_per_hour",
            Spend::SecretChecks => "secret_checks_per_minute",
            Spend::MemorySaves => "memory_saves_per_hour",
            Spend::MemorySearches => "memory_searches_per_minute",
        };
        let per = if self.window() >= Duration::from_secs(3600) { "hour" } else { "minute" };
        format!("more than {} {what} this {per} ([limits] {setting})", self.limit(limits))
    }

    fn limit(self, limits: &Limits) -> u64 {
        match self {
            Spend::LogBytes => limits.log_kb_per_minute << 10,
            Spend::AuditRecords => limits.audit_per_minute,
            Spend::Notify => limits.notify_per_hour,
            Spend::SecretChecks => limits.secret_checks_per_minute,
            Spend::MemorySaves => limits.memory_saves_per_hour,
            Spend::MemorySearches => limits.memory_searches_per_minute,
        }
    }
}

/// One component's budget.
pub struct Budget {
    limits: Limits,
    windows: Mutex<HashMap<Spend, (Instant, u64)>>,
    /// Permits for calls running at once.
    pub running: Arc<Semaphore>,
    /// Bytes the calls running now may still write under `/data`: alive
    /// while one of them is.
    files_left: Mutex<Weak<AtomicU64>>,
}

impl Budget {
    /// A budget with the counters of `limits`.
    pub fn new(limits: &Limits) -> Self {
        Budget {
            limits: limits.clone(),
            windows: Mutex::default(),
            running: Arc::new(Semaphore::new(limits.concurrent_calls.max(1) as usize)),
            files_left: Mutex::default(),
        }
    }

    /// What this component's calls may still write under `/data`: the
    /// count of the calls running now, or, if none is, a new one of
    /// `measure()` bytes. A call holds it until it ends.
    pub fn files_left(&self, measure: impl FnOnce() -> u64) -> Arc<AtomicU64> {
        let mut shared = self.files_left.lock().unwrap();
        if let Some(left) = shared.upgrade() {
            return left;
        }
        let left = Arc::new(AtomicU64::new(measure()));
        *shared = Arc::downgrade(&left);
        left
    }

    /// Take `amount` of `what` if the current window has room.
    pub fn take(&self, what: Spend, amount: u64) -> bool {
        let mut windows = self.windows.lock().unwrap();
        let now = Instant::now();
        let (start, used) = windows.entry(what).or_insert((now, 0));
        if now.duration_since(*start) >= what.window() {
            *start = now;
            *used = 0;
        }
        if *used + amount > what.limit(&self.limits) {
            return false;
        }
        *used += amount;
        true
    }
}

/// The budgets of every component, by name.
#[derive(Default)]
pub struct Budgets {
    map: Mutex<HashMap<String, Arc<Budget>>>,
}

impl Budgets {
    /// The budget of `component`, created on first use.
    pub fn of(&self, component: &str, limits: &Limits) -> Arc<Budget> {
        self.map.lock().unwrap().entry(component.to_string()).or_insert_with(|| Arc::new(Budget::new(limits))).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_refuses_past_its_limit_and_refills_per_window() {
        let limits = Limits { audit_per_minute: 3, log_kb_per_minute: 1, ..Limits::default() };
        let budget = Budget::new(&limits);
        assert!((0..3).all(|_| budget.take(Spend::AuditRecords, 1)));
        assert!(!budget.take(Spend::AuditRecords, 1));
        assert!(budget.take(Spend::LogBytes, 1000) && !budget.take(Spend::LogBytes, 100), "1 KiB per minute");
        budget.windows.lock().unwrap().get_mut(&Spend::AuditRecords).unwrap().0 -= Duration::from_secs(61);
        assert!(budget.take(Spend::AuditRecords, 1), "a new window has room again");
    }
}
