//! Token usage and model extraction from response bodies, fed chunk by chunk as they stream.
//!
//! One extractor understands every wire format's usage object (they use distinct key names):
//! OpenAI chat/completions/embeddings (`usage.prompt_tokens`, `prompt_tokens_details`), OpenAI
//! Responses (`usage.input_tokens`, `input_tokens_details`), Anthropic (`input_tokens` plus
//! `cache_read_input_tokens`/`cache_creation_input_tokens`, split across `message_start` and
//! `message_delta`), Google (`usageMetadata`), Cohere (`billed_units`), Bedrock Converse
//! (camelCase `inputTokens`) and `InvokeModel` metrics, Workers AI (`result.usage`), Groq
//! (`x_groq.usage`). The framing decides how bytes become JSON values: a whole JSON body (or a
//! JSON array of chunks), SSE events, or AWS event-stream frames (Bedrock streaming).

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::usage_fields::{Billed, Lean, UsageFields};
use super::{ModelInPath, WireFormat};

/// Normalised usage of one response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Every input token, cached ones included.
    pub tokens_in: u64,
    /// Output tokens (reasoning included).
    pub tokens_out: u64,
    /// Input tokens read from the provider's prompt cache.
    pub cached_tokens_in: u64,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write_tokens: u64,
    /// Whether the response reported usage at all.
    pub reported: bool,
    /// Model named by the response.
    pub model: Option<std::sync::Arc<str>>,
}

/// Usage fields as the provider reports them, before normalisation.
#[derive(Debug, Default, Clone)]
struct Raw {
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_write: Option<u64>,
    /// The provider's input count already includes cached tokens (OpenAI, Google).
    cache_included: bool,
    model: Option<std::sync::Arc<str>>,
}

impl Raw {
    fn finish(self) -> Usage {
        let read = self.cache_read.unwrap_or(0);
        let write = self.cache_write.unwrap_or(0);
        let input = self.input.unwrap_or(0);
        let tokens_in = if self.cache_included { input.max(read) } else { input + read + write };
        Usage {
            tokens_in,
            tokens_out: self.output.unwrap_or(0),
            cached_tokens_in: read,
            cache_write_tokens: write,
            reported: self.input.is_some() || self.output.is_some(),
            model: self.model,
        }
    }
}

/// Merges whatever usage and model `v` carries into `raw` (later values win).
fn extract(v: &Value, raw: &mut Raw) {
    if v.is_object()
        && let Ok(lean) = Lean::deserialize(v)
    {
        apply(&lean, raw);
    }
}

/// Parses a JSON object keeping only the fields [`apply`] reads (no JSON tree is built).
fn parse_lean(bytes: &[u8]) -> Option<Lean> {
    // An array would be read as the struct's fields in order.
    if !bytes.trim_ascii_start().starts_with(b"{") {
        return None;
    }
    plain_lean(bytes).or_else(|| serde_json::from_slice(bytes).ok())
}

/// The top-level keys [`Lean`] reads.
const LEAN_KEYS: [&[u8]; 11] = [
    b"model",
    b"modelVersion",
    b"usage",
    b"usageMetadata",
    b"meta",
    b"message",
    b"response",
    b"result",
    b"x_groq",
    b"delta",
    b"amazon-bedrock-invocationMetrics",
];

/// The common answer read without serde's visitors (4,400 instructions a chat answer where they
/// took 6,900, 3,700 a stream where they took 6,600; callgrind, README): an object
/// whose only members [`Lean`] reads are a `model` string and a `usage` object of plain counts
/// under OpenAI's and Anthropic's names (with `*_tokens_details.cached_tokens`). Anything else
/// it reads (another envelope, a count that is not a plain integer, an escaped model name, a
/// key given twice) is left to serde: `None`. Members `Lean` does not read are only delimited
/// ([`top_level::members`](super::top_level::members)), not checked as JSON.
fn plain_lean(bytes: &[u8]) -> Option<Lean> {
    use super::top_level::members;
    use super::usage_fields::Field;
    let mut lean = Lean::default();
    let (mut plain, mut seen) = (true, [false; 2]);
    members(bytes, |key, value| match key {
        b"model" if !seen[0] => {
            seen[0] = true;
            match plain_text(value) {
                Some(text) => lean.model = Field::Is(crate::text::intern(text)),
                None => plain = false,
            }
        }
        b"usage" if !seen[1] => {
            seen[1] = true;
            lean.usage = plain_usage(value);
            plain &= lean.usage.is_some();
        }
        _ => plain &= !LEAN_KEYS.contains(&key),
    })?;
    plain.then_some(lean)
}

/// The keys of `usage` [`plain_usage`] reads, in the order of its `seen` bits.
const USAGE_READ: [&[u8]; 8] = [
    b"prompt_tokens",
    b"completion_tokens",
    b"input_tokens",
    b"output_tokens",
    b"cache_read_input_tokens",
    b"cache_creation_input_tokens",
    b"prompt_tokens_details",
    b"input_tokens_details",
];

/// The keys of `usage` that [`UsageFields`] reads and [`plain_usage`] leaves to serde.
const USAGE_LEFT: [&[u8]; 5] =
    [b"inputTokens", b"outputTokens", b"cacheReadInputTokens", b"cacheWriteInputTokens", b"billed_units"];

/// A `usage` object whose read fields are all plain counts (see [`plain_lean`]).
fn plain_usage(value: &[u8]) -> Option<UsageFields> {
    use super::usage_fields::{Details, Field};
    let mut u = UsageFields::default();
    let (mut plain, mut seen) = (true, 0u8);
    super::top_level::members(value, |key, value| {
        let Some(i) = USAGE_READ.iter().position(|k| *k == key) else {
            plain &= !USAGE_LEFT.contains(&key);
            return;
        };
        plain &= seen & (1 << i) == 0;
        seen |= 1 << i;
        let details = || plain_details(value).map(|cached| Some(Details { cached_tokens: Some(cached) }));
        let read = match i {
            0 => plain_count(value).map(|n| u.prompt_tokens = Some(n)),
            1 => plain_count(value).map(|n| u.completion_tokens = Field::Is(n)),
            2 => plain_count(value).map(|n| u.input_tokens = Some(n)),
            3 => plain_count(value).map(|n| u.output_tokens = Some(n)),
            4 => plain_count(value).map(|n| u.cache_read_input_tokens = Some(n)),
            5 => plain_count(value).map(|n| u.cache_creation_input_tokens = Some(n)),
            6 => details().map(|d| u.prompt_tokens_details = d),
            _ => details().map(|d| u.input_tokens_details = d),
        };
        plain &= read.is_some();
    })?;
    plain.then_some(u)
}

