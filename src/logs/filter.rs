//! Log filters: Cloudflare's `filters` (`key`, `operator` eq/neq/contains/lt/gt, `value` list)
//! in JSON, bracket and dot encodings, the deprecated flat parameters, and how one log is
//! matched against them.

use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::index::{INDEXED, key_text};
use super::record::LogMeta;
use crate::error::Error;

/// Comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
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
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
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
    "guardrail_action",
];

pub(super) fn bad(field: &str, reason: impl Into<String>) -> Error {
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
    let mut repeated: Vec<(String, String)> = Vec::new();
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
            "filters.key" | "filters.operator" | "filters.value" | "filters[key]" | "filters[operator]"
            | "filters[value]" | "filters[value][]" | "filters.value[]" => {
                let field = key_field(k);
                repeated.push((field.to_string(), v.clone()));
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
    q.filters.extend(unindexed(&repeated)?);
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

/// `key`, `operator` or `value` of an unindexed `filters.*` / `filters[*]` parameter.
fn key_field(k: &str) -> &str {
    if k.contains("key") {
        "key"
    } else if k.contains("operator") {
        "operator"
    } else {
        "value"
    }
}

/// Filters sent as repeated keys without an index, as Cloudflare's SDKs do: interleaved
/// (`key, operator, value…, key, …`: TypeScript) or grouped (`key, key, operator, operator,
/// value, value`: Python). Grouped values are paired with keys in order, one each; a single key
/// takes them all; anything else cannot be attributed and is refused.
fn unindexed(params: &[(String, String)]) -> Result<Vec<Filter>, Error> {
    let op = |v: &str| -> Result<Op, Error> {
        serde_json::from_value(Value::String(v.to_string()))
            .map_err(|_| bad("filters.operator", "operator must be eq, neq, contains, lt or gt"))
    };
    let keys: Vec<&str> = params.iter().filter(|(f, _)| f == "key").map(|(_, v)| v.as_str()).collect();
    if params.is_empty() {
        return Ok(Vec::new());
    }
    let grouped = keys.len() > 1 && params.get(1).is_some_and(|(f, _)| f == "key");
    if !grouped {
        let mut out: Vec<Filter> = Vec::new();
        for (field, v) in params {
            if field == "key" {
                out.push(Filter { key: v.clone(), operator: Op::Eq, value: Vec::new() });
                continue;
            }
            let Some(current) = out.last_mut() else {
                return Err(bad(&format!("filters.{field}"), "comes before any filters.key"));
            };
            if field == "operator" {
                current.operator = op(v)?;
            } else {
                current.value.push(scalar(v));
            }
        }
        return Ok(out);
    }
    let ops: Vec<&str> = params.iter().filter(|(f, _)| f == "operator").map(|(_, v)| v.as_str()).collect();
    let values: Vec<&str> = params.iter().filter(|(f, _)| f == "value").map(|(_, v)| v.as_str()).collect();
    if !ops.is_empty() && ops.len() != keys.len() {
        return Err(bad("filters.operator", "give one operator per filters.key"));
    }
    if values.len() != keys.len() {
        return Err(bad(
            "filters.value",
            "with several filters.key in a row, give exactly one filters.value per key (which key a further value \
             belongs to cannot be told); or use filters[N][value][M]",
        ));
    }
    keys.iter()
        .enumerate()
        .map(|(i, key)| {
            Ok(Filter {
                key: (*key).to_string(),
                operator: ops.get(i).map_or(Ok(Op::Eq), |o| op(o))?,
                value: vec![scalar(values[i])],
            })
        })
        .collect()
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
        "dlp_action" => {
            Field::Text(m.policy.as_ref().and_then(|p| p.dlp.action).map(crate::policy::dlp::Action::as_str))
        }
        "guardrail_action" => {
            Field::Text(m.policy.as_ref().and_then(|p| p.guardrail.as_ref()).and_then(|g| g.action.as_deref()))
        }
        _ => Field::Text(None),
    }
}

/// The ids a query can match, inclusive: log ids are `UUIDv7` values stamped with their `created_at`
/// (milliseconds in the top 48 bits), so `created_at` bounds narrow the scan to an id range.
#[must_use]
pub fn id_bounds(filters: &[Filter]) -> (u128, u128) {
    let (mut lo, mut hi) = (0u128, u128::MAX);
    for f in filters.iter().filter(|f| f.key == "created_at") {
        let Some(t) = f.value.first().and_then(time_value).filter(|t| t.is_finite()) else { continue };
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "clamped to 0..2^48 ms")]
        let ms = |v: f64| u128::from(v.clamp(0.0, 2f64.powi(48) - 1.0) as u64);
        match f.operator {
            Op::Gt => lo = lo.max(ms(t.floor()) << 80),
            Op::Lt => hi = hi.min(((ms(t.ceil()) + 1) << 80) - 1),
            _ => {}
        }
    }
    (lo, hi)
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
pub(super) fn matches(m: &LogMeta, f: &Filter) -> bool {
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

pub(super) fn matches_search(m: &LogMeta, needle: &str) -> bool {
    let needle = needle.to_lowercase();
    let hay = [
        Some(&*m.provider),
        m.model.as_deref(),
        Some(&*m.path),
        Some(&*m.event_id),
        m.metadata.as_deref(),
        m.user_agent.as_deref(),
        m.error.as_deref(),
    ];
    hay.into_iter().flatten().any(|h| h.to_lowercase().contains(&needle))
        || uuid::Uuid::from_u128(m.id).to_string().contains(&needle)
}

/// An index that can drive the scan: an `eq` filter on one value of an indexed field.
pub(super) fn driving_index(f: &Filter) -> Option<(String, String)> {
    let indexed = INDEXED.contains(&f.key.as_str())
        || (f.key.starts_with("metadata.") && f.key != "metadata.key" && f.key != "metadata.value");
    (f.operator == Op::Eq && f.value.len() == 1 && indexed).then(|| (f.key.clone(), key_text(&f.value[0])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::record::log_id;

    /// Exactly what Cloudflare's SDKs send (captured from `cloudflare` 5.9 for Python and the
    /// `cloudflare` npm package; kept in `tests/fixtures/cloudflare-sdk/log-filters.txt`).
    #[test]
    fn cloudflare_sdk_filter_encodings() {
        let fixtures = include_str!("../../tests/fixtures/cloudflare-sdk/log-filters.txt");
        for line in fixtures.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let (query, expected) = line.split_once(" => ").unwrap();
            let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
            let got = parse_query(&pairs).map(|q| serde_json::to_string(&q.filters).unwrap());
            match expected.strip_prefix("ERROR ") {
                Some(field) => assert!(got.unwrap_err().to_string().contains(field), "{query}"),
                None => assert_eq!(got.unwrap(), expected, "{query}"),
            }
        }
    }

    #[test]
    fn time_bounds_keep_every_matching_id() {
        let f = |op: Op, ms: f64| Filter { key: "created_at".into(), operator: op, value: vec![json!(ms)] };
        let (lo, hi) = id_bounds(&[f(Op::Gt, 1_000.5), f(Op::Lt, 2_000.0)]);
        for ms in [1_001_i64, 1_500, 1_999] {
            let id = log_id(ms);
            assert!((lo..=hi).contains(&id), "{ms}");
        }
        assert!(log_id(999) < lo && log_id(2_001) > hi);
        assert_eq!(id_bounds(&[]), (0, u128::MAX));
        let rfc = Filter { key: "created_at".into(), operator: Op::Gt, value: vec![json!("1970-01-01T00:00:01Z")] };
        assert_eq!(id_bounds(&[rfc]).0, 1_000u128 << 80);
    }
}
