//! Log queries: Cloudflare's filters (`key`, `operator` eq/neq/contains/lt/gt, `value` list) and
//! deprecated flat parameters, newest-first pages driven by the most selective index, totals from
//! the counters, detail, bodies, feedback, and deletion.

use redb::{ReadableDatabase, ReadableTable};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::index::{INDEXED, is_counted, key_text};
use super::record::{LogBodies, LogMeta, decode_bodies, decode_meta, encode_meta};
use super::writer::remove_log;
use crate::error::Error;
use crate::store::{Store, tables};

/// Comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Any of the values.
    Eq,
    /// None of the values.
    Neq,
    /// Contains any of the values.
    Contains,
    /// Less than the first value.
    Lt,
    /// Greater than the first value.
    Gt,
}

/// One filter.
#[derive(Debug, Clone, Deserialize)]
pub struct Filter {
    /// Field.
    pub key: String,
    /// Comparison.
    pub operator: Op,
    /// Values.
    pub value: Vec<Value>,
}

/// What to list.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// 1-based page.
    pub page: usize,
    /// Page size (1–100).
    pub per_page: usize,
    /// Sort field.
    pub order_by: String,
    /// Newest (or largest) first.
    pub descending: bool,
    /// All must match.
    pub filters: Vec<Filter>,
    /// Free text over provider, model, path, ids, metadata, user agent and error.
    pub search: Option<String>,
    /// Compute min/max aggregates.
    pub meta_info: bool,
}

/// Rows examined after the page is full to count a total that no counter holds.
const COUNT_BUDGET: u64 = 20_000;

const ORDER_KEYS: &[&str] = &[
    "created_at",
    "provider",
    "model",
    "model_type",
    "success",
    "cached",
    "cost",
    "tokens_in",
    "tokens_out",
    "duration",
    "feedback",
];
const FILTER_KEYS: &[&str] = &[
    "id",
    "created_at",
    "request_content_type",
    "response_content_type",
    "request_type",
    "success",
    "cached",
    "provider",
    "model",
    "model_type",
    "cost",
    "tokens",
    "tokens_in",
    "tokens_out",
    "duration",
    "feedback",
    "event_id",
    "metadata.key",
    "metadata.value",
    "user_agent",
    "status_code",
    "step",
    "authentication",
    "wholesale",
    "compatibilityMode",
    "dlp_action",
];

fn bad(field: &str, reason: impl Into<String>) -> Error {
    Error::invalid(field, reason)
}

fn scalar(raw: &str) -> Value {
    match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        // Leading zeros (ids like "007") stay text.
        _ if raw.len() > 1 && raw.starts_with('0') && !raw.starts_with("0.") => Value::String(raw.to_string()),
        _ => raw
            .parse::<i64>()
            .map(Value::from)
            .ok()
            .or_else(|| raw.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number))
            .unwrap_or_else(|| Value::String(raw.to_string())),
    }
}

/// A filter assembled from `filters[i][...]` parameters: key, operator, (position, value).
type PartialFilter = (Option<String>, Option<Op>, Vec<(usize, Value)>);

