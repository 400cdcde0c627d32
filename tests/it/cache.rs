//! The response cache through the running server.

use serde_json::json;

use crate::helpers::{TestApp, body_of, json_of, spawn_app, within};

async fn ask(app: &TestApp, headers: &[(&str, &str)], body: &str) -> (u16, Option<String>, bytes::Bytes) {
    let mut req = app.client.post(app.gw("openai/chat/completions")).insert_header(("authorization", "Bearer sk-a"));
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut resp = req.send_body(body.to_string()).await.unwrap();
    let status = resp.headers().get("cf-aig-cache-status").map(|v| v.to_str().unwrap().to_string());
    (resp.status().as_u16(), status, body_of(&mut resp).await)
}

#[actix_web::test]
async fn off_by_default_then_miss_then_hit_with_savings() {
    let app = spawn_app().await;
    let (_, status, _) = ask(&app, &[], "{}").await;
    assert_eq!(status, None, "no caching unless configured");
    assert_eq!(app.set_default(json!({"cache_ttl": 300})).await.0, 200);
    let (_, first, a) = ask(&app, &[], "{\"q\":1}").await;
    let (_, second, b) = ask(&app, &[], "{\"q\":1}").await;
    assert_eq!((first.as_deref(), second.as_deref()), (Some("MISS"), Some("HIT")));
    assert_eq!(a, b);
    assert_eq!(app.mock.requests().len(), 2, "the HIT touched no upstream");
    let (_, stats) = {
        let mut r = app
            .client
            .get(app.api("/gateways/default/cache"))
            .insert_header(("authorization", app.bearer()))
            .send()
            .await
            .unwrap();
        (r.status(), json_of(&mut r).await)
    };
    let s = &stats["result"];
    assert_eq!((s["entries"].clone(), s["hits"].clone(), s["misses"].clone()), (json!(1), json!(1), json!(1)));
    assert_eq!((s["tokens_saved_in"].clone(), s["tokens_saved_out"].clone()), (json!(12), json!(5)));
    assert_eq!(s["hit_ratio"], 0.5);
    app.flush_logs().await;
    let hits = app.logs("?cached=true").await;
    assert_eq!(hits["result_info"]["total_count"], 1);
    assert_eq!((hits["result"][0]["tokens_in"].clone(), hits["result"][0]["cost"].clone()), (json!(0), json!(0.0)));
    let misses = app.logs("?cached=false&per_page=1").await;
    assert_eq!(hits["result"][0]["model"], misses["result"][0]["model"], "the HIT names the answer's model");
}

