//! Datasets (saved log filters) and evaluations (cost, speed and human-feedback figures over
//! their logs), in Cloudflare's management API shapes; and the evaluation types Torii computes.

use serde_json::{Value, json};

use super::input::{self, Body};
use super::{Settings, now_rfc3339};
use crate::error::Error;
use crate::logs::query::{Filter, ListQuery, Op};
use crate::logs::record::LogMeta;
use crate::store::{
    DatasetRecord, EvaluationRecord, EvaluationResult, GatewayRecord, get_in, list_in, put_in, remove_in,
};

/// Filter keys a dataset may use (Cloudflare's).
const KEYS: &[&str] = &[
    "created_at",
    "request_content_type",
    "response_content_type",
    "success",
    "cached",
    "provider",
    "model",
    "cost",
    "tokens",
    "tokens_in",
    "tokens_out",
    "duration",
    "feedback",
];

/// Most logs one evaluation reads.
const MAX_LOGS: usize = 200_000;

/// The evaluation types: (id, name, description).
pub const TYPES: &[(&str, &str, &str)] = &[
    ("cost", "Cost", "Total and average cost (USD) of the logs, and their tokens"),
    ("speed", "Speed", "Average, median and 95th percentile duration and time to first byte (ms)"),
    ("performance", "Performance", "Human feedback: thumbs up and down and the share of good answers"),
];

fn parse_filters(v: Option<&Value>) -> Result<Vec<Filter>, Error> {
    let Some(Value::Array(items)) = v else { return Err(Error::invalid("filters", "is required: an array")) };
    let mut out = Vec::new();
    for (i, f) in items.iter().enumerate() {
        let at = format!("filters[{i}]");
        let key = f.get("key").and_then(Value::as_str).unwrap_or("");
        if !KEYS.contains(&key) {
            return Err(Error::invalid(format!("{at}.key"), format!("must be one of {}", KEYS.join(", "))));
        }
        let operator = match f.get("operator").and_then(Value::as_str) {
            Some("eq") => Op::Eq,
            Some("contains") => Op::Contains,
            Some("lt") => Op::Lt,
            Some("gt") => Op::Gt,
            _ => return Err(Error::invalid(format!("{at}.operator"), "must be eq, contains, lt or gt")),
        };
        let value = match f.get("value") {
            Some(Value::Array(v))
                if !v.is_empty() && v.iter().all(|x| x.is_string() || x.is_number() || x.is_boolean()) =>
            {
                v.clone()
            }
            _ => {
                return Err(Error::invalid(
                    format!("{at}.value"),
                    "must be a non-empty array of strings, numbers or booleans",
                ));
            }
        };
        out.push(Filter { key: key.to_string(), operator, value });
    }
    Ok(out)
}

fn filters_json(filters: &[Filter]) -> Value {
    Value::Array(filters.iter().map(|f| json!({"key": f.key, "operator": f.operator, "value": f.value})).collect())
}

fn dataset_not_found(id: &str) -> Error {
    Error::NotFound { kind: "dataset", id: id.chars().take(64).collect() }
}

fn apply(body: &Body, d: &mut DatasetRecord) -> Result<(), Error> {
    input::reject_unknown(body, &["name", "enable", "filters", "id", "gateway_id", "created_at", "modified_at"])?;
    let name = input::string(body, "name")?.required("name")?.ok_or_else(|| Error::invalid("name", "is required"))?;
    if name.trim().is_empty() || name.len() > 128 {
        return Err(Error::invalid("name", "must be 1-128 characters"));
    }
    d.name = name;
    d.enable = input::boolean(body, "enable")?.required("enable")?.unwrap_or(true);
    d.filters = filters_json(&parse_filters(body.get("filters"))?);
    Ok(())
}

fn gateway_exists(txn: &redb::WriteTransaction, gateway: &str) -> Result<(), Error> {
    get_in::<GatewayRecord>(txn, gateway)?
        .map(|_| ())
        .ok_or_else(|| Error::NotFound { kind: "gateway", id: gateway.chars().take(64).collect() })
}

/// Creates a dataset.
pub fn create(settings: &Settings, gateway: &str, body: &Body) -> Result<DatasetRecord, Error> {
    let now = now_rfc3339();
    let mut d = DatasetRecord {
        id: uuid::Uuid::new_v4().to_string(),
        gateway_id: gateway.into(),
        name: String::new(),
        enable: true,
        filters: Value::Array(Vec::new()),
        created_at: now.clone(),
        modified_at: now,
    };
    apply(body, &mut d)?;
    settings.store().write(|txn| -> Result<(), Error> {
        gateway_exists(txn, gateway)?;
        put_in(txn, &d)?;
        Ok(())
    })?;
    Ok(d)
}

/// Replaces a dataset's name, switch and filters (`PUT`).
pub fn update(settings: &Settings, gateway: &str, id: &str, body: &Body) -> Result<DatasetRecord, Error> {
    settings.store().write(|txn| -> Result<DatasetRecord, Error> {
        let mut d: DatasetRecord = get_in(txn, id)?
            .filter(|d: &DatasetRecord| d.gateway_id == gateway)
            .ok_or_else(|| dataset_not_found(id))?;
        apply(body, &mut d)?;
        d.modified_at = now_rfc3339();
        put_in(txn, &d)?;
        Ok(d)
    })
}

