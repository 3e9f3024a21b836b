//! Scheduled jobs as data: the job model, `parse_when`, and the jobs and
//! runs tables (the source of truth; the runner is `scheduler.rs`).
//!
//! Invariants:
//! - A fire is claimed in one write transaction (run record inserted, the
//!   job's next fire advanced) before anything runs, so one occurrence runs
//!   at most once: not across restarts, not after a crash, not when two
//!   ticks race.
//! - A run that was in progress when the process died is marked
//!   `interrupted` at start-up and never re-run.
//! - Each job keeps its newest [`RUNS_KEPT`] runs, each result at most
//!   [`RUN_OUTPUT_MAX`] bytes, so history is bounded however often it runs.
//! - The model adds a job only while fewer than [`JOBS_MAX`] exist,
//!   counted in the transaction that adds it, and every job has at most
//!   [`JOB_TEXT_MAX`] bytes of prompt or arguments: a model in a loop of
//!   `schedule_task` calls fills a list, not the disk or every tick's read.
//!   The owner's `cron add` is not counted against it.

use crate::cron::Cron;
use crate::store::{Store, StoreError, now_ms};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
/// (job id, fire time ms) → run record.
const RUNS: TableDefinition<(u64, i64), &[u8]> = TableDefinition::new("job_runs");
const SCHED_META: TableDefinition<&str, u64> = TableDefinition::new("scheduler_meta");
/// job id → a job the model cancelled ([`Cancelled`]), kept for the owner
/// to bring back.
const CANCELLED: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs_cancelled");
/// How long a job the model cancelled can be brought back.
pub const CANCELLED_DAYS: i64 = 30;

/// Runs kept per job, the newest: a job every second would otherwise fill
/// the disk, and every listing reads them all. Dropping old records never
/// lets an occurrence fire again: a claim needs the job's `next_ms`, which
/// only moves forward.
pub const RUNS_KEPT: usize = 100;
/// Jobs that may exist when the model adds one.
pub const JOBS_MAX: u64 = 200;
/// The longest prompt, or tool or check arguments, of a job.
pub const JOB_TEXT_MAX: usize = 16 * 1024;
/// The most of a run's result that is kept and delivered: a tool's result
/// may be `output_kb` (1 MiB), and a job may run every second.
pub const RUN_OUTPUT_MAX: usize = 16 * 1024;

/// How often a task the model schedules may ask the model: each run costs
/// tokens, and a model that meant "remind me every second" (or was talked
/// into it) would spend all day. One gated by a check may run its check
/// every [`MODEL_CHECKED_EVERY_MS`]. The owner's `cron add` is not held to
/// either.
pub const MODEL_PROMPT_EVERY_MS: i64 = 5 * 60_000;
/// How often a task the model schedules with a check may fire.
pub const MODEL_CHECKED_EVERY_MS: i64 = 60_000;

/// A fire later than this after its time counts as missed.
pub(crate) const GRACE_MS: i64 = 60_000;

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(JOBS)?;
    txn.open_table(RUNS)?;
    txn.open_table(SCHED_META)?;
    txn.open_table(CANCELLED)?;
    Ok(())
}

/// A job the model cancelled, kept for the owner to bring back.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cancelled {
    /// The job, as it was.
    pub job: Job,
    /// When the model cancelled it (Unix ms).
    pub cancelled_ms: i64,
}

/// When a job fires.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum When {
    /// A cron expression in a time zone.
    Cron {
        /// Five fields: minute hour day month weekday.
        expr: String,
        /// IANA time zone.
        tz: String,
    },
    /// At a fixed interval.
    Every {
        /// Seconds between fires.
        secs: u64,
    },
    /// Once.
    At {
        /// When (Unix ms).
        at_ms: i64,
    },
}

/// What a job does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// Wake the agent with this prompt in the target chat.
    Prompt {
        /// The prompt.
        text: String,
    },
    /// Call a tool directly; no model involved.
    Tool {
        /// The skill.
        skill: String,
        /// Its tool.
        tool: String,
        /// The arguments, a JSON object.
        args: String,
    },
}

