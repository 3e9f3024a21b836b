//! What the command line prints for each response: tables and sentences
//! for people, or with `--json` the response's value (one JSON document;
//! `skills list --json` prints one skill per line).

use std::process::ExitCode;
use wasiclaw::api::{Request, Response, Status};
use wasiclaw::jobs::{Action, When};
use wasiclaw::memory::Memory;
use wasiclaw::pairing::PairingView;
use wasiclaw::runtime::{SkillInfo, waiting_for};
use wasiclaw::text::{one_line, printable};

/// Print `response` to the request that asked for it.
pub(crate) fn render(request: &Request, response: Response, json: bool) -> anyhow::Result<ExitCode> {
    let failed = matches!(&response, Response::Tool(o) if !o.ok);
    match response {
        Response::Skills(skills) if json => skills.iter().try_for_each(|s| {
            println!("{}", serde_json::to_string(s)?);
            anyhow::Ok(())
        })?,
        response if json => println!("{}", response.to_json()),
        Response::Tool(outcome) => {
            if outcome.ok {
                println!("{}", printable(&outcome.output));
            } else {
                let kind = outcome.error_kind.map(|k| wasiclaw::text::variant_name(&k));
                eprintln!("error ({}): {}", kind.as_deref().unwrap_or("error"), printable(&outcome.output));
            }
            for d in &outcome.denials {
                eprintln!("host denied {}", one_line(d));
            }
        }
        Response::Skills(skills) => {
            if skills.is_empty() {
                println!("no skills yet: copy a .wasm skill into the skills folder (see `wasiclaw status`)");
            }
            for s in &skills {
                let status = match &s.changed {
                    Some(change) => format!("{} (changed: {change})", s.status),
                    None => s.status.to_string(),
                };
                println!(
                    "{:<16} {:<8} {:<9} {:<15} {}  {}",
                    s.name,
                    if s.channel.is_some() { "channel" } else { "skill" },
                    printable(s.version.as_deref().unwrap_or("-")),
                    status,
                    wasiclaw::component::short_sha(&s.sha256),
                    summary(s)
                );
            }
        }
        Response::Skill(s) => print_inspect(&s),
        Response::Granted { skill, notes } => {
            for note in notes {
                eprintln!("note: {note}");
            }
            println!("{}: {}  {}", skill.name, skill.status, summary(&skill));
        }
        Response::Audit(records) => {
            if records.is_empty() {
                println!("no audit records: every use of a right by a skill, allowed or denied, is recorded here");
            }
            for r in records {
                let time = jiff::Timestamp::from_millisecond(r.time_ms).map(|t| t.to_string()).unwrap_or_default();
                let verdict = if r.allowed { "allowed" } else { "DENIED " };
                let detail = if r.detail.is_empty() { String::new() } else { format!("  ({})", r.detail) };
                let (target, detail) = (one_line(&r.target), one_line(&detail));
                println!("{time}  {verdict} {:<12} {:<7} {target}{detail}", r.skill, r.capability);
            }
        }
        Response::Notifications(list) => {
            if list.is_empty() {
                println!(
                    "no notifications yet: skills granted --notify, scheduled jobs and wasiclaw itself write here"
                );
            }
            for n in list {
                let time = jiff::Timestamp::from_millisecond(n.time_ms).map(|t| t.to_string()).unwrap_or_default();
                println!("{time}  {}: {}", n.skill, one_line(&n.text));
            }
        }
        Response::Usage(days) => {
            if days.is_empty() {
                println!("no model use recorded yet");
            }
            println!("{:<12} {:>10} {:>10} {:>10} {:>6}", "day (UTC)", "input", "output", "cost $", "calls");
            for (day, t) in days {
                println!("{day:<12} {:>10} {:>10} {:>10.4} {:>6}", t.input, t.output, t.cost, t.calls);
            }
        }
        Response::Remembered(m) => println!("remembered as {}", m.id),
        Response::Job(job) => println!(
            "{} job {}: {}; next run {}",
            if matches!(request, Request::CronRestore { .. }) { "brought back" } else { "added" },
            job.id,
            job.when.describe(),
            time_of(job.next_ms, Some(&job.when))
        ),
        Response::Jobs(jobs) => {
            if jobs.is_empty() {
                println!("no scheduled jobs: `wasiclaw cron add --help` shows how to add one, or ask the agent to");
            }
            for j in jobs {
                let next = time_of(j.next_ms, Some(&j.when));
                println!("{:>4}  next {next}  {}", j.id, job_line(&j));
            }
        }
        Response::Cancelled(list) => {
            if list.is_empty() {
                println!("the model cancelled no job in the last {} days", wasiclaw::jobs::CANCELLED_DAYS);
            }
            for c in list {
                let when = time_of(Some(c.cancelled_ms), None);
                println!(
                    "{:>4}  cancelled {when}  {}  (`wasiclaw cron restore {}`)",
                    c.job.id,
                    job_line(&c.job),
                    c.job.id
                );
            }
        }
        Response::Runs(runs) => {
            if runs.is_empty() {
                println!("no runs recorded");
            }
            for r in runs {
                let tokens = if r.tokens == 0 { "0 tokens".to_string() } else { format!("{} tokens", r.tokens) };
                println!(
                    "job {:>3}  {}  {:<11} {tokens:<12} {}",
                    r.job,
                    time_of(Some(r.fire_ms), None),
                    r.status.to_string(),
                    one_line(&r.output)
                );
            }
        }
        Response::Hits(hits) => {
            if hits.is_empty() {
                println!("nothing found");
            }
            for h in hits {
                println!("{}", printable(&memory_line(&h.memory)));
            }
        }
        Response::Memories(list) => {
            if list.is_empty() {
                println!("no memories yet: `wasiclaw memory add TEXT`, or tell the agent something to remember");
            }
            for m in list {
                println!("{}", printable(&memory_line(&m)));
            }
        }
        Response::Forgotten(list) => {
            if list.is_empty() {
                println!("the model forgot nothing in the last {} days", wasiclaw::memory::FORGOTTEN_DAYS);
            }
            for f in list {
                let when = time_of(Some(f.forgotten_ms), None);
                println!(
                    "{}  (forgotten {when}; `wasiclaw memory restore {}`)",
                    printable(&memory_line(&f.memory)),
                    f.memory.id
                );
            }
        }
        Response::Removed(r) => removed(&r),
        Response::Exported(jsonl) => print!("{jsonl}"),
        Response::Imported(done) => {
            println!("imported {}, skipped {} already present", done.imported, done.skipped);
            if !done.pinned.is_empty() {
                let ids: Vec<String> = done.pinned.iter().map(u64::to_string).collect();
                println!(
                    "pinned, so in every conversation from now on: {}; `wasiclaw memory unpin ID` for any you did not mean to",
                    ids.join(", ")
                );
            }
            if let Some(why) = done.unembedded {
                println!(
                    "embeddings stopped ({}): the memories after that are found by their words only until `wasiclaw memory embed`",
                    printable(&why)
                );
            }
        }
        Response::Embedded(done) => {
            println!("embedded {} memories; {} have none", done.embedded, done.left);
            if let Some(why) = done.stopped {
                println!("stopped: {}; run `wasiclaw memory embed` again once it answers", printable(&why));
            }
        }
        Response::Status(status) => print_status(&status),
        Response::Pairings(pairings) => {
            if pairings.is_empty() {
                println!("nobody is paired yet; senders who write to a channel get a code to approve here");
            }
            for view in pairings {
                let p = &view.pairing;
                let state = match (&p.code, p.approved, p.admin) {
                    (_, true, true) => "paired (admin)".to_string(),
                    (_, true, false) => format!("paired: {}; {}", view.may, tokens_today(&view)),
                    (Some(code), false, _) => format!("pending: wasiclaw pairing approve {code}"),
                    (None, false, _) => "pending".to_string(),
                };
                let (sender, name, chat) = (one_line(&p.sender_id), one_line(&p.sender_name), one_line(&p.chat_id));
                let chat =
                    if p.group { format!("in group {chat} only (--group {chat})") } else { format!("chat {chat}") };
                println!("{}:{sender}  {name}  {chat}  {state}", p.channel);
            }
        }
        Response::Pairing(p) => match request {
            Request::PairingGrant { channel, sender, scope, .. } => {
                println!("{channel}:{sender} may now use: {}", scope.describe())
            }
            _ => println!(
                "approved {} ({}:{}){}",
                p.sender_name,
                p.channel,
                p.sender_id,
                if p.admin { " as an admin" } else { "" }
            ),
        },
        Response::Answered(false) => {
            let id = match request {
                Request::Answer { id, .. } => *id,
                _ => 0,
            };
            anyhow::bail!("no tool call is waiting for answer {id}")
        }
        Response::Answered(true) => println!("answered"),
        Response::Approvals(list) => {
            if list.is_empty() {
                println!("no tool runs without asking beyond its policy");
            }
            for (tool, ms) in list {
                let since = jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default();
                println!("{tool:<30} always allowed since {since}  (revoke: wasiclaw approvals revoke {tool})");
            }
        }
        Response::Outbox(items) => {
            if items.is_empty() {
                println!("nothing waiting to be sent");
            }
            for o in items {
                let error = o.last_error.map(|e| format!("  last error: {}", one_line(&e))).unwrap_or_default();
                let error = match o.held {
                    Some(why) => format!(
                        "  HELD, not retried: {}; `wasiclaw outbox --retry {id}` sends it again, `--drop {id}` gives it up{error}",
                        one_line(&why),
                        id = o.id
                    ),
                    None => error,
                };
                println!(
                    "{:>5}  {}:{}  {} attempt(s)  {}{error}",
                    o.id,
                    o.channel,
                    o.chat_id,
                    o.attempts,
                    one_line(&wasiclaw::text::truncate(&o.text, 60))
                );
            }
        }
        Response::Chat { reply } => println!("{}", printable(&reply)),
        Response::BackedUp { path, bytes } => {
            println!(
                "wrote {0} ({1:.1} MiB), checked; `wasiclaw restore {0}` puts it back, with the daemon stopped",
                path.display(),
                bytes as f64 / (1 << 20) as f64
            )
        }
        Response::Done => println!("{}", done(request)),
        Response::Names(names) | Response::Diff(names) => names.iter().for_each(|n| println!("{n}")),
        Response::Url(url) => println!("{url}"),
        Response::Session(session) => println!("{}", serde_json::to_string_pretty(&session)?),
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// What a request that returns nothing did, in words.
fn done(request: &Request) -> String {
    match request {
        Request::CronRm { id } => format!("removed job {id}"),
        Request::MemoryForget { id } => format!("forgot {id}"),
        Request::MemoryRestore { id } => format!("brought back {id}"),
        Request::MemoryPin { id, pinned } => format!("{} {id}", if *pinned { "pinned" } else { "unpinned" }),
        Request::PairingRevoke { channel, sender } => format!("forgot {channel}:{sender}"),
        Request::ApprovalsRevoke { tool } => format!("{tool} will ask again"),
        Request::OutboxDrop { id } => format!("dropped queued message {id}; it will not be sent"),
        Request::OutboxRetry { id } => format!("queued message {id} is sent again now"),
        _ => "done".into(),
    }
}

fn print_status(s: &Status) {
    let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64);
    let daemon = if s.daemon {
        format!("daemon running (pid {}, up {}h{:02}m)", s.pid, s.uptime_s / 3600, s.uptime_s / 60 % 60)
    } else {
        "no daemon running (start one with `wasiclaw run`)".into()
    };
    println!("wasiclaw {}: {daemon}\nstate dir: {}", s.version, s.state_dir.display());
    if let Some(edited) = &s.config_edited {
        println!("{edited} (`systemctl --user restart wasiclaw`, or stop `wasiclaw run` and start it again)");
    }
    let models = if s.models.is_empty() {
        "none configured (a local Ollama is tried)".to_string()
    } else {
        s.models.join(", then ")
    };
    println!("model: {models}");
    let states: Vec<String> = s.components_by_state.iter().map(|(st, n)| format!("{n} {st}")).collect();
    println!("skills and channels: {}", if states.is_empty() { "none".to_string() } else { states.join(", ") });
    let next = s.next_run_ms.map(|ms| time_of(Some(ms), None)).unwrap_or_else(|| "none".into());
    println!("jobs: {} (next run {next})", s.jobs);
    let budget = match s.daily_token_budget {
        0 => "no daily budget".to_string(),
        b => format!("of a {b} budget"),
    };
    println!("tokens today: {} {budget}", s.tokens_today);
    for (model, why) in &s.models_resting {
        println!(
            "model {}: not answering ({}); the others are asked first, and it again within a minute",
            printable(model),
            printable(why)
        );
    }
    if let Some(why) = &s.embeddings_paused {
        println!(
            "embeddings: not answering ({}); memory search uses keywords meanwhile and asks again within a \
             minute; `wasiclaw memory embed` later embeds what was saved meanwhile",
            printable(why)
        );
    }
    println!(
        "database: {}, compiled cache: {}, audit records: {}",
        mib(s.database_bytes),
        mib(s.cache_bytes),
        s.audit_records
    );
    match s.backups.as_ref().map(wasiclaw::backups::Report::verdict) {
        None => println!("backups: none automatic (set [storage] backup_dir to a directory on another drive)"),
        Some((said, None)) => println!("backups: {said}"),
        Some((said, Some(fix))) => println!("backups: {said}; {fix}"),
    }
    if s.channels.is_empty() {
        return;
    }
    println!("channels:");
    for c in &s.channels {
        let mut line = format!("  {}: {} ({})", c.name, c.state, c.transport);
        line.push_str(&format!(", {} received, {} sent", c.received, c.sent));
        if c.dropped > 0 {
            line.push_str(&format!(", {} dropped (inbox full)", c.dropped));
        }
        if c.outbox_pending > 0 {
            line.push_str(&format!(", {} waiting to send (`wasiclaw outbox`)", c.outbox_pending));
        }
        if c.outbox_held > 0 {
            line.push_str(&format!(", {} refused by the platform and held (`wasiclaw outbox`)", c.outbox_held));
        }
        if c.restarts > 0 {
            line.push_str(&format!(", restarted {} time(s)", c.restarts));
        }
        println!("{line}");
        if let Some(e) = &c.last_error {
            println!("    last error: {}", printable(e));
        }
        if !c.pending_rights.is_empty() {
            println!("    {} (see `wasiclaw skills inspect {}`)", waiting_for(&c.pending_rights), c.name);
        }
    }
}

/// A job in a line: its schedule, what it does, where the result goes.
fn job_line(j: &wasiclaw::jobs::Job) -> String {
    let what = match &j.action {
        Action::Prompt { text } => format!("prompt {text:?}"),
        Action::Tool { skill, tool, args } => format!("tool {skill}.{tool} {args}"),
    };
    let check = j.check.as_ref().map(|c| format!(" if {}.{}", c.skill, c.tool)).unwrap_or_default();
    // Its runs start untrusted: a write they meet stops unless allowed.
    let mark = if j.untrusted { "  (scheduled after untrusted content)" } else { "" };
    // A name it was given (`--name`, or the model's), to know it by.
    let name = if j.name == j.action.default_name() { String::new() } else { format!("{:?}  ", j.name) };
    format!("{}{}  {what}{check} → {}{mark}", printable(&name), j.when.describe(), j.target)
}

/// A time in the job's own zone (cron jobs) or this machine's.
pub(crate) fn time_of(ms: Option<i64>, when: Option<&When>) -> String {
    let tz = match when {
        Some(When::Cron { tz, .. }) => jiff::tz::TimeZone::get(tz).unwrap_or_else(|_| jiff::tz::TimeZone::system()),
        _ => jiff::tz::TimeZone::system(),
    };
    match ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()) {
        Some(t) => t.to_zoned(tz).strftime("%Y-%m-%d %H:%M %Z").to_string(),
        None => "never (done)".into(),
    }
}

