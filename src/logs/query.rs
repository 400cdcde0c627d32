//! Log queries: newest-first pages driven by the most selective index (filters in `filter`),
//! totals from the counters, detail, bodies, feedback, and deletion.

use redb::ReadableDatabase;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::bodies::{BodyReader, BodyTables};
pub use super::filter::{Filter, ListQuery, Op, id_bounds, parse_query};
use super::filter::{bad, driving_index, matches, matches_search};
use super::index::{self, IndexChanges, is_counted};
use super::record::{LogBodies, LogMeta, decode_meta};
use super::writer::{apply_changes, remove_log};
use crate::error::Error;
use crate::store::{Store, tables};

/// Rows examined after the page is full to count a total that no counter holds.
const COUNT_BUDGET: u64 = 20_000;

/// A page of logs, the total number matching, and optional aggregates.
pub struct Page {
    /// The logs of the page.
    pub logs: Vec<LogMeta>,
    /// Logs matching in all pages.
    pub total_count: u64,
    /// `total_count` was extrapolated from a bounded scan (filters without counters).
    pub total_estimated: bool,
    /// min/max aggregates when asked for.
    pub meta_info: Option<Value>,
}

#[derive(Default)]
struct Aggregates {
    bounds: Vec<(f64, f64)>,
}

impl Aggregates {
    const FIELDS: [&'static str; 5] = ["cost", "duration", "tokens_in", "tokens_out", "total_tokens"];

    fn add(&mut self, m: &LogMeta) {
        let values = [
            m.cost.unwrap_or(0.0),
            f64::from(m.duration),
            f64::from(m.tokens_in),
            f64::from(m.tokens_out),
            f64::from(m.tokens_in) + f64::from(m.tokens_out),
        ];
        if self.bounds.is_empty() {
            self.bounds = values.iter().map(|v| (*v, *v)).collect();
        }
        for (b, v) in self.bounds.iter_mut().zip(values) {
            *b = (b.0.min(v), b.1.max(v));
        }
    }

    fn to_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (i, name) in Self::FIELDS.iter().enumerate() {
            let (lo, hi) = self.bounds.get(i).copied().unwrap_or((0.0, 0.0));
            out.insert(format!("min_{name}"), json!(lo));
            out.insert(format!("max_{name}"), json!(hi));
        }
        Value::Object(out)
    }
}

/// Lists a gateway's logs.
pub fn list(store: &Store, gateway: &str, q: &ListQuery) -> Result<Page, Error> {
    let txn = store.db()?.begin_read().map_err(store_err)?;
    let logs = txn.open_table(tables::LOGS).map_err(store_err)?;
    let index = txn.open_table(tables::LOG_INDEX).map_err(store_err)?;
    let counts = txn.open_table(tables::LOG_COUNTS).map_err(store_err)?;
    let count_of = |field: &str, value: &str| -> Result<u64, Error> {
        Ok(counts.get((gateway, field, value)).map_err(store_err)?.map_or(0, |v| v.value()))
    };
    let driver = pick_driver(q, &count_of)?;
    let (lo, hi) = id_bounds(&q.filters);
    if lo > hi {
        return Ok(Page { logs: Vec::new(), total_count: 0, total_estimated: false, meta_info: None });
    }
    let only_driver = q.search.is_none() && q.filters.len() == 1 && driver.is_some();
    let known_total = if q.filters.is_empty() && q.search.is_none() {
        Some(count_of("", "")?)
    } else if only_driver && driver.as_ref().is_some_and(|d| is_counted(&d.0)) {
        driver.as_ref().map(|d| d.2)
    } else {
        None
    };
    let mut c = Collector::new(q, known_total);
    let index_checks =
        if q.search.is_none() && !c.exact_needed { other_index_checks(q, driver.as_ref()) } else { None };
    if let (Some(checks), Some((field, value, _))) = (&index_checks, &driver) {
        let scan = IndexScan {
            gateway,
            field,
            value,
            ids: (lo, hi),
            checks,
            skip: c.skip as u64,
            count: known_total.is_none(),
        };
        (c.page, c.matched, c.examined, c.full_at) = scan.run(&index, &logs, q)?;
    } else if let Some((field, value, _)) = &driver {
        let ids =
            index::ids((&index, &logs), (gateway, field, value), (lo, hi), c.newest_first()).map_err(store_err)?;
        for id in ids {
            let id = id.map_err(store_err)?;
            let Some(bytes) = logs.get((gateway, id)).map_err(store_err)? else { continue };
            let Some(m) = decode_meta(bytes.value()) else { continue };
            if !c.visit(m) {
                break;
            }
        }
    } else {
        let range = logs.range((gateway, lo)..=(gateway, hi)).map_err(store_err)?;
        let rows: Box<dyn Iterator<Item = _>> = if c.newest_first() { Box::new(range.rev()) } else { Box::new(range) };
        for row in rows {
            let (_, bytes) = row.map_err(store_err)?;
            let Some(m) = decode_meta(bytes.value()) else { continue };
            if !c.visit(m) {
                break;
            }
        }
    }
    // Rows the scan could have visited: the driver's count, or the gateway's total.
    let population = match &driver {
        // A time range holds an unknown share of the population.
        _ if (lo, hi) != (0, u128::MAX) => None,
        Some((field, _, n)) if is_counted(field) => Some(*n),
        Some(_) => None,
        None => Some(count_of("", "")?),
    };
    Ok(c.finish(population))
}

