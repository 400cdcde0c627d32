//! Cluster mode's logs in PostgreSQL: every node's logs in one table, partitioned by day, so the
//! logs API of any node finds the logs of all.
//!
//! A node commits its logs to its own file first, as always (the request path never waits on a
//! database), with each stored log's id in a queue; a shipping thread copies the queue's head to
//! PostgreSQL in batches and takes it off the queue only once PostgreSQL has committed it, so a
//! PostgreSQL outage or restart loses nothing: the queue waits and the thread tries again. The
//! logs API reads PostgreSQL; its filters and search are checked on the node by the same code that
//! checks them against the node's own file ([`super::query::Collector`]), with the gateway, the
//! time range and the provider and model pushed down to the table's indexes.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::ReadableDatabase;
use uuid::Uuid;

use super::filter::{Op, id_bounds};
use super::query::{Collector, ListQuery, LogPatch, Page, patched};
use super::record::{LogBodies, LogMeta, decode_bodies, decode_meta, encode_meta};
use crate::error::Error;
use crate::store::replica::{PgError, PgTarget, guarded};
use crate::store::rollups::Rollup;
use crate::store::{Queue, Store, tables};

/// Logs copied per round trip.
const SHIP_BATCH: usize = 500;

/// Rollup batches added per round trip.
const ROLLUP_BATCHES: usize = 50;

/// Rows read per round trip by a listing.
const READ_CHUNK: i64 = 500;

/// The advisory lock id under which partitions are created and dropped.
const LOCK_PARTITIONS: i64 = 0x746f_7269_6903;

const MS_PER_DAY: i64 = 86_400_000;

fn pg_err(e: impl Into<PgError>) -> Error {
    Error::SettingsUnavailable(e.into().0)
}

fn not_found(id: &str) -> Error {
    Error::NotFound { kind: "log", id: id.chars().take(64).collect() }
}

/// The last millisecond of year 9999: PostgreSQL's timestamps (and its driver) stop near it.
const LATEST_MS: i64 = 253_402_300_799_999;

fn time_of(ms: i64) -> SystemTime {
    let ms = u64::try_from(ms.min(LATEST_MS)).unwrap_or(0);
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The partition holding day `day` (days since 1970-01-01): its name and bounds.
fn partition(day: i64) -> (String, String, String) {
    let date = |d: i64| {
        time::OffsetDateTime::from_unix_timestamp(d.saturating_mul(86_400))
            .map_or(time::Date::MIN, time::OffsetDateTime::date)
    };
    let (from, to) = (date(day), date(day + 1));
    let name = format!("torii_logs_d{:04}{:02}{:02}", from.year(), u8::from(from.month()), from.day());
    (name, format!("{from} 00:00:00+00"), format!("{to} 00:00:00+00"))
}

/// Creates the partitions for `days` that this node has not seen yet.
fn ensure_partitions(
    client: &mut postgres::Client,
    days: &HashSet<i64>,
    known: &mut HashSet<i64>,
) -> Result<(), PgError> {
    for day in days {
        if known.contains(day) {
            continue;
        }
        let (name, from, to) = partition(*day);
        let mut txn = client.transaction()?;
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_PARTITIONS])?;
        txn.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {name} PARTITION OF torii_logs FOR VALUES FROM ('{from}') TO ('{to}')"
        ))?;
        txn.commit()?;
        known.insert(*day);
    }
    Ok(())
}

/// One log as copied: gateway, metadata (decoded and encoded) and bodies.
type Shipped = (String, LogMeta, Vec<u8>, Option<Vec<u8>>);

