//! Official OpenAI and Anthropic Python SDKs against Torii, non-streaming and streaming.
//! The virtualenv is created on first use (under `target/pyvenv`) from the Python package index.

use std::path::PathBuf;
use std::sync::Mutex;

use crate::helpers::{TestApp, spawn_app, within};

static VENV: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The virtualenv's python with `openai` and `anthropic` installed (creating it if needed).
/// `TORII_TEST_PYTHON` points at an existing interpreter instead.
fn python() -> PathBuf {
    if let Ok(p) = std::env::var("TORII_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let mut guard = VENV.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = guard.as_ref() {
        return p.clone();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv");
    let py = venv.join("bin/python");
    let ready = std::process::Command::new(&py)
        .args(["-c", "import openai, anthropic, cloudflare"])
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        let ok = std::process::Command::new("python3").args(["-m", "venv"]).arg(&venv).status().unwrap().success();
        assert!(ok, "python3 -m venv failed");
        let ok = std::process::Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "openai>=1.50",
                "anthropic>=0.40",
                "cloudflare>=5.9",
                "langchain-openai>=0.3",
                "litellm>=1.60",
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "pip install openai anthropic cloudflare failed");
    }
    *guard = Some(py.clone());
    py
}

async fn run_script(app: &TestApp, script: &str) -> serde_json::Value {
    run_script_with(app, script, &[]).await
}

/// Runs a script from `tests/python` with the venv's python and extra environment; returns the
/// JSON it printed.
pub async fn run_script_with(app: &TestApp, script: &str, envs: &[(&str, &str)]) -> serde_json::Value {
    let py = actix_web::web::block(python).await.unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let mut cmd = tokio::process::Command::new(py);
    cmd.arg(path).env("TORII_BASE_URL", app.url("/v1/local/default"));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = within(300, script, cmd.output()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {stdout}"))
}

#[actix_web::test]
async fn openai_python_sdk_plain_and_streaming() {
    let app = spawn_app().await;
    let seen = run_script(&app, "sdk_openai.py").await;
    assert_eq!(seen["content"], "Hello from mock OpenAI");
    assert_eq!(seen["total_tokens"], 17);
    assert!(seen["request_id_header"].is_string());
    assert_eq!(seen["stream_chunks"], serde_json::json!(["Hello", " from", " mock"]));
    // The SDK sent no stream_options: Torii asked for usage and hid the extra chunk from it.
    assert_eq!(seen["usage_chunks_unasked"], 0);
    assert_eq!(seen["usage_when_asked"], 15);
    let requests = app.mock.requests();
    assert_eq!(requests.len(), 3);
    for r in &requests {
        assert_eq!(r.uri, "/openai/v1/chat/completions");
        assert_eq!(r.header("authorization"), Some("Bearer sk-test-openai"));
        assert!(r.header("user-agent").unwrap().starts_with("OpenAI/Python"));
    }
    let streamed: serde_json::Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(streamed["stream"], true);
    assert_eq!(streamed["stream_options"]["include_usage"], true, "Torii asked the upstream for usage");
    // Both streams are logged with their tokens and cost.
    app.flush_logs().await;
    let logs = app.logs("?direction=asc").await;
    let streams: Vec<_> = logs["result"].as_array().unwrap().iter().skip(1).collect();
    assert_eq!(streams.len(), 2);
    for log in streams {
        assert_eq!((log["tokens_in"].clone(), log["tokens_out"].clone()), (12.into(), 3.into()), "{log}");
    }
}

#[actix_web::test]
async fn anthropic_python_sdk_plain_and_streaming() {
    let app = spawn_app().await;
    let seen = run_script(&app, "sdk_anthropic.py").await;
    assert_eq!(seen["content"], "Hello from mock Anthropic");
    assert_eq!((seen["input_tokens"].clone(), seen["output_tokens"].clone()), (12.into(), 5.into()));
    assert_eq!(seen["stream_text"], "Hello from mock");
    assert_eq!(seen["stream_output_tokens"], 5);
    assert!(seen["stream_events"].as_array().unwrap().iter().any(|e| e == "message_stop"));
    let requests = app.mock.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.uri, "/anthropic/v1/messages");
        // SDK versions differ in which header carries the key; either must arrive intact.
        let key = r.header("x-api-key").or_else(|| r.header("authorization").and_then(|v| v.strip_prefix("Bearer ")));
        assert_eq!(key, Some("sk-ant-test"), "{:?}", r.headers);
        assert!(r.header("anthropic-version").is_some());
    }
}

