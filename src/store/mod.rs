//! The redb store: table definitions, one codec, typed accessors, schema migrations at open.
//!
//! Configuration objects (gateways, tokens, custom providers) are small serde records stored as
//! JSON under their id. The request path never reads them from here: it uses the in-memory
//! snapshot built from them (see `control`).

pub mod backup;
pub mod index_rows;
pub mod pace;
mod paced_file;
mod records;
pub mod replica;
pub mod rollups;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use records::{
    AdminRecord, AliasRecord, Backoff, CustomProviderRecord, DatasetRecord, DlpProfileRecord, EvaluationRecord,
    EvaluationResult, GatewayRecord, LogStrategy, ProviderKeyRecord, RateLimitTechnique, RouteDeployment, RouteRecord,
    RouteVersion, Scope, TokenLimits, TokenRecord, glob,
};

/// Schema version this build writes; older files are migrated at open.
pub const SCHEMA_VERSION: u64 = 3;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The META key holding the cluster control plane's version this replica is at.
const CONTROL_VERSION: &str = "control_version";

/// Every control record table (the tables cluster mode keeps in PostgreSQL).
fn record_tables() -> [TableDefinition<'static, &'static str, &'static [u8]>; 10] {
    [
        GatewayRecord::TABLE,
        TokenRecord::TABLE,
        CustomProviderRecord::TABLE,
        ProviderKeyRecord::TABLE,
        AdminRecord::TABLE,
        DlpProfileRecord::TABLE,
        RouteRecord::TABLE,
        AliasRecord::TABLE,
        DatasetRecord::TABLE,
        EvaluationRecord::TABLE,
    ]
}

thread_local! {
    /// While a write transaction runs in cluster mode: the control records it changed.
    static JOURNAL: RefCell<Option<Vec<replica::Row>>> = const { RefCell::new(None) };
}

/// Notes a control record change for the transaction running on this thread (cluster mode).
fn journal(table: &str, key: &str, body: Option<&[u8]>) {
    JOURNAL.with_borrow_mut(|j| {
        if let Some(j) = j {
            j.retain(|(t, k, _)| !(t == table && k == key));
            j.push((table.to_string(), key.to_string(), body.map(<[u8]>::to_vec)));
        }
    });
}

/// Log and analytics tables. Keys are big-endian tuples, so ranges come out ordered: logs by
/// (gateway, UUIDv7) are in time order.
pub mod tables {
    use redb::TableDefinition;

    /// (gateway, log id) → postcard `LogMeta`.
    pub const LOGS: TableDefinition<(&str, u128), &[u8]> = TableDefinition::new("logs_v1");
    /// log id → lz4(postcard `LogBodies`): logs written before body chunks (schema 3).
    pub const LOG_BODIES: TableDefinition<u128, &[u8]> = TableDefinition::new("log_bodies_v1");
    /// chunk number → the encoded bodies of logs committed together (`logs::bodies`).
    pub const LOG_BODY_CHUNKS: TableDefinition<u64, &[u8]> = TableDefinition::new("log_body_chunks_v1");
    /// log id → the number of the chunk holding its bodies.
    pub const LOG_BODY_AT: TableDefinition<u128, u64> = TableDefinition::new("log_body_at_v1");
    /// (gateway, field, value, time bucket) → the ids with that value in the bucket: secondary
    /// indexes for filters (`logs::index`).
    pub const LOG_INDEX: TableDefinition<(&str, &str, &str, u64), &[u8]> = TableDefinition::new("log_index_v2");
    /// (gateway, field, value) → number of logs; ("", "") is the gateway's total.
    pub const LOG_COUNTS: TableDefinition<(&str, &str, &str), u64> = TableDefinition::new("log_counts_v1");
    /// (gateway, unix minute, provider, model) → postcard `Rollup`.
    pub const ANALYTICS: TableDefinition<(&str, u64, &str, &str), &[u8]> = TableDefinition::new("analytics_v1");
    /// (gateway, unix hour, provider, model) → postcard `Rollup`: the same sums by hour, so a
    /// month's report reads 720 rows per series instead of 43,200.
    pub const ANALYTICS_HOURLY: TableDefinition<(&str, u64, &str, &str), &[u8]> =
        TableDefinition::new("analytics_hourly_v1");
    /// spend bucket key → its settled spend (the spend ledger's snapshot, JSON).
    pub const SPEND: TableDefinition<&str, &[u8]> = TableDefinition::new("spend_v1");
    /// sequence → (gateway, log id): stored logs waiting to be exported, in commit order.
    pub const EXPORT_QUEUE: TableDefinition<u64, (&str, u128)> = TableDefinition::new("export_queue_v1");
    /// Cluster mode: logs committed here and not yet copied to PostgreSQL, by sequence number.
    pub const SHIP_QUEUE: TableDefinition<u64, (&str, u128)> = TableDefinition::new("ship_queue_v1");
    /// Cluster mode: each log batch's per-minute rollups not yet added in PostgreSQL, by sequence
    /// number (postcard `Vec<(gateway, minute, provider, model, Rollup)>`).
    pub const SHIP_ROLLUPS: TableDefinition<u64, &[u8]> = TableDefinition::new("ship_rollups_v1");
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
    /// A value could not be encoded for storage (postcard).
    #[error("cannot encode a record: {0}")]
    Encode(#[from] postcard::Error),
    /// The database file exists but is empty: not a database, and not a new appliance either.
    #[error(
        "the database {0} is an empty file (0 bytes), not a Torii database; restore a backup (`torii restore FILE`) or remove the file to start a new appliance"
    )]
    EmptyFile(String),
    /// The database is closed for a re-open after an I/O failure.
    #[error("the database is being re-opened after a write failure: {0}")]
    Closed(String),
    /// A file next to the database could not be written.
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    /// Cluster mode: the change could not be published to PostgreSQL (nothing changed here).
    #[error("the cluster's settings store is unreachable: {0}")]
    Replica(String),
    /// The file could not be opened as a database (damaged or not a redb file).
    #[error("cannot open the database {path}: {reason}; run `torii check` on it, or restore a backup")]
    Unreadable { path: String, reason: String },
}

