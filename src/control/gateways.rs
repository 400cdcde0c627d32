//! Gateway create / update / delete / list with Cloudflare's field names and ranges.

use std::collections::BTreeMap;

use super::input::{self, Body};
use super::{Settings, is_valid_id, now_rfc3339};
use crate::error::Error;
use crate::store::{
    AliasRecord, Backoff, DlpProfileRecord, GatewayRecord, LogStrategy, ProviderKeyRecord, RateLimitTechnique,
    RouteRecord, get_in, list_in, put_in, remove_in,
};

const FIELDS: &[&str] = &[
    "id",
    "cache_invalidate_on_update",
    "cache_ttl",
    "collect_logs",
    "rate_limiting_interval",
    "rate_limiting_limit",
    "rate_limiting_technique",
    "authentication",
    "log_management",
    "log_management_strategy",
    "retry_max_attempts",
    "retry_delay",
    "retry_backoff",
    "log_retention_days",
];

/// Cloudflare fields kept as given: enforced (`dlp`, `guardrails`, `byok_only`), or accepted
/// only with the value that means "off" (anything else is refused, naming the field: a setting
/// Torii cannot enforce is never stored).
const KEPT_FIELDS: &[&str] = &["dlp", "guardrails", "byok_only", "spend_limits", "logpush", "otel"];

/// Fields Torii does not implement, with the values that mean "off" and why anything else is
/// refused.
const OFF_ONLY: &[(&str, &str)] = &[
    ("logpush_public_key", "encrypted log export is not available in Torii (logs go to [export] as they are)"),
    ("log_classification", "log classification is not available in Torii"),
    ("zdr", "zero data retention is a Cloudflare Unified Billing setting; Torii never pays a provider for you"),
    ("workers_ai_billing_mode", "Unified Billing does not exist in Torii (\"postpaid\" is what it does)"),
    ("store_id", "Cloudflare's Secrets Store does not exist in Torii; store keys with provider_keys"),
    ("stripe", "Cloudflare's Stripe integration does not exist in Torii"),
];

/// Whether `v` is the value that means "off" for `name`.
fn is_off(name: &str, v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty() || (name == "workers_ai_billing_mode" && s == "postpaid"),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => {
            o.is_empty()
                || (o.get("enabled") == Some(&Value::Bool(false))
                    && o.get("rules").is_none_or(|r| r.as_array().is_some_and(Vec::is_empty)))
        }
        Value::Number(_) | Value::Bool(true) => false,
    }
}

/// Read-only fields a client may echo back (ignored).
const READ_ONLY: &[&str] = &["is_default", "created_at", "modified_at", "account_id", "account_tag", "internal_id"];

const MONTH_SECS: u64 = 30 * 24 * 3600;

/// Checks a gateway's `otel` value (Cloudflare's shape); errors name the field.
fn check_otel(value: &serde_json::Value) -> Result<(), Error> {
    use serde_json::Value;
    let list = match value {
        Value::Null => return Ok(()),
        Value::Array(l) => l,
        _ => return Err(Error::invalid("otel", "must be an array of receivers or null")),
    };
    if list.len() > 5 {
        return Err(Error::invalid("otel", "at most 5 receivers"));
    }
    for (i, r) in list.iter().enumerate() {
        let at = format!("otel[{i}]");
        let Value::Object(o) = r else { return Err(Error::invalid(&at, "must be an object")) };
        if let Some(k) = o.keys().find(|k| !matches!(k.as_str(), "url" | "headers" | "authorization" | "content_type"))
        {
            return Err(Error::invalid(
                format!("{at}.{k}"),
                "is not a field (url, headers, authorization, content_type)",
            ));
        }
        match o.get("url").and_then(Value::as_str) {
            Some(u) if u.starts_with("http://") && u.len() > 7 => {}
            Some(u) if u.starts_with("https://") => {
                return Err(Error::invalid(
                    format!("{at}.url"),
                    "https receivers are not supported yet: send to a local collector over http://",
                ));
            }
            _ => return Err(Error::invalid(format!("{at}.url"), "is required: an http:// URL")),
        }
        match o.get("headers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(h)) if h.values().all(Value::is_string) => {}
            Some(_) => return Err(Error::invalid(format!("{at}.headers"), "must be an object of strings")),
        }
        if o.get("authorization").is_some_and(|a| !a.is_null()) {
            return Err(Error::invalid(
                format!("{at}.authorization"),
                "Cloudflare's Secrets Store does not exist in Torii: put the Authorization header in headers",
            ));
        }
        match o.get("content_type").and_then(Value::as_str) {
            None | Some("json" | "protobuf") => {}
            Some(_) => return Err(Error::invalid(format!("{at}.content_type"), "must be \"json\" or \"protobuf\"")),
        }
    }
    Ok(())
}

