//! No added stall on kept-alive connections: an upstream that sends its response head and body
//! in separate packets must not make Torii write them as two small segments held back by Nagle's
//! algorithm until the client's delayed ACK (~40 ms on Linux).

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::helpers::{spawn_app_with, within};
use crate::mock::{read_request, split_packet_upstream};

/// Sends `n` requests one after another on one connection; returns each round trip.
async fn round_trips(addr: std::net::SocketAddr, path: &str, n: usize) -> Vec<Duration> {
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = r#"{"model":"gpt-mock","messages":[{"role":"user","content":"hi"}]}"#;
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: torii\r\ncontent-type: application/json\r\nauthorization: Bearer sk-test\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut buf = Vec::new();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        sock.write_all(request.as_bytes()).await.unwrap();
        // A response has the same framing as a request: a head, then a Content-Length body.
        let (head, len) = within(10, "a response", read_request(&mut sock, &mut buf)).await.unwrap();
        times.push(started.elapsed());
        assert!(buf.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf));
        assert!(String::from_utf8_lossy(&buf[head..head + len]).contains("chatcmpl-split"));
        buf.drain(..head + len);
    }
    times
}

#[actix_web::test]
async fn head_and_body_sent_apart_add_no_delayed_ack_stall() {
    let upstream = split_packet_upstream().await;
    let app = spawn_app_with(|c| {
        c.providers.get_mut("openai").unwrap().base_url = Some(format!("http://{upstream}/v1"));
    })
    .await;
    // Warm up the pools (first connection set-up is not what is measured).
    round_trips(app.addr, "/v1/local/default/openai/chat/completions", 2).await;
    let times = round_trips(app.addr, "/v1/local/default/openai/chat/completions", 20).await;
    // Before TCP_NODELAY on both sockets, about half of these took 40+ ms; each takes ~1 ms now.
    // A loaded machine may slow one or two, never half of them.
    let stalled = times.iter().filter(|t| **t >= Duration::from_millis(35)).count();
    assert!(stalled <= 2, "{stalled} of 20 requests stalled: {times:?}");
}