#[actix_web::test]
async fn sdks_raise_when_a_stream_breaks_after_its_first_event() {
    let broken = crate::mock::breaking_upstream().await;
    let app = crate::helpers::spawn_app_with(|c| {
        c.providers.get_mut("openai").unwrap().base_url = Some(format!("http://{broken}/v1"));
        c.providers.get_mut("anthropic").unwrap().base_url = Some(format!("http://{broken}"));
    })
    .await;
    let seen = run_script(&app, "sdk_broken_stream.py").await;
    assert_eq!(seen["openai"]["error"], "APIError", "{seen}");
    assert_eq!(seen["openai"]["received"], serde_json::json!(["Hel"]), "the first event arrived before the error");
    assert!(seen["openai"]["message"].as_str().unwrap().contains("final event"), "{seen}");
    assert!(seen["anthropic"]["error"].as_str().unwrap().ends_with("Error"), "{seen}");
    assert_eq!(seen["anthropic"]["events"][0], "message_start", "{seen}");
    assert!(seen["anthropic"]["message"].as_str().unwrap().contains("final event"), "{seen}");
}

/// Cloudflare's own Python SDK on the management API: what it sends is accepted, what Torii
/// answers parses into its models, and its auto-paging ends.
#[actix_web::test]
async fn cloudflare_python_sdk_on_the_management_api() {
    let app = spawn_app().await;
    let api = app.url("/client/v4");
    let out =
        run_script_with(&app, "sdk_cloudflare.py", &[("TORII_API", &api), ("TORII_TOKEN", &app.admin_token)]).await;
    assert_eq!(out["gateway_id"], "sdk");
    assert_eq!(out["provider_configs"], serde_json::json!(["anthropic", "groq", "openai"]), "{out}");
    assert_eq!(out["secret_ids"], true);
    assert!(out["custom_created_year"].as_i64().unwrap() >= 2026, "{out}");
    assert_eq!(out["custom_created_is_aware"], true);
    assert!(out["custom_description"].is_null());
    assert_eq!(out["logs_filtered"], 2, "{out}");
    assert_eq!(out["log_detail_has_heads"], true, "{out}");
    assert!(out["log_metadata"].is_null());
    assert_eq!(out["logs_after_delete"], 0, "{out}");
}

