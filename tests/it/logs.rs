//! Request logs end to end: records, usage, bodies, redaction, collection controls, filters,
//! caps, feedback, deletion, analytics, bursts.

use futures_util::StreamExt;
use serde_json::{Value, json};
use torii::logs::record::{LogEntry, LogMeta, RequestType};

use crate::helpers::{TestApp, json_of, spawn_app, spawn_app_with, within};

impl TestApp {
    /// Waits until every log queued so far is committed.
    pub async fn flush_logs(&self) {
        let logs = self.gateway.logs.clone();
        actix_web::web::block(move || logs.flush()).await.unwrap();
    }

    pub async fn api_get(&self, path: &str) -> (u16, Value) {
        let mut resp =
            self.client.get(self.api(path)).insert_header(("authorization", self.bearer())).send().await.unwrap();
        (resp.status().as_u16(), json_of(&mut resp).await)
    }

    /// `DELETE /gateways/default/logs{query}`; the status.
    pub async fn delete_logs(&self, query: &str) -> u16 {
        let url = self.api(&format!("/gateways/default/logs{query}"));
        let resp = self.client.delete(url).insert_header(("authorization", self.bearer())).send().await.unwrap();
        resp.status().as_u16()
    }

    pub async fn logs(&self, query: &str) -> Value {
        let (status, body) = self.api_get(&format!("/gateways/default/logs{query}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

#[actix_web::test]
async fn a_request_becomes_a_log_with_usage_bodies_and_redacted_heads() {
    let app = spawn_app().await;
    let request = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let credentials = [
        ("authorization", "Bearer sk-secret-1"),
        ("x-api-key", "secret-2"),
        ("api-key", "secret-3"),
        ("x-goog-api-key", "secret-4"),
        ("cf-aig-authorization", "Bearer secret-5"),
        ("x-amz-security-token", "secret-6"),
    ];
    let mut req =
        app.client.post(app.gw("openai/chat/completions")).insert_header(("content-type", "application/json"));
    for h in credentials {
        req = req.insert_header(h);
    }
    let resp = req.insert_header(("cf-aig-metadata", r#"{"user":"u1","tier":3}"#)).send_body(request).await.unwrap();
    let log_id = resp.headers().get("cf-aig-log-id").unwrap().to_str().unwrap().to_string();
    app.flush_logs().await;
    let body = app.logs("").await;
    assert_eq!(body["result_info"]["total_count"], 1);
    let log = &body["result"][0];
    assert_eq!(log["id"], log_id);
    assert_eq!(
        (log["provider"].clone(), log["model"].clone(), log["model_type"].clone()),
        (json!("openai"), json!("gpt-mock"), json!("chat"))
    );
    assert_eq!(
        (log["tokens_in"].clone(), log["tokens_out"].clone(), log["success"].clone()),
        (json!(12), json!(5), json!(true))
    );
    assert_eq!(log["status_code"], 200);
    assert_eq!(
        serde_json::from_str::<Value>(log["metadata"].as_str().unwrap()).unwrap(),
        json!({"user": "u1", "tier": 3})
    );
    assert_eq!(log["request_type"], "provider");
    let event_id = resp.headers().get("cf-aig-event-id").unwrap().to_str().unwrap();
    assert_eq!(log["event_id"], event_id);
    // The event id was generated: the log has it as its own id, unless its attempt started two
    // or more milliseconds after the request id was made (the only case it takes a new id).
    let event_ms = i64::from_str_radix(&event_id.replace('-', "")[..12], 16).unwrap();
    let created = time::OffsetDateTime::parse(
        log["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let created_ms = i64::try_from(created.unix_timestamp_nanos() / 1_000_000).unwrap();
    assert!(log_id == event_id || created_ms - event_ms >= 2, "{log_id} {event_id} {created_ms} {event_ms}");
    let mut raw = app
        .client
        .get(app.api(&format!("/gateways/default/logs/{log_id}/request")))
        .insert_header(("authorization", app.bearer()))
        .send()
        .await
        .unwrap();
    assert_eq!(&raw.body().await.unwrap()[..], request.as_bytes());
    let mut raw = app
        .client
        .get(app.api(&format!("/gateways/default/logs/{log_id}/response")))
        .insert_header(("authorization", app.bearer()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&raw.body().await.unwrap()).unwrap()["choices"][0]["message"]["content"],
        "Hello from mock OpenAI"
    );
    let stored = app.settings().log_bodies("default", &log_id).unwrap().unwrap();
    for (name, _) in credentials {
        let value = stored.request_headers.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(value, "REDACTED", "{name}");
    }
    assert!(
        stored.request_headers.pairs().any(|(k, v)| k == "cf-aig-metadata" && v.contains("u1")),
        "other heads are kept"
    );
    // No secret anywhere in the database file.
    let db = std::fs::read(app.dir.path().join("torii.redb")).unwrap();
    for (_, secret) in credentials {
        let needle = secret.trim_start_matches("Bearer ");
        assert!(!db.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle} leaked into the store");
    }
}

#[actix_web::test]
async fn cost_from_the_price_table_or_the_custom_cost_header() {
    let app = spawn_app().await;
    // The mock answers as model "gpt-mock" (no price): priced only with custom costs.
    app.client.post(app.gw("openai/chat/completions")).send_body("{}").await.unwrap();
    let custom = r#"{"per_token_in":0.001,"per_token_out":0.002}"#;
    app.client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("cf-aig-custom-cost", custom))
        .send_body("{}")
        .await
        .unwrap();
    app.flush_logs().await;
    let logs = app.logs("?order_by_direction=asc").await;
    assert_eq!(
        (logs["result"][0]["cost"].clone(), logs["result"][0]["custom_cost"].clone()),
        (Value::Null, json!(false))
    );
    let cost = logs["result"][1]["cost"].as_f64().unwrap();
    assert!((cost - (12.0 * 0.001 + 5.0 * 0.002)).abs() < 1e-12, "{cost}");
    assert_eq!(logs["result"][1]["custom_cost"], true);
    let (_, report) = app.api_get("/gateways/default/analytics?bucket=day").await;
    assert_eq!(report["result"]["by_provider"]["openai"]["requests"], 2);
    assert_eq!(report["result"]["by_model"]["gpt-mock"]["tokens_in"], 24);
    assert!((report["result"]["totals"]["cost"].as_f64().unwrap() - cost).abs() < 1e-12);
}

#[actix_web::test]
async fn streamed_responses_are_logged_whole_with_their_usage() {
    let app = spawn_app().await;
    let mut resp = app
        .client
        .post(app.gw("anthropic/v1/messages"))
        .insert_header(("x-api-key", "k"))
        .send_body(r#"{"model":"claude-x","stream":true}"#)
        .await
        .unwrap();
    let text = resp.body().await.unwrap();
    app.flush_logs().await;
    let log = app.logs("").await["result"][0].clone();
    assert_eq!(
        (log["model"].clone(), log["tokens_in"].clone(), log["tokens_out"].clone()),
        (json!("claude-mock"), json!(12), json!(5))
    );
    assert_eq!(log["response_content_type"], "text/event-stream");
    let stored = app.settings().log_bodies("default", log["id"].as_str().unwrap()).unwrap().unwrap();
    assert_eq!(stored.response_body, text.to_vec(), "the stored response is the SSE text the client received");
}

#[actix_web::test]
async fn a_stream_the_client_abandons_is_logged_as_such() {
    let app = spawn_app().await;
    let mut resp = app
        .client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("x-mock", "endless"))
        .send_body("{}")
        .await
        .unwrap();
    within(10, "a chunk", resp.next()).await.unwrap().unwrap();
    drop(resp);
    let logged = async {
        loop {
            app.flush_logs().await;
            if app.logs("").await["result_info"]["total_count"] == 1 {
                break;
            }
            actix_web::rt::task::yield_now().await;
        }
    };
    within(10, "the log of the abandoned stream", logged).await;
    let log = app.logs("").await["result"][0].clone();
    assert_eq!(log["success"], false);
    assert!(log["error"].as_str().unwrap().contains("client disconnected"), "{log}");
    assert!(log["response_size"].as_u64().unwrap() > 0);
}

#[actix_web::test]
async fn attempts_and_steps_each_get_a_log_sharing_the_event_id() {
    let app = spawn_app().await;
    app.client
        .post(app.gw("openai/x"))
        .insert_header(("x-mock", "fail-first:2:r"))
        .insert_header(("cf-aig-max-attempts", "3"))
        .insert_header(("cf-aig-retry-delay", "0"))
        .send_body("{}")
        .await
        .unwrap();
    app.flush_logs().await;
    let logs = app.logs("?order_by_direction=asc").await;
    assert_eq!(logs["result_info"]["total_count"], 3);
    let attempts: Vec<_> = logs["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["attempt"].as_u64().unwrap(), l["status_code"].as_u64().unwrap(), l["success"].as_bool().unwrap()))
        .collect();
    assert_eq!(attempts, [(1, 503, false), (2, 503, false), (3, 200, true)]);
    let event = logs["result"][0]["event_id"].clone();
    assert!(logs["result"].as_array().unwrap().iter().all(|l| l["event_id"] == event));
    // The generated event id finds all three (the first log may have it as its own id, which
    // the index keeps no row for), and no two logs share an id.
    let filters = json!([{"key": "event_id", "operator": "eq", "value": [event]}]).to_string();
    let query = serde_urlencoded::to_string([("filters", filters.as_str()), ("order_by_direction", "asc")]).unwrap();
    let found = app.logs(&format!("?{query}")).await;
    let ids: std::collections::BTreeSet<&str> =
        found["result"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!((found["result_info"]["total_count"].clone(), ids.len()), (json!(3), 3), "{found}");

    let steps = json!([
        {"provider": "workers-ai", "endpoint": "@cf/meta/llama-3.1-8b-instruct", "headers": {"Authorization": "Bearer invalid"}, "query": {"messages": []}},
        {"provider": "openai", "endpoint": "chat/completions", "headers": {"Authorization": "Bearer good"}, "query": {"model": "gpt-4o"}}
    ]);
    let resp = app
        .client
        .post(app.url("/v1/local/default"))
        .insert_header(("cf-aig-event-id", "evt-universal"))
        .send_json(&steps)
        .await
        .unwrap();
    let log_id = resp.headers().get("cf-aig-log-id").unwrap().to_str().unwrap().to_string();
    app.flush_logs().await;
    let logs = app.logs("?filters=%5B%7B%22key%22%3A%22event_id%22%2C%22operator%22%3A%22eq%22%2C%22value%22%3A%5B%22evt-universal%22%5D%7D%5D&order_by_direction=asc").await;
    assert_eq!(logs["result_info"]["total_count"], 2);
    let r = &logs["result"];
    assert_eq!(
        (r[0]["step"].clone(), r[0]["status_code"].clone(), r[0]["model"].clone()),
        (json!(0), json!(401), json!("@cf/meta/llama-3.1-8b-instruct"))
    );
    assert_eq!(
        (r[1]["step"].clone(), r[1]["status_code"].clone(), r[1]["id"].clone()),
        (json!(1), json!(200), json!(log_id))
    );
    assert!(r.as_array().unwrap().iter().all(|l| l["request_type"] == "universal"));
}

#[actix_web::test]
async fn collection_controls() {
    let app = spawn_app().await;
    // Payload off: metadata without bodies.
    let resp = app
        .client
        .post(app.gw("openai/a"))
        .insert_header(("cf-aig-collect-log-payload", "false"))
        .send_body("{\"secret\":1}")
        .await
        .unwrap();
    let id = resp.headers().get("cf-aig-log-id").unwrap().to_str().unwrap().to_string();
    // Header off: nothing stored, no log id.
    let resp = app
        .client
        .post(app.gw("openai/b"))
        .insert_header(("cf-aig-collect-log", "false"))
        .send_body("{}")
        .await
        .unwrap();
    assert!(resp.headers().get("cf-aig-log-id").is_none());
    app.flush_logs().await;
    assert_eq!(app.logs("").await["result_info"]["total_count"], 1);
    let (status, _) = app.api_get(&format!("/gateways/default/logs/{id}/request")).await;
    assert_eq!(status, 404);
    assert_eq!(app.api_get(&format!("/gateways/default/logs/{id}")).await.1["result"]["payload_collected"], false);

    // Gateway off, header on: stored; gateway off alone: not stored, but counted in analytics.
    assert_eq!(app.set_default(json!({"collect_logs": false})).await.0, 200);
    app.client.post(app.gw("openai/c")).send_body("{}").await.unwrap();
    let resp = app
        .client
        .post(app.gw("openai/d"))
        .insert_header(("cf-aig-collect-log", "true"))
        .send_body("{}")
        .await
        .unwrap();
    assert!(resp.headers().get("cf-aig-log-id").is_some());
    app.flush_logs().await;
    let logs = app.logs("").await;
    assert_eq!(logs["result_info"]["total_count"], 2);
    assert_eq!(logs["result"][0]["path"], "d");
    let (_, report) = app.api_get("/gateways/default/analytics?bucket=minute").await;
    assert_eq!(report["result"]["totals"]["requests"], 4, "{report}");
}

fn synthetic(i: u32, provider: &str, model: &str, success: bool, cost: f64, user: &str) -> LogEntry {
    LogEntry {
        gateway: "default".into(),
        meta: LogMeta {
            id: torii::logs::record::log_id(1_780_000_000_000 + i64::from(i)),
            created_at: 1_780_000_000_000 + i64::from(i),
            provider: provider.into(),
            model: Some(model.into()),
            model_type: Some("chat".into()),
            method: "POST".into(),
            path: "chat/completions".into(),
            success,
            cached: false,
            status_code: if success { 200 } else { 500 },
            duration: 100 + i,
            ttfb: 50,
            tokens_in: 10 * i,
            tokens_out: i,
            cached_tokens_in: 0,
            cache_write_tokens: 0,
            cost: Some(cost),
            custom_cost: false,
            metadata: Some(json!({"user": user}).to_string().into()),
            request_content_type: Some("application/json".into()),
            response_content_type: Some("application/json".into()),
            request_type: RequestType::Provider,
            step: 0,
            attempt: 1,
            event_id: format!("evt-{i}").into(),
            user_agent: Some("test".into()),
            request_size: 10,
            response_size: 10,
            error: None,
            payload: false,
            truncated: false,
            feedback: None,
            score: None,
            requested_model: None,
            policy: None,
        },
        bodies: None,
        store: true,
        trace: None,
    }
}

#[actix_web::test]
async fn filters_ordering_pagination_feedback_and_deletion() {
    let app = spawn_app().await;
    for i in 0..30u32 {
        let (provider, model) = if i % 3 == 0 { ("anthropic", "claude-x") } else { ("openai", "gpt-4o") };
        let user = if i == 7 { "rare-user" } else { "common" };
        app.gateway.logs.submit(synthetic(i, provider, model, i % 5 != 0, f64::from(i) / 100.0, user));
    }
    app.flush_logs().await;
    let total = |v: &Value| v["result_info"]["total_count"].as_u64().unwrap();
    assert_eq!(total(&app.logs("").await), 30);
    assert_eq!(total(&app.logs("?provider=anthropic").await), 10);
    assert_eq!(
        total(&app.logs("?filters[0][key]=model&filters[0][operator]=eq&filters[0][value][0]=gpt-4o").await),
        20
    );
    assert_eq!(total(&app.logs("?filters.0.key=success&filters.0.operator=eq&filters.0.value.0=false").await), 6);
    assert_eq!(
        total(&app.logs("?filters[0][key]=metadata.user&filters[0][operator]=eq&filters[0][value][0]=rare-user").await),
        1
    );
    assert_eq!(
        total(
            &app.logs("?filters[0][key]=metadata.value&filters[0][operator]=eq&filters[0][value][0]=rare-user").await
        ),
        1
    );
    assert_eq!(total(&app.logs("?min_cost=0.25").await), 5);
    assert_eq!(total(&app.logs("?filters[0][key]=cost&filters[0][operator]=lt&filters[0][value][0]=0.1").await), 10);
    assert_eq!(
        total(
            &app.logs("?filters[0][key]=provider&filters[0][operator]=neq&filters[0][value][0]=openai&success=true")
                .await
        ),
        8
    );
    assert_eq!(
        total(&app.logs("?filters[0][key]=model&filters[0][operator]=contains&filters[0][value][0]=claude").await),
        10
    );
    assert_eq!(total(&app.logs("?search=evt-7").await), 1);
    // Time ranges (log ids carry their created_at, so a range is an id range).
    let at = |op: &str, ms: i64, n: u8| {
        format!("filters[{n}][key]=created_at&filters[{n}][operator]={op}&filters[{n}][value][0]={ms}")
    };
    assert_eq!(total(&app.logs(&format!("?{}", at("gt", 1_780_000_000_009, 0))).await), 20);
    assert_eq!(total(&app.logs(&format!("?{}", at("lt", 1_780_000_000_005, 0))).await), 5);
    let window = app.logs(&format!("?{}&{}", at("gt", 1_780_000_000_009, 0), at("lt", 1_780_000_000_020, 1))).await;
    assert_eq!(total(&window), 10);
    assert_eq!(window["result"][0]["event_id"], "evt-19");
    assert_eq!(total(&app.logs(&format!("?provider=anthropic&{}", at("gt", 1_780_000_000_009, 0))).await), 6);
    assert_eq!(total(&app.logs("?start_date=2026-05-28T20:26:40.010Z&end_date=2026-05-28T20:26:40.013Z").await), 2);
    assert_eq!(
        total(&app.logs(&format!("?{}&{}", at("gt", 1_780_000_000_020, 0), at("lt", 1_780_000_000_009, 1))).await),
        0
    );
    // Several indexed equalities: checked against the index, only the page decoded.
    let both = app.logs("?provider=openai&success=false&per_page=2&page=2").await;
    assert_eq!(total(&both), 4);
    let events: Vec<&str> =
        both["result"].as_array().unwrap().iter().map(|l| l["event_id"].as_str().unwrap()).collect();
    assert_eq!(events, ["evt-10", "evt-5"]);
    let three = "?provider=openai&success=true&filters[0][key]=metadata.user&filters[0][operator]=eq&filters[0][value][0]=rare-user";
    let three = app.logs(three).await;
    assert_eq!((total(&three), three["result"][0]["event_id"].as_str()), (1, Some("evt-7")));
    let page = app.logs("?order_by=cost&order_by_direction=desc&per_page=5&page=2").await;
    let costs: Vec<f64> = page["result"].as_array().unwrap().iter().map(|l| l["cost"].as_f64().unwrap()).collect();
    assert_eq!(costs, [0.24, 0.23, 0.22, 0.21, 0.2]);
    assert_eq!(page["result_info"]["total_pages"], 6);
    let newest = app.logs("?per_page=3").await;
    assert_eq!(newest["result"][0]["event_id"], "evt-29", "newest first by default");
    let info = app.logs("?meta_info=true&provider=openai").await;
    assert_eq!(info["result_info"]["max_tokens_in"], 290.0);
    let (status, body) =
        app.api_get("/gateways/default/logs?filters[0][key]=nope&filters[0][operator]=eq&filters[0][value][0]=1").await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = app.api_get("/gateways/default/logs?order_by=secret").await;
    assert_eq!(status, 400);

    // Feedback.
    let id = newest["result"][0]["id"].as_str().unwrap().to_string();
    let patch = |body: Value| {
        app.client
            .patch(app.api(&format!("/gateways/default/logs/{id}")))
            .insert_header(("authorization", app.bearer()))
            .send_json(&body)
    };
    assert_eq!(patch(json!({"feedback": 1, "score": 90})).await.unwrap().status(), 200);
    assert_eq!(patch(json!({"feedback": 2})).await.unwrap().status(), 400);
    let liked = app.logs("?feedback=1").await;
    assert_eq!((total(&liked), liked["result"][0]["score"].clone()), (1, json!(90)));
    assert_eq!(patch(json!({"feedback": null})).await.unwrap().status(), 200);
    assert_eq!(total(&app.logs("?feedback=1").await), 0);

    // Deletion by filter.
    assert_eq!(app.delete_logs("?provider=anthropic").await, 200);
    assert_eq!(total(&app.logs("").await), 20);
    assert_eq!(total(&app.logs("?provider=anthropic").await), 0);
    assert_eq!(
        total(&app.logs("?filters[0][key]=metadata.user&filters[0][operator]=eq&filters[0][value][0]=common").await),
        19,
        "counters follow deletions (one of the 20 is rare-user)"
    );
}

#[actix_web::test]
async fn log_caps_stop_inserting_or_delete_oldest() {
    for (strategy, expect_newest_kept) in [("STOP_INSERTING", false), ("DELETE_OLDEST", true)] {
        let app = spawn_app().await;
        assert_eq!(
            app.set_default(json!({"log_management": 10_000, "log_management_strategy": strategy})).await.0,
            200
        );
        for i in 0..10_050u32 {
            app.gateway.logs.submit(synthetic(i, "openai", "gpt-4o", true, 0.0, "u"));
        }
        app.flush_logs().await;
        let logs = app.logs("?per_page=1").await;
        let total = logs["result_info"]["total_count"].as_u64().unwrap();
        assert!(total <= 10_000, "{strategy}: {total}");
        let newest_kept = logs["result"][0]["event_id"] == "evt-10049";
        assert_eq!(newest_kept, expect_newest_kept, "{strategy}");
        let oldest = app.logs("?per_page=1&order_by_direction=asc").await;
        assert_eq!(oldest["result"][0]["event_id"] == "evt-0", !expect_newest_kept, "{strategy}");
    }
}

fn with_bodies(i: u32, provider: &str) -> LogEntry {
    let mut e = synthetic(i, provider, "gpt-4o", true, 0.0, "u");
    e.meta.payload = true;
    e.bodies = Some(torii::logs::record::LogBodies {
        request_headers: vec![("content-type".into(), "application/json".into())].into(),
        request_body: format!("{{\"n\":{i},\"text\":\"{}\"}}", "request words ".repeat(60 + (i % 40) as usize)).into(),
        response_headers: vec![("x-n".into(), i.to_string())].into(),
        response_body: format!("answer {i} ").repeat(50).into_bytes(),
    });
    e
}

/// How many logs have their bodies in chunks.
fn logs_with_chunked_bodies(app: &TestApp) -> u64 {
    use redb::{ReadableDatabase, ReadableTableMetadata};
    let db = app.settings().store().db().unwrap();
    let txn = db.begin_read().unwrap();
    txn.open_table(torii::store::tables::LOG_BODY_AT).unwrap().len().unwrap()
}

/// Bodies stored many logs to a chunk: each log reads back its own, after its neighbours are
/// patched or deleted (filters, `DELETE_OLDEST`), and deleted logs take theirs with them.
#[actix_web::test]
async fn stored_bodies_follow_their_logs_through_patches_and_deletions() {
    let app = spawn_app().await;
    let entries: Vec<LogEntry> =
        (0..300u32).map(|i| with_bodies(i, if i % 3 == 0 { "anthropic" } else { "openai" })).collect();
    for e in &entries {
        app.gateway.logs.submit(e.clone());
    }
    app.flush_logs().await;
    assert_eq!(logs_with_chunked_bodies(&app), 300);
    let id_of = |e: &LogEntry| uuid::Uuid::from_u128(e.meta.id).to_string();
    let check = |e: &LogEntry| {
        let got = app.settings().log_bodies("default", &id_of(e)).unwrap().unwrap();
        assert_eq!(Some(&got), e.bodies.as_ref(), "{}", e.meta.event_id);
    };
    entries.iter().for_each(check);
    let (status, _) = app.api_get(&format!("/gateways/default/logs/{}/request", id_of(&entries[4]))).await;
    assert_eq!(status, 200);

    // A patch keeps the log's bodies.
    let patched = &entries[5];
    let resp = app
        .client
        .patch(app.api(&format!("/gateways/default/logs/{}", id_of(patched))))
        .insert_header(("authorization", app.bearer()))
        .send_json(&json!({"feedback": 1}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    check(patched);

    // Deleting a third of them (every chunk loses some) leaves the rest whole.
    assert_eq!(app.delete_logs("?provider=anthropic").await, 200);
    assert_eq!(logs_with_chunked_bodies(&app), 200);
    for e in &entries {
        if &*e.meta.provider == "anthropic" {
            assert!(app.settings().log_bodies("default", &id_of(e)).is_err(), "deleted: {}", e.meta.event_id);
        } else {
            check(e);
        }
    }

    // A cap that evicts the oldest as new logs come.
    let cap = 10_000;
    assert_eq!(
        app.set_default(json!({"log_management": cap, "log_management_strategy": "DELETE_OLDEST"})).await.0,
        200
    );
    // The ten just before the insert that reaches the cap started before every other log (a
    // long request's log comes late), so the eviction it makes takes them: stored in the batch
    // that deletes them, their bodies not yet in a written chunk.
    let more: Vec<LogEntry> = (300..10_150u32)
        .map(|i| {
            let mut e = with_bodies(i, "openai");
            if (10_090..10_100).contains(&i) {
                e.meta.created_at = 1_780_000_000_000 - 10_000 + i64::from(i);
                e.meta.id = torii::logs::record::log_id(e.meta.created_at);
            }
            e
        })
        .collect();
    for e in &more {
        app.gateway.logs.submit(e.clone());
    }
    app.flush_logs().await;
    let total = app.logs("?per_page=1").await["result_info"]["total_count"].as_u64().unwrap();
    assert!(total <= cap, "{total}");
    assert_eq!(logs_with_chunked_bodies(&app), total, "every log left has its bodies, and only those");
    for e in entries.iter().chain(&more).step_by(7) {
        if let Ok(Some(got)) = app.settings().log_bodies("default", &id_of(e)) {
            assert_eq!(Some(&got), e.bodies.as_ref(), "{}", e.meta.event_id);
        }
    }
    assert!(more.last().is_some_and(|e| app.settings().log_bodies("default", &id_of(e)).is_ok()), "newest kept");
}

#[actix_web::test]
async fn a_burst_is_written_without_loss_or_counted_when_the_queue_overflows() {
    let app = spawn_app().await;
    for i in 0..20_000u32 {
        app.gateway.logs.submit(synthetic(i, "openai", "gpt-4o", true, 0.0, "u"));
    }
    app.flush_logs().await;
    assert_eq!(app.logs("?per_page=1").await["result_info"]["total_count"], 20_000);
    assert_eq!(app.gateway.logs.stats.dropped.load(std::sync::atomic::Ordering::Relaxed), 0);

    let small = spawn_app_with(|c| c.log_queue = 100).await;
    for i in 0..5_000u32 {
        small.gateway.logs.submit(synthetic(i, "openai", "gpt-4o", true, 0.0, "u"));
    }
    small.flush_logs().await;
    let stats = &small.gateway.logs.stats;
    let written = small.logs("?per_page=1").await["result_info"]["total_count"].as_u64().unwrap();
    let dropped = stats.dropped.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(written + dropped, 5_000, "every record is either written or counted as dropped");
    assert!(dropped > 0, "a 100-record queue must overflow under this burst");
    let metrics = small.client.get(small.url("/metrics")).send().await.unwrap().body().await.unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains(&format!("torii_log_records_dropped_total {dropped}")));
    // Whether the writer fell behind here depends on timing; the counter `/metrics` shows is the
    // writer's (its transitions are tested with the writer's pacer).
    let catch_ups = stats.catch_ups.load(std::sync::atomic::Ordering::Relaxed);
    assert!(metrics.contains(&format!("torii_log_writer_catch_ups_total {catch_ups}")), "{metrics}");
}

/// Retention by age: logs older than the gateway's `log_retention_days` are deleted (in chunks,
/// by the housekeeping thread; called here directly), newer ones and the analytics rollups stay.
#[actix_web::test]
async fn retention_deletes_exactly_the_old_logs_and_keeps_rollups() {
    let app = spawn_app().await;
    let day = 86_400_000i64;
    app.gateway.clock.set_ms(u64::try_from(1_780_000_000_000 + 10 * day).unwrap());
    for i in 0..12_000u32 {
        // 12,000 logs ten days old (more than one deletion chunk), then 5 from today.
        app.gateway.logs.submit(synthetic(i, "openai", "gpt-4o", true, 0.001, "u"));
    }
    for i in 0..5u32 {
        let mut fresh = synthetic(i, "openai", "gpt-4o", true, 0.001, "u");
        fresh.meta.created_at = 1_780_000_000_000 + 10 * day - 1_000 + i64::from(i);
        fresh.meta.id = torii::logs::record::log_id(fresh.meta.created_at);
        app.gateway.logs.submit(fresh);
    }
    app.flush_logs().await;
    assert_eq!(app.logs("").await["result_info"]["total_count"], 12_005);
    let gw = app.gateway.clone();
    assert_eq!(actix_web::web::block(move || gw.expire_logs()).await.unwrap(), 0, "no retention set: nothing goes");
    let (status, body) = app.set_default(json!({"log_retention_days": 7})).await;
    assert_eq!(status, 200, "{body}");
    let gw = app.gateway.clone();
    assert_eq!(actix_web::web::block(move || gw.expire_logs()).await.unwrap(), 12_000);
    assert_eq!(app.logs("").await["result_info"]["total_count"], 5);
    let start = 1_780_000_000;
    let (_, report) =
        app.api_get(&format!("/gateways/default/analytics?start={start}&end={}&bucket=day", start + 11 * 86_400)).await;
    assert_eq!(report["result"]["totals"]["requests"], 12_005, "rollups are kept: {report}");
    let (status, body) = app.set_default(json!({"log_retention_days": 0})).await;
    assert_eq!(status, 400, "{body}");
}

/// The configured `log_retention_days` applies to gateways without their own.
#[actix_web::test]
async fn the_global_retention_applies_to_gateways_without_their_own() {
    let app = spawn_app_with(|c| c.log_retention_days = 7).await;
    let day = 86_400_000i64;
    app.gateway.clock.set_ms(u64::try_from(1_780_000_000_000 + 10 * day).unwrap());
    for i in 0..3u32 {
        app.gateway.logs.submit(synthetic(i, "openai", "gpt-4o", true, 0.001, "u"));
    }
    let mut fresh = synthetic(9, "openai", "gpt-4o", true, 0.001, "u");
    fresh.meta.created_at = 1_780_000_000_000 + 10 * day - 1_000;
    fresh.meta.id = torii::logs::record::log_id(fresh.meta.created_at);
    app.gateway.logs.submit(fresh);
    app.flush_logs().await;
    let gw = app.gateway.clone();
    assert_eq!(actix_web::web::block(move || gw.expire_logs()).await.unwrap(), 3);
    assert_eq!(app.logs("").await["result_info"]["total_count"], 1);
}

/// A data-plane request counts as served from its arrival until its answer's head (the log
/// writer rests between slices only while one is): forty held at the provider are all counted.
/// Other tests in this binary serve requests at the same time, so the count is at least forty,
/// more than any of them holds at once.
#[actix_web::test]
async fn requests_count_as_served_while_they_wait_for_their_provider() {
    const HELD: usize = 40;
    let app = spawn_app().await;
    let calls = (0..HELD)
        .map(|_| {
            let client = app.client.clone();
            let url = app.gw("openai/chat/completions");
            actix_web::rt::spawn(async move {
                let mut r = client.post(url).insert_header(("x-mock", "hang:served")).send_body("{}").await.unwrap();
                (r.status().as_u16(), r.body().await.unwrap())
            })
        })
        .collect::<Vec<_>>();
    let held = || {
        let requests = app.mock.requests();
        requests.iter().filter(|r| r.headers.iter().any(|(k, v)| k == "x-mock" && v == "hang:served")).count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while held() < HELD && std::time::Instant::now() < deadline {
        let arrived = app.mock.state.new_request.notified();
        if held() < HELD {
            let _ = actix_web::rt::time::timeout(std::time::Duration::from_millis(100), arrived).await;
        }
    }
    assert_eq!(held(), HELD, "every request reached the provider");
    let counted = torii::store::pace::serving_count();
    assert!(counted >= HELD, "{counted} requests counted as served while {HELD} wait at the provider");
    for _ in 0..HELD {
        app.mock.open_gate("served");
    }
    for call in calls {
        let (status, body) = within(20, "every answer", call).await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"late"[..]));
    }
}

/// Threads that gave memory back (`torii::memory`), by name, for the test below.
static RELEASED_ON: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn record_release() {
    let name = std::thread::current().name().unwrap_or_default().to_string();
    RELEASED_ON.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(name);
}

/// After a request, once the worker and the log writer have done nothing for a whole look, each
/// gives back what the allocator keeps (`torii::memory`; in the binary `mi_collect`, here a hook
/// that records the thread). The hook is the process's, so other tests' servers release too;
/// with either thread's looks unwired no release of that kind comes at all.
#[actix_web::test]
async fn idle_worker_and_log_writer_give_memory_back() {
    torii::memory::set_release(record_release);
    let app = spawn_app().await;
    let mut r =
        app.client.post(app.gw("openai/chat/completions")).send_body(r#"{"model":"gpt-4o-mini"}"#).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.body().await.unwrap();
    app.flush_logs().await;
    RELEASED_ON.lock().unwrap().clear();
    let released = |prefix: &str| RELEASED_ON.lock().unwrap().iter().any(|name| name.starts_with(prefix));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !(released("torii-log-writer") && released("actix-rt|")) && std::time::Instant::now() < deadline {
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let names = RELEASED_ON.lock().unwrap().clone();
    assert!(released("torii-log-writer"), "the log writer gave nothing back: {names:?}");
    assert!(released("actix-rt|"), "no request worker gave anything back: {names:?}");
}
