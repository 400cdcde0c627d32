//! AWS Bedrock Converse (`/model/{id}/converse`, `/converse-stream`): requests from the canonical
//! model, responses and event-stream frames to it.

use serde_json::{Map, Value, json};

use super::canonical::{
    ChatRequest, ChatResponse, Event, Finish, Part, Refused, ResponseFormat, Role, ToolCall, ToolChoice, Usage,
    data_url, refuse_extras,
};

/// The path under `bedrock-runtime/{region}` for `model`.
#[must_use]
pub fn path(region: &str, model: &str, stream: bool) -> String {
    let id = model.replace(':', "%3A");
    let op = if stream { "converse-stream" } else { "converse" };
    format!("bedrock-runtime/{region}/model/{id}/{op}")
}

fn block(p: &Part) -> Result<Value, Refused> {
    Ok(match p {
        Part::Text(t) => json!({"text": t}),
        Part::Image { url } => {
            let (media, data) = data_url(url)
                .ok_or_else(|| Refused::new("image_url", "Bedrock takes images as data: URLs (base64) only"))?;
            let format = media.strip_prefix("image/").unwrap_or("png");
            json!({"image": {"format": format, "source": {"bytes": data}}})
        }
    })
}

/// Writes a Converse request (the model goes in the path).
pub fn request_to(req: &ChatRequest) -> Result<Value, Refused> {
    let mut extra = req.extra.clone();
    extra.retain(|k, v| !(k == "n" && v.as_u64() == Some(1)));
    refuse_extras(&extra, "Bedrock Converse")?;
    if matches!(req.response_format, Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. })) {
        return Err(Refused::new("response_format", "Bedrock Converse has no JSON mode"));
    }
    let mut messages: Vec<Value> = Vec::new();
    let mut push = |role: &str, content: Vec<Value>| {
        if let Some(last) = messages.last_mut()
            && last["role"] == role
            && let Some(c) = last["content"].as_array_mut()
        {
            c.extend(content);
            return;
        }
        messages.push(json!({"role": role, "content": content}));
    };
    for m in &req.messages {
        let mut content = m.parts.iter().map(block).collect::<Result<Vec<_>, _>>()?;
        match m.role {
            Role::User => push("user", content),
            Role::Assistant => {
                content.retain(|b| b.get("text").and_then(Value::as_str).is_none_or(|t| !t.is_empty()));
                for c in &m.tool_calls {
                    let input: Value = serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
                    content.push(json!({"toolUse": {"toolUseId": c.id, "name": c.name, "input": input}}));
                }
                push("assistant", content);
            }
            Role::Tool => {
                let text: String = m
                    .parts
                    .iter()
                    .filter_map(|p| if let Part::Text(t) = p { Some(t.as_str()) } else { None })
                    .collect();
                let result = json!({"toolResult": {"toolUseId": m.tool_call_id, "content": [{"text": text}]}});
                push("user", vec![result]);
            }
        }
    }
    let mut body = Map::new();
    body.insert("messages".into(), Value::Array(messages));
    if !req.system.is_empty() {
        body.insert("system".into(), req.system.iter().map(|s| json!({"text": s})).collect());
    }
    let mut inference = Map::new();
    if let Some(n) = req.max_tokens {
        inference.insert("maxTokens".into(), n.into());
    }
    if let Some(t) = req.temperature {
        inference.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.top_p {
        inference.insert("topP".into(), p.into());
    }
    if !req.stop.is_empty() {
        inference.insert("stopSequences".into(), req.stop.clone().into());
    }
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if !req.tools.is_empty() && req.tool_choice != Some(ToolChoice::None) {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut spec = json!({"name": t.name, "inputSchema": {"json": t.parameters}});
                if let Some(d) = &t.description {
                    spec["description"] = d.clone().into();
                }
                json!({"toolSpec": spec})
            })
            .collect();
        let mut config = json!({"tools": tools});
        match &req.tool_choice {
            Some(ToolChoice::Required) => config["toolChoice"] = json!({"any": {}}),
            Some(ToolChoice::Named(n)) => config["toolChoice"] = json!({"tool": {"name": n}}),
            _ => {}
        }
        body.insert("toolConfig".into(), config);
    }
    Ok(Value::Object(body))
}

fn finish_from(s: &str) -> Finish {
    match s {
        "max_tokens" => Finish::Length,
        "tool_use" => Finish::ToolCalls,
        "content_filtered" | "guardrail_intervened" => Finish::ContentFilter,
        _ => Finish::Stop,
    }
}

fn usage_from(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cacheReadInputTokens");
    Usage {
        input: n("inputTokens") + cached + n("cacheWriteInputTokens"),
        output: n("outputTokens"),
        cached_input: cached,
    }
}

/// Reads a Converse response.
pub fn response_from(v: &Value) -> Result<ChatResponse, String> {
    let content =
        v.pointer("/output/message/content").and_then(Value::as_array).ok_or("the answer has no output message")?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for b in content {
        if let Some(t) = b.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(u) = b.get("toolUse") {
            tool_calls.push(ToolCall {
                id: u.get("toolUseId").and_then(Value::as_str).unwrap_or_default().to_string(),
                name: u.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                arguments: u.get("input").map_or_else(|| "{}".into(), Value::to_string),
            });
        }
    }
    Ok(ChatResponse {
        id: String::new(),
        model: String::new(),
        text,
        tool_calls,
        finish: finish_from(v.get("stopReason").and_then(Value::as_str).unwrap_or("end_turn")),
        usage: v.get("usage").map(usage_from).unwrap_or_default(),
    })
}

/// The readable message of a Bedrock error body.
#[must_use]
pub fn error_message(v: &Value) -> Option<String> {
    v.get("message").or_else(|| v.get("Message")).and_then(Value::as_str).map(str::to_string)
}

/// `ConverseStream` frames to canonical events.
#[derive(Default)]
pub struct StreamDecoder {
    /// Bedrock content block index → tool call position.
    tools: Vec<(u64, usize)>,
    started: bool,
}

impl StreamDecoder {
    /// The events of one frame (`event` its type, `data` its JSON payload).
    pub fn decode(&mut self, event: &str, data: &str) -> Vec<Event> {
        let Ok(v) = serde_json::from_str::<Value>(data) else { return Vec::new() };
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push(Event::Start { id: String::new(), model: String::new() });
        }
        match event {
            "contentBlockStart" => {
                if let Some(u) = v.pointer("/start/toolUse") {
                    let block = v.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
                    let index = self.tools.len();
                    self.tools.push((block, index));
                    out.push(Event::ToolStart {
                        index,
                        id: u.get("toolUseId").and_then(Value::as_str).unwrap_or_default().to_string(),
                        name: u.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                    });
                }
            }
            "contentBlockDelta" => {
                if let Some(t) = v.pointer("/delta/text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    out.push(Event::Text(t.to_string()));
                }
                if let Some(a) = v.pointer("/delta/toolUse/input").and_then(Value::as_str).filter(|a| !a.is_empty()) {
                    let block = v.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
                    let index = self.tools.iter().find(|(b, _)| *b == block).map_or(0, |(_, i)| *i);
                    out.push(Event::ToolArgs { index, delta: a.to_string() });
                }
            }
            "messageStop" => {
                out.push(Event::Finish(finish_from(v.get("stopReason").and_then(Value::as_str).unwrap_or("end_turn"))));
            }
            "metadata" => {
                if let Some(u) = v.get("usage") {
                    out.push(Event::Usage(usage_from(u)));
                }
            }
            _ => {}
        }
        out
    }
}