impl Action {
    /// The name of a job that was given none: its tool, or its prompt's start.
    pub fn default_name(&self) -> String {
        match self {
            Action::Prompt { text } => crate::text::truncate(text, 40),
            Action::Tool { skill, tool, .. } => format!("{skill}.{tool}"),
        }
    }
}

/// What to do about fires missed while the host was down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Missed {
    /// Skip them (recurring jobs).
    Skip,
    /// Run once for all of them (one-shot jobs).
    RunOnce,
}

/// A cheap tool that decides whether a job wakes the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The skill.
    pub skill: String,
    /// Its tool.
    pub tool: String,
    /// The arguments, a JSON object.
    pub args: String,
}

/// A scheduled job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Its id.
    pub id: u64,
    /// A short name for lists.
    pub name: String,
    /// When it fires.
    pub when: When,
    /// What it does.
    pub action: Action,
    /// The session the result goes to, e.g. `terminal:default`.
    pub target: String,
    /// A check that must report something first.
    pub check: Option<Check>,
    /// What to do about missed fires.
    pub missed: Missed,
    /// None once a one-shot job has fired.
    pub next_ms: Option<i64>,
    /// When it was added (Unix ms).
    pub created_ms: i64,
    /// Made in a conversation that held untrusted content: its runs start
    /// untrusted too, so its prompt cannot write unasked after `/new`.
    #[serde(default)]
    pub untrusted: bool,
}

/// One fire of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// The job's id.
    pub job: u64,
    /// The time it was due (Unix ms).
    pub fire_ms: i64,
    /// When it started (Unix ms).
    pub started_ms: i64,
    /// When it finished (Unix ms).
    pub finished_ms: Option<i64>,
    /// How it went.
    pub status: RunStatus,
    /// Its result or error.
    pub output: String,
    /// Model tokens this run used (0 when the check kept the model asleep).
    pub tokens: u64,
    /// Whether the result reached its chat.
    pub delivered: bool,
}

/// How a run went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Claimed and under way (or the process died during it).
    Running,
    /// Done.
    Ok,
    /// The tool, the check or the model failed.
    Failed,
    /// The check said there was nothing to do; the model slept.
    Idle,
    /// Missed while the host was down, or its tool's build is not approved.
    Skipped,
    /// The process died while it ran; it is never re-run.
    Interrupted,
    /// It needed a question to the owner, which an unattended run cannot ask.
    Stopped,
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::text::variant_name(self))
    }
}

/// Why a job cannot be scheduled or read.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job is wrong (the text says how).
    #[error("{0}")]
    Invalid(String),
}

impl From<redb::Error> for ScheduleError {
    fn from(e: redb::Error) -> Self {
        ScheduleError::Store(StoreError::from(e))
    }
}

macro_rules! sched_errors {
    ($($t:ty),*) => {$(impl From<$t> for ScheduleError {
        fn from(e: $t) -> Self { ScheduleError::Store(StoreError::from(redb::Error::from(e))) }
    })*};
}
sched_errors!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

impl From<serde_json::Error> for ScheduleError {
    fn from(e: serde_json::Error) -> Self {
        ScheduleError::Store(StoreError::Corrupt(e))
    }
}

/// The longest interval of an `every` job.
const MAX_INTERVAL_S: u64 = 100 * 366 * 86_400;

