//! The one model every wire format translates to and from: a chat request, a chat response,
//! and the events of a streamed response.

use serde_json::{Map, Value};

/// Who speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The user (also carries tool results in formats that put them there).
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Text.
    Text(String),
    /// An image: a `data:` URL (base64) or an `http(s)` URL.
    Image {
        /// The URL.
        url: String,
    },
}

/// A call the model makes.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The call id (results refer to it).
    pub id: String,
    /// Function name.
    pub name: String,
    /// Arguments as JSON text.
    pub arguments: String,
}

/// One turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Speaker.
    pub role: Role,
    /// Content.
    pub parts: Vec<Part>,
    /// Calls made (assistant turns).
    pub tool_calls: Vec<ToolCall>,
    /// The call answered (tool turns).
    pub tool_call_id: Option<String>,
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// JSON Schema of its arguments (an object).
    pub parameters: Value,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool.
    None,
    /// Some tool.
    Required,
    /// This tool.
    Named(String),
}

/// Output format.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    /// Plain text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON following a schema.
    JsonSchema {
        /// Schema name.
        name: String,
        /// The schema.
        schema: Value,
    },
}

/// A chat request in no particular wire format.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    /// The target's model name.
    pub model: String,
    /// System instructions.
    pub system: Vec<String>,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Functions.
    pub tools: Vec<Tool>,
    /// Tool choice.
    pub tool_choice: Option<ToolChoice>,
    /// Most output tokens.
    pub max_tokens: Option<u64>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Streamed answer.
    pub stream: bool,
    /// The client asked for usage in the stream (OpenAI's `stream_options.include_usage`).
    pub include_usage: bool,
    /// Output format.
    pub response_format: Option<ResponseFormat>,
    /// A stable end-user id (OpenAI `user`, Anthropic `metadata.user_id`).
    pub user: Option<String>,
    /// Fields of the source format this model has no place for, by name: a target that accepts
    /// them gets them, any other refuses the request naming the field.
    pub extra: Map<String, Value>,
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Natural end or a stop sequence.
    Stop,
    /// The token limit.
    Length,
    /// It called tools.
    ToolCalls,
    /// A safety filter.
    ContentFilter,
}

/// Token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens, cached ones included.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Input tokens read from the provider's prompt cache.
    pub cached_input: u64,
}

/// A whole (not streamed) answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// Response id.
    pub id: String,
    /// The model that answered.
    pub model: String,
    /// Text.
    pub text: String,
    /// Tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// Why it stopped.
    pub finish: Finish,
    /// Tokens.
    pub usage: Usage,
}

/// One event of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The answer begins.
    Start {
        /// Response id.
        id: String,
        /// Model.
        model: String,
    },
    /// More text.
    Text(String),
    /// A tool call begins.
    ToolStart {
        /// Position among the calls.
        index: usize,
        /// Call id.
        id: String,
        /// Function name.
        name: String,
    },
    /// More argument JSON for a tool call.
    ToolArgs {
        /// Position among the calls.
        index: usize,
        /// The next piece.
        delta: String,
    },
    /// Why it stopped.
    Finish(Finish),
    /// Token counts (may come more than once; the latest counts).
    Usage(Usage),
    /// The upstream failed mid-stream (an SSE `error` event's data).
    Error(String),
}

/// A request field the target cannot express, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The field.
    pub field: String,
    /// Why.
    pub reason: String,
}

impl Refused {
    /// A refusal of `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Whether a value asks for nothing (`null`, `false`, `0`, `""`, empty): such a field can be
/// dropped by a target that lacks it without changing the answer.
#[must_use]
pub fn is_inert(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Refuses the first field of `extra` that asks for something, for a target without it.
pub fn refuse_extras(extra: &Map<String, Value>, target: &str) -> Result<(), Refused> {
    match extra.iter().find(|(_, v)| !is_inert(v)) {
        Some((k, _)) => Err(Refused::new(k.clone(), format!("not supported by {target}"))),
        None => Ok(()),
    }
}

/// Splits a `data:` URL into media type and base64 payload.
#[must_use]
pub fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((if media.is_empty() { "application/octet-stream" } else { media }, data))
}

/// The current time in Unix seconds (OpenAI's `created`).
#[must_use]
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
