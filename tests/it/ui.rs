//! Admin UI handler tests: every page renders, every form validates, CSRF and sign-in are
//! enforced, security headers are sent.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{TestApp, body_of, spawn_app};

pub const PASSWORD: &str = "correct horse battery staple";

/// A signed-in admin's browser: the session cookie and the CSRF token.
pub struct Ui<'a> {
    app: &'a TestApp,
    pub cookie: String,
    pub csrf: String,
    /// The `Set-Cookie` that started the session, as sent.
    pub set_cookie: String,
}

pub struct Page {
    pub status: u16,
    pub location: String,
    pub headers: awc::http::header::HeaderMap,
    pub html: String,
}

pub fn csrf_of(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    Some(html[at..].chars().take_while(|c| *c != '"').collect())
}

pub fn set_cookie(headers: &awc::http::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("set-cookie")
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
}

pub async fn fetch(app: &TestApp, method: &str, path: &str, cookie: &str, form: Option<&[(&str, &str)]>) -> Page {
    let m = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = app.client.request(m, app.url(path));
    if !cookie.is_empty() {
        req = req.insert_header(("cookie", cookie.to_string()));
    }
    let mut resp = match form {
        Some(f) => req.send_form(&f).await.unwrap(),
        None => req.send().await.unwrap(),
    };
    let html = String::from_utf8_lossy(&body_of(&mut resp).await).into_owned();
    let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    Page { status: resp.status().as_u16(), location, headers: resp.headers().clone(), html }
}

/// Creates an admin in the store and signs in through the form.
pub async fn sign_in(app: &TestApp) -> Ui<'_> {
    let settings = app.settings();
    actix_web::web::block(move || settings.create_admin("root", PASSWORD).unwrap()).await.unwrap();
    let form = fetch(app, "GET", "/admin/login", "", None).await;
    let login_cookie = set_cookie(&form.headers, "torii_login").unwrap_or_else(|| panic!("no login CSRF cookie"));
    let csrf = csrf_of(&form.html).unwrap();
    let done = fetch(
        app,
        "POST",
        "/admin/login",
        &login_cookie,
        Some(&[("csrf", &csrf), ("username", "root"), ("password", PASSWORD), ("next", "/admin/tokens")]),
    )
    .await;
    assert_eq!(done.status, 303, "{}", done.html);
    assert_eq!(done.location, "/admin/tokens");
    let raw = done.headers.get("set-cookie").unwrap().to_str().unwrap().to_string();
    assert!(raw.contains("HttpOnly") && raw.contains("SameSite=Strict"), "{raw}");
    let cookie = set_cookie(&done.headers, "torii_session").unwrap();
    let page = fetch(app, "GET", "/admin", &cookie, None).await;
    let csrf = csrf_of(&page.html).unwrap_or_else(|| panic!("no CSRF token on the page"));
    Ui { app, cookie, csrf, set_cookie: raw }
}

impl Ui<'_> {
    pub async fn get(&self, path: &str) -> Page {
        fetch(self.app, "GET", path, &self.cookie, None).await
    }

    /// Posts a form with the session's CSRF token.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut all: Vec<(&str, &str)> = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        fetch(self.app, "POST", path, &self.cookie, Some(&all)).await
    }

    /// Posts without (or with a wrong) CSRF token.
    pub async fn post_forged(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        fetch(self.app, "POST", path, &self.cookie, Some(fields)).await
    }
}

pub fn text_near<'a>(html: &'a str, id: &str) -> &'a str {
    let at = html.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in the page"));
    let rest = &html[at..];
    let start = rest.find('>').map_or(0, |i| i + 1);
    let end = rest.find("</").unwrap_or(rest.len());
    &rest[start..end]
}

