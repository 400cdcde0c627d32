//! Cluster mode's control plane in PostgreSQL.
//!
//! PostgreSQL holds every control record (gateways, tokens, stored keys, custom providers, DLP
//! profiles, routes, aliases, datasets, evaluations, admins) and a global version that every change
//! raises by one; each node keeps a replica of them in its own redb file, which its snapshot and
//! its reads use. A node writes by running its transaction on the replica and publishing the
//! records it changed under PostgreSQL's lock, at the version its replica was at: if another node
//! published in between, the transaction is rolled back, the replica catches up and it runs again
//! (so a read-check-write, like "the name is free", holds across nodes). Every publish notifies the
//! other nodes (`LISTEN`/`NOTIFY`), which pull what changed since their version and rebuild their
//! snapshot; they also look every half second, in case a notification was missed.
//!
//! The driver is the synchronous `postgres` crate on two threads of its own (one publishes, one
//! listens), so the request path and the server's runtime never wait on it.

use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;

/// A record as published: its table, its key, its JSON (`None`: deleted).
pub type Row = (String, String, Option<Vec<u8>>);

/// What the replica must apply: the records changed since its version, and the version they
/// bring it to.
#[derive(Debug, Default)]
pub struct Pulled {
    /// The changed records, in their latest state.
    pub rows: Vec<Row>,
    /// The global version as of these records.
    pub version: u64,
}

/// The schema, applied in order at start under an advisory lock (two nodes starting together
/// are safe); each is applied once.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("pg/0001_control.sql")),
    (2, include_str!("pg/0002_logs.sql")),
    (3, include_str!("pg/0003_rollups.sql")),
];

/// The advisory lock ids (arbitrary, fixed): migrations, and control-plane publishes.
const LOCK_MIGRATE: i64 = 0x746f_7269_6901;
const LOCK_CONTROL: i64 = 0x746f_7269_6902;

/// The notification channel.
const CHANNEL: &str = "torii_control";

/// How often a listener looks for changes without a notification.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// A PostgreSQL failure, worded for operators (never the URL: it may hold a password).
#[derive(Debug, Clone, thiserror::Error)]
#[error("PostgreSQL: {0}")]
pub struct PgError(pub String);

impl From<postgres::Error> for PgError {
    fn from(e: postgres::Error) -> Self {
        Self(match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        })
    }
}

/// How to reach PostgreSQL.
#[derive(Clone)]
pub struct PgTarget {
    config: postgres::Config,
    timeout: Duration,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget").field("hosts", &self.config.get_hosts()).finish_non_exhaustive()
    }
}

impl PgTarget {
    /// Parses a `postgres://` URL (or key=value connection string); `timeout` bounds connecting
    /// and every statement.
    pub fn parse(url: &str, timeout: Duration) -> Result<Self, PgError> {
        let mut config: postgres::Config =
            url.parse().map_err(|e: postgres::Error| PgError(format!("the URL does not parse: {e}")))?;
        config.connect_timeout(timeout).keepalives(true).application_name("torii");
        let ms = timeout.as_millis();
        config.options(&format!("-c statement_timeout={ms} -c lock_timeout={ms}"));
        Ok(Self { config, timeout })
    }

    /// One connection.
    pub fn connect(&self) -> Result<postgres::Client, PgError> {
        Ok(self.config.connect(postgres::NoTls)?)
    }

    /// How long an operation may take.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Applies the schema migrations not applied yet, under a lock.
pub fn migrate(client: &mut postgres::Client) -> Result<(), PgError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&LOCK_MIGRATE])?;
    let result = (|| -> Result<(), PgError> {
        client.batch_execute(
            "CREATE TABLE IF NOT EXISTS torii_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )?;
        for (version, sql) in MIGRATIONS {
            let done = client.query_opt("SELECT 1 FROM torii_migrations WHERE version = $1", &[version])?.is_some();
            if done {
                continue;
            }
            let mut txn = client.transaction()?;
            txn.batch_execute(sql).map_err(|e| PgError(format!("migration {version}: {}", PgError::from(e).0)))?;
            txn.execute("INSERT INTO torii_migrations (version) VALUES ($1)", &[version])?;
            txn.commit()?;
            tracing::info!(version, "PostgreSQL schema migration applied");
        }
        Ok(())
    })();
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_MIGRATE]);
    result?;
    unlocked?;
    Ok(())
}

