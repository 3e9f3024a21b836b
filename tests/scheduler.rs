//! The scheduler on a controllable clock (`tick(now)`), and the daemon
//! killed with SIGKILL mid-job and mid-write.

use crate::fake_llm::{FakeLlm, Reply};
use crate::support::{Env, stdout, wait_for};
use jiff::{Timestamp, ToSpan};
use std::sync::Arc;
use std::time::Duration;
use wasiclaw::agent::Agent;
use wasiclaw::grants::{GrantChange, GrantSet};
use wasiclaw::jobs::{NewJob, RunStatus};
use wasiclaw::scheduler::Scheduler;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn tool_job(when: &str, tool: &str, args: &str) -> NewJob {
    NewJob {
        when: when.into(),
        tz: "UTC".into(),
        tool: Some(tool.into()),
        args: Some(args.into()),
        ..Default::default()
    }
}

async fn setup(config: &str, skills: &[&str]) -> (Env, Arc<Agent>) {
    let env = Env::new();
    for s in skills {
        env.install(s);
    }
    env.config(config);
    let rt = Arc::new(env.runtime().await);
    // The owner approved these builds: unattended runs use no other.
    for s in skills {
        rt.change_grant(s, &GrantChange::default(), false).unwrap();
    }
    let agent = Arc::new(Agent::new(rt, None).await);
    (env, agent)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_occurrence_runs_once_even_when_ticks_race() {
    let (_env, agent) = setup("[agent]\nollama_url = \"http://127.0.0.1:1\"", &["clock"]).await;
    let start = t("2026-11-25T10:00:00Z");
    let job = agent.rt.schedule(tool_job("every 1m", "clock.now", "{}"), start.as_millisecond()).unwrap();
    assert_eq!(job.next_ms, Some(start.checked_add(1.minute()).unwrap().as_millisecond()));
    let s = Scheduler { agent: &agent };
    let due = t("2026-11-25T10:01:05Z");
    let (a, b) = tokio::join!(s.tick(due), s.tick(due));
    assert_eq!(a.unwrap().len() + b.unwrap().len(), 1, "two racing ticks ran one occurrence twice");
    assert!(s.tick(due).await.unwrap().is_empty());
    let later = s.tick(t("2026-11-25T10:02:00Z")).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].status, RunStatus::Ok);
    assert_eq!(agent.rt.db.runs(Some(job.id), 10).unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn missed_runs_follow_the_policy() {
    let (_env, agent) = setup("[agent]\nollama_url = \"http://127.0.0.1:1\"", &["clock"]).await;
    let start = t("2026-11-25T10:00:00Z").as_millisecond();
    let every = agent.rt.schedule(tool_job("every 10m", "clock.now", "{}"), start).unwrap();
    let once = agent.rt.schedule(tool_job("at 2026-11-25T10:05", "clock.now", "{}"), start).unwrap();
    let s = Scheduler { agent: &agent };
    // The daemon was down from 10:00 to 11:00.
    let runs = s.tick(t("2026-11-25T11:00:30Z")).await.unwrap();
    let status = |id| runs.iter().filter(|r| r.job == id).map(|r| r.status).collect::<Vec<_>>();
    assert_eq!(status(every.id), [RunStatus::Skipped], "recurring jobs skip what they missed, once");
    assert_eq!(status(once.id), [RunStatus::Ok], "one-shot jobs run once after downtime");
    let jobs = agent.rt.db.jobs().unwrap();
    assert_eq!(
        jobs[0].next_ms,
        Some(t("2026-11-25T11:10:00Z").as_millisecond()),
        "next fire is after now, on the grid"
    );
    assert_eq!(jobs[1].next_ms, None, "a one-shot job is done");
    assert!(s.tick(t("2026-11-25T12:00:00Z")).await.unwrap().iter().all(|r| r.job != once.id));
}

/// A board without a clock that booted years ahead, then set right by NTP:
/// the fires claimed meanwhile set next fires years away, and jobs made
/// meanwhile were anchored there. Once the clock is right, each job fires
/// on its schedule again, each occurrence still once.
#[tokio::test(flavor = "multi_thread")]
async fn jobs_fire_again_when_the_clock_goes_back() {
    let (_env, agent) = setup("[agent]\nollama_url = \"http://127.0.0.1:1\"", &["clock"]).await;
    let ahead = t("2031-06-01T09:00:30Z");
    let daily = agent.rt.schedule(tool_job("0 9 * * *", "clock.now", "{}"), t("2026-12-01T00:00:00Z").as_millisecond());
    let daily = daily.unwrap();
    let every = agent.rt.schedule(tool_job("every 10m", "clock.now", "{}"), ahead.as_millisecond()).unwrap();
    let s = Scheduler { agent: &agent };
    let runs = s.tick(ahead).await.unwrap();
    assert_eq!(runs.iter().filter(|r| r.job == daily.id).count(), 1, "the daily job fired in the wrong year");
    // Set right: each job's next fire is its schedule's next after now.
    let right = t("2026-12-05T08:00:00Z");
    assert!(s.tick(right).await.unwrap().is_empty());
    let next = |id| agent.rt.db.jobs().unwrap().into_iter().find(|j| j.id == id).unwrap().next_ms;
    assert_eq!(next(daily.id), Some(t("2026-12-05T09:00:00Z").as_millisecond()));
    assert_eq!(next(every.id), Some(t("2026-12-05T08:00:30Z").as_millisecond()), "on its grid, before its anchor");
    let runs = s.tick(t("2026-12-05T09:00:20Z")).await.unwrap();
    assert_eq!(
        runs.iter().filter(|r| r.job == daily.id).count(),
        1,
        "the daily job did not fire after the clock was set right"
    );
    assert!(s.tick(t("2026-12-05T09:00:40Z")).await.unwrap().iter().all(|r| r.job != daily.id), "fired twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_heartbeat_costs_no_tokens() {
    let llm = FakeLlm::start(vec![Reply::Text("You have an urgent note: call the bank.")]).await;
    let config = format!("[[providers]]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmodel = \"m\"", llm.base);
    let (_env, agent) = setup(&config, &["notes"]).await;
    let all = GrantChange { rights: GrantSet::default(), all: true, carry_over: None };
    agent.rt.change_grant("notes", &all, false).unwrap();
    let start = t("2026-11-25T10:00:00Z");
    let job = NewJob {
        when: "every 15m".into(),
        tz: "UTC".into(),
        prompt: Some("Tell me about urgent notes".into()),
        check: Some("notes.search".into()),
        check_args: Some(r#"{"query":"urgent"}"#.into()),
        chat: "terminal:me".into(),
        ..Default::default()
    };
    let job = agent.rt.schedule(job, start.as_millisecond()).unwrap();
    let s = Scheduler { agent: &agent };
    let idle = s.tick(t("2026-11-25T10:15:00Z")).await.unwrap();
    assert_eq!((idle[0].status, idle[0].tokens), (RunStatus::Idle, 0));
    assert!(llm.requests().is_empty(), "the model was woken for nothing");

    agent.rt.call_tool("notes", "add", r#"{"text":"urgent: call the bank"}"#).await.unwrap();
    let woke = s.tick(t("2026-11-25T10:30:00Z")).await.unwrap();
    assert_eq!(woke[0].status, RunStatus::Ok);
    assert_eq!(woke[0].tokens, 50, "the fake reports 40 + 10 tokens");
    assert!(woke[0].delivered);
    let prompt = llm.requests()[0]["messages"].to_string();
    assert!(prompt.contains("urgent: call the bank"), "the check's output reaches the model: {prompt}");
    let delivered = agent.rt.notifications(5).unwrap();
    assert!(delivered.iter().any(|n| n.text.contains("call the bank") && n.skill == format!("job:{}", job.id)));
    let session = agent.rt.db.session("terminal:me").unwrap();
    assert!(session.messages.len() >= 2, "the result went to the target chat");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_model_schedules_lists_and_cancels_tasks() {
    let llm = FakeLlm::start(vec![
        Reply::Tools(vec![(
            "schedule_task",
            r#"{"when":"0 8 * * mon-fri","tz":"Europe/Berlin","prompt":"send me the weather"}"#,
        )]),
        Reply::Text("Scheduled."),
        Reply::Tools(vec![("list_tasks", "{}")]),
        Reply::Tools(vec![("cancel_task", r#"{"id":1}"#)]),
        Reply::Text("Cancelled."),
    ])
    .await;
    let config = format!("[[providers]]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmodel = \"m\"", llm.base);
    let (_env, agent) = setup(&config, &[]).await;
    assert_eq!(agent.turn("web:abc", "every weekday at 8 send me the weather", &|_| {}).await.unwrap(), "Scheduled.");
    let jobs = agent.rt.db.jobs().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].target, "web:abc", "results go to the chat that asked");
    let next = Timestamp::from_millisecond(jobs[0].next_ms.unwrap())
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::get("Europe/Berlin").unwrap());
    assert_eq!((next.hour(), next.minute()), (8, 0));
    assert_eq!(agent.turn("web:abc", "cancel it", &|_| {}).await.unwrap(), "Cancelled.");
    assert!(llm.requests()[3]["messages"].to_string().contains("send me the weather"), "list_tasks showed the job");
    assert!(agent.rt.db.jobs().unwrap().is_empty());
}

#[test]
fn the_cron_cli() {
    let env = Env::new();
    env.install("clock");
    let added = env.ok(&["cron", "add", "0 8 * * mon-fri", "--tz", "Europe/Berlin", "--tool", "clock.now"]);
    assert!(added.contains("added job 1") && added.contains("08:00"), "{added}");
    assert!(env.ok(&["cron", "list"]).contains("tool clock.now"));
    // A name given is how the owner knows the job in the list.
    env.ok(&["cron", "add", "every 1h", "--tool", "clock.now", "--name", "hourly time"]);
    let listed = env.ok(&["cron", "list"]);
    assert!(listed.lines().any(|l| l.contains("\"hourly time\"  every 1h")), "{listed}");
    env.ok(&["cron", "rm", "2"]);
    let bad = env.cli(&["cron", "add", "0 25 * * *", "--prompt", "x"]);
    assert!(!bad.status.success() && crate::support::stderr(&bad).contains("hour field"));
    // An unattended run uses only builds the owner approved.
    let held = env.ok(&["cron", "run-now", "1"]);
    assert!(held.contains("skipped") && held.contains("wasiclaw skills approve clock"), "{held}");
    env.ok(&["skills", "approve", "clock"]);
    let run = env.cli(&["cron", "run-now", "1"]);
    let ran = stdout(&run);
    assert!(ran.contains("ok") && ran.contains("\"tz\":\"UTC\""), "{ran}");
    // A tool job needs no model: no word of the one that is missing.
    let said = crate::support::stderr(&run);
    assert!(!said.contains("No model is configured"), "{said}");
    assert!(env.ok(&["cron", "history"]).contains("job   1"));
    env.ok(&["cron", "rm", "1"]);
    assert!(env.ok(&["cron", "list"]).starts_with("no scheduled jobs"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_killed_mid_run_is_never_repeated() {
    let llm = FakeLlm::start(vec![Reply::Hang, Reply::Text("should never be asked")]).await;
    let env = Env::new();
    env.config(&format!("[[providers]]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmodel = \"m\"", llm.base));
    let at = Timestamp::now().checked_add(2.seconds()).unwrap().to_string();
    env.ok(&["cron", "add", &format!("at {at}"), "--prompt", "do the thing"]);
    let mut daemon = tokio::task::block_in_place(|| env.daemon());
    tokio::task::block_in_place(|| {
        wait_for("the job to call the model", Duration::from_secs(30), || !llm.requests().is_empty())
    });
    daemon.child.kill().unwrap(); // SIGKILL, mid-run
    daemon.child.wait().unwrap();
    let _again = tokio::task::block_in_place(|| env.daemon());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(llm.requests().len(), 1, "the interrupted run was repeated");
    let history = tokio::task::block_in_place(|| env.ok(&["cron", "history"]));
    assert!(history.contains("interrupted"), "{history}");
}

#[test]
fn nothing_acknowledged_is_lost_when_the_daemon_is_killed() {
    let env = Env::new();
    env.install("notes");
    env.ok(&["skills", "grant", "notes", "--kv"]);
    env.ok(&["cron", "add", "every 1s", "--tool", "notes.add", "--args", r#"{"text":"tick"}"#]);
    let mut daemon = env.daemon();
    let finished_runs = |env: &Env| {
        let runs: Vec<serde_json::Value> =
            serde_json::from_str(&env.ok(&["cron", "history", "--json", "--limit", "1000"])).unwrap();
        runs.iter().filter(|r| r["status"] == "ok").count()
    };
    wait_for("the job to run", Duration::from_secs(30), || finished_runs(&env) >= 1);
    let mut acknowledged = Vec::new();
    for i in 0..40 {
        if i == 20 {
            daemon.child.kill().unwrap(); // SIGKILL, between and during writes
        }
        let out = env.cli(&["memory", "add", &format!("fact {i}")]);
        if out.status.success() {
            acknowledged.push(format!("fact {i}"));
        }
    }
    daemon.child.wait().unwrap();
    let again = env.daemon();
    let memories = env.ok(&["memory", "list"]);
    for fact in &acknowledged {
        assert!(memories.contains(&format!("{fact}  ")), "{fact} was acknowledged but is gone");
    }
    assert!(acknowledged.len() >= 39, "the CLI falls back to the database when the daemon is gone");
    drop(again); // SIGKILL once more, then count with no scheduler running
    // Every occurrence ran at most once: each finished run left exactly one
    // note, and only runs cut short by a kill may have left one unrecorded.
    let runs: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["cron", "history", "--json", "--limit", "1000"])).unwrap();
    let count = |status: &[&str]| runs.iter().filter(|r| status.contains(&r["status"].as_str().unwrap())).count();
    let (ok, cut) = (count(&["ok"]), count(&["interrupted", "running"]));
    let notes: Vec<serde_json::Value> = serde_json::from_str(&stdout(&env.cli(&["tool", "notes.list"]))).unwrap();
    assert!(ok >= 1);
    assert!(
        notes.len() >= ok && notes.len() <= ok + cut,
        "{} notes for {ok} finished and {cut} cut-short runs",
        notes.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_name_only_tools_that_exist_and_a_prompt_without_a_model_is_skipped() {
    let (env, agent) = setup("[agent]\nollama_url = \"http://127.0.0.1:1\"", &["clock"]).await;
    let job = |tool: Option<&str>, check: Option<&str>| NewJob {
        when: "every 1m".into(),
        tz: "UTC".into(),
        tool: tool.map(String::from),
        prompt: tool.is_none().then(|| "summarize my mail".to_string()),
        check: check.map(String::from),
        ..Default::default()
    };
    let start = t("2026-11-25T10:00:00Z");
    for (tool, check, says) in [
        (None, Some("mail.any-new"), "no skill `mail` is loaded"),
        (None, Some("clock.nope"), "skill `clock` has no tool `nope`; it has: now, convert"),
        (Some("mail.send"), None, "no skill `mail` is loaded"),
    ] {
        let err = agent.rt.schedule(job(tool, check), start.as_millisecond()).unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
    }
    agent.rt.schedule(job(None, None), start.as_millisecond()).unwrap();
    let runs = Scheduler { agent: &agent }.tick(t("2026-11-25T10:01:05Z")).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Skipped, "{:?}", runs[0]);
    assert!(runs[0].output.contains("No model is configured"), "{}", runs[0].output);
    drop(env);
}

/// A job may run every second and a tool may return `output_kb`: what its
/// runs leave behind is bounded, kept and delivered alike.
#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_tool_cannot_fill_the_disk_with_its_results() {
    // `hostile.flood` returns 8 MiB, which this cap lets through.
    let (env, agent) = setup("[limits]\noutput_kb = 9000", &["hostile"]).await;
    let job = agent.rt.schedule(tool_job("every 1s", "hostile.flood", "{}"), 0).unwrap();
    let s = Scheduler { agent: &agent };
    for second in 1..=120 {
        let runs = s.tick(Timestamp::from_second(second).unwrap()).await.unwrap();
        assert_eq!(runs.len(), 1, "second {second}: {runs:?}");
        assert_eq!(runs[0].status, RunStatus::Ok, "{}", wasiclaw::text::truncate(&runs[0].output, 300));
    }
    let runs = agent.rt.db.runs(Some(job.id), usize::MAX).unwrap();
    assert_eq!(runs.len(), wasiclaw::jobs::RUNS_KEPT);
    assert_eq!(runs[0].fire_ms, 120_000, "the newest are kept");
    assert!(runs.iter().all(|r| r.output.len() < 17 << 10 && r.output.ends_with("bytes]")), "a result was kept whole");
    let told = agent.rt.notifications(1000).unwrap();
    assert!(told.iter().all(|n| n.text.len() < 17 << 10), "a result was delivered whole");
    let db = std::fs::metadata(env.path().join("wasiclaw.redb")).unwrap().len();
    assert!(db < 32 << 20, "120 runs of an 8 MiB result left a {db}-byte database");
}

/// A model in a loop of `schedule_task` calls fills a list, not the disk:
/// at most `JOBS_MAX` jobs, each with a bounded prompt, and the refusal
/// says how to make room.
#[tokio::test(flavor = "multi_thread")]
async fn jobs_are_bounded_in_number_and_size() {
    use wasiclaw::jobs::{JOB_TEXT_MAX, JOBS_MAX};
    let (_env, agent) = setup("", &[]).await;
    let prompt =
        |text: String| NewJob { when: "every 1h".into(), prompt: Some(text), by_model: true, ..Default::default() };
    let long = agent.rt.schedule(prompt("x".repeat(JOB_TEXT_MAX + 1)), 0).unwrap_err().to_string();
    assert!(long.contains("at most 16 KiB"), "{long}");
    for i in 0..JOBS_MAX {
        agent.rt.schedule(prompt(format!("task {i}")), 0).unwrap();
    }
    let full = agent.rt.schedule(prompt("one more".into()), 0).unwrap_err().to_string();
    assert!(full.contains("200 jobs are scheduled already") && full.contains("cron rm"), "{full}");
    assert_eq!(agent.rt.db.jobs().unwrap().len() as u64, JOBS_MAX);
    let first = agent.rt.db.jobs().unwrap()[0].id;
    agent.rt.db.job_remove(first).unwrap();
    agent.rt.schedule(prompt("one more".into()), 0).unwrap();
    // The owner's own `cron add` is not held to it.
    agent.rt.schedule(NewJob { by_model: false, ..prompt("the owner's".into()) }, 0).unwrap();
}

/// Each run of a task the model schedules asks the model, so it may not
/// fire more often than every 5 minutes (every minute with a check that
/// gates the model); the owner's `cron add` may.
#[tokio::test(flavor = "multi_thread")]
async fn the_model_cannot_schedule_a_prompt_that_burns_tokens_all_day() {
    let (_env, agent) = setup("", &["clock"]).await;
    let now = jiff::Timestamp::now().as_millisecond();
    let task = |when: &str| NewJob {
        when: when.into(),
        prompt: Some("stretch!".into()),
        by_model: true,
        ..Default::default()
    };
    for often in ["every 1s", "every 4m", "* * * * *", "*/2 9 * * *"] {
        let refused = agent.rt.schedule(task(often), now).unwrap_err().to_string();
        assert!(
            refused.contains("too often for a task that asks the model") && refused.contains("cron add"),
            "{often}: {refused}"
        );
    }
    for fine in ["every 5m", "*/5 * * * *", "0 8 * * mon-fri", "at 2099-01-01T08:00"] {
        agent.rt.schedule(task(fine), now).unwrap_or_else(|e| panic!("{fine}: {e}"));
    }
    let checked = NewJob { check: Some("clock.now".into()), ..task("every 1m") };
    agent.rt.schedule(checked, now).unwrap();
    let refused = agent.rt.schedule(NewJob { check: Some("clock.now".into()), ..task("every 30s") }, now).unwrap_err();
    assert!(refused.to_string().contains("too often"), "{refused}");
    agent.rt.schedule(NewJob { by_model: false, ..task("every 1s") }, now).unwrap();
}

/// A job the model cancels (it may have misread which was meant) is kept
/// for the owner to bring back, on its schedule from now; one the owner
/// removes is gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_the_model_cancels_the_owner_can_bring_back() {
    let llm = FakeLlm::start(vec![Reply::Tools(vec![("cancel_task", r#"{"id":1}"#)]), Reply::Text("Cancelled.")]).await;
    let env = Env::new();
    env.config(&format!("[[providers]]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmodel = \"m\"", llm.base));
    env.ok(&["cron", "add", "0 7 * * *", "--prompt", "the morning briefing", "--tz", "UTC"]);
    env.ok(&["cron", "add", "every 1h", "--prompt", "check the mail"]);
    {
        let rt = Arc::new(env.runtime().await);
        let agent = Agent::new(rt.clone(), None).await;
        agent.turn("t:1", "stop the mail checks", &|_| {}).await.unwrap();
    }
    let list = env.ok(&["cron", "list"]);
    assert!(!list.contains("morning briefing") && list.contains("check the mail"), "{list}");
    let cancelled = env.ok(&["cron", "cancelled"]);
    assert!(cancelled.contains("morning briefing") && cancelled.contains("cron restore 1"), "{cancelled}");

    let back = env.ok(&["cron", "restore", "1"]);
    assert!(back.starts_with("brought back job 1: cron `0 7 * * *` (UTC); next run"), "{back}");
    let list = env.ok(&["cron", "list"]);
    assert!(list.contains("morning briefing") && list.contains("07:00 UTC"), "{list}");
    assert!(env.ok(&["cron", "cancelled"]).starts_with("the model cancelled no job"));

    // The owner's removal is for good, of a cancelled job too.
    env.ok(&["cron", "rm", "2"]);
    assert!(!env.ok(&["cron", "cancelled"]).contains("mail"));
    assert_eq!(env.cli(&["cron", "restore", "2"]).status.code(), Some(3));
    let llm = FakeLlm::start(vec![Reply::Tools(vec![("cancel_task", r#"{"id":1}"#)]), Reply::Text("Done.")]).await;
    env.config(&format!("[[providers]]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmodel = \"m\"", llm.base));
    {
        let rt = Arc::new(env.runtime().await);
        Agent::new(rt.clone(), None).await.turn("t:1", "no more briefings", &|_| {}).await.unwrap();
    }
    assert!(env.ok(&["cron", "cancelled"]).contains("morning briefing"));
    env.ok(&["cron", "rm", "1"]);
    assert!(env.ok(&["cron", "cancelled"]).starts_with("the model cancelled no job"));
}