/// A `*_tokens_details` object's `cached_tokens`, when it is a plain count (see [`plain_lean`]).
fn plain_details(value: &[u8]) -> Option<u64> {
    let (mut cached, mut plain) = (None, true);
    super::top_level::members(value, |key, value| {
        if key == b"cached_tokens" {
            plain &= cached.is_none();
            cached = plain_count(value);
            plain &= cached.is_some();
        }
    })?;
    if plain { cached } else { None }
}

/// A non-negative integer as JSON writes one (no sign, fraction, exponent or leading zero),
/// that fits a `u64`.
fn plain_count(value: &[u8]) -> Option<u64> {
    let digits = value.iter().all(u8::is_ascii_digit) && !value.is_empty();
    if !digits || (value.len() > 1 && value[0] == b'0') {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A JSON string without escapes or control characters, as its text.
fn plain_text(value: &[u8]) -> Option<&str> {
    match super::top_level::string(value)? {
        std::borrow::Cow::Borrowed(text) => Some(text),
        std::borrow::Cow::Owned(_) => None,
    }
}

/// Merges the usage and model of one object into `raw` (later values win).
fn apply(lean: &Lean, raw: &mut Raw) {
    let model = if lean.model.present() { lean.model.get() } else { lean.model_version.get() };
    if raw.model.is_none()
        && let Some(m) = model.filter(|m| !m.is_empty())
    {
        raw.model = Some(m.clone());
    }
    // Envelopes that wrap the interesting object.
    for inner in [&lean.message, &lean.response, &lean.result, &lean.x_groq, &lean.delta].into_iter().flatten() {
        apply(inner, raw);
    }
    if let Some(u) = &lean.usage {
        usage_object(u, raw);
    }
    if let Some(u) = &lean.usage_metadata {
        raw.input = u.prompt.or(raw.input);
        if u.candidates.present() || u.thoughts.present() {
            raw.output = Some(u.candidates.get().copied().unwrap_or(0) + u.thoughts.get().copied().unwrap_or(0));
        }
        raw.cache_read = u.cached.or(raw.cache_read);
        raw.cache_included = true;
    }
    if let Some(b) = lean.meta.as_ref().and_then(|m| m.billed_units.as_ref()) {
        billed_units(b, raw);
    }
    if let Some(m) = &lean.invocation_metrics {
        raw.input = m.input.or(raw.input);
        raw.output = m.output.or(raw.output);
        raw.cache_read = m.cache_read.or(raw.cache_read);
        raw.cache_write = m.cache_write.or(raw.cache_write);
    }
}

fn billed_units(b: &Billed, raw: &mut Raw) {
    raw.input = b.input_tokens.or(raw.input);
    raw.output = b.output_tokens.or(raw.output);
}

fn usage_object(u: &UsageFields, raw: &mut Raw) {
    // OpenAI chat/completions/embeddings.
    if let Some(p) = u.prompt_tokens {
        raw.input = Some(p);
        raw.cache_included = true;
        if u.completion_tokens.present() || raw.output.is_none() {
            raw.output = Some(u.completion_tokens.get().copied().unwrap_or(0));
        }
        if let Some(c) = u.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens) {
            raw.cache_read = Some(c);
        }
    }
    // OpenAI Responses and Anthropic.
    if let Some(i) = u.input_tokens {
        raw.input = Some(i);
    }
    if let Some(o) = u.output_tokens {
        raw.output = Some(o);
    }
    if let Some(c) = u.input_tokens_details.as_ref().and_then(|d| d.cached_tokens) {
        raw.cache_read = Some(c);
        raw.cache_included = true;
    }
    if let Some(c) = u.cache_read_input_tokens {
        raw.cache_read = Some(c);
    }
    if let Some(c) = u.cache_creation_input_tokens {
        raw.cache_write = Some(c);
    }
    // Bedrock Converse (camelCase).
    if let Some(i) = u.input_tokens_camel {
        raw.input = Some(i);
    }
    if let Some(o) = u.output_tokens_camel {
        raw.output = Some(o);
    }
    if let Some(c) = u.cache_read_camel {
        raw.cache_read = Some(c);
    }
    if let Some(c) = u.cache_write_camel {
        raw.cache_write = Some(c);
    }
    // Cohere v2.
    if let Some(b) = &u.billed_units {
        billed_units(b, raw);
    }
}

enum Framing {
    /// Whole body, parsed at the end.
    Json(Vec<u8>),
    /// `text/event-stream`: complete events are sorted as they arrive; those that may carry
    /// usage or the model are kept and parsed when the body ends.
    Sse { line: Vec<u8>, data: String, kept: Kept },
    /// `application/vnd.amazon.eventstream` frames.
    EventStream(Vec<u8>),
}

/// Incremental usage parser for one response body.
pub struct UsageParser {
    framing: Framing,
    raw: Raw,
    limit: usize,
    overflow: bool,
}

/// Bytes an event stream's line and data buffers start with.
const SSE_LINE_START: usize = 512;

impl UsageParser {
    /// A parser for a body of this format and content type; at most `limit` bytes are buffered.
    #[must_use]
    pub fn new(format: WireFormat, content_type: &str, limit: usize) -> Option<Self> {
        if format == WireFormat::Opaque {
            return None;
        }
        let ct = content_type.as_bytes();
        let starts = |p: &str| ct.get(..p.len()).is_some_and(|b| b.eq_ignore_ascii_case(p.as_bytes()));
        let framing = if starts("text/event-stream") {
            // Sized for a typical event: growing from empty took four allocations a stream.
            Framing::Sse {
                line: Vec::with_capacity(SSE_LINE_START),
                data: String::with_capacity(SSE_LINE_START),
                kept: Kept::within(limit),
            }
        } else if starts("application/vnd.amazon.eventstream") {
            Framing::EventStream(Vec::new())
        } else if ct.windows(4).any(|w| w.eq_ignore_ascii_case(b"json")) || ct.is_empty() {
            Framing::Json(Vec::new())
        } else {
            return None;
        };
        Some(Self { framing, raw: Raw::default(), limit, overflow: false })
    }

    /// Feeds the next body chunk.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.overflow {
            return;
        }
        match &mut self.framing {
            Framing::Json(buf) => {
                if buf.len() + chunk.len() > self.limit {
                    self.overflow = true;
                    buf.clear();
                } else {
                    buf.extend_from_slice(chunk);
                }
            }
            Framing::Sse { line, data, kept } => {
                let mut rest = chunk;
                while !rest.is_empty() {
                    // A whole event at hand is read where it is, not copied.
                    if line.is_empty()
                        && data.is_empty()
                        && let Some((event, used)) = whole_event(rest, self.limit)
                    {
                        kept.consider(event, &mut self.raw);
                        rest = &rest[used..];
                        continue;
                    }
                    // Bytes up to the next line end join the line (kept to the limit).
                    let end = memchr::memchr(b'\n', rest);
                    let part = &rest[..end.unwrap_or(rest.len())];
                    line.extend_from_slice(&part[..part.len().min(self.limit.saturating_sub(line.len()))]);
                    let Some(end) = end else { break };
                    rest = &rest[end + 1..];
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if line.is_empty() {
                        kept.consider(data.as_bytes(), &mut self.raw);
                        data.clear();
                    } else if let Some(payload) = data_field(line) {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(&crate::text::lossy(payload));
                    }
                    line.clear();
                }
            }
            Framing::EventStream(buf) => {
                buf.extend_from_slice(chunk);
                while let Some(len) = super::translate::eventstream::total_len(buf) {
                    if len > self.limit || len < 16 {
                        self.overflow = true;
                        buf.clear();
                        return;
                    }
                    if buf.len() < len {
                        break;
                    }
                    let frame: Vec<u8> = buf.drain(..len).collect();
                    event_stream_frame(&frame, &mut self.raw);
                }
            }
        }
    }

    /// Usage seen so far (also for streams cut short).
    #[must_use]
    pub fn finish(mut self) -> Usage {
        match &mut self.framing {
            Framing::Json(buf) => {
                if buf.trim_ascii_start().starts_with(b"[") {
                    // Google streamGenerateContent without alt=sse: a JSON array of chunks.
                    if let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(buf) {
                        for item in &items {
                            extract(item, &mut self.raw);
                        }
                    }
                } else if let Some(lean) = parse_lean(buf) {
                    apply(&lean, &mut self.raw);
                }
            }
            Framing::Sse { data, kept, .. } => {
                kept.parse(&mut self.raw);
                dispatch_event(data, &mut self.raw);
            }
            Framing::EventStream(_) => {}
        }
        self.raw.finish()
    }
}