/// The queued logs still in the file (a cap may have deleted some meanwhile).
fn read_queued(store: &Store, head: &[(u64, String, u128)]) -> Result<Vec<Shipped>, crate::store::StoreError> {
    let db = store.db()?;
    let txn = db.begin_read()?;
    let logs = txn.open_table(tables::LOGS)?;
    let bodies = super::bodies::BodyReader::open(&txn)?;
    let mut out = Vec::with_capacity(head.len());
    for (_, gateway, id) in head {
        let Some(bytes) = logs.get((gateway.as_str(), *id))? else { continue };
        let bytes = bytes.value().to_vec();
        let Some(meta) = decode_meta(&bytes) else { continue };
        // PostgreSQL keeps each log's bodies compressed on their own.
        let body = bodies.get(*id)?.and_then(super::bodies::Stored::into_packed);
        out.push((gateway.clone(), meta, bytes, body));
    }
    Ok(out)
}

/// Copies logs into PostgreSQL in one statement (arrays of each column, unnested; a log already
/// there is left as is): one round trip per batch, not one per log.
fn insert(client: &mut postgres::Client, logs: &[Shipped], known: &mut HashSet<i64>) -> Result<(), PgError> {
    if logs.is_empty() {
        return Ok(());
    }
    let days = logs.iter().map(|(_, m, _, _)| m.created_at.div_euclid(MS_PER_DAY)).collect();
    ensure_partitions(client, &days, known)?;
    let gateways: Vec<&str> = logs.iter().map(|(g, _, _, _)| g.as_str()).collect();
    let ids: Vec<Uuid> = logs.iter().map(|(_, m, _, _)| Uuid::from_u128(m.id)).collect();
    let times: Vec<SystemTime> = logs.iter().map(|(_, m, _, _)| time_of(m.created_at)).collect();
    let providers: Vec<&str> = logs.iter().map(|(_, m, _, _)| &*m.provider).collect();
    let models: Vec<Option<&str>> = logs.iter().map(|(_, m, _, _)| m.model.as_deref()).collect();
    let metas: Vec<&[u8]> = logs.iter().map(|(_, _, meta, _)| meta.as_slice()).collect();
    let bodies: Vec<Option<&[u8]>> = logs.iter().map(|(_, _, _, b)| b.as_deref()).collect();
    client.execute(
        "INSERT INTO torii_logs (gateway, id, created_at, provider, model, meta, bodies) \
         SELECT * FROM unnest($1::text[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[], $6::bytea[], $7::bytea[]) \
         ON CONFLICT DO NOTHING",
        &[&gateways, &ids, &times, &providers, &models, &metas, &bodies],
    )?;
    Ok(())
}

/// One log batch's per-minute rollups, as the writer queued them.
pub type RollupBatch = Vec<(String, u64, String, String, Rollup)>;

