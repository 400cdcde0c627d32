//! Stages 2, 3 and 6 (credentials): who may use the gateway, how often, and with which
//! provider key.

use std::time::SystemTime;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

use super::Gateway;
use crate::auth;
use crate::cluster::Verdict;
use crate::control::{Settings, Snapshot};
use crate::error::Error;
use crate::limits::{Rule, Technique};
use crate::providers::{Auth, Target, aws};
use crate::store::{GatewayRecord, RateLimitTechnique, Scope, TokenRecord};

/// `cf-aig-authorization` as a static name: a `&str` lookup of a name that is not a standard
/// header allocates one on every request.
const GATEWAY_AUTHORIZATION: HeaderName = HeaderName::from_static("cf-aig-authorization");

/// Stage 2: a gateway with `authentication` on needs a `run` token for it in
/// `cf-aig-authorization` (never in `Authorization`, which carries provider keys).
pub(crate) fn authenticate<'s>(
    settings: &Settings,
    snapshot: &'s Snapshot,
    gw: &GatewayRecord,
    headers: &HeaderMap,
) -> Result<Option<&'s TokenRecord>, Error> {
    if !gw.authentication {
        return Ok(None);
    }
    let secret = auth::bearer(headers.get(&GATEWAY_AUTHORIZATION).map(HeaderValue::as_bytes));
    let token = auth::check_token(&snapshot.tokens, secret, Scope::Run, Some(&gw.id)).map_err(Error::Unauthorized)?;
    settings.token_usage().touch(&token.id);
    Ok(Some(token))
}

/// What the stored-key stage needs of the outgoing request (a SigV4 signature covers it).
pub(crate) struct Outgoing<'a> {
    pub method: &'a str,
    pub body: &'a [u8],
}

/// Stage 6 (credentials): when the gateway stores a key for this provider (alias `default`, or
/// the one `cf-aig-byok-alias` names), that key goes upstream in the provider's own header in
/// place of whatever credential the client sent (SDKs insist on sending a placeholder key).
/// Stored AWS credentials sign the request with SigV4 instead. Returns the alias used.
pub(crate) fn inject_stored_key(
    snapshot: &Snapshot,
    gw: &GatewayRecord,
    target: &Target,
    alias: Option<&str>,
    out: &Outgoing<'_>,
    headers: &mut HeaderMap,
) -> Result<Option<String>, Error> {
    let wanted = alias.unwrap_or("default");
    let Some(secret) = snapshot.provider_key(&gw.id, &target.provider, wanted) else {
        return match alias {
            Some(a) => {
                Err(Error::ByokAliasNotFound { provider: target.provider.clone(), alias: a.chars().take(64).collect() })
            }
            None => Ok(None),
        };
    };
    for h in target.credential_headers {
        headers.remove(HeaderName::from_static(h));
    }
    let (name, value) = match target.auth {
        Auth::SigV4 { service } => {
            sign_aws(secret.expose(), service, target, out, headers)?;
            return Ok(Some(wanted.to_string()));
        }
        Auth::Header(name) => (name, secret.expose().to_string()),
        Auth::Bearer => ("authorization", format!("Bearer {}", secret.expose())),
        Auth::Scheme(scheme) => ("authorization", format!("{scheme} {}", secret.expose())),
    };
    let value = HeaderValue::from_str(&value)
        .map_err(|_| Error::Internal("a stored provider key is not a valid header value".into()))?;
    headers.insert(HeaderName::from_static(name), value);
    Ok(Some(wanted.to_string()))
}

/// Replaces any client signature with one made from the stored AWS credentials, for `service`
/// in the region of the request URL.
fn sign_aws(
    secret: &str,
    service: &str,
    target: &Target,
    out: &Outgoing<'_>,
    headers: &mut HeaderMap,
) -> Result<(), Error> {
    let creds = aws::AwsCredentials::parse(secret)
        .map_err(|_| Error::Internal("a stored AWS credential is unreadable".into()))?;
    let region = target.aws_region.as_deref().unwrap_or_default();
    for h in aws::SIGNATURE_HEADERS {
        headers.remove(*h);
    }
    let content_type = headers.get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let signed = aws::sign_request(
        &creds,
        aws::Scope { region, service },
        out.method,
        &target.url,
        content_type,
        out.body,
        SystemTime::now(),
    )
    .map_err(|e| Error::BadRequest(format!("cannot sign the AWS request: {e}")))?;
    for (name, value) in signed {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::Internal("the SigV4 signer produced a bad header name".into()))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| Error::Internal("a stored AWS credential is not header-safe".into()))?;
        headers.insert(name, value);
    }
    Ok(())
}