#[actix_web::test]
async fn pages_need_sign_in_and_send_security_headers() {
    let app = spawn_app().await;
    for path in ["/admin", "/admin/gateways/default/logs?provider=openai", "/admin/tokens", "/admin/health"] {
        let page = fetch(&app, "GET", path, "", None).await;
        assert_eq!(page.status, 303, "{path}");
        assert!(page.location.starts_with("/admin/login?next="), "{path}: {}", page.location);
    }
    let page = fetch(&app, "POST", "/admin/tokens", "", Some(&[("name", "x")])).await;
    assert_eq!(page.status, 303, "a form without a session goes to sign-in");
    let page = fetch(&app, "GET", "/admin/tokens", "torii_session=forged", None).await;
    assert_eq!(page.status, 303, "an unknown session cookie is no session");

    let login = fetch(&app, "GET", "/admin/login", "", None).await;
    assert_eq!(login.status, 200);
    let csp = login.headers.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(login.headers.get("x-frame-options").unwrap(), "DENY");
    assert!(login.headers.get("referrer-policy").is_some());
    assert!(!login.html.contains("<script>") && !login.html.contains(" style="), "no inline script or style");
    for (asset, mime) in [("/static/app.css", "text/css"), ("/static/app.js", "javascript")] {
        let page = fetch(&app, "GET", asset, "", None).await;
        assert_eq!(page.status, 200, "{asset}");
        assert!(page.headers.get("content-type").unwrap().to_str().unwrap().contains(mime), "{asset}");
    }
    assert_eq!(fetch(&app, "GET", "/static/nope.js", "", None).await.status, 404);
}

#[actix_web::test]
async fn the_setup_link_creates_the_first_admin_once() {
    let app = spawn_app().await;
    let path = app.setup_path.clone().expect("a setup link while no admin exists");
    let token = path.split("token=").nth(1).unwrap().to_string();
    assert_eq!(fetch(&app, "GET", "/admin/setup?token=wrong", "", None).await.status, 404);
    let form = fetch(&app, "GET", &path, "", None).await;
    assert_eq!(form.status, 200);
    let bad = fetch(
        &app,
        "POST",
        "/admin/setup",
        "",
        Some(&[("token", &token), ("username", "ops"), ("password", "short"), ("password2", "short")]),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.html.contains("at least") || bad.html.contains("10 to 1024"), "{}", bad.html);
    let differ = fetch(
        &app,
        "POST",
        "/admin/setup",
        "",
        Some(&[("token", &token), ("username", "ops"), ("password", PASSWORD), ("password2", "something else!")]),
    )
    .await;
    assert!(differ.html.contains("the two passwords differ"));
    let made = fetch(
        &app,
        "POST",
        "/admin/setup",
        "",
        Some(&[("token", &token), ("username", "ops"), ("password", PASSWORD), ("password2", PASSWORD)]),
    )
    .await;
    assert_eq!(made.status, 303, "{}", made.html);
    let cookie = set_cookie(&made.headers, "torii_session").unwrap();
    assert_eq!(fetch(&app, "GET", "/admin", &cookie, None).await.status, 200, "signed in straight away");
    assert_eq!(fetch(&app, "GET", &path, "", None).await.status, 404, "the link works once");
}

