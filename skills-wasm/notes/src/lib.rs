//! `notes`: short notes kept in the skill's own kv namespace.
//! Keys are `note:<id>`; `next-id` holds the id counter.

use serde::Deserialize;
use serde_json::json;
use wasiclaw_sdk::{Capabilities, Error, Manifest, args, kv, read_tool, tool, unknown_tool};

struct Notes;

fn next_id() -> Result<u64, Error> {
    let id = match kv::get("next-id")? {
        Some(bytes) => String::from_utf8_lossy(&bytes).parse().unwrap_or(1),
        None => 1,
    };
    kv::set("next-id", (id + 1).to_string().as_bytes())?;
    Ok(id)
}

#[derive(Deserialize)]
struct Text {
    text: String,
}

#[derive(Deserialize)]
struct Query {
    query: String,
}

/// A note's id, as a number or (as models sometimes send it) a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum NoteId {
    Number(u64),
    Text(String),
}

#[derive(Deserialize)]
struct Delete {
    id: NoteId,
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

    fn invoke(name: String, json: String) -> Result<String, Error> {
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
                let Text { text } = args(&json)?;
                if text.trim().is_empty() {
                    return Err(Error::InvalidInput("`text` is empty".into()));
                }
                let id = next_id()?;
                kv::set(&format!("note:{id}"), text.as_bytes())?;
                Ok(json!({"id": id}).to_string())
            }
            "list" => Ok(render(all()?)),
            "search" => {
                let q = args::<Query>(&json)?.query.to_lowercase();
                Ok(render(all()?.into_iter().filter(|(_, t)| t.to_lowercase().contains(&q)).collect()))
            }
            "delete" => {
                let key = match args::<Delete>(&json)?.id {
                    NoteId::Number(n) => format!("note:{n}"),
                    NoteId::Text(s) => format!("note:{s}"),
                };
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