/// Applies a create or full-update body onto `gw`. Required fields must be present (null allowed).
fn apply(body: &Body, gw: &mut GatewayRecord, profiles: &[DlpProfileRecord], export_on: bool) -> Result<(), Error> {
    let known: Vec<&str> =
        FIELDS.iter().chain(KEPT_FIELDS).chain(OFF_ONLY.iter().map(|(n, _)| n)).chain(READ_ONLY).copied().collect();
    input::reject_unknown(body, &known)?;
    gw.cache_invalidate_on_update =
        input::boolean(body, "cache_invalidate_on_update")?.required("cache_invalidate_on_update")?.unwrap_or(false);
    gw.cache_ttl = input::integer(body, "cache_ttl", 0..=MONTH_SECS)?.required("cache_ttl")?;
    gw.collect_logs = input::boolean(body, "collect_logs")?.required("collect_logs")?.unwrap_or(false);
    gw.rate_limiting_interval =
        input::integer(body, "rate_limiting_interval", 0..=MONTH_SECS)?.required("rate_limiting_interval")?;
    gw.rate_limiting_limit =
        input::integer(body, "rate_limiting_limit", 0..=u64::from(u32::MAX))?.required("rate_limiting_limit")?;
    gw.rate_limiting_technique =
        input::choice::<RateLimitTechnique>(body, "rate_limiting_technique", &["fixed", "sliding"])?
            .or_keep(gw.rate_limiting_technique);
    gw.authentication = input::boolean(body, "authentication")?.or_keep(Some(gw.authentication)).unwrap_or(false);
    gw.log_management = input::integer(body, "log_management", 10_000..=10_000_000)?.or_keep(gw.log_management);
    gw.log_management_strategy =
        input::choice::<LogStrategy>(body, "log_management_strategy", &["STOP_INSERTING", "DELETE_OLDEST"])?
            .or_keep(gw.log_management_strategy);
    gw.retry_max_attempts = input::integer(body, "retry_max_attempts", 1..=5)?
        .or_keep(gw.retry_max_attempts.map(u64::from))
        .and_then(|n| u8::try_from(n).ok());
    gw.retry_delay = input::integer(body, "retry_delay", 0..=5_000)?.or_keep(gw.retry_delay);
    gw.retry_backoff = input::choice::<Backoff>(body, "retry_backoff", &["constant", "linear", "exponential"])?
        .or_keep(gw.retry_backoff);
    gw.log_retention_days = input::integer(body, "log_retention_days", 1..=36_500)?.or_keep(gw.log_retention_days);
    for (name, why) in OFF_ONLY {
        match body.get(*name) {
            Some(v) if !is_off(name, v) => return Err(Error::invalid(*name, *why)),
            Some(v) => {
                gw.extra.insert((*name).to_string(), v.clone());
            }
            None => {}
        }
    }
    match body.get("logpush") {
        Some(serde_json::Value::Bool(true)) if !export_on => {
            return Err(Error::invalid("logpush", "configure a receiver first ([export] url in the configuration)"));
        }
        Some(serde_json::Value::Bool(b)) => {
            gw.extra.insert("logpush".into(), serde_json::Value::Bool(*b));
        }
        Some(serde_json::Value::Null) => {
            gw.extra.remove("logpush");
        }
        Some(_) => return Err(Error::invalid("logpush", "must be a boolean")),
        None => {}
    }
    match body.get("byok_only") {
        Some(serde_json::Value::Bool(b)) => {
            gw.extra.insert("byok_only".into(), serde_json::Value::Bool(*b));
        }
        Some(serde_json::Value::Null) => {
            gw.extra.remove("byok_only");
        }
        Some(_) => return Err(Error::invalid("byok_only", "must be a boolean")),
        None => {}
    }
    crate::policy::validate((body.get("dlp"), body.get("guardrails"), body.get("spend_limits")), profiles)?;
    if let Some(v) = body.get("otel") {
        check_otel(v)?;
    }
    for name in ["dlp", "guardrails", "spend_limits", "otel"] {
        if let Some(v) = body.get(name) {
            gw.extra.insert(name.to_string(), v.clone());
        }
    }
    Ok(())
}

