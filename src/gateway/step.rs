//! Run a step (`run_step`): one request to one provider, the same for every surface. Stored key
//! injection (or SigV4), the log context, cache plan and lookup with single-flight, the send
//! with retries and *all* attempt logging, then the streaming answer with its taps. Whether a
//! failed answer falls through to another step is the driver's choice (`may_fall_through`).

use std::time::Duration;

use actix_web::http::Method;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use tokio::time::Instant;

use super::access::{Outgoing, inject_stored_key};
use super::cached::{Filler, Lookup};
use super::forward::inbound_response_headers;
use super::guard;
use super::options::RequestOptions;
use super::stream::BodyShape;
use super::tap::{LogContext, StepInfo};
use super::{Gateway, Ids, StepRequest, Upstream};
use crate::cache::{self, KeyParts};
use crate::control::Snapshot;
use crate::error::Error;
use crate::logs::record::RequestType;
use crate::providers::Target;
use crate::store::GatewayRecord;

/// One request to one provider: the passthrough's only step, or one of a universal request's.
pub struct Step {
    /// 0-based position (`cf-aig-step`, the log's `step`).
    pub index: usize,
    /// Where it goes.
    pub target: Target,
    /// Method.
    pub method: Method,
    /// Headers for the provider (filtered; the stored key is added by `run_step`). Empty once
    /// taken for the step's run ([`Step::take_headers`]).
    pub headers: HeaderMap,
    /// Body bytes as sent.
    pub body: Bytes,
    /// Control options in force for this step.
    pub options: RequestOptions,
    /// Path after the provider slug (without its query), for the log.
    pub rest: String,
    /// Path and query after the provider slug, for the cache key.
    pub cache_path: String,
    /// Surface, for the log.
    pub request_type: RequestType,
    /// Torii asked for the stream's usage; the client did not (its stream hides that chunk).
    pub hide_usage: bool,
    /// The answer goes back in another format than the provider's (the unified API).
    pub translation: Option<super::unified::Translation>,
    /// The model as the client named it (the unified API), for the log.
    pub requested_model: Option<String>,
    /// The model the body names ([`request_facts`], read once for the log and the spend
    /// checks).
    ///
    /// [`request_facts`]: crate::providers::usage::request_facts
    pub body_model: Option<std::sync::Arc<str>>,
    /// Budget elements of a dynamic route this step's cost counts toward.
    pub budgets: Vec<crate::policy::spend::Claim>,
}

impl Step {
    /// The step's headers, for its run (`Gateway::run_step`): they become the upstream
    /// request's as they are, not a copy of them. A step runs once.
    pub fn take_headers(&mut self) -> HeaderMap {
        std::mem::take(&mut self.headers)
    }
}

/// What the whole request shares across its steps.
pub struct Run<'a> {
    /// The gateway.
    pub gw: &'a GatewayRecord,
    /// The configuration snapshot the request was admitted with.
    pub snapshot: &'a Snapshot,
    /// Response ids.
    pub ids: &'a Ids,
    /// The client's own headers (user agent).
    pub client_headers: &'a HeaderMap,
    /// When the whole request must have an answer (the universal endpoint's deadline).
    pub deadline: Option<Instant>,
    /// A non-2xx answer is kept aside (read whole and logged) for the driver to fall through,
    /// instead of being streamed to the client.
    pub may_fall_through: bool,
    /// The gateway's DLP and guardrails apply (not to the guardrail evaluator's own calls).
    pub checks: bool,
    /// The API token the request came with (its budget and allow-lists apply).
    pub token: Option<&'a crate::store::TokenRecord>,
    /// The request's rate check, put off until its spend reservation (cluster mode).
    pub rate: Option<&'a super::access::DeferredRate>,
}

/// How a step ended.
pub enum Outcome {
    /// The answer to send: a 2xx (or, for a last step, any status), streaming, or a cache HIT.
    Answer(Box<Upstream>),
    /// A non-2xx answer the driver may fall through from (already logged, body read).
    FellThrough(Failed),
    /// No answer came (connection error, timeout before the head).
    Failed(Error),
    /// The request's deadline passed while the step ran.
    Deadline,
}