/// Parse the human forms: `every 10m` / `every 2h` / `every 30s` / `every 1d`,
/// `at 2026-12-01T08:00` (local to `tz`) or an RFC 3339 instant, or a cron
/// expression.
pub fn parse_when(spec: &str, tz: &str) -> Result<When, ScheduleError> {
    let spec = spec.trim();
    let bad = |m: String| ScheduleError::Invalid(m);
    TimeZone::get(tz).map_err(|_| bad(format!("unknown time zone `{tz}` (use an IANA name like Europe/Berlin)")))?;
    if let Some(every) = spec.strip_prefix("every ") {
        let every = every.trim();
        let (n, unit) = every.split_at(every.find(|c: char| !c.is_ascii_digit()).unwrap_or(every.len()));
        let n: u64 = n.parse().map_err(|_| bad(format!("`{spec}`: say e.g. `every 10m`, `every 2h`")))?;
        let unit = match unit.trim() {
            "s" | "sec" | "secs" | "seconds" => 1,
            "m" | "min" | "mins" | "minutes" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            other => return Err(bad(format!("`{other}` is not a unit: use s, m, h or d"))),
        };
        // Bounded so that every later sum of times fits (the model writes
        // these too): past the bound it would wrap to an interval of a
        // millisecond.
        let Some(secs) = n.checked_mul(unit).filter(|s| *s <= MAX_INTERVAL_S) else {
            return Err(bad(format!("`{spec}`: an interval is at most 100 years")));
        };
        if secs == 0 {
            return Err(bad("an interval must be at least one second".into()));
        }
        return Ok(When::Every { secs });
    }
    if let Some(at) = spec.strip_prefix("at ") {
        let at = at.trim();
        let instant = at.parse::<Timestamp>().or_else(|_| {
            at.parse::<jiff::civil::DateTime>()
                .map_err(|e| bad(format!("`{at}` is not a time like 2026-12-01T08:00: {e}")))
                .and_then(|dt| {
                    dt.to_zoned(TimeZone::get(tz).unwrap()).map(|z| z.timestamp()).map_err(|e| bad(e.to_string()))
                })
        })?;
        return Ok(When::At { at_ms: instant.as_millisecond() });
    }
    let expr = spec.strip_prefix("cron ").unwrap_or(spec);
    expr.parse::<Cron>().map_err(|e| bad(e.to_string()))?;
    Ok(When::Cron { expr: expr.to_string(), tz: tz.to_string() })
}

impl When {
    /// The first fire strictly after `after_ms`; `anchor_ms` anchors intervals.
    pub fn next_after(&self, after_ms: i64, anchor_ms: i64) -> Option<i64> {
        match self {
            When::At { at_ms } => (*at_ms > after_ms).then_some(*at_ms),
            // The grid runs both ways from its anchor: a job made while
            // the clock was ahead still fires once it is put right.
            When::Every { secs } => {
                let step = (*secs as i64 * 1000).max(1);
                Some(anchor_ms + ((after_ms - anchor_ms).div_euclid(step) + 1) * step)
            }
            When::Cron { expr, tz } => {
                let cron: Cron = expr.parse().ok()?;
                let tz = TimeZone::get(tz).ok()?;
                cron.next_after(Timestamp::from_millisecond(after_ms).ok()?, &tz).map(|t| t.as_millisecond())
            }
        }
    }

    /// The shortest gap between its next `fires` fires after `after_ms`
    /// (None for a schedule that fires once, or not at all).
    pub fn shortest_gap_ms(&self, after_ms: i64, fires: usize) -> Option<i64> {
        let mut at = self.next_after(after_ms, after_ms)?;
        let mut gap = None::<i64>;
        for _ in 1..fires {
            let Some(next) = self.next_after(at, after_ms) else { break };
            gap = Some(gap.map_or(next - at, |g| g.min(next - at)));
            at = next;
        }
        gap
    }

    /// The schedule in words.
    pub fn describe(&self) -> String {
        match self {
            When::Cron { expr, tz } => format!("cron `{expr}` ({tz})"),
            // In the largest unit that divides it, as it is written.
            When::Every { secs } => {
                let unit = [(86_400, "d"), (3600, "h"), (60, "m")].into_iter().find(|(n, _)| secs % n == 0);
                let (n, unit) = unit.map_or((*secs, "s"), |(n, unit)| (secs / n, unit));
                format!("every {n}{unit}")
            }
            When::At { at_ms } => {
                format!("at {}", Timestamp::from_millisecond(*at_ms).map(|t| t.to_string()).unwrap_or_default())
            }
        }
    }
}

