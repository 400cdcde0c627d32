//! Stage 9: one log record per upstream attempt. Attempts whose body is not streamed to the
//! client are recorded from their [`Attempt`]; the streamed one through a [`LogTap`] that sees
//! every chunk (usage parser, capped body copy) and records when the body ends, however it ends.
//! Nothing here waits: records go to the writer's bounded queue.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, LockResult, Mutex, MutexGuard};
use std::time::Instant;

use actix_web::http::header::{CONTENT_TYPE, HeaderMap, HeaderName, USER_AGENT};
use bytes::Bytes;

use super::forward::Attempt;
use super::options::RequestOptions;
use super::stream::{StreamEnd, StreamSummary, Tap};
use crate::logs::record::{
    Head, LogBodies, LogEntry, LogMeta, PolicyLog, RequestType, log_id, log_id_ms, model_type, redacted,
};
use crate::logs::writer::LogSink;
use crate::providers::Target;
use crate::providers::prices::{self, PerToken};
use crate::providers::usage::model_from_path;
use crate::store::GatewayRecord;
use crate::text::intern;

/// Stored request and response bodies are capped at this size (the log records the cut).
pub const BODY_CAP: usize = 10 * 1024 * 1024;

/// Bytes a logged answer of unknown length starts with.
const STREAM_BODY_START: usize = 4096;

/// What every log of one step shares.
pub struct LogContext {
    gateway: Arc<str>,
    store: bool,
    payload: bool,
    request_type: RequestType,
    step: u8,
    method: Arc<str>,
    provider: Arc<str>,
    path: Arc<str>,
    model_type: Option<Arc<str>>,
    event_id: Arc<str>,
    /// The request's own log id, which the step's first log may take (see [`own_or_new_id`]).
    own_log_id: Option<u128>,
    own_log_id_used: AtomicBool,
    user_agent: Option<Arc<str>>,
    metadata: Option<Arc<str>>,
    custom_cost: Option<PerToken>,
    request_content_type: Option<Arc<str>>,
    request_headers: Head,
    request_body: Bytes,
    request_size: u64,
    model_hint: Option<Arc<str>>,
    requested_model: Option<Arc<str>>,
    /// What DLP and guardrails found, and the spend reservations.
    found: Arc<StepFindings>,
    /// The request's trace, when its spans are exported.
    trace: Option<crate::logs::record::TraceInfo>,
}

/// What a step learns while it runs, shared by its log context, its tap and the policy checks
/// (one allocation for both parts).
#[derive(Default)]
pub struct StepFindings {
    /// What DLP and guardrails found, filled in as the request and its answer are checked.
    policy: Mutex<PolicyLog>,
    /// The step's spend reservations, settled by the streamed answer's log (dropped: released).
    spend: Mutex<Option<super::budget::Held>>,
}

impl StepFindings {
    /// The policy findings, to read or add to.
    pub fn lock(&self) -> LockResult<MutexGuard<'_, PolicyLog>> {
        self.policy.lock()
    }
}

fn policy_of(cell: &Mutex<PolicyLog>) -> Option<PolicyLog> {
    cell.lock().ok().map(|p| p.clone()).filter(|p| !p.is_empty())
}

/// A header's text as a log keeps it.
fn header(h: &HeaderMap, name: &HeaderName) -> Option<Arc<str>> {
    h.get(name).and_then(|v| v.to_str().ok()).map(intern)
}