/// The OpenAI SDK on the unified API reaches OpenAI, an OpenAI-compatible provider, Anthropic
/// and Gemini: plain, streamed, with tools and tool results. Each provider got its own format.
#[actix_web::test]
async fn openai_sdk_on_compat_reaches_every_translated_provider() {
    let app = spawn_app().await;
    let models = "openai/gpt-mock,groq/llama-mock,anthropic/claude-mock,google-ai-studio/gemini-mock,\
                  cohere/command-mock,aws-bedrock/us-east-1/anthropic.claude-mock-v1:0";
    let out = run_script_with(&app, "sdk_compat.py", &[("TORII_MODELS", models)]).await;
    for model in models.split(',') {
        let seen = &out[model];
        assert_eq!(
            seen["tool"],
            serde_json::json!(["get_weather", {"city": "Paris"}, "tool_calls"]),
            "{model}: {seen}"
        );
        assert_eq!(seen["stream_tool"], serde_json::json!(["get_weather", {"city": "Paris"}]), "{model}: {seen}");
        assert!(seen["text"].as_str().unwrap().starts_with("Hello from mock"), "{model}: {seen}");
        assert!(seen["stream_text"].as_str().unwrap().starts_with("Hello from mock"), "{model}: {seen}");
        assert!(seen["stream_usage"].is_array(), "{model}: usage when asked: {seen}");
        assert_eq!(seen["finish"], "stop", "{model}");
    }
    assert_eq!(out["anthropic/claude-mock"]["tokens"], serde_json::json!([12, 5]));
    assert_eq!(out["google-ai-studio/gemini-mock"]["tokens"], serde_json::json!([9, 4]));
    assert_eq!(out["cohere/command-mock"]["tokens"], serde_json::json!([70, 5]));
    assert_eq!(out["aws-bedrock/us-east-1/anthropic.claude-mock-v1:0"]["tokens"], serde_json::json!([11, 6]));
    let requests = app.mock.requests();
    let to = |prefix: &str| requests.iter().filter(|r| r.uri.starts_with(prefix)).collect::<Vec<_>>();
    // Anthropic got Messages with its own key header, the system prompt apart, max_tokens set.
    let anthropic = to("/anthropic/v1/messages");
    assert_eq!(anthropic.len(), 5);
    let first: serde_json::Value = serde_json::from_slice(&anthropic[0].body).unwrap();
    assert_eq!((first["model"].clone(), first["system"].clone()), ("claude-mock".into(), "Be brief.".into()));
    assert_eq!(first["max_tokens"], 50);
    assert_eq!(anthropic[0].header("x-api-key"), Some("sk-compat-key"));
    assert_eq!(anthropic[0].header("anthropic-version"), Some("2023-06-01"));
    assert!(anthropic[0].header("authorization").is_none());
    let follow: serde_json::Value = serde_json::from_slice(&anthropic[3].body).unwrap();
    let turns = follow["messages"].as_array().unwrap();
    assert_eq!(turns[1]["content"][1]["type"], "tool_use", "{follow}");
    assert_eq!(turns[2]["content"][0]["type"], "tool_result", "{follow}");
    // Gemini got generateContent (streamGenerateContent with alt=sse when streamed).
    let gemini = to("/google-ai-studio/v1beta/models/gemini-mock:");
    assert_eq!(gemini.len(), 5);
    assert!(gemini[1].uri.ends_with(":streamGenerateContent?alt=sse"), "{}", gemini[1].uri);
    assert_eq!(gemini[0].header("x-goog-api-key"), Some("sk-compat-key"));
    let g: serde_json::Value = serde_json::from_slice(&gemini[0].body).unwrap();
    assert_eq!(g["systemInstruction"]["parts"][0]["text"], "Be brief.");
    assert_eq!(g["generationConfig"]["maxOutputTokens"], 50);
    // OpenAI-compatible providers got the body as sent, with the model renamed.
    let groq = to("/groq/v1/chat/completions");
    let body: serde_json::Value = serde_json::from_slice(&groq[0].body).unwrap();
    assert_eq!(body["model"], "llama-mock");
    assert_eq!(groq[0].header("authorization"), Some("Bearer sk-compat-key"));
    // Cohere got v2 chat; Bedrock got Converse (converse-stream when streamed), model id escaped.
    let cohere = to("/cohere/v2/chat");
    assert_eq!(cohere.len(), 5);
    let c: serde_json::Value = serde_json::from_slice(&cohere[0].body).unwrap();
    assert_eq!((c["model"].clone(), c["messages"][0]["role"].clone()), ("command-mock".into(), "system".into()));
    let bedrock = to("/aws-bedrock/bedrock-runtime/us-east-1/model/anthropic.claude-mock-v1%3A0/");
    assert_eq!(bedrock.len(), 5);
    assert!(bedrock[1].uri.ends_with("/converse-stream"), "{}", bedrock[1].uri);
    let b: serde_json::Value = serde_json::from_slice(&bedrock[0].body).unwrap();
    assert_eq!(b["system"][0]["text"], "Be brief.");
    assert_eq!(b["inferenceConfig"]["maxTokens"], 50);
    // Logs and cost apply as on the passthrough, with the surface recorded.
    app.flush_logs().await;
    let logs = app.logs("?per_page=50").await;
    let rows = logs["result"].as_array().unwrap();
    assert_eq!(rows.len(), 30);
    assert!(rows.iter().all(|l| l["request_type"] == "compat"), "{logs}");
    let claude = rows.iter().find(|l| l["provider"] == "anthropic" && l["tokens_out"] == 5).unwrap();
    assert_eq!(claude["tokens_in"], 12);
    assert_eq!(claude["requested_model"], "anthropic/claude-mock", "the model as the client named it");
    assert_eq!(claude["model"], "claude-mock", "the model that answered");
}

