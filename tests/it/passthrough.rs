//! Provider passthrough: URL mapping for every provider, byte-for-byte forwarding, headers.

use crate::helpers::{body_of, json_of, spawn_app};

/// (path after the gateway, path the upstream must see, credential header)
const MAPPINGS: &[(&str, &str, (&str, &str))] = &[
    (
        "workers-ai/@cf/meta/llama-3.1-8b-instruct",
        "/workers-ai/local/run/@cf/meta/llama-3.1-8b-instruct",
        ("authorization", "Bearer cf-key"),
    ),
    ("workers-ai/v1/chat/completions", "/workers-ai/local/v1/chat/completions", ("authorization", "Bearer cf-key")),
    ("openai/chat/completions", "/openai/v1/chat/completions", ("authorization", "Bearer sk-test")),
    ("openai/v1/chat/completions", "/openai/v1/chat/completions", ("authorization", "Bearer sk-test")),
    ("anthropic/v1/messages", "/anthropic/v1/messages", ("x-api-key", "sk-ant-test")),
    (
        "azure-openai/myres/gpt4o/chat/completions?api-version=2024-06-01",
        "/azure-openai/myres/gpt4o/chat/completions?api-version=2024-06-01",
        ("api-key", "az-key"),
    ),
    (
        "aws-bedrock/bedrock-runtime/us-east-1/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke",
        "/aws-bedrock/bedrock-runtime/us-east-1/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke",
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc",
        ),
    ),
    (
        "google-vertex-ai/v1/projects/p1/locations/europe-west4/publishers/google/models/gemini-2.0-flash:generateContent",
        "/google-vertex-ai/europe-west4/v1/projects/p1/locations/europe-west4/publishers/google/models/gemini-2.0-flash:generateContent",
        ("authorization", "Bearer ya29.x"),
    ),
    (
        "google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent",
        "/google-ai-studio/v1beta/models/gemini-2.0-flash:generateContent",
        ("x-goog-api-key", "AIza-test"),
    ),
    ("cohere/v1/chat", "/cohere/v1/chat", ("authorization", "Token co-key")),
    ("groq/chat/completions", "/groq/v1/chat/completions", ("authorization", "Bearer gsk")),
    ("huggingface/bigcode/starcoder", "/huggingface/bigcode/starcoder", ("authorization", "Bearer hf_x")),
    ("perplexity-ai/chat/completions", "/perplexity-ai/chat/completions", ("authorization", "Bearer pplx")),
    ("replicate/v1/predictions", "/replicate/v1/predictions", ("authorization", "Bearer r8")),
    ("mistral/v1/chat/completions", "/mistral/v1/chat/completions", ("authorization", "Bearer m")),
    ("deepseek/chat/completions", "/deepseek/chat/completions", ("authorization", "Bearer d")),
    ("grok/v1/chat/completions", "/grok/v1/chat/completions", ("authorization", "Bearer xai")),
    ("cerebras/chat/completions", "/cerebras/v1/chat/completions", ("authorization", "Bearer c")),
    ("openrouter/v1/chat/completions", "/openrouter/v1/chat/completions", ("authorization", "Bearer or")),
    ("fireworks/chat/completions", "/fireworks/v1/chat/completions", ("authorization", "Bearer fw")),
];