/// Adds queued rollup batches in PostgreSQL, each once: the batch's (node, number) is recorded
/// in the same transaction, and a batch already recorded is skipped (a retry after PostgreSQL
/// committed but before the queue was popped).
pub fn add_rollups(client: &mut postgres::Client, node: i64, batches: &[(u64, Vec<u8>)]) -> Result<(), PgError> {
    let mut txn = client.transaction()?;
    let upsert = txn.prepare(
        "INSERT INTO torii_rollups AS r (gateway, unit, at, provider, model, requests, errors, cached, tokens_in, tokens_out, cost, duration_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (gateway, unit, at, provider, model) DO UPDATE SET \
         requests = r.requests + EXCLUDED.requests, errors = r.errors + EXCLUDED.errors, cached = r.cached + EXCLUDED.cached, \
         tokens_in = r.tokens_in + EXCLUDED.tokens_in, tokens_out = r.tokens_out + EXCLUDED.tokens_out, \
         cost = r.cost + EXCLUDED.cost, duration_ms = r.duration_ms + EXCLUDED.duration_ms",
    )?;
    let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    for (seq, bytes) in batches {
        let fresh = txn.execute(
            "INSERT INTO torii_rollup_batches (node, seq) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&node, &big(*seq)],
        )?;
        let Ok(batch) = postcard::from_bytes::<RollupBatch>(bytes) else { continue };
        if fresh == 0 {
            continue;
        }
        // Minutes, and the hours they fall in.
        let mut sums: std::collections::HashMap<(&str, i8, u64, &str, &str), Rollup> = std::collections::HashMap::new();
        for (gateway, minute, provider, model, r) in &batch {
            sums.entry((gateway, b'm'.cast_signed(), *minute, provider, model)).or_default().merge(r);
            sums.entry((gateway, b'h'.cast_signed(), minute / 60, provider, model)).or_default().merge(r);
        }
        for ((gateway, unit, at, provider, model), r) in sums {
            txn.execute(
                &upsert,
                &[
                    &gateway,
                    &unit,
                    &big(at),
                    &provider,
                    &model,
                    &big(r.requests),
                    &big(r.errors),
                    &big(r.cached),
                    &big(r.tokens_in),
                    &big(r.tokens_out),
                    &r.cost,
                    &big(r.duration_ms),
                ],
            )?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// Starts the thread that copies this node's committed logs to PostgreSQL.
pub fn ship(store: Store, target: PgTarget) -> std::io::Result<()> {
    let node = store.node_id().map_err(std::io::Error::other)?;
    let node = i64::try_from(node).unwrap_or(0);
    std::thread::Builder::new().name("torii-pg-logs".into()).spawn(move || {
        let mut client: Option<postgres::Client> = None;
        let mut known = HashSet::new();
        let mut warned: Option<Instant> = None;
        loop {
            let head = match store.queue_head(Queue::Ship, SHIP_BATCH) {
                Ok(head) => head,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the logs waiting for PostgreSQL");
                    std::thread::park_timeout(Duration::from_secs(1));
                    continue;
                }
            };
            let batches = store.rollups_queue_head(ROLLUP_BATCHES).unwrap_or_default();
            if head.is_empty() && batches.is_empty() {
                std::thread::park_timeout(Duration::from_millis(100));
                continue;
            }
            let result = guarded(|| -> Result<(), PgError> {
                let local = |e: crate::store::StoreError| PgError(e.to_string());
                if client.as_ref().is_none_or(postgres::Client::is_closed) {
                    client = Some(target.connect()?);
                }
                let c = client.as_mut().ok_or_else(|| PgError("not connected".into()))?;
                if let Some(&(through, _, _)) = head.last() {
                    {
                        let _copying = store.ship_lock();
                        insert(c, &read_queued(&store, &head).map_err(local)?, &mut known)?;
                    }
                    store.queue_pop(Queue::Ship, through).map_err(local)?;
                }
                if let Some(&(through, _)) = batches.last() {
                    add_rollups(c, node, &batches)?;
                    store.rollups_queue_pop(through).map_err(local)?;
                }
                Ok(())
            });
            match result {
                Ok(()) => {
                    if warned.take().is_some() {
                        tracing::info!("logs reach PostgreSQL again");
                    }
                }
                Err(e) => {
                    client = None;
                    if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(error = %e, "cannot copy logs to PostgreSQL; they wait in this node's file");
                        warned = Some(Instant::now());
                    }
                    std::thread::park_timeout(Duration::from_millis(500));
                }
            }
        }
    })?;
    Ok(())
}

/// Pushed-down conditions: the provider and model equalities of the filters.
fn pushed(q: &ListQuery) -> (Option<String>, Option<String>) {
    let eq = |key: &str| {
        q.filters.iter().find_map(|f| {
            (f.key == key && f.operator == Op::Eq && f.value.len() == 1)
                .then(|| f.value.first().and_then(|v| v.as_str().map(str::to_string)))
                .flatten()
        })
    };
    (eq("provider"), eq("model"))
}

/// A page of a gateway's logs from every node.
pub fn list(client: &mut postgres::Client, gateway: &str, q: &ListQuery) -> Result<Page, Error> {
    let (lo, hi) = id_bounds(&q.filters);
    let (provider, model) = pushed(q);
    let everything = q.filters.is_empty() && q.search.is_none();
    let count = |client: &mut postgres::Client| -> Result<u64, Error> {
        let n: i64 =
            client.query_one("SELECT count(*) FROM torii_logs WHERE gateway = $1", &[&gateway]).map_err(pg_err)?.get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    };
    let known_total = if everything { Some(count(client)?) } else { None };
    let mut c = Collector::new(q, known_total);
    if lo <= hi {
        let newest_first = c.newest_first();
        let sql = format!(
            "SELECT meta FROM torii_logs WHERE gateway = $1 AND id >= $2 AND id <= $3 \
             AND ($4::text IS NULL OR provider = $4) AND ($5::text IS NULL OR model = $5) \
             ORDER BY id {} LIMIT $6",
            if newest_first { "DESC" } else { "ASC" }
        );
        let statement = client.prepare(&sql).map_err(pg_err)?;
        let (mut from, mut to) = (Uuid::from_u128(lo), Uuid::from_u128(hi));
        'scan: loop {
            let rows =
                client.query(&statement, &[&gateway, &from, &to, &provider, &model, &READ_CHUNK]).map_err(pg_err)?;
            let n = rows.len();
            let mut last = None;
            for row in rows {
                let bytes: Vec<u8> = row.get(0);
                let Some(m) = decode_meta(&bytes) else { continue };
                last = Some(m.id);
                if !c.visit(m) {
                    break 'scan;
                }
            }
            let (Some(last), true) = (last, i64::try_from(n).unwrap_or(0) == READ_CHUNK) else { break };
            if newest_first {
                let Some(next) = last.checked_sub(1) else { break };
                to = Uuid::from_u128(next);
            } else {
                let Some(next) = last.checked_add(1) else { break };
                from = Uuid::from_u128(next);
            }
        }
    }
    // Without pushed-down conditions or a time range, the scan could visit all the gateway's logs.
    let population =
        if (lo, hi) == (0, u128::MAX) && provider.is_none() && model.is_none() { Some(count(client)?) } else { None };
    Ok(c.finish(population))
}

