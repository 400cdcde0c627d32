//! The mock's native answers for the unified API: Google Gemini `generateContent` (JSON and
//! `alt=sse` streams), and tool calls in OpenAI's, Anthropic's and Gemini's own shapes (the
//! first tool the request declares is called with `{"city":"Paris"}`), streamed in small pieces
//! as the providers do.

use std::sync::Arc;

use actix_web::HttpResponse;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::mock::{MockState, sse};

/// The name of the first tool the request declares, in whichever format it came.
fn first_tool(req: &Value) -> Option<String> {
    let t = req.get("tools")?.get(0)?;
    t.pointer("/function/name")
        .or_else(|| t.get("name"))
        .or_else(|| t.pointer("/functionDeclarations/0/name"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn send_all(state: &Arc<MockState>, events: Vec<String>) -> HttpResponse {
    let (tx, resp) = sse(state);
    actix_web::rt::spawn(async move {
        for e in events {
            if tx.send(Bytes::from(e)).await.is_err() {
                return;
            }
        }
    });
    resp
}

/// Native answers this module owns, else `None` (the generic mock answers).
pub fn answer(path: &str, req: &Value, state: &Arc<MockState>) -> Option<HttpResponse> {
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if path.contains(":generateContent") || path.contains(":streamGenerateContent") {
        return Some(gemini(path.contains(":streamGenerateContent"), first_tool(req), state));
    }
    if path.ends_with("/converse") || path.ends_with("/converse-stream") {
        return Some(converse(path.ends_with("/converse-stream"), first_bedrock_tool(req).as_deref(), state));
    }
    if path.ends_with("/v2/chat") {
        return Some(cohere(stream, first_tool(req).as_deref(), state));
    }
    let tool = first_tool(req)?;
    if path.ends_with("/messages") {
        return Some(anthropic_tool(stream, &tool, state));
    }
    if path.ends_with("/chat/completions") {
        let usage = req.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
        return Some(openai_tool(stream, usage, &tool, state));
    }
    None
}

fn gemini(stream: bool, tool: Option<String>, state: &Arc<MockState>) -> HttpResponse {
    let usage = json!({"promptTokenCount": 9, "candidatesTokenCount": 4, "totalTokenCount": 13});
    if let Some(name) = tool {
        let chunk = json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": name, "args": {"city": "Paris"}}}]},
            "finishReason": "STOP", "index": 0}], "usageMetadata": usage, "modelVersion": "gemini-mock", "responseId": "resp-gem"});
        if stream {
            return send_all(state, vec![format!("data: {chunk}\r\n\r\n")]);
        }
        return HttpResponse::Ok().json(chunk);
    }
    if !stream {
        return HttpResponse::Ok().json(json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": "Hello from mock Gemini"}]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage, "modelVersion": "gemini-mock", "responseId": "resp-gem"
        }));
    }
    let mut events = Vec::new();
    for piece in ["Hello", " from", " mock Gemini"] {
        let chunk = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": piece}]}, "index": 0}],
            "modelVersion": "gemini-mock", "responseId": "resp-gem"});
        events.push(format!("data: {chunk}\r\n\r\n"));
    }
    let last = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": usage, "modelVersion": "gemini-mock", "responseId": "resp-gem"});
    let text = format!("data: {last}\r\n\r\n");
    let (a, b) = text.split_at(text.len() / 3);
    events.push(a.to_string());
    events.push(b.to_string());
    send_all(state, events)
}

fn anthropic_tool(stream: bool, tool: &str, state: &Arc<MockState>) -> HttpResponse {
    if !stream {
        return HttpResponse::Ok().json(json!({
            "id": "msg_tool", "type": "message", "role": "assistant", "model": "claude-mock",
            "content": [{"type": "text", "text": "Let me check."}, {"type": "tool_use", "id": "toolu_01", "name": tool, "input": {"city": "Paris"}}],
            "stop_reason": "tool_use", "stop_sequence": null, "usage": {"input_tokens": 20, "output_tokens": 8}
        }));
    }
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let events = vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_tool", "type": "message", "role": "assistant",
            "model": "claude-mock", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 20, "output_tokens": 1}}}),
        ),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me check."}}),
        ),
        ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_01", "name": tool, "input": {}}}),
        ),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"ci"}}),
        ),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "ty\": \"Paris\"}"}}),
        ),
        ev("content_block_stop", json!({"type": "content_block_stop", "index": 1})),
        ev(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 8}}),
        ),
        ev("message_stop", json!({"type": "message_stop"})),
    ];
    send_all(state, events)
}

