//! Scheduled work: jobs in redb (the source of truth), claimed before
//! they run, with a missed-run policy after downtime and an optional cheap
//! check skill that decides whether the model wakes up at all.
//!
//! Invariants:
//! - A fire is claimed in one write transaction (run record inserted, the
//!   job's next fire advanced) before anything runs, so one occurrence runs
//!   at most once: not across restarts, not after a crash, not when two
//!   ticks race.
//! - A run that was in progress when the process died is marked
//!   `interrupted` at start-up and never re-run.
//! - `tick(now)` is the whole scheduling step; the daemon calls it with the
//!   real clock, tests with any clock they like.

use crate::agent::Agent;
use crate::cron::Cron;
use crate::store::{Store, StoreError};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
/// (job id, fire time ms) → run record.
const RUNS: TableDefinition<(u64, i64), &[u8]> = TableDefinition::new("job_runs");
const SCHED_META: TableDefinition<&str, u64> = TableDefinition::new("scheduler_meta");

/// A fire later than this after its time counts as missed.
const GRACE_MS: i64 = 60_000;

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(JOBS)?;
    txn.open_table(RUNS)?;
    txn.open_table(SCHED_META)?;
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum When {
    Cron { expr: String, tz: String },
    Every { secs: u64 },
    At { at_ms: i64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// Wake the agent with this prompt in the target chat.
    Prompt { text: String },
    /// Call a tool directly; no model involved.
    Tool { skill: String, tool: String, args: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Missed {
    Skip,
    RunOnce,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub skill: String,
    pub tool: String,
    pub args: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    pub name: String,
    pub when: When,
    pub action: Action,
    /// The session the result goes to, e.g. `terminal:default`.
    pub target: String,
    pub check: Option<Check>,
    pub missed: Missed,
    /// None once a one-shot job has fired.
    pub next_ms: Option<i64>,
    pub created_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub job: u64,
    pub fire_ms: i64,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    /// running, ok, failed, idle (the check said nothing to do), skipped,
    /// interrupted.
    pub status: String,
    pub output: String,
    /// Model tokens this run used (0 when the check kept the model asleep).
    pub tokens: u64,
    pub delivered: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

impl From<redb::Error> for ScheduleError {
    fn from(e: redb::Error) -> Self {
        ScheduleError::Store(StoreError::Db(e))
    }
}

macro_rules! sched_errors {
    ($($t:ty),*) => {$(impl From<$t> for ScheduleError {
        fn from(e: $t) -> Self { ScheduleError::Store(StoreError::Db(e.into())) }
    })*};
}
sched_errors!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

impl From<serde_json::Error> for ScheduleError {
    fn from(e: serde_json::Error) -> Self {
        ScheduleError::Store(StoreError::Corrupt(e))
    }
}

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
        let secs = match unit.trim() {
            "s" | "sec" | "secs" | "seconds" => n,
            "m" | "min" | "mins" | "minutes" => n * 60,
            "h" | "hour" | "hours" => n * 3600,
            "d" | "day" | "days" => n * 86_400,
            other => return Err(bad(format!("`{other}` is not a unit: use s, m, h or d"))),
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
            When::Every { secs } => {
                let step = *secs as i64 * 1000;
                let k = if after_ms < anchor_ms { 0 } else { (after_ms - anchor_ms) / step + 1 };
                Some(anchor_ms + k * step)
            }
            When::Cron { expr, tz } => {
                let cron: Cron = expr.parse().ok()?;
                let tz = TimeZone::get(tz).ok()?;
                cron.next_after(Timestamp::from_millisecond(after_ms).ok()?, &tz).map(|t| t.as_millisecond())
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            When::Cron { expr, tz } => format!("cron `{expr}` ({tz})"),
            When::Every { secs } => format!("every {secs}s"),
            When::At { at_ms } => {
                format!("at {}", Timestamp::from_millisecond(*at_ms).map(|t| t.to_string()).unwrap_or_default())
            }
        }
    }
}

impl Store {
    pub fn job_add(&self, mut job: Job) -> Result<Job, ScheduleError> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(SCHED_META)?;
            let id = meta.get("next_job")?.map(|v| v.value()).unwrap_or(1);
            meta.insert("next_job", id + 1)?;
            job.id = id;
            txn.open_table(JOBS)?.insert(id, serde_json::to_vec(&job)?.as_slice())?;
        }
        txn.commit()?;
        Ok(job)
    }

    pub fn jobs(&self) -> Result<Vec<Job>, ScheduleError> {
        Ok(self.all_records(JOBS)?)
    }

    pub fn job_remove(&self, id: u64) -> Result<bool, ScheduleError> {
        let txn = self.db.begin_write()?;
        let found = txn.open_table(JOBS)?.remove(id)?.is_some();
        txn.commit()?;
        Ok(found)
    }

    /// Runs of one job (or all), newest first.
    pub fn runs(&self, job: Option<u64>, limit: usize) -> Result<Vec<Run>, ScheduleError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RUNS)?;
        let mut out: Vec<Run> = Vec::new();
        for entry in table.iter()? {
            let run: Run = serde_json::from_slice(entry?.1.value())?;
            if job.is_none_or(|j| j == run.job) {
                out.push(run);
            }
        }
        out.sort_by_key(|r| std::cmp::Reverse((r.started_ms, r.fire_ms)));
        out.truncate(limit);
        Ok(out)
    }

    /// Claim one occurrence: insert its run record and advance the job, in
    /// one transaction. None if it was already claimed or the job changed.
    pub fn claim(&self, job_id: u64, fire_ms: i64, now_ms: i64, status: &str) -> Result<Option<Job>, ScheduleError> {
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
                        status: status.into(),
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
        txn.commit()?;
        Ok(claimed)
    }

    pub fn finish_run(&self, run: &Run) -> Result<(), ScheduleError> {
        let txn = self.db.begin_write()?;
        txn.open_table(RUNS)?.insert((run.job, run.fire_ms), serde_json::to_vec(run)?.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// At start-up: runs left `running` by a crash become `interrupted`.
    pub fn interrupt_stale_runs(&self) -> Result<usize, ScheduleError> {
        let stale: Vec<Run> = self.runs(None, usize::MAX)?.into_iter().filter(|r| r.status == "running").collect();
        for mut run in stale.iter().cloned() {
            run.status = "interrupted".into();
            run.output = "the process stopped during this run; it is not repeated".into();
            self.finish_run(&run)?;
        }
        Ok(stale.len())
    }
}

/// Whether a check skill's output says there is something to do.
fn check_says_wake(output: &str) -> bool {
    let t = output.trim();
    match serde_json::from_str::<serde_json::Value>(t) {
        Ok(serde_json::Value::Bool(b)) => b,
        Ok(serde_json::Value::Null) => false,
        Ok(serde_json::Value::Object(o)) => o.get("wake").and_then(|w| w.as_bool()).unwrap_or(true),
        Ok(serde_json::Value::Array(a)) => !a.is_empty(),
        _ => !(t.is_empty() || t.eq_ignore_ascii_case("no") || t.eq_ignore_ascii_case("false")),
    }
}

pub struct Scheduler<'a> {
    pub agent: &'a Agent,
}

