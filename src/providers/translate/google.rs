//! Google Gemini `generateContent` (AI Studio): requests from the canonical model, responses and
//! stream chunks to it.

use serde_json::{Map, Value, json};

use super::canonical::{
    ChatRequest, ChatResponse, Event, Finish, Part, Refused, ResponseFormat, Role, ToolCall, ToolChoice, Usage,
    data_url, is_inert,
};

/// Extra OpenAI fields Gemini's `generationConfig` has under another name.
const GENERATION_EXTRAS: &[(&str, &str)] =
    &[("seed", "seed"), ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")];

/// The path under the provider's base URL for `model`.
#[must_use]
pub fn path(model: &str, stream: bool) -> String {
    if stream {
        format!("v1beta/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("v1beta/models/{model}:generateContent")
    }
}

fn part_json(p: &Part) -> Value {
    match p {
        Part::Text(t) => json!({"text": t}),
        Part::Image { url } => match data_url(url) {
            Some((media, data)) => json!({"inlineData": {"mimeType": media, "data": data}}),
            None => json!({"fileData": {"fileUri": url}}),
        },
    }
}

/// The conversation as Gemini `contents` (consecutive turns of one role merged).
fn contents_to(req: &ChatRequest) -> Vec<Value> {
    let mut contents: Vec<Value> = Vec::new();
    let mut push = |role: &str, parts: Vec<Value>| {
        if let Some(last) = contents.last_mut()
            && last["role"] == role
            && let Some(p) = last["parts"].as_array_mut()
        {
            p.extend(parts);
            return;
        }
        contents.push(json!({"role": role, "parts": parts}));
    };
    // A tool result names its function in Gemini: find it from the call it answers.
    let name_of = |id: &str| {
        req.messages.iter().flat_map(|m| &m.tool_calls).find(|c| c.id == id).map(|c| c.name.clone()).unwrap_or_default()
    };
    for m in &req.messages {
        let mut parts: Vec<Value> = m.parts.iter().map(part_json).collect();
        match m.role {
            Role::User => push("user", parts),
            Role::Assistant => {
                parts.retain(|p| p.get("text").and_then(Value::as_str).is_none_or(|t| !t.is_empty()));
                for c in &m.tool_calls {
                    let args: Value = serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
                    parts.push(json!({"functionCall": {"name": c.name, "args": args}}));
                }
                push("model", parts);
            }
            Role::Tool => {
                let text: String = m
                    .parts
                    .iter()
                    .filter_map(|p| if let Part::Text(t) = p { Some(t.as_str()) } else { None })
                    .collect();
                let response = serde_json::from_str::<Value>(&text)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({"content": text}));
                let name = name_of(m.tool_call_id.as_deref().unwrap_or_default());
                push("user", vec![json!({"functionResponse": {"name": name, "response": response}})]);
            }
        }
    }
    contents
}

/// Writes a Gemini request (the model goes in the path).
pub fn request_to(req: &ChatRequest) -> Result<Value, Refused> {
    let mut generation = Map::new();
    for (k, v) in &req.extra {
        match GENERATION_EXTRAS.iter().find(|(from, _)| from == k) {
            Some((_, to)) => {
                generation.insert((*to).to_string(), v.clone());
            }
            None if k == "n" => {
                generation.insert("candidateCount".into(), v.clone());
            }
            None if is_inert(v) => {}
            None => return Err(Refused::new(k.clone(), "not supported by Google Gemini")),
        }
    }
    let contents = contents_to(req);
    let mut body = Map::new();
    body.insert("contents".into(), Value::Array(contents));
    if !req.system.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": [{"text": req.system.join("\n\n")}]}));
    }
    if !req.tools.is_empty() {
        let declarations: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut d = json!({"name": t.name, "parameters": t.parameters});
                if let Some(desc) = &t.description {
                    d["description"] = desc.clone().into();
                }
                d
            })
            .collect();
        body.insert("tools".into(), json!([{"functionDeclarations": declarations}]));
    }
    if let Some(c) = &req.tool_choice {
        let config = match c {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Named(n) => json!({"mode": "ANY", "allowedFunctionNames": [n]}),
        };
        body.insert("toolConfig".into(), json!({"functionCallingConfig": config}));
    }
    if let Some(n) = req.max_tokens {
        generation.insert("maxOutputTokens".into(), n.into());
    }
    if let Some(t) = req.temperature {
        generation.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.top_p {
        generation.insert("topP".into(), p.into());
    }
    if !req.stop.is_empty() {
        generation.insert("stopSequences".into(), req.stop.clone().into());
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            generation.insert("responseMimeType".into(), "application/json".into());
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            generation.insert("responseMimeType".into(), "application/json".into());
            generation.insert("responseJsonSchema".into(), schema.clone());
        }
        Some(ResponseFormat::Text) | None => {}
    }
    if !generation.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation));
    }
    Ok(Value::Object(body))
}

