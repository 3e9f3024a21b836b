//! The host's own tools the model can call: long-term memory, scheduled
//! tasks and knowledge skills. One table of {name, risk, description,
//! schema, handler}; each handler reads its arguments into a struct, so a
//! missing or mistyped field is an error the model reads and can correct.
//!
//! Invariants: the descriptions are terse (they travel with every request);
//! none of these tools grants rights, approves anything or reads a secret.
//! `skill_script` writes a script skill only as a new build, which has no
//! rights until the owner approves it, and never over a skill the owner
//! approved.

use crate::approvals::Risk;
use crate::budget::Spend;
use crate::runtime::Runtime;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

/// Where a host tool is called from: the session (where a scheduled task
/// reports) and whether untrusted content is in it.
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    /// The session's key.
    pub session: &'a str,
    /// The conversation holds untrusted content, so what the model saves
    /// now may have been put in its mouth.
    pub untrusted: bool,
}

/// One host tool. `run` gets the runtime, the caller and the arguments as
/// JSON.
pub struct HostTool {
    /// The name the model calls.
    pub name: &'static str,
    /// Its fixed risk.
    pub risk: Risk,
    /// What it does, for the model.
    pub description: &'static str,
    /// JSON Schema of the arguments.
    pub schema: &'static str,
    run: for<'a> fn(&'a Runtime, Caller<'a>, &'a str) -> BoxFuture<'a, Result<Value, String>>,
}

/// Every host tool.
pub const HOST_TOOLS: [HostTool; 8] = [
    HostTool {
        name: "memory_save",
        risk: Risk::Write,
        description: "Remember a fact across conversations.",
        schema: r#"{"type":"object","properties":{"text":{"type":"string"},"tags":{"type":"array","items":{"type":"string"}},"pinned":{"type":"boolean","description":"keep in every context"}},"required":["text"]}"#,
        run: memory_save,
    },
    HostTool {
        name: "memory_search",
        risk: Risk::Read,
        description: "Search long-term memory.",
        schema: r#"{"type":"object","properties":{"query":{"type":"string"},"limit":{"type":"integer"}},"required":["query"]}"#,
        run: memory_search,
    },
    HostTool {
        name: "memory_forget",
        risk: Risk::Write,
        description: "Forget a memory by id (the owner can bring it back for 30 days).",
        schema: r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"]}"#,
        run: memory_forget,
    },
    HostTool {
        name: "schedule_task",
        risk: Risk::Write,
        description: "Run a prompt later; the result comes to this chat. when: `every 30m`, `at 2026-12-01T08:00` or cron `0 8 * * mon-fri`.",
        schema: r#"{"type":"object","properties":{"when":{"type":"string"},"tz":{"type":"string","description":"IANA zone"},"prompt":{"type":"string"},"check":{"type":"string","description":"read-only SKILL.TOOL that must report something first"}},"required":["when","prompt"]}"#,
        run: schedule_task,
    },
    HostTool {
        name: "list_tasks",
        risk: Risk::Read,
        description: "List scheduled tasks.",
        schema: r#"{"type":"object","properties":{}}"#,
        run: list_tasks,
    },
    HostTool {
        name: "cancel_task",
        risk: Risk::Write,
        description: "Cancel a task by id (the owner can bring it back for 30 days).",
        schema: r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"]}"#,
        run: cancel_task,
    },
    HostTool {
        name: "skill_script",
        risk: Risk::Write,
        description: "Write a JavaScript skill: only `name` gets the format; `source` checks it (`test` runs a tool without rights); `propose` asks the owner.",
        schema: r#"{"type":"object","properties":{"name":{"type":"string"},"source":{"type":"string"},"test":{"type":"object","properties":{"tool":{"type":"string"},"args":{"type":"object"}}},"propose":{"type":"boolean"}},"required":["name"]}"#,
        run: skill_script,
    },
    HostTool {
        name: "read_skill",
        risk: Risk::Read,
        description: "Load a knowledge skill's instructions.",
        schema: r#"{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}"#,
        run: read_skill,
    },
];

/// Whether `name` is a host tool that reads or writes the owner's memory.
pub fn is_memory_tool(name: &str) -> bool {
    name.starts_with("memory_")
}

