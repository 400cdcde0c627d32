//! The data-plane pipeline: resolve, authenticate, read options, read the body, forward with
//! retries, stream back. Each stage lives in its own module; [`Gateway::proxy`] wires them.

pub mod access;
pub mod body;
pub mod budget;
pub mod cached;
pub mod client;
pub mod export;
pub mod forward;
pub mod guard;
pub mod options;
pub mod realtime;
pub mod resolve;
pub mod retry;
pub mod routing;
pub mod step;
pub mod stream;
pub mod tap;
pub mod trace;
pub mod unified;
pub mod universal;
pub mod upkeep;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use bytes::Bytes;
use futures_util::Stream;

use crate::cache::Cache;
use crate::config::Config;
use crate::control::Settings;
use crate::error::Error;
use crate::logs::record::RequestType;
use crate::logs::writer::LogSink;
use crate::metrics::Metrics;
use crate::providers::Target;
use crate::providers::translate::Dialect;
use crate::store::GatewayRecord;

use access::authenticate;
use forward::{Attempt, Outbound, inbound_response_headers, outbound_headers, send_with_retries};
use options::RequestOptions;
use resolve::{DataPath, resolve_gateway, resolve_provider, split_path};
use retry::RetryPolicy;
use step::Step;
use stream::{BodyShape, ProxyBody, StreamEnd};
use tap::LogContext;