fn tokens_today(view: &PairingView) -> String {
    match view.daily_tokens {
        0 => format!("{} tokens today", view.tokens_today),
        share => format!("{} of {share} tokens today", view.tokens_today),
    }
}

/// What `skills remove` did, and what it left.
fn removed(r: &wasiclaw::runtime::Removed) {
    let (name, f) = (&r.name, &r.forgot);
    match &r.file {
        Some(file) => println!("removed {name} ({})", file.display()),
        None => println!("{name} was not installed; forgot what it left"),
    }
    if f.grant || f.always > 0 {
        println!("its grant and {} \"always\" answer(s) are gone: added again, it asks again", f.always);
    }
    if f.pairings > 0 {
        println!(
            "{} person(s) paired through it are unpaired: added again, it serves nobody until you pair them",
            f.pairings
        );
    }
    let mut stored = format!(
        "{} kv key(s) ({} KiB), {} memory(ies), {} KiB of files",
        f.kv_keys,
        f.kv_bytes.div_ceil(1024),
        f.memories,
        r.files_bytes.div_ceil(1024)
    );
    if f.conversations + f.waiting > 0 {
        stored.push_str(&format!(", {} conversation(s), {} message(s) waiting", f.conversations, f.waiting));
    }
    if r.erased {
        println!("erased what it stored: {stored}");
    } else if f.kv_keys + f.memories + r.files_bytes + (f.conversations + f.waiting) as u64 > 0 {
        println!("kept what it stored: {stored}; `wasiclaw skills remove {name} --erase` erases it");
    }
    let ids = |jobs: &[u64]| jobs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    if !r.jobs.is_empty() {
        println!("job(s) {} call its tools: skipped until it is back (`wasiclaw cron rm ID`)", ids(&r.jobs));
    }
    if !r.reports.is_empty() {
        println!(
            "job(s) {} report to its chats: to your notifications until it is back (`wasiclaw cron rm ID`)",
            ids(&r.reports)
        );
    }
}

