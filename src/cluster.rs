//! Cluster mode: state that every node behind one load balancer shares, kept in Redis.
//!
//! Today that is the rate-limit windows (a gateway's and a token's). [`Windows`] is the seam:
//! the embedded windows of [`crate::limits::Limiter`] for one node, or [`SharedWindows`] in
//! Redis for many, with the same semantics (aligned fixed windows, exact trailing windows,
//! all-or-nothing counting across the rules of one request). One Lua script per request checks
//! and counts every rule in one round trip, atomically across nodes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::auth::admin::Session;
use crate::cache::{Entry, Fill, Key};
use crate::config::{ClusterConfig, RedisFailure};
use crate::limits::{Limiter, Rule, Technique};
use crate::policy::spend::{Claim, Exceeded, Ledger, Reservation};

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
                    shared.redis.failed(&e);
                    match shared.redis.on_failure {
                        RedisFailure::Allow => Verdict::Admit,
                        RedisFailure::Refuse => Verdict::Unavailable,
                    }
                }
            },
        }
    }

    /// Redis round trips made so far (0 without cluster mode).
    #[must_use]
    pub fn round_trips(&self) -> u64 {
        match self {
            Self::Local(_) => 0,
            Self::Shared(s) => s.redis.round_trips.load(Relaxed),
        }
    }

    /// Whether the windows are the cluster's (in Redis).
    #[must_use]
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Shared(_))
    }

    /// Redis operations (limits, spend, cache, sessions) that failed (0 without cluster mode).
    #[must_use]
    pub fn failures(&self) -> u64 {
        match self {
            Self::Local(_) => 0,
            Self::Shared(s) => s.redis.failures.load(Relaxed),
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

/// The cluster's Redis: one connection (multiplexed, reconnecting by itself) for every node
/// thread, the round-trip timeout, and what happens when it cannot be reached.
pub struct Redis {
    url: String,
    timeout: Duration,
    on_failure: RedisFailure,
    connection: OnceCell<ConnectionManager>,
    failures: AtomicU64,
    /// Round trips made (commands, scripts and pipelines sent).
    round_trips: AtomicU64,
    /// When the last "unreachable" warning was logged (unix seconds), to log once per 10 s.
    warned_at: AtomicU64,
}

impl Redis {
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

    /// One round trip on the connection, within the timeout.
    async fn timed<T, F>(&self, send: impl FnOnce(ConnectionManager) -> F) -> Result<T, Unavailable>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let connection = self.connection().await?;
        self.round_trips.fetch_add(1, Relaxed);
        tokio::time::timeout(self.timeout, send(connection))
            .await
            .map_err(|_| Unavailable("timed out".into()))?
            .map_err(|e| Unavailable(e.to_string()))
    }

    /// Runs a script within the timeout.
    async fn run<T: redis::FromRedisValue>(&self, call: &redis::ScriptInvocation<'_>) -> Result<T, Unavailable> {
        self.timed(|mut c| async move { call.invoke_async(&mut c).await }).await
    }

    /// Sends one command within the timeout.
    async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Unavailable> {
        self.timed(|mut c| async move { cmd.query_async(&mut c).await }).await
    }

    /// Sends a pipeline within the timeout.
    async fn pipe<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, Unavailable> {
        self.timed(|mut c| async move { pipe.query_async(&mut c).await }).await
    }

    /// Counts a failure and logs it (at most once per 10 s).
    fn failed(&self, e: &Unavailable) {
        self.failures.fetch_add(1, Relaxed);
        let now = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
        let last = self.warned_at.load(Relaxed);
        if now >= last + 10 && self.warned_at.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
            let policy = match self.on_failure {
                RedisFailure::Allow => "admitting requests unchecked (on_redis_failure = \"allow\")",
                RedisFailure::Refuse => "refusing the requests they apply to (on_redis_failure = \"refuse\")",
            };
            tracing::warn!(error = %e, "cluster: Redis cannot be reached; limits are {policy}, cache lookups miss");
        }
    }
}

/// Rate-limit windows in Redis.
pub struct SharedWindows {
    redis: Arc<Redis>,
    script: redis::Script,
}

impl SharedWindows {
    fn new(url: &str, cluster: &ClusterConfig) -> Self {
        let redis = Redis {
            url: url.to_string(),
            timeout: Duration::from_millis(cluster.redis_timeout_ms),
            on_failure: cluster.on_redis_failure,
            connection: OnceCell::new(),
            failures: AtomicU64::new(0),
            round_trips: AtomicU64::new(0),
            warned_at: AtomicU64::new(0),
        };
        Self { redis: Arc::new(redis), script: redis::Script::new(CHECK_ALL) }
    }