/// Shared, `Send + Sync` state of the data plane.
pub struct Gateway {
    /// Validated configuration; SIGHUP swaps in the settings that can change live.
    pub live_config: Arc<arc_swap::ArcSwap<Config>>,
    /// Runtime objects and their snapshot.
    pub settings: Arc<Settings>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The log writer's queue.
    pub logs: Arc<LogSink>,
    /// Rate-limit windows (this process's, or the cluster's in Redis).
    pub limiter: Arc<crate::cluster::Windows>,
    /// The clock the rate-limit and spend windows are measured on.
    pub clock: Arc<crate::time::Clock>,
    /// Spend so far and reserved, by spend rule bucket and token budget.
    pub spend: Arc<crate::cluster::Spend>,
    /// The random source of dynamic routes' percentage splits.
    pub dice: routing::Dice,
    /// The log exporter's figures.
    pub export: Arc<export::ExportStats>,
    /// OpenTelemetry span processors.
    pub traces: Arc<trace::Traces>,
    /// The response cache.
    pub cache: Arc<Cache>,
    /// In cluster mode, the cache the nodes share (then `cache` keeps only the counters and the
    /// in-process single-flight).
    pub shared_cache: Option<Arc<crate::cluster::SharedCache>>,
    /// Bytes held by request bodies still arriving (capped by `max_pending_body_bytes`).
    pub pending_bodies: Arc<body::PendingBodies>,
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
#[derive(Debug)]
pub struct Ids {
    /// `cf-aig-request-id` (UUIDv7).
    pub request_id: Arc<str>,
    /// `cf-aig-event-id` (the client's or generated; then the same string as `request_id`).
    pub event_id: Arc<str>,
    /// A generated event id, as a number: the id the request's first stored log may take, so
    /// that its event id is its own id and needs no index row (`logs::index::is_own_id`).
    own_log_id: Option<u128>,
    /// Whether a log has taken `own_log_id` (two logs must never share an id).
    own_log_id_taken: std::sync::atomic::AtomicBool,
    /// The request's place in a trace: the client's (`traceparent`, or `cf-aig-otel-trace-id`
    /// and `cf-aig-otel-parent-span-id`), else a new one.
    pub trace: crate::logs::record::TraceInfo,
    /// `request_id` as a header value, made once (a generated event id is the same value).
    request_header: Option<HeaderValue>,
}

/// An id's text as a header value's bytes: shared with the id, so the value and its clones
/// allocate nothing more (a value made from a copy allocates again when first cloned).
struct IdBytes(Arc<str>);

impl AsRef<[u8]> for IdBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

fn hex_id<const N: usize>(s: &str) -> Option<[u8; N]> {
    let bytes = hex::decode(s.trim()).ok()?;
    let id: [u8; N] = bytes.try_into().ok()?;
    id.iter().any(|b| *b != 0).then_some(id)
}

/// Request headers read for every request, as names (a `&str` is parsed on every lookup).
const EVENT_ID: HeaderName = HeaderName::from_static("cf-aig-event-id");
const REQUEST_ID: HeaderName = HeaderName::from_static("cf-aig-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const OTEL_TRACE_ID: HeaderName = HeaderName::from_static("cf-aig-otel-trace-id");
const OTEL_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("cf-aig-otel-parent-span-id");

/// The trace a request belongs to, started at `started_ms` (its request id's time: no second
/// clock read).
fn trace_of(headers: &HeaderMap, started_ms: i64) -> crate::logs::record::TraceInfo {
    let text = |n: &HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    let from_w3c = text(&TRACEPARENT).and_then(|t| {
        let mut parts = t.split('-');
        let (_, trace, span) = (parts.next()?, parts.next()?, parts.next()?);
        Some((hex_id::<16>(trace)?, hex_id::<8>(span)?))
    });
    let from_cf = || {
        let trace = hex_id::<16>(text(&OTEL_TRACE_ID)?)?;
        Some((trace, text(&OTEL_PARENT_SPAN_ID).and_then(hex_id::<8>)))
    };
    let (trace_id, parent_span) = match from_w3c {
        Some((t, s)) => (u128::from_be_bytes(t), Some(u64::from_be_bytes(s))),
        None => match from_cf() {
            Some((t, s)) => (u128::from_be_bytes(t), s.map(u64::from_be_bytes)),
            None => (rand::random::<u128>().max(1), None),
        },
    };
    crate::logs::record::TraceInfo {
        trace_id,
        request_span: rand::random::<u64>().max(1),
        parent_span,
        started_ms,
        last: false,
    }
}

/// A response head and streaming body from the upstream.
pub struct Upstream {
    /// Upstream status.
    pub status: StatusCode,
    /// Upstream headers minus hop-by-hop ones.
    pub headers: HeaderMap,
    /// The universal endpoint's step that produced it (`cf-aig-step`).
    pub step: Option<usize>,
    /// The log stored for it (`cf-aig-log-id`).
    pub log_id: Option<uuid::Uuid>,
    /// `cf-aig-cache-status` when caching applied.
    pub cache_status: Option<&'static str>,
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
        let uuid = uuid::Uuid::now_v7();
        let mut text = uuid::Uuid::encode_buffer();
        let text = &*uuid.hyphenated().encode_lower(&mut text);
        let request_id: Arc<str> = Arc::from(text);
        // A UUIDv7 begins with its time in Unix milliseconds (48 bits).
        let started_ms = i64::try_from(uuid.as_u128() >> 80).unwrap_or(0);
        let given = headers
            .get(&EVENT_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map(Arc::from);
        let own_log_id = given.is_none().then_some(uuid.as_u128());
        let request_header = HeaderValue::from_maybe_shared(Bytes::from_owner(IdBytes(Arc::clone(&request_id)))).ok();
        let event_id = given.unwrap_or_else(|| Arc::clone(&request_id));
        Self {
            request_id,
            event_id,
            own_log_id,
            own_log_id_taken: std::sync::atomic::AtomicBool::new(false),
            trace: trace_of(headers, started_ms),
            request_header,
        }
    }

    /// The log id the first log to ask may take (see `own_log_id`); `None` to every later one.
    #[must_use]
    pub fn take_own_log_id(&self) -> Option<u128> {
        self.own_log_id.filter(|_| !self.own_log_id_taken.swap(true, std::sync::atomic::Ordering::Relaxed))
    }

    /// Adds the `cf-aig-*` id headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if let Some(v) = &self.request_header {
            headers.insert(REQUEST_ID, v.clone());
        }
        let event = if Arc::ptr_eq(&self.event_id, &self.request_id) {
            self.request_header.clone()
        } else {
            HeaderValue::from_str(&self.event_id).ok()
        };
        if let Some(v) = event {
            headers.insert(EVENT_ID, v);
        }
    }
}

