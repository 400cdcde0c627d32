//! The data-plane pipeline: resolve, authenticate, read options, read the body, forward with
//! retries, stream back. Each stage lives in its own module; [`Gateway::proxy`] wires them.

pub mod client;
pub mod forward;
pub mod options;
pub mod resolve;
pub mod retry;
pub mod stream;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use awc::http::header::{HeaderMap, HeaderName, HeaderValue};
use awc::http::{Method, StatusCode};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use crate::auth;
use crate::config::Config;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::store::Scope;

use forward::{Outbound, inbound_response_headers, outbound_headers, send_with_retries};
use options::RequestOptions;
use resolve::{DataPath, resolve_gateway, resolve_provider, split_path};
use retry::RetryPolicy;
use stream::{ProxyBody, StreamEnd};

/// Shared, `Send + Sync` state of the data plane.
pub struct Gateway {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Runtime objects and their snapshot.
    pub settings: Arc<Settings>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// A data-plane request as received: raw path and query, never decoded.
pub struct Inbound {
    /// Method.
    pub method: Method,
    /// Raw path (`/v1/...`).
    pub path: String,
    /// Raw query string, without `?`.
    pub query: String,
    /// Request headers.
    pub headers: HeaderMap,
}

/// Ids every data-plane response carries.
#[derive(Debug, Clone)]
pub struct Ids {
    /// `cf-aig-request-id` (UUIDv7).
    pub request_id: String,
    /// `cf-aig-event-id` (the client's or generated).
    pub event_id: String,
}

/// A response head and streaming body from the upstream.
pub struct Upstream {
    /// Upstream status.
    pub status: StatusCode,
    /// Upstream headers minus hop-by-hop ones.
    pub headers: HeaderMap,
    /// The body, forwarded as it arrives.
    pub body: ProxyBody,
}

/// The pipeline's answer: the upstream response, or a gateway error; always with ids.
pub struct Reply {
    /// Response ids.
    pub ids: Ids,
    /// What to send.
    pub outcome: Result<Upstream, Error>,
}

impl Ids {
    /// Fresh request id; the client's event id when it sent a usable one.
    #[must_use]
    pub fn new(headers: &HeaderMap) -> Self {
        let request_id = uuid::Uuid::now_v7().to_string();
        let event_id = headers
            .get("cf-aig-event-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map_or_else(|| request_id.clone(), str::to_string);
        Self {
            request_id,
            event_id,
        }
    }

    /// Adds the `cf-aig-*` id headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in [
            ("cf-aig-request-id", &self.request_id),
            ("cf-aig-event-id", &self.event_id),
        ] {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
    }
}

/// Reads the request body up to `limit` bytes.
pub async fn read_body<S, E>(
    headers: &HeaderMap,
    mut payload: S,
    limit: usize,
) -> Result<Bytes, Error>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::BodyTooLarge { limit });
    }
    let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(0));
    let mut body = BytesMut::with_capacity(capacity);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| Error::BadRequest(format!("could not read the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(Error::BodyTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

impl Gateway {
    /// Handles `ANY /v1/{account}/{gateway}/{provider}/{rest}`.
    pub async fn proxy<S, E>(&self, client: &awc::Client, inbound: Inbound, payload: S) -> Reply
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let ids = Ids::new(&inbound.headers);
        let outcome = self.proxy_inner(client, &inbound, payload, &ids).await;
        if let Err(e) = &outcome {
            self.metrics.gateway_errors.fetch_add(1, Relaxed);
            tracing::info!(request_id = %ids.request_id, method = %inbound.method, error = %e, "gateway error");
        }
        Reply { ids, outcome }
    }

    async fn proxy_inner<S, E>(
        &self,
        client: &awc::Client,
        inbound: &Inbound,
        payload: S,
        ids: &Ids,
    ) -> Result<Upstream, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let Some(DataPath::Provider {
            account,
            gateway,
            provider,
            rest,
        }) = split_path(&inbound.path)
        else {
            return Err(Error::NoRoute(inbound.path.chars().take(64).collect()));
        };
        let snapshot = self.settings.snapshot();
        let gw = resolve_gateway(&self.config, &snapshot, account, gateway)?;
        let target = resolve_provider(
            &self.config,
            &snapshot,
            account,
            provider,
            rest,
            &inbound.query,
        )?;
        if gw.authentication {
            let secret = auth::bearer(
                inbound
                    .headers
                    .get("cf-aig-authorization")
                    .map(HeaderValue::as_bytes),
            );
            auth::check_token(&snapshot, secret, Scope::Run, Some(&gw.id))
                .map_err(Error::Unauthorized)?;
        }
        let options = RequestOptions::from_headers(&inbound.headers)?;
        let body = read_body(&inbound.headers, payload, self.config.max_body_bytes).await?;
        let timeout = options.request_timeout.unwrap_or(Duration::from_millis(
            self.config.upstream.first_byte_timeout_ms,
        ));
        let out = Outbound {
            provider: &target.provider,
            method: inbound.method.clone(),
            url: &target.url,
            headers: outbound_headers(&inbound.headers),
            body,
            timeout,
        };
        let sent = send_with_retries(client, &out, RetryPolicy::resolve(&options, &gw)).await;
        let attempts = u64::try_from(sent.attempts.len()).unwrap_or(u64::MAX);
        self.metrics.upstream_attempts.fetch_add(attempts, Relaxed);
        let failures = sent.attempts.iter().filter(|a| a.error.is_some()).count();
        self.metrics
            .upstream_failures
            .fetch_add(u64::try_from(failures).unwrap_or(u64::MAX), Relaxed);
        let response = sent.result?;
        let status = response.status();
        self.metrics.count_status(status.as_u16());
        let headers = inbound_response_headers(response.headers());
        Ok(Upstream {
            status,
            headers,
            body: self.body(response, ids, &target.provider),
        })
    }

    fn body(&self, response: awc::ClientResponse, ids: &Ids, provider: &str) -> ProxyBody {
        let metrics = Arc::clone(&self.metrics);
        metrics.open_streams.fetch_add(1, Relaxed);
        let request_id = ids.request_id.clone();
        let provider = provider.to_string();
        let idle = Duration::from_millis(self.config.upstream.idle_timeout_ms);
        ProxyBody::new(
            response,
            idle,
            Box::new(move |summary| {
                metrics.open_streams.fetch_sub(1, Relaxed);
                match &summary.end {
                    StreamEnd::IdleTimeout => {
                        metrics.idle_timeouts.fetch_add(1, Relaxed);
                    }
                    StreamEnd::ClientGone => {
                        metrics.client_disconnects.fetch_add(1, Relaxed);
                    }
                    StreamEnd::Complete | StreamEnd::UpstreamError(_) => {}
                }
                if summary.end != StreamEnd::Complete {
                    tracing::info!(%request_id, %provider, end = ?summary.end, bytes = summary.bytes, "response stream ended early");
                }
            }),
        )
    }
}
