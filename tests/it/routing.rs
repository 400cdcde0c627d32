//! Dynamic routes and model aliases through the unified API: fallbacks on a model that fails,
//! a percentage split's distribution (seeded), rate and budget elements, aliases tried in turn,
//! and graphs refused by name when saved.

use serde_json::{Value, json};

use crate::helpers::{TestApp, body_of, spawn_app};

#[expect(clippy::needless_pass_by_value, reason = "test tables read better with owned values")]
fn el(id: &str, kind: &str, outputs: &[(&str, &str)], properties: Value) -> Value {
    let outputs: serde_json::Map<String, Value> =
        outputs.iter().map(|(k, v)| ((*k).to_string(), json!({"elementId": v}))).collect();
    json!({"id": id, "type": kind, "outputs": outputs, "properties": properties})
}

fn model(id: &str, provider: &str, name: &str, success: &str, fallback: Option<&str>) -> Value {
    let mut outputs = vec![("success", success)];
    if let Some(f) = fallback {
        outputs.push(("fallback", f));
    }
    el(id, "model", &outputs, json!({"provider": provider, "model": name, "timeout": 10000, "retries": 0}))
}

async fn route(app: &TestApp, name: &str, elements: Vec<Value>) -> (u16, Value) {
    app.call("POST", "/gateways/default/routes", Some(json!({"name": name, "elements": elements}))).await
}

