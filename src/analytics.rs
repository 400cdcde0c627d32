//! Per-minute rollups per gateway × provider × model, written by the log writer and kept after
//! raw logs are deleted; queried by time range in hour or day buckets.

use std::collections::BTreeMap;

use redb::ReadableDatabase;
use serde::{Deserialize, Serialize};

use crate::logs::record::LogMeta;
use crate::store::{Store, StoreError, tables};

/// Sums for one bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    /// Requests (upstream attempts and cache hits).
    pub requests: u64,
    /// Failed ones.
    pub errors: u64,
    /// Served from cache.
    pub cached: u64,
    /// Input tokens.
    pub tokens_in: u64,
    /// Output tokens.
    pub tokens_out: u64,
    /// USD.
    pub cost: f64,
    /// Sum of durations in ms.
    pub duration_ms: u64,
}

impl Rollup {
    /// Adds one log.
    pub fn add(&mut self, m: &LogMeta) {
        self.requests += 1;
        self.errors += u64::from(!m.success);
        self.cached += u64::from(m.cached);
        self.tokens_in += u64::from(m.tokens_in);
        self.tokens_out += u64::from(m.tokens_out);
        self.cost += m.cost.unwrap_or(0.0);
        self.duration_ms += u64::from(m.duration);
    }

    /// Adds another rollup.
    pub fn merge(&mut self, o: &Rollup) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.cached += o.cached;
        self.tokens_in += o.tokens_in;
        self.tokens_out += o.tokens_out;
        self.cost += o.cost;
        self.duration_ms += o.duration_ms;
    }
}

/// Analytics for a time range.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Totals.
    pub totals: Rollup,
    /// (bucket start in unix seconds, sums).
    pub series: Vec<(i64, Rollup)>,
    /// By provider.
    pub by_provider: BTreeMap<String, Rollup>,
    /// By model.
    pub by_model: BTreeMap<String, Rollup>,
}

/// Reads the rollups of `gateway` between two unix-second times, bucketed by `bucket_secs`.
pub fn report(store: &Store, gateway: &str, start: i64, end: i64, bucket_secs: i64) -> Result<Report, StoreError> {
    let txn = store.db().begin_read()?;
    let table = txn.open_table(tables::ANALYTICS)?;
    let from = u64::try_from(start.max(0) / 60).unwrap_or(0);
    let to = u64::try_from(end.max(0) / 60).unwrap_or(0);
    let mut report = Report::default();
    let mut series: BTreeMap<i64, Rollup> = BTreeMap::new();
    for row in table.range((gateway, from, "", "")..(gateway, to.saturating_add(1), "", ""))? {
        let (key, value) = row?;
        let (_, minute, provider, model) = key.value();
        let Ok(r) = postcard::from_bytes::<Rollup>(value.value()) else { continue };
        let minute_secs = i64::try_from(minute).unwrap_or(0) * 60;
        let bucket = minute_secs - minute_secs.rem_euclid(bucket_secs.max(60));
        report.totals.merge(&r);
        series.entry(bucket).or_default().merge(&r);
        report.by_provider.entry(provider.to_string()).or_default().merge(&r);
        report
            .by_model
            .entry(if model.is_empty() { "(unknown)".into() } else { model.to_string() })
            .or_default()
            .merge(&r);
    }
    report.series = series.into_iter().collect();
    Ok(report)
}
