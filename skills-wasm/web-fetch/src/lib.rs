//! `web-fetch`: fetch a page and return it as readable text.
//!
//! It asks for GET on any host and port (`https://*:*/`, `http://*:*/`); the owner grants the
//! hosts they choose, e.g. `wasiclaw skills grant web-fetch --http https://en.wikipedia.org/`.

use serde_json::json;
use wasiclaw_sdk::{Capabilities, Error, Manifest, args, http, http_get, read_tool, unknown_tool};

struct WebFetch;

#[derive(serde::Deserialize)]
struct Fetch {
    url: String,
    max_chars: Option<u64>,
}

/// Strip markup: drop script/style/head contents and tags, decode the common
/// entities, collapse blank runs. Good enough for a model to read.
fn readable(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let lower = html.to_ascii_lowercase();
    let mut i = 0;
    while i < html.len() {
        if html[i..].starts_with('<') {
            // For elements whose content is not text, jump to their end tag.
            let skip_to = ["script", "style", "head", "noscript", "svg"].iter().find_map(|t| {
                let rest = &lower[i + 1..];
                let after = rest.strip_prefix(t)?.chars().next();
                if !matches!(after, Some('>' | ' ' | '\n' | '\t' | '/')) {
                    return None;
                }
                lower[i..].find(&format!("</{t}")).map(|e| i + e)
            });
            let from = skip_to.unwrap_or(i);
            let end = html[from..].find('>').map(|e| from + e + 1).unwrap_or(html.len());
            let tag = lower.get(i..end.min(i + 4)).unwrap_or("");
            if ["<p", "<br", "<li", "<h", "<tr", "<di", "</p", "</h", "</l", "</t", "</d"]
                .iter()
                .any(|t| tag.starts_with(t))
            {
                out.push('\n');
            }
            i = end;
        } else {
            let end = html[i..].find('<').map(|e| i + e).unwrap_or(html.len());
            out.push_str(&html[i..end]);
            i = end;
        }
    }
    let decoded = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    let mut text = String::new();
    for line in decoded.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")) {
        if !line.is_empty() {
            text.push_str(&line);
            text.push('\n');
        }
    }
    text
}

impl wasiclaw_sdk::Skill for WebFetch {
    fn describe() -> Manifest {
        Manifest {
            name: "web-fetch".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Fetches a web page as readable text".into(),
            tools: vec![read_tool(
                "fetch",
                "Fetch a URL and return its readable text.",
                json!({
                    "type": "object",
                    "properties": {
                        "url": {"type": "string"},
                        "max_chars": {"type": "integer", "description": "truncate the text (default 20000)"}
                    },
                    "required": ["url"]
                }),
            )],
            capabilities: Capabilities {
                http: vec![http_get("https://*:*/"), http_get("http://*:*/")],
                ..Default::default()
            },
        }
    }

    fn invoke(name: String, json: String) -> Result<String, Error> {
        if name != "fetch" {
            return Err(unknown_tool(&name));
        }
        let Fetch { url, max_chars } = args(&json)?;
        let max = max_chars.unwrap_or(20_000) as usize;
        let resp = http::get(&url)?;
        if resp.status >= 400 {
            return Err(Error::Failed(format!("{url} answered HTTP {}", resp.status)));
        }
        let body = resp.text();
        let is_html =
            resp.header("content-type").is_some_and(|c| c.contains("html")) || body.trim_start().starts_with('<');
        let mut text = if is_html { readable(&body) } else { body };
        if let Some((cut, _)) = text.char_indices().nth(max) {
            text.truncate(cut);
            text.push_str("\n[truncated]");
        }
        Ok(json!({"url": url, "status": resp.status, "text": text}).to_string())
    }
}

wasiclaw_sdk::export!(WebFetch);
