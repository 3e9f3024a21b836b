//! `notes`: short notes kept in the skill's own kv namespace.
//! Keys are `note:<id>`; `next-id` holds the id counter.

use serde_json::json;
use wasiclaw_sdk::{Capabilities, Error, Manifest, arg_str, kv, parse_args, read_tool, tool, unknown_tool};

struct Notes;

fn next_id() -> Result<u64, Error> {
    let id = match kv::get("next-id")? {
        Some(bytes) => String::from_utf8_lossy(&bytes).parse().unwrap_or(1),
        None => 1,
    };
    kv::set("next-id", (id + 1).to_string().as_bytes())?;
    Ok(id)
}

fn note_id(args: &serde_json::Map<String, serde_json::Value>) -> Result<String, Error> {
    match args.get("id") {
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        _ => Err(Error::InvalidInput("missing `id`".into())),
    }
}

impl wasiclaw_sdk::Skill for Notes {
    fn describe() -> Manifest {
        let id = json!({"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]});
        Manifest {
            name: "notes".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Keeps short notes".into(),
            tools: vec![
                tool(
                    "add",
                    "Save a note; returns its id.",
                    json!({
                        "type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]
                    }),
                ),
                read_tool("list", "List all notes, oldest first.", json!({"type": "object", "properties": {}})),
                read_tool(
                    "search",
                    "Notes containing a word or phrase (case-insensitive).",
                    json!({
                        "type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]
                    }),
                ),
                tool("delete", "Delete a note by id.", id),
            ],
            capabilities: Capabilities { rights: wasiclaw_sdk::Rights::KV, ..Default::default() },
        }
    }

    fn invoke(name: String, args: String) -> Result<String, Error> {
        let args = parse_args(&args)?;
        let all = || -> Result<Vec<(u64, String)>, Error> {
            let mut notes = Vec::new();
            for key in kv::list_keys("note:")? {
                if let (Some(id), Some(text)) = (key[5..].parse::<u64>().ok(), kv::get(&key)?) {
                    notes.push((id, String::from_utf8_lossy(&text).into_owned()));
                }
            }
            notes.sort();
            Ok(notes)
        };
        let render = |notes: Vec<(u64, String)>| {
            json!(notes.into_iter().map(|(id, text)| json!({"id": id, "text": text})).collect::<Vec<_>>()).to_string()
        };
        match name.as_str() {
            "add" => {
                let text = arg_str(&args, "text")?;
                if text.trim().is_empty() {
                    return Err(Error::InvalidInput("`text` is empty".into()));
                }
                let id = next_id()?;
                kv::set(&format!("note:{id}"), text.as_bytes())?;
                Ok(json!({"id": id}).to_string())
            }
            "list" => Ok(render(all()?)),
            "search" => {
                let q = arg_str(&args, "query")?.to_lowercase();
                Ok(render(all()?.into_iter().filter(|(_, t)| t.to_lowercase().contains(&q)).collect()))
            }
            "delete" => {
                let key = format!("note:{}", note_id(&args)?);
                if kv::get(&key)?.is_none() {
                    return Err(Error::NotFound(format!("no note {}", &key[5..])));
                }
                kv::delete(&key)?;
                Ok(json!({"deleted": &key[5..]}).to_string())
            }
            other => Err(unknown_tool(other)),
        }
    }
}

wasiclaw_sdk::export!(Notes);
