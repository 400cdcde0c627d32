//! A gateway's logs: the filtered list (indexed queries of the logs API), a log's detail with
//! pretty-printed bodies and feedback, and deleting what a filter matches.

use actix_web::{HttpResponse, web};
use askama::Template;
use serde_json::Value;

use super::Control;
use super::forms::Fields;
use super::gateways::ConfirmPage;
use super::{Admin, AdminForm, Layout, UiError, blocking, render, render_checked, see_other, time_ms, usd};
use crate::control::gateways;
use crate::logs::query::{self, ListQuery, LogPatch};
use crate::logs::record::LogMeta;

/// Rows per page.
const PER_PAGE: usize = 50;
/// Bodies larger than this are shown cut (the raw API returns them whole).
const SHOWN_BODY: usize = 256 * 1024;

/// The UI's filter fields, in the order the form shows them.
const FILTER_FIELDS: &[&str] = &[
    "search",
    "provider",
    "model",
    "success",
    "cached",
    "status_code",
    "feedback",
    "min_cost",
    "max_cost",
    "min_tokens",
    "max_tokens",
    "min_duration",
    "max_duration",
    "meta_key",
    "meta_value",
    "id",
    "event_id",
    "dlp_action",
    "guardrail_action",
    "from",
    "to",
];

/// Turns the UI's filter fields into the logs API's query parameters.
fn api_pairs(f: &Fields) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut n = 0;
    let mut filter = |pairs: &mut Vec<(String, String)>, key: String, value: &str| {
        pairs.push((format!("filters[{n}][key]"), key));
        pairs.push((format!("filters[{n}][operator]"), "eq".into()));
        pairs.push((format!("filters[{n}][value][0]"), value.to_string()));
        n += 1;
    };
    for name in FILTER_FIELDS {
        let v = f.get(name);
        if v.is_empty() {
            continue;
        }
        match *name {
            "search" | "provider" | "model" | "success" | "cached" | "feedback" | "min_cost" | "max_cost"
            | "min_duration" | "max_duration" => pairs.push(((*name).to_string(), v.to_string())),
            "min_tokens" => pairs.push(("min_total_tokens".into(), v.to_string())),
            "max_tokens" => pairs.push(("max_total_tokens".into(), v.to_string())),
            "status_code" | "id" | "event_id" | "dlp_action" | "guardrail_action" => {
                filter(&mut pairs, (*name).to_string(), v);
            }
            "meta_key" => filter(&mut pairs, format!("metadata.{v}"), f.get("meta_value")),
            // `datetime-local` values are taken as UTC.
            "from" => pairs.push(("start_date".into(), utc(v))),
            "to" => pairs.push(("end_date".into(), utc(v))),
            _ => {}
        }
    }
    pairs
}

fn utc(local: &str) -> String {
    match local.len() {
        16 => format!("{local}:00Z"),
        19 => format!("{local}Z"),
        _ => local.to_string(),
    }
}

/// A log line of the list.
pub struct Line {
    pub id: String,
    pub time: String,
    pub status: u16,
    pub success: bool,
    pub provider: String,
    pub model: String,
    pub tokens_in: u32,
    pub tokens_out: u32,
    pub cost: String,
    pub duration: u32,
    pub cached: bool,
    pub feedback: i8,
}

fn line(m: &LogMeta) -> Line {
    Line {
        id: uuid::Uuid::from_u128(m.id).to_string(),
        time: time_ms(m.created_at),
        status: m.status_code,
        success: m.success,
        provider: m.provider.to_string(),
        model: m.model.as_deref().unwrap_or_default().to_string(),
        tokens_in: m.tokens_in,
        tokens_out: m.tokens_out,
        cost: m.cost.map(usd).unwrap_or_default(),
        duration: m.duration,
        cached: m.cached,
        feedback: m.feedback.unwrap_or(0),
    }
}