fn finish_from(s: &str, called: bool) -> Finish {
    match s {
        "MAX_TOKENS" => Finish::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" => Finish::ContentFilter,
        _ if called => Finish::ToolCalls,
        _ => Finish::Stop,
    }
}

fn usage_from(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input: n("promptTokenCount"),
        output: n("candidatesTokenCount") + n("thoughtsTokenCount"),
        cached_input: n("cachedContentTokenCount"),
    }
}

/// The text and calls of a chunk's first candidate; calls get ids `call_{n}` from `counter`.
fn parts_of(v: &Value, counter: &mut usize) -> (String, Vec<ToolCall>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in v.pointer("/candidates/0/content/parts").and_then(Value::as_array).into_iter().flatten() {
        if p.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(f) = p.get("functionCall") {
            calls.push(ToolCall {
                id: format!("call_{}", *counter),
                name: f.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                arguments: f.get("args").map_or_else(|| "{}".into(), Value::to_string),
            });
            *counter += 1;
        }
    }
    (text, calls)
}

/// Reads a Gemini response.
pub fn response_from(v: &Value) -> Result<ChatResponse, String> {
    if v.get("candidates").is_none() {
        return Err("the answer has no candidates".into());
    }
    let mut counter = 0;
    let (text, tool_calls) = parts_of(v, &mut counter);
    let reason = v.pointer("/candidates/0/finishReason").and_then(Value::as_str).unwrap_or("STOP");
    Ok(ChatResponse {
        id: v.get("responseId").and_then(Value::as_str).unwrap_or_default().to_string(),
        model: v.get("modelVersion").and_then(Value::as_str).unwrap_or_default().to_string(),
        finish: finish_from(reason, !tool_calls.is_empty()),
        text,
        tool_calls,
        usage: v.get("usageMetadata").map(usage_from).unwrap_or_default(),
    })
}

/// The readable message of a Google error body.
#[must_use]
pub fn error_message(v: &Value) -> Option<String> {
    let first = if v.is_array() { v.get(0)? } else { v };
    first.pointer("/error/message").and_then(Value::as_str).map(str::to_string)
}

/// Gemini stream chunks (one JSON response each) to events.
#[derive(Default)]
pub struct StreamDecoder {
    started: bool,
    calls: usize,
}

impl StreamDecoder {
    /// The events of one SSE event.
    pub fn decode(&mut self, event: &str, data: &str) -> Vec<Event> {
        if event == "error" {
            return vec![Event::Error(data.to_string())];
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else { return Vec::new() };
        if v.get("error").is_some() {
            return vec![Event::Error(data.to_string())];
        }
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: v.get("responseId").and_then(Value::as_str).unwrap_or_default().to_string(),
                model: v.get("modelVersion").and_then(Value::as_str).unwrap_or_default().to_string(),
            });
        }
        let before = self.calls;
        let (text, calls) = parts_of(&v, &mut self.calls);
        if !text.is_empty() {
            out.push(Event::Text(text));
        }
        for (i, c) in calls.into_iter().enumerate() {
            out.push(Event::ToolStart { index: before + i, id: c.id, name: c.name });
            out.push(Event::ToolArgs { index: before + i, delta: c.arguments });
        }
        if let Some(r) = v.pointer("/candidates/0/finishReason").and_then(Value::as_str) {
            out.push(Event::Finish(finish_from(r, self.calls > 0)));
        }
        if let Some(u) = v.get("usageMetadata") {
            out.push(Event::Usage(usage_from(u)));
        }
        out
    }
}
