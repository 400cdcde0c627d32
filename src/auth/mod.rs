//! API tokens: random secrets shown once, stored only as SHA-256, checked against the
//! in-memory snapshot (no store read per request). Admin users and sessions: [`admin`].

pub mod admin;

use std::sync::Arc;

use rand::RngCore;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::AuthFailure;
use crate::store::{Scope, Store, StoreError, TokenRecord};
use crate::time::{now_rfc3339, parse_rfc3339};

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
    /// Budget, token rate and allow-lists.
    pub limits: crate::store::TokenLimits,
}

/// Largest `rate_limit` a token may have.
pub const MAX_TOKEN_RATE_LIMIT: u64 = 1_000_000_000;
/// Longest `rate_limit_interval` a token may have, in seconds (one year).
pub const MAX_TOKEN_RATE_INTERVAL: u64 = 31_536_000;

impl NewToken {
    /// The one validation of a new token's fields, for the CLI, the API and the UI:
    /// `Err((field, reason))` names the first field at fault.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.name.trim().is_empty() || self.name.len() > 128 {
            return Err(("name", "must be 1-128 characters".into()));
        }
        if self.scopes.is_empty() {
            return Err(("scopes", "at least one of run, read, edit".into()));
        }
        if self.gateways.len() > 256 {
            return Err(("gateways", "at most 256 gateway ids".into()));
        }
        if let Some(g) = self.gateways.iter().find(|g| !crate::store::is_valid_id(g)) {
            let shown: String = g.chars().take(64).collect();
            return Err(("gateways", format!("'{shown}' is not a gateway id (1-64 of a-z, A-Z, 0-9, '-', '_')")));
        }
        if let Some(t) = &self.expires_at
            && crate::time::parse_rfc3339(t).is_none()
        {
            return Err(("expires_at", "must be an RFC 3339 time".into()));
        }
        if let Some((n, secs)) = self.rate_limit
            && !((1..=MAX_TOKEN_RATE_LIMIT).contains(&n) && (1..=MAX_TOKEN_RATE_INTERVAL).contains(&secs))
        {
            return Err((
                "rate_limit",
                format!(
                    "rate_limit must be 1-{MAX_TOKEN_RATE_LIMIT} and rate_limit_interval 1-{MAX_TOKEN_RATE_INTERVAL} s"
                ),
            ));
        }
        let l = &self.limits;
        if l.budget_usd.is_some_and(|b| !b.is_finite() || b < 0.0) {
            return Err(("budget_usd", "must be a number ≥ 0".into()));
        }
        if l.budget_period.is_some_and(|p| !(60..=MAX_TOKEN_RATE_INTERVAL).contains(&p)) {
            return Err(("budget_period", format!("must be 60-{MAX_TOKEN_RATE_INTERVAL} s")));
        }
        if l.budget_period.is_some() && l.budget_usd.is_none() {
            return Err(("budget_period", "needs budget_usd".into()));
        }
        if l.tokens_per_minute.is_some_and(|t| t == 0 || t > MAX_TOKEN_RATE_LIMIT) {
            return Err(("tokens_per_minute", format!("must be 1-{MAX_TOKEN_RATE_LIMIT}")));
        }
        for (field, list) in [("allowed_providers", &l.allowed_providers), ("allowed_models", &l.allowed_models)] {
            if list.len() > 100 || list.iter().any(|g| g.is_empty() || g.len() > 200) {
                return Err((field, "at most 100 patterns of 1-200 characters".into()));
            }
        }
        Ok(())
    }

    /// Whether `caller` may mint this token: minting needs `edit`, which covers every scope, so
    /// what bounds it is the gateways: a caller limited to some gateways mints only tokens
    /// limited to some of those.
    #[must_use]
    pub fn within(&self, caller: &TokenRecord) -> bool {
        has_scope(caller, Scope::Edit)
            && (caller.gateways.is_empty()
                || (!self.gateways.is_empty() && self.gateways.iter().all(|g| caller.gateways.contains(g))))
    }
}

/// Whether a token limited to `caller`'s gateways covers `token` (for listing and revoking).
#[must_use]
pub fn covers(caller: &TokenRecord, token: &TokenRecord) -> bool {
    caller.gateways.is_empty()
        || (!token.gateways.is_empty() && token.gateways.iter().all(|g| caller.gateways.contains(g)))
}

/// Whether `token` may act on gateway `id`.
#[must_use]
pub fn allows_gateway(token: &TokenRecord, id: &str) -> bool {
    token.gateways.is_empty() || token.gateways.iter().any(|g| g == id)
}

/// Live tokens by the hex SHA-256 of their secret (the snapshot's table).
pub type Tokens = foldhash::HashMap<String, Arc<TokenRecord>>;

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
        last_used_at: None,
        limits: new.limits,
    };
    store.put(&record)?;
    Ok((secret, record))
}

/// Marks a token revoked; returns false when no such token exists.
pub fn revoke_token(store: &Store, id: &str) -> Result<bool, StoreError> {
    if store.get::<TokenRecord>(id)?.is_none() {
        return Ok(false);
    }
    let now = now_rfc3339();
    store.update::<TokenRecord>(&[id.to_string()], |t| {
        if t.revoked_at.is_some() {
            return false;
        }
        t.revoked_at = Some(now.clone());
        true
    })?;
    Ok(true)
}

fn rfc3339(unix_secs: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(unix_secs).ok()?.format(&time::format_description::well_known::Rfc3339).ok()
}