#[actix_web::test]
async fn every_provider_maps_url_body_and_credentials() {
    let app = spawn_app().await;
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi \u00e9"}]}"#;
    for (rest, upstream_path, (cred_name, cred_value)) in MAPPINGS {
        let mut resp = app
            .client
            .post(app.gw(rest))
            .insert_header((*cred_name, *cred_value))
            .insert_header(("content-type", "application/json"))
            .insert_header(("cf-aig-cache-ttl", "60"))
            .insert_header(("cf-aig-metadata", r#"{"k":"v"}"#))
            .send_body(&body[..])
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{rest}: {:?}", body_of(&mut resp).await);
        assert!(resp.headers().contains_key("cf-aig-request-id"), "{rest}");
        let got = app.mock.requests().pop().unwrap();
        assert_eq!(got.uri, *upstream_path, "{rest}");
        assert_eq!(got.method, "POST");
        assert_eq!(&got.body[..], &body[..], "{rest}: body must be forwarded unchanged");
        assert_eq!(got.header(cred_name), Some(*cred_value), "{rest}: credential");
        assert_eq!(got.header("host"), Some(app.mock.addr.to_string().as_str()), "{rest}: Host is the upstream's");
        assert!(got.headers.iter().all(|(k, _)| !k.starts_with("cf-aig-")), "{rest}: cf-aig-* stripped");
    }
    assert_eq!(app.mock.requests().len(), MAPPINGS.len());
}

#[actix_web::test]
async fn raw_path_and_query_arrive_byte_for_byte() {
    let app = spawn_app().await;
    let rest = "google-ai-studio/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key=a%2Bb%20c&flag";
    let resp = app.client.get(app.gw(rest)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let got = app.mock.requests().pop().unwrap();
    assert_eq!(
        got.uri,
        "/google-ai-studio/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key=a%2Bb%20c&flag"
    );
    assert_eq!(got.method, "GET");
    assert!(got.body.is_empty());
    let resp = app.client.get(app.gw("workers-ai/@hf/thebloke/x%2Dy")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(app.mock.requests().pop().unwrap().uri, "/workers-ai/local/run/@hf/thebloke/x%2Dy");
}

#[actix_web::test]
async fn every_method_is_forwarded() {
    let app = spawn_app().await;
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        let m = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = app.client.request(m, app.gw("openai/files/f1")).send_body("x").await.unwrap();
        assert_eq!(resp.status(), 200, "{method}");
        let got = app.mock.requests().pop().unwrap();
        assert_eq!((got.method.as_str(), got.uri.as_str()), (method, "/openai/v1/files/f1"));
    }
}

#[actix_web::test]
async fn upstream_errors_and_headers_pass_through_unchanged() {
    let app = spawn_app().await;
    let mut resp = app
        .client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("x-mock", "status:401"))
        .insert_header(("cf-aig-event-id", "evt-123"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers().get("x-upstream-error").unwrap(), "yes");
    assert_eq!(resp.headers().get("cf-aig-event-id").unwrap(), "evt-123");
    let request_id = resp.headers().get("cf-aig-request-id").unwrap().to_str().unwrap().to_string();
    assert_eq!(uuid::Uuid::parse_str(&request_id).unwrap().get_version_num(), 7);
    let body = json_of(&mut resp).await;
    assert_eq!(body["error"]["message"], "mock status 401");
}

#[actix_web::test]
async fn redirects_go_back_to_the_client_unfollowed() {
    let app = spawn_app().await;
    let resp = app.client.get(app.gw("openai/models")).insert_header(("x-mock", "redirect")).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers().get("location").unwrap(), "http://example.invalid/steal");
    assert_eq!(app.mock.requests().len(), 1);
}

/// The upstream's head reaches the client whole: a sized body stays sized, a missing
/// `Content-Type` reads `application/octet-stream` (the server's default), headers of several
/// values keep them all, and Torii's own headers are added.
#[actix_web::test]
async fn the_upstream_head_reaches_the_client_whole() {
    let app = spawn_app().await;
    let mut resp = app.client.get(app.gw("openai/models")).insert_header(("x-mock", "untyped")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h.get("content-type").unwrap(), "application/octet-stream");
    assert_eq!(h.get("content-length").unwrap(), "10");
    assert!(h.get("transfer-encoding").is_none());
    assert_eq!(h.get_all("x-many").map(|v| v.to_str().unwrap()).collect::<Vec<_>>(), ["one", "two"]);
    assert!(h.get("cf-aig-log-id").is_some());
    assert!(h.get("content-security-policy").is_some());
    assert_eq!(crate::helpers::body_of(&mut resp).await, &b"\x00raw bytes"[..]);
}

/// Answers without a body (`304`, `204`) go back without one, and the connection stays usable.
#[actix_web::test]
async fn answers_without_a_body_stay_without_one() {
    let app = spawn_app().await;
    for code in [304u16, 204] {
        let mut resp = app
            .client
            .get(app.gw("openai/models"))
            .insert_header(("x-mock", format!("status:{code}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), code);
        assert!(resp.headers().get("transfer-encoding").is_none(), "{code}");
        assert!(crate::helpers::body_of(&mut resp).await.is_empty(), "{code}");
    }
    assert_eq!(app.client.get(app.gw("openai/models")).send().await.unwrap().status(), 200);
}

#[actix_web::test]
async fn client_signed_bedrock_request_is_forwarded_intact() {
    let app = spawn_app().await;
    let body = br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":10,"messages":[]}"#;
    let signed = [
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-west-2/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date, Signature=deadbeef",
        ),
        ("x-amz-date", "20260101T000000Z"),
        ("x-amz-content-sha256", "0123abcd"),
        ("x-amz-security-token", "session-token"),
        ("content-type", "application/json"),
    ];
    let mut req = app.client.post(
        app.gw("aws-bedrock/bedrock-runtime/us-west-2/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/invoke"),
    );
    for h in signed {
        req = req.insert_header(h);
    }
    assert_eq!(req.send_body(&body[..]).await.unwrap().status(), 200);
    let got = app.mock.requests().pop().unwrap();
    assert_eq!(
        got.uri,
        "/aws-bedrock/bedrock-runtime/us-west-2/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/invoke"
    );
    for (k, v) in signed {
        assert_eq!(got.header(k), Some(v), "{k}");
    }
    assert_eq!(&got.body[..], &body[..]);
}

/// Sends `request` as raw bytes (so no client library rewrites its head) on a connection of its
/// own and wants a 200.
async fn raw_ok(app: &crate::helpers::TestApp, request: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    crate::helpers::within(10, "the reply", s.read_to_end(&mut reply)).await.unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&reply));
}

#[actix_web::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let app = spawn_app().await;
    // Raw bytes, so no client library rewrites the Connection header.
    let request = "POST /v1/local/default/openai/chat/completions HTTP/1.1\r\nHost: gw\r\n\
        Connection: keep-alive, x-hop\r\nx-hop: secret-hop\r\nProxy-Authorization: Basic abc\r\n\
        cf-aig-authorization: Bearer gateway-token\r\nTE: trailers\r\nx-end-to-end: kept\r\n\
        Content-Length: 2\r\nConnection: close\r\n\r\n{}";
    raw_ok(&app, request).await;
    let got = app.mock.requests().pop().unwrap();
    assert_eq!(got.header("x-end-to-end"), Some("kept"));
    for gone in ["x-hop", "proxy-authorization", "cf-aig-authorization", "te"] {
        assert_eq!(got.header(gone), None, "{gone}");
    }
}

/// The client's `Accept-Encoding` goes upstream as sent; a request that names none asks the
/// upstream for `identity` (Torii does not decode answers, so it asks for none it would have to).
#[actix_web::test]
async fn the_upstream_is_asked_for_the_clients_encoding_or_identity() {
    let app = spawn_app().await;
    for (line, want) in [("", "identity"), ("Accept-Encoding: gzip, br\r\n", "gzip, br")] {
        // Raw bytes, so no client library adds an encoding of its own.
        let request = format!(
            "POST /v1/local/default/openai/chat/completions HTTP/1.1\r\nHost: gw\r\n{line}\
             Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        raw_ok(&app, &request).await;
        let got = app.mock.requests().pop().unwrap();
        assert_eq!(got.header("accept-encoding"), Some(want), "{line:?}");
    }
}

/// `HEAD` gets the upstream's head (its `Content-Length` too) and no body, not a truncation error.
#[actix_web::test]
async fn head_requests_get_the_upstream_head() {
    let app = spawn_app().await;
    let mut resp = app.client.head(app.gw("openai/models")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let len: u64 = resp.headers().get("content-length").unwrap().to_str().unwrap().parse().unwrap();
    assert!(len > 0);
    assert!(crate::helpers::body_of(&mut resp).await.is_empty());
    assert_eq!(app.mock.requests()[0].method, "HEAD");
    // The connection stays usable: the next request on the same client works.
    assert_eq!(app.client.get(app.gw("openai/models")).send().await.unwrap().status(), 200);
}
