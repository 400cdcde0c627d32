//! Data-plane handler: `ANY /v1/{account}/{gateway}/{provider}/{rest...}` and the universal
//! endpoint `POST /v1/{account}/{gateway}`.

use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};

use crate::gateway::{Gateway, Inbound, Reply};

use super::envelope::data_plane_error;

/// Forwards to the provider (or the universal endpoint's steps) and streams the answer back.
///
/// A service rather than a handler so that it can take the request's header map whole: a
/// handler sees the request only through `HttpRequest`, whose head it can copy but not take.
pub async fn data_plane(mut req: ServiceRequest) -> Result<ServiceResponse, actix_web::Error> {
    let (gateway, client) = services(&req)?;
    if crate::gateway::wants_websocket(req.headers()) {
        let payload = req.extract::<web::Payload>().await?;
        let (req, _) = req.into_parts();
        let universal = matches!(
            crate::gateway::resolve::split_path(req.uri().path()),
            Some(crate::gateway::resolve::DataPath::Universal { .. })
        );
        let response = if universal {
            super::realtime::serve_universal(&req, payload, gateway, client)
        } else {
            // Boxed: a future holds room for its largest await, and this rare one would make
            // every request's future (which the server moves into a box) several KiB larger.
            Box::pin(super::realtime::serve(req.clone(), payload, gateway, client)).await
        };
        return Ok(ServiceResponse::new(req, response));
    }
    let inbound = take_inbound(&mut req);
    let payload = req.take_payload();
    let response = respond(gateway.handle(&client, inbound, payload).await);
    Ok(req.into_response(response))
}

/// The REST unified API under `/client/v4/accounts/{account_id}/ai/...` (a service, as
/// [`data_plane`]).
pub async fn rest_unified(mut req: ServiceRequest) -> Result<ServiceResponse, actix_web::Error> {
    let (gateway, client) = services(&req)?;
    let account = req.match_info().get("account_id").unwrap_or_default().to_string();
    let inbound = take_inbound(&mut req);
    let payload = req.take_payload();
    let response = respond(gateway.handle_rest(&client, inbound, &account, payload).await);
    Ok(req.into_response(response))
}

type Services = (web::Data<Gateway>, web::Data<crate::gateway::client::Client>);

/// The gateway and the upstream client (registered at startup; missing is a wiring bug).
fn services(req: &ServiceRequest) -> Result<Services, actix_web::Error> {
    let gateway = req.app_data::<web::Data<Gateway>>().cloned();
    let client = req.app_data::<web::Data<crate::gateway::client::Client>>().cloned();
    gateway.zip(client).ok_or_else(|| actix_web::error::ErrorInternalServerError("the data plane is not configured"))
}

/// [`inbound`] taking the request's header map instead of copying it (nothing reads the
/// request's headers after the data plane has them).
fn take_inbound(req: &mut ServiceRequest) -> Inbound {
    let head = req.head_mut();
    Inbound {
        method: head.method.clone(),
        path: head.uri.path().to_string(),
        query: head.uri.query().unwrap_or("").to_string(),
        headers: std::mem::take(&mut head.headers),
    }
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
            use actix_web::body::{BodyStream, MessageBody as _, SizedStream};
            use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
            // Made when compiled: `from_static` checks its name at run time.
            const STEP: HeaderName = HeaderName::from_static("cf-aig-step");
            const CACHE_STATUS: HeaderName = HeaderName::from_static("cf-aig-cache-status");
            const LOG_ID: HeaderName = HeaderName::from_static("cf-aig-log-id");
            let mut headers = upstream.headers;
            // Framed as actix's builder frames a stream (a `Content-Length` makes it sized and
            // unchunked, and the server writes the length itself; without a `Content-Type` it
            // names `application/octet-stream`), without the builder's own head: the upstream's
            // is moved in whole.
            if !headers.contains_key(CONTENT_TYPE) {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            }
            let length = crate::gateway::content_length(&headers);
            let mut response = match length {
                Some(len) => HttpResponse::with_body(upstream.status, SizedStream::new(len, upstream.body).boxed()),
                None => HttpResponse::with_body(upstream.status, BodyStream::new(upstream.body).boxed()),
            };
            // A 304 keeps the header as it is written: as a number (`+12` parses too).
            if let Some(len) = length
                && headers.get(CONTENT_LENGTH).is_some_and(|v| !v.as_bytes().iter().all(u8::is_ascii_digit))
            {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
            }
            if let Some(step) = upstream.step {
                headers.insert(STEP, HeaderValue::from(step));
            }
            if let Some(status) = upstream.cache_status {
                headers.insert(CACHE_STATUS, HeaderValue::from_static(status));
            }
            let mut text = uuid::Uuid::encode_buffer();
            if let Some(id) =
                upstream.log_id.and_then(|id| HeaderValue::from_str(id.hyphenated().encode_lower(&mut text)).ok())
            {
                headers.insert(LOG_ID, id);
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
