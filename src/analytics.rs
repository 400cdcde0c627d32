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
    let hours = txn.open_table(tables::ANALYTICS_HOURLY)?;
    let mut acc = Accumulator::new(bucket_secs);
    for (lo, hi, unit_secs) in spans(start, end, acc.bucket) {
        let table = if unit_secs == 3600 { &hours } else { &minutes };
        acc.scan(table, gateway, lo, hi, unit_secs)?;
    }
    Ok(acc.finish())
}

/// The units a report reads, as (first, end, unit length in seconds): minutes [from, to] of the
/// range, but with buckets of whole hours, the whole hours [h0, h1) inside it from the hourly
/// sums and only the partial hours at its edges from the minutes.
fn spans(start: i64, end: i64, bucket: i64) -> Vec<(u64, u64, i64)> {
    let from = u64::try_from(start.max(0) / 60).unwrap_or(0);
    let to = u64::try_from(end.max(0) / 60).unwrap_or(0);
    let (h0, h1) = (from.div_ceil(60), (to + 1) / 60);
    if bucket % 3600 == 0 && h0 < h1 {
        vec![(from, h0 * 60, 60), (h0, h1, 3600), (h1 * 60, to + 1, 60)]
    } else {
        vec![(from, to + 1, 60)]
    }
}

struct Accumulator {
    bucket: i64,
    report: Report,
    series: BTreeMap<i64, Rollup>,
}

impl Accumulator {
    fn new(bucket_secs: i64) -> Self {
        Self { bucket: bucket_secs.max(60), report: Report::default(), series: BTreeMap::new() }
    }

    fn finish(self) -> Report {
        let mut report = self.report;
        report.series = self.series.into_iter().collect();
        report
    }

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
            self.add(i64::try_from(unit).unwrap_or(0) * unit_secs, provider, model, &r);
        }
        Ok(())
    }

    /// Adds one unit's sums (`at`: its start in unix seconds).
    fn add(&mut self, at: i64, provider: &str, model: &str, r: &Rollup) {
        let report = &mut self.report;
        report.totals.merge(r);
        self.series.entry(at - at.rem_euclid(self.bucket)).or_default().merge(r);
        report.by_provider.entry(provider.to_string()).or_default().merge(r);
        let model = if model.is_empty() { "(unknown)".to_string() } else { model.to_string() };
        report.by_model.entry(model).or_default().merge(r);
    }

    /// Cluster mode: adds the units [lo, hi) of every node from PostgreSQL (`unit`: `m` or `h`).
    fn scan_pg(
        &mut self,
        client: &mut postgres::Client,
        gateway: &str,
        (lo, hi): (u64, u64),
        unit: u8,
        unit_secs: i64,
    ) -> Result<(), crate::store::replica::PgError> {
        if lo >= hi {
            return Ok(());
        }
        let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let rows = client.query(
            "SELECT at, provider, model, requests, errors, cached, tokens_in, tokens_out, cost, duration_ms \
             FROM torii_rollups WHERE gateway = $1 AND unit = $2 AND at >= $3 AND at < $4",
            &[&gateway, &i8::try_from(unit).unwrap_or(0), &big(lo), &big(hi)],
        )?;
        let n = |row: &postgres::Row, i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
        for row in rows {
            let r = Rollup {
                requests: n(&row, 3),
                errors: n(&row, 4),
                cached: n(&row, 5),
                tokens_in: n(&row, 6),
                tokens_out: n(&row, 7),
                cost: row.get(8),
                duration_ms: n(&row, 9),
            };
            let at: i64 = row.get(0);
            self.add(at.saturating_mul(unit_secs), row.get(1), row.get(2), &r);
        }
        Ok(())
    }
}

/// Cluster mode: [`report`] over every node's rollups in PostgreSQL.
pub fn report_pg(
    client: &mut postgres::Client,
    gateway: &str,
    start: i64,
    end: i64,
    bucket_secs: i64,
) -> Result<Report, crate::store::replica::PgError> {
    let mut acc = Accumulator::new(bucket_secs);
    for (lo, hi, unit_secs) in spans(start, end, acc.bucket) {
        acc.scan_pg(client, gateway, (lo, hi), if unit_secs == 3600 { b'h' } else { b'm' }, unit_secs)?;
    }
    Ok(acc.finish())
}
