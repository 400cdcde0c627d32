//! The universal endpoint: the seed scenario, a fault matrix with retries and backoff, streaming
//! through a fallback, all-steps-failed answers, bad bodies, header precedence, deadlines.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{TestApp, body_of, json_of, spawn_app, spawn_app_with, within};

async fn post(app: &TestApp, steps: &Value) -> awc::ClientResponse {
    app.client.post(app.url("/v1/local/default")).send_json(steps).await.unwrap()
}

fn step(provider: &str, endpoint: &str, mock: &str, config: Value) -> Value {
    let mut step = json!({
        "provider": provider,
        "endpoint": endpoint,
        "headers": {"Authorization": "Bearer sk-test", "x-mock": mock},
        "query": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    });
    step["config"] = config;
    step
}

fn good_openai() -> Value {
    json!({"provider": "openai", "endpoint": "chat/completions", "headers": {"Authorization": "Bearer sk-good"},
           "query": {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "What is Cloudflare?"}]}})
}

fn step_header(resp: &awc::ClientResponse) -> Option<String> {
    resp.headers().get("cf-aig-step").map(|v| v.to_str().unwrap().to_string())
}

#[actix_web::test]
async fn seed_scenario_wrong_workers_ai_token_falls_back_to_openai() {
    let app = spawn_app().await;
    let query = json!({"messages": [{"role": "system", "content": "You are a friendly assistant"}, {"role": "user", "content": "Why is pizza so good"}]});
    let steps = json!([
        {"provider": "workers-ai", "endpoint": "@cf/meta/llama-2-7b-chat-int8",
         "headers": {"Authorization": "Bearer invalid-token", "Content-Type": "application/json"}, "query": query},
        good_openai()
    ]);
    let mut resp = post(&app, &steps).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(step_header(&resp).as_deref(), Some("1"));
    assert!(resp.headers().contains_key("cf-aig-request-id"));
    assert_eq!(json_of(&mut resp).await["choices"][0]["message"]["content"], "Hello from mock OpenAI");
    let workers = app.mock.requests().into_iter().filter(|r| r.uri.starts_with("/workers-ai/")).collect::<Vec<_>>();
    assert_eq!(workers.len(), 1, "the Workers AI mock saw exactly one request");
    assert_eq!(workers[0].uri, "/workers-ai/local/run/@cf/meta/llama-2-7b-chat-int8");
    assert_eq!(serde_json::from_slice::<Value>(&workers[0].body).unwrap(), query);
    let openai = app.mock.requests().into_iter().filter(|r| r.uri.starts_with("/openai/")).collect::<Vec<_>>();
    assert_eq!(openai.len(), 1);
    assert_eq!(openai[0].header("authorization"), Some("Bearer sk-good"));
    assert_eq!(openai[0].header("content-type"), Some("application/json"));
}

#[actix_web::test]
async fn seed_curl_body_sent_by_a_script() {
    let app = spawn_app().await;
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/seed_universal.py");
    let out = within(
        60,
        "the seed script",
        tokio::process::Command::new("python3")
            .arg(script)
            .env("TORII_UNIVERSAL_URL", app.url("/v1/local/default"))
            .output(),
    )
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen, json!({"status": 200, "step": "1", "content": "Hello from mock OpenAI"}));
    assert_eq!(app.mock.requests().iter().filter(|r| r.uri.starts_with("/workers-ai/")).count(), 1);
}

/// A raw upstream that accepts, reads the request, and closes without answering.
async fn reset_upstream() -> std::net::SocketAddr {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    actix_web::rt::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = sock.read(&mut buf).await;
            let _ = sock.set_zero_linger();
            drop(sock);
        }
    });
    addr
}

