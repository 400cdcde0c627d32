//! A gateway's dynamic routes and model aliases: list and create; a route's page edits its graph
//! as JSON (each save a new version, refused with the element named when it does not hold), draws
//! the flow as SVG, and lists versions to deploy (or roll back to).

use std::collections::HashMap;
use std::fmt::Write as _;

use actix_web::{HttpResponse, web};
use askama::Template;
use serde_json::{Map, Value};

use super::Control;
use super::forms::{Errors, Fields};
use super::{Admin, AdminForm, Layout, UiError, blocking, render, render_checked, see_other};
use crate::control::routes;
use crate::policy::route::{Element, Graph, RateKind};
use crate::store::RouteRecord;

/// A route as listed.
pub struct RouteLine {
    pub id: String,
    pub name: String,
    pub versions: usize,
    pub live: String,
}

/// An alias as listed.
pub struct AliasLine {
    pub name: String,
    pub models: String,
}

#[derive(Template)]
#[template(path = "routes.html")]
struct ListPage {
    page: Layout,
    gateway: String,
    routes: Vec<RouteLine>,
    aliases: Vec<AliasLine>,
    v: Fields,
    errors: Errors,
}

const EXAMPLE: &str = r#"[
  {"id": "start", "type": "start", "outputs": {"next": {"elementId": "model"}}},
  {"id": "model", "type": "model", "properties": {"provider": "openai", "model": "gpt-4o-mini", "timeout": 10000, "retries": 0},
   "outputs": {"success": {"elementId": "end"}, "fallback": {"elementId": "end"}}},
  {"id": "end", "type": "end", "outputs": {}}
]"#;

async fn list_page(
    who: &Admin,
    gw: &Control,
    gateway: String,
    v: Fields,
    errors: Errors,
) -> Result<HttpResponse, UiError> {
    let id = gateway.clone();
    let (all, aliases) = blocking(gw, move |s| {
        crate::control::gateways::get(s, &id)?;
        Ok((routes::list(s, &id)?, routes::aliases(s, &id)?))
    })
    .await?;
    let page = ListPage {
        page: Layout::new(who, "gateways", format!("Routes of {gateway}")),
        routes: all
            .iter()
            .map(|r| RouteLine {
                id: r.id.clone(),
                name: r.name.clone(),
                versions: r.versions.len(),
                live: r.deployments.last().map_or_else(String::new, |d| d.created_at.clone()),
            })
            .collect(),
        aliases: aliases.iter().map(|a| AliasLine { name: a.name.clone(), models: a.models.join(" → ") }).collect(),
        gateway,
        v,
        errors,
    };
    render_checked(page.errors.is_empty(), &page)
}

/// `GET /admin/gateways/{id}/routes`
pub async fn list(who: Admin, gw: Control, path: web::Path<String>) -> Result<HttpResponse, UiError> {
    let mut v = Fields::default();
    v.set("elements", EXAMPLE);
    list_page(&who, &gw, path.into_inner(), v, Errors::default()).await
}

fn json_field(f: &Fields, name: &str, errors: &mut Errors) -> Value {
    serde_json::from_str(f.get(name)).unwrap_or_else(|e| {
        errors.add(name, format!("is not JSON: {e}"));
        Value::Null
    })
}

/// `POST /admin/gateways/{id}/routes`: a new route.
pub async fn create(
    gw: Control,
    path: web::Path<String>,
    AdminForm { who, form: f }: AdminForm,
) -> Result<HttpResponse, UiError> {
    let gateway = path.into_inner();
    let mut errors = Errors::default();
    let elements = json_field(&f, "elements", &mut errors);
    if errors.is_empty() {
        let mut body = Map::new();
        body.insert("name".into(), Value::String(f.get("name").to_string()));
        body.insert("elements".into(), elements);
        let g = gateway.clone();
        match blocking(&gw, move |s| Ok(routes::create(s, &g, &body))).await? {
            Ok(r) => return Ok(see_other(&format!("/admin/gateways/{gateway}/routes/{}", r.id))),
            Err(e @ crate::error::Error::Conflict { .. }) => errors.add("name", e.to_string()),
            Err(e) => errors.add_under(
                if matches!(&e, crate::error::Error::Invalid { field, .. } if field == "name") {
                    "name"
                } else {
                    "elements"
                },
                &e,
            ),
        }
    }
    list_page(&who, &gw, gateway, f, errors).await
}