/// When each token was last used, kept in memory on the request path and written to the store
/// in the background (so a check never waits on a disk write).
#[derive(Default)]
pub struct TokenUsage {
    seen: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

impl TokenUsage {
    /// Records a use of token `id` now.
    pub fn touch(&self, id: &str) {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if let Ok(mut seen) = self.seen.lock() {
            match seen.get_mut(id) {
                Some(t) => *t = now,
                None => {
                    seen.insert(id.to_string(), now);
                }
            }
        }
    }

    /// The last use not yet written, as RFC 3339.
    #[must_use]
    pub fn pending(&self, id: &str) -> Option<String> {
        let secs = *self.seen.lock().ok()?.get(id)?;
        rfc3339(secs)
    }

    /// Writes the uses seen since the last call into the token records (one transaction).
    pub fn persist(&self, store: &Store) -> Result<usize, StoreError> {
        let taken = match self.seen.lock() {
            Ok(mut seen) => std::mem::take(&mut *seen),
            Err(_) => return Ok(0),
        };
        if taken.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = taken.keys().cloned().collect();
        store.update::<TokenRecord>(&ids, |t| {
            let Some(at) = taken.get(&t.id).copied().and_then(rfc3339) else { return false };
            // RFC 3339 UTC strings of one format order as the times do.
            if t.last_used_at.as_deref().is_some_and(|old| old >= at.as_str()) {
                return false;
            }
            t.last_used_at = Some(at);
            true
        })
    }
}

/// Takes the secret out of an `Authorization`-style header value (`Bearer <secret>`).
#[must_use]
pub fn bearer(value: Option<&[u8]>) -> Option<&str> {
    let value = std::str::from_utf8(value?).ok()?.trim();
    let (scheme, secret) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| secret.trim()).filter(|s| !s.is_empty())
}

/// Finds the live token for a presented secret (unknown, revoked and expired ones fail).
pub fn find_token<'s>(tokens: &'s Tokens, secret: Option<&str>) -> Result<&'s Arc<TokenRecord>, AuthFailure> {
    let secret = secret.ok_or(AuthFailure::Missing)?;
    let token = tokens.get(&hash_token(secret)).ok_or(AuthFailure::Invalid)?;
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
    tokens: &'s Tokens,
    secret: Option<&str>,
    needed: Scope,
    gateway: Option<&str>,
) -> Result<&'s TokenRecord, AuthFailure> {
    let token = find_token(tokens, secret)?;
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

    fn snapshot_with(
        scopes: Vec<Scope>,
        gateways: Vec<String>,
        expires_at: Option<String>,
    ) -> (crate::control::Snapshot, String) {
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
            limits: crate::store::TokenLimits::default(),
            rate_limit: None,
            rate_limit_interval: None,
            last_used_at: None,
        };
        let mut s = crate::control::Snapshot::default();
        s.tokens.insert(record.hash.clone(), Arc::new(record));
        (s, secret)
    }

    #[test]
    fn scopes_gateways_and_expiry() {
        let (s, secret) = snapshot_with(vec![Scope::Edit], vec![], None);
        assert!(check_token(&s.tokens, Some(&secret), Scope::Read, None).is_ok());
        assert_eq!(check_token(&s.tokens, Some(&secret), Scope::Run, None).unwrap_err(), AuthFailure::Invalid);
        assert_eq!(check_token(&s.tokens, None, Scope::Read, None).unwrap_err(), AuthFailure::Missing);
        assert_eq!(check_token(&s.tokens, Some("torii_nope"), Scope::Read, None).unwrap_err(), AuthFailure::Invalid);
        let (s, secret) = snapshot_with(vec![Scope::Run], vec!["a".into()], None);
        assert!(check_token(&s.tokens, Some(&secret), Scope::Run, Some("a")).is_ok());
        assert_eq!(
            check_token(&s.tokens, Some(&secret), Scope::Run, Some("b")).unwrap_err(),
            AuthFailure::WrongGateway
        );
        let (s, secret) = snapshot_with(vec![Scope::Run], vec![], Some("2000-01-01T00:00:00Z".into()));
        assert_eq!(check_token(&s.tokens, Some(&secret), Scope::Run, None).unwrap_err(), AuthFailure::Invalid);
    }

    #[test]
    fn last_use_is_written_in_one_batch_and_never_moves_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.redb")).unwrap();
        let new = NewToken {
            name: "a".into(),
            scopes: vec![Scope::Run],
            gateways: vec![],
            expires_at: None,
            rate_limit: None,
            limits: crate::store::TokenLimits::default(),
        };
        let (_, t) = create_token(&store, new).unwrap();
        let usage = TokenUsage::default();
        assert_eq!(usage.persist(&store).unwrap(), 0, "nothing seen, nothing written");
        usage.touch(&t.id);
        usage.touch("no-such-token");
        assert!(usage.pending(&t.id).is_some());
        assert_eq!(usage.persist(&store).unwrap(), 1);
        assert!(usage.pending(&t.id).is_none());
        let stored = store.get::<TokenRecord>(&t.id).unwrap().unwrap();
        assert!(stored.last_used_at.is_some());
        // A later revoke keeps the last use; a stale in-memory time does not overwrite a newer one.
        assert!(revoke_token(&store, &t.id).unwrap());
        store
            .update::<TokenRecord>(std::slice::from_ref(&t.id), |r| {
                r.last_used_at = Some("2999-01-01T00:00:00Z".into());
                true
            })
            .unwrap();
        usage.touch(&t.id);
        assert_eq!(usage.persist(&store).unwrap(), 0);
        let stored = store.get::<TokenRecord>(&t.id).unwrap().unwrap();
        assert_eq!(stored.last_used_at.as_deref(), Some("2999-01-01T00:00:00Z"));
        assert!(stored.revoked_at.is_some());
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
