//! Spend limits and token budgets: refused before forwarding (429, code 2045), never overspent
//! under concurrency, split and filtered as configured, kept across a restart; token allow-lists.

use serde_json::{Value, json};

use crate::helpers::{TestApp, body_of, json_of, spawn_app};

/// USD per token that makes the arithmetic visible: a mock answer (5 in, 5 out) costs
/// 5 × 0.0001 + 5 × 0.01 = $0.0505.
const CUSTOM_COST: &str = r#"{"per_token_in": 0.0001, "per_token_out": 0.01}"#;
pub(crate) const ANSWER_COST: f64 = 0.0505;

pub(crate) async fn ask(app: &TestApp, token: Option<&str>, metadata: Option<&str>, max_tokens: u64) -> (u16, Value) {
    let body =
        json!({"model": "gpt-4o-mini", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]});
    let mut req = app
        .client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("authorization", "Bearer sk-test"))
        .insert_header(("x-mock", "say"))
        .insert_header(("x-mock-say", "ok"))
        .insert_header(("cf-aig-custom-cost", CUSTOM_COST));
    if let Some(t) = token {
        req = req.insert_header(("cf-aig-authorization", format!("Bearer {t}")));
    }
    if let Some(m) = metadata {
        req = req.insert_header(("cf-aig-metadata", m));
    }
    let mut resp = req.send_json(&body).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = body_of(&mut resp).await;
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

pub(crate) fn forwarded(app: &TestApp) -> usize {
    app.mock.requests().iter().filter(|r| r.uri.contains("/openai/")).count()
}

