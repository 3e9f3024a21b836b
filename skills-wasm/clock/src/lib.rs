//! `clock`: the current time and time-zone conversion. Needs no capabilities:
//! the time-zone database is compiled in.

use jiff::{Timestamp, civil::DateTime, tz::TimeZone};
use serde::Deserialize;
use serde_json::json;
use wasiclaw_sdk::{Capabilities, Error, Manifest, args, read_tool, unknown_tool};

struct Clock;

#[derive(Deserialize)]
struct Now {
    tz: Option<String>,
}

#[derive(Deserialize)]
struct Convert {
    time: String,
    from: String,
    to: String,
}

fn zone(name: &str) -> Result<TimeZone, Error> {
    TimeZone::get(name)
        .map_err(|_| Error::InvalidInput(format!("unknown time zone `{name}` (use an IANA name like Europe/Berlin)")))
}

impl wasiclaw_sdk::Skill for Clock {
    fn describe() -> Manifest {
        Manifest {
            name: "clock".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Current time and time-zone conversion".into(),
            tools: vec![
                read_tool(
                    "now",
                    "The current date and time in a time zone (default UTC).",
                    json!({
                        "type": "object",
                        "properties": {"tz": {"type": "string", "description": "IANA time zone, e.g. Europe/Berlin"}}
                    }),
                ),
                read_tool(
                    "convert",
                    "Convert a local date-time from one time zone to another.",
                    json!({
                        "type": "object",
                        "properties": {
                            "time": {"type": "string", "description": "local time, e.g. 2026-03-29T09:30"},
                            "from": {"type": "string"}, "to": {"type": "string"}
                        },
                        "required": ["time", "from", "to"]
                    }),
                ),
            ],
            capabilities: Capabilities::default(),
        }
    }

    fn invoke(name: String, json: String) -> Result<String, Error> {
        match name.as_str() {
            "now" => {
                let Now { tz } = args(&json)?;
                let tz = tz.as_deref().unwrap_or("UTC");
                let now = Timestamp::now().to_zoned(zone(tz)?);
                Ok(json!({"time": now.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(), "tz": tz, "weekday": now.strftime("%A").to_string()}).to_string())
            }
            "convert" => {
                let Convert { time, from, to } = args(&json)?;
                let time: DateTime =
                    time.parse().map_err(|e| Error::InvalidInput(format!("`time` is not a local date-time: {e}")))?;
                let zoned = time.to_zoned(zone(&from)?).map_err(|e| Error::InvalidInput(e.to_string()))?;
                let out = zoned.with_time_zone(zone(&to)?);
                Ok(json!({"time": out.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(), "tz": to}).to_string())
            }
            other => Err(unknown_tool(other)),
        }
    }
}

wasiclaw_sdk::export!(Clock);
