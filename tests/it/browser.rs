//! The admin UI in real headless Chromium (Debian `chromium` + `chromium-driver`, which
//! `.ci/test` installs), driven over `WebDriver` with fantoccini. Screenshots of the main pages
//! go to `target/ui-screenshots/`.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{TestApp, spawn_app, within};

const PASSWORD: &str = "browser tour password";

/// One browser at a time: two Chromiums on two cores next to the rest of the suite made element
/// lookups race page loads.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A chromedriver child on a port of its choosing; killed on drop.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn start_driver() -> Driver {
    let mut child = tokio::process::Command::new("chromedriver")
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start chromedriver ({e}); .ci/test installs chromium-driver"));
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let port = within(30, "chromedriver to start", async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                return rest.trim_end_matches('.').trim().to_string();
            }
        }
        panic!("chromedriver exited without starting");
    })
    .await;
    // Keep draining its output so it never blocks on a full pipe.
    actix_web::rt::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Driver { child, url: format!("http://127.0.0.1:{port}") }
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1366,900", format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("cannot start headless Chromium: {e}"))
}

struct Tour<'a> {
    app: &'a TestApp,
    c: Client,
    shots: std::path::PathBuf,
}

impl Tour<'_> {
    async fn open(&self, path: &str) {
        self.c.goto(&self.app.url(path)).await.unwrap();
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self.c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await {
            Ok(el) => el,
            Err(e) => panic!("no '{css}' on {}: {e}", self.path().await),
        }
    }

    async fn text(&self, css: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            // An element found while the page is being replaced goes stale: find it again.
            match self.find(css).await.text().await {
                Ok(text) => return text,
                Err(e) => assert!(std::time::Instant::now() < deadline, "cannot read '{css}': {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn fill(&self, css: &str, value: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            // An element found while the page is being replaced goes stale: find it again.
            let el = self.find(css).await;
            match el.clear().await {
                Ok(()) => {
                    el.send_keys(value).await.unwrap();
                    return;
                }
                Err(e) => assert!(std::time::Instant::now() < deadline, "cannot fill '{css}': {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    async fn path(&self) -> String {
        let url = self.c.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Waits until the browser is at `path` (navigation after a click is asynchronous).
    async fn arrive(&self, path: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self.path().await.starts_with(path) {
            assert!(std::time::Instant::now() < deadline, "never reached {path}, at {}", self.path().await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn shot(&self, name: &str) {
        let png = self.c.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }
}

#[actix_web::test]
async fn admin_tour_in_headless_chromium() {
    let _one = ONE_BROWSER.lock().await;
    let app = spawn_app().await;
    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let t = Tour { app: &app, c: browser(&driver, profile.path()).await, shots };

    // First start: the one-time setup link creates the admin; then sign out and back in.
    t.open(app.setup_path.as_deref().unwrap()).await;
    t.fill("input[name=username]", "ops").await;
    t.fill("input[name=password]", PASSWORD).await;
    t.fill("input[name=password2]", PASSWORD).await;
    t.click("button[type=submit]").await;
    t.find("#total-requests").await;
    t.click("#logout").await;
    t.arrive("/admin/login").await;
    t.open("/admin/tokens").await;
    t.arrive("/admin/login?next=").await;
    t.fill("#username", "ops").await;
    t.fill("#password", "not the password").await;
    t.click("#signin").await;
    assert_eq!(t.text("#login-error").await, "Wrong username or password.");
    t.shot("login").await;
    t.fill("#username", "ops").await;
    t.fill("#password", PASSWORD).await;
    t.click("#signin").await;
    t.arrive("/admin/tokens").await;

    // A gateway with caching and authentication.
    t.open("/admin/gateways").await;
    t.fill("#gateway-id", "tour").await;
    t.fill("input[name=cache_ttl]", "300").await;
    t.click("#new-gateway input[name=authentication]").await;
    t.click("#create-gateway").await;
    t.arrive("/admin/gateways/tour").await;
    assert!(t.text("#url-openai").await.ends_with("/v1/local/tour/openai"));
    assert!(t.text("#curl").await.contains("cf-aig-authorization"));
    t.shot("gateway").await;

    // A run token for it; its secret is shown once.
    t.open("/admin/tokens").await;
    t.fill("#token-name", "tour-app").await;
    t.fill("#token-gateways", "tour").await;
    t.click("#create-token").await;
    let secret = t.text("#new-secret").await;
    assert!(secret.starts_with("torii_"), "{secret}");
    t.shot("tokens").await;

    // Traffic through the gateway with that token: a MISS, then a cached HIT.
    for expected in ["MISS", "HIT"] {
        let resp = app
            .client
            .post(app.url("/v1/local/tour/openai/chat/completions"))
            .insert_header(("cf-aig-authorization", format!("Bearer {secret}")))
            .insert_header(("authorization", "Bearer sk-tour"))
            .insert_header(("content-type", "application/json"))
            .insert_header(("cf-aig-metadata", r#"{"team":"tour"}"#))
            .send_body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#)
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers().get("cf-aig-cache-status").unwrap(), expected);
    }
    app.flush_logs().await;

    // Find it in the log search by filter, open it, give feedback.
    t.open("/admin/gateways/tour/logs").await;
    t.fill("#f-meta-key", "team").await;
    t.fill("#f-meta-value", "tour").await;
    t.fill("#f-provider", "openai").await;
    t.click("#apply-filters").await;
    t.arrive("/admin/gateways/tour/logs?").await;
    assert_eq!(t.text("#log-total").await, "2");
    t.shot("logs").await;
    t.click("a.log-link").await;
    t.find("#log-fields").await;
    assert!(t.text("#response-body").await.contains("Hello from mock OpenAI"));
    t.click("#thumbs-up").await;
    t.find("#feedback-state").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while t.text("#feedback-state").await != "good" {
        assert!(std::time::Instant::now() < deadline, "feedback never showed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.shot("log-detail").await;
    t.open("/admin/gateways/tour/logs?feedback=1").await;
    assert_eq!(t.text("#log-total").await, "1");

    // Counted on the overview.
    t.open("/admin?gateway=tour&range=1h").await;
    assert_eq!(t.text("#total-requests").await, "2");
    assert!(t.text("#by-model").await.contains("gpt-mock"), "the model the answer named");
    t.shot("overview").await;

    // Purge the cache.
    t.open("/admin/cache").await;
    assert_eq!(t.text("#cache-tour .entries").await, "1");
    t.shot("cache").await;
    t.click("#cache-tour button.purge").await;
    t.arrive("/admin/cache").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while t.text("#cache-tour .entries").await != "0" {
        assert!(std::time::Instant::now() < deadline, "the purge never showed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.open("/admin/health").await;
    t.find("#health").await;
    t.shot("health").await;

    // Sign out: the pages need signing in again.
    t.click("#logout").await;
    t.arrive("/admin/login").await;
    t.open("/admin").await;
    t.arrive("/admin/login").await;
    t.c.close().await.unwrap();
}

/// A provider (or custom provider) answering `text/html` must not run script as the signed-in
/// admin: data-plane responses are sandboxed documents on their own opaque origin.
#[actix_web::test]
async fn upstream_html_cannot_act_as_the_signed_in_admin() {
    let _one = ONE_BROWSER.lock().await;
    let app = spawn_app().await;
    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    let t = Tour { app: &app, c: browser(&driver, profile.path()).await, shots };
    t.open(app.setup_path.as_deref().unwrap()).await;
    t.fill("input[name=username]", "ops").await;
    t.fill("input[name=password]", PASSWORD).await;
    t.fill("input[name=password2]", PASSWORD).await;
    t.click("button[type=submit]").await;
    t.find("#total-requests").await;

    // The page's inline script sets the title before the load event that `goto` waits for; a
    // sandboxed document never runs it, so the title stays the one in its markup.
    t.c.goto(&app.gw("openai/evil.html")).await.unwrap();
    let title = t.c.title().await.unwrap();
    assert_eq!(title, "static", "the upstream's script ran on Torii's origin");
    // The admin is still signed in (the upstream's Set-Cookie did not replace the session).
    t.open("/admin/tokens").await;
    t.arrive("/admin/tokens").await;
    t.c.close().await.unwrap();
}
