//! `spawn_app()`: the real server on port 0 with a temp data dir, every provider pointed at
//! an in-process mock upstream.

use std::net::SocketAddr;
use std::time::Duration;

use torii::auth::{self, NewToken};
use torii::config::Config;
use torii::providers::ProviderOverride;
use torii::store::{Scope, Store};

use crate::mock::{self, Mock};

pub struct TestApp {
    pub addr: SocketAddr,
    pub mock: Mock,
    /// Keeps the data directory alive for the test's duration.
    pub dir: tempfile::TempDir,
    /// A token with `read` and `edit` scopes for the management API.
    pub admin_token: String,
    pub client: awc::Client,
    pub gateway: std::sync::Arc<torii::gateway::Gateway>,
    /// The one-time admin setup path `serve` would print.
    pub setup_path: Option<String>,
    /// The admin UI's own listener, when `admin_listen` was set.
    pub admin_addr: Option<SocketAddr>,
    /// The admin UI's sessions, throttle and verifier.
    pub admin: std::sync::Arc<torii::http::ui::AdminState>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Data-plane URL on the `default` gateway of account `local`.
    pub fn gw(&self, rest: &str) -> String {
        self.url(&format!("/v1/local/default/{rest}"))
    }

    pub fn api(&self, path: &str) -> String {
        self.url(&format!("/client/v4/accounts/local/ai-gateway{path}"))
    }

    /// The running server's settings (the store is locked by the server, so tests that need
    /// objects the API cannot create yet write through these).
    pub fn settings(&self) -> std::sync::Arc<torii::control::Settings> {
        self.gateway.settings.clone()
    }

    /// Creates a token through the running server's settings; returns its secret.
    pub fn token(&self, scopes: &[torii::store::Scope], gateways: &[&str], rate_limit: Option<(u64, u64)>) -> String {
        let new = torii::auth::NewToken {
            name: "t".into(),
            scopes: scopes.to_vec(),
            gateways: gateways.iter().map(|g| (*g).to_string()).collect(),
            expires_at: None,
            rate_limit,
            limits: torii::store::TokenLimits::default(),
        };
        self.settings().create_token(new).unwrap().0
    }

    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.admin_token)
    }
}

/// Overrides every provider's template so it reaches the mock under `/{slug}/...`.
pub fn point_providers_at(config: &mut Config, mock_url: &str) {
    for p in torii::providers::PROVIDERS {
        let template = match p.slug {
            "workers-ai" => format!("{mock_url}/workers-ai/{{account_id}}"),
            "azure-openai" => format!("{mock_url}/azure-openai/{{resource}}/{{deployment}}"),
            "aws-bedrock" => format!("{mock_url}/aws-bedrock/{{service}}/{{region}}"),
            "google-vertex-ai" => format!("{mock_url}/google-vertex-ai/{{region}}"),
            "openai" | "groq" | "cerebras" | "fireworks" | "replicate" => {
                format!("{mock_url}/{}/v1", p.slug)
            }
            other => format!("{mock_url}/{other}"),
        };
        config.providers.insert(p.slug.to_string(), ProviderOverride { base_url: Some(template), account_id: None });
    }
}

/// An address that refuses connections: port 1 on loopback. A port freed after binding port 0
/// could be taken by a parallel test's server; nothing here ever binds below 1024.
pub const REFUSING: &str = "http://127.0.0.1:1";

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    try_spawn_app_with(tweak).await.unwrap()
}

/// [`spawn_app_with`], with the server's start error returned (a test that must name a port
/// of its own, freed after binding port 0, retries when another test took it first).
pub async fn try_spawn_app_with(tweak: impl FnOnce(&mut Config)) -> Result<TestApp, torii::app::StartError> {
    let mock = mock::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        Config { listen: "127.0.0.1:0".into(), data_dir: dir.path().to_path_buf(), workers: 2, ..Config::default() };
    config.shutdown_grace_secs = 1;
    point_providers_at(&mut config, &mock.url());
    tweak(&mut config);
    config.validate().unwrap();
    let admin_token = {
        let store = Store::open(&config.db_path()).unwrap();
        let new = NewToken {
            name: "test-admin".into(),
            scopes: vec![Scope::Read, Scope::Edit],
            gateways: vec![],
            expires_at: None,
            rate_limit: None,
            limits: torii::store::TokenLimits::default(),
        };
        auth::create_token(&store, new).unwrap().0
    };
    let running = torii::app::start(config)?;
    let gateway = running.gateway.clone();
    let setup_path = running.setup_path.clone();
    let admin = running.admin.clone();
    actix_web::rt::spawn(running.server);
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).disable_redirects().finish();
    Ok(TestApp {
        addr: running.addr,
        admin_addr: running.admin_addr,
        mock,
        dir,
        admin_token,
        client,
        gateway,
        setup_path,
        admin,
    })
}

/// Reads the whole body of a response.
pub async fn body_of(resp: &mut awc::ClientResponse) -> bytes::Bytes {
    resp.body().limit(64 << 20).await.unwrap()
}

pub async fn json_of(resp: &mut awc::ClientResponse) -> serde_json::Value {
    let body = body_of(resp).await;
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)))
}

/// Awaits `fut` or fails the test after `secs` seconds (no test hangs forever).
pub async fn within<T>(secs: u64, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

impl TestApp {
    /// Calls the management API with the admin token; returns the status and the JSON body.
    pub async fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        let m = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let req = self.client.request(m, self.api(path)).insert_header(("authorization", self.bearer()));
        let mut resp = match body {
            Some(b) => req.send_json(&b).await.unwrap(),
            None => req.send().await.unwrap(),
        };
        (resp.status().as_u16(), json_of(&mut resp).await)
    }

    /// Replaces the `default` gateway's settings: Cloudflare's required fields with caching, rate
    /// limits and authentication off, overridden by `extra`.
    pub async fn set_default(&self, extra: serde_json::Value) -> (u16, serde_json::Value) {
        let mut body = serde_json::json!({"cache_invalidate_on_update": false, "cache_ttl": 0, "collect_logs": true,
            "rate_limiting_interval": 0, "rate_limiting_limit": 0});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.call("PUT", "/gateways/default", Some(body)).await
    }
}
