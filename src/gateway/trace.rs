//! OpenTelemetry traces: one span per request and one per upstream attempt, with the `GenAI`
//! semantic conventions (`gen_ai.system`, `gen_ai.request.model`, `gen_ai.usage.input_tokens`,
//! ...), sent over OTLP/HTTP (JSON) to the configured collector and to each gateway's own `otel`
//! receivers.
//!
//! The spans are built from the log records on the log writer's thread and handed to the
//! `opentelemetry_sdk` batch processor (a bounded queue and its own export thread), so the
//! request path pays only for the ids: the request's trace comes from the client's `traceparent`
//! (or `cf-aig-otel-trace-id` / `cf-aig-otel-parent-span-id`), and each upstream attempt sends a
//! `traceparent` naming its own span, so the provider's spans join the same trace.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};
use serde_json::Value;

use super::Gateway;
use crate::config::OtlpEncoding;
use crate::logs::record::{LogEntry, TraceInfo};
use crate::store::GatewayRecord;

/// Spans waiting for export per receiver; more are dropped (by the SDK's processor).
const QUEUE: usize = 8_192;

/// One receiver: its URL, headers and encoding.
type Receiver = (String, BTreeMap<String, String>, OtlpEncoding);

/// The receivers a gateway's `otel` setting names (already checked when saved).
#[must_use]
pub fn receivers_of(gw: &GatewayRecord) -> Vec<Receiver> {
    let Some(Value::Array(list)) = gw.extra.get("otel") else { return Vec::new() };
    list.iter()
        .filter_map(|r| {
            let url = r.get("url")?.as_str()?.to_string();
            let headers = r
                .get("headers")
                .and_then(Value::as_object)
                .map(|h| h.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
                .unwrap_or_default();
            // Cloudflare's default is JSON.
            let encoding = match r.get("content_type").and_then(Value::as_str) {
                Some("protobuf") => OtlpEncoding::Protobuf,
                _ => OtlpEncoding::Json,
            };
            Some((url, headers, encoding))
        })
        .collect()
}

/// The span processors, one per receiver, made on first use.
#[derive(Default)]
pub struct Traces {
    global: Option<Receiver>,
    processors: Mutex<HashMap<Receiver, BatchSpanProcessor>>,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traces").field("global", &self.global.as_ref().map(|g| &g.0)).finish_non_exhaustive()
    }
}

fn ms(t: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(t).unwrap_or(0))
}

fn processor(receiver: &Receiver) -> Option<BatchSpanProcessor> {
    let headers: HashMap<String, String> = receiver.1.clone().into_iter().collect();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(if receiver.2 == OtlpEncoding::Json { Protocol::HttpJson } else { Protocol::HttpBinary })
        .with_endpoint(receiver.0.clone())
        .with_headers(headers)
        .with_timeout(Duration::from_secs(10))
        .build()
        .inspect_err(|e| tracing::warn!(receiver = %receiver.0, error = %e, "cannot build the OTLP exporter"))
        .ok()?;
    let config =
        BatchConfigBuilder::default().with_max_queue_size(QUEUE).with_scheduled_delay(Duration::from_secs(1)).build();
    let mut p = BatchSpanProcessor::builder(exporter).with_batch_config(config).build();
    p.set_resource(&Resource::builder().with_service_name("torii").build());
    Some(p)
}

impl Traces {
    /// Receivers: the configured collector for every gateway, plus each gateway's own.
    #[must_use]
    pub fn new(config: &crate::config::OtelConfig) -> Self {
        Self {
            global: config.endpoint.clone().map(|e| (e, config.headers.clone(), config.content_type)),
            processors: Mutex::default(),
        }
    }

    /// Whether a gateway's requests are traced.
    #[must_use]
    pub fn on_for(&self, gw: &GatewayRecord) -> bool {
        self.global.is_some() || gw.extra.get("otel").and_then(Value::as_array).is_some_and(|l| !l.is_empty())
    }

    /// Turns a log record into its attempt span (and, for the record that ends the request, the
    /// request span) for every receiver of its gateway. On the log writer's thread.
    pub fn record(&self, gw: Option<&GatewayRecord>, entry: &LogEntry) {
        let Some(t) = entry.trace else { return };
        let mut receivers: Vec<Receiver> = self.global.iter().cloned().collect();
        receivers.extend(gw.map(receivers_of).unwrap_or_default());
        if receivers.is_empty() {
            return;
        }
        let spans = spans(entry, &t);
        let mut processors = self.processors.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for r in receivers {
            if !processors.contains_key(&r) {
                match processor(&r) {
                    Some(p) => {
                        processors.insert(r.clone(), p);
                    }
                    None => continue,
                }
            }
            if let Some(p) = processors.get(&r) {
                for s in &spans {
                    p.on_end(s.clone());
                }
            }
        }
    }