/// Builds a query from URL parameters: `filters` as JSON or as `filters[i][key|operator|value][j]`
/// (dot notation too), plus the deprecated flat parameters.
pub fn parse_query(pairs: &[(String, String)]) -> Result<ListQuery, Error> {
    let mut q = ListQuery {
        page: 1,
        per_page: 20,
        order_by: "created_at".into(),
        descending: true,
        filters: Vec::new(),
        search: None,
        meta_info: false,
    };
    let mut indexed: std::collections::BTreeMap<usize, PartialFilter> = std::collections::BTreeMap::new();
    let number = |k: &str, v: &str| v.parse::<usize>().map_err(|_| bad(k, "must be a positive integer"));
    for (k, v) in pairs {
        match k.as_str() {
            "page" => q.page = number(k, v)?.max(1),
            "per_page" => q.per_page = number(k, v)?.clamp(1, 100),
            "order_by" => {
                if !ORDER_KEYS.contains(&v.as_str()) {
                    return Err(bad("order_by", format!("must be one of {}", ORDER_KEYS.join(", "))));
                }
                q.order_by.clone_from(v);
            }
            "order_by_direction" | "direction" => q.descending = !v.eq_ignore_ascii_case("asc"),
            "search" => q.search = Some(v.clone()).filter(|s| !s.is_empty()),
            "meta_info" => q.meta_info = v == "true",
            "filters" => {
                let parsed: Vec<Filter> = serde_json::from_str(v)
                    .map_err(|e| bad("filters", format!("expected a JSON array of filters: {e}")))?;
                q.filters.extend(parsed);
            }
            key if key.starts_with("filters[") || key.starts_with("filters.") => {
                let parts: Vec<&str> =
                    key["filters".len()..].split(['[', ']', '.']).filter(|p| !p.is_empty()).collect();
                let (Some(i), Some(field)) = (parts.first().and_then(|p| p.parse::<usize>().ok()), parts.get(1)) else {
                    return Err(bad(key, "expected filters[N][key|operator|value]"));
                };
                let slot = indexed.entry(i).or_default();
                match *field {
                    "key" => slot.0 = Some(v.clone()),
                    "operator" => {
                        slot.1 = Some(
                            serde_json::from_value(Value::String(v.clone()))
                                .map_err(|_| bad(key, "operator must be eq, neq, contains, lt or gt"))?,
                        );
                    }
                    "value" => {
                        let j = parts.get(2).and_then(|p| p.parse().ok()).unwrap_or(slot.2.len());
                        slot.2.push((j, scalar(v)));
                    }
                    _ => return Err(bad(key, "expected filters[N][key|operator|value]")),
                }
            }
            _ => flat_param(k, v, &mut q.filters)?,
        }
    }
    for (i, (key, op, mut values)) in indexed {
        let key = key.ok_or_else(|| bad(&format!("filters[{i}]"), "has no key"))?;
        values.sort_by_key(|(j, _)| *j);
        q.filters.push(Filter {
            key,
            operator: op.unwrap_or(Op::Eq),
            value: values.into_iter().map(|(_, v)| v).collect(),
        });
    }
    for f in &q.filters {
        if !FILTER_KEYS.contains(&f.key.as_str()) && !f.key.starts_with("metadata.") {
            return Err(bad("filters", format!("unknown key '{}'", f.key.chars().take(64).collect::<String>())));
        }
        if f.value.is_empty() {
            return Err(bad("filters", format!("'{}' has no value", f.key)));
        }
    }
    Ok(q)
}

/// Deprecated flat parameters become filters; unknown parameters are refused.
fn flat_param(k: &str, v: &str, filters: &mut Vec<Filter>) -> Result<(), Error> {
    let push = |filters: &mut Vec<Filter>, key: &str, operator: Op, value: Value| {
        filters.push(Filter { key: key.to_string(), operator, value: vec![value] });
    };
    match k {
        "provider"
        | "model"
        | "model_type"
        | "success"
        | "cached"
        | "request_content_type"
        | "response_content_type" => push(filters, k, Op::Eq, scalar(v)),
        "feedback" => push(filters, "feedback", Op::Eq, scalar(if v == "0" { "-1" } else { v })),
        "start_date" => push(filters, "created_at", Op::Gt, Value::String(v.to_string())),
        "end_date" => push(filters, "created_at", Op::Lt, Value::String(v.to_string())),
        _ => {
            let (op, field) = if let Some(f) = k.strip_prefix("min_") {
                (Op::Gt, f)
            } else if let Some(f) = k.strip_prefix("max_") {
                (Op::Lt, f)
            } else {
                return Err(bad(k, "is not a known parameter"));
            };
            let field = if field == "total_tokens" { "tokens" } else { field };
            if !["cost", "duration", "tokens_in", "tokens_out", "tokens"].contains(&field) {
                return Err(bad(k, "is not a known parameter"));
            }
            let n: f64 = v.parse().map_err(|_| bad(k, "must be a number"))?;
            // min_/max_ are inclusive.
            let n = if op == Op::Gt { n - 1e-9 } else { n + 1e-9 };
            push(filters, field, op, json!(n));
        }
    }
    Ok(())
}