#[actix_web::test]
async fn failed_sign_ins_are_slowed_down_per_client() {
    let app = spawn_app().await;
    let ui = sign_in(&app).await;
    drop(ui);
    let form = fetch(&app, "GET", "/admin/login", "", None).await;
    let cookie = set_cookie(&form.headers, "torii_login").unwrap();
    let csrf = csrf_of(&form.html).unwrap();
    let attempt = |password: &'static str| {
        let (cookie, csrf) = (cookie.clone(), csrf.clone());
        let app = &app;
        async move {
            fetch(
                app,
                "POST",
                "/admin/login",
                &cookie,
                Some(&[("csrf", &csrf), ("username", "root"), ("password", password)]),
            )
            .await
        }
    };
    let forged = fetch(&app, "POST", "/admin/login", "", Some(&[("username", "root"), ("password", PASSWORD)])).await;
    assert_eq!(forged.status, 403, "the sign-in form carries a CSRF token too");
    for _ in 0..5 {
        let page = attempt("wrong password").await;
        assert_eq!(page.status, 401);
        assert!(page.html.contains("Wrong username or password."));
    }
    let slowed = attempt(PASSWORD).await;
    assert_eq!(slowed.status, 429, "even the right password waits after 5 failures");
    let wait: u64 = slowed.headers.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    // The wait ends (poll with a deadline rather than sleeping a fixed time).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = attempt(PASSWORD).await;
        if page.status == 303 {
            break;
        }
        assert_eq!(page.status, 429);
        assert!(std::time::Instant::now() < deadline, "the throttle never lifted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[actix_web::test]
async fn every_page_renders_and_every_form_validates() {
    let app = spawn_app().await;
    let ui = sign_in(&app).await;
    // Some traffic so the log, overview and cache pages have content.
    assert_eq!(app.set_default(json!({"cache_ttl": 300})).await.0, 200);
    for _ in 0..2 {
        let resp = app
            .client
            .post(app.gw("openai/chat/completions"))
            .insert_header(("authorization", "Bearer sk-test"))
            .insert_header(("content-type", "application/json"))
            .insert_header(("cf-aig-metadata", r#"{"user":"alice"}"#))
            .send_body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#)
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    app.flush_logs().await;

    for (path, expect) in [
        ("/admin", "total-requests"),
        ("/admin?range=1h&gateway=default", "By model"),
        ("/admin?range=30d", "Requests"),
        ("/admin/gateways", "New gateway"),
        ("/admin/gateways/default", "url-openai"),
        ("/admin/gateways/default/logs", "gpt-mock"),
        ("/admin/gateways/default/logs?meta_key=user&meta_value=alice&cached=true", "HIT"),
        ("/admin/tokens", "New token"),
        ("/admin/custom-providers", "New custom provider"),
        ("/admin/cache", "cache-default"),
        ("/admin/health", "log queue depth"),
    ] {
        let page = ui.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.html);
        assert!(page.html.contains(expect), "{path} lacks {expect}");
    }
    let overview = ui.get("/admin?range=1h").await;
    assert_eq!(text_near(&overview.html, "total-requests"), "2");
    assert_eq!(ui.get("/admin/gateways/nope").await.status, 404);
    assert_eq!(ui.get("/admin/no-such-page").await.status, 404);

    // Gateways: bad values are named next to their field, nothing is created.
    let bad = ui.post("/admin/gateways", &[("id", "new-gw"), ("cache_ttl", "soon"), ("collect_logs", "on")]).await;
    assert_eq!(bad.status, 400);
    assert_eq!(text_near(&bad.html, "err-cache_ttl"), "must be a whole number (or empty)");
    let bad = ui.post("/admin/gateways", &[("id", "new-gw"), ("retry_max_attempts", "9")]).await;
    assert_eq!(bad.status, 400);
    assert!(!text_near(&bad.html, "err-retry_max_attempts").is_empty(), "{}", bad.html);
    let bad = ui.post("/admin/gateways", &[("id", "bad id!")]).await;
    assert!(!text_near(&bad.html, "err-id").is_empty());
    assert_eq!(app.call("GET", "/gateways/new-gw", None).await.0, 404, "nothing was created");
    let made = ui
        .post(
            "/admin/gateways",
            &[("id", "new-gw"), ("cache_ttl", "120"), ("rate_limiting_limit", "10"), ("rate_limiting_interval", "60")],
        )
        .await;
    assert_eq!(made.status, 303, "{}", made.html);
    assert_eq!(made.location, "/admin/gateways/new-gw");
    let dup = ui.post("/admin/gateways", &[("id", "new-gw")]).await;
    assert_eq!(dup.status, 400);
    assert!(!text_near(&dup.html, "err-id").is_empty());
    let (_, g) = app.call("GET", "/gateways/new-gw", None).await;
    assert_eq!(g["result"]["cache_ttl"], 120);
    assert_eq!(g["result"]["rate_limiting_limit"], 10);

    // Editing: a bad value changes nothing; a good one applies; forged forms are refused.
    let bad = ui.post("/admin/gateways/new-gw", &[("cache_ttl", "120"), ("log_management", "5")]).await;
    assert_eq!(bad.status, 400);
    assert!(!text_near(&bad.html, "err-log_management").is_empty());
    let forged = ui.post_forged("/admin/gateways/new-gw", &[("cache_ttl", "999")]).await;
    assert_eq!(forged.status, 403);
    let forged = ui.post_forged("/admin/gateways/new-gw", &[("csrf", "0000"), ("cache_ttl", "999")]).await;
    assert_eq!(forged.status, 403);
    assert_eq!(app.call("GET", "/gateways/new-gw", None).await.1["result"]["cache_ttl"], 120, "unchanged");
    let saved = ui
        .post(
            "/admin/gateways/new-gw",
            &[("cache_ttl", "60"), ("collect_logs", "on"), ("retry_max_attempts", "3"), ("retry_backoff", "linear")],
        )
        .await;
    assert_eq!(saved.status, 303, "{}", saved.html);
    let (_, g) = app.call("GET", "/gateways/new-gw", None).await;
    assert_eq!(g["result"]["cache_ttl"], 60);
    assert_eq!(g["result"]["retry_max_attempts"], 3);
    assert_eq!(g["result"]["rate_limiting_limit"], serde_json::Value::Null, "an emptied field is cleared");

    // Provider keys: refused without authentication (message by the form), then stored and masked.
    let refused =
        ui.post("/admin/gateways/new-gw/keys", &[("provider_slug", "openai"), ("secret", "sk-ui-key-123456")]).await;
    assert_eq!(refused.status, 400);
    assert!(text_near(&refused.html, "err-key-form").contains("authentication"), "{}", refused.html);
    assert!(!refused.html.contains("sk-ui-key-123456"), "the secret is not echoed");
    ui.post("/admin/gateways/new-gw", &[("cache_ttl", "60"), ("collect_logs", "on"), ("authentication", "on")]).await;
    let stored = ui
        .post(
            "/admin/gateways/new-gw/keys",
            &[("provider_slug", "openai"), ("alias", "default"), ("secret", "sk-ui-key-123456")],
        )
        .await;
    assert_eq!(stored.status, 303, "{}", stored.html);
    let page = ui.get("/admin/gateways/new-gw").await;
    assert!(page.html.contains("sk-u…3456") && !page.html.contains("sk-ui-key-123456"));
    assert!(page.html.contains("cf-aig-authorization: Bearer $TORII_TOKEN"), "curl example with the token header");
    let bedrock =
        ui.post("/admin/gateways/new-gw/keys", &[("provider_slug", "aws-bedrock"), ("secret", "not json")]).await;
    assert!(text_near(&bedrock.html, "err-secret").contains("accessKeyId"));

    // Deleting asks first, then removes the gateway and its keys.
    let confirm = ui.get("/admin/gateways/new-gw/delete").await;
    assert!(confirm.html.contains("Delete gateway") && confirm.html.contains("new-gw"), "{}", confirm.html);
    assert_eq!(ui.post("/admin/gateways/new-gw/delete", &[]).await.status, 303);
    assert_eq!(app.call("GET", "/gateways/new-gw", None).await.0, 404);
    // The snapshot is rebuilt from the store after the delete.
    let snapshot = app.settings().snapshot();
    assert!(!snapshot.provider_keys.contains_key("new-gw"), "its stored keys went with it");

    // Tokens: validation, the secret shown once, revoke.
    let bad = ui.post("/admin/tokens", &[("name", "")]).await;
    assert_eq!(bad.status, 400);
    assert!(!text_near(&bad.html, "err-name").is_empty() && !text_near(&bad.html, "err-scope").is_empty());
    let bad = ui.post("/admin/tokens", &[("name", "ci"), ("scope", "root")]).await;
    assert_eq!(bad.status, 400);
    let made =
        ui.post("/admin/tokens", &[("name", "ci"), ("scope", "run"), ("scope", "read"), ("gateways", "default")]).await;
    assert_eq!(made.status, 200, "{}", made.html);
    let secret = text_near(&made.html, "new-secret").to_string();
    assert!(secret.starts_with("torii_"), "{secret}");
    let list = ui.get("/admin/tokens").await;
    assert!(!list.html.contains(&secret), "shown once");
    assert!(list.html.contains("run, read") || list.html.contains("read, run"));
    let (_, tokens) = app.call("GET", "/tokens", None).await;
    let id = tokens["result"].as_array().unwrap().iter().find(|t| t["name"] == "ci").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(ui.post(&format!("/admin/tokens/{id}/revoke"), &[]).await.status, 303);
    assert!(ui.get("/admin/tokens").await.html.contains("revoked"));

    // Custom providers.
    let bad =
        ui.post("/admin/custom-providers", &[("name", "Local"), ("slug", "Bad Slug"), ("base_url", "ftp://x")]).await;
    assert_eq!(bad.status, 400);
    assert!(!text_near(&bad.html, "err-slug").is_empty() || !text_near(&bad.html, "err-base_url").is_empty());
    let bad = ui.post("/admin/custom-providers", &[("name", ""), ("slug", "local"), ("base_url", "")]).await;
    assert_eq!(text_near(&bad.html, "err-base_url"), "is required");
    let made = ui
        .post(
            "/admin/custom-providers",
            &[("name", "Local"), ("slug", "local"), ("base_url", &app.mock.url()), ("enable", "on")],
        )
        .await;
    assert_eq!(made.status, 303, "{}", made.html);
    let edit = made.location.clone();
    let bad =
        ui.post(&edit, &[("name", "Local"), ("slug", "local"), ("base_url", "not a url"), ("enable", "on")]).await;
    assert_eq!(bad.status, 400);
    assert!(!text_near(&bad.html, "err-base_url").is_empty());
    assert_eq!(
        ui.post(&edit, &[("name", "Renamed"), ("slug", "local"), ("base_url", &app.mock.url())]).await.status,
        303
    );
    assert!(ui.get("/admin/custom-providers").await.html.contains("Renamed"));
    assert_eq!(ui.post(&format!("{edit}/delete"), &[]).await.status, 303);
    assert!(!ui.get("/admin/custom-providers").await.html.contains("Renamed"));

    // Logs: bad filters get a message, detail shows the bodies, feedback, delete by filter.
    let bad = ui.get("/admin/gateways/default/logs?min_cost=lots").await;
    assert_eq!(bad.status, 400);
    assert!(text_near(&bad.html, "filter-error").contains("min_cost"));
    let list = ui.get("/admin/gateways/default/logs?provider=openai").await;
    let at = list.html.find("class=\"log-link\" href=\"").unwrap() + "class=\"log-link\" href=\"".len();
    let detail_path: String = list.html[at..].chars().take_while(|c| *c != '"').collect();
    let detail = ui.get(&detail_path).await;
    assert_eq!(detail.status, 200);
    assert!(detail.html.contains("Hello from mock OpenAI"), "response body shown");
    assert!(
        detail.html.contains("&#34;model&#34;: &#34;gpt-4o-mini&#34;"),
        "request pretty-printed: {}",
        &detail.html[detail.html.find("request-body").unwrap_or(0)..][..300]
    );
    assert!(!detail.html.contains("sk-test"), "credentials stay redacted");
    assert_eq!(ui.post(&format!("{detail_path}/feedback"), &[("feedback", "-1")]).await.status, 303);
    assert_eq!(text_near(&ui.get(&detail_path).await.html, "feedback-state"), "bad");
    assert_eq!(ui.post(&format!("{detail_path}/feedback"), &[("feedback", "7")]).await.status, 400);
    let filtered = ui.get("/admin/gateways/default/logs?feedback=-1").await;
    assert_eq!(text_near(&filtered.html, "log-total"), "1");
    let confirm = ui.get("/admin/gateways/default/logs/delete?feedback=-1").await;
    assert!(confirm.html.contains("Delete 1 logs"), "{}", confirm.html);
    assert_eq!(ui.post("/admin/gateways/default/logs/delete", &[("feedback", "-1")]).await.status, 303);
    assert_eq!(text_near(&ui.get("/admin/gateways/default/logs").await.html, "log-total"), "1", "only the match went");

    // Cache purge, then sign out (the session ends).
    let cache = ui.get("/admin/cache").await;
    assert!(cache.html.contains("class=\"entries\">1<"), "{}", cache.html);
    assert_eq!(ui.post("/admin/cache/default/purge", &[]).await.status, 303);
    assert!(ui.get("/admin/cache").await.html.contains("class=\"entries\">0<"));
    assert_eq!(ui.post_forged("/admin/logout", &[]).await.status, 403);
    let out = ui.post("/admin/logout", &[]).await;
    assert_eq!(out.status, 303);
    assert_eq!(ui.get("/admin").await.status, 303, "signed out");
}

#[actix_web::test]
async fn every_form_refuses_a_missing_or_wrong_csrf_token() {
    let app = spawn_app().await;
    let ui = sign_in(&app).await;
    let (_, tokens) = app.call("GET", "/tokens", None).await;
    let token = tokens["result"][0]["id"].as_str().unwrap().to_string();
    let log = {
        app.client.post(app.gw("openai/chat/completions")).send_body("{}").await.unwrap();
        app.flush_logs().await;
        app.logs("").await["result"][0]["id"].as_str().unwrap().to_string()
    };
    let posts = [
        "/admin/logout".to_string(),
        "/admin/gateways".into(),
        "/admin/gateways/default".into(),
        "/admin/gateways/default/delete".into(),
        "/admin/gateways/default/keys".into(),
        "/admin/gateways/default/keys/some-key/delete".into(),
        "/admin/gateways/default/logs/delete".into(),
        format!("/admin/gateways/default/logs/{log}/feedback"),
        "/admin/tokens".into(),
        format!("/admin/tokens/{token}/revoke"),
        "/admin/custom-providers".into(),
        "/admin/custom-providers/some-id".into(),
        "/admin/custom-providers/some-id/delete".into(),
        "/admin/cache/default/purge".into(),
        "/admin/dlp".into(),
        "/admin/dlp/some-id/delete".into(),
        "/admin/gateways/default/routes".into(),
        "/admin/gateways/default/aliases".into(),
        "/admin/gateways/default/aliases/a/delete".into(),
        "/admin/gateways/default/routes/r/versions".into(),
        "/admin/gateways/default/routes/r/deploy".into(),
        "/admin/gateways/default/routes/r/delete".into(),
        "/admin/gateways/default/datasets".into(),
        "/admin/gateways/default/evaluations".into(),
    ];
    for path in &posts {
        for fields in [vec![("id", "x")], vec![("csrf", "0123"), ("id", "x")]] {
            let page = ui.post_forged(path, &fields).await;
            assert_eq!(page.status, 403, "{path} {fields:?}");
            assert!(page.html.contains("did not come from this site"), "{path}");
        }
    }
    // Nothing changed: the token is live, the gateway is there, the log has no feedback.
    let (_, tokens) = app.call("GET", "/tokens", None).await;
    assert!(tokens["result"][0]["revoked_at"].is_null());
    assert_eq!(app.call("GET", "/gateways/default", None).await.0, 200);
    assert!(app.logs("").await["result"][0]["feedback"].is_null());
    assert_eq!(ui.get("/admin").await.status, 200, "still signed in");
}

#[actix_web::test]
async fn the_session_cookie_is_secure_when_reached_over_https() {
    // Behind a trusted proxy (loopback here), its X-Forwarded-Proto decides; from anyone else it
    // is ignored.
    for (trusted, https_is_secure) in [(true, true), (false, false)] {
        let app = crate::helpers::spawn_app_with(|c| {
            if trusted {
                c.trusted_proxies = vec!["127.0.0.0/8".into()];
            }
        })
        .await;
        secure_cookie_cases(&app, https_is_secure).await;
    }
}

async fn secure_cookie_cases(app: &TestApp, https_is_secure: bool) {
    let settings = app.settings();
    actix_web::web::block(move || settings.create_admin("root", PASSWORD).unwrap()).await.unwrap();
    for (proto, secure) in [("http", false), ("https", https_is_secure)] {
        let form = fetch(app, "GET", "/admin/login", "", None).await;
        let login_cookie = set_cookie(&form.headers, "torii_login").unwrap();
        let csrf = csrf_of(&form.html).unwrap();
        let resp = app
            .client
            .post(app.url("/admin/login"))
            .insert_header(("cookie", login_cookie))
            .insert_header(("x-forwarded-proto", proto))
            .send_form(&[("csrf", csrf.as_str()), ("username", "root"), ("password", PASSWORD)])
            .await
            .unwrap();
        assert_eq!(resp.status(), 303);
        let cookie = resp.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
        assert!(
            cookie.starts_with("torii_session=") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict")
        );
        assert_eq!(cookie.contains("; Secure"), secure, "{proto}: {cookie}");
    }
}

/// DLP and guardrails from the admin UI: a custom profile, a gateway's policies as JSON (errors
/// named next to the field), the findings in the log detail and the log filter.
#[actix_web::test]
async fn dlp_and_guardrails_are_set_and_seen_in_the_admin_ui() {
    let app = spawn_app().await;
    let ui = sign_in(&app).await;
    let page = ui.get("/admin/dlp").await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("credit-card") && page.html.contains("New custom profile"));
    let bad = ui.post("/admin/dlp", &[("id", "emp"), ("name", "Employees"), ("pattern", "(open")]).await;
    assert_eq!(bad.status, 400);
    assert!(!text_near(&bad.html, "err-pattern").is_empty(), "{}", bad.html);
    let made = ui
        .post(
            "/admin/dlp",
            &[("id", "emp"), ("name", "Employees"), ("pattern", r"\bE-[0-9]{6}\b"), ("keywords", "employee, staff")],
        )
        .await;
    assert_eq!(made.status, 303, "{}", made.html);
    assert!(ui.get("/admin/dlp").await.html.contains("employee, staff"));

    let fields = [("cache_ttl", "0"), ("collect_logs", "on")];
    let bad_policy =
        [&fields[..], &[("dlp", r#"{"enabled": true, "action": "BLOCK", "profiles": ["nope"]}"#)]].concat();
    let bad = ui.post("/admin/gateways/default", &bad_policy).await;
    assert_eq!(bad.status, 400);
    assert!(text_near(&bad.html, "err-dlp").contains("dlp.profiles[0]"), "{}", bad.html);
    let not_json = [&fields[..], &[("guardrails", "{prompt")]].concat();
    assert!(!text_near(&ui.post("/admin/gateways/default", &not_json).await.html, "err-guardrails").is_empty());
    let good = [
        &fields[..],
        &[("dlp", r#"{"enabled": true, "policies": [{"id": "staff", "action": "BLOCK", "check": ["REQUEST"], "profiles": ["emp"]}]}"#)],
    ]
    .concat();
    assert_eq!(ui.post("/admin/gateways/default", &good).await.status, 303);
    let shown = ui.get("/admin/gateways/default").await;
    assert!(shown.html.contains("staff") && shown.html.contains("emp"), "the policy is shown back");

    let resp = app
        .client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("authorization", "Bearer sk-test"))
        .insert_header(("content-type", "application/json"))
        .send_body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"employee E-123456 called"}]}"#)
        .await
        .unwrap();
    assert_eq!(resp.status(), 424);
    app.flush_logs().await;
    let list = ui.get("/admin/gateways/default/logs?dlp_action=BLOCK").await;
    assert_eq!(list.status, 200);
    let id = app.logs("").await["result"][0]["id"].as_str().unwrap().to_string();
    assert!(list.html.contains(&id), "the filter finds the blocked request");
    assert!(!ui.get("/admin/gateways/default/logs?dlp_action=FLAG").await.html.contains(&id));
    let detail = ui.get(&format!("/admin/gateways/default/logs/{id}")).await;
    assert!(detail.html.contains("BLOCK: emp (pattern; policy staff; REQUEST)"), "{}", detail.html);
}

/// Routes from the admin UI: created from JSON (a broken graph refused with the element named),
/// drawn as SVG, a new version saved and deployed, the first one deployed again (rollback); an
/// alias saved; the gateway page shows the spend so far under its limits.
#[actix_web::test]
async fn routes_aliases_and_spend_in_the_admin_ui() {
    let app = spawn_app().await;
    let ui = sign_in(&app).await;
    let page = ui.get("/admin/gateways/default/routes").await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("New route") && page.html.contains("Model aliases"));
    let model = |id: &str, m: &str| {
        json!({"id": id, "type": "model", "properties": {"provider": "openai", "model": m, "timeout": 0, "retries": 0},
            "outputs": {"success": {"elementId": "end"}, "fallback": {"elementId": "end"}}})
    };
    let start = |to: &str| json!({"id": "start", "type": "start", "outputs": {"next": {"elementId": to}}});
    let end = json!({"id": "end", "type": "end", "outputs": {}});
    let broken = json!([start("ghost"), model("m", "gpt-4o-mini"), end]).to_string();
    let bad = ui.post("/admin/gateways/default/routes", &[("name", "r1"), ("elements", &broken)]).await;
    assert_eq!(bad.status, 400);
    assert!(text_near(&bad.html, "err-elements").contains("element start"), "{}", bad.html);
    let v1 = json!([start("m"), model("m", "gpt-4o-mini"), end]).to_string();
    let made = ui.post("/admin/gateways/default/routes", &[("name", "r1"), ("elements", &v1)]).await;
    assert_eq!(made.status, 303, "{}", made.html);
    let route_page = ui.get(&made.location).await;
    assert!(route_page.html.contains("<svg") && route_page.html.contains("openai/gpt-4o-mini"), "{}", route_page.html);
    let v2 = json!([start("m"), model("m", "gpt-4o"), end]).to_string();
    let saved = ui.post(&format!("{}/versions", made.location), &[("elements", &v2), ("deploy", "on")]).await;
    assert_eq!(saved.status, 303, "{}", saved.html);
    let ask = || async {
        let mut resp = app
            .client
            .post(app.gw("compat/chat/completions"))
            .insert_header(("authorization", "Bearer sk-test"))
            .send_json(&json!({"model": "dynamic/r1", "messages": [{"role": "user", "content": "hi"}]}))
            .await
            .unwrap();
        let _ = resp.body().await;
        resp.headers().get("cf-aig-model").unwrap().to_str().unwrap().to_string()
    };
    assert_eq!(ask().await, "gpt-4o", "the saved version is live");
    let (_, listed) = app.call("GET", "/gateways/default/routes", None).await;
    let route_id = listed["data"]["routes"][0]["id"].as_str().unwrap().to_string();
    let (_, versions) = app.call("GET", &format!("/gateways/default/routes/{route_id}/versions"), None).await;
    let first = versions["data"]["versions"][1]["version_id"].as_str().unwrap().to_string();
    let rolled = ui.post(&format!("{}/deploy", made.location), &[("version_id", &first)]).await;
    assert_eq!(rolled.status, 303);
    assert_eq!(ask().await, "gpt-4o-mini", "rolled back");

    let alias = ui
        .post(
            "/admin/gateways/default/aliases",
            &[("alias", "fast"), ("models", "openai/gpt-4o-mini, anthropic/claude-haiku-4-5")],
        )
        .await;
    assert_eq!(alias.status, 303, "{}", alias.html);
    assert!(ui.get("/admin/gateways/default/routes").await.html.contains("custom/fast"));
    let bad = ui.post("/admin/gateways/default/aliases", &[("alias", "x"), ("models", "gpt-4o")]).await;
    assert!(text_near(&bad.html, "err-alias").contains("models[0]"), "{}", bad.html);

    let limits = r#"{"rules": [{"id": "daily", "limitType": "cost", "limit": 10, "window": 86400}]}"#;
    assert_eq!(
        ui.post("/admin/gateways/default", &[("cache_ttl", "0"), ("collect_logs", "on"), ("spend_limits", limits)])
            .await
            .status,
        303
    );
    ask().await;
    let gateway = ui.get("/admin/gateways/default").await;
    assert!(gateway.html.contains("<td>daily</td>"), "the rule's spend so far is listed: {}", gateway.html);
}

/// Datasets and evaluations from the admin UI, and the export line of the health page.
#[actix_web::test]
async fn datasets_and_evaluations_in_the_admin_ui() {
    let app = spawn_app().await;
    let ui = sign_in(&app).await;
    for _ in 0..2 {
        let resp = app
            .client
            .post(app.gw("openai/chat/completions"))
            .send_body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    app.flush_logs().await;
    let bad = ui
        .post(
            "/admin/gateways/default/datasets",
            &[("name", "x"), ("filters", r#"[{"key": "path", "operator": "eq", "value": ["a"]}]"#)],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(text_near(&bad.html, "err-dataset").contains("filters[0].key"), "{}", bad.html);
    let made = ui
        .post(
            "/admin/gateways/default/datasets",
            &[("name", "openai"), ("filters", r#"[{"key": "provider", "operator": "eq", "value": ["openai"]}]"#)],
        )
        .await;
    assert_eq!(made.status, 303, "{}", made.html);
    let (_, list) = app.call("GET", "/gateways/default/datasets", None).await;
    let id = list["result"][0]["id"].as_str().unwrap().to_string();
    let ran = ui
        .post(
            "/admin/gateways/default/evaluations",
            &[("evaluation", "first"), ("dataset", &id), ("type", "cost"), ("type", "speed")],
        )
        .await;
    assert_eq!(ran.status, 303, "{}", ran.html);
    let page = ui.get("/admin/gateways/default/evaluations").await;
    assert!(
        page.html.contains("first") && page.html.contains("total_cost") && page.html.contains("p95_duration_ms"),
        "{}",
        page.html
    );
    let health = ui.get("/admin/health").await;
    assert!(text_near(&health.html, "export-state").starts_with("off"), "{}", health.html);
}

/// A token with a budget, a token rate and allow-lists from the admin UI; the list shows the
/// budget with its spend so far; bad values are named.
#[actix_web::test]
async fn token_budgets_in_the_admin_ui() {
    let app = spawn_app().await;
    let ui = sign_in(&app).await;
    let bad = ui.post("/admin/tokens", &[("name", "team"), ("scope", "run"), ("budget_usd", "-3")]).await;
    assert_eq!(bad.status, 400);
    assert!(!text_near(&bad.html, "err-budget_usd").is_empty(), "{}", bad.html);
    let made = ui
        .post(
            "/admin/tokens",
            &[
                ("name", "team"),
                ("scope", "run"),
                ("budget_usd", "5"),
                ("budget_period", "86400"),
                ("tokens_per_minute", "1000"),
                ("allowed_models", "openai/gpt-4o*"),
            ],
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.html);
    assert!(made.html.contains("of $5 per 86400 s") && made.html.contains("1000 tokens/min"), "{}", made.html);
    assert!(made.html.contains("models openai/gpt-4o*"), "{}", made.html);
    let (_, tokens) = app.call("GET", "/tokens", None).await;
    let team = tokens["result"].as_array().unwrap().iter().find(|t| t["name"] == "team").unwrap();
    assert_eq!(
        (team["budget_usd"].clone(), team["tokens_per_minute"].clone()),
        (serde_json::json!(5.0), serde_json::json!(1000))
    );
}
