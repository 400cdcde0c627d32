//! Process-wide counters, rendered as Prometheus text by the `/metrics` handler.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::logs::writer::SinkStats;

/// Counters updated on the request path (relaxed atomics, no locks).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Data-plane requests answered from an upstream, by status class (2xx..5xx).
    pub upstream_responses: [AtomicU64; 5],
    /// Data-plane requests answered with a gateway error.
    pub gateway_errors: AtomicU64,
    /// Upstream attempts (including retries).
    pub upstream_attempts: AtomicU64,
    /// Upstream attempts that failed before a response head.
    pub upstream_failures: AtomicU64,
    /// Response streams ended because the upstream went silent.
    pub idle_timeouts: AtomicU64,
    /// Response streams the client abandoned before the end.
    pub client_disconnects: AtomicU64,
    /// Response streams currently open.
    pub open_streams: AtomicU64,
}

impl Metrics {
    /// Counts an upstream response by status class.
    pub fn count_status(&self, status: u16) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.upstream_responses[class].fetch_add(1, Relaxed);
    }

    /// Prometheus text exposition.
    #[must_use]
    pub fn render(&self, uptime_secs: u64, logs: &SinkStats) -> String {
        let mut out = String::with_capacity(1024);
        let _ = writeln!(out, "# TYPE torii_upstream_responses_total counter");
        for (i, c) in self.upstream_responses.iter().enumerate() {
            let _ = writeln!(out, "torii_upstream_responses_total{{class=\"{}xx\"}} {}", i + 1, c.load(Relaxed));
        }
        for (name, kind, value) in [
            ("torii_gateway_errors_total", "counter", self.gateway_errors.load(Relaxed)),
            ("torii_upstream_attempts_total", "counter", self.upstream_attempts.load(Relaxed)),
            ("torii_upstream_failures_total", "counter", self.upstream_failures.load(Relaxed)),
            ("torii_stream_idle_timeouts_total", "counter", self.idle_timeouts.load(Relaxed)),
            ("torii_client_disconnects_total", "counter", self.client_disconnects.load(Relaxed)),
            ("torii_open_streams", "gauge", self.open_streams.load(Relaxed)),
            ("torii_uptime_seconds", "gauge", uptime_secs),
            ("torii_log_records_written_total", "counter", logs.written.load(Relaxed)),
            ("torii_log_records_dropped_total", "counter", logs.dropped.load(Relaxed)),
            ("torii_log_records_capped_total", "counter", logs.capped.load(Relaxed)),
            ("torii_log_records_evicted_total", "counter", logs.evicted.load(Relaxed)),
            ("torii_log_batches_failed_total", "counter", logs.failed_batches.load(Relaxed)),
            ("torii_log_queue_depth", "gauge", logs.depth()),
        ] {
            let _ = writeln!(out, "# TYPE {name} {kind}\n{name} {value}");
        }
        out
    }
}