enum Field<'a> {
    Text(Option<&'a str>),
    Owned(Option<String>),
    Num(Option<f64>),
    Bool(bool),
}

#[expect(clippy::cast_precision_loss, reason = "timestamps and counters fit f64 exactly here")]
fn field<'a>(m: &'a LogMeta, key: &str) -> Field<'a> {
    match key {
        "id" => Field::Owned(Some(uuid::Uuid::from_u128(m.id).to_string())),
        "created_at" => Field::Num(Some(m.created_at as f64)),
        "request_content_type" => Field::Text(m.request_content_type.as_deref()),
        "response_content_type" => Field::Text(m.response_content_type.as_deref()),
        "request_type" => Field::Text(Some(m.request_type.as_str())),
        "success" => Field::Bool(m.success),
        "cached" => Field::Bool(m.cached),
        "provider" => Field::Text(Some(&m.provider)),
        "model" => Field::Text(m.model.as_deref()),
        "model_type" => Field::Text(m.model_type.as_deref()),
        "cost" => Field::Num(m.cost),
        "tokens" => Field::Num(Some(f64::from(m.tokens_in) + f64::from(m.tokens_out))),
        "tokens_in" => Field::Num(Some(f64::from(m.tokens_in))),
        "tokens_out" => Field::Num(Some(f64::from(m.tokens_out))),
        "duration" => Field::Num(Some(f64::from(m.duration))),
        "feedback" => Field::Num(m.feedback.map(f64::from)),
        "event_id" => Field::Text(Some(&m.event_id)),
        "user_agent" => Field::Text(m.user_agent.as_deref()),
        "status_code" => Field::Num(Some(f64::from(m.status_code))),
        "step" => Field::Num(Some(f64::from(m.step))),
        _ => Field::Text(None),
    }
}

fn time_value(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            #[expect(clippy::cast_precision_loss, reason = "millisecond timestamps fit f64 exactly")]
            let ms = OffsetDateTime::parse(s, &Rfc3339).ok().map(|t| (t.unix_timestamp_nanos() / 1_000_000) as f64);
            ms.or_else(|| s.parse().ok())
        }
        _ => None,
    }
}

fn metadata_pairs(m: &LogMeta) -> Vec<(String, String)> {
    match m.metadata.as_deref().map(serde_json::from_str::<Value>) {
        Some(Ok(Value::Object(map))) => map.into_iter().map(|(k, v)| (k, key_text(&v))).collect(),
        _ => Vec::new(),
    }
}

fn matches_text(actual: Option<&str>, f: &Filter) -> bool {
    let values = f.value.iter().map(key_text);
    match f.operator {
        Op::Eq => actual.is_some_and(|a| values.clone().any(|v| v == a)),
        Op::Neq => actual.is_none_or(|a| values.clone().all(|v| v != a)),
        Op::Contains => actual.is_some_and(|a| values.clone().any(|v| a.contains(&v))),
        Op::Lt => actual.is_some_and(|a| values.clone().next().is_some_and(|v| a < v.as_str())),
        Op::Gt => actual.is_some_and(|a| values.clone().next().is_some_and(|v| a > v.as_str())),
    }
}

/// Whether a log passes one filter.
fn matches(m: &LogMeta, f: &Filter) -> bool {
    if let Some(k) = f.key.strip_prefix("metadata.") {
        let pairs = metadata_pairs(m);
        return match k {
            "key" => {
                pairs.iter().any(|(pk, _)| matches_text(Some(pk), f)) || (f.operator == Op::Neq && pairs.is_empty())
            }
            "value" => {
                pairs.iter().any(|(_, pv)| matches_text(Some(pv), f)) || (f.operator == Op::Neq && pairs.is_empty())
            }
            _ => matches_text(pairs.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.as_str()), f),
        };
    }
    match field(m, &f.key) {
        Field::Text(t) => matches_text(t, f),
        Field::Owned(t) => matches_text(t.as_deref(), f),
        Field::Bool(b) => matches_text(Some(if b { "true" } else { "false" }), f),
        Field::Num(n) => {
            let first = f.value.first().and_then(if f.key == "created_at" { time_value } else { Value::as_f64 });
            match f.operator {
                Op::Lt => n.zip(first).is_some_and(|(n, v)| n < v),
                Op::Gt => n.zip(first).is_some_and(|(n, v)| n > v),
                Op::Eq => n.is_some_and(|n| f.value.iter().filter_map(Value::as_f64).any(|v| (v - n).abs() < 1e-9)),
                Op::Neq => n.is_none_or(|n| f.value.iter().filter_map(Value::as_f64).all(|v| (v - n).abs() >= 1e-9)),
                Op::Contains => n.is_some_and(|n| f.value.iter().any(|v| n.to_string().contains(&key_text(v)))),
            }
        }
    }
}

