//! Which fields of a log are indexed, how their values are written in index keys, and the index
//! rows themselves: per (field, value), the ids of a 16 ms time bucket in one row.

use foldhash::HashMap;
use std::borrow::Cow;
use std::sync::LazyLock;

use redb::{ReadableTable, StorageError, Table};
use serde_json::Value;

use super::record::{LogMeta, decode_meta};
pub use crate::store::index_rows::IndexKey;
use crate::store::index_rows::{bucket, decode, encode};

/// Fields answered from the index (`eq` filters).
pub const INDEXED: &[&str] = &["provider", "model", "success", "cached", "status_code", "event_id", "feedback"];

/// Whether a field keeps per-value counters (not for unique values such as event ids).
#[must_use]
pub fn is_counted(field: &str) -> bool {
    field != "event_id"
}

/// Index key text for a filter value (strings as is, numbers and booleans as JSON).
#[must_use]
pub fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// Status codes as index text, made once (every log is indexed under its status).
static STATUS_TEXT: LazyLock<Vec<String>> = LazyLock::new(|| (0..600u16).map(|c| c.to_string()).collect());

fn status_text(code: u16) -> Cow<'static, str> {
    STATUS_TEXT.get(usize::from(code)).map_or_else(|| Cow::Owned(code.to_string()), |t| Cow::Borrowed(t.as_str()))
}

/// The log id an event id names when it is written as that id is (a lowercase hyphenated UUID).
#[must_use]
pub fn own_id_of(event_id: &str) -> Option<u128> {
    if event_id.len() != 36 || event_id.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    uuid::Uuid::try_parse(event_id).ok().map(|u| u.as_u128())
}

/// Whether a log's event id is its own id (the gateway's generated event ids are, see
/// `gateway::Ids`). Those are not indexed: one index row per log cost the writer about 2 µs a
/// log, and the log is found by its id ([`ids`], [`contains`]).
#[must_use]
pub fn is_own_id(m: &LogMeta) -> bool {
    own_id_of(&m.event_id) == Some(m.id)
}

/// The stored log of `gateway` whose event id `value` is its own id.
fn own_event(
    logs: &impl ReadableTable<LogKey, &'static [u8]>,
    gateway: &str,
    value: &str,
) -> Result<Option<u128>, StorageError> {
    let Some(id) = own_id_of(value) else { return Ok(None) };
    let Some(row) = logs.get((gateway, id))? else { return Ok(None) };
    Ok(decode_meta(row.value()).is_some_and(|m| is_own_id(&m)).then_some(id))
}

