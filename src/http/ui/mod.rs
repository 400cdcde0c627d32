//! The admin web UI: server-rendered askama pages under `/admin`, embedded assets under
//! `/static`. Every page needs a signed-in admin (else a redirect to the sign-in page), every
//! form carries the session's CSRF token, and every response carries the security headers.

mod custom;
mod dlp;
mod evaluations;
mod forms;
mod gateways;
mod login;
mod logs;
mod overview;
mod routes;
mod tokens;

use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::DefaultHeaders;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use askama::Template;

use crate::auth::admin::{Bootstrap, PreSessions, Session, Sessions, Throttle, Verifier, same_secret};
use crate::control::ControlPlane;
use crate::control::Settings;

pub use forms::Fields;

/// Session cookie name.
pub const SESSION_COOKIE: &str = "torii_session";

/// The UI's own state: sessions, the sign-in throttle, the bootstrap link.
#[derive(Default)]
pub struct AdminState {
    /// Signed-in admins.
    pub sessions: Sessions,
    /// Sign-in forms handed out.
    pub pre_sessions: PreSessions,
    /// Failed sign-ins per client.
    pub throttle: Throttle,
    /// Password verifications running at once.
    pub verifier: Verifier,
    /// The first-admin setup link.
    pub bootstrap: Bootstrap,
    /// Proxies whose `X-Forwarded-*` headers are believed (`trusted_proxies`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The data-plane listener's port when the admin UI has its own listener (for the URLs the
    /// gateway pages show).
    pub data_plane_port: Option<u16>,
    /// In cluster mode, the sessions and sign-in forms every node shares (then `sessions` and
    /// `pre_sessions` stay empty).
    pub shared_sessions: Option<Arc<crate::cluster::SharedSessions>>,
}

/// The cluster's shared store could not be reached while signing in or out.
fn unavailable(e: &crate::cluster::Unavailable) -> UiError {
    UiError::Internal(format!("sessions: {e}"))
}

impl AdminState {
    /// The live session of a cookie value (its idle timer renewed). In cluster mode an
    /// unreachable Redis reads as signed out.
    pub async fn session(&self, cookie: &str) -> Option<Session> {
        match &self.shared_sessions {
            None => self.sessions.get(cookie),
            Some(shared) => shared.get(cookie).await.ok().flatten(),
        }
    }

    /// Starts a session; returns the cookie value.
    pub async fn start_session(&self, username: &str) -> Result<String, UiError> {
        match &self.shared_sessions {
            None => Ok(self.sessions.start(username)),
            Some(shared) => shared.start(username).await.map_err(|e| unavailable(&e)),
        }
    }

    /// Ends a session.
    pub async fn end_session(&self, cookie: &str) -> Result<(), UiError> {
        match &self.shared_sessions {
            None => {
                self.sessions.end(cookie);
                Ok(())
            }
            Some(shared) => shared.end(cookie).await.map_err(|e| unavailable(&e)),
        }
    }

    /// Issues a sign-in form: `(pre-session cookie, form token)`.
    pub async fn issue_form(&self) -> Result<(String, String), UiError> {
        match &self.shared_sessions {
            None => Ok(self.pre_sessions.issue(std::time::Instant::now())),
            Some(shared) => shared.issue_form().await.map_err(|e| unavailable(&e)),
        }
    }

    /// Whether `token` was issued with the form's `cookie` (still fresh).
    pub async fn form_valid(&self, cookie: &str, token: &str) -> Result<bool, UiError> {
        match &self.shared_sessions {
            None => Ok(self.pre_sessions.valid(cookie, token, std::time::Instant::now())),
            Some(shared) => shared.form_valid(cookie, token).await.map_err(|e| unavailable(&e)),
        }
    }

    /// Forgets a sign-in form.
    pub async fn end_form(&self, cookie: &str) -> Result<(), UiError> {
        match &self.shared_sessions {
            None => {
                self.pre_sessions.end(cookie);
                Ok(())
            }
            Some(shared) => shared.end_form(cookie).await.map_err(|e| unavailable(&e)),
        }
    }
}

