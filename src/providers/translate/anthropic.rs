//! Anthropic Messages: requests both ways, responses both ways, stream events both ways.

use serde_json::{Map, Value, json};

use super::canonical::{
    ChatRequest, ChatResponse, Event, Finish, Message, Part, Refused, ResponseFormat, Role, Tool, ToolCall, ToolChoice,
    Usage, data_url, refuse_extras,
};
use super::sse::frame;

/// Anthropic requires `max_tokens`; this is used when the client gave none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

const KNOWN: &[&str] = &[
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "max_tokens",
    "temperature",
    "top_p",
    "stop_sequences",
    "stream",
    "metadata",
];

fn blocks_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            items.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

/// Reads `messages[i]` into `req` (tool results become their own turns).
fn message_from(i: usize, m: &Value, req: &mut ChatRequest) -> Result<(), Refused> {
    let field = format!("messages[{i}]");
    let role = match m.get("role").and_then(Value::as_str) {
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        _ => return Err(Refused::new(format!("{field}.role"), "must be user or assistant")),
    };
    let blocks = match m.get("content") {
        Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
        Some(Value::Array(a)) => a.clone(),
        _ => return Err(Refused::new(format!("{field}.content"), "must be a string or content blocks")),
    };
    let mut msg = Message { role, parts: Vec::new(), tool_calls: Vec::new(), tool_call_id: None };
    for (j, b) in blocks.iter().enumerate() {
        let bf = format!("{field}.content[{j}]");
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                msg.parts.push(Part::Text(b.get("text").and_then(Value::as_str).unwrap_or_default().to_string()));
            }
            Some("image") => {
                let src = b.get("source").ok_or_else(|| Refused::new(format!("{bf}.source"), "is required"))?;
                let url = match src.get("type").and_then(Value::as_str) {
                    Some("base64") => format!(
                        "data:{};base64,{}",
                        src.get("media_type").and_then(Value::as_str).unwrap_or("image/png"),
                        src.get("data").and_then(Value::as_str).unwrap_or_default()
                    ),
                    Some("url") => src.get("url").and_then(Value::as_str).unwrap_or_default().to_string(),
                    _ => return Err(Refused::new(format!("{bf}.source.type"), "must be base64 or url")),
                };
                msg.parts.push(Part::Image { url });
            }
            Some("tool_use") => msg.tool_calls.push(ToolCall {
                id: b.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
                name: b.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                arguments: b.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
            }),
            Some("tool_result") => {
                // A tool result is its own turn in the canonical model.
                let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or_default().to_string();
                let text = blocks_text(b.get("content").unwrap_or(&Value::Null));
                req.messages.push(Message {
                    role: Role::Tool,
                    parts: vec![Part::Text(text)],
                    tool_calls: Vec::new(),
                    tool_call_id: Some(id),
                });
            }
            Some("thinking" | "redacted_thinking") => {}
            Some(other) => return Err(Refused::new(format!("{bf}.type"), format!("'{other}' is not supported"))),
            None => return Err(Refused::new(format!("{bf}.type"), "is required")),
        }
    }
    if !msg.parts.is_empty() || !msg.tool_calls.is_empty() {
        req.messages.push(msg);
    }
    Ok(())
}

/// Reads an Anthropic Messages request.
pub fn request_from(body: &Value) -> Result<ChatRequest, Refused> {
    let obj = body.as_object().ok_or_else(|| Refused::new("body", "must be a JSON object"))?;
    let model = obj.get("model").and_then(Value::as_str).ok_or_else(|| Refused::new("model", "is required"))?;
    let mut req = ChatRequest { model: model.to_string(), ..ChatRequest::default() };
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(s @ (Value::String(_) | Value::Array(_))) => req.system.push(blocks_text(s)),
        Some(_) => return Err(Refused::new("system", "must be a string or text blocks")),
    }
    let messages =
        obj.get("messages").and_then(Value::as_array).ok_or_else(|| Refused::new("messages", "must be an array"))?;
    for (i, m) in messages.iter().enumerate() {
        message_from(i, m, &mut req)?;
    }
    for (i, t) in obj.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let name = t.get("name").and_then(Value::as_str).filter(|n| !n.is_empty());
        let name = name.ok_or_else(|| Refused::new(format!("tools[{i}].name"), "is required"))?;
        let parameters = t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"}));
        if !parameters.is_object() {
            return Err(Refused::new(format!("tools[{i}].input_schema"), "must be a JSON Schema object"));
        }
        let description = t.get("description").and_then(Value::as_str).map(str::to_string);
        req.tools.push(Tool { name: name.to_string(), description, parameters });
    }
    req.tool_choice = match obj.get("tool_choice").and_then(|c| c.get("type")).and_then(Value::as_str) {
        None => None,
        Some("auto") => Some(ToolChoice::Auto),
        Some("any") => Some(ToolChoice::Required),
        Some("none") => Some(ToolChoice::None),
        Some("tool") => Some(ToolChoice::Named(
            body.pointer("/tool_choice/name").and_then(Value::as_str).unwrap_or_default().to_string(),
        )),
        Some(other) => return Err(Refused::new("tool_choice.type", format!("'{other}' is not supported"))),
    };
    req.max_tokens = obj.get("max_tokens").and_then(Value::as_u64);
    req.temperature = obj.get("temperature").and_then(Value::as_f64);
    req.top_p = obj.get("top_p").and_then(Value::as_f64);
    req.stop = obj
        .get("stop_sequences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    req.stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    req.include_usage = true;
    req.user = body.pointer("/metadata/user_id").and_then(Value::as_str).map(str::to_string);
    for (k, v) in obj {
        if !KNOWN.contains(&k.as_str()) {
            req.extra.insert(k.clone(), v.clone());
        }
    }
    Ok(req)
}

