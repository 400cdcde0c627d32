//! The redb store: table definitions, one codec, typed accessors, schema migrations at open.
//!
//! Configuration objects (gateways, tokens, custom providers) are small serde records stored as
//! JSON under their id. The request path never reads them from here: it uses the in-memory
//! snapshot built from them (see `settings`).

mod records;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use records::{
    AdminRecord, Backoff, CustomProviderRecord, GatewayRecord, LogStrategy, ProviderKeyRecord, RateLimitTechnique,
    Scope, TokenRecord,
};

/// Schema version this build writes; older files are migrated at open.
pub const SCHEMA_VERSION: u64 = 2;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Log and analytics tables. Keys are big-endian tuples, so ranges come out ordered: logs by
/// (gateway, UUIDv7) are in time order.
pub mod tables {
    use redb::TableDefinition;

    /// (gateway, log id) → postcard `LogMeta`.
    pub const LOGS: TableDefinition<(&str, u128), &[u8]> = TableDefinition::new("logs_v1");
    /// log id → lz4(postcard `LogBodies`).
    pub const LOG_BODIES: TableDefinition<u128, &[u8]> = TableDefinition::new("log_bodies_v1");
    /// (gateway, field, value, log id) → (): secondary indexes for filters.
    pub const LOG_INDEX: TableDefinition<(&str, &str, &str, u128), ()> = TableDefinition::new("log_index_v1");
    /// (gateway, field, value) → number of logs; ("", "") is the gateway's total.
    pub const LOG_COUNTS: TableDefinition<(&str, &str, &str), u64> = TableDefinition::new("log_counts_v1");
    /// (gateway, unix minute, provider, model) → postcard `Rollup`.
    pub const ANALYTICS: TableDefinition<(&str, u64, &str, &str), &[u8]> = TableDefinition::new("analytics_v1");
    /// (gateway, unix hour, provider, model) → postcard `Rollup`: the same sums by hour, so a
    /// month's report reads 720 rows per series instead of 43,200.
    pub const ANALYTICS_HOURLY: TableDefinition<(&str, u64, &str, &str), &[u8]> =
        TableDefinition::new("analytics_hourly_v1");
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the database file.
    #[error("the database {0} is in use by another torii process (is `torii serve` running? stop it first)")]
    InUse(String),
    /// The file was written by a newer Torii.
    #[error("the database has schema version {found}, newer than this build's {SCHEMA_VERSION}; upgrade torii")]
    FutureSchema { found: u64 },
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    Dir { path: String, source: std::io::Error },
    /// redb reported an error.
    #[error("database error: {0}")]
    Db(#[from] redb::Error),
    /// A stored value could not be decoded.
    #[error("corrupt record: {0}")]
    Codec(#[from] serde_json::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { Self::Db(e.into()) }
        }
    )*};
}
from_redb!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// A record stored as JSON under a string key in its own table.
pub trait Record: Serialize + DeserializeOwned {
    /// The table holding records of this type.
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]>;
    /// The record's key.
    fn key(&self) -> &str;
}