/// The key of the logs table: (gateway, log id).
type LogKey = (&'static str, u128);

/// (field, value) pairs a log is indexed under; `metadata.{key}` for each metadata entry.
/// Borrowed from the log where they can be (the writer indexes every log it stores).
#[must_use]
pub fn index_entries(m: &LogMeta) -> Vec<(Cow<'static, str>, Cow<'_, str>)> {
    let flag = |b: bool| Cow::Borrowed(if b { "true" } else { "false" });
    // Room for every field but metadata (the writer indexes every log: one allocation each).
    let mut out = Vec::with_capacity(INDEXED.len());
    out.extend([
        (Cow::Borrowed("provider"), Cow::Borrowed(&*m.provider)),
        (Cow::Borrowed("success"), flag(m.success)),
        (Cow::Borrowed("cached"), flag(m.cached)),
        (Cow::Borrowed("status_code"), status_text(m.status_code)),
    ]);
    if !is_own_id(m) {
        out.push((Cow::Borrowed("event_id"), Cow::Borrowed(&*m.event_id)));
    }
    if let Some(model) = &m.model {
        out.push((Cow::Borrowed("model"), Cow::Borrowed(&**model)));
    }
    if let Some(f) = m.feedback {
        out.push((Cow::Borrowed("feedback"), Cow::Owned(f.to_string())));
    }
    if let Some(Ok(Value::Object(map))) = m.metadata.as_deref().map(serde_json::from_str::<Value>) {
        for (k, v) in map {
            out.push((Cow::Owned(format!("metadata.{k}")), Cow::Owned(key_text(&v))));
        }
    }
    out
}

/// Whether the log `id` has `value` in `field`.
pub fn contains(
    (index, logs): (&impl ReadableTable<IndexKey<'static>, &'static [u8]>, &impl ReadableTable<LogKey, &'static [u8]>),
    (gateway, field, value): (&str, &str, &str),
    id: u128,
) -> Result<bool, StorageError> {
    if field == "event_id" && own_id_of(value) == Some(id) && own_event(logs, gateway, value)?.is_some() {
        return Ok(true);
    }
    let Some(row) = index.get((gateway, field, value, bucket(id)))? else { return Ok(false) };
    let bytes = row.value();
    let (mut lo, mut hi) = (0, bytes.len() / 16);
    while lo < hi {
        let mid = usize::midpoint(lo, hi);
        let at = u128::from_be_bytes(bytes[mid * 16..mid * 16 + 16].try_into().unwrap_or([0; 16]));
        match at.cmp(&id) {
            std::cmp::Ordering::Equal => return Ok(true),
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
        }
    }
    Ok(false)
}

/// The ids of the logs with `value` in `field` within `lo..=hi`, in id order (newest first when
/// `descending`), read a bucket at a time; for an event id, with the log whose own id it is.
pub fn ids<'t>(
    (index, logs): (
        &'t impl ReadableTable<IndexKey<'static>, &'static [u8]>,
        &impl ReadableTable<LogKey, &'static [u8]>,
    ),
    (gateway, field, value): (&str, &str, &str),
    (lo, hi): (u128, u128),
    descending: bool,
) -> Result<impl Iterator<Item = Result<u128, StorageError>> + 't, StorageError> {
    let mut own = if field == "event_id" { own_event(logs, gateway, value)? } else { None };
    own = own.filter(|id| (lo..=hi).contains(id));
    let range = index.range((gateway, field, value, bucket(lo))..=(gateway, field, value, bucket(hi)))?;
    let rows: Box<dyn Iterator<Item = _>> = if descending { Box::new(range.rev()) } else { Box::new(range) };
    let mut indexed = rows
        .flat_map(move |row| -> Vec<Result<u128, StorageError>> {
            match row {
                Ok((_, v)) => {
                    let mut ids = decode(v.value());
                    ids.retain(|id| (lo..=hi).contains(id));
                    if descending {
                        ids.reverse();
                    }
                    ids.into_iter().map(Ok).collect()
                }
                Err(e) => vec![Err(e)],
            }
        })
        .peekable();
    // The own id goes in at its place in the order (once, should the index name it too).
    Ok(std::iter::from_fn(move || {
        if let Some(o) = own {
            let next = match indexed.peek() {
                Some(Ok(id)) => Some(*id),
                Some(Err(_)) => return indexed.next(),
                None => None,
            };
            if next.is_none_or(|id| if descending { o > id } else { o < id }) {
                own = None;
                return Some(Ok(o));
            }
            if next == Some(o) {
                own = None;
            }
        }
        indexed.next()
    }))
}

/// Index rows to add and remove, gathered over a transaction and applied once per bucket:
/// removals first, then additions.
#[derive(Default)]
pub struct IndexChanges<'a> {
    add: HashMap<ChangeKey<'a>, Vec<u128>>,
    remove: HashMap<ChangeKey<'a>, Vec<u128>>,
    /// gateway → logs added minus removed.
    logs: HashMap<&'a str, i64>,
}

/// (gateway, field, value).
type ChangeKey<'a> = (&'a str, Cow<'static, str>, Cow<'a, str>);