fn image_block(url: &str) -> Value {
    match data_url(url) {
        Some((media, data)) => {
            json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
        }
        None => json!({"type": "image", "source": {"type": "url", "url": url}}),
    }
}

/// Writes an Anthropic Messages request.
pub fn request_to(req: &ChatRequest) -> Result<Value, Refused> {
    if let Some(n) = req.extra.get("n").and_then(Value::as_u64).filter(|n| *n > 1) {
        return Err(Refused::new("n", format!("Anthropic answers with one choice, not {n}")));
    }
    let mut extra = req.extra.clone();
    extra.remove("n");
    refuse_extras(&extra, "Anthropic")?;
    if matches!(req.response_format, Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. })) {
        return Err(Refused::new("response_format", "Anthropic has no JSON mode; describe the format in the prompt"));
    }
    let mut messages: Vec<Value> = Vec::new();
    let mut push = |role: &str, blocks: Vec<Value>| {
        // Consecutive turns of one role become one (tool results follow as user turns).
        if let Some(last) = messages.last_mut()
            && last["role"] == role
            && let Some(content) = last["content"].as_array_mut()
        {
            content.extend(blocks);
            return;
        }
        messages.push(json!({"role": role, "content": blocks}));
    };
    for m in &req.messages {
        let mut blocks: Vec<Value> = m
            .parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => json!({"type": "text", "text": t}),
                Part::Image { url } => image_block(url),
            })
            .collect();
        match m.role {
            Role::User => push("user", blocks),
            Role::Assistant => {
                blocks.retain(|b| b["type"] != "text" || b["text"].as_str().is_some_and(|t| !t.is_empty()));
                for c in &m.tool_calls {
                    let input: Value = serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
                }
                push("assistant", blocks);
            }
            Role::Tool => {
                let text: String = m
                    .parts
                    .iter()
                    .filter_map(|p| if let Part::Text(t) = p { Some(t.as_str()) } else { None })
                    .collect();
                push("user", vec![json!({"type": "tool_result", "tool_use_id": m.tool_call_id, "content": text})]);
            }
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), req.model.clone().into());
    body.insert("max_tokens".into(), req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS).into());
    body.insert("messages".into(), Value::Array(messages));
    if !req.system.is_empty() {
        body.insert("system".into(), req.system.join("\n\n").into());
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut v = json!({"name": t.name, "input_schema": t.parameters});
                if let Some(d) = &t.description {
                    v["description"] = d.clone().into();
                }
                v
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(c) = &req.tool_choice {
        body.insert(
            "tool_choice".into(),
            match c {
                ToolChoice::Auto => json!({"type": "auto"}),
                ToolChoice::None => json!({"type": "none"}),
                ToolChoice::Required => json!({"type": "any"}),
                ToolChoice::Named(n) => json!({"type": "tool", "name": n}),
            },
        );
    }
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.top_p {
        body.insert("top_p".into(), p.into());
    }
    if !req.stop.is_empty() {
        body.insert("stop_sequences".into(), req.stop.clone().into());
    }
    if req.stream {
        body.insert("stream".into(), true.into());
    }
    if let Some(u) = &req.user {
        body.insert("metadata".into(), json!({"user_id": u}));
    }
    Ok(Value::Object(body))
}