fn openai_tool(stream: bool, usage: bool, tool: &str, state: &Arc<MockState>) -> HttpResponse {
    if !stream {
        return HttpResponse::Ok().json(json!({
            "id": "chatcmpl-tool", "object": "chat.completion", "created": 1, "model": "gpt-mock",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "call_abc", "type": "function", "function": {"name": tool, "arguments": "{\"city\":\"Paris\"}"}}]},
                "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}
        }));
    }
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({"id": "chatcmpl-tool", "object": "chat.completion.chunk", "created": 1, "model": "gpt-mock",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if usage {
            c["usage"] = Value::Null;
        }
        format!("data: {c}\n\n")
    };
    let mut events = vec![
        chunk(json!({"role": "assistant", "content": null}), Value::Null),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_abc", "type": "function", "function": {"name": tool, "arguments": ""}}]}),
            Value::Null,
        ),
    ];
    for piece in ["{\"ci", "ty\":\"Par", "is\"}"] {
        events.push(chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), Value::Null));
    }
    events.push(chunk(json!({}), json!("tool_calls")));
    if usage {
        let u = json!({"id": "chatcmpl-tool", "object": "chat.completion.chunk", "created": 1, "model": "gpt-mock", "choices": [],
            "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}});
        events.push(format!("data: {u}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_string());
    send_all(state, events)
}

fn first_bedrock_tool(req: &Value) -> Option<String> {
    req.pointer("/toolConfig/tools/0/toolSpec/name").and_then(Value::as_str).map(str::to_string)
}

/// Bedrock Converse: JSON, or event-stream frames (binary) for converse-stream.
#[expect(clippy::single_match_else, reason = "two shapes of one answer")]
fn converse(stream: bool, tool: Option<&str>, state: &Arc<MockState>) -> HttpResponse {
    let usage = json!({"inputTokens": 11, "outputTokens": 6, "totalTokens": 17});
    if !stream {
        let content = match tool {
            Some(name) => json!([{"toolUse": {"toolUseId": "tooluse_1", "name": name, "input": {"city": "Paris"}}}]),
            None => json!([{"text": "Hello from mock Bedrock"}]),
        };
        let stop = if tool.is_some() { "tool_use" } else { "end_turn" };
        return HttpResponse::Ok().json(json!({"output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop, "usage": usage, "metrics": {"latencyMs": 10}}));
    }
    let frame = |event: &str, payload: Value| {
        torii::providers::translate::eventstream::build(event, payload.to_string().as_bytes())
    };
    let mut frames = vec![frame("messageStart", json!({"role": "assistant"}))];
    match tool {
        Some(name) => {
            frames.push(frame(
                "contentBlockStart",
                json!({"start": {"toolUse": {"toolUseId": "tooluse_1", "name": name}}, "contentBlockIndex": 0}),
            ));
            for piece in ["{\"ci", "ty\":\"Paris\"}"] {
                frames.push(frame(
                    "contentBlockDelta",
                    json!({"delta": {"toolUse": {"input": piece}}, "contentBlockIndex": 0}),
                ));
            }
            frames.push(frame("contentBlockStop", json!({"contentBlockIndex": 0})));
            frames.push(frame("messageStop", json!({"stopReason": "tool_use"})));
        }
        None => {
            for piece in ["Hello", " from", " mock Bedrock"] {
                frames.push(frame("contentBlockDelta", json!({"delta": {"text": piece}, "contentBlockIndex": 0})));
            }
            frames.push(frame("contentBlockStop", json!({"contentBlockIndex": 0})));
            frames.push(frame("messageStop", json!({"stopReason": "end_turn"})));
        }
    }
    frames.push(frame("metadata", json!({"usage": usage, "metrics": {"latencyMs": 10}})));
    // Frames cut at arbitrary points, as TCP delivers them.
    let all: Vec<u8> = frames.concat();
    let pieces: Vec<Vec<u8>> = all.chunks(37).map(<[u8]>::to_vec).collect();
    let (tx, body) = crate::mock::channel_body(state.clone());
    actix_web::rt::spawn(async move {
        for p in pieces {
            if tx.send(Bytes::from(p)).await.is_err() {
                return;
            }
        }
    });
    HttpResponse::Ok().content_type("application/vnd.amazon.eventstream").streaming(body)
}

/// Cohere v2 chat: JSON, or its named SSE events.
#[expect(clippy::single_match_else, reason = "two shapes of one answer")]
fn cohere(stream: bool, tool: Option<&str>, state: &Arc<MockState>) -> HttpResponse {
    let usage = json!({"billed_units": {"input_tokens": 7, "output_tokens": 5}, "tokens": {"input_tokens": 70, "output_tokens": 5}});
    if !stream {
        let message = match tool {
            Some(name) => {
                json!({"role": "assistant", "tool_plan": "I will check.", "tool_calls": [{"id": "get_1", "type": "function",
                "function": {"name": name, "arguments": "{\"city\":\"Paris\"}"}}]})
            }
            None => json!({"role": "assistant", "content": [{"type": "text", "text": "Hello from mock Cohere"}]}),
        };
        let finish = if tool.is_some() { "TOOL_CALL" } else { "COMPLETE" };
        return HttpResponse::Ok()
            .json(json!({"id": "co-1", "finish_reason": finish, "message": message, "usage": usage}));
    }
    let ev = |name: &str, mut data: Value| {
        data["type"] = name.into();
        format!("event: {name}\ndata: {data}\n\n")
    };
    let mut events =
        vec![ev("message-start", json!({"id": "co-1", "delta": {"message": {"role": "assistant", "content": []}}}))];
    let finish = match tool {
        Some(name) => {
            events.push(ev(
                "tool-call-start",
                json!({"index": 0, "delta": {"message": {"tool_calls": {"id": "get_1", "type": "function",
                "function": {"name": name, "arguments": ""}}}}}),
            ));
            for piece in ["{\"ci", "ty\":\"Paris\"}"] {
                events.push(ev(
                    "tool-call-delta",
                    json!({"index": 0, "delta": {"message": {"tool_calls": {"function": {"arguments": piece}}}}}),
                ));
            }
            events.push(ev("tool-call-end", json!({"index": 0})));
            "TOOL_CALL"
        }
        None => {
            events.push(ev(
                "content-start",
                json!({"index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}}),
            ));
            for piece in ["Hello", " from", " mock Cohere"] {
                events
                    .push(ev("content-delta", json!({"index": 0, "delta": {"message": {"content": {"text": piece}}}})));
            }
            events.push(ev("content-end", json!({"index": 0})));
            "COMPLETE"
        }
    };
    events.push(ev("message-end", json!({"delta": {"finish_reason": finish, "usage": usage}})));
    send_all(state, events)
}