/// Makes a page out of the logs a scan visits, in the scan's order (newest or oldest first): the
/// filters and the search are checked here, whatever store the scan reads.
pub(crate) struct Collector<'q> {
    q: &'q ListQuery,
    by_time: bool,
    skip: usize,
    /// Aggregates and other orders need every match; a total without a counter is counted for
    /// at most `COUNT_BUDGET` more rows after the page is full, then estimated.
    exact_needed: bool,
    known_total: Option<u64>,
    page: Vec<LogMeta>,
    sortable: Vec<LogMeta>,
    matched: u64,
    aggregates: Aggregates,
    examined: u64,
    /// Rows examined when the page was full.
    full_at: Option<u64>,
}

impl<'q> Collector<'q> {
    /// For `q`, with the total when a counter knows it.
    pub(crate) fn new(q: &'q ListQuery, known_total: Option<u64>) -> Self {
        Self {
            q,
            by_time: q.order_by == "created_at",
            skip: (q.page - 1).saturating_mul(q.per_page),
            exact_needed: q.meta_info || q.order_by != "created_at",
            known_total,
            page: Vec::with_capacity(q.per_page.min(1_000)),
            sortable: Vec::new(),
            matched: 0,
            aggregates: Aggregates::default(),
            examined: 0,
            full_at: None,
        }
    }

    /// Whether the scan goes newest first.
    pub(crate) fn newest_first(&self) -> bool {
        self.q.descending || !self.by_time
    }

    /// Takes the scan's next log; returns whether the scan should go on.
    pub(crate) fn visit(&mut self, m: LogMeta) -> bool {
        self.examined += 1;
        if self.page.len() >= self.q.per_page && self.full_at.is_none() {
            self.full_at = Some(self.examined);
        }
        let q = self.q;
        if q.filters.iter().all(|f| matches(&m, f)) && q.search.as_deref().is_none_or(|s| matches_search(&m, s)) {
            self.matched += 1;
            if q.meta_info {
                self.aggregates.add(&m);
            }
            if !self.by_time {
                self.sortable.push(m);
            } else if self.matched > self.skip as u64 && self.page.len() < q.per_page {
                self.page.push(m);
            }
        }
        self.exact_needed
            || self.page.len() < q.per_page
            || (self.known_total.is_none() && self.full_at.is_none_or(|f| self.examined - f < COUNT_BUDGET))
    }

    /// The page; `population` is how many rows the scan could have visited, when known.
    pub(crate) fn finish(mut self, population: Option<u64>) -> Page {
        if !self.by_time {
            sort_by(&mut self.sortable, &self.q.order_by, self.q.descending);
            self.page = self.sortable.into_iter().skip(self.skip).take(self.q.per_page).collect();
        }
        let stopped_early = self.known_total.is_none()
            && !self.exact_needed
            && self.full_at.is_some_and(|f| self.examined - f >= COUNT_BUDGET);
        let (total_count, total_estimated) =
            total(self.known_total, population, stopped_early, self.examined, self.matched);
        Page {
            logs: self.page,
            total_count,
            total_estimated,
            meta_info: self.q.meta_info.then(|| self.aggregates.to_json()),
        }
    }
}

