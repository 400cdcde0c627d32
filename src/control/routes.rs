//! Dynamic routes (Cloudflare's management API shapes) and model aliases of a gateway.
//! Creating a route saves and deploys its first version; each later save is a draft version
//! until it is deployed; rolling back is deploying an earlier version.

use serde_json::{Value, json};

use super::input::{self, Body, Field};
use super::{Settings, now_rfc3339};
use crate::error::Error;
use crate::policy::route;
use crate::store::{
    AliasRecord, GatewayRecord, RouteDeployment, RouteRecord, RouteVersion, get_in, list_in, put_in, remove_in,
};

/// Most versions a route keeps.
const MAX_VERSIONS: usize = 200;

fn not_found(id: &str) -> Error {
    Error::NotFound { kind: "route", id: id.chars().take(64).collect() }
}

fn check_name(name: &str, field: &str) -> Result<(), Error> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok { Ok(()) } else { Err(Error::invalid(field, "use 1-64 characters from a-z, A-Z, 0-9, '-', '_', '.'")) }
}

fn elements_of(body: &Body) -> Result<Value, Error> {
    let elements = body.get("elements").cloned().ok_or_else(|| Error::invalid("elements", "is required"))?;
    route::parse(&elements)?;
    Ok(route::normalized(&elements))
}

fn gateway_exists(txn: &redb::WriteTransaction, gateway: &str) -> Result<(), Error> {
    get_in::<GatewayRecord>(txn, gateway)?
        .map(|_| ())
        .ok_or_else(|| Error::NotFound { kind: "gateway", id: gateway.chars().take(64).collect() })
}

/// Creates a route and deploys its first version.
pub fn create(settings: &Settings, gateway: &str, body: &Body) -> Result<RouteRecord, Error> {
    input::reject_unknown(body, &["name", "elements"])?;
    let name = input::string(body, "name")?.required("name")?.ok_or_else(|| Error::invalid("name", "is required"))?;
    check_name(&name, "name")?;
    let elements = elements_of(body)?;
    let now = now_rfc3339();
    let version_id = uuid::Uuid::new_v4().to_string();
    let record = RouteRecord {
        id: uuid::Uuid::new_v4().to_string(),
        gateway_id: gateway.to_string(),
        name,
        versions: vec![RouteVersion { version_id: version_id.clone(), elements, created_at: now.clone() }],
        deployments: vec![RouteDeployment {
            deployment_id: uuid::Uuid::new_v4().to_string(),
            version_id,
            created_at: now.clone(),
        }],
        created_at: now.clone(),
        modified_at: now,
    };
    settings.store().write(|txn| -> Result<(), Error> {
        gateway_exists(txn, gateway)?;
        if list_in::<RouteRecord>(txn)?.iter().any(|r| r.gateway_id == gateway && r.name == record.name) {
            return Err(Error::Conflict { kind: "route", id: record.name.clone() });
        }
        put_in(txn, &record)?;
        Ok(())
    })?;
    settings.reload()?;
    Ok(record)
}

/// Applies `f` to one route of the gateway in one transaction.
fn change(
    settings: &Settings,
    gateway: &str,
    id: &str,
    mut f: impl FnMut(&redb::WriteTransaction, &mut RouteRecord) -> Result<(), Error>,
) -> Result<RouteRecord, Error> {
    let r = settings.store().write(|txn| -> Result<RouteRecord, Error> {
        let mut r: RouteRecord =
            get_in(txn, id)?.filter(|r: &RouteRecord| r.gateway_id == gateway).ok_or_else(|| not_found(id))?;
        f(txn, &mut r)?;
        r.modified_at = now_rfc3339();
        put_in(txn, &r)?;
        Ok(r)
    })?;
    settings.reload()?;
    Ok(r)
}

/// Renames a route (`PATCH {name}`).
pub fn rename(settings: &Settings, gateway: &str, id: &str, body: &Body) -> Result<RouteRecord, Error> {
    input::reject_unknown(body, &["name"])?;
    let Field::Value(name) = input::string(body, "name")? else { return Err(Error::invalid("name", "is required")) };
    check_name(&name, "name")?;
    change(settings, gateway, id, |txn, r| {
        if list_in::<RouteRecord>(txn)?.iter().any(|o| o.gateway_id == gateway && o.name == name && o.id != r.id) {
            return Err(Error::Conflict { kind: "route", id: name.clone() });
        }
        r.name.clone_from(&name);
        Ok(())
    })
}