#[actix_web::test]
async fn request_headers_keys_skip_and_isolation() {
    let app = spawn_app().await;
    let ttl = ("cf-aig-cache-ttl", "120");
    assert_eq!(ask(&app, &[ttl], "{}").await.1.as_deref(), Some("MISS"));
    assert_eq!(ask(&app, &[ttl], "{}").await.1.as_deref(), Some("HIT"));
    assert_eq!(ask(&app, &[ttl, ("cf-aig-skip-cache", "true")], "{}").await.1.as_deref(), Some("MISS"));
    // Like Cloudflare: below the 60 s minimum means the minimum; 0 means no caching; `1` is true.
    assert_eq!(ask(&app, &[("cf-aig-cache-ttl", "10")], r#"{"ttl":10}"#).await.1.as_deref(), Some("MISS"));
    assert_eq!(ask(&app, &[("cf-aig-cache-ttl", "10")], r#"{"ttl":10}"#).await.1.as_deref(), Some("HIT"));
    assert_eq!(ask(&app, &[("cf-aig-cache-ttl", "0")], r#"{"ttl":0}"#).await.1, None);
    assert_eq!(ask(&app, &[ttl, ("cf-aig-skip-cache", "1")], "{}").await.1.as_deref(), Some("MISS"));
    assert_eq!(ask(&app, &[("cf-aig-cache-ttl", "2678401")], "{}").await.0, 400, "above a month");
    // Another provider key never sees this answer.
    let mut other = app
        .client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("authorization", "Bearer sk-b"))
        .insert_header(ttl)
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(other.headers().get("cf-aig-cache-status").unwrap(), "MISS");
    body_of(&mut other).await;
    // A custom key replaces the derived one, whatever the body; purge removes it.
    let key = ("cf-aig-cache-key", "greeting");
    assert_eq!(ask(&app, &[key], "{\"a\":1}").await.1.as_deref(), Some("MISS"));
    assert_eq!(ask(&app, &[key], "{\"b\":2}").await.1.as_deref(), Some("HIT"));
    let resp = app
        .client
        .delete(app.api("/gateways/default/cache?key=greeting"))
        .insert_header(("authorization", app.bearer()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(ask(&app, &[key], "{\"b\":2}").await.1.as_deref(), Some("MISS"));
    // Errors are never cached.
    let fail = [ttl, ("x-mock", "status:500")];
    assert_eq!(ask(&app, &fail, "{\"e\":1}").await.0, 500);
    assert_eq!(ask(&app, &fail, "{\"e\":1}").await.1.as_deref(), Some("MISS"));
}

#[actix_web::test]
async fn streams_are_stored_and_replayed() {
    let app = spawn_app().await;
    assert_eq!(app.set_default(json!({"cache_ttl": 300})).await.0, 200);
    let call = || {
        app.client
            .post(app.gw("anthropic/v1/messages"))
            .insert_header(("x-api-key", "k"))
            .send_body(r#"{"stream":true}"#)
    };
    let mut first = call().await.unwrap();
    let first_body = body_of(&mut first).await;
    let mut second = call().await.unwrap();
    assert_eq!(second.headers().get("cf-aig-cache-status").unwrap(), "HIT");
    assert_eq!(second.headers().get("content-type").unwrap(), "text/event-stream");
    assert_eq!(body_of(&mut second).await, first_body, "the same events");
    assert_eq!(app.mock.requests().len(), 1);
}

#[actix_web::test]
async fn identical_requests_in_flight_share_one_upstream_call() {
    let app = spawn_app().await;
    assert_eq!(app.set_default(json!({"cache_ttl": 300})).await.0, 200);
    let arrived = app.mock.state.new_request.notified();
    let mut calls = Vec::new();
    for _ in 0..10 {
        let client = app.client.clone();
        let url = app.gw("openai/chat/completions");
        calls.push(actix_web::rt::spawn(async move {
            let mut r = client.post(url).insert_header(("x-mock", "hang:flight")).send_body("{}").await.unwrap();
            (r.status().as_u16(), r.body().await.unwrap())
        }));
    }
    within(10, "the leader's upstream call", arrived).await;
    app.mock.open_gate("flight");
    for call in calls {
        let (status, body) = within(20, "every response", call).await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"late"[..]));
    }
    assert_eq!(app.mock.requests().len(), 1, "exactly one upstream call for ten identical requests");
}

#[actix_web::test]
async fn settings_changes_purge_when_asked() {
    let app = spawn_app().await;
    assert_eq!(app.set_default(json!({"cache_ttl": 300, "cache_invalidate_on_update": true})).await.0, 200);
    ask(&app, &[], "{}").await;
    assert_eq!(ask(&app, &[], "{}").await.1.as_deref(), Some("HIT"));
    assert_eq!(app.set_default(json!({"cache_ttl": 600, "cache_invalidate_on_update": true})).await.0, 200);
    assert_eq!(ask(&app, &[], "{}").await.1.as_deref(), Some("MISS"), "purged by the update");
    let resp = app
        .client
        .delete(app.api("/gateways/default/cache"))
        .insert_header(("authorization", app.bearer()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(ask(&app, &[], "{}").await.1.as_deref(), Some("MISS"), "purged by the API");
}

#[actix_web::test]
async fn universal_steps_are_cached_by_their_own_headers() {
    let app = spawn_app().await;
    let steps = json!([
        {"provider": "workers-ai", "endpoint": "@cf/x", "headers": {"Authorization": "Bearer invalid"}, "query": {}},
        {"provider": "openai", "endpoint": "chat/completions", "headers": {"Authorization": "Bearer ok", "cf-aig-cache-ttl": "300"}, "query": {"q": 1}}
    ]);
    let call = || app.client.post(app.url("/v1/local/default")).send_json(&steps);
    let mut first = call().await.unwrap();
    let heads = |r: &awc::ClientResponse| {
        let h = |n: &str| r.headers().get(n).unwrap().to_str().unwrap().to_string();
        (h("cf-aig-cache-status"), h("cf-aig-step"))
    };
    assert_eq!(heads(&first), ("MISS".to_string(), "1".to_string()));
    let a = body_of(&mut first).await;
    let mut second = call().await.unwrap();
    assert_eq!(heads(&second), ("HIT".to_string(), "1".to_string()));
    assert_eq!(body_of(&mut second).await, a);
    let openai = app.mock.requests().iter().filter(|r| r.uri.starts_with("/openai/")).count();
    assert_eq!(openai, 1, "step 1's answer came from the cache the second time");
}
