//! The unified API's refusals: every one a 400 in the gateway envelope naming what is wrong,
//! and nothing sent upstream.

use serde_json::json;

use crate::helpers::{json_of, spawn_app};

#[actix_web::test]
async fn bad_unified_requests_are_400_and_nothing_is_sent() {
    let app = spawn_app().await;
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let bad_tool = json!([{"type": "function", "function": {"name": "f", "parameters": "not a schema"}}]);
    let cases = [
        (json!({"model": "gpt-4o-mini", "messages": msgs}), 2019, "names no provider"),
        (json!({"model": "nope/x", "messages": msgs}), 2008, "nope"),
        (json!({"messages": msgs}), 2002, "model"),
        (
            json!({"model": "anthropic/claude", "messages": msgs, "response_format": {"type": "json_object"}}),
            2002,
            "response_format",
        ),
        (json!({"model": "anthropic/claude", "messages": msgs, "n": 2}), 2002, "n:"),
        (json!({"model": "anthropic/claude", "messages": msgs, "logprobs": true}), 2002, "logprobs"),
        (json!({"model": "google-ai-studio/gemini", "messages": msgs, "logit_bias": {"1": 2}}), 2002, "logit_bias"),
        (json!({"model": "openai/gpt", "messages": msgs, "tools": bad_tool}), 2002, "tools[0].function.parameters"),
        (json!({"model": "openai/gpt", "messages": [{"role": "wizard", "content": "x"}]}), 2002, "messages[0].role"),
        (json!({"model": "aws-bedrock/anthropic.claude", "messages": msgs}), 2002, "aws-bedrock/{region}/{model id}"),
        (
            json!({"model": "google-vertex-ai/gemini", "messages": msgs}),
            2002,
            "google-vertex-ai/{project}/{region}/{model}",
        ),
        (
            json!({"model": "cohere/command", "messages": msgs, "tool_choice": {"type": "function", "function": {"name": "f"}}}),
            2002,
            "tool_choice",
        ),
        (json!({"model": "replicate/some-model", "messages": msgs}), 2002, "not reachable through the unified API"),
    ];
    for (body, code, needle) in cases {
        let mut resp = app.client.post(app.gw("compat/chat/completions")).send_json(&body).await.unwrap();
        let status = resp.status().as_u16();
        let answer = json_of(&mut resp).await;
        assert_eq!(
            (status, answer["error"][0]["code"].clone()),
            (if code == 2008 { 404 } else { 400 }, json!(code)),
            "{body}: {answer}"
        );
        let message = answer["error"][0]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }
    // Embeddings go to OpenAI-compatible providers only.
    let mut resp = app
        .client
        .post(app.gw("compat/embeddings"))
        .send_json(&json!({"model": "anthropic/claude", "input": "x"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(json_of(&mut resp).await["error"][0]["message"].as_str().unwrap().contains("embeddings"));
    // Not JSON, and an unknown compat path.
    assert_eq!(app.client.post(app.gw("compat/chat/completions")).send_body("{").await.unwrap().status(), 400);
    assert_eq!(app.client.post(app.gw("compat/images")).send_body("{}").await.unwrap().status(), 404);
    assert!(app.mock.requests().is_empty(), "nothing reached a provider");
}

#[actix_web::test]
async fn compat_embeddings_reach_openai_compatible_providers() {
    let app = spawn_app().await;
    let mut resp = app
        .client
        .post(app.gw("compat/embeddings"))
        .insert_header(("authorization", "Bearer sk-e"))
        .send_json(&json!({"model": "openai/text-embedding-3-small", "input": "hello"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    json_of(&mut resp).await;
    let seen = app.mock.requests().pop().unwrap();
    assert_eq!(seen.uri, "/openai/v1/embeddings");
    let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body["model"], "text-embedding-3-small");
}

/// A provider's error reaches the caller in the caller's shape, with the provider's status.
#[actix_web::test]
async fn provider_errors_come_back_in_the_callers_shape() {
    let app = spawn_app().await;
    let body = json!({"model": "anthropic/claude-mock", "messages": [{"role": "user", "content": "hi"}]});
    let mut resp = app
        .client
        .post(app.gw("compat/chat/completions"))
        .insert_header(("authorization", "Bearer invalid-key"))
        .send_json(&body)
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let answer = json_of(&mut resp).await;
    assert_eq!(answer["error"]["type"], "authentication_error", "{answer}");
    assert!(answer["error"]["message"].is_string());
}

/// `provider: "compat"` in universal steps: an OpenAI body for any model, translated per step;
/// the answer comes back in OpenAI's format whichever step gave it.
#[actix_web::test]
async fn compat_steps_fail_over_across_formats() {
    let app = spawn_app().await;
    let step = |model: &str, key: &str| {
        json!({"provider": "compat", "endpoint": "chat/completions", "headers": {"authorization": format!("Bearer {key}")},
               "query": {"model": model, "messages": [{"role": "user", "content": "hi"}]}})
    };
    let steps = json!([step("anthropic/claude-mock", "invalid-key"), step("google-ai-studio/gemini-mock", "g-key")]);
    let mut resp = app.client.post(app.url("/v1/local/default")).send_json(&steps).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("cf-aig-step").unwrap(), "1");
    let body = json_of(&mut resp).await;
    assert_eq!(body["object"], "chat.completion", "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from mock Gemini");
    let seen = app.mock.requests();
    assert_eq!(seen[0].uri, "/anthropic/v1/messages");
    assert_eq!(seen[0].header("x-api-key"), Some("invalid-key"));
    assert!(seen[1].uri.starts_with("/google-ai-studio/v1beta/models/gemini-mock:generateContent"));
    // Every step failing: the last answer, in the caller's shape.
    let steps = json!([step("anthropic/claude-mock", "invalid-key")]);
    let mut resp = app.client.post(app.url("/v1/local/default")).send_json(&steps).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(json_of(&mut resp).await["error"]["type"], "authentication_error");
}

/// Cloudflare's model names: `@cf/...` is Workers AI, `google/...` AI Studio, `xai/...` Grok;
/// Azure OpenAI is `azure-openai/{resource}/{deployment}`.
#[actix_web::test]
async fn model_names_map_to_providers() {
    let app = spawn_app().await;
    for (model, uri) in [
        ("@cf/meta/llama-3.1-8b-instruct", "/workers-ai/local/v1/chat/completions"),
        ("google/gemini-mock", "/google-ai-studio/v1beta/models/gemini-mock:generateContent"),
        ("xai/grok-4", "/grok/v1/chat/completions"),
        ("azure-openai/myres/mydeploy", "/azure-openai/myres/mydeploy/chat/completions?api-version=2024-10-21"),
        (
            "google-vertex-ai/my-proj/us-central1/gemini-mock",
            "/google-vertex-ai/us-central1/v1/projects/my-proj/locations/us-central1/publishers/google/models/gemini-mock:generateContent",
        ),
    ] {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        let resp = app
            .client
            .post(app.gw("compat/chat/completions"))
            .insert_header(("authorization", "Bearer key-1"))
            .send_json(&body)
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{model}");
        let seen = app.mock.requests().pop().unwrap();
        assert_eq!(seen.uri, uri, "{model}");
        if model.starts_with("google-vertex-ai/") {
            assert_eq!(seen.header("authorization"), Some("Bearer key-1"), "Vertex takes a bearer token");
        }
    }
}

/// Bedrock through the unified API with stored AWS credentials: Torii signs Converse with SigV4.
#[actix_web::test]
async fn bedrock_compat_is_signed_with_stored_credentials() {
    let app = spawn_app().await;
    assert_eq!(app.set_default(json!({"authentication": true})).await.0, 200);
    let secret = json!({"accessKeyId": "AKIDEXAMPLE", "secretAccessKey": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "region": "us-east-1"});
    let (status, body) = app
        .call(
            "POST",
            "/gateways/default/provider_configs",
            Some(json!({"provider_slug": "aws-bedrock", "secret": secret})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, made) = app.call("POST", "/tokens", Some(json!({"name": "run", "scopes": ["run"]}))).await;
    let token = made["result"]["value"].as_str().unwrap().to_string();
    let request = json!({"model": "aws-bedrock/us-east-1/anthropic.claude-mock-v1:0", "messages": [{"role": "user", "content": "hi"}]});
    let mut resp = app
        .client
        .post(app.gw("compat/chat/completions"))
        .insert_header(("cf-aig-authorization", format!("Bearer {token}")))
        .send_json(&request)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(json_of(&mut resp).await["choices"][0]["message"]["content"], "Hello from mock Bedrock");
    let seen = app.mock.requests().pop().unwrap();
    let auth = seen.header("authorization").unwrap();
    assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"), "{auth}");
    assert!(auth.contains("/us-east-1/bedrock/aws4_request"), "{auth}");
    assert!(seen.header("x-amz-date").is_some(), "the signature date");
}

/// REST `/ai/run` (Workers AI models, the input as the model's body) and `/ai/v1/responses`
/// (OpenAI models), with a Torii API token.
#[actix_web::test]
async fn rest_run_and_responses() {
    let app = spawn_app().await;
    let (_, made) = app.call("POST", "/tokens", Some(json!({"name": "rest", "scopes": ["run"]}))).await;
    let token = made["result"]["value"].as_str().unwrap().to_string();
    let post = |path: &str, body: serde_json::Value| {
        app.client
            .post(app.url(&format!("/client/v4/accounts/local/ai/{path}")))
            .insert_header(("authorization", format!("Bearer {token}")))
            .send_json(&body)
    };
    let input = json!({"messages": [{"role": "user", "content": "hi"}]});
    let resp = post("run", json!({"model": "@cf/meta/llama-3.1-8b-instruct", "input": input})).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = app.mock.requests().pop().unwrap();
    assert_eq!(seen.uri, "/workers-ai/local/run/@cf/meta/llama-3.1-8b-instruct");
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&seen.body).unwrap(), input);
    let resp = post("v1/responses", json!({"model": "openai/gpt-4.1", "input": "hi"})).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = app.mock.requests().pop().unwrap();
    assert_eq!(seen.uri, "/openai/v1/responses");
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&seen.body).unwrap()["model"], "gpt-4.1");
    let count = app.mock.requests().len();
    for (path, body) in [
        ("run", json!({"model": "openai/gpt-4.1", "input": {}})),
        ("run", json!({"model": "@cf/x", "input": {}, "options": {"background": true}})),
        ("v1/responses", json!({"model": "anthropic/claude", "input": "hi"})),
    ] {
        let mut resp = post(path, body.clone()).await.unwrap();
        assert_eq!(resp.status(), 400, "{path} {body}");
        json_of(&mut resp).await;
    }
    assert_eq!(app.mock.requests().len(), count, "refusals send nothing");
    // Without a valid API token: 401.
    let resp = app
        .client
        .post(app.url("/client/v4/accounts/local/ai/v1/chat/completions"))
        .send_json(&json!({"model": "openai/gpt", "messages": []}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}