fn matches_search(m: &LogMeta, needle: &str) -> bool {
    let needle = needle.to_lowercase();
    let hay = [
        Some(m.provider.as_str()),
        m.model.as_deref(),
        Some(m.path.as_str()),
        Some(m.event_id.as_str()),
        m.metadata.as_deref(),
        m.user_agent.as_deref(),
        m.error.as_deref(),
    ];
    hay.into_iter().flatten().any(|h| h.to_lowercase().contains(&needle))
        || uuid::Uuid::from_u128(m.id).to_string().contains(&needle)
}

/// An index that can drive the scan: an `eq` filter on one value of an indexed field.
fn driving_index(f: &Filter) -> Option<(String, String)> {
    let indexed = INDEXED.contains(&f.key.as_str())
        || (f.key.starts_with("metadata.") && f.key != "metadata.key" && f.key != "metadata.value");
    (f.operator == Op::Eq && f.value.len() == 1 && indexed).then(|| (f.key.clone(), key_text(&f.value[0])))
}

/// A page of logs, the total number matching, and optional aggregates.
pub struct Page {
    /// The logs of the page.
    pub logs: Vec<LogMeta>,
    /// Logs matching in all pages.
    pub total_count: u64,
    /// `total_count` was extrapolated from a bounded scan (filters without counters).
    pub total_estimated: bool,
    /// min/max aggregates when asked for.
    pub meta_info: Option<Value>,
}

#[derive(Default)]
struct Aggregates {
    bounds: Vec<(f64, f64)>,
}

impl Aggregates {
    const FIELDS: [&'static str; 5] = ["cost", "duration", "tokens_in", "tokens_out", "total_tokens"];

    fn add(&mut self, m: &LogMeta) {
        let values = [
            m.cost.unwrap_or(0.0),
            f64::from(m.duration),
            f64::from(m.tokens_in),
            f64::from(m.tokens_out),
            f64::from(m.tokens_in) + f64::from(m.tokens_out),
        ];
        if self.bounds.is_empty() {
            self.bounds = values.iter().map(|v| (*v, *v)).collect();
        }
        for (b, v) in self.bounds.iter_mut().zip(values) {
            *b = (b.0.min(v), b.1.max(v));
        }
    }

    fn to_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (i, name) in Self::FIELDS.iter().enumerate() {
            let (lo, hi) = self.bounds.get(i).copied().unwrap_or((0.0, 0.0));
            out.insert(format!("min_{name}"), json!(lo));
            out.insert(format!("max_{name}"), json!(hi));
        }
        Value::Object(out)
    }
}

