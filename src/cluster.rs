//! Cluster mode: state that every node behind one load balancer shares, kept in Redis.
//!
//! Today that is the rate-limit windows (a gateway's and a token's). [`Windows`] is the seam:
//! the embedded windows of [`crate::limits::Limiter`] for one node, or [`SharedWindows`] in
//! Redis for many, with the same semantics (aligned fixed windows, exact trailing windows,
//! all-or-nothing counting across the rules of one request). One Lua script per request checks
//! and counts every rule in one round trip, atomically across nodes.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::config::{ClusterConfig, RedisFailure};
use crate::limits::{Limiter, Rule, Technique};

/// Why a shared limit could not be checked.
#[derive(Debug, thiserror::Error)]
#[error("Redis unavailable: {0}")]
pub struct Unavailable(pub String);

/// The outcome of a rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted and counted.
    Admit,
    /// Over a limit: milliseconds until one more request fits.
    Wait(u64),
    /// The shared store is unreachable and `on_redis_failure = "refuse"`.
    Unavailable,
}

/// Rate-limit windows: this process's, or shared by the cluster.
pub enum Windows {
    /// In this process (one node).
    Local(Limiter),
    /// In Redis (every node naming the same server).
    Shared(SharedWindows),
}

impl Windows {
    /// The windows the configuration asks for.
    #[must_use]
    pub fn new(cluster: &ClusterConfig) -> Self {
        match &cluster.redis_url {
            Some(url) => Self::Shared(SharedWindows::new(url, cluster)),
            None => Self::Local(Limiter::default()),
        }
    }

    /// Counts a request against every `(key, rule)` only when all of them admit it.
    pub async fn check_all(&self, rules: &[(&str, Rule)], now_ms: u64) -> Verdict {
        match self {
            Self::Local(limiter) => match limiter.check_all(rules, now_ms) {
                Ok(()) => Verdict::Admit,
                Err(ms) => Verdict::Wait(ms),
            },
            Self::Shared(shared) => match shared.check_all(rules, now_ms).await {
                Ok(None) => Verdict::Admit,
                Ok(Some(ms)) => Verdict::Wait(ms),
                Err(e) => {
                    shared.failures.fetch_add(1, Relaxed);
                    shared.warn(&e);
                    match shared.on_failure {
                        RedisFailure::Allow => Verdict::Admit,
                        RedisFailure::Refuse => Verdict::Unavailable,
                    }
                }
            },
        }
    }

    /// Rate-limit checks that could not reach Redis (0 for local windows).
    #[must_use]
    pub fn failures(&self) -> u64 {
        match self {
            Self::Local(_) => 0,
            Self::Shared(s) => s.failures.load(Relaxed),
        }
    }
}

/// Checks every rule, then counts them all or none. KEYS: one per rule (a fixed window's key
/// names its window's start). ARGV: now (ms), a member unique to this request, then per rule its
/// limit, interval (ms) and technique (`f` or `s`). Returns -1 when admitted, else the wait in ms.
const CHECK_ALL: &str = r"
local now = tonumber(ARGV[1])
local member = ARGV[2]
local wait = -1
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[3 * i])
  local interval = tonumber(ARGV[3 * i + 1])
  if ARGV[3 * i + 2] == 'f' then
    local count = tonumber(redis.call('GET', key) or '0')
    if count >= limit then
      local start = now - (now % interval)
      wait = math.max(wait, start + interval - now)
    end
  else
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - interval)
    if redis.call('ZCARD', key) >= limit then
      local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      wait = math.max(wait, tonumber(oldest[2]) + interval - now)
    end
  end
end
if wait >= 0 then
  return math.max(wait, 1)
end
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i + 1])
  if ARGV[3 * i + 2] == 'f' then
    redis.call('INCR', key)
    redis.call('PEXPIRE', key, interval)
  else
    redis.call('ZADD', key, now, member)
    redis.call('PEXPIRE', key, interval)
  end
end
return -1
";

/// Rate-limit windows in Redis.
pub struct SharedWindows {
    url: String,
    timeout: Duration,
    on_failure: RedisFailure,
    connection: OnceCell<ConnectionManager>,
    script: redis::Script,
    failures: AtomicU64,
    /// When the last "unreachable" warning was logged (unix seconds), to log once per 10 s.
    warned_at: AtomicU64,
}

impl SharedWindows {
    fn new(url: &str, cluster: &ClusterConfig) -> Self {
        Self {
            url: url.to_string(),
            timeout: Duration::from_millis(cluster.redis_timeout_ms),
            on_failure: cluster.on_redis_failure,
            connection: OnceCell::new(),
            script: redis::Script::new(CHECK_ALL),
            failures: AtomicU64::new(0),
            warned_at: AtomicU64::new(0),
        }
    }

    /// The connection, opened on first use; it reconnects by itself after a failure.
    async fn connection(&self) -> Result<ConnectionManager, Unavailable> {
        let connection = self
            .connection
            .get_or_try_init(|| async {
                let client = redis::Client::open(self.url.as_str()).map_err(|e| Unavailable(e.to_string()))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1);
                tokio::time::timeout(self.timeout, ConnectionManager::new_with_config(client, config))
                    .await
                    .map_err(|_| Unavailable("connection timed out".into()))?
                    .map_err(|e| Unavailable(e.to_string()))
            })
            .await?;
        Ok(connection.clone())
    }

    /// `Ok(None)`: admitted and counted; `Ok(Some(ms))`: over a limit.
    async fn check_all(&self, rules: &[(&str, Rule)], now_ms: u64) -> Result<Option<u64>, Unavailable> {
        let rules: Vec<&(&str, Rule)> = rules.iter().filter(|(_, r)| r.limit > 0 && r.interval_ms > 0).collect();
        if rules.is_empty() {
            return Ok(None);
        }
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(now_ms).arg(uuid::Uuid::now_v7().simple().to_string());
        for (key, rule) in &rules {
            invocation.key(window_key(key, *rule, now_ms));
            let technique = match rule.technique {
                Technique::Fixed => "f",
                Technique::Sliding => "s",
            };
            invocation.arg(rule.limit).arg(rule.interval_ms).arg(technique);
        }
        let mut connection = self.connection().await?;
        let answer: i64 = tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
            .await
            .map_err(|_| Unavailable("timed out".into()))?
            .map_err(|e| Unavailable(e.to_string()))?;
        Ok(u64::try_from(answer).ok())
    }

    fn warn(&self, e: &Unavailable) {
        let now = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
        let last = self.warned_at.load(Relaxed);
        if now >= last + 10 && self.warned_at.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
            let policy = match self.on_failure {
                RedisFailure::Allow => "admitting requests unchecked (on_redis_failure = \"allow\")",
                RedisFailure::Refuse => "refusing rate-limited requests (on_redis_failure = \"refuse\")",
            };
            tracing::warn!(error = %e, "cluster: rate limits cannot reach Redis; {policy}");
        }
    }
}

/// A window's Redis key: the rule is part of it (changed settings count afresh, as in the
/// embedded windows), and a fixed window's start too (each window its own counter).
fn window_key(key: &str, rule: Rule, now_ms: u64) -> String {
    match rule.technique {
        Technique::Fixed => {
            let start = now_ms - now_ms % rule.interval_ms;
            format!("torii:rl:{key}:f:{}:{}:{start}", rule.limit, rule.interval_ms)
        }
        Technique::Sliding => format!("torii:rl:{key}:s:{}:{}", rule.limit, rule.interval_ms),
    }
}
