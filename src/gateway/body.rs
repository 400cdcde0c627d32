//! Reading a request body: incrementally (memory grows with what arrives, never with what a
//! client declares), within `max_body_bytes`, a deadline that stretches with a minimum rate, and
//! a cap on the bytes all unfinished bodies hold together.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::http::header::HeaderMap;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::time::Instant;

use crate::config::Config;
use crate::error::Error;

/// The limits one body is read under.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body, in bytes.
    pub max_bytes: usize,
    /// Time every body gets, whatever its size.
    pub grace: Duration,
    /// Beyond the grace time, bytes per second the client must keep up on average.
    pub min_rate: u64,
}

impl BodyLimits {
    /// The limits from the configuration.
    #[must_use]
    pub fn from_config(config: &Config) -> Self {
        Self {
            max_bytes: config.max_body_bytes,
            grace: Duration::from_millis(config.body_timeout_ms),
            min_rate: config.body_min_rate,
        }
    }

    /// When the body must have reached `received + 1` bytes.
    fn deadline(&self, started: Instant, received: usize) -> Instant {
        // Whole milliseconds: (bytes + 1) * 1000 / rate, saturating; no stretch without a rate.
        let ms = (received as u64).saturating_add(1).saturating_mul(1000).checked_div(self.min_rate).unwrap_or(0);
        let stretch = Duration::from_millis(ms);
        started + self.grace + stretch
    }
}

/// Bytes held by request bodies still being read, across all connections.
#[derive(Debug)]
pub struct PendingBodies {
    held: AtomicUsize,
    cap: usize,
}

impl PendingBodies {
    /// A pool of `cap` bytes.
    #[must_use]
    pub fn new(cap: usize) -> Self {
        Self { held: AtomicUsize::new(0), cap }
    }

    /// Bytes held right now.
    #[must_use]
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(n).filter(|total| *total <= self.cap)
            })
            .is_ok()
    }
}

/// Returns what one body took from the pool when it is done (or dropped with the request).
struct Held<'a> {
    pool: &'a PendingBodies,
    bytes: usize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.pool.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Reads the request body under `limits`, holding its bytes in `pool` while it arrives.
pub async fn read_body<S, E>(
    headers: &HeaderMap,
    mut payload: S,
    limits: BodyLimits,
    pool: &PendingBodies,
) -> Result<Bytes, Error>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let limit = limits.max_bytes;
    let declared = super::content_length(headers);
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::BodyTooLarge { limit });
    }
    let started = Instant::now();
    let mut held = Held { pool, bytes: 0 };
    // Held inline: a body mostly comes in one chunk (with its head) or two.
    let mut chunks: smallvec::SmallVec<[Bytes; 2]> = smallvec::SmallVec::new();
    loop {
        let next = tokio::time::timeout_at(limits.deadline(started, held.bytes), payload.next());
        let Some(chunk) = next.await.map_err(|_| Error::BodyTimeout { received: held.bytes })? else { break };
        let chunk = chunk.map_err(|e| Error::BadRequest(format!("could not read the request body: {e}")))?;
        if held.bytes + chunk.len() > limit {
            return Err(Error::BodyTooLarge { limit });
        }
        if !pool.take(chunk.len()) {
            return Err(Error::Busy { what: "request bodies being received" });
        }
        held.bytes += chunk.len();
        chunks.push(chunk);
    }
    // One chunk (the common case) is returned as it is; several are joined once, exactly sized.
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => {
            let mut body = BytesMut::with_capacity(held.bytes);
            for c in &chunks {
                body.extend_from_slice(c);
            }
            body.freeze()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> BodyLimits {
        BodyLimits { max_bytes: 100, grace: Duration::from_secs(10), min_rate: 10 }
    }

    fn stream(parts: &[&'static str]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        futures_util::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p.as_bytes()))).collect::<Vec<_>>())
    }

    #[actix_web::test]
    async fn joins_chunks_and_gives_the_pool_back() {
        let pool = PendingBodies::new(1000);
        let body = read_body(&HeaderMap::new(), stream(&["ab", "cd", "e"]), limits(), &pool).await.unwrap();
        assert_eq!(&body[..], b"abcde");
        assert_eq!(pool.held(), 0);
    }

    #[actix_web::test]
    async fn the_pool_cap_refuses_and_is_released() {
        let pool = PendingBodies::new(3);
        let err = read_body(&HeaderMap::new(), stream(&["ab", "cd"]), limits(), &pool).await.unwrap_err();
        assert!(matches!(err, Error::Busy { .. }), "{err:?}");
        assert_eq!(pool.held(), 0);
        let err = read_body(&HeaderMap::new(), stream(&["abcdef"; 20]), limits(), &pool).await.unwrap_err();
        assert!(matches!(err, Error::Busy { .. } | Error::BodyTooLarge { .. }), "{err:?}");
    }

    #[actix_web::test]
    async fn a_stalled_body_times_out_after_grace_plus_rate() {
        tokio::time::pause();
        let pool = PendingBodies::new(1000);
        // One chunk, then nothing: the deadline is grace + (received + 1) / rate = 10 s + 0.3 s.
        let stalled = stream(&["ab"]).chain(futures_util::stream::pending());
        let started = Instant::now();
        let err = read_body(&HeaderMap::new(), Box::pin(stalled), limits(), &pool).await.unwrap_err();
        assert!(matches!(err, Error::BodyTimeout { received: 2 }), "{err:?}");
        let waited = Instant::now() - started;
        assert!(waited >= Duration::from_millis(10_300) && waited < Duration::from_millis(10_310), "{waited:?}");
        assert_eq!(pool.held(), 0);
    }
}
