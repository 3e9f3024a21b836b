//! Tool approvals: each tool's risk and the owner's policy for it, the
//! questions waiting for the owner's answer, and the "always" answers kept
//! in the database.
//!
//! Invariants:
//! - A skill declares a tool's risk as `"x-risk"` in its parameter schema
//!   (none means `write`); the owner may raise it in `[tools."SKILL.TOOL"]`,
//!   never lower it. Host tools have fixed risks.
//! - A tool set to `ask`, or any tool above `read` in a turn whose context
//!   holds untrusted content (a skill's output, a non-admin's message),
//!   runs only after the owner allows it, unless they answered "always" for
//!   it or opted out of the untrusted-content question for it. An "always"
//!   answer is the approved build's: approving a changed one drops it
//!   (`Store::update_grant`).
//! - Only the owner answers: the terminal, the authenticated web page, or
//!   an admin in their own chat. An unanswered question is a denial after
//!   `[agent] approval_timeout_s`; unattended runs cannot ask at all.
//! - A question in a chat app shows every field of the call's arguments
//!   ([`arguments_for_owner`]): the model writes them, so a long value must
//!   not push the field that matters out of sight.
//!
//! Pure types and an in-memory registry only, so config and pairing can
//! name a risk without importing upwards; the "always" answers are a table
//! of `store.rs`, the asking is the agent's.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::oneshot;

/// What a tool can do, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Only reads.
    Read,
    /// Changes the owner's data.
    Write,
    /// Sends messages to others.
    Send,
    /// Spends money.
    Spend,
}

/// The owner's standing policy for one tool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Runs without asking.
    Allow,
    /// Asks the owner first.
    Ask,
    /// Never runs.
    Deny,
}

/// The owner's answer to one question.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Answer {
    /// Allow this call.
    Once,
    /// Allow this call and every later one of this tool.
    Always,
    /// Do not run it.
    Deny,
}

impl Answer {
    /// `/allow`, `/always`, `/deny` (and y/a/n at the terminal).
    pub fn parse(word: &str) -> Option<Answer> {
        match word.trim_start_matches('/').to_ascii_lowercase().as_str() {
            "allow" | "once" | "y" | "yes" => Some(Answer::Once),
            "always" | "a" => Some(Answer::Always),
            "deny" | "n" | "no" => Some(Answer::Deny),
            _ => None,
        }
    }
}

/// `[tools."SKILL.TOOL"]` in config.toml.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolConfig {
    /// allow (the default for read and write), ask (for send and spend) or deny.
    pub policy: Option<Policy>,
    /// Raise the risk the skill declared; a lower value is ignored.
    pub risk: Option<Risk>,
    /// Run without asking even after untrusted content was read.
    pub trust_after_untrusted: bool,
}

/// The risk a skill declares for a tool in its schema; `write` if none.
pub fn declared_risk(parameters: &serde_json::Value) -> Risk {
    parameters.get("x-risk").and_then(|r| serde_json::from_value(r.clone()).ok()).unwrap_or(Risk::Write)
}

/// The effective risk and policy of a tool.
pub fn rule(tools: &std::collections::BTreeMap<String, ToolConfig>, name: &str, declared: Risk) -> (Risk, Policy) {
    let cfg = tools.get(name).cloned().unwrap_or_default();
    let risk = cfg.risk.map_or(declared, |r| r.max(declared));
    let default = if risk >= Risk::Send { Policy::Ask } else { Policy::Allow };
    (risk, cfg.policy.unwrap_or(default))
}

/// Questions waiting for the owner, by id.
#[derive(Default)]
pub struct Pending {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
}

impl Pending {
    /// A new question; the receiver gets the answer. Ids are random (six
    /// digits, unique among those waiting), so a stale `/allow N` from
    /// before a restart cannot answer a new question.
    pub fn open(&self) -> (u64, oneshot::Receiver<Answer>) {
        let mut bytes = [0u8; 4];
        let random = getrandom::fill(&mut bytes).map(|_| u32::from_le_bytes(bytes) as u64);
        let mut id = 100_000 + random.unwrap_or_else(|_| self.next.fetch_add(7919, Ordering::Relaxed)) % 900_000;
        let mut waiting = self.waiting.lock().unwrap();
        while waiting.contains_key(&id) {
            id = 100_000 + (id + 1) % 900_000;
        }
        let (tx, rx) = oneshot::channel();
        waiting.insert(id, tx);
        (id, rx)
    }

    /// Answer question `id`; false if nobody waits for it (any more).
    pub fn answer(&self, id: u64, answer: Answer) -> bool {
        self.waiting.lock().unwrap().remove(&id).is_some_and(|tx| tx.send(answer).is_ok())
    }