/// A step's non-2xx answer, read whole. Only plain bytes: a response body stream is made for it
/// only if it is the one returned (a stream made and dropped counts as a client that left).
pub struct Failed {
    /// Status.
    pub status: actix_web::http::StatusCode,
    /// Headers (hop-by-hop and `Content-Length` removed).
    pub headers: HeaderMap,
    /// Body, up to [`KEPT_ERROR_BODY`] bytes.
    pub body: Bytes,
    /// Step.
    pub step: usize,
}

/// Largest failed-step body kept (an error body; a larger one is cut).
const KEPT_ERROR_BODY: usize = 1 << 20;

impl Gateway {
    /// A request that is one step (the passthrough, the unified API): its answer, whatever the
    /// status, or why none came.
    pub(crate) async fn only_step(
        &self,
        client: &crate::gateway::client::Client,
        (gw, snapshot, ids, client_headers): (&GatewayRecord, &Snapshot, &Ids, &HeaderMap),
        (token, rate): (Option<&crate::store::TokenRecord>, Option<&super::access::DeferredRate>),
        step: &mut Step,
    ) -> Result<Upstream, Error> {
        let headers = step.take_headers();
        let run = Run {
            gw,
            snapshot,
            ids,
            client_headers,
            deadline: None,
            may_fall_through: false,
            checks: true,
            token,
            rate,
        };
        let outcome = self.run_step(client, &run, step, headers).await;
        // Whatever way the step went, a put-off rate check runs (a refusal comes first).
        self.run_deferred(rate).await?;
        match outcome? {
            Outcome::Answer(upstream) => Ok(*upstream),
            Outcome::FellThrough(failed) => Ok(self.failed_answer(failed, ids, step)),
            Outcome::Failed(e) => Err(e),
            Outcome::Deadline => Err(Error::UpstreamTimeout {
                provider: step.target.provider.clone(),
                after_ms: self.config().upstream.first_byte_timeout_ms,
            }),
        }
    }

    /// How long the step waits for an answer's first byte: its own timeout or the default, and
    /// never past the request's deadline.
    fn answer_wait(&self, run: &Run<'_>, step: &Step) -> Duration {
        let wait =
            step.options.request_timeout.unwrap_or(Duration::from_millis(self.config().upstream.first_byte_timeout_ms));
        run.deadline.map_or(wait, |deadline| wait.min(deadline.saturating_duration_since(Instant::now())))
    }

