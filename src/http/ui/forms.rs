//! Submitted forms and the per-field messages shown next to their inputs.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::Error;

/// A submitted form (or query string): name/value pairs in order, repeats kept.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(transparent)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// The first value of `name`, trimmed; empty when absent.
    #[must_use]
    pub fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.trim())
    }

    /// Every value of `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A checkbox: present and not "off"/"false".
    #[must_use]
    pub fn on(&self, name: &str) -> bool {
        self.0.iter().any(|(k, v)| k == name && !matches!(v.as_str(), "off" | "false" | ""))
    }

    /// Whether `name` holds `value` (for selected options and checked boxes).
    #[must_use]
    pub fn is(&self, name: &str, value: &str) -> bool {
        self.all(name).any(|v| v == value)
    }

    /// Sets `name` (replacing earlier values).
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.0.retain(|(k, _)| k != name);
        self.0.push((name.to_string(), value.into()));
    }

    /// The pairs with a non-empty value, except the CSRF token.
    #[must_use]
    pub fn filled(&self) -> Vec<(String, String)> {
        self.0.iter().filter(|(k, v)| k != "csrf" && !v.trim().is_empty()).cloned().collect()
    }
}

/// Messages per field; `_` is the form as a whole.
#[derive(Debug, Default)]
pub struct Errors(pub BTreeMap<String, String>);

impl Errors {
    /// The message for a field (empty when none; the page hides empty messages).
    #[must_use]
    pub fn get(&self, field: &str) -> &str {
        self.0.get(field).map_or("", String::as_str)
    }

    /// Adds a message (the first one per field wins).
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.entry(field.to_string()).or_insert_with(|| message.into());
    }

    /// No messages.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Files a domain error under its field (`Invalid`), under `id` (`Conflict`), or for the
    /// whole form; store failures are not shown in detail.
    /// Files a domain error under one form field, whatever field it names (a JSON text
    /// field's nested `dlp.policies[0]...` stays in the message); store failures as in
    /// [`Errors::add_error`].
    pub fn add_under(&mut self, form_field: &str, e: &Error) {
        match e {
            Error::Invalid { field, reason } => self.add(form_field, format!("{field}: {reason}")),
            Error::Store(_) | Error::Internal(_) => {
                self.add_error(e, form_field);
                let shown = self.get("_").to_string();
                self.add(form_field, shown);
            }
            other => self.add(form_field, other.to_string()),
        }
    }

    pub fn add_error(&mut self, e: &Error, conflict_field: &str) {
        match e {
            Error::Invalid { field, reason } => {
                let top = field.split(['.', '[']).next().unwrap_or(field);
                // A nested field (`dlp.policies[0].profiles[1]`) is named in the message.
                let message = if top == field { reason.clone() } else { format!("{field}: {reason}") };
                self.add(top, message);
            }
            Error::Conflict { .. } => self.add(conflict_field, e.to_string()),
            Error::Store(detail) | Error::Internal(detail) => {
                tracing::error!(error = %detail, "admin UI form failed");
                self.add("_", "Torii could not save this; the details are in its log.");
            }
            other => self.add("_", other.to_string()),
        }
    }
}

/// Builds a JSON body for the settings functions from form fields: `numbers` (blank → null,
/// else a whole number), `checkboxes` (booleans), `texts` (blank → null).
pub fn json_body(
    f: &Fields,
    numbers: &[&str],
    checkboxes: &[&str],
    texts: &[&str],
    errors: &mut Errors,
) -> Map<String, Value> {
    let mut body = Map::new();
    for name in numbers {
        let v = f.get(name);
        let value = if v.is_empty() {
            Value::Null
        } else if let Ok(n) = v.parse::<u64>() {
            Value::from(n)
        } else {
            errors.add(name, "must be a whole number (or empty)");
            Value::Null
        };
        body.insert((*name).to_string(), value);
    }
    for name in checkboxes {
        body.insert((*name).to_string(), Value::Bool(f.on(name)));
    }
    for name in texts {
        let v = f.get(name);
        body.insert((*name).to_string(), if v.is_empty() { Value::Null } else { Value::String(v.to_string()) });
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_become_typed_json() {
        let f = Fields(vec![
            ("cache_ttl".into(), " 300 ".into()),
            ("retry_delay".into(), String::new()),
            ("log_management".into(), "lots".into()),
            ("collect_logs".into(), "on".into()),
            ("name".into(), "x".into()),
        ]);
        let mut errors = Errors::default();
        let body = json_body(
            &f,
            &["cache_ttl", "retry_delay", "log_management"],
            &["collect_logs", "authentication"],
            &["name", "missing"],
            &mut errors,
        );
        assert_eq!(body["cache_ttl"], 300);
        assert!(body["retry_delay"].is_null() && body["missing"].is_null());
        assert_eq!(body["collect_logs"], true);
        assert_eq!(body["authentication"], false);
        assert_eq!(errors.get("log_management"), "must be a whole number (or empty)");
        assert_eq!(errors.get("cache_ttl"), "");
        let mut e = Errors::default();
        e.add_error(&Error::invalid("rate_limiting_limit", "out of range"), "id");
        assert_eq!(e.get("rate_limiting_limit"), "out of range");
    }
}
