//! Spend limits and budgets that are never overspent.
//!
//! A gateway's `spend_limits` (Cloudflare's rules: a USD limit per window, fixed or sliding,
//! optionally only for some models, providers or metadata values, or split by them) and a
//! token's budget become claims on a [`Ledger`]. Before a request is forwarded its worst-case
//! cost is *reserved* against every claim that applies, in one step under one lock: if it does
//! not fit in any of them, nothing is reserved and the request is refused. When the answer's
//! usage arrives the reservation is settled to the real cost; a request that fails releases it.
//! So concurrent requests can never together spend more than a limit — unlike a check of the
//! spend so far, which lets every request of a burst through.
//!
//! Windows: fixed windows are aligned to multiples of their length since the Unix epoch; sliding
//! windows are kept in 60 slices, and a slice counts until the whole of it has left the window
//! (a little early refusal, never an overspend).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Error;

/// How a rule treats one dimension (model, provider, a metadata key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dimension {
    /// Not restricted, not split.
    Any,
    /// The rule applies only to these values.
    Filter(Vec<String>),
    /// One bucket per value.
    Partition,
}

/// One spend rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The operator's name for it.
    pub id: String,
    /// USD per window.
    pub limit: f64,
    /// Window length in seconds.
    pub window: u64,
    /// Sliding (the trailing window) or fixed (aligned windows).
    pub sliding: bool,
    /// By model (`{provider}/{model}` or the bare model).
    pub model: Dimension,
    /// By provider slug.
    pub provider: Dimension,
    /// By `cf-aig-metadata` key.
    pub metadata: Vec<(String, Dimension)>,
}

/// Most rules per gateway (Cloudflare's limit).
pub const MAX_RULES: usize = 20;

fn bad(field: &str, reason: &str) -> Error {
    Error::invalid(field, reason)
}

fn dimension(v: Option<&Value>, at: &str, allow_partition: bool) -> Result<Dimension, Error> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(Dimension::Any) };
    let Value::Object(o) = v else { return Err(bad(at, "must be an object {mode, values}")) };
    if let Some(k) = o.keys().find(|k| !matches!(k.as_str(), "mode" | "values")) {
        return Err(bad(&format!("{at}.{k}"), "is not a field Torii knows (mode, values)"));
    }
    match o.get("mode").and_then(Value::as_str) {
        Some("filter") => {
            let values: Vec<String> = o
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default();
            if values.is_empty() {
                return Err(bad(&format!("{at}.values"), "must list at least one value for mode \"filter\""));
            }
            Ok(Dimension::Filter(values))
        }
        Some("partition") if allow_partition => Ok(Dimension::Partition),
        _ => Err(bad(&format!("{at}.mode"), "must be \"filter\" or \"partition\"")),
    }
}

fn number(o: &Map<String, Value>, key: &str, at: &str) -> Result<f64, Error> {
    o.get(key)
        .and_then(Value::as_f64)
        .filter(|n| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| bad(&format!("{at}.{key}"), "is required: a number ≥ 0"))
}

/// Parses and checks a gateway's `spend_limits`; `Ok(None)`: off.
pub fn parse(value: &Value) -> Result<Option<Vec<Rule>>, Error> {
    let o = match value {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        _ => return Err(bad("spend_limits", "must be an object or null")),
    };
    if let Some(k) = o.keys().find(|k| !matches!(k.as_str(), "enabled" | "rules")) {
        return Err(bad(&format!("spend_limits.{k}"), "is not a field Torii knows (enabled, rules)"));
    }
    let enabled = match o.get("enabled") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("spend_limits.enabled", "must be a boolean")),
    };
    let list = match o.get("rules") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(bad("spend_limits.rules", "must be an array")),
    };
    if list.len() > MAX_RULES {
        return Err(bad("spend_limits.rules", "may hold at most 20 rules"));
    }
    let mut rules = Vec::new();
    let mut ids = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let at = format!("spend_limits.rules[{i}]");
        let Value::Object(r) = r else { return Err(bad(&at, "must be an object")) };
        let known = ["id", "enabled", "limitType", "limit", "window", "technique", "model", "provider", "metadata"];
        if let Some(k) = r.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(bad(&format!("{at}.{k}"), "is not a field Torii knows"));
        }
        let id = r.get("id").and_then(Value::as_str).map_or_else(|| format!("rule-{}", i + 1), str::to_string);
        if ids.contains(&id) {
            return Err(bad(&format!("{at}.id"), "is used by another rule"));
        }
        ids.push(id.clone());
        match r.get("limitType").and_then(Value::as_str) {
            Some("cost") => {}
            _ => return Err(bad(&format!("{at}.limitType"), "is required and must be \"cost\"")),
        }
        let limit = number(r, "limit", &at)?;
        let window = r.get("window").and_then(Value::as_u64).filter(|w| (1..=31_536_000).contains(w));
        let window = window.ok_or_else(|| bad(&format!("{at}.window"), "is required: seconds, 1 to 31536000"))?;
        let sliding = match r.get("technique").and_then(Value::as_str) {
            None | Some("fixed") => false,
            Some("sliding") => true,
            Some(_) => return Err(bad(&format!("{at}.technique"), "must be \"fixed\" or \"sliding\"")),
        };
        let model = dimension(r.get("model"), &format!("{at}.model"), true)?;
        let provider = dimension(r.get("provider"), &format!("{at}.provider"), true)?;
        let mut metadata = Vec::new();
        match r.get("metadata") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    metadata.push((k.clone(), dimension(Some(v), &format!("{at}.metadata.{k}"), true)?));
                }
            }
            Some(_) => return Err(bad(&format!("{at}.metadata"), "must be an object")),
        }
        let on = r.get("enabled").and_then(Value::as_bool).unwrap_or(true);
        if on {
            rules.push(Rule { id, limit, window, sliding, model, provider, metadata });
        }
    }
    Ok((enabled && !rules.is_empty()).then_some(rules))
}

