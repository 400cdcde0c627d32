//! OpenAI Chat Completions: requests both ways, responses both ways, stream events both ways.

use serde_json::{Map, Value, json};

use super::canonical::{
    ChatRequest, ChatResponse, Event, Finish, Message, Part, Refused, ResponseFormat, Role, Tool, ToolCall, ToolChoice,
    Usage, unix_now,
};
use super::sse::frame;

/// Fields this adapter reads into the canonical request; anything else goes to `extra`.
const KNOWN: &[&str] = &[
    "model",
    "messages",
    "tools",
    "tool_choice",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "stream_options",
    "response_format",
    "user",
    "n",
];

fn text_of(v: &Value, field: &str) -> Result<Vec<Part>, Refused> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![Part::Text(s.clone())]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item.get("type").and_then(Value::as_str) {
                Some("text") => item
                    .get("text")
                    .and_then(Value::as_str)
                    .map(|t| Part::Text(t.to_string()))
                    .ok_or_else(|| Refused::new(format!("{field}[{i}].text"), "must be a string")),
                Some("image_url") => {
                    let url = item.get("image_url").and_then(|u| u.get("url").or(Some(u))).and_then(Value::as_str);
                    url.map(|u| Part::Image { url: u.to_string() })
                        .ok_or_else(|| Refused::new(format!("{field}[{i}].image_url.url"), "must be a string"))
                }
                Some(other) => Err(Refused::new(format!("{field}[{i}].type"), format!("'{other}' is not supported"))),
                None => Err(Refused::new(format!("{field}[{i}].type"), "is required")),
            })
            .collect(),
        _ => Err(Refused::new(field, "must be a string or an array of content parts")),
    }
}

fn tools_from(obj: &Map<String, Value>) -> Result<Vec<Tool>, Refused> {
    let mut tools = Vec::new();
    for (i, t) in obj.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let field = format!("tools[{i}]");
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(Refused::new(format!("{field}.type"), "must be \"function\""));
        }
        let f = t.get("function").ok_or_else(|| Refused::new(format!("{field}.function"), "is required"))?;
        let name = f.get("name").and_then(Value::as_str).filter(|n| !n.is_empty());
        let name = name.ok_or_else(|| Refused::new(format!("{field}.function.name"), "is required"))?;
        let parameters = f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        if !parameters.is_object() {
            return Err(Refused::new(format!("{field}.function.parameters"), "must be a JSON Schema object"));
        }
        let description = f.get("description").and_then(Value::as_str).map(str::to_string);
        tools.push(Tool { name: name.to_string(), description, parameters });
    }
    Ok(tools)
}

/// Reads `messages[i]` into `req` (system text, or a turn).
fn message_from(i: usize, m: &Value, req: &mut ChatRequest) -> Result<(), Refused> {
    let field = format!("messages[{i}]");
    let role =
        m.get("role").and_then(Value::as_str).ok_or_else(|| Refused::new(format!("{field}.role"), "is required"))?;
    let parts = text_of(m.get("content").unwrap_or(&Value::Null), &format!("{field}.content"))?;
    match role {
        "system" | "developer" => {
            for p in parts {
                match p {
                    Part::Text(t) => req.system.push(t),
                    Part::Image { .. } => {
                        return Err(Refused::new(format!("{field}.content"), "a system message holds text only"));
                    }
                }
            }
        }
        "user" => {
            req.messages.push(Message { role: Role::User, parts, tool_calls: Vec::new(), tool_call_id: None });
        }
        "assistant" => {
            let mut calls = Vec::new();
            for (j, c) in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
                let f = c
                    .get("function")
                    .ok_or_else(|| Refused::new(format!("{field}.tool_calls[{j}].function"), "is required"))?;
                calls.push(ToolCall {
                    id: c.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
                    name: f
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| Refused::new(format!("{field}.tool_calls[{j}].function.name"), "is required"))?
                        .to_string(),
                    arguments: f.get("arguments").and_then(Value::as_str).unwrap_or("{}").to_string(),
                });
            }
            req.messages.push(Message { role: Role::Assistant, parts, tool_calls: calls, tool_call_id: None });
        }
        "tool" => {
            let id = m
                .get("tool_call_id")
                .and_then(Value::as_str)
                .ok_or_else(|| Refused::new(format!("{field}.tool_call_id"), "is required"))?;
            req.messages.push(Message {
                role: Role::Tool,
                parts,
                tool_calls: Vec::new(),
                tool_call_id: Some(id.to_string()),
            });
        }
        other => return Err(Refused::new(format!("{field}.role"), format!("'{other}' is not a role"))),
    }
    Ok(())
}

