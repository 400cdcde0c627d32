//! The response cache: key derivation, TTL rules, single-flight, expiry and LRU eviction.
//!
//! Entries live in memory (a HIT never touches the disk); the size cap evicts the least
//! recently used. A streamed (SSE) response is stored whole and replayed with the same events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::header::HeaderMap;
use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::store::GatewayRecord;

/// Largest response stored.
pub const MAX_ENTRY_BYTES: usize = 25 * 1024 * 1024;
/// TTL of a custom-key entry when neither the request nor the gateway sets one.
const CUSTOM_KEY_TTL: Duration = Duration::from_secs(300);

/// A cache key (SHA-256).
pub type Key = [u8; 32];

/// A stored response: what was filled in, with its expiry and last use. Derefs to the
/// [`Fill`], so `entry.status`, `entry.body`, ... read through.
pub struct Entry {
    response: Fill,
    expires: Instant,
    last_used: AtomicU64,
}

impl Entry {
    /// An entry served from outside this cache (the cluster's shared one), live for `ttl`.
    #[must_use]
    pub fn detached(fill: Fill, ttl: Duration) -> Arc<Self> {
        Arc::new(Self { response: fill, expires: Instant::now() + ttl, last_used: AtomicU64::new(0) })
    }
}

/// The key of a gateway's custom-key entry (`cf-aig-cache-key`).
#[must_use]
pub fn custom_key(gateway: &str, custom_key: &str) -> Key {
    hash(&[b"custom", gateway.as_bytes(), custom_key.as_bytes()])
}

impl std::ops::Deref for Entry {
    type Target = Fill;

    fn deref(&self) -> &Fill {
        &self.response
    }
}

/// How one request uses the cache.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Its key.
    pub key: Key,
    /// How long a stored answer lives.
    pub ttl: Duration,
    /// Whether to look up (false with `cf-aig-skip-cache`).
    pub read: bool,
}

/// Per-gateway counters.
#[derive(Debug, Default, Clone, Serialize)]
pub struct GatewayStats {
    /// Answers served from the cache.
    pub hits: u64,
    /// Cacheable requests that went upstream.
    pub misses: u64,
    /// Input tokens not spent thanks to hits.
    pub tokens_saved_in: u64,
    /// Output tokens not spent thanks to hits.
    pub tokens_saved_out: u64,
    /// USD not spent thanks to hits.
    pub cost_saved: f64,
}

/// Stats for the management API.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// Live entries.
    pub entries: u64,
    /// Their body bytes.
    pub bytes: u64,
    /// Hits, misses, savings.
    #[serde(flatten)]
    pub counters: GatewayStats,
    /// hits / (hits + misses).
    pub hit_ratio: f64,
}

/// Outcome of asking to lead a key's upstream call.
pub enum Flight {
    /// Go upstream; dropping the guard releases the waiters.
    Lead(FlightGuard),
    /// Another request is fetching this key: wait, then look again.
    Follow(Arc<Notify>),
}

/// Held by the request fetching a key for everybody.
pub struct FlightGuard {
    cache: Arc<Cache>,
    key: Key,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if let Ok(mut f) = self.cache.flights.lock()
            && let Some(n) = f.remove(&self.key)
        {
            n.notify_waiters();
        }
    }
}

/// The cache.
pub struct Cache {
    entries: Mutex<HashMap<Key, Arc<Entry>>>,
    flights: Mutex<HashMap<Key, Arc<Notify>>>,
    stats: Mutex<HashMap<String, GatewayStats>>,
    bytes: AtomicU64,
    max_bytes: u64,
    clock: AtomicU64,
}

fn hash(parts: &[&[u8]]) -> Key {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// Headers that change what the provider answers, beyond path and body.
const VERSION_HEADERS: &[&str] =
    &["anthropic-version", "anthropic-beta", "openai-beta", "openai-organization", "openai-project"];

/// The TTL and key for a request, or `None` when caching does not apply. The derived key covers
/// the gateway, provider, method, path and query, body, version headers and a hash of the
/// client's credential, so no client gets an answer cached for another key.
#[must_use]
/// A request's own cache controls (`cf-aig-cache-ttl`, `cf-aig-skip-cache`, `cf-aig-cache-key`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Controls<'a> {
    /// TTL in seconds; 0 turns caching off for the request.
    pub ttl: Option<u64>,
    /// Skip the lookup (the answer may still be stored).
    pub skip: bool,
    /// A custom key replacing the derived one.
    pub key: Option<&'a str>,
}

