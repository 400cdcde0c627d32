//! Log export: a receiver that fails and then recovers gets every log (JSON lines and OTLP), a
//! restart in between loses nothing, `logpush` needs a receiver, and the health page and
//! `/metrics` say how it goes.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

use crate::helpers::{TestApp, body_of, spawn_app, spawn_app_with, within};

/// A log receiver: refuses (503) while `failing` is set, records the bodies it accepts.
#[derive(Default)]
struct Receiver {
    failing: Mutex<bool>,
    refused: Mutex<u32>,
    accepted: Mutex<Vec<(String, String)>>,
    authorization: Mutex<Option<String>>,
}

fn receive(state: Arc<Receiver>) -> std::net::SocketAddr {
    let data = web::Data::from(state);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(move || {
        App::new().app_data(data.clone()).default_service(web::to(
            |req: actix_web::HttpRequest, body: web::Bytes, r: web::Data<Receiver>| async move {
                if *r.failing.lock().unwrap() {
                    *r.refused.lock().unwrap() += 1;
                    return HttpResponse::ServiceUnavailable().finish();
                }
                let kind =
                    req.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
                *r.authorization.lock().unwrap() =
                    req.headers().get("authorization").map(|v| v.to_str().unwrap().to_string());
                r.accepted.lock().unwrap().push((kind, String::from_utf8_lossy(&body).into_owned()));
                HttpResponse::Ok().finish()
            },
        ))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    addr
}

/// Event ids of the logs a receiver accepted (JSON lines or OTLP).
fn event_ids(r: &Receiver) -> Vec<String> {
    let mut out = Vec::new();
    for (kind, body) in r.accepted.lock().unwrap().iter() {
        if kind.contains("ndjson") {
            out.extend(
                body.lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()["event_id"].as_str().unwrap().to_string()),
            );
        } else {
            let doc: Value = serde_json::from_str(body).unwrap();
            for rec in doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"].as_array().unwrap() {
                let attrs = rec["attributes"].as_array().unwrap();
                let id = attrs.iter().find(|a| a["key"] == "torii.event_id").unwrap()["value"]["stringValue"]
                    .as_str()
                    .unwrap();
                out.push(id.to_string());
            }
        }
    }
    out
}

async fn request(app: &TestApp, event: &str) {
    let mut resp = app
        .client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("authorization", "Bearer sk-test"))
        .insert_header(("cf-aig-event-id", event))
        .send_json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .await
        .unwrap();
    let _ = body_of(&mut resp).await;
}

#[actix_web::test]
async fn a_failing_receiver_gets_every_log_once_it_recovers() {
    for format in [torii::config::ExportFormat::Json, torii::config::ExportFormat::Otlp] {
        let receiver = Arc::new(Receiver::default());
        *receiver.failing.lock().unwrap() = true;
        let addr = receive(Arc::clone(&receiver));
        let app = spawn_app_with(|c| {
            c.export.url = Some(format!("http://{addr}/v1/logs"));
            c.export.format = format;
            c.export.batch = 3;
            c.export.interval_ms = 20;
            c.export.headers.insert("authorization".into(), "Bearer receiver-key".into());
        })
        .await;
        assert_eq!(app.set_default(json!({"logpush": true})).await.0, 200);
        for i in 0..7 {
            request(&app, &format!("evt-{i}")).await;
        }
        within(10, "the receiver to refuse twice", async {
            while *receiver.refused.lock().unwrap() < 2 {
                actix_web::rt::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        let health = crate::ui::sign_in(&app).await.get("/admin/health").await;
        assert!(crate::ui::text_near(&health.html, "export-state").contains("now failing"), "{}", health.html);
        *receiver.failing.lock().unwrap() = false;
        within(20, "every log to arrive", async {
            while event_ids(&receiver).len() < 7 {
                actix_web::rt::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        let got: BTreeSet<String> = event_ids(&receiver).into_iter().collect();
        let expected: BTreeSet<String> = (0..7).map(|i| format!("evt-{i}")).collect();
        assert_eq!(got, expected, "{format:?}");
        assert_eq!(
            receiver.authorization.lock().unwrap().as_deref(),
            Some("Bearer receiver-key"),
            "export.headers are sent"
        );
        assert!(receiver.accepted.lock().unwrap().len() >= 3, "batches of at most 3");
        // The exporter counts a batch once the receiver's answer is back: wait for it.
        within(10, "the export figures", async {
            loop {
                let mut metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
                let text = String::from_utf8(body_of(&mut metrics).await.to_vec()).unwrap();
                if text.contains("torii_export_sent_total 7") && text.contains("torii_export_backlog 0") {
                    break;
                }
                actix_web::rt::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }
}

#[actix_web::test]
async fn logpush_needs_a_receiver() {
    let app = spawn_app().await;
    let (status, body) = app.set_default(json!({"logpush": true})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().starts_with("logpush"), "{body}");
    assert_eq!(app.set_default(json!({"logpush": false})).await.0, 200);
}

/// Logs queued while the receiver is down survive a restart of the binary and arrive after it.
#[actix_web::test]
async fn queued_logs_survive_a_restart() {
    use crate::cli::{serve, sigterm, torii, wait_exit};
    let mock = crate::mock::start();
    let receiver = Arc::new(Receiver::default());
    *receiver.failing.lock().unwrap() = true;
    let addr = receive(Arc::clone(&receiver));
    let dir = tempfile::tempdir().unwrap();
    let out = torii(dir.path()).args(["token", "create", "--name", "a", "--scope", "edit"]).output().unwrap();
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let envs = [
        ("TORII_PROVIDERS__OPENAI__BASE_URL", mock.url()),
        ("TORII_EXPORT__URL", format!("http://{addr}/logs")),
        ("TORII_EXPORT__INTERVAL_MS", "20".to_string()),
    ];
    let client = awc::Client::default();
    let mut first = serve(dir.path(), &envs);
    let put = json!({"cache_invalidate_on_update": false, "cache_ttl": 0, "collect_logs": true,
        "rate_limiting_interval": 0, "rate_limiting_limit": 0, "logpush": true});
    let resp = client
        .put(format!("http://{}/client/v4/accounts/local/ai-gateway/gateways/default", first.addr))
        .insert_header(("authorization", format!("Bearer {admin}")))
        .send_json(&put)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for i in 0..5 {
        let resp = client
            .post(format!("http://{}/v1/local/default/openai/chat/completions", first.addr))
            .insert_header(("cf-aig-event-id", format!("r-{i}")))
            .send_json(&json!({"model": "gpt-4o-mini", "messages": []}))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    within(10, "the receiver to refuse", async {
        while *receiver.refused.lock().unwrap() < 1 {
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    sigterm(&first.child);
    assert!(wait_exit(&mut first.child, 30).success());
    *receiver.failing.lock().unwrap() = false;
    let _second = serve(dir.path(), &envs);
    within(20, "every log to arrive after the restart", async {
        while event_ids(&receiver).len() < 5 {
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let got: BTreeSet<String> = event_ids(&receiver).into_iter().collect();
    assert_eq!(got, (0..5).map(|i| format!("r-{i}")).collect::<BTreeSet<_>>());
}
