//! The scheduler: the runner of the jobs in `jobs.rs`. It wakes when the
//! next job is due (or one is added), claims each due fire, runs it (a
//! tool, or a prompt to the agent, maybe after a cheap check skill that
//! decides whether the model wakes up at all) and delivers the result.
//!
//! Invariants:
//! - A fire is claimed (see `jobs.rs`) before it runs, so it runs at most once.
//! - `tick(now)` is the whole scheduling step; the daemon calls it with the
//!   real clock, tests with any clock they like.
//! - A run that needs a question to the owner stops with a record
//!   (unattended runs never wait for one).
//! - When the clock goes back (a board without a clock that booted ahead,
//!   an NTP correction, a restored snapshot), a job whose next fire was
//!   set from the wrong time is moved back to its schedule's next fire
//!   after now, instead of waiting for that time to come round again.

use crate::agent::Agent;
use crate::jobs::{Action, GRACE_MS, Job, Missed, Run, RunStatus, ScheduleError};
use crate::store::Store;
use jiff::Timestamp;

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

/// A run of job `job` that ended at `finished_ms`, having done nothing.
fn ended(job: u64, fire_ms: i64, (started_ms, finished_ms): (i64, i64), status: RunStatus, output: String) -> Run {
    let finished_ms = Some(finished_ms);
    Run { job, fire_ms, started_ms, finished_ms, status, output, tokens: 0, delivered: false }
}

/// Runs jobs for an agent.
pub struct Scheduler<'a> {
    /// The agent that answers prompt jobs.
    pub agent: &'a Agent,
}