#[actix_web::test]
async fn a_zero_spend_limit_refuses_before_forwarding_and_is_logged() {
    let app = spawn_app().await;
    let limits = json!({"enabled": true, "rules": [{"id": "none", "limitType": "cost", "limit": 0, "window": 3600}]});
    assert_eq!(app.set_default(json!({"spend_limits": limits})).await.0, 200);
    let (status, body) = ask(&app, None, None, 5).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"][0]["code"], 2045);
    let message = body["error"][0]["message"].as_str().unwrap();
    assert!(message.starts_with("Spend limit exceeded: rule 'none' (cost limit 0 per 3600s, fixed)"), "{message}");
    assert_eq!(forwarded(&app), 0);
    app.flush_logs().await;
    let logs = app.logs("").await;
    assert_eq!(logs["result"][0]["status_code"], 429);
    // A model without a known price (and no custom cost) is not counted, as on Cloudflare.
    let mut resp = app
        .client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("authorization", "Bearer sk-test"))
        .send_json(&json!({"model": "unpriced-model", "messages": []}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", body_of(&mut resp).await);
}

/// 50 requests at once against a $1 limit: the worst case of each is reserved before it is
/// forwarded, so the provider is never asked for more than $1 of answers.
#[actix_web::test]
async fn fifty_concurrent_requests_never_spend_more_than_the_limit() {
    let app = spawn_app().await;
    let limits =
        json!({"rules": [{"id": "dollar", "limitType": "cost", "limit": 1, "window": 86400, "technique": "sliding"}]});
    assert_eq!(app.set_default(json!({"spend_limits": limits})).await.0, 200);
    let calls = (0..50).map(|_| ask(&app, None, None, 5));
    let answers = futures_util::future::join_all(calls).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let refused = answers.iter().filter(|(s, b)| *s == 429 && b["error"][0]["code"] == 2045).count();
    assert_eq!(ok + refused, 50, "{answers:?}");
    assert_eq!(forwarded(&app), ok, "every refusal was decided before forwarding");
    #[expect(clippy::cast_precision_loss, reason = "a small count")]
    let spent = ok as f64 * ANSWER_COST;
    assert!(spent <= 1.0 + 1e-9, "{ok} answers cost ${spent}");
    assert!(ok >= 10, "settling to the real cost lets most of the dollar be used: {ok}");
    eprintln!("{ok} of 50 concurrent requests forwarded, ${spent:.4} of $1 spent");
    app.flush_logs().await;
    let logs = app.logs("?per_page=100").await;
    let logged: f64 = logs["result"].as_array().unwrap().iter().filter_map(|l| l["cost"].as_f64()).sum();
    assert!(logged <= 1.0 + 1e-9, "the logs' cost {logged}");
}

#[actix_web::test]
async fn rules_split_by_metadata_and_filter_by_provider() {
    let app = spawn_app().await;
    let limits = json!({"rules": [
        {"id": "per-user", "limitType": "cost", "limit": 0.1, "window": 3600, "metadata": {"user": {"mode": "partition"}}},
        {"id": "anthropic-only", "limitType": "cost", "limit": 0, "window": 3600, "provider": {"mode": "filter", "values": ["anthropic"]}}]});
    assert_eq!(app.set_default(json!({"spend_limits": limits})).await.0, 200);
    let alice = Some(r#"{"user":"alice"}"#);
    assert_eq!(ask(&app, None, alice, 5).await.0, 200, "the anthropic rule does not apply to openai");
    let (status, body) = ask(&app, None, alice, 5).await;
    assert_eq!(status, 429, "alice's $0.0505 + the next worst case exceed $0.1: {body}");
    assert!(body["error"][0]["message"].as_str().unwrap().contains("per-user"));
    assert_eq!(ask(&app, None, Some(r#"{"user":"bob"}"#), 5).await.0, 200, "bob has his own bucket");
}

#[actix_web::test]
async fn token_budgets_rates_and_allow_lists() {
    let app = spawn_app().await;
    assert_eq!(app.set_default(json!({"authentication": true})).await.0, 200);
    let (status, body) = app
        .call(
            "POST",
            "/tokens",
            Some(json!({"name": "team-a", "scopes": ["run"], "budget_usd": 0.1, "budget_period": 3600,
                "allowed_providers": ["openai"], "allowed_models": ["openai/gpt-4o*"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["budget_usd"], 0.1);
    let secret = body["result"]["value"].as_str().unwrap().to_string();
    assert_eq!(ask(&app, Some(&secret), None, 5).await.0, 200);
    let (status, body) = ask(&app, Some(&secret), None, 5).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["error"][0]["message"].as_str().unwrap().contains("budget"), "{body}");

    let (_, body) = app
        .call("POST", "/tokens", Some(json!({"name": "narrow", "scopes": ["run"], "allowed_models": ["gpt-3.5*"]})))
        .await;
    let narrow = body["result"]["value"].as_str().unwrap().to_string();
    let (status, body) = ask(&app, Some(&narrow), None, 5).await;
    assert_eq!((status, body["error"][0]["code"].clone()), (403, json!(2046)), "{body}");
    let mut resp = app
        .client
        .post(app.gw("anthropic/v1/messages"))
        .insert_header(("cf-aig-authorization", format!("Bearer {secret}")))
        .insert_header(("x-api-key", "sk-ant"))
        .send_json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "{}", json_of(&mut resp).await);

    let (_, body) =
        app.call("POST", "/tokens", Some(json!({"name": "tpm", "scopes": ["run"], "tokens_per_minute": 200}))).await;
    let tpm = body["result"]["value"].as_str().unwrap().to_string();
    let (status, body) = ask(&app, Some(&tpm), None, 500).await;
    assert_eq!(status, 429, "500 output tokens cannot fit in 200 per minute: {body}");
    assert_eq!(ask(&app, Some(&tpm), None, 5).await.0, 200);

    let (status, body) =
        app.call("POST", "/tokens", Some(json!({"name": "x", "scopes": ["run"], "budget_period": 600}))).await;
    assert_eq!(status, 400);
    assert!(body.to_string().contains("budget_period"), "{body}");
}

#[actix_web::test]
async fn spend_limit_settings_are_checked_by_name() {
    let app = spawn_app().await;
    for (limits, field) in [
        (json!({"rules": [{"limitType": "cost", "limit": 1}]}), "spend_limits.rules[0].window"),
        (
            json!({"rules": [{"limitType": "cost", "limit": 1, "window": 60, "technique": "calendar"}]}),
            "spend_limits.rules[0].technique",
        ),
        (
            json!({"rules": [{"limitType": "cost", "limit": 1, "window": 60, "metadata": {"u": {"mode": "filter"}}}]}),
            "spend_limits.rules[0].metadata.u.values",
        ),
        (json!({"budget": 5}), "spend_limits.budget"),
    ] {
        let (status, body) = app.set_default(json!({"spend_limits": limits})).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.to_string().contains(field), "{field}: {body}");
    }
}

/// The spend so far survives a restart: written at shutdown (and every 30 s), read at start.
#[actix_web::test]
async fn a_restart_keeps_the_spend_so_far() {
    use crate::cli::{serve, sigterm, torii, wait_exit};
    let mock = crate::mock::start();
    let dir = tempfile::tempdir().unwrap();
    let out = torii(dir.path()).args(["token", "create", "--name", "a", "--scope", "edit"]).output().unwrap();
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let envs = [("TORII_PROVIDERS__OPENAI__BASE_URL", mock.url())];
    let client = awc::Client::default();
    let limits = json!({"rules": [{"id": "r", "limitType": "cost", "limit": 0.1, "window": 86400}]});
    let body = json!({"cache_invalidate_on_update": false, "cache_ttl": 0, "collect_logs": true,
        "rate_limiting_interval": 0, "rate_limiting_limit": 0, "spend_limits": limits});
    let request = json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let ask = |addr: String| {
        let client = client.clone();
        let request = request.clone();
        async move {
            client
                .post(format!("http://{addr}/v1/local/default/openai/chat/completions"))
                .insert_header(("x-mock", "say"))
                .insert_header(("x-mock-say", "ok"))
                .insert_header(("cf-aig-custom-cost", CUSTOM_COST))
                .send_json(&request)
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let mut first = serve(dir.path(), &envs);
    let resp = client
        .put(format!("http://{}/client/v4/accounts/local/ai-gateway/gateways/default", first.addr))
        .insert_header(("authorization", format!("Bearer {admin}")))
        .send_json(&body)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(ask(first.addr.clone()).await, 200);
    sigterm(&first.child);
    assert!(wait_exit(&mut first.child, 30).success());
    let second = serve(dir.path(), &envs);
    assert_eq!(ask(second.addr.clone()).await, 429, "$0.0505 spent before the restart still counts");
}

/// `spend.default_max_output_tokens` is the output a request without `max_tokens` is assumed to
/// produce: 4,096 by default cannot fit a 1,000 tokens-per-minute token, 100 can.
#[actix_web::test]
async fn the_default_output_cap_sizes_requests_without_max_tokens() {
    for (cap, expected) in [(None, 429), (Some(100), 200)] {
        let app = crate::helpers::spawn_app_with(|c| {
            if let Some(cap) = cap {
                c.spend.default_max_output_tokens = cap;
            }
        })
        .await;
        assert_eq!(app.set_default(json!({"authentication": true})).await.0, 200);
        let (_, body) =
            app.call("POST", "/tokens", Some(json!({"name": "t", "scopes": ["run"], "tokens_per_minute": 1000}))).await;
        let secret = body["result"]["value"].as_str().unwrap().to_string();
        let resp = app
            .client
            .post(app.gw("openai/chat/completions"))
            .insert_header(("authorization", "Bearer sk-test"))
            .insert_header(("cf-aig-authorization", format!("Bearer {secret}")))
            .send_json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), expected, "cap {cap:?}");
    }
}