impl StoreError {
    /// Whether redb failed on the file itself (disk full, I/O error), after which it refuses every
    /// write until the file is re-opened.
    #[must_use]
    pub fn is_io(&self) -> bool {
        matches!(self, Self::Db(redb::Error::Io(_) | redb::Error::PreviousIo) | Self::Closed(_))
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { Self::Db(e.into()) }
        }
    )*};
}
from_redb!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// The queues of logs waiting to leave the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// For the log export receiver (`logpush`).
    Export,
    /// Cluster mode: for PostgreSQL.
    Ship,
}

impl Queue {
    fn table(self) -> TableDefinition<'static, u64, (&'static str, u128)> {
        match self {
            Self::Export => tables::EXPORT_QUEUE,
            Self::Ship => tables::SHIP_QUEUE,
        }
    }
}

/// A record stored as JSON under a string key in its own table.
pub trait Record: Serialize + DeserializeOwned {
    /// The table holding records of this type.
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]>;
    /// The record's key.
    fn key(&self) -> &str;
}

impl Store {
    /// Verifies a database file that no server holds: opens it (a damaged file is an error naming
    /// it), runs redb's integrity check over every page, and reads every record table.
    pub fn check(path: &Path) -> Result<String, StoreError> {
        refuse_empty(path)?;
        let shown = path.display().to_string();
        let unreadable = |reason: String| StoreError::Unreadable { path: shown.clone(), reason };
        let opened = catch_quietly(|| Database::builder().set_cache_size(64 << 20).open(path))
            .ok_or_else(|| unreadable("its pages are damaged".into()))?;
        let mut db = opened.map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse(shown.clone()),
            other => unreadable(other.to_string()),
        })?;
        let intact = catch_quietly(|| db.check_integrity())
            .ok_or_else(|| unreadable("the integrity check met damaged pages".into()))?
            .map_err(|e| unreadable(e.to_string()))?;
        if !intact {
            return Err(unreadable("the integrity check found damage (redb repaired what it could)".into()));
        }
        let store = Self::wrap(path, db);
        let counted = catch_quietly(|| -> Result<String, StoreError> {
            let gateways = store.list::<GatewayRecord>()?.len();
            let tokens = store.list::<TokenRecord>()?.len();
            let keys = store.list::<ProviderKeyRecord>()?.len();
            Ok(format!("ok ({gateways} gateways, {tokens} tokens, {keys} stored keys)"))
        })
        .ok_or_else(|| unreadable("a table is damaged".into()))??;
        Ok(counted)
    }
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Inserts `rows`, sorted by key, into the gap of `table` after the greatest key up to `gap`
/// (the whole table for `Unbounded`). Rows newer than what the table holds there go in through
/// one cursor, which buffers them and writes full pages: about 40 % less time than one
/// `insert` each (the log writer's batches, measured on redb 4.6). A row that does not sort
/// after the rows before it (an older id, or a key given twice) is inserted the ordinary way
/// afterwards, so the table ends as if each row had been inserted in turn.
pub fn insert_sorted<'r, K: redb::Key + 'static, V: redb::Value + 'static>(
    table: &mut redb::Table<'_, K, V>,
    gap: std::ops::Bound<&K::SelfType<'r>>,
    rows: &[(K::SelfType<'r>, V::SelfType<'r>)],
) -> Result<(), redb::StorageError> {
    for i in insert_in_gap(table, gap, rows)? {
        let (key, value) = &rows[i];
        table.insert(key, value)?;
    }
    Ok(())
}