/// The value of an SSE `data:` line (its one leading space dropped), for both ways of reading.
fn data_field(line: &[u8]) -> Option<&[u8]> {
    let value = line.strip_prefix(b"data:")?;
    Some(value.strip_prefix(b" ").unwrap_or(value))
}

/// The data of the whole event `bytes` starts with, when that event is there up to its blank
/// line, has at most one `data:` line and no line over `limit`; with the bytes it spans.
/// (Other events take the buffered way.) The data is read as UTF-8 only if it is kept.
fn whole_event(bytes: &[u8], limit: usize) -> Option<(&[u8], usize)> {
    let mut at = 0;
    let mut data = None;
    loop {
        let end = at + memchr::memchr(b'\n', &bytes[at..])?;
        let line = &bytes[at..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > limit {
            return None;
        }
        at = end + 1;
        if line.is_empty() {
            return Some((data.unwrap_or_default(), at));
        }
        if let Some(payload) = data_field(line) {
            if data.is_some() {
                return None;
            }
            data = Some(payload);
        }
    }
}

/// Searchers for the marks of an event that may carry usage, built once.
static USAGE_MARKS: LazyLock<[memchr::memmem::Finder<'static>; 3]> =
    LazyLock::new(|| [b"sage".as_slice(), b"billed_units", b"nvocationMetrics"].map(memchr::memmem::Finder::new));

/// Whether an event may carry usage: a key ending in `sage` (`usage`, `usageMetadata`, and
/// Anthropic's `message`) whose value is not `null`, or Cohere's or Bedrock's marks. (OpenAI
/// sends `"usage":null` in every chunk of a stream that asked for usage; those are skipped.)
fn may_carry_usage(data: &[u8]) -> bool {
    let [sage, billed, bedrock] = &*USAGE_MARKS;
    let keyed = sage.find_iter(data).any(|i| {
        let rest = &data[i + 4..];
        let rest = rest.strip_prefix(b"Metadata").unwrap_or(rest);
        rest.strip_prefix(b"\"")
            .and_then(|r| r.trim_ascii_start().strip_prefix(b":"))
            .is_some_and(|value| !value.trim_ascii_start().starts_with(b"null"))
    });
    keyed || billed.find(data).is_some() || bedrock.find(data).is_some()
}

/// Searcher for a key that may name the model (`"model"`, `"modelVersion"`), built once.
static MODEL_MARK: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(b"\"model"));

/// Events kept at most before they are parsed where they stand (their bytes are bounded too).
const KEPT_EVENTS: usize = 16;
/// Bytes of events kept at most (less when the parser's limit is lower).
const KEPT_BYTES: usize = 8 * 1024;

/// The events of a stream that may carry usage or its model, kept to be parsed when the body
/// ends: the bytes then reach the client without waiting for a JSON parse (at c=1 a whole
/// stream arrives in one read and leaves in one write, after it passed the parser). When the
/// events fill their room they are parsed at once, so a long stream keeps little.
///
/// The events that may carry usage are parsed first, in the order they came (later values
/// win); they name the model too in every stream that has them (OpenAI's usage chunk,
/// Anthropic's `message_start`, Google's every chunk, the Responses API's `response.completed`),
/// so the events kept only for the model are parsed only while it is still unknown, in order:
/// an OpenAI stream then costs one parse, not two.
struct Kept {
    /// The events' data, one after the other.
    bytes: Vec<u8>,
    /// Bytes kept at most: [`KEPT_BYTES`] or the parser's limit, the lower.
    room: usize,
    /// Where each event ends in `bytes`, and whether it may carry usage (else it is kept for
    /// the model it may name).
    events: Vec<(usize, bool)>,
}

impl Kept {
    fn within(limit: usize) -> Self {
        Self { bytes: Vec::new(), room: limit.min(KEPT_BYTES), events: Vec::new() }
    }

    /// Keeps `data` if it may carry usage, or may name the model while none is known (read as
    /// UTF-8, bytes that are not replaced, as every event's data once was).
    fn consider(&mut self, data: &[u8], raw: &mut Raw) {
        let usage = may_carry_usage(data);
        if !usage && (raw.model.is_some() || MODEL_MARK.find(data).is_none()) {
            return;
        }
        let text = crate::text::lossy(data);
        let data = text.trim().as_bytes();
        if data.is_empty() || data == b"[DONE]" {
            return;
        }
        if self.events.len() >= KEPT_EVENTS || self.bytes.len() + data.len() > self.room {
            self.parse(raw);
            if !usage && raw.model.is_some() {
                return;
            }
        }
        if data.len() > self.room {
            dispatch(data, usage, raw);
            return;
        }
        self.bytes.extend_from_slice(data);
        self.events.push((self.bytes.len(), usage));
    }

    /// Parses the kept events (those that may carry usage first, then those kept for the model
    /// while it is unknown, each in the order they came), and forgets them.
    fn parse(&mut self, raw: &mut Raw) {
        for usage_pass in [true, false] {
            let mut start = 0;
            for &(end, usage) in &self.events {
                if usage == usage_pass {
                    dispatch(&self.bytes[start..end], usage, raw);
                }
                start = end;
            }
        }
        self.bytes.clear();
        self.events.clear();
    }
}

/// Parses one event's data if it may carry usage or may name the model while none is known.
fn dispatch(data: &[u8], usage: bool, raw: &mut Raw) {
    if (usage || raw.model.is_none())
        && let Some(lean) = parse_lean(data)
    {
        apply(&lean, raw);
    }
}

/// An unfinished last event, read when the body ends.
fn dispatch_event(data: &str, raw: &mut Raw) {
    let data = data.trim().as_bytes();
    if data.is_empty() || data == b"[DONE]" {
        return;
    }
    // Most chunks carry only content: parse those that can hold usage, or the model until known.
    dispatch(data, may_carry_usage(data), raw);
}

/// One AWS event-stream frame: prelude (total and header lengths, CRC), headers, payload, CRC.
/// `InvokeModel` streams wrap each chunk as `{"bytes": base64}`; Converse streams send JSON.
fn event_stream_frame(frame: &[u8], raw: &mut Raw) {
    let Some(frame) = super::translate::eventstream::parse(frame) else { return };
    let Ok(v) = serde_json::from_slice::<Value>(&frame.payload) else { return };
    if let Some(b64) = v.get("bytes").and_then(Value::as_str) {
        use base64::Engine as _;
        if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b64)
            && let Ok(inner) = serde_json::from_slice::<Value>(&decoded)
        {
            extract(&inner, raw);
        }
    } else {
        extract(&v, raw);
    }
}