/// What a request is, for the rules' filters and partitions.
pub struct Subject<'a> {
    /// Provider slug.
    pub provider: &'a str,
    /// The model as named (`{provider}/{model}` on the unified API, else the bare model).
    pub model: Option<&'a str>,
    /// `cf-aig-metadata` as (key, value text).
    pub metadata: &'a [(String, String)],
}

fn model_matches(values: &[String], subject: &Subject<'_>) -> bool {
    let Some(model) = subject.model else { return false };
    let qualified = format!("{}/{}", subject.provider, model.rsplit_once('/').map_or(model, |(_, m)| m));
    values.iter().any(|v| v == model || *v == qualified || model.ends_with(&format!("/{v}")))
}

impl Rule {
    /// The bucket this request falls in, or `None` when the rule does not apply to it.
    #[must_use]
    pub fn bucket(&self, scope: &str, s: &Subject<'_>) -> Option<String> {
        let mut key = format!("{scope}|{}", self.id);
        match &self.provider {
            Dimension::Filter(v) if !v.iter().any(|p| p == s.provider) => return None,
            Dimension::Partition => {
                let _ = write!(key, "|provider={}", s.provider);
            }
            _ => {}
        }
        match &self.model {
            Dimension::Filter(v) if !model_matches(v, s) => return None,
            Dimension::Partition => {
                let _ = write!(key, "|model={}", s.model.unwrap_or(""));
            }
            _ => {}
        }
        for (name, d) in &self.metadata {
            let value = s.metadata.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
            match d {
                Dimension::Filter(v) if !value.is_some_and(|x| v.iter().any(|w| w == x)) => return None,
                Dimension::Partition => {
                    let _ = write!(key, "|{name}={}", value.unwrap_or(""));
                }
                _ => {}
            }
        }
        Some(key)
    }

    /// How the rule reads in an error message.
    #[must_use]
    pub fn describe(&self) -> String {
        format!(
            "rule '{}' (cost limit {} per {}s, {})",
            self.id,
            self.limit,
            self.window,
            if self.sliding { "sliding" } else { "fixed" }
        )
    }
}

/// One limit a request must fit in.
#[derive(Debug, Clone)]
pub struct Claim {
    /// Bucket key.
    pub key: String,
    /// Most spend per window.
    pub limit: f64,
    /// Window in seconds.
    pub window: u64,
    /// Sliding or fixed.
    pub sliding: bool,
    /// How the limit reads in the refusal.
    pub label: String,
}

/// Slices of a sliding window.
pub const SLICES: u64 = 60;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Bucket {
    window_ms: u64,
    sliding: bool,
    /// (slice start in unix ms, amount settled in it), oldest first.
    slices: Vec<(u64, f64)>,
    #[serde(skip)]
    reserved: f64,
}

impl Bucket {
    fn slice_ms(&self) -> u64 {
        if self.sliding { (self.window_ms / SLICES).max(1000) } else { self.window_ms.max(1) }
    }

    fn forget_before(&mut self, now: u64) {
        let slice = self.slice_ms();
        let keep_from = if self.sliding { now.saturating_sub(self.window_ms) } else { now - now % slice };
        self.slices.retain(|(start, _)| *start + slice > keep_from && (self.sliding || *start >= keep_from));
    }

    fn spent(&mut self, now: u64) -> f64 {
        self.forget_before(now);
        self.slices.iter().map(|(_, a)| a).sum()
    }

