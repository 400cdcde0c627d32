//! In-process mock upstream: records every request and answers per request, chosen by the
//! `x-mock` header (or by path for SDK tests), so each test injects its own faults.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Raw path and query, exactly as received.
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// When it arrived (for backoff measurements).
    pub at: std::time::Instant,
}

impl Recorded {
    pub fn of(req: &HttpRequest, body: Bytes) -> Self {
        Self {
            method: req.method().to_string(),
            uri: req.uri().to_string(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            body,
            at: std::time::Instant::now(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
pub struct MockState {
    pub requests: Mutex<Vec<Recorded>>,
    pub gates: Mutex<HashMap<String, Arc<Notify>>>,
    pub counters: Mutex<HashMap<String, u32>>,
    /// Signalled when a streaming response body is dropped (the gateway hung up).
    pub stream_dropped: Notify,
    pub new_request: Notify,
}

impl MockState {
    pub fn gate(&self, name: &str) -> Arc<Notify> {
        self.gates.lock().unwrap().entry(name.to_string()).or_default().clone()
    }
}

pub struct Mock {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
}

impl Mock {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn open_gate(&self, name: &str) {
        self.state.gate(name).notify_one();
    }
}

/// Starts a mock on a free port; needs a running actix system.
pub fn start() -> Mock {
    let state = Arc::new(MockState::default());
    let data = web::Data::from(state.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(64 << 20))
            .route("/openai/v1/realtime", web::get().to(realtime))
            .default_service(web::to(handle))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    Mock { addr, state }
}

/// Signals `stream_dropped` when a streaming body is dropped.
struct Guard(Arc<MockState>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.stream_dropped.notify_one();
    }
}

pub fn channel_body(
    state: Arc<MockState>,
) -> (mpsc::Sender<Bytes>, impl futures_util::Stream<Item = Result<Bytes, std::io::Error>>) {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let guard = Guard(state);
    let stream = futures_util::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|b| (Ok(b), (rx, guard)))
    });
    (tx, stream)
}

pub fn sse(state: &Arc<MockState>) -> (mpsc::Sender<Bytes>, HttpResponse) {
    let (tx, body) = channel_body(state.clone());
    (
        tx,
        HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header(("cache-control", "no-cache"))
            .streaming(body),
    )
}

/// A realtime WebSocket like OpenAI's: `session.created` first, then every text message echoed
/// as `echo:{text}` and binary ones as they came; the handshake is recorded like a request.
async fn realtime(req: HttpRequest, payload: web::Payload, state: web::Data<MockState>) -> HttpResponse {
    state.requests.lock().unwrap().push(Recorded::of(&req, Bytes::new()));
    let (resp, mut session, mut messages) = actix_ws::handle(&req, payload).unwrap();
    actix_web::rt::spawn(async move {
        use futures_util::StreamExt as _;
        let _ = session.text(r#"{"type":"session.created"}"#).await;
        while let Some(Ok(msg)) = messages.next().await {
            match msg {
                actix_ws::Message::Text(t) => {
                    let _ = session.text(format!("echo:{t}")).await;
                }
                actix_ws::Message::Binary(b) => {
                    let _ = session.binary(b).await;
                }
                actix_ws::Message::Ping(p) => {
                    let _ = session.pong(&p).await;
                }
                actix_ws::Message::Close(reason) => {
                    let _ = session.close(reason).await;
                    return;
                }
                _ => {}
            }
        }
    });
    resp
}

async fn handle(req: HttpRequest, body: web::Bytes, state: web::Data<MockState>) -> HttpResponse {
    let state = state.into_inner();
    state.requests.lock().unwrap().push(Recorded::of(&req, body.clone()));
    state.new_request.notify_waiters();
    let mode = req.headers().get("x-mock").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (kind, arg) = mode.split_once(':').unwrap_or((mode.as_str(), ""));
    match kind {
        "status" => {
            let code = arg.parse().unwrap_or(500);
            HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap())
                .insert_header(("x-upstream-error", "yes"))
                .json(serde_json::json!({"error": {"message": format!("mock status {code}"), "type": "mock"}}))
        }
        "fail-first" => {
            // fail-first:N:key — the first N requests with this key get 503.
            let (n, key) = arg.split_once(':').unwrap_or((arg, "default"));
            let n: u32 = n.parse().unwrap_or(1);
            let seen = {
                let mut c = state.counters.lock().unwrap();
                let e = c.entry(key.to_string()).or_default();
                *e += 1;
                *e
            };
            if seen <= n {
                HttpResponse::ServiceUnavailable().json(serde_json::json!({"error": "overloaded", "attempt": seen}))
            } else {
                HttpResponse::Ok().json(serde_json::json!({"ok": true, "attempt": seen}))
            }
        }
        "hang" => {
            // Never answer until the gate opens (tests the gateway's first-byte timeout).
            state.gate(arg).notified().await;
            HttpResponse::Ok().body("late")
        }
        "slow" => {
            // Fault injection: a provider that takes `arg` ms to answer.
            actix_web::rt::time::sleep(Duration::from_millis(arg.parse().unwrap_or(100))).await;
            HttpResponse::Ok().json(serde_json::json!({"ok": true, "slow": true}))
        }
        "redirect" => HttpResponse::Found().insert_header(("location", "http://example.invalid/steal")).finish(),
        // An answer with a body and no `Content-Type`, and a header of several values.
        "untyped" => HttpResponse::Ok()
            .append_header(("x-many", "one"))
            .append_header(("x-many", "two"))
            .body(Bytes::from_static(b"\x00raw bytes")),
        "sse-gated" => {
            let (tx, resp) = sse(&state);
            let gate = state.gate(arg);
            actix_web::rt::spawn(async move {
                let _ = tx.send(Bytes::from("data: {\"n\":1}\n\n")).await;
                gate.notified().await;
                let _ = tx.send(Bytes::from("data: {\"n\":2}\n\n")).await;
                let _ = tx.send(Bytes::from("data: [DONE]\n\n")).await;
            });
            resp
        }
        "endless" => {
            let (tx, resp) = sse(&state);
            actix_web::rt::spawn(async move {
                let mut n = 0u64;
                loop {
                    n += 1;
                    if tx.send(Bytes::from(format!("data: {{\"n\":{n}}}\n\n"))).await.is_err() {
                        break;
                    }
                    actix_web::rt::time::sleep(Duration::from_millis(10)).await;
                }
            });
            resp
        }
        "echo-headers" => HttpResponse::Ok().json(serde_json::json!({ "uri": req.uri().to_string() })),
        "say" => say(&req, &body, &state),
        _ => by_path(&req, &body, &state),
    }
}

/// `x-mock: say`: an OpenAI chat answer whose text is `x-mock-say`, its pieces (split at `|`)
/// one stream event each, each event written in 5-byte pieces (so matches straddle events and
/// packets); whole JSON without `stream`.
fn say(req: &HttpRequest, body: &Bytes, state: &Arc<MockState>) -> HttpResponse {
    let text = req.headers().get("x-mock-say").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if json["stream"] != serde_json::Value::Bool(true) {
        return HttpResponse::Ok().json(serde_json::json!({
            "id": "chatcmpl-say", "object": "chat.completion", "created": 1, "model": "gpt-mock",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text.replace('|', "")}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
        }));
    }
    let (tx, resp) = sse(state);
    actix_web::rt::spawn(async move {
        let mut events: Vec<String> = text
            .split('|')
            .map(|piece| {
                let chunk = serde_json::json!({"id":"chatcmpl-say","object":"chat.completion.chunk","created":1,"model":"gpt-mock",
                    "choices":[{"index":0,"delta":{"content":piece},"finish_reason":null}]});
                format!("data: {chunk}\n\n")
            })
            .collect();
        events.push("data: [DONE]\n\n".into());
        for event in events {
            for piece in event.as_bytes().chunks(5) {
                if tx.send(Bytes::copy_from_slice(piece)).await.is_err() {
                    return;
                }
            }
        }
    });
    resp
}