/// Content-Security-Policy: nothing inline, nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CONTENT_SECURITY_POLICY, CSP))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "same-origin"))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::CACHE_CONTROL, "no-store"))
}

/// Registers `/admin` and `/static`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::scope("/static").wrap(security_headers()).route("/{file:.*}", web::get().to(asset))).service(
        web::scope("/admin")
            .wrap(security_headers())
            .app_data(
                web::FormConfig::default()
                    .limit(64 * 1024)
                    .error_handler(|e, _| UiError::Bad(format!("The form could not be read: {e}")).into()),
            )
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|e, _| UiError::Bad(format!("The address has a malformed parameter: {e}")).into()),
            )
            .route("", web::get().to(overview::overview))
            .route("/", web::get().to(overview::overview))
            .service(web::resource("/login").get(login::form).post(login::submit))
            .route("/logout", web::post().to(login::logout))
            .service(web::resource("/setup").get(login::setup_form).post(login::setup_submit))
            .route("/health", web::get().to(overview::health))
            .route("/backup", web::get().to(overview::backup))
            .route("/cache", web::get().to(overview::cache))
            .route("/cache/{gateway}/purge", web::post().to(overview::purge))
            .service(web::resource("/gateways").get(gateways::list).post(gateways::create))
            .service(web::resource("/gateways/{id}").get(gateways::show).post(gateways::update))
            .service(web::resource("/gateways/{id}/delete").get(gateways::confirm_delete).post(gateways::delete))
            .route("/gateways/{id}/keys", web::post().to(gateways::add_key))
            .route("/gateways/{id}/keys/{key}/delete", web::post().to(gateways::delete_key))
            .route("/gateways/{id}/logs", web::get().to(logs::list))
            .service(web::resource("/gateways/{id}/logs/delete").get(logs::confirm_delete).post(logs::delete))
            .route("/gateways/{id}/logs/{log}", web::get().to(logs::show))
            .route("/gateways/{id}/logs/{log}/feedback", web::post().to(logs::feedback))
            .service(web::resource("/tokens").get(tokens::list).post(tokens::create))
            .route("/tokens/{id}/revoke", web::post().to(tokens::revoke))
            .service(web::resource("/custom-providers").get(custom::list).post(custom::create))
            .service(web::resource("/custom-providers/{id}").get(custom::show).post(custom::update))
            .service(web::resource("/custom-providers/{id}/delete").get(custom::confirm_delete).post(custom::delete))
            .service(web::resource("/dlp").get(dlp::list).post(dlp::create))
            .route("/gateways/{id}/evaluations", web::get().to(evaluations::show))
            .route("/gateways/{id}/evaluations", web::post().to(evaluations::evaluate))
            .route("/gateways/{id}/datasets", web::post().to(evaluations::create_dataset))
            .service(web::resource("/gateways/{id}/routes").get(routes::list).post(routes::create))
            .route("/gateways/{id}/aliases", web::post().to(routes::put_alias))
            .route("/gateways/{id}/aliases/{name}/delete", web::post().to(routes::delete_alias))
            .route("/gateways/{id}/routes/{route}", web::get().to(routes::show))
            .route("/gateways/{id}/routes/{route}/versions", web::post().to(routes::save))
            .route("/gateways/{id}/routes/{route}/deploy", web::post().to(routes::deploy))
            .route("/gateways/{id}/routes/{route}/delete", web::post().to(routes::delete))
            .service(web::resource("/dlp/{id}/delete").get(dlp::confirm_delete).post(dlp::delete))
            .default_service(web::to(|| async { Err::<HttpResponse, _>(UiError::NotFound("No such page.".into())) })),
    );
}

/// The embedded files of `static/`.
#[derive(rust_embed::RustEmbed)]
#[folder = "static/"]
struct Assets;