/// `POST /admin/gateways/{id}/aliases`: creates or replaces an alias.
pub async fn put_alias(
    gw: Control,
    path: web::Path<String>,
    AdminForm { who, form: f }: AdminForm,
) -> Result<HttpResponse, UiError> {
    let gateway = path.into_inner();
    let mut errors = Errors::default();
    let models: Vec<Value> = f
        .get("models")
        .split([',', '\n'])
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|m| Value::String(m.into()))
        .collect();
    let mut body = Map::new();
    body.insert("models".into(), Value::Array(models));
    let (g, name) = (gateway.clone(), f.get("alias").trim().to_string());
    match blocking(&gw, move |s| Ok(routes::put_alias(s, &g, &name, &body))).await? {
        Ok(_) => return Ok(see_other(&format!("/admin/gateways/{gateway}/routes"))),
        Err(e) => errors.add_under("alias", &e),
    }
    list_page(&who, &gw, gateway, f, errors).await
}

/// `POST /admin/gateways/{id}/aliases/{name}/delete`
pub async fn delete_alias(
    gw: Control,
    path: web::Path<(String, String)>,
    _: AdminForm,
) -> Result<HttpResponse, UiError> {
    let (gateway, name) = path.into_inner();
    let g = gateway.clone();
    blocking(&gw, move |s| Ok(routes::delete_alias(s, &g, &name)?)).await?;
    Ok(see_other(&format!("/admin/gateways/{gateway}/routes")))
}

/// A version as listed.
pub struct VersionLine {
    pub version_id: String,
    pub created_at: String,
    pub live: bool,
    pub shown: bool,
}

#[derive(Template)]
#[template(path = "route.html")]
struct RoutePage {
    page: Layout,
    gateway: String,
    id: String,
    name: String,
    versions: Vec<VersionLine>,
    shown_version: String,
    svg: String,
    v: Fields,
    errors: Errors,
}

/// Which version to show: `?version=`, else the live one.
#[derive(serde::Deserialize)]
pub struct Which {
    version: Option<String>,
}

fn route_page(
    who: &Admin,
    r: &RouteRecord,
    version: Option<&str>,
    v: Option<Fields>,
    errors: Errors,
) -> Result<HttpResponse, UiError> {
    let live = r.deployments.last().map(|d| d.version_id.clone()).unwrap_or_default();
    let shown = version.and_then(|want| r.versions.iter().find(|x| x.version_id == want)).or_else(|| r.live());
    let shown_id = shown.map(|s| s.version_id.clone()).unwrap_or_default();
    let elements = shown.map_or(Value::Array(Vec::new()), |s| s.elements.clone());
    let svg = crate::policy::route::parse(&elements).map(|g| draw(&g)).unwrap_or_default();
    let v = v.unwrap_or_else(|| {
        let mut f = Fields::default();
        f.set("elements", serde_json::to_string_pretty(&elements).unwrap_or_default());
        f
    });
    let page = RoutePage {
        page: Layout::new(who, "gateways", format!("Route {}", r.name)),
        gateway: r.gateway_id.clone(),
        id: r.id.clone(),
        name: r.name.clone(),
        versions: r
            .versions
            .iter()
            .rev()
            .map(|x| VersionLine {
                version_id: x.version_id.clone(),
                created_at: x.created_at.clone(),
                live: x.version_id == live,
                shown: x.version_id == shown_id,
            })
            .collect(),
        shown_version: shown_id,
        svg,
        v,
        errors,
    };
    if page.errors.is_empty() { render(&page) } else { render_checked(false, &page) }
}