/// What a JSON request body says that the gateway needs, read in one pass: the model it names
/// (for the log and the spend checks) and whether it asks to stream (for the stream's usage).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// `"model"`, when it is a non-empty string.
    pub model: Option<std::sync::Arc<str>>,
    /// `"stream": true`.
    pub streams: bool,
}

/// Reads a request body's [`RequestFacts`]; a body that is not a JSON object has none. Only
/// the top level is read (see [`top_level`](super::top_level)): the messages are delimited,
/// not parsed. A key given twice counts as its last, as JSON parsers read it.
#[must_use]
pub fn request_facts(body: &[u8]) -> RequestFacts {
    let (mut model, mut stream) = (None, None);
    let read = super::top_level::members(body, |key, value| match key {
        b"model" => model = Some(value),
        b"stream" => stream = Some(value),
        _ => {}
    });
    if read.is_none() {
        return RequestFacts::default();
    }
    let model = match model {
        None | Some(b"null") => None,
        // A model that is not a string: not a request the gateway reads.
        Some(quoted) => match super::top_level::string(quoted) {
            Some(m) => Some(m),
            None => return RequestFacts::default(),
        },
    };
    RequestFacts {
        model: model.filter(|m| !m.is_empty()).map(|m| crate::text::intern(&m)),
        streams: stream == Some(b"true"),
    }
}