async fn asset(path: web::Path<String>) -> HttpResponse {
    match Assets::get(&path) {
        Some(file) => HttpResponse::Ok()
            .content_type(file.metadata.mimetype())
            .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
            .body(file.data.into_owned()),
        None => HttpResponse::NotFound().content_type("text/plain").body("not found\n"),
    }
}

/// What every page's frame shows.
pub struct Layout {
    /// Signed-in admin, if any.
    pub user: Option<String>,
    /// The session's CSRF token (for the sign-out form and every other form).
    pub csrf: String,
    /// Active navigation entry.
    pub nav: &'static str,
    /// Page title.
    pub title: String,
}

impl Layout {
    fn new(admin: &Admin, nav: &'static str, title: impl Into<String>) -> Self {
        Self { user: Some(admin.0.username.clone()), csrf: admin.0.csrf.clone(), nav, title: title.into() }
    }

    fn anonymous(title: impl Into<String>) -> Self {
        Self { user: None, csrf: String::new(), nav: "", title: title.into() }
    }
}

/// An error page (or the redirect to sign in).
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// Not signed in: go to the sign-in page, then back to `next`.
    #[error("sign in first")]
    SignIn { next: String },
    /// The form's CSRF token is missing or wrong.
    #[error("This form has expired or did not come from this site. Reload the page and try again.")]
    Csrf,
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// Malformed input outside a form's fields.
    #[error("{0}")]
    Bad(String),
    /// Something failed inside (the store); details go to the log, not the page.
    #[error("Something went wrong inside Torii; the details are in its log.")]
    Internal(String),
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    page: Layout,
    status: u16,
    message: &'a str,
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::SignIn { .. } => StatusCode::SEE_OTHER,
            Self::Csrf => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Bad(_) => StatusCode::BAD_REQUEST,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::SignIn { next } = self {
            let to = format!("/admin/login?{}", serde_urlencoded::to_string([("next", next)]).unwrap_or_default());
            return HttpResponse::SeeOther().insert_header((header::LOCATION, to)).finish();
        }
        if let Self::Internal(detail) = self {
            tracing::error!(error = %detail, "admin UI failure");
        }
        let message = self.to_string();
        let status = self.status_code();
        let page = ErrorPage { page: Layout::anonymous("Error"), status: status.as_u16(), message: &message };
        let body = page.render().unwrap_or_else(|_| message.clone());
        HttpResponse::build(status).content_type("text/html; charset=utf-8").body(body)
    }
}

impl From<crate::error::Error> for UiError {
    fn from(e: crate::error::Error) -> Self {
        use crate::error::Error as E;
        match e {
            E::NotFound { .. } | E::GatewayNotFound(_) => Self::NotFound(e.to_string()),
            E::Store(_) | E::Internal(_) => Self::Internal(e.to_string()),
            other => Self::Bad(other.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for UiError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Internal(e.to_string())
    }
}

/// Renders a page.
pub(crate) fn render(t: &impl Template) -> Result<HttpResponse, UiError> {
    let body = t.render().map_err(|e| UiError::Internal(format!("template: {e}")))?;
    Ok(HttpResponse::Ok().content_type("text/html; charset=utf-8").body(body))
}

/// Renders a form page: 400 when the submitted input was refused (`valid` false).
pub(crate) fn render_checked(valid: bool, t: &impl Template) -> Result<HttpResponse, UiError> {
    let mut resp = render(t)?;
    if !valid {
        *resp.status_mut() = StatusCode::BAD_REQUEST;
    }
    Ok(resp)
}

/// A 303 to another page (after a successful form).
pub(crate) fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, to)).finish()
}

/// The admin pages' view of the control plane (extracted by every page handler).
pub(crate) type Control = web::Data<ControlPlane>;

