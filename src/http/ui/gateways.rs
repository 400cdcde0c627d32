//! Gateways: list, create, edit every setting, delete; the gateway's URLs and curl example;
//! its stored provider keys.

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde_json::Value;

use super::Control;
use super::forms::{Errors, Fields, json_body};
use super::{Admin, AdminForm, Layout, UiError, blocking, render, render_checked, see_other};
use crate::control::{gateways, provider_keys};
use crate::store::{GatewayRecord, ProviderKeyRecord};

const NUMBERS: &[&str] = &[
    "cache_ttl",
    "rate_limiting_limit",
    "rate_limiting_interval",
    "log_management",
    "retry_max_attempts",
    "retry_delay",
];
const CHECKBOXES: &[&str] = &["cache_invalidate_on_update", "collect_logs", "authentication", "byok_only"];
/// Settings edited as JSON text.
const JSON_FIELDS: &[&str] = &["dlp", "guardrails", "spend_limits"];

/// Adds the JSON-text settings to a form's body (empty: off).
fn json_fields(f: &Fields, body: &mut serde_json::Map<String, Value>, errors: &mut Errors) {
    for name in JSON_FIELDS {
        let text = f.get(name).trim();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(text).unwrap_or_else(|e| {
                errors.add(name, format!("is not JSON: {e}"));
                Value::Null
            })
        };
        body.insert((*name).to_string(), value);
    }
}
const CHOICES: &[&str] = &["rate_limiting_technique", "log_management_strategy", "retry_backoff"];

/// A gateway's settings as form values.
fn fields_of(g: &GatewayRecord) -> Fields {
    let mut f = Fields::default();
    let json = serde_json::to_value(g).unwrap_or(Value::Null);
    for name in NUMBERS.iter().chain(CHOICES) {
        match &json[*name] {
            Value::Number(n) => f.set(name, n.to_string()),
            Value::String(s) => f.set(name, s.clone()),
            _ => {}
        }
    }
    for name in CHECKBOXES {
        if json[*name] == Value::Bool(true) {
            f.set(name, "on");
        }
    }
    for name in JSON_FIELDS {
        if let Some(v) = g.extra.get(*name).filter(|v| !v.is_null()) {
            f.set(name, serde_json::to_string_pretty(v).unwrap_or_default());
        }
    }
    f
}

/// A line of the gateway list.
pub struct Line {
    pub id: String,
    pub cache: String,
    pub logs: bool,
    pub auth: bool,
    pub rate_limit: String,
    pub created_at: String,
}

#[derive(Template)]
#[template(path = "gateways.html")]
struct ListPage {
    page: Layout,
    gateways: Vec<Line>,
    v: Fields,
    errors: Errors,
}

fn lines(list: &[GatewayRecord]) -> Vec<Line> {
    list.iter()
        .map(|g| Line {
            id: g.id.clone(),
            cache: g.cache_ttl.filter(|t| *t > 0).map_or_else(|| "off".into(), |t| format!("{t} s")),
            logs: g.collect_logs,
            auth: g.authentication,
            rate_limit: match (g.rate_limiting_limit, g.rate_limiting_interval) {
                (Some(n), Some(s)) if n > 0 && s > 0 => format!("{n} / {s} s"),
                _ => "none".into(),
            },
            created_at: g.created_at.clone(),
        })
        .collect()
}

async fn list_page(who: &Admin, gw: &Control, v: Fields, errors: Errors) -> Result<HttpResponse, UiError> {
    let list = blocking(gw, |s| Ok(gateways::list(s, None)?)).await?;
    let valid = errors.is_empty();
    let resp = render_checked(
        valid,
        &ListPage { page: Layout::new(who, "gateways", "Gateways"), gateways: lines(&list), v, errors },
    )?;
    Ok(resp)
}

/// `GET /admin/gateways`
pub async fn list(who: Admin, gw: Control) -> Result<HttpResponse, UiError> {
    let mut v = Fields::default();
    v.set("collect_logs", "on");
    list_page(&who, &gw, v, Errors::default()).await
}

/// `POST /admin/gateways`
pub async fn create(gw: Control, AdminForm { who, form: f }: AdminForm) -> Result<HttpResponse, UiError> {
    let mut errors = Errors::default();
    let mut body = json_body(&f, NUMBERS, CHECKBOXES, CHOICES, &mut errors);
    json_fields(&f, &mut body, &mut errors);
    body.insert("id".into(), Value::String(f.get("id").to_string()));
    if errors.is_empty() {
        match blocking(&gw, move |s| Ok(gateways::create(s, &body))).await? {
            Ok(g) => return Ok(see_other(&format!("/admin/gateways/{}", g.id))),
            Err(e) => errors.add_error(&e, "id"),
        }
    }
    list_page(&who, &gw, f, errors).await
}