/// Lists a gateway's logs.
pub fn list(store: &Store, gateway: &str, q: &ListQuery) -> Result<Page, Error> {
    let txn = store.db().begin_read().map_err(store_err)?;
    let logs = txn.open_table(tables::LOGS).map_err(store_err)?;
    let index = txn.open_table(tables::LOG_INDEX).map_err(store_err)?;
    let counts = txn.open_table(tables::LOG_COUNTS).map_err(store_err)?;
    let count_of = |field: &str, value: &str| -> Result<u64, Error> {
        Ok(counts.get((gateway, field, value)).map_err(store_err)?.map_or(0, |v| v.value()))
    };
    // The most selective index drives the scan.
    let mut driver: Option<(String, String, u64)> = None;
    for f in &q.filters {
        if let Some((field, value)) = driving_index(f) {
            // Uncounted fields hold (nearly) unique values: the most selective driver there is.
            let n = if is_counted(&field) { count_of(&field, &value)? } else { 1 };
            if driver.as_ref().is_none_or(|d| n < d.2) {
                driver = Some((field, value, n));
            }
        }
    }
    let only_driver = q.search.is_none() && q.filters.len() == 1 && driver.is_some();
    let known_total = if q.filters.is_empty() && q.search.is_none() {
        Some(count_of("", "")?)
    } else if only_driver && driver.as_ref().is_some_and(|d| is_counted(&d.0)) {
        driver.as_ref().map(|d| d.2)
    } else {
        None
    };
    let by_time = q.order_by == "created_at";
    let skip = (q.page - 1).saturating_mul(q.per_page);
    let mut page = Vec::with_capacity(q.per_page);
    let mut sortable = Vec::new();
    let mut matched = 0u64;
    let mut aggregates = Aggregates::default();
    // Aggregates and other orders need every match; a total without a counter is counted
    // for at most COUNT_BUDGET more rows after the page is full, then estimated.
    let exact_needed = q.meta_info || !by_time;
    let mut examined = 0u64;
    let mut examined_when_full: Option<u64> = None;
    let mut visit = |m: LogMeta| -> bool {
        examined += 1;
        if page.len() >= q.per_page && examined_when_full.is_none() {
            examined_when_full = Some(examined);
        }
        let keep_going = |page_len: usize, examined: u64, full_at: Option<u64>| {
            exact_needed
                || page_len < q.per_page
                || (known_total.is_none() && full_at.is_none_or(|f| examined - f < COUNT_BUDGET))
        };
        if !q.filters.iter().all(|f| matches(&m, f)) || !q.search.as_deref().is_none_or(|s| matches_search(&m, s)) {
            return keep_going(page.len(), examined, examined_when_full);
        }
        matched += 1;
        if q.meta_info {
            aggregates.add(&m);
        }
        if !by_time {
            sortable.push(m);
        } else if matched > skip as u64 && page.len() < q.per_page {
            page.push(m);
        }
        keep_going(page.len(), examined, examined_when_full)
    };
    if let Some((field, value, _)) = &driver {
        let range = index
            .range(
                (gateway, field.as_str(), value.as_str(), 0u128)..=(gateway, field.as_str(), value.as_str(), u128::MAX),
            )
            .map_err(store_err)?;
        let ids = range.map(|r| r.map(|(k, _)| k.value().3));
        let ids: Box<dyn Iterator<Item = _>> =
            if q.descending || !by_time { Box::new(ids.rev()) } else { Box::new(ids) };
        for id in ids {
            let id = id.map_err(store_err)?;
            let Some(bytes) = logs.get((gateway, id)).map_err(store_err)? else { continue };
            let Some(m) = decode_meta(bytes.value()) else { continue };
            if !visit(m) {
                break;
            }
        }
    } else {
        let range = logs.range((gateway, 0u128)..=(gateway, u128::MAX)).map_err(store_err)?;
        let rows: Box<dyn Iterator<Item = _>> =
            if q.descending || !by_time { Box::new(range.rev()) } else { Box::new(range) };
        for row in rows {
            let (_, bytes) = row.map_err(store_err)?;
            let Some(m) = decode_meta(bytes.value()) else { continue };
            if !visit(m) {
                break;
            }
        }
    }
    if !by_time {
        sort_by(&mut sortable, &q.order_by, q.descending);
        page = sortable.into_iter().skip(skip).take(q.per_page).collect();
    }
    // Rows the scan could have visited: the driver's count, or the gateway's total.
    let population = match &driver {
        Some((field, _, n)) if is_counted(field) => Some(*n),
        Some(_) => None,
        None => Some(count_of("", "")?),
    };
    let stopped_early =
        known_total.is_none() && !exact_needed && examined_when_full.is_some_and(|f| examined - f >= COUNT_BUDGET);
    let (total_count, total_estimated) = total(known_total, population, stopped_early, examined, matched);
    Ok(Page { logs: page, total_count, total_estimated, meta_info: q.meta_info.then(|| aggregates.to_json()) })
}

