//! Admin users of the web UI (argon2id passwords), their sessions, CSRF tokens, the login
//! throttle and the one-time bootstrap link.
//!
//! Sessions live in memory: a restart signs every admin out, and nothing about a session is
//! ever written to disk. The session cookie carries a random id; the table is keyed by its
//! SHA-256, so a memory dump does not hand out live cookies either.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::{AdminRecord, Store, StoreError};
use crate::time::now_rfc3339;

/// Shortest accepted password.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// A session ends this long after its last use.
pub const SESSION_IDLE: Duration = Duration::from_secs(2 * 3600);
/// And at the latest this long after sign-in.
pub const SESSION_MAX: Duration = Duration::from_secs(12 * 3600);

/// Why an admin could not be created or changed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The username is malformed.
    #[error("username: use 1-64 characters from a-z, A-Z, 0-9, '.', '-', '_'")]
    BadUsername,
    /// The password is too short or too long.
    #[error("password: use {MIN_PASSWORD_CHARS} to 1024 characters")]
    BadPassword,
    /// The username is taken.
    #[error("username: an admin with this name exists")]
    Exists,
    /// No such admin.
    #[error("no admin named '{0}'")]
    Unknown(String),
    /// Hashing failed (should not happen).
    #[error("password hashing failed")]
    Hash,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A random 256-bit value as hex (session ids, CSRF tokens, bootstrap links).
#[must_use]
pub fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn valid_username(u: &str) -> bool {
    (1..=64).contains(&u.len()) && u.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn hash_password(password: &str) -> Result<String, AdminError> {
    let n = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=1024).contains(&n) {
        return Err(AdminError::BadPassword);
    }
    let hash: PasswordHash = Argon2::default().hash_password(password.as_bytes()).map_err(|_| AdminError::Hash)?;
    Ok(hash.to_string())
}

/// Whether any admin exists.
pub fn any_admin(store: &Store) -> Result<bool, StoreError> {
    Ok(!store.list::<AdminRecord>()?.is_empty())
}

/// Creates an admin. Slow (argon2id): call from a blocking context.
pub fn create_admin(store: &Store, username: &str, password: &str) -> Result<AdminRecord, AdminError> {
    if !valid_username(username) {
        return Err(AdminError::BadUsername);
    }
    let now = now_rfc3339();
    let record = AdminRecord {
        username: username.to_string(),
        password_hash: hash_password(password)?,
        created_at: now.clone(),
        modified_at: now,
    };
    if store.insert_new(&record)? { Ok(record) } else { Err(AdminError::Exists) }
}

/// Replaces an admin's password. Slow (argon2id): call from a blocking context.
pub fn set_password(store: &Store, username: &str, password: &str) -> Result<(), AdminError> {
    let hash = hash_password(password)?;
    let now = now_rfc3339();
    let changed = store.update::<AdminRecord>(&[username.to_string()], |a| {
        a.password_hash.clone_from(&hash);
        a.modified_at.clone_from(&now);
        true
    })?;
    if changed == 0 { Err(AdminError::Unknown(username.chars().take(64).collect())) } else { Ok(()) }
}

/// Checks a username and password. An unknown user costs the same time as a wrong password.
/// Slow (argon2id): call from a blocking context.
pub fn verify(store: &Store, username: &str, password: &str) -> Result<bool, StoreError> {
    // A fixed hash of a random password keeps the timing of unknown users like known ones.
    static DUMMY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let record = if valid_username(username) { store.get::<AdminRecord>(username)? } else { None };
    let dummy = DUMMY.get_or_init(|| hash_password(&random_hex()).ok());
    let stored = record.as_ref().map(|r| r.password_hash.as_str()).or(dummy.as_deref());
    let Some(parsed) = stored.and_then(|s| s.parse::<PasswordHash>().ok()) else { return Ok(false) };
    let ok = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
    Ok(ok && record.is_some())
}

impl Session {
    /// A session kept elsewhere (the cluster's Redis), `age` after it started.
    #[must_use]
    pub fn restored(username: String, csrf: String, age: Duration) -> Self {
        let now = Instant::now();
        Self { username, csrf, started: now.checked_sub(age).unwrap_or(now), last_seen: now }
    }
}

/// What a live session knows.
#[derive(Debug, Clone)]
pub struct Session {
    /// Admin username.
    pub username: String,
    /// The token every form of this session must carry.
    pub csrf: String,
    started: Instant,
    last_seen: Instant,
}

/// Sign-in forms handed out: a pre-session (the cookie) and the CSRF token its form must carry,
/// both made here, so a pair an attacker chose (or planted as a cookie) is never accepted.
#[derive(Default)]
pub struct PreSessions {
    issued: Mutex<HashMap<String, (String, Instant)>>,
}

impl PreSessions {
    /// How long a sign-in form stays usable.
    pub const LIFETIME: Duration = Duration::from_secs(3600);
    /// Forms outstanding at most (the oldest are forgotten beyond it).
    const MAX: usize = 10_000;