/// The cursor pass of [`insert_sorted`]: returns the positions in `rows` of those it did not
/// insert (a key at or past the row after the gap), for the caller to insert its own way.
pub fn insert_in_gap<'r, K: redb::Key + 'static, V: redb::Value + 'static>(
    table: &mut redb::Table<'_, K, V>,
    gap: std::ops::Bound<&K::SelfType<'r>>,
    rows: &[(K::SelfType<'r>, V::SelfType<'r>)],
) -> Result<Vec<usize>, redb::StorageError> {
    let mut late = Vec::new();
    let mut cursor = table.upper_bound_mut(gap)?;
    for (i, (key, value)) in rows.iter().enumerate() {
        if i % 16 == 15 {
            pace::pace();
        }
        match cursor.insert_before(key, value) {
            Ok(()) => {}
            Err(redb::CursorError::UnorderedKey) => late.push(i),
            Err(redb::CursorError::Storage(e)) => return Err(e),
            Err(e) => return Err(redb::StorageError::Corrupted(e.to_string())),
        }
    }
    cursor.close()?;
    Ok(late)
}

/// Runs `f`, turning a panic into `None` without the panic hook's report: redb panics on some
/// damaged pages, and the caller reports that as an error naming the file instead.
pub fn catch_quietly<T>(f: impl FnOnce() -> T) -> Option<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result.ok()
}

/// Opens (or creates) the file: an empty existing file is refused, a damaged one is an error
/// naming it (redb may panic on some damage), the file is readable by its owner only.
fn open_db(path: &Path) -> Result<Database, StoreError> {
    refuse_empty(path)?;
    let shown = path.display().to_string();
    let opened = catch_quietly(|| -> Result<Database, redb::DatabaseError> {
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let file = paced_file::PacedFile::new(file)?;
        Database::builder().set_cache_size(64 << 20).create_with_backend(file)
    })
    .ok_or_else(|| StoreError::Unreadable { path: shown.clone(), reason: "its pages are damaged".into() })?;
    let db = opened.map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse(shown.clone()),
        other => StoreError::Unreadable { path: shown.clone(), reason: other.to_string() },
    })?;
    owner_only(path);
    Ok(db)
}

/// Refuses an existing empty file: it is neither a database nor a new appliance.
fn refuse_empty(path: &Path) -> Result<(), StoreError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() == 0 => Err(StoreError::EmptyFile(path.display().to_string())),
        _ => Ok(()),
    }
}

/// The database holds hashes, logs and sealed keys: its owner only may read it (mode 0600).
fn owner_only(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(path = %path.display(), error = %e, "cannot make the database readable by its owner only");
        }
    }
}

/// The open database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// `None` while the file is being re-opened after an I/O failure.
    db: ArcSwapOption<Database>,
    /// Why the last write failed, until a write succeeds again.
    failing: Mutex<Option<String>>,
    /// Cluster mode: where control record changes are published.
    replica: OnceLock<Arc<replica::Replica>>,
    /// Cluster mode: a connection of its own for the logs and analytics queries (a long listing
    /// never holds up a settings change).
    reader: OnceLock<Arc<replica::Replica>>,
    /// Cluster mode: taken while logs are copied to PostgreSQL, and while a log not there yet is
    /// changed here (so the change cannot fall between the copy's read and its write).
    ship_lock: Mutex<()>,
    /// One re-open at a time, and not more often than [`REOPEN_EVERY`].
    reopened: Mutex<Option<Instant>>,
    /// Threads waiting to begin a write transaction (see [`Store::writes_waiting`]).
    writes_waiting: AtomicU32,
}

/// How often a failed store is re-opened at most.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

