//! The realtime WebSocket passthrough: frames relayed both ways unchanged, the provider key and
//! query forwarded, gateway authentication (also as a browser subprotocol), one log per session.

use awc::ws::{Frame, Message};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;

use crate::helpers::{spawn_app, within};

async fn next_text(conn: &mut actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>) -> String {
    loop {
        match within(10, "a frame", conn.next()).await.unwrap().unwrap() {
            Frame::Text(t) => return String::from_utf8(t.to_vec()).unwrap(),
            Frame::Binary(b) => return format!("binary:{}", b.len()),
            Frame::Ping(_) | Frame::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

#[actix_web::test]
async fn realtime_frames_are_relayed_both_ways() {
    let app = spawn_app().await;
    let url = format!("ws://{}/v1/local/default/openai/realtime?model=gpt-realtime", app.addr);
    let (resp, mut conn) = app
        .client
        .ws(&url)
        .set_header("authorization", "Bearer sk-realtime")
        .set_header("openai-beta", "realtime=v1")
        .connect()
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    assert!(resp.headers().contains_key("cf-aig-request-id"));
    assert_eq!(next_text(&mut conn).await, r#"{"type":"session.created"}"#);
    conn.send(Message::Text(r#"{"type":"response.create"}"#.into())).await.unwrap();
    assert_eq!(next_text(&mut conn).await, r#"echo:{"type":"response.create"}"#);
    conn.send(Message::Binary(vec![7u8; 3000].into())).await.unwrap();
    assert_eq!(next_text(&mut conn).await, "binary:3000");
    conn.send(Message::Close(None)).await.unwrap();
    let seen = app.mock.requests().pop().unwrap();
    assert_eq!(seen.uri, "/openai/v1/realtime?model=gpt-realtime");
    assert_eq!(seen.header("authorization"), Some("Bearer sk-realtime"));
    assert_eq!(seen.header("openai-beta"), Some("realtime=v1"));
    // One log for the session, once it has ended.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        app.flush_logs().await;
        let logs = app.logs("").await;
        if logs["result_info"]["total_count"] == 1 {
            let log = &logs["result"][0];
            assert_eq!((log["status_code"].clone(), log["success"].clone()), (json!(101), json!(true)), "{log}");
            assert_eq!(log["request_size"], 3000 + r#"{"type":"response.create"}"#.len());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no session log: {logs}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn realtime_needs_the_gateway_token_also_as_a_subprotocol() {
    let app = spawn_app().await;
    assert_eq!(app.set_default(json!({"authentication": true})).await.0, 200);
    let (_, made) = app.call("POST", "/tokens", Some(json!({"name": "rt", "scopes": ["run"]}))).await;
    let token = made["result"]["value"].as_str().unwrap().to_string();
    let url = format!("ws://{}/v1/local/default/openai/realtime?model=m", app.addr);
    let refused = app.client.ws(&url).connect().await;
    match refused {
        Err(awc::error::WsClientError::InvalidResponseStatus(status)) => assert_eq!(status, 401),
        other => panic!("expected 401, got {:?}", other.map(|(r, _)| r.status())),
    }
    assert!(app.mock.requests().is_empty(), "nothing reached the provider");
    let protocol = format!("cf-aig-authorization.{token}");
    let (resp, mut conn) = app.client.ws(&url).protocols([protocol.as_str()]).connect().await.unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), protocol.as_str());
    assert_eq!(next_text(&mut conn).await, r#"{"type":"session.created"}"#);
    assert!(
        app.mock.requests()[0].header("sec-websocket-protocol").is_none(),
        "the gateway token is not sent to the provider"
    );
}

/// Cloudflare's universal WebSocket: `universal.create` messages answered with
/// `universal.created` (and `universal.stream` … `universal.done` for streams) or
/// `universal.error`.
#[actix_web::test]
async fn universal_websocket_messages() {
    let app = spawn_app().await;
    let (resp, mut conn) = app.client.ws(format!("ws://{}/v1/local/default", app.addr)).connect().await.unwrap();
    assert_eq!(resp.status(), 101);
    let create = |stream: bool| {
        json!({"type": "universal.create", "request": {"eventId": "ev-1", "provider": "openai", "endpoint": "chat/completions",
            "headers": {"Authorization": "Bearer sk-ws"}, "query": {"model": "gpt-mock", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}}})
    };
    conn.send(Message::Text(create(false).to_string().into())).await.unwrap();
    let created: serde_json::Value = serde_json::from_str(&next_text(&mut conn).await).unwrap();
    assert_eq!(created["type"], "universal.created", "{created}");
    assert_eq!(created["metadata"]["eventId"], "ev-1");
    assert_eq!(created["metadata"]["step"], 0);
    assert_eq!(created["response"]["choices"][0]["message"]["content"], "Hello from mock OpenAI");
    assert_eq!(app.mock.requests()[0].header("authorization"), Some("Bearer sk-ws"));

    conn.send(Message::Text(create(true).to_string().into())).await.unwrap();
    let first: serde_json::Value = serde_json::from_str(&next_text(&mut conn).await).unwrap();
    assert_eq!(
        (first["type"].clone(), first["metadata"]["contentType"].clone()),
        (json!("universal.created"), json!("text/event-stream"))
    );
    let mut streamed = String::new();
    loop {
        let m: serde_json::Value = serde_json::from_str(&next_text(&mut conn).await).unwrap();
        match m["type"].as_str().unwrap() {
            "universal.stream" => streamed.push_str(m["response"].as_str().unwrap()),
            "universal.done" => break,
            other => panic!("unexpected {other}: {m}"),
        }
    }
    assert!(streamed.contains("\"content\":\"Hello\"") && streamed.contains("[DONE]"), "{streamed}");

    conn.send(Message::Text(r#"{"type":"universal.nope"}"#.into())).await.unwrap();
    let error: serde_json::Value = serde_json::from_str(&next_text(&mut conn).await).unwrap();
    assert_eq!(error["type"], "universal.error");
    assert_eq!(error["error"]["code"], 2002);
    conn.send(Message::Close(None)).await.unwrap();
}
