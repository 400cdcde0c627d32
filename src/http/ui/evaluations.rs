//! A gateway's datasets (saved log filters) and evaluations (cost, speed and feedback figures
//! over their logs).

use actix_web::{HttpResponse, web};
use askama::Template;
use serde_json::{Map, Value};

use super::Control;
use super::forms::{Errors, Fields};
use super::{Admin, AdminForm, Layout, UiError, blocking, render_checked, see_other};
use crate::control::datasets;

/// A dataset as listed.
pub struct DatasetLine {
    pub id: String,
    pub name: String,
    pub filters: String,
}

/// An evaluation as listed: its name, logs and one line per result.
pub struct EvaluationLine {
    pub name: String,
    pub created_at: String,
    pub total_logs: u64,
    pub results: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "evaluations.html")]
struct EvaluationsPage {
    page: Layout,
    gateway: String,
    datasets: Vec<DatasetLine>,
    evaluations: Vec<EvaluationLine>,
    types: Vec<(&'static str, &'static str)>,
    v: Fields,
    errors: Errors,
}

async fn page(who: &Admin, gw: &Control, gateway: String, v: Fields, errors: Errors) -> Result<HttpResponse, UiError> {
    let id = gateway.clone();
    let (ds, evs) = blocking(gw, move |s| {
        crate::control::gateways::get(s, &id)?;
        Ok((datasets::list(s, &id, None, None)?, datasets::evaluations(s, &id, None)?))
    })
    .await?;
    let page = EvaluationsPage {
        page: Layout::new(who, "gateways", format!("Datasets and evaluations of {gateway}")),
        datasets: ds
            .iter()
            .map(|d| DatasetLine { id: d.id.clone(), name: d.name.clone(), filters: d.filters.to_string() })
            .collect(),
        evaluations: evs
            .iter()
            .map(|e| EvaluationLine {
                name: e.name.clone(),
                created_at: e.created_at.clone(),
                total_logs: e.total_logs,
                results: e.results.iter().map(|r| (r.evaluation_type_id.clone(), r.result.clone())).collect(),
            })
            .collect(),
        types: datasets::TYPES.iter().map(|(id, name, _)| (*id, *name)).collect(),
        gateway,
        v,
        errors,
    };
    render_checked(page.errors.is_empty(), &page)
}

/// `GET /admin/gateways/{id}/evaluations`
pub async fn show(who: Admin, gw: Control, path: web::Path<String>) -> Result<HttpResponse, UiError> {
    let mut v = Fields::default();
    v.set("filters", r#"[{"key": "provider", "operator": "eq", "value": ["openai"]}]"#);
    page(&who, &gw, path.into_inner(), v, Errors::default()).await
}

/// `POST /admin/gateways/{id}/datasets`
pub async fn create_dataset(
    gw: Control,
    path: web::Path<String>,
    AdminForm { who, form: f }: AdminForm,
) -> Result<HttpResponse, UiError> {
    let gateway = path.into_inner();
    let mut errors = Errors::default();
    match serde_json::from_str::<Value>(f.get("filters")) {
        Ok(filters) => {
            let mut body = Map::new();
            body.insert("name".into(), Value::String(f.get("name").to_string()));
            body.insert("enable".into(), Value::Bool(true));
            body.insert("filters".into(), filters);
            let g = gateway.clone();
            match blocking(&gw, move |s| Ok(datasets::create(s, &g, &body))).await? {
                Ok(_) => return Ok(see_other(&format!("/admin/gateways/{gateway}/evaluations"))),
                Err(e) => errors.add_under("dataset", &e),
            }
        }
        Err(e) => errors.add("dataset", format!("filters: not JSON: {e}")),
    }
    page(&who, &gw, gateway, f, errors).await
}

/// `POST /admin/gateways/{id}/evaluations`: runs an evaluation now.
pub async fn evaluate(
    gw: Control,
    path: web::Path<String>,
    AdminForm { who, form: f }: AdminForm,
) -> Result<HttpResponse, UiError> {
    let gateway = path.into_inner();
    let mut errors = Errors::default();
    let mut body = Map::new();
    body.insert("name".into(), Value::String(f.get("evaluation").to_string()));
    body.insert("dataset_ids".into(), Value::Array(f.all("dataset").map(|s| Value::String(s.to_string())).collect()));
    body.insert(
        "evaluation_type_ids".into(),
        Value::Array(f.all("type").map(|s| Value::String(s.to_string())).collect()),
    );
    let g = gateway.clone();
    match blocking(&gw, move |s| Ok(datasets::evaluate(s, &g, &body))).await? {
        Ok(_) => return Ok(see_other(&format!("/admin/gateways/{gateway}/evaluations"))),
        Err(e) => errors.add_under("evaluation", &e),
    }
    page(&who, &gw, gateway, f, errors).await
}