impl Store {
    fn wrap(path: &Path, db: Database) -> Self {
        Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                db: ArcSwapOption::from_pointee(db),
                failing: Mutex::new(None),
                replica: OnceLock::new(),
                reader: OnceLock::new(),
                ship_lock: Mutex::new(()),
                reopened: Mutex::new(None),
                writes_waiting: AtomicU32::new(0),
            }),
        }
    }

    /// Begins a write transaction, counted while it waits for the one before it.
    fn begin_write(&self, db: &Database) -> Result<redb::WriteTransaction, redb::TransactionError> {
        self.inner.writes_waiting.fetch_add(1, Relaxed);
        let txn = db.begin_write();
        self.inner.writes_waiting.fetch_sub(1, Relaxed);
        txn
    }

    /// Whether a thread waits to begin a write transaction. The log writer, running in the
    /// background ([`pace`]), leaves it then: starved of the core while it holds the file's one
    /// write transaction, it would hold a settings change up behind it.
    #[must_use]
    pub fn writes_waiting(&self) -> bool {
        self.inner.writes_waiting.load(Relaxed) > 0
    }

    /// Opens (creating if needed) the database file and runs migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::Dir { path: dir.display().to_string(), source })?;
        }
        let db = open_db(path)?;
        let store = Self::wrap(path, db);
        let shown = path.display().to_string();
        catch_quietly(|| store.migrate())
            .ok_or_else(|| StoreError::Unreadable { path: shown, reason: "its tables are damaged".into() })??;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let txn = self.db()?.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("schema_version")?.map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => return Err(StoreError::FutureSchema { found: v }),
                Some(v) if v == SCHEMA_VERSION => {}
                Some(v @ (1 | 2)) => {
                    // Version 2 adds the hourly rollups: derive them from the per-minute ones.
                    if v < 2 {
                        rollups::backfill_hours(&txn)?;
                    }
                    // Version 3 keeps the index in time buckets.
                    index_rows::convert_v1(&txn)?;
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
            txn.open_table(DlpProfileRecord::TABLE)?;
            txn.open_table(RouteRecord::TABLE)?;
            txn.open_table(AliasRecord::TABLE)?;
            txn.open_table(DatasetRecord::TABLE)?;
            txn.open_table(EvaluationRecord::TABLE)?;
            txn.open_table(tables::LOGS)?;
            txn.open_table(tables::LOG_BODIES)?;
            txn.open_table(tables::LOG_BODY_CHUNKS)?;
            txn.open_table(tables::LOG_BODY_AT)?;
            txn.open_table(tables::LOG_INDEX)?;
            txn.open_table(tables::LOG_COUNTS)?;
            txn.open_table(tables::ANALYTICS)?;
            txn.open_table(tables::ANALYTICS_HOURLY)?;
            txn.open_table(tables::SPEND)?;
            txn.open_table(tables::EXPORT_QUEUE)?;
            txn.open_table(tables::SHIP_QUEUE)?;
            txn.open_table(tables::SHIP_ROLLUPS)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The database, for the log writer and queries (tables in [`tables`]). While the file is
    /// being re-opened after an I/O failure: an error (and, at most once a second, another try).
    pub fn db(&self) -> Result<Arc<Database>, StoreError> {
        if let Some(db) = self.inner.db.load_full() {
            return Ok(db);
        }
        self.reopen();
        self.inner.db.load_full().ok_or_else(|| StoreError::Closed(self.failure().unwrap_or_default()))
    }

    /// Runs `f` in one write transaction and commits it. A failure is remembered (see
    /// [`Store::failure`]) until a write succeeds; an I/O failure (disk full, ...) leaves redb
    /// refusing every later write, so the file is closed and re-opened, and writes recover by
    /// themselves once the cause is gone.
    ///
    /// In cluster mode a transaction that changes control records publishes them to PostgreSQL
    /// before it commits here; if another node published first, it is rolled back, this replica
    /// catches up, and `f` runs again (at most four times).
    pub fn write<T, E>(&self, mut f: impl FnMut(&redb::WriteTransaction) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError> + std::fmt::Display,
    {
        let mut io = false;
        // PostgreSQL did not take a change: not this file failing (readiness stays).
        let mut unpublished = false;
        let replica = self.inner.replica.get();
        let result: Result<T, E> = (|| {
            let db = self.db().inspect_err(|e| io = e.is_io())?;
            for _ in 0..4 {
                let txn = self.begin_write(&db).map_err(StoreError::from).inspect_err(|e| io = e.is_io())?;
                if replica.is_some() {
                    JOURNAL.set(Some(Vec::new()));
                }
                let value = f(&txn);
                let changed = JOURNAL.take().unwrap_or_default();
                let value = value?;
                if let (Some(replica), false) = (replica, changed.is_empty()) {
                    let base = txn
                        .open_table(META)
                        .map_err(StoreError::from)?
                        .get(CONTROL_VERSION)
                        .map_err(StoreError::from)?
                        .map_or(0, |v| v.value());
                    let published = replica
                        .run(move |c| replica::publish(c, base, &changed))
                        .map_err(|e| StoreError::Replica(e.0))
                        .inspect_err(|_| unpublished = true)?;
                    match published {
                        replica::Published::At(version) => {
                            txn.open_table(META)
                                .map_err(StoreError::from)?
                                .insert(CONTROL_VERSION, version)
                                .map_err(StoreError::from)?;
                        }
                        replica::Published::Stale => {
                            drop(txn);
                            let pulled = replica
                                .run(move |c| replica::pull(c, base))
                                .map_err(|e| StoreError::Replica(e.0))
                                .inspect_err(|_| unpublished = true)?;
                            self.apply_pulled(&db, &pulled)?;
                            continue;
                        }
                    }
                }
                pace::before_unpaced();
                txn.commit().map_err(StoreError::from).inspect_err(|e| io = e.is_io())?;
                return Ok(value);
            }
            Err(StoreError::Replica("other nodes kept changing the settings; try again".into()).into())
        })();
        match &result {
            Ok(_) => {
                let mut failing = self.inner.failing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if failing.take().is_some() {
                    tracing::info!(path = %self.inner.path.display(), "database writes succeed again");
                }
            }
            Err(e) if unpublished => {
                tracing::warn!(error = %e, "a settings change was not made: PostgreSQL did not take it");
            }
            Err(e) => {
                let message = e.to_string();
                tracing::error!(path = %self.inner.path.display(), error = %message, "database write failed");
                *self.inner.failing.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(message);
                // An I/O error inside the transaction (an insert on a full disk) leaves redb
                // refusing everything, reads included, just as one at the commit does: look.
                if !io {
                    io = self
                        .db()
                        .and_then(|db| self.begin_write(&db).map(drop).map_err(StoreError::from))
                        .is_err_and(|e| e.is_io());
                }
                if io {
                    self.reopen();
                }
            }
        }
        result
    }

    /// Cluster mode: connects to PostgreSQL at `url`, applies its migrations and joins (see
    /// [`Store::join_cluster`]); returns where it connects, for following the other nodes.
    pub fn join_cluster_at(&self, url: &str, timeout: Duration) -> Result<replica::PgTarget, StoreError> {
        let failed = |e: replica::PgError| StoreError::Replica(e.0);
        let target = replica::PgTarget::parse(url, timeout).map_err(failed)?;
        self.join_cluster(replica::Replica::start(target.clone()).map_err(failed)?)?;
        let reader = replica::Replica::spawn(target.clone(), "torii-pg-query").map_err(failed)?;
        let _ = self.inner.reader.set(Arc::new(reader));
        tracing::info!(version = self.control_version().unwrap_or(0), "the control plane follows PostgreSQL");
        Ok(target)
    }

    /// Cluster mode: a node's first sync, before it serves. An empty cluster takes this node's
    /// control records (the first node brings its settings); otherwise they are replaced by the
    /// cluster's — on a first join, those the cluster lacks are written to a JSON file next to the
    /// database first, so nothing is lost. Then this node publishes its changes there.
    pub fn join_cluster(&self, replica: replica::Replica) -> Result<(), StoreError> {
        let replica = Arc::new(replica);
        let failed = |e: replica::PgError| StoreError::Replica(e.0);
        let mine = self.control_rows()?;
        let first_join = self.control_version()? == 0;
        let mut pulled = replica.run(replica::everything).map_err(failed)?;
        if pulled.version == 0 && !mine.is_empty() {
            let rows = mine.clone();
            match replica.run(move |c| replica::publish(c, 0, &rows)).map_err(failed)? {
                replica::Published::At(version) => {
                    let txn = self.begin_write(&*self.db()?)?;
                    txn.open_table(META)?.insert(CONTROL_VERSION, version)?;
                    txn.commit()?;
                    let _ = self.inner.replica.set(replica);
                    tracing::info!(records = mine.len(), "the cluster had no settings: this node's are its first");
                    return Ok(());
                }
                // Another node brought its settings first.
                replica::Published::Stale => pulled = replica.run(replica::everything).map_err(failed)?,
            }
        }
        let theirs: std::collections::HashSet<(&str, &str)> =
            pulled.rows.iter().map(|(kind, key, _)| (kind.as_str(), key.as_str())).collect();
        let only_here: Vec<&replica::Row> =
            mine.iter().filter(|(kind, key, _)| !theirs.contains(&(kind.as_str(), key.as_str()))).collect();
        if first_join && !only_here.is_empty() {
            let kept = self.keep_replaced(&only_here)?;
            tracing::warn!(
                records = only_here.len(),
                kept = %kept.display(),
                "this node's own settings are replaced by the cluster's; they are kept in a file"
            );
        }
        let db = self.db()?;
        let txn = self.begin_write(&db)?;
        for table in record_tables() {
            txn.open_table(table)?.retain(|_, _| false)?;
        }
        txn.open_table(META)?.insert(CONTROL_VERSION, 0)?;
        txn.commit()?;
        self.apply_pulled(&db, &pulled)?;
        let _ = self.inner.replica.set(replica);
        Ok(())
    }

    /// Writes control records a join replaces to `settings-replaced-by-cluster-{unix}.json` next
    /// to the database (each: table, key, record).
    fn keep_replaced(&self, rows: &[&replica::Row]) -> Result<PathBuf, StoreError> {
        let records: Vec<serde_json::Value> = rows
            .iter()
            .map(|(kind, key, body)| {
                let record: serde_json::Value =
                    body.as_deref().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default();
                serde_json::json!({"table": kind, "key": key, "record": record})
            })
            .collect();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let dir = self.inner.path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let path = dir.join(format!("settings-replaced-by-cluster-{now}.json"));
        let text = serde_json::to_vec_pretty(&records)?;
        std::fs::write(&path, text).map_err(|source| StoreError::Write { path: path.display().to_string(), source })?;
        Ok(path)
    }

    /// Cluster mode: where changes are published.
    #[must_use]
    pub fn replica(&self) -> Option<&Arc<replica::Replica>> {
        self.inner.replica.get()
    }

    /// Cluster mode: the connection for the logs and analytics queries.
    #[must_use]
    pub fn reader(&self) -> Option<&Arc<replica::Replica>> {
        self.inner.reader.get()
    }

    /// Cluster mode: see `Inner::ship_lock`.
    pub fn ship_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.ship_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cluster control plane's version this replica is at (0 outside cluster mode).
    pub fn control_version(&self) -> Result<u64, StoreError> {
        let txn = self.db()?.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get(CONTROL_VERSION)?.map_or(0, |v| v.value()))
    }

    /// Applies what other nodes published; returns whether anything changed here.
    pub fn apply(&self, pulled: &replica::Pulled) -> Result<bool, StoreError> {
        let db = self.db()?;
        self.apply_pulled(&db, pulled)
    }

    fn apply_pulled(&self, db: &Database, pulled: &replica::Pulled) -> Result<bool, StoreError> {
        let txn = self.begin_write(db)?;
        {
            let mut meta = txn.open_table(META)?;
            // A pull read before a newer publish of this node's own: already here.
            if meta.get(CONTROL_VERSION)?.is_some_and(|v| v.value() >= pulled.version) {
                return Ok(false);
            }
            meta.insert(CONTROL_VERSION, pulled.version)?;
        }
        let tables = record_tables();
        for (kind, key, body) in &pulled.rows {
            let Some(table) = tables.iter().find(|t| t.name() == kind) else {
                tracing::warn!(kind = %kind, "PostgreSQL holds records of a kind this build does not know; skipped");
                continue;
            };
            let mut t = txn.open_table(*table)?;
            match body {
                Some(body) => {
                    t.insert(key.as_str(), body.as_slice())?;
                }
                None => {
                    t.remove(key.as_str())?;
                }
            }
        }
        txn.commit()?;
        Ok(true)
    }

    /// Every control record as stored here (for `torii migrate-to-cluster`).
    pub fn control_rows(&self) -> Result<Vec<replica::Row>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let mut rows = Vec::new();
        for table in record_tables() {
            let t = txn.open_table(table)?;
            for entry in t.iter()? {
                let (k, v) = entry?;
                rows.push((table.name().to_string(), k.value().to_string(), Some(v.value().to_vec())));
            }
        }
        Ok(rows)
    }

    /// Replaces the saved spend ledger with `buckets`.
    pub fn save_spend(&self, buckets: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.write(|txn| -> Result<(), StoreError> {
            let mut t = txn.open_table(tables::SPEND)?;
            t.retain(|_, _| false)?;
            for (k, v) in buckets {
                t.insert(k.as_str(), v.as_slice())?;
            }
            Ok(())
        })
    }

    /// The number after a queue's last one (0 when it is empty).
    pub fn queue_next(&self, queue: Queue) -> Result<u64, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let t = match txn.open_table(queue.table()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        Ok(t.last()?.map_or(0, |(k, _)| k.value() + 1))
    }

    /// Up to `n` queued logs, oldest first: (sequence, gateway, log id).
    pub fn queue_head(&self, queue: Queue, n: usize) -> Result<Vec<(u64, String, u128)>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let t = match txn.open_table(queue.table()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::with_capacity(n);
        for row in t.iter()?.take(n) {
            let (k, v) = row?;
            let (gateway, id) = v.value();
            out.push((k.value(), gateway.to_string(), id));
        }
        Ok(out)
    }

    /// Removes queued logs up to and including `through`.
    pub fn queue_pop(&self, queue: Queue, through: u64) -> Result<(), StoreError> {
        self.write(|txn| -> Result<(), StoreError> {
            let mut t = txn.open_table(queue.table())?;
            t.retain_in(..=through, |_, _| false)?;
            Ok(())
        })
    }

    /// The number after the rollups queue's last batch (0 when it is empty).
    pub fn rollups_queue_next(&self) -> Result<u64, StoreError> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(tables::SHIP_ROLLUPS)?;
        Ok(t.last()?.map_or(0, |(k, _)| k.value() + 1))
    }

    /// Up to `n` queued rollup batches, oldest first: (sequence, postcard bytes).
    pub fn rollups_queue_head(&self, n: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(tables::SHIP_ROLLUPS)?;
        let mut out = Vec::with_capacity(n);
        for row in t.iter()?.take(n) {
            let (k, v) = row?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Removes queued rollup batches up to and including `through`.
    pub fn rollups_queue_pop(&self, through: u64) -> Result<(), StoreError> {
        self.write(|txn| -> Result<(), StoreError> {
            txn.open_table(tables::SHIP_ROLLUPS)?.retain_in(..=through, |_, _| false)?;
            Ok(())
        })
    }

    /// This node's id in the cluster (random, made on first use, kept in the file).
    pub fn node_id(&self) -> Result<u64, StoreError> {
        self.write(|txn| -> Result<u64, StoreError> {
            let mut meta = txn.open_table(META)?;
            if let Some(id) = meta.get("node_id")?.map(|v| v.value()) {
                return Ok(id);
            }
            // 63 bits: PostgreSQL's bigint.
            let id = uuid::Uuid::new_v4().as_u64_pair().0 >> 1;
            meta.insert("node_id", id)?;
            Ok(id)
        })
    }

    /// How many logs a queue holds.
    pub fn queue_len(&self, queue: Queue) -> Result<u64, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        match txn.open_table(queue.table()) {
            Ok(t) => Ok(redb::ReadableTableMetadata::len(&t)?),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// The saved spend ledger.
    pub fn load_spend(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let t = match txn.open_table(tables::SPEND) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Why writes are failing, while they are.
    #[must_use]
    pub fn failure(&self) -> Option<String> {
        self.inner.failing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Re-opens the file after an I/O error that reads met (at most once a second).
    pub fn recover(&self) {
        self.reopen();
    }

    /// Closes and re-opens the file (at most once a second), so redb forgets a previous I/O
    /// error. Read transactions in flight keep the old handle until they end (waited for, up to
    /// two seconds).
    fn reopen(&self) {
        let mut last = self.inner.reopened.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < REOPEN_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        if let Some(mut old) = self.inner.db.swap(None) {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still) if Instant::now() < deadline => {
                        old = still;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(still) => {
                        self.inner.db.store(Some(still));
                        tracing::warn!("database still in use; re-open postponed");
                        return;
                    }
                }
            }
        }
        match open_db(&self.inner.path) {
            Ok(db) => {
                self.inner.db.store(Some(Arc::new(db)));
                tracing::info!(path = %self.inner.path.display(), "database re-opened");
            }
            Err(e) => tracing::error!(path = %self.inner.path.display(), error = %e, "cannot re-open the database"),
        }
    }

    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<u64, StoreError> {
        let txn = self.db()?.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get("schema_version")?.map_or(0, |v| v.value()))
    }

    /// Every record of a type, in key order.
    pub fn list<R: Record>(&self) -> Result<Vec<R>, StoreError> {
        let txn = self.db()?.begin_read()?;
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
        let txn = self.db()?.begin_read()?;
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
        self.write(|txn| {
            let mut table = txn.open_table(R::TABLE)?;
            if table.get(record.key())?.is_some() {
                Ok(false)
            } else {
                table.insert(record.key(), bytes.as_slice())?;
                journal(R::TABLE.name(), record.key(), Some(&bytes));
                Ok(true)
            }
        })
    }

    /// Inserts or replaces a record.
    pub fn put<R: Record>(&self, record: &R) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record)?;
        self.write(|txn| {
            txn.open_table(R::TABLE)?.insert(record.key(), bytes.as_slice())?;
            journal(R::TABLE.name(), record.key(), Some(&bytes));
            Ok(())
        })
    }

    /// Changes records in place in one write transaction (no lost update against a concurrent
    /// writer); `change` returns whether it changed the record. Missing keys are skipped.
    pub fn update<R: Record>(
        &self,
        keys: &[String],
        mut change: impl FnMut(&mut R) -> bool,
    ) -> Result<usize, StoreError> {
        self.write(|txn| {
            let mut changed = 0;
            let mut table = txn.open_table(R::TABLE)?;
            for key in keys {
                let current = table.get(key.as_str())?.map(|v| serde_json::from_slice::<R>(v.value())).transpose()?;
                let Some(mut record) = current else { continue };
                if change(&mut record) {
                    let bytes = serde_json::to_vec(&record)?;
                    table.insert(key.as_str(), bytes.as_slice())?;
                    journal(R::TABLE.name(), key, Some(&bytes));
                    changed += 1;
                }
            }
            Ok(changed)
        })
    }

    /// Deletes a record; returns whether it existed.
    pub fn delete<R: Record>(&self, key: &str) -> Result<bool, StoreError> {
        self.write(|txn| remove_in::<R>(txn, key))
    }
}

