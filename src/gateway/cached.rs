//! Stage 5: the cache in the pipeline. A HIT is served from memory and logged as cached; a MISS
//! leads the upstream call for everyone asking the same thing at the same moment (single-
//! flight) and stores the answer as its body streams past.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::stream::{BodyShape, StreamEnd, StreamSummary, Tap};
use super::tap::LogContext;
use super::{Gateway, Ids, Upstream};
use crate::cache::{Cache, Entry, Fill, Flight, FlightGuard, MAX_ENTRY_BYTES, Plan};
use crate::providers::Target;
use crate::providers::prices;

/// What the lookup found.
pub(crate) enum Lookup {
    /// Serve this.
    Hit(Arc<Entry>),
    /// Go upstream, leading the flight when the guard is there.
    Miss(Option<FlightGuard>),
}

/// Stores a response in the cache when its body completes.
pub(crate) struct Filler {
    /// The request's plan.
    pub plan: Plan,
    /// Releases waiting requests once the entry is stored (or the call failed).
    pub guard: Option<FlightGuard>,
    /// Gateway id.
    pub gateway: String,
}

impl Gateway {
    /// Looks the key up; when another request is already fetching it, waits for that one (up to
    /// `wait`) and looks again.
    pub(crate) async fn lookup(&self, plan: &Plan, gateway: &str, wait: Duration) -> Lookup {
        if !plan.read {
            self.cache.count(gateway, None);
            return Lookup::Miss(None);
        }
        for _ in 0..2 {
            if let Some(hit) = self.cache.get(&plan.key) {
                self.cache.count(gateway, Some(&hit));
                return Lookup::Hit(hit);
            }
            match self.cache.fly(plan.key) {
                Flight::Lead(guard) => {
                    self.cache.count(gateway, None);
                    return Lookup::Miss(Some(guard));
                }
                Flight::Follow(notify) => {
                    let notified = notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if self.cache.in_flight(&plan.key) {
                        let _ = tokio::time::timeout(wait, notified).await;
                    }
                }
            }
        }
        self.cache.count(gateway, None);
        Lookup::Miss(None)
    }

    /// A HIT: the stored head and body, replayed (an SSE body with the same events).
    pub(crate) fn hit(&self, entry: &Entry, ids: &Ids, log: &LogContext) -> Upstream {
        let log_id = log.record_hit(&self.logs, entry);
        let mut headers = entry.headers.clone();
        headers.remove("content-length");
        let once = futures_util::stream::once(std::future::ready(Ok::<_, std::io::Error>(entry.body.clone())));
        let status = actix_web::http::StatusCode::from_u16(entry.status).unwrap_or(actix_web::http::StatusCode::OK);
        let body = self.body(once, BodyShape::default(), Vec::new(), ids, &log.provider());
        Upstream { status, headers, step: None, log_id, cache_status: Some("HIT"), body }
    }
}

/// Collects a cacheable body and stores it when the stream completes.
pub(crate) struct CacheTap {
    cache: Arc<Cache>,
    filler: Filler,
    status: u16,
    headers: actix_web::http::header::HeaderMap,
    provider: String,
    body: BytesMut,
    too_big: bool,
}

impl CacheTap {
    pub(crate) fn new(
        cache: Arc<Cache>,
        filler: Filler,
        status: u16,
        headers: &actix_web::http::header::HeaderMap,
        target: &Target,
    ) -> Self {
        Self {
            cache,
            filler,
            status,
            headers: headers.clone(),
            provider: target.provider.clone(),
            body: BytesMut::new(),
            too_big: false,
        }
    }
}

impl Tap for CacheTap {
    fn feed(&mut self, chunk: &[u8]) {
        if self.body.len() + chunk.len() > MAX_ENTRY_BYTES {
            self.too_big = true;
            self.body = BytesMut::new();
        } else if !self.too_big {
            self.body.extend_from_slice(chunk);
        }
    }

    fn finish(self: Box<Self>, summary: &StreamSummary) {
        let CacheTap { cache, filler, status, headers, provider, body, too_big } = *self;
        if summary.end == StreamEnd::Complete && !too_big {
            let body: Bytes = body.freeze();
            let (tokens_in, tokens_out, cost, model) = summary.usage.clone().map_or((0, 0, 0.0, None), |u| {
                let cost = prices::cost(&provider, u.model.as_deref(), &u, None).unwrap_or(0.0);
                (u.tokens_in, u.tokens_out, cost, u.model)
            });
            let fill =
                Fill { gateway: filler.gateway, provider, status, headers, body, tokens_in, tokens_out, cost, model };
            cache.insert(filler.plan.key, filler.plan.ttl, fill);
        }
        // The guard drops here, after the entry is stored: waiting requests find it.
        drop(filler.guard);
    }
}