/// Reads an OpenAI chat request (the model already stripped of its provider prefix or not).
pub fn request_from(body: &Value) -> Result<ChatRequest, Refused> {
    let obj = body.as_object().ok_or_else(|| Refused::new("body", "must be a JSON object"))?;
    let model = obj.get("model").and_then(Value::as_str).ok_or_else(|| Refused::new("model", "is required"))?;
    let mut req = ChatRequest { model: model.to_string(), ..ChatRequest::default() };
    let messages =
        obj.get("messages").and_then(Value::as_array).ok_or_else(|| Refused::new("messages", "must be an array"))?;
    for (i, m) in messages.iter().enumerate() {
        message_from(i, m, &mut req)?;
    }
    req.tools = tools_from(obj)?;
    req.tool_choice = match obj.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => return Err(Refused::new("tool_choice", format!("'{other}' is not auto, none or required"))),
        }),
        Some(v) => Some(ToolChoice::Named(
            v.pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| Refused::new("tool_choice.function.name", "is required"))?
                .to_string(),
        )),
    };
    req.max_tokens = obj.get("max_completion_tokens").or_else(|| obj.get("max_tokens")).and_then(Value::as_u64);
    req.temperature = obj.get("temperature").and_then(Value::as_f64);
    req.top_p = obj.get("top_p").and_then(Value::as_f64);
    req.stop = match obj.get("stop") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    };
    req.stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    req.include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    req.response_format = match obj.get("response_format") {
        None | Some(Value::Null) => None,
        Some(f) => Some(match f.get("type").and_then(Value::as_str) {
            Some("text") => ResponseFormat::Text,
            Some("json_object") => ResponseFormat::JsonObject,
            Some("json_schema") => ResponseFormat::JsonSchema {
                name: f.pointer("/json_schema/name").and_then(Value::as_str).unwrap_or("response").to_string(),
                schema: f
                    .pointer("/json_schema/schema")
                    .cloned()
                    .ok_or_else(|| Refused::new("response_format.json_schema.schema", "is required"))?,
            },
            _ => return Err(Refused::new("response_format.type", "must be text, json_object or json_schema")),
        }),
    };
    req.user = obj.get("user").and_then(Value::as_str).map(str::to_string);
    if obj.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        req.extra.insert("n".into(), obj["n"].clone());
    }
    for (k, v) in obj {
        if !KNOWN.contains(&k.as_str()) {
            req.extra.insert(k.clone(), v.clone());
        }
    }
    Ok(req)
}