/// Every live record and the version they stand at (a node's first sync).
pub fn everything(client: &mut postgres::Client) -> Result<Pulled, PgError> {
    pull(client, 0)
}

/// The records changed since `since`, read in one snapshot with the version they bring.
pub fn pull(client: &mut postgres::Client, since: u64) -> Result<Pulled, PgError> {
    let mut txn = client.build_transaction().isolation_level(postgres::IsolationLevel::RepeatableRead).start()?;
    let version: i64 = txn.query_one("SELECT version FROM torii_control_version", &[])?.get(0);
    let since = i64::try_from(since).unwrap_or(i64::MAX);
    let mut rows = Vec::new();
    if version > since {
        for row in txn.query(
            "SELECT kind, key, body FROM torii_control_records WHERE version > $1 AND (body IS NOT NULL OR $1 > 0) ORDER BY version",
            &[&since],
        )? {
            rows.push((row.get(0), row.get(1), row.get(2)));
        }
    }
    txn.commit()?;
    Ok(Pulled { rows, version: u64::try_from(version).unwrap_or(0) })
}

/// What a publish came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Published {
    /// Stored, at this version.
    At(u64),
    /// Another node published since `base`: catch up and try again.
    Stale,
}

/// Publishes one transaction's changed records at `base`, the version the replica was at.
pub fn publish(client: &mut postgres::Client, base: u64, rows: &[Row]) -> Result<Published, PgError> {
    let mut txn = client.transaction()?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_CONTROL])?;
    let current: i64 = txn.query_one("SELECT version FROM torii_control_version", &[])?.get(0);
    if u64::try_from(current).ok() != Some(base) {
        return Ok(Published::Stale);
    }
    let next = current + 1;
    let upsert = txn.prepare(
        "INSERT INTO torii_control_records (kind, key, body, version) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (kind, key) DO UPDATE SET body = EXCLUDED.body, version = EXCLUDED.version",
    )?;
    for (kind, key, body) in rows {
        txn.execute(&upsert, &[kind, key, body, &next])?;
    }
    txn.execute("UPDATE torii_control_version SET version = $1", &[&next])?;
    txn.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &next.to_string()])?;
    txn.commit()?;
    Ok(Published::At(u64::try_from(next).unwrap_or(0)))
}

/// Publishes records whatever the version (`torii migrate-to-cluster`); returns the new version.
pub fn publish_all(client: &mut postgres::Client, rows: &[Row]) -> Result<u64, PgError> {
    let current: i64 = client.query_one("SELECT version FROM torii_control_version", &[])?.get(0);
    match publish(client, u64::try_from(current).unwrap_or(0), rows)? {
        Published::At(v) => Ok(v),
        Published::Stale => Err(PgError("another node changed the settings meanwhile; run it again".into())),
    }
}

/// How many live control records PostgreSQL holds.
pub fn count(client: &mut postgres::Client) -> Result<i64, PgError> {
    Ok(client.query_one("SELECT count(*) FROM torii_control_records WHERE body IS NOT NULL", &[])?.get(0))
}

type Job = Box<dyn FnOnce(&mut Option<postgres::Client>, &PgTarget) + Send>;

/// The link to PostgreSQL that a node's store publishes through, on a thread of its own.
pub struct Replica {
    target: PgTarget,
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("target", &self.target).finish_non_exhaustive()
    }
}

