//! Stored provider keys (BYOK): sealed at rest, opened into the snapshot, never shown again.

use super::input::{self, Body};
use super::{Settings, now_rfc3339};
use crate::error::Error;
use crate::providers::aws;
use crate::secrets::Secret;
use crate::store::{GatewayRecord, ProviderKeyRecord, list_in, put_in};

/// The associated data a key is sealed with: moving a sealed value to another row fails.
#[must_use]
pub fn context(gateway: &str, provider: &str, alias: &str) -> String {
    format!("{gateway}/{provider}/{alias}")
}

/// A key as the API returns it: never the secret.
#[must_use]
pub fn public(k: &ProviderKeyRecord) -> serde_json::Value {
    serde_json::json!({
        // The sealed secret has no identity apart from its row: `secret_id` names the row.
        "id": k.id, "secret_id": k.id, "gateway_id": k.gateway_id, "provider_slug": k.provider_slug, "alias": k.alias,
        "default_config": k.alias == "default", "secret_preview": k.secret_preview,
        "created_at": k.created_at, "modified_at": k.modified_at,
    })
}

/// Stores a key for a gateway, which must have authentication on.
pub fn create(settings: &Settings, gateway_id: &str, body: &Body) -> Result<ProviderKeyRecord, Error> {
    input::reject_unknown(
        body,
        &["alias", "provider_slug", "secret", "default_config", "rate_limit", "rate_limit_period"],
    )?;
    let gw = settings
        .store()
        .get::<GatewayRecord>(gateway_id)?
        .ok_or_else(|| Error::NotFound { kind: "gateway", id: gateway_id.chars().take(64).collect() })?;
    if !gw.authentication {
        return Err(Error::invalid(
            "authentication",
            "turn authentication on for this gateway first: with stored keys, anyone who can reach it would spend them",
        ));
    }
    let provider = input::string(body, "provider_slug")?.required("provider_slug")?.unwrap_or_default();
    let row = crate::providers::builtin(&provider);
    if row.is_none() && !provider.starts_with("custom-") {
        return Err(Error::invalid("provider_slug", "is not a known provider"));
    }
    let signs = row.is_some_and(|p| matches!(p.auth, crate::providers::Auth::SigV4 { .. }));
    // AWS credentials may come as the JSON object itself or as its text.
    let secret = match body.get("secret") {
        Some(v @ serde_json::Value::Object(_)) if signs => v.to_string(),
        _ => input::string(body, "secret")?.required("secret")?.unwrap_or_default(),
    };
    if secret.is_empty() || secret.len() > 16 * 1024 {
        return Err(Error::invalid("secret", "must be 1-16384 characters"));
    }
    let preview = if signs {
        let creds = aws::AwsCredentials::parse(&secret).map_err(|e| Error::invalid("secret", e))?;
        Secret::new(creds.access_key_id().to_string()).preview()
    } else {
        Secret::new(secret.clone()).preview()
    };
    let alias = input::string(body, "alias")?.required("alias").ok().flatten().unwrap_or_else(|| "default".into());
    if !super::is_valid_id(&alias) {
        return Err(Error::invalid("alias", "use 1-64 characters from a-z, A-Z, 0-9, '-', '_'"));
    }
    let secrets = settings.secrets().ok_or_else(|| Error::Internal("no secrets key loaded".into()))?;
    let sealed = secrets
        .seal(secret.as_bytes(), context(gateway_id, &provider, &alias).as_bytes())
        .map_err(|_| Error::Internal("the provider key could not be sealed".into()))?;
    let now = now_rfc3339();
    let record = ProviderKeyRecord {
        id: uuid::Uuid::new_v4().to_string(),
        gateway_id: gateway_id.to_string(),
        provider_slug: provider,
        alias,
        sealed: hex::encode(sealed),
        secret_preview: preview,
        created_at: now.clone(),
        modified_at: now,
    };
    // Checked and written in one transaction: two racing creates cannot both win.
    settings.store().write(|txn| -> Result<(), Error> {
        let clash = list_in::<ProviderKeyRecord>(txn)?.into_iter().any(|k| {
            k.gateway_id == record.gateway_id && k.provider_slug == record.provider_slug && k.alias == record.alias
        });
        if clash {
            return Err(Error::Conflict { kind: "provider key alias", id: record.alias.clone() });
        }
        Ok(put_in(txn, &record)?)
    })?;
    settings.reload()?;
    Ok(record)
}

/// A gateway's stored keys.
pub fn list(settings: &Settings, gateway_id: &str) -> Result<Vec<ProviderKeyRecord>, Error> {
    Ok(settings.store().list::<ProviderKeyRecord>()?.into_iter().filter(|k| k.gateway_id == gateway_id).collect())
}

/// Deletes a stored key.
pub fn delete(settings: &Settings, gateway_id: &str, id: &str) -> Result<ProviderKeyRecord, Error> {
    let record = settings
        .store()
        .get::<ProviderKeyRecord>(id)?
        .filter(|k| k.gateway_id == gateway_id)
        .ok_or_else(|| Error::NotFound { kind: "provider key", id: id.chars().take(64).collect() })?;
    settings.store().delete::<ProviderKeyRecord>(id)?;
    settings.reload()?;
    Ok(record)
}