/// One record by key, inside a write transaction (read, check and write in one transaction).
pub fn get_in<R: Record>(txn: &redb::WriteTransaction, key: &str) -> Result<Option<R>, StoreError> {
    let table = txn.open_table(R::TABLE)?;
    let value = table.get(key)?;
    Ok(value.map(|v| serde_json::from_slice(v.value())).transpose()?)
}

/// Every record of a type, inside a write transaction.
pub fn list_in<R: Record>(txn: &redb::WriteTransaction) -> Result<Vec<R>, StoreError> {
    let table = txn.open_table(R::TABLE)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        out.push(serde_json::from_slice(entry?.1.value())?);
    }
    Ok(out)
}

/// Inserts or replaces a record inside a write transaction.
pub fn put_in<R: Record>(txn: &redb::WriteTransaction, record: &R) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(record)?;
    txn.open_table(R::TABLE)?.insert(record.key(), bytes.as_slice())?;
    journal(R::TABLE.name(), record.key(), Some(&bytes));
    Ok(())
}

/// Deletes a record inside a write transaction; returns whether it existed.
pub fn remove_in<R: Record>(txn: &redb::WriteTransaction, key: &str) -> Result<bool, StoreError> {
    let existed = txn.open_table(R::TABLE)?.remove(key)?.is_some();
    if existed {
        journal(R::TABLE.name(), key, None);
    }
    Ok(existed)
}

