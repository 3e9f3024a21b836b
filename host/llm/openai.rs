//! OpenAI-compatible chat completions (OpenAI, OpenRouter, Ollama,
//! llama.cpp, vLLM, LM Studio), streamed.

use super::{ChatRequest, ChatResponse, LlmError, Message, Sse, ToolCall, json};
use crate::config::ProviderConfig;
use serde_json::{Value, json};

/// The JSON body of `req` for this API (also what `/context` measures).
pub fn body(config: &ProviderConfig, req: &ChatRequest<'_>) -> Value {
    let mut messages = vec![json!({"role": "system", "content": req.system})];
    for m in req.messages {
        messages.push(match m {
            Message::User { text } => json!({"role": "user", "content": text}),
            Message::Assistant { text, tool_calls } if tool_calls.is_empty() => {
                json!({"role": "assistant", "content": text})
            }
            Message::Assistant { text, tool_calls } => json!({
                "role": "assistant",
                "content": if text.is_empty() { Value::Null } else { text.clone().into() },
                "tool_calls": tool_calls.iter().map(|c| json!({
                    "id": c.id, "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                })).collect::<Vec<_>>(),
            }),
            Message::Tool { call_id, content, .. } => {
                json!({"role": "tool", "tool_call_id": call_id, "content": content})
            }
        });
    }
    let mut body = json!({
        "model": config.model,
        "messages": messages,
        "max_tokens": req.max_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
            .collect();
    }
    body
}

/// The request to an OpenAI-compatible chat completions API, body to come.
pub fn post(client: &reqwest::Client, config: &ProviderConfig, key: Option<&str>) -> reqwest::RequestBuilder {
    let request = client.post(format!("{}/chat/completions", config.base_url.trim_end_matches('/')));
    match key {
        Some(key) => request.bearer_auth(key),
        None => request,
    }
}

/// Read a streamed answer.
pub async fn read(events: &mut Sse, on_text: &mut (dyn FnMut(&str) + Send)) -> Result<ChatResponse, LlmError> {
    let mut out = ChatResponse::default();
    // Tool calls arrive in fragments keyed by index.
    let mut calls: Vec<ToolCall> = Vec::new();
    while let Some(event) = events.next().await? {
        if event.data.trim() == "[DONE]" {
            break;
        }
        let v = json(&event.data)?;
        if let Some(err) = v.get("error") {
            return Err(LlmError::Protocol(format!("provider error in stream: {err}")));
        }
        if let Some(usage) = v.get("usage").filter(|u| u.is_object()) {
            out.usage.input = usage["prompt_tokens"].as_u64().unwrap_or(0);
            out.usage.output = usage["completion_tokens"].as_u64().unwrap_or(0);
        }
        let Some(delta) = v["choices"].get(0).map(|c| &c["delta"]) else { continue };
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            on_text(text);
            out.text.push_str(text);
        }
        for fragment in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = fragment["index"].as_u64().unwrap_or(calls.len() as u64) as usize;
            if index > 128 {
                return Err(LlmError::Protocol(format!("tool call index {index} out of range")));
            }
            while calls.len() <= index {
                calls.push(ToolCall { id: String::new(), name: String::new(), arguments: String::new() });
            }
            let call = &mut calls[index];
            if let Some(id) = fragment["id"].as_str() {
                call.id = id.to_string();
            }
            if let Some(name) = fragment["function"]["name"].as_str() {
                call.name.push_str(name);
            }
            if let Some(args) = fragment["function"]["arguments"].as_str() {
                call.arguments.push_str(args);
            }
        }
    }
    for (i, mut call) in calls.into_iter().enumerate() {
        if call.id.is_empty() {
            call.id = format!("call_{i}");
        }
        out.tool_calls.push(call);
    }
    Ok(out)
}