#[derive(Template)]
#[template(path = "logs.html")]
struct ListPage {
    page: Layout,
    gateway: String,
    f: Fields,
    error: String,
    logs: Vec<Line>,
    total: u64,
    estimated: bool,
    page_no: usize,
    pages: u64,
    prev: String,
    next: String,
    filter_query: String,
}

fn query_of(f: &Fields, page: usize) -> Result<ListQuery, crate::error::Error> {
    let mut pairs = api_pairs(f);
    pairs.push(("per_page".into(), PER_PAGE.to_string()));
    pairs.push(("page".into(), page.to_string()));
    query::parse_query(&pairs)
}

fn link(gateway: &str, f: &Fields, page: usize) -> String {
    let mut pairs = f.filled();
    pairs.retain(|(k, _)| k != "page");
    pairs.push(("page".into(), page.to_string()));
    format!("/admin/gateways/{gateway}/logs?{}", serde_urlencoded::to_string(&pairs).unwrap_or_default())
}

/// `GET /admin/gateways/{id}/logs?...`
pub async fn list(
    who: Admin,
    gw: Control,
    path: web::Path<String>,
    q: web::Query<Fields>,
) -> Result<HttpResponse, UiError> {
    let id = path.into_inner();
    let f = q.into_inner();
    let page_no = f.get("page").parse::<usize>().unwrap_or(1).clamp(1, 1_000_000);
    let parsed = query_of(&f, page_no);
    let target = id.clone();
    let result = blocking(&gw, move |s| {
        let g = gateways::get(s, &target)?;
        Ok(match parsed {
            Ok(q) => Ok(s.list_logs(&g.id, &q)?),
            Err(e) => Err(e.to_string()),
        })
    })
    .await?;
    let (logs, total, estimated, error) = match result {
        Ok(p) => (p.logs.iter().map(line).collect(), p.total_count, p.total_estimated, String::new()),
        Err(e) => (Vec::new(), 0, false, e),
    };
    let pages = total.div_ceil(PER_PAGE as u64).max(1);
    let mut filters = f.filled();
    filters.retain(|(k, _)| k != "page");
    let page = ListPage {
        page: Layout::new(&who, "gateways", format!("Logs of {id}")),
        prev: if page_no > 1 { link(&id, &f, page_no - 1) } else { String::new() },
        next: if (page_no as u64) < pages { link(&id, &f, page_no + 1) } else { String::new() },
        filter_query: serde_urlencoded::to_string(&filters).unwrap_or_default(),
        gateway: id,
        f,
        error,
        logs,
        total,
        estimated,
        page_no,
        pages,
    };
    render_checked(page.error.is_empty(), &page)
}

/// One SSE event as shown.
pub struct Event {
    pub name: String,
    pub data: String,
}

/// A body as shown: pretty JSON, SSE events, or text.
pub struct Shown {
    pub text: String,
    pub events: Vec<Event>,
    pub note: String,
}

fn pretty_json(bytes: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    serde_json::to_string_pretty(&v).ok()
}

fn show_body(bytes: &[u8], content_type: &str) -> Shown {
    let mut note = String::new();
    let cut = if bytes.len() > SHOWN_BODY {
        note = format!("showing the first {} KiB of {} bytes", SHOWN_BODY / 1024, bytes.len());
        &bytes[..SHOWN_BODY]
    } else {
        bytes
    };
    if content_type.contains("text/event-stream") {
        let text = String::from_utf8_lossy(cut);
        let events = text
            .split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                let mut name = String::new();
                let mut data = Vec::new();
                for l in e.lines() {
                    if let Some(v) = l.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = l.strip_prefix("data:") {
                        data.push(v.trim_start());
                    }
                }
                let joined = data.join("\n");
                let data = pretty_json(joined.as_bytes()).unwrap_or(joined);
                Event { name, data }
            })
            .collect();
        return Shown { text: String::new(), events, note };
    }
    if let Some(p) = pretty_json(cut) {
        return Shown { text: p, events: Vec::new(), note };
    }
    if std::str::from_utf8(cut).is_err() && !cut.is_empty() {
        note = format!("binary body ({} bytes){}", bytes.len(), if note.is_empty() { "" } else { ", cut" });
    }
    Shown { text: String::from_utf8_lossy(cut).into_owned(), events: Vec::new(), note }
}

