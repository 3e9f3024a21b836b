//! NAME: a wasiclaw skill in Rust.
//!
//! Build:   cargo build --release --target wasm32-wasip2
//! Install: cp target/wasm32-wasip2/release/CRATE.wasm ~/.local/share/wasiclaw/skills/NAME.wasm
//! Then:    wasiclaw skills approve NAME
//!
//! `wit/` is the contract (wasiclaw:plugin); `describe` says what the skill
//! offers and asks for, `invoke` runs one tool. Each call is a fresh sandbox.

wit_bindgen::generate!({ path: "wit", world: "wasiclaw:plugin/skill", generate_all });

use exports::wasiclaw::plugin::tool_api::Guest;
use wasiclaw::plugin::types::{Capabilities, Error, Manifest, Rights, Tool};

struct Skill;

impl Guest for Skill {
    fn describe() -> Manifest {
        let hello = Tool {
            name: "hello".into(),
            description: "Greet someone by name".into(),
            parameters: r#"{"type":"object","properties":{"name":{"type":"string"}},"x-risk":"read"}"#.into(),
        };
        Manifest {
            name: "NAME".into(),
            version: "0.1.0".into(),
            description: "Says hello".into(),
            tools: vec![hello],
            // Ask for what the tools need, e.g. `rights: Rights::KV`.
            capabilities: Capabilities { http: vec![], secrets: vec![], rights: Rights::empty() },
        }
    }

    fn invoke(tool: String, args_json: String) -> Result<String, Error> {
        let args: serde_json::Value =
            serde_json::from_str(&args_json).map_err(|e| Error::InvalidInput(format!("arguments: {e}")))?;
        match tool.as_str() {
            "hello" => Ok(format!("Hello, {}!", args["name"].as_str().unwrap_or("world"))),
            other => Err(Error::NotFound(format!("no tool {other}"))),
        }
    }
}

export!(Skill);