/// A guardrail evaluator: Llama Guard (chat) and Prompt Guard (Workers AI text classification),
/// deciding on words in the text; `GUARD-DOWN` in the text makes it fail, `GUARD-SLOW` never
/// answer.
fn guard_model(path: &str, json: &serde_json::Value) -> Option<HttpResponse> {
    let model = json["model"].as_str().unwrap_or("");
    let text = if path.contains("prompt-guard") {
        json["text"].as_str().unwrap_or("").to_string()
    } else if model.contains("llama-guard") {
        json["messages"].as_array()?.iter().filter_map(|m| m["content"].as_str()).collect::<Vec<_>>().join("\n")
    } else {
        return None;
    };
    if text.contains("GUARD-SLOW") {
        // Sends its head, then never the verdict.
        return Some(
            HttpResponse::Ok()
                .content_type("application/json")
                .streaming(futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>()),
        );
    }
    if text.contains("GUARD-DOWN") {
        return Some(
            HttpResponse::ServiceUnavailable().json(serde_json::json!({"errors": [{"message": "overloaded"}]})),
        );
    }
    if path.contains("prompt-guard") {
        let label = if text.to_lowercase().contains("ignore previous instructions") { "MALICIOUS" } else { "BENIGN" };
        return Some(
            HttpResponse::Ok().json(serde_json::json!({"result": [{"label": label, "score": 0.98}], "success": true})),
        );
    }
    let verdict = if text.contains("build a bomb") {
        "unsafe\nS9"
    } else if text.contains("you are worthless") {
        "unsafe\nS10"
    } else {
        "safe"
    };
    Some(HttpResponse::Ok().json(serde_json::json!({
        "id": "chatcmpl-guard", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": verdict}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23}
    })))
}

