//! Management API (Cloudflare v4 shape) under `/client/v4/accounts/{account_id}/ai-gateway`.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::envelope::{ApiError, PageQuery, paginate, v4_ok};
use crate::auth;
use crate::control::ControlPlane;
use crate::control::custom_providers::{self, ListFilter};
use crate::control::input::parse_object;
use crate::control::{Settings, dlp_profiles, gateways, provider_keys};
use crate::error::Error;
use crate::store::Scope;

/// Proof that the caller holds a token with the scope the method needs (`read` for GET,
/// `edit` otherwise), addressed this appliance's account and, when the token is limited to some
/// gateways, touches only those (account-wide objects are read-only to such a token).
pub struct ApiCaller {
    /// The caller's token.
    pub token: std::sync::Arc<crate::store::TokenRecord>,
}

impl FromRequest for ApiCaller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authorize(req))
    }
}

fn authorize(req: &HttpRequest) -> Result<ApiCaller, ApiError> {
    let gateway =
        req.app_data::<web::Data<ControlPlane>>().ok_or_else(|| Error::Internal("control state missing".into()))?;
    let snapshot = gateway.settings.snapshot();
    let secret = auth::bearer(req.headers().get("authorization").map(actix_web::http::header::HeaderValue::as_bytes));
    let token = auth::find_token(&snapshot.tokens, secret).map_err(Error::ApiUnauthenticated)?;
    gateway.settings.token_usage().touch(&token.id);
    let needed = if req.method() == actix_web::http::Method::GET { Scope::Read } else { Scope::Edit };
    if !auth::has_scope(token, needed) {
        return Err(Error::ApiForbidden { needed: needed.as_str() }.into());
    }
    let account = req.match_info().get("account_id").unwrap_or("");
    if account != gateway.config().account_id {
        return Err(Error::NotFound { kind: "account", id: account.chars().take(64).collect() }.into());
    }
    if !token.gateways.is_empty() {
        check_gateway_scope(req, token)?;
    }
    Ok(ApiCaller { token: std::sync::Arc::clone(token) })
}

/// A gateway-limited token: its gateways only; no new gateway, no change to account-wide
/// custom providers. Token routes check their own rule (a token cannot reach beyond itself).
fn check_gateway_scope(req: &HttpRequest, token: &crate::store::TokenRecord) -> Result<(), ApiError> {
    let pattern = req.match_pattern().unwrap_or_default();
    let write = req.method() != actix_web::http::Method::GET;
    let refuse = |what: String| Err(Error::ApiGatewayForbidden { what }.into());
    if pattern.contains("/gateways/{id}") {
        let id = req.match_info().get("id").unwrap_or("");
        if !auth::allows_gateway(token, id) {
            return refuse(format!("gateway '{}'", id.chars().take(64).collect::<String>()));
        }
    } else if pattern.ends_with("/gateways") && write {
        return refuse("new gateways".into());
    } else if pattern.contains("/custom-providers") && write {
        return refuse("custom providers (they serve every gateway)".into());
    } else if pattern.contains("/dlp/") && write {
        return refuse("DLP profiles (they serve every gateway)".into());
    }
    Ok(())
}

pub(crate) async fn blocking<T, F>(gw: &web::Data<ControlPlane>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Settings) -> Result<T, Error> + Send + 'static,
{
    let settings = gw.settings.clone();
    Ok(web::block(move || f(&settings)).await??)
}

/// `GET /gateways` query.
#[derive(Debug, Deserialize)]
pub struct GatewayListQuery {
    page: Option<usize>,
    per_page: Option<usize>,
    search: Option<String>,
}

/// `GET /gateways`
pub async fn list_gateways(
    caller: ApiCaller,
    gw: web::Data<ControlPlane>,
    q: web::Query<GatewayListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let mut all = blocking(&gw, move |s| gateways::list(s, q.search.as_deref())).await?;
    all.retain(|g| auth::allows_gateway(&caller.token, &g.id));
    let (page, info) = paginate(all, &PageQuery { page: q.page, per_page: q.per_page });
    Ok(v4_ok(page, Some(info)))
}

/// `POST /gateways`
pub async fn create_gateway(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body = parse_object(&body)?;
    Ok(v4_ok(blocking(&gw, move |s| gateways::create(s, &body)).await?, None))
}

/// `GET /gateways/{id}`
pub async fn get_gateway(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    Ok(v4_ok(blocking(&gw, move |s| gateways::get(s, &id)).await?, None))
}

/// `PUT /gateways/{id}`
pub async fn update_gateway(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let body = parse_object(&body)?;
    let updated = blocking(&gw, move |s| gateways::update(s, &id, &body)).await?;
    Ok(v4_ok(updated, None))
}

/// `GET /gateways/{id}/cache`: entries, bytes, hits, misses, hit ratio, tokens and cost saved.
pub async fn cache_stats(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let id = blocking(&gw, move |s| gateways::get(s, &id).map(|g| g.id)).await?;
    Ok(v4_ok(gw.cache.stats(&id), None))
}

/// `DELETE /gateways/{id}/cache[?key=K]`: purges the gateway's entries, or one custom key's.
pub async fn cache_purge(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
    q: web::Query<PurgeQuery>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let id = blocking(&gw, move |s| gateways::get(s, &id).map(|g| g.id)).await?;
    let mut purged = match &q.key {
        Some(key) => u64::from(gw.cache.purge_key(&id, key)),
        None => gw.cache.purge_gateway(&id),
    };
    if let Some(shared) = &gw.shared_cache {
        purged += match &q.key {
            Some(key) => u64::from(shared.purge_key(&id, key).await),
            None => shared.purge_gateway(&id).await,
        };
    }
    Ok(v4_ok(serde_json::json!({ "purged": purged }), None))
}

