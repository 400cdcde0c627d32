//! Gateway errors, retries and timeouts, and a corpus of bad input the server must survive.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{json_of, spawn_app, spawn_app_with};

async fn expect_error(resp: &mut awc::ClientResponse, status: u16, code: u64) -> String {
    assert_eq!(resp.status(), status);
    let body = json_of(resp).await;
    assert_eq!(body["success"], false);
    assert_eq!(body["error"][0]["code"], code, "{body}");
    body["error"][0]["message"].as_str().unwrap().to_string()
}

#[actix_web::test]
async fn unknown_account_gateway_provider_and_unsafe_paths() {
    let app = spawn_app().await;
    let cases: &[(&str, u16, u64, &str)] = &[
        ("/v1/other/default/openai/chat/completions", 404, 2001, "account"),
        ("/v1/local/nope/openai/chat/completions", 400, 2001, "nope"),
        ("/v1/local/default/opneai/chat/completions", 404, 2008, "opneai"),
        ("/v1/local/default/custom-missing/x", 404, 2008, "custom-missing"),
        ("/v1/local/default/azure-openai/evil.com%23/d/chat/completions", 400, 2008, "azure resource"),
        ("/v1/local/default/azure-openai/a@b/d/chat/completions", 400, 2008, "azure resource"),
        ("/v1/local/default/azure-openai/res/..%2F/chat", 400, 2008, "path"),
        ("/v1/local/default/azure-openai/res/dep%2Fx/chat", 400, 2008, "azure deployment"),
        ("/v1/local/default/aws-bedrock/bedrock-runtime/evil.com%2F/model/x/invoke", 400, 2008, "region"),
        ("/v1/local/default/google-vertex-ai/v1/projects/p/locations/x.evil.com/m", 400, 2008, "region"),
        ("/v1/local/default/openai/../../admin", 400, 2008, "path"),
        ("/v1/local/default/openai/%2e%2e/%2e%2e/admin", 400, 2008, "path"),
        ("/v1/local/default/openai/a/..%2F..%2Fadmin", 400, 2008, "path"),
        ("/nothing-here", 404, 7000, "route"),
    ];
    for (path, status, code, mentions) in cases {
        let mut resp = app.client.post(app.url(path)).send_body("{}").await.unwrap();
        assert_eq!(resp.headers().contains_key("cf-aig-request-id"), path.starts_with("/v1/"), "{path}");
        let message = expect_error(&mut resp, *status, *code).await;
        assert!(message.contains(mentions), "{path}: {message}");
    }
    assert!(app.mock.requests().is_empty(), "no error case may reach the upstream");
}

#[actix_web::test]
async fn malformed_control_headers_are_named() {
    let app = spawn_app().await;
    for (name, value) in [
        ("cf-aig-request-timeout", "abc"),
        ("cf-aig-max-attempts", "9"),
        ("cf-aig-retry-delay", "99999"),
        ("cf-aig-backoff", "fibonacci"),
        ("cf-aig-metadata", "{not json"),
    ] {
        let mut resp = app
            .client
            .post(app.gw("openai/chat/completions"))
            .insert_header((name, value))
            .send_body("{}")
            .await
            .unwrap();
        let message = expect_error(&mut resp, 400, 2002).await;
        assert!(message.contains(name), "{name}: {message}");
    }
    assert!(app.mock.requests().is_empty());
}

#[actix_web::test]
async fn oversized_body_is_refused_with_413() {
    let app = spawn_app_with(|c| c.max_body_bytes = 1024).await;
    let mut resp = app.client.post(app.gw("openai/chat/completions")).send_body(vec![b'x'; 4096]).await.unwrap();
    expect_error(&mut resp, 413, 2004).await;
    // Chunked (no Content-Length) bodies are counted as they arrive.
    let stream =
        futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 512]))));
    let mut resp = app.client.post(app.gw("openai/chat/completions")).send_stream(stream).await.unwrap();
    expect_error(&mut resp, 413, 2004).await;
    let resp = app.client.post(app.gw("openai/chat/completions")).send_body(vec![b'z'; 1024]).await.unwrap();
    assert_eq!(resp.status(), 200, "a body at the limit passes");
    assert_eq!(app.mock.requests().len(), 1);
}