/// The most selective indexed equality drives the scan: (field, value, how many logs have it).
fn pick_driver(
    q: &ListQuery,
    count_of: &impl Fn(&str, &str) -> Result<u64, Error>,
) -> Result<Option<(String, String, u64)>, Error> {
    let mut driver: Option<(String, String, u64)> = None;
    for f in &q.filters {
        if let Some((field, value)) = driving_index(f) {
            // Uncounted fields hold (nearly) unique values: the most selective driver there is.
            let n = if is_counted(&field) { count_of(&field, &value)? } else { 1 };
            if driver.as_ref().is_none_or(|d| n < d.2) {
                driver = Some((field, value, n));
            }
        }
    }
    Ok(driver)
}

/// When every filter is an indexed equality, the ones other than the driver, as index keys.
fn other_index_checks(q: &ListQuery, driver: Option<&(String, String, u64)>) -> Option<Vec<(String, String)>> {
    let all = q.filters.iter().map(driving_index).collect::<Option<Vec<_>>>()?;
    Some(all.into_iter().filter(|f| driver.is_none_or(|d| (&d.0, &d.1) != (&f.0, &f.1))).collect())
}

/// A scan of the driving index where every other filter is an indexed equality too: those are
/// checked by index lookups, and only the page's rows are decoded.
struct IndexScan<'a> {
    gateway: &'a str,
    field: &'a str,
    value: &'a str,
    /// Inclusive id range (from `created_at` bounds).
    ids: (u128, u128),
    checks: &'a [(String, String)],
    skip: u64,
    /// Keep counting past the page (no counter holds the total).
    count: bool,
}

type IndexTable = redb::ReadOnlyTable<index::IndexKey<'static>, &'static [u8]>;
type LogTable = redb::ReadOnlyTable<(&'static str, u128), &'static [u8]>;

impl IndexScan<'_> {
    /// Returns the page, the matches, the rows examined, and when the page was full.
    fn run(
        &self,
        index: &IndexTable,
        logs: &LogTable,
        q: &ListQuery,
    ) -> Result<(Vec<LogMeta>, u64, u64, Option<u64>), Error> {
        let (g, f, v) = (self.gateway, self.field, self.value);
        let ids = index::ids((index, logs), (g, f, v), self.ids, q.descending).map_err(store_err)?;
        let (mut page, mut matched, mut examined, mut full_at) = (Vec::with_capacity(q.per_page), 0u64, 0u64, None);
        for id in ids {
            let id = id.map_err(store_err)?;
            examined += 1;
            if page.len() >= q.per_page && full_at.is_none() {
                full_at = Some(examined);
            }
            let mut hit = true;
            for (cf, cv) in self.checks {
                if !index::contains((index, logs), (g, cf, cv), id).map_err(store_err)? {
                    hit = false;
                    break;
                }
            }
            if hit {
                matched += 1;
                if matched > self.skip && page.len() < q.per_page {
                    page.extend(logs.get((g, id)).map_err(store_err)?.and_then(|b| decode_meta(b.value())));
                }
            }
            let more = page.len() < q.per_page || (self.count && full_at.is_none_or(|at| examined - at < COUNT_BUDGET));
            if !more {
                break;
            }
        }
        Ok((page, matched, examined, full_at))
    }
}

/// The exact total when known, else the matches counted, extrapolated when the scan stopped early
/// (flagged as an estimate either way).
fn total(known: Option<u64>, population: Option<u64>, stopped_early: bool, examined: u64, matched: u64) -> (u64, bool) {
    match (known, population) {
        (Some(t), _) => (t, false),
        (None, Some(pop)) if stopped_early && examined > 0 => {
            #[expect(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "an estimate"
            )]
            let rest = (pop.saturating_sub(examined) as f64 * matched as f64 / examined as f64).round() as u64;
            (matched + rest, true)
        }
        // Without a population to extrapolate to, the matches counted are a lower bound.
        _ => (matched, stopped_early),
    }
}

fn sort_by(logs: &mut [LogMeta], key: &str, descending: bool) {
    logs.sort_by(|a, b| {
        let ord = match key {
            "provider" => a.provider.cmp(&b.provider),
            "model" => a.model.cmp(&b.model),
            "model_type" => a.model_type.cmp(&b.model_type),
            "success" => a.success.cmp(&b.success),
            "cached" => a.cached.cmp(&b.cached),
            "cost" => a.cost.unwrap_or(0.0).total_cmp(&b.cost.unwrap_or(0.0)),
            "tokens_in" => a.tokens_in.cmp(&b.tokens_in),
            "tokens_out" => a.tokens_out.cmp(&b.tokens_out),
            "duration" => a.duration.cmp(&b.duration),
            "feedback" => a.feedback.cmp(&b.feedback),
            _ => a.id.cmp(&b.id),
        };
        let ord = ord.then(a.id.cmp(&b.id));
        if descending { ord.reverse() } else { ord }
    });
}

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Store(e.to_string())
}