/// A stored key as shown: never the secret.
pub struct KeyLine {
    pub id: String,
    pub provider: String,
    pub alias: String,
    pub preview: String,
    pub created_at: String,
}

#[derive(Template)]
#[template(path = "gateway.html")]
struct GatewayPage {
    page: Layout,
    id: String,
    is_default: bool,
    v: Fields,
    errors: Errors,
    base: String,
    curl: String,
    keys: Vec<KeyLine>,
    providers: Vec<String>,
    k: Fields,
    key_errors: Errors,
    spend: Vec<(String, String, String)>,
}

struct Shown {
    v: Option<Fields>,
    errors: Errors,
    k: Fields,
    key_errors: Errors,
}

async fn gateway_page(
    req: &HttpRequest,
    who: &Admin,
    gw: &Control,
    id: String,
    shown: Shown,
) -> Result<HttpResponse, UiError> {
    let (g, keys, custom) = blocking(gw, move |s| {
        let g = gateways::get(s, &id)?;
        let keys = provider_keys::list(s, &id)?;
        let custom: Vec<String> = s.snapshot().custom_providers.keys().map(|slug| format!("custom-{slug}")).collect();
        Ok((g, keys, custom))
    })
    .await?;
    let spend = gw.spend.list(&format!("gateway:{}|", g.id), gw.clock.now_ms()).await;
    let seen = super::origin(req);
    let scheme = if seen.https { "https" } else { "http" };
    let port = req.app_data::<web::Data<super::AdminState>>().and_then(|s| s.data_plane_port);
    let host = data_plane_host(&seen.host, port);
    let base = format!("{scheme}://{host}/v1/{}/{}", gw.config().account_id, g.id);
    let auth_line = if g.authentication { "  -H \"cf-aig-authorization: Bearer $TORII_TOKEN\" \\\n" } else { "" };
    let curl = format!(
        "curl {base}/openai/chat/completions \\\n  -H \"Authorization: Bearer $OPENAI_API_KEY\" \\\n{auth_line}  \
         -H \"Content-Type: application/json\" \\\n  -d '{{\"model\": \"gpt-4o-mini\", \"messages\": [{{\"role\": \
         \"user\", \"content\": \"Hello\"}}]}}'"
    );
    let mut providers: Vec<String> = crate::providers::PROVIDERS.iter().map(|p| p.slug.to_string()).collect();
    providers.extend(custom);
    let valid = shown.errors.is_empty() && shown.key_errors.is_empty();
    let resp = render_checked(
        valid,
        &GatewayPage {
            page: Layout::new(who, "gateways", format!("Gateway {}", g.id)),
            v: shown.v.unwrap_or_else(|| fields_of(&g)),
            id: g.id.clone(),
            is_default: g.is_default,
            errors: shown.errors,
            base,
            curl,
            keys: keys.iter().map(key_line).collect(),
            providers,
            spend: spend
                .into_iter()
                .map(|(k, spent, reserved)| {
                    let bucket = k.split_once('|').map_or(k.as_str(), |(_, b)| b).replace('|', " · ");
                    (bucket, format!("${spent:.6}"), format!("${reserved:.6}"))
                })
                .collect(),
            k: shown.k,
            key_errors: shown.key_errors,
        },
    )?;
    Ok(resp)
}

fn key_line(k: &ProviderKeyRecord) -> KeyLine {
    KeyLine {
        id: k.id.clone(),
        provider: k.provider_slug.clone(),
        alias: k.alias.clone(),
        preview: k.secret_preview.clone(),
        created_at: k.created_at.clone(),
    }
}

fn fresh() -> Shown {
    let mut k = Fields::default();
    k.set("alias", "default");
    Shown { v: None, errors: Errors::default(), k, key_errors: Errors::default() }
}

/// `GET /admin/gateways/{id}`
pub async fn show(req: HttpRequest, who: Admin, gw: Control, path: web::Path<String>) -> Result<HttpResponse, UiError> {
    gateway_page(&req, &who, &gw, path.into_inner(), fresh()).await
}