fn memory_line(m: &Memory) -> String {
    let date =
        jiff::Timestamp::from_millisecond(m.created_ms).map(|t| t.strftime("%Y-%m-%d").to_string()).unwrap_or_default();
    let tags = if m.tags.is_empty() { String::new() } else { format!(" #{}", m.tags.join(" #")) };
    format!("{:>5}  {date}  {}{}{tags}  ({})", m.id, if m.pinned { "📌 " } else { "" }, m.text, m.source)
}

/// One line on what a skill may do or still asks for.
fn summary(s: &SkillInfo) -> String {
    if let Some(reason) = &s.reason {
        return format!("rejected: {}", one_line(reason));
    }
    let approved = !s.pending.iter().any(|p| p.starts_with(wasiclaw::runtime::APPROVE_BUILD));
    let may = if approved { may_use(s) } else { Vec::new() };
    let may = (!may.is_empty()).then(|| format!("may use {}", may.join("; ")));
    if s.pending.is_empty() {
        return one_line(&may.unwrap_or_else(|| "needs no rights".into())).into_owned();
    }
    let said = [may, Some(waiting_for(&s.pending))].into_iter().flatten().collect::<Vec<_>>().join("; ");
    format!("{} (see `wasiclaw skills inspect {}`)", one_line(&said), s.name)
}