/// Runs store work on the blocking pool.
pub(crate) async fn blocking<T, F>(gw: &Control, f: F) -> Result<T, UiError>
where
    T: Send + 'static,
    F: FnOnce(&Settings) -> Result<T, UiError> + Send + 'static,
{
    let settings = Arc::clone(&gw.settings);
    web::block(move || f(&settings)).await.map_err(|e| UiError::Internal(e.to_string()))?
}

/// A signed-in admin (extractor): without a live session, a redirect to the sign-in page.
pub struct Admin(pub Session);

/// A form a signed-in admin submitted with the session's CSRF token (extractor). Every form
/// handler takes this, so none can skip the check: no session redirects to sign-in, a missing
/// or wrong token is a 403, before the handler runs.
pub struct AdminForm {
    /// Who submitted it.
    pub who: Admin,
    /// The fields.
    pub form: Fields,
}

impl FromRequest for AdminForm {
    type Error = UiError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, UiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let who = Admin::from_request(req, payload);
        let form = web::Form::<Fields>::from_request(req, payload);
        Box::pin(async move {
            let who = who.await?;
            let form = form.await.map_err(|e| UiError::Bad(format!("The form could not be read: {e}")))?.into_inner();
            if !same_secret(form.get("csrf"), &who.0.csrf) {
                return Err(UiError::Csrf);
            }
            Ok(Self { who, form })
        })
    }
}

impl FromRequest for Admin {
    type Error = UiError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, UiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AdminState>>().cloned();
        let cookie = req.cookie(SESSION_COOKIE).map(|c| c.value().to_string());
        // Only a GET is worth coming back to.
        let next = if req.method() == actix_web::http::Method::GET {
            req.uri().path_and_query().map_or("/admin", |p| p.as_str()).to_string()
        } else {
            "/admin".to_string()
        };
        Box::pin(async move {
            if let (Some(state), Some(cookie)) = (state, cookie)
                && let Some(s) = state.session(&cookie).await
            {
                return Ok(Self(s));
            }
            Err(UiError::SignIn { next })
        })
    }
}

/// The client as seen through the trusted proxies (none: the connection itself).
fn origin(req: &HttpRequest) -> crate::http::origin::Origin {
    let trusted = req.app_data::<web::Data<AdminState>>().map_or(&[][..], |s| s.trusted_proxies.as_slice());
    crate::http::origin::Origin::of(req, trusted)
}

/// Whether the page was reached over TLS (directly or, per a trusted proxy's
/// `X-Forwarded-Proto`, via a proxy): then cookies are `Secure`.
fn over_tls(req: &HttpRequest) -> bool {
    origin(req).https
}

/// The client address for the sign-in throttle (behind trusted proxies, the forwarded one).
fn client_ip(req: &HttpRequest) -> std::net::IpAddr {
    origin(req).ip
}

/// Shows a 4-decimal USD amount.
pub(crate) fn usd(v: f64) -> String {
    if v == 0.0 {
        "$0".into()
    } else if v < 0.01 {
        format!("${v:.6}")
    } else {
        format!("${v:.4}")
    }
}

/// Shows a byte count.
#[expect(clippy::cast_precision_loss, reason = "display only")]
pub(crate) fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", n as f64 / 1_048_576.0),
        _ => format!("{:.2} GiB", n as f64 / 1_073_741_824.0),
    }
}

/// Formats Unix milliseconds as `YYYY-MM-DD HH:MM:SS` UTC.
pub(crate) fn time_ms(ms: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return String::new();
    };
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    t.format(&fmt).unwrap_or_default()
}

/// The `Set-Cookie` value of a session cookie.
fn session_cookie(value: &str, secure: bool, max_age: Option<i64>) -> HeaderValue {
    let age = max_age.map(|a| format!("; Max-Age={a}")).unwrap_or_default();
    let secure = if secure { "; Secure" } else { "" };
    let c = format!("{SESSION_COOKIE}={value}; Path=/admin; HttpOnly; SameSite=Strict{age}{secure}");
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("torii_session=; Path=/admin"))
}