    fn add(&mut self, now: u64, amount: f64) {
        let slice = self.slice_ms();
        let start = now - now % slice;
        match self.slices.last_mut() {
            Some((s, a)) if *s == start => *a += amount,
            _ => self.slices.push((start, amount)),
        }
    }

    /// When enough of the window has passed for `needed` to fit, in ms from `now`.
    fn frees_in(&self, now: u64) -> u64 {
        let slice = self.slice_ms();
        match self.slices.first() {
            Some((start, _)) if self.sliding => (start + slice + self.window_ms).saturating_sub(now),
            _ => slice - now % slice,
        }
    }
}

/// Refusal: which limit, and when it frees up.
#[derive(Debug, Clone)]
pub struct Exceeded {
    /// The limit's description.
    pub label: String,
    /// Seconds until the window moves on.
    pub retry_after_secs: u64,
}

/// Spend so far in every bucket, shared by all requests of the process.
#[derive(Debug, Default)]
pub struct Ledger {
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// A reservation held for one request: settled to the real cost, or released when dropped.
#[derive(Debug)]
pub struct Reservation {
    ledger: Arc<Ledger>,
    keys: Vec<String>,
    amount: f64,
    done: bool,
}

impl Ledger {
    /// Reserves `amount` in every claim's bucket, or nothing when one of them cannot take it.
    pub fn reserve(self: &Arc<Self>, claims: &[Claim], amount: f64, now_ms: u64) -> Result<Reservation, Exceeded> {
        let amount = if amount.is_finite() { amount.max(0.0) } else { f64::MAX };
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for c in claims {
            let b = buckets.entry(c.key.clone()).or_insert_with(|| Bucket {
                window_ms: c.window.saturating_mul(1000),
                sliding: c.sliding,
                ..Bucket::default()
            });
            b.window_ms = c.window.saturating_mul(1000);
            b.sliding = c.sliding;
            let spent = b.spent(now_ms);
            // Exhausted limits refuse even a request that costs nothing yet (Cloudflare keeps
            // blocking until the window frees up).
            // A pico-dollar of slack keeps float rounding from refusing an exact fit.
            if spent + b.reserved + amount > c.limit + 1e-12 || spent >= c.limit {
                return Err(Exceeded {
                    label: c.label.clone(),
                    retry_after_secs: b.frees_in(now_ms).div_ceil(1000).max(1),
                });
            }
        }
        for c in claims {
            if let Some(b) = buckets.get_mut(&c.key) {
                b.reserved += amount;
            }
        }
        Ok(Reservation {
            ledger: Arc::clone(self),
            keys: claims.iter().map(|c| c.key.clone()).collect(),
            amount,
            done: false,
        })
    }

    fn finish(&self, keys: &[String], reserved: f64, spent: Option<(f64, u64)>) {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for k in keys {
            if let Some(b) = buckets.get_mut(k) {
                b.reserved = (b.reserved - reserved).max(0.0);
                if let Some((amount, now)) = spent {
                    b.add(now, amount);
                }
            }
        }
    }

    /// Spend so far and reserved in a bucket (for the admin UI and tests).
    #[must_use]
    pub fn usage(&self, key: &str, now_ms: u64) -> (f64, f64) {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        buckets.get_mut(key).map_or((0.0, 0.0), |b| (b.spent(now_ms), b.reserved))
    }

    /// Every bucket with its spend so far (prefix-filtered), for display.
    #[must_use]
    pub fn list(&self, prefix: &str, now_ms: u64) -> Vec<(String, f64, f64)> {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<(String, f64, f64)> = buckets
            .iter_mut()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, b)| (k.clone(), b.spent(now_ms), b.reserved))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The settled spend of every bucket, encoded for the store. Buckets whose window has
    /// passed with nothing reserved are forgotten here, so partitions by an unbounded value
    /// (a user id) do not pile up.
    #[must_use]
    pub fn snapshot(&self, now_ms: u64) -> Vec<(String, Vec<u8>)> {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        buckets.retain(|_, b| {
            b.forget_before(now_ms);
            !b.slices.is_empty() || b.reserved > 0.0
        });
        buckets
            .iter_mut()
            .filter_map(|(k, b)| {
                b.forget_before(now_ms);
                serde_json::to_vec(&*b).ok().map(|v| (k.clone(), v))
            })
            .collect()
    }

    /// Restores buckets saved by [`Ledger::snapshot`] (unreadable ones are skipped).
    pub fn restore(&self, saved: Vec<(String, Vec<u8>)>) {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (k, v) in saved {
            if let Ok(b) = serde_json::from_slice::<Bucket>(&v) {
                buckets.insert(k, b);
            }
        }
    }
}

