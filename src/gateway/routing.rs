//! The route driver of the unified API: `model: "dynamic/{route}"` walks the gateway's live route
//! graph (conditions, percentage splits, rate and budget elements, models with their fallbacks),
//! and `model: "custom/{alias}"` tries the alias's models in turn. Each model is one
//! `run_step`, exactly as a plain unified-API call; a model that fails before answering (an error
//! status, a timeout, a connection error, or a spend limit of the gateway) falls through to its
//! fallback. The answer carries `cf-aig-model` and `cf-aig-provider`.

use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::options::RequestOptions;
use super::step::{Failed, Outcome, Run};
use super::unified::{self, Call, Endpoint};
use super::{Gateway, Ids, Inbound, Upstream};
use crate::control::Snapshot;
use crate::error::Error;
use crate::logs::record::RequestType;
use crate::policy::route::{Context, Element, RateKind, holds, pick};
use crate::policy::spend::Claim;
use crate::store::{GatewayRecord, TokenRecord};

/// The random source of percentage splits (seedable, so a test can check the distribution).
pub struct Dice(std::sync::Mutex<rand::rngs::StdRng>);

impl Default for Dice {
    fn default() -> Self {
        Self(std::sync::Mutex::new(rand::rngs::StdRng::from_os_rng()))
    }
}

impl Dice {
    /// Makes the splits repeatable.
    pub fn seed(&self, seed: u64) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = rand::rngs::StdRng::seed_from_u64(seed);
    }

    /// A number in [0, 100).
    fn roll(&self) -> f64 {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).random::<f64>() * 100.0
    }
}

/// Most elements one request visits (a checked graph has no cycle; this bounds it anyway).
const MAX_HOPS: usize = 200;

/// What a routed call has.
pub(crate) struct Routed<'a> {
    pub inbound: &'a Inbound,
    pub call: Call<'a>,
    pub gw: &'a GatewayRecord,
    pub snapshot: &'a Snapshot,
    pub token: Option<&'a TokenRecord>,
    pub options: &'a RequestOptions,
    pub body: Value,
    pub ids: &'a Ids,
}

enum Tried {
    Answer(Box<Upstream>),
    Failed(Option<Failed>, String),
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

impl Gateway {
    /// Serves `dynamic/{route}` or `custom/{alias}`; `None` when `named` is neither.
    pub(crate) async fn route_call(
        &self,
        client: &crate::gateway::client::Client,
        r: &Routed<'_>,
        named: &str,
    ) -> Option<Result<Upstream, Error>> {
        if let Some(name) = named.strip_prefix("dynamic/") {
            return Some(self.walk_route(client, r, name).await);
        }
        let alias = named.strip_prefix("custom/")?;
        let Some(models) = r.snapshot.aliases.get(&(r.gw.id.clone(), alias.to_string())).cloned() else {
            return Some(Err(Error::NotFound { kind: "model alias", id: alias.chars().take(64).collect() }));
        };
        let mut last = None;
        let mut reasons = Vec::new();
        for (i, m) in models.iter().enumerate() {
            let Some((provider, model)) = m.split_once('/') else { continue };
            let more = i + 1 < models.len();
            let tried = match self.try_model(client, r, (provider, model), (0, 0), (more, Vec::new())).await {
                Ok(t) => t,
                Err(e) => return Some(Err(e)),
            };
            match tried {
                Tried::Answer(u) => return Some(Ok(*u)),
                Tried::Failed(f, why) => {
                    reasons.push(format!("{m}: {why}"));
                    last = f.or(last);
                }
            }
        }
        Some(self.route_end(r, last, reasons))
    }