/// Saves a new (draft) version.
pub fn add_version(settings: &Settings, gateway: &str, id: &str, body: &Body) -> Result<RouteRecord, Error> {
    input::reject_unknown(body, &["elements"])?;
    let elements = elements_of(body)?;
    change(settings, gateway, id, |_, r| {
        if r.versions.len() >= MAX_VERSIONS {
            // The oldest version that is not live makes room.
            let live = r.deployments.last().map(|d| d.version_id.clone());
            if let Some(i) = r.versions.iter().position(|v| Some(&v.version_id) != live.as_ref()) {
                r.versions.remove(i);
            }
        }
        r.versions.push(RouteVersion {
            version_id: uuid::Uuid::new_v4().to_string(),
            elements: elements.clone(),
            created_at: now_rfc3339(),
        });
        Ok(())
    })
}

/// Makes a version live.
pub fn deploy(settings: &Settings, gateway: &str, id: &str, body: &Body) -> Result<RouteRecord, Error> {
    input::reject_unknown(body, &["version_id"])?;
    let Field::Value(version_id) = input::string(body, "version_id")? else {
        return Err(Error::invalid("version_id", "is required"));
    };
    change(settings, gateway, id, |_, r| {
        if !r.versions.iter().any(|v| v.version_id == version_id) {
            return Err(Error::invalid("version_id", "names no version of this route"));
        }
        r.deployments.push(RouteDeployment {
            deployment_id: uuid::Uuid::new_v4().to_string(),
            version_id: version_id.clone(),
            created_at: now_rfc3339(),
        });
        Ok(())
    })
}

/// One route of the gateway.
pub fn get(settings: &Settings, gateway: &str, id: &str) -> Result<RouteRecord, Error> {
    settings.store().get::<RouteRecord>(id)?.filter(|r| r.gateway_id == gateway).ok_or_else(|| not_found(id))
}

/// Deletes a route with its versions.
pub fn delete(settings: &Settings, gateway: &str, id: &str) -> Result<RouteRecord, Error> {
    let r = settings.store().write(|txn| -> Result<RouteRecord, Error> {
        let r: RouteRecord =
            get_in(txn, id)?.filter(|r: &RouteRecord| r.gateway_id == gateway).ok_or_else(|| not_found(id))?;
        remove_in::<RouteRecord>(txn, id)?;
        Ok(r)
    })?;
    settings.reload()?;
    Ok(r)
}

