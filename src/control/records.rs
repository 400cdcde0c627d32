//! The control operations on tokens, admins, logs and analytics: what the management API, the
//! admin UI and background tasks call, so no handler reaches the store itself. Token changes
//! reload the snapshot before they return, so the data plane sees them at once.

use super::Settings;

/// Logs to export (gateway, log) and the last queue sequence they cover.
pub type ExportBatch = (Vec<(String, LogMeta)>, Option<u64>);
use crate::analytics::{self, Report};
use crate::auth::{self, NewToken, admin};
use crate::error::Error;
use crate::logs::filter::ListQuery;
use crate::logs::pg;
use crate::logs::query::{self, LogPatch, Page};
use crate::logs::record::{LogBodies, LogMeta};
use crate::logs::writer::LogSink;
use crate::store::backup::Copied;
use crate::store::{AdminRecord, StoreError, TokenRecord};

impl Settings {
    /// Creates a token from checked input; returns the secret (shown once) and the record.
    pub fn create_token(&self, new: NewToken) -> Result<(String, TokenRecord), Error> {
        new.validate().map_err(|(field, reason)| Error::invalid(field, reason))?;
        let created = auth::create_token(&self.store, new)?;
        self.reload()?;
        Ok(created)
    }

    /// Revokes a token at once; `false` when there is no such token.
    pub fn revoke_token(&self, id: &str) -> Result<bool, Error> {
        let found = auth::revoke_token(&self.store, id)?;
        self.reload()?;
        Ok(found)
    }

    /// Whether any admin account exists.
    pub fn any_admin(&self) -> Result<bool, StoreError> {
        admin::any_admin(&self.store)
    }

    /// Creates an admin account.
    pub fn create_admin(&self, username: &str, password: &str) -> Result<AdminRecord, admin::AdminError> {
        admin::create_admin(&self.store, username, password)
    }

    /// Changes an admin's password (their sessions end).
    pub fn set_admin_password(&self, username: &str, password: &str) -> Result<(), admin::AdminError> {
        admin::set_password(&self.store, username, password)
    }

    /// Checks an admin's password (argon2id; slow by design).
    pub fn verify_admin(&self, username: &str, password: &str) -> Result<bool, StoreError> {
        admin::verify(&self.store, username, password)
    }