/// The first event of the provider's native stream.
fn first_event(path: &str) -> String {
    if path.ends_with("/messages") {
        anthropic_events().remove(0)
    } else {
        let chunk = serde_json::json!({"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":"gpt-mock",
            "choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]});
        format!("data: {chunk}\n\n")
    }
}

/// Default answers in the provider's own shape, so official SDKs can parse them. A credential
/// containing `invalid` gets the provider's 401.
fn by_path(req: &HttpRequest, body: &Bytes, state: &Arc<MockState>) -> HttpResponse {
    let path = req.uri().path();
    let credential = ["authorization", "x-api-key", "api-key"]
        .iter()
        .filter_map(|h| req.headers().get(*h).and_then(|v| v.to_str().ok()))
        .collect::<Vec<_>>()
        .join(" ");
    if credential.contains("invalid") {
        return HttpResponse::Unauthorized().json(serde_json::json!({
            "success": false, "errors": [{"code": 10000, "message": "Authentication error"}], "result": null
        }));
    }
    if path.ends_with("/evil.html") {
        // A hostile or compromised upstream: a page whose script, if it ran on Torii's origin,
        // would read the admin's token page with the admin's session.
        return HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header(("set-cookie", "torii_session=planted; Path=/"))
            .body(HOSTILE_PAGE);
    }
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if let Some(resp) = guard_model(path, &json) {
        return resp;
    }
    if let Some(resp) = crate::mock_native::answer(path, &json, state) {
        return resp;
    }
    let stream = json.get("stream").and_then(serde_json::Value::as_bool).unwrap_or(false);
    if path.ends_with("/messages") {
        if stream {
            let (tx, resp) = sse(state);
            actix_web::rt::spawn(async move {
                for event in anthropic_events() {
                    if tx.send(Bytes::from(event)).await.is_err() {
                        break;
                    }
                }
            });
            return resp;
        }
        return HttpResponse::Ok().insert_header(("request-id", "req_mock")).json(serde_json::json!({
            "id": "msg_mock", "type": "message", "role": "assistant", "model": "claude-mock",
            "content": [{"type": "text", "text": "Hello from mock Anthropic"}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 5}
        }));
    }
    if path.ends_with("/chat/completions") {
        if stream {
            // Like OpenAI: with `stream_options.include_usage`, every chunk has `"usage": null`
            // and a last chunk with no choices carries the usage.
            let usage = json["stream_options"]["include_usage"] == serde_json::Value::Bool(true);
            let (tx, resp) = sse(state);
            actix_web::rt::spawn(async move {
                for piece in ["Hello", " from", " mock"] {
                    let mut chunk = serde_json::json!({"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":"gpt-mock",
                        "choices":[{"index":0,"delta":{"content":piece},"finish_reason":null}]});
                    if usage {
                        chunk["usage"] = serde_json::Value::Null;
                    }
                    if tx.send(Bytes::from(format!("data: {chunk}\n\n"))).await.is_err() {
                        return;
                    }
                }
                let last = serde_json::json!({"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":"gpt-mock",
                    "choices":[{"index":0,"delta":{},"finish_reason":"stop"}]});
                let _ = tx.send(Bytes::from(format!("data: {last}\n\n"))).await;
                if usage {
                    let u = serde_json::json!({"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1,"model":"gpt-mock",
                        "choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}});
                    // Split across two writes, as a real edge may.
                    let text = format!("data: {u}\n\n");
                    let (a, b) = text.split_at(text.len() / 2);
                    let _ = tx.send(Bytes::from(a.to_string())).await;
                    let _ = tx.send(Bytes::from(b.to_string())).await;
                }
                let _ = tx.send(Bytes::from("data: [DONE]\n\n")).await;
            });
            return resp;
        }
        return HttpResponse::Ok().insert_header(("x-request-id", "req_mock")).json(serde_json::json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": "gpt-mock",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from mock OpenAI"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
        }));
    }
    HttpResponse::Ok()
        .json(serde_json::json!({ "ok": true, "method": req.method().as_str(), "uri": req.uri().to_string() }))
}

pub const HOSTILE_PAGE: &str = r#"<!doctype html><html><head><title>static</title></head><body>
<script>
document.title = "script ran";
fetch("/admin/tokens", {credentials: "include"})
  .then(r => r.text())
  .then(t => { document.title = t.includes("Revoke") || t.includes("token") ? "session used" : "no session"; })
  .catch(e => { document.title = "fetch failed"; });
</script></body></html>"#;

fn anthropic_events() -> Vec<String> {
    let events = [
        (
            "message_start",
            serde_json::json!({"type":"message_start","message":{"id":"msg_mock","type":"message","role":"assistant","model":"claude-mock","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":1}}}),
        ),
        (
            "content_block_start",
            serde_json::json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        ("ping", serde_json::json!({"type":"ping"})),
        (
            "content_block_delta",
            serde_json::json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}),
        ),
        (
            "content_block_delta",
            serde_json::json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" from mock"}}),
        ),
        ("content_block_stop", serde_json::json!({"type":"content_block_stop","index":0})),
        (
            "message_delta",
            serde_json::json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":5}}),
        ),
        ("message_stop", serde_json::json!({"type":"message_stop"})),
    ];
    events.iter().map(|(name, data)| format!("event: {name}\ndata: {data}\n\n")).collect()
}

