//! Response bodies per surface: the data-plane error envelope and the v4 management envelope.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::json;

use crate::error::Error;

fn status_of(e: &Error) -> StatusCode {
    StatusCode::from_u16(e.status_and_code().0).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn log_internal(e: &Error) {
    match e {
        Error::Store(detail) => tracing::error!(%detail, "store error"),
        Error::SettingsUnavailable(detail) => tracing::warn!(%detail, "a change was not confirmed by PostgreSQL"),
        Error::Internal(detail) => tracing::error!(%detail, "internal error"),
        _ => {}
    }
}

/// Data-plane error body (Cloudflare AI Gateway's envelope, singular `error`).
#[must_use]
pub fn data_plane_error(e: &Error) -> HttpResponse {
    log_internal(e);
    let (status, code) = e.status_and_code();
    let message = e.to_string();
    let mut response = HttpResponse::build(status_of(e));
    if let Error::RateLimited { retry_after_secs } | Error::SpendLimited { retry_after_secs, .. } = e {
        response.insert_header(("retry-after", retry_after_secs.to_string()));
    }
    if let Error::DlpBlocked { header, .. } = e {
        response.insert_header(("cf-aig-dlp", header.as_str()));
    }
    response.json(json!({
        "success": false,
        "result": [],
        "messages": [],
        "error": [{ "code": code, "message": message }],
        "name": "AiGatewayError",
        "httpCode": status,
        "internalCode": code,
        "message": message,
    }))
}

/// An error rendered in the v4 management envelope.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(_: actix_web::error::BlockingError) -> Self {
        Self(Error::Internal("blocking pool is shut down".into()))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        status_of(&self.0)
    }

    fn error_response(&self) -> HttpResponse {
        log_internal(&self.0);
        let (_, code) = self.0.status_and_code();
        HttpResponse::build(self.status_code()).json(json!({
            "success": false,
            "errors": [{ "code": code, "message": self.0.to_string() }],
            "messages": [],
            "result": null,
        }))
    }
}

/// Page of a list, for `result_info`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ResultInfo {
    /// 1-based page.
    pub page: usize,
    /// Page size.
    pub per_page: usize,
    /// Items on this page.
    pub count: usize,
    /// Items in all pages.
    pub total_count: usize,
    /// Number of pages.
    pub total_pages: usize,
}

/// A successful v4 response.
pub fn v4_ok<T: Serialize>(result: T, result_info: Option<ResultInfo>) -> HttpResponse {
    let mut body = json!({ "success": true, "errors": [], "messages": [], "result": result });
    if let Some(info) = result_info {
        body["result_info"] = json!(info);
    }
    HttpResponse::Ok().json(body)
}

/// Pagination query parameters.
#[derive(Debug, serde::Deserialize)]
pub struct PageQuery {
    /// 1-based page (default 1).
    pub page: Option<usize>,
    /// Page size (default 20, at most 100).
    pub per_page: Option<usize>,
}

/// Slices one page out of `items`.
#[must_use]
pub fn paginate<T>(items: Vec<T>, q: &PageQuery) -> (Vec<T>, ResultInfo) {
    let per_page = q.per_page.unwrap_or(20).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    let total_count = items.len();
    let result: Vec<T> = items.into_iter().skip((page - 1).saturating_mul(per_page)).take(per_page).collect();
    let info =
        ResultInfo { page, per_page, count: result.len(), total_count, total_pages: total_count.div_ceil(per_page) };
    (result, info)
}