    /// Issues a pre-session: `(cookie value, form token)`.
    pub fn issue(&self, now: Instant) -> (String, String) {
        let (cookie, token) = (random_hex(), random_hex());
        let mut issued = self.issued.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        issued.retain(|_, (_, at)| now.duration_since(*at) < Self::LIFETIME);
        if issued.len() >= Self::MAX
            && let Some(oldest) = issued.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| k.clone())
        {
            issued.remove(&oldest);
        }
        issued.insert(digest(&cookie), (token.clone(), now));
        (cookie, token)
    }

    /// Whether `token` is the one issued with the pre-session `cookie` (still fresh).
    pub fn valid(&self, cookie: &str, token: &str, now: Instant) -> bool {
        let issued = self.issued.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        issued
            .get(&digest(cookie))
            .is_some_and(|(expected, at)| now.duration_since(*at) < Self::LIFETIME && same_secret(expected, token))
    }

    /// Forgets a pre-session (after a successful sign-in).
    pub fn end(&self, cookie: &str) {
        self.issued.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&digest(cookie));
    }
}

/// The live sessions, keyed by the SHA-256 of the cookie value.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
}

/// The key a cookie value is kept under (its SHA-256): the cookie itself is never stored.
#[must_use]
pub fn digest(cookie: &str) -> String {
    hex::encode(Sha256::digest(cookie.as_bytes()))
}

impl Sessions {
    /// Starts a session; returns the cookie value.
    pub fn start(&self, username: &str) -> String {
        let cookie = random_hex();
        let now = Instant::now();
        let session = Session { username: username.to_string(), csrf: random_hex(), started: now, last_seen: now };
        if let Ok(mut live) = self.live.lock() {
            live.retain(|_, s| fresh(s, now));
            live.insert(digest(&cookie), session);
        }
        cookie
    }

    /// The session for a cookie value, if it is live; refreshes its idle timer.
    pub fn get(&self, cookie: &str) -> Option<Session> {
        let now = Instant::now();
        let mut live = self.live.lock().ok()?;
        let key = digest(cookie);
        let session = live.get_mut(&key)?;
        if !fresh(session, now) {
            live.remove(&key);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    /// Ends a session.
    pub fn end(&self, cookie: &str) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(&digest(cookie));
        }
    }
}

fn fresh(s: &Session, now: Instant) -> bool {
    now.duration_since(s.last_seen) < SESSION_IDLE && now.duration_since(s.started) < SESSION_MAX
}

/// Compares two secrets in time independent of where they differ.
#[must_use]
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Sign-in attempts per client address: after [`Throttle::FREE`] failures each further one
/// doubles the wait (1 s, 2 s, 4 s ... up to 15 min) before the next attempt is heard.
///
/// An attempt is counted as failed *before* its password is checked ([`Throttle::begin`]) and
/// forgotten on success, so concurrent attempts cannot all slip through one open window.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    /// Failures allowed without a wait.
    pub const FREE: u32 = 5;
    const MAX_WAIT: Duration = Duration::from_secs(15 * 60);

    /// Reserves an attempt for `ip` at `now`: `Err(wait)` while the client must wait, else the
    /// attempt is counted (as a failure until [`Throttle::succeeded`] says otherwise).
    pub fn begin(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() > 100_000 {
            failures.retain(|_, (_, until)| *until > now);
        }
        let entry = failures.entry(ip).or_insert((0, now));
        if entry.1 > now {
            return Err(entry.1 - now);
        }
        entry.0 = entry.0.saturating_add(1);
        if entry.0 >= Self::FREE {
            let wait = Duration::from_secs(1u64 << (entry.0 - Self::FREE).min(10)).min(Self::MAX_WAIT);
            entry.1 = now + wait;
        }
        Ok(())
    }

    /// Forgets a client's failures after a successful sign-in.
    pub fn succeeded(&self, ip: IpAddr) {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&ip);
    }
}

/// Bounds the password verifications running at once (argon2id holds ~19 MiB each): beyond it
/// a sign-in is answered 429 at once instead of queueing memory and CPU.
pub struct Verifier {
    permits: tokio::sync::Semaphore,
    runs: std::sync::atomic::AtomicU64,
}

impl Default for Verifier {
    fn default() -> Self {
        Self { permits: tokio::sync::Semaphore::new(Self::CONCURRENT), runs: std::sync::atomic::AtomicU64::new(0) }
    }
}

impl Verifier {
    /// Verifications that may run at once.
    pub const CONCURRENT: usize = 2;

    /// A permit to verify one password, or `None` when [`Verifier::CONCURRENT`] already run.
    pub fn try_start(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.permits.try_acquire().ok()
    }

