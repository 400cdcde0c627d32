//! Rate limits: fixed (aligned) and sliding (trailing) windows, per gateway and per token.
//!
//! The `ratelimit` crate is a token bucket, which answers neither Cloudflare's fixed-window
//! semantics nor an exact trailing window, so the two small window types live here. Time is
//! passed in (milliseconds), so tests drive the clock.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Window technique.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Technique {
    /// Counter per aligned window (12:00–12:10, 12:10–12:20, ...).
    Fixed,
    /// At most `limit` requests in any trailing `interval`.
    Sliding,
}

/// One limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Requests allowed per interval.
    pub limit: u64,
    /// Interval in milliseconds.
    pub interval_ms: u64,
    /// Window technique.
    pub technique: Technique,
}

enum Window {
    Fixed { start: u64, count: u64 },
    Sliding { hits: VecDeque<u64> },
}

/// Window state per key (`gateway:{id}`, `token:{id}`), behind one short-held lock.
#[derive(Default)]
pub struct Limiter {
    state: Mutex<HashMap<String, (Rule, Window)>>,
}

impl Limiter {
    /// Counts a request against `rule` for `key`; `Err(ms)` says how long until one is allowed.
    pub fn check(&self, key: &str, rule: Rule, now_ms: u64) -> Result<(), u64> {
        if rule.limit == 0 || rule.interval_ms == 0 {
            return Ok(());
        }
        let Ok(mut state) = self.state.lock() else { return Ok(()) };
        let fresh = || match rule.technique {
            Technique::Fixed => Window::Fixed { start: 0, count: 0 },
            Technique::Sliding => Window::Sliding { hits: VecDeque::new() },
        };
        let entry = state.entry(key.to_string()).or_insert_with(|| (rule, fresh()));
        if entry.0 != rule {
            // The gateway's settings changed: start counting afresh.
            *entry = (rule, fresh());
        }
        match &mut entry.1 {
            Window::Fixed { start, count } => {
                let current = now_ms - now_ms % rule.interval_ms;
                if *start != current {
                    *start = current;
                    *count = 0;
                }
                if *count < rule.limit {
                    *count += 1;
                    Ok(())
                } else {
                    Err(current + rule.interval_ms - now_ms)
                }
            }
            Window::Sliding { hits } => {
                while hits.front().is_some_and(|t| *t + rule.interval_ms <= now_ms) {
                    hits.pop_front();
                }
                if (hits.len() as u64) < rule.limit {
                    hits.push_back(now_ms);
                    Ok(())
                } else {
                    Err(hits.front().map_or(rule.interval_ms, |t| *t + rule.interval_ms - now_ms))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn rule(technique: Technique) -> Rule {
        Rule { limit: 10, interval_ms: 10 * MIN, technique }
    }

    /// The reference's example: 10 per 10 minutes; 10 requests at 12:09 and 10 at 12:11 all pass
    /// with fixed windows, and the second ten fail with a sliding window.
    #[test]
    fn reference_example() {
        let noon = 1_780_000_000_000 - 1_780_000_000_000 % (10 * MIN);
        for (technique, second_batch_passes) in [(Technique::Fixed, true), (Technique::Sliding, false)] {
            let limiter = Limiter::default();
            for i in 0..10 {
                assert!(limiter.check("g", rule(technique), noon + 9 * MIN + i).is_ok());
            }
            for i in 0..10 {
                let r = limiter.check("g", rule(technique), noon + 11 * MIN + i);
                assert_eq!(r.is_ok(), second_batch_passes, "{technique:?} request {i}");
            }
        }
    }

    #[test]
    fn retry_after_and_recovery() {
        let limiter = Limiter::default();
        let r = Rule { limit: 2, interval_ms: 1000, technique: Technique::Sliding };
        assert!(limiter.check("k", r, 100).is_ok());
        assert!(limiter.check("k", r, 400).is_ok());
        assert_eq!(limiter.check("k", r, 500), Err(600));
        assert!(limiter.check("k", r, 1100).is_ok(), "the first hit left the window");
        let f = Rule { limit: 1, interval_ms: 1000, technique: Technique::Fixed };
        assert!(limiter.check("f", f, 2100).is_ok());
        assert_eq!(limiter.check("f", f, 2300), Err(700));
        assert!(limiter.check("f", f, 3000).is_ok(), "a new aligned window");
        // Keys are independent; zero means off; a changed rule resets.
        assert!(limiter.check("other", f, 2300).is_ok());
        assert!(limiter.check("f", Rule { limit: 0, ..f }, 3001).is_ok());
        assert!(limiter.check("f", Rule { limit: 5, ..f }, 3002).is_ok());
    }
}
