//! Which fields of a log are indexed, and how their values are written in index keys.

use serde_json::Value;

use super::record::LogMeta;

/// Fields answered from the index (`eq` filters).
pub const INDEXED: &[&str] = &["provider", "model", "success", "cached", "status_code", "event_id", "feedback"];

/// Whether a field keeps per-value counters (not for unique values such as event ids).
#[must_use]
pub fn is_counted(field: &str) -> bool {
    field != "event_id"
}

/// Index key text for a filter value (strings as is, numbers and booleans as JSON).
#[must_use]
pub fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// (field, value) pairs a log is indexed under; `metadata.{key}` for each metadata entry.
#[must_use]
pub fn index_entries(m: &LogMeta) -> Vec<(String, String)> {
    let mut out = vec![
        ("provider".to_string(), m.provider.clone()),
        ("success".to_string(), m.success.to_string()),
        ("cached".to_string(), m.cached.to_string()),
        ("status_code".to_string(), m.status_code.to_string()),
        ("event_id".to_string(), m.event_id.clone()),
    ];
    if let Some(model) = &m.model {
        out.push(("model".to_string(), model.clone()));
    }
    if let Some(f) = m.feedback {
        out.push(("feedback".to_string(), f.to_string()));
    }
    if let Some(Ok(Value::Object(map))) = m.metadata.as_deref().map(serde_json::from_str::<Value>) {
        for (k, v) in map {
            out.push((format!("metadata.{k}"), key_text(&v)));
        }
    }
    out
}
