//! Data-plane handler: `ANY /v1/{account}/{gateway}/{provider}/{rest...}` and the universal
//! endpoint `POST /v1/{account}/{gateway}`.

use actix_web::{HttpRequest, HttpResponse, web};

use crate::gateway::{Gateway, Inbound, Reply};

use super::envelope::data_plane_error;

/// Forwards to the provider (or the universal endpoint's steps) and streams the answer back.
pub async fn data_plane(
    req: HttpRequest,
    payload: web::Payload,
    gateway: web::Data<Gateway>,
    client: web::Data<crate::gateway::client::Client>,
) -> HttpResponse {
    if crate::gateway::wants_websocket(req.headers()) {
        let universal = matches!(
            crate::gateway::resolve::split_path(req.uri().path()),
            Some(crate::gateway::resolve::DataPath::Universal { .. })
        );
        if universal {
            return super::realtime::serve_universal(&req, payload, gateway, client);
        }
        return super::realtime::serve(req, payload, gateway, client).await;
    }
    let inbound = inbound(&req);
    respond(gateway.handle(&client, inbound, payload).await)
}

/// The REST unified API under `/client/v4/accounts/{account_id}/ai/...`.
pub async fn rest_unified(
    req: HttpRequest,
    payload: web::Payload,
    gateway: web::Data<Gateway>,
    client: web::Data<crate::gateway::client::Client>,
    account: web::Path<(String,)>,
) -> HttpResponse {
    let inbound = inbound(&req);
    respond(gateway.handle_rest(&client, inbound, &account.into_inner().0, payload).await)
}

/// A data-plane request as the pipeline takes it: raw path and query, never decoded.
#[must_use]
pub fn inbound(req: &HttpRequest) -> Inbound {
    Inbound {
        method: req.method().clone(),
        path: req.uri().path().to_string(),
        query: req.uri().query().unwrap_or("").to_string(),
        headers: req.headers().clone(),
    }
}

/// Turns a pipeline reply into a response: the upstream's head and streaming body, or an envelope.
#[must_use]
pub fn respond(reply: Reply) -> HttpResponse {
    let mut response = match reply.outcome {
        Ok(upstream) => {
            use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
            let mut headers = upstream.headers;
            // The builder frames the body from these two (a `Content-Length` makes it sized and
            // unchunked; without a `Content-Type` it names `application/octet-stream`); the
            // rest of the head is then moved in whole rather than copied header by header.
            let mut builder = HttpResponse::build(upstream.status);
            for name in [CONTENT_LENGTH, CONTENT_TYPE] {
                if let Some(value) = headers.get(&name) {
                    builder.insert_header((name, value.clone()));
                }
            }
            let mut response = builder.streaming(upstream.body);
            if let Some(default) = response.headers().get(CONTENT_TYPE).filter(|_| !headers.contains_key(CONTENT_TYPE))
            {
                headers.insert(CONTENT_TYPE, default.clone());
            }
            if let Some(step) = upstream.step {
                headers.insert(HeaderName::from_static("cf-aig-step"), HeaderValue::from(step));
            }
            if let Some(status) = upstream.cache_status {
                headers.insert(HeaderName::from_static("cf-aig-cache-status"), HeaderValue::from_static(status));
            }
            if let Some(id) = upstream.log_id.as_deref().and_then(|id| HeaderValue::from_str(id).ok()) {
                headers.insert(HeaderName::from_static("cf-aig-log-id"), id);
            }
            *response.headers_mut() = headers;
            response
        }
        Err(e) => data_plane_error(&e),
    };
    reply.ids.apply(response.headers_mut());
    isolate(response.headers_mut());
    response
}

/// What an upstream answers must never run on Torii's origin (the admin UI may share it): every
/// data-plane response is a sandboxed, unsniffable document, whatever content type it claims.
pub fn isolate(headers: &mut actix_web::http::header::HeaderMap) {
    use actix_web::http::header::{CONTENT_SECURITY_POLICY, HeaderValue, X_CONTENT_TYPE_OPTIONS};
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(DATA_PLANE_CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

/// No script, no plugin, no same-origin access, not frameable.
const DATA_PLANE_CSP: &str = "sandbox; default-src 'none'; frame-ancestors 'none'";
