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

/// The store is open and answers.
pub async fn readyz(gateway: web::Data<Gateway>) -> HttpResponse {
    let settings = gateway.settings.clone();
    match web::block(move || settings.store().schema_version()).await {
        Ok(Ok(_)) => HttpResponse::Ok().content_type("text/plain").body("ready\n"),
        _ => HttpResponse::ServiceUnavailable().content_type("text/plain").body("store unavailable\n"),
    }
}

/// Prometheus text exposition.
pub async fn metrics(gateway: web::Data<Gateway>, started: web::Data<Started>) -> HttpResponse {
    let mut text = gateway.metrics.render(started.0.elapsed().as_secs(), &gateway.logs.stats);
    let held = gateway.pending_bodies.held();
    let _ = write!(text, "# TYPE torii_pending_body_bytes gauge\ntorii_pending_body_bytes {held}\n");
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(text)
}