fn millis(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn clip(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn unix_ms_at(t: Instant) -> i64 {
    // In nanoseconds, then to milliseconds once: two roundings would make it one off at times.
    let ago = i128::try_from(t.elapsed().as_nanos()).unwrap_or(0);
    i64::try_from((time::OffsetDateTime::now_utc().unix_timestamp_nanos() - ago) / 1_000_000).unwrap_or(0)
}

/// A log's id and creation time: the request's own id `own` (a UUIDv7, see `Ids`) when the log
/// started in its millisecond or the next, with that millisecond as its time (a log id's time
/// is its creation time); else a new id.
fn own_or_new_id(own: Option<u128>, created_at: i64) -> (u128, i64) {
    if let Some(own) = own {
        let ms = log_id_ms(own);
        if (0..=1).contains(&(created_at - ms)) {
            return (own, ms);
        }
    }
    (log_id(created_at), created_at)
}

/// Everything a step's log needs to know about the request.
pub struct StepInfo<'a> {
    /// The gateway.
    pub gateway: &'a GatewayRecord,
    /// Parsed control headers.
    pub options: &'a RequestOptions,
    /// Headers as sent to the provider (for the stored request head).
    pub headers: &'a HeaderMap,
    /// The client's headers (user agent, the gateway controls in the stored head).
    pub client_headers: &'a HeaderMap,
    /// Where it goes.
    pub target: &'a Target,
    /// Path after the provider slug.
    pub rest: &'a str,
    /// Method.
    pub method: &'a str,
    /// Request body.
    pub body: &'a Bytes,
    /// Surface.
    pub request_type: RequestType,
    /// Universal step.
    pub step: usize,
    /// The request's ids (`cf-aig-event-id`; the id its first log may take).
    pub ids: &'a super::Ids,
    /// The model as the client named it (the unified API's `{provider}/{model}`).
    pub requested_model: Option<&'a str>,
    /// The model the body names (read once per step, see [`Step::body_model`]).
    ///
    /// [`Step::body_model`]: super::step::Step::body_model
    pub body_model: Option<&'a std::sync::Arc<str>>,
    /// The request's trace, when its spans are exported.
    pub trace: Option<crate::logs::record::TraceInfo>,
}

impl LogContext {
    /// Applies the collection controls: gateway `collect_logs`, `cf-aig-collect-log`,
    /// `cf-aig-collect-log-payload`.
    #[must_use]
    pub fn new(info: &StepInfo<'_>) -> Self {
        let store = info.options.collect_log.unwrap_or(info.gateway.collect_logs);
        let payload = store && info.options.collect_log_payload.unwrap_or(true);
        let custom_cost = info.options.custom_cost.as_ref().map(|c| PerToken {
            input: c.per_token_in,
            output: c.per_token_out,
            cache_read: c.per_cache_read_token,
            cache_write: c.per_cache_write_token,
        });
        let request_body = if payload { info.body.slice(..info.body.len().min(BODY_CAP)) } else { Bytes::new() };
        let model_hint =
            info.body_model.cloned().or_else(|| model_from_path(info.target.model_in_path, info.rest).map(Arc::from));
        Self {
            gateway: intern(&info.gateway.id),
            store,
            payload,
            request_type: info.request_type,
            step: u8::try_from(info.step).unwrap_or(u8::MAX),
            method: intern(info.method),
            provider: intern(&info.target.provider),
            path: intern(info.rest.split('?').next().unwrap_or("")),
            model_type: model_type(info.rest).map(intern),
            event_id: Arc::clone(&info.ids.event_id),
            own_log_id: if store { info.ids.take_own_log_id() } else { None },
            own_log_id_used: AtomicBool::new(false),
            user_agent: header(info.client_headers, &USER_AGENT),
            metadata: info.options.metadata.as_ref().map(|m| serde_json::Value::Object(m.clone()).to_string().into()),
            custom_cost,
            request_content_type: header(info.headers, &CONTENT_TYPE),
            // What went upstream, then the client's own gateway controls (`cf-aig-*`, which
            // never go upstream): every surface logs the same head, credentials redacted.
            request_headers: if payload {
                let controls =
                    info.client_headers.iter().filter(|(k, _)| super::forward::is_control_header(k.as_str()));
                redacted(info.headers.iter().chain(controls))
            } else {
                Head::default()
            },
            request_body,
            request_size: info.body.len() as u64,
            // The model as the client named it: the unified API's `{provider}/{model}`, else the
            // request's own model (body or path).
            requested_model: info.requested_model.map(Arc::from).or_else(|| model_hint.clone()),
            model_hint,
            found: Arc::default(),
            trace: info.trace,
        }
    }

    /// The trace of a record; `last` when the record ends the request.
    fn traced(&self, last: bool) -> Option<crate::logs::record::TraceInfo> {
        self.trace.map(|t| crate::logs::record::TraceInfo { last, ..t })
    }

    /// Hands the step's spend reservations to its log, which settles them when the answer ends.
    pub fn hold_spend(&self, held: Option<super::budget::Held>) {
        if let Ok(mut slot) = self.found.spend.lock() {
            *slot = held;
        }
    }

    /// Where the step's policy findings go (read when its log is recorded).
    #[must_use]
    pub fn policy(&self) -> Arc<StepFindings> {
        Arc::clone(&self.found)
    }

    /// Logs a request a policy refused (before sending, or after reading the answer): the
    /// status the client got, why, and no bodies (what was refused is not kept).
    pub fn record_blocked(&self, sink: &LogSink, attempt: Option<&Attempt>, error: &crate::error::Error) {
        let now = Attempt {
            step: usize::from(self.step),
            attempt: 0,
            status: None,
            started: Instant::now(),
            duration: std::time::Duration::ZERO,
            error: None,
        };
        let mut meta = self.meta(attempt.unwrap_or(&now));
        meta.status_code = error.status_and_code().0;
        meta.error = Some(error.to_string());
        meta.payload = false;
        meta.response_content_type = Some("application/json".into());
        sink.submit(LogEntry {
            gateway: self.gateway.clone(),
            meta,
            bodies: None,
            store: self.store,
            trace: self.traced(true),
        });
    }

    /// Whether a log will be stored (and `cf-aig-log-id` sent).
    #[must_use]
    pub fn stores(&self) -> bool {
        self.store
    }

    fn meta(&self, attempt: &Attempt) -> LogMeta {
        let own = self.own_log_id.filter(|_| !self.own_log_id_used.load(Relaxed));
        let (mut id, created_at) = own_or_new_id(own, unix_ms_at(attempt.started));
        // Whoever marks it used first has it; any other log gets a new id.
        if own == Some(id) && self.own_log_id_used.swap(true, Relaxed) {
            id = log_id(created_at);
        }
        LogMeta {
            id,
            created_at,
            provider: self.provider.clone(),
            model: self.model_hint.clone(),
            model_type: self.model_type.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            success: false,
            cached: false,
            status_code: attempt.status.unwrap_or(0),
            duration: millis(attempt.duration),
            ttfb: millis(attempt.duration),
            tokens_in: 0,
            tokens_out: 0,
            cached_tokens_in: 0,
            cache_write_tokens: 0,
            cost: None,
            custom_cost: self.custom_cost.is_some(),
            metadata: self.metadata.clone(),
            request_content_type: self.request_content_type.clone(),
            response_content_type: None,
            request_type: self.request_type,
            step: self.step,
            attempt: attempt.attempt,
            event_id: self.event_id.clone(),
            user_agent: self.user_agent.clone(),
            request_size: self.request_size,
            response_size: 0,
            error: attempt.error.clone(),
            payload: self.payload,
            truncated: self.request_size > BODY_CAP as u64,
            feedback: None,
            score: None,
            requested_model: self.requested_model.clone(),
            policy: policy_of(&self.found.policy),
        }
    }

    /// Provider slug.
    #[must_use]
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Records a cache HIT: `cached: true`, no provider tokens or cost; returns the log id when
    /// the log is stored.
    pub fn record_hit(&self, sink: &LogSink, entry: &crate::cache::Entry) -> Option<uuid::Uuid> {
        let now = Instant::now();
        let attempt = Attempt {
            step: 0,
            attempt: 1,
            status: Some(entry.status),
            started: now,
            duration: std::time::Duration::ZERO,
            error: None,
        };
        let mut meta = self.meta(&attempt);
        let id = uuid::Uuid::from_u128(meta.id);
        meta.cached = true;
        meta.success = true;
        if let Some(m) = &entry.model {
            meta.model = Some(intern(m));
        }
        meta.response_content_type = header(&entry.headers, &CONTENT_TYPE);
        meta.response_size = entry.body.len() as u64;
        meta.cost = Some(0.0);
        let bodies = self.payload.then(|| LogBodies {
            request_headers: self.request_headers.clone(),
            request_body: self.request_body.clone(),
            response_headers: redacted(entry.headers.iter()),
            response_body: entry.body.slice(..entry.body.len().min(BODY_CAP)).to_vec(),
        });
        sink.submit(LogEntry {
            gateway: self.gateway.clone(),
            meta,
            bodies,
            store: self.store,
            trace: self.traced(true),
        });
        self.store.then_some(id)
    }

    /// Records an attempt whose body did not go to the client (failed or retried).
    pub fn record_attempt(&self, sink: &LogSink, attempt: &Attempt) {
        let mut meta = self.meta(attempt);
        if meta.error.is_none() {
            meta.error = Some(format!("status {} (retried or fell through)", meta.status_code));
        }
        let bodies = self.payload.then(|| LogBodies {
            request_headers: self.request_headers.clone(),
            request_body: self.request_body.clone(),
            ..LogBodies::default()
        });
        sink.submit(LogEntry {
            gateway: self.gateway.clone(),
            meta,
            bodies,
            store: self.store,
            trace: self.traced(false),
        });
    }

    /// Logs a failed step whose response was read whole (it may never reach the client).
    pub fn record_failed(&self, sink: &LogSink, attempt: &Attempt, response_headers: &HeaderMap, body: &[u8]) {
        let mut meta = self.meta(attempt);
        if meta.error.is_none() {
            meta.error = Some(format!("status {} (fell through to the next step)", meta.status_code));
        }
        meta.response_content_type = header(response_headers, &CONTENT_TYPE);
        let bodies = self.payload.then(|| LogBodies {
            request_headers: self.request_headers.clone(),
            request_body: self.request_body.clone(),
            response_headers: redacted(response_headers.iter()),
            response_body: body.to_vec(),
        });
        sink.submit(LogEntry {
            gateway: self.gateway.clone(),
            meta,
            bodies,
            store: self.store,
            trace: self.traced(false),
        });
    }

    /// Logs a finished WebSocket session: status 101, its length, the payload bytes each way
    /// (client to provider as the request size, provider to client as the response size).
    pub fn record_session(&self, sink: &LogSink, started: Instant, sent: u64, received: u64, error: Option<String>) {
        let attempt = Attempt { step: 0, attempt: 1, status: Some(101), started, duration: started.elapsed(), error };
        let mut meta = self.meta(&attempt);
        meta.success = attempt.error.is_none();
        meta.request_size = sent;
        meta.response_size = received;
        let bodies =
            self.payload.then(|| LogBodies { request_headers: self.request_headers.clone(), ..LogBodies::default() });
        sink.submit(LogEntry {
            gateway: self.gateway.clone(),
            meta,
            bodies,
            store: self.store,
            trace: self.traced(true),
        });
    }

    /// A tap for the attempt whose body streams to the client; returns it with its log id.
    /// `length` is the answer's `content-length` when it has one (read once, for its framing).
    #[must_use]
    pub fn tap(
        &self,
        sink: Arc<LogSink>,
        attempt: &Attempt,
        response_headers: &HeaderMap,
        length: Option<u64>,
    ) -> (LogTap, uuid::Uuid) {
        let mut meta = self.meta(attempt);
        let id = uuid::Uuid::from_u128(meta.id);
        meta.response_content_type = header(response_headers, &CONTENT_TYPE);
        let bodies = self.payload.then(|| LogBodies {
            request_headers: self.request_headers.clone(),
            request_body: self.request_body.clone(),
            response_headers: redacted(response_headers.iter()),
            // The whole answer when its length is known (one allocation), else room for a
            // short stream: grown from empty, a streamed answer took four. Never more than
            // a claimed length's first 64 KiB before the bytes come.
            response_body: Vec::with_capacity(
                length.map_or(STREAM_BODY_START, |n| usize::try_from(n).unwrap_or(usize::MAX)).min(64 * 1024),
            ),
        });
        let tap = LogTap {
            sink,
            gateway: self.gateway.clone(),
            store: self.store,
            meta,
            bodies,
            custom: self.custom_cost,
            started: attempt.started,
            found: Arc::clone(&self.found),
            trace: self.traced(true),
        };
        (tap, id)
    }
}

/// Watches the streamed body of one attempt and records its log when it ends.
pub struct LogTap {
    sink: Arc<LogSink>,
    gateway: Arc<str>,
    store: bool,
    meta: LogMeta,
    bodies: Option<LogBodies>,
    custom: Option<PerToken>,
    started: Instant,
    found: Arc<StepFindings>,
    trace: Option<crate::logs::record::TraceInfo>,
}

impl Tap for LogTap {
    fn feed(&mut self, chunk: &[u8]) {
        if let Some(b) = self.bodies.as_mut() {
            let room = BODY_CAP.saturating_sub(b.response_body.len());
            if chunk.len() > room {
                self.meta.truncated = true;
            }
            b.response_body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
    }

    fn finish(self: Box<Self>, summary: &StreamSummary) {
        let LogTap { sink, gateway, store, mut meta, bodies, custom, started, found, trace } = *self;
        meta.policy = policy_of(&found.policy);
        let none = crate::providers::usage::Usage::default();
        let usage = summary.usage.as_ref().unwrap_or(&none);
        // The answer's model, when it names one (kept shared when it is the one already known).
        if let Some(m) = &usage.model
            && meta.model.as_deref() != Some(&**m)
        {
            meta.model = Some(Arc::clone(m));
        }
        meta.tokens_in = clip(usage.tokens_in);
        meta.tokens_out = clip(usage.tokens_out);
        meta.cached_tokens_in = clip(usage.cached_tokens_in);
        meta.cache_write_tokens = clip(usage.cache_write_tokens);
        meta.cost = prices::cost(&meta.provider, meta.model.as_deref(), usage, custom);
        if let Some(held) = found.spend.lock().ok().and_then(|mut s| s.take()) {
            let tokens = usage.reported.then(|| usage.tokens_in + usage.tokens_out);
            held.settle((200..300).contains(&meta.status_code), meta.cost, tokens);
        }
        meta.duration = millis(started.elapsed());
        meta.response_size = summary.bytes;
        meta.success = (200..300).contains(&meta.status_code) && summary.end == StreamEnd::Complete;
        meta.error = match &summary.end {
            StreamEnd::Complete if meta.success => None,
            StreamEnd::Complete => Some(format!("status {}", meta.status_code)),
            StreamEnd::UpstreamError(e) => Some(e.clone()),
            StreamEnd::IdleTimeout => Some("the upstream went silent (idle timeout)".into()),
            StreamEnd::ClientGone => Some("the client disconnected before the end".into()),
        };
        sink.submit(LogEntry { gateway, meta, bodies, store, trace });
    }
}

/// What a refused request was for.
pub struct Rejected<'a> {
    /// Provider slug (or `universal`).
    pub provider: &'a str,
    /// Path after the slug.
    pub rest: &'a str,
    /// Surface.
    pub request_type: RequestType,
}

/// Logs a request refused before any upstream call (rate limits), with the gateway's
/// collection setting and the client's `cf-aig-collect-log` override.
pub fn record_rejection(
    sink: &LogSink,
    gw: &GatewayRecord,
    inbound: &super::Inbound,
    ids: &super::Ids,
    what: &Rejected<'_>,
    error: &crate::error::Error,
) {
    let (status, _) = error.status_and_code();
    let (provider, rest, request_type) = (what.provider, what.rest, what.request_type);
    let store = match inbound.headers.get("cf-aig-collect-log").and_then(|v| v.to_str().ok()) {
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        _ => gw.collect_logs,
    };
    let (id, created_at) = own_or_new_id(store.then(|| ids.take_own_log_id()).flatten(), unix_ms_at(Instant::now()));
    let meta = LogMeta {
        id,
        created_at,
        provider: intern(provider),
        model: None,
        model_type: model_type(rest).map(intern),
        method: intern(inbound.method.as_str()),
        path: intern(rest.split('?').next().unwrap_or("")),
        success: false,
        cached: false,
        status_code: status,
        duration: 0,
        ttfb: 0,
        tokens_in: 0,
        tokens_out: 0,
        cached_tokens_in: 0,
        cache_write_tokens: 0,
        cost: None,
        custom_cost: false,
        metadata: None,
        request_content_type: header(&inbound.headers, &CONTENT_TYPE),
        response_content_type: Some("application/json".into()),
        request_type,
        step: 0,
        attempt: 0,
        event_id: Arc::clone(&ids.event_id),
        user_agent: header(&inbound.headers, &USER_AGENT),
        request_size: 0,
        response_size: 0,
        error: Some(error.to_string()),
        payload: false,
        truncated: false,
        feedback: None,
        score: None,
        requested_model: None,
        policy: None,
    };
    sink.submit(LogEntry { gateway: gw.id.as_str().into(), meta, bodies: None, store, trace: None });
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    /// The request's own id goes to the first log only, and only to a log started in its
    /// millisecond or the next, whose time it then takes; a client's event id offers none.
    #[test]
    fn the_requests_own_id_goes_to_one_log_started_with_it() {
        let ids = super::super::Ids::new(&HeaderMap::new());
        let own = ids.take_own_log_id().unwrap();
        assert_eq!(uuid::Uuid::from_u128(own).to_string(), *ids.event_id);
        assert!(Arc::ptr_eq(&ids.event_id, &ids.request_id));
        assert_eq!(ids.take_own_log_id(), None, "a second log takes a new id");
        let ms = log_id_ms(own);
        assert_eq!(own_or_new_id(Some(own), ms), (own, ms));
        assert_eq!(own_or_new_id(Some(own), ms + 1), (own, ms));
        for late in [ms - 1, ms + 2, ms + 60_000] {
            let (id, at) = own_or_new_id(Some(own), late);
            assert!(id != own && at == late && log_id_ms(id) == late, "{late}");
        }
        let mut given = HeaderMap::new();
        given.insert(HeaderName::from_static("cf-aig-event-id"), HeaderValue::from_static("mine"));
        assert_eq!(super::super::Ids::new(&given).take_own_log_id(), None);
    }

    /// A header's text reads as sent and comes back shared (`text::intern`).
    #[test]
    fn header_text_is_as_sent_and_shared() {
        let mut h = HeaderMap::new();
        let name = HeaderName::from_static("content-type");
        for text in ["application/json", "text/event-stream; charset=utf-8", "application/x-ndjson"] {
            h.insert(name.clone(), HeaderValue::from_static(text));
            let (a, b) = (header(&h, &CONTENT_TYPE).unwrap(), header(&h, &CONTENT_TYPE).unwrap());
            assert_eq!(&*a, text);
            assert!(Arc::ptr_eq(&a, &b), "{text}");
        }
        assert!(header(&h, &USER_AGENT).is_none());
    }
}
