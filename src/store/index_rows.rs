//! The log index's rows (`tables::LOG_INDEX`): per (gateway, field, value), the ids of the logs
//! in one time bucket in one row. `logs::index` reads and writes them; the conversion from the
//! one-row-per-log layout of schema 2 runs at open.

use redb::{ReadableTable, StorageError, Table, TableDefinition, TableHandle, WriteTransaction};

use super::StoreError;

/// Index rows: (gateway, field, value, time bucket) → the ids of the logs with that value whose
/// id falls in the bucket, sorted, 16 bytes each (big-endian). One row per bucket instead of one
/// per log, so a batch of logs with the same value costs one B-tree insert per bucket it spans.
pub type IndexKey<'a> = (&'a str, &'a str, &'a str, u64);

/// A bucket holds the ids created within 2^4 = 16 ms (a UUIDv7's top 48 bits are unix
/// milliseconds): at 20,000 logs a second about 320 ids, 5 KB.
const BUCKET_SHIFT: u32 = 80 + 4;

/// The bucket a log id falls in; buckets ascend with ids, so buckets in order hold ids in order.
#[must_use]
pub fn bucket(id: u128) -> u64 {
    // 128 - 84 = 44 bits: always fits.
    u64::try_from(id >> BUCKET_SHIFT).unwrap_or(u64::MAX)
}

pub(crate) fn decode(bytes: &[u8]) -> Vec<u128> {
    bytes.chunks_exact(16).map(|c| u128::from_be_bytes(c.try_into().unwrap_or([0; 16]))).collect()
}

pub(crate) fn encode(ids: &[u128]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_be_bytes()).collect()
}

/// The index of schema 2: one row per (gateway, field, value, log id).
const INDEX_V1: TableDefinition<(&str, &str, &str, u128), ()> = TableDefinition::new("log_index_v1");

/// Schema 3: rewrites the index of schema 2 as bucket rows (in key order, a bucket at a time, so
/// memory stays bounded) and deletes the old table.
pub(crate) fn convert_v1(txn: &WriteTransaction) -> Result<(), StoreError> {
    let exists = txn.list_tables()?.any(|t| t.name() == INDEX_V1.name());
    if !exists {
        return Ok(());
    }
    {
        let old = txn.open_table(INDEX_V1)?;
        let mut new = txn.open_table(super::tables::LOG_INDEX)?;
        let mut current: Option<((String, String, String), u64)> = None;
        let mut ids: Vec<u128> = Vec::new();
        let flush = |new: &mut Table<'_, IndexKey<'static>, &'static [u8]>,
                     at: &Option<((String, String, String), u64)>,
                     ids: &mut Vec<u128>|
         -> Result<(), StorageError> {
            if let Some(((g, f, v), b)) = at
                && !ids.is_empty()
            {
                new.insert((g.as_str(), f.as_str(), v.as_str(), *b), encode(ids).as_slice())?;
            }
            ids.clear();
            Ok(())
        };
        for row in old.iter()? {
            let (k, _) = row?;
            let (g, f, v, id) = k.value();
            let here = current.as_ref().is_some_and(|((cg, cf, cv), cb)| {
                (cg.as_str(), cf.as_str(), cv.as_str(), *cb) == (g, f, v, bucket(id))
            });
            if !here {
                flush(&mut new, &current, &mut ids)?;
                current = Some(((g.to_string(), f.to_string(), v.to_string()), bucket(id)));
            }
            ids.push(id);
        }
        flush(&mut new, &current, &mut ids)?;
    }
    txn.delete_table(INDEX_V1)?;
    Ok(())
}