/// One dataset.
pub fn get(settings: &Settings, gateway: &str, id: &str) -> Result<DatasetRecord, Error> {
    settings.store().get::<DatasetRecord>(id)?.filter(|d| d.gateway_id == gateway).ok_or_else(|| dataset_not_found(id))
}

/// Deletes a dataset (evaluations keep the copy they ran with).
pub fn delete(settings: &Settings, gateway: &str, id: &str) -> Result<DatasetRecord, Error> {
    settings.store().write(|txn| -> Result<DatasetRecord, Error> {
        let d: DatasetRecord = get_in(txn, id)?
            .filter(|d: &DatasetRecord| d.gateway_id == gateway)
            .ok_or_else(|| dataset_not_found(id))?;
        remove_in::<DatasetRecord>(txn, id)?;
        Ok(d)
    })
}

/// A gateway's datasets, newest first, filtered as the list call asks.
pub fn list(
    settings: &Settings,
    gateway: &str,
    name: Option<&str>,
    enable: Option<bool>,
) -> Result<Vec<DatasetRecord>, Error> {
    let mut all: Vec<DatasetRecord> = settings
        .store()
        .list::<DatasetRecord>()?
        .into_iter()
        .filter(|d| d.gateway_id == gateway)
        .filter(|d| name.is_none_or(|n| d.name.contains(n)) && enable.is_none_or(|e| d.enable == e))
        .collect();
    all.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok(all)
}