/// The Anthropic SDK on the REST unified API (`/ai/v1/messages`) reaches an OpenAI model and
/// Gemini with stored provider keys; a Torii API token authorizes it.
#[actix_web::test]
async fn anthropic_sdk_on_rest_messages_reaches_openai_and_gemini() {
    let app = spawn_app().await;
    assert_eq!(app.set_default(serde_json::json!({"authentication": true})).await.0, 200);
    for (provider, secret) in [("openai", "sk-stored-openai"), ("google-ai-studio", "stored-google-key")] {
        let body = serde_json::json!({"provider_slug": provider, "secret": secret});
        assert_eq!(app.call("POST", "/gateways/default/provider_configs", Some(body)).await.0, 200);
    }
    let (_, made) = app.call("POST", "/tokens", Some(serde_json::json!({"name": "rest", "scopes": ["run"]}))).await;
    let token = made["result"]["value"].as_str().unwrap().to_string();
    let rest = app.url("/client/v4/accounts/local/ai");
    let models = "openai/gpt-mock,google-ai-studio/gemini-mock";
    let out = run_script_with(
        &app,
        "sdk_anthropic_rest.py",
        &[("TORII_REST", &rest), ("TORII_TOKEN", &token), ("TORII_MODELS", models)],
    )
    .await;
    for model in models.split(',') {
        let seen = &out[model];
        assert!(seen["text"].as_str().unwrap().starts_with("Hello from mock"), "{model}: {seen}");
        assert!(seen["stream_text"].as_str().unwrap().starts_with("Hello from mock"), "{model}: {seen}");
        assert_eq!(
            (seen["stop"].clone(), seen["stream_stop"].clone()),
            ("end_turn".into(), "end_turn".into()),
            "{model}"
        );
        assert_eq!(seen["tool"], serde_json::json!(["get_weather", {"city": "Paris"}, "tool_use"]), "{model}: {seen}");
        assert_eq!(seen["stream_tool"], serde_json::json!(["get_weather", {"city": "Paris"}]), "{model}: {seen}");
    }
    assert_eq!(out["openai/gpt-mock"]["usage"], serde_json::json!([12, 5]));
    assert_eq!(out["openai/gpt-mock"]["stream_output_tokens"], 3);
    assert_eq!(out["google-ai-studio/gemini-mock"]["usage"], serde_json::json!([9, 4]));
    assert_eq!(out["wrong_token"], 401);
    let requests = app.mock.requests();
    let openai: Vec<_> = requests.iter().filter(|r| r.uri == "/openai/v1/chat/completions").collect();
    assert_eq!(openai.len(), 5);
    assert!(openai.iter().all(|r| r.header("authorization") == Some("Bearer sk-stored-openai")), "stored key used");
    let streamed: serde_json::Value = serde_json::from_slice(&openai[1].body).unwrap();
    assert_eq!(streamed["stream_options"]["include_usage"], true);
    let result_turn: serde_json::Value = serde_json::from_slice(&openai[4].body).unwrap();
    assert_eq!(result_turn["messages"][2]["role"], "tool", "{result_turn}");
    let gemini: Vec<_> = requests.iter().filter(|r| r.uri.starts_with("/google-ai-studio/")).collect();
    assert!(gemini.iter().all(|r| r.header("x-goog-api-key") == Some("stored-google-key")));
    assert!(
        requests.iter().all(|r| !r.headers.iter().any(|(_, v)| v.contains(&token))),
        "the API token never goes upstream"
    );
}

/// `node` with the official `openai` and `cloudflare` packages installed under `target/node`
/// (`.ci/test` installs them; this installs them when missing).
fn node_ready() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/node");
    let ready = dir.join("node_modules/openai").exists()
        && dir.join("node_modules/cloudflare/resources/ai-gateway/dynamic-routing.js").exists();
    if !ready {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = std::process::Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .args(["openai@6", "cloudflare@7"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "npm install openai cloudflare failed");
    }
    dir
}