fn finish_from(s: &str) -> Finish {
    match s {
        "max_tokens" => Finish::Length,
        "tool_use" => Finish::ToolCalls,
        "refusal" => Finish::ContentFilter,
        _ => Finish::Stop,
    }
}

fn finish_to(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
        Finish::ContentFilter => "refusal",
    }
}

/// Anthropic counts cached input apart; the canonical input includes it.
fn usage_from(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cache_read_input_tokens");
    Usage {
        input: n("input_tokens") + cached + n("cache_creation_input_tokens"),
        output: n("output_tokens"),
        cached_input: cached,
    }
}

fn usage_to(u: Usage) -> Value {
    json!({"input_tokens": u.input.saturating_sub(u.cached_input), "output_tokens": u.output,
           "cache_read_input_tokens": u.cached_input, "cache_creation_input_tokens": 0})
}

/// Reads an Anthropic message.
pub fn response_from(v: &Value) -> Result<ChatResponse, String> {
    let content = v.get("content").and_then(Value::as_array).ok_or("the answer has no content")?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for b in content {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => tool_calls.push(ToolCall {
                id: b.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
                name: b.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                arguments: b.get("input").map_or_else(|| "{}".into(), Value::to_string),
            }),
            _ => {}
        }
    }
    Ok(ChatResponse {
        id: v.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
        model: v.get("model").and_then(Value::as_str).unwrap_or_default().to_string(),
        text,
        tool_calls,
        finish: finish_from(v.get("stop_reason").and_then(Value::as_str).unwrap_or("end_turn")),
        usage: v.get("usage").map(usage_from).unwrap_or_default(),
    })
}

/// Writes an Anthropic message.
#[must_use]
pub fn response_to(r: &ChatResponse) -> Value {
    let mut content = Vec::new();
    if !r.text.is_empty() {
        content.push(json!({"type": "text", "text": r.text}));
    }
    for c in &r.tool_calls {
        let input: Value = serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
        content.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
    }
    let id =
        if r.id.starts_with("msg_") { r.id.clone() } else { format!("msg_{}", r.id.trim_start_matches("chatcmpl-")) };
    json!({"id": id, "type": "message", "role": "assistant", "model": r.model, "content": content,
           "stop_reason": finish_to(r.finish), "stop_sequence": null, "usage": usage_to(r.usage)})
}

/// Anthropic's error body for a message and an HTTP status.
#[must_use]
pub fn error_to(status: u16, message: &str) -> Value {
    let kind = match status {
        400 | 404 | 409 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// The readable message of an Anthropic error body.
#[must_use]
pub fn error_message(v: &Value) -> Option<String> {
    v.pointer("/error/message").and_then(Value::as_str).map(str::to_string)
}

/// Anthropic SSE events to canonical events.
#[derive(Default)]
pub struct StreamDecoder {
    /// Anthropic block index → tool call position.
    tools: Vec<(u64, usize)>,
    usage: Usage,
}

impl StreamDecoder {
    /// The events of one SSE event.
    pub fn decode(&mut self, event: &str, data: &str) -> Vec<Event> {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return if event == "error" { vec![Event::Error(data.to_string())] } else { Vec::new() };
        };
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(event);
        match kind {
            "message_start" => {
                let m = v.get("message").cloned().unwrap_or_default();
                if let Some(u) = m.get("usage") {
                    self.usage = usage_from(u);
                }
                vec![Event::Start {
                    id: m.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
                    model: m.get("model").and_then(Value::as_str).unwrap_or_default().to_string(),
                }]
            }
            "content_block_start" if v.pointer("/content_block/type").and_then(Value::as_str) == Some("tool_use") => {
                let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let index = self.tools.len();
                self.tools.push((block, index));
                vec![Event::ToolStart {
                    index,
                    id: v.pointer("/content_block/id").and_then(Value::as_str).unwrap_or_default().to_string(),
                    name: v.pointer("/content_block/name").and_then(Value::as_str).unwrap_or_default().to_string(),
                }]
            }
            "content_block_delta" => match v.pointer("/delta/type").and_then(Value::as_str) {
                Some("text_delta") => {
                    vec![Event::Text(v.pointer("/delta/text").and_then(Value::as_str).unwrap_or_default().to_string())]
                }
                Some("input_json_delta") => {
                    let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let index = self.tools.iter().find(|(b, _)| *b == block).map_or(0, |(_, i)| *i);
                    let delta = v.pointer("/delta/partial_json").and_then(Value::as_str).unwrap_or_default();
                    if delta.is_empty() {
                        Vec::new()
                    } else {
                        vec![Event::ToolArgs { index, delta: delta.to_string() }]
                    }
                }
                _ => Vec::new(),
            },
            "message_delta" => {
                let mut out = Vec::new();
                if let Some(u) = v.get("usage") {
                    let later = usage_from(u);
                    self.usage.output = later.output;
                    if later.input > 0 {
                        self.usage.input = later.input;
                        self.usage.cached_input = later.cached_input;
                    }
                }
                if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    out.push(Event::Finish(finish_from(r)));
                }
                out.push(Event::Usage(self.usage));
                out
            }
            "error" => vec![Event::Error(data.to_string())],
            _ => Vec::new(),
        }
    }
}