    /// `Ok(None)`: admitted and counted; `Ok(Some(ms))`: over a limit.
    async fn check_all(&self, rules: &[(&str, Rule)], now_ms: u64) -> Result<Option<u64>, Unavailable> {
        let rules: Vec<&(&str, Rule)> = rules.iter().filter(|(_, r)| r.limit > 0 && r.interval_ms > 0).collect();
        if rules.is_empty() {
            return Ok(None);
        }
        let mut invocation = self.script.prepare_invoke();
        add_rate_rules(&mut invocation, &rules, now_ms);
        let answer: i64 = self.redis.run(&invocation).await?;
        Ok(u64::try_from(answer).ok())
    }
}

/// A rate check's keys and arguments (see [`CHECK_ALL`]).
fn add_rate_rules(invocation: &mut redis::ScriptInvocation<'_>, rules: &[&(&str, Rule)], now_ms: u64) {
    invocation.arg(now_ms).arg(uuid::Uuid::now_v7().simple().to_string());
    for (key, rule) in rules {
        invocation.key(window_key(key, *rule, now_ms));
        let technique = match rule.technique {
            Technique::Fixed => "f",
            Technique::Sliding => "s",
        };
        invocation.arg(rule.limit).arg(rule.interval_ms).arg(technique);
    }
}

/// How many arguments a rate check of `rules` takes (see [`add_rate_rules`]).
fn rate_args(rules: usize) -> usize {
    2 + 3 * rules
}

/// [`CHECK_ALL`] then, if the rate limits admit the request, [`RESERVE`]: a request's rate
/// limits and its spend reservation in one round trip. KEYS: the rate windows, then the spend
/// buckets; ARGV: how many keys and arguments the rate check has, its arguments, then the
/// reservation's. Returns `{2, wait ms}` when a rate limit refuses (nothing counted or
/// reserved), else what [`RESERVE`] returns (the rate windows counted either way, as when the
/// checks run one after the other).
static ADMIT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "local nr, na = tonumber(ARGV[1]), tonumber(ARGV[2])
local RK, RA, SK, SA = {{}}, {{}}, {{}}, {{}}
for i = 1, #KEYS do if i <= nr then RK[#RK + 1] = KEYS[i] else SK[#SK + 1] = KEYS[i] end end
for i = 3, #ARGV do if i <= na + 2 then RA[#RA + 1] = ARGV[i] else SA[#SA + 1] = ARGV[i] end end
local function rate(KEYS, ARGV)
{CHECK_ALL}
end
local function spend(KEYS, ARGV)
{RESERVE}
end
local wait = rate(RK, RA)
if wait ~= -1 then return {{2, wait}} end
return spend(SK, SA)"
    )
});

/// Why a request's combined rate check and reservation did not admit it.
#[derive(Debug)]
pub enum Admission {
    /// A rate limit: milliseconds until one more request fits.
    RateLimited(u64),
    /// The spend reservation was refused (the rate limits counted the request).
    Spend(Refusal),
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

/// Spend so far and reserved: this process's ledger, or the cluster's in Redis.
pub enum Spend {
    /// In this process (saved to the store by the housekeeping thread).
    Local(Arc<Ledger>),
    /// In Redis (every node naming the same server).
    Shared(Arc<SharedLedger>),
}

/// Why a reservation was not made.
#[derive(Debug)]
pub enum Refusal {
    /// A limit cannot take it.
    Exceeded(Exceeded),
    /// Redis cannot be reached and `on_redis_failure = "refuse"`.
    Unavailable,
}

/// A reservation held for one request: settled to the real cost, or released when dropped.
pub enum Held {
    /// In this process's ledger.
    Local(Reservation),
    /// In Redis.
    Shared(SharedReservation),
    /// Redis was unreachable and `on_redis_failure = "allow"`: nothing was reserved.
    Unchecked,
}

impl Held {
    /// Settles to the real cost (`None`: unknown, the reserved worst case counts as spent).
    pub fn settle(self, cost: Option<f64>, now_ms: u64) {
        match self {
            Self::Local(r) => r.settle(cost, now_ms),
            Self::Shared(r) => r.settle(cost, now_ms),
            Self::Unchecked => {}
        }
    }
}

impl Spend {
    /// The ledger the configuration asks for (shares the rate limits' Redis connection).
    #[must_use]
    pub fn new(windows: &Windows) -> Self {
        match windows {
            Windows::Shared(shared) => Self::Shared(Arc::new(SharedLedger { redis: Arc::clone(&shared.redis) })),
            Windows::Local(_) => Self::Local(Arc::default()),
        }
    }

