//! Unified-API translation cost: a ~1 KB OpenAI chat request to Anthropic and to Gemini (parse,
//! canonical, write), and a streamed answer re-encoded chunk by chunk. Budgets (DESIGN §7):
//! ≤ 15 µs CPU per 1 KB body, ≤ 2 µs per streamed chunk. Also the usage parser over a streamed
//! answer, which every logged stream pays.
//!
//! Run: `cargo bench --bench translate`.

#![expect(clippy::unwrap_used, clippy::cast_precision_loss, reason = "a benchmark harness")]

use std::hint::black_box;
use std::time::Instant;

use std::time::Duration;

use torii::gateway::stream::{BodyShape, ProxyBody, Taps};
use torii::providers::WireFormat;
use torii::providers::translate::{Dialect, StreamTranscoder, anthropic, google, openai};
use torii::providers::usage::UsageParser;

fn request() -> Vec<u8> {
    let long = "Explain the difference between a process and a thread in an operating system, with an example. ";
    serde_json::to_vec(&serde_json::json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 512,
        "temperature": 0.3,
        "messages": [
            {"role": "system", "content": "You are a concise assistant for systems programmers."},
            {"role": "user", "content": long.repeat(5)},
            {"role": "assistant", "content": "A process owns an address space; threads share one."},
            {"role": "user", "content": "And what does that mean for a crash?"}
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look up a term",
            "parameters": {"type": "object", "properties": {"term": {"type": "string"}}, "required": ["term"]}}}]
    }))
    .unwrap()
}

fn per_op(label: &str, n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let started = Instant::now();
    for _ in 0..n {
        f();
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("{label:<48} {us:>8.2} µs");
    us
}

fn main() {
    let body = request();
    println!("request body: {} bytes", body.len());
    let kb = body.len() as f64 / 1024.0;
    let n = 50_000;
    let to_anthropic = per_op("OpenAI request -> Anthropic (parse+write)", n, || {
        let v: serde_json::Value = serde_json::from_slice(black_box(&body)).unwrap();
        let canonical = openai::request_from(&v).unwrap();
        black_box(anthropic::request_to(&canonical).unwrap().to_string());
    });
    let to_gemini = per_op("OpenAI request -> Gemini (parse+write)", n, || {
        let v: serde_json::Value = serde_json::from_slice(black_box(&body)).unwrap();
        let canonical = openai::request_from(&v).unwrap();
        black_box(google::request_to(&canonical).unwrap().to_string());
    });
    println!("per KB: Anthropic {:.2} µs, Gemini {:.2} µs (budget 15)", to_anthropic / kb, to_gemini / kb);

    let stream = include_str!("../tests/fixtures/anthropic/messages-stream.sse");
    let chunks: Vec<&[u8]> = stream.split_inclusive("\n\n").map(str::as_bytes).collect();
    let per_stream = per_op("Anthropic stream -> OpenAI SSE (whole stream)", 20_000, || {
        let mut t = StreamTranscoder::new(Dialect::Anthropic, Dialect::OpenAi, true);
        for c in &chunks {
            black_box(t.feed(c));
        }
        black_box(t.finish());
    });
    println!("per streamed chunk: {:.2} µs over {} chunks (budget 2)", per_stream / chunks.len() as f64, chunks.len());

    let stream = include_str!("../tests/fixtures/openai/chat-stream-usage.sse");
    let events: Vec<&[u8]> = stream.split_inclusive("\n\n").map(str::as_bytes).collect();
    per_op("usage of an OpenAI stream, event by event", 50_000, || {
        let mut p = UsageParser::new(WireFormat::OpenAi, "text/event-stream", 1 << 20).unwrap();
        for e in &events {
            p.feed(black_box(e));
        }
        black_box(p.finish());
    });
    // A passthrough stream as a client gets it: 300 content chunks (each with "usage":null, as
    // OpenAI sends them once usage is asked for), the usage chunk (hidden) and [DONE], through
    // the body's usage parser, usage-chunk filter and final-event check, one chunk per poll.
    let content = r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" word"},"finish_reason":null}],"usage":null}

"#;
    let mut pieces: Vec<bytes::Bytes> = vec![bytes::Bytes::from_static(content.as_bytes()); 300];
    pieces.push(bytes::Bytes::from_static(
        br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":300,"total_tokens":309}}

"#,
    ));
    pieces.push(bytes::Bytes::from_static(b"data: [DONE]\n\n"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let shape = BodyShape { sse: true, final_markers: WireFormat::OpenAi.final_event_markers(), content_length: None };
    let per_body = per_op("passthrough SSE body, 302 chunks (usage, filter, end)", 2_000, || {
        rt.block_on(async {
            let upstream = futures_util::stream::iter(pieces.clone().into_iter().map(Ok::<_, std::io::Error>));
            let body = ProxyBody::new(
                upstream,
                Duration::from_secs(60),
                shape,
                Taps::new(),
                Box::new(|s| {
                    black_box(s);
                }),
            )
            .with_usage(UsageParser::new(WireFormat::OpenAi, "text/event-stream", 1 << 20))
            .hiding_usage_chunk();
            black_box(futures_util::StreamExt::count(body).await);
        });
    });
    println!("per passthrough chunk: {:.3} µs", per_body / pieces.len() as f64);
    per_op("usage of an OpenAI stream, in 7-byte pieces", 50_000, || {
        let mut p = UsageParser::new(WireFormat::OpenAi, "text/event-stream", 1 << 20).unwrap();
        for piece in stream.as_bytes().chunks(7) {
            p.feed(black_box(piece));
        }
        black_box(p.finish());
    });
}
