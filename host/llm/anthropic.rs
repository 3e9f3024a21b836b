//! Anthropic Messages API, streamed.

use super::{ChatRequest, ChatResponse, LlmError, Message, Sse, ToolCall, json};
use crate::config::ProviderConfig;
use serde_json::{Value, json};

/// The JSON body of `req` for this API (also what `/context` measures).
pub fn body(config: &ProviderConfig, req: &ChatRequest<'_>) -> Value {
    // Anthropic wants alternating roles: tool results travel in a user
    // message, and adjacent same-role messages are merged.
    let mut messages: Vec<Value> = Vec::new();
    for m in req.messages {
        let (role, blocks) = match m {
            Message::User { text } => ("user", vec![json!({"type": "text", "text": text})]),
            Message::Assistant { text, tool_calls } => {
                let mut blocks = Vec::new();
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for c in tool_calls {
                    let input: Value =
                        serde_json::from_str(&c.arguments).ok().filter(Value::is_object).unwrap_or(json!({}));
                    blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
                }
                ("assistant", blocks)
            }
            Message::Tool { call_id, content, is_error, .. } => (
                "user",
                vec![json!({"type": "tool_result", "tool_use_id": call_id, "content": content, "is_error": is_error})],
            ),
        };
        match messages.last_mut() {
            Some(last) if last["role"] == role => last["content"].as_array_mut().expect("built above").extend(blocks),
            _ => messages.push(json!({"role": role, "content": blocks})),
        }
    }
    let mut body = json!({
        "model": config.model,
        "max_tokens": req.max_tokens,
        "system": req.system,
        "messages": messages,
        "stream": true,
    });
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
            .collect();
    }
    body
}

/// The request to an Anthropic Messages API, body to come.
pub fn post(client: &reqwest::Client, config: &ProviderConfig, key: Option<&str>) -> reqwest::RequestBuilder {
    let url = format!("{}/v1/messages", config.base_url.trim_end_matches('/').trim_end_matches("/v1"));
    let request = client.post(url).header("anthropic-version", "2023-06-01");
    match key {
        Some(key) => request.header("x-api-key", key),
        None => request,
    }
}

/// Read a streamed answer.
pub async fn read(events: &mut Sse, on_text: &mut (dyn FnMut(&str) + Send)) -> Result<ChatResponse, LlmError> {
    let mut out = ChatResponse::default();
    // Content blocks by index: Some(call) for tool_use, None for text.
    let mut blocks: Vec<Option<ToolCall>> = Vec::new();
    while let Some(event) = events.next().await? {
        if event.data.is_empty() {
            continue;
        }
        let v = json(&event.data)?;
        match v["type"].as_str().unwrap_or_default() {
            "message_start" => out.usage.input = v["message"]["usage"]["input_tokens"].as_u64().unwrap_or(0),
            "content_block_start" => {
                let block = &v["content_block"];
                blocks.push((block["type"] == "tool_use").then(|| ToolCall {
                    id: block["id"].as_str().unwrap_or_default().to_string(),
                    name: block["name"].as_str().unwrap_or_default().to_string(),
                    arguments: String::new(),
                }));
            }
            "content_block_delta" => {
                let delta = &v["delta"];
                let index = v["index"].as_u64().unwrap_or(0) as usize;
                match delta["type"].as_str().unwrap_or_default() {
                    "text_delta" => {
                        let text = delta["text"].as_str().unwrap_or_default();
                        on_text(text);
                        out.text.push_str(text);
                    }
                    "input_json_delta" => {
                        let Some(Some(call)) = blocks.get_mut(index) else {
                            return Err(LlmError::Protocol(format!(
                                "input_json_delta for block {index}, not a tool_use"
                            )));
                        };
                        call.arguments.push_str(delta["partial_json"].as_str().unwrap_or_default());
                    }
                    _ => {}
                }
            }
            "message_delta" => out.usage.output = v["usage"]["output_tokens"].as_u64().unwrap_or(out.usage.output),
            "error" => {
                let message = v["error"]["message"].as_str().unwrap_or("unknown error").to_string();
                return Err(if v["error"]["type"] == "overloaded_error" {
                    LlmError::Overloaded(message)
                } else {
                    LlmError::Protocol(message)
                });
            }
            "message_stop" => break,
            _ => {}
        }
    }
    for mut call in blocks.into_iter().flatten() {
        // A tool_use with no input deltas means empty input.
        if call.arguments.is_empty() {
            call.arguments = "{}".into();
        }
        out.tool_calls.push(call);
    }
    Ok(out)
}