pub fn plan(gw: &GatewayRecord, options: &Controls<'_>, request: &KeyParts<'_>) -> Option<Plan> {
    if options.ttl == Some(0) {
        // `cf-aig-cache-ttl: 0`: no caching for this request (Cloudflare's per-step opt-out).
        return None;
    }
    let gateway_ttl = gw.cache_ttl.filter(|t| *t > 0).map(Duration::from_secs);
    let ttl = options.ttl.map(Duration::from_secs).or(gateway_ttl).or_else(|| options.key.map(|_| CUSTOM_KEY_TTL))?;
    let key = if let Some(custom) = options.key {
        custom_key(request.gateway, custom)
    } else {
        let mut credential = Sha256::new();
        if let Some(alias) = request.stored_key_alias {
            credential.update(b"stored:");
            credential.update(alias.as_bytes());
        }
        let client_credentials = if request.stored_key_alias.is_some() { &[][..] } else { request.credential_headers };
        for name in client_credentials {
            for v in request.headers.get_all(*name) {
                credential.update(name.as_bytes());
                credential.update(v.as_bytes());
            }
        }
        let credential: [u8; 32] = credential.finalize().into();
        let mut versions = Vec::new();
        for name in VERSION_HEADERS {
            if let Some(v) = request.headers.get(*name) {
                versions.extend_from_slice(name.as_bytes());
                versions.push(b'=');
                versions.extend_from_slice(v.as_bytes());
                versions.push(b'\n');
            }
        }
        hash(&[
            request.gateway.as_bytes(),
            request.provider.as_bytes(),
            request.method.as_bytes(),
            request.path.as_bytes(),
            request.body,
            &versions,
            &credential,
        ])
    };
    Some(Plan { key, ttl, read: !options.skip })
}

/// What the derived key is made of.
pub struct KeyParts<'a> {
    /// Gateway id.
    pub gateway: &'a str,
    /// Provider slug.
    pub provider: &'a str,
    /// Method.
    pub method: &'a str,
    /// Path after the slug, with its query.
    pub path: &'a str,
    /// Body bytes.
    pub body: &'a [u8],
    /// Client headers.
    pub headers: &'a HeaderMap,
    /// Which of them carry the provider credential.
    pub credential_headers: &'a [&'a str],
    /// The stored key used instead of a client credential, if any.
    pub stored_key_alias: Option<&'a str>,
}

/// A response to store when it completes (and, inside an [`Entry`], the stored one).
pub struct Fill {
    /// Gateway.
    pub gateway: String,
    /// Provider slug (a custom provider's answers are dropped when its `base_url` changes).
    pub provider: String,
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Tokens and cost of the call.
    pub tokens_in: u64,
    /// Output tokens.
    pub tokens_out: u64,
    /// USD.
    pub cost: f64,
    /// The model the response named (a HIT is logged with it, like the call that filled it).
    pub model: Option<String>,
}