#[derive(Template)]
#[template(path = "log.html")]
struct DetailPage {
    page: Layout,
    gateway: String,
    id: String,
    fields: Vec<(&'static str, String)>,
    feedback: i8,
    payload: bool,
    request_headers: Vec<(String, String)>,
    response_headers: Vec<(String, String)>,
    request: Shown,
    response: Shown,
}

fn detail_fields(m: &LogMeta) -> Vec<(&'static str, String)> {
    let opt = |v: &Option<std::sync::Arc<str>>| v.as_deref().unwrap_or_default().to_string();
    vec![
        ("id", uuid::Uuid::from_u128(m.id).to_string()),
        ("created at (UTC)", time_ms(m.created_at)),
        ("provider", m.provider.to_string()),
        ("model", opt(&m.model)),
        ("model type", opt(&m.model_type)),
        ("path", format!("{} {}", m.method, m.path)),
        ("status", m.status_code.to_string()),
        ("success", m.success.to_string()),
        ("cached", m.cached.to_string()),
        ("duration", format!("{} ms", m.duration)),
        ("time to first byte", format!("{} ms", m.ttfb)),
        ("tokens in", m.tokens_in.to_string()),
        ("tokens out", m.tokens_out.to_string()),
        ("cached tokens in", m.cached_tokens_in.to_string()),
        ("cache write tokens", m.cache_write_tokens.to_string()),
        ("cost", m.cost.map(usd).unwrap_or_default()),
        ("custom cost", m.custom_cost.to_string()),
        ("metadata", opt(&m.metadata)),
        ("request type", m.request_type.as_str().to_string()),
        ("step / attempt", format!("{} / {}", m.step, m.attempt)),
        ("event id", m.event_id.to_string()),
        ("user agent", opt(&m.user_agent)),
        ("request content type", opt(&m.request_content_type)),
        ("response content type", opt(&m.response_content_type)),
        ("request size", super::bytes(m.request_size)),
        ("response size", super::bytes(m.response_size)),
        ("error", m.error.clone().unwrap_or_default()),
        ("bodies cut at the cap", m.truncated.to_string()),
        ("score", m.score.map(|s| s.to_string()).unwrap_or_default()),
        ("DLP", dlp_line(m)),
        ("guardrails", guardrail_line(m)),
    ]
}

/// DLP findings as one line: the action, then each profile's entries, policies and direction.
fn dlp_line(m: &LogMeta) -> String {
    let Some(d) = m.policy.as_ref().map(|p| &p.dlp).filter(|d| !d.is_empty()) else { return String::new() };
    let action = d.action.map_or("", crate::policy::dlp::Action::as_str);
    let findings: Vec<String> = d
        .findings
        .iter()
        .map(|f| {
            format!("{} ({}; policy {}; {})", f.profile, f.entries.join(", "), f.policies.join(", "), f.check.as_str())
        })
        .collect();
    format!("{action}: {}", findings.join(" · "))
}

/// Guardrail evaluation as one line.
fn guardrail_line(m: &LogMeta) -> String {
    let Some(g) = m.policy.as_ref().and_then(|p| p.guardrail.as_ref()) else { return String::new() };
    let mut out = format!("{} checked", g.phases.join(" and "));
    if !g.categories.is_empty() {
        out.push_str("; found ");
        out.push_str(&g.categories.join(", "));
    }
    if let Some(a) = &g.action {
        out.push_str("; ");
        out.push_str(a);
    }
    if g.unavailable {
        out.push_str("; evaluator unavailable");
    }
    out
}

/// `GET /admin/gateways/{id}/logs/{log}`
pub async fn show(who: Admin, gw: Control, path: web::Path<(String, String)>) -> Result<HttpResponse, UiError> {
    let (gateway, log) = path.into_inner();
    let (g, l) = (gateway.clone(), log.clone());
    let (meta, bodies) = blocking(&gw, move |s| {
        let meta = s.log(&g, &l)?;
        let bodies = s.log_bodies(&g, &l)?;
        Ok((meta, bodies))
    })
    .await?;
    let bodies = bodies.unwrap_or_default();
    let req_ct = meta.request_content_type.clone().unwrap_or_default();
    let resp_ct = meta.response_content_type.clone().unwrap_or_default();
    render(&DetailPage {
        page: Layout::new(&who, "gateways", format!("Log {log}")),
        fields: detail_fields(&meta),
        feedback: meta.feedback.unwrap_or(0),
        payload: meta.payload,
        request: show_body(&bodies.request_body, &req_ct),
        response: show_body(&bodies.response_body, &resp_ct),
        request_headers: bodies.request_headers.to_vec(),
        response_headers: bodies.response_headers.to_vec(),
        gateway,
        id: log,
    })
}

/// `POST /admin/gateways/{id}/logs/{log}/feedback` with `feedback` 1, -1 or 0 (clear).
pub async fn feedback(
    gw: Control,
    path: web::Path<(String, String)>,
    AdminForm { form: f, .. }: AdminForm,
) -> Result<HttpResponse, UiError> {
    let value = match f.get("feedback") {
        "1" => Some(1),
        "-1" => Some(-1),
        "0" => None,
        _ => return Err(UiError::Bad("Feedback is 1, -1 or 0.".into())),
    };
    let (gateway, log) = path.into_inner();
    let (g, l) = (gateway.clone(), log.clone());
    let change = LogPatch { feedback: Some(value), ..LogPatch::default() };
    blocking(&gw, move |s| Ok(s.patch_log(&g, &l, &change)?)).await?;
    Ok(see_other(&format!("/admin/gateways/{gateway}/logs/{log}")))
}

/// `GET /admin/gateways/{id}/logs/delete?...`: how many logs the filter matches, and a button.
pub async fn confirm_delete(
    who: Admin,
    gw: Control,
    path: web::Path<String>,
    q: web::Query<Fields>,
) -> Result<HttpResponse, UiError> {
    let id = path.into_inner();
    let f = q.into_inner();
    let parsed = query_of(&f, 1).map_err(|e| UiError::Bad(e.to_string()))?;
    let target = id.clone();
    let page = blocking(&gw, move |s| Ok(s.list_logs(&target, &parsed)?)).await?;
    let about = if page.total_estimated { "about " } else { "" };
    let filters = f.filled();
    let described = if filters.is_empty() {
        "every log of this gateway".to_string()
    } else {
        filters.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ")
    };
    render(&ConfirmPage {
        page: Layout::new(&who, "gateways", "Delete logs"),
        question: format!("Delete {about}{} logs of '{id}'?", page.total_count),
        detail: format!("Matching: {described}. Analytics keep their counts; the logs and bodies are gone."),
        action: format!("/admin/gateways/{id}/logs/delete"),
        back: format!("/admin/gateways/{id}/logs?{}", serde_urlencoded::to_string(&filters).unwrap_or_default()),
        hidden: filters,
    })
}

/// `POST /admin/gateways/{id}/logs/delete`
pub async fn delete(
    gw: Control,
    path: web::Path<String>,
    AdminForm { who, form: f }: AdminForm,
) -> Result<HttpResponse, UiError> {
    let id = path.into_inner();
    let parsed = query_of(&f, 1).map_err(|e| UiError::Bad(e.to_string()))?;
    let target = id.clone();
    let n = blocking(&gw, move |s| Ok(s.delete_logs(&target, &parsed, None)?)).await?;
    tracing::info!(gateway = %id, deleted = n, admin = %who.0.username, "logs deleted from the admin UI");
    Ok(see_other(&format!("/admin/gateways/{id}/logs")))
}
