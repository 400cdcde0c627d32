//! Time helpers: RFC 3339 text and Unix seconds (UTC), and the clock the rate limiter reads (which
//! a test can stop and move). The lowest layer: depends on nothing in the crate.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Current time as RFC 3339 (UTC, seconds).
#[must_use]
pub fn now_rfc3339() -> String {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| OffsetDateTime::now_utc());
    now.format(&Rfc3339).unwrap_or_default()
}

/// Current time as Unix seconds.
#[must_use]
pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Parses an RFC 3339 time.
#[must_use]
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// Milliseconds since the Unix epoch by the wall clock.
#[must_use]
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The time windows are measured on: the wall clock, unless set to a fixed instant (tests set it,
/// so a window cannot roll over between two requests of a test).
#[derive(Debug, Default)]
pub struct Clock {
    /// 0 while following the wall clock; otherwise the instant it reads, in ms.
    set_ms: AtomicU64,
}

impl Clock {
    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match self.set_ms.load(Relaxed) {
            0 => wall_ms(),
            ms => ms,
        }
    }

    /// Stops the clock at `ms` (0 resumes the wall clock).
    pub fn set_ms(&self, ms: u64) {
        self.set_ms.store(ms, Relaxed);
    }

    /// Moves a stopped clock forward by `ms`.
    pub fn advance_ms(&self, ms: u64) {
        self.set_ms.fetch_add(ms, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_clock_stands_still_until_moved_and_resumes_the_wall_clock_at_zero() {
        let clock = Clock::default();
        assert!(clock.now_ms() >= 1_700_000_000_000, "the wall clock");
        clock.set_ms(5_000);
        assert_eq!(clock.now_ms(), 5_000);
        clock.advance_ms(250);
        assert_eq!(clock.now_ms(), 5_250);
        clock.set_ms(0);
        assert!(clock.now_ms() >= 1_700_000_000_000);
    }
}