fn content_json(parts: &[Part]) -> Value {
    if let [Part::Text(t)] = parts {
        return Value::String(t.clone());
    }
    if parts.is_empty() {
        return Value::Null;
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

/// Function tools in OpenAI's shape (also Cohere's).
#[must_use]
pub fn tools_json(tools: &[Tool]) -> Value {
    tools
        .iter()
        .map(|t| {
            let mut f = json!({"name": t.name, "parameters": t.parameters});
            if let Some(d) = &t.description {
                f["description"] = d.clone().into();
            }
            json!({"type": "function", "function": f})
        })
        .collect()
}

/// Tool calls in OpenAI's shape (also Cohere's).
#[must_use]
pub fn tool_calls_json(calls: &[ToolCall]) -> Value {
    calls
        .iter()
        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
        .collect()
}

/// Writes an OpenAI chat request (for an OpenAI-compatible target of another format's client).
#[must_use]
pub fn request_to(req: &ChatRequest) -> Value {
    let mut messages = Vec::new();
    for s in &req.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    for m in &req.messages {
        let mut out = Map::new();
        match m.role {
            Role::User => {
                out.insert("role".into(), "user".into());
                out.insert("content".into(), content_json(&m.parts));
            }
            Role::Assistant => {
                out.insert("role".into(), "assistant".into());
                out.insert("content".into(), content_json(&m.parts));
                if !m.tool_calls.is_empty() {
                    out.insert("tool_calls".into(), tool_calls_json(&m.tool_calls));
                }
            }
            Role::Tool => {
                out.insert("role".into(), "tool".into());
                out.insert("tool_call_id".into(), m.tool_call_id.clone().unwrap_or_default().into());
                out.insert("content".into(), content_json(&m.parts));
            }
        }
        messages.push(Value::Object(out));
    }
    let mut body = Map::new();
    body.insert("model".into(), req.model.clone().into());
    body.insert("messages".into(), Value::Array(messages));
    if !req.tools.is_empty() {
        body.insert("tools".into(), tools_json(&req.tools));
    }
    if let Some(c) = &req.tool_choice {
        body.insert(
            "tool_choice".into(),
            match c {
                ToolChoice::Auto => "auto".into(),
                ToolChoice::None => "none".into(),
                ToolChoice::Required => "required".into(),
                ToolChoice::Named(n) => json!({"type": "function", "function": {"name": n}}),
            },
        );
    }
    if let Some(n) = req.max_tokens {
        body.insert("max_tokens".into(), n.into());
    }
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.top_p {
        body.insert("top_p".into(), p.into());
    }
    if !req.stop.is_empty() {
        body.insert("stop".into(), req.stop.clone().into());
    }
    if req.stream {
        body.insert("stream".into(), true.into());
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            body.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(ResponseFormat::JsonSchema { name, schema }) => {
            body.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema}}),
            );
        }
        Some(ResponseFormat::Text) | None => {}
    }
    if let Some(u) = &req.user {
        body.insert("user".into(), u.clone().into());
    }
    for (k, v) in &req.extra {
        body.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Value::Object(body)
}

fn finish_from(s: &str) -> Finish {
    match s {
        "length" => Finish::Length,
        "tool_calls" | "function_call" => Finish::ToolCalls,
        "content_filter" => Finish::ContentFilter,
        _ => Finish::Stop,
    }
}

fn finish_to(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
        Finish::ContentFilter => "content_filter",
    }
}

fn usage_from(u: &Value) -> Usage {
    let n = |p: &str| u.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input: n("/prompt_tokens"),
        output: n("/completion_tokens"),
        cached_input: n("/prompt_tokens_details/cached_tokens"),
    }
}

fn usage_to(u: &Usage) -> Value {
    json!({"prompt_tokens": u.input, "completion_tokens": u.output, "total_tokens": u.input + u.output,
           "prompt_tokens_details": {"cached_tokens": u.cached_input}})
}

/// Reads an OpenAI chat completion.
pub fn response_from(v: &Value) -> Result<ChatResponse, String> {
    let choice = v.pointer("/choices/0").ok_or("the answer has no choices")?;
    let message = choice.get("message").ok_or("the answer's choice has no message")?;
    let text = match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
        _ => String::new(),
    };
    let tool_calls = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| ToolCall {
            id: c.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
            name: c.pointer("/function/name").and_then(Value::as_str).unwrap_or_default().to_string(),
            arguments: c.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}").to_string(),
        })
        .collect();
    Ok(ChatResponse {
        id: v.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
        model: v.get("model").and_then(Value::as_str).unwrap_or_default().to_string(),
        text,
        tool_calls,
        finish: finish_from(choice.get("finish_reason").and_then(Value::as_str).unwrap_or("stop")),
        usage: v.get("usage").map(usage_from).unwrap_or_default(),
    })
}

/// Writes an OpenAI chat completion.
#[must_use]
pub fn response_to(r: &ChatResponse) -> Value {
    let mut message = json!({"role": "assistant", "content": if r.text.is_empty() && !r.tool_calls.is_empty() { Value::Null } else { Value::String(r.text.clone()) }});
    if !r.tool_calls.is_empty() {
        message["tool_calls"] = tool_calls_json(&r.tool_calls);
    }
    json!({
        "id": r.id, "object": "chat.completion", "created": unix_now(), "model": r.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_to(r.finish), "logprobs": null}],
        "usage": usage_to(&r.usage),
    })
}

