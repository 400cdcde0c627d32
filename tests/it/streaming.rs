//! True streaming: chunks reach the client as the upstream sends them; a client hang-up
//! cancels the upstream; a silent upstream is cut off by the idle timeout.

use futures_util::StreamExt;

use crate::helpers::{spawn_app, spawn_app_with, within};

#[actix_web::test]
async fn first_event_arrives_before_the_upstream_sends_the_second() {
    let app = spawn_app().await;
    let mut resp = app
        .client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("x-mock", "sse-gated:g1"))
        .send_body(r#"{"stream":true}"#)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("content-type").unwrap(), "text/event-stream");
    // The mock holds the second event until the gate opens: if the gateway buffered, this
    // read would never complete.
    let first = within(10, "the first SSE event", resp.next()).await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: {\"n\":1}\n\n");
    app.mock.open_gate("g1");
    let mut rest = Vec::new();
    while let Some(chunk) = within(10, "the rest of the stream", resp.next()).await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(String::from_utf8(rest).unwrap(), "data: {\"n\":2}\n\ndata: [DONE]\n\n");
}

#[actix_web::test]
async fn client_disconnect_cancels_the_upstream() {
    let app = spawn_app().await;
    let mut resp = app
        .client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("x-mock", "endless"))
        .send_body(r#"{"stream":true}"#)
        .await
        .unwrap();
    let first = within(10, "a chunk", resp.next()).await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    let dropped = app.mock.state.stream_dropped.notified();
    drop(resp);
    within(10, "the upstream stream to be dropped after the client left", dropped).await;
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().body().await.unwrap();
    let text = String::from_utf8_lossy(&metrics);
    assert!(text.contains("torii_client_disconnects_total 1"), "{text}");
}

/// A raw upstream that sends a response head and one SSE event, then nothing, and reports
/// when the gateway closes the connection.
async fn silent_upstream() -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<()>) {
    quiet_upstream(true).await
}

/// A raw upstream that reads the request, sends a stream's head and first event (`answer`) or
/// nothing at all, and reports when the gateway closes the connection.
async fn quiet_upstream(answer: bool) -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    actix_web::rt::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 65536];
        let _ = sock.read(&mut buf).await.unwrap();
        let event = "data: {\"n\":1}\n\n";
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
            event.len()
        );
        if answer {
            sock.write_all(head.as_bytes()).await.unwrap();
        }
        // Nothing more is ever sent; wait for the gateway to hang up.
        while sock.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        let _ = closed_tx.send(());
    });
    (addr, closed_rx)
}

#[actix_web::test]
async fn silent_upstream_is_ended_by_the_idle_timeout() {
    let (upstream, closed) = silent_upstream().await;
    let app = spawn_app_with(|c| {
        c.upstream.idle_timeout_ms = 300;
        c.providers.get_mut("mistral").unwrap().base_url = Some(format!("http://{upstream}"));
    })
    .await;
    let mut resp =
        app.client.post(app.gw("mistral/v1/chat/completions")).send_body(r#"{"stream":true}"#).await.unwrap();
    assert_eq!(resp.status(), 200);
    let first = within(10, "the first chunk", resp.next()).await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: {\"n\":1}\n\n");
    // The upstream never sends more and never closes: the gateway must end the stream.
    within(10, "the stream to end", async { while let Some(Ok(_)) = resp.next().await {} }).await;
    within(10, "the upstream connection to be closed", closed).await.unwrap();
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().body().await.unwrap();
    assert!(String::from_utf8_lossy(&metrics).contains("torii_stream_idle_timeouts_total 1"));
}

/// A client that hangs up while the upstream is silent (no first byte yet, or a stream between
/// events) cancels the upstream request at once, as nginx does: no tokens are spent on an answer
/// nobody reads, and the connection is not held until a timeout.
#[actix_web::test]
async fn a_client_hang_up_cancels_a_silent_upstream_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for answer in [false, true] {
        let (upstream, closed) = quiet_upstream(answer).await;
        let app = spawn_app_with(|c| {
            c.providers.get_mut("mistral").unwrap().base_url = Some(format!("http://{upstream}"));
        })
        .await;
        let body = r#"{"stream":true}"#;
        let mut sock = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            "/v1/local/default/mistral/v1/chat/completions",
            body.len()
        );
        sock.write_all(request.as_bytes()).await.unwrap();
        if answer {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.windows(5).any(|w| w == b"data:") {
                let n = within(10, "the first event", sock.read(&mut buf)).await.unwrap();
                assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
                seen.extend_from_slice(&buf[..n]);
            }
        }
        drop(sock);
        within(10, "the upstream request to be cancelled after the client hung up", closed).await.unwrap();
    }
}