#[actix_web::test]
async fn fault_matrix_falls_over_with_the_configured_retries() {
    let reset = reset_upstream().await;
    let app = spawn_app_with(|c| {
        c.providers.get_mut("mistral").unwrap().base_url = Some(crate::helpers::REFUSING.to_string());
        c.providers.get_mut("cohere").unwrap().base_url = Some(format!("http://{reset}"));
    })
    .await;
    let retry3 = json!({"maxAttempts": 3, "retryDelay": 0});
    let cases: &[(&str, &str, &str, usize)] = &[
        ("openai", "chat/completions", "status:401", 1),
        ("openai", "chat/completions", "status:429", 3),
        ("openai", "chat/completions", "status:500", 3),
        ("openai", "chat/completions", "status:503", 3),
        ("anthropic", "v1/messages", "status:400", 1),
    ];
    for (provider, endpoint, fault, attempts) in cases {
        let before = app.mock.requests().len();
        let steps = json!([step(provider, endpoint, fault, retry3.clone()), good_openai()]);
        let mut resp = post(&app, &steps).await;
        assert_eq!(resp.status(), 200, "{fault}");
        assert_eq!(step_header(&resp).as_deref(), Some("1"), "{fault}");
        json_of(&mut resp).await;
        let seen: Vec<_> = app.mock.requests()[before..].to_vec();
        let faulty = seen.iter().filter(|r| r.header("x-mock") == Some(*fault)).count();
        assert_eq!(faulty, *attempts, "{fault}: attempts on step 0");
        assert_eq!(seen.len(), attempts + 1, "{fault}: then one call to step 1");
    }
    // Connection refused and connection reset before any header: no response, so fall over.
    for (provider, endpoint) in [("mistral", "v1/chat/completions"), ("cohere", "v1/chat")] {
        let steps = json!([step(provider, endpoint, "", json!({"maxAttempts": 2, "retryDelay": 0})), good_openai()]);
        let resp = post(&app, &steps).await;
        assert_eq!((resp.status().as_u16(), step_header(&resp)), (200, Some("1".to_string())), "{provider}");
    }
    // First byte after the step's timeout.
    let started = Instant::now();
    let steps =
        json!([step("openai", "chat/completions", "hang:never", json!({"requestTimeout": 200})), good_openai()]);
    let resp = post(&app, &steps).await;
    assert_eq!((resp.status().as_u16(), step_header(&resp)), (200, Some("1".to_string())));
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[actix_web::test]
async fn backoff_delays_grow_as_configured() {
    let app = spawn_app().await;
    for (backoff, attempts, delay, min_gaps) in [
        ("constant", 3, 100, [100u64, 100, 0]),
        ("linear", 4, 60, [60, 120, 180]),
        ("exponential", 4, 50, [50, 100, 200]),
    ] {
        let before = app.mock.requests().len();
        let config = json!({"maxAttempts": attempts, "retryDelay": delay, "backoff": backoff});
        let resp = post(&app, &json!([step("openai", "chat/completions", "status:503", config), good_openai()])).await;
        assert_eq!(resp.status(), 200);
        let times: Vec<Instant> = app.mock.requests()[before..before + attempts].iter().map(|r| r.at).collect();
        for (i, pair) in times.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_millis(min_gaps[i]), "{backoff}: gap {i} was {gap:?}");
        }
    }
}

#[actix_web::test]
async fn gateway_retry_settings_are_the_step_defaults() {
    let app = spawn_app().await;
    assert_eq!(app.set_default(json!({"retry_max_attempts": 3, "retry_delay": 0})).await.0, 200);
    let resp = post(&app, &json!([step("openai", "chat/completions", "status:500", json!({})), good_openai()])).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(app.mock.requests().iter().filter(|r| r.header("x-mock") == Some("status:500")).count(), 3);
}

#[actix_web::test]
async fn streaming_through_a_fallback_is_incremental() {
    let app = spawn_app().await;
    let mut second = step("openai", "chat/completions", "sse-gated:u1", json!({}));
    second["query"]["stream"] = json!(true);
    let steps = json!([step("anthropic", "v1/messages", "status:401", json!({})), second]);
    let mut resp = post(&app, &steps).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(step_header(&resp).as_deref(), Some("1"));
    let first = within(10, "the first event", resp.next()).await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: {\"n\":1}\n\n");
    app.mock.open_gate("u1");
    let rest = body_of(&mut resp).await;
    assert_eq!(&rest[..], b"data: {\"n\":2}\n\ndata: [DONE]\n\n");
}

