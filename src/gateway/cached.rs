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
use crate::cluster::{SharedCache, SharedLead};
use crate::providers::Target;
use crate::providers::prices;

/// What the lookup found.
pub(crate) enum Lookup {
    /// Serve this.
    Hit(Arc<Entry>),
    /// Go upstream, leading the flight when the guard is there.
    Miss(Lead),
}

/// The request leads the upstream call for its key: in this process (`guard`) and, in cluster
/// mode, across the nodes (`shared`).
#[derive(Default)]
pub(crate) struct Lead {
    pub guard: Option<FlightGuard>,
    pub shared: Option<SharedLead>,
}

/// Stores a response in the cache when its body completes.
pub(crate) struct Filler {
    /// The request's plan.
    pub plan: Plan,
    /// Releases waiting requests once the entry is stored (or the call failed).
    pub lead: Lead,
    /// Gateway id.
    pub gateway: String,
}

impl Gateway {
    /// Looks the key up; when another request is already fetching it, waits for that one and
    /// looks again, for at most `wait` in all.
    pub(crate) async fn lookup(&self, plan: &Plan, gateway: &str, wait: Duration) -> Lookup {
        if !plan.read {
            self.cache.count(gateway, None);
            return Lookup::Miss(Lead::default());
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(hit) = self.cached(&plan.key).await {
                self.cache.count(gateway, Some(&hit));
                return Lookup::Hit(hit);
            }
            match self.cache.fly(plan.key) {
                Flight::Lead(guard) => {
                    let Some(shared) = &self.shared_cache else {
                        self.cache.count(gateway, None);
                        return Lookup::Miss(Lead { guard: Some(guard), shared: None });
                    };
                    // This process's lead; now the cluster's, or wait for the node that has it
                    // (this process's followers wait on this request meanwhile).
                    match shared.lead(&plan.key, wait).await {
                        Ok(Some(lead)) => {
                            // The previous leader may have stored its answer and let go since
                            // the lookup above: look once more before going upstream.
                            if let Ok(Some(hit)) = shared.get(&plan.key).await {
                                self.cache.count(gateway, Some(&hit));
                                return Lookup::Hit(hit);
                            }
                            self.cache.count(gateway, None);
                            return Lookup::Miss(Lead { guard: Some(guard), shared: Some(lead) });
                        }
                        Ok(None) => {
                            if let Some(hit) = shared.follow(&plan.key, wait).await {
                                self.cache.count(gateway, Some(&hit));
                                return Lookup::Hit(hit);
                            }
                            self.cache.count(gateway, None);
                            return Lookup::Miss(Lead::default());
                        }
                        Err(_) => {
                            self.cache.count(gateway, None);
                            return Lookup::Miss(Lead { guard: Some(guard), shared: None });
                        }
                    }
                }
                Flight::Follow(notify) => {
                    let notified = notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if self.cache.in_flight(&plan.key) {
                        let _ = tokio::time::timeout_at(deadline, notified).await;
                    }
                    // Woken: the leader stored its answer (look again) or gave up (lead now).
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
        self.cache.count(gateway, None);
        Lookup::Miss(Lead::default())
    }

    /// A stored answer: from this process's cache, or in cluster mode from the shared one
    /// (a Redis failure reads as a MISS).
    async fn cached(&self, key: &crate::cache::Key) -> Option<Arc<Entry>> {
        match &self.shared_cache {
            None => self.cache.get(key),
            Some(shared) => shared.get(key).await.unwrap_or(None),
        }
    }

    /// A HIT: the stored head and body, replayed (an SSE body with the same events).
    pub(crate) fn hit(&self, entry: &Entry, ids: &Ids, log: &LogContext) -> Upstream {
        let log_id = log.record_hit(&self.logs, entry);
        let mut headers = entry.headers.clone();
        headers.remove("content-length");
        let once = futures_util::stream::once(std::future::ready(Ok::<_, std::io::Error>(entry.body.clone())));
        let status = actix_web::http::StatusCode::from_u16(entry.status).unwrap_or(actix_web::http::StatusCode::OK);
        let body = self.body(once, BodyShape::default(), super::stream::Taps::new(), ids, log.provider());
        Upstream { status, headers, step: None, log_id, cache_status: Some("HIT"), body }
    }
}

/// Collects a cacheable body and stores it when the stream completes.
pub(crate) struct CacheTap {
    cache: Arc<Cache>,
    shared: Option<Arc<SharedCache>>,
    filler: Filler,
    status: u16,
    headers: actix_web::http::header::HeaderMap,
    provider: String,
    body: BytesMut,
    too_big: bool,
}

impl CacheTap {
    pub(crate) fn new(
        (cache, shared): (Arc<Cache>, Option<Arc<SharedCache>>),
        filler: Filler,
        status: u16,
        headers: &actix_web::http::header::HeaderMap,
        target: &Target,
    ) -> Self {
        Self {
            cache,
            shared,
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
        let CacheTap { cache, shared, filler, status, headers, provider, body, too_big } = *self;
        let Filler { plan, lead: Lead { guard, shared: shared_lead }, gateway } = filler;
        if summary.end == StreamEnd::Complete && !too_big {
            let body: Bytes = body.freeze();
            let (tokens_in, tokens_out, cost, model) = summary.usage.clone().map_or((0, 0, 0.0, None), |u| {
                let cost = prices::cost(&provider, u.model.as_deref(), &u, None).unwrap_or(0.0);
                (u.tokens_in, u.tokens_out, cost, u.model.as_deref().map(str::to_string))
            });
            let fill = Fill { gateway, provider, status, headers, body, tokens_in, tokens_out, cost, model };
            match &shared {
                // The cluster's lead ends once the entry is in Redis.
                Some(shared) => shared.store(plan.key, plan.ttl, &fill, shared_lead),
                None => cache.insert(plan.key, plan.ttl, fill),
            }
        }
        // The guard drops here, after the entry is stored: waiting requests find it.
        drop(guard);
    }
}