/// The gateway's routes, by name.
pub fn list(settings: &Settings, gateway: &str) -> Result<Vec<RouteRecord>, Error> {
    let mut all: Vec<RouteRecord> =
        settings.store().list::<RouteRecord>()?.into_iter().filter(|r| r.gateway_id == gateway).collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

fn version_json(r: &RouteRecord, v: &RouteVersion) -> Value {
    let live = r.deployments.last().is_some_and(|d| d.version_id == v.version_id);
    json!({
        "version_id": v.version_id,
        "active": if live { "true" } else { "false" },
        "data": v.elements.to_string(),
        "created_at": v.created_at,
        "is_valid": route::parse(&v.elements).is_ok(),
    })
}

fn deployment_json(d: &RouteDeployment) -> Value {
    json!({"deployment_id": d.deployment_id, "version_id": d.version_id, "created_at": d.created_at})
}

/// A route as `GET` returns it: the live version's elements, its deployment and version.
#[must_use]
pub fn public(r: &RouteRecord, account: &str) -> Value {
    let live = r.live();
    json!({
        "id": r.id, "name": r.name, "gateway_id": r.gateway_id, "account_tag": account,
        "elements": live.map_or(Value::Array(Vec::new()), |v| v.elements.clone()),
        "created_at": r.created_at, "modified_at": r.modified_at,
        "deployment": r.deployments.last().map(deployment_json),
        "version": live.map(|v| version_json(r, v)),
    })
}

/// The short answer of delete, new version and deployment: the route with its live elements
/// (a new draft version's elements for [`add_version`]).
#[must_use]
pub fn summary(r: &RouteRecord, elements: &Value) -> Value {
    json!({"id": r.id, "name": r.name, "gateway_id": r.gateway_id, "elements": elements,
        "created_at": r.created_at, "modified_at": r.modified_at})
}

/// Versions, newest first.
#[must_use]
pub fn versions(r: &RouteRecord) -> Vec<Value> {
    r.versions.iter().rev().map(|v| version_json(r, v)).collect()
}

/// One version with the route's identity.
pub fn version(r: &RouteRecord, version_id: &str) -> Result<Value, Error> {
    let v = r
        .versions
        .iter()
        .find(|v| v.version_id == version_id)
        .ok_or_else(|| Error::NotFound { kind: "route version", id: version_id.chars().take(64).collect() })?;
    let mut out = version_json(r, v);
    if let Value::Object(o) = &mut out {
        o.insert("id".into(), json!(r.id));
        o.insert("name".into(), json!(r.name));
        o.insert("gateway_id".into(), json!(r.gateway_id));
        o.insert("elements".into(), v.elements.clone());
        o.insert("modified_at".into(), json!(r.modified_at));
    }
    Ok(out)
}

/// Deployments, newest first.
#[must_use]
pub fn deployments(r: &RouteRecord) -> Vec<Value> {
    r.deployments.iter().rev().map(deployment_json).collect()
}

// ----- Model aliases -----

fn alias_models(body: &Body) -> Result<Vec<String>, Error> {
    let Some(Value::Array(items)) = body.get("models") else {
        return Err(Error::invalid("models", "is required: an array of \"{provider}/{model}\" names"));
    };
    if items.is_empty() || items.len() > 10 {
        return Err(Error::invalid("models", "1 to 10 models"));
    }
    let mut out = Vec::new();
    for (i, m) in items.iter().enumerate() {
        match m.as_str() {
            Some(m) if m.contains('/') && !m.starts_with("custom/") && !m.starts_with("dynamic/") && m.len() <= 200 => {
                out.push(m.to_string());
            }
            _ => {
                return Err(Error::invalid(
                    format!("models[{i}]"),
                    "must be \"{provider}/{model}\" (not another alias or route)",
                ));
            }
        }
    }
    Ok(out)
}

/// Creates or replaces an alias (`PUT /aliases/{name}`, `POST /aliases`).
pub fn put_alias(settings: &Settings, gateway: &str, name: &str, body: &Body) -> Result<AliasRecord, Error> {
    input::reject_unknown(body, &["name", "models"])?;
    check_name(name, "name")?;
    let models = alias_models(body)?;
    let key = format!("{gateway}/{name}");
    let a = settings.store().write(|txn| -> Result<AliasRecord, Error> {
        gateway_exists(txn, gateway)?;
        let now = now_rfc3339();
        let created_at = get_in::<AliasRecord>(txn, &key)?.map_or_else(|| now.clone(), |a| a.created_at);
        let a = AliasRecord {
            key: key.clone(),
            gateway_id: gateway.into(),
            name: name.into(),
            models: models.clone(),
            created_at,
            modified_at: now,
        };
        put_in(txn, &a)?;
        Ok(a)
    })?;
    settings.reload()?;
    Ok(a)
}

/// Deletes an alias.
pub fn delete_alias(settings: &Settings, gateway: &str, name: &str) -> Result<AliasRecord, Error> {
    let key = format!("{gateway}/{name}");
    let a = settings.store().write(|txn| -> Result<AliasRecord, Error> {
        let a: AliasRecord =
            get_in(txn, &key)?.ok_or_else(|| Error::NotFound { kind: "alias", id: name.chars().take(64).collect() })?;
        remove_in::<AliasRecord>(txn, &key)?;
        Ok(a)
    })?;
    settings.reload()?;
    Ok(a)
}

/// The gateway's aliases, by name.
pub fn aliases(settings: &Settings, gateway: &str) -> Result<Vec<AliasRecord>, Error> {
    let mut all: Vec<AliasRecord> =
        settings.store().list::<AliasRecord>()?.into_iter().filter(|a| a.gateway_id == gateway).collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// An alias as the API returns it.
#[must_use]
pub fn alias_json(a: &AliasRecord) -> Value {
    json!({"name": a.name, "gateway_id": a.gateway_id, "models": a.models, "created_at": a.created_at, "modified_at": a.modified_at})
}
