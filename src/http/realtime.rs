//! The realtime WebSocket passthrough's HTTP side: the upstream WebSocket is opened first (so a
//! refusal is an ordinary error answer), then the client's upgrade is accepted and frames are
//! relayed both ways unchanged until either side closes.

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::AggregatedMessage;
use awc::ws::{Frame, Message};
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
    client: web::Data<awc::Client>,
) -> HttpResponse {
    let inbound = Inbound {
        method: req.method().clone(),
        path: req.uri().path().to_string(),
        query: req.uri().query().unwrap_or("").to_string(),
        headers: req.headers().clone(),
    };
    let ids = Ids::new(&inbound.headers);
    let fail = |e: &Error| {
        let mut resp = data_plane_error(e);
        ids.apply(resp.headers_mut());
        isolate(resp.headers_mut());
        resp
    };
    let session = match gateway.admit_realtime(&inbound, &ids) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let mut request = client.ws(&session.url).max_frame_size(MAX_MESSAGE);
    for (name, value) in &session.headers {
        request = request.set_header(name.clone(), value.clone());
    }
    let (_, upstream) = match request.connect().await {
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
    upstream: actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>,
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