    /// This process's ledger (saved and restored with the store), when the spend is not shared.
    #[must_use]
    pub fn local(&self) -> Option<&Arc<Ledger>> {
        match self {
            Self::Local(l) => Some(l),
            Self::Shared(_) => None,
        }
    }

    /// Reserves `amount` in every claim's bucket, or nothing when one cannot take it.
    pub async fn reserve(&self, claims: &[Claim], amount: f64, now_ms: u64) -> Result<Held, Refusal> {
        match self {
            Self::Local(l) => l.reserve(claims, amount, now_ms).map(Held::Local).map_err(Refusal::Exceeded),
            Self::Shared(s) => match s.reserve(claims, amount, now_ms).await {
                Ok(held) => held.map(Held::Shared).map_err(Refusal::Exceeded),
                Err(e) => {
                    s.redis.failed(&e);
                    match s.redis.on_failure {
                        RedisFailure::Allow => Ok(Held::Unchecked),
                        RedisFailure::Refuse => Err(Refusal::Unavailable),
                    }
                }
            },
        }
    }

    /// Checks and counts `rules` in `windows`, then reserves `amount` in every claim's bucket: in
    /// one round trip when both are in Redis, else one after the other (same answers).
    pub async fn reserve_with_rate(
        &self,
        windows: &Windows,
        rules: &[(&str, Rule)],
        (claims, amount): (&[Claim], f64),
        now_ms: u64,
    ) -> Result<Held, Admission> {
        let rules: Vec<&(&str, Rule)> = rules.iter().filter(|(_, r)| r.limit > 0 && r.interval_ms > 0).collect();
        let (Self::Shared(ledger), Windows::Shared(_), false) = (self, windows, rules.is_empty()) else {
            let owned: Vec<(&str, Rule)> = rules.iter().map(|r| **r).collect();
            return match windows.check_all(&owned, now_ms).await {
                Verdict::Admit => self.reserve(claims, amount, now_ms).await.map_err(Admission::Spend),
                Verdict::Wait(ms) => Err(Admission::RateLimited(ms)),
                Verdict::Unavailable => Err(Admission::Spend(Refusal::Unavailable)),
            };
        };
        match ledger.reserve_with_rate(&rules, claims, amount, now_ms).await {
            Ok(Ok(held)) => Ok(Held::Shared(held)),
            Ok(Err(Ok(wait))) => Err(Admission::RateLimited(wait)),
            Ok(Err(Err(exceeded))) => Err(Admission::Spend(Refusal::Exceeded(exceeded))),
            Err(e) => {
                ledger.redis.failed(&e);
                match ledger.redis.on_failure {
                    RedisFailure::Allow => Ok(Held::Unchecked),
                    RedisFailure::Refuse => Err(Admission::Spend(Refusal::Unavailable)),
                }
            }
        }
    }

    /// Spend so far and reserved in a bucket (zeros when Redis cannot be reached).
    pub async fn usage(&self, key: &str, now_ms: u64) -> (f64, f64) {
        match self {
            Self::Local(l) => l.usage(key, now_ms),
            Self::Shared(s) => s.usage(key, now_ms).await.unwrap_or_else(|e| {
                s.redis.failed(&e);
                (0.0, 0.0)
            }),
        }
    }