    /// Sends what is queued now (tests, shutdown).
    pub fn flush(&self) {
        let processors = self.processors.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for p in processors.values() {
            let _ = p.force_flush();
        }
    }
}

fn spans(entry: &LogEntry, t: &TraceInfo) -> Vec<SpanData> {
    let m = &entry.meta;
    let trace = TraceId::from_bytes(t.trace_id.to_be_bytes());
    let context = |span: u64| {
        SpanContext::new(
            trace,
            SpanId::from_bytes(span.to_be_bytes()),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    };
    let scope = InstrumentationScope::builder("torii").with_version(env!("CARGO_PKG_VERSION")).build();
    let operation = match m.model_type.as_deref() {
        Some("embedding") => "embeddings",
        Some("completion") => "text_completion",
        _ => "chat",
    };
    let requested = m.requested_model.clone().or_else(|| m.model.clone()).unwrap_or_default();
    let mut common = vec![
        KeyValue::new("gen_ai.system", m.provider.clone()),
        KeyValue::new("gen_ai.model.provider", m.provider.clone()),
        KeyValue::new("gen_ai.operation.name", operation),
        KeyValue::new("gen_ai.request.model", requested.clone()),
        KeyValue::new("http.response.status_code", i64::from(m.status_code)),
        KeyValue::new("torii.gateway", entry.gateway.clone()),
        KeyValue::new("torii.event_id", m.event_id.clone()),
    ];
    if let Some(Ok(Value::Object(meta))) = m.metadata.as_deref().map(serde_json::from_str::<Value>) {
        for (k, v) in meta.into_iter().filter(|(k, _)| !k.starts_with("gen_ai.")) {
            common.push(KeyValue::new(k, v.as_str().map_or_else(|| v.to_string(), str::to_string)));
        }
    }
    let status = if m.success { Status::Ok } else { Status::error(m.error.clone().unwrap_or_default()) };
    let end = m.created_at + i64::from(m.duration);
    let attempt_span = t.attempt_span(m.step, m.attempt);
    let mut attempt_attrs = common.clone();
    attempt_attrs.extend([
        KeyValue::new("gen_ai.usage.input_tokens", i64::from(m.tokens_in)),
        KeyValue::new("gen_ai.usage.output_tokens", i64::from(m.tokens_out)),
        KeyValue::new("torii.step", i64::from(m.step)),
        KeyValue::new("torii.attempt", i64::from(m.attempt)),
        KeyValue::new("torii.cached", m.cached),
    ]);
    if let Some(model) = &m.model {
        attempt_attrs.push(KeyValue::new("gen_ai.response.model", model.clone()));
    }
    if let Some(cost) = m.cost {
        attempt_attrs.push(KeyValue::new("gen_ai.usage.cost", cost));
    }
    let mut out = vec![SpanData {
        span_context: context(attempt_span),
        parent_span_id: SpanId::from_bytes(t.request_span.to_be_bytes()),
        parent_span_is_remote: false,
        span_kind: SpanKind::Client,
        name: format!("{operation} {requested}").into(),
        start_time: ms(m.created_at),
        end_time: ms(end.max(m.created_at)),
        attributes: attempt_attrs,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: status.clone(),
        instrumentation_scope: scope.clone(),
    }];
    if t.last {
        out.push(SpanData {
            span_context: context(t.request_span),
            parent_span_id: t.parent_span.map_or(SpanId::INVALID, |p| SpanId::from_bytes(p.to_be_bytes())),
            parent_span_is_remote: t.parent_span.is_some(),
            span_kind: SpanKind::Server,
            name: format!("gateway {}", entry.gateway).into(),
            start_time: ms(t.started_ms.min(m.created_at)),
            end_time: ms(end.max(t.started_ms)),
            attributes: common,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope,
        });
    }
    out
}

impl Gateway {
    /// Whether a gateway's requests are traced (a collector configured, or its own `otel`).
    pub(crate) fn tracing(&self, gw: &GatewayRecord) -> bool {
        self.traces.on_for(gw)
    }
}
