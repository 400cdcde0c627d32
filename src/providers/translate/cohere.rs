//! Cohere v2 chat (`POST /v2/chat`): requests from the canonical model, responses and stream
//! events to it.

use serde_json::{Map, Value, json};

use super::canonical::{
    ChatRequest, ChatResponse, Event, Finish, Part, Refused, ResponseFormat, Role, ToolCall, ToolChoice, Usage,
    is_inert,
};

/// Extra OpenAI fields Cohere takes under the same or another name.
const EXTRAS: &[(&str, &str)] =
    &[("seed", "seed"), ("presence_penalty", "presence_penalty"), ("frequency_penalty", "frequency_penalty")];

fn content(parts: &[Part]) -> Value {
    if let [Part::Text(t)] = parts {
        return Value::String(t.clone());
    }
    Value::Array(
        parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => json!({"type": "text", "text": t}),
                Part::Image { url } => json!({"type": "image_url", "image_url": {"url": url}}),
            })
            .collect(),
    )
}

/// Writes a Cohere v2 chat request.
pub fn request_to(req: &ChatRequest) -> Result<Value, Refused> {
    let mut body = Map::new();
    for (k, v) in &req.extra {
        match EXTRAS.iter().find(|(from, _)| from == k) {
            Some((_, to)) => {
                body.insert((*to).to_string(), v.clone());
            }
            None if is_inert(v) || (k == "n" && v.as_u64() == Some(1)) => {}
            None => return Err(Refused::new(k.clone(), "not supported by Cohere")),
        }
    }
    let mut messages: Vec<Value> = req.system.iter().map(|s| json!({"role": "system", "content": s})).collect();
    for m in &req.messages {
        messages.push(match m.role {
            Role::User => json!({"role": "user", "content": content(&m.parts)}),
            Role::Assistant => {
                let mut a = json!({"role": "assistant"});
                if m.parts.iter().any(|p| !matches!(p, Part::Text(t) if t.is_empty())) && !m.parts.is_empty() {
                    a["content"] = content(&m.parts);
                }
                if !m.tool_calls.is_empty() {
                    a["tool_calls"] = super::openai::tool_calls_json(&m.tool_calls);
                }
                a
            }
            Role::Tool => json!({"role": "tool", "tool_call_id": m.tool_call_id, "content": content(&m.parts)}),
        });
    }
    body.insert("model".into(), req.model.clone().into());
    body.insert("messages".into(), Value::Array(messages));
    if !req.tools.is_empty() {
        body.insert("tools".into(), super::openai::tools_json(&req.tools));
    }
    match &req.tool_choice {
        None | Some(ToolChoice::Auto) => {}
        Some(ToolChoice::None) => {
            body.insert("tool_choice".into(), "NONE".into());
        }
        Some(ToolChoice::Required) => {
            body.insert("tool_choice".into(), "REQUIRED".into());
        }
        Some(ToolChoice::Named(_)) => {
            return Err(Refused::new("tool_choice", "Cohere cannot be told which tool to call"));
        }
    }
    if let Some(n) = req.max_tokens {
        body.insert("max_tokens".into(), n.into());
    }
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.top_p {
        body.insert("p".into(), p.into());
    }
    if !req.stop.is_empty() {
        body.insert("stop_sequences".into(), req.stop.clone().into());
    }
    if req.stream {
        body.insert("stream".into(), true.into());
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            body.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            body.insert("response_format".into(), json!({"type": "json_object", "json_schema": schema}));
        }
        Some(ResponseFormat::Text) | None => {}
    }
    Ok(Value::Object(body))
}

fn finish_from(s: &str) -> Finish {
    match s {
        "MAX_TOKENS" => Finish::Length,
        "TOOL_CALL" => Finish::ToolCalls,
        _ => Finish::Stop,
    }
}

fn usage_from(u: &Value) -> Usage {
    let n = |p: &str| u.pointer(p).and_then(Value::as_u64);
    Usage {
        input: n("/tokens/input_tokens").or_else(|| n("/billed_units/input_tokens")).unwrap_or(0),
        output: n("/tokens/output_tokens").or_else(|| n("/billed_units/output_tokens")).unwrap_or(0),
        cached_input: n("/cached_tokens").unwrap_or(0),
    }
}

fn calls_from(v: Option<&Value>) -> Vec<ToolCall> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| ToolCall {
            id: c.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
            name: c.pointer("/function/name").and_then(Value::as_str).unwrap_or_default().to_string(),
            arguments: c.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}").to_string(),
        })
        .collect()
}

/// Reads a Cohere v2 chat response.
pub fn response_from(v: &Value) -> Result<ChatResponse, String> {
    let message = v.get("message").ok_or("the answer has no message")?;
    let text = message
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("text").and_then(Value::as_str))
        .collect();
    Ok(ChatResponse {
        id: v.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
        model: String::new(),
        text,
        tool_calls: calls_from(message.get("tool_calls")),
        finish: finish_from(v.get("finish_reason").and_then(Value::as_str).unwrap_or("COMPLETE")),
        usage: v.get("usage").map(usage_from).unwrap_or_default(),
    })
}

/// The readable message of a Cohere error body.
#[must_use]
pub fn error_message(v: &Value) -> Option<String> {
    v.get("message").and_then(Value::as_str).map(str::to_string)
}

/// Cohere v2 stream events to canonical events.
#[derive(Default)]
pub struct StreamDecoder {
    calls: usize,
}

impl StreamDecoder {
    /// The events of one SSE event.
    pub fn decode(&mut self, event: &str, data: &str) -> Vec<Event> {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return if event == "error" { vec![Event::Error(data.to_string())] } else { Vec::new() };
        };
        match v.get("type").and_then(Value::as_str).unwrap_or(event) {
            "message-start" => vec![Event::Start {
                id: v.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
                model: String::new(),
            }],
            "content-delta" => {
                let t = v.pointer("/delta/message/content/text").and_then(Value::as_str).unwrap_or_default();
                if t.is_empty() { Vec::new() } else { vec![Event::Text(t.to_string())] }
            }
            "tool-call-start" => {
                let index = self.calls;
                self.calls += 1;
                let call = v.pointer("/delta/message/tool_calls").cloned().unwrap_or_default();
                let mut out = vec![Event::ToolStart {
                    index,
                    id: call.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
                    name: call.pointer("/function/name").and_then(Value::as_str).unwrap_or_default().to_string(),
                }];
                if let Some(a) = call.pointer("/function/arguments").and_then(Value::as_str).filter(|a| !a.is_empty()) {
                    out.push(Event::ToolArgs { index, delta: a.to_string() });
                }
                out
            }
            "tool-call-delta" => {
                let a = v
                    .pointer("/delta/message/tool_calls/function/arguments")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if a.is_empty() {
                    Vec::new()
                } else {
                    vec![Event::ToolArgs { index: self.calls.saturating_sub(1), delta: a.to_string() }]
                }
            }
            "message-end" => {
                let mut out = Vec::new();
                if let Some(r) = v.pointer("/delta/finish_reason").and_then(Value::as_str) {
                    out.push(Event::Finish(finish_from(r)));
                }
                if let Some(u) = v.pointer("/delta/usage") {
                    out.push(Event::Usage(usage_from(u)));
                }
                out
            }
            _ => Vec::new(),
        }
    }
}
