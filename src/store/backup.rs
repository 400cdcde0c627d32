//! A consistent copy of the store while it serves: one read transaction (a snapshot that later
//! commits do not change) copied table by table into a new file, in bounded write batches, then
//! renamed into place. Restoring checks a copy and installs it while no server runs.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{META, Record, Store, StoreError, tables};
use crate::store::{
    AdminRecord, AliasRecord, CustomProviderRecord, DatasetRecord, DlpProfileRecord, EvaluationRecord, GatewayRecord,
    ProviderKeyRecord, RouteRecord, TokenRecord,
};

/// Entries written per destination transaction (bounds the copy's memory).
const BATCH: usize = 10_000;

/// What a backup copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Entries across all tables.
    pub entries: u64,
    /// Size of the new file in bytes.
    pub bytes: u64,
}

fn copy_table<K, V>(src: &redb::ReadTransaction, dst: &Database, def: TableDefinition<K, V>) -> Result<u64, StoreError>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
{
    let from = match src.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut iter = from.iter()?;
    let mut copied = 0;
    loop {
        let mut txn = dst.begin_write()?;
        txn.set_durability(redb::Durability::None).map_err(|e| StoreError::Closed(e.to_string()))?;
        let mut done = false;
        {
            let mut to = txn.open_table(def)?;
            for _ in 0..BATCH {
                let Some(entry) = iter.next() else {
                    done = true;
                    break;
                };
                let (k, v) = entry?;
                to.insert(k.value(), v.value())?;
                copied += 1;
            }
        }
        txn.commit()?;
        if done {
            return Ok(copied);
        }
    }
}

impl Store {
    /// Writes a consistent copy of the whole store to `path` (which must not exist yet).
    pub fn backup_to(&self, path: &Path) -> Result<Copied, StoreError> {
        if path.exists() {
            return Err(StoreError::Closed(format!("{} exists already; name a new file", path.display())));
        }
        let partial = path.with_extension("partial");
        let _ = std::fs::remove_file(&partial);
        let result = (|| {
            let dst =
                Database::builder().set_cache_size(32 << 20).create(&partial).map_err(|e| StoreError::Db(e.into()))?;
            let db = self.db()?;
            let src = db.begin_read()?;
            let mut entries = 0;
            entries += copy_table(&src, &dst, META)?;
            entries += copy_table(&src, &dst, GatewayRecord::TABLE)?;
            entries += copy_table(&src, &dst, TokenRecord::TABLE)?;
            entries += copy_table(&src, &dst, CustomProviderRecord::TABLE)?;
            entries += copy_table(&src, &dst, ProviderKeyRecord::TABLE)?;
            entries += copy_table(&src, &dst, AdminRecord::TABLE)?;
            entries += copy_table(&src, &dst, DlpProfileRecord::TABLE)?;
            entries += copy_table(&src, &dst, RouteRecord::TABLE)?;
            entries += copy_table(&src, &dst, AliasRecord::TABLE)?;
            entries += copy_table(&src, &dst, DatasetRecord::TABLE)?;
            entries += copy_table(&src, &dst, EvaluationRecord::TABLE)?;
            entries += copy_table(&src, &dst, tables::LOGS)?;
            entries += copy_table(&src, &dst, tables::LOG_BODIES)?;
            entries += copy_table(&src, &dst, tables::LOG_BODY_CHUNKS)?;
            entries += copy_table(&src, &dst, tables::LOG_BODY_AT)?;
            entries += copy_table(&src, &dst, tables::LOG_INDEX)?;
            entries += copy_table(&src, &dst, tables::LOG_COUNTS)?;
            entries += copy_table(&src, &dst, tables::ANALYTICS)?;
            entries += copy_table(&src, &dst, tables::ANALYTICS_HOURLY)?;
            entries += copy_table(&src, &dst, tables::SPEND)?;
            entries += copy_table(&src, &dst, tables::EXPORT_QUEUE)?;
            // One durable commit at the end makes every batch persistent.
            let txn = dst.begin_write()?;
            txn.commit()?;
            drop(dst);
            Ok(entries)
        })();
        let entries = match result {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        };
        std::fs::rename(&partial, path)
            .map_err(|e| StoreError::Closed(format!("cannot move the backup into place: {e}")))?;
        super::owner_only(path);
        let bytes = std::fs::metadata(path).map_or(0, |m| m.len());
        Ok(Copied { entries, bytes })
    }
}

/// Installs the backup `from` as the database `to`: checks it first, keeps the current file as
/// `torii.redb.before-restore`. The caller makes sure no server holds `to`.
pub fn restore(from: &Path, to: &Path) -> Result<String, StoreError> {
    let report = Store::check(from)?;
    let staged = to.with_extension("restoring");
    std::fs::copy(from, &staged).map_err(|e| StoreError::Closed(format!("cannot copy {}: {e}", from.display())))?;
    if to.exists() {
        let keep = to.with_extension("redb.before-restore");
        std::fs::rename(to, &keep)
            .map_err(|e| StoreError::Closed(format!("cannot set the current database aside: {e}")))?;
    }
    std::fs::rename(&staged, to).map_err(|e| StoreError::Closed(format!("cannot install the backup: {e}")))?;
    super::owner_only(to);
    Ok(report)
}
