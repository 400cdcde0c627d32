//! OpenTelemetry traces: an in-process OTLP/HTTP receiver gets one span per request and one per
//! upstream attempt, with the `GenAI` attributes, the client's trace and parent, and the span id the
//! upstream saw in its `traceparent`; a gateway's own `otel` receivers; bad settings named.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

use crate::helpers::{TestApp, body_of, spawn_app_with, within};

#[derive(Default)]
struct Collector {
    spans: Mutex<Vec<Value>>,
    tenant: Mutex<Option<String>>,
}

fn collector() -> (std::net::SocketAddr, Arc<Collector>) {
    let state = Arc::new(Collector::default());
    let data = web::Data::from(Arc::clone(&state));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(move || {
        App::new().app_data(data.clone()).route(
            "/v1/traces",
            web::post().to(|req: actix_web::HttpRequest, body: web::Bytes, c: web::Data<Collector>| async move {
                *c.tenant.lock().unwrap() = req.headers().get("x-tenant").map(|v| v.to_str().unwrap().to_string());
                let doc: Value = serde_json::from_slice(&body).unwrap();
                for rs in doc["resourceSpans"].as_array().unwrap() {
                    for ss in rs["scopeSpans"].as_array().unwrap() {
                        c.spans.lock().unwrap().extend(ss["spans"].as_array().unwrap().iter().cloned());
                    }
                }
                HttpResponse::Ok().content_type("application/json").body("{}")
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    (addr, state)
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    let kv = span["attributes"].as_array()?.iter().find(|a| a["key"] == key)?;
    kv["value"].as_object()?.values().next()
}

async fn collected(app: &TestApp, c: &Collector, n: usize) -> Vec<Value> {
    app.flush_logs().await;
    let gw = app.gateway.clone();
    actix_web::web::block(move || gw.traces.flush()).await.unwrap();
    within(10, "the spans", async {
        while c.spans.lock().unwrap().len() < n {
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    c.spans.lock().unwrap().clone()
}

#[actix_web::test]
async fn a_request_and_its_attempt_become_spans_of_the_clients_trace() {
    let (addr, spans) = collector();
    let app = spawn_app_with(|c| {
        c.otel.endpoint = Some(format!("http://{addr}/v1/traces"));
        c.otel.content_type = torii::config::OtlpEncoding::Json;
        c.otel.headers.insert("x-tenant".into(), "ai".into());
    })
    .await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let mut resp = app
        .client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("authorization", "Bearer sk-test"))
        .insert_header(("traceparent", format!("00-{trace}-b7ad6b7169203331-01")))
        .insert_header(("cf-aig-metadata", r#"{"team":"search"}"#))
        .send_json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _ = body_of(&mut resp).await;
    let got = collected(&app, &spans, 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(spans.tenant.lock().unwrap().as_deref(), Some("ai"), "otel.headers are sent");
    let request = got.iter().find(|s| s["name"] == "gateway default").expect("the request span");
    let attempt = got.iter().find(|s| s["name"] == "chat gpt-4o-mini").expect("the attempt span");
    for s in [request, attempt] {
        assert_eq!(s["traceId"].as_str().unwrap().to_lowercase(), trace, "{s}");
    }
    assert_eq!(request["parentSpanId"].as_str().unwrap().to_lowercase(), "b7ad6b7169203331");
    assert_eq!(attempt["parentSpanId"], request["spanId"]);
    assert_eq!(attr(attempt, "gen_ai.system"), Some(&json!("openai")));
    assert_eq!(attr(attempt, "gen_ai.request.model"), Some(&json!("gpt-4o-mini")));
    assert_eq!(attr(attempt, "gen_ai.response.model"), Some(&json!("gpt-mock")));
    assert_eq!(
        attr(attempt, "gen_ai.usage.input_tokens").map(|v| v.to_string().trim_matches('"').to_string()),
        Some("12".into())
    );
    assert_eq!(attr(attempt, "team"), Some(&json!("search")), "metadata keys become attributes");
    // The upstream saw the attempt's span as its parent, in the client's trace.
    let upstream = app.mock.requests().pop().unwrap();
    let sent = upstream.header("traceparent").unwrap().to_string();
    let span = attempt["spanId"].as_str().unwrap().to_lowercase();
    assert_eq!(sent, format!("00-{trace}-{span}-01"));
}

#[actix_web::test]
async fn a_gateways_own_receivers_get_its_spans_and_bad_settings_are_named() {
    let (addr, spans) = collector();
    let app = spawn_app_with(|_| {}).await;
    let (status, body) =
        app.set_default(json!({"otel": [{"url": format!("http://{addr}/v1/traces"), "headers": {}}]})).await;
    assert_eq!(status, 200, "{body}");
    let mut resp = app
        .client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("authorization", "Bearer sk-test"))
        .send_json(&json!({"model": "gpt-4o-mini", "messages": []}))
        .await
        .unwrap();
    let _ = body_of(&mut resp).await;
    let got = collected(&app, &spans, 2).await;
    assert!(got.iter().any(|s| s["name"] == "gateway default"), "{got:?}");
    for (otel, field) in [
        (json!([{"url": "https://collector:4318/v1/traces", "headers": {}}]), "otel[0].url"),
        (json!([{"url": "http://c/v1/traces", "headers": {}, "content_type": "xml"}]), "otel[0].content_type"),
        (json!([{"url": "http://c/v1/traces", "headers": {}, "authorization": "secret-ref"}]), "otel[0].authorization"),
        (json!({"url": "http://c"}), "otel"),
    ] {
        let (status, body) = app.set_default(json!({"otel": otel})).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["errors"][0]["message"].as_str().unwrap().starts_with(field), "{field}: {body}");
    }
}