    /// Runs one step. `Err` aborts the whole request (the stored key it names does not exist);
    /// every other end is an [`Outcome`]. `headers` are the step's, taken out of it ([`Step::take_headers`]):
    /// they become the upstream request's without a copy.
    pub(crate) async fn run_step(
        &self,
        client: &crate::gateway::client::Client,
        run: &Run<'_>,
        step: &Step,
        mut headers: HeaderMap,
    ) -> Result<Outcome, Error> {
        let policies = guard::policies_of(run)?;
        let out = Outgoing { method: step.method.as_str(), body: &step.body };
        let alias = step.options.byok_alias.as_deref();
        let stored = inject_stored_key(run.snapshot, run.gw, &step.target, alias, &out, &mut headers)?;
        if run.checks {
            guard::require_credentials(run, step, &headers)?;
        }
        let (body, refused) = match policies.as_deref().map(|p| guard::scan_request(p, step, &headers)) {
            None => (step.body.clone(), None),
            Some(Ok(admitted)) => (admitted.body, Some(Ok(admitted.findings))),
            Some(Err((e, findings))) => (step.body.clone(), Some(Err((e, findings)))),
        };
        let trace = (run.checks && self.tracing(run.gw)).then_some(run.ids.trace);
        let log = LogContext::new(&StepInfo {
            gateway: run.gw,
            options: &step.options,
            headers: &headers,
            client_headers: run.client_headers,
            target: &step.target,
            rest: &step.rest,
            method: step.method.as_str(),
            body: &body,
            request_type: step.request_type,
            step: step.index,
            ids: run.ids,
            requested_model: step.requested_model.as_deref(),
            body_model: step.body_model.as_ref(),
            trace,
        });
        self.admit_step(client, (run, step), policies.as_deref(), refused, &body, &log).await?;
        if policies.as_deref().is_some_and(guard::wants_plain_answer) {
            headers.insert(HeaderName::from_static("accept-encoding"), HeaderValue::from_static("identity"));
        }
        let parts = KeyParts {
            gateway: &run.gw.id,
            provider: &step.target.provider,
            method: step.method.as_str(),
            path: &step.cache_path,
            body: &body,
            // The stored key and `Accept-Encoding` added above do not count: the key covers
            // the stored key's alias instead of client credentials, and no encoding.
            headers: &headers,
            credential_headers: step.target.credential_headers,
            stored_key_alias: stored.as_deref(),
        };
        let mut filler = None;
        if let Some(plan) = cache::plan(run.gw, &step.options.cache_controls(), &parts) {
            // The paths only some requests take are boxed (here, the policies' check of the
            // answer, a failed answer's read, a deadline): a future holds room for its largest
            // await, and every request's future is moved whole into the server's box.
            match Box::pin(self.lookup(&plan, &run.gw.id, self.answer_wait(run, step))).await {
                Lookup::Hit(entry) => {
                    let mut upstream = self.hit(&entry, run.ids, &log);
                    guard::dlp_header(&mut upstream, &log);
                    return Ok(Outcome::Answer(Box::new(finish(upstream, step))));
                }
                Lookup::Miss(lead) => filler = Some(Filler { plan, lead, gateway: run.gw.id.clone() }),
            }
        }
        let request = StepRequest {
            step: step.index,
            target: &step.target,
            method: step.method.clone(),
            headers,
            body: body.clone(),
            options: &step.options,
            trace,
        };
        let sent = match run.deadline {
            Some(deadline) => {
                match Box::pin(tokio::time::timeout_at(deadline, self.forward(client, request, run.gw))).await {
                    Ok(sent) => sent,
                    Err(_) => return Ok(Outcome::Deadline),
                }
            }
            None => self.forward(client, request, run.gw).await,
        };
        let (result, last) = self.settle(sent, &log);
        Ok(match (result, last) {
            (Ok(resp), Some(attempt)) if resp.status.is_success() || !run.may_fall_through => {
                let mut upstream = match policies.as_deref() {
                    Some(p) if resp.status.is_success() && guard::wants_plain_answer(p) => {
                        Box::pin(self.checked_answer(client, run, step, p, resp, (&log, &attempt), filler)).await?
                    }
                    _ => self.upstream(resp, run.ids, &step.target, None, Some((&log, &attempt)), filler),
                };
                guard::dlp_header(&mut upstream, &log);
                Outcome::Answer(Box::new(finish(upstream, step)))
            }
            (Ok(resp), attempt) => {
                let failed = Box::pin(read_failed(resp, step.index)).await;
                if let Some(a) = &attempt {
                    log.record_failed(&self.logs, a, &failed.headers, &failed.body);
                }
                Outcome::FellThrough(failed)
            }
            (Err(e), _) => Outcome::Failed(e),
        })
    }

    /// The response to send for a failed step's answer (in the step's client format).
    pub(crate) fn failed_answer(&self, failed: Failed, ids: &Ids, step: &Step) -> Upstream {
        let once = futures_util::stream::once(std::future::ready(Ok::<_, std::io::Error>(failed.body)));
        let body = self.body(once, BodyShape::default(), super::stream::Taps::new(), ids, &step.target.provider);
        let upstream = Upstream {
            status: failed.status,
            headers: failed.headers,
            step: Some(failed.step),
            log_id: None,
            cache_status: None,
            body,
        };
        match step.translation {
            Some(t) => super::unified::translated(upstream, t),
            None => upstream,
        }
    }
}

/// What every answer of a step gets: no body for `HEAD`, the usage chunk hidden when only
/// Torii asked for it.
fn finish(mut upstream: Upstream, step: &Step) -> Upstream {
    if step.method == Method::HEAD {
        upstream.body = upstream.body.bodiless();
    }
    if step.hide_usage {
        upstream.body = upstream.body.hiding_usage_chunk();
    }
    match step.translation {
        Some(t) => super::unified::translated(upstream, t),
        None => upstream,
    }
}

/// Buffers a failed step's (small) error body so its connection is released while later steps
/// run, and so it can be logged and returned if no later step answers.
async fn read_failed(mut resp: super::client::Response, step: usize) -> Failed {
    let status = resp.status;
    let mut headers = inbound_response_headers(std::mem::take(&mut resp.headers));
    headers.remove("content-length");
    let body = tokio::time::timeout(Duration::from_secs(10), resp.read(KEPT_ERROR_BODY))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    Failed { status, headers, body, step }
}