/// Creates a gateway from a Cloudflare-shaped body.
pub fn create(settings: &Settings, body: &Body) -> Result<GatewayRecord, Error> {
    let id = input::string(body, "id")?.required("id")?.ok_or_else(|| Error::invalid("id", "is required"))?;
    if !is_valid_id(&id) {
        return Err(Error::invalid("id", "use 1-64 characters from a-z, A-Z, 0-9, '-', '_'"));
    }
    let now = now_rfc3339();
    let mut gw = GatewayRecord::new_default(&now);
    gw.id = id;
    gw.is_default = false;
    gw.extra = BTreeMap::new();
    apply(body, &mut gw, &settings.snapshot().dlp_profiles, settings.export_on())?;
    if !settings.store().insert_new(&gw)? {
        return Err(Error::Conflict { kind: "gateway", id: gw.id });
    }
    settings.reload()?;
    Ok(gw)
}

/// Replaces a gateway's settings (`PUT`).
/// Read, checked and written in one transaction, so a concurrent change is never lost.
pub fn update(settings: &Settings, id: &str, body: &Body) -> Result<GatewayRecord, Error> {
    let export_on = settings.export_on();
    let gw = settings.store().write(|txn| -> Result<GatewayRecord, Error> {
        let mut gw: GatewayRecord = get_in(txn, id)?.ok_or_else(|| not_found(id))?;
        if let input::Field::Value(given) = input::string(body, "id")?
            && given != gw.id
        {
            return Err(Error::invalid("id", "cannot be changed"));
        }
        apply(body, &mut gw, &list_in::<DlpProfileRecord>(txn)?, export_on)?;
        let has_keys = list_in::<ProviderKeyRecord>(txn)?.iter().any(|k| k.gateway_id == gw.id);
        if !gw.authentication && has_keys {
            return Err(Error::invalid("authentication", "must stay on while the gateway has stored provider keys"));
        }
        gw.modified_at = now_rfc3339();
        put_in(txn, &gw)?;
        Ok(gw)
    })?;
    settings.reload()?;
    settings.changed(&super::Change::GatewayUpdated { id: &gw.id, purge_cache: gw.cache_invalidate_on_update });
    Ok(gw)
}

/// One gateway.
pub fn get(settings: &Settings, id: &str) -> Result<GatewayRecord, Error> {
    settings.store().get::<GatewayRecord>(id)?.ok_or_else(|| not_found(id))
}

/// Deletes a gateway with its stored provider keys, in one transaction, and returns what it was.
/// `default` always exists (like Cloudflare's, which comes back on use): deleting it resets it
/// to the default settings.
pub fn delete(settings: &Settings, id: &str) -> Result<GatewayRecord, Error> {
    let gw = settings.store().write(|txn| -> Result<GatewayRecord, Error> {
        let gw: GatewayRecord = get_in(txn, id)?.ok_or_else(|| not_found(id))?;
        // Its stored keys go with it (a new gateway of the same id must not inherit them).
        let keys: Vec<String> =
            list_in::<ProviderKeyRecord>(txn)?.into_iter().filter(|k| k.gateway_id == id).map(|k| k.id).collect();
        for k in &keys {
            remove_in::<ProviderKeyRecord>(txn, k)?;
        }
        // So do its routes and aliases.
        for r in list_in::<RouteRecord>(txn)?.into_iter().filter(|r| r.gateway_id == id) {
            remove_in::<RouteRecord>(txn, &r.id)?;
        }
        for a in list_in::<AliasRecord>(txn)?.into_iter().filter(|a| a.gateway_id == id) {
            remove_in::<AliasRecord>(txn, &a.key)?;
        }
        let (datasets, evaluations) = super::datasets::of_gateway(txn, id)?;
        for d in &datasets {
            remove_in::<crate::store::DatasetRecord>(txn, d)?;
        }
        for e in &evaluations {
            remove_in::<crate::store::EvaluationRecord>(txn, e)?;
        }
        remove_in::<GatewayRecord>(txn, id)?;
        if id == "default" {
            put_in(txn, &GatewayRecord::new_default(&now_rfc3339()))?;
        }
        Ok(gw)
    })?;
    settings.reload()?;
    settings.changed(&super::Change::GatewayDeleted { id });
    Ok(gw)
}

/// Gateways whose id contains `search`, in id order.
pub fn list(settings: &Settings, search: Option<&str>) -> Result<Vec<GatewayRecord>, Error> {
    let all = settings.store().list::<GatewayRecord>()?;
    Ok(all.into_iter().filter(|g| search.is_none_or(|s| g.id.contains(s))).collect())
}

fn not_found(id: &str) -> Error {
    Error::NotFound { kind: "gateway", id: id.chars().take(64).collect() }
}