/// A rate check put off until the request's spend reservation (cluster mode), so that both take
/// one Redis round trip; whatever way the request goes, the check runs once.
pub struct DeferredRate {
    rules: Rules,
    pending: std::sync::atomic::AtomicBool,
}

impl DeferredRate {
    /// The rules, the first time they are asked for.
    pub(crate) fn take(&self) -> Option<Keyed<'_>> {
        self.pending.swap(false, std::sync::atomic::Ordering::Relaxed).then(|| keyed(&self.rules))
    }
}

/// A request's rate rules: the gateway's and the token's, so at most two (inline).
type Rules = smallvec::SmallVec<[(String, Rule); 2]>;

/// Rules keyed by `&str`, as the limiter takes them.
pub(crate) type Keyed<'a> = smallvec::SmallVec<[(&'a str, Rule); 2]>;

fn keyed(rules: &Rules) -> Keyed<'_> {
    rules.iter().map(|(k, r)| (k.as_str(), *r)).collect()
}

/// The gateway's limit, then the token's own limit.
fn rate_rules(gw: &GatewayRecord, token: Option<&TokenRecord>) -> Rules {
    let mut rules = Rules::new();
    if let (Some(limit), Some(secs)) = (gw.rate_limiting_limit, gw.rate_limiting_interval) {
        let technique = match gw.rate_limiting_technique {
            Some(RateLimitTechnique::Sliding) => Technique::Sliding,
            _ => Technique::Fixed,
        };
        let rule = Rule { limit, interval_ms: secs.saturating_mul(1000), technique };
        rules.push((format!("gateway:{}", gw.id), rule));
    }
    if let Some(t) = token
        && let (Some(limit), Some(secs)) = (t.rate_limit, t.rate_limit_interval)
    {
        let rule = Rule { limit, interval_ms: secs.saturating_mul(1000), technique: Technique::Sliding };
        rules.push((format!("token:{}", t.id), rule));
    }
    rules
}

impl Gateway {
    /// Stage 3: the gateway's limit, then the token's own limit.
    pub(crate) async fn rate_limit(&self, gw: &GatewayRecord, token: Option<&TokenRecord>) -> Result<(), Error> {
        let rules = rate_rules(gw, token);
        self.check_rate(&keyed(&rules)).await
    }

    /// Stage 3, put off when the windows are in Redis and the request will reserve spend
    /// there too (the gateway has spend limits, or the token a budget): the reservation then
    /// checks and counts the rate limits in the same round trip.
    pub(crate) async fn admit_rate(
        &self,
        snapshot: &Snapshot,
        gw: &GatewayRecord,
        token: Option<&TokenRecord>,
    ) -> Result<Option<DeferredRate>, Error> {
        let rules = rate_rules(gw, token);
        if rules.is_empty() {
            return Ok(None);
        }
        let spends = snapshot.policies.get(&gw.id).and_then(|p| p.as_ref().ok()).is_some_and(|p| p.spend.is_some())
            || token.is_some_and(|t| t.limits.budget_usd.is_some());
        if self.limiter.is_shared() && spends {
            return Ok(Some(DeferredRate { rules, pending: std::sync::atomic::AtomicBool::new(true) }));
        }
        self.check_rate(&keyed(&rules)).await.map(|()| None)
    }

    /// Runs a put-off rate check that no reservation carried (once).
    pub(crate) async fn run_deferred(&self, deferred: Option<&DeferredRate>) -> Result<(), Error> {
        match deferred.and_then(DeferredRate::take) {
            Some(rules) => self.check_rate(&rules).await,
            None => Ok(()),
        }
    }

    /// Checks and counts `rules` now.
    pub(crate) async fn check_rate(&self, rules: &[(&str, Rule)]) -> Result<(), Error> {
        if rules.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        match self.limiter.check_all(rules, now).await {
            Verdict::Admit => Ok(()),
            Verdict::Wait(ms) => Err(Error::RateLimited { retry_after_secs: ms.div_ceil(1000).max(1) }),
            Verdict::Unavailable => Err(Error::LimitsUnavailable),
        }
    }
}
