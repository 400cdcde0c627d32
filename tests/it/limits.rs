//! Rate limits through the running server: gateway-wide fixed and sliding windows, per-token
//! limits, 429 with code 2003 and `Retry-After`, nothing forwarded, the refusal logged.

use serde_json::{Value, json};
use torii::auth::{self, NewToken};
use torii::store::Scope;

use crate::helpers::{TestApp, json_of, spawn_app};

async fn set_default(app: &TestApp, extra: Value) {
    let mut body = json!({"cache_invalidate_on_update": false, "cache_ttl": 0, "collect_logs": true,
        "rate_limiting_interval": 0, "rate_limiting_limit": 0});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let resp = app
        .client
        .put(app.api("/gateways/default"))
        .insert_header(("authorization", app.bearer()))
        .send_json(&body)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[actix_web::test]
async fn gateway_limit_refuses_with_2003_and_retry_after() {
    for technique in ["fixed", "sliding"] {
        let app = spawn_app().await;
        set_default(
            &app,
            json!({"rate_limiting_limit": 3, "rate_limiting_interval": 3600, "rate_limiting_technique": technique}),
        )
        .await;
        for _ in 0..3 {
            assert_eq!(app.client.post(app.gw("openai/chat/completions")).send_body("{}").await.unwrap().status(), 200);
        }
        let mut resp = app.client.post(app.gw("openai/chat/completions")).send_body("{}").await.unwrap();
        assert_eq!(resp.status(), 429, "{technique}");
        let retry: u64 = resp.headers().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
        assert!((1..=3600).contains(&retry), "{technique}: {retry}");
        let body = json_of(&mut resp).await;
        assert_eq!(body["error"][0]["code"], 2003);
        // The universal endpoint shares the gateway's window.
        let steps = json!([{"provider": "openai", "endpoint": "chat/completions", "query": {}}]);
        assert_eq!(app.client.post(app.url("/v1/local/default")).send_json(&steps).await.unwrap().status(), 429);
        assert_eq!(app.mock.requests().len(), 3, "refused requests never reach the provider");
        app.flush_logs().await;
        let logs = app.logs("?filters[0][key]=status_code&filters[0][operator]=eq&filters[0][value][0]=429").await;
        assert_eq!(logs["result_info"]["total_count"], 2, "{technique}: refused requests are logged");
    }
}

#[actix_web::test]
async fn tokens_carry_their_own_limit() {
    let app = spawn_app().await;
    set_default(&app, json!({"authentication": true})).await;
    let make = |limit: Option<(u64, u64)>| {
        let settings = app.settings();
        let new = NewToken {
            name: "t".into(),
            scopes: vec![Scope::Run],
            gateways: vec![],
            expires_at: None,
            rate_limit: limit,
        };
        let (secret, _) = auth::create_token(settings.store(), new).unwrap();
        settings.reload().unwrap();
        format!("Bearer {secret}")
    };
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