    /// Every bucket whose key starts with `prefix`, with its spend so far and reserved.
    pub async fn list(&self, prefix: &str, now_ms: u64) -> Vec<(String, f64, f64)> {
        match self {
            Self::Local(l) => l.list(prefix, now_ms),
            Self::Shared(s) => s.list(prefix, now_ms).await.unwrap_or_else(|e| {
                s.redis.failed(&e);
                Vec::new()
            }),
        }
    }
}

/// How long a reservation holds in Redis when its node never settles it (a node that died
/// mid-request): the longest a request may run with its worst case reserved.
const LEASE_MS: u64 = 30 * 60_000;

/// Per bucket (KEYS: the bucket's hash of settled slices; `:r` its leases, `:a` their amounts):
/// drops leases past their time and slices out of the window, sums the rest. Returns
/// `{1}` when reserved, `{0, ms until the window frees}` when a bucket cannot take `amount`.
/// ARGV: now, lease id, amount, lease ms, then per bucket limit, window ms, sliding (1/0),
/// slice ms.
const RESERVE: &str = r"
local now = tonumber(ARGV[1])
local id = ARGV[2]
local amount = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local function tidy(key, window, sliding, slice)
  local expired = redis.call('ZRANGEBYSCORE', key .. ':r', '-inf', now)
  for _, old in ipairs(expired) do redis.call('HDEL', key .. ':a', old) end
  redis.call('ZREMRANGEBYSCORE', key .. ':r', '-inf', now)
  local keep_from
  if sliding == 1 then keep_from = now - window else keep_from = now - (now % slice) end
  local spent, oldest = 0, nil
  local slices = redis.call('HGETALL', key)
  for i = 1, #slices, 2 do
    local start = tonumber(slices[i])
    if start == nil then
      -- the bucket's settings (_w, _s, _l), not a slice
    elseif start + slice > keep_from and (sliding == 1 or start >= keep_from) then
      spent = spent + tonumber(slices[i + 1])
      if oldest == nil or start < oldest then oldest = start end
    else
      redis.call('HDEL', key, slices[i])
    end
  end
  local reserved = 0
  for _, v in ipairs(redis.call('HVALS', key .. ':a')) do reserved = reserved + tonumber(v) end
  return spent, reserved, oldest
end
for i, key in ipairs(KEYS) do
  local base = 4 * i + 1
  local limit, window = tonumber(ARGV[base]), tonumber(ARGV[base + 1])
  local sliding, slice = tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local spent, reserved, oldest = tidy(key, window, sliding, slice)
  if spent + reserved + amount > limit + 1e-12 or spent >= limit then
    local frees
    if sliding == 1 and oldest ~= nil then frees = oldest + slice + window - now else frees = slice - (now % slice) end
    return {0, math.max(frees, 0), i}
  end
end
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[4 * i + 2])
  redis.call('ZADD', key .. ':r', now + lease, id)
  redis.call('HSET', key .. ':a', id, ARGV[3])
  redis.call('HSET', key, '_w', window, '_s', ARGV[4 * i + 3], '_l', ARGV[4 * i + 4])
  for _, k in ipairs({key, key .. ':r', key .. ':a'}) do redis.call('PEXPIRE', k, window + lease) end
end
return {1}
";

/// Ends a lease in every bucket; with ARGV[3] not empty, adds it as spent to the slice of
/// `now`. ARGV: lease id, now, spent (or ''), then per bucket the slice ms and window ms.
const SETTLE: &str = r"
local id, now, spent = ARGV[1], tonumber(ARGV[2]), ARGV[3]
for i, key in ipairs(KEYS) do
  redis.call('ZREM', key .. ':r', id)
  redis.call('HDEL', key .. ':a', id)
  if spent ~= '' then
    local slice, window = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
    redis.call('HINCRBYFLOAT', key, tostring(now - (now % slice)), spent)
    redis.call('PEXPIRE', key, window + slice)
  end
end
return 1
";

/// Spend so far in the window (as the bucket's last reservation set it) and reserved, as text.
/// ARGV: now.
const USAGE: &str = r"
local now = tonumber(ARGV[1])
local key = KEYS[1]
local reserved = 0
for _, v in ipairs(redis.call('HVALS', key .. ':a')) do reserved = reserved + tonumber(v) end
local window = tonumber(redis.call('HGET', key, '_w') or '0')
local sliding = tonumber(redis.call('HGET', key, '_s') or '1')
local slice = tonumber(redis.call('HGET', key, '_l') or '1')
local keep_from
if sliding == 1 then keep_from = now - window else keep_from = now - (now % slice) end
local spent = 0
local slices = redis.call('HGETALL', key)
for i = 1, #slices, 2 do
  local start = tonumber(slices[i])
  if start ~= nil and start + slice > keep_from and (sliding == 1 or start >= keep_from) then
    spent = spent + tonumber(slices[i + 1])
  end
end
return {tostring(spent), tostring(reserved)}
";

/// The spend ledger in Redis.
pub struct SharedLedger {
    redis: Arc<Redis>,
}

/// A lease in Redis: settled, or released (by a spawned task) when dropped.
pub struct SharedReservation {
    ledger: Arc<SharedLedger>,
    buckets: Vec<(String, u64, u64)>,
    id: String,
    amount: f64,
    done: bool,
}

fn bucket_key(key: &str) -> String {
    format!("torii:spend:{key}")
}

/// A reservation's keys and arguments (see [`RESERVE`]).
fn add_claims(call: &mut redis::ScriptInvocation<'_>, claims: &[Claim], (id, amount): (&str, f64), now_ms: u64) {
    call.arg(now_ms).arg(id).arg(amount.to_string()).arg(LEASE_MS);
    for c in claims {
        call.key(bucket_key(&c.key));
        call.arg(c.limit.to_string()).arg(c.window.saturating_mul(1000)).arg(u8::from(c.sliding)).arg(slice_ms(c));
    }
}

