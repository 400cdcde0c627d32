//! Field-by-field readers for management-API JSON bodies, with errors naming the field.

use serde_json::{Map, Value};

use crate::error::Error;

/// A JSON object body.
pub type Body = Map<String, Value>;

/// Parses a body that must be a JSON object.
pub fn parse_object(bytes: &[u8]) -> Result<Body, Error> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::invalid("body", "must be a JSON object")),
        Err(e) => Err(Error::invalid("body", format!("is not valid JSON: {e}"))),
    }
}

/// Presence of a field: absent, explicitly null, or a value.
pub enum Field<T> {
    /// Not in the body.
    Absent,
    /// `null`.
    Null,
    /// A valid value.
    Value(T),
}

impl<T> Field<T> {
    /// Absent is an error; null and values map to an `Option`.
    pub fn required(self, name: &str) -> Result<Option<T>, Error> {
        match self {
            Self::Absent => Err(Error::invalid(name, "is required")),
            Self::Null => Ok(None),
            Self::Value(v) => Ok(Some(v)),
        }
    }

    /// Absent keeps `current`; null clears; a value replaces.
    pub fn or_keep(self, current: Option<T>) -> Option<T> {
        match self {
            Self::Absent => current,
            Self::Null => None,
            Self::Value(v) => Some(v),
        }
    }
}

fn get<T>(body: &Body, name: &str, read: impl FnOnce(&Value) -> Option<T>, expected: &str) -> Result<Field<T>, Error> {
    match body.get(name) {
        None => Ok(Field::Absent),
        Some(Value::Null) => Ok(Field::Null),
        Some(v) => read(v).map(Field::Value).ok_or_else(|| Error::invalid(name, format!("must be {expected}"))),
    }
}

/// A boolean field.
pub fn boolean(body: &Body, name: &str) -> Result<Field<bool>, Error> {
    get(body, name, Value::as_bool, "a boolean")
}

/// An integer field within `range`.
pub fn integer(body: &Body, name: &str, range: std::ops::RangeInclusive<u64>) -> Result<Field<u64>, Error> {
    let expected = format!("an integer between {} and {}", range.start(), range.end());
    get(body, name, |v| v.as_u64().filter(|n| range.contains(n)), &expected)
}

/// A string field.
pub fn string(body: &Body, name: &str) -> Result<Field<String>, Error> {
    get(body, name, |v| v.as_str().map(str::to_string), "a string")
}

/// A string field restricted to `choices`, deserialised into `T`.
pub fn choice<T: serde::de::DeserializeOwned>(body: &Body, name: &str, choices: &[&str]) -> Result<Field<T>, Error> {
    let expected = format!("one of {}", choices.join(", "));
    get(
        body,
        name,
        |v| v.as_str().filter(|s| choices.contains(s)).and_then(|_| serde_json::from_value(v.clone()).ok()),
        &expected,
    )
}

/// Rejects fields outside `known`.
pub fn reject_unknown(body: &Body, known: &[&str]) -> Result<(), Error> {
    match body.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(Error::invalid(k.chars().take(64).collect::<String>(), "is not a known field")),
        None => Ok(()),
    }
}
