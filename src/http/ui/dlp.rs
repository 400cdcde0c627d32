//! DLP profiles: the built-in ones, and the operator's custom ones (create, delete).

use actix_web::{HttpResponse, web};
use askama::Template;
use serde_json::Value;

use super::Control;
use super::forms::{Errors, Fields};
use super::gateways::ConfirmPage;
use super::{Admin, AdminForm, Layout, UiError, blocking, render, render_checked, see_other};
use crate::control::dlp_profiles;

/// A profile as listed.
pub struct Line {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "dlp.html")]
struct ListPage {
    page: Layout,
    profiles: Vec<Line>,
    v: Fields,
    errors: Errors,
}

fn line(p: &Value) -> Line {
    let text = |k: &str| p[k].as_str().unwrap_or("").to_string();
    let custom = p["type"] == "custom";
    let detail = if custom {
        let keywords: Vec<&str> =
            p["keywords"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        if keywords.is_empty() {
            text("pattern")
        } else {
            format!("{} — near: {} (within {} characters)", text("pattern"), keywords.join(", "), p["proximity"])
        }
    } else {
        text("description")
    };
    Line { id: text("id"), name: text("name"), kind: if custom { "custom".into() } else { "built-in".into() }, detail }
}

async fn list_page(who: &Admin, gw: &Control, v: Fields, errors: Errors) -> Result<HttpResponse, UiError> {
    let all = blocking(gw, |s| Ok(dlp_profiles::list(s)?)).await?;
    let valid = errors.is_empty();
    let page =
        ListPage { page: Layout::new(who, "dlp", "DLP profiles"), profiles: all.iter().map(line).collect(), v, errors };
    render_checked(valid, &page)
}

/// `GET /admin/dlp`
pub async fn list(who: Admin, gw: Control) -> Result<HttpResponse, UiError> {
    list_page(&who, &gw, Fields::default(), Errors::default()).await
}

/// `POST /admin/dlp`: a custom profile.
pub async fn create(gw: Control, AdminForm { who, form: f }: AdminForm) -> Result<HttpResponse, UiError> {
    let mut errors = Errors::default();
    let mut body = serde_json::Map::new();
    for name in ["id", "name", "pattern", "description"] {
        let v = f.get(name).trim();
        body.insert(name.into(), if v.is_empty() { Value::Null } else { Value::String(v.to_string()) });
    }
    let keywords: Vec<Value> = f
        .get("keywords")
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| Value::String(k.into()))
        .collect();
    body.insert("keywords".into(), Value::Array(keywords));
    let proximity = f.get("proximity").trim();
    if !proximity.is_empty() {
        match proximity.parse::<u64>() {
            Ok(n) => {
                body.insert("proximity".into(), Value::from(n));
            }
            Err(_) => errors.add("proximity", "must be a whole number (or empty)"),
        }
    }
    if errors.is_empty() {
        match blocking(&gw, move |s| Ok(dlp_profiles::create(s, &body))).await? {
            Ok(_) => return Ok(see_other("/admin/dlp")),
            Err(e) => errors.add_error(&e, "id"),
        }
    }
    list_page(&who, &gw, f, errors).await
}

/// `GET /admin/dlp/{id}/delete`
pub async fn confirm_delete(who: Admin, gw: Control, path: web::Path<String>) -> Result<HttpResponse, UiError> {
    let id = path.into_inner();
    let p = blocking(&gw, move |s| Ok(dlp_profiles::get(s, &id)?)).await?;
    render(&ConfirmPage {
        page: Layout::new(&who, "dlp", "Delete DLP profile"),
        question: format!("Delete DLP profile '{}'?", p.id),
        detail: "A profile a gateway's policy names cannot be deleted; remove it from the policy first.".into(),
        action: format!("/admin/dlp/{}/delete", p.id),
        hidden: Vec::new(),
        back: "/admin/dlp".into(),
    })
}

/// `POST /admin/dlp/{id}/delete`
pub async fn delete(
    gw: Control,
    path: web::Path<String>,
    AdminForm { who, .. }: AdminForm,
) -> Result<HttpResponse, UiError> {
    let id = path.into_inner();
    match blocking(&gw, move |s| Ok(dlp_profiles::delete(s, &id))).await? {
        Ok(_) => Ok(see_other("/admin/dlp")),
        Err(e) => {
            let mut errors = Errors::default();
            errors.add_error(&e, "_");
            list_page(&who, &gw, Fields::default(), errors).await
        }
    }
}