/// A custom provider nobody listens on: a model that always fails before answering.
async fn dead_provider(app: &TestApp) {
    let (status, body) = app
        .call(
            "POST",
            "/custom-providers",
            Some(json!({"name": "dead", "slug": "dead", "base_url": "http://127.0.0.1:1/v1"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// (status, cf-aig-provider, cf-aig-model, body)
async fn ask(app: &TestApp, model: &str, metadata: Option<&str>) -> (u16, String, String, Value) {
    let mut req = app.client.post(app.gw("compat/chat/completions")).insert_header(("authorization", "Bearer sk-test"));
    if let Some(m) = metadata {
        req = req.insert_header(("cf-aig-metadata", m));
    }
    let mut resp =
        req.send_json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})).await.unwrap();
    let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (provider, model) = (header("cf-aig-provider"), header("cf-aig-model"));
    let body = serde_json::from_slice(&body_of(&mut resp).await).unwrap_or(Value::Null);
    (resp.status().as_u16(), provider, model, body)
}

#[actix_web::test]
async fn a_failing_model_falls_back_and_the_answer_names_who_answered() {
    let app = spawn_app().await;
    dead_provider(&app).await;
    let elements = vec![
        el("s", "start", &[("next", "primary")], Value::Null),
        model("primary", "custom-dead", "m", "e", Some("backup")),
        model("backup", "openai", "gpt-4o-mini", "e", None),
        el("e", "end", &[], Value::Null),
    ];
    let (status, body) = route(&app, "resilient", elements).await;
    assert_eq!(status, 200, "{body}");
    let (status, provider, model, body) = ask(&app, "dynamic/resilient", None).await;
    assert_eq!((status, provider.as_str(), model.as_str()), (200, "openai", "gpt-4o-mini"), "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from mock OpenAI");
    let (status, _, _, body) = ask(&app, "dynamic/nope", None).await;
    assert_eq!(status, 404, "{body}");
}

/// 70/30 over 400 requests with a seeded dice: within a few points of the weights.
#[actix_web::test]
async fn a_percentage_split_follows_its_weights() {
    let app = spawn_app().await;
    app.gateway.dice.seed(7);
    let elements = vec![
        el("s", "start", &[("next", "split")], Value::Null),
        el("split", "percentage", &[("70%", "a"), ("30%", "b")], Value::Null),
        model("a", "openai", "gpt-4o-mini", "e", None),
        model("b", "openai", "gpt-4o", "e", None),
        el("e", "end", &[], Value::Null),
    ];
    assert_eq!(route(&app, "ab", elements).await.0, 200);
    let mut to_a = 0;
    for _ in 0..400 {
        let (status, _, model, _) = ask(&app, "dynamic/ab", None).await;
        assert_eq!(status, 200);
        to_a += usize::from(model == "gpt-4o-mini");
    }
    assert!((250..=310).contains(&to_a), "{to_a} of 400 went to the 70% branch");
}

#[actix_web::test]
async fn rate_and_budget_elements_send_the_overflow_to_their_fallback() {
    let app = spawn_app().await;
    let elements = vec![
        el("s", "start", &[("next", "quota")], Value::Null),
        el(
            "quota",
            "rate",
            &[("success", "big"), ("fallback", "small")],
            json!({"limitType": "count", "key": "metadata.user", "limit": 2, "window": 3600}),
        ),
        model("big", "openai", "gpt-4o", "e", None),
        model("small", "openai", "gpt-4o-mini", "e", None),
        el("e", "end", &[], Value::Null),
    ];
    assert_eq!(route(&app, "quota", elements).await.0, 200);
    let alice = Some(r#"{"user":"alice"}"#);
    let models: Vec<String> = futures_util::future::join_all((0..3).map(|_| ask(&app, "dynamic/quota", alice)))
        .await
        .into_iter()
        .map(|(_, _, m, _)| m)
        .collect();
    assert_eq!(models.iter().filter(|m| *m == "gpt-4o").count(), 2, "{models:?}");
    assert_eq!(models.iter().filter(|m| *m == "gpt-4o-mini").count(), 1, "{models:?}");
    assert_eq!(ask(&app, "dynamic/quota", Some(r#"{"user":"bob"}"#)).await.2, "gpt-4o", "bob has his own counter");

    // A budget element: once its key has spent its limit, the fallback answers.
    let elements = vec![
        el("s", "start", &[("next", "budget")], Value::Null),
        el(
            "budget",
            "rate",
            &[("success", "big"), ("fallback", "small")],
            json!({"limitType": "cost", "key": "", "limit": 0.000_01, "window": 3600}),
        ),
        model("big", "openai", "gpt-4o", "e", None),
        model("small", "openai", "gpt-4o-mini", "e", None),
        el("e", "end", &[], Value::Null),
    ];
    assert_eq!(route(&app, "budget", elements).await.0, 200);
    assert_eq!(ask(&app, "dynamic/budget", None).await.2, "gpt-4o", "nothing spent yet");
    app.flush_logs().await;
    assert_eq!(ask(&app, "dynamic/budget", None).await.2, "gpt-4o-mini", "gpt-4o's answer used the budget up");
}

#[actix_web::test]
async fn an_alias_tries_its_models_in_turn() {
    let app = spawn_app().await;
    dead_provider(&app).await;
    let (status, body) = app
        .call(
            "POST",
            "/gateways/default/aliases",
            Some(json!({"name": "support-fast", "models": ["custom-dead/m", "anthropic/claude-sonnet-4-5"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, provider, model, body) = ask(&app, "custom/support-fast", None).await;
    assert_eq!((status, provider.as_str(), model.as_str()), (200, "anthropic", "claude-sonnet-4-5"), "{body}");
    let (status, body) =
        app.call("PUT", "/gateways/default/aliases/only-dead", Some(json!({"models": ["custom-dead/m"]}))).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _, body) = ask(&app, "custom/only-dead", None).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.to_string().contains("custom-dead/m"), "{body}");
    let (status, body) = app.call("PUT", "/gateways/default/aliases/bad", Some(json!({"models": ["gpt-4o"]}))).await;
    assert_eq!(status, 400);
    assert!(body.to_string().contains("models[0]"), "{body}");
    assert_eq!(app.call("GET", "/gateways/default/aliases", None).await.1["result"].as_array().unwrap().len(), 2);
}

#[actix_web::test]
async fn broken_graphs_are_refused_naming_the_element() {
    let app = spawn_app().await;
    let (status, body) = route(
        &app,
        "broken",
        vec![
            el("s", "start", &[("next", "m")], Value::Null),
            model("m", "openai", "gpt-4o-mini", "nowhere", None),
            el("e", "end", &[], Value::Null),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("element m"), "{body}");
    let (status, body) = route(
        &app,
        "loop",
        vec![
            el("s", "start", &[("next", "a")], Value::Null),
            model("a", "openai", "gpt-4o-mini", "e", Some("b")),
            model("b", "openai", "gpt-4o", "e", Some("a")),
            el("e", "end", &[], Value::Null),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.to_string().contains("cycle"), "{body}");
    assert!(app.call("GET", "/gateways/default/routes", None).await.1["data"]["routes"].as_array().unwrap().is_empty());
}

/// A universal request's compat step may name a route: it is walked in its turn, and when it
/// ends without an answer the next universal step runs.
#[actix_web::test]
async fn universal_steps_call_routes_and_fall_through_them() {
    let app = spawn_app().await;
    dead_provider(&app).await;
    let elements = vec![
        el("s", "start", &[("next", "only")], Value::Null),
        model("only", "custom-dead", "m", "e", None),
        el("e", "end", &[], Value::Null),
    ];
    assert_eq!(route(&app, "dead-end", elements).await.0, 200);
    let message = json!([{"role": "user", "content": "hi"}]);
    let steps = json!([
        {"provider": "compat", "endpoint": "chat/completions", "headers": {"authorization": "Bearer sk-test"},
         "query": {"model": "dynamic/dead-end", "messages": message}},
        {"provider": "compat", "endpoint": "chat/completions", "headers": {"authorization": "Bearer sk-test"},
         "query": {"model": "custom/pair", "messages": message}},
    ]);
    let (status, body) = app
        .call("PUT", "/gateways/default/aliases/pair", Some(json!({"models": ["custom-dead/m", "openai/gpt-4o-mini"]})))
        .await;
    assert_eq!(status, 200, "{body}");
    let mut resp = app.client.post(app.url("/v1/local/default")).send_json(&steps).await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", body_of(&mut resp).await);
    assert_eq!(resp.headers().get("cf-aig-step").unwrap(), "1");
    assert_eq!(resp.headers().get("cf-aig-provider").unwrap(), "openai");
}