fn parse_id(id: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(id).map_err(|_| not_found(id))
}

/// One log's metadata.
pub fn get(client: &mut postgres::Client, gateway: &str, id: &str) -> Result<LogMeta, Error> {
    let key = parse_id(id)?;
    let row = client
        .query_opt("SELECT meta FROM torii_logs WHERE gateway = $1 AND id = $2", &[&gateway, &key])
        .map_err(pg_err)?;
    row.and_then(|r| decode_meta(&r.get::<_, Vec<u8>>(0))).ok_or_else(|| not_found(id))
}

/// One log's bodies, when they were stored.
pub fn bodies(client: &mut postgres::Client, gateway: &str, id: &str) -> Result<Option<LogBodies>, Error> {
    let key = parse_id(id)?;
    let row = client
        .query_opt("SELECT bodies FROM torii_logs WHERE gateway = $1 AND id = $2", &[&gateway, &key])
        .map_err(pg_err)?
        .ok_or_else(|| not_found(id))?;
    Ok(row.get::<_, Option<Vec<u8>>>(0).and_then(|b| decode_bodies(&b)))
}

/// Changes a log's feedback, score or metadata.
pub fn patch(client: &mut postgres::Client, gateway: &str, id: &str, p: &LogPatch) -> Result<LogMeta, Error> {
    let key = parse_id(id)?;
    let mut txn = client.transaction().map_err(pg_err)?;
    let row = txn
        .query_opt("SELECT meta FROM torii_logs WHERE gateway = $1 AND id = $2 FOR UPDATE", &[&gateway, &key])
        .map_err(pg_err)?;
    let old = row.and_then(|r| decode_meta(&r.get::<_, Vec<u8>>(0))).ok_or_else(|| not_found(id))?;
    let new = patched(&old, p)?;
    let bytes = encode_meta(&new).map_err(|e| Error::Internal(e.to_string()))?;
    txn.execute("UPDATE torii_logs SET meta = $3 WHERE gateway = $1 AND id = $2", &[&gateway, &key, &bytes])
        .map_err(pg_err)?;
    txn.commit().map_err(pg_err)?;
    Ok(new)
}