impl Replica {
    /// Starts the publishing thread, connects and applies the migrations. The driver runs only
    /// on threads of its own: it would refuse to run inside the server's runtime.
    pub fn start(target: PgTarget) -> Result<Self, PgError> {
        let replica = Self::spawn(target, "torii-pg-publish")?;
        replica.run(migrate)?;
        Ok(replica)
    }

    /// Starts a thread with a connection of its own (the schema is assumed in place).
    pub fn spawn(target: PgTarget, name: &str) -> Result<Self, PgError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread_target = target.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut client = None;
                for job in rx {
                    // A panic in the driver must not stop the thread (every later change would
                    // fail): the job's caller gets no answer, and the connection is renewed.
                    let done =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut client, &thread_target)));
                    if done.is_err() {
                        tracing::error!("a PostgreSQL operation panicked; the connection is renewed");
                        client = None;
                    }
                }
            })
            .map_err(|e| PgError(format!("cannot start a thread: {e}")))?;
        Ok(Self { target, jobs: Mutex::new(tx) })
    }

    /// Where it connects.
    #[must_use]
    pub fn target(&self) -> &PgTarget {
        &self.target
    }

    /// Runs `op` on the publishing connection (reconnecting if it was lost) and waits for its
    /// answer, at most the timeout.
    pub fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut postgres::Client) -> Result<T, PgError> + Send + 'static,
    ) -> Result<T, PgError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |slot, target| {
            let result = (|| {
                // A connection PostgreSQL closed (a restart) is noticed by a round trip, not
                // before: check it first, so the operation does not fail on it.
                let alive = slot.as_mut().is_some_and(|c| !c.is_closed() && c.is_valid(target.timeout).is_ok());
                if !alive {
                    *slot = Some(target.connect()?);
                }
                let client = slot.as_mut().ok_or_else(|| PgError("not connected".into()))?;
                let result = op(client);
                if client.is_closed() {
                    *slot = None;
                }
                result
            })();
            let _ = tx.send(result);
        });
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(job)
            .map_err(|_| PgError("the publishing thread has stopped".into()))?;
        // Connecting and the statement each have the timeout; a job queued behind another waits
        // for it too.
        rx.recv_timeout(self.target.timeout * 3).map_err(|_| PgError("no answer in time".into()))?
    }
}

/// Follows the other nodes' changes: on every notification, and every half second, pulls what
/// changed since `version()` and hands it to `apply`. Reconnects by itself; a failure is logged at
/// most every 10 s.
pub fn listen(
    target: PgTarget,
    version: impl Fn() -> u64 + Send + 'static,
    apply: impl Fn(Pulled) + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("torii-pg-listen".into()).spawn(move || {
        let mut warned: Option<Instant> = None;
        loop {
            let result = guarded(|| -> Result<(), PgError> {
                let mut client = target.connect()?;
                client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
                if warned.take().is_some() {
                    tracing::info!("PostgreSQL reachable again; following the other nodes' changes");
                }
                loop {
                    let pulled = pull(&mut client, version())?;
                    if !pulled.rows.is_empty() || pulled.version > version() {
                        apply(pulled);
                    }
                    // Wait for a notification or the half second (the next pull takes whatever
                    // several notifications announced).
                    client.notifications().timeout_iter(LOOK_EVERY).next()?;
                    if client.is_closed() {
                        return Err(PgError("connection closed".into()));
                    }
                }
            });
            if let Err(e) = result
                && warned.is_none_or(|t| t.elapsed() > Duration::from_secs(10))
            {
                tracing::warn!(error = %e, "cannot follow the cluster's settings in PostgreSQL; retrying");
                warned = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })?;
    Ok(())
}

/// Runs `f`, turning a panic (in the driver, on a value it cannot convert) into an error, so a
/// thread of ours goes on.
pub fn guarded<T>(f: impl FnOnce() -> Result<T, PgError>) -> Result<T, PgError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(PgError("a PostgreSQL operation panicked".into())))
}
