//! Token management API (Torii's own; Cloudflare manages tokens account-wide):
//! `/client/v4/accounts/{account_id}/ai-gateway/tokens`. Needs an `edit` token, also for reads.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::envelope::{ApiError, PageQuery, paginate, v4_ok};
use super::management::{ApiCaller, blocking};
use crate::auth::{self, NewToken};
use crate::control::ControlPlane;
use crate::error::Error;
use crate::store::{Scope, TokenRecord};

/// Token creation body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    name: String,
    scopes: Vec<Scope>,
    #[serde(default)]
    gateways: Vec<String>,
    expires_at: Option<String>,
    rate_limit: Option<u64>,
    rate_limit_interval: Option<u64>,
    #[serde(flatten)]
    limits: crate::store::TokenLimits,
}

fn require_edit(caller: &ApiCaller) -> Result<(), ApiError> {
    if auth::has_scope(&caller.token, Scope::Edit) {
        Ok(())
    } else {
        Err(Error::ApiForbidden { needed: "edit" }.into())
    }
}

/// A token as listed: never the secret or its hash.
fn public(t: &TokenRecord) -> serde_json::Value {
    json!({
        "id": t.id, "name": t.name, "scopes": t.scopes, "gateways": t.gateways,
        "created_at": t.created_at, "expires_at": t.expires_at, "revoked_at": t.revoked_at,
        "rate_limit": t.rate_limit, "rate_limit_interval": t.rate_limit_interval, "last_used_at": t.last_used_at,
        "budget_usd": t.limits.budget_usd, "budget_period": t.limits.budget_period,
        "tokens_per_minute": t.limits.tokens_per_minute, "allowed_providers": t.limits.allowed_providers,
        "allowed_models": t.limits.allowed_models,
    })
}

/// `POST /tokens`: returns the secret once, as `result.value`.
pub async fn create(
    caller: ApiCaller,
    gw: web::Data<ControlPlane>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    require_edit(&caller)?;
    let c: CreateToken = serde_json::from_slice(&body).map_err(|e| Error::invalid("body", e.to_string()))?;
    let rate_limit = match (c.rate_limit, c.rate_limit_interval) {
        (Some(n), Some(s)) => Some((n, s)),
        (None, None) => None,
        _ => return Err(Error::invalid("rate_limit", "needs rate_limit_interval, both positive").into()),
    };
    let new = NewToken {
        name: c.name,
        scopes: c.scopes,
        gateways: c.gateways,
        expires_at: c.expires_at,
        rate_limit,
        limits: c.limits,
    };
    if !new.within(&caller.token) {
        return Err(Error::ApiGatewayForbidden { what: "a token for gateways beyond the caller's own".into() }.into());
    }
    let (secret, record) = blocking(&gw, move |s| s.create_token(new)).await?;
    let mut out = public(&record);
    out["value"] = json!(secret);
    Ok(v4_ok(out, None))
}

/// `GET /tokens`
pub async fn list(
    caller: ApiCaller,
    gw: web::Data<ControlPlane>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    require_edit(&caller)?;
    let all = blocking(&gw, |s| Ok(s.tokens()?)).await?;
    let (page, info) = paginate(all.iter().filter(|t| auth::covers(&caller.token, t)).map(public).collect(), &q);
    Ok(v4_ok(page, Some(info)))
}

/// `DELETE /tokens/{id}`: revokes the token at once.
pub async fn revoke(
    caller: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    require_edit(&caller)?;
    let (_, id) = path.into_inner();
    let shown = id.clone();
    let target = gw.settings.snapshot().tokens.values().find(|t| t.id == id).cloned();
    if target.as_ref().is_some_and(|t| !auth::covers(&caller.token, t)) {
        return Err(Error::ApiGatewayForbidden { what: "a token for gateways beyond the caller's own".into() }.into());
    }
    let found = blocking(&gw, move |s| s.revoke_token(&id)).await?;
    if !found {
        return Err(Error::NotFound { kind: "token", id: shown.chars().take(64).collect() }.into());
    }
    Ok(v4_ok(json!({ "id": shown }), None))
}