/// OpenAI's error body for a message and an HTTP status.
#[must_use]
pub fn error_to(status: u16, message: &str) -> Value {
    let kind = match status {
        400 | 404 | 409 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "api_error",
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
}

/// The readable message of an OpenAI error body.
#[must_use]
pub fn error_message(v: &Value) -> Option<String> {
    v.pointer("/error/message").and_then(Value::as_str).map(str::to_string)
}

/// OpenAI SSE chunks to events.
#[derive(Default)]
pub struct StreamDecoder {
    started: bool,
}

impl StreamDecoder {
    /// The events of one SSE event's data.
    pub fn decode(&mut self, event: &str, data: &str) -> Vec<Event> {
        if event == "error" {
            return vec![Event::Error(data.to_string())];
        }
        if data.trim() == "[DONE]" {
            return Vec::new();
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else { return Vec::new() };
        if v.get("error").is_some() {
            return vec![Event::Error(data.to_string())];
        }
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: v.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
                model: v.get("model").and_then(Value::as_str).unwrap_or_default().to_string(),
            });
        }
        if let Some(choice) = v.pointer("/choices/0") {
            if let Some(t) = choice.pointer("/delta/content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                out.push(Event::Text(t.to_string()));
            }
            for c in choice.pointer("/delta/tool_calls").and_then(Value::as_array).into_iter().flatten() {
                let index = c.get("index").and_then(Value::as_u64).and_then(|i| usize::try_from(i).ok()).unwrap_or(0);
                if let Some(name) = c.pointer("/function/name").and_then(Value::as_str) {
                    let id = c.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
                    out.push(Event::ToolStart { index, id, name: name.to_string() });
                }
                if let Some(a) = c.pointer("/function/arguments").and_then(Value::as_str).filter(|a| !a.is_empty()) {
                    out.push(Event::ToolArgs { index, delta: a.to_string() });
                }
            }
            if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
                out.push(Event::Finish(finish_from(f)));
            }
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            out.push(Event::Usage(usage_from(u)));
        }
        out
    }
}

/// Events to OpenAI SSE chunks.
pub struct StreamEncoder {
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
    usage: Option<Usage>,
    started: bool,
}

impl StreamEncoder {
    /// An encoder; `include_usage` when the client asked for the usage chunk.
    #[must_use]
    pub fn new(include_usage: bool) -> Self {
        Self {
            id: String::new(),
            model: String::new(),
            created: unix_now(),
            include_usage,
            usage: None,
            started: false,
        }
    }

    fn chunk(&self, delta: &Value, finish: Option<&str>) -> String {
        let v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]});
        frame(None, &v.to_string())
    }

    fn ensure_started(&mut self, out: &mut String) {
        if !self.started {
            self.started = true;
            if self.id.is_empty() {
                self.id = format!("chatcmpl-{}", uuid::Uuid::now_v7().simple());
            }
            out.push_str(&self.chunk(&json!({"role": "assistant", "content": ""}), None));
        }
    }

    /// The SSE text for one event.
    pub fn encode(&mut self, event: Event) -> String {
        let mut out = String::new();
        match event {
            Event::Start { id, model } => {
                if !id.is_empty() {
                    self.id = id;
                }
                self.model = model;
                self.ensure_started(&mut out);
            }
            Event::Text(t) => {
                self.ensure_started(&mut out);
                out.push_str(&self.chunk(&json!({"content": t}), None));
            }
            Event::ToolStart { index, id, name } => {
                self.ensure_started(&mut out);
                let call =
                    json!({"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}});
                out.push_str(&self.chunk(&json!({"tool_calls": [call]}), None));
            }
            Event::ToolArgs { index, delta } => {
                self.ensure_started(&mut out);
                out.push_str(
                    &self.chunk(&json!({"tool_calls": [{"index": index, "function": {"arguments": delta}}]}), None),
                );
            }
            Event::Finish(f) => {
                self.ensure_started(&mut out);
                out.push_str(&self.chunk(&json!({}), Some(finish_to(f))));
            }
            Event::Usage(u) => self.usage = Some(u),
            Event::Error(data) => out.push_str(&frame(Some("error"), &data)),
        }
        out
    }

    /// What ends the stream: the usage chunk when asked for, then `[DONE]`.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        if let (true, Some(u)) = (self.include_usage, self.usage) {
            let v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "usage": usage_to(&u)});
            out.push_str(&frame(None, &v.to_string()));
        }
        out.push_str(&frame(None, "[DONE]"));
        out
    }
}