/// The open database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl Store {
    /// Opens (creating if needed) the database file and runs migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::Dir { path: dir.display().to_string(), source })?;
        }
        let db = Database::builder().set_cache_size(64 << 20).create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse(path.display().to_string()),
            other => StoreError::Db(other.into()),
        })?;
        let store = Self { db: Arc::new(db) };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("schema_version")?.map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => return Err(StoreError::FutureSchema { found: v }),
                Some(v) if v == SCHEMA_VERSION => {}
                Some(1) => {
                    // Version 2 adds the hourly rollups: derive them from the per-minute ones.
                    crate::analytics::backfill_hours(&txn)?;
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
                _ => {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
            }
            txn.open_table(GatewayRecord::TABLE)?;
            txn.open_table(TokenRecord::TABLE)?;
            txn.open_table(CustomProviderRecord::TABLE)?;
            txn.open_table(ProviderKeyRecord::TABLE)?;
            txn.open_table(AdminRecord::TABLE)?;
            txn.open_table(tables::LOGS)?;
            txn.open_table(tables::LOG_BODIES)?;
            txn.open_table(tables::LOG_INDEX)?;
            txn.open_table(tables::LOG_COUNTS)?;
            txn.open_table(tables::ANALYTICS)?;
            txn.open_table(tables::ANALYTICS_HOURLY)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The database, for the log writer and queries (tables in [`tables`]).
    #[must_use]
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get("schema_version")?.map_or(0, |v| v.value()))
    }

    /// Every record of a type, in key order.
    pub fn list<R: Record>(&self) -> Result<Vec<R>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(R::TABLE)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, value) = entry?;
            out.push(serde_json::from_slice(value.value())?);
        }
        Ok(out)
    }

    /// One record by key.
    pub fn get<R: Record>(&self, key: &str) -> Result<Option<R>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(R::TABLE)?;
        let value = table.get(key)?;
        Ok(match value {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    /// Inserts a record unless its key exists; returns whether it was inserted.
    pub fn insert_new<R: Record>(&self, record: &R) -> Result<bool, StoreError> {
        let bytes = serde_json::to_vec(record)?;
        let txn = self.db.begin_write()?;
        let inserted = {
            let mut table = txn.open_table(R::TABLE)?;
            if table.get(record.key())?.is_some() {
                false
            } else {
                table.insert(record.key(), bytes.as_slice())?;
                true
            }
        };
        txn.commit()?;
        Ok(inserted)
    }

    /// Inserts or replaces a record.
    pub fn put<R: Record>(&self, record: &R) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record)?;
        let txn = self.db.begin_write()?;
        txn.open_table(R::TABLE)?.insert(record.key(), bytes.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Changes records in place in one write transaction (no lost update against a concurrent
    /// writer); `change` returns whether it changed the record. Missing keys are skipped.
    pub fn update<R: Record>(
        &self,
        keys: &[String],
        mut change: impl FnMut(&mut R) -> bool,
    ) -> Result<usize, StoreError> {
        let txn = self.db.begin_write()?;
        let mut changed = 0;
        {
            let mut table = txn.open_table(R::TABLE)?;
            for key in keys {
                let current = table.get(key.as_str())?.map(|v| serde_json::from_slice::<R>(v.value())).transpose()?;
                let Some(mut record) = current else { continue };
                if change(&mut record) {
                    let bytes = serde_json::to_vec(&record)?;
                    table.insert(key.as_str(), bytes.as_slice())?;
                    changed += 1;
                }
            }
        }
        txn.commit()?;
        Ok(changed)
    }

    /// Deletes a record; returns whether it existed.
    pub fn delete<R: Record>(&self, key: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_write()?;
        let existed = txn.open_table(R::TABLE)?.remove(key)?.is_some();
        txn.commit()?;
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::{Rollup, merge_into, report};

    #[test]
    fn hourly_rollups_are_backfilled_from_schema_1_and_reports_agree_with_minutes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let base = 480_000_u64; // an hour boundary in minutes
        let minutes = [base + 5, base + 59, base + 60, base + 61, base + 119, base + 150, base + 185];
        {
            let store = Store::open(&path).unwrap();
            let txn = store.db.begin_write().unwrap();
            {
                // A schema-1 file: per-minute rollups only.
                let rows = minutes.iter().enumerate().map(|(i, m)| {
                    let r = Rollup { requests: 1 + i as u64, tokens_in: 10 * (1 + i as u64), ..Rollup::default() };
                    (("gw", *m, "openai", if i % 2 == 0 { "a" } else { "b" }), r)
                });
                merge_into(&mut txn.open_table(tables::ANALYTICS).unwrap(), rows).unwrap();
                txn.open_table(META).unwrap().insert("schema_version", 1).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let secs = |m: u64| i64::try_from(m * 60).unwrap();
        // Mid-hour edges on both sides, so minutes and hours are combined.
        for (start, end) in
            [(secs(base + 30), secs(base + 160)), (secs(base), secs(base + 240)), (secs(base + 61), secs(base + 61))]
        {
            let by_minute = report(&store, "gw", start, end, 60).unwrap();
            let by_hour = report(&store, "gw", start, end, 3600).unwrap();
            assert_eq!(by_hour.totals, by_minute.totals, "{start}..{end}");
            assert_eq!(by_hour.by_model, by_minute.by_model);
            let mut rebucketed: std::collections::BTreeMap<i64, Rollup> = std::collections::BTreeMap::new();
            for (t, r) in &by_minute.series {
                rebucketed.entry(t - t.rem_euclid(3600)).or_default().merge(r);
            }
            assert_eq!(by_hour.series, rebucketed.into_iter().collect::<Vec<_>>());
        }
        let all = report(&store, "gw", secs(base), secs(base + 240), 86_400).unwrap();
        assert_eq!(all.totals.requests, (1..=7).sum::<u64>());
    }

    #[test]
    fn second_open_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let err = Store::open(&path).err().unwrap();
        assert!(matches!(err, StoreError::InUse(_)), "{err}");
    }

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.redb")).unwrap();
        let gw = GatewayRecord::new_default("2026-01-01T00:00:00Z");
        assert!(store.insert_new(&gw).unwrap());
        assert!(!store.insert_new(&gw).unwrap());
        let got: GatewayRecord = store.get("default").unwrap().unwrap();
        assert_eq!(got.id, "default");
        assert!(store.delete::<GatewayRecord>("default").unwrap());
        assert!(store.list::<GatewayRecord>().unwrap().is_empty());
    }
}