/// Canonical events to Anthropic SSE events.
pub struct StreamEncoder {
    id: String,
    model: String,
    started: bool,
    /// The open content block: its index and whether it is text.
    open: Option<(usize, bool)>,
    next_block: usize,
    /// Canonical tool position → block index.
    tool_blocks: Vec<(usize, usize)>,
    finish: Option<Finish>,
    usage: Usage,
}

impl Default for StreamEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamEncoder {
    /// A fresh encoder.
    #[must_use]
    pub fn new() -> Self {
        Self {
            id: String::new(),
            model: String::new(),
            started: false,
            open: None,
            next_block: 0,
            tool_blocks: Vec::new(),
            finish: None,
            usage: Usage::default(),
        }
    }

    fn start(&mut self, out: &mut String) {
        if self.started {
            return;
        }
        self.started = true;
        if !self.id.starts_with("msg_") {
            self.id = format!("msg_{}", uuid::Uuid::now_v7().simple());
        }
        let message = json!({"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": self.usage.input.saturating_sub(self.usage.cached_input), "output_tokens": 0}});
        out.push_str(&frame(Some("message_start"), &json!({"type": "message_start", "message": message}).to_string()));
    }

    fn close(&mut self, out: &mut String) {
        if let Some((index, _)) = self.open.take() {
            out.push_str(&frame(
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": index}).to_string(),
            ));
        }
    }

    fn open_block(&mut self, block: &Value, text: bool, out: &mut String) -> usize {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((index, text));
        let v = json!({"type": "content_block_start", "index": index, "content_block": block});
        out.push_str(&frame(Some("content_block_start"), &v.to_string()));
        index
    }

    /// The SSE text for one event.
    pub fn encode(&mut self, event: Event) -> String {
        let mut out = String::new();
        match event {
            Event::Start { id, model } => {
                self.id = id;
                self.model = model;
                self.start(&mut out);
            }
            Event::Text(t) => {
                self.start(&mut out);
                let index = match self.open {
                    Some((i, true)) => i,
                    _ => self.open_block(&json!({"type": "text", "text": ""}), true, &mut out),
                };
                let v =
                    json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}});
                out.push_str(&frame(Some("content_block_delta"), &v.to_string()));
            }
            Event::ToolStart { index, id, name } => {
                self.start(&mut out);
                let id = if id.is_empty() { format!("toolu_{}", uuid::Uuid::now_v7().simple()) } else { id };
                let block =
                    self.open_block(&json!({"type": "tool_use", "id": id, "name": name, "input": {}}), false, &mut out);
                self.tool_blocks.push((index, block));
            }
            Event::ToolArgs { index, delta } => {
                self.start(&mut out);
                let block = self.tool_blocks.iter().find(|(t, _)| *t == index).map_or(0, |(_, b)| *b);
                let v = json!({"type": "content_block_delta", "index": block, "delta": {"type": "input_json_delta", "partial_json": delta}});
                out.push_str(&frame(Some("content_block_delta"), &v.to_string()));
            }
            Event::Finish(f) => self.finish = Some(f),
            Event::Usage(u) => self.usage = u,
            Event::Error(data) => out.push_str(&frame(Some("error"), &data)),
        }
        out
    }

    /// What ends the stream: the open block's end, `message_delta` with the stop reason and
    /// usage, `message_stop`.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        self.start(&mut out);
        self.close(&mut out);
        let reason = finish_to(self.finish.unwrap_or(Finish::Stop));
        let delta = json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null},
            "usage": {"output_tokens": self.usage.output, "input_tokens": self.usage.input.saturating_sub(self.usage.cached_input),
                      "cache_read_input_tokens": self.usage.cached_input}});
        out.push_str(&frame(Some("message_delta"), &delta.to_string()));
        out.push_str(&frame(Some("message_stop"), &json!({"type": "message_stop"}).to_string()));
        out
    }
}