fn slice_ms(claim: &Claim) -> u64 {
    let window = claim.window.saturating_mul(1000);
    if claim.sliding { (window / crate::policy::spend::SLICES).max(1000) } else { window.max(1) }
}

impl SharedLedger {
    async fn reserve(
        self: &Arc<Self>,
        claims: &[Claim],
        amount: f64,
        now_ms: u64,
    ) -> Result<Result<SharedReservation, Exceeded>, Unavailable> {
        let amount = if amount.is_finite() { amount.max(0.0) } else { f64::MAX };
        let id = uuid::Uuid::now_v7().simple().to_string();
        let script = redis::Script::new(RESERVE);
        let mut call = script.prepare_invoke();
        add_claims(&mut call, claims, (&id, amount), now_ms);
        let answer: Vec<u64> = self.redis.run(&call).await?;
        Ok(self.reserved(&answer, claims, id, amount))
    }

    /// [`SharedLedger::reserve`] after a rate check of `rules`, in one round trip (see
    /// [`ADMIT`]); `Err(Ok(ms))`: a rate limit refused.
    async fn reserve_with_rate(
        self: &Arc<Self>,
        rules: &[&(&str, Rule)],
        claims: &[Claim],
        amount: f64,
        now_ms: u64,
    ) -> Result<Result<SharedReservation, Result<u64, Exceeded>>, Unavailable> {
        let amount = if amount.is_finite() { amount.max(0.0) } else { f64::MAX };
        let id = uuid::Uuid::now_v7().simple().to_string();
        let script = redis::Script::new(&ADMIT);
        let mut call = script.prepare_invoke();
        call.arg(rules.len()).arg(rate_args(rules.len()));
        add_rate_rules(&mut call, rules, now_ms);
        add_claims(&mut call, claims, (&id, amount), now_ms);
        let answer: Vec<u64> = self.redis.run(&call).await?;
        if answer.first() == Some(&2) {
            return Ok(Err(Ok(answer.get(1).copied().unwrap_or(1000).max(1))));
        }
        Ok(self.reserved(&answer, claims, id, amount).map_err(Err))
    }

    /// What [`RESERVE`]'s answer means.
    fn reserved(
        self: &Arc<Self>,
        answer: &[u64],
        claims: &[Claim],
        id: String,
        amount: f64,
    ) -> Result<SharedReservation, Exceeded> {
        if answer.first() == Some(&1) {
            let buckets =
                claims.iter().map(|c| (bucket_key(&c.key), slice_ms(c), c.window.saturating_mul(1000))).collect();
            return Ok(SharedReservation { ledger: Arc::clone(self), buckets, id, amount, done: false });
        }
        let frees = answer.get(1).copied().unwrap_or(1000);
        let refused = answer.get(2).and_then(|i| usize::try_from(*i).ok()).and_then(|i| claims.get(i.checked_sub(1)?));
        let label = refused.map_or_else(String::new, |c| c.label.clone());
        Err(Exceeded { label, retry_after_secs: frees.div_ceil(1000).max(1) })
    }

    async fn usage(&self, key: &str, now_ms: u64) -> Result<(f64, f64), Unavailable> {
        let script = redis::Script::new(USAGE);
        let mut call = script.prepare_invoke();
        call.key(bucket_key(key)).arg(now_ms);
        let raw: Vec<String> = self.redis.run(&call).await?;
        let number = |i: usize| raw.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        Ok((number(0), number(1)))
    }

    async fn list(&self, prefix: &str, now_ms: u64) -> Result<Vec<(String, f64, f64)>, Unavailable> {
        let escaped: String = bucket_key(prefix)
            .chars()
            .flat_map(|c| if "*?[]\\".contains(c) { vec!['\\', c] } else { vec![c] })
            .collect();
        let pattern = format!("{escaped}*");
        // SCAN, not KEYS: the server keeps answering other nodes while this walks.
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, found): (u64, Vec<String>) = self
                .redis
                .cmd(redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000))
                .await?;
            keys.extend(found);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut out = Vec::new();
        for key in keys.iter().filter(|k| !k.ends_with(":r") && !k.ends_with(":a")) {
            let bucket = key.trim_start_matches("torii:spend:").to_string();
            let (spent, reserved) = self.usage(&bucket, now_ms).await?;
            out.push((bucket, spent, reserved));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn finish(self: &Arc<Self>, buckets: Vec<(String, u64, u64)>, id: String, spent: Option<f64>, now_ms: u64) {
        let ledger = Arc::clone(self);
        let task = async move {
            let script = redis::Script::new(SETTLE);
            let mut call = script.prepare_invoke();
            call.arg(&id).arg(now_ms).arg(spent.map_or_else(String::new, |s| s.to_string()));
            for (key, slice, window) in &buckets {
                call.key(key);
                call.arg(slice).arg(window);
            }
            if let Err(e) = ledger.redis.run::<i64>(&call).await {
                // The lease runs out by itself; the spend it should have recorded is lost.
                ledger.redis.failed(&e);
            }
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(task);
        } else {
            tracing::warn!("cluster: a spend reservation ended outside the runtime; its lease runs out");
        }
    }
}