/// `GET /admin/gateways/{id}/routes/{route}`
pub async fn show(
    who: Admin,
    gw: Control,
    path: web::Path<(String, String)>,
    q: web::Query<Which>,
) -> Result<HttpResponse, UiError> {
    let (gateway, id) = path.into_inner();
    let r = blocking(&gw, move |s| Ok(routes::get(s, &gateway, &id)?)).await?;
    route_page(&who, &r, q.version.as_deref(), None, Errors::default())
}

/// `POST /admin/gateways/{id}/routes/{route}/versions`: saves a version, deployed at once when
/// `deploy` is checked.
pub async fn save(
    gw: Control,
    path: web::Path<(String, String)>,
    AdminForm { who, form: f }: AdminForm,
) -> Result<HttpResponse, UiError> {
    let (gateway, id) = path.into_inner();
    let mut errors = Errors::default();
    let elements = json_field(&f, "elements", &mut errors);
    let deploy = f.on("deploy");
    let (gw_id, route_id) = (gateway.clone(), id.clone());
    let valid = errors.is_empty();
    let (r, outcome) = blocking(&gw, move |s| {
        let current = routes::get(s, &gw_id, &route_id)?;
        if !valid {
            return Ok((current, None));
        }
        let mut body = Map::new();
        body.insert("elements".into(), elements);
        let saved = routes::add_version(s, &gw_id, &route_id, &body).and_then(|r| {
            if deploy {
                let mut d = Map::new();
                let newest = r.versions.last().map(|v| v.version_id.clone()).unwrap_or_default();
                d.insert("version_id".into(), Value::String(newest));
                routes::deploy(s, &gw_id, &route_id, &d)
            } else {
                Ok(r)
            }
        });
        Ok((current, Some(saved)))
    })
    .await?;
    match outcome {
        Some(Ok(saved)) => {
            let newest = saved.versions.last().map(|v| v.version_id.clone()).unwrap_or_default();
            Ok(see_other(&format!("/admin/gateways/{gateway}/routes/{id}?version={newest}")))
        }
        Some(Err(e)) => {
            errors.add_under("elements", &e);
            route_page(&who, &r, None, Some(f), errors)
        }
        None => route_page(&who, &r, None, Some(f), errors),
    }
}

/// `POST /admin/gateways/{id}/routes/{route}/deploy`: makes `version_id` live (a rollback when
/// it is an earlier one).
pub async fn deploy(
    gw: Control,
    path: web::Path<(String, String)>,
    AdminForm { form: f, .. }: AdminForm,
) -> Result<HttpResponse, UiError> {
    let (gateway, id) = path.into_inner();
    let (g, i) = (gateway.clone(), id.clone());
    let mut body = Map::new();
    body.insert("version_id".into(), Value::String(f.get("version_id").to_string()));
    blocking(&gw, move |s| Ok(routes::deploy(s, &g, &i, &body)?)).await?;
    Ok(see_other(&format!("/admin/gateways/{gateway}/routes/{id}")))
}

