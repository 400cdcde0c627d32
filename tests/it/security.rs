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
    actix_web::web::block(move || {
        torii::auth::admin::create_admin(settings.store(), "root", "right password").unwrap()
    })
    .await
    .unwrap();
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
async fn websocket_upgrades_on_the_data_plane_are_answered_at_once() {
    let app = spawn_app().await;
    let answer = raw_exchange(
        app.addr,
        b"GET /v1/local/default/openai/realtime?model=x HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 4") || answer.starts_with("HTTP/1.1 5"), "{answer:?}");
    assert!(answer.contains("WebSocket"), "{answer}");
}
