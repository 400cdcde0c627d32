//! Custom DLP profiles: create / update / delete / list, and the built-in ones listed beside them.
//! A profile a gateway's policy names cannot be deleted (the policy would stop protecting).

use serde_json::{Value, json};

use super::input::{self, Body, Field};
use super::{Settings, now_rfc3339};
use crate::error::Error;
use crate::policy::detectors::{BUILT_INS, compile_custom, is_built_in};
use crate::store::{DlpProfileRecord, GatewayRecord, get_in, list_in, put_in, remove_in};

const FIELDS: &[&str] = &["id", "name", "description", "pattern", "keywords", "proximity"];
const READ_ONLY: &[&str] = &["type", "created_at", "modified_at"];

/// Longest pattern accepted.
const MAX_PATTERN: usize = 1_000;
/// Most keywords.
const MAX_KEYWORDS: usize = 50;

fn apply(body: &Body, p: &mut DlpProfileRecord) -> Result<(), Error> {
    let known: Vec<&str> = FIELDS.iter().chain(READ_ONLY).copied().collect();
    input::reject_unknown(body, &known)?;
    if let Field::Value(name) = input::string(body, "name")? {
        p.name = name;
    }
    if let Field::Value(pattern) = input::string(body, "pattern")? {
        if pattern.is_empty() || pattern.len() > MAX_PATTERN {
            return Err(Error::invalid("pattern", format!("must be 1-{MAX_PATTERN} characters")));
        }
        compile_custom(&pattern).map_err(|e| Error::invalid("pattern", e))?;
        p.pattern = pattern;
    }
    p.description = input::string(body, "description")?.or_keep(p.description.take());
    match body.get("keywords") {
        None => {}
        Some(Value::Null) => p.keywords.clear(),
        Some(Value::Array(items)) if items.len() <= MAX_KEYWORDS => {
            let mut out = Vec::new();
            for (i, k) in items.iter().enumerate() {
                match k.as_str().map(str::trim) {
                    Some(k) if !k.is_empty() && k.len() <= 100 => out.push(k.to_string()),
                    _ => return Err(Error::invalid(format!("keywords[{i}]"), "must be a word of 1-100 characters")),
                }
            }
            p.keywords = out;
        }
        Some(_) => return Err(Error::invalid("keywords", format!("must be an array of at most {MAX_KEYWORDS} words"))),
    }
    if let Some(n) = input::integer(body, "proximity", 0..=1_000)?.or_keep(None) {
        p.proximity = usize::try_from(n).unwrap_or(1_000);
    }
    if !p.keywords.is_empty() && p.proximity == 0 {
        p.proximity = 100;
    }
    if p.name.trim().is_empty() || p.name.len() > 128 {
        return Err(Error::invalid("name", "must be 1-128 characters"));
    }
    if p.pattern.is_empty() {
        return Err(Error::invalid("pattern", "is required"));
    }
    Ok(())
}

fn not_found(id: &str) -> Error {
    Error::NotFound { kind: "DLP profile", id: id.chars().take(64).collect() }
}

/// Creates a custom profile; `id` is the name policies use (`[a-z0-9-]`, not a built-in id).
pub fn create(settings: &Settings, body: &Body) -> Result<DlpProfileRecord, Error> {
    let id = input::string(body, "id")?.required("id")?.ok_or_else(|| Error::invalid("id", "is required"))?;
    let ok =
        (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(Error::invalid("id", "use 1-64 characters from a-z, 0-9 and '-'"));
    }
    if is_built_in(&id) {
        return Err(Error::invalid("id", "is a built-in profile's id"));
    }
    let now = now_rfc3339();
    let mut p = DlpProfileRecord {
        id,
        name: String::new(),
        description: None,
        pattern: String::new(),
        keywords: Vec::new(),
        proximity: 0,
        created_at: now.clone(),
        modified_at: now,
    };
    apply(body, &mut p)?;
    if !settings.store().insert_new(&p)? {
        return Err(Error::Conflict { kind: "DLP profile", id: p.id });
    }
    settings.reload()?;
    Ok(p)
}

/// Updates the given fields; gateways using the profile scan with the new pattern at once.
pub fn update(settings: &Settings, id: &str, body: &Body) -> Result<DlpProfileRecord, Error> {
    let p = settings.store().write(|txn| -> Result<DlpProfileRecord, Error> {
        let mut p: DlpProfileRecord = get_in(txn, id)?.ok_or_else(|| not_found(id))?;
        if let Field::Value(given) = input::string(body, "id")?
            && given != p.id
        {
            return Err(Error::invalid("id", "cannot be changed"));
        }
        apply(body, &mut p)?;
        p.modified_at = now_rfc3339();
        put_in(txn, &p)?;
        Ok(p)
    })?;
    settings.reload()?;
    Ok(p)
}

/// One custom profile.
pub fn get(settings: &Settings, id: &str) -> Result<DlpProfileRecord, Error> {
    settings.store().get::<DlpProfileRecord>(id)?.ok_or_else(|| not_found(id))
}

/// Deletes a custom profile no gateway's policy names (checked in the same transaction).
pub fn delete(settings: &Settings, id: &str) -> Result<DlpProfileRecord, Error> {
    let p = settings.store().write(|txn| -> Result<DlpProfileRecord, Error> {
        let p: DlpProfileRecord = get_in(txn, id)?.ok_or_else(|| not_found(id))?;
        let users: Vec<String> = list_in::<GatewayRecord>(txn)?
            .into_iter()
            .filter(|g| g.extra.get("dlp").is_some_and(|d| names_profile(d, id)))
            .map(|g| g.id)
            .collect();
        if !users.is_empty() {
            return Err(Error::invalid(
                "id",
                format!("is used by the DLP policies of gateway(s) {}", users.join(", ")),
            ));
        }
        remove_in::<DlpProfileRecord>(txn, id)?;
        Ok(p)
    })?;
    settings.reload()?;
    Ok(p)
}

fn names_profile(dlp: &Value, id: &str) -> bool {
    let named = |list: Option<&Value>| list.and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v == id));
    named(dlp.get("profiles"))
        || dlp.get("policies").and_then(Value::as_array).is_some_and(|ps| ps.iter().any(|p| named(p.get("profiles"))))
}

/// Every profile: the built-in ones first, then the custom ones by id.
pub fn list(settings: &Settings) -> Result<Vec<Value>, Error> {
    let mut out: Vec<Value> = BUILT_INS
        .iter()
        .map(|b| json!({"id": b.id, "name": b.name, "description": b.description, "type": "predefined"}))
        .collect();
    let mut custom = settings.store().list::<DlpProfileRecord>()?;
    custom.sort_by(|a, b| a.id.cmp(&b.id));
    out.extend(custom.iter().map(public));
    Ok(out)
}

/// A custom profile as the API returns it.
#[must_use]
pub fn public(p: &DlpProfileRecord) -> Value {
    json!({
        "id": p.id, "name": p.name, "description": p.description, "type": "custom", "pattern": p.pattern,
        "keywords": p.keywords, "proximity": p.proximity, "created_at": p.created_at, "modified_at": p.modified_at,
    })
}