/// A raw upstream that answers every request with a streaming head and the first event of the
/// provider's native stream (by path), then drops the connection mid-body.
pub async fn breaking_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    actix_web::rt::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            actix_web::rt::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let event = first_event(&path);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
                    event.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
                let _ = sock.flush().await;
            });
        }
    });
    addr
}

/// A raw keep-alive upstream that answers like a real provider's edge: it reads the whole request
/// (head, then a `Content-Length` body), sends the response head in one segment and the JSON
/// body in another (`TCP_NODELAY` on, a short pause between them so they never coalesce).
pub async fn split_packet_upstream() -> std::net::SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    actix_web::rt::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            sock.set_nodelay(true).unwrap();
            actix_web::rt::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some((head_len, body_len)) = read_request(&mut sock, &mut buf).await else { return };
                    buf.drain(..head_len + body_len);
                    let body = br#"{"id":"chatcmpl-split","object":"chat.completion","created":1,"model":"gpt-mock","choices":[{"index":0,"message":{"role":"assistant","content":"split"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if sock.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    // Fault injection, not synchronisation: keeps head and body in two packets.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    if sock.write_all(body).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Reads one HTTP/1.1 request (head and `Content-Length` body) into `buf`; returns the head's and
/// the body's lengths, or `None` when the peer closed.
pub async fn read_request(sock: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<(usize, usize)> {
    use tokio::io::AsyncReadExt;
    let mut chunk = vec![0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if buf.len() >= end + 4 + len {
                return Some((end + 4, len));
            }
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