    /// Counts a verification about to run (under a permit).
    pub fn count(&self) {
        self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Verifications run since the process began.
    pub fn runs(&self) -> u64 {
        self.runs.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The one-time setup link `torii serve` prints while no admin exists.
#[derive(Default)]
pub struct Bootstrap {
    token: Mutex<Option<String>>,
}

impl Bootstrap {
    /// Makes a new setup token (replacing any earlier one) and returns it.
    pub fn issue(&self) -> String {
        let token = random_hex();
        if let Ok(mut t) = self.token.lock() {
            *t = Some(token.clone());
        }
        token
    }

    /// Whether `token` is the live setup token.
    pub fn valid(&self, token: &str) -> bool {
        self.token.lock().ok().and_then(|t| t.clone()).is_some_and(|t| same_secret(&t, token))
    }

    /// Uses the token up (after the first admin was created).
    pub fn consume(&self) {
        if let Ok(mut t) = self.token.lock() {
            *t = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_argon2id_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.redb")).unwrap();
        assert!(!any_admin(&store).unwrap());
        assert!(matches!(create_admin(&store, "root", "short"), Err(AdminError::BadPassword)));
        assert!(matches!(create_admin(&store, "bad name", "long enough pw"), Err(AdminError::BadUsername)));
        let a = create_admin(&store, "root", "correct horse battery").unwrap();
        assert!(a.password_hash.starts_with("$argon2id$"), "{}", a.password_hash);
        assert!(matches!(create_admin(&store, "root", "another password"), Err(AdminError::Exists)));
        assert!(verify(&store, "root", "correct horse battery").unwrap());
        assert!(!verify(&store, "root", "wrong password!").unwrap());
        assert!(!verify(&store, "nobody", "correct horse battery").unwrap());
        set_password(&store, "root", "a new password").unwrap();
        assert!(!verify(&store, "root", "correct horse battery").unwrap());
        assert!(verify(&store, "root", "a new password").unwrap());
        assert!(matches!(set_password(&store, "ghost", "a new password"), Err(AdminError::Unknown(_))));
    }

    #[test]
    fn sessions_end_and_throttle_doubles() {
        let sessions = Sessions::default();
        let cookie = sessions.start("root");
        let s = sessions.get(&cookie).unwrap();
        assert_eq!(s.username, "root");
        assert_eq!(s.csrf.len(), 64);
        assert!(sessions.get("forged").is_none());
        sessions.end(&cookie);
        assert!(sessions.get(&cookie).is_none());

        let t = Throttle::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let now = Instant::now();
        for _ in 0..Throttle::FREE {
            assert!(t.begin(ip, now).is_ok());
        }
        // The fifth failure opened a 1 s wait: nothing is heard before it ends.
        assert_eq!(t.begin(ip, now).unwrap_err(), Duration::from_secs(1));
        assert_eq!(t.begin(ip, now + Duration::from_millis(400)).unwrap_err(), Duration::from_millis(600));
        // After the wait one attempt is heard, and it doubles the next wait at once.
        let later = now + Duration::from_secs(1);
        assert!(t.begin(ip, later).is_ok());
        assert_eq!(t.begin(ip, later).unwrap_err(), Duration::from_secs(2));
        assert!(t.begin("10.0.0.2".parse().unwrap(), later).is_ok(), "per client");
        t.succeeded(ip);
        assert!(t.begin(ip, later).is_ok());
    }

    #[test]
    fn sign_in_forms_accept_only_the_pair_issued() {
        let pre = PreSessions::default();
        let now = Instant::now();
        let (cookie, token) = pre.issue(now);
        assert!(pre.valid(&cookie, &token, now));
        assert!(!pre.valid(&cookie, "chosen", now), "a token the attacker chose");
        assert!(!pre.valid("chosen", "chosen", now), "a pair the attacker chose");
        let (other, _) = pre.issue(now);
        assert!(!pre.valid(&other, &token, now), "a token from another form");
        assert!(!pre.valid(&cookie, &token, now + PreSessions::LIFETIME), "expired");
        pre.end(&cookie);
        assert!(!pre.valid(&cookie, &token, now), "used up");
    }

    #[test]
    fn sessions_end_after_the_idle_time_or_the_maximum() {
        // A "now" in the future, so the past instants below exist even right after boot.
        let now = Instant::now() + SESSION_MAX * 2;
        let at = |started: Duration, seen: Duration| Session {
            username: "root".into(),
            csrf: String::new(),
            started: now.checked_sub(started).unwrap(),
            last_seen: now.checked_sub(seen).unwrap(),
        };
        assert!(fresh(&at(Duration::from_secs(60), Duration::from_secs(1)), now));
        assert!(!fresh(&at(SESSION_IDLE * 2, SESSION_IDLE + Duration::from_secs(1)), now), "idle too long");
        assert!(!fresh(&at(SESSION_MAX + Duration::from_secs(1), Duration::from_secs(1)), now), "too old");
    }

    #[test]
    fn bootstrap_token_is_single_use() {
        let b = Bootstrap::default();
        assert!(!b.valid("x"));
        let t = b.issue();
        assert!(b.valid(&t) && !b.valid("nope"));
        b.consume();
        assert!(!b.valid(&t));
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("abc", "ab"));
    }
}
