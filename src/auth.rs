//! API tokens: random secrets shown once, stored only as SHA-256, checked against the
//! in-memory snapshot (no store read per request).

use rand::RngCore;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::AuthFailure;
use crate::settings::{Snapshot, now_rfc3339, parse_rfc3339};
use crate::store::{Scope, Store, StoreError, TokenRecord};

/// Prefix that makes Torii tokens recognisable (secret scanners, humans).
pub const TOKEN_PREFIX: &str = "torii_";

/// Hex SHA-256 of a token secret.
#[must_use]
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A fresh 256-bit secret with the Torii prefix.
#[must_use]
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// What a new token is for.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Label.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Gateways; empty means all.
    pub gateways: Vec<String>,
    /// RFC 3339 expiry.
    pub expires_at: Option<String>,
    /// Own rate limit: requests per interval (seconds).
    pub rate_limit: Option<(u64, u64)>,
}

/// Creates and stores a token; returns the secret (shown once) and the stored record.
pub fn create_token(store: &Store, new: NewToken) -> Result<(String, TokenRecord), StoreError> {
    let secret = generate_secret();
    let mut scopes = new.scopes;
    scopes.sort_by_key(|s| s.as_str());
    scopes.dedup();
    let record = TokenRecord {
        id: uuid::Uuid::now_v7().to_string(),
        name: new.name,
        hash: hash_token(&secret),
        scopes,
        gateways: new.gateways,
        created_at: now_rfc3339(),
        expires_at: new.expires_at,
        revoked_at: None,
        rate_limit: new.rate_limit.map(|(n, _)| n),
        rate_limit_interval: new.rate_limit.map(|(_, secs)| secs),
    };
    store.put(&record)?;
    Ok((secret, record))
}

/// Marks a token revoked; returns false when no such token exists.
pub fn revoke_token(store: &Store, id: &str) -> Result<bool, StoreError> {
    let Some(mut record) = store.get::<TokenRecord>(id)? else {
        return Ok(false);
    };
    if record.revoked_at.is_none() {
        record.revoked_at = Some(now_rfc3339());
        store.put(&record)?;
    }
    Ok(true)
}

/// Takes the secret out of an `Authorization`-style header value (`Bearer <secret>`).
#[must_use]
pub fn bearer(value: Option<&[u8]>) -> Option<&str> {
    let value = std::str::from_utf8(value?).ok()?.trim();
    let (scheme, secret) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| secret.trim()).filter(|s| !s.is_empty())
}

/// Finds the live token for a presented secret (unknown, revoked and expired ones fail).
pub fn find_token<'s>(snapshot: &'s Snapshot, secret: Option<&str>) -> Result<&'s TokenRecord, AuthFailure> {
    let secret = secret.ok_or(AuthFailure::Missing)?;
    let token = snapshot.tokens.get(&hash_token(secret)).ok_or(AuthFailure::Invalid)?;
    let expired = token.expires_at.as_deref().and_then(parse_rfc3339).is_some_and(|t| t <= OffsetDateTime::now_utc());
    if expired { Err(AuthFailure::Invalid) } else { Ok(token) }
}

/// Whether a token grants a scope; `edit` implies `read`.
#[must_use]
pub fn has_scope(token: &TokenRecord, needed: Scope) -> bool {
    token.scopes.contains(&needed) || (needed == Scope::Read && token.scopes.contains(&Scope::Edit))
}

/// Checks a presented secret for a scope and, when given, a gateway.
pub fn check_token<'s>(
    snapshot: &'s Snapshot,
    secret: Option<&str>,
    needed: Scope,
    gateway: Option<&str>,
) -> Result<&'s TokenRecord, AuthFailure> {
    let token = find_token(snapshot, secret)?;
    if !has_scope(token, needed) {
        return Err(AuthFailure::Invalid);
    }
    if let Some(g) = gateway
        && !token.gateways.is_empty()
        && !token.gateways.iter().any(|x| x == g)
    {
        return Err(AuthFailure::WrongGateway);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn snapshot_with(scopes: Vec<Scope>, gateways: Vec<String>, expires_at: Option<String>) -> (Snapshot, String) {
        let secret = generate_secret();
        let record = TokenRecord {
            id: "t".into(),
            name: "n".into(),
            hash: hash_token(&secret),
            scopes,
            gateways,
            created_at: now_rfc3339(),
            expires_at,
            revoked_at: None,
            rate_limit: None,
            rate_limit_interval: None,
        };
        let mut s = Snapshot::default();
        s.tokens.insert(record.hash.clone(), Arc::new(record));
        (s, secret)
    }

    #[test]
    fn scopes_gateways_and_expiry() {
        let (s, secret) = snapshot_with(vec![Scope::Edit], vec![], None);
        assert!(check_token(&s, Some(&secret), Scope::Read, None).is_ok());
        assert_eq!(check_token(&s, Some(&secret), Scope::Run, None).unwrap_err(), AuthFailure::Invalid);
        assert_eq!(check_token(&s, None, Scope::Read, None).unwrap_err(), AuthFailure::Missing);
        assert_eq!(check_token(&s, Some("torii_nope"), Scope::Read, None).unwrap_err(), AuthFailure::Invalid);
        let (s, secret) = snapshot_with(vec![Scope::Run], vec!["a".into()], None);
        assert!(check_token(&s, Some(&secret), Scope::Run, Some("a")).is_ok());
        assert_eq!(check_token(&s, Some(&secret), Scope::Run, Some("b")).unwrap_err(), AuthFailure::WrongGateway);
        let (s, secret) = snapshot_with(vec![Scope::Run], vec![], Some("2000-01-01T00:00:00Z".into()));
        assert_eq!(check_token(&s, Some(&secret), Scope::Run, None).unwrap_err(), AuthFailure::Invalid);
    }

    #[test]
    fn secrets_are_random_and_prefixed() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        assert_eq!(bearer(Some(b"Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some(b"Basic abc")), None);
        assert_eq!(bearer(None), None);
    }
}
