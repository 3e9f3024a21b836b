//! The guest SDK for wasiclaw skills written in Rust.
//!
//! It owns the generated bindings of the `skill` world (so every skill uses
//! the same contract version), the `export!` macro, manifest helpers and a
//! blocking HTTP client over `wasi:http`. Skills depend only on this crate.
//!
//! ```ignore
//! struct Clock;
//! impl wasiclaw_sdk::Skill for Clock { ... }
//! wasiclaw_sdk::export!(Clock);
//! ```

pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "wasiclaw:plugin/skill",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "wasiclaw_sdk::bindings",
        generate_all,
    });
}

pub mod http;

pub use bindings::export;

pub use bindings::exports::wasiclaw::plugin::tool_api::Guest as Skill;
use bindings::wasiclaw::plugin::log::{Level, log as host_log};
pub use bindings::wasiclaw::plugin::types::{Capabilities, Error, HttpRule, Manifest, Tool};
pub use bindings::wasiclaw::plugin::{config, crypto, kv, notify};

pub fn log_info(msg: &str) {
    host_log(Level::Info, msg)
}

pub fn log_warn(msg: &str) {
    host_log(Level::Warn, msg)
}

/// A tool description; `parameters` is a JSON Schema object.
pub fn tool(name: &str, description: &str, parameters: serde_json::Value) -> Tool {
    Tool { name: name.into(), description: description.into(), parameters: parameters.to_string() }
}

/// A GET-only HTTP rule without injected headers.
pub fn http_get(url: &str) -> HttpRule {
    HttpRule { url: url.into(), methods: vec!["GET".into()], headers: vec![] }
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            http: vec![],
            secrets: vec![],
            kv: false,
            notify: false,
            files: false,
            memory_read: false,
            memory_write: false,
        }
    }
}

/// Parse the arguments of a tool call into a JSON object.
pub fn parse_args(args_json: &str) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    match serde_json::from_str(args_json) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::InvalidInput("arguments must be a JSON object".into())),
        Err(e) => Err(Error::InvalidInput(format!("arguments are not valid JSON: {e}"))),
    }
}

/// A required string argument.
pub fn arg_str<'a>(args: &'a serde_json::Map<String, serde_json::Value>, key: &str) -> Result<&'a str, Error> {
    args.get(key)
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::InvalidInput(format!("missing string argument `{key}`")))
}

/// A required numeric argument.
pub fn arg_f64(args: &serde_json::Map<String, serde_json::Value>, key: &str) -> Result<f64, Error> {
    args.get(key)
        .and_then(|v| v.as_f64())
        .ok_or_else(|| Error::InvalidInput(format!("missing number argument `{key}`")))
}

pub fn unknown_tool(tool: &str) -> Error {
    Error::NotFound(format!("no tool named `{tool}`"))
}