impl Scheduler<'_> {
    fn db(&self) -> &Store {
        &self.agent.rt.db
    }

    /// `job`, its next fire moved back to its schedule's next after
    /// `now_ms` if that is sooner: the clock went back since it was set.
    fn reanchor(&self, mut job: Job, now_ms: i64) -> Result<Job, ScheduleError> {
        let soonest = job.when.next_after(now_ms, job.created_ms);
        if let (Some(next), Some(soonest)) = (job.next_ms, soonest)
            && soonest < next
            && self.db().move_next(job.id, next, soonest)?
        {
            let at = |ms| Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default();
            tracing::warn!(
                "the clock went back: job {} next runs at {}, not {} (the time it was set from was ahead)",
                job.id,
                at(soonest),
                at(next)
            );
            job.next_ms = Some(soonest);
        }
        Ok(job)
    }

    /// One scheduling step at `now`: every due job is claimed and run.
    /// Returns the runs it finished.
    pub async fn tick(&self, now: Timestamp) -> Result<Vec<Run>, ScheduleError> {
        let now_ms = now.as_millisecond();
        let mut done = Vec::new();
        for job in self.db().jobs()? {
            let job = self.reanchor(job, now_ms)?;
            let Some(fire) = job.next_ms.filter(|f| *f <= now_ms) else { continue };
            let missed = now_ms - fire > GRACE_MS;
            if missed && job.missed == Missed::Skip {
                if self.db().claim(job.id, fire, now_ms, RunStatus::Skipped)?.is_some() {
                    let why = "missed while wasiclaw was not running (policy: skip)";
                    let run = ended(job.id, fire, (now_ms, now_ms), RunStatus::Skipped, why.into());
                    self.db().finish_run(&run)?;
                    self.agent.rt.metrics.job_run();
                    done.push(run);
                }
                continue;
            }
            if self.db().claim(job.id, fire, now_ms, RunStatus::Running)?.is_none() {
                continue;
            }
            let run = match crate::agent::contained(self.execute(&job, fire, now_ms)).await {
                Ok(run) => run?,
                Err(why) => {
                    let why = format!("a bug in wasiclaw stopped this run (its log has more): {why}");
                    let finished = (now_ms, Timestamp::now().as_millisecond().max(now_ms));
                    let run = ended(job.id, fire, finished, RunStatus::Failed, why);
                    self.db().finish_run(&run)?;
                    run
                }
            };
            done.push(run);
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
            status: RunStatus::Ok,
            output: String::new(),
            tokens: 0,
            delivered: false,
        };
        // What the check said: a skill's output, so data, not instructions.
        let mut checked: Option<(String, String)> = None;
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
            run.status = RunStatus::Skipped;
            run.output = format!("{skill} is not an approved build; run `wasiclaw skills approve {skill}`");
        }
        if let Some(check) = job.check.as_ref().filter(|_| run.status == RunStatus::Ok) {
            let out = rt.call_tool(&check.skill, &check.tool, &check.args).await;
            match out {
                Ok(o) if o.ok && !check_says_wake(&o.output) => {
                    run.status = RunStatus::Idle;
                    run.output = format!("check {}.{}: nothing to do", check.skill, check.tool);
                }
                Ok(o) if o.ok => checked = Some((format!("{}.{}", check.skill, check.tool), o.output)),
                Ok(o) => {
                    run.status = RunStatus::Failed;
                    run.output = format!("check failed: {o}");
                }
                Err(e) => {
                    run.status = RunStatus::Failed;
                    run.output = format!("check failed: {e}");
                }
            }
        }
        if run.status == RunStatus::Ok {
            match &job.action {
                Action::Prompt { .. } if !self.agent.has_model() => {
                    run.status = RunStatus::Skipped;
                    run.output = format!("no model to ask: {}", self.agent.no_model());
                }
                Action::Prompt { text } => {
                    let session = rt.db.session(&job.target)?;
                    let before = session.usage.tokens();
                    let mut prompt = format!("[scheduled task #{} \"{}\"] {text}", job.id, job.name);
                    if let Some((check, _)) = &checked {
                        prompt.push_str(&format!("\n\nThe check {check} reported:"));
                    }
                    let data = checked.as_ref().map(|(check, out)| (check.as_str(), out.as_str()));
                    // Nobody is there to answer a question: a call that needs
                    // one stops the run, and the record says why.
                    let who = crate::agent::Who::Unattended { group: session.group };
                    match self.agent.turn_with(&job.target, &prompt, data, job.untrusted, &who, &|_| {}).await {
                        Ok(reply) => {
                            if reply.stopped.is_some() {
                                run.status = RunStatus::Stopped;
                            }
                            run.output = reply.text;
                        }
                        Err(e) => {
                            run.status = RunStatus::Failed;
                            run.output = e.to_string();
                        }
                    }
                    run.tokens = rt.db.session(&job.target)?.usage.tokens().saturating_sub(before);
                }
                Action::Tool { skill, tool, args } => match rt.call_tool(skill, tool, args).await {
                    Ok(o) => {
                        run.status = if o.ok { RunStatus::Ok } else { RunStatus::Failed };
                        run.output = o.to_string();
                    }
                    Err(e) => {
                        run.status = RunStatus::Failed;
                        run.output = e.to_string();
                    }
                },
            }
        }
        run.output = crate::text::truncate(&run.output, crate::jobs::RUN_OUTPUT_MAX);
        if run.status != RunStatus::Idle {
            run.delivered = self.deliver(job, &run.output);
        }
        run.finished_ms = Some(jiff::Timestamp::now().as_millisecond());
        self.db().finish_run(&run)?;
        self.agent.rt.metrics.job_run();
        Ok(run)
    }

    /// Deliver a result: to the job's chat when it is a channel chat
    /// (queued in the channel outbox, which retries), otherwise to the
    /// notification outbox (`wasiclaw notifications`) and the owner's chat.
    fn deliver(&self, job: &Job, text: &str) -> bool {
        let rt = &self.agent.rt;
        let message = format!("[{} → {}] {text}", job.name, job.target);
        // Queue for a `CHANNEL:CHAT` target of an installed channel; false
        // if the target is none.
        let send = |target: &str, text: &str| match rt.channel_chat(target) {
            Some((channel, chat)) => rt.db.outbox_enqueue(channel, chat, text).map(|_| true),
            None => Ok(false),
        };
        for attempt in 1..=3 {
            let delivered = send(&job.target, text).and_then(|done| {
                if done {
                    return Ok(());
                }
                rt.db.notify(&format!("job:{}", job.id), &message)?;
                if let Some(owner) = crate::queue::owner_chat(rt.config.agent.owner_chat.as_deref(), &rt.db) {
                    send(&owner, &message)?;
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
    fn checks() {
        for quiet in ["false", "null", "[]", "{\"wake\":false}", "", "no"] {
            assert!(!check_says_wake(quiet), "{quiet}");
        }
        for wake in ["true", "[1]", "{\"new\":3}", "2 new mails"] {
            assert!(check_says_wake(wake), "{wake}");
        }
    }
}
