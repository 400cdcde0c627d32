//! Stages 2, 3 and 6 (credentials): who may use the gateway, how often, and with which
//! provider key.

use awc::http::header::{HeaderMap, HeaderName, HeaderValue};

use super::Gateway;
use crate::auth;
use crate::error::Error;
use crate::limits::{Rule, Technique};
use crate::providers::Target;
use crate::settings::Snapshot;
use crate::store::{GatewayRecord, RateLimitTechnique, Scope, TokenRecord};

/// Stage 2: a gateway with `authentication` on needs a `run` token for it in
/// `cf-aig-authorization` (never in `Authorization`, which carries provider keys).
pub(crate) fn authenticate<'s>(
    snapshot: &'s Snapshot,
    gw: &GatewayRecord,
    headers: &HeaderMap,
) -> Result<Option<&'s TokenRecord>, Error> {
    if !gw.authentication {
        return Ok(None);
    }
    let secret = auth::bearer(headers.get("cf-aig-authorization").map(HeaderValue::as_bytes));
    auth::check_token(snapshot, secret, Scope::Run, Some(&gw.id)).map(Some).map_err(Error::Unauthorized)
}

/// Stage 6 (credentials): when the gateway stores a key for this provider (alias `default`, or
/// the one `cf-aig-byok-alias` names), that key goes upstream in the provider's own header in
/// place of whatever credential the client sent (SDKs insist on sending a placeholder key).
/// Returns the alias used.
pub(crate) fn inject_stored_key(
    snapshot: &Snapshot,
    gw: &GatewayRecord,
    target: &Target,
    alias: Option<&str>,
    headers: &mut HeaderMap,
) -> Result<Option<String>, Error> {
    let wanted = alias.unwrap_or("default");
    let key = (gw.id.clone(), target.provider.clone(), wanted.to_string());
    let Some(secret) = snapshot.provider_keys.get(&key) else {
        return match alias {
            Some(a) => {
                Err(Error::ByokAliasNotFound { provider: target.provider.clone(), alias: a.chars().take(64).collect() })
            }
            None => Ok(None),
        };
    };
    for h in target.credential_headers {
        headers.remove(*h);
    }
    let (name, value) = match target.provider.as_str() {
        "anthropic" => ("x-api-key", secret.expose().to_string()),
        "azure-openai" => ("api-key", secret.expose().to_string()),
        "google-ai-studio" => ("x-goog-api-key", secret.expose().to_string()),
        _ => ("authorization", format!("Bearer {}", secret.expose())),
    };
    let value = HeaderValue::from_str(&value)
        .map_err(|_| Error::Store("a stored provider key is not a valid header value".into()))?;
    headers.insert(HeaderName::from_static(name), value);
    Ok(Some(wanted.to_string()))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

impl Gateway {
    /// Stage 3: the gateway's limit, then the token's own limit.
    pub(crate) fn rate_limit(&self, gw: &GatewayRecord, token: Option<&TokenRecord>) -> Result<(), Error> {
        let now = now_ms();
        let limited = |ms: u64| Error::RateLimited { retry_after_secs: ms.div_ceil(1000).max(1) };
        if let (Some(limit), Some(secs)) = (gw.rate_limiting_limit, gw.rate_limiting_interval) {
            let technique = match gw.rate_limiting_technique {
                Some(RateLimitTechnique::Sliding) => Technique::Sliding,
                _ => Technique::Fixed,
            };
            let rule = Rule { limit, interval_ms: secs.saturating_mul(1000), technique };
            self.limiter.check(&format!("gateway:{}", gw.id), rule, now).map_err(limited)?;
        }
        if let Some(t) = token
            && let (Some(limit), Some(secs)) = (t.rate_limit, t.rate_limit_interval)
        {
            let rule = Rule { limit, interval_ms: secs.saturating_mul(1000), technique: Technique::Sliding };
            self.limiter.check(&format!("token:{}", t.id), rule, now).map_err(limited)?;
        }
        Ok(())
    }
}