/// Whether `name` is a host tool only the owner may cause: a scheduled task
/// runs unattended with the owner's rights and memory, the task list shows
/// the owner's prompts and chats, and a proposed script replaces the skill
/// of its name until the owner approves it. A paired person allowed writes
/// is allowed them in their conversation, not as the owner.
pub fn is_owner_tool(name: &str) -> bool {
    matches!(name, "schedule_task" | "list_tasks" | "cancel_task" | "skill_script")
}

/// Call host tool `name`; None if there is none. The answer is the text
/// the model reads and whether the call succeeded.
pub async fn call(rt: &Runtime, caller: Caller<'_>, name: &str, args: &str) -> Option<(String, bool)> {
    let tool = HOST_TOOLS.iter().find(|t| t.name == name)?;
    Some(match (tool.run)(rt, caller, args).await {
        Ok(Value::String(text)) => (text, true),
        Ok(v) => (v.to_string(), true),
        Err(e) => (format!("error: {e}"), false),
    })
}

fn parse<'de, T: Deserialize<'de>>(args: &'de str) -> Result<T, String> {
    serde_json::from_str(args).map_err(|e| format!("bad arguments: {e}"))
}

/// The argument of the tools that take only an id.
#[derive(Deserialize)]
struct Id {
    id: u64,
}

#[derive(Deserialize)]
struct Save {
    text: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    pinned: bool,
}

fn memory_save<'a>(rt: &'a Runtime, caller: Caller<'a>, args: &'a str) -> BoxFuture<'a, Result<Value, String>> {
    Box::pin(async move {
        let a: Save = parse(args)?;
        crate::memory::check(&a.text, &a.tags)?;
        // Saved after untrusted content (an "always" answer lets it run
        // unasked), it stays untrusted when it is recalled, and such saves
        // are counted as a component's are: words in a page must not fill
        // the disk or the embedding bill.
        if caller.untrusted {
            let (budget, limits) = rt.agent_budget();
            if !budget.take(Spend::MemorySaves, 1) {
                let refusal = Spend::MemorySaves.refusal(limits, "memories saved after untrusted content");
                return Err(format!("{refusal}; the owner can save it with `wasiclaw memory add`"));
            }
        }
        let source = if caller.untrusted { "agent-after-untrusted" } else { "agent" };
        // A pinned memory is in every context, and an untrusted one marks
        // every conversation untrusted: pinned by a page's words, it would
        // hold every later write (and every scheduled one) for the owner.
        let pinned = a.pinned && !caller.untrusted;
        let m = rt.memories().save(&a.text, a.tags, source, pinned).await.map_err(|e| e.to_string())?;
        if a.pinned && !pinned {
            return Ok(json!({
                "saved": m.id,
                "pinned": false,
                "why": format!("saved, not pinned: after untrusted content only the owner pins (`wasiclaw memory pin {}`)", m.id),
            }));
        }
        Ok(json!({ "saved": m.id }))
    })
}

#[derive(Deserialize)]
struct Search {
    query: String,
    limit: Option<u64>,
}

fn memory_search<'a>(rt: &'a Runtime, _: Caller<'a>, args: &'a str) -> BoxFuture<'a, Result<Value, String>> {
    Box::pin(async move {
        let a: Search = parse(args)?;
        if a.query.len() > crate::memory::MEMORY_QUERY_MAX {
            return Err(format!("a query is at most {} bytes; use a few words", crate::memory::MEMORY_QUERY_MAX));
        }
        let limit = a.limit.unwrap_or(5).clamp(1, 20) as usize;
        let hits = rt.memories().search(&a.query, limit).await.map_err(|e| e.to_string())?;
        let date = |ms| jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default();
        let hits: Vec<Value> = hits
            .iter()
            .map(|h| {
                let m = &h.memory;
                json!({ "id": m.id, "date": date(m.created_ms), "source": m.source, "text": m.text })
            })
            .collect();
        Ok(json!(hits))
    })
}

/// Whether a `memory_search` answer holds a memory a component saved.
pub fn cites_outside(answer: &str) -> bool {
    let hits: Vec<Value> = serde_json::from_str(answer).unwrap_or_default();
    hits.iter().any(|h| crate::memory::outside_source(h["source"].as_str().unwrap_or_default()))
}

fn memory_forget<'a>(rt: &'a Runtime, _: Caller<'a>, args: &'a str) -> BoxFuture<'a, Result<Value, String>> {
    Box::pin(async move {
        let Id { id } = parse(args)?;
        Ok(json!({ "forgotten": rt.db.memory_set_aside(id).map_err(|e| e.to_string())? }))
    })
}