impl SharedReservation {
    fn settle(mut self, cost: Option<f64>, now_ms: u64) {
        self.done = true;
        let spent = cost.filter(|c| c.is_finite()).map_or(self.amount, |c| c.max(0.0));
        self.ledger.finish(std::mem::take(&mut self.buckets), std::mem::take(&mut self.id), Some(spent), now_ms);
    }
}

impl Drop for SharedReservation {
    fn drop(&mut self) {
        if !self.done {
            let now = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            self.ledger.finish(std::mem::take(&mut self.buckets), std::mem::take(&mut self.id), None, now);
        }
    }
}

/// The response cache shared by the cluster: entries in Redis with their TTL (no copy in the
/// node's memory, so a purge through any node is seen by all), and one upstream call per key
/// across the nodes (a lock with a lease; the others wait for the entry).
pub struct SharedCache {
    redis: Arc<Redis>,
    /// The runtime the purges and stores run on (hooks fire on blocking threads).
    runtime: tokio::runtime::Handle,
}

/// A stored answer as it travels through Redis.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    gateway: String,
    provider: String,
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    tokens_in: u64,
    tokens_out: u64,
    cost: f64,
    model: Option<String>,
}

impl Stored {
    fn of(fill: &Fill) -> Self {
        Self {
            gateway: fill.gateway.clone(),
            provider: fill.provider.clone(),
            status: fill.status,
            headers: fill.headers.iter().map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec())).collect(),
            body: fill.body.to_vec(),
            tokens_in: fill.tokens_in,
            tokens_out: fill.tokens_out,
            cost: fill.cost,
            model: fill.model.clone(),
        }
    }

    fn into_fill(self) -> Fill {
        let mut headers = actix_web::http::header::HeaderMap::new();
        for (name, value) in self.headers {
            if let (Ok(n), Ok(v)) = (
                actix_web::http::header::HeaderName::from_bytes(name.as_bytes()),
                actix_web::http::header::HeaderValue::from_bytes(&value),
            ) {
                headers.append(n, v);
            }
        }
        Fill {
            gateway: self.gateway,
            provider: self.provider,
            status: self.status,
            headers,
            body: bytes::Bytes::from(self.body),
            tokens_in: self.tokens_in,
            tokens_out: self.tokens_out,
            cost: self.cost,
            model: self.model,
        }
    }
}

/// This node leads the upstream call for a key across the cluster; dropping it without storing
/// an answer frees the key for the others at once.
pub struct SharedLead {
    cache: Arc<SharedCache>,
    key: Key,
    token: String,
}

impl Drop for SharedLead {
    fn drop(&mut self) {
        if !self.token.is_empty() {
            let (cache, key, token) = (Arc::clone(&self.cache), self.key, std::mem::take(&mut self.token));
            self.cache.runtime.spawn(async move { cache.release(&key, &token).await });
        }
    }
}

/// Deletes a key's lock when it is still this lead's.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Deletes every entry a set lists (a gateway's or a provider's), then the set; returns how many.
const PURGE_SET: &str = r"
local n = 0
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do n = n + redis.call('DEL', k) end
redis.call('DEL', KEYS[1])
return n
";

fn entry_key(key: &Key) -> String {
    format!("torii:cache:{}", hex::encode(key))
}

fn lock_key(key: &Key) -> String {
    format!("torii:cache-flight:{}", hex::encode(key))
}

impl SharedCache {
    /// A stored answer and how long it has left (a failure is counted and logged).
    pub async fn get(&self, key: &Key) -> Result<Option<Arc<Entry>>, Unavailable> {
        self.fetch(key).await.inspect_err(|e| self.redis.failed(e))
    }

