//! Custom providers (`custom-{slug}`): create / update / delete / list.

use super::input::{self, Body, Field};
use super::{Settings, now_unix};
use crate::error::Error;
use crate::store::CustomProviderRecord;

const FIELDS: &[&str] =
    &["name", "slug", "base_url", "description", "link", "enable", "beta", "curl_example", "js_example"];
const READ_ONLY: &[&str] = &["id", "account_id", "account_tag", "created_at", "modified_at", "logo"];

fn check_slug(slug: &str) -> Result<(), Error> {
    let ok = (1..=64).contains(&slug.len())
        && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if ok { Ok(()) } else { Err(Error::invalid("slug", "use 1-64 characters from a-z, 0-9 and '-'")) }
}

fn check_base_url(url: &str) -> Result<(), Error> {
    crate::providers::route::check_custom_base(url).map_err(|reason| Error::invalid("base_url", reason))
}

fn apply(body: &Body, p: &mut CustomProviderRecord) -> Result<(), Error> {
    let known: Vec<&str> = FIELDS.iter().chain(READ_ONLY).copied().collect();
    input::reject_unknown(body, &known)?;
    if let Field::Value(name) = input::string(body, "name")? {
        p.name = name;
    }
    if let Field::Value(slug) = input::string(body, "slug")? {
        check_slug(&slug)?;
        p.slug = slug;
    }
    if let Field::Value(url) = input::string(body, "base_url")? {
        check_base_url(&url)?;
        p.base_url = url;
    }
    p.description = input::string(body, "description")?.or_keep(p.description.take());
    p.link = input::string(body, "link")?.or_keep(p.link.take());
    p.curl_example = input::string(body, "curl_example")?.or_keep(p.curl_example.take());
    p.js_example = input::string(body, "js_example")?.or_keep(p.js_example.take());
    p.enable = input::boolean(body, "enable")?.or_keep(Some(p.enable)).unwrap_or(true);
    p.beta = input::boolean(body, "beta")?.or_keep(Some(p.beta)).unwrap_or(false);
    if p.name.trim().is_empty() || p.name.len() > 128 {
        return Err(Error::invalid("name", "must be 1-128 characters"));
    }
    Ok(())
}

fn ensure_unique_slug(settings: &Settings, p: &CustomProviderRecord) -> Result<(), Error> {
    let clash = settings.store().list::<CustomProviderRecord>()?.into_iter().any(|o| o.slug == p.slug && o.id != p.id);
    if clash { Err(Error::Conflict { kind: "custom provider slug", id: p.slug.clone() }) } else { Ok(()) }
}

/// Creates a custom provider. `name`, `slug` and `base_url` are required.
pub fn create(settings: &Settings, account_id: &str, body: &Body) -> Result<CustomProviderRecord, Error> {
    for required in ["name", "slug", "base_url"] {
        input::string(body, required)?.required(required)?.ok_or_else(|| Error::invalid(required, "is required"))?;
    }
    let now = now_unix();
    let mut p = CustomProviderRecord {
        id: uuid::Uuid::new_v4().to_string(),
        name: String::new(),
        slug: String::new(),
        base_url: String::new(),
        description: None,
        link: None,
        enable: true,
        beta: false,
        curl_example: None,
        js_example: None,
        account_id: account_id.to_string(),
        created_at: now,
        modified_at: now,
    };
    apply(body, &mut p)?;
    ensure_unique_slug(settings, &p)?;
    settings.store().put(&p)?;
    settings.reload()?;
    Ok(p)
}

/// Updates the given fields (`PATCH`/`PUT`).
pub fn update(settings: &Settings, id: &str, body: &Body) -> Result<CustomProviderRecord, Error> {
    let mut p = get(settings, id)?;
    let (old_slug, old_url) = (p.slug.clone(), p.base_url.clone());
    apply(body, &mut p)?;
    ensure_unique_slug(settings, &p)?;
    p.modified_at = now_unix();
    settings.store().put(&p)?;
    settings.reload()?;
    if old_slug != p.slug || old_url != p.base_url {
        settings.changed(&super::Change::ProviderMoved { slug: &format!("custom-{old_slug}") });
    }
    Ok(p)
}

/// One custom provider by id.
pub fn get(settings: &Settings, id: &str) -> Result<CustomProviderRecord, Error> {
    settings
        .store()
        .get::<CustomProviderRecord>(id)?
        .ok_or_else(|| Error::NotFound { kind: "custom provider", id: id.chars().take(64).collect() })
}

/// Deletes a custom provider and returns it.
pub fn delete(settings: &Settings, id: &str) -> Result<CustomProviderRecord, Error> {
    let p = get(settings, id)?;
    settings.store().delete::<CustomProviderRecord>(id)?;
    settings.reload()?;
    settings.changed(&super::Change::ProviderMoved { slug: &format!("custom-{}", p.slug) });
    Ok(p)
}

/// Filters for [`list`].
#[derive(Debug, Default, serde::Deserialize)]
pub struct ListFilter {
    /// Substring of id, name or slug.
    pub search: Option<String>,
    /// Only enabled / disabled.
    pub enable: Option<bool>,
    /// Only beta / not beta.
    pub beta: Option<bool>,
}

/// Custom providers matching the filter, by name.
pub fn list(settings: &Settings, f: &ListFilter) -> Result<Vec<CustomProviderRecord>, Error> {
    let mut all: Vec<_> = settings
        .store()
        .list::<CustomProviderRecord>()?
        .into_iter()
        .filter(|p| f.enable.is_none_or(|e| p.enable == e) && f.beta.is_none_or(|b| p.beta == b))
        .filter(|p| f.search.as_deref().is_none_or(|s| p.id.contains(s) || p.name.contains(s) || p.slug.contains(s)))
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// A custom provider as the API returns it: times in RFC 3339 like every other object, optional
/// fields left out when unset (Cloudflare's SDK types have them optional but not nullable).
#[must_use]
pub fn public(p: &CustomProviderRecord) -> serde_json::Value {
    let time = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default()
    };
    let mut out = serde_json::json!({
        "id": p.id, "name": p.name, "slug": p.slug, "base_url": p.base_url, "enable": p.enable, "beta": p.beta,
        "account_id": p.account_id, "created_at": time(p.created_at), "modified_at": time(p.modified_at),
    });
    for (name, value) in [
        ("description", &p.description),
        ("link", &p.link),
        ("curl_example", &p.curl_example),
        ("js_example", &p.js_example),
    ] {
        if let Some(v) = value {
            out[name] = serde_json::Value::String(v.clone());
        }
    }
    out
}
