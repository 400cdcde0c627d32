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

/// An independent SigV4 verifier (AWS's documented algorithm, written here from the spec):
/// recomputes the signature of a request the mock received.
fn verify_sigv4(got: &crate::mock::Recorded, secret_key: &str) -> Result<(), String> {
    use ring::hmac;
    use sha2::{Digest, Sha256};
    let auth = got.header("authorization").ok_or("no authorization")?;
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256 Credential=").ok_or("not SigV4")?;
    let mut parts = rest.split(", ");
    let credential = parts.next().ok_or("no credential")?;
    let signed = parts.next().and_then(|p| p.strip_prefix("SignedHeaders=")).ok_or("no signed headers")?;
    let signature = parts.next().and_then(|p| p.strip_prefix("Signature=")).ok_or("no signature")?;
    let scope = credential.split_once('/').ok_or("bad credential")?.1;
    let amz_date = got.header("x-amz-date").ok_or("no x-amz-date")?;
    let (path, query) = got.uri.split_once('?').unwrap_or((&got.uri, ""));
    // Non-S3 services sign the path encoded once more (so `%3A` is signed as `%253A`).
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let mut headers = String::new();
    for name in signed.split(';') {
        let value = got.header(name).ok_or(format!("signed header {name} missing"))?;
        headers.extend([name, ":", value.trim(), "\n"]);
    }
    let canonical = format!(
        "{}\n{}\n{query}\n{headers}\n{signed}\n{}",
        got.method,
        encode(path),
        hex::encode(Sha256::digest(&got.body))
    );
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex::encode(Sha256::digest(&canonical)));
    let mut key = format!("AWS4{secret_key}").into_bytes();
    for part in scope.split('/') {
        key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), part.as_bytes()).as_ref().to_vec();
    }
    let expected = hex::encode(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), to_sign.as_bytes()));
    if expected == signature { Ok(()) } else { Err(format!("signature mismatch; canonical request:\n{canonical}")) }
}

#[actix_web::test]
async fn stored_aws_credentials_sign_bedrock_requests_with_sigv4() {
    let app = spawn_app().await;
    assert_eq!(app.set_default(json!({"authentication": true})).await.0, 200);
    let secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    let (status, bad) = app
        .call(
            "POST",
            "/gateways/default/provider_configs",
            Some(json!({"provider_slug": "aws-bedrock", "secret": "just-a-string-key"})),
        )
        .await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad["errors"][0]["message"].as_str().unwrap().contains("accessKeyId"), "{bad}");
    assert!(!bad.to_string().contains("just-a-string-key"));
    let (status, created) = app
        .call(
            "POST",
            "/gateways/default/provider_configs",
            Some(json!({"provider_slug": "aws-bedrock", "secret": {
                "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": secret_key,
                "region": "eu-west-1", "sessionToken": "FwoGZXIvYXdzEXAMPLETOKEN"}})),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["result"]["secret_preview"], "AKIA…MPLE");
    assert!(!created.to_string().contains(secret_key));

    let token = format!("Bearer {}", run_token(&app).await);
    let body =
        r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let resp = app
        .client
        .post(app.gw("aws-bedrock/bedrock-runtime/eu-west-1/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke"))
        .insert_header(("cf-aig-authorization", token.as_str()))
        .insert_header(("content-type", "application/json"))
        // A stale client signature is replaced, not forwarded.
        .insert_header((
            "authorization",
            "AWS4-HMAC-SHA256 Credential=OLD/20200101/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=00",
        ))
        .insert_header(("x-amz-date", "20200101T000000Z"))
        .send_body(body)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = app.mock.requests().pop().unwrap();
    assert_eq!(got.body, body.as_bytes());
    let auth = got.header("authorization").unwrap();
    assert!(auth.contains("Credential=AKIAIOSFODNN7EXAMPLE/"), "{auth}");
    assert!(auth.contains("/eu-west-1/bedrock/aws4_request"), "signed for the URL's region: {auth}");
    assert!(auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"), "{auth}");
    assert_eq!(got.header("x-amz-security-token"), Some("FwoGZXIvYXdzEXAMPLETOKEN"));
    assert_ne!(got.header("x-amz-date"), Some("20200101T000000Z"));
    verify_sigv4(&got, secret_key).unwrap();
    assert!(verify_sigv4(&got, "another-secret").is_err(), "the verifier can fail");
    let mut tampered = got.clone();
    tampered.body = bytes::Bytes::from_static(b"{}");
    assert!(verify_sigv4(&tampered, secret_key).is_err(), "the body is covered by the signature");

    app.flush_logs().await;
    let db = std::fs::read(app.dir.path().join("torii.redb")).unwrap();
    assert!(!db.windows(secret_key.len()).any(|w| w == secret_key.as_bytes()), "secret key readable in the database");
    let logs = app.logs("").await;
    assert!(!logs.to_string().contains("FwoGZXIvYXdzEXAMPLETOKEN"), "session token leaked into the log API");
}

/// The registry row says where a stored key goes: the `elevenlabs` row puts it alone in `xi-api-key`.
#[actix_web::test]
async fn a_stored_key_goes_into_the_header_its_provider_row_names() {
    let app = spawn_app().await;
    assert_eq!(app.set_default(json!({"authentication": true})).await.0, 200);
    let body = json!({"provider_slug": "elevenlabs", "secret": "el-stored-secret-42"});
    assert_eq!(app.call("POST", "/gateways/default/provider_configs", Some(body)).await.0, 200);
    let token = format!("Bearer {}", run_token(&app).await);
    let resp = app
        .client
        .post(app.gw("elevenlabs/v1/text-to-speech/voice"))
        .insert_header(("cf-aig-authorization", token.as_str()))
        .insert_header(("xi-api-key", "client-placeholder"))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = app.mock.requests().pop().unwrap();
    assert_eq!(got.header("xi-api-key"), Some("el-stored-secret-42"));
    assert_eq!(got.header("authorization"), None, "not sent as a bearer token");
    // fal takes its key as `Authorization: Key {key}`.
    let body = json!({"provider_slug": "fal", "secret": "fal-stored-secret"});
    assert_eq!(app.call("POST", "/gateways/default/provider_configs", Some(body)).await.0, 200);
    let resp = app
        .client
        .post(app.gw("fal/fal-ai/fast-sdxl"))
        .insert_header(("cf-aig-authorization", token.as_str()))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(app.mock.requests().pop().unwrap().header("authorization"), Some("Key fal-stored-secret"));
}

/// The alias check and the write are one transaction: of racing creates of one alias, one wins.
#[actix_web::test]
async fn racing_creates_of_one_alias_store_one_key() {
    let app = spawn_app().await;
    assert_eq!(app.set_default(json!({"authentication": true})).await.0, 200);
    let body = json!({"provider_slug": "openai", "secret": "sk-race-0123456789", "alias": "race"});
    let calls = (0..8).map(|_| app.call("POST", "/gateways/default/provider_configs", Some(body.clone())));
    let statuses: Vec<u16> = futures_util::future::join_all(calls).await.into_iter().map(|(s, _)| s).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 409), "{statuses:?}");
    let (_, listed) = app.call("GET", "/gateways/default/provider_configs", None).await;
    assert_eq!(listed["result"].as_array().unwrap().len(), 1);
}