/// Ids of gateways and accounts: 1–64 characters from `A-Za-z0-9-_`.
#[must_use]
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl From<StoreError> for crate::error::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Replica(detail) => Self::SettingsUnavailable(detail),
            e => Self::Store(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::report;
    use crate::store::rollups::{Rollup, merge_into};

    /// Rows newer than a gateway's, older ones, a key given twice, and a gateway after it: the
    /// table ends as inserting each row in turn leaves it.
    #[test]
    fn sorted_inserts_end_as_inserts_in_turn() {
        const T: TableDefinition<(&str, u128), &[u8]> = TableDefinition::new("t");
        let dir = tempfile::tempdir().unwrap();
        let rows = |txn: &redb::WriteTransaction| -> Vec<(String, u128, Vec<u8>)> {
            let t = txn.open_table(T).unwrap();
            t.iter()
                .unwrap()
                .map(|r| r.unwrap())
                .map(|(k, v)| (k.value().0.to_string(), k.value().1, v.value().to_vec()))
                .collect()
        };
        let before: &[((&str, u128), &[u8])] = &[(("a", 10), b"a10"), (("a", 20), b"a20"), (("b", 5), b"b5")];
        // Sorted, as the writer gives them: 15 is older than a's last row, 30 is given twice.
        let batch: &[((&str, u128), &[u8])] = &[
            (("a", 15), b"a15"),
            (("a", 20), b"a20'"),
            (("a", 30), b"first"),
            (("a", 30), b"second"),
            (("a", 40), b"a40"),
        ];
        let (sorted, in_turn) = (dir.path().join("s.redb"), dir.path().join("i.redb"));
        let mut results = Vec::new();
        for (path, cursor) in [(sorted, true), (in_turn, false)] {
            let store = Store::open(&path).unwrap();
            let got = store
                .write(|txn| {
                    let mut t = txn.open_table(T)?;
                    for (k, v) in before {
                        t.insert(k, v)?;
                    }
                    if cursor {
                        insert_sorted(&mut t, std::ops::Bound::Included(&("a", u128::MAX)), batch)?;
                    } else {
                        for (k, v) in batch {
                            t.insert(k, v)?;
                        }
                    }
                    drop(t);
                    Ok::<_, StoreError>(rows(txn))
                })
                .unwrap();
            results.push(got);
        }
        assert_eq!(results[0], results[1]);
        let keys: Vec<(&str, u128)> = results[0].iter().map(|(g, id, _)| (g.as_str(), *id)).collect();
        assert_eq!(keys, [("a", 10), ("a", 15), ("a", 20), ("a", 30), ("a", 40), ("b", 5)]);
        assert_eq!(results[0][3].2, b"second");
    }

    #[test]
    fn hourly_rollups_are_backfilled_from_schema_1_and_reports_agree_with_minutes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let base = 480_000_u64; // an hour boundary in minutes
        let minutes = [base + 5, base + 59, base + 60, base + 61, base + 119, base + 150, base + 185];
        {
            let store = Store::open(&path).unwrap();
            let txn = store.db().unwrap().begin_write().unwrap();
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
