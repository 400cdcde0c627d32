//! Translation between wire formats for the unified API: one canonical model
//! ([`canonical`]), one adapter per format, and an incremental SSE parser.
//!
//! Each adapter reads and writes what its surface needs: OpenAI chat and Anthropic Messages both
//! ways (clients speak them, and providers answer in them), Google Gemini from the canonical
//! request and back from its responses.

pub mod anthropic;
pub mod bedrock;
pub mod canonical;
pub mod cohere;
pub mod eventstream;
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
    /// Cohere v2 chat (provider side only).
    Cohere,
    /// AWS Bedrock Converse, streamed as event-stream frames (provider side only).
    Bedrock,
}

enum Decoder {
    OpenAi(openai::StreamDecoder),
    Anthropic(anthropic::StreamDecoder),
    Google(google::StreamDecoder),
    Cohere(cohere::StreamDecoder),
    Bedrock(bedrock::StreamDecoder),
}

impl Decoder {
    fn new(from: Dialect) -> Self {
        match from {
            Dialect::OpenAi => Self::OpenAi(openai::StreamDecoder::default()),
            Dialect::Anthropic => Self::Anthropic(anthropic::StreamDecoder::default()),
            Dialect::Google => Self::Google(google::StreamDecoder::default()),
            Dialect::Cohere => Self::Cohere(cohere::StreamDecoder::default()),
            Dialect::Bedrock => Self::Bedrock(bedrock::StreamDecoder::default()),
        }
    }

    fn decode(&mut self, event: &str, data: &str) -> Vec<Event> {
        match self {
            Self::OpenAi(d) => d.decode(event, data),
            Self::Anthropic(d) => d.decode(event, data),
            Self::Google(d) => d.decode(event, data),
            Self::Cohere(d) => d.decode(event, data),
            Self::Bedrock(d) => d.decode(event, data),
        }
    }
}

/// How the provider frames its stream.
enum Framing {
    Sse(sse::SseParser),
    EventStream(eventstream::FrameParser),
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
    parser: Framing,
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
            _ => Encoder::OpenAi(openai::StreamEncoder::new(include_usage)),
        };
        let parser = if from == Dialect::Bedrock {
            Framing::EventStream(eventstream::FrameParser::default())
        } else {
            Framing::Sse(sse::SseParser::default())
        };
        Self { parser, decoder: Decoder::new(from), encoder, done: false }
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
        let parsed = match &mut self.parser {
            Framing::Sse(p) => p.feed(bytes),
            Framing::EventStream(p) => p.feed(bytes).map(|frames| {
                frames
                    .into_iter()
                    .map(|f| sse::SseEvent {
                        event: if f.exception { "error".into() } else { f.event },
                        data: String::from_utf8_lossy(&f.payload).into_owned(),
                    })
                    .collect()
            }),
        };
        match parsed {
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
        let last = match &mut self.parser {
            Framing::Sse(p) => p.finish().into_iter().collect(),
            Framing::EventStream(_) => Vec::new(),
        };
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
        Dialect::Cohere => cohere::response_from(&v)?,
        Dialect::Bedrock => bedrock::response_from(&v)?,
    };
    Ok(match to {
        Dialect::Anthropic => anthropic::response_to(&canonical),
        _ => openai::response_to(&canonical),
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
            Dialect::Cohere => cohere::error_message(v),
            Dialect::Bedrock => bedrock::error_message(v),
        })
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text: String = text.chars().take(2000).collect();
            if text.trim().is_empty() { format!("the provider answered {status}") } else { text }
        });
    match to {
        Dialect::Anthropic => anthropic::error_to(status, &message),
        _ => openai::error_to(status, &message),
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
            (Dialect::Cohere, include_str!("../../../tests/fixtures/cohere/chat-v2-stream.sse")),
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
        let cohere = translate_response(
            Dialect::Cohere,
            Dialect::OpenAi,
            include_bytes!("../../../tests/fixtures/cohere/chat-v2.json"),
        )
        .unwrap();
        assert_eq!(cohere["choices"][0]["message"]["content"], "LLMs are...");
        assert_eq!(cohere["usage"]["prompt_tokens"], 71);
        let bedrock = translate_response(
            Dialect::Bedrock,
            Dialect::Anthropic,
            include_bytes!("../../../tests/fixtures/bedrock/converse.json"),
        )
        .unwrap();
        assert_eq!(bedrock["content"][0]["text"], "Hello");
        assert_eq!(
            (bedrock["usage"]["input_tokens"].clone(), bedrock["usage"]["cache_read_input_tokens"].clone()),
            (30.into(), 10.into())
        );
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