/// Cloudflare's TypeScript SDK drives every dynamic-routing call; what it hands back has the
/// fields its types promise.
#[actix_web::test]
async fn cloudflare_typescript_sdk_on_dynamic_routes() {
    let app = spawn_app().await;
    let dir = actix_web::web::block(node_ready).await.unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node/routes.mjs");
    let linked = dir.join("routes.mjs");
    std::fs::copy(&script, &linked).unwrap();
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(&linked).env("TORII_API", app.url("/client/v4")).env("TORII_TOKEN", &app.admin_token);
    let out = within(120, "the Node script", cmd.output()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "node failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(seen["created"], serde_json::json!(["ts", "true", 3]), "{seen}");
    assert_eq!(seen["listed"], serde_json::json!(["ts"]));
    assert_eq!(seen["got"], true);
    assert_eq!(seen["renamed"], "ts2");
    assert_eq!(seen["version_elements"], 3);
    assert_eq!(seen["versions"], serde_json::json!(["false", "true"]));
    assert_eq!(seen["one"], serde_json::json!(["false", 3]));
    assert_eq!(
        (seen["deployed"].clone(), seen["deployments"].clone()),
        (serde_json::json!("ts2"), serde_json::json!(2))
    );
    assert_eq!(seen["deleted"], "ts2");
}

/// The OpenAI Node SDK on /compat reaches Anthropic and Gemini (plain, streamed, tools).
#[actix_web::test]
async fn openai_node_sdk_on_compat() {
    let app = spawn_app().await;
    let dir = actix_web::web::block(node_ready).await.unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node/compat.mjs");
    let linked = dir.join("compat.mjs");
    std::fs::copy(&script, &linked).unwrap();
    let models = "anthropic/claude-mock,google-ai-studio/gemini-mock,openai/gpt-mock";
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(&linked).env("TORII_BASE_URL", app.url("/v1/local/default")).env("TORII_MODELS", models);
    let out = within(120, "the Node script", cmd.output()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "node failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    for model in models.split(',') {
        let s = &seen[model];
        assert!(s["text"].as_str().unwrap().starts_with("Hello from mock"), "{model}: {s}");
        assert!(s["stream_text"].as_str().unwrap().starts_with("Hello from mock"), "{model}: {s}");
        assert_eq!(s["tool"], serde_json::json!(["get_weather", {"city": "Paris"}]), "{model}: {s}");
        assert_eq!(s["stream_tool_args"], serde_json::json!({"city": "Paris"}), "{model}: {s}");
    }
    assert!(app.mock.requests().iter().any(|r| r.header("x-api-key") == Some("sk-node-key")));
}

/// `LangChain` and `LiteLLM` stream without `stream_options`: they see only the text, and every
/// stream is logged with its tokens (Torii asked the upstream for usage).
#[actix_web::test]
async fn langchain_and_litellm_streams_are_logged_with_usage() {
    let app = spawn_app().await;
    let out = run_script(&app, "sdk_nousage.py").await;
    assert_eq!(out["langchain"], "Hello from mock", "{out}");
    assert_eq!(out["litellm"], "Hello from mock", "{out}");
    let streamed: Vec<_> = app
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.uri.ends_with("/chat/completions"))
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap())
        .filter(|b| b["stream"] == true)
        .collect();
    assert_eq!(streamed.len(), 2);
    assert!(streamed.iter().all(|b| b["stream_options"]["include_usage"] == true), "{streamed:?}");
    app.flush_logs().await;
    let logs = app.logs("").await;
    let rows = logs["result"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for log in rows {
        // The mock's model has no price, so the tokens are what shows the usage was read.
        assert_eq!((log["tokens_in"].clone(), log["tokens_out"].clone()), (12.into(), 3.into()), "{log}");
    }
}

/// The OpenAI SDK raises the documented errors for a DLP block (424/2029) and a guardrail block
/// (424/2016), and reads a streamed answer whose card number was masked across events.
#[actix_web::test]
async fn openai_python_sdk_sees_policy_errors_and_redacted_streams() {
    let app = spawn_app().await;
    let dlp = serde_json::json!({"enabled": true, "policies": [
        {"id": "ids", "action": "BLOCK", "check": ["REQUEST"], "profiles": ["us-ssn"]},
        {"id": "cards", "action": "REDACT", "check": ["RESPONSE"], "profiles": ["credit-card"]}]});
    let (status, body) =
        app.set_default(serde_json::json!({"dlp": dlp, "guardrails": {"prompt": {"P1": "BLOCK"}}})).await;
    assert_eq!(status, 200, "{body}");
    let seen = run_script(&app, "sdk_policy.py").await;
    assert_eq!(seen["ssn"]["type"], "APIStatusError", "{seen}");
    assert_eq!((seen["ssn"]["status"].clone(), seen["ssn"]["code"].clone()), (424.into(), 2029.into()));
    assert_eq!(seen["ssn"]["message"], "Request content blocked due to DLP policy violations");
    assert!(seen["ssn"]["dlp"].as_str().unwrap().contains("\"us-ssn\""));
    assert_eq!((seen["injection"]["status"].clone(), seen["injection"]["code"].clone()), (424.into(), 2016.into()));
    assert_eq!(
        seen["stream_text"], "Card on file: [REDACTED:credit_card]? no: [REDACTED:credit_card]. Bye",
        "the two spellings of one card, one split across events"
    );
}