#[actix_web::test]
async fn a_stream_that_breaks_after_its_first_chunk_is_not_retried_elsewhere() {
    let broken = crate::mock::breaking_upstream().await;
    let app =
        spawn_app_with(|c| c.providers.get_mut("deepseek").unwrap().base_url = Some(format!("http://{broken}"))).await;
    let steps = json!([step("deepseek", "chat/completions", "", json!({"maxAttempts": 3})), good_openai()]);
    let mut resp = post(&app, &steps).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(step_header(&resp).as_deref(), Some("0"));
    let body = String::from_utf8(body_of(&mut resp).await.to_vec()).unwrap();
    assert!(body.starts_with("data: {"), "{body}");
    assert!(body.contains("\n\nevent: error\ndata: {\"error\":{"), "{body}");
    assert!(body.contains("before its final event"), "{body}");
    assert!(app.mock.requests().is_empty(), "no retry and no fallback after the first byte");
}

#[actix_web::test]
async fn when_every_step_fails() {
    let app = spawn_app_with(|c| {
        c.providers.get_mut("mistral").unwrap().base_url = Some(crate::helpers::REFUSING.to_string());
    })
    .await;
    // The last step's upstream response comes back as it was.
    let steps = json!([
        step("openai", "chat/completions", "status:500", json!({})),
        step("groq", "chat/completions", "status:401", json!({}))
    ]);
    let mut resp = post(&app, &steps).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(step_header(&resp).as_deref(), Some("1"));
    assert_eq!(json_of(&mut resp).await["error"]["message"], "mock status 401");
    // The last step produced no response: the latest response from an earlier step.
    let steps = json!([
        step("openai", "chat/completions", "status:503", json!({})),
        step("mistral", "v1/chat/completions", "", json!({}))
    ]);
    let mut resp = post(&app, &steps).await;
    assert_eq!((resp.status().as_u16(), step_header(&resp)), (503, Some("0".to_string())));
    assert_eq!(json_of(&mut resp).await["error"]["message"], "mock status 503");
    // No step produced any response: a 502 envelope listing each failure.
    let steps = json!([
        step("mistral", "v1/chat/completions", "", json!({})),
        step("mistral", "v1/chat/completions", "", json!({}))
    ]);
    let mut resp = post(&app, &steps).await;
    assert_eq!(resp.status(), 502);
    let body = json_of(&mut resp).await;
    assert_eq!(body["error"][0]["code"], 2005);
    let message = body["error"][0]["message"].as_str().unwrap();
    assert!(message.contains("step 0") && message.contains("step 1"), "{message}");
}

#[actix_web::test]
async fn bad_bodies_are_400_and_nothing_is_sent() {
    let app = spawn_app().await;
    for body in [
        "not json",
        "\"a string\"",
        "[]",
        r#"[{"provider":"nope","endpoint":"x","query":{}}]"#,
        r#"[{"provider":"openai","query":{}}]"#,
        r#"[{"provider":"openai","endpoint":"x","query":"text"}]"#,
        r#"[{"provider":"openai","endpoint":"x","query":{},"config":{"requestTimeout":"soon"}}]"#,
        r#"[{"provider":"openai","endpoint":"ok","query":{}},{"provider":"openai","endpoint":"../../x","query":{}}]"#,
    ] {
        let mut resp = app
            .client
            .post(app.url("/v1/local/default"))
            .insert_header(("content-type", "application/json"))
            .send_body(body)
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        assert_eq!(json_of(&mut resp).await["error"][0]["code"], 2002, "{body}");
    }
    let eleven: Vec<Value> = (0..11).map(|_| good_openai()).collect();
    assert_eq!(post(&app, &json!(eleven)).await.status(), 400);
    assert_eq!(app.client.get(app.url("/v1/local/default")).send().await.unwrap().status(), 405);
    assert_eq!(
        app.client.post(app.url("/v1/local/nope")).send_json(&json!([good_openai()])).await.unwrap().status(),
        400
    );
    assert!(app.mock.requests().is_empty());
    // A single step object works too.
    let resp = post(&app, &good_openai()).await;
    assert_eq!((resp.status().as_u16(), step_header(&resp)), (200, Some("0".to_string())));
}

