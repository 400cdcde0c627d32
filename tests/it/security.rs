//! Hardening: what an upstream answers cannot act on Torii's origin, request bodies cannot
//! exhaust memory, the sign-in throttle holds under concurrency, token scopes hold everywhere.

use crate::helpers::spawn_app;

#[actix_web::test]
async fn upstream_html_is_sandboxed_and_cannot_set_cookies() {
    let app = spawn_app().await;
    let resp = app.client.get(app.gw("openai/evil.html")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    let csp = h.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.starts_with("sandbox"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(h.get("x-content-type-options").unwrap(), "nosniff");
    assert!(h.get("set-cookie").is_none(), "an upstream's Set-Cookie reached the client");
    // Gateway errors too.
    let resp = app.client.get(app.url("/v1/local/nope/openai/x")).send().await.unwrap();
    assert!(resp.headers().get("content-security-policy").unwrap().to_str().unwrap().starts_with("sandbox"));
}

/// Concurrent wrong passwords: each attempt is counted before its password is checked, and at
/// most two checks run at once, so a burst runs at most `FREE` argon2 verifications.
#[actix_web::test]
async fn concurrent_sign_ins_cannot_outrun_the_throttle() {
    use crate::ui::{csrf_of, fetch, set_cookie};
    let app = spawn_app().await;
    let settings = app.settings();
    actix_web::web::block(move || settings.create_admin("root", "right password").unwrap()).await.unwrap();
    let form = fetch(&app, "GET", "/admin/login", "", None).await;
    let cookie = set_cookie(&form.headers, "torii_login").unwrap();
    let csrf = csrf_of(&form.html).unwrap();
    let before = app.admin.verifier.runs();
    let attempts = (0..200).map(|_| {
        let (app, cookie, csrf) = (&app, cookie.clone(), csrf.clone());
        async move {
            let fields = [("csrf", csrf.as_str()), ("username", "root"), ("password", "wrong")];
            fetch(app, "POST", "/admin/login", &cookie, Some(&fields)).await
        }
    });
    let pages = futures_util::future::join_all(attempts).await;
    let verified = app.admin.verifier.runs() - before;
    let refused = pages.iter().filter(|p| p.status == 429).count();
    let wrong = pages.iter().filter(|p| p.status == 401).count();
    assert!(verified <= u64::from(torii::auth::admin::Throttle::FREE), "{verified} verifications ran");
    assert_eq!(wrong + refused, 200, "every attempt answered 401 or 429");
    assert!(pages.iter().filter(|p| p.status == 429).all(|p| p.headers.contains_key("retry-after")));
}

/// The hardened setup: the admin UI on its own listener, the data plane without admin pages.
#[actix_web::test]
async fn admin_ui_on_its_own_listener() {
    let app = crate::helpers::spawn_app_with(|c| c.admin_listen = Some("127.0.0.1:0".into())).await;
    let admin = app.admin_addr.expect("an admin listener");
    assert_ne!(admin, app.addr);
    // The data-plane listener has no admin page and no asset.
    for path in ["/admin/login", "/admin", "/static/app.css"] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path} on the data-plane listener");
    }
    // The admin listener has them, and neither the data plane nor the management API.
    let resp = app.client.get(format!("http://{admin}/admin/login")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = app.client.get(format!("http://{admin}/static/app.css")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = app.client.get(format!("http://{admin}/v1/local/default/openai/models")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(app.mock.requests().is_empty(), "the admin listener forwarded a request");
    let resp = app
        .client
        .get(format!("http://{admin}/client/v4/accounts/local/ai-gateway/gateways"))
        .insert_header(("authorization", app.bearer()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // Both serve the operations endpoints.
    for base in [app.url(""), format!("http://{admin}")] {
        let resp = app.client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
}

/// The session cookie is scoped to `/admin`, and Torii's cookies never reach a provider.
#[actix_web::test]
async fn admin_cookies_stay_with_the_admin_ui() {
    let app = spawn_app().await;
    let ui = crate::ui::sign_in(&app).await;
    assert!(ui.set_cookie.contains("Path=/admin;"), "{}", ui.set_cookie);
    let resp = app
        .client
        .get(app.gw("openai/models"))
        .insert_header(("cookie", "torii_session=live-session-id; torii_login=x; lb=keep"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = app.mock.requests().pop().unwrap();
    assert_eq!(seen.header("cookie"), Some("lb=keep"));
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Polls `/metrics` on the release-like binary until `torii_pending_body_bytes` is `want`.
fn wait_pending(addr: &str, want: usize) {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let held = text.lines().find_map(|l| l.strip_prefix("torii_pending_body_bytes ")).unwrap_or("?").to_string();
        if held == want.to_string() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "pending body bytes stayed {held}, want {want}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// 1,000 connections each declaring a 25 MB body and sending 9 bytes: memory grows with what
/// arrives (it grew by the declared length: 300 such connections took +633 MB).
#[test]
fn declared_body_lengths_do_not_reserve_memory() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let served = crate::cli::serve(dir.path(), &[]);
    let pid = served.child.id();
    wait_pending(&served.addr, 0);
    let before = rss_kib(pid);
    let n = 1000;
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = std::net::TcpStream::connect(&served.addr).unwrap();
        let head = format!(
            "POST /v1/local/default/openai/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{{\"model\":",
            25 * 1024 * 1024
        );
        s.write_all(head.as_bytes()).unwrap();
        conns.push(s);
    }
    wait_pending(&served.addr, 9 * n);
    let during = rss_kib(pid);
    // A connection costs its buffers (tens of KiB), never its declared 25 MB.
    let grown_mib = during.saturating_sub(before) / 1024;
    eprintln!("RSS {before} -> {during} KiB with {n} unfinished bodies");
    assert!(grown_mib < 150, "RSS grew by {grown_mib} MiB for {n} unfinished bodies ({before} -> {during} KiB)");
    drop(conns);
    wait_pending(&served.addr, 0);
}

/// Sends raw bytes on a new connection; returns what came back before the server closed (or
/// what arrived within 10 s).
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

#[actix_web::test]
async fn a_stalled_body_gets_408_and_a_full_pool_503() {
    let app = crate::helpers::spawn_app_with(|c| {
        c.body_timeout_ms = 300;
        c.body_min_rate = 1024 * 1024;
        c.max_pending_body_bytes = 64 * 1024;
    })
    .await;
    let started = std::time::Instant::now();
    let answer = raw_exchange(
        app.addr,
        b"POST /v1/local/default/openai/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n{\"model\":",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":2002") && answer.contains("not received in time"), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    // A body larger than what all unfinished bodies may hold together: 503, nothing sent on.
    let big = "x".repeat(100 * 1024);
    let mut resp = app.client.post(app.gw("openai/chat/completions")).send_body(big).await.unwrap();
    assert_eq!(resp.status(), 503);
    let body = crate::helpers::json_of(&mut resp).await;
    assert_eq!(body["error"][0]["code"], 2010);
    assert!(app.mock.requests().is_empty());
    assert_eq!(app.gateway.pending_bodies.held(), 0);
    // The server keeps serving.
    let resp = app.client.post(app.gw("openai/chat/completions")).send_body("{}").await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[actix_web::test]
async fn websocket_upgrades_that_cannot_be_served_are_answered_at_once() {
    let app = spawn_app().await;
    let answer = raw_exchange(
        app.addr,
        b"GET /v1/local/nope HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert!(answer.contains("\"code\":2001"), "an unknown gateway, at once: {answer}");
}

/// Calls the management API with `token`; returns the status and the JSON body.
async fn call_as(
    app: &crate::helpers::TestApp,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let m = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
    let req = app.client.request(m, app.api(path)).insert_header(("authorization", format!("Bearer {token}")));
    let mut resp = match body {
        Some(b) => req.send_json(&b).await.unwrap(),
        None => req.send().await.unwrap(),
    };
    let bytes = crate::helpers::body_of(&mut resp).await;
    (resp.status().as_u16(), serde_json::from_slice(&bytes).unwrap_or_default())
}

/// A token limited to gateway `a`, over every management route: nothing on gateway `b`, no new
/// gateway, no change to account-wide objects, no token broader than itself.
#[actix_web::test]
async fn a_gateway_limited_token_stays_within_its_gateways() {
    use crate::management::gateway_body;
    use serde_json::json;
    let app = spawn_app().await;
    for id in ["a", "b"] {
        assert_eq!(app.call("POST", "/gateways", Some(gateway_body(id))).await.0, 200);
    }
    let (status, body) = app
        .call("POST", "/tokens", Some(json!({"name": "team-a", "scopes": ["read", "edit"], "gateways": ["a"]})))
        .await;
    assert_eq!(status, 200, "{body}");
    let limited = body["result"]["value"].as_str().unwrap().to_string();
    let forbidden = [
        ("POST", "/gateways", Some(gateway_body("c"))),
        ("GET", "/gateways/b", None),
        ("PUT", "/gateways/b", Some(gateway_body("b"))),
        ("DELETE", "/gateways/b", None),
        ("GET", "/gateways/b/url/openai", None),
        ("GET", "/gateways/b/logs", None),
        ("DELETE", "/gateways/b/logs", None),
        ("GET", "/gateways/b/logs/0190", None),
        ("PATCH", "/gateways/b/logs/0190", Some(json!({"feedback": 1}))),
        ("GET", "/gateways/b/logs/0190/request", None),
        ("GET", "/gateways/b/logs/0190/response", None),
        ("GET", "/gateways/b/analytics", None),
        ("GET", "/gateways/b/cache", None),
        ("DELETE", "/gateways/b/cache", None),
        ("GET", "/gateways/b/provider_configs", None),
        ("POST", "/gateways/b/provider_configs", Some(json!({"provider": "openai", "secret": "sk-x", "alias": "x"}))),
        ("DELETE", "/gateways/b/provider_configs/x", None),
        ("POST", "/custom-providers", Some(json!({"name": "v", "slug": "v", "base_url": "http://127.0.0.1:1"}))),
        ("POST", "/tokens", Some(json!({"name": "all", "scopes": ["run"]}))),
        ("POST", "/tokens", Some(json!({"name": "b", "scopes": ["run"], "gateways": ["b"]}))),
        ("POST", "/tokens", Some(json!({"name": "ab", "scopes": ["run"], "gateways": ["a", "b"]}))),
    ];
    for (method, path, body) in forbidden {
        let (status, answer) = call_as(&app, &limited, method, path, body).await;
        assert_eq!((status, answer["errors"][0]["code"].clone()), (403, json!(9109)), "{method} {path}: {answer}");
    }
    // Gateway `b` is untouched, and so is everything else.
    assert_eq!(app.call("GET", "/gateways/b", None).await.0, 200);
    // What it may do: its own gateway, reads of account-wide objects, narrower tokens.
    let (status, body) = call_as(&app, &limited, "GET", "/gateways", None).await;
    assert_eq!(status, 200);
    let ids: Vec<_> = body["result"].as_array().unwrap().iter().map(|g| g["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a"]);
    for path in ["/gateways/a", "/gateways/a/logs", "/gateways/a/analytics", "/gateways/a/cache", "/custom-providers"] {
        assert_eq!(call_as(&app, &limited, "GET", path, None).await.0, 200, "{path}");
    }
    assert_eq!(call_as(&app, &limited, "PUT", "/gateways/a", Some(gateway_body("a"))).await.0, 200);
    let narrower = json!({"name": "a-run", "scopes": ["run"], "gateways": ["a"]});
    let (status, minted) = call_as(&app, &limited, "POST", "/tokens", Some(narrower)).await;
    assert_eq!(status, 200, "{minted}");
    // Tokens: it lists only those within its gateways, and cannot revoke the all-gateway one.
    let (_, list) = call_as(&app, &limited, "GET", "/tokens", None).await;
    let names: Vec<_> = list["result"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"team-a") && names.contains(&"a-run"), "{names:?}");
    let (_, all) = app.call("GET", "/tokens", None).await;
    let admin_id = all["result"].as_array().unwrap().iter().find(|t| t["name"] == "test-admin").unwrap()["id"].clone();
    let (status, _) = call_as(&app, &limited, "DELETE", &format!("/tokens/{}", admin_id.as_str().unwrap()), None).await;
    assert_eq!(status, 403);
    assert_eq!(app.call("GET", "/gateways", None).await.0, 200, "the admin token still works");
}

#[actix_web::test]
async fn token_numbers_and_gateways_are_bounded() {
    use serde_json::json;
    let app = spawn_app().await;
    for (body, field) in [
        (json!({"name": "t", "scopes": ["run"], "rate_limit": 1, "rate_limit_interval": u64::MAX}), "rate_limit"),
        (json!({"name": "t", "scopes": ["run"], "rate_limit": u64::MAX, "rate_limit_interval": 60}), "rate_limit"),
        (json!({"name": "t", "scopes": ["run"], "rate_limit": 0, "rate_limit_interval": 60}), "rate_limit"),
        (json!({"name": "t", "scopes": ["run"], "gateways": ["../x"]}), "gateways"),
        (json!({"name": "t", "scopes": ["run"], "gateways": [""]}), "gateways"),
    ] {
        let (status, answer) = app.call("POST", "/tokens", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["errors"][0]["message"].as_str().unwrap().starts_with(field), "{answer}");
    }
}

#[actix_web::test]
async fn a_sign_in_next_with_line_breaks_redirects_safely() {
    use crate::ui::{PASSWORD, csrf_of, fetch, set_cookie};
    let app = spawn_app().await;
    let settings = app.settings();
    actix_web::web::block(move || settings.create_admin("root", PASSWORD).unwrap()).await.unwrap();
    for next in ["/admin/tokens\r\nSet-Cookie: planted=1", "/admin\n", "/admin/\u{7f}x"] {
        let form = fetch(&app, "GET", "/admin/login", "", None).await;
        let cookie = set_cookie(&form.headers, "torii_login").unwrap();
        let csrf = csrf_of(&form.html).unwrap();
        let fields = [("csrf", csrf.as_str()), ("username", "root"), ("password", PASSWORD), ("next", next)];
        let page = fetch(&app, "POST", "/admin/login", &cookie, Some(&fields)).await;
        assert_eq!((page.status, page.location.as_str()), (303, "/admin"), "{next:?}");
    }
}

/// The sign-in form's CSRF token is bound to a pre-session Torii issued: a pair an attacker
/// chose (and planted as a cookie) is refused even with the right password.
#[actix_web::test]
async fn a_sign_in_pair_the_attacker_chose_is_refused() {
    use crate::ui::{PASSWORD, csrf_of, fetch, set_cookie};
    let app = spawn_app().await;
    let settings = app.settings();
    actix_web::web::block(move || settings.create_admin("root", PASSWORD).unwrap()).await.unwrap();
    let chosen = "a".repeat(64);
    let fields = [("csrf", chosen.as_str()), ("username", "root"), ("password", PASSWORD)];
    let page = fetch(&app, "POST", "/admin/login", &format!("torii_login={chosen}"), Some(&fields)).await;
    assert_eq!(page.status, 403);
    // A real form's token with another form's cookie is refused too; the form's own pair works.
    let first = fetch(&app, "GET", "/admin/login", "", None).await;
    let second = fetch(&app, "GET", "/admin/login", "", None).await;
    let token = csrf_of(&first.html).unwrap();
    let fields = [("csrf", token.as_str()), ("username", "root"), ("password", PASSWORD)];
    let other_cookie = set_cookie(&second.headers, "torii_login").unwrap();
    assert_eq!(fetch(&app, "POST", "/admin/login", &other_cookie, Some(&fields)).await.status, 403);
    let own_cookie = set_cookie(&first.headers, "torii_login").unwrap();
    assert_eq!(fetch(&app, "POST", "/admin/login", &own_cookie, Some(&fields)).await.status, 303);
}

/// The URLs the gateway page shows come from the request's own `Host` unless a trusted proxy
/// says otherwise; with the admin UI on its own listener they name the data-plane port.
#[actix_web::test]
async fn gateway_page_urls_trust_only_trusted_proxies() {
    let app = crate::helpers::spawn_app_with(|c| c.admin_listen = Some("127.0.0.1:0".into())).await;
    let admin = app.admin_addr.unwrap();
    let settings = app.settings();
    actix_web::web::block(move || settings.create_admin("root", "pw-123456789").unwrap()).await.unwrap();
    let form = app.client.get(format!("http://{admin}/admin/login")).send().await.unwrap();
    let cookie = crate::ui::set_cookie(form.headers(), "torii_login").unwrap();
    let mut form = form;
    let html = String::from_utf8_lossy(&crate::helpers::body_of(&mut form).await).into_owned();
    let csrf = crate::ui::csrf_of(&html).unwrap();
    let done = app
        .client
        .post(format!("http://{admin}/admin/login"))
        .insert_header(("cookie", cookie))
        .send_form(&[("csrf", csrf.as_str()), ("username", "root"), ("password", "pw-123456789")])
        .await
        .unwrap();
    assert_eq!(done.status(), 303);
    let session = crate::ui::set_cookie(done.headers(), "torii_session").unwrap();
    let mut page = app
        .client
        .get(format!("http://{admin}/admin/gateways/default"))
        .insert_header(("cookie", session))
        .insert_header(("x-forwarded-host", "evil.example"))
        .insert_header(("x-forwarded-proto", "https"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = String::from_utf8_lossy(&crate::helpers::body_of(&mut page).await).into_owned();
    assert!(!html.contains("evil.example"), "an untrusted X-Forwarded-Host reached the page");
    let expected = format!("http://127.0.0.1:{}/v1/local/default/openai", app.addr.port());
    assert!(html.contains(&expected), "the data-plane URL {expected} is not on the page");
}

/// The admin UI's backup download: a consistent copy that passes the integrity check; the
/// server's temporary file is gone afterwards; signed-out visitors are sent to sign in.
#[actix_web::test]
async fn the_admin_ui_offers_a_backup_download() {
    let app = spawn_app().await;
    let ui = crate::ui::sign_in(&app).await;
    let mut resp =
        app.client.get(app.url("/admin/backup")).insert_header(("cookie", ui.cookie.clone())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-disposition").unwrap().to_str().unwrap().starts_with("attachment"));
    let body = crate::helpers::body_of(&mut resp).await;
    let file = app.dir.path().join("downloaded.redb");
    std::fs::write(&file, &body).unwrap();
    let report = torii::store::Store::check(&file).unwrap();
    assert!(report.starts_with("ok (1 gateways, 1 tokens"), "{report}");
    // The server removes its temporary copy when the download's stream ends (poll: the client may
    // have read the last byte just before).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_dir(app.dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("backup-"))
    {
        assert!(std::time::Instant::now() < deadline, "the temporary copy was never removed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let anonymous = app.client.get(app.url("/admin/backup")).send().await.unwrap();
    assert_eq!(anonymous.status(), 303);
}