    async fn fetch(&self, key: &Key) -> Result<Option<Arc<Entry>>, Unavailable> {
        let k = entry_key(key);
        let (raw, ttl_ms): (Option<Vec<u8>>, i64) = self.redis.pipe(redis::pipe().get(&k).pttl(&k)).await?;
        let stored = raw.and_then(|b| postcard::from_bytes::<Stored>(&b).ok());
        let ttl = Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0));
        Ok(stored.filter(|_| !ttl.is_zero()).map(|s| Entry::detached(s.into_fill(), ttl)))
    }

    /// Takes the cluster-wide lead for `key` for at most `hold`; `None` when another node has it.
    pub async fn lead(self: &Arc<Self>, key: &Key, hold: Duration) -> Result<Option<SharedLead>, Unavailable> {
        let token = uuid::Uuid::now_v7().simple().to_string();
        let hold_ms = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> =
            self.redis.cmd(redis::cmd("SET").arg(lock_key(key)).arg(&token).arg("NX").arg("PX").arg(hold_ms)).await?;
        Ok(set.map(|_| SharedLead { cache: Arc::clone(self), key: *key, token }))
    }

    /// Waits (up to `wait`) for the node leading `key` to store its answer; `None` when it
    /// gave up without one, or the wait ran out.
    pub async fn follow(&self, key: &Key, wait: Duration) -> Option<Arc<Entry>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.get(key).await {
                Ok(Some(entry)) => return Some(entry),
                Ok(None) => {}
                Err(_) => return None,
            }
            let led: bool = self
                .redis
                .cmd(redis::cmd("EXISTS").arg(lock_key(key)))
                .await
                .inspect_err(|e| self.redis.failed(e))
                .ok()?;
            if !led {
                // The leader stores its answer before it lets go: one more look finds an answer
                // stored between the two reads above.
                return self.get(key).await.ok().flatten();
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stores an answer (in the background), then frees the lead.
    pub fn store(&self, key: Key, ttl: Duration, fill: &Fill, lead: Option<SharedLead>) {
        if !(200..300).contains(&fill.status) || fill.body.len() > crate::cache::MAX_ENTRY_BYTES {
            return;
        }
        let Ok(encoded) = postcard::to_allocvec(&Stored::of(fill)) else { return };
        let redis = Arc::clone(&self.redis);
        let (gateway, provider) = (fill.gateway.clone(), fill.provider.clone());
        self.runtime.spawn(async move {
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let k = entry_key(&key);
            let (by_gateway, by_provider) = (format!("torii:cache-gw:{gateway}"), format!("torii:cache-pv:{provider}"));
            let mut pipe = redis::pipe();
            pipe.atomic().cmd("SET").arg(&k).arg(encoded).arg("PX").arg(ttl_ms).ignore();
            pipe.sadd(&by_gateway, &k).ignore().sadd(&by_provider, &k).ignore();
            if let Err(e) = redis.pipe::<()>(&pipe).await {
                redis.failed(&e);
            }
            // The lead ends after the entry is there: the followers find it.
            drop(lead);
        });
    }

    async fn release(&self, key: &Key, token: &str) {
        let script = redis::Script::new(RELEASE);
        let mut call = script.prepare_invoke();
        call.key(lock_key(key)).arg(token);
        if let Err(e) = self.redis.run::<i64>(&call).await {
            self.redis.failed(&e);
        }
    }

    async fn purge_set(&self, set: String) -> u64 {
        let script = redis::Script::new(PURGE_SET);
        let mut call = script.prepare_invoke();
        call.key(set);
        self.redis.run::<u64>(&call).await.unwrap_or_else(|e| {
            self.redis.failed(&e);
            0
        })
    }

    /// Drops a gateway's entries; returns how many.
    pub async fn purge_gateway(&self, gateway: &str) -> u64 {
        self.purge_set(format!("torii:cache-gw:{gateway}")).await
    }

    /// Drops every entry from a provider (in the background: a change hook calls it).
    pub fn purge_provider_later(self: &Arc<Self>, provider: &str) {
        let (cache, set) = (Arc::clone(self), format!("torii:cache-pv:{provider}"));
        self.runtime.spawn(async move { cache.purge_set(set).await });
    }

    /// Drops a gateway's entries in the background (a change hook calls it).
    pub fn purge_gateway_later(self: &Arc<Self>, gateway: &str) {
        let (cache, gateway) = (Arc::clone(self), gateway.to_string());
        self.runtime.spawn(async move { cache.purge_gateway(&gateway).await });
    }

    /// Drops one custom-key entry; returns whether it existed.
    pub async fn purge_key(&self, gateway: &str, custom: &str) -> bool {
        let k = entry_key(&crate::cache::custom_key(gateway, custom));
        let deleted = self.redis.cmd::<u64>(redis::cmd("DEL").arg(k)).await;
        deleted.inspect_err(|e| self.redis.failed(e)).is_ok_and(|n| n > 0)
    }
}