impl Reservation {
    /// Settles to the real cost (`None`: unknown, the reserved worst case is kept as spent).
    pub fn settle(mut self, cost: Option<f64>, now_ms: u64) {
        self.done = true;
        let spent = cost.filter(|c| c.is_finite()).map_or(self.amount, |c| c.max(0.0));
        self.ledger.finish(&self.keys, self.amount, Some((spent, now_ms)));
    }

    /// What was reserved.
    #[must_use]
    pub fn amount(&self) -> f64 {
        self.amount
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.ledger.finish(&self.keys, self.amount, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(limit: f64, window: u64, sliding: bool) -> Claim {
        Claim { key: "k".into(), limit, window, sliding, label: "l".into() }
    }

    #[test]
    fn reservations_never_exceed_the_limit() {
        let ledger = Arc::new(Ledger::default());
        let c = [claim(1.0, 3600, false)];
        let held: Vec<Reservation> = (0..10).filter_map(|_| ledger.reserve(&c, 0.3, 1_000).ok()).collect();
        assert_eq!(held.len(), 3, "0.9 reserved; a fourth 0.3 does not fit");
        let mut it = held.into_iter();
        it.next().unwrap().settle(Some(0.1), 1_000);
        drop(it.next()); // failed: released
        let (spent, reserved) = ledger.usage("k", 1_000);
        assert!((spent - 0.1).abs() < 1e-9 && (reserved - 0.3).abs() < 1e-9, "{spent} {reserved}");
        assert!(ledger.reserve(&c, 0.3, 1_000).is_ok());
    }

    #[test]
    fn passed_windows_are_forgotten() {
        let ledger = Arc::new(Ledger::default());
        for user in 0..100 {
            let c = [Claim { key: format!("u{user}"), ..claim(1.0, 60, false) }];
            ledger.reserve(&c, 0.1, 1_000).unwrap().settle(Some(0.1), 1_000);
        }
        assert_eq!(ledger.snapshot(30_000).len(), 100);
        assert!(ledger.snapshot(61_000).is_empty(), "the next window holds nothing");
    }

    #[test]
    fn fixed_windows_reset_and_sliding_ones_drain() {
        let ledger = Arc::new(Ledger::default());
        let fixed = [claim(1.0, 60, false)];
        ledger.reserve(&fixed, 1.0, 10_000).unwrap().settle(Some(1.0), 10_000);
        let e = ledger.reserve(&fixed, 0.0, 30_000).unwrap_err();
        assert_eq!(e.retry_after_secs, 30);
        assert!(ledger.reserve(&fixed, 0.5, 60_000).is_ok(), "a new aligned window");
        let sliding = [Claim { key: "s".into(), ..claim(1.0, 60, true) }];
        ledger.reserve(&sliding, 1.0, 10_000).unwrap().settle(Some(1.0), 10_000);
        assert!(ledger.reserve(&sliding, 0.1, 65_000).is_err(), "still within the trailing minute");
        assert!(ledger.reserve(&sliding, 0.1, 71_001).is_ok());
    }

    #[test]
    fn rules_parse_filter_and_partition() {
        let rules =
            parse(&json!({"enabled": true, "rules": [{"id": "u", "limitType": "cost", "limit": 5, "window": 86400,
            "technique": "sliding", "provider": {"mode": "filter", "values": ["openai"]},
            "metadata": {"user": {"mode": "partition"}}}]}))
            .unwrap()
            .unwrap();
        let meta = vec![("user".to_string(), "alice".to_string())];
        let s = Subject { provider: "openai", model: Some("gpt-4o"), metadata: &meta };
        assert_eq!(rules[0].bucket("gw", &s).unwrap(), "gw|u|user=alice");
        let other = Subject { provider: "anthropic", model: None, metadata: &meta };
        assert!(rules[0].bucket("gw", &other).is_none());
        for (bad, field) in [
            (json!({"rules": [{"limitType": "tokens", "limit": 1, "window": 60}]}), "spend_limits.rules[0].limitType"),
            (json!({"rules": [{"limitType": "cost", "window": 60}]}), "spend_limits.rules[0].limit"),
            (json!({"rules": [{"limitType": "cost", "limit": 1}]}), "spend_limits.rules[0].window"),
            (
                json!({"rules": [{"limitType": "cost", "limit": 1, "window": 60, "model": {"mode": "x"}}]}),
                "spend_limits.rules[0].model.mode",
            ),
        ] {
            let e = parse(&bad).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
        assert!(parse(&json!({"enabled": false, "rules": []})).unwrap().is_none());
    }
}