    async fn walk_route(
        &self,
        client: &crate::gateway::client::Client,
        r: &Routed<'_>,
        name: &str,
    ) -> Result<Upstream, Error> {
        if r.call.client != crate::providers::translate::Dialect::OpenAi || r.call.endpoint != Endpoint::Chat {
            return Err(Error::BadRequest("model: dynamic routes take OpenAI chat completions only".into()));
        }
        let route = r
            .snapshot
            .routes
            .get(&(r.gw.id.clone(), name.to_string()))
            .cloned()
            .ok_or_else(|| Error::NotFound { kind: "route", id: name.chars().take(64).collect() })?;
        let metadata: Map<String, Value> = r.options.metadata.clone().unwrap_or_default();
        let header = |h: &str| r.inbound.headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
        let ctx = Context { body: &r.body, headers: &header, metadata: &metadata };
        let mut at = route.graph.start.clone();
        let mut last = None;
        let mut reasons = Vec::new();
        let mut budgets: Vec<Claim> = Vec::new();
        let now = self.clock.now_ms();
        for _ in 0..MAX_HOPS {
            let Some(element) = route.graph.elements.get(&at) else { break };
            at = match element {
                Element::Start { next } => next.clone(),
                Element::Conditional { conditions, on_true, on_false } => {
                    if holds(conditions, &ctx) {
                        on_true.clone()
                    } else {
                        on_false.clone()
                    }
                }
                Element::Percentage { outputs } => pick(outputs, self.dice.roll()).to_string(),
                Element::Rate { kind, key, limit, window, success, fallback } => {
                    let value = if key.is_empty() {
                        String::new()
                    } else {
                        ctx.field(key).map(|v| text(&v)).unwrap_or_default()
                    };
                    let bucket = format!("route:{}:{}:{at}:{value}", r.gw.id, route.id);
                    let claim =
                        Claim { key: bucket.clone(), limit: *limit, window: *window, sliding: true, label: at.clone() };
                    let within = match kind {
                        RateKind::Count => self
                            .spend
                            .reserve(std::slice::from_ref(&claim), 1.0, now)
                            .await
                            .map(|h| h.settle(Some(1.0), now))
                            .is_ok(),
                        RateKind::Cost => {
                            let (spent, reserved) = self.spend.usage(&bucket, now).await;
                            let ok = spent + reserved < *limit;
                            // The models after it count their cost here (never refused by it).
                            budgets.push(Claim { limit: f64::MAX, ..claim });
                            ok
                        }
                    };
                    match (within, fallback) {
                        (true, _) => success.clone(),
                        (false, Some(f)) => f.clone(),
                        (false, None) => {
                            return Err(Error::SpendLimited {
                                message: format!("Route '{}': the limit of element '{at}' is reached", route.name),
                                retry_after_secs: 1,
                            });
                        }
                    }
                }
                Element::Model { provider, model, timeout_ms, retries, success, fallback } => {
                    let more = fallback.is_some();
                    match self
                        .try_model(client, r, (provider, model), (*timeout_ms, *retries), (more, budgets.clone()))
                        .await?
                    {
                        Tried::Answer(u) => {
                            if !matches!(route.graph.elements.get(success), Some(Element::End)) {
                                tracing::debug!(route = %route.name, element = %at, "a model's success leads on; its answer is returned");
                            }
                            return Ok(*u);
                        }
                        Tried::Failed(f, why) => {
                            reasons.push(format!("{provider}/{model}: {why}"));
                            last = f.or(last);
                            match fallback {
                                Some(f) => f.clone(),
                                None => break,
                            }
                        }
                    }
                }
                Element::End => break,
            };
        }
        self.route_end(r, last, reasons)
    }

    /// No model answered: the last model's error answer, or a gateway error naming why.
    fn route_end(&self, r: &Routed<'_>, last: Option<Failed>, reasons: Vec<String>) -> Result<Upstream, Error> {
        match last {
            Some(failed) => {
                let step = failed.step;
                let ids = r.ids;
                let once = futures_util::stream::once(std::future::ready(Ok::<_, std::io::Error>(failed.body)));
                let body =
                    self.body(once, super::stream::BodyShape::default(), super::stream::Taps::new(), ids, "route");
                Ok(Upstream {
                    status: failed.status,
                    headers: failed.headers,
                    step: Some(step),
                    log_id: None,
                    cache_status: None,
                    body,
                })
            }
            None if reasons.is_empty() => {
                Err(Error::AllStepsFailed(vec!["the route reached its end without a model".into()]))
            }
            None => Err(Error::AllStepsFailed(reasons)),
        }
    }

    /// One model of a route or alias: planned and run like a unified-API call.
    async fn try_model(
        &self,
        client: &crate::gateway::client::Client,
        r: &Routed<'_>,
        (provider, model): (&str, &str),
        (timeout_ms, retries): (u64, u8),
        (more, budgets): (bool, Vec<Claim>),
    ) -> Result<Tried, Error> {
        let named = format!("{provider}/{model}");
        let config = self.config();
        let planned = match unified::plan(
            &config,
            r.snapshot,
            r.call.account,
            (r.call.client, r.call.endpoint),
            &named,
            r.body.clone(),
        ) {
            Ok(p) => p,
            Err(e) => return Ok(Tried::Failed(None, e.to_string())),
        };
        let headers = planned.headers(&r.inbound.headers, r.call.api_token);
        let mut options = r.options.clone();
        if timeout_ms > 0 {
            options.request_timeout = Some(Duration::from_millis(timeout_ms));
        }
        if retries > 0 {
            options.max_attempts = Some(retries.saturating_add(1).min(5));
        }
        let mut step = planned.into_step(0, headers, options, (RequestType::Compat, &named));
        step.budgets = budgets;
        let step_headers = step.take_headers();
        let deadline = (timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(timeout_ms));
        let run = Run {
            gw: r.gw,
            snapshot: r.snapshot,
            ids: r.ids,
            client_headers: &r.inbound.headers,
            deadline,
            may_fall_through: more,
            checks: true,
            token: r.token,
            rate: None,
        };
        Ok(match self.run_step(client, &run, &step, step_headers).await {
            Ok(Outcome::Answer(mut u)) => {
                set(&mut u.headers, "cf-aig-model", model);
                set(&mut u.headers, "cf-aig-provider", provider);
                Tried::Answer(u)
            }
            Ok(Outcome::FellThrough(f)) => {
                let why = format!("status {}", f.status);
                Tried::Failed(Some(f), why)
            }
            Ok(Outcome::Failed(e)) => Tried::Failed(None, e.to_string()),
            Ok(Outcome::Deadline) => Tried::Failed(None, format!("no answer within {timeout_ms} ms")),
            // A spend limit or an allow-list on this model: the fallback may do (Cloudflare sends
            // a route's spend-limited model to its fallback instead of answering 429).
            Err(e @ (Error::SpendLimited { .. } | Error::NotAllowed(_))) if more => Tried::Failed(None, e.to_string()),
            // DLP, guardrails and the rest refuse the request itself.
            Err(e) => return Err(e),
        })
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}
