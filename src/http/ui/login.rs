//! Sign in, sign out, and the one-time setup of the first admin.

use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;

use super::Control;
use super::forms::{Errors, Fields};
use super::{
    AdminForm, AdminState, Layout, UiError, blocking, client_ip, over_tls, render, render_checked, session_cookie,
};
use crate::auth::admin::{AdminError, SESSION_MAX};

/// Cookie of the sign-in form's pre-session (the form carries the CSRF token issued with it).
const LOGIN_COOKIE: &str = "torii_login";

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    page: Layout,
    csrf: String,
    next: String,
    username: String,
    message: String,
}

/// Only local admin pages are followed after sign-in.
fn safe_next(next: &str) -> String {
    let ok = next.starts_with("/admin")
        && !next.contains("//")
        && !next.contains('\\')
        && next.len() <= 2048
        && next.bytes().all(|b| b.is_ascii_graphic());
    if ok { next.to_string() } else { "/admin".to_string() }
}

async fn login_page(
    req: &HttpRequest,
    next: &str,
    username: &str,
    message: &str,
    status: u16,
) -> Result<HttpResponse, UiError> {
    let state = req.app_data::<web::Data<AdminState>>().ok_or_else(|| UiError::Internal("admin state".into()))?;
    let (pre_session, csrf) = state.issue_form().await?;
    let page = LoginPage {
        page: Layout::anonymous("Sign in"),
        csrf: csrf.clone(),
        next: safe_next(next),
        username: username.to_string(),
        message: message.to_string(),
    };
    let mut resp = render(&page)?;
    *resp.status_mut() = actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::OK);
    let secure = if over_tls(req) { "; Secure" } else { "" };
    let cookie = format!("{LOGIN_COOKIE}={pre_session}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=3600{secure}");
    if let Ok(v) = header::HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// `GET /admin/login`
pub async fn form(req: HttpRequest, q: web::Query<Fields>) -> Result<HttpResponse, UiError> {
    login_page(&req, q.get("next"), "", "", 200).await
}

/// `POST /admin/login`
pub async fn submit(
    req: HttpRequest,
    gw: Control,
    state: web::Data<AdminState>,
    f: web::Form<Fields>,
) -> Result<HttpResponse, UiError> {
    let ip = client_ip(&req);
    let username = f.get("username").to_string();
    let cookie = req.cookie(LOGIN_COOKIE).map(|c| c.value().to_string()).unwrap_or_default();
    if !state.form_valid(&cookie, f.get("csrf")).await? {
        return login_page(&req, f.get("next"), &username, "The sign-in form expired; please try again.", 403).await;
    }
    // A permit first (refusing costs nothing), then the attempt is counted before the check.
    let Some(permit) = state.verifier.try_start() else {
        let msg = "Too many sign-ins in progress. Try again in a moment.";
        return too_many(&req, f.get("next"), &username, msg, Duration::from_secs(1)).await;
    };
    if let Err(wait) = state.throttle.begin(ip, Instant::now()) {
        let msg = format!("Too many failed attempts from your address. Try again in {} s.", wait.as_secs().max(1));
        return too_many(&req, f.get("next"), &username, &msg, wait).await;
    }
    let password = f.get("password").to_string();
    state.verifier.count();
    let ok = blocking(&gw, {
        let username = username.clone();
        move |s| Ok(s.verify_admin(&username, &password)?)
    })
    .await?;
    drop(permit);
    if !ok {
        tracing::info!(%ip, "admin sign-in failed");
        return login_page(&req, f.get("next"), &username, "Wrong username or password.", 401).await;
    }
    state.throttle.succeeded(ip);
    state.end_form(&cookie).await?;
    signed_in(&req, &state, &username, &safe_next(f.get("next"))).await
}

async fn too_many(
    req: &HttpRequest,
    next: &str,
    username: &str,
    msg: &str,
    wait: Duration,
) -> Result<HttpResponse, UiError> {
    let mut resp = login_page(req, next, username, msg, 429).await?;
    resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(wait.as_secs().max(1)));
    Ok(resp)
}

async fn signed_in(req: &HttpRequest, state: &AdminState, username: &str, to: &str) -> Result<HttpResponse, UiError> {
    let cookie = state.start_session(username).await?;
    let max_age = i64::try_from(SESSION_MAX.as_secs()).unwrap_or(43_200);
    tracing::info!(username, "admin signed in");
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .insert_header((header::SET_COOKIE, session_cookie(&cookie, over_tls(req), Some(max_age))))
        .finish())
}

/// `POST /admin/logout`
pub async fn logout(req: HttpRequest, state: web::Data<AdminState>, _: AdminForm) -> Result<HttpResponse, UiError> {
    if let Some(c) = req.cookie(super::SESSION_COOKIE) {
        state.end_session(c.value()).await?;
    }
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/admin/login"))
        .insert_header((header::SET_COOKIE, session_cookie("", over_tls(&req), Some(0))))
        .finish())
}

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage {
    page: Layout,
    token: String,
    username: String,
    errors: Errors,
}

async fn no_admin_yet(gw: &Control) -> Result<bool, UiError> {
    blocking(gw, |s| Ok(!s.any_admin()?)).await
}

/// `GET /admin/setup?token=...`: the first admin, with the link `torii serve` printed.
pub async fn setup_form(
    gw: Control,
    state: web::Data<AdminState>,
    q: web::Query<Fields>,
) -> Result<HttpResponse, UiError> {
    if !no_admin_yet(&gw).await? || !state.bootstrap.valid(q.get("token")) {
        return Err(UiError::NotFound(
            "This setup link is not valid (an admin exists, or the server restarted and printed a new link).".into(),
        ));
    }
    render(&SetupPage {
        page: Layout::anonymous("Set up Torii"),
        token: q.get("token").to_string(),
        username: "admin".into(),
        errors: Errors::default(),
    })
}

/// `POST /admin/setup`
pub async fn setup_submit(
    req: HttpRequest,
    gw: Control,
    state: web::Data<AdminState>,
    f: web::Form<Fields>,
) -> Result<HttpResponse, UiError> {
    if !no_admin_yet(&gw).await? || !state.bootstrap.valid(f.get("token")) {
        return Err(UiError::NotFound("This setup link is not valid any more.".into()));
    }
    let username = f.get("username").to_string();
    let mut errors = Errors::default();
    if f.get("password") == f.get("password2") {
        let password = f.get("password").to_string();
        let made = blocking(&gw, {
            let username = username.clone();
            move |s| Ok(s.create_admin(&username, &password))
        })
        .await?;
        match made {
            Ok(_) => {
                state.bootstrap.consume();
                return signed_in(&req, &state, &username, "/admin").await;
            }
            Err(e @ (AdminError::BadUsername | AdminError::Exists)) => errors.add("username", e.to_string()),
            Err(e @ AdminError::BadPassword) => errors.add("password", e.to_string()),
            Err(e) => return Err(UiError::Internal(e.to_string())),
        }
    } else {
        errors.add("password2", "the two passwords differ");
    }
    render_checked(
        false,
        &SetupPage { page: Layout::anonymous("Set up Torii"), token: f.get("token").to_string(), username, errors },
    )
}
