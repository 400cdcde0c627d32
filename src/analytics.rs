//! Per-minute rollups per gateway × provider × model, written by the log writer and kept after
//! raw logs are deleted; queried by time range in hour or day buckets.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable};
use serde::Serialize;

pub use crate::store::rollups::Rollup;
use crate::store::{Store, StoreError, tables};

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
/// With buckets of whole hours, the whole hours of the range come from the hourly table and only
/// the partial hours at its edges from the per-minute one.
pub fn report(store: &Store, gateway: &str, start: i64, end: i64, bucket_secs: i64) -> Result<Report, StoreError> {
    let txn = store.db()?.begin_read()?;
    let minutes = txn.open_table(tables::ANALYTICS)?;
    // Minutes [from, to] inclusive.
    let from = u64::try_from(start.max(0) / 60).unwrap_or(0);
    let to = u64::try_from(end.max(0) / 60).unwrap_or(0);
    let bucket = bucket_secs.max(60);
    let mut acc = Accumulator { bucket, report: Report::default(), series: BTreeMap::new() };
    // Whole hours [h0, h1) inside the range.
    let (h0, h1) = (from.div_ceil(60), (to + 1) / 60);
    if bucket % 3600 == 0 && h0 < h1 {
        acc.scan(&minutes, gateway, from, h0 * 60, 60)?;
        acc.scan(&txn.open_table(tables::ANALYTICS_HOURLY)?, gateway, h0, h1, 3600)?;
        acc.scan(&minutes, gateway, h1 * 60, to + 1, 60)?;
    } else {
        acc.scan(&minutes, gateway, from, to + 1, 60)?;
    }
    let mut report = acc.report;
    report.series = acc.series.into_iter().collect();
    Ok(report)
}

struct Accumulator {
    bucket: i64,
    report: Report,
    series: BTreeMap<i64, Rollup>,
}

impl Accumulator {
    /// Adds the rows of units [lo, hi) (minutes or hours, `unit_secs` long).
    fn scan(
        &mut self,
        table: &impl ReadableTable<(&'static str, u64, &'static str, &'static str), &'static [u8]>,
        gateway: &str,
        lo: u64,
        hi: u64,
        unit_secs: i64,
    ) -> Result<(), StoreError> {
        if lo >= hi {
            return Ok(());
        }
        for row in table.range((gateway, lo, "", "")..(gateway, hi, "", ""))? {
            let (key, value) = row?;
            let (_, unit, provider, model) = key.value();
            let Ok(r) = postcard::from_bytes::<Rollup>(value.value()) else { continue };
            let at = i64::try_from(unit).unwrap_or(0) * unit_secs;
            let report = &mut self.report;
            report.totals.merge(&r);
            self.series.entry(at - at.rem_euclid(self.bucket)).or_default().merge(&r);
            report.by_provider.entry(provider.to_string()).or_default().merge(&r);
            let model = if model.is_empty() { "(unknown)".to_string() } else { model.to_string() };
            report.by_model.entry(model).or_default().merge(&r);
        }
        Ok(())
    }
}