/// `DELETE /gateways/{id}/cache` query.
#[derive(Debug, Deserialize)]
pub struct PurgeQuery {
    key: Option<String>,
}

/// `DELETE /gateways/{id}`
pub async fn delete_gateway(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let deleted = blocking(&gw, move |s| gateways::delete(s, &id)).await?;
    Ok(v4_ok(deleted, None))
}

/// `GET /gateways/{id}/url/{provider}`: the gateway URL for a provider, as a string.
pub async fn gateway_url(
    req: HttpRequest,
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (account, id, provider) = path.into_inner();
    blocking(&gw, {
        let id = id.clone();
        move |s| gateways::get(s, &id)
    })
    .await?;
    let info = req.connection_info();
    let url = format!("{}://{}/v1/{account}/{id}/{provider}", info.scheme(), info.host());
    Ok(v4_ok(url, None))
}

/// `GET /custom-providers` query.
#[derive(Debug, Deserialize)]
pub struct CustomListQuery {
    page: Option<usize>,
    per_page: Option<usize>,
    search: Option<String>,
    enable: Option<bool>,
    beta: Option<bool>,
}

/// `GET /custom-providers`
pub async fn list_custom(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    q: web::Query<CustomListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let filter = ListFilter { search: q.search, enable: q.enable, beta: q.beta };
    let all = blocking(&gw, move |s| custom_providers::list(s, &filter)).await?;
    let all = all.iter().map(custom_providers::public).collect();
    let (page, info) = paginate(all, &PageQuery { page: q.page, per_page: q.per_page });
    Ok(v4_ok(page, Some(info)))
}

/// `POST /custom-providers`
pub async fn create_custom(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body = parse_object(&body)?;
    let account = gw.config().account_id.clone();
    Ok(v4_ok(
        custom_providers::public(&blocking(&gw, move |s| custom_providers::create(s, &account, &body)).await?),
        None,
    ))
}

/// `GET /custom-providers/{id}`
pub async fn get_custom(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    Ok(v4_ok(custom_providers::public(&blocking(&gw, move |s| custom_providers::get(s, &id)).await?), None))
}

/// `PATCH`/`PUT /custom-providers/{id}`
pub async fn update_custom(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let body = parse_object(&body)?;
    Ok(v4_ok(custom_providers::public(&blocking(&gw, move |s| custom_providers::update(s, &id, &body)).await?), None))
}

/// `DELETE /custom-providers/{id}`
pub async fn delete_custom(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    Ok(v4_ok(custom_providers::public(&blocking(&gw, move |s| custom_providers::delete(s, &id)).await?), None))
}

/// Query-string and body-size errors in the v4 envelope.
#[must_use]
#[expect(clippy::needless_pass_by_value, reason = "signature required by QueryConfig::error_handler")]
pub fn query_error(err: actix_web::error::QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError(Error::invalid("query", err.to_string())).into()
}

/// `GET /gateways/{id}/provider_configs`: stored keys, masked.
pub async fn list_keys(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let keys = blocking(&gw, move |s| {
        gateways::get(s, &id)?;
        provider_keys::list(s, &id)
    })
    .await?;
    let (page, info) = paginate(keys.iter().map(provider_keys::public).collect(), &q);
    Ok(v4_ok(page, Some(info)))
}

/// `POST /gateways/{id}/provider_configs`: `{provider_slug, secret, alias?}`; the secret is
/// sealed and never returned.
pub async fn create_key(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let body = parse_object(&body)?;
    let record = blocking(&gw, move |s| provider_keys::create(s, &id, &body)).await?;
    Ok(v4_ok(provider_keys::public(&record), None))
}

/// `DELETE /gateways/{id}/provider_configs/{key_id}`
pub async fn delete_key(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id, key_id) = path.into_inner();
    let record = blocking(&gw, move |s| provider_keys::delete(s, &id, &key_id)).await?;
    Ok(v4_ok(provider_keys::public(&record), None))
}

/// `GET /dlp/profiles`: the built-in profiles and the custom ones.
pub async fn list_dlp(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let all = blocking(&gw, dlp_profiles::list).await?;
    let (page, info) = paginate(all, &q);
    Ok(v4_ok(page, Some(info)))
}

/// `POST /dlp/profiles`: a custom profile `{id, name, pattern, keywords?, proximity?, description?}`.
pub async fn create_dlp(_: ApiCaller, gw: web::Data<ControlPlane>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let body = parse_object(&body)?;
    Ok(v4_ok(dlp_profiles::public(&blocking(&gw, move |s| dlp_profiles::create(s, &body)).await?), None))
}

/// `GET /dlp/profiles/{id}`
pub async fn get_dlp(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    Ok(v4_ok(dlp_profiles::public(&blocking(&gw, move |s| dlp_profiles::get(s, &id)).await?), None))
}

/// `PATCH`/`PUT /dlp/profiles/{id}`
pub async fn update_dlp(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    let body = parse_object(&body)?;
    Ok(v4_ok(dlp_profiles::public(&blocking(&gw, move |s| dlp_profiles::update(s, &id, &body)).await?), None))
}

/// `DELETE /dlp/profiles/{id}`: refused while a gateway's policy names it.
pub async fn delete_dlp(
    _: ApiCaller,
    gw: web::Data<ControlPlane>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (_, id) = path.into_inner();
    Ok(v4_ok(dlp_profiles::public(&blocking(&gw, move |s| dlp_profiles::delete(s, &id)).await?), None))
}
