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

#[cfg(test)]
mod tests {
    use super::canonical::{Finish, Usage};
    use super::*;

    /// What a stream says, in canonical terms.
    #[derive(Debug, Default, PartialEq)]
    struct Said {
        text: String,
        tools: Vec<(String, String)>,
        finish: Option<Finish>,
        usage: Option<Usage>,
    }

    fn said(dialect: Dialect, stream: &str) -> Said {
        let mut parser = sse::SseParser::default();
        let mut decoder = Decoder::new(dialect);
        let mut out = Said::default();
        let events = parser.feed(stream.as_bytes()).unwrap().into_iter().chain(parser.finish());
        for e in events {
            for c in decoder.decode(&e.event, &e.data) {
                match c {
                    Event::Text(t) => out.text.push_str(&t),
                    Event::ToolStart { name, .. } => out.tools.push((name, String::new())),
                    Event::ToolArgs { index, delta } => out.tools[index].1.push_str(&delta),
                    Event::Finish(f) => out.finish = Some(f),
                    Event::Usage(u) => out.usage = Some(u),
                    Event::Start { .. } | Event::Error(_) => {}
                }
            }
        }
        out
    }

    /// Transcodes `stream` fed in pieces of `size`.
    fn transcode(from: Dialect, to: Dialect, stream: &str, size: usize) -> String {
        let mut t = StreamTranscoder::new(from, to, true);
        let mut out = String::new();
        for piece in stream.as_bytes().chunks(size) {
            out.push_str(&t.feed(piece));
        }
        out.push_str(&t.finish());
        out
    }

    /// Provider streams (documented examples) re-encoded for each client format say the same
    /// text, tool calls, stop reason and usage, whatever the packet boundaries.
    #[test]
    fn streams_translate_in_every_split() {
        let cases = [
            (Dialect::Anthropic, include_str!("../../../tests/fixtures/anthropic/messages-stream.sse")),
            (Dialect::Anthropic, include_str!("../../../tests/fixtures/anthropic/messages-tool-stream.sse")),
            (Dialect::OpenAi, include_str!("../../../tests/fixtures/openai/chat-stream-usage.sse")),
            (Dialect::OpenAi, include_str!("../../../tests/fixtures/openai/chat-tool-stream.sse")),
            (Dialect::Google, include_str!("../../../tests/fixtures/google/stream-alt-sse.sse")),
        ];
        for (from, stream) in cases {
            let expected = said(from, stream);
            assert!(!expected.text.is_empty() || !expected.tools.is_empty(), "{from:?}: the fixture says something");
            for to in [Dialect::OpenAi, Dialect::Anthropic] {
                for size in [1, 2, 3, 5, 7, 13, 64, 1024, stream.len()] {
                    let out = transcode(from, to, stream, size);
                    let got = said(to, &out);
                    assert_eq!(got.text, expected.text, "{from:?} -> {to:?}, pieces of {size}");
                    assert_eq!(got.tools, expected.tools, "{from:?} -> {to:?}, pieces of {size}");
                    assert_eq!(
                        got.finish.unwrap_or(Finish::Stop),
                        expected.finish.unwrap_or(Finish::Stop),
                        "{from:?} -> {to:?}"
                    );
                    assert_eq!(
                        got.usage.map(|u| (u.input, u.output)),
                        expected.usage.map(|u| (u.input, u.output)),
                        "{from:?} -> {to:?}: {out}"
                    );
                }
            }
        }
    }

    #[test]
    fn whole_answers_translate() {
        let anthropic = include_bytes!("../../../tests/fixtures/anthropic/messages.json");
        let openai = translate_response(Dialect::Anthropic, Dialect::OpenAi, anthropic).unwrap();
        let canonical = anthropic::response_from(&serde_json::from_slice(anthropic).unwrap()).unwrap();
        assert_eq!(openai["choices"][0]["message"]["content"], canonical.text.as_str());
        assert_eq!(openai["usage"]["prompt_tokens"], canonical.usage.input);
        assert_eq!(openai["usage"]["prompt_tokens_details"]["cached_tokens"], canonical.usage.cached_input);
        let back = translate_response(Dialect::OpenAi, Dialect::Anthropic, openai.to_string().as_bytes()).unwrap();
        assert_eq!(back["content"][0]["text"], canonical.text.as_str());
        assert_eq!(back["usage"]["output_tokens"], canonical.usage.output);
        let google = include_bytes!("../../../tests/fixtures/google/generate.json");
        let from_google = translate_response(Dialect::Google, Dialect::OpenAi, google).unwrap();
        assert!(from_google["choices"][0]["message"]["content"].as_str().is_some_and(|t| !t.is_empty()));
        let openai_fixture = include_bytes!("../../../tests/fixtures/openai/chat.json");
        let to_anthropic = translate_response(Dialect::OpenAi, Dialect::Anthropic, openai_fixture).unwrap();
        assert_eq!(to_anthropic["type"], "message");
        assert!(translate_response(Dialect::OpenAi, Dialect::Anthropic, b"{}").is_err());
    }

    /// OpenAI → canonical → Anthropic → canonical → OpenAI keeps every field both formats have.
    #[test]
    fn requests_round_trip_between_openai_and_anthropic() {
        let request = serde_json::json!({
            "model": "m", "max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "stop": ["END"], "stream": true,
            "user": "u-1",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "look", "arguments": "{\"x\":1}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
                {"role": "user", "content": "thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "look", "description": "Looks",
                "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "look"}}
        });
        let first = openai::request_from(&request).unwrap();
        let anthropic_body = anthropic::request_to(&first).unwrap();
        assert_eq!(anthropic_body["system"], "Be brief.");
        assert_eq!(anthropic_body["messages"][0]["content"][1]["source"]["media_type"], "image/png");
        assert_eq!(anthropic_body["messages"][1]["content"][0]["input"], serde_json::json!({"x": 1}));
        assert_eq!(anthropic_body["messages"][2]["content"][0]["type"], "tool_result");
        assert_eq!(anthropic_body["tool_choice"], serde_json::json!({"type": "tool", "name": "look"}));
        let second = anthropic::request_from(&anthropic_body).unwrap();
        let again = openai::request_to(&second);
        let third = openai::request_from(&again).unwrap();
        assert_eq!(third.messages, first.messages);
        assert_eq!(third.tools, first.tools);
        assert_eq!(
            (third.max_tokens, third.temperature, third.top_p),
            (first.max_tokens, first.temperature, first.top_p)
        );
        assert_eq!(
            (third.stop.clone(), third.user.clone(), third.tool_choice.clone()),
            (first.stop.clone(), first.user.clone(), first.tool_choice.clone())
        );
        let gemini = google::request_to(&first).unwrap();
        assert_eq!(gemini["contents"][1]["parts"][0]["functionCall"]["name"], "look");
        assert_eq!(
            gemini["contents"][2]["parts"][0]["functionResponse"]["name"], "look",
            "named from the call it answers"
        );
        assert_eq!(gemini["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"][0], "look");
    }
}
