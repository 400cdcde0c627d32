//! Log export (what Cloudflare calls Logpush): the stored logs of gateways with `logpush: true`
//! go to the configured receiver in batches, as JSON lines or OTLP/HTTP logs. The log writer
//! queues each one in the database in commit order; this thread sends the head of the queue and
//! removes it only once the receiver has taken it, retrying with backoff meanwhile. So a receiver
//! that is down, or a restart, loses nothing; a batch that was sent but not yet removed when the
//! process stopped is sent again (at least once).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::{ExportConfig, ExportFormat, UpstreamConfig};
use crate::control::Settings;
use crate::egress::ProxyRules;
use crate::logs::record::LogMeta;

/// What the exporter has done (health page, `/metrics`).
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Logs the receiver accepted.
    pub sent: AtomicU64,
    /// Requests that failed (each retried).
    pub failures: AtomicU64,
    /// When a batch was last accepted (Unix ms; 0: never).
    pub last_sent_ms: AtomicU64,
    /// Why the last request failed, while failures go on.
    pub last_error: Mutex<Option<String>>,
}

/// Longest wait between retries (they start at the configured interval and double).
const MAX_BACKOFF: Duration = Duration::from_secs(60);

fn now_ms() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// The request body for a batch.
fn body(format: ExportFormat, logs: &[(String, LogMeta)]) -> (Vec<u8>, &'static str) {
    match format {
        ExportFormat::Json => {
            let mut out = Vec::new();
            for (gateway, meta) in logs {
                let mut line = crate::logs::query::to_json(meta);
                line["gateway"] = Value::String(gateway.clone());
                out.extend_from_slice(line.to_string().as_bytes());
                out.push(b'\n');
            }
            (out, "application/x-ndjson")
        }
        ExportFormat::Otlp => {
            let records: Vec<Value> = logs
                .iter()
                .map(|(gateway, meta)| {
                    let attr = |k: &str, v: Value| json!({"key": k, "value": v});
                    let text = |s: &str| json!({"stringValue": s});
                    let mut attributes = vec![
                        attr("torii.gateway", text(gateway)),
                        attr("gen_ai.system", text(&meta.provider)),
                        attr("http.response.status_code", json!({"intValue": meta.status_code.to_string()})),
                        attr("gen_ai.usage.input_tokens", json!({"intValue": meta.tokens_in.to_string()})),
                        attr("gen_ai.usage.output_tokens", json!({"intValue": meta.tokens_out.to_string()})),
                        attr("torii.event_id", text(&meta.event_id)),
                    ];
                    if let Some(m) = &meta.model {
                        attributes.push(attr("gen_ai.request.model", text(m)));
                    }
                    if let Some(c) = meta.cost {
                        attributes.push(attr("gen_ai.usage.cost", json!({"doubleValue": c})));
                    }
                    let nanos = i128::from(meta.created_at) * 1_000_000;
                    json!({
                        "timeUnixNano": nanos.to_string(),
                        "severityText": if meta.success { "INFO" } else { "ERROR" },
                        "body": {"stringValue": crate::logs::query::to_json(meta).to_string()},
                        "attributes": attributes,
                    })
                })
                .collect();
            let doc = json!({"resourceLogs": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "torii"}}]},
                "scopeLogs": [{"scope": {"name": "torii.logs"}, "logRecords": records}],
            }]});
            (doc.to_string().into_bytes(), "application/json")
        }
    }
}

/// Starts the exporter thread (when a receiver is configured); it ends when the settings are
/// dropped.
pub fn spawn(
    settings: &Arc<Settings>,
    config: ExportConfig,
    (upstream, tls, proxies): (UpstreamConfig, Arc<rustls::ClientConfig>, Arc<ProxyRules>),
    stats: Arc<ExportStats>,
) -> std::io::Result<()> {
    let Some(url) = config.url.clone() else { return Ok(()) };
    let weak: Weak<Settings> = Arc::downgrade(settings);
    std::thread::Builder::new().name("torii-export".into()).spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let client = super::client::build_client(&upstream, tls, proxies);
            let first = Duration::from_millis(config.interval_ms.max(10));
            let mut backoff = first;
            loop {
                let Some(settings) = weak.upgrade() else { return };
                let batch = settings.export_batch(config.batch);
                drop(settings);
                let (logs, last) = match batch {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the export queue");
                        actix_web::rt::time::sleep(Duration::from_millis(config.interval_ms)).await;
                        continue;
                    }
                };
                let Some(last) = last else {
                    actix_web::rt::time::sleep(Duration::from_millis(config.interval_ms.max(10))).await;
                    continue;
                };
                let outcome = if logs.is_empty() {
                    Ok(())
                } else {
                    let (payload, content_type) = body(config.format, &logs);
                    let mut req = client.awc().post(&url).timeout(Duration::from_secs(30)).content_type(content_type);
                    for (k, v) in &config.headers {
                        req = req.insert_header((k.as_str(), v.as_str()));
                    }
                    match req.send_body(payload).await {
                        Ok(resp) if resp.status().is_success() => Ok(()),
                        Ok(resp) => Err(format!("the receiver answered {}", resp.status())),
                        Err(e) => Err(format!("the receiver could not be reached: {e}")),
                    }
                };
                match outcome {
                    Ok(()) => {
                        let Some(settings) = weak.upgrade() else { return };
                        if let Err(e) = settings.export_sent(last) {
                            tracing::warn!(error = %e, "cannot mark exported logs as sent");
                        }
                        stats.sent.fetch_add(logs.len() as u64, Relaxed);
                        stats.last_sent_ms.store(now_ms(), Relaxed);
                        if let Ok(mut e) = stats.last_error.lock() {
                            *e = None;
                        }
                        backoff = first;
                    }
                    Err(why) => {
                        stats.failures.fetch_add(1, Relaxed);
                        tracing::warn!(error = %why, retry_in_ms = backoff.as_millis(), "log export failed");
                        if let Ok(mut e) = stats.last_error.lock() {
                            *e = Some(why);
                        }
                        actix_web::rt::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        });
    })?;
    Ok(())
}
