//! The realtime WebSocket passthrough's HTTP side: the upstream WebSocket is opened first (so a
//! refusal is an ordinary error answer), then the client's upgrade is accepted and frames are
//! relayed both ways unchanged until either side closes.

use std::time::Instant;

use crate::gateway::client::{self, Frame, Message};
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::AggregatedMessage;
use futures_util::{SinkExt, StreamExt};

use super::envelope::data_plane_error;
use super::proxy::isolate;
use crate::error::Error;
use crate::gateway::{Gateway, Ids, Inbound};

/// Largest message relayed (larger ones end the session).
const MAX_MESSAGE: usize = 16 << 20;

/// `GET /v1/{account}/{gateway}/{provider}/...` with `Upgrade: websocket`.
pub async fn serve(
    req: HttpRequest,
    payload: web::Payload,
    gateway: web::Data<Gateway>,
    client: web::Data<crate::gateway::client::Client>,
) -> HttpResponse {
    let inbound = super::proxy::inbound(&req);
    let ids = Ids::new(&inbound.headers);
    let fail = |e: &Error| {
        let mut resp = data_plane_error(e);
        ids.apply(resp.headers_mut());
        isolate(resp.headers_mut());
        resp
    };
    let session = match gateway.admit_realtime(&inbound, &ids).await {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let upstream = match client::connect_websocket(&client, &session.url, &session.headers, MAX_MESSAGE).await {
        Ok(c) => c,
        Err(e) => {
            let error = Error::UpstreamFailed { provider: session.provider.clone(), reason: format!("WebSocket: {e}") };
            session.log.record_session(&gateway.logs, Instant::now(), 0, 0, Some(error.to_string()));
            return fail(&error);
        }
    };
    // Browsers offered the gateway token as a subprotocol: the handshake must name it back.
    let offered: Vec<String> = crate::gateway::realtime::token_from_subprotocol(&inbound.headers)
        .map(|t| format!("cf-aig-authorization.{t}"))
        .into_iter()
        .collect();
    let offered: Vec<&str> = offered.iter().map(String::as_str).collect();
    let (mut response, client_session, messages) = match actix_ws::handle_with_protocols(&req, payload, &offered) {
        Ok(x) => x,
        Err(e) => return fail(&Error::BadRequest(format!("WebSocket handshake: {e}"))),
    };
    ids.apply(response.headers_mut());
    let logs = std::sync::Arc::clone(&gateway.logs);
    actix_web::rt::spawn(async move {
        let started = Instant::now();
        let messages =
            messages.max_frame_size(MAX_MESSAGE).aggregate_continuations().max_continuation_size(MAX_MESSAGE);
        let (sent, received, error) = relay(client_session, messages, upstream).await;
        session.log.record_session(&logs, started, sent, received, error);
    });
    response
}

/// Relays until either side closes; returns the bytes each way and why it ended, if badly.
async fn relay(
    mut to_client: actix_ws::Session,
    mut from_client: actix_ws::AggregatedMessageStream,
    upstream: client::WebSocket,
) -> (u64, u64, Option<String>) {
    let (mut to_upstream, mut from_upstream) = upstream.split();
    let (mut sent, mut received) = (0u64, 0u64);
    loop {
        tokio::select! {
            msg = from_client.next() => {
                let forwarded = match msg {
                    Some(Ok(AggregatedMessage::Text(t))) => { sent += t.len() as u64; Message::Text(t) }
                    Some(Ok(AggregatedMessage::Binary(b))) => { sent += b.len() as u64; Message::Binary(b) }
                    Some(Ok(AggregatedMessage::Ping(p))) => Message::Ping(p),
                    Some(Ok(AggregatedMessage::Pong(p))) => Message::Pong(p),
                    Some(Ok(AggregatedMessage::Close(reason))) => {
                        let _ = to_upstream.send(Message::Close(reason)).await;
                        return (sent, received, None);
                    }
                    Some(Err(e)) => {
                        let _ = to_upstream.send(Message::Close(None)).await;
                        return (sent, received, Some(format!("client WebSocket: {e}")));
                    }
                    None => {
                        let _ = to_upstream.send(Message::Close(None)).await;
                        return (sent, received, None);
                    }
                };
                if let Err(e) = to_upstream.send(forwarded).await {
                    let _ = to_client.close(None).await;
                    return (sent, received, Some(format!("provider WebSocket: {e}")));
                }
            }
            frame = from_upstream.next() => {
                let delivered = match frame {
                    Some(Ok(Frame::Text(t))) => {
                        received += t.len() as u64;
                        match String::from_utf8(t.to_vec()) {
                            Ok(text) => to_client.text(text).await,
                            Err(_) => to_client.binary(t).await,
                        }
                    }
                    Some(Ok(Frame::Binary(b))) => { received += b.len() as u64; to_client.binary(b).await }
                    Some(Ok(Frame::Ping(p))) => {
                        let _ = to_upstream.send(Message::Pong(p)).await;
                        Ok(())
                    }
                    Some(Ok(Frame::Pong(_) | Frame::Continuation(_))) => Ok(()),
                    Some(Ok(Frame::Close(reason))) => {
                        let _ = to_client.close(reason).await;
                        return (sent, received, None);
                    }
                    Some(Err(e)) => {
                        let _ = to_client.close(None).await;
                        return (sent, received, Some(format!("provider WebSocket: {e}")));
                    }
                    None => {
                        let _ = to_client.close(None).await;
                        return (sent, received, None);
                    }
                };
                if delivered.is_err() {
                    let _ = to_upstream.send(Message::Close(None)).await;
                    return (sent, received, None);
                }
            }
        }
    }
}

/// `GET /v1/{account}/{gateway}` with `Upgrade: websocket`: Cloudflare's universal WebSocket. Each
/// `{"type":"universal.create","request":{eventId, provider, endpoint, headers, query}}` runs as a
/// universal request (one step) and is answered with `universal.created` (and, for a stream,
/// `universal.stream` per chunk, then `universal.done`), or `universal.error`.
pub fn serve_universal(
    req: &HttpRequest,
    payload: web::Payload,
    gateway: web::Data<Gateway>,
    client: web::Data<crate::gateway::client::Client>,
) -> HttpResponse {
    let inbound = super::proxy::inbound(req);
    let headers = match gateway.admit_universal_ws(&inbound) {
        Ok(h) => h,
        Err(e) => {
            let mut resp = data_plane_error(&e);
            isolate(resp.headers_mut());
            return resp;
        }
    };
    let offered: Vec<String> = crate::gateway::realtime::token_from_subprotocol(&inbound.headers)
        .map(|t| format!("cf-aig-authorization.{t}"))
        .into_iter()
        .collect();
    let offered: Vec<&str> = offered.iter().map(String::as_str).collect();
    let (response, mut session, messages) = match actix_ws::handle_with_protocols(req, payload, &offered) {
        Ok(x) => x,
        Err(e) => return data_plane_error(&Error::BadRequest(format!("WebSocket handshake: {e}"))),
    };
    let path = inbound.path.clone();
    actix_web::rt::spawn(async move {
        let mut messages =
            messages.max_frame_size(MAX_MESSAGE).aggregate_continuations().max_continuation_size(MAX_MESSAGE);
        while let Some(Ok(msg)) = messages.next().await {
            let text = match msg {
                AggregatedMessage::Text(t) => t.to_string(),
                AggregatedMessage::Ping(p) => {
                    let _ = session.pong(&p).await;
                    continue;
                }
                AggregatedMessage::Close(_) => break,
                AggregatedMessage::Binary(_) | AggregatedMessage::Pong(_) => continue,
            };
            if universal_message(&gateway, &client, &path, &headers, &text, &mut session).await.is_err() {
                return;
            }
        }
        let _ = session.close(None).await;
    });
    response
}

fn ws_error(event_id: Option<&str>, e: &Error) -> String {
    let (status, code) = e.status_and_code();
    serde_json::json!({"type": "universal.error", "metadata": {"eventId": event_id},
        "error": {"code": code, "status": status, "message": e.to_string()}})
    .to_string()
}

/// Runs one `universal.create` and sends its answer; `Err` when the client is gone.
async fn universal_message(
    gateway: &Gateway,
    client: &crate::gateway::client::Client,
    path: &str,
    headers: &actix_web::http::header::HeaderMap,
    text: &str,
    session: &mut actix_ws::Session,
) -> Result<(), actix_ws::Closed> {
    let message: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return session.text(ws_error(None, &Error::BadRequest(format!("the message is not JSON: {e}")))).await;
        }
    };
    if message.get("type").and_then(serde_json::Value::as_str) != Some("universal.create") {
        return session.text(ws_error(None, &Error::BadRequest("type: only universal.create is served".into()))).await;
    }
    let Some(request) = message.get("request").filter(|r| r.is_object()) else {
        return session.text(ws_error(None, &Error::BadRequest("request: must be an object".into()))).await;
    };
    let event_id = request.get("eventId").and_then(serde_json::Value::as_str).map(str::to_string);
    let mut step = request.clone();
    if let Some(obj) = step.as_object_mut() {
        obj.remove("eventId");
    }
    let mut headers = headers.clone();
    if let Some(id) = &event_id
        && let Ok(v) = actix_web::http::header::HeaderValue::from_str(id)
    {
        headers.insert(actix_web::http::header::HeaderName::from_static("cf-aig-event-id"), v);
    }
    headers.insert(
        actix_web::http::header::CONTENT_TYPE,
        actix_web::http::header::HeaderValue::from_static("application/json"),
    );
    let body = bytes::Bytes::from(serde_json::Value::Array(vec![step]).to_string());
    let inbound =
        Inbound { method: actix_web::http::Method::POST, path: path.to_string(), query: String::new(), headers };
    let payload = futures_util::stream::once(std::future::ready(Ok::<_, std::io::Error>(body)));
    let reply = gateway.handle(client, inbound, Box::pin(payload)).await;
    let upstream = match reply.outcome {
        Ok(u) => u,
        Err(e) => return session.text(ws_error(Some(&reply.ids.event_id), &e)).await,
    };
    let content_type = upstream.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let metadata = serde_json::json!({"cacheStatus": upstream.cache_status, "eventId": reply.ids.event_id,
        "logId": upstream.log_id, "step": upstream.step, "contentType": content_type, "status": upstream.status.as_u16()});
    let mut body = upstream.body;
    if content_type.starts_with("text/event-stream") {
        session.text(serde_json::json!({"type": "universal.created", "metadata": metadata}).to_string()).await?;
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            let chunk = String::from_utf8_lossy(&chunk).into_owned();
            let m = serde_json::json!({"type": "universal.stream", "metadata": {"eventId": reply.ids.event_id}, "response": chunk});
            session.text(m.to_string()).await?;
        }
        return session.text(serde_json::json!({"type": "universal.done", "metadata": metadata}).to_string()).await;
    }
    let mut whole = Vec::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) if whole.len() + c.len() <= MAX_MESSAGE => whole.extend_from_slice(&c),
            Ok(_) | Err(_) => break,
        }
    }
    let response = serde_json::from_slice::<serde_json::Value>(&whole)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&whole).into_owned()));
    session
        .text(serde_json::json!({"type": "universal.created", "metadata": metadata, "response": response}).to_string())
        .await
}