#[derive(Deserialize)]
struct Schedule {
    when: String,
    tz: Option<String>,
    prompt: String,
    check: Option<String>,
}

/// A task reports back to the session that scheduled it, and carries its
/// trust: a task asked for after untrusted content runs untrusted. Its
/// check runs unattended at every fire without the owner's policy, so the
/// model may only pick one that reads and is allowed unasked.
fn schedule_task<'a>(rt: &'a Runtime, caller: Caller<'a>, args: &'a str) -> BoxFuture<'a, Result<Value, String>> {
    Box::pin(async move {
        let a: Schedule = parse(args)?;
        if let Some(check) = &a.check {
            check_reads_unasked(rt, check)?;
        }
        let system_tz = || jiff::tz::TimeZone::system().iana_name().unwrap_or("UTC").to_string();
        let job = crate::jobs::NewJob {
            when: a.when,
            tz: a.tz.unwrap_or_else(system_tz),
            prompt: Some(a.prompt),
            chat: caller.session.to_string(),
            check: a.check,
            untrusted: caller.untrusted,
            by_model: true,
            ..Default::default()
        };
        let j = rt.schedule(job, jiff::Timestamp::now().as_millisecond()).map_err(|e| e.to_string())?;
        Ok(json!({ "id": j.id, "schedule": j.when.describe(), "next_run_ms": j.next_ms }))
    })
}

fn check_reads_unasked(rt: &Runtime, spec: &str) -> Result<(), String> {
    let (skill, tool) = crate::jobs::tool_ref(spec).map_err(|e| e.to_string())?;
    let declared = rt.registry.find(&skill).and_then(|e| e.loaded.ok()).and_then(|l| {
        l.manifest.tools.iter().find(|t| t.name == tool).map(|t| crate::approvals::declared_risk(&t.parameters))
    });
    // An unknown tool is the scheduler's to name.
    let Some(declared) = declared else { return Ok(()) };
    match crate::approvals::rule(&rt.config.tools, spec, declared) {
        (Risk::Read, crate::approvals::Policy::Allow) => Ok(()),
        (risk, policy) => Err(format!(
            "{spec} cannot be a check: a check runs unattended at every fire, so it must only read and be allowed \
             without asking ({spec} is {}, policy {}). Schedule without a check, or ask the owner to \
             add one with `wasiclaw cron add`.",
            crate::text::variant_name(&risk),
            crate::text::variant_name(&policy)
        )),
    }
}

fn list_tasks<'a>(rt: &'a Runtime, _: Caller<'a>, _: &'a str) -> BoxFuture<'a, Result<Value, String>> {
    Box::pin(async move {
        let jobs = rt.db.jobs().map_err(|e| e.to_string())?;
        let jobs: Vec<Value> = jobs
            .iter()
            .map(|j| {
                json!({ "id": j.id, "name": j.name, "schedule": j.when.describe(), "next_run_ms": j.next_ms, "chat": j.target })
            })
            .collect();
        Ok(json!(jobs))
    })
}

fn cancel_task<'a>(rt: &'a Runtime, _: Caller<'a>, args: &'a str) -> BoxFuture<'a, Result<Value, String>> {
    Box::pin(async move {
        let Id { id } = parse(args)?;
        Ok(json!({ "cancelled": rt.db.job_set_aside(id).map_err(|e| e.to_string())? }))
    })
}

#[derive(Deserialize)]
struct Name {
    name: String,
}

fn read_skill<'a>(rt: &'a Runtime, _: Caller<'a>, args: &'a str) -> BoxFuture<'a, Result<Value, String>> {
    Box::pin(async move {
        let Name { name } = parse(args)?;
        rt.knowledge
            .instructions(&rt.paths.skills_dir(), &name)
            .map(Value::String)
            .ok_or_else(|| format!("no knowledge skill named `{name}`"))
    })
}