    /// Drop a question nobody will answer now.
    pub fn forget(&self, id: u64) {
        self.waiting.lock().unwrap().remove(&id);
    }
}

/// Fields of a call shown in a chat app's question, each cut to
/// [`SHOWN_VALUE`] characters.
const SHOWN_FIELDS: usize = 30;
const SHOWN_VALUE: usize = 120;

/// A call's arguments as the owner reads them in a chat app: one line per
/// field (`to.name: "Ada"`, nested fields by path), each value cut short,
/// so no value can hide another field. Past [`SHOWN_FIELDS`] it says how
/// many fields are not shown and to deny unless they were checked.
pub fn arguments_for_owner(arguments: &str) -> String {
    fn walk(path: String, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
        let join = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
        match value {
            serde_json::Value::Object(map) if !map.is_empty() => {
                map.iter().for_each(|(k, v)| walk(join(k), v, out));
            }
            serde_json::Value::Array(items) if !items.is_empty() => {
                items.iter().enumerate().for_each(|(i, v)| walk(format!("{path}[{i}]"), v, out));
            }
            leaf => out.push((path, leaf.to_string())),
        }
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(arguments) else {
        return crate::text::one_line(&crate::text::truncate(arguments, SHOWN_VALUE * 4)).into_owned();
    };
    let mut fields = Vec::new();
    walk(String::new(), &value, &mut fields);
    let mut lines: Vec<String> = fields
        .iter()
        .take(SHOWN_FIELDS)
        .map(|(path, v)| {
            let cut = match v.char_indices().nth(SHOWN_VALUE) {
                Some((at, _)) => format!("{}… ({} more characters)", &v[..at], v[at..].chars().count()),
                None => v.clone(),
            };
            crate::text::one_line(&format!("  {path}: {cut}")).into_owned()
        })
        .collect();
    if fields.len() > SHOWN_FIELDS {
        lines.push(format!(
            "  …and {} more fields not shown: deny unless you check them in `wasiclaw chat` or the web page",
            fields.len() - SHOWN_FIELDS
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long value cannot hide the field after it, however deep.
    #[test]
    fn every_field_of_a_call_is_shown_to_the_owner() {
        let padded = serde_json::json!({
            "subject": "lunch?",
            "body": "x".repeat(5000),
            "to": {"name": "Ada", "address": "mallory@evil.example"},
            "cc": ["y".repeat(3000), "eve@evil.example"],
        });
        let shown = arguments_for_owner(&padded.to_string());
        for field in ["subject: \"lunch?\"", "to.address: \"mallory@evil.example\"", "cc[1]: \"eve@evil.example\""] {
            assert!(shown.contains(field), "{field} is hidden in:\n{shown}");
        }
        assert!(shown.contains("(4882 more characters)"), "{shown}");
        assert!(shown.len() < 1000, "{}", shown.len());
        let many: serde_json::Map<String, serde_json::Value> =
            (0..40).map(|i| (format!("f{i:02}"), i.into())).collect();
        let shown = arguments_for_owner(&serde_json::Value::Object(many).to_string());
        assert!(shown.contains("f29: 29") && !shown.contains("f30"), "{shown}");
        assert!(shown.contains("10 more fields not shown: deny unless you check them"), "{shown}");
        assert_eq!(arguments_for_owner("not json \u{1b}[2J"), "not json \\u{1b}[2J");
    }

    #[test]
    fn a_skill_declares_the_risk_and_the_owner_can_only_raise_it() {
        let declared = declared_risk(&serde_json::json!({"type": "object", "x-risk": "read"}));
        assert_eq!(declared, Risk::Read);
        assert_eq!(declared_risk(&serde_json::json!({"type": "object"})), Risk::Write, "undeclared is write");
        let mut tools = std::collections::BTreeMap::new();
        assert_eq!(rule(&tools, "a.b", Risk::Read), (Risk::Read, Policy::Allow));
        assert_eq!(rule(&tools, "a.b", Risk::Send), (Risk::Send, Policy::Ask));
        tools.insert("a.b".to_string(), ToolConfig { risk: Some(Risk::Read), ..Default::default() });
        assert_eq!(rule(&tools, "a.b", Risk::Spend).0, Risk::Spend, "never lowered");
        tools.insert(
            "a.b".to_string(),
            ToolConfig { risk: Some(Risk::Spend), policy: Some(Policy::Allow), ..Default::default() },
        );
        assert_eq!(rule(&tools, "a.b", Risk::Read), (Risk::Spend, Policy::Allow));
    }
}