fn parse_id(id: &str) -> Result<u128, Error> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.as_u128())
        .map_err(|_| Error::NotFound { kind: "log", id: id.chars().take(64).collect() })
}

/// One log's metadata.
pub fn get(store: &Store, gateway: &str, id: &str) -> Result<LogMeta, Error> {
    let key = parse_id(id)?;
    let txn = store.db()?.begin_read().map_err(store_err)?;
    let logs = txn.open_table(tables::LOGS).map_err(store_err)?;
    let bytes = logs.get((gateway, key)).map_err(store_err)?;
    bytes
        .and_then(|b| decode_meta(b.value()))
        .ok_or_else(|| Error::NotFound { kind: "log", id: id.chars().take(64).collect() })
}

/// One log's stored heads and bodies (`None` when the payload was not collected).
pub fn bodies(store: &Store, gateway: &str, id: &str) -> Result<Option<LogBodies>, Error> {
    let meta = get(store, gateway, id)?;
    let txn = store.db()?.begin_read().map_err(store_err)?;
    let stored = BodyReader::open(&txn)?.get(meta.id).map_err(store_err)?;
    Ok(stored.and_then(|b| b.decode()))
}

/// Feedback, score and metadata changes (`PATCH`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogPatch {
    /// 1, -1 or null.
    #[serde(default, deserialize_with = "nullable")]
    pub feedback: Option<Option<i8>>,
    /// 0–100.
    #[serde(default, deserialize_with = "nullable")]
    pub score: Option<Option<u8>>,
    /// Replaces the metadata.
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, Value>>,
}

#[expect(clippy::option_option, reason = "absent (keep) and null (clear) differ in a PATCH")]
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A log's metadata with a patch applied (checked first).
pub(crate) fn patched(old: &LogMeta, p: &LogPatch) -> Result<LogMeta, Error> {
    if let Some(Some(f)) = p.feedback
        && f != 1
        && f != -1
    {
        return Err(bad("feedback", "must be 1, -1 or null"));
    }
    if let Some(Some(s)) = p.score
        && s > 100
    {
        return Err(bad("score", "must be between 0 and 100"));
    }
    let mut new = old.clone();
    if let Some(f) = p.feedback {
        new.feedback = f;
    }
    if let Some(s) = p.score {
        new.score = s;
    }
    if let Some(m) = &p.metadata {
        if m.len() > 5 || m.values().any(|v| !(v.is_string() || v.is_number() || v.is_boolean())) {
            return Err(bad("metadata", "at most 5 entries of string, number or boolean"));
        }
        new.metadata = Some(Value::Object(m.clone()).to_string().into());
    }
    Ok(new)
}

/// Applies a patch, keeping the indexes in step.
pub fn patch(store: &Store, gateway: &str, id: &str, p: &LogPatch) -> Result<LogMeta, Error> {
    let old = get(store, gateway, id)?;
    let new = patched(&old, p)?;
    store.write(|txn| -> Result<(), Error> {
        let mut logs = txn.open_table(tables::LOGS).map_err(store_err)?;
        let mut index = txn.open_table(tables::LOG_INDEX).map_err(store_err)?;
        let mut counts = txn.open_table(tables::LOG_COUNTS).map_err(store_err)?;
        // The same log (same id) with new metadata: its bodies stay where they are.
        let mut changes = IndexChanges::default();
        remove_log(&mut logs, &mut changes, gateway, &old)?;
        super::writer::insert_log(&mut logs, &mut changes, gateway, &new)?;
        apply_changes(&mut index, &mut counts, changes)?;
        Ok(())
    })?;
    Ok(new)
}