/// `POST /admin/gateways/{id}/routes/{route}/delete`
pub async fn delete(gw: Control, path: web::Path<(String, String)>, _: AdminForm) -> Result<HttpResponse, UiError> {
    let (gateway, id) = path.into_inner();
    let g = gateway.clone();
    blocking(&gw, move |s| Ok(routes::delete(s, &g, &id)?)).await?;
    Ok(see_other(&format!("/admin/gateways/{gateway}/routes")))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn describe(e: &Element) -> (&'static str, String) {
    match e {
        Element::Start { .. } => ("start", String::new()),
        Element::Conditional { conditions, .. } => ("conditional", conditions.to_string()),
        Element::Percentage { .. } => ("percentage", String::new()),
        Element::Rate { kind, key, limit, window, .. } => {
            let what = if *kind == RateKind::Cost { format!("${limit}") } else { format!("{limit} req") };
            ("rate", format!("{what} / {window}s {key}"))
        }
        Element::Model { provider, model, .. } => ("model", format!("{provider}/{model}")),
        Element::End => ("end", String::new()),
    }
}

fn edges(e: &Element) -> Vec<(String, &String)> {
    match e {
        Element::Start { next } => vec![("next".into(), next)],
        Element::Conditional { on_true, on_false, .. } => vec![("true".into(), on_true), ("false".into(), on_false)],
        Element::Percentage { outputs } => outputs.iter().map(|(p, t)| (format!("{p}%"), t)).collect(),
        Element::Rate { success, fallback, .. } | Element::Model { success, fallback, .. } => {
            let mut out = vec![("success".to_string(), success)];
            if let Some(f) = fallback {
                out.push(("fallback".into(), f));
            }
            out
        }
        Element::End => Vec::new(),
    }
}

/// The flow as SVG: columns by the longest path from the start, one box per element, one
/// labelled arrow per output.
#[must_use]
pub fn draw(graph: &Graph) -> String {
    // Longest-path depth (the graph has no cycle).
    let mut depth: HashMap<&String, usize> = HashMap::new();
    let mut stack = vec![(&graph.start, 0usize)];
    while let Some((id, d)) = stack.pop() {
        if depth.get(id).is_some_and(|&seen| seen >= d) || d > graph.elements.len() {
            continue;
        }
        depth.insert(id, d);
        if let Some(e) = graph.elements.get(id) {
            for (_, t) in edges(e) {
                stack.push((t, d + 1));
            }
        }
    }
    let mut columns: Vec<Vec<&String>> = Vec::new();
    let mut ids: Vec<&String> = depth.keys().copied().collect();
    ids.sort();
    for id in ids {
        let d = depth[id];
        if columns.len() <= d {
            columns.resize(d + 1, Vec::new());
        }
        columns[d].push(id);
    }
    let (width_box, height_box, gap_x, gap_y) = (170usize, 54usize, 90usize, 30usize);
    let pos: HashMap<&String, (usize, usize)> = columns
        .iter()
        .enumerate()
        .flat_map(|(c, col)| {
            col.iter()
                .enumerate()
                .map(move |(r, id)| (*id, (20 + c * (width_box + gap_x), 20 + r * (height_box + gap_y))))
        })
        .collect();
    let width = 40 + columns.len() * (width_box + gap_x);
    let height = 40 + columns.iter().map(Vec::len).max().unwrap_or(1) * (height_box + gap_y);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="route-flow" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="route flow"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>"#
    );
    for (id, e) in &graph.elements {
        let Some(&(x, y)) = pos.get(id) else { continue };
        for (label, to) in edges(e) {
            let Some(&(tx, ty)) = pos.get(to) else { continue };
            let (x1, y1, x2, y2) = (x + width_box, y + height_box / 2, tx, ty + height_box / 2);
            let _ = write!(
                svg,
                r#"<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="currentColor" marker-end="url(#arrow)"/><text x="{}" y="{}" font-size="11">{}</text>"#,
                x1.midpoint(x2).saturating_sub(20),
                y1.midpoint(y2).saturating_sub(4),
                escape(&label)
            );
        }
    }
    for (id, e) in &graph.elements {
        let Some(&(x, y)) = pos.get(id) else { continue };
        let (kind, detail) = describe(e);
        let detail: String = detail.chars().take(28).collect();
        let _ = write!(
            svg,
            r#"<g class="el el-{kind}"><rect x="{x}" y="{y}" width="{width_box}" height="{height_box}" rx="6" fill="none" stroke="currentColor"/><text x="{}" y="{}" font-size="12" font-weight="bold">{} ({kind})</text><text x="{}" y="{}" font-size="11">{}</text></g>"#,
            x + 8,
            y + 20,
            escape(id),
            x + 8,
            y + 40,
            escape(&detail)
        );
    }
    svg.push_str("</svg>");
    svg
}
