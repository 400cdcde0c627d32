//! Management API: v4 envelope, token scopes, gateway and custom-provider CRUD, and changes
//! taking effect on the next data-plane request.

use serde_json::{Value, json};
use torii::store::Scope;

use crate::helpers::{json_of, spawn_app};

#[must_use]
pub fn gateway_body(id: &str) -> Value {
    json!({
        "id": id, "cache_invalidate_on_update": false, "cache_ttl": 0, "collect_logs": true,
        "rate_limiting_interval": 0, "rate_limiting_limit": 0
    })
}

#[actix_web::test]
async fn tokens_and_scopes_guard_the_api() {
    let app = spawn_app().await;
    let mut resp = app.client.get(app.api("/gateways")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body = json_of(&mut resp).await;
    assert_eq!((body["success"].clone(), body["errors"][0]["code"].clone()), (json!(false), json!(10000)));
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("missing"));
    let resp = app
        .client
        .get(app.api("/gateways"))
        .insert_header(("authorization", "Bearer torii_wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // A read-only token reads but cannot write (created through the running server's store).
    let read_secret = app.token(&[Scope::Read], &[], None);
    let ro = format!("Bearer {read_secret}");
    let resp = app.client.get(app.api("/gateways")).insert_header(("authorization", ro.as_str())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut resp = app
        .client
        .post(app.api("/gateways"))
        .insert_header(("authorization", ro.as_str()))
        .send_json(&gateway_body("x"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(json_of(&mut resp).await["errors"][0]["code"], 9109);

    let mut resp = app
        .client
        .get(app.url("/client/v4/accounts/someone-else/ai-gateway/gateways"))
        .insert_header(("authorization", app.bearer()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(json_of(&mut resp).await["success"], false);
}

#[actix_web::test]
async fn gateway_crud_with_cloudflare_fields_and_ranges() {
    let app = spawn_app().await;
    let (status, body) = app.call("GET", "/gateways/default", None).await;
    assert_eq!(status, 200);
    let d = &body["result"];
    assert_eq!(
        (
            d["authentication"].clone(),
            d["collect_logs"].clone(),
            d["cache_ttl"].clone(),
            d["rate_limiting_limit"].clone()
        ),
        (json!(false), json!(true), json!(0), json!(0))
    );
    assert_eq!(d["is_default"], true);

    let mut create = gateway_body("team-a");
    create["rate_limiting_technique"] = json!("sliding");
    create["log_management"] = json!(100_000);
    create["log_management_strategy"] = json!("DELETE_OLDEST");
    create["dlp"] = json!({"enabled": false});
    let (status, body) = app.call("POST", "/gateways", Some(create.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["rate_limiting_technique"], "sliding");
    assert_eq!(body["result"]["dlp"], json!({"enabled": false}), "passive fields are stored and returned");
    assert!(body["result"]["created_at"].as_str().unwrap().ends_with('Z'));
    let (status, body) = app.call("POST", "/gateways", Some(create)).await;
    assert_eq!((status, body["errors"][0]["code"].clone()), (409, json!(1003)));

    for (field, value) in [
        ("log_management", json!(5)),
        ("retry_max_attempts", json!(6)),
        ("retry_delay", json!(6000)),
        ("rate_limiting_technique", json!("leaky")),
        ("cache_ttl", json!(-1)),
        ("collect_logs", json!("yes")),
        ("unknown_field", json!(1)),
    ] {
        let mut b = gateway_body("bad");
        b[field] = value;
        let (status, body) = app.call("POST", "/gateways", Some(b)).await;
        assert_eq!(status, 400, "{field}");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains(field), "{field}: {body}");
    }
    let mut missing = gateway_body("bad");
    missing.as_object_mut().unwrap().remove("collect_logs");
    let (status, body) = app.call("POST", "/gateways", Some(missing)).await;
    assert_eq!(status, 400);
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("collect_logs"));
    let (status, _) = app.call("POST", "/gateways", Some(json!([1, 2]))).await;
    assert_eq!(status, 400);

    for i in 0..3 {
        app.call("POST", "/gateways", Some(gateway_body(&format!("page-{i}")))).await;
    }
    let (_, body) = app.call("GET", "/gateways?search=page-&per_page=2&page=2", None).await;
    assert_eq!(body["result"].as_array().unwrap().len(), 1);
    assert_eq!(body["result_info"]["total_count"], 3);
    assert_eq!(body["result_info"]["page"], 2);

    let mut update = gateway_body("team-a");
    update["authentication"] = json!(true);
    update["retry_max_attempts"] = json!(3);
    let (status, body) = app.call("PUT", "/gateways/team-a", Some(update)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["authentication"], true);
    assert_eq!(body["result"]["log_management"], 100_000, "fields not sent keep their value");
    let (status, _) = app.call("PUT", "/gateways/nope", Some(gateway_body("nope"))).await;
    assert_eq!(status, 404);

    let (status, _) = app.call("DELETE", "/gateways/team-a", None).await;
    assert_eq!(status, 200);
    let (status, body) = app.call("GET", "/gateways/team-a", None).await;
    assert_eq!((status, body["errors"][0]["code"].clone()), (404, json!(1004)));
}

#[actix_web::test]
async fn gateway_changes_apply_to_the_next_request() {
    let app = spawn_app().await;
    let resp = app.client.post(app.url("/v1/local/fresh/openai/chat/completions")).send_body("{}").await.unwrap();
    assert_eq!(resp.status(), 400, "an unknown gateway: 400 / 2001, as Cloudflare answers");
    app.call("POST", "/gateways", Some(gateway_body("fresh"))).await;
    let resp = app.client.post(app.url("/v1/local/fresh/openai/chat/completions")).send_body("{}").await.unwrap();
    assert_eq!(resp.status(), 200);

    let mut auth_on = gateway_body("fresh");
    auth_on["authentication"] = json!(true);
    app.call("PUT", "/gateways/fresh", Some(auth_on)).await;
    let mut resp = app.client.post(app.url("/v1/local/fresh/openai/chat/completions")).send_body("{}").await.unwrap();
    assert_eq!(resp.status(), 401);
    let body = json_of(&mut resp).await;
    assert_eq!(body["error"][0]["code"], 2009);
    assert!(body["error"][0]["message"].as_str().unwrap().contains("missing"));
    // A provider key in Authorization is not a gateway token.
    let resp = app
        .client
        .post(app.url("/v1/local/fresh/openai/chat/completions"))
        .insert_header(("authorization", app.bearer()))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let run_secret = app.token(&[Scope::Run], &["fresh"], None);
    let resp = app
        .client
        .post(app.url("/v1/local/fresh/openai/chat/completions"))
        .insert_header(("cf-aig-authorization", format!("Bearer {run_secret}")))
        .insert_header(("authorization", "Bearer sk-provider"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = app.mock.requests().pop().unwrap();
    assert_eq!(got.header("authorization"), Some("Bearer sk-provider"));
    assert_eq!(got.header("cf-aig-authorization"), None);

    app.call("DELETE", "/gateways/fresh", None).await;
    let resp = app.client.post(app.url("/v1/local/fresh/openai/chat/completions")).send_body("{}").await.unwrap();
    assert_eq!(resp.status(), 400);
}

#[actix_web::test]
async fn custom_providers_crud_and_routing() {
    let app = spawn_app().await;
    let base = format!("{}/internal-vllm/v1", app.mock.url());
    let (status, body) =
        app.call("POST", "/custom-providers", Some(json!({"name": "vLLM", "slug": "vllm", "base_url": base}))).await;
    assert_eq!(status, 200, "{body}");
    let id = body["result"]["id"].as_str().unwrap().to_string();
    assert_eq!(body["result"]["enable"], true);

    let resp = app.client.post(app.gw("custom-vllm/v1/chat/completions")).send_body("{}").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(app.mock.requests().pop().unwrap().uri, "/internal-vllm/v1/chat/completions");

    let (status, body) =
        app.call("POST", "/custom-providers", Some(json!({"name": "dup", "slug": "vllm", "base_url": base}))).await;
    assert_eq!((status, body["errors"][0]["code"].clone()), (409, json!(1003)));
    for bad in ["ftp://x", "not a url", "http://user:pw@host/", "https://h/x?q=1"] {
        let (status, body) =
            app.call("POST", "/custom-providers", Some(json!({"name": "b", "slug": "b", "base_url": bad}))).await;
        assert_eq!((status, body["errors"][0]["code"].clone()), (400, json!(1002)), "{bad}");
    }
    let (status, _) =
        app.call("POST", "/custom-providers", Some(json!({"name": "b", "slug": "Bad_Slug", "base_url": base}))).await;
    assert_eq!(status, 400);

    let (status, body) = app
        .call(
            "PATCH",
            &format!("/custom-providers/{id}"),
            Some(json!({"base_url": format!("{}/moved", app.mock.url())})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.client.post(app.gw("custom-vllm/models")).send_body("{}").await.unwrap();
    assert_eq!(app.mock.requests().pop().unwrap().uri, "/moved/models");

    let (_, body) = app.call("GET", "/custom-providers?search=vll", None).await;
    assert_eq!(body["result"].as_array().unwrap().len(), 1);

    app.call("PATCH", &format!("/custom-providers/{id}"), Some(json!({"enable": false}))).await;
    let resp = app.client.post(app.gw("custom-vllm/models")).send_body("{}").await.unwrap();
    assert_eq!(resp.status(), 404, "disabled providers are not routed");

    let (status, _) = app.call("DELETE", &format!("/custom-providers/{id}"), None).await;
    assert_eq!(status, 200);
    let (status, _) = app.call("GET", &format!("/custom-providers/{id}"), None).await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn gateway_url_for_a_provider() {
    let app = spawn_app().await;
    let (status, body) = app.call("GET", "/gateways/default/url/openai", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"], format!("http://{}/v1/local/default/openai", app.addr));
    assert_eq!(app.call("GET", "/gateways/nope/url/openai", None).await.0, 404);
}

/// Deleting `default` resets it (it always exists, as on Cloudflare); changing a custom
/// provider's `base_url` drops the answers cached from the old one.
#[actix_web::test]
async fn default_comes_back_and_custom_provider_moves_purge_the_cache() {
    let app = spawn_app().await;
    assert_eq!(app.set_default(json!({"cache_ttl": 300, "collect_logs": false})).await.0, 200);
    assert_eq!(app.call("DELETE", "/gateways/default", None).await.0, 200);
    let (status, body) = app.call("GET", "/gateways/default", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["cache_ttl"], 0, "reset to the defaults");
    let resp = app.client.post(app.gw("openai/chat/completions")).send_body("{}").await.unwrap();
    assert_eq!(resp.status(), 200);

    assert_eq!(app.set_default(json!({"cache_ttl": 300})).await.0, 200);
    let base = format!("{}/openai/v1", app.mock.url());
    let (status, made) =
        app.call("POST", "/custom-providers", Some(json!({"name": "vLLM", "slug": "vllm", "base_url": base}))).await;
    assert_eq!(status, 200, "{made}");
    let id = made["result"]["id"].as_str().unwrap().to_string();
    let ask = || app.client.post(app.gw("custom-vllm/chat/completions")).send_body(r#"{"q":1}"#);
    assert_eq!(ask().await.unwrap().headers().get("cf-aig-cache-status").unwrap(), "MISS");
    assert_eq!(ask().await.unwrap().headers().get("cf-aig-cache-status").unwrap(), "HIT");
    let moved = format!("{}/groq/v1", app.mock.url());
    assert_eq!(app.call("PATCH", &format!("/custom-providers/{id}"), Some(json!({"base_url": moved}))).await.0, 200);
    let resp = ask().await.unwrap();
    assert_eq!(resp.headers().get("cf-aig-cache-status").unwrap(), "MISS", "the old base URL's answer is gone");
    assert!(app.mock.requests().last().unwrap().uri.starts_with("/groq/v1/"));
}