impl<'a> IndexChanges<'a> {
    /// Indexes `m` (in `gateway`).
    pub fn add(&mut self, gateway: &'a str, m: &'a LogMeta) {
        for (field, value) in index_entries(m) {
            self.add.entry((gateway, field, value)).or_default().push(m.id);
        }
        *self.logs.entry(gateway).or_default() += 1;
    }

    /// Takes `m` (in `gateway`) out of the indexes (a log added in these changes is just not
    /// added).
    pub fn remove(&mut self, gateway: &'a str, m: &LogMeta) {
        for (field, value) in index_entries(m) {
            let key = (gateway, field, Cow::Owned(value.into_owned()));
            if let Some(added) = self.add.get_mut(&key)
                && let Some(at) = added.iter().rposition(|id| *id == m.id)
            {
                added.swap_remove(at);
                continue;
            }
            self.remove.entry(key).or_default().push(m.id);
        }
        *self.logs.entry(gateway).or_default() -= 1;
    }

    /// gateway → how many logs are added minus removed.
    pub fn log_deltas(&self) -> impl Iterator<Item = (&str, i64)> {
        self.logs.iter().map(|(g, d)| (*g, *d))
    }

    /// (gateway, field, value) → how many logs are added minus removed, for the counters (the
    /// counted fields only).
    #[must_use]
    pub fn deltas(&self) -> HashMap<(&str, &str, &str), i64> {
        let mut out: HashMap<(&str, &str, &str), i64> = HashMap::default();
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        for ((g, f, v), ids) in self.add.iter().filter(|((_, f, _), _)| is_counted(f)) {
            *out.entry((g, f, v)).or_default() += count(ids.len());
        }
        for ((g, f, v), ids) in self.remove.iter().filter(|((_, f, _), _)| is_counted(f)) {
            *out.entry((g, f, v)).or_default() -= count(ids.len());
        }
        out
    }