/// What `skill_script` with only a name answers: how to write a script skill.
pub const SCRIPT_GUIDE: &str = r#"A script skill is one JavaScript file, run in a sandbox with only the rights the owner grants.
Declare `const manifest = { name, description, tools: [{ name, description, parameters }], capabilities }` and one function per tool, named as the tool, taking the arguments object and returning a string or a JSON value.
- names: a-z, 0-9, `-` and `_` (no `__`, no `_` at either end; the skill's and a tool's together at most 62); `parameters`: a JSON Schema object (add "x-risk": "read" to a tool that only reads).
- capabilities: { http: [{ url: "https://api.example.com/v1/", methods: ["GET"], headers: { authorization: "Bearer {API_KEY}" } }], secrets: [], kv: true, notify: true, memory_read: true, memory_write: true } (ask only for what you need; a secret appears only as {NAME} in a rule's url or headers, filled in by the host).
- API (synchronous): kv.get(key) → string|null, kv.set(key, value), kv.delete(key), kv.list(prefix); fetch(url, { method, headers, body }) → { status, headers, text }; config.get(key); memory.search(query, limit), memory.save(text, tags); notify.send(text); hmac(secret, data) → hex; log(...).
- A denied call throws an Error with `code` "denied" (others: "invalid-input", "not-found", "failed"); catch it to explain.
- Each call starts fresh: keep state in kv. Limits: CPU, memory and time per call.
Check it with `source` (and `test: { tool, args }`), then `propose: true`; the owner approves it before it runs with any right."#;

#[derive(Deserialize)]
struct Script {
    name: String,
    source: Option<String>,
    test: Option<ScriptTest>,
    #[serde(default)]
    propose: bool,
}

#[derive(Deserialize)]
struct ScriptTest {
    tool: String,
    #[serde(default)]
    args: Value,
}

/// Draft, test and propose a script skill. A proposal's summary comes back
/// as `proposal`, written by the host from the manifest it read, for the
/// chat to show the owner (not the model's account of it).
fn skill_script<'a>(rt: &'a Runtime, _: Caller<'a>, args: &'a str) -> BoxFuture<'a, Result<Value, String>> {
    Box::pin(async move {
        let a: Script = parse(args)?;
        let Some(source) = a.source else { return Ok(Value::String(SCRIPT_GUIDE.into())) };
        let test_args = a.test.as_ref().map(|t| if t.args.is_null() { "{}".to_string() } else { t.args.to_string() });
        let test = a.test.as_ref().zip(test_args.as_deref()).map(|(t, args)| (t.tool.as_str(), args));
        let (manifest, tested) = rt.try_script(&a.name, &source, test).await.map_err(|e| e.to_string())?;
        let mut out = json!({
            "tools": manifest.tools.iter().map(|t| &t.name).collect::<Vec<_>>(),
            "asks_for": manifest.capabilities.describe(),
        });
        if let Some(t) = tested {
            out["test"] = json!({ "ok": t.ok, "output": t.output, "denied": t.denials });
        }
        if a.propose {
            let info = rt.propose_script(&a.name, &source).await.map_err(|e| e.to_string())?;
            out["proposal"] = Value::String(proposal(&info));
        }
        Ok(out)
    })
}

/// What the owner reads about a proposed script skill. The model wrote
/// the tools' descriptions, so what it asks for comes first and each
/// description is one short line: none can push the rights out of sight
/// or print a "asks for" line of its own.
fn proposal(info: &crate::runtime::SkillInfo) -> String {
    use crate::text::{one_line, truncate};
    let tools: Vec<String> =
        info.tools.iter().map(|t| format!("{} ({})", t.name, one_line(&truncate(&t.description, 80)))).collect();
    let asks = info.requested.as_ref().map(|c| c.describe()).unwrap_or_default();
    let asks = if asks.is_empty() { "nothing".to_string() } else { asks.join("; ") };
    format!(
        "New skill proposed: {name} (build {build}), in {file}\nasks for: {asks}\ntools: {tools}\n\
         Read it with `wasiclaw skills inspect {name}` or in the file. `/approve {name} {build}` here approves \
         this build with everything it asks for, `/reject {name}` deletes it; to grant less, use \
         `wasiclaw skills grant {name}`.",
        name = info.name,
        build = crate::component::short_sha(&info.sha256),
        file = info.file.display(),
        tools = tools.join(", "),
    )
}

#[cfg(test)]
mod tests {
    /// What the model is told of undoing a forget or a cancel is what the
    /// store keeps: the descriptions are literals beside the constants.
    #[test]
    fn the_undo_the_model_is_told_of_is_the_one_kept() {
        let said = |name: &str| super::HOST_TOOLS.iter().find(|t| t.name == name).unwrap().description;
        assert!(said("memory_forget").contains(&format!("for {} days", crate::memory::FORGOTTEN_DAYS)));
        assert!(said("cancel_task").contains(&format!("for {} days", crate::jobs::CANCELLED_DAYS)));
    }
}