/// Cloudflare's Python SDK drives every dynamic-routing call (its models parse each answer), and
/// the OpenAI SDK calls the route: the condition picks the provider, a deployed version changes
/// the choice, `cf-aig-provider` / `cf-aig-model` say which model answered.
#[actix_web::test]
async fn cloudflare_python_sdk_on_dynamic_routes() {
    let app = spawn_app().await;
    let api = app.url("/client/v4");
    let out = run_script_with(&app, "sdk_routes.py", &[("TORII_API", &api), ("TORII_TOKEN", &app.admin_token)]).await;
    assert_eq!(out["created_version_active"], "true", "{out}");
    assert_eq!(out["created_elements"], 5);
    assert_eq!(out["listed"], serde_json::json!(["support"]));
    assert_eq!(out["got_deployment_version"], true);
    assert_eq!(out["renamed"], "helpdesk");
    assert_eq!(out["versions_active"], serde_json::json!(["false", "true"]), "the new version is a draft");
    assert_eq!(out["draft_is_valid"], true);
    assert_eq!(out["before_deploy"]["free"], serde_json::json!(["openai", "gpt-4o-mini"]), "{out}");
    assert_eq!(out["before_deploy"]["pro"], serde_json::json!(["anthropic", "claude-sonnet-4-5"]), "{out}");
    assert_eq!(out["after_deploy_pro"], serde_json::json!(["openai", "gpt-4o-mini"]), "{out}");
    assert_eq!(out["deployments"], 2);
    assert_eq!(out["deleted"], "helpdesk");
    assert_eq!(out["after_delete"], serde_json::json!([]));
}

/// Cloudflare's Python SDK on datasets, evaluation types and evaluations: a dataset picks the
/// OpenAI logs, an evaluation computes their cost, speed and feedback figures.
#[actix_web::test]
async fn cloudflare_python_sdk_on_datasets_and_evaluations() {
    let app = spawn_app().await;
    let custom = r#"{"per_token_in": 0.001, "per_token_out": 0.002}"#;
    for (path, body) in [
        ("openai/chat/completions", r#"{"model":"gpt-4o-mini","messages":[]}"#),
        ("openai/chat/completions", r#"{"model":"gpt-4o-mini","messages":[]}"#),
        ("anthropic/v1/messages", r#"{"model":"claude","max_tokens":5,"messages":[]}"#),
    ] {
        let resp =
            app.client.post(app.gw(path)).insert_header(("cf-aig-custom-cost", custom)).send_body(body).await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    app.flush_logs().await;
    let logs = app.logs("?provider=openai").await;
    let first = logs["result"][0]["id"].as_str().unwrap().to_string();
    let (status, _) =
        app.call("PATCH", &format!("/gateways/default/logs/{first}"), Some(serde_json::json!({"feedback": 1}))).await;
    assert_eq!(status, 200);
    let api = app.url("/client/v4");
    let out = run_script_with(&app, "sdk_datasets.py", &[("TORII_API", &api), ("TORII_TOKEN", &app.admin_token)]).await;
    assert_eq!(out["dataset_filter"], serde_json::json!(["provider", "eq", ["openai"]]), "{out}");
    assert_eq!(out["datasets"], serde_json::json!(["fast", "openai-only"]));
    assert_eq!(out["renamed"], "fast-requests");
    assert_eq!(out["types"], serde_json::json!(["cost", "performance", "speed"]));
    let ev = &out["evaluation"];
    assert_eq!(
        (ev["processed"].as_bool(), ev["total_logs"].as_f64()),
        (Some(true), Some(2.0)),
        "the SDK reads numbers as floats: {out}"
    );
    let cost = ev["results"]["cost"]["total_cost"].as_f64().unwrap();
    assert!((cost - 2.0 * (12.0 * 0.001 + 5.0 * 0.002)).abs() < 1e-9, "{out}");
    assert_eq!(ev["results"]["performance"]["positive"], 1);
    assert!(ev["results"]["speed"]["p95_duration_ms"].is_number());
    assert_eq!(ev["dataset"], "openai-only");
    assert_eq!(out["evaluations"], serde_json::json!(["weekly"]));
    assert_eq!(out["got"].as_f64(), Some(2.0));
    assert_eq!(out["left"], serde_json::json!(["fast-requests"]));
}