/// A dataset as the API returns it (`account` for the shapes that carry it).
#[must_use]
pub fn dataset_json(d: &DatasetRecord, account: Option<&str>) -> Value {
    let mut out = json!({"id": d.id, "name": d.name, "enable": d.enable, "filters": d.filters, "gateway_id": d.gateway_id,
        "created_at": d.created_at, "modified_at": d.modified_at});
    if let (Some(a), Value::Object(o)) = (account, &mut out) {
        o.insert("account_id".into(), json!(a));
        o.insert("account_tag".into(), json!(a));
    }
    out
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index"
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One evaluation type over some logs.
#[expect(clippy::cast_precision_loss, reason = "figures for display")]
fn figures(kind: &str, logs: &[LogMeta]) -> Value {
    let n = logs.len().max(1) as f64;
    match kind {
        "cost" => {
            let total: f64 = logs.iter().filter_map(|m| m.cost).sum();
            let tokens_in: u64 = logs.iter().map(|m| u64::from(m.tokens_in)).sum();
            let tokens_out: u64 = logs.iter().map(|m| u64::from(m.tokens_out)).sum();
            json!({"total_cost": total, "average_cost": total / n, "tokens_in": tokens_in, "tokens_out": tokens_out})
        }
        "speed" => {
            let mut d: Vec<u32> = logs.iter().map(|m| m.duration).collect();
            let mut t: Vec<u32> = logs.iter().map(|m| m.ttfb).collect();
            d.sort_unstable();
            t.sort_unstable();
            let avg = d.iter().map(|x| f64::from(*x)).sum::<f64>() / n;
            json!({"average_duration_ms": avg, "p50_duration_ms": percentile(&d, 0.5), "p95_duration_ms": percentile(&d, 0.95),
                "p50_time_to_first_byte_ms": percentile(&t, 0.5), "p95_time_to_first_byte_ms": percentile(&t, 0.95)})
        }
        _ => {
            let up = logs.iter().filter(|m| m.feedback == Some(1)).count();
            let down = logs.iter().filter(|m| m.feedback == Some(-1)).count();
            let rated = (up + down) as f64;
            json!({"positive": up, "negative": down, "unrated": logs.len() - up - down,
                "positive_share": if rated > 0.0 { up as f64 / rated } else { 0.0 }})
        }
    }
}

fn evaluation_not_found(id: &str) -> Error {
    Error::NotFound { kind: "evaluation", id: id.chars().take(64).collect() }
}

/// Runs an evaluation now: the logs of its datasets (each dataset's filters; a log in several
/// counts once), one result per type.
pub fn evaluate(settings: &Settings, gateway: &str, body: &Body) -> Result<EvaluationRecord, Error> {
    input::reject_unknown(body, &["name", "dataset_ids", "evaluation_type_ids"])?;
    let name = input::string(body, "name")?.required("name")?.ok_or_else(|| Error::invalid("name", "is required"))?;
    let ids = |field: &str| -> Result<Vec<String>, Error> {
        match body.get(field) {
            Some(Value::Array(v)) if !v.is_empty() && v.iter().all(Value::is_string) => {
                Ok(v.iter().filter_map(Value::as_str).map(str::to_string).collect())
            }
            _ => Err(Error::invalid(field, "is required: a non-empty array of ids")),
        }
    };
    let (dataset_ids, type_ids) = (ids("dataset_ids")?, ids("evaluation_type_ids")?);
    if let Some((i, bad)) = type_ids.iter().enumerate().find(|(_, t)| !TYPES.iter().any(|(id, _, _)| id == t)) {
        return Err(Error::invalid(
            format!("evaluation_type_ids[{i}]"),
            format!("'{bad}' is not an evaluation type (cost, speed, performance)"),
        ));
    }
    let mut datasets = Vec::new();
    for (i, id) in dataset_ids.iter().enumerate() {
        let d = get(settings, gateway, id)
            .map_err(|_| Error::invalid(format!("dataset_ids[{i}]"), "names no dataset of this gateway"))?;
        if !d.enable {
            return Err(Error::invalid(format!("dataset_ids[{i}]"), "the dataset is disabled"));
        }
        datasets.push(d);
    }
    let mut logs: Vec<LogMeta> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for d in &datasets {
        let filters = parse_filters(Some(&d.filters))?;
        let q = ListQuery {
            page: 1,
            per_page: MAX_LOGS,
            order_by: "created_at".into(),
            descending: true,
            filters,
            search: None,
            meta_info: false,
        };
        for m in crate::logs::query::collect_all(settings.store(), gateway, &q, MAX_LOGS)? {
            if seen.insert(m.id) && logs.len() < MAX_LOGS {
                logs.push(m);
            }
        }
    }
    let total = logs.len() as u64;
    let results = type_ids
        .iter()
        .map(|t| EvaluationResult {
            id: uuid::Uuid::new_v4().to_string(),
            evaluation_type_id: t.clone(),
            result: figures(t, &logs).to_string(),
            total_logs: total,
        })
        .collect();
    let now = now_rfc3339();
    let e = EvaluationRecord {
        id: uuid::Uuid::new_v4().to_string(),
        gateway_id: gateway.into(),
        name,
        datasets,
        results,
        total_logs: total,
        created_at: now.clone(),
        modified_at: now,
    };
    settings.store().write(|txn| -> Result<(), Error> {
        gateway_exists(txn, gateway)?;
        put_in(txn, &e)?;
        Ok(())
    })?;
    Ok(e)
}

/// One evaluation.
pub fn get_evaluation(settings: &Settings, gateway: &str, id: &str) -> Result<EvaluationRecord, Error> {
    settings
        .store()
        .get::<EvaluationRecord>(id)?
        .filter(|e| e.gateway_id == gateway)
        .ok_or_else(|| evaluation_not_found(id))
}

/// Deletes an evaluation.
pub fn delete_evaluation(settings: &Settings, gateway: &str, id: &str) -> Result<EvaluationRecord, Error> {
    settings.store().write(|txn| -> Result<EvaluationRecord, Error> {
        let e: EvaluationRecord = get_in(txn, id)?
            .filter(|e: &EvaluationRecord| e.gateway_id == gateway)
            .ok_or_else(|| evaluation_not_found(id))?;
        remove_in::<EvaluationRecord>(txn, id)?;
        Ok(e)
    })
}

/// A gateway's evaluations, newest first.
pub fn evaluations(settings: &Settings, gateway: &str, name: Option<&str>) -> Result<Vec<EvaluationRecord>, Error> {
    let mut all: Vec<EvaluationRecord> = settings
        .store()
        .list::<EvaluationRecord>()?
        .into_iter()
        .filter(|e| e.gateway_id == gateway && name.is_none_or(|n| e.name.contains(n)))
        .collect();
    all.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok(all)
}

/// An evaluation as the API returns it.
#[must_use]
pub fn evaluation_json(e: &EvaluationRecord, account: &str) -> Value {
    json!({
        "id": e.id, "name": e.name, "gateway_id": e.gateway_id, "processed": true, "total_logs": e.total_logs,
        "created_at": e.created_at, "modified_at": e.modified_at,
        "datasets": e.datasets.iter().map(|d| dataset_json(d, Some(account))).collect::<Vec<_>>(),
        "results": e.results.iter().map(|r| json!({
            "id": r.id, "evaluation_id": e.id, "evaluation_type_id": r.evaluation_type_id, "result": r.result,
            "status": 1, "status_description": "completed", "total_logs": r.total_logs,
            "created_at": e.created_at, "modified_at": e.modified_at,
        })).collect::<Vec<_>>(),
    })
}

/// The evaluation types.
#[must_use]
pub fn types_json() -> Vec<Value> {
    TYPES
        .iter()
        .map(|(id, name, description)| {
            json!({"id": id, "name": name, "description": description, "type": id, "enable": true, "mandatory": false,
                "created_at": "2026-01-01T00:00:00Z", "modified_at": "2026-01-01T00:00:00Z"})
        })
        .collect()
}

/// A gateway's datasets and evaluations (ids), for the gateway delete cascade.
pub fn of_gateway(txn: &redb::WriteTransaction, gateway: &str) -> Result<(Vec<String>, Vec<String>), Error> {
    let d = list_in::<DatasetRecord>(txn)?.into_iter().filter(|d| d.gateway_id == gateway).map(|d| d.id).collect();
    let e = list_in::<EvaluationRecord>(txn)?.into_iter().filter(|e| e.gateway_id == gateway).map(|e| e.id).collect();
    Ok((d, e))
}
