//! Datasets, evaluations and evaluation types: `/gateways/{id}/datasets[/{ds}]`,
//! `/gateways/{id}/evaluations[/{ev}]` and `/evaluation-types`, in Cloudflare's shapes.

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::envelope::{ApiError, PageQuery, paginate, v4_ok};
use super::management::{ApiCaller, blocking};
use crate::control::ControlPlane;
use crate::control::datasets;
use crate::control::input::parse_object;

/// List filters of datasets and evaluations.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    page: Option<usize>,
    per_page: Option<usize>,
    name: Option<String>,
    search: Option<String>,
    enable: Option<bool>,
}

type Two = web::Path<(String, String)>;
type Three = web::Path<(String, String, String)>;

/// `GET /gateways/{id}/datasets`
pub async fn list(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: Two,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let q = q.into_inner();
    let name = q.name.or(q.search);
    let all = blocking(&gw, move |s| {
        crate::control::gateways::get(s, &id)?;
        datasets::list(s, &id, name.as_deref(), q.enable)
    })
    .await?;
    let (page, info) = paginate(
        all.iter().map(|d| datasets::dataset_json(d, None)).collect(),
        &PageQuery { page: q.page, per_page: q.per_page },
    );
    Ok(v4_ok(page, Some(info)))
}

/// `POST /gateways/{id}/datasets`: `{name, enable, filters}`.
pub async fn create(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: Two,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let body = parse_object(&body)?;
    Ok(v4_ok(datasets::dataset_json(&blocking(&gw, move |s| datasets::create(s, &id, &body)).await?, None), None))
}

/// `GET /gateways/{id}/datasets/{ds}`
pub async fn get(_: ApiCaller, gw: web::Data<ControlPlane>, path: Three) -> Result<HttpResponse, ApiError> {
    let (_, id, ds) = path.into_inner();
    Ok(v4_ok(datasets::dataset_json(&blocking(&gw, move |s| datasets::get(s, &id, &ds)).await?, None), None))
}

/// `PUT /gateways/{id}/datasets/{ds}`
pub async fn update(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: Three,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (_, id, ds) = path.into_inner();
    let body = parse_object(&body)?;
    Ok(v4_ok(datasets::dataset_json(&blocking(&gw, move |s| datasets::update(s, &id, &ds, &body)).await?, None), None))
}

/// `DELETE /gateways/{id}/datasets/{ds}`
pub async fn delete(_: ApiCaller, gw: web::Data<ControlPlane>, path: Three) -> Result<HttpResponse, ApiError> {
    let (_, id, ds) = path.into_inner();
    Ok(v4_ok(datasets::dataset_json(&blocking(&gw, move |s| datasets::delete(s, &id, &ds)).await?, None), None))
}

/// `GET /gateways/{id}/evaluations`
pub async fn list_evaluations(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: Two,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (account, id) = path.into_inner();
    let q = q.into_inner();
    let name = q.name.or(q.search);
    let all = blocking(&gw, move |s| {
        crate::control::gateways::get(s, &id)?;
        datasets::evaluations(s, &id, name.as_deref())
    })
    .await?;
    let items = all.iter().map(|e| datasets::evaluation_json(e, &account)).collect();
    let (page, info) = paginate(items, &PageQuery { page: q.page, per_page: q.per_page });
    Ok(v4_ok(page, Some(info)))
}

/// `POST /gateways/{id}/evaluations`: `{name, dataset_ids, evaluation_type_ids}`, computed now.
pub async fn create_evaluation(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: Two,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (account, id) = path.into_inner();
    let body = parse_object(&body)?;
    let e = blocking(&gw, move |s| datasets::evaluate(s, &id, &body)).await?;
    Ok(v4_ok(datasets::evaluation_json(&e, &account), None))
}

/// `GET /gateways/{id}/evaluations/{ev}`
pub async fn get_evaluation(_: ApiCaller, gw: web::Data<ControlPlane>, path: Three) -> Result<HttpResponse, ApiError> {
    let (account, id, ev) = path.into_inner();
    let e = blocking(&gw, move |s| datasets::get_evaluation(s, &id, &ev)).await?;
    Ok(v4_ok(datasets::evaluation_json(&e, &account), None))
}

/// `DELETE /gateways/{id}/evaluations/{ev}`
pub async fn delete_evaluation(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: Three,
) -> Result<HttpResponse, ApiError> {
    let (account, id, ev) = path.into_inner();
    let e = blocking(&gw, move |s| datasets::delete_evaluation(s, &id, &ev)).await?;
    Ok(v4_ok(datasets::evaluation_json(&e, &account), None))
}

/// `GET /evaluation-types`
pub async fn types(_: ApiCaller, q: web::Query<PageQuery>) -> Result<HttpResponse, ApiError> {
    let (page, info) = paginate(datasets::types_json(), &q);
    Ok(v4_ok(page, Some(info)))
}