/// Replaces a log's metadata, if PostgreSQL has the log (a change made on the node that stored
/// it, before or while it was copied).
pub fn put_meta(client: &mut postgres::Client, gateway: &str, meta: &LogMeta) -> Result<u64, Error> {
    let bytes = encode_meta(meta).map_err(|e| Error::Internal(e.to_string()))?;
    client
        .execute(
            "UPDATE torii_logs SET meta = $3 WHERE gateway = $1 AND id = $2",
            &[&gateway, &Uuid::from_u128(meta.id), &bytes],
        )
        .map_err(pg_err)
}

/// Deletes the logs matching `q` (at most `limit`); returns how many went.
pub fn delete(client: &mut postgres::Client, gateway: &str, q: &ListQuery, limit: Option<usize>) -> Result<u64, Error> {
    let mut all = q.clone();
    all.page = 1;
    all.per_page = limit.unwrap_or(usize::MAX).min(1_000_000);
    all.meta_info = false;
    let ids: Vec<Uuid> = list(client, gateway, &all)?.logs.iter().map(|m| Uuid::from_u128(m.id)).collect();
    let mut gone = 0;
    for chunk in ids.chunks(10_000) {
        gone += client
            .execute("DELETE FROM torii_logs WHERE gateway = $1 AND id = ANY($2)", &[&gateway, &chunk])
            .map_err(pg_err)?;
    }
    Ok(gone)
}

/// Deletes a gateway's logs created before `before_ms`.
pub fn expire(client: &mut postgres::Client, gateway: &str, before_ms: i64) -> Result<u64, Error> {
    client
        .execute("DELETE FROM torii_logs WHERE gateway = $1 AND created_at < $2", &[&gateway, &time_of(before_ms)])
        .map_err(pg_err)
}

/// Drops the daily partitions that end before `before_ms` (every gateway's retention has passed
/// them): a whole day goes at once, without a row-by-row delete. Returns how many.
pub fn drop_partitions_before(client: &mut postgres::Client, before_ms: i64) -> Result<u64, Error> {
    let mut txn = client.transaction().map_err(pg_err)?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_PARTITIONS]).map_err(pg_err)?;
    let names: Vec<String> = txn
        .query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'torii_logs'",
            &[],
        )
        .map_err(pg_err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut dropped = 0;
    for name in names {
        // torii_logs_dYYYYMMDD: the partition's day ends at the next midnight.
        let Some(day) = name.strip_prefix("torii_logs_d").and_then(day_of) else { continue };
        if (day + 1).saturating_mul(MS_PER_DAY) <= before_ms {
            txn.batch_execute(&format!("DROP TABLE IF EXISTS {name}")).map_err(pg_err)?;
            dropped += 1;
        }
    }
    txn.commit().map_err(pg_err)?;
    Ok(dropped)
}

/// Days since 1970-01-01 of a `YYYYMMDD` name.
fn day_of(ymd: &str) -> Option<i64> {
    if ymd.len() != 8 || !ymd.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i32 = ymd.get(..4)?.parse().ok()?;
    let month: u8 = ymd.get(4..6)?.parse().ok()?;
    let day: u8 = ymd.get(6..)?.parse().ok()?;
    let date = time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp().div_euclid(86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_and_bounds_round_trip() {
        let day = 20_423; // 2025-12-01
        let (name, from, to) = partition(day);
        assert_eq!(name, "torii_logs_d20251201");
        assert_eq!((from.as_str(), to.as_str()), ("2025-12-01 00:00:00+00", "2025-12-02 00:00:00+00"));
        assert_eq!(day_of("20251201"), Some(day));
        assert_eq!(day_of("2025120"), None);
        assert_eq!(day_of("20251301"), None);
    }
}