impl Store {
    /// Store a new job (its id is assigned here); `bounded` (the model's)
    /// only while fewer than [`JOBS_MAX`] exist.
    pub fn job_add(&self, mut job: Job, bounded: bool) -> Result<Job, ScheduleError> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(SCHED_META)?;
            let id = meta.get("next_job")?.map(|v| v.value()).unwrap_or(1);
            meta.insert("next_job", id + 1)?;
            job.id = id;
            let mut jobs = txn.open_table(JOBS)?;
            if bounded && jobs.len()? >= JOBS_MAX {
                return Err(ScheduleError::Invalid(format!(
                    "{JOBS_MAX} jobs are scheduled already; remove one first (`wasiclaw cron list`, `wasiclaw cron rm ID`)"
                )));
            }
            jobs.insert(id, serde_json::to_vec(&job)?.as_slice())?;
        }
        self.commit(txn)?;
        Ok(job)
    }

    /// Every job.
    pub fn jobs(&self) -> Result<Vec<Job>, ScheduleError> {
        Ok(self.all_records(JOBS)?)
    }

    /// Remove a job (or one the model cancelled) for good: the owner's
    /// removal. False if there is none.
    pub fn job_remove(&self, id: u64) -> Result<bool, ScheduleError> {
        let txn = self.db.begin_write()?;
        let found = txn.open_table(JOBS)?.remove(id)?.is_some() || txn.open_table(CANCELLED)?.remove(id)?.is_some();
        self.commit(txn)?;
        Ok(found)
    }

    /// The model's cancel: the job stops firing but is kept
    /// [`CANCELLED_DAYS`] days for `job_restore`; older ones are dropped
    /// in the same commit. False if there is none.
    pub fn job_set_aside(&self, id: u64) -> Result<bool, ScheduleError> {
        let txn = self.db.begin_write()?;
        let Some(bytes) = txn.open_table(JOBS)?.remove(id)?.map(|v| v.value().to_vec()) else { return Ok(false) };
        {
            let record = Cancelled { job: serde_json::from_slice(&bytes)?, cancelled_ms: now_ms() };
            let cutoff = record.cancelled_ms - CANCELLED_DAYS * 24 * 3600 * 1000;
            let mut aside = txn.open_table(CANCELLED)?;
            aside.retain(|_, v| serde_json::from_slice::<Cancelled>(v).is_ok_and(|c| c.cancelled_ms >= cutoff))?;
            aside.insert(id, serde_json::to_vec(&record)?.as_slice())?;
        }
        self.commit(txn)?;
        Ok(true)
    }

    /// What the model cancelled, oldest first.
    pub fn jobs_cancelled(&self) -> Result<Vec<Cancelled>, ScheduleError> {
        let mut all: Vec<Cancelled> = self.all_records(CANCELLED)?;
        all.sort_by_key(|c| c.cancelled_ms);
        Ok(all)
    }

    /// Bring back a job the model cancelled, firing next after `now_ms`
    /// (fires missed meanwhile are not made up); None if none is kept
    /// under `id`.
    pub fn job_restore(&self, id: u64, now_ms: i64) -> Result<Option<Job>, ScheduleError> {
        let txn = self.db.begin_write()?;
        let Some(bytes) = txn.open_table(CANCELLED)?.remove(id)?.map(|v| v.value().to_vec()) else { return Ok(None) };
        let mut job = serde_json::from_slice::<Cancelled>(&bytes)?.job;
        job.next_ms = job.next_ms.and_then(|_| job.when.next_after(now_ms, job.created_ms));
        txn.open_table(JOBS)?.insert(id, serde_json::to_vec(&job)?.as_slice())?;
        self.commit(txn)?;
        Ok(Some(job))
    }

    /// Runs of one job (or all), newest first.
    pub fn runs(&self, job: Option<u64>, limit: usize) -> Result<Vec<Run>, ScheduleError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RUNS)?;
        let entries = match job {
            Some(j) => table.range((j, i64::MIN)..=(j, i64::MAX))?,
            None => table.iter()?,
        };
        let mut out: Vec<Run> = Vec::new();
        for entry in entries {
            out.push(serde_json::from_slice(entry?.1.value())?);
        }
        out.sort_by_key(|r| std::cmp::Reverse((r.started_ms, r.fire_ms)));
        out.truncate(limit);
        Ok(out)
    }

    /// Claim one occurrence: insert its run record and advance the job, in
    /// one transaction. None if it was already claimed or the job changed.
    pub fn claim(
        &self,
        job_id: u64,
        fire_ms: i64,
        now_ms: i64,
        status: RunStatus,
    ) -> Result<Option<Job>, ScheduleError> {
        let txn = self.db.begin_write()?;
        let claimed = {
            let mut jobs = txn.open_table(JOBS)?;
            let mut runs = txn.open_table(RUNS)?;
            let job: Option<Job> = match jobs.get(job_id)? {
                Some(v) => Some(serde_json::from_slice(v.value())?),
                None => None,
            };
            match job {
                Some(mut job) if job.next_ms == Some(fire_ms) && runs.get((job_id, fire_ms))?.is_none() => {
                    let run = Run {
                        job: job_id,
                        fire_ms,
                        started_ms: now_ms,
                        finished_ms: None,
                        status,
                        output: String::new(),
                        tokens: 0,
                        delivered: false,
                    };
                    runs.insert((job_id, fire_ms), serde_json::to_vec(&run)?.as_slice())?;
                    // After downtime, the next fire is the next one after now.
                    job.next_ms = job.when.next_after(fire_ms.max(now_ms), job.created_ms);
                    jobs.insert(job_id, serde_json::to_vec(&job)?.as_slice())?;
                    Some(job)
                }
                _ => None,
            }
        };
        self.commit(txn)?;
        Ok(claimed)
    }

    /// Move job `id`'s next fire from `from` to `to`, if it is still
    /// `from` (a claim may have moved it meanwhile).
    pub fn move_next(&self, id: u64, from: i64, to: i64) -> Result<bool, ScheduleError> {
        let mut moved = false;
        self.update_record(JOBS, id, |job: &mut Job| {
            if job.next_ms == Some(from) {
                job.next_ms = Some(to);
                moved = true;
            }
        })?;
        Ok(moved)
    }

    /// Record how a claimed run ended.
    pub fn finish_run(&self, run: &Run) -> Result<(), ScheduleError> {
        let txn = self.db.begin_write()?;
        {
            let mut runs = txn.open_table(RUNS)?;
            runs.insert((run.job, run.fire_ms), serde_json::to_vec(run)?.as_slice())?;
            let old = runs
                .range((run.job, i64::MIN)..=(run.job, i64::MAX))?
                .rev()
                .skip(RUNS_KEPT)
                .map(|e| e.map(|(k, _)| k.value()))
                .collect::<Result<Vec<_>, _>>()?;
            for key in old {
                runs.remove(key)?;
            }
        }
        self.commit(txn)?;
        Ok(())
    }

    /// At start-up: runs left `running` by a crash become `interrupted`.
    pub fn interrupt_stale_runs(&self) -> Result<usize, ScheduleError> {
        let stale: Vec<Run> =
            self.runs(None, usize::MAX)?.into_iter().filter(|r| r.status == RunStatus::Running).collect();
        for mut run in stale.iter().cloned() {
            run.status = RunStatus::Interrupted;
            run.output = "the process stopped during this run; it is not repeated".into();
            self.finish_run(&run)?;
        }
        Ok(stale.len())
    }
}

