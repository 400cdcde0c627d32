//! The gateway's policies around a step: `byok_only`, DLP and guardrails on the request before
//! it is sent, and on the answer before (or, for a streamed REDACT or FLAG, as) it reaches the
//! client. The answer is read whole only when a policy needs all of it: a response-side BLOCK,
//! response guardrails, or a non-streamed body to rewrite.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::forward::{Attempt, inbound_response_headers};
use super::options::RequestOptions;
use super::step::{Outcome, Run, Step};
use super::tap::LogContext;
use super::unified::{self, Endpoint};
use super::{Gateway, Upstream, cached};
use crate::error::Error;
use crate::logs::record::{GuardrailLog, PolicyLog, RequestType};
use crate::policy::GatewayPolicies;
use crate::policy::dlp::{self, Action, Findings};
use crate::policy::guardrails::{self, Rules};
use crate::policy::stream::{SseScanner, text_of};
use crate::providers::translate::Dialect;

/// Largest answer a response policy reads whole (a larger one is refused, not let through).
const MAX_CHECKED: usize = 10 << 20;
/// Most text sent to a guardrail evaluator (the rest is not evaluated).
const MAX_EVALUATED: usize = 64 << 10;
/// Largest evaluator answer read.
const MAX_VERDICT: usize = 64 << 10;

/// The request side's result: the body to send and what was found.
pub(crate) struct Admitted {
    /// The body (redacted when a REDACT policy matched).
    pub body: Bytes,
    /// Request-side DLP findings (for `cf-aig-dlp`).
    pub findings: Findings,
}