/// The exact total when known, else the matches counted, extrapolated when the scan stopped early.
fn total(known: Option<u64>, population: Option<u64>, stopped_early: bool, examined: u64, matched: u64) -> (u64, bool) {
    match (known, population) {
        (Some(t), _) => (t, false),
        (None, Some(pop)) if stopped_early && examined > 0 => {
            #[expect(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "an estimate"
            )]
            let rest = (pop.saturating_sub(examined) as f64 * matched as f64 / examined as f64).round() as u64;
            (matched + rest, true)
        }
        _ => (matched, false),
    }
}

fn sort_by(logs: &mut [LogMeta], key: &str, descending: bool) {
    logs.sort_by(|a, b| {
        let ord = match key {
            "provider" => a.provider.cmp(&b.provider),
            "model" => a.model.cmp(&b.model),
            "model_type" => a.model_type.cmp(&b.model_type),
            "success" => a.success.cmp(&b.success),
            "cached" => a.cached.cmp(&b.cached),
            "cost" => a.cost.unwrap_or(0.0).total_cmp(&b.cost.unwrap_or(0.0)),
            "tokens_in" => a.tokens_in.cmp(&b.tokens_in),
            "tokens_out" => a.tokens_out.cmp(&b.tokens_out),
            "duration" => a.duration.cmp(&b.duration),
            "feedback" => a.feedback.cmp(&b.feedback),
            _ => a.id.cmp(&b.id),
        };
        let ord = ord.then(a.id.cmp(&b.id));
        if descending { ord.reverse() } else { ord }
    });
}

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Store(e.to_string())
}

fn parse_id(id: &str) -> Result<u128, Error> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.as_u128())
        .map_err(|_| Error::NotFound { kind: "log", id: id.chars().take(64).collect() })
}

/// One log's metadata.
pub fn get(store: &Store, gateway: &str, id: &str) -> Result<LogMeta, Error> {
    let key = parse_id(id)?;
    let txn = store.db().begin_read().map_err(store_err)?;
    let logs = txn.open_table(tables::LOGS).map_err(store_err)?;
    let bytes = logs.get((gateway, key)).map_err(store_err)?;
    bytes
        .and_then(|b| decode_meta(b.value()))
        .ok_or_else(|| Error::NotFound { kind: "log", id: id.chars().take(64).collect() })
}

/// One log's stored heads and bodies (`None` when the payload was not collected).
pub fn bodies(store: &Store, gateway: &str, id: &str) -> Result<Option<LogBodies>, Error> {
    let meta = get(store, gateway, id)?;
    let txn = store.db().begin_read().map_err(store_err)?;
    let table = txn.open_table(tables::LOG_BODIES).map_err(store_err)?;
    let bytes = table.get(meta.id).map_err(store_err)?;
    Ok(bytes.and_then(|b| decode_bodies(b.value())))
}

/// Feedback, score and metadata changes (`PATCH`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogPatch {
    /// 1, -1 or null.
    #[serde(default, deserialize_with = "nullable")]
    pub feedback: Option<Option<i8>>,
    /// 0–100.
    #[serde(default, deserialize_with = "nullable")]
    pub score: Option<Option<u8>>,
    /// Replaces the metadata.
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, Value>>,
}