    /// Cluster mode: runs a logs query against PostgreSQL (which holds every node's logs).
    fn in_cluster<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut postgres::Client) -> Result<T, Error> + Send + 'static,
    ) -> Option<Result<T, Error>> {
        let reader = self.store.reader()?;
        Some(reader.run(move |c| Ok(op(c))).map_err(|e| Error::SettingsUnavailable(e.0)).and_then(|r| r))
    }

    /// A page of a gateway's logs (in cluster mode, of every node's).
    pub fn list_logs(&self, gateway: &str, q: &ListQuery) -> Result<Page, Error> {
        let (gw, q2) = (gateway.to_string(), q.clone());
        self.in_cluster(move |c| pg::list(c, &gw, &q2)).unwrap_or_else(|| query::list(&self.store, gateway, q))
    }

    /// One log's metadata (in cluster mode, a log this node stored and has not copied to
    /// PostgreSQL yet is found here).
    pub fn log(&self, gateway: &str, id: &str) -> Result<LogMeta, Error> {
        let (gw, id2) = (gateway.to_string(), id.to_string());
        match self.in_cluster(move |c| pg::get(c, &gw, &id2)) {
            None | Some(Err(Error::NotFound { .. })) => query::get(&self.store, gateway, id),
            Some(found) => found,
        }
    }

    /// The next logs waiting for export, oldest first: (sequence, gateway, the log), logs deleted
    /// meanwhile (caps, retention) left out; and the last sequence read.
    pub fn export_batch(&self, n: usize) -> Result<ExportBatch, Error> {
        let head = self.store.queue_head(crate::store::Queue::Export, n)?;
        let last = head.last().map(|(seq, _, _)| *seq);
        let mut out = Vec::with_capacity(head.len());
        for (_, gateway, id) in head {
            if let Ok(meta) = query::get(&self.store, &gateway, &uuid::Uuid::from_u128(id).to_string()) {
                out.push((gateway, meta));
            }
        }
        Ok((out, last))
    }

    /// Marks queued exports up to `through` as sent.
    pub fn export_sent(&self, through: u64) -> Result<(), StoreError> {
        self.store.queue_pop(crate::store::Queue::Export, through)
    }

    /// How many logs wait for export.
    pub fn export_backlog(&self) -> Result<u64, StoreError> {
        self.store.queue_len(crate::store::Queue::Export)
    }

    /// One log's bodies, when they were stored.
    pub fn log_bodies(&self, gateway: &str, id: &str) -> Result<Option<LogBodies>, Error> {
        let (gw, id2) = (gateway.to_string(), id.to_string());
        match self.in_cluster(move |c| pg::bodies(c, &gw, &id2)) {
            None | Some(Err(Error::NotFound { .. })) => query::bodies(&self.store, gateway, id),
            Some(found) => found,
        }
    }

    /// Changes a log's feedback, score or metadata (in cluster mode, in PostgreSQL; a log this
    /// node has not copied there yet is changed here, and the copy carries the change).
    pub fn patch_log(&self, gateway: &str, id: &str, change: &LogPatch) -> Result<LogMeta, Error> {
        let (gw, id2, p) = (gateway.to_string(), id.to_string(), change.clone());
        match self.in_cluster(move |c| pg::patch(c, &gw, &id2, &p)) {
            None => query::patch(&self.store, gateway, id, change),
            Some(Err(Error::NotFound { .. })) => {
                let _copying = self.store.ship_lock();
                let new = query::patch(&self.store, gateway, id, change)?;
                // Copied meanwhile (just before the lock): bring PostgreSQL's copy up to date.
                let (gw, meta) = (gateway.to_string(), new.clone());
                self.in_cluster(move |c| pg::put_meta(c, &gw, &meta)).transpose()?;
                Ok(new)
            }
            Some(done) => done,
        }
    }

    /// Deletes the logs matching `q` (at most `limit`); returns how many went (in cluster mode,
    /// from PostgreSQL: the nodes' own copies age out with their retention).
    pub fn delete_logs(&self, gateway: &str, q: &ListQuery, limit: Option<usize>) -> Result<u64, Error> {
        let (gw, q2) = (gateway.to_string(), q.clone());
        if self.store.reader().is_none() {
            return query::delete(&self.store, gateway, q, limit);
        }
        // This node's own copies first, so one not copied yet cannot reach PostgreSQL afterwards
        // (and none is being copied meanwhile).
        let _copying = self.store.ship_lock();
        query::delete(&self.store, gateway, q, limit)?;
        self.in_cluster(move |c| pg::delete(c, &gw, &q2, limit)).unwrap_or(Ok(0))
    }

    /// Cluster mode: deletes a gateway's logs in PostgreSQL created before `before_ms`.
    pub fn expire_cluster_logs(&self, gateway: &str, before_ms: i64) -> Option<Result<u64, Error>> {
        let gw = gateway.to_string();
        self.in_cluster(move |c| pg::expire(c, &gw, before_ms))
    }

    /// Cluster mode: drops PostgreSQL's daily log partitions that end before `before_ms`.
    pub fn drop_cluster_log_days(&self, before_ms: i64) -> Option<Result<u64, Error>> {
        self.in_cluster(move |c| pg::drop_partitions_before(c, before_ms))
    }

    /// Deletes a gateway's logs created before `before_ms`, `chunk` at a time (each chunk its own
    /// short write transaction, so the log writer is never held up long); returns how many.
    /// Analytics rollups are kept.
    pub fn expire_logs(&self, gateway: &str, before_ms: i64, chunk: usize) -> Result<u64, Error> {
        let q = crate::logs::query::ListQuery {
            page: 1,
            per_page: chunk,
            order_by: "created_at".into(),
            descending: false,
            filters: vec![crate::logs::query::Filter {
                key: "created_at".into(),
                operator: crate::logs::query::Op::Lt,
                value: vec![serde_json::Value::from(before_ms)],
            }],
            search: None,
            meta_info: false,
        };
        let mut total = 0;
        loop {
            let n = query::delete(&self.store, gateway, &q, Some(chunk))?;
            total += n;
            if n < chunk as u64 {
                return Ok(total);
            }
        }
    }

    /// Starts the log writer on this store, following the gateways' log caps.
    pub fn start_log_sink(
        self: &std::sync::Arc<Self>,
        capacity: usize,
        hooks: crate::logs::writer::Hooks,
    ) -> std::io::Result<std::sync::Arc<LogSink>> {
        LogSink::start(self.store.clone(), self.log_caps(), capacity, hooks)
    }

    /// Writes the token last-use times gathered since the last call; returns how many.
    pub fn persist_token_usage(&self) -> Result<usize, StoreError> {
        self.token_usage().persist(&self.store)
    }

    /// Saves the spend ledger's buckets (replacing the saved ones).
    pub fn save_spend(&self, buckets: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.store.save_spend(buckets)
    }

    /// The spend ledger's saved buckets.
    pub fn load_spend(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.store.load_spend()
    }

    /// Why the store's writes are failing, while they are.
    pub fn store_failure(&self) -> Option<String> {
        self.store.failure()
    }

    /// Reads the store once (for readiness); returns its schema version. A file that refuses
    /// reads after an I/O error is re-opened (at most once a second) for the next look.
    pub fn check_store(&self) -> Result<u64, StoreError> {
        self.store.schema_version().inspect_err(|e| {
            if e.is_io() {
                self.store.recover();
            }
        })
    }

    /// A consistent copy of the whole store at `path` (which must not exist).
    pub fn backup_to(&self, path: &std::path::Path) -> Result<Copied, StoreError> {
        self.store.backup_to(path)
    }

    /// A gateway's analytics between two Unix times, in buckets of `bucket_secs` (in cluster
    /// mode, of every node's traffic).
    pub fn analytics(&self, gateway: &str, start: i64, end: i64, bucket_secs: i64) -> Result<Report, StoreError> {
        if let Some(reader) = self.store.reader() {
            let gw = gateway.to_string();
            return reader
                .run(move |c| analytics::report_pg(c, &gw, start, end, bucket_secs))
                .map_err(|e| StoreError::Replica(e.0));
        }
        analytics::report(&self.store, gateway, start, end, bucket_secs)
    }
}
