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

impl Window {
    fn fresh(technique: Technique) -> Self {
        match technique {
            Technique::Fixed => Self::Fixed { start: 0, count: 0 },
            Technique::Sliding => Self::Sliding { hits: VecDeque::new() },
        }
    }

    /// Moves the window to `now`; `Err(ms)` when it is full (how long until one more fits).
    fn admits(&mut self, rule: Rule, now_ms: u64) -> Result<(), u64> {
        match self {
            Self::Fixed { start, count } => {
                let current = now_ms - now_ms % rule.interval_ms;
                if *start != current {
                    *start = current;
                    *count = 0;
                }
                if *count < rule.limit { Ok(()) } else { Err(current.saturating_add(rule.interval_ms) - now_ms) }
            }
            Self::Sliding { hits } => {
                while hits.front().is_some_and(|t| t.saturating_add(rule.interval_ms) <= now_ms) {
                    hits.pop_front();
                }
                if (hits.len() as u64) < rule.limit {
                    Ok(())
                } else {
                    Err(hits.front().map_or(rule.interval_ms, |t| t.saturating_add(rule.interval_ms) - now_ms))
                }
            }
        }
    }

    fn count(&mut self, now_ms: u64) {
        match self {
            Self::Fixed { count, .. } => *count += 1,
            Self::Sliding { hits } => hits.push_back(now_ms),
        }
    }
}

/// Window state per key (`gateway:{id}`, `token:{id}`), behind one short-held lock.
#[derive(Default)]
pub struct Limiter {
    state: Mutex<HashMap<String, (Rule, Window)>>,
}

impl Limiter {
    /// Counts a request against `rule` for `key`; `Err(ms)` says how long until one is allowed.
    pub fn check(&self, key: &str, rule: Rule, now_ms: u64) -> Result<(), u64> {
        self.check_all(&[(key, rule)], now_ms)
    }

    /// Counts a request against every `(key, rule)` only when all of them admit it, so a
    /// request one window refuses uses up none of the others; `Err(ms)`: the longest wait.
    pub fn check_all(&self, rules: &[(&str, Rule)], now_ms: u64) -> Result<(), u64> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut wait = None;
        for (key, rule) in rules.iter().filter(|(_, r)| r.limit > 0 && r.interval_ms > 0) {
            let entry = state.entry((*key).to_string()).or_insert_with(|| (*rule, Window::fresh(rule.technique)));
            if entry.0 != *rule {
                // The settings changed: start counting afresh.
                *entry = (*rule, Window::fresh(rule.technique));
            }
            if let Err(ms) = entry.1.admits(*rule, now_ms) {
                wait = Some(wait.map_or(ms, |w: u64| w.max(ms)));
            }
        }
        if let Some(ms) = wait {
            return Err(ms);
        }
        for (key, _) in rules.iter().filter(|(_, r)| r.limit > 0 && r.interval_ms > 0) {
            if let Some(entry) = state.get_mut(*key) {
                entry.1.count(now_ms);
            }
        }
        Ok(())
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

    #[test]
    fn a_request_one_window_refuses_uses_up_none_of_the_others() {
        let limiter = Limiter::default();
        let gateway = Rule { limit: 3, interval_ms: 1000, technique: Technique::Fixed };
        let token = Rule { limit: 1, interval_ms: 1000, technique: Technique::Sliding };
        assert!(limiter.check_all(&[("g", gateway), ("t1", token)], 0).is_ok());
        for i in 1..10 {
            assert!(limiter.check_all(&[("g", gateway), ("t1", token)], i).is_err(), "t1 is over its limit");
        }
        // The gateway counted one request, so another token still gets the other two.
        assert!(limiter.check_all(&[("g", gateway), ("t2", token)], 20).is_ok());
        assert!(limiter.check_all(&[("g", gateway), ("t3", token)], 21).is_ok());
        assert!(limiter.check_all(&[("g", gateway), ("t4", token)], 22).is_err());
    }

    #[test]
    fn huge_intervals_do_not_overflow() {
        let limiter = Limiter::default();
        let r = Rule { limit: 1, interval_ms: u64::MAX, technique: Technique::Sliding };
        assert!(limiter.check("k", r, 5).is_ok());
        assert!(limiter.check("k", r, 6).is_err(), "the limit holds");
        let f = Rule { limit: 1, interval_ms: u64::MAX, technique: Technique::Fixed };
        assert!(limiter.check("f", f, 5).is_ok());
        assert!(limiter.check("f", f, 6).is_err());
    }
}