#[expect(clippy::option_option, reason = "absent (keep) and null (clear) differ in a PATCH")]
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Applies a patch, keeping the indexes in step.
pub fn patch(store: &Store, gateway: &str, id: &str, p: &LogPatch) -> Result<LogMeta, Error> {
    if let Some(Some(f)) = p.feedback
        && f != 1
        && f != -1
    {
        return Err(bad("feedback", "must be 1, -1 or null"));
    }
    if let Some(Some(s)) = p.score
        && s > 100
    {
        return Err(bad("score", "must be between 0 and 100"));
    }
    let old = get(store, gateway, id)?;
    let mut new = old.clone();
    if let Some(f) = p.feedback {
        new.feedback = f;
    }
    if let Some(s) = p.score {
        new.score = s;
    }
    if let Some(m) = &p.metadata {
        if m.len() > 5 || m.values().any(|v| !(v.is_string() || v.is_number() || v.is_boolean())) {
            return Err(bad("metadata", "at most 5 entries of string, number or boolean"));
        }
        new.metadata = Some(Value::Object(m.clone()).to_string());
    }
    let txn = store.db().begin_write().map_err(store_err)?;
    {
        let mut logs = txn.open_table(tables::LOGS).map_err(store_err)?;
        let mut bodies = txn.open_table(tables::LOG_BODIES).map_err(store_err)?;
        let mut index = txn.open_table(tables::LOG_INDEX).map_err(store_err)?;
        let mut counts = txn.open_table(tables::LOG_COUNTS).map_err(store_err)?;
        let saved = bodies.get(old.id).map_err(store_err)?.map(|b| b.value().to_vec());
        remove_log(&mut logs, &mut bodies, &mut index, &mut counts, gateway, &old)?;
        super::writer::insert_log(&mut logs, &mut index, &mut counts, gateway, &new)?;
        if let Some(b) = saved {
            bodies.insert(new.id, b.as_slice()).map_err(store_err)?;
        }
    }
    txn.commit().map_err(store_err)?;
    Ok(new)
}

/// Deletes the logs matching the filters (at most `limit`); returns how many.
pub fn delete(store: &Store, gateway: &str, q: &ListQuery, limit: Option<usize>) -> Result<u64, Error> {
    let mut all = q.clone();
    all.page = 1;
    all.per_page = usize::MAX;
    all.meta_info = false;
    let victims = collect_all(store, gateway, &all, limit.unwrap_or(usize::MAX))?;
    let txn = store.db().begin_write().map_err(store_err)?;
    {
        let mut logs = txn.open_table(tables::LOGS).map_err(store_err)?;
        let mut bodies = txn.open_table(tables::LOG_BODIES).map_err(store_err)?;
        let mut index = txn.open_table(tables::LOG_INDEX).map_err(store_err)?;
        let mut counts = txn.open_table(tables::LOG_COUNTS).map_err(store_err)?;
        for m in &victims {
            remove_log(&mut logs, &mut bodies, &mut index, &mut counts, gateway, m)?;
        }
    }
    txn.commit().map_err(store_err)?;
    Ok(victims.len() as u64)
}

fn collect_all(store: &Store, gateway: &str, q: &ListQuery, limit: usize) -> Result<Vec<LogMeta>, Error> {
    let mut q = q.clone();
    q.per_page = limit.min(1_000_000);
    Ok(list(store, gateway, &q)?.logs)
}

/// A log in Cloudflare's JSON shape.
#[must_use]
pub fn to_json(m: &LogMeta) -> Value {
    let created = OffsetDateTime::from_unix_timestamp_nanos(i128::from(m.created_at) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok());
    json!({
        "id": uuid::Uuid::from_u128(m.id).to_string(),
        "created_at": created,
        "provider": m.provider,
        "model": m.model,
        "model_type": m.model_type,
        "path": m.path,
        "method": m.method,
        "success": m.success,
        "cached": m.cached,
        "status_code": m.status_code,
        "duration": m.duration,
        "time_to_first_byte": m.ttfb,
        "tokens_in": m.tokens_in,
        "tokens_out": m.tokens_out,
        "cached_tokens_in": m.cached_tokens_in,
        "cache_write_tokens": m.cache_write_tokens,
        "cost": m.cost,
        "custom_cost": m.custom_cost,
        // Cloudflare returns metadata as a JSON string.
        "metadata": m.metadata,
        "request_content_type": m.request_content_type,
        "response_content_type": m.response_content_type,
        "request_type": m.request_type.as_str(),
        "step": m.step,
        "attempt": m.attempt,
        "event_id": m.event_id,
        "user_agent": m.user_agent,
        "request_size": m.request_size,
        "response_size": m.response_size,
        "error": m.error,
        "payload_collected": m.payload,
        "truncated": m.truncated,
        "feedback": m.feedback,
        "score": m.score,
    })
}

/// Stored metadata size of a log, for the disk budget.
#[must_use]
pub fn encoded_len(m: &LogMeta) -> usize {
    encode_meta(m).len()
}