/// `POST /admin/gateways/{id}`: saves every setting.
pub async fn update(
    req: HttpRequest,
    gw: Control,
    path: web::Path<String>,
    AdminForm { who, form: f }: AdminForm,
) -> Result<HttpResponse, UiError> {
    let id = path.into_inner();
    let mut errors = Errors::default();
    let mut body = json_body(&f, NUMBERS, CHECKBOXES, CHOICES, &mut errors);
    json_fields(&f, &mut body, &mut errors);
    if errors.is_empty() {
        let target = id.clone();
        match blocking(&gw, move |s| Ok(gateways::update(s, &target, &body))).await? {
            Ok(_) => {
                return Ok(see_other(&format!("/admin/gateways/{id}?saved=1")));
            }
            Err(crate::error::Error::NotFound { .. }) => return Err(UiError::NotFound(format!("No gateway '{id}'."))),
            Err(e) => errors.add_error(&e, "_"),
        }
    }
    gateway_page(&req, &who, &gw, id, Shown { v: Some(f), errors, ..fresh() }).await
}

#[derive(Template)]
#[template(path = "confirm.html")]
pub(crate) struct ConfirmPage {
    pub page: Layout,
    pub question: String,
    pub detail: String,
    pub action: String,
    pub hidden: Vec<(String, String)>,
    pub back: String,
}

/// `GET /admin/gateways/{id}/delete`: asks first.
pub async fn confirm_delete(who: Admin, gw: Control, path: web::Path<String>) -> Result<HttpResponse, UiError> {
    let id = path.into_inner();
    let g = blocking(&gw, move |s| Ok(gateways::get(s, &id)?)).await?;
    render(&ConfirmPage {
        page: Layout::new(&who, "gateways", "Delete gateway"),
        question: format!("Delete gateway '{}'?", g.id),
        detail: "Its settings and stored provider keys are removed; requests to its URLs fail from then on. \
                 Its logs and analytics stay in the store until deleted."
            .into(),
        action: format!("/admin/gateways/{}/delete", g.id),
        hidden: Vec::new(),
        back: format!("/admin/gateways/{}", g.id),
    })
}

/// `POST /admin/gateways/{id}/delete`
pub async fn delete(gw: Control, path: web::Path<String>, _: AdminForm) -> Result<HttpResponse, UiError> {
    let id = path.into_inner();
    blocking(&gw, move |s| Ok(gateways::delete(s, &id)?)).await?;
    Ok(see_other("/admin/gateways"))
}

/// `POST /admin/gateways/{id}/keys`: stores a provider key.
pub async fn add_key(
    req: HttpRequest,
    gw: Control,
    path: web::Path<String>,
    AdminForm { who, form: f }: AdminForm,
) -> Result<HttpResponse, UiError> {
    let id = path.into_inner();
    let mut body = serde_json::Map::new();
    for name in ["provider_slug", "alias", "secret"] {
        let v = f.get(name);
        if !v.is_empty() {
            body.insert(name.into(), Value::String(v.to_string()));
        }
    }
    let target = id.clone();
    let mut key_errors = Errors::default();
    match blocking(&gw, move |s| Ok(provider_keys::create(s, &target, &body))).await? {
        Ok(_) => return Ok(see_other(&format!("/admin/gateways/{id}#keys"))),
        Err(e) => key_errors.add_error(&e, "alias"),
    }
    // The secret is never echoed back into the page.
    let mut k = f;
    k.set("secret", "");
    gateway_page(&req, &who, &gw, id, Shown { k, key_errors, ..fresh() }).await
}

/// `POST /admin/gateways/{id}/keys/{key}/delete`
pub async fn delete_key(gw: Control, path: web::Path<(String, String)>, _: AdminForm) -> Result<HttpResponse, UiError> {
    let (id, key) = path.into_inner();
    let target = id.clone();
    blocking(&gw, move |s| Ok(provider_keys::delete(s, &target, &key)?)).await?;
    Ok(see_other(&format!("/admin/gateways/{id}#keys")))
}

/// The host applications reach the data plane at: the one the admin used, but with the data-plane
/// listener's port when the admin UI has its own listener.
fn data_plane_host(seen: &str, data_plane_port: Option<u16>) -> String {
    let Some(port) = data_plane_port else { return seen.to_string() };
    let name = match seen.rsplit_once(':') {
        Some((name, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => name,
        _ => seen,
    };
    format!("{name}:{port}")
}