/// The model named in the upstream path, for providers that put it there.
#[must_use]
pub fn model_from_path(at: ModelInPath, rest: &str) -> Option<String> {
    let rest = rest.split('?').next().unwrap_or(rest);
    let decoded = |s: &str| s.replace("%3A", ":").replace("%3a", ":").replace("%2F", "/").replace("%2f", "/");
    match at {
        ModelInPath::FromAt => {
            let at = rest.find('@')?;
            Some(decoded(&rest[at..]))
        }
        ModelInPath::Whole => Some(decoded(rest.trim_matches('/'))).filter(|m| !m.is_empty()),
        ModelInPath::AfterModel => {
            let after = rest.split("/model/").nth(1)?;
            Some(decoded(after.split('/').next()?))
        }
        ModelInPath::AfterModels => {
            let after = rest.rsplit("/models/").next()?;
            Some(decoded(after.split(':').next()?)).filter(|m| !m.is_empty() && !m.contains('/'))
        }
        ModelInPath::No => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The framing comes from the content type, matched without regard to case.
    #[test]
    fn framing_follows_the_content_type_in_any_case() {
        let framing = |ct: &str| UsageParser::new(WireFormat::OpenAi, ct, 1024).map(|p| p.framing);
        for ct in ["text/event-stream", "Text/Event-Stream; charset=utf-8"] {
            assert!(matches!(framing(ct), Some(Framing::Sse { .. })), "{ct}");
        }
        assert!(matches!(framing("application/vnd.amazon.eventstream"), Some(Framing::EventStream(_))));
        for ct in ["application/json", "APPLICATION/JSON; charset=utf-8", "application/problem+Json", ""] {
            assert!(matches!(framing(ct), Some(Framing::Json(_))), "{ct}");
        }
        for ct in ["text/plain", "text/event", "é/x"] {
            assert!(framing(ct).is_none(), "{ct}");
        }
    }

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    fn format_of(dir: &str) -> WireFormat {
        match dir {
            "anthropic" => WireFormat::Anthropic,
            "google" => WireFormat::Google,
            "cohere" => WireFormat::Cohere,
            "bedrock" => WireFormat::Bedrock,
            "workers-ai" => WireFormat::WorkersAi,
            _ => WireFormat::OpenAi,
        }
    }

    /// Every fixture, fed whole, byte by byte, and in 7-byte pieces, gives its expected usage.
    #[test]
    fn fixtures_give_their_expected_usage() {
        let mut checked = 0;
        for dir in std::fs::read_dir(fixtures()).unwrap() {
            let dir = dir.unwrap().path();
            let format = format_of(dir.file_name().unwrap().to_str().unwrap());
            for file in std::fs::read_dir(&dir).unwrap() {
                let path = file.unwrap().path();
                let name = path.file_name().unwrap().to_str().unwrap().to_string();
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                let content_type = if ext == "sse" {
                    "text/event-stream"
                } else if ext == "json" && !name.contains(".expected.") {
                    "application/json"
                } else {
                    continue;
                };
                let body = std::fs::read(&path).unwrap();
                let expected_path = path.with_extension("expected.json");
                let expected: Usage = serde_json::from_slice(&std::fs::read(&expected_path).unwrap()).unwrap();
                for piece in [body.len(), 1, 7] {
                    let mut p = UsageParser::new(format, content_type, 1 << 20).unwrap();
                    body.chunks(piece.max(1)).for_each(|c| p.feed(c));
                    assert_eq!(p.finish(), expected, "{name} in pieces of {piece}");
                }
                checked += 1;
            }
        }
        assert!(checked >= 15, "only {checked} fixtures");
    }

    /// The field names a derived `Deserialize` asks for.
    fn fields_of<T: for<'de> Deserialize<'de>>() -> Vec<&'static str> {
        struct Fields(Vec<&'static str>);
        impl<'de> serde::Deserializer<'de> for &mut Fields {
            type Error = serde::de::value::Error;
            fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(serde::de::Error::custom("fields only"))
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0.extend_from_slice(fields);
                Err(serde::de::Error::custom("fields only"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
                option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
                ignored_any
            }
        }
        let mut fields = Fields(Vec::new());
        assert!(T::deserialize(&mut fields).is_err());
        fields.0.sort_unstable();
        fields.0
    }

    /// The plain reading knows every key serde's reads: `Lean`'s, and each of `UsageFields`'
    /// either read or left to serde (a field added there and not here would be missed).
    #[test]
    fn the_plain_reading_knows_every_field() {
        let mut keys: Vec<&str> = LEAN_KEYS.iter().map(|k| std::str::from_utf8(k).unwrap()).collect();
        keys.sort_unstable();
        assert_eq!(fields_of::<Lean>(), keys);
        let mut usage: Vec<&str> =
            USAGE_READ.iter().chain(&USAGE_LEFT).map(|k| std::str::from_utf8(k).unwrap()).collect();
        usage.sort_unstable();
        assert_eq!(fields_of::<UsageFields>(), usage);
        assert_eq!(fields_of::<super::super::usage_fields::Details>(), ["cached_tokens"]);
    }

    /// Usage as `apply` reads it from a parse.
    fn read(lean: Option<Lean>) -> Option<Usage> {
        lean.map(|lean| {
            let mut raw = Raw::default();
            apply(&lean, &mut raw);
            raw.finish()
        })
    }

    /// Whatever the plain reading reads, it reads as serde does: the providers' answers and
    /// events (the fixtures), bodies made to differ from them, and a thousand mutations of each
    /// that are still JSON objects. The plain reading serves the usual answers, and leaves the
    /// rest to serde.
    #[test]
    fn the_plain_reading_agrees_with_serde() {
        let mut bodies: Vec<Vec<u8>> = [
            &br#"{"id":"x","model":"gpt","choices":[{"message":{"content":"a \"}\" [{"}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":2,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#[..],
            br#"{"model":"claude","usage":{"input_tokens":5,"cache_creation_input_tokens":1,"cache_read_input_tokens":2,"output_tokens":9,"cache_creation":{"ephemeral_5m_input_tokens":1}}}"#,
            br#"{"model":"m","usage":{"prompt_tokens":3,"prompt_tokens":4}}"#,
            br#"{"model":"m","model":"n"}"#,
            br#"{"model":"a\u0062","usage":{"prompt_tokens":1}}"#,
            br#"{"model":7,"usage":{"prompt_tokens":-1,"completion_tokens":"x"}}"#,
            br#"{"usage":{"prompt_tokens":1.0,"output_tokens":1e2,"input_tokens":012}}"#,
            br#"{"usage":{"prompt_tokens":18446744073709551616}}"#,
            br#"{"usage":{"prompt_tokens_details":{"cached_tokens":null},"prompt_tokens":2}}"#,
            br#"{"usage":null,"model":"m"}"#,
            br#"{"usage":{},"message":{"usage":{"input_tokens":3}}}"#,
            br#"{"delta":{"stop_reason":"end"},"usage":{"output_tokens":15}}"#,
            br#"{"us\u0061ge":{"prompt_tokens":6},"model":"k"}"#,
            br#"{"usage":{"inputTokens":3,"outputTokens":4}}"#,
            b"{}",
        ]
        .iter()
        .map(|b| b.to_vec())
        .collect();
        for dir in std::fs::read_dir(fixtures()).unwrap() {
            for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
                let body = std::fs::read(file.unwrap().path()).unwrap();
                if body.starts_with(b"{") {
                    bodies.push(body.clone());
                }
                for line in body.split(|b| *b == b'\n') {
                    if let Some(data) = line.strip_prefix(b"data: ").filter(|d| d.starts_with(b"{")) {
                        bodies.push(data.to_vec());
                    }
                }
            }
        }
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            usize::try_from(x % 1_000_003).unwrap()
        };
        let (mut plain, mut compared) = (0, 0);
        let alphabet = b"{}[]\":,\\ 0129-.enul";
        for body in &bodies {
            for round in 0..1000 {
                let mut mutated = body.clone();
                if round > 0 {
                    let at = next() % mutated.len();
                    mutated[at] = alphabet[next() % alphabet.len()];
                }
                let Ok(whole) = serde_json::from_slice::<Lean>(&mutated) else { continue };
                if !mutated.trim_ascii_start().starts_with(b"{") {
                    continue;
                }
                compared += 1;
                if let Some(fast) = plain_lean(&mutated) {
                    plain += 1;
                    assert_eq!(read(Some(fast)), read(Some(whole)), "{}", String::from_utf8_lossy(&mutated));
                }
                assert_eq!(read(parse_lean(&mutated)), read(serde_json::from_slice(&mutated).ok()));
            }
        }
        assert!(plain > 1000 && compared > plain, "{plain} read plainly of {compared}");
        // Counts as JSON writes integers, and nothing else.
        let counts: [&[u8]; 8] = [b"0", b"12", b"012", b"-1", b"1.0", b"1e2", b"", b"18446744073709551616"];
        let read_counts: Vec<Option<u64>> = counts.iter().map(|c| plain_count(c)).collect();
        assert_eq!(read_counts, [Some(0), Some(12), None, None, None, None, None, None]);
        // Members it does not read are not checked: a broken `choices` keeps the usage.
        let broken = br#"{"choices":[{"x":tru}],"usage":{"prompt_tokens":3}}"#;
        assert_eq!(read(parse_lean(broken)).map(|u| u.tokens_in), Some(3));
    }

    /// Events read where they stand in a chunk give what the buffered way gives (bytes one by
    /// one): CRLF lines, event and comment lines, two data lines, bytes that are not UTF-8, a
    /// line over the limit, an event the chunk ends inside.
    #[test]
    fn whole_events_in_a_chunk_read_as_buffered_ones() {
        let usage = |n: u32| format!(r#"{{"model":"m{n}","usage":{{"prompt_tokens":{n},"completion_tokens":{n}}}}}"#);
        let streams = [
            format!("data: {}\r\n\r\ndata: [DONE]\r\n\r\n", usage(3)),
            format!("event: x\n: note\nid: 1\ndata:{}\n\n", usage(4)),
            format!("data: {{\"model\":\"m\",\ndata: \"usage\":{{\"prompt_tokens\":5}}}}\n\n{}", ""),
            format!("data: {}\n\ndata: {{\"usage\":{{\"prompt_tokens\":6,\"x\":\"NOT-UTF8\"}}}}\n\n", usage(2)),
            format!(
                "data: {}\n\ndata: {{\"usage\":{{\"prompt_tokens\":7,\"pad\":\"{}\"}}}}\n\n",
                usage(1),
                "x".repeat(300)
            ),
            format!("data: {}\n\ndata: {{\"usage\":{{\"prompt_tokens\":8}}}}", usage(9)),
        ];
        for stream in &streams {
            let mut bytes = stream.clone().into_bytes();
            if let Some(i) = bytes.windows(8).position(|w| w == b"NOT-UTF8") {
                bytes[i] = 0xff;
            }
            let read = |piece: usize| {
                let mut p = UsageParser::new(WireFormat::OpenAi, "text/event-stream", 256).unwrap();
                bytes.chunks(piece).for_each(|c| p.feed(c));
                p.finish()
            };
            let whole = read(bytes.len());
            assert_eq!(whole, read(1), "{stream}");
            assert!(whole.tokens_in > 0, "{stream}: {whole:?}");
        }
    }

    /// Only events whose usage can be there are parsed: OpenAI's `"usage":null` chunks and a
    /// text that merely says "message" are skipped.
    #[test]
    fn events_without_usage_are_not_parsed() {
        for (event, may) in [
            (r#"{"choices":[{"delta":{"content":"hi"}}],"usage":null}"#, false),
            (r#"{"choices":[],"usage" : null }"#, false),
            (r#"{"delta":{"content":"a message"},"note":"message"}"#, false),
            (r#"{"choices":[],"usage":{"prompt_tokens":1}}"#, true),
            (r#"{"choices":[],"usage" :{"prompt_tokens":1}}"#, true),
            (r#"{"type":"message_start","message":{"usage":{"input_tokens":1}}}"#, true),
            (r#"{"candidates":[],"usageMetadata":{"promptTokenCount":1}}"#, true),
            (r#"{"meta":{"billed_units":{"input_tokens":1}}}"#, true),
            (r#"{"amazon-bedrock-invocationMetrics":{"inputTokenCount":1}}"#, true),
        ] {
            assert_eq!(may_carry_usage(event.as_bytes()), may, "{event}");
        }
    }

    /// A stream's events are parsed when it ends, not as they pass: after the whole stream
    /// is fed nothing is read yet. At the end the usage chunk is read first, and gives the
    /// model when it names one (the deltas are then not parsed); else the first delta does.
    #[test]
    fn stream_events_are_parsed_when_the_body_ends() {
        let delta = |i: u32| {
            format!(
                "data: {{\"model\":\"gpt-delta\",\"choices\":[{{\"delta\":{{\"content\":\"t{i}\"}}}}],\"usage\":null}}\n\n"
            )
        };
        for (named, model) in [(r#""model":"gpt-usage","#, "gpt-usage"), ("", "gpt-delta")] {
            let deltas: String = (0..5).map(delta).collect();
            let stream = format!(
                "{deltas}data: {{{named}\"choices\":[],\"usage\":{{\"prompt_tokens\":12,\"completion_tokens\":5}}}}\n\ndata: [DONE]\n\n"
            );
            let mut p = UsageParser::new(WireFormat::OpenAi, "text/event-stream", 1 << 20).unwrap();
            p.feed(stream.as_bytes());
            assert_eq!((p.raw.model.as_deref(), p.raw.input), (None, None), "nothing is read while the bytes pass");
            let u = p.finish();
            assert_eq!((u.tokens_in, u.tokens_out, u.model.as_deref()), (12, 5, Some(model)));
        }
    }

    /// A long stream keeps at most its room of events, and reads what parsing each event as
    /// it came reads: usage in every event (the last wins), a model named only after more
    /// events than are kept at once.
    #[test]
    fn a_long_stream_keeps_little_and_reads_every_event() {
        let mut p = UsageParser::new(WireFormat::Google, "text/event-stream", 1 << 20).unwrap();
        let mut most = 0;
        for i in 0..1000u64 {
            let model = if i < 40 { "" } else { "gemini-late" };
            p.feed(format!("data: {{\"modelVersion\":\"{model}\",\"usageMetadata\":{{\"promptTokenCount\":7,\"candidatesTokenCount\":{i}}}}}\r\n\r\n").as_bytes());
            let Framing::Sse { kept, .. } = &p.framing else { panic!("an event stream") };
            most = most.max(kept.bytes.capacity());
            assert!(kept.events.len() <= KEPT_EVENTS);
        }
        assert!(most <= 2 * KEPT_BYTES, "{most} bytes kept");
        let u = p.finish();
        assert_eq!((u.tokens_in, u.tokens_out, u.model.as_deref()), (7, 999, Some("gemini-late")));

        // A parser whose limit is below the room keeps no more than its limit.
        let mut p = UsageParser::new(WireFormat::OpenAi, "text/event-stream", 300).unwrap();
        let big =
            format!("data: {{\"model\":\"m\",\"pad\":\"{}\",\"usage\":{{\"prompt_tokens\":3}}}}\n\n", "x".repeat(200));
        p.feed(big.as_bytes());
        p.feed(big.as_bytes());
        let Framing::Sse { kept, .. } = &p.framing else { panic!("an event stream") };
        assert!(kept.bytes.len() <= 300, "{}", kept.bytes.len());
        assert_eq!((p.finish().tokens_in, 3), (3, 3));
    }

    #[test]
    fn a_cut_stream_keeps_the_usage_seen_so_far() {
        let body = std::fs::read(fixtures().join("anthropic/messages-stream.sse")).unwrap();
        let cut = &body[..body.windows(13).position(|w| w == b"message_delta").unwrap()];
        let mut p = UsageParser::new(WireFormat::Anthropic, "text/event-stream", 1 << 20).unwrap();
        p.feed(cut);
        let u = p.finish();
        assert_eq!((u.tokens_in, u.tokens_out, u.model.as_deref()), (2025, 1, Some("claude-sonnet-4-5-20250929")));
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let headers = b"\x0b:event-type\x07\x00\x05chunk";
        let total = 12 + headers.len() + payload.len() + 4;
        let mut f = Vec::new();
        f.extend_from_slice(&u32::try_from(total).unwrap().to_be_bytes());
        f.extend_from_slice(&u32::try_from(headers.len()).unwrap().to_be_bytes());
        f.extend_from_slice(&[0; 4]);
        f.extend_from_slice(headers);
        f.extend_from_slice(payload);
        f.extend_from_slice(&[0; 4]);
        f
    }

    #[test]
    fn bedrock_event_streams() {
        use base64::Engine as _;
        let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
        let start = format!(
            r#"{{"bytes":"{}"}}"#,
            b64(
                r#"{"type":"message_start","message":{"model":"claude-3-haiku","usage":{"input_tokens":21,"output_tokens":1}}}"#
            )
        );
        let stop = format!(
            r#"{{"bytes":"{}"}}"#,
            b64(
                r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":21,"outputTokenCount":37,"invocationLatency":500,"firstByteLatency":200}}"#
            )
        );
        let mut stream = frame(start.as_bytes());
        stream.extend(frame(stop.as_bytes()));
        let mut p = UsageParser::new(WireFormat::Bedrock, "application/vnd.amazon.eventstream", 1 << 20).unwrap();
        stream.chunks(5).for_each(|c| p.feed(c));
        let u = p.finish();
        assert_eq!((u.tokens_in, u.tokens_out), (21, 37));

        let converse =
            frame(br#"{"usage":{"inputTokens":30,"outputTokens":12,"totalTokens":42},"metrics":{"latencyMs":300}}"#);
        let mut p = UsageParser::new(WireFormat::Bedrock, "application/vnd.amazon.eventstream", 1 << 20).unwrap();
        p.feed(&converse);
        assert_eq!(p.finish().tokens_out, 12);
    }

    /// Where the registry row says the path names the model.
    fn row(slug: &str) -> ModelInPath {
        crate::providers::builtin(slug).unwrap().model_in_path
    }

    /// The facts as a JSON parser reads the whole body (a key given twice is its last): the
    /// oracle the top-level read is held to.
    fn facts_parsed(body: &[u8]) -> RequestFacts {
        let Ok(serde_json::Value::Object(top)) = serde_json::from_slice(body) else { return RequestFacts::default() };
        let model = match top.get("model") {
            None | Some(Value::Null) => None,
            Some(Value::String(m)) => Some(m).filter(|m| !m.is_empty()).map(|m| crate::text::intern(m)),
            Some(_) => return RequestFacts::default(),
        };
        RequestFacts { model, streams: top.get("stream") == Some(&Value::Bool(true)) }
    }

    /// Every provider fixture (whole answers and each streamed event, all JSON objects), with
    /// a model and a stream flag written in front and behind, reads as the parser reads it.
    #[test]
    fn facts_from_the_top_level_agree_with_a_parser() {
        let mut objects: Vec<Vec<u8>> = Vec::new();
        for dir in std::fs::read_dir(fixtures()).unwrap() {
            for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
                let path = file.unwrap().path();
                let text = std::fs::read_to_string(&path).unwrap();
                match path.extension().and_then(|e| e.to_str()) {
                    Some("json") => objects.push(text.into_bytes()),
                    Some("sse") => objects.extend(
                        text.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| d.trim().as_bytes().to_vec()),
                    ),
                    _ => {}
                }
            }
        }
        objects.retain(|o| o.starts_with(b"{"));
        assert!(objects.len() > 60, "{} objects", objects.len());
        let mut bodies = Vec::new();
        for o in &objects {
            let inner = &o[1..];
            for front in [&b""[..], br#""model":"m\u00e9","#, br#""stream":true, "#, br#""stream" : "true","#] {
                bodies.push([b"{".as_slice(), front, inner].concat());
            }
            if o.len() > 2 {
                let head = &o[..o.len() - 1];
                for back in [&br#","stream":true}"#[..], br#","model":null}"#, br#","model":7}"#, br#","model":["x"]}"#]
                {
                    bodies.push([head, back].concat());
                }
            }
        }
        let mut models = 0;
        for body in &bodies {
            let (read, parsed) = (request_facts(body), facts_parsed(body));
            assert_eq!(read, parsed, "{}", String::from_utf8_lossy(body));
            models += usize::from(read.model.is_some());
        }
        assert!(models > objects.len(), "the bodies name models: {models}");
    }

    #[test]
    fn models_from_requests_and_paths() {
        let model = |body: &[u8]| request_facts(body).model.map(|m| m.to_string());
        assert_eq!(model(br#"{"model":"gpt-4o","messages":[]}"#).as_deref(), Some("gpt-4o"));
        assert_eq!(model(b"[1]"), None);
        assert_eq!(model(br#"["gpt-4o", true]"#), None, "an array is not a request object");
        assert_eq!(model(br#"{"model":"gpt\u002d4o"}"#).as_deref(), Some("gpt-4o"));
        assert_eq!(model(br#"{"model":"","x":1}"#), None);
        // The model and the stream flag come from one read; a `stream` of another type leaves
        // the model readable and does not count as streaming.
        assert_eq!(
            request_facts(br#"{"messages":[],"stream":true,"model":"m"}"#),
            RequestFacts { model: Some("m".into()), streams: true }
        );
        for (body, streams) in [
            (&br#"{"model":"m","stream":"true"}"#[..], false),
            (br#"{"model":"m","stream":{"on":true}}"#, false),
            (br#"{"model":"m","stream":false}"#, false),
            (br#"{"model":"m","stream":null}"#, false),
            (br#"{"model":"m","messages":[{"stream":true}]}"#, false),
        ] {
            assert_eq!(request_facts(body), RequestFacts { model: Some("m".into()), streams }, "{body:?}");
        }
        assert_eq!(
            model_from_path(row("workers-ai"), "@cf/meta/llama-3.1-8b-instruct").as_deref(),
            Some("@cf/meta/llama-3.1-8b-instruct")
        );
        assert_eq!(
            model_from_path(row("aws-bedrock"), "bedrock-runtime/us-east-1/model/anthropic.claude-v2%3A1/invoke")
                .as_deref(),
            Some("anthropic.claude-v2:1")
        );
        assert_eq!(
            model_from_path(
                row("google-vertex-ai"),
                "v1/projects/p/locations/l/publishers/google/models/gemini-2.0-flash:generateContent"
            )
            .as_deref(),
            Some("gemini-2.0-flash")
        );
        assert_eq!(model_from_path(row("huggingface"), "bigcode/starcoder").as_deref(), Some("bigcode/starcoder"));
        assert_eq!(model_from_path(row("openai"), "chat/completions"), None);
    }
}

/// For a streamed OpenAI-style completion that did not ask for usage (`stream_options.
/// include_usage`), the same body asking for it, so every stream's tokens and cost are known;
/// `None` when there is nothing to change (not streamed, asked already, not a JSON object).
/// `streams`: the body's [`RequestFacts::streams`], read already.
#[must_use]
pub fn asking_stream_usage(body: &[u8], streams: bool) -> Option<bytes::Bytes> {
    if !streams {
        return None;
    }
    if memchr::memmem::find(body, b"\"stream_options\"").is_none() {
        // As the SDKs stream: no options. The option goes in first, ahead of the client's own
        // bytes, which are kept as they came.
        const ASK: &[u8] = br#""stream_options":{"include_usage":true},"#;
        let at = body.len() - body.trim_ascii_start().len();
        if body.get(at) != Some(&b'{') {
            return None;
        }
        let mut out = Vec::with_capacity(body.len() + ASK.len());
        out.extend_from_slice(&body[..=at]);
        out.extend_from_slice(ASK);
        out.extend_from_slice(&body[at + 1..]);
        return Some(out.into());
    }
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let request = value.as_object_mut()?;
    if request.get("stream") != Some(&serde_json::Value::Bool(true)) {
        return None;
    }
    let options = request.entry("stream_options").or_insert_with(|| serde_json::json!({})).as_object_mut()?;
    if options.get("include_usage") == Some(&serde_json::Value::Bool(true)) {
        return None;
    }
    options.insert("include_usage".into(), serde_json::Value::Bool(true));
    serde_json::to_vec(&value).ok().map(bytes::Bytes::from)
}

#[cfg(test)]
mod stream_usage_tests {
    use super::request_facts;

    /// As the gateway asks: the body's facts read first, then the rewrite.
    fn asking_stream_usage(body: &[u8]) -> Option<bytes::Bytes> {
        super::asking_stream_usage(body, request_facts(body).streams)
    }

    #[test]
    fn asks_for_usage_only_where_missing() {
        let asked = asking_stream_usage(br#"{"model":"m","stream":true,"messages":[]}"#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&asked).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["model"], "m");
        let kept = asking_stream_usage(br#"{"stream":true,"stream_options":{"include_usage":false,"x":1}}"#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&kept).unwrap();
        assert_eq!(
            (v["stream_options"]["include_usage"].clone(), v["stream_options"]["x"].clone()),
            (true.into(), 1.into())
        );
        assert!(asking_stream_usage(br#"{"stream":true,"stream_options":{"include_usage":true}}"#).is_none());
        assert!(asking_stream_usage(br#"{"stream":false}"#).is_none());
        assert!(asking_stream_usage(br#"{"messages":[]}"#).is_none());
        assert!(asking_stream_usage(b"not json \"stream\"").is_none());
    }

    /// Without `stream_options` the option is put in front of the client's bytes, which stay
    /// as they came; anything that is not an object streaming is left alone.
    #[test]
    fn the_option_goes_in_front_of_the_body_as_sent() {
        let body = br#"  {"model":"m", "stream" : true,"messages":[{"role":"user","content":"say \"stream\""}]}"#;
        let asked = asking_stream_usage(body).unwrap();
        assert_eq!(
            &asked[..],
            &br#"  {"stream_options":{"include_usage":true},"model":"m", "stream" : true,"messages":[{"role":"user","content":"say \"stream\""}]}"#[..]
        );
        let v: serde_json::Value = serde_json::from_slice(&asked).unwrap();
        assert_eq!(v["messages"][0]["content"], "say \"stream\"");
        for left in [
            &br#"{"model":"m","stream":false}"#[..],
            br#"{"model":"m","stream":"true"}"#,
            br#"{"messages":[{"content":"\"stream\": true"}]}"#,
            br#"[{"stream":true}]"#,
            br#"{"stream":true"#,
            br#"{"stream":true,"stream":false}"#,
        ] {
            assert!(asking_stream_usage(left).is_none(), "{}", String::from_utf8_lossy(left));
        }
        // A key given twice is its last, as the provider's parser reads it.
        assert!(asking_stream_usage(br#"{"stream":false,"stream":true}"#).is_some());
    }
}