fn header_text(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The gateway's compiled policies, or why they cannot be applied.
pub(crate) fn policies_of(run: &Run<'_>) -> Result<Option<Arc<GatewayPolicies>>, Error> {
    if !run.checks {
        return Ok(None);
    }
    match run.snapshot.policies.get(&run.gw.id) {
        Some(Ok(p)) if !p.is_empty() => Ok(Some(Arc::clone(p))),
        Some(Err(e)) => Err(Error::PolicyBroken(e.clone())),
        _ => Ok(None),
    }
}

/// `byok_only`: the request must carry the provider's credential (its own, or a stored key).
pub(crate) fn require_credentials(run: &Run<'_>, step: &Step, headers: &HeaderMap) -> Result<(), Error> {
    if !run.gw.extra.get("byok_only").and_then(Value::as_bool).unwrap_or(false) {
        return Ok(());
    }
    let has = step.target.credential_headers.iter().any(|h| headers.contains_key(HeaderName::from_static(h)))
        || step.target.url.contains("key=")
        || headers.contains_key("authorization");
    if has { Ok(()) } else { Err(Error::CredentialsRequired(step.target.provider.clone())) }
}

/// Request-side DLP: the body to send, or the refusal.
pub(crate) fn scan_request(
    p: &GatewayPolicies,
    step: &Step,
    headers: &HeaderMap,
) -> Result<Admitted, (Error, Findings)> {
    let Some(side) = p.dlp.request.as_ref() else {
        return Ok(Admitted { body: step.body.clone(), findings: Findings::default() });
    };
    let ct = header_text(headers, "content-type");
    let Some(scan) = dlp::scan_body(side, &step.body, ct.as_deref()) else {
        return Ok(Admitted { body: step.body.clone(), findings: Findings::default() });
    };
    if scan.findings.action == Some(Action::Block) {
        let header = scan.findings.header().unwrap_or_default();
        return Err((Error::DlpBlocked { response: false, header }, scan.findings));
    }
    let body = scan.redacted.map_or_else(|| step.body.clone(), Bytes::from);
    Ok(Admitted { body, findings: scan.findings })
}

/// The prompt's text as an evaluator reads it: the request's message and input strings.
pub(crate) fn prompt_text(body: &[u8]) -> String {
    const KEYS: &[&str] = &["content", "text", "input", "prompt", "system", "instructions", "arguments"];
    fn walk(v: &Value, key: Option<&str>, out: &mut Vec<String>) {
        match v {
            Value::String(s) if key.is_some_and(|k| KEYS.contains(&k)) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| walk(x, key, out)),
            Value::Object(o) => o.iter().for_each(|(k, x)| walk(x, Some(k), out)),
            _ => {}
        }
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            let mut out = Vec::new();
            walk(&v, None, &mut out);
            out.join("\n")
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

/// The answer's text: a JSON answer's text fields, or an event stream's deltas.
fn answer_text(body: &[u8], sse: bool) -> String {
    if !sse {
        return serde_json::from_slice::<Value>(body)
            .map_or_else(|_| String::from_utf8_lossy(body).into_owned(), |v| text_of(&v));
    }
    crate::text::lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .map(|v| text_of(&v))
        .collect()
}

fn clip(mut text: String) -> String {
    if text.len() > MAX_EVALUATED {
        let mut at = MAX_EVALUATED;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
    text
}

fn record_guardrail(
    log: &LogContext,
    phase: &str,
    found: &[String],
    action: Option<guardrails::Action>,
    unavailable: bool,
) {
    let cell = log.policy();
    let Ok(mut p) = cell.lock() else { return };
    let g = p.guardrail.get_or_insert_with(GuardrailLog::default);
    g.phases.push(phase.to_string());
    for c in found {
        if !g.categories.contains(c) {
            g.categories.push(c.clone());
        }
    }
    let action = action.map(|a| if a == guardrails::Action::Block { "BLOCK" } else { "FLAG" }.to_string());
    if action.as_deref() == Some("BLOCK") || g.action.is_none() {
        g.action = action.or(g.action.take());
    }
    g.unavailable |= unavailable;
}

/// Adds findings to the step's log.
pub(crate) fn record_findings(log: &LogContext, findings: Findings) {
    if findings.is_empty() {
        return;
    }
    if let Ok(mut p) = log.policy().lock() {
        p.dlp.merge(findings);
    }
}

/// Sets `cf-aig-dlp` from the step's findings so far.
pub(crate) fn dlp_header(upstream: &mut Upstream, log: &LogContext) {
    let header = log.policy().lock().ok().and_then(|p: std::sync::MutexGuard<'_, PolicyLog>| p.dlp.header());
    if let Some(v) = header.and_then(|h| HeaderValue::from_str(&h).ok()) {
        upstream.headers.insert(HeaderName::from_static("cf-aig-dlp"), v);
    }
}

impl Gateway {
    /// The request side's decisions, logged: the request DLP's verdict, the prompt's
    /// guardrails, then the spend reservations (held by the log until the answer settles them).
    /// `Err` is the refusal the client gets.
    pub(crate) async fn admit_step(
        &self,
        client: &crate::gateway::client::Client,
        (run, step): (&Run<'_>, &Step),
        policies: Option<&GatewayPolicies>,
        dlp_verdict: Option<Result<Findings, (Error, Findings)>>,
        body: &Bytes,
        log: &LogContext,
    ) -> Result<(), Error> {
        match dlp_verdict {
            Some(Err((e, findings))) => {
                record_findings(log, findings);
                // A rate limit's refusal comes first (as when it is checked at admission).
                let e = self.run_deferred(run.rate).await.err().unwrap_or(e);
                log.record_blocked(&self.logs, None, &e);
                return Err(e);
            }
            Some(Ok(findings)) => record_findings(log, findings),
            None => {}
        }
        // The spend reservation (carrying a put-off rate check) before the guardrails: a request
        // over its limits never reaches an evaluator.
        let admitted = self.admit_spend(run, step, body, policies).await;
        // A put-off rate check that no reservation carried runs now, before anything goes
        // upstream; its refusal comes first (a reservation made meanwhile is released).
        let admitted = match self.run_deferred(run.rate).await {
            Ok(()) => admitted,
            Err(rate) => Err(rate),
        };
        match admitted {
            Ok(held) => log.hold_spend(held),
            Err(e) => {
                log.record_blocked(&self.logs, None, &e);
                return Err(e);
            }
        }
        let rules = policies.and_then(|p| p.guardrails.as_ref()).map(|g| &g.prompt).filter(|r| !r.0.is_empty());
        if let Some(rules) = rules {
            let prompt = prompt_text(body);
            // Boxed: the evaluator calls would otherwise enlarge every request's future.
            if let Err(e) = Box::pin(self.guard(client, run, (rules, false), &prompt, None, log)).await {
                log.record_blocked(&self.logs, None, &e);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Guardrails on one phase: `Ok` to go on, the refusal otherwise. The evaluations are
    /// logged as requests of their own, with the request's event id.
    pub(crate) async fn guard(
        &self,
        client: &crate::gateway::client::Client,
        run: &Run<'_>,
        (rules, response): (&Rules, bool),
        prompt: &str,
        answer: Option<&str>,
        log: &LogContext,
    ) -> Result<(), Error> {
        let phase = if response { "response" } else { "prompt" };
        let mut found = Vec::new();
        let mut trouble = None;
        if rules.needs_safety() {
            match self.evaluate_safety(client, run, prompt, answer).await {
                Ok(cats) => found.extend(cats),
                Err(e) => trouble = Some(e),
            }
        }
        if rules.needs_injection() && !response {
            match self.evaluate_injection(client, run, prompt).await {
                Ok(true) => found.push("P1".to_string()),
                Ok(false) => {}
                Err(e) => trouble = Some(e),
            }
        }
        if let Some(reason) = trouble {
            record_guardrail(log, phase, &found, None, true);
            tracing::warn!(request_id = %run.ids.request_id, phase, reason = %reason, "guardrail evaluator unavailable");
            if rules.blocks() {
                return Err(Error::GuardrailUnavailable(reason));
            }
        }
        let action = rules.decide(&found);
        record_guardrail(log, phase, &found, action, false);
        if action == Some(guardrails::Action::Block) {
            return Err(Error::GuardrailBlocked { response });
        }
        Ok(())
    }

    /// Llama Guard: the categories it finds in the conversation.
    async fn evaluate_safety(
        &self,
        client: &crate::gateway::client::Client,
        run: &Run<'_>,
        prompt: &str,
        answer: Option<&str>,
    ) -> Result<Vec<String>, String> {
        let model = self.config().guardrails.safety_model.clone();
        let mut messages = vec![json!({"role": "user", "content": clip(prompt.to_string())})];
        if let Some(a) = answer {
            messages.push(json!({"role": "assistant", "content": clip(a.to_string())}));
        }
        let body = json!({"model": model, "messages": messages, "stream": false});
        let text = self.evaluator_call(client, run, &model, Endpoint::Chat, body).await?;
        let content = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.pointer("/choices/0/message/content").cloned())
            .ok_or_else(|| "the safety model's answer has no message".to_string())?;
        match content {
            Value::String(s) => guardrails::read_safety(&s),
            // Workers AI may answer `{"safe": false, "categories": [...]}`.
            Value::Object(o) => o.get("safe").and_then(Value::as_bool).map(|safe| {
                if safe {
                    Vec::new()
                } else {
                    o.get("categories")
                        .and_then(Value::as_array)
                        .map(|c| c.iter().filter_map(Value::as_str).map(str::to_string).collect())
                        .unwrap_or_default()
                }
            }),
            _ => None,
        }
        .ok_or_else(|| "the safety model's answer is neither safe nor unsafe".to_string())
    }

    /// Prompt Guard: whether the prompt is an injection or jailbreak.
    async fn evaluate_injection(
        &self,
        client: &crate::gateway::client::Client,
        run: &Run<'_>,
        prompt: &str,
    ) -> Result<bool, String> {
        let model = self.config().guardrails.injection_model.clone();
        let text = clip(prompt.to_string());
        let (endpoint, body) = if model.starts_with("workers-ai/") || model.starts_with("@cf/") {
            (Endpoint::Run, json!({"model": model.trim_start_matches("workers-ai/"), "input": {"text": text}}))
        } else {
            (Endpoint::Chat, json!({"model": model, "messages": [{"role": "user", "content": text}], "stream": false}))
        };
        let answer = self.evaluator_call(client, run, &model, endpoint, body).await?;
        let label_text = serde_json::from_str::<Value>(&answer)
            .ok()
            .and_then(|v| v.pointer("/choices/0/message/content").and_then(Value::as_str).map(str::to_string))
            .unwrap_or(answer);
        guardrails::read_injection(&label_text).ok_or_else(|| "the injection model's answer has no label".to_string())
    }

    /// One evaluator request through the gateway's own route to `model` (its stored keys,
    /// its logs), read whole; the answer's text, or why there is none.
    async fn evaluator_call(
        &self,
        client: &crate::gateway::client::Client,
        run: &Run<'_>,
        model: &str,
        endpoint: Endpoint,
        body: Value,
    ) -> Result<String, String> {
        let config = self.config();
        let named = if endpoint == Endpoint::Run { model.trim_start_matches("workers-ai/") } else { model };
        let planned =
            unified::plan(&config, run.snapshot, &config.account_id, (Dialect::OpenAi, endpoint), named, body)
                .map_err(|e| format!("the evaluator model '{model}' cannot be reached: {e}"))?;
        let headers = unified::base_headers(&HeaderMap::new(), planned.from);
        let mut step = planned.into_step(0, headers, RequestOptions::default(), (RequestType::Guardrail, model));
        let step_headers = step.take_headers();
        let deadline = Instant::now() + Duration::from_millis(config.guardrails.timeout_ms);
        let eval = Run {
            gw: run.gw,
            snapshot: run.snapshot,
            ids: run.ids,
            client_headers: run.client_headers,
            deadline: Some(run.deadline.map_or(deadline, |d| d.min(deadline))),
            may_fall_through: false,
            checks: false,
            token: None,
            rate: None,
        };
        let outcome = Box::pin(self.run_step(client, &eval, &step, step_headers)).await.map_err(|e| e.to_string())?;
        let upstream = match outcome {
            Outcome::Answer(u) => *u,
            Outcome::FellThrough(f) => return Err(format!("the evaluator answered {}", f.status)),
            Outcome::Failed(e) => return Err(e.to_string()),
            Outcome::Deadline => return Err("the evaluator did not answer in time".into()),
        };
        if !upstream.status.is_success() {
            return Err(format!("the evaluator answered {}", upstream.status));
        }
        let mut body = upstream.body;
        let mut out = Vec::new();
        let read = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| e.to_string())?;
                if out.len() + chunk.len() > MAX_VERDICT {
                    return Err("the evaluator's answer is too large".to_string());
                }
                out.extend_from_slice(&chunk);
            }
            Ok(())
        };
        tokio::time::timeout_at(deadline, read)
            .await
            .map_err(|_| "the evaluator did not answer in time".to_string())??;
        String::from_utf8(out).map_err(|_| "the evaluator's answer is not text".to_string())
    }

    /// Response-side policies on a 2xx answer: streamed through a scanner when no policy needs
    /// the whole answer, read whole and checked otherwise.
    #[expect(clippy::too_many_arguments, reason = "one step's answer and its context")]
    pub(crate) async fn checked_answer(
        &self,
        client: &crate::gateway::client::Client,
        run: &Run<'_>,
        step: &Step,
        p: &GatewayPolicies,
        mut resp: super::client::Response,
        (log, attempt): (&LogContext, &Attempt),
        filler: Option<cached::Filler>,
    ) -> Result<Upstream, Error> {
        let status = resp.status;
        let mut headers = inbound_response_headers(std::mem::take(&mut resp.headers));
        let sse = super::is_event_stream(&headers);
        let side = p.dlp.response.as_ref();
        let rules = p.guardrails.as_ref().map(|g| &g.response).filter(|r| !r.0.is_empty());
        let whole = rules.is_some() || side.is_some_and(|s| s.strongest == Action::Block || !sse);
        if !whole {
            let Some(side) = side else {
                return Ok(self.upstream_parts(
                    (status, headers),
                    resp.body,
                    run.ids,
                    &step.target,
                    None,
                    Some((log, attempt)),
                    filler,
                ));
            };
            let cell = log.policy();
            let report = Box::new(move |f: Findings| {
                if let Ok(mut p) = cell.lock() {
                    p.dlp.merge(f);
                }
            });
            let side = Arc::clone(side);
            let body = Scanned { inner: resp.body, scanner: SseScanner::new(side, report), done: false };
            headers.remove("content-length");
            return Ok(self.upstream_parts(
                (status, headers),
                body,
                run.ids,
                &step.target,
                None,
                Some((log, attempt)),
                filler,
            ));
        }
        let bytes = read_whole(&mut resp, &step.target.provider, self.config().upstream.idle_timeout_ms).await?;
        let body = self.check_whole(client, run, step, (side, rules), (&bytes, sse, &headers), (log, attempt)).await?;
        if (body.len() != bytes.len() || headers.contains_key("content-length"))
            && let Ok(v) = HeaderValue::from_str(&body.len().to_string())
        {
            headers.insert(HeaderName::from_static("content-length"), v);
        }
        let once = futures_util::stream::once(std::future::ready(Ok::<_, std::io::Error>(body)));
        Ok(self.upstream_parts((status, headers), once, run.ids, &step.target, None, Some((log, attempt)), filler))
    }

    /// Checks an answer read whole; the body to send (redacted where a REDACT policy matched).
    async fn check_whole(
        &self,
        client: &crate::gateway::client::Client,
        run: &Run<'_>,
        step: &Step,
        (side, rules): (Option<&Arc<dlp::Side>>, Option<&Rules>),
        (bytes, sse, headers): (&Bytes, bool, &HeaderMap),
        (log, attempt): (&LogContext, &Attempt),
    ) -> Result<Bytes, Error> {
        let mut body = bytes.clone();
        if let Some(side) = side {
            let mut found = Findings::default();
            if sse {
                let cell = Arc::new(Mutex::new(Findings::default()));
                let sink = Arc::clone(&cell);
                let mut scanner = SseScanner::new(
                    Arc::clone(side),
                    Box::new(move |f| {
                        if let Ok(mut all) = sink.lock() {
                            all.merge(f);
                        }
                    }),
                );
                let mut out = scanner.pass(bytes.clone()).to_vec();
                out.extend_from_slice(&scanner.rest());
                if side.redacts() {
                    body = Bytes::from(out);
                }
                found = cell.lock().map(|f| f.clone()).unwrap_or_default();
            } else if let Some(scan) = dlp::scan_body(side, bytes, header_text(headers, "content-type").as_deref()) {
                found = scan.findings;
                if let Some(r) = scan.redacted {
                    body = Bytes::from(r);
                }
            }
            let blocked = found.action == Some(Action::Block);
            record_findings(log, found);
            if blocked {
                let header = log.policy().lock().ok().and_then(|p| p.dlp.header()).unwrap_or_default();
                let e = Error::DlpBlocked { response: true, header };
                log.record_blocked(&self.logs, Some(attempt), &e);
                return Err(e);
            }
        }
        if let Some(rules) = rules {
            let prompt = prompt_text(&step.body);
            let answer = answer_text(&body, sse);
            if let Err(e) = self.guard(client, run, (rules, true), &prompt, Some(&answer), log).await {
                log.record_blocked(&self.logs, Some(attempt), &e);
                return Err(e);
            }
        }
        Ok(body)
    }
}

/// Whether a response policy may need the answer in plain (not compressed) form: then the
/// upstream is asked for `identity`.
pub(crate) fn wants_plain_answer(p: &GatewayPolicies) -> bool {
    p.dlp.response.is_some() || p.guardrails.as_ref().is_some_and(|g| !g.response.0.is_empty())
}

/// A response body passed through a [`SseScanner`].
struct Scanned {
    inner: super::client::Body,
    scanner: SseScanner,
    done: bool,
}

impl Stream for Scanned {
    type Item = Result<Bytes, String>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match self.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let out = self.scanner.pass(chunk);
                    if out.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(out)));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    self.done = true;
                    let rest = self.scanner.rest();
                    if !rest.is_empty() {
                        return Poll::Ready(Some(Ok(rest)));
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Reads an answer whole for a response policy, within four idle timeouts.
async fn read_whole(resp: &mut super::client::Response, provider: &str, idle_ms: u64) -> Result<Bytes, Error> {
    let limit = Duration::from_millis(idle_ms.max(1)) * 4;
    match tokio::time::timeout(limit, resp.read(MAX_CHECKED)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => Err(Error::UpstreamFailed {
            provider: provider.to_string(),
            reason: format!("the answer could not be read whole for the gateway's response policies: {e}"),
        }),
        Err(_) => Err(Error::UpstreamTimeout {
            provider: provider.to_string(),
            after_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}
