//! Translation between wire formats for the unified API: one canonical model
//! ([`canonical`]), one adapter per format, and an incremental SSE parser.
//!
//! Each adapter reads and writes what its surface needs: OpenAI chat and Anthropic Messages both
//! ways (clients speak them, and providers answer in them), Google Gemini from the canonical
//! request and back from its responses.

pub mod anthropic;
pub mod canonical;
pub mod google;
pub mod openai;
pub mod sse;

use canonical::Event;
use serde_json::Value;

/// A chat wire format, as a client speaks it or a provider answers in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI Chat Completions (and every compatible provider).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini `generateContent` (provider side only).
    Google,
}

enum Decoder {
    OpenAi(openai::StreamDecoder),
    Anthropic(anthropic::StreamDecoder),
    Google(google::StreamDecoder),
}

impl Decoder {
    fn new(from: Dialect) -> Self {
        match from {
            Dialect::OpenAi => Self::OpenAi(openai::StreamDecoder::default()),
            Dialect::Anthropic => Self::Anthropic(anthropic::StreamDecoder::default()),
            Dialect::Google => Self::Google(google::StreamDecoder::default()),
        }
    }

    fn decode(&mut self, event: &str, data: &str) -> Vec<Event> {
        match self {
            Self::OpenAi(d) => d.decode(event, data),
            Self::Anthropic(d) => d.decode(event, data),
            Self::Google(d) => d.decode(event, data),
        }
    }
}

enum Encoder {
    OpenAi(openai::StreamEncoder),
    Anthropic(anthropic::StreamEncoder),
}

impl Encoder {
    fn encode(&mut self, event: Event) -> String {
        match self {
            Self::OpenAi(e) => e.encode(event),
            Self::Anthropic(e) => e.encode(event),
        }
    }

    fn finish(&mut self) -> String {
        match self {
            Self::OpenAi(e) => e.finish(),
            Self::Anthropic(e) => e.finish(),
        }
    }
}

/// Re-encodes a provider's SSE stream in the client's format, event by event: nothing is held
/// but the unfinished tail of one event.
pub struct StreamTranscoder {
    parser: sse::SseParser,
    decoder: Decoder,
    encoder: Encoder,
    done: bool,
}

impl StreamTranscoder {
    /// From `from` to `to` (OpenAI or Anthropic); `include_usage`: the OpenAI client asked for
    /// the usage chunk.
    #[must_use]
    pub fn new(from: Dialect, to: Dialect, include_usage: bool) -> Self {
        let encoder = match to {
            Dialect::Anthropic => Encoder::Anthropic(anthropic::StreamEncoder::new()),
            Dialect::OpenAi | Dialect::Google => Encoder::OpenAi(openai::StreamEncoder::new(include_usage)),
        };
        Self { parser: sse::SseParser::default(), decoder: Decoder::new(from), encoder, done: false }
    }

    fn events(&mut self, events: Vec<sse::SseEvent>) -> String {
        let mut out = String::new();
        for e in events {
            for c in self.decoder.decode(&e.event, &e.data) {
                out.push_str(&self.encoder.encode(c));
            }
        }
        out
    }

    /// The client's bytes for the next upstream bytes.
    pub fn feed(&mut self, bytes: &[u8]) -> String {
        match self.parser.feed(bytes) {
            Ok(events) => self.events(events),
            Err(e) => {
                let data = serde_json::json!({"type": "error", "error": {"type": "api_error", "message": e}});
                self.encoder.encode(Event::Error(data.to_string()))
            }
        }
    }

    /// The client's last bytes when the upstream stream has ended.
    pub fn finish(&mut self) -> String {
        if self.done {
            return String::new();
        }
        self.done = true;
        let last = self.parser.finish().into_iter().collect();
        let mut out = self.events(last);
        out.push_str(&self.encoder.finish());
        out
    }
}

/// Re-writes a whole (not streamed) answer in the client's format.
pub fn translate_response(from: Dialect, to: Dialect, body: &[u8]) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("the provider's answer is not JSON: {e}"))?;
    let canonical = match from {
        Dialect::OpenAi => openai::response_from(&v)?,
        Dialect::Anthropic => anthropic::response_from(&v)?,
        Dialect::Google => google::response_from(&v)?,
    };
    Ok(match to {
        Dialect::Anthropic => anthropic::response_to(&canonical),
        Dialect::OpenAi | Dialect::Google => openai::response_to(&canonical),
    })
}

/// A provider's error answer in the client's error shape (the status stays the provider's).
#[must_use]
pub fn translate_error(from: Dialect, to: Dialect, status: u16, body: &[u8]) -> Value {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| match from {
            Dialect::OpenAi => openai::error_message(v),
            Dialect::Anthropic => anthropic::error_message(v),
            Dialect::Google => google::error_message(v),
        })
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text: String = text.chars().take(2000).collect();
            if text.trim().is_empty() { format!("the provider answered {status}") } else { text }
        });
    match to {
        Dialect::Anthropic => anthropic::error_to(status, &message),
        Dialect::OpenAi | Dialect::Google => openai::error_to(status, &message),
    }
}