impl Scheduler<'_> {
    fn db(&self) -> &Store {
        &self.agent.rt.db
    }

    /// One scheduling step at `now`: every due job is claimed and run.
    /// Returns the runs it finished.
    pub async fn tick(&self, now: Timestamp) -> Result<Vec<Run>, ScheduleError> {
        let now_ms = now.as_millisecond();
        let mut done = Vec::new();
        for job in self.db().jobs()? {
            let Some(fire) = job.next_ms.filter(|f| *f <= now_ms) else { continue };
            let missed = now_ms - fire > GRACE_MS;
            if missed && job.missed == Missed::Skip {
                if self.db().claim(job.id, fire, now_ms, "skipped")?.is_some() {
                    let run = Run {
                        job: job.id,
                        fire_ms: fire,
                        started_ms: now_ms,
                        finished_ms: Some(now_ms),
                        status: "skipped".into(),
                        output: "missed while wasiclaw was not running (policy: skip)".into(),
                        tokens: 0,
                        delivered: false,
                    };
                    self.db().finish_run(&run)?;
                    done.push(run);
                }
                continue;
            }
            if self.db().claim(job.id, fire, now_ms, "running")?.is_none() {
                continue;
            }
            done.push(self.execute(&job, fire, now_ms).await?);
        }
        Ok(done)
    }

    /// Run a claimed occurrence and record the outcome.
    async fn execute(&self, job: &Job, fire_ms: i64, started_ms: i64) -> Result<Run, ScheduleError> {
        let rt = &self.agent.rt;
        let mut run = Run {
            job: job.id,
            fire_ms,
            started_ms,
            finished_ms: None,
            status: "ok".into(),
            output: String::new(),
            tokens: 0,
            delivered: false,
        };
        let mut prompt_extra = String::new();
        // Unattended runs use only builds the owner approved: a swapped
        // component waits for `skills approve` instead of running on a schedule.
        let unapproved = job
            .check
            .iter()
            .map(|c| &c.skill)
            .chain(match &job.action {
                Action::Tool { skill, .. } => Some(skill),
                Action::Prompt { .. } => None,
            })
            .find(|skill| !rt.approved(skill));
        if let Some(skill) = unapproved {
            run.status = "skipped".into();
            run.output = format!("{skill} is not an approved build; run `wasiclaw skills approve {skill}`");
        }
        if let Some(check) = job.check.as_ref().filter(|_| run.status == "ok") {
            let out = rt.call_tool(&check.skill, &check.tool, &check.args).await;
            match out {
                Ok(o) if o.ok && !check_says_wake(&o.output) => {
                    run.status = "idle".into();
                    run.output = format!("check {}.{}: nothing to do", check.skill, check.tool);
                }
                Ok(o) if o.ok => {
                    prompt_extra = format!("\n\nThe check {}.{} reported:\n{}", check.skill, check.tool, o.output)
                }
                Ok(o) => {
                    run.status = "failed".into();
                    run.output = format!("check failed: {o}");
                }
                Err(e) => {
                    run.status = "failed".into();
                    run.output = format!("check failed: {e}");
                }
            }
        }
        if run.status == "ok" {
            match &job.action {
                Action::Prompt { .. } if !self.agent.has_model() => {
                    run.status = "skipped".into();
                    run.output = format!("no model to ask: {}", self.agent.no_model());
                }
                Action::Prompt { text } => {
                    let before = rt.db.session(&job.target)?.usage.tokens();
                    let prompt = format!("[scheduled task #{} \"{}\"] {text}{prompt_extra}", job.id, job.name);
                    // Nobody is there to answer a question: a call that needs
                    // one stops the run, and the record says why.
                    match self.agent.turn_as(&job.target, &prompt, &crate::agent::Who::Unattended, &|_| {}).await {
                        Ok(reply) => {
                            if reply.stopped.is_some() {
                                run.status = "stopped".into();
                            }
                            run.output = reply.text;
                        }
                        Err(e) => {
                            run.status = "failed".into();
                            run.output = e.to_string();
                        }
                    }
                    run.tokens = rt.db.session(&job.target)?.usage.tokens().saturating_sub(before);
                }
                Action::Tool { skill, tool, args } => match rt.call_tool(skill, tool, args).await {
                    Ok(o) => {
                        run.status = if o.ok { "ok" } else { "failed" }.into();
                        run.output = o.to_string();
                    }
                    Err(e) => {
                        run.status = "failed".into();
                        run.output = e.to_string();
                    }
                },
            }
        }
        if run.status != "idle" {
            run.delivered = self.deliver(job, &run.output);
        }
        run.finished_ms = Some(jiff::Timestamp::now().as_millisecond());
        self.db().finish_run(&run)?;
        Ok(run)
    }

    /// Deliver a result: to the job's chat when it is a channel chat
    /// (queued in the channel outbox, which retries), otherwise to the
    /// notification outbox (`wasiclaw notifications`) and the owner's chat.
    fn deliver(&self, job: &Job, text: &str) -> bool {
        let rt = &self.agent.rt;
        let message = format!("[{} → {}] {text}", job.name, job.target);
        for attempt in 1..=3 {
            let delivered = crate::channels::deliver(rt, &job.target, text).and_then(|done| {
                if done {
                    return Ok(());
                }
                rt.db.notify(&format!("job:{}", job.id), &message)?;
                if let Some(owner) = crate::channels::owner_chat(rt.config.agent.owner_chat.as_deref(), &rt.db) {
                    crate::channels::deliver(rt, &owner, &message)?;
                }
                Ok(())
            });
            match delivered {
                Ok(()) => return true,
                Err(e) => tracing::warn!("delivering job {} failed (attempt {attempt}): {e}", job.id),
            }
        }
        false
    }

    /// The daemon's loop: tick at every due time, at least once a minute,
    /// and whenever a job is added (`Runtime::schedule_changed`).
    pub async fn run(&self) {
        let wake = self.agent.rt.schedule_changed.clone();
        match self.db().interrupt_stale_runs() {
            Ok(0) => {}
            Ok(n) => tracing::warn!("{n} scheduled run(s) were interrupted by a stop; they are not repeated"),
            Err(e) => tracing::error!("scheduler: {e}"),
        }
        loop {
            if let Err(e) = self.tick(Timestamp::now()).await {
                tracing::error!("scheduler: {e}");
            }
            let now = Timestamp::now().as_millisecond();
            let next = self.db().jobs().unwrap_or_default().iter().filter_map(|j| j.next_ms).min();
            let wait = next.map(|n| (n - now).clamp(0, 60_000)).unwrap_or(60_000) as u64;
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {}
                _ = wake.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_schedules() {
        assert_eq!(parse_when("every 10m", "UTC").unwrap(), When::Every { secs: 600 });
        assert_eq!(parse_when("every 2 hours", "UTC").unwrap(), When::Every { secs: 7200 });
        assert!(parse_when("every 0s", "UTC").is_err());
        assert!(parse_when("every 5 fortnights", "UTC").is_err());
        let at = parse_when("at 2026-12-01T08:00", "Europe/Berlin").unwrap();
        assert_eq!(at, When::At { at_ms: "2026-12-01T07:00:00Z".parse::<Timestamp>().unwrap().as_millisecond() });
        assert!(matches!(parse_when("0 8 * * 1-5", "Europe/Berlin").unwrap(), When::Cron { .. }));
        assert!(parse_when("0 8 * *", "UTC").is_err());
        assert!(parse_when("every 1m", "Mars/Base").is_err());
    }

    #[test]
    fn checks() {
        for quiet in ["false", "null", "[]", "{\"wake\":false}", "", "no"] {
            assert!(!check_says_wake(quiet), "{quiet}");
        }
        for wake in ["true", "[1]", "{\"new\":3}", "2 new mails"] {
            assert!(check_says_wake(wake), "{wake}");
        }
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
    pub prompt: Option<String>,
    /// `SKILL.TOOL`, instead of a prompt.
    pub tool: Option<String>,
    pub args: Option<String>,
    /// The session the result goes to.
    pub chat: String,
    /// `SKILL.TOOL` of a check that decides whether to wake the model.
    pub check: Option<String>,
    pub check_args: Option<String>,
    pub missed: Option<Missed>,
    pub name: Option<String>,
}

fn tool_ref(spec: &str) -> Result<(String, String), ScheduleError> {
    spec.split_once('.')
        .map(|(s, t)| (s.to_string(), t.to_string()))
        .ok_or_else(|| ScheduleError::Invalid(format!("`{spec}` is not SKILL.TOOL, e.g. weather.current")))
}

impl crate::runtime::Runtime {
    /// Validate and store a job; the scheduler picks it up at once.
    pub fn schedule(&self, new: NewJob, now_ms: i64) -> Result<Job, ScheduleError> {
        let tz = if new.tz.is_empty() { "UTC".to_string() } else { new.tz.clone() };
        let when = parse_when(&new.when, &tz)?;
        let args = |a: &Option<String>| -> Result<String, ScheduleError> {
            let a = a.clone().unwrap_or_else(|| "{}".into());
            match serde_json::from_str::<serde_json::Value>(&a) {
                Ok(serde_json::Value::Object(_)) => Ok(a),
                _ => Err(ScheduleError::Invalid(format!("arguments must be a JSON object: {a}"))),
            }
        };
        // A job that names a tool nobody installed would fail at every run.
        let exists = |spec: &str| -> Result<(String, String), ScheduleError> {
            let (skill, tool) = tool_ref(spec)?;
            let loaded = self.registry.find(&skill).and_then(|e| e.loaded.ok());
            match loaded {
                Some(l) if l.manifest.tools.iter().any(|t| t.name == tool) => Ok((skill, tool)),
                Some(l) => {
                    let has: Vec<&str> = l.manifest.tools.iter().map(|t| t.name.as_str()).collect();
                    Err(ScheduleError::Invalid(format!(
                        "skill `{skill}` has no tool `{tool}`; it has: {}",
                        has.join(", ")
                    )))
                }
                None => Err(ScheduleError::Invalid(format!(
                    "no skill `{skill}` is loaded; install it first (`wasiclaw skills list` shows what is)"
                ))),
            }
        };
        let action = match (&new.prompt, &new.tool) {
            (Some(text), None) if !text.trim().is_empty() => Action::Prompt { text: text.clone() },
            (None, Some(spec)) => {
                let (skill, tool) = exists(spec)?;
                Action::Tool { skill, tool, args: args(&new.args)? }
            }
            _ => return Err(ScheduleError::Invalid("give a job either a prompt or a tool (SKILL.TOOL)".into())),
        };
        let check = match &new.check {
            Some(spec) => {
                let (skill, tool) = exists(spec)?;
                Some(Check { skill, tool, args: args(&new.check_args)? })
            }
            None => None,
        };
        let next_ms = when.next_after(now_ms, now_ms);
        if next_ms.is_none() {
            return Err(ScheduleError::Invalid(format!("{} never fires after now", when.describe())));
        }
        let missed = new.missed.unwrap_or(if matches!(when, When::At { .. }) { Missed::RunOnce } else { Missed::Skip });
        let name = new.name.clone().unwrap_or_else(|| match &action {
            Action::Prompt { text } => crate::text::truncate(text, 40),
            Action::Tool { skill, tool, .. } => format!("{skill}.{tool}"),
        });
        let chat = if new.chat.is_empty() { "terminal:default".to_string() } else { new.chat.clone() };
        let job = Job { id: 0, name, when, action, target: chat, check, missed, next_ms, created_ms: now_ms };
        let job = self.db.job_add(job)?;
        self.schedule_changed.notify_one();
        Ok(job)
    }
}