impl Store {
    /// Make a job due now (for `cron run-now`); false if there is no such job.
    pub fn job_due_now(&self, id: u64, now_ms: i64) -> Result<bool, ScheduleError> {
        Ok(self.update_record(JOBS, id, |job: &mut Job| job.next_ms = Some(now_ms))?)
    }
}

/// What `wasiclaw cron add` and the `schedule_task` tool ask for.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NewJob {
    /// `every 10m`, `at 2026-12-01T08:00`, or a cron expression.
    pub when: String,
    /// IANA time zone for cron expressions and local `at` times.
    pub tz: String,
    /// A prompt for the agent.
    pub prompt: Option<String>,
    /// `SKILL.TOOL`, instead of a prompt.
    pub tool: Option<String>,
    /// The tool's arguments, a JSON object.
    pub args: Option<String>,
    /// The session the result goes to.
    pub chat: String,
    /// `SKILL.TOOL` of a check that decides whether to wake the model.
    pub check: Option<String>,
    /// The check's arguments, a JSON object.
    pub check_args: Option<String>,
    /// What to do about missed fires.
    pub missed: Option<Missed>,
    /// A short name for lists.
    pub name: Option<String>,
    /// Asked for in a conversation that held untrusted content.
    #[serde(default)]
    pub untrusted: bool,
    /// Asked for by the model (`schedule_task`): held to [`JOBS_MAX`].
    #[serde(skip)]
    pub by_model: bool,
}