    /// Writes the changes: one read and one write per (field, value, bucket) touched.
    pub fn apply(self, index: &mut Table<'_, IndexKey<'static>, &'static [u8]>) -> Result<(), StorageError> {
        // In key order: consecutive rows share their B-tree pages (a batch has one event-id
        // row per log, which in the maps' order would land all over the tree).
        for ((g, f, v), mut gone) in in_key_order(self.remove) {
            gone.sort_unstable();
            for ids in gone.chunk_by(|a, b| bucket(*a) == bucket(*b)) {
                crate::store::pace::pace();
                let key = (g, f.as_ref(), v.as_ref(), bucket(ids[0]));
                let Some(mut kept) = index.get(key)?.map(|row| decode(row.value())) else { continue };
                kept.retain(|id| ids.binary_search(id).is_err());
                if kept.is_empty() {
                    index.remove(key)?;
                } else {
                    index.insert(key, encode(&kept).as_slice())?;
                }
            }
        }
        let mut adds = in_key_order(self.add);
        for (_, ids) in &mut adds {
            ids.sort_unstable();
        }
        // A field's new rows go in through one cursor at the place of its first: most are new
        // rows after the field's last (every event id has its own, in time order).
        for field in adds.chunk_by(|((g1, f1, _), _), ((g2, f2, _), _)| (g1, f1) == (g2, f2)) {
            let mut rows: Vec<(IndexKey<'_>, Vec<u8>)> = Vec::new();
            let mut of_row: Vec<&[u128]> = Vec::new();
            for ((g, f, v), new) in field {
                crate::store::pace::pace();
                for ids in new.chunk_by(|a, b| bucket(*a) == bucket(*b)) {
                    rows.push(((g, f.as_ref(), v.as_ref(), bucket(ids[0])), encode(ids)));
                    of_row.push(ids);
                }
            }
            let Some(first) = rows.first().map(|(key, _)| *key) else { continue };
            let borrowed: Vec<(IndexKey<'_>, &[u8])> =
                rows.iter().map(|(key, value)| (*key, value.as_slice())).collect();
            for i in crate::store::insert_in_gap(index, std::ops::Bound::Excluded(&first), &borrowed)? {
                crate::store::pace::pace();
                add_ids(index, borrowed[i].0, of_row[i])?;
            }
        }
        Ok(())
    }
}

/// Adds `ids` to the row at `key`: written first and merged only when a row was there (for a
/// new row, one B-tree walk instead of two).
fn add_ids(
    index: &mut Table<'_, IndexKey<'static>, &'static [u8]>,
    key: IndexKey<'_>,
    ids: &[u128],
) -> Result<(), StorageError> {
    let Some(mut merged) = index.insert(key, encode(ids).as_slice())?.map(|old| decode(old.value())) else {
        return Ok(());
    };
    merged.extend_from_slice(ids);
    merged.sort_unstable();
    merged.dedup();
    index.insert(key, encode(&merged).as_slice())?;
    Ok(())
}

/// The changes sorted as the index orders its keys (by gateway, field, value; the buckets of
/// one value are ordered where they are applied).
fn in_key_order(changes: HashMap<ChangeKey<'_>, Vec<u128>>) -> Vec<(ChangeKey<'_>, Vec<u128>)> {
    let mut sorted: Vec<_> = changes.into_iter().collect();
    sorted.sort_unstable_by(|(a, _), (b, _)| (a.0, a.1.as_ref(), a.2.as_ref()).cmp(&(b.0, b.1.as_ref(), b.2.as_ref())));
    sorted
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, TableDefinition, TableHandle};

    use super::*;
    use crate::logs::record::log_id;
    use crate::logs::record::tests::sample;
    use crate::store::StoreError;
    use crate::store::{Store, tables};

    fn meta(id: u128, model: &str) -> LogMeta {
        LogMeta { model: Some(model.into()), event_id: format!("ev-{id}").into(), ..sample(id) }
    }

    #[test]
    fn status_text_is_the_number_as_text_in_and_past_the_table() {
        for code in [0, 1, 200, 404, 599, 600, 999, u16::MAX] {
            assert_eq!(status_text(code), code.to_string());
        }
    }

    fn listed_by(store: &Store, (field, value): (&str, &str), bounds: (u128, u128), descending: bool) -> Vec<u128> {
        let txn = store.db().unwrap().begin_read().unwrap();
        let index = txn.open_table(tables::LOG_INDEX).unwrap();
        let logs = txn.open_table(tables::LOGS).unwrap();
        ids((&index, &logs), ("gw", field, value), bounds, descending).unwrap().map(Result::unwrap).collect()
    }

    fn listed(store: &Store, model: &str, bounds: (u128, u128), descending: bool) -> Vec<u128> {
        listed_by(store, ("model", model), bounds, descending)
    }

    /// Stores the logs and their index rows, as the writer does.
    fn write(store: &Store, metas: &[LogMeta]) {
        store
            .write(|txn| {
                let mut changes = IndexChanges::default();
                let mut logs = txn.open_table(tables::LOGS)?;
                for m in metas {
                    crate::logs::writer::insert_log(&mut logs, &mut changes, "gw", m)?;
                }
                changes.apply(&mut txn.open_table(tables::LOG_INDEX)?)?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
    }

    #[test]
    fn bucket_rows_list_in_id_order_whatever_order_batches_bring_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.redb")).unwrap();
        // 300 ids over 300 ms (about 19 buckets), written in three batches that interleave, as
        // logs of long and short requests arrive out of order.
        let all: Vec<u128> = (0..300).map(|i| log_id(1_780_000_000_000 + i)).collect();
        for part in 0..3 {
            let metas: Vec<LogMeta> = all
                .iter()
                .skip(part)
                .step_by(3)
                .rev()
                .map(|id| meta(*id, if id % 2 == 0 { "a" } else { "b" }))
                .collect();
            write(&store, &metas);
        }
        let a: Vec<u128> = all.iter().copied().filter(|id| id % 2 == 0).collect();
        assert_eq!(listed(&store, "a", (0, u128::MAX), false), a);
        let mut newest_first = a.clone();
        newest_first.reverse();
        assert_eq!(listed(&store, "a", (0, u128::MAX), true), newest_first);
        // Bounds inside buckets.
        let (lo, hi) = (all[17], all[201]);
        let inside: Vec<u128> = a.iter().copied().filter(|id| (lo..=hi).contains(id)).collect();
        assert_eq!(listed(&store, "a", (lo, hi), false), inside);
        let txn = store.db().unwrap().begin_read().unwrap();
        let index = txn.open_table(tables::LOG_INDEX).unwrap();
        let logs = txn.open_table(tables::LOGS).unwrap();
        for id in &all {
            assert_eq!(contains((&index, &logs), ("gw", "model", "a"), *id).unwrap(), id % 2 == 0);
            assert!(contains((&index, &logs), ("gw", "event_id", &format!("ev-{id}")), *id).unwrap());
        }
        let rows = index.range(("gw", "model", "a", 0)..=("gw", "model", "a", u64::MAX)).unwrap().count();
        assert!(rows <= 20, "one row per bucket, not per log: {rows}");
    }

    /// Generated event ids are their log's own id and have no index rows; they are found as
    /// exactly as indexed ones, in order among them, and only in their own text.
    #[test]
    fn an_event_id_that_is_its_logs_own_id_is_found_without_an_index_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.redb")).unwrap();
        let ids: Vec<u128> = (0..6).map(|i| log_id(1_780_000_000_000 + i * 20)).collect();
        let text = |id: u128| uuid::Uuid::from_u128(id).to_string();
        let mut metas: Vec<LogMeta> =
            ids.iter().map(|id| LogMeta { event_id: text(*id).into(), ..sample(*id) }).collect();
        // A client sent log 3's own id as the event id of logs 1 and 5 (one before, one after).
        metas[1].event_id = text(ids[3]).into();
        metas[5].event_id = text(ids[3]).into();
        // Log 4 was given another event id: its own id's text must not find it.
        metas[4].event_id = "client-chosen".into();
        write(&store, &metas);
        let own: Vec<bool> = metas.iter().map(is_own_id).collect();
        assert_eq!(own, [true, false, true, true, false, false]);
        let txn = store.db().unwrap().begin_read().unwrap();
        let index = txn.open_table(tables::LOG_INDEX).unwrap();
        let rows: Vec<String> = index
            .iter()
            .unwrap()
            .filter_map(|r| {
                let row = r.unwrap();
                let (_, field, value, _) = row.0.value();
                (field == "event_id").then(|| value.to_string())
            })
            .collect();
        assert_eq!(rows.len(), 3, "only the logs whose event id is not their own: {rows:?}");
        let all = (0, u128::MAX);
        assert_eq!(listed_by(&store, ("event_id", &text(ids[0])), all, false), [ids[0]]);
        assert_eq!(listed_by(&store, ("event_id", &text(ids[3])), all, false), [ids[1], ids[3], ids[5]]);
        assert_eq!(listed_by(&store, ("event_id", &text(ids[3])), all, true), [ids[5], ids[3], ids[1]]);
        assert_eq!(listed_by(&store, ("event_id", &text(ids[3])), (ids[2], ids[4]), false), [ids[3]]);
        assert_eq!(listed_by(&store, ("event_id", &text(ids[3])), (ids[4], ids[5]), false), [ids[5]]);
        assert!(listed_by(&store, ("event_id", &text(ids[4])), all, false).is_empty());
        assert!(listed_by(&store, ("event_id", &text(ids[0]).to_uppercase()), all, false).is_empty());
        assert_eq!(listed_by(&store, ("event_id", "client-chosen"), all, false), [ids[4]]);
        let logs = txn.open_table(tables::LOGS).unwrap();
        let has = |value: &str, id: u128| contains((&index, &logs), ("gw", "event_id", value), id).unwrap();
        assert!(has(&text(ids[2]), ids[2]) && has(&text(ids[3]), ids[3]) && has(&text(ids[3]), ids[5]));
        assert!(!has(&text(ids[4]), ids[4]) && !has(&text(ids[2]), ids[3]) && !has(&text(ids[3]), ids[2]));
        // Removing a log takes out exactly what adding it put in.
        drop((index, logs, txn));
        store
            .write(|txn| {
                let mut changes = IndexChanges::default();
                let mut logs = txn.open_table(tables::LOGS)?;
                for m in &metas {
                    crate::logs::writer::remove_log(&mut logs, &mut changes, "gw", m)?;
                }
                let removed: usize =
                    changes.remove.iter().filter(|((_, f, _), _)| f == "event_id").map(|(_, i)| i.len()).sum();
                assert_eq!(removed, 3, "logs 1, 4 and 5 had event id rows");
                changes.apply(&mut txn.open_table(tables::LOG_INDEX)?)?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        assert!(listed_by(&store, ("event_id", &text(ids[3])), all, false).is_empty());
    }

    #[test]
    fn removals_take_ids_out_and_a_log_added_and_removed_in_one_batch_is_not_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.redb")).unwrap();
        let ids: Vec<u128> = (0..10).map(|i| log_id(1_780_000_000_000 + i)).collect();
        write(&store, &ids.iter().map(|id| meta(*id, "a")).collect::<Vec<_>>());
        let mut changes = IndexChanges::default();
        // A patch: the old values out, the new ones in, in one set of changes.
        let patched = meta(ids[3], "b");
        changes.remove("gw", &meta(ids[3], "a"));
        changes.add("gw", &patched);
        // Evicted in the batch that added it.
        let late = meta(log_id(1_780_000_000_005), "a");
        changes.add("gw", &late);
        changes.remove("gw", &late);
        changes.remove("gw", &meta(ids[9], "a"));
        let deltas = changes.deltas();
        assert_eq!(deltas.get(&("gw", "model", "a")), Some(&-2));
        assert_eq!(deltas.get(&("gw", "model", "b")), Some(&1));
        assert_eq!(changes.log_deltas().collect::<Vec<_>>(), vec![("gw", -1)]);
        store
            .write(|txn| {
                std::mem::take(&mut changes).apply(&mut txn.open_table(tables::LOG_INDEX)?)?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let kept: Vec<u128> = ids.iter().copied().filter(|id| *id != ids[3] && *id != ids[9]).collect();
        assert_eq!(listed(&store, "a", (0, u128::MAX), false), kept);
        assert_eq!(listed(&store, "b", (0, u128::MAX), false), vec![ids[3]]);
    }

    #[test]
    fn a_schema_2_index_is_converted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let old: TableDefinition<(&str, &str, &str, u128), ()> = TableDefinition::new("log_index_v1");
        let ids: Vec<u128> = (0..50).map(|i| log_id(1_780_000_000_000 + i * 7)).collect();
        {
            let store = Store::open(&path).unwrap();
            let txn = store.db().unwrap().begin_write().unwrap();
            {
                let mut t = txn.open_table(old).unwrap();
                for (i, id) in ids.iter().enumerate() {
                    t.insert(("gw", "model", if i % 5 == 0 { "rare" } else { "a" }, *id), ()).unwrap();
                }
                let meta: TableDefinition<&str, u64> = TableDefinition::new("meta");
                txn.open_table(meta).unwrap().insert("schema_version", 2).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), crate::store::SCHEMA_VERSION);
        let rare: Vec<u128> = ids.iter().copied().step_by(5).collect();
        assert_eq!(listed(&store, "rare", (0, u128::MAX), false), rare);
        assert_eq!(listed(&store, "a", (0, u128::MAX), true).len(), 40);
        let txn = store.db().unwrap().begin_read().unwrap();
        assert!(txn.list_tables().unwrap().all(|t| t.name() != "log_index_v1"), "the old table is gone");
    }
}
