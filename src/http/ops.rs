//! Operations endpoints: `/healthz`, `/readyz`, `/metrics`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use actix_web::{HttpResponse, web};

use crate::control::ControlPlane;
use crate::gateway::body::PendingBodies;
use crate::gateway::export::ExportStats;
use crate::logs::writer::SinkStats;
use crate::metrics::Metrics;

/// The operations surface's state: the figures the other parts count into, read by `/metrics`
/// and the admin health page. The data plane and the log writer hold the same counters and
/// write them; nothing here reaches the pipeline.
pub struct Observed {
    /// When the process started, for uptime.
    pub started: Instant,
    /// Request, status and labeled counters.
    pub metrics: Arc<Metrics>,
    /// The log writer's queue and batch figures.
    pub log_stats: Arc<SinkStats>,
    /// The log exporter's figures.
    pub export: Arc<ExportStats>,
    /// Bytes held by request bodies still arriving.
    pub pending_bodies: Arc<PendingBodies>,
    /// The rate-limit windows (their failures to reach the cluster's Redis).
    pub limits: Arc<crate::cluster::Windows>,
}

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// The store is open, answers, and its writes succeed (logs and changes are being saved).
pub async fn readyz(control: web::Data<ControlPlane>) -> HttpResponse {
    let settings = control.settings.clone();
    let not_ready = |why: String| HttpResponse::ServiceUnavailable().content_type("text/plain").body(why);
    match web::block(move || settings.check_store()).await {
        Ok(Ok(_)) => match control.settings.store_failure() {
            None => HttpResponse::Ok().content_type("text/plain").body("ready\n"),
            Some(why) => not_ready(format!("database writes failing: {why}\n")),
        },
        // Reads fail too once a write hit an I/O error (a full disk) and the file awaits its
        // re-open: the failing writes are the cause to report.
        Ok(Err(e)) => match control.settings.store_failure() {
            Some(why) if e.is_io() => not_ready(format!("database writes failing: {why}\n")),
            _ => not_ready(format!("store unavailable: {e}\n")),
        },
        Err(_) => not_ready("store unavailable\n".into()),
    }
}

/// Prometheus text exposition.
pub async fn metrics(control: web::Data<ControlPlane>, seen: web::Data<Observed>) -> HttpResponse {
    let mut text = seen.metrics.render(seen.started.elapsed().as_secs(), &seen.log_stats);
    let held = seen.pending_bodies.held();
    let _ = write!(text, "# TYPE torii_pending_body_bytes gauge\ntorii_pending_body_bytes {held}\n");
    let failing = u8::from(control.settings.store_failure().is_some());
    let _ = write!(text, "# TYPE torii_store_writes_failing gauge\ntorii_store_writes_failing {failing}\n");
    let _ = writeln!(
        text,
        "# HELP torii_cache_lookups_total Cache lookups by result.\n# TYPE torii_cache_lookups_total counter"
    );
    let mut gateways: Vec<String> = control.settings.snapshot().gateways.keys().cloned().collect();
    gateways.sort();
    for id in gateways {
        let s = control.cache.stats(&id);
        let g = id.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(text, "torii_cache_lookups_total{{gateway=\"{g}\",result=\"hit\"}} {}", s.counters.hits);
        let _ = writeln!(text, "torii_cache_lookups_total{{gateway=\"{g}\",result=\"miss\"}} {}", s.counters.misses);
    }
    let e = &seen.export;
    let backlog = web::block({
        let settings = control.settings.clone();
        move || settings.export_backlog().unwrap_or(0)
    })
    .await
    .unwrap_or(0);
    let _ = write!(
        text,
        "# TYPE torii_export_sent_total counter\ntorii_export_sent_total {}\n# TYPE torii_export_failures_total counter\ntorii_export_failures_total {}\n# TYPE torii_export_backlog gauge\ntorii_export_backlog {backlog}\n",
        e.sent.load(std::sync::atomic::Ordering::Relaxed),
        e.failures.load(std::sync::atomic::Ordering::Relaxed),
    );
    let _ = write!(
        text,
        "# HELP torii_cluster_redis_failures_total Operations (limits, spend, cache, sessions) that could not reach the cluster's Redis.\n# TYPE torii_cluster_redis_failures_total counter\ntorii_cluster_redis_failures_total {}\n",
        seen.limits.failures()
    );
    let _ = write!(
        text,
        "# HELP torii_cluster_redis_round_trips_total Round trips to the cluster's Redis (a command, a script or a pipeline each).\n# TYPE torii_cluster_redis_round_trips_total counter\ntorii_cluster_redis_round_trips_total {}\n",
        seen.limits.round_trips()
    );
    let panics = seen.log_stats.panics.load(std::sync::atomic::Ordering::Relaxed);
    let _ = write!(text, "# TYPE torii_log_writer_panics_total counter\ntorii_log_writer_panics_total {panics}\n");
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(text)
}
