//! Process-wide counters, rendered as Prometheus text by the `/metrics` handler.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};

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
    /// By gateway, provider and model (fed by the log writer).
    pub labeled: Labeled,
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
            ("torii_log_writer_catch_ups_total", "counter", logs.catch_ups.load(Relaxed)),
        ] {
            let _ = writeln!(out, "# TYPE {name} {kind}\n{name} {value}");
        }
        out.push_str(&self.labeled.render());
        out
    }
}

/// Histogram buckets for LLM calls, in seconds (50 ms to 5 min).
pub const BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// Distinct model label values kept; later models are counted as `other`.
pub const MAX_MODELS: usize = 200;

/// The model label of records without a model, and of models past [`MAX_MODELS`].
static NO_MODEL: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));
static OTHER_MODEL: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("other"));

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SeriesKey {
    gateway: Arc<str>,
    provider: Arc<str>,
    model: Arc<str>,
    class: u16,
}

/// A series' sums: the analytics rollup's (its summed duration is not rendered).
type Series = crate::store::rollups::Rollup;

/// Reads one figure of a series, as Prometheus text.
type Pick = fn(&Series) -> String;

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; BUCKETS.len()];
        }
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct LabeledInner {
    series: std::collections::BTreeMap<SeriesKey, Series>,
    ttfb: std::collections::BTreeMap<(Arc<str>, Arc<str>), Histogram>,
    duration: std::collections::BTreeMap<(Arc<str>, Arc<str>), Histogram>,
    refusals: std::collections::BTreeMap<(Arc<str>, &'static str), u64>,
    models: foldhash::HashSet<Arc<str>>,
}

/// Per gateway, provider and model figures, fed by the log writer from every record it sees (so
/// the request path pays nothing for them), rendered by `/metrics`.
#[derive(Debug, Default)]
pub struct Labeled {
    inner: std::sync::Mutex<LabeledInner>,
}

/// Why a request was refused before (or instead of) an answer, from its log record.
fn refusal(m: &crate::logs::record::LogMeta) -> Option<&'static str> {
    let error = m.error.as_deref()?;
    match m.status_code {
        429 if error.starts_with("Rate limited") => Some("rate_limit"),
        429 => Some("budget"),
        403 if error.starts_with("Not allowed") => Some("allow_list"),
        424 if error.contains("DLP") => Some("dlp"),
        424 | 503 if error.contains("security configurations") || error.contains("Guardrail") => Some("guardrail"),
        _ => None,
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Histogram {
    fn absorb(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        if self.buckets.is_empty() {
            self.buckets = vec![0; BUCKETS.len()];
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.sum += other.sum;
        self.count += other.count;
    }
}

/// Whether two label values are the same text (interned ones are the same allocation).
fn same(a: &Arc<str>, b: &str) -> bool {
    std::ptr::eq(a.as_ptr(), b.as_ptr()) && a.len() == b.len() || **a == *b
}

/// A run of records with the same labels, counted apart and added to the series when the labels
/// change: one map lookup (and one set of label clones) a run rather than a record.
#[derive(Default)]
struct Run {
    series: Option<(SeriesKey, Series)>,
    timing: Option<Timing>,
}

/// A run's (gateway, provider) and its time to first byte and duration.
type Timing = ((Arc<str>, Arc<str>), Histogram, Histogram);

impl LabeledInner {
    /// The model label: the model while fewer than [`MAX_MODELS`] are known, else `other`.
    fn model_label<'a>(&mut self, model: Option<&'a Arc<str>>) -> &'a Arc<str>
    where
        'static: 'a,
    {
        match model {
            None => &NO_MODEL,
            Some(model) if model.is_empty() || self.models.contains(&**model) => model,
            Some(model) if self.models.len() < MAX_MODELS => {
                self.models.insert(Arc::clone(model));
                model
            }
            Some(_) => &OTHER_MODEL,
        }
    }

    fn count(&mut self, run: &mut Run, gateway: &Arc<str>, m: &crate::logs::record::LogMeta) {
        let class = m.status_code / 100;
        let continues = run.series.as_ref().is_some_and(|(k, _)| {
            k.class == class
                && same(&k.gateway, gateway)
                && same(&k.provider, &m.provider)
                && match &m.model {
                    Some(model) if !model.is_empty() => same(&k.model, model),
                    _ => false,
                }
        });
        if !continues {
            self.flush_series(run);
            let model = Arc::clone(self.model_label(m.model.as_ref()));
            let key = SeriesKey { gateway: Arc::clone(gateway), provider: Arc::clone(&m.provider), model, class };
            run.series = Some((key, Series::default()));
        }
        if let Some((_, s)) = &mut run.series {
            m.add_to(s);
        }
        if let Some(reason) = refusal(m) {
            *self.refusals.entry((Arc::clone(gateway), reason)).or_default() += 1;
            return;
        }
        if m.status_code > 0 && !m.cached {
            let continues = run.timing.as_ref().is_some_and(|((g, p), _, _)| same(g, gateway) && same(p, &m.provider));
            if !continues {
                self.flush_timing(run);
                let at = (Arc::clone(gateway), Arc::clone(&m.provider));
                run.timing = Some((at, Histogram::default(), Histogram::default()));
            }
            if let Some((_, ttfb, duration)) = &mut run.timing {
                ttfb.observe(f64::from(m.ttfb) / 1000.0);
                duration.observe(f64::from(m.duration) / 1000.0);
            }
        }
    }

    fn flush_series(&mut self, run: &mut Run) {
        if let Some((key, delta)) = run.series.take() {
            self.series.entry(key).or_default().merge(&delta);
        }
    }

    fn flush_timing(&mut self, run: &mut Run) {
        if let Some((at, ttfb, duration)) = run.timing.take() {
            self.ttfb.entry(at.clone()).or_default().absorb(&ttfb);
            self.duration.entry(at).or_default().absorb(&duration);
        }
    }
}

impl Labeled {
    /// Counts one log record.
    pub fn observe(&self, gateway: &Arc<str>, m: &crate::logs::record::LogMeta) {
        self.observe_all([(gateway, m)]);
    }

    /// Counts a batch of log records (the writer's), under one lock. Keys share the records'
    /// strings (no allocation per record once a series exists).
    pub fn observe_all<'a>(&self, records: impl IntoIterator<Item = (&'a Arc<str>, &'a crate::logs::record::LogMeta)>) {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut run = Run::default();
        for (gateway, m) in records {
            inner.count(&mut run, gateway, m);
        }
        inner.flush_series(&mut run);
        inner.flush_timing(&mut run);
    }

    /// Prometheus text for the labeled series.
    #[must_use]
    pub fn render(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::with_capacity(4096);
        let labels = |k: &SeriesKey| {
            format!(
                "gateway=\"{}\",provider=\"{}\",model=\"{}\"",
                escape(&k.gateway),
                escape(&k.provider),
                escape(&k.model)
            )
        };
        let families: [(&str, &str, Pick, bool); 6] = [
            (
                "torii_requests_total",
                "Requests (upstream attempts and cache hits) by status class",
                |s| s.requests.to_string(),
                true,
            ),
            ("torii_errors_total", "Requests that did not succeed", |s| s.errors.to_string(), true),
            ("torii_cache_hits_total", "Requests answered from the cache", |s| s.cached.to_string(), false),
            ("torii_tokens_in_total", "Input tokens", |s| s.tokens_in.to_string(), false),
            ("torii_tokens_out_total", "Output tokens", |s| s.tokens_out.to_string(), false),
            ("torii_cost_usd_total", "Cost in USD", |s| format!("{}", s.cost), false),
        ];
        for (name, help, pick, by_class) in families {
            let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} counter");
            if by_class {
                for (k, s) in &inner.series {
                    let _ = writeln!(out, "{name}{{{},status_class=\"{}xx\"}} {}", labels(k), k.class, pick(s));
                }
            } else {
                // Summed over status classes.
                let mut summed: std::collections::BTreeMap<String, Series> = std::collections::BTreeMap::new();
                for (k, s) in &inner.series {
                    summed.entry(labels(k)).or_default().merge(s);
                }
                for (l, s) in &summed {
                    let _ = writeln!(out, "{name}{{{l}}} {}", pick(s));
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP torii_refusals_total Requests refused by a policy or limit.\n# TYPE torii_refusals_total counter"
        );
        for ((gateway, reason), n) in &inner.refusals {
            let _ = writeln!(out, "torii_refusals_total{{gateway=\"{}\",reason=\"{reason}\"}} {n}", escape(gateway));
        }
        for (name, help, hists) in [
            ("torii_time_to_first_byte_seconds", "Time from sending to the upstream's response head", &inner.ttfb),
            ("torii_request_duration_seconds", "Time from sending to the end of the answer", &inner.duration),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} histogram");
            for ((gateway, provider), h) in hists {
                let l = format!("gateway=\"{}\",provider=\"{}\"", escape(gateway), escape(provider));
                for (le, n) in BUCKETS.iter().zip(&h.buckets) {
                    let _ = writeln!(out, "{name}_bucket{{{l},le=\"{le}\"}} {n}");
                }
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{name}_sum{{{l}}} {}\n{name}_count{{{l}}} {}", h.sum, h.count);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::record::LogMeta;
    use crate::logs::record::tests::sample;

    /// Records of every kind the labels tell apart, in runs and alone: two gateways (one name as
    /// two allocations), providers, models (none, empty, past the cap), status classes, cached,
    /// refused.
    fn records() -> Vec<(Arc<str>, LogMeta)> {
        let (a, a_again, b): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "a".into(), "b".into());
        let mut out = Vec::new();
        for i in 0..2_400_u32 {
            // Labels change every fourth record (so runs form), the status class within runs.
            let j = i / 4;
            let gateway = match j % 7 {
                0 => Arc::clone(&b),
                1 => Arc::clone(&a_again),
                _ => Arc::clone(&a),
            };
            let model: Option<Arc<str>> = match (j % 11, j % 3) {
                (0, _) => None,
                (1, _) => Some("".into()),
                (_, 0) => Some("gpt-4o".into()),
                _ => Some(format!("m-{j}").into()),
            };
            let mut m = LogMeta {
                model,
                provider: if j % 5 == 0 || i % 8 == 7 { "anthropic".into() } else { "openai".into() },
                status_code: [200, 200, 200, 429, 500, 0][(i % 6) as usize],
                cached: i % 9 == 0,
                success: i % 6 < 3,
                ttfb: i % 40 * 125,
                duration: i % 2_400 * 125,
                tokens_in: i,
                tokens_out: 2 * i,
                cost: (i % 4 != 0).then(|| f64::from(i) / 8.0),
                ..sample(u128::from(i))
            };
            if m.status_code == 429 {
                m.error = Some(if i / 6 % 2 == 0 { "Rate limited".into() } else { "Budget spent".into() });
            }
            out.push((gateway, m));
        }
        out
    }

    /// A batch counts as its records one by one: the same series, histograms, refusals and
    /// model labels (costs and times are multiples of 1/8, so sums in any order are exact).
    #[test]
    fn a_batch_counts_as_its_records_one_by_one() {
        let records = records();
        let one_by_one = Labeled::default();
        for (g, m) in &records {
            one_by_one.observe(g, m);
        }
        let batched = Labeled::default();
        for chunk in records.chunks(57) {
            batched.observe_all(chunk.iter().map(|(g, m)| (g, m)));
        }
        let text = one_by_one.render();
        assert_eq!(batched.render(), text);
        assert!(text.contains("model=\"other\""), "past the cap: {text}");
        assert!(text.contains("model=\"\""), "no model: {text}");
        assert!(text.contains("rate_limit") && text.contains("budget"), "{text}");
    }
}
