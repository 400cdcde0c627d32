//! Logs and analytics API (v4 shape) under `/client/v4/accounts/{account_id}/ai-gateway/gateways/{id}`.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::envelope::{ApiError, ResultInfo, v4_ok};
use super::management::{ApiCaller, blocking};
use crate::control::ControlPlane;
use crate::control::gateways;
use crate::error::Error;
use crate::logs::query::{self, LogPatch};
use crate::logs::record::Head;

fn pairs(req: &HttpRequest) -> Result<Vec<(String, String)>, Error> {
    serde_urlencoded::from_str(req.query_string()).map_err(|e| Error::invalid("query", e.to_string()))
}

/// `GET /gateways/{id}/logs`
pub async fn list(
    req: HttpRequest,
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let q = query::parse_query(&pairs(&req)?)?;
    let page = blocking(&gw, move |s| {
        gateways::get(s, &id)?;
        s.list_logs(&id, &q).map(|p| (p, q.page, q.per_page))
    })
    .await?;
    let (page, number, per_page) = page;
    let logs: Vec<_> = page.logs.iter().map(query::to_json).collect();
    let total = usize::try_from(page.total_count).unwrap_or(usize::MAX);
    let info = ResultInfo {
        page: number,
        per_page,
        count: logs.len(),
        total_count: total,
        total_pages: total.div_ceil(per_page),
    };
    let mut response = json!({ "success": true, "errors": [], "messages": [], "result": logs, "result_info": info });
    if page.total_estimated {
        response["result_info"]["total_count_estimated"] = json!(true);
    }
    if let Some(extra) = page.meta_info.and_then(|m| m.as_object().cloned()) {
        for (k, v) in extra {
            response["result_info"][k] = v;
        }
    }
    Ok(HttpResponse::Ok().json(response))
}

/// `DELETE /gateways/{id}/logs` with the list's filters and an optional `limit`.
pub async fn delete(
    req: HttpRequest,
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let mut all = pairs(&req)?;
    let limit = all.iter().position(|(k, _)| k == "limit").map(|i| all.remove(i).1);
    let limit = limit
        .map(|l| l.parse::<usize>().map_err(|_| Error::invalid("limit", "must be a positive integer")))
        .transpose()?;
    let q = query::parse_query(&all)?;
    let deleted = blocking(&gw, move |s| {
        gateways::get(s, &id)?;
        s.delete_logs(&id, &q, limit)
    })
    .await?;
    Ok(v4_ok(json!({ "deleted": deleted }), None))
}

/// `GET /gateways/{id}/logs/{log_id}`
pub async fn get(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id, log_id) = path.into_inner();
    let (meta, bodies) = blocking(&gw, move |s| {
        let meta = s.log(&id, &log_id)?;
        Ok((meta, s.log_bodies(&id, &log_id)?))
    })
    .await?;
    let mut out = query::to_json(&meta);
    // The heads as sent and received (credentials redacted), as JSON strings like Cloudflare's.
    if let Some(b) = bodies {
        let head = |h: &Head| {
            let map: serde_json::Map<String, serde_json::Value> =
                h.pairs().map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string()))).collect();
            serde_json::Value::Object(map).to_string()
        };
        out["request_head"] = head(&b.request_headers).into();
        out["request_head_complete"] = true.into();
        out["response_head"] = head(&b.response_headers).into();
        out["response_head_complete"] = true.into();
    }
    Ok(v4_ok(out, None))
}

/// `PATCH /gateways/{id}/logs/{log_id}`: `feedback`, `score`, `metadata`.
pub async fn patch(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (_, id, log_id) = path.into_inner();
    let change: LogPatch = serde_json::from_slice(&body).map_err(|e| Error::invalid("body", e.to_string()))?;
    let meta = blocking(&gw, move |s| s.patch_log(&id, &log_id, &change)).await?;
    Ok(v4_ok(query::to_json(&meta), None))
}

async fn body_of(
    gw: &web::Data<ControlPlane>,
    path: (String, String, String),
    response: bool,
) -> Result<HttpResponse, ApiError> {
    let (_, id, log_id) = path;
    let bodies = blocking(gw, move |s| s.log_bodies(&id, &log_id)).await?;
    let Some(b) = bodies else {
        return Err(Error::NotFound { kind: "log payload", id: "not collected".into() }.into());
    };
    let (headers, bytes): (&Head, bytes::Bytes) =
        if response { (&b.response_headers, b.response_body.into()) } else { (&b.request_headers, b.request_body) };
    let content_type = headers.get("content-type").unwrap_or_else(|| "application/octet-stream".to_string());
    Ok(HttpResponse::Ok().content_type(content_type).body(bytes))
}

/// `GET /gateways/{id}/logs/{log_id}/request`: the stored request body.
pub async fn request_body(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    body_of(&gw, path.into_inner(), false).await
}

/// `GET /gateways/{id}/logs/{log_id}/response`: the stored response body.
pub async fn response_body(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    body_of(&gw, path.into_inner(), true).await
}

/// `GET /gateways/{id}/analytics` query.
#[derive(Debug, Deserialize)]
pub struct AnalyticsQuery {
    /// Unix seconds (default: 24 h ago).
    start: Option<i64>,
    /// Unix seconds (default: now).
    end: Option<i64>,
    /// `minute`, `hour` (default) or `day`.
    bucket: Option<String>,
}

/// `GET /gateways/{id}/analytics`: totals, a time series, and breakdowns by provider and model.
pub async fn report(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
    q: web::Query<AnalyticsQuery>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let now = crate::control::now_unix();
    let end = q.end.unwrap_or(now);
    let start = q.start.unwrap_or(end - 86_400);
    let bucket = match q.bucket.as_deref().unwrap_or("hour") {
        "minute" => 60,
        "hour" => 3_600,
        "day" => 86_400,
        _ => return Err(Error::invalid("bucket", "must be minute, hour or day").into()),
    };
    if end < start {
        return Err(Error::invalid("end", "must not be before start").into());
    }
    let report = blocking(&gw, move |s| {
        gateways::get(s, &id)?;
        s.analytics(&id, start, end, bucket).map_err(Error::from)
    })
    .await?;
    Ok(v4_ok(report, None))
}
