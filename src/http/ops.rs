//! Operations endpoints: `/healthz`, `/readyz`, `/metrics`.

use std::fmt::Write as _;
use std::time::Instant;

use actix_web::{HttpResponse, web};

use crate::gateway::Gateway;

/// When the process started, for uptime.
pub struct Started(pub Instant);

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// The store is open, answers, and its writes succeed (logs and changes are being saved).
pub async fn readyz(gateway: web::Data<Gateway>) -> HttpResponse {
    let settings = gateway.settings.clone();
    let not_ready = |why: String| HttpResponse::ServiceUnavailable().content_type("text/plain").body(why);
    match web::block(move || settings.check_store()).await {
        Ok(Ok(_)) => match gateway.settings.store_failure() {
            None => HttpResponse::Ok().content_type("text/plain").body("ready\n"),
            Some(why) => not_ready(format!("database writes failing: {why}\n")),
        },
        Ok(Err(e)) => not_ready(format!("store unavailable: {e}\n")),
        Err(_) => not_ready("store unavailable\n".into()),
    }
}

/// Prometheus text exposition.
pub async fn metrics(gateway: web::Data<Gateway>, started: web::Data<Started>) -> HttpResponse {
    let mut text = gateway.metrics.render(started.0.elapsed().as_secs(), &gateway.logs.stats);
    let held = gateway.pending_bodies.held();
    let _ = write!(text, "# TYPE torii_pending_body_bytes gauge\ntorii_pending_body_bytes {held}\n");
    let failing = u8::from(gateway.settings.store_failure().is_some());
    let _ = write!(text, "# TYPE torii_store_writes_failing gauge\ntorii_store_writes_failing {failing}\n");
    let _ = writeln!(
        text,
        "# HELP torii_cache_lookups_total Cache lookups by result.\n# TYPE torii_cache_lookups_total counter"
    );
    let mut gateways: Vec<String> = gateway.settings.snapshot().gateways.keys().cloned().collect();
    gateways.sort();
    for id in gateways {
        let s = gateway.cache.stats(&id);
        let g = id.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(text, "torii_cache_lookups_total{{gateway=\"{g}\",result=\"hit\"}} {}", s.counters.hits);
        let _ = writeln!(text, "torii_cache_lookups_total{{gateway=\"{g}\",result=\"miss\"}} {}", s.counters.misses);
    }
    let e = &gateway.export;
    let backlog = web::block({
        let settings = gateway.settings.clone();
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
    let panics = gateway.logs.stats.panics.load(std::sync::atomic::Ordering::Relaxed);
    let _ = write!(text, "# TYPE torii_log_writer_panics_total counter\ntorii_log_writer_panics_total {panics}\n");
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(text)
}
