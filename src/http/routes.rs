//! Dynamic routes and model aliases of a gateway: `/gateways/{id}/routes[...]` in Cloudflare's
//! shapes (lists answer under `data`, a rename answers `{success, route}`), and Torii's
//! `/gateways/{id}/aliases[/{name}]`.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::envelope::{ApiError, v4_ok};
use super::management::{ApiCaller, blocking};
use crate::control::ControlPlane;
use crate::control::input::parse_object;
use crate::control::routes;

/// Paging of the `data` lists.
#[derive(Debug, Deserialize)]
pub struct Paging {
    page: Option<usize>,
    per_page: Option<usize>,
}

fn data_list(key: &str, items: Vec<Value>, q: &Paging) -> HttpResponse {
    let per_page = q.per_page.unwrap_or(20).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    let shown: Vec<Value> = items.into_iter().skip((page - 1) * per_page).take(per_page).collect();
    HttpResponse::Ok().json(json!({
        "success": true, "errors": [], "messages": [],
        "data": {key: shown, "page": page, "per_page": per_page, "order_by": "created_at", "order_by_direction": "desc"},
    }))
}

type RoutePath = web::Path<(String, String, String)>;

/// `GET /gateways/{id}/routes`
pub async fn list(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
    q: web::Query<Paging>,
) -> Result<HttpResponse, ApiError> {
    let (account, id) = path.into_inner();
    let all = blocking(&gw, move |s| {
        crate::control::gateways::get(s, &id)?;
        routes::list(s, &id)
    })
    .await?;
    Ok(data_list("routes", all.iter().map(|r| routes::public(r, &account)).collect(), &q))
}

/// `POST /gateways/{id}/routes`: `{name, elements}`; the first version is deployed.
pub async fn create(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (account, id) = path.into_inner();
    let body = parse_object(&body)?;
    let r = blocking(&gw, move |s| routes::create(s, &id, &body)).await?;
    Ok(v4_ok(routes::public(&r, &account), None))
}

/// `GET /gateways/{id}/routes/{route}`
pub async fn get(_: ApiCaller, gw: web::Data<ControlPlane>, path: RoutePath) -> Result<HttpResponse, ApiError> {
    let (account, id, route) = path.into_inner();
    let r = blocking(&gw, move |s| routes::get(s, &id, &route)).await?;
    Ok(v4_ok(routes::public(&r, &account), None))
}

/// `PATCH /gateways/{id}/routes/{route}`: `{name}`.
pub async fn rename(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: RoutePath,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (account, id, route) = path.into_inner();
    let body = parse_object(&body)?;
    let r = blocking(&gw, move |s| routes::rename(s, &id, &route, &body)).await?;
    let mut shown = routes::public(&r, &account);
    if let Value::Object(o) = &mut shown {
        o.remove("elements");
    }
    Ok(HttpResponse::Ok().json(json!({"success": true, "errors": [], "messages": [], "route": shown})))
}

/// `DELETE /gateways/{id}/routes/{route}`
pub async fn delete(_: ApiCaller, gw: web::Data<ControlPlane>, path: RoutePath) -> Result<HttpResponse, ApiError> {
    let (_, id, route) = path.into_inner();
    let r = blocking(&gw, move |s| routes::delete(s, &id, &route)).await?;
    let elements = r.live().map_or(Value::Array(Vec::new()), |v| v.elements.clone());
    Ok(v4_ok(routes::summary(&r, &elements), None))
}

/// `POST /gateways/{id}/routes/{route}/versions`: `{elements}`, a draft until deployed.
pub async fn add_version(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: RoutePath,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (_, id, route) = path.into_inner();
    let body = parse_object(&body)?;
    let r = blocking(&gw, move |s| routes::add_version(s, &id, &route, &body)).await?;
    let elements = r.versions.last().map_or(Value::Array(Vec::new()), |v| v.elements.clone());
    Ok(v4_ok(routes::summary(&r, &elements), None))
}

/// A route's versions or deployments, as a `data` list.
async fn route_list(
    gw: &web::Data<ControlPlane>,
    path: RoutePath,
    q: &Paging,
    (key, items): (&str, fn(&crate::store::RouteRecord) -> Vec<Value>),
) -> Result<HttpResponse, ApiError> {
    let (_, id, route) = path.into_inner();
    let r = blocking(gw, move |s| routes::get(s, &id, &route)).await?;
    Ok(data_list(key, items(&r), q))
}

/// `GET /gateways/{id}/routes/{route}/versions`
pub async fn versions(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: RoutePath,
    q: web::Query<Paging>,
) -> Result<HttpResponse, ApiError> {
    route_list(&gw, path, &q, ("versions", routes::versions)).await
}

/// `GET /gateways/{id}/routes/{route}/versions/{version}`
pub async fn version(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id, route, version) = path.into_inner();
    let r = blocking(&gw, move |s| routes::get(s, &id, &route)).await?;
    Ok(v4_ok(routes::version(&r, &version)?, None))
}

/// `POST /gateways/{id}/routes/{route}/deployments`: `{version_id}` goes live.
pub async fn deploy(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: RoutePath,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (_, id, route) = path.into_inner();
    let body = parse_object(&body)?;
    let r = blocking(&gw, move |s| routes::deploy(s, &id, &route, &body)).await?;
    let elements = r.live().map_or(Value::Array(Vec::new()), |v| v.elements.clone());
    Ok(v4_ok(routes::summary(&r, &elements), None))
}

/// `GET /gateways/{id}/routes/{route}/deployments`
pub async fn deployments(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: RoutePath,
    q: web::Query<Paging>,
) -> Result<HttpResponse, ApiError> {
    route_list(&gw, path, &q, ("deployments", routes::deployments)).await
}

/// `GET /gateways/{id}/aliases`
pub async fn list_aliases(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let all = blocking(&gw, move |s| {
        crate::control::gateways::get(s, &id)?;
        routes::aliases(s, &id)
    })
    .await?;
    Ok(v4_ok(all.iter().map(routes::alias_json).collect::<Vec<_>>(), None))
}

/// `POST /gateways/{id}/aliases`: `{name, models}`.
pub async fn create_alias(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let body = parse_object(&body)?;
    let name = body.get("name").and_then(Value::as_str).unwrap_or("").to_string();
    let a = blocking(&gw, move |s| routes::put_alias(s, &id, &name, &body)).await?;
    Ok(v4_ok(routes::alias_json(&a), None))
}

/// `PUT /gateways/{id}/aliases/{name}`: `{models}`.
pub async fn put_alias(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: RoutePath,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (_, id, name) = path.into_inner();
    let body = parse_object(&body)?;
    let a = blocking(&gw, move |s| routes::put_alias(s, &id, &name, &body)).await?;
    Ok(v4_ok(routes::alias_json(&a), None))
}

/// `DELETE /gateways/{id}/aliases/{name}`
pub async fn delete_alias(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: RoutePath,
) -> Result<HttpResponse, ApiError> {
    let (_, id, name) = path.into_inner();
    let a = blocking(&gw, move |s| routes::delete_alias(s, &id, &name)).await?;
    Ok(v4_ok(routes::alias_json(&a), None))
}