/// What an approved build may use: what it asks for of what was granted.
fn may_use(s: &SkillInfo) -> Vec<String> {
    let (Some(asked), Some(granted)) = (&s.requested, &s.granted) else { return Vec::new() };
    let mut may: Vec<String> = granted.http.iter().map(|h| format!("http {} {}", h.methods.join(","), h.url)).collect();
    let secrets = asked.all_secrets();
    may.extend(granted.secrets.iter().filter(|n| secrets.contains(*n)).map(|n| format!("secret {n}")));
    may.extend((granted.rights & asked.rights).names().map(String::from));
    may
}

fn print_inspect(s: &SkillInfo) {
    let (version, description) = (s.version.as_deref().unwrap_or("?"), s.description.as_deref().unwrap_or(""));
    println!("{} {} — {}", s.name, one_line(version), one_line(description));
    println!("file:   {}\nsha256: {}\nstatus: {}", s.file.display(), s.sha256, s.status);
    if let Some(change) = &s.changed {
        println!("changed: {change}; it carries nothing until you run `wasiclaw skills approve {}`", s.name);
    }
    if let Some((keys, bytes)) = s.kv_usage {
        println!("kv:     {keys} keys, {bytes} bytes");
    }
    if let Some((kept, most)) = s.memories {
        println!("memory: keeps {kept} memories of at most {most} ([limits] memories_kept)");
    }
    if let Some(reason) = &s.reason {
        println!("reason: {}", printable(reason));
        return;
    }
    if let Some(c) = &s.channel {
        let transport = wasiclaw::channels::describe_transport(&s.name, &c.transport);
        println!("\na chat channel: {transport}; messages up to {} characters", c.max_length);
    }
    println!("\ntools:");
    for t in &s.tools {
        println!(
            "  {}.{} — {}\n    parameters: {}",
            s.name,
            t.name,
            one_line(&t.description),
            one_line(&t.parameters.to_string())
        );
    }
    let r = s.requested.clone().unwrap_or_default();
    println!("\nasks for:");
    let mut asks: Vec<String> = r
        .http
        .iter()
        .map(|h| {
            let headers = h.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ");
            let headers = if headers.is_empty() { String::new() } else { format!(" (sets {headers})") };
            format!("http {} {}{headers}", h.methods().join(","), h.url)
        })
        .collect();
    asks.extend(r.all_secrets().into_iter().map(|n| format!("secret {n}")));
    asks.extend(r.rights.names().map(String::from));
    if asks.is_empty() {
        println!("  nothing");
    }
    for a in asks {
        let pending = s.pending.iter().any(|p| a.starts_with(p.as_str()));
        println!("  {:<60} {}", one_line(&a), if pending { "NOT GRANTED" } else { "granted" });
    }
    if !s.pending.is_empty() {
        println!("\nto approve everything it asks for: wasiclaw skills grant {} --all-requested", s.name);
    }
    if let Some(sha) = s.granted_sha256.as_ref().filter(|sha| **sha != s.sha256) {
        println!(
            "\nnote: grants were approved for an earlier version ({}); new requests need approval",
            wasiclaw::component::short_sha(sha)
        );
    }
}

/// Print what `wasiclaw doctor` found; the exit code says whether all is well.
pub(crate) fn findings(findings: &[wasiclaw::doctor::Finding], json: bool) -> ExitCode {
    for f in findings {
        if json {
            println!("{}", serde_json::to_string(f).expect("findings serialize"));
        } else if f.ok {
            println!("ok       {:<9} {}", f.check, f.said);
        } else {
            println!("PROBLEM  {:<9} {}\n         → {}", f.check, f.said, f.fix.as_deref().unwrap_or_default());
        }
    }
    let problems = findings.iter().filter(|f| !f.ok).count();
    if !json {
        println!("{}", if problems == 0 { "all good".to_string() } else { format!("{problems} problem(s)") });
    }
    if problems == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
