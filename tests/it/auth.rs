//! Authenticated gateways: the token matrix, and tokens managed through the API.

use serde_json::{Value, json};

use crate::helpers::{TestApp, json_of, spawn_app};

async fn create_token(app: &TestApp, body: Value) -> (u16, Value) {
    let mut resp = app
        .client
        .post(app.api("/tokens"))
        .insert_header(("authorization", app.bearer()))
        .send_json(&body)
        .await
        .unwrap();
    (resp.status().as_u16(), json_of(&mut resp).await)
}

#[actix_web::test]
async fn token_matrix_on_an_authenticated_gateway() {
    let app = spawn_app().await;
    let secret = |v: &Value| format!("Bearer {}", v["result"]["value"].as_str().unwrap());
    let (status, run) = create_token(&app, json!({"name": "app", "scopes": ["run"]})).await;
    assert_eq!(status, 200, "{run}");
    assert!(run["result"]["value"].as_str().unwrap().starts_with("torii_"));
    let (_, read_only) = create_token(&app, json!({"name": "ro", "scopes": ["read"]})).await;
    let (_, other_gw) =
        create_token(&app, json!({"name": "other", "scopes": ["run"], "gateways": ["elsewhere"]})).await;
    let (_, expired) =
        create_token(&app, json!({"name": "old", "scopes": ["run"], "expires_at": "2020-01-01T00:00:00Z"})).await;
    let (_, revoked) = create_token(&app, json!({"name": "gone", "scopes": ["run"]})).await;
    let revoked_id = revoked["result"]["id"].as_str().unwrap();
    let resp = app
        .client
        .delete(app.api(&format!("/tokens/{revoked_id}")))
        .insert_header(("authorization", app.bearer()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let call = |token: Option<String>| {
        let mut req =
            app.client.post(app.gw("openai/chat/completions")).insert_header(("authorization", "Bearer sk-provider"));
        if let Some(t) = token {
            req = req.insert_header(("cf-aig-authorization", t));
        }
        req.send_body("{}")
    };
    // Authentication off: everything passes, with or without a token.
    assert_eq!(app.set_default(json!({"authentication": false})).await.0, 200);
    assert_eq!(call(None).await.unwrap().status(), 200);
    assert_eq!(call(Some(secret(&expired))).await.unwrap().status(), 200);
    // On: only a live run token for this gateway.
    assert_eq!(app.set_default(json!({"authentication": true})).await.0, 200);
    let cases = [
        (None, 401, "missing"),
        (Some(secret(&run)), 200, ""),
        (Some(secret(&read_only)), 401, "invalid"),
        (Some(secret(&other_gw)), 401, "not valid for this gateway"),
        (Some(secret(&expired)), 401, "invalid"),
        (Some(secret(&revoked)), 401, "invalid"),
        (Some("Bearer torii_nonsense".to_string()), 401, "invalid"),
    ];
    let before = app.mock.requests().len();
    for (token, status, says) in cases {
        let mut resp = call(token.clone()).await.unwrap();
        assert_eq!(resp.status(), status, "{token:?}");
        if status == 401 {
            let body = json_of(&mut resp).await;
            assert_eq!(body["error"][0]["code"], 2009);
            assert!(body["error"][0]["message"].as_str().unwrap().contains(says), "{token:?}: {body}");
        }
    }
    assert_eq!(app.mock.requests().len(), before + 1, "only the valid token's request was forwarded");
    assert_eq!(app.mock.requests().last().unwrap().header("authorization"), Some("Bearer sk-provider"));
    // Last use is tracked for the token that got through, not for refused ones.
    let (_, listed) = app.call("GET", "/tokens", None).await;
    let used = |name: &str| {
        listed["result"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap()["last_used_at"].clone()
    };
    assert!(used("app").as_str().is_some_and(|t| torii::control::parse_rfc3339(t).is_some()), "{listed}");
    assert!(used("ro").is_null() && used("old").is_null() && used("gone").is_null(), "{listed}");
}

#[actix_web::test]
async fn token_api_lists_without_secrets_and_needs_edit() {
    let app = spawn_app().await;
    let (_, made) =
        create_token(&app, json!({"name": "listed", "scopes": ["run"], "rate_limit": 5, "rate_limit_interval": 60}))
            .await;
    let secret = made["result"]["value"].as_str().unwrap().to_string();
    let mut resp =
        app.client.get(app.api("/tokens")).insert_header(("authorization", app.bearer())).send().await.unwrap();
    let text = String::from_utf8(resp.body().await.unwrap().to_vec()).unwrap();
    assert!(text.contains("\"listed\"") && text.contains("\"rate_limit\":5"), "{text}");
    assert!(!text.contains(&secret) && !text.contains("hash"), "secrets and hashes are never listed");
    for bad in [
        json!({"name": "", "scopes": ["run"]}),
        json!({"name": "x", "scopes": []}),
        json!({"name": "x", "scopes": ["root"]}),
        json!({"name": "x", "scopes": ["run"], "rate_limit": 5}),
    ] {
        assert_eq!(create_token(&app, bad.clone()).await.0, 400, "{bad}");
    }
    let ro = create_token(&app, json!({"name": "ro", "scopes": ["read"]})).await.1["result"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = app
        .client
        .get(app.api("/tokens"))
        .insert_header(("authorization", format!("Bearer {ro}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "listing tokens needs edit");
    let resp =
        app.client.delete(app.api("/tokens/nope")).insert_header(("authorization", app.bearer())).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}