impl Windows {
    /// The cluster's shared cache, in cluster mode; `runtime` runs its background work.
    #[must_use]
    pub fn shared_cache(&self, runtime: tokio::runtime::Handle) -> Option<Arc<SharedCache>> {
        match self {
            Self::Shared(s) => Some(Arc::new(SharedCache { redis: Arc::clone(&s.redis), runtime })),
            Self::Local(_) => None,
        }
    }
}

/// Admin sessions and sign-in forms in Redis, so any node serves a signed-in admin (no sticky
/// sessions at the load balancer). Kept under the SHA-256 of their cookie, with their idle
/// time as the key's expiry (renewed on use) and their start to enforce the absolute limit.
pub struct SharedSessions {
    redis: Arc<Redis>,
}

fn now_ms() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl SharedSessions {
    /// Runs one command within the timeout; a failure is counted and logged.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Unavailable> {
        self.redis.cmd(cmd).await.inspect_err(|e| self.redis.failed(e))
    }

    /// Starts a session; returns the cookie value.
    pub async fn start(&self, username: &str) -> Result<String, Unavailable> {
        let cookie = crate::auth::admin::random_hex();
        let key = format!("torii:session:{}", crate::auth::admin::digest(&cookie));
        let value =
            serde_json::json!({"u": username, "c": crate::auth::admin::random_hex(), "s": now_ms()}).to_string();
        let idle = ms(crate::auth::admin::SESSION_IDLE);
        self.query::<()>(redis::cmd("SET").arg(key).arg(value).arg("PX").arg(idle)).await?;
        Ok(cookie)
    }

    /// The live session of a cookie value (its idle timer renewed), if any.
    pub async fn get(&self, cookie: &str) -> Result<Option<Session>, Unavailable> {
        let key = format!("torii:session:{}", crate::auth::admin::digest(cookie));
        let idle = ms(crate::auth::admin::SESSION_IDLE);
        let raw: Option<String> = self.query(redis::cmd("GETEX").arg(&key).arg("PX").arg(idle)).await?;
        let Some(v) = raw.and_then(|r| serde_json::from_str::<serde_json::Value>(&r).ok()) else { return Ok(None) };
        let (Some(username), Some(csrf), Some(started)) = (v["u"].as_str(), v["c"].as_str(), v["s"].as_u64()) else {
            return Ok(None);
        };
        let age = Duration::from_millis(now_ms().saturating_sub(started));
        if age >= crate::auth::admin::SESSION_MAX {
            self.query::<()>(redis::cmd("DEL").arg(&key)).await?;
            return Ok(None);
        }
        Ok(Some(Session::restored(username.to_string(), csrf.to_string(), age)))
    }

    /// Ends a session.
    pub async fn end(&self, cookie: &str) -> Result<(), Unavailable> {
        let key = format!("torii:session:{}", crate::auth::admin::digest(cookie));
        self.query(redis::cmd("DEL").arg(key)).await
    }

    /// Issues a sign-in form: `(pre-session cookie, form token)`.
    pub async fn issue_form(&self) -> Result<(String, String), Unavailable> {
        let (cookie, token) = (crate::auth::admin::random_hex(), crate::auth::admin::random_hex());
        let key = format!("torii:signin:{}", crate::auth::admin::digest(&cookie));
        let lifetime = ms(crate::auth::admin::PreSessions::LIFETIME);
        self.query::<()>(redis::cmd("SET").arg(key).arg(&token).arg("PX").arg(lifetime)).await?;
        Ok((cookie, token))
    }

    /// Whether `token` is the one issued with the form's `cookie` (still fresh).
    pub async fn form_valid(&self, cookie: &str, token: &str) -> Result<bool, Unavailable> {
        let key = format!("torii:signin:{}", crate::auth::admin::digest(cookie));
        let expected: Option<String> = self.query(redis::cmd("GET").arg(key)).await?;
        Ok(expected.is_some_and(|e| crate::auth::admin::same_secret(&e, token)))
    }

    /// Forgets a sign-in form (after a successful sign-in).
    pub async fn end_form(&self, cookie: &str) -> Result<(), Unavailable> {
        let key = format!("torii:signin:{}", crate::auth::admin::digest(cookie));
        self.query(redis::cmd("DEL").arg(key)).await
    }
}

impl Windows {
    /// The cluster's admin sessions, in cluster mode.
    #[must_use]
    pub fn shared_sessions(&self) -> Option<Arc<SharedSessions>> {
        match self {
            Self::Shared(s) => Some(Arc::new(SharedSessions { redis: Arc::clone(&s.redis) })),
            Self::Local(_) => None,
        }
    }
}
