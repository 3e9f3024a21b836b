//! `weather`: current weather and a short forecast from Open-Meteo
//! (no API key). The API base URLs come from config (`api_base`,
//! `geocoding_base`) so the owner can point it at a mirror; the requested
//! HTTP rules follow them.

use serde_json::{Value, json};
use wasiclaw_sdk::{Capabilities, Error, Manifest, args, config, http, http_get, read_tool, unknown_tool};

struct Weather;

/// Where: a city name, or coordinates.
#[derive(serde::Deserialize)]
struct Place {
    city: Option<String>,
    latitude: Option<f64>,
    longitude: Option<f64>,
}

fn api_base() -> String {
    config::get("api_base").unwrap_or_else(|| "https://api.open-meteo.com".into()).trim_end_matches('/').into()
}

fn geocoding_base() -> String {
    config::get("geocoding_base")
        .unwrap_or_else(|| "https://geocoding-api.open-meteo.com".into())
        .trim_end_matches('/')
        .into()
}

fn get_json(url: &str) -> Result<Value, Error> {
    let resp = http::get(url)?;
    if resp.status != 200 {
        return Err(Error::Failed(format!("weather service answered HTTP {}: {}", resp.status, resp.text())));
    }
    serde_json::from_slice(&resp.body).map_err(|e| Error::Failed(format!("weather service sent bad JSON: {e}")))
}

/// WMO weather interpretation codes, as documented by Open-Meteo.
fn describe_code(code: i64) -> &'static str {
    match code {
        0 => "clear sky",
        1..=3 => "partly cloudy",
        45 | 48 => "fog",
        51..=57 => "drizzle",
        61..=67 => "rain",
        71..=77 => "snow",
        80..=82 => "rain showers",
        85 | 86 => "snow showers",
        95..=99 => "thunderstorm",
        _ => "unknown",
    }
}

impl wasiclaw_sdk::Skill for Weather {
    fn describe() -> Manifest {
        Manifest {
            name: "weather".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Current weather and forecast for a place (Open-Meteo)".into(),
            tools: vec![read_tool(
                "current",
                "Current weather and today's range for a city or coordinates.",
                json!({
                    "type": "object",
                    "properties": {
                        "city": {"type": "string"},
                        "latitude": {"type": "number"}, "longitude": {"type": "number"}
                    }
                }),
            )],
            capabilities: Capabilities {
                http: vec![http_get(&format!("{}/v1/", api_base())), http_get(&format!("{}/v1/", geocoding_base()))],
                ..Default::default()
            },
        }
    }

    fn invoke(name: String, json: String) -> Result<String, Error> {
        if name != "current" {
            return Err(unknown_tool(&name));
        }
        let (lat, lon, place) = match args::<Place>(&json)? {
            Place { city: Some(city), .. } => {
                let city = city.as_str();
                let found = get_json(&format!("{}/v1/search?count=1&name={}", geocoding_base(), http::encode(city)))?;
                let hit =
                    found["results"].get(0).ok_or_else(|| Error::NotFound(format!("no place called `{city}`")))?;
                let label =
                    format!("{}, {}", hit["name"].as_str().unwrap_or(city), hit["country"].as_str().unwrap_or(""));
                (hit["latitude"].as_f64().unwrap_or(0.0), hit["longitude"].as_f64().unwrap_or(0.0), label)
            }
            Place { latitude: Some(lat), longitude: Some(lon), .. } => (lat, lon, format!("{lat},{lon}")),
            _ => return Err(Error::InvalidInput("give a `city`, or `latitude` and `longitude`".into())),
        };
        let data = get_json(&format!(
            "{}/v1/forecast?latitude={lat}&longitude={lon}&current=temperature_2m,wind_speed_10m,weather_code&daily=temperature_2m_max,temperature_2m_min&forecast_days=1&timezone=auto",
            api_base()
        ))?;
        let cur = &data["current"];
        Ok(json!({
            "place": place,
            "temperature_c": cur["temperature_2m"],
            "wind_kmh": cur["wind_speed_10m"],
            "conditions": describe_code(cur["weather_code"].as_i64().unwrap_or(-1)),
            "today_min_c": data["daily"]["temperature_2m_min"].get(0),
            "today_max_c": data["daily"]["temperature_2m_max"].get(0),
        })
        .to_string())
    }
}

wasiclaw_sdk::export!(Weather);