#[actix_web::test]
async fn header_precedence_step_config_over_step_headers_over_request_headers() {
    let app = spawn_app().await;
    let hang = |headers: Value, config: Value| {
        let mut s = step("openai", "chat/completions", "hang:never", config);
        for (k, v) in headers.as_object().unwrap() {
            s["headers"][k] = v.clone();
        }
        s
    };
    let send = |steps: Value, request_timeout: &'static str| {
        app.client
            .post(app.url("/v1/local/default"))
            .insert_header(("cf-aig-request-timeout", request_timeout))
            .send_json(&steps)
    };
    // The request header applies to a step without its own setting.
    let resp = within(10, "request-level timeout", send(json!([hang(json!({}), json!({})), good_openai()]), "200"))
        .await
        .unwrap();
    assert_eq!(step_header(&resp).as_deref(), Some("1"));
    // A step header beats the (long) request header.
    let resp = within(
        10,
        "step-header timeout",
        send(json!([hang(json!({"cf-aig-request-timeout": "200"}), json!({})), good_openai()]), "600000"),
    )
    .await
    .unwrap();
    assert_eq!(step_header(&resp).as_deref(), Some("1"));
    // The step's config beats its own (long) header.
    let resp = within(
        10,
        "step-config timeout",
        send(
            json!([hang(json!({"cf-aig-request-timeout": "600000"}), json!({"requestTimeout": 200})), good_openai()]),
            "600000",
        ),
    )
    .await
    .unwrap();
    assert_eq!(step_header(&resp).as_deref(), Some("1"));
    assert!(app.mock.requests().iter().all(|r| r.header("cf-aig-request-timeout").is_none()));
}

#[actix_web::test]
async fn the_overall_deadline_bounds_failover() {
    let app = spawn_app_with(|c| c.universal_deadline_ms = 300).await;
    let started = Instant::now();
    let steps =
        json!([step("openai", "chat/completions", "hang:never", json!({"requestTimeout": 600_000})), good_openai()]);
    let mut resp = within(10, "the deadline", post(&app, &steps)).await;
    assert_eq!(resp.status(), 502);
    assert!(json_of(&mut resp).await["error"][0]["message"].as_str().unwrap().contains("overall deadline"));
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[actix_web::test]
async fn authenticated_gateway_guards_the_universal_endpoint() {
    let app = spawn_app().await;
    assert_eq!(app.set_default(json!({"authentication": true})).await.0, 200);
    let mut resp = post(&app, &json!([good_openai()])).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(json_of(&mut resp).await["error"][0]["code"], 2009);
    assert!(app.mock.requests().is_empty());
}

/// A step that fell through is logged with the provider's error body, and the failover is not
/// counted as a client that went away.
#[actix_web::test]
async fn a_failed_step_is_logged_with_its_error_body_and_is_no_client_disconnect() {
    let app = spawn_app().await;
    let steps = json!([step("groq", "chat/completions", "status:401", json!({})), good_openai()]);
    let mut resp = post(&app, &steps).await;
    assert_eq!(resp.status(), 200);
    body_of(&mut resp).await;
    app.flush_logs().await;
    let logs = app.logs("?direction=asc").await;
    let failed = &logs["result"][0];
    assert_eq!((failed["step"].clone(), failed["status_code"].clone()), (json!(0), json!(401)), "{failed}");
    let (status, body) = app.api_get(&format!("/gateways/default/logs/{}", failed["id"].as_str().unwrap())).await;
    assert_eq!(status, 200);
    assert!(body["result"]["response_head"].as_str().unwrap().contains("x-upstream-error"), "{body}");
    let mut stored = app
        .client
        .get(app.api(&format!("/gateways/default/logs/{}/response", failed["id"].as_str().unwrap())))
        .insert_header(("authorization", app.bearer()))
        .send()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&body_of(&mut stored).await).into_owned();
    assert!(text.contains("mock status 401"), "the provider's error body: {text}");
    let mut metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    let metrics = String::from_utf8_lossy(&body_of(&mut metrics).await).into_owned();
    assert!(metrics.contains("torii_client_disconnects_total 0"), "{metrics}");
}
