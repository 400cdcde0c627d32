//! Micro-benchmark of the per-request checks: token authentication against the snapshot and the
//! rate-limit windows (gateway fixed, token sliding). Budget: under 10 µs together.
//!
//! Run: `cargo bench --bench checks`.

#![expect(clippy::unwrap_used, clippy::cast_precision_loss, reason = "a benchmark harness")]

use std::sync::Arc;
use std::time::Instant;

use torii::auth::{self, NewToken};
use torii::control::Settings;
use torii::limits::{Limiter, Rule, Technique};
use torii::store::{Scope, Store};

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("torii.redb")).unwrap();
    let mut secret = String::new();
    for i in 0..1000 {
        let new = NewToken {
            name: format!("t{i}"),
            scopes: vec![Scope::Run],
            gateways: vec![],
            expires_at: None,
            rate_limit: None,
            limits: torii::store::TokenLimits::default(),
        };
        secret = auth::create_token(&store, new).unwrap().0;
    }
    let settings = Arc::new(Settings::load(store).unwrap());
    let limiter = Limiter::default();
    let fixed = Rule { limit: u64::MAX, interval_ms: 60_000, technique: Technique::Fixed };
    let sliding = Rule { limit: 1_000, interval_ms: 60_000, technique: Technique::Sliding };
    let n = 1_000_000u64;
    let started = Instant::now();
    for i in 0..n {
        let snapshot = settings.snapshot();
        let token = auth::check_token(&snapshot.tokens, Some(&secret), Scope::Run, Some("default")).unwrap();
        limiter.check("gateway:default", fixed, 1_000_000 + i).unwrap();
        let _ = limiter.check(&token.id, sliding, 1_000_000 + i);
    }
    let per = started.elapsed().as_secs_f64() * 1e9 / n as f64;
    println!("auth (1,000 tokens) + gateway fixed window + token sliding window: {per:.0} ns per request");
}
