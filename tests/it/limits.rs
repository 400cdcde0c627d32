//! Rate limits through the running server: gateway-wide fixed and sliding windows, per-token
//! limits, 429 with code 2003 and `Retry-After`, nothing forwarded, the refusal logged.

use serde_json::json;
use torii::store::Scope;

use crate::helpers::{json_of, spawn_app};

/// Half past an hour (ms; hour 494,445 since the epoch): a fixed window of an hour has 30 minutes left.
const HALF_PAST: u64 = 494_445 * 3_600_000 + 1_800_000;

#[actix_web::test]
async fn gateway_limit_refuses_with_2003_and_retry_after() {
    for technique in ["fixed", "sliding"] {
        let app = spawn_app().await;
        app.gateway.clock.set_ms(HALF_PAST);
        let limits =
            json!({"rate_limiting_limit": 3, "rate_limiting_interval": 3600, "rate_limiting_technique": technique});
        assert_eq!(app.set_default(limits).await.0, 200);
        for _ in 0..3 {
            assert_eq!(app.client.post(app.gw("openai/chat/completions")).send_body("{}").await.unwrap().status(), 200);
        }
        let mut resp = app.client.post(app.gw("openai/chat/completions")).send_body("{}").await.unwrap();
        assert_eq!(resp.status(), 429, "{technique}");
        let retry: u64 = resp.headers().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
        // Fixed: until the top of the hour. Sliding: until the first of the three leaves the window.
        assert_eq!(retry, if technique == "fixed" { 1800 } else { 3600 }, "{technique}");
        let body = json_of(&mut resp).await;
        assert_eq!(body["error"][0]["code"], 2003);
        // The universal endpoint shares the gateway's window.
        let steps = json!([{"provider": "openai", "endpoint": "chat/completions", "query": {}}]);
        assert_eq!(app.client.post(app.url("/v1/local/default")).send_json(&steps).await.unwrap().status(), 429);
        assert_eq!(app.mock.requests().len(), 3, "refused requests never reach the provider");
        app.flush_logs().await;
        let logs = app.logs("?filters[0][key]=status_code&filters[0][operator]=eq&filters[0][value][0]=429").await;
        assert_eq!(logs["result_info"]["total_count"], 2, "{technique}: refused requests are logged");
        // One second before the Retry-After runs out, still refused; at it, admitted again.
        app.gateway.clock.advance_ms(retry * 1000 - 1000);
        assert_eq!(app.client.post(app.gw("openai/chat/completions")).send_body("{}").await.unwrap().status(), 429);
        app.gateway.clock.advance_ms(1000);
        assert_eq!(app.client.post(app.gw("openai/chat/completions")).send_body("{}").await.unwrap().status(), 200);
    }
}

#[actix_web::test]
async fn tokens_carry_their_own_limit() {
    let app = spawn_app().await;
    assert_eq!(app.set_default(json!({"authentication": true})).await.0, 200);
    let make = |limit: Option<(u64, u64)>| format!("Bearer {}", app.token(&[Scope::Run], &[], limit));
    let limited = make(Some((2, 60)));
    let free = make(None);
    let call = |token: String| {
        app.client
            .post(app.gw("openai/chat/completions"))
            .insert_header(("cf-aig-authorization", token))
            .send_body("{}")
    };
    assert_eq!(call(limited.clone()).await.unwrap().status(), 200);
    assert_eq!(call(limited.clone()).await.unwrap().status(), 200);
    let mut resp = call(limited.clone()).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(json_of(&mut resp).await["error"][0]["code"], 2003);
    for _ in 0..5 {
        assert_eq!(call(free.clone()).await.unwrap().status(), 200, "other tokens are not limited");
    }
    assert_eq!(app.mock.requests().len(), 7);
}

/// A request refused by its token's own limit uses up none of the gateway's window: one token
/// over its limit cannot lock the others out.
#[actix_web::test]
async fn a_token_over_its_limit_does_not_use_up_the_gateway_limit() {
    let app = spawn_app().await;
    app.gateway.clock.set_ms(HALF_PAST);
    let limits = json!({"authentication": true, "rate_limiting_limit": 4, "rate_limiting_interval": 3600});
    assert_eq!(app.set_default(limits).await.0, 200);
    let make = |limit: Option<(u64, u64)>| format!("Bearer {}", app.token(&[Scope::Run], &[], limit));
    let (greedy, other) = (make(Some((1, 3600))), make(None));
    let call = |token: &str| {
        app.client
            .post(app.gw("openai/chat/completions"))
            .insert_header(("cf-aig-authorization", token.to_string()))
            .send_body("{}")
    };
    assert_eq!(call(&greedy).await.unwrap().status(), 200);
    for _ in 0..10 {
        assert_eq!(call(&greedy).await.unwrap().status(), 429);
    }
    for i in 0..3 {
        assert_eq!(call(&other).await.unwrap().status(), 200, "request {i} of the other token");
    }
    assert_eq!(call(&other).await.unwrap().status(), 429, "the gateway's own limit of 4 holds");
}
