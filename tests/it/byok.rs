//! Stored provider keys: sealed at rest, injected in the provider's header, aliases, and only
//! on authenticated gateways.

use serde_json::json;

use crate::helpers::{TestApp, json_of, spawn_app};

async fn run_token(app: &TestApp) -> String {
    let (_, t) = app.call("POST", "/tokens", Some(json!({"name": "app", "scopes": ["run"]}))).await;
    t["result"]["value"].as_str().unwrap().to_string()
}

#[actix_web::test]
async fn stored_keys_are_sealed_injected_and_need_authentication() {
    let app = spawn_app().await;
    let openai_secret = "sk-stored-openai-0123456789";
    let (status, body) = app
        .call(
            "POST",
            "/gateways/default/provider_configs",
            Some(json!({"provider_slug": "openai", "secret": openai_secret})),
        )
        .await;
    assert_eq!(status, 400, "refused while authentication is off: {body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("authentication"));

    assert_eq!(app.set_default(json!({"authentication": true})).await.0, 200);
    let (status, created) = app
        .call(
            "POST",
            "/gateways/default/provider_configs",
            Some(json!({"provider_slug": "openai", "secret": openai_secret})),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["result"]["alias"], "default");
    assert_eq!(created["result"]["secret_preview"], "sk-s…6789");
    let (status, _) = app
        .call(
            "POST",
            "/gateways/default/provider_configs",
            Some(json!({"provider_slug": "anthropic", "secret": "sk-ant-team-b-secret", "alias": "team-b"})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, listed) = app.call("GET", "/gateways/default/provider_configs", None).await;
    let text = listed.to_string();
    assert_eq!(listed["result"].as_array().unwrap().len(), 2);
    assert!(!text.contains(openai_secret) && !text.contains("sk-ant-team-b-secret") && !text.contains("sealed"));

    let token = format!("Bearer {}", run_token(&app).await);
    let resp = app
        .client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("cf-aig-authorization", token.as_str()))
        .insert_header(("authorization", "Bearer placeholder"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        app.mock.requests().pop().unwrap().header("authorization"),
        Some(format!("Bearer {openai_secret}").as_str())
    );
    let resp = app
        .client
        .post(app.gw("anthropic/v1/messages"))
        .insert_header(("cf-aig-authorization", token.as_str()))
        .insert_header(("cf-aig-byok-alias", "team-b"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = app.mock.requests().pop().unwrap();
    assert_eq!(got.header("x-api-key"), Some("sk-ant-team-b-secret"));
    assert_eq!(got.header("cf-aig-byok-alias"), None);
    let mut resp = app
        .client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("cf-aig-authorization", token.as_str()))
        .insert_header(("cf-aig-byok-alias", "nope"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(json_of(&mut resp).await["error"][0]["code"], 2040);

    let (status, _) = app.set_default(json!({"authentication": false})).await;
    assert_eq!(status, 400, "authentication stays on while keys are stored");

    // Neither the database nor the logs hold the secrets; the key file is private.
    app.flush_logs().await;
    let db = std::fs::read(app.dir.path().join("torii.redb")).unwrap();
    for secret in [openai_secret, "sk-ant-team-b-secret"] {
        assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} readable in the database");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(app.dir.path().join("secrets.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let id = created["result"]["id"].as_str().unwrap();
    assert_eq!(app.call("DELETE", &format!("/gateways/default/provider_configs/{id}"), None).await.0, 200);
    app.client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("cf-aig-authorization", token.as_str()))
        .insert_header(("authorization", "Bearer client-own"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(
        app.mock.requests().pop().unwrap().header("authorization"),
        Some("Bearer client-own"),
        "without a stored key the client's goes through"
    );
}

#[actix_web::test]
async fn openai_sdk_with_only_a_gateway_token_and_a_cached_answer() {
    let app = spawn_app().await;
    assert_eq!(app.set_default(json!({"authentication": true, "cache_ttl": 300})).await.0, 200);
    app.call(
        "POST",
        "/gateways/default/provider_configs",
        Some(json!({"provider_slug": "openai", "secret": "sk-stored-for-sdk"})),
    )
    .await;
    let token = run_token(&app).await;
    let seen = crate::sdk::run_script_with(&app, "sdk_byok.py", &[("TORII_GATEWAY_TOKEN", token.as_str())]).await;
    assert_eq!(seen["cache"], json!(["MISS", "HIT"]));
    assert_eq!(seen["contents"], json!(["Hello from mock OpenAI", "Hello from mock OpenAI"]));
    let requests = app.mock.requests();
    assert_eq!(requests.len(), 1, "the second answer came from the cache");
    assert_eq!(requests[0].header("authorization"), Some("Bearer sk-stored-for-sdk"));
}