impl Gateway {
    /// The configuration in force (cheap: an atomic load).
    #[must_use]
    pub fn config(&self) -> Arc<Config> {
        self.live_config.load_full()
    }

    /// Reads a request body under the configured limits.
    pub async fn read_body<S, E>(&self, headers: &HeaderMap, payload: S) -> Result<Bytes, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        body::read_body(headers, payload, body::BodyLimits::from_config(&self.config()), &self.pending_bodies).await
    }
}

impl Gateway {
    /// The REST unified API: `POST /client/v4/accounts/{account}/ai/v1/chat/completions` (OpenAI
    /// format) and `/ai/v1/messages` (Anthropic format), on the gateway `cf-aig-gateway-id` names
    /// (`default` without it).
    pub async fn handle_rest<S, E>(
        &self,
        client: &crate::gateway::client::Client,
        inbound: Inbound,
        account: &str,
        payload: S,
    ) -> Reply
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let ids = Ids::new(&inbound.headers);
        let gateway = inbound
            .headers
            .get("cf-aig-gateway-id")
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| "default".to_string(), str::to_string);
        let tail = inbound.path.split("/ai/").nth(1).unwrap_or("").trim_end_matches('/').to_string();
        let route = match tail.as_str() {
            "v1/chat/completions" => Ok((Dialect::OpenAi, unified::Endpoint::Chat)),
            "v1/messages" => Ok((Dialect::Anthropic, unified::Endpoint::Chat)),
            "v1/responses" => Ok((Dialect::OpenAi, unified::Endpoint::Responses)),
            "run" => Ok((Dialect::OpenAi, unified::Endpoint::Run)),
            _ => Err(Error::no_route(&inbound.path)),
        };
        let outcome = match route {
            Ok((client_format, endpoint)) => {
                let call =
                    unified::Call { account, gateway: &gateway, client: client_format, endpoint, api_token: true };
                self.unified(client, &inbound, call, payload, &ids).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &outcome {
            self.metrics.gateway_errors.fetch_add(1, Relaxed);
            tracing::info!(request_id = %ids.request_id, error = %e, "gateway error");
        }
        Reply { ids, outcome }
    }

    /// Handles every data-plane request: `ANY /v1/{account}/{gateway}/{provider}/{rest}` and
    /// the universal endpoint `POST /v1/{account}/{gateway}`.
    pub async fn handle<S, E>(&self, client: &crate::gateway::client::Client, inbound: Inbound, payload: S) -> Reply
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let ids = Ids::new(&inbound.headers);
        let outcome = match split_path(&inbound.path) {
            // The body of an upgrade request is the upgraded stream: refuse before reading it.
            _ if wants_websocket(&inbound.headers) => Err(Error::BadRequest(
                "WebSocket (and other protocol upgrades) are not supported on this path; use HTTP".into(),
            )),
            Some(DataPath::Provider { account, gateway, provider: "compat", rest }) => {
                let endpoint = match rest.split('?').next().unwrap_or("").trim_end_matches('/') {
                    "chat/completions" => Some(unified::Endpoint::Chat),
                    "embeddings" => Some(unified::Endpoint::Embeddings),
                    _ => None,
                };
                match endpoint {
                    Some(endpoint) => {
                        let call =
                            unified::Call { account, gateway, client: Dialect::OpenAi, endpoint, api_token: false };
                        // Boxed, as the universal endpoint below: a future holds room for its
                        // largest await, and the provider path's future is moved whole.
                        Box::pin(self.unified(client, &inbound, call, payload, &ids)).await
                    }
                    None => Err(Error::no_route(&inbound.path)),
                }
            }
            Some(DataPath::Provider { account, gateway, provider, rest }) => {
                let route = ProviderRoute { account, gateway, provider, rest };
                self.provider(client, &inbound, &route, payload, &ids).await
            }
            Some(DataPath::Universal { account, gateway }) => {
                Box::pin(universal::run(self, client, &inbound, (account, gateway), payload, &ids)).await
            }
            None => Err(Error::no_route(&inbound.path)),
        };
        if let Err(e) = &outcome {
            self.metrics.gateway_errors.fetch_add(1, Relaxed);
            tracing::info!(request_id = %ids.request_id, method = %inbound.method, error = %e, "gateway error");
        }
        Reply { ids, outcome }
    }

    async fn provider<S, E>(
        &self,
        client: &crate::gateway::client::Client,
        inbound: &Inbound,
        route: &ProviderRoute<'_>,
        payload: S,
        ids: &Ids,
    ) -> Result<Upstream, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let snapshot = self.settings.snapshot();
        let gw = resolve_gateway(&self.config(), &snapshot, route.account, route.gateway)?;
        let target =
            resolve_provider(&self.config(), &snapshot, route.account, route.provider, route.rest, &inbound.query)?;
        let token = authenticate(&self.settings, &snapshot, &gw, &inbound.headers)?;
        let rate = match self.admit_rate(&snapshot, &gw, token).await {
            Ok(rate) => rate,
            Err(e) => {
                let what =
                    tap::Rejected { provider: &target.provider, rest: route.rest, request_type: RequestType::Provider };
                tap::record_rejection(&self.logs, &gw, inbound, ids, &what, &e);
                return Err(e);
            }
        };
        let options = RequestOptions::from_headers(&inbound.headers)?;
        let body = self.read_body(&inbound.headers, payload).await?;
        let facts = crate::providers::usage::request_facts(&body);
        let (body, hide_usage) = if inbound.method == Method::POST {
            with_stream_usage(&target, route.rest, body, facts.streams)
        } else {
            (body, false)
        };
        let cache_path =
            if inbound.query.is_empty() { route.rest.to_string() } else { format!("{}?{}", route.rest, inbound.query) };
        let mut step = Step {
            index: 0,
            target,
            method: inbound.method.clone(),
            headers: outbound_headers(&inbound.headers),
            body,
            options,
            rest: route.rest.to_string(),
            cache_path,
            request_type: RequestType::Provider,
            hide_usage,
            translation: None,
            requested_model: None,
            body_model: facts.model,
            budgets: Vec::new(),
        };
        self.only_step(client, (&gw, &snapshot, ids, &inbound.headers), (token, rate.as_ref()), &mut step).await
    }

    /// Records the attempts whose bodies will not reach the client; returns the response (if
    /// any) with the attempt that produced it.
    pub(crate) fn settle(
        &self,
        sent: forward::Sent,
        log: &LogContext,
    ) -> (Result<client::Response, Error>, Option<Attempt>) {
        let streamed = sent.result.is_ok();
        let n = sent.attempts.len();
        for (i, a) in sent.attempts.iter().enumerate() {
            if !(streamed && i + 1 == n) {
                log.record_attempt(&self.logs, a);
            }
        }
        let last = if streamed { sent.attempts.last().cloned() } else { None };
        (sent.result, last)
    }

    /// Sends one step's request with its retry policy; counts attempts.
    pub(crate) async fn forward(
        &self,
        client: &crate::gateway::client::Client,
        req: StepRequest<'_>,
        gw: &GatewayRecord,
    ) -> forward::Sent {
        let timeout =
            req.options.request_timeout.unwrap_or(Duration::from_millis(self.config().upstream.first_byte_timeout_ms));
        let out = Outbound {
            step: req.step,
            provider: &req.target.provider,
            method: req.method.clone(),
            url: &req.target.url,
            headers: req.headers,
            body: req.body,
            timeout,
            final_timeout: Duration::from_millis(self.config().upstream.first_byte_timeout_ms).max(timeout),
            trace: req.trace,
        };
        let sent = send_with_retries(client, out, RetryPolicy::resolve(req.options, gw)).await;
        let attempts = u64::try_from(sent.attempts.len()).unwrap_or(u64::MAX);
        self.metrics.upstream_attempts.fetch_add(attempts, Relaxed);
        let failures = sent.attempts.iter().filter(|a| a.error.is_some()).count();
        self.metrics.upstream_failures.fetch_add(u64::try_from(failures).unwrap_or(u64::MAX), Relaxed);
        if let Ok(resp) = &sent.result {
            self.metrics.count_status(resp.status.as_u16());
        }
        sent
    }

    /// The upstream's head and a streaming body that reports how it ended.
    pub(crate) fn upstream(
        &self,
        response: client::Response,
        ids: &Ids,
        target: &Target,
        step: Option<usize>,
        log: Option<(&LogContext, &Attempt)>,
        filler: Option<cached::Filler>,
    ) -> Upstream {
        let headers = inbound_response_headers(response.headers);
        self.upstream_parts((response.status, headers), response.body, ids, target, step, log, filler)
    }

    /// [`Gateway::upstream`] for a head and a body already taken apart (a checked answer).
    #[expect(clippy::too_many_arguments, reason = "the parts of one upstream answer")]
    pub(crate) fn upstream_parts<S, E>(
        &self,
        (status, headers): (StatusCode, HeaderMap),
        response: S,
        ids: &Ids,
        target: &Target,
        step: Option<usize>,
        log: Option<(&LogContext, &Attempt)>,
        filler: Option<cached::Filler>,
    ) -> Upstream
    where
        S: Stream<Item = Result<Bytes, E>> + 'static,
        E: std::fmt::Display,
    {
        let sse = is_event_stream(&headers);
        let shape = BodyShape {
            sse,
            final_markers: if sse { target.format.final_event_markers() } else { &[] },
            // 204 and 304 never have a body, whatever their headers say.
            content_length: (!matches!(status.as_u16(), 204 | 304)).then(|| content_length(&headers)).flatten(),
        };
        let mut taps = stream::Taps::new();
        let log_id = log.and_then(|(ctx, attempt)| {
            let (tap, id) = ctx.tap(Arc::clone(&self.logs), attempt, &headers, shape.content_length);
            taps.push(Box::new(tap));
            ctx.stores().then_some(id)
        });
        let cache_status = filler.as_ref().map(|_| "MISS");
        if let Some(f) = filler
            && status.is_success()
        {
            let caches = (Arc::clone(&self.cache), self.shared_cache.clone());
            taps.push(Box::new(cached::CacheTap::new(caches, f, status.as_u16(), &headers, target)));
        }
        // One usage parse serves the log and the cache entry (up to the larger of their caps).
        let cap = if cache_status.is_some() { crate::cache::MAX_ENTRY_BYTES } else { tap::BODY_CAP };
        let content_type =
            headers.get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let usage = (!taps.is_empty())
            .then(|| crate::providers::usage::UsageParser::new(target.format, content_type, cap))
            .flatten();
        let body = self.body(response, shape, taps, ids, &target.provider).with_usage(usage);
        Upstream { status, headers, step, log_id, cache_status, body }
    }

    /// Wraps any body stream with the idle timeout and end-of-stream accounting.
    pub(crate) fn body<S, E>(
        &self,
        body: S,
        shape: BodyShape,
        taps: stream::Taps,
        ids: &Ids,
        provider: &str,
    ) -> ProxyBody
    where
        S: Stream<Item = Result<Bytes, E>> + 'static,
        E: std::fmt::Display,
    {
        let metrics = Arc::clone(&self.metrics);
        metrics.open_streams.fetch_add(1, Relaxed);
        let request_id = Arc::clone(&ids.request_id);
        let provider = crate::text::intern(provider);
        let idle = Duration::from_millis(self.config().upstream.idle_timeout_ms);
        ProxyBody::new(
            body,
            idle,
            shape,
            taps,
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

/// The parts of a provider path.
struct ProviderRoute<'a> {
    account: &'a str,
    gateway: &'a str,
    provider: &'a str,
    rest: &'a str,
}

/// One request to one provider: a passthrough request, or one step of a universal request.
pub(crate) struct StepRequest<'a> {
    /// 0-based step.
    pub step: usize,
    /// Where it goes.
    pub target: &'a Target,
    /// Method.
    pub method: Method,
    /// Headers for the provider (already filtered).
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
    /// Control options in force for this step.
    pub options: &'a RequestOptions,
    /// The trace whose attempt spans the upstream requests name (`traceparent`), when traces
    /// are exported.
    pub trace: Option<crate::logs::record::TraceInfo>,
}

pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers.get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.trim_start().as_bytes().get(..17).is_some_and(|t| t.eq_ignore_ascii_case(b"text/event-stream"))
    })
}

/// For a streamed chat completion to a provider that takes `stream_options.include_usage`, the
/// body asking for usage (every stream's tokens and cost are then known) and whether the client
/// did not ask itself (its stream then hides the extra chunk). `streams`: the body asks to
/// stream (read with its model, [`request_facts`](crate::providers::usage::request_facts)).
pub(crate) fn with_stream_usage(target: &Target, rest: &str, body: Bytes, streams: bool) -> (Bytes, bool) {
    if !target.stream_usage_option || !rest.trim_end_matches('/').ends_with("completions") {
        return (body, false);
    }
    match crate::providers::usage::asking_stream_usage(&body, streams) {
        Some(asked) => (asked, true),
        None => (body, false),
    }
}

/// A head's `Content-Length`, when it is a number.
#[must_use]
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(actix_web::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

/// Whether the request asks to upgrade to a WebSocket.
#[must_use]
pub fn wants_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(actix_web::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("websocket"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_streams_are_known_by_their_content_type_in_any_case() {
        let with = |ct: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static("content-type"), HeaderValue::from_static(ct));
            is_event_stream(&h)
        };
        assert!(with("text/event-stream"));
        assert!(with(" Text/Event-Stream; charset=utf-8"));
        assert!(!with("application/json"));
        assert!(!with("text/event"));
        assert!(!is_event_stream(&HeaderMap::new()));
    }

    /// The id headers carry the ids, a generated event id the request id's value; the trace
    /// starts at the request id's millisecond, which is now.
    #[test]
    fn id_headers_and_the_trace_start_come_from_the_request_id() {
        let before = time::OffsetDateTime::now_utc().unix_timestamp() * 1000 - 1;
        let ids = Ids::new(&HeaderMap::new());
        let after = time::OffsetDateTime::now_utc().unix_timestamp() * 1000 + 1000;
        let uuid = uuid::Uuid::parse_str(&ids.request_id).unwrap();
        let (secs, nanos) = uuid.get_timestamp().unwrap().to_unix();
        let ms = i64::try_from(secs).unwrap() * 1000 + i64::from(nanos / 1_000_000);
        assert_eq!(ids.trace.started_ms, ms);
        assert!((before..=after).contains(&ms), "{before} <= {ms} <= {after}");
        let mut h = HeaderMap::new();
        ids.apply(&mut h);
        assert_eq!(h.get("cf-aig-request-id").unwrap(), &*ids.request_id);
        assert_eq!(h.get("cf-aig-event-id").unwrap(), &*ids.request_id);

        let mut given = HeaderMap::new();
        given.insert(HeaderName::from_static("cf-aig-event-id"), HeaderValue::from_static("order-7"));
        let ids = Ids::new(&given);
        let mut h = HeaderMap::new();
        ids.apply(&mut h);
        assert_eq!(h.get("cf-aig-request-id").unwrap(), &*ids.request_id);
        assert_eq!(h.get("cf-aig-event-id").unwrap(), "order-7");
    }
}
