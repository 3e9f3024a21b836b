//! Counters for `/metrics` (Prometheus text format): tool calls and their
//! time, host denials, job runs. Plain atomics, bumped where the work
//! happens; the gateway renders them with what the database and the
//! channel board already know (tokens, components, messages).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The daemon's counters since it started.
#[derive(Default)]
pub struct Metrics {
    tool_calls_ok: AtomicU64,
    tool_calls_failed: AtomicU64,
    tool_call_micros: AtomicU64,
    denials: AtomicU64,
    job_runs: AtomicU64,
}

impl Metrics {
    /// Count a finished tool call.
    pub fn tool_call(&self, ok: bool, took: Duration, denials: usize) {
        let calls = if ok { &self.tool_calls_ok } else { &self.tool_calls_failed };
        calls.fetch_add(1, Relaxed);
        self.tool_call_micros.fetch_add(took.as_micros() as u64, Relaxed);
        self.denials.fetch_add(denials as u64, Relaxed);
    }

    /// Count a finished job run.
    pub fn job_run(&self) {
        self.job_runs.fetch_add(1, Relaxed);
    }

    /// The counters in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let (ok, failed) = (self.tool_calls_ok.load(Relaxed), self.tool_calls_failed.load(Relaxed));
        let secs = self.tool_call_micros.load(Relaxed) as f64 / 1e6;
        let _ = write!(
            out,
            "# HELP wasiclaw_tool_calls_total Tool calls, by outcome.\n# TYPE wasiclaw_tool_calls_total counter\n\
             wasiclaw_tool_calls_total{{outcome=\"ok\"}} {ok}\nwasiclaw_tool_calls_total{{outcome=\"failed\"}} {failed}\n\
             # HELP wasiclaw_tool_call_seconds Time in tool calls.\n# TYPE wasiclaw_tool_call_seconds summary\n\
             wasiclaw_tool_call_seconds_sum {secs}\nwasiclaw_tool_call_seconds_count {}\n\
             # HELP wasiclaw_denials_total Capability uses the host refused.\n# TYPE wasiclaw_denials_total counter\n\
             wasiclaw_denials_total {}\n\
             # HELP wasiclaw_job_runs_total Scheduled job runs.\n# TYPE wasiclaw_job_runs_total counter\n\
             wasiclaw_job_runs_total {}\n",
            ok + failed,
            self.denials.load(Relaxed),
            self.job_runs.load(Relaxed),
        );
    }
}