#[actix_web::test]
async fn unreachable_upstream_is_502_and_slow_upstream_is_504() {
    let app = spawn_app_with(|c| {
        c.providers.get_mut("mistral").unwrap().base_url = Some(crate::helpers::REFUSING.to_string());
    })
    .await;
    let mut resp = app.client.post(app.gw("mistral/v1/chat/completions")).send_body("{}").await.unwrap();
    let message = expect_error(&mut resp, 502, 2005).await;
    assert!(message.contains("mistral"), "{message}");

    let started = Instant::now();
    let mut resp = app
        .client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("x-mock", "hang:never"))
        .insert_header(("cf-aig-request-timeout", "300"))
        .send_body("{}")
        .await
        .unwrap();
    expect_error(&mut resp, 504, 2005).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[actix_web::test]
async fn retries_follow_max_attempts_and_backoff() {
    let app = spawn_app().await;
    // Two failures then success: three attempts are enough.
    let started = Instant::now();
    let mut resp = app
        .client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("x-mock", "fail-first:2:a"))
        .insert_header(("x-end-to-end", "kept"))
        .insert_header(("cf-aig-max-attempts", "3"))
        .insert_header(("cf-aig-retry-delay", "100"))
        .insert_header(("cf-aig-backoff", "exponential"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(json_of(&mut resp).await["attempt"], 3);
    assert_eq!(app.mock.requests().len(), 3);
    // Every attempt carries the whole head (the last one is given the headers, the others a copy).
    for got in app.mock.requests() {
        assert_eq!(got.header("x-end-to-end"), Some("kept"));
        assert_eq!(got.header("x-mock"), Some("fail-first:2:a"));
    }
    // Exponential: 100 ms then 200 ms.
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());

    // Not enough attempts: the last upstream error passes through unchanged.
    let mut resp = app
        .client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("x-mock", "fail-first:5:b"))
        .insert_header(("cf-aig-max-attempts", "2"))
        .insert_header(("cf-aig-retry-delay", "0"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(json_of(&mut resp).await["attempt"], 2);

    // A 4xx is the caller's problem: never retried.
    let resp = app
        .client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("x-mock", "status:400"))
        .insert_header(("cf-aig-max-attempts", "5"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(app.mock.requests().len(), 3 + 2 + 1);
}

#[actix_web::test]
async fn gateway_retry_defaults_apply_without_headers() {
    let app = spawn_app().await;
    let retries = serde_json::json!({"retry_max_attempts": 4, "retry_delay": 10, "retry_backoff": "linear"});
    assert_eq!(app.set_default(retries).await.0, 200);
    let mut resp =
        app.client.post(app.gw("openai/x")).insert_header(("x-mock", "fail-first:3:c")).send_body("{}").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(json_of(&mut resp).await["attempt"], 4);
}

/// Sends raw bytes and returns what came back (possibly nothing).
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let _ = s.shutdown().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[actix_web::test]
async fn bad_input_corpus_gets_clean_errors_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let huge = "a".repeat(200_000);
    let corpus: Vec<(Vec<u8>, &[&str])> = vec![
        (b"GET /v1/local/default/openai/%zz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &["400"]),
        (b"GET /v1/local/default/openai/a%00b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &["400"]),
        (b"GET /v1/%ff%fe/default/openai/x HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &["404"]),
        (b"GET //// HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &["404"]),
        (b"POST /v1/local/default/openai/x HTTP/1.1\r\nHost: x\r\ncf-aig-max-attempts: \xff\xfe\r\nContent-Length: 2\r\n\r\n{}".to_vec(), &["400"]),
        (b"POST /v1/local/default/openai/x HTTP/1.1\r\nHost: x\r\ncf-aig-metadata: \xc3\x28\r\nContent-Length: 2\r\n\r\n{}".to_vec(), &["400"]),
        (format!("GET /v1/local/default/openai/x HTTP/1.1\r\nHost: x\r\nx-absurd: {huge}\r\n\r\n").into_bytes(), &["431", "400", ""]),
        (format!("GET /v1/local/default/openai/{huge} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(), &["414", "400", "431", ""]),
        (b"POST /v1/local/default/openai/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"trunc".to_vec(), &["400", ""]),
        (b"POST /v1/local/default/openai/x HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n".to_vec(), &["400"]),
        (b"POST /v1/local/default/openai/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(), &["400", ""]),
        (b"BREW /v1/local/default HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &["405"]),
        (b"\x00\x01\x02 garbage\r\n\r\n".to_vec(), &["400", ""]),
        (b"PUT /client/v4/accounts/local/ai-gateway/gateways/default HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{{{{{".to_vec(), &["401"]),
    ];
    for (request, statuses) in corpus {
        let reply = raw(app.addr, &request).await;
        let status = reply.get(9..12).unwrap_or("");
        assert!(
            statuses.contains(&status),
            "{:?} -> {:?}",
            String::from_utf8_lossy(&request[..request.len().min(80)]),
            reply.lines().next()
        );
        let health = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200, "server must keep serving");
    }
    assert!(
        app.mock.requests().is_empty(),
        "no bad request may reach the upstream: {:?}",
        app.mock.requests().iter().map(|r| &r.uri).collect::<Vec<_>>()
    );
}

#[actix_web::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(app.client.get(app.url("/readyz")).send().await.unwrap().status(), 200);
    let mut metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    let text = String::from_utf8(metrics.body().await.unwrap().to_vec()).unwrap();
    assert!(text.contains("torii_upstream_attempts_total 0"), "{text}");
}

/// Like Cloudflare: `cf-aig-request-timeout` cuts the attempts before the last, and the final
/// attempt of several runs to completion (bounded by the configured first-byte timeout).
#[actix_web::test]
async fn the_final_retry_runs_to_completion() {
    let app = spawn_app().await;
    let send = |attempts: &'static str| {
        app.client
            .post(app.gw("openai/chat/completions"))
            .insert_header(("x-mock", "slow:600"))
            .insert_header(("cf-aig-request-timeout", "200"))
            .insert_header(("cf-aig-max-attempts", attempts))
            .insert_header(("cf-aig-retry-delay", "0"))
            .send_body("{}")
    };
    assert_eq!(send("1").await.unwrap().status(), 504, "a single attempt is cut by the timeout");
    let resp = send("2").await.unwrap();
    assert_eq!(resp.status(), 200, "the final attempt waited for the answer");
    assert_eq!(app.mock.requests().len(), 3);
}

/// Where Cloudflare tolerates a control header, the request goes through.
#[actix_web::test]
async fn tolerated_control_headers_still_answer() {
    let app = spawn_app().await;
    for (name, value) in [
        ("cf-aig-metadata", r#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6}"#),
        ("cf-aig-metadata", r#"{"a":{"nested":true}}"#),
        ("cf-aig-cache-ttl", "10"),
        ("cf-aig-skip-cache", "1"),
    ] {
        let resp = app.client.post(app.gw("openai/chat/completions")).insert_header((name, value)).send_body("{}");
        assert_eq!(resp.await.unwrap().status(), 200, "{name}: {value}");
    }
    app.flush_logs().await;
    let logs = app.logs("").await;
    let kept: Vec<_> = logs["result"].as_array().unwrap().iter().filter_map(|l| l["metadata"].as_str()).collect();
    assert!(kept.contains(&r#"{"a":1,"b":2,"c":3,"d":4,"e":5}"#), "the first five kept: {kept:?}");
}

#[actix_web::test]
async fn no_route_names_the_whole_path() {
    let app = spawn_app().await;
    let path = format!("/nowhere/{}", "a".repeat(200));
    let mut resp = app.client.get(app.url(&path)).send().await.unwrap();
    let message = expect_error(&mut resp, 404, 7000).await;
    assert!(message.contains(&path), "{message}");
}

/// Next to the data plane's `/v1` prefix (which reaches it ahead of the router) paths are still
/// not found, and the data plane still answers its own.
#[actix_web::test]
async fn paths_next_to_the_data_plane_prefix_are_not_found() {
    let app = spawn_app().await;
    let mut resp = app.client.get(app.url("/v1x/local/nope/openai/chat/completions")).send().await.unwrap();
    let message = expect_error(&mut resp, 404, 7000).await;
    assert!(message.contains("/v1x/local/nope"), "{message}");
    let mut resp = app.client.get(app.url("/v1/local/nope/openai/chat/completions")).send().await.unwrap();
    expect_error(&mut resp, 400, 2001).await;
}
