//! The rollup value stored per gateway × time unit × provider × model, and its table arithmetic
//! (the log writer adds into it; the schema 1 → 2 migration derives the hourly table from it).

use std::collections::BTreeMap;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::{StoreError, tables};

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

type RollupTable<'t> = redb::Table<'t, (&'static str, u64, &'static str, &'static str), &'static [u8]>;

/// Adds rollups into a rollup table (per minute or per hour), read-modify-write per key.
pub(crate) fn merge_into<'k>(
    table: &mut RollupTable<'_>,
    rollups: impl IntoIterator<Item = ((&'k str, u64, &'k str, &'k str), Rollup)>,
) -> Result<(), StoreError> {
    for (key, add) in rollups {
        let mut current: Rollup =
            table.get(key)?.and_then(|v| postcard::from_bytes(v.value()).ok()).unwrap_or_default();
        current.merge(&add);
        let bytes = postcard::to_stdvec(&current)?;
        table.insert(key, bytes.as_slice())?;
    }
    Ok(())
}

/// Schema 1 → 2: the hourly rollups, summed from the per-minute ones.
pub(crate) fn backfill_hours(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let minutes = txn.open_table(tables::ANALYTICS)?;
    let mut hours: BTreeMap<(String, u64, String, String), Rollup> = BTreeMap::new();
    for row in minutes.iter()? {
        let (key, value) = row?;
        let (gateway, minute, provider, model) = key.value();
        let Ok(r) = postcard::from_bytes::<Rollup>(value.value()) else { continue };
        hours.entry((gateway.to_string(), minute / 60, provider.to_string(), model.to_string())).or_default().merge(&r);
    }
    let mut table = txn.open_table(tables::ANALYTICS_HOURLY)?;
    merge_into(&mut table, hours.iter().map(|((g, h, p, m), r)| ((g.as_str(), *h, p.as_str(), m.as_str()), r.clone())))
}