impl Cache {
    /// An empty cache holding at most `max_bytes` of bodies.
    #[must_use]
    pub fn new(max_bytes: u64) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
            stats: Mutex::new(HashMap::new()),
            bytes: AtomicU64::new(0),
            max_bytes,
            clock: AtomicU64::new(0),
        })
    }

    /// A live entry; expired ones are never served.
    pub fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        let entries = self.entries.lock().ok()?;
        let e = entries.get(key)?;
        if e.expires <= Instant::now() {
            return None;
        }
        e.last_used.store(self.clock.fetch_add(1, Relaxed), Relaxed);
        Some(Arc::clone(e))
    }

    /// Lead the upstream call for `key`, or follow the request already doing it.
    pub fn fly(self: &Arc<Self>, key: Key) -> Flight {
        let Ok(mut flights) = self.flights.lock() else {
            return Flight::Lead(FlightGuard { cache: Arc::clone(self), key });
        };
        if let Some(n) = flights.get(&key) {
            return Flight::Follow(Arc::clone(n));
        }
        flights.insert(key, Arc::new(Notify::new()));
        Flight::Lead(FlightGuard { cache: Arc::clone(self), key })
    }

    /// Whether a request is fetching `key` right now.
    pub fn in_flight(&self, key: &Key) -> bool {
        self.flights.lock().is_ok_and(|f| f.contains_key(key))
    }

    /// Stores a 2xx response up to the size limit, then evicts the least recently used
    /// entries while over the cap.
    pub fn insert(&self, key: Key, ttl: Duration, fill: Fill) {
        if !(200..300).contains(&fill.status) || fill.body.len() > MAX_ENTRY_BYTES {
            return;
        }
        let size = fill.body.len() as u64;
        let entry = Arc::new(Entry {
            response: fill,
            expires: Instant::now() + ttl,
            last_used: AtomicU64::new(self.clock.fetch_add(1, Relaxed)),
        });
        let Ok(mut entries) = self.entries.lock() else { return };
        if let Some(old) = entries.insert(key, entry) {
            self.bytes.fetch_sub(old.body.len() as u64, Relaxed);
        }
        let total = self.bytes.fetch_add(size, Relaxed) + size;
        if total > self.max_bytes {
            let mut by_age: Vec<(u64, Key, u64)> =
                entries.iter().map(|(k, e)| (e.last_used.load(Relaxed), *k, e.body.len() as u64)).collect();
            by_age.sort_unstable_by_key(|(used, _, _)| *used);
            let target = self.max_bytes - self.max_bytes / 10;
            let mut current = total;
            for (_, k, len) in by_age {
                if current <= target {
                    break;
                }
                entries.remove(&k);
                current -= len;
            }
            self.bytes.store(current, Relaxed);
        }
    }

    /// Removes expired entries (run in the background).
    pub fn sweep(&self) {
        let now = Instant::now();
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, e| {
                let live = e.expires > now;
                if !live {
                    self.bytes.fetch_sub(e.body.len() as u64, Relaxed);
                }
                live
            });
        }
    }

    /// Drops a gateway's entries (purge, `cache_invalidate_on_update`); returns how many.
    pub fn purge_gateway(&self, gateway: &str) -> u64 {
        let Ok(mut entries) = self.entries.lock() else { return 0 };
        let before = entries.len();
        entries.retain(|_, e| {
            let keep = e.gateway != gateway;
            if !keep {
                self.bytes.fetch_sub(e.body.len() as u64, Relaxed);
            }
            keep
        });
        (before - entries.len()) as u64
    }

    /// Drops every gateway's entries from `provider`; returns how many.
    pub fn purge_provider(&self, provider: &str) -> u64 {
        let Ok(mut entries) = self.entries.lock() else { return 0 };
        let before = entries.len();
        entries.retain(|_, e| {
            let keep = e.provider != provider;
            if !keep {
                self.bytes.fetch_sub(e.body.len() as u64, Relaxed);
            }
            keep
        });
        (before - entries.len()) as u64
    }

    /// Drops one custom-key entry of a gateway; returns whether it existed.
    pub fn purge_key(&self, gateway: &str, custom_key: &str) -> bool {
        let key = self::custom_key(gateway, custom_key);
        let Ok(mut entries) = self.entries.lock() else { return false };
        match entries.remove(&key) {
            Some(e) => {
                self.bytes.fetch_sub(e.body.len() as u64, Relaxed);
                true
            }
            None => false,
        }
    }

    /// Counts a hit (with what it saved) or a miss.
    pub fn count(&self, gateway: &str, hit: Option<&Entry>) {
        if let Ok(mut stats) = self.stats.lock() {
            let s = stats.entry(gateway.to_string()).or_default();
            match hit {
                Some(e) => {
                    s.hits += 1;
                    s.tokens_saved_in += e.tokens_in;
                    s.tokens_saved_out += e.tokens_out;
                    s.cost_saved += e.cost;
                }
                None => s.misses += 1,
            }
        }
    }

    /// Live entries and their bytes, over every gateway.
    pub fn totals(&self) -> (u64, u64) {
        let entries = self.entries.lock().map_or(0, |e| e.len() as u64);
        (entries, self.bytes.load(Relaxed))
    }

    /// A gateway's entries, bytes and counters.
    pub fn stats(&self, gateway: &str) -> Stats {
        let now = Instant::now();
        let (entries, bytes) = self.entries.lock().map_or((0, 0), |e| {
            e.values()
                .filter(|e| e.gateway == gateway && e.expires > now)
                .fold((0, 0), |(n, b), e| (n + 1, b + e.body.len() as u64))
        });
        let counters = self.stats.lock().ok().and_then(|s| s.get(gateway).cloned()).unwrap_or_default();
        let asked = counters.hits + counters.misses;
        #[expect(clippy::cast_precision_loss, reason = "a ratio")]
        let hit_ratio = if asked == 0 { 0.0 } else { counters.hits as f64 / asked as f64 };
        Stats { entries, bytes, counters, hit_ratio }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn fill(body: &'static str, status: u16) -> Fill {
        Fill {
            gateway: "g".into(),
            provider: "openai".into(),
            status,
            headers: HeaderMap::new(),
            body: Bytes::from(body),
            tokens_in: 3,
            tokens_out: 4,
            cost: 0.5,
            model: None,
        }
    }

    fn parts<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> KeyParts<'a> {
        KeyParts {
            gateway: "g",
            provider: "openai",
            method: "POST",
            path: "chat/completions",
            body,
            headers,
            credential_headers: &["authorization"],
            stored_key_alias: None,
        }
    }

    #[test]
    fn ttl_rules() {
        let mut gw = GatewayRecord::new_default("t");
        let h = HeaderMap::new();
        assert!(plan(&gw, &Controls::default(), &parts(&h, b"{}")).is_none(), "off by default");
        gw.cache_ttl = Some(120);
        assert_eq!(plan(&gw, &Controls::default(), &parts(&h, b"{}")).unwrap().ttl, Duration::from_secs(120));
        let o = Controls { ttl: Some(600), ..Controls::default() };
        assert_eq!(plan(&gw, &o, &parts(&h, b"{}")).unwrap().ttl, Duration::from_secs(600));
        gw.cache_ttl = Some(0);
        let o = Controls { key: Some("k"), ..Controls::default() };
        assert_eq!(plan(&gw, &o, &parts(&h, b"{}")).unwrap().ttl, CUSTOM_KEY_TTL, "5 minutes for a custom key");
        let o = Controls { ttl: Some(60), skip: true, ..Controls::default() };
        assert!(!plan(&gw, &o, &parts(&h, b"{}")).unwrap().read);
    }

    #[test]
    fn keys_separate_credentials_bodies_and_versions() {
        let gw = GatewayRecord { cache_ttl: Some(60), ..GatewayRecord::new_default("t") };
        let opts = Controls::default();
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            h
        };
        let a = with(&[("authorization", "Bearer one")]);
        let b = with(&[("authorization", "Bearer two")]);
        let v = with(&[("authorization", "Bearer one"), ("anthropic-version", "2023-06-01")]);
        let m = with(&[("authorization", "Bearer one"), ("cf-aig-metadata", "{\"u\":1}")]);
        let key = |h: &HeaderMap, body: &[u8]| plan(&gw, &opts, &parts(h, body)).unwrap().key;
        assert_ne!(key(&a, b"{}"), key(&b, b"{}"));
        assert_ne!(key(&a, b"{}"), key(&a, b"{ }"));
        assert_ne!(key(&a, b"{}"), key(&v, b"{}"));
        assert_eq!(key(&a, b"{}"), key(&m, b"{}"), "metadata is not part of the key");
    }

    #[test]
    fn stores_2xx_expires_and_evicts_lru() {
        let cache = Cache::new(25);
        cache.insert([1; 32], Duration::from_secs(60), fill("0123456789", 200));
        cache.insert([2; 32], Duration::from_secs(60), fill("0123456789", 200));
        cache.insert([9; 32], Duration::from_secs(60), fill("x", 500));
        assert!(cache.get(&[9; 32]).is_none(), "non-2xx is not cached");
        assert!(cache.get(&[1; 32]).is_some(), "touch 1 so 2 is the least recently used");
        cache.insert([3; 32], Duration::from_secs(60), fill("0123456789", 200));
        assert!(cache.get(&[2; 32]).is_none(), "evicted");
        assert!(cache.get(&[1; 32]).is_some() && cache.get(&[3; 32]).is_some());
        cache.insert([4; 32], Duration::ZERO, fill("y", 200));
        assert!(cache.get(&[4; 32]).is_none(), "expired entries are never served");
        cache.sweep();
        assert_eq!(cache.stats("g").entries, 2);
        assert_eq!(cache.purge_gateway("g"), 2);
    }
}
