//! `/metrics` after known traffic: exact counts by gateway, provider, model and status class,
//! tokens and cost, cache lookups, refusals by reason, and the latency histograms.

use serde_json::json;

use crate::helpers::{TestApp, body_of, spawn_app};

async fn scrape(app: &TestApp) -> String {
    app.flush_logs().await;
    let mut resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    String::from_utf8(body_of(&mut resp).await.to_vec()).unwrap()
}

/// The value of the sample whose name and labels are exactly these.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.parse().ok()))
}

async fn chat(app: &TestApp, mock: Option<&str>) -> u16 {
    let mut req = app
        .client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("authorization", "Bearer sk-test"))
        .insert_header(("cf-aig-custom-cost", r#"{"per_token_in": 0.001, "per_token_out": 0.002}"#));
    if let Some(m) = mock {
        req = req.insert_header(("x-mock", m)).insert_header(("cf-aig-skip-cache", "true"));
    }
    let mut resp =
        req.send_json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})).await.unwrap();
    let _ = body_of(&mut resp).await;
    resp.status().as_u16()
}

#[actix_web::test]
async fn metrics_count_known_traffic_by_label() {
    let app = spawn_app().await;
    assert_eq!(app.set_default(json!({"cache_ttl": 300})).await.0, 200);
    for _ in 0..3 {
        assert_eq!(chat(&app, None).await, 200);
    }
    assert_eq!(chat(&app, Some("status:500")).await, 500);
    let text = scrape(&app).await;
    let ok = r#"{gateway="default",provider="openai",model="gpt-mock",status_class="2xx"}"#;
    assert_eq!(sample(&text, &format!("torii_requests_total{ok}")), Some(3.0), "{text}");
    assert_eq!(
        sample(&text, r#"torii_cache_hits_total{gateway="default",provider="openai",model="gpt-mock"}"#),
        Some(2.0)
    );
    assert_eq!(sample(&text, r#"torii_cache_lookups_total{gateway="default",result="hit"}"#), Some(2.0));
    assert_eq!(
        sample(&text, r#"torii_cache_lookups_total{gateway="default",result="miss"}"#),
        Some(2.0),
        "a skipped lookup counts as a miss"
    );
    assert_eq!(
        sample(&text, r#"torii_tokens_in_total{gateway="default",provider="openai",model="gpt-mock"}"#),
        Some(12.0),
        "a hit spends no tokens"
    );
    assert_eq!(
        sample(&text, r#"torii_tokens_out_total{gateway="default",provider="openai",model="gpt-mock"}"#),
        Some(5.0)
    );
    let failed = r#"{gateway="default",provider="openai",model="gpt-4o-mini",status_class="5xx"}"#;
    assert_eq!(sample(&text, &format!("torii_requests_total{failed}")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &format!("torii_errors_total{failed}")), Some(1.0));
    let cost = sample(&text, r#"torii_cost_usd_total{gateway="default",provider="openai",model="gpt-mock"}"#).unwrap();
    assert!((cost - 0.022).abs() < 1e-9, "12 × 0.001 + 5 × 0.002, hits free: {cost}");
    // Two upstream answers (one 200, one 500) in the histograms; hits are not timed.
    let h = r#"gateway="default",provider="openai""#;
    assert_eq!(sample(&text, &format!("torii_request_duration_seconds_count{{{h}}}")), Some(2.0), "{text}");
    assert_eq!(sample(&text, &format!("torii_time_to_first_byte_seconds_bucket{{{h},le=\"+Inf\"}}")), Some(2.0));
    assert_eq!(sample(&text, &format!("torii_time_to_first_byte_seconds_bucket{{{h},le=\"300\"}}")), Some(2.0));

    // Refusals by reason.
    assert_eq!(app.set_default(json!({"rate_limiting_limit": 1, "rate_limiting_interval": 60})).await.0, 200);
    assert_eq!(chat(&app, None).await, 200);
    assert_eq!(chat(&app, None).await, 429);
    let text = scrape(&app).await;
    assert_eq!(sample(&text, r#"torii_refusals_total{gateway="default",reason="rate_limit"}"#), Some(1.0), "{text}");
}

/// The Grafana dashboard in the repository (served at `/static/grafana-dashboard.json`) uses
/// only metric names `/metrics` exposes.
#[actix_web::test]
async fn the_grafana_dashboard_uses_exposed_metrics() {
    let app = spawn_app().await;
    assert_eq!(chat(&app, None).await, 200);
    let text = scrape(&app).await;
    let exposed: std::collections::HashSet<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split_whitespace().next()).collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../static/grafana-dashboard.json")).unwrap();
    let mut used = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in
                expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("torii_"))
            {
                let family = ["_bucket", "_sum", "_count"].iter().fold(word, |w, s| w.strip_suffix(s).unwrap_or(w));
                assert!(exposed.contains(family), "{word} in '{}' is not exposed", panel["title"]);
                used += 1;
            }
        }
    }
    assert!(used >= 10);
    let mut resp = app.client.get(app.url("/static/grafana-dashboard.json")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", body_of(&mut resp).await);
}