/// Deletes the logs matching the filters (at most `limit`); returns how many.
pub fn delete(store: &Store, gateway: &str, q: &ListQuery, limit: Option<usize>) -> Result<u64, Error> {
    let mut all = q.clone();
    all.page = 1;
    all.per_page = usize::MAX;
    all.meta_info = false;
    let victims = collect_all(store, gateway, &all, limit.unwrap_or(usize::MAX))?;
    store.write(|txn| -> Result<(), Error> {
        let mut logs = txn.open_table(tables::LOGS).map_err(store_err)?;
        let mut bodies = BodyTables::open(txn)?;
        let mut index = txn.open_table(tables::LOG_INDEX).map_err(store_err)?;
        let mut counts = txn.open_table(tables::LOG_COUNTS).map_err(store_err)?;
        let mut changes = IndexChanges::default();
        for m in &victims {
            remove_log(&mut logs, &mut changes, gateway, m)?;
        }
        bodies.remove(&victims.iter().map(|m| m.id).collect::<Vec<_>>()).map_err(store_err)?;
        apply_changes(&mut index, &mut counts, changes)?;
        Ok(())
    })?;
    Ok(victims.len() as u64)
}

pub fn collect_all(store: &Store, gateway: &str, q: &ListQuery, limit: usize) -> Result<Vec<LogMeta>, Error> {
    let mut q = q.clone();
    q.per_page = limit.min(1_000_000);
    Ok(list(store, gateway, &q)?.logs)
}

/// A log in Cloudflare's JSON shape.
#[must_use]
pub fn to_json(m: &LogMeta) -> Value {
    let mut out = to_json_with_nulls(m);
    // Optional fields are left out when unset: Cloudflare's SDK types make them optional, not
    // nullable. The token counts are nullable there, and the rest always has a value.
    if let Value::Object(fields) = &mut out {
        fields.retain(|k, v| !v.is_null() || matches!(k.as_str(), "tokens_in" | "tokens_out" | "model"));
    }
    out
}

/// The DLP and guardrail fields of a log (null when nothing was found).
fn policy_fields(m: &LogMeta) -> Value {
    use std::collections::BTreeSet;
    let dlp = m.policy.as_ref().map(|p| &p.dlp).filter(|d| !d.is_empty());
    let guard = m.policy.as_ref().and_then(|p| p.guardrail.as_ref());
    let set = |f: &dyn Fn(&crate::policy::dlp::Finding) -> Vec<String>| {
        dlp.map(|d| d.findings.iter().flat_map(f).collect::<BTreeSet<String>>())
    };
    json!({
        "dlp_action": dlp.and_then(|d| d.action).map(crate::policy::dlp::Action::as_str),
        "dlp_policies": set(&|f| f.policies.clone()),
        "dlp_profiles": set(&|f| vec![f.profile.clone()]),
        "dlp_entries": set(&|f| f.entries.clone()),
        "dlp_check": set(&|f| vec![f.check.as_str().to_string()]),
        "guardrail_action": guard.and_then(|g| g.action.clone()),
        "guardrail_categories": guard.map(|g| g.categories.clone()),
        "guardrail_unavailable": guard.map(|g| g.unavailable),
    })
}

fn to_json_with_nulls(m: &LogMeta) -> Value {
    let mut out = base_json(m);
    if let (Value::Object(o), Value::Object(p)) = (&mut out, policy_fields(m)) {
        o.extend(p);
    }
    out
}

fn base_json(m: &LogMeta) -> Value {
    let created = OffsetDateTime::from_unix_timestamp_nanos(i128::from(m.created_at) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok());
    json!({
        "id": uuid::Uuid::from_u128(m.id).to_string(),
        "created_at": created,
        "provider": m.provider,
        "model": m.model,
        "model_type": m.model_type,
        "path": m.path,
        "method": m.method,
        "success": m.success,
        "cached": m.cached,
        "status_code": m.status_code,
        "duration": m.duration,
        "time_to_first_byte": m.ttfb,
        "tokens_in": m.tokens_in,
        "tokens_out": m.tokens_out,
        "cached_tokens_in": m.cached_tokens_in,
        "cache_write_tokens": m.cache_write_tokens,
        "cost": m.cost,
        "custom_cost": m.custom_cost,
        // Cloudflare returns metadata as a JSON string.
        "metadata": m.metadata,
        "request_content_type": m.request_content_type,
        "response_content_type": m.response_content_type,
        "request_type": m.request_type.as_str(),
        "step": m.step,
        "attempt": m.attempt,
        "event_id": m.event_id,
        "user_agent": m.user_agent,
        "request_size": m.request_size,
        "response_size": m.response_size,
        "error": m.error,
        "payload_collected": m.payload,
        "truncated": m.truncated,
        "feedback": m.feedback,
        "score": m.score,
        "requested_model": m.requested_model,
    })
}