pub(crate) fn tool_ref(spec: &str) -> Result<(String, String), ScheduleError> {
    spec.split_once('.')
        .map(|(s, t)| (s.to_string(), t.to_string()))
        .ok_or_else(|| ScheduleError::Invalid(format!("`{spec}` is not SKILL.TOOL, e.g. weather.current")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the model cancelled is kept [`CANCELLED_DAYS`] days, not for
    /// ever; a one-shot job that already fired comes back done.
    #[test]
    fn what_the_model_cancelled_is_kept_a_month() {
        let dir = tempfile::tempdir().unwrap();
        let db = Store::open(&dir.path().join("db"), &[create_tables]).unwrap();
        let job = |when: When, next_ms| Job {
            id: 0,
            name: "j".into(),
            when,
            action: Action::Prompt { text: "p".into() },
            target: "terminal:default".into(),
            check: None,
            missed: Missed::Skip,
            next_ms,
            created_ms: 0,
            untrusted: false,
        };
        let fired = db.job_add(job(When::At { at_ms: 1_000 }, None), false).unwrap();
        let hourly = db.job_add(job(When::Every { secs: 3600 }, Some(3_600_000)), false).unwrap();
        assert!(db.job_set_aside(fired.id).unwrap() && db.job_set_aside(hourly.id).unwrap());
        assert_eq!(db.job_restore(fired.id, 10_000_000).unwrap().unwrap().next_ms, None);
        assert_eq!(db.job_restore(hourly.id, 10_000_000).unwrap().unwrap().next_ms, Some(10_800_000));
        assert!(db.job_set_aside(fired.id).unwrap());
        // Cancelled a day more than it is kept.
        let age = |c: &mut Cancelled| c.cancelled_ms -= (CANCELLED_DAYS + 1) * 24 * 3600 * 1000;
        assert!(db.update_record(CANCELLED, fired.id, age).unwrap());
        assert!(db.job_set_aside(hourly.id).unwrap());
        let kept: Vec<u64> = db.jobs_cancelled().unwrap().iter().map(|c| c.job.id).collect();
        assert_eq!(kept, vec![hourly.id]);
    }

    #[test]
    fn human_schedules() {
        assert_eq!(parse_when("every 10m", "UTC").unwrap(), When::Every { secs: 600 });
        assert_eq!(parse_when("every 2 hours", "UTC").unwrap(), When::Every { secs: 7200 });
        // One that would overflow a sum of times is refused, not wrapped.
        for huge in ["every 18446744073709551615d", "every 10000000000000000s", "every 40000y"] {
            assert!(parse_when(huge, "UTC").is_err(), "{huge}");
        }
        assert_eq!(parse_when("every 36500d", "UTC").unwrap(), When::Every { secs: 36500 * 86_400 });
        assert!(parse_when("every 0s", "UTC").is_err());
        assert!(parse_when("every 5 fortnights", "UTC").is_err());
        let at = parse_when("at 2026-12-01T08:00", "Europe/Berlin").unwrap();
        assert_eq!(at, When::At { at_ms: "2026-12-01T07:00:00Z".parse::<Timestamp>().unwrap().as_millisecond() });
        assert!(matches!(parse_when("0 8 * * 1-5", "Europe/Berlin").unwrap(), When::Cron { .. }));
        assert!(parse_when("0 8 * *", "UTC").is_err());
        assert!(parse_when("every 1m", "Mars/Base").is_err());
    }
}
