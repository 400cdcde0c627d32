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
