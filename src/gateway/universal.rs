//! The universal endpoint: `POST /v1/{account}/{gateway}` with a JSON array of steps (or one
//! step object), tried in order until one answers with a 2xx.
//!
//! Every step goes through the same resolution, URL validation, header hygiene and the same
//! `run_step` as the provider passthrough; this module only parses steps and decides when to
//! fall through. A step is committed as soon as
//! its 2xx response head arrives: from then on bytes flow to the client and there is no
//! fallback (a later failure ends the stream, see `stream`).

use std::time::Duration;

use actix_web::http::Method;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::forward::{is_control_header, outbound_headers};
use super::options::RequestOptions;
use super::resolve::{resolve_gateway, resolve_provider};
use super::step::{Failed, Outcome, Run, Step};
use super::tap::{Rejected, record_rejection};
use super::unified::{Endpoint, plan};
use super::{Gateway, Ids, Inbound, Upstream, authenticate};
use crate::config::Config;
use crate::control::Snapshot;
use crate::error::Error;
use crate::logs::record::RequestType;
use crate::providers::translate::Dialect;
use crate::store::Backoff;

/// Most steps one request may name.
pub const MAX_STEPS: usize = 10;

/// A step as the client writes it (Cloudflare's field names).
#[derive(Deserialize)]
struct StepWire<'a> {
    provider: String,
    endpoint: String,
    #[serde(default)]
    headers: Option<Map<String, Value>>,
    #[serde(default, borrow)]
    query: Option<&'a RawValue>,
    #[serde(default)]
    config: Option<StepConfig>,
    /// Legacy: the full `Authorization` value for this step.
    #[serde(default)]
    authorization: Option<String>,
}

/// Per-step retry and timeout settings.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StepConfig {
    request_timeout: Option<u64>,
    max_attempts: Option<u8>,
    retry_delay: Option<u64>,
    backoff: Option<Backoff>,
}

fn step_error(i: usize, what: impl std::fmt::Display) -> Error {
    Error::BadRequest(format!("step {i}: {what}"))
}

/// Parses and resolves every step; nothing is sent unless all of them are valid.
/// One universal step as parsed: a request to one provider, or a compat step naming a dynamic
/// route or a model alias (walked when its turn comes).
#[expect(clippy::large_enum_variant, reason = "at most ten steps per request, built once")]
pub enum UniStep {
    /// One provider request.
    Plain(Step),
    /// `dynamic/{route}` or `custom/{alias}` with its OpenAI body.
    Routed {
        /// Position.
        index: usize,
        /// The model as named.
        named: String,
        /// The OpenAI chat body.
        body: Value,
        /// The step's control options.
        options: RequestOptions,
    },
}

impl UniStep {
    fn index(&self) -> usize {
        match self {
            Self::Plain(s) => s.index,
            Self::Routed { index, .. } => *index,
        }
    }
}

pub fn parse_steps(
    body: &[u8],
    request_headers: &HeaderMap,
    config: &Config,
    snapshot: &Snapshot,
    account: &str,
) -> Result<Vec<UniStep>, Error> {
    let text = std::str::from_utf8(body).map_err(|_| Error::BadRequest("the body is not UTF-8 JSON".into()))?;
    let cleaned;
    let text = match serde_json::from_str::<&RawValue>(text) {
        Err(_) if text.contains("\\\n") || text.contains("\\\r\n") => {
            // Shell line continuations pasted inside a single-quoted curl body (as in the
            // dashboard's copy-paste examples). A backslash before a raw newline is never valid
            // JSON, so removing these pairs can only turn an invalid body into a valid one.
            cleaned = text.replace("\\\r\n", "").replace("\\\n", "");
            cleaned.as_str()
        }
        _ => text,
    };
    let raw: &RawValue =
        serde_json::from_str(text).map_err(|e| Error::BadRequest(format!("the body is not valid JSON: {e}")))?;
    let items: Vec<&RawValue> = match raw.get().trim_start().as_bytes().first() {
        Some(b'[') => serde_json::from_str(raw.get())
            .map_err(|e| Error::BadRequest(format!("the body is not valid JSON: {e}")))?,
        Some(b'{') => vec![raw],
        _ => {
            return Err(Error::BadRequest("the body must be an array of steps or one step object".into()));
        }
    };
    if items.is_empty() {
        return Err(Error::BadRequest("the array of steps is empty".into()));
    }
    if items.len() > MAX_STEPS {
        return Err(Error::BadRequest(format!("at most {MAX_STEPS} steps are allowed, got {}", items.len())));
    }
    let request_controls: Vec<(HeaderName, HeaderValue)> = request_headers
        .iter()
        .filter(|(n, _)| is_control_header(n.as_str()))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    items.iter().enumerate().map(|(i, raw)| parse_step(i, raw, &request_controls, config, snapshot, account)).collect()
}

fn parse_step(
    i: usize,
    raw: &RawValue,
    request_controls: &[(HeaderName, HeaderValue)],
    config: &Config,
    snapshot: &Snapshot,
    account: &str,
) -> Result<UniStep, Error> {
    if !raw.get().trim_start().starts_with('{') {
        return Err(step_error(i, "must be an object"));
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let wire: StepWire = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." { step_error(i, inner) } else { step_error(i, format!("{path}: {inner}")) }
    })?;
    let (rest, query) = wire.endpoint.split_once('?').unwrap_or((wire.endpoint.as_str(), ""));
    let rest = rest.trim_start_matches('/');
    // `compat` steps are unified-API requests: the target comes from their model.
    let target = if wire.provider == "compat" {
        None
    } else {
        Some(resolve_provider(config, snapshot, account, &wire.provider, rest, query).map_err(|e| step_error(i, e))?)
    };

    let mut given = HeaderMap::new();
    for (name, value) in wire.headers.iter().flatten() {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(step_error(i, format!("headers.{name} must be a string"))),
        };
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| step_error(i, format!("'{name}' is not a valid header name")))?;
        let value = HeaderValue::from_str(&text)
            .map_err(|_| step_error(i, format!("headers.{name} is not a valid header value")))?;
        given.append(name, value);
    }
    let mut controls = HeaderMap::new();
    for (name, value) in request_controls {
        controls.append(name.clone(), value.clone());
    }
    for (name, value) in &given {
        if is_control_header(name.as_str()) {
            controls.insert(name.clone(), value.clone());
        }
    }
    let mut options = RequestOptions::from_headers(&controls).map_err(|e| step_error(i, e))?;
    if let Some(c) = &wire.config {
        apply_config(i, c, &mut options)?;
    }

    let mut headers = outbound_headers(&given);
    if let Some(auth) = wire.authorization.as_deref().filter(|_| !headers.contains_key("authorization")) {
        let value =
            HeaderValue::from_str(auth).map_err(|_| step_error(i, "authorization is not a valid header value"))?;
        headers.insert(HeaderName::from_static("authorization"), value);
    }
    let Some(target) = target else {
        return compat_step(i, &wire, &headers, options, (config, snapshot, account));
    };
    let body = match wire.query {
        None => Bytes::new(),
        Some(q) if q.get().trim_start().starts_with('{') => Bytes::copy_from_slice(q.get().as_bytes()),
        Some(_) => {
            return Err(step_error(i, "query must be a JSON object (the provider's request body)"));
        }
    };
    if !body.is_empty() && !headers.contains_key("content-type") {
        headers.insert(HeaderName::from_static("content-type"), HeaderValue::from_static("application/json"));
    }
    let facts = crate::providers::usage::request_facts(&body);
    let (body, hide_usage) = super::with_stream_usage(&target, rest, body, facts.streams);
    Ok(UniStep::Plain(Step {
        index: i,
        target,
        method: Method::POST,
        headers,
        body,
        options,
        rest: rest.to_string(),
        cache_path: wire.endpoint.clone(),
        request_type: RequestType::Universal,
        hide_usage,
        translation: None,
        requested_model: None,
        body_model: facts.model,
        budgets: Vec::new(),
    }))
}

/// A `compat` step: `endpoint` `chat/completions` (or `embeddings`), `query` an OpenAI body
/// whose `model` is `{provider}/{model}`, translated like the unified API's.
fn compat_step(
    i: usize,
    wire: &StepWire<'_>,
    headers: &HeaderMap,
    options: RequestOptions,
    (config, snapshot, account): (&Config, &Snapshot, &str),
) -> Result<UniStep, Error> {
    let endpoint = match wire.endpoint.trim_matches('/') {
        "chat/completions" => Endpoint::Chat,
        "embeddings" => Endpoint::Embeddings,
        other => {
            return Err(step_error(
                i,
                format!("endpoint '{other}' of a compat step is not chat/completions or embeddings"),
            ));
        }
    };
    let body: Value = wire
        .query
        .map(|q| serde_json::from_str(q.get()))
        .transpose()
        .map_err(|e| step_error(i, format!("query: {e}")))?
        .ok_or_else(|| step_error(i, "query: the OpenAI request body is required"))?;
    let named =
        body.get("model").and_then(Value::as_str).ok_or_else(|| step_error(i, "query.model: is required"))?.to_string();
    if named.starts_with("dynamic/") || named.starts_with("custom/") {
        if endpoint != Endpoint::Chat {
            return Err(step_error(i, "a dynamic route or model alias takes chat/completions"));
        }
        return Ok(UniStep::Routed { index: i, named, body, options });
    }
    let planned =
        plan(config, snapshot, account, (Dialect::OpenAi, endpoint), &named, body).map_err(|e| step_error(i, e))?;
    let headers = planned.headers(headers, false);
    Ok(UniStep::Plain(planned.into_step(i, headers, options, (RequestType::Universal, &named))))
}

fn apply_config(i: usize, c: &StepConfig, options: &mut RequestOptions) -> Result<(), Error> {
    if let Some(ms) = c.request_timeout {
        if ms == 0 {
            return Err(step_error(i, "config.requestTimeout must be greater than 0"));
        }
        options.request_timeout = Some(Duration::from_millis(ms));
    }
    if let Some(n) = c.max_attempts {
        if !(1..=5).contains(&n) {
            return Err(step_error(i, "config.maxAttempts must be between 1 and 5"));
        }
        options.max_attempts = Some(n);
    }
    if let Some(ms) = c.retry_delay {
        if ms > 5_000 {
            return Err(step_error(i, "config.retryDelay must be at most 5000"));
        }
        options.retry_delay = Some(Duration::from_millis(ms));
    }
    if let Some(b) = c.backoff {
        options.backoff = Some(b);
    }
    Ok(())
}

/// Runs a universal request: the first 2xx step wins; when every step fails, the last
/// upstream response is returned, or a 502 listing each step's failure when none answered.
pub async fn run<S, E>(
    gateway: &Gateway,
    client: &crate::gateway::client::Client,
    inbound: &Inbound,
    (account, gateway_id): (&str, &str),
    payload: S,
    ids: &Ids,
) -> Result<Upstream, Error>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let snapshot = gateway.settings.snapshot();
    let gw = resolve_gateway(&gateway.config(), &snapshot, account, gateway_id)?;
    if inbound.method != Method::POST {
        return Err(Error::MethodNotAllowed(inbound.method.to_string()));
    }
    let token = authenticate(&gateway.settings, &snapshot, &gw, &inbound.headers)?;
    if let Err(e) = gateway.rate_limit(&gw, token).await {
        let what = Rejected { provider: "universal", rest: "", request_type: RequestType::Universal };
        record_rejection(&gateway.logs, &gw, inbound, ids, &what, &e);
        return Err(e);
    }
    let body = gateway.read_body(&inbound.headers, payload).await?;
    let mut steps = parse_steps(&body, &inbound.headers, &gateway.config(), &snapshot, account)?;
    let deadline = Instant::now() + Duration::from_millis(gateway.config().universal_deadline_ms);
    let mut failures = Vec::new();
    let mut kept: Option<Failed> = None;
    let count = steps.len();
    for uni in &mut steps {
        let step = match uni {
            UniStep::Plain(step) => step,
            UniStep::Routed { index, named, body, options } => {
                let routed = super::routing::Routed {
                    inbound,
                    call: super::unified::Call {
                        account,
                        gateway: gateway_id,
                        client: Dialect::OpenAi,
                        endpoint: Endpoint::Chat,
                        api_token: false,
                    },
                    gw: &gw,
                    snapshot: &snapshot,
                    token,
                    options,
                    body: body.clone(),
                    ids,
                };
                match gateway.route_call(client, &routed, named).await {
                    Some(Ok(mut upstream)) if upstream.status.is_success() || *index + 1 == count => {
                        upstream.step = Some(*index);
                        return Ok(upstream);
                    }
                    Some(Ok(upstream)) => {
                        failures.push(format!("step {index} ({named}): status {}", upstream.status.as_u16()));
                    }
                    Some(Err(e)) => failures.push(format!("step {index} ({named}): {e}")),
                    None => failures.push(format!("step {index}: '{named}' names no route or alias")),
                }
                continue;
            }
        };
        let headers = step.take_headers();
        let step = &*step;
        let i = step.index;
        let provider = step.target.provider.as_str();
        let run = Run {
            gw: &gw,
            snapshot: &snapshot,
            ids,
            client_headers: &inbound.headers,
            deadline: Some(deadline),
            may_fall_through: i + 1 < count,
            checks: true,
            token,
            rate: None,
        };
        match gateway.run_step(client, &run, step, headers).await? {
            Outcome::Answer(upstream) => {
                let mut upstream = *upstream;
                tracing::debug!(step = i, provider, status = upstream.status.as_u16(), "universal step answered");
                upstream.step = Some(i);
                return Ok(upstream);
            }
            Outcome::FellThrough(failed) => {
                failures.push(format!("step {i} ({provider}): status {}", failed.status.as_u16()));
                kept = Some(failed);
            }
            Outcome::Failed(e) => failures.push(format!("step {i}: {e}")),
            Outcome::Deadline => {
                let ms = gateway.config().universal_deadline_ms;
                failures.push(format!("step {i} ({provider}): the overall deadline of {ms} ms passed"));
                break;
            }
        }
    }
    // Every step failed: the latest answer any of them gave, else a 502 listing the failures.
    match kept {
        Some(failed) => match steps.iter().find(|s| s.index() == failed.step) {
            Some(UniStep::Plain(step)) => Ok(gateway.failed_answer(failed, ids, step)),
            _ => Err(Error::AllStepsFailed(failures)),
        },
        None => Err(Error::AllStepsFailed(failures)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(steps: Vec<UniStep>) -> Vec<Step> {
        steps
            .into_iter()
            .filter_map(|s| match s {
                UniStep::Plain(s) => Some(s),
                UniStep::Routed { .. } => None,
            })
            .collect()
    }

    fn parse(body: &str) -> Result<Vec<Step>, Error> {
        parse_steps(body.as_bytes(), &HeaderMap::new(), &Config::default(), &Snapshot::default(), "acct").map(plain)
    }

    #[test]
    fn parses_the_seed_request() {
        let steps = parse(
            r#"[{"provider":"workers-ai","endpoint":"@cf/meta/llama-2-7b-chat-int8","headers":{"Authorization":"Bearer X","Content-Type":"application/json"},"query":{"messages":[{"role":"user","content":"Why is pizza so good"}]}},
               {"provider":"openai","endpoint":"chat/completions","headers":{"Authorization":"Bearer Y"},"query":{"model":"gpt-3.5-turbo","messages":[]},"config":{"requestTimeout":1000,"maxAttempts":3,"retryDelay":100,"backoff":"linear"}}]"#,
        )
        .unwrap();
        assert_eq!(steps.len(), 2);
        assert!(steps[0].target.url.ends_with("/accounts/acct/ai/run/@cf/meta/llama-2-7b-chat-int8"));
        assert_eq!(&steps[1].body[..], br#"{"model":"gpt-3.5-turbo","messages":[]}"#);
        assert_eq!(steps[1].options.max_attempts, Some(3));
        assert_eq!(steps[1].options.backoff, Some(Backoff::Linear));
    }

    #[test]
    fn shell_line_continuations_in_a_pasted_curl_body_are_tolerated() {
        let body = "[ \\\n{ \\\n\"provider\": \"openai\", \\\n\"endpoint\": \"chat/completions\", \\\n\"query\": {\"a\": \"x\\\\y\"} \\\n} \\\n]";
        let steps = parse(body).unwrap();
        assert_eq!(&steps[0].body[..], br#"{"a": "x\\y"}"#, "escapes inside strings are untouched");
    }

    #[test]
    fn single_object_and_legacy_authorization() {
        let steps =
            parse(r#"{"provider":"openai","endpoint":"chat/completions?x=1","authorization":"Bearer Z","query":{}}"#)
                .unwrap();
        assert_eq!(steps[0].headers.get("authorization").unwrap(), "Bearer Z");
        assert!(steps[0].target.url.ends_with("/v1/chat/completions?x=1"));
    }

    #[test]
    fn step_headers_override_request_headers() {
        let mut request = HeaderMap::new();
        request.insert(HeaderName::from_static("cf-aig-request-timeout"), HeaderValue::from_static("100"));
        request.insert(HeaderName::from_static("cf-aig-max-attempts"), HeaderValue::from_static("2"));
        let body = r#"[{"provider":"openai","endpoint":"a","headers":{"cf-aig-request-timeout":"700"},"query":{}},{"provider":"openai","endpoint":"b","query":{}}]"#;
        let steps =
            plain(parse_steps(body.as_bytes(), &request, &Config::default(), &Snapshot::default(), "a").unwrap());
        assert_eq!(steps[0].options.request_timeout, Some(Duration::from_millis(700)));
        assert_eq!(steps[1].options.request_timeout, Some(Duration::from_millis(100)));
        assert_eq!(steps[0].options.max_attempts, Some(2));
        assert!(!steps[0].headers.contains_key("cf-aig-request-timeout"), "control headers are not forwarded");
    }

    #[test]
    fn bad_bodies_name_the_problem() {
        let eleven = format!("[{}]", [r#"{"provider":"openai","endpoint":"x","query":{}}"#; 11].join(","));
        let cases = [
            ("not json", "valid JSON"),
            ("42", "array of steps"),
            ("[]", "empty"),
            (eleven.as_str(), "at most 10"),
            (r#"[{"provider":"nope","endpoint":"x"}]"#, "step 0"),
            (r#"[{"provider":"openai"}]"#, "endpoint"),
            (r#"[{"endpoint":"x"}]"#, "provider"),
            (r#"[{"provider":"openai","endpoint":"x","query":[1]}]"#, "query"),
            (
                r#"[{"provider":"openai","endpoint":"x","query":{},"config":{"maxAttempts":"three"}}]"#,
                "config.maxAttempts",
            ),
            (r#"[{"provider":"openai","endpoint":"x","query":{},"config":{"maxAttempts":9}}]"#, "maxAttempts"),
            (r#"[{"provider":"openai","endpoint":"x","query":{},"config":{"retryDelay":9000}}]"#, "retryDelay"),
            (r#"[{"provider":"openai","endpoint":"x","query":{},"headers":{"a":{"b":1}}}]"#, "headers.a"),
            (r#"[{"provider":"openai","endpoint":"x","headers":{"cf-aig-max-attempts":"99"}}]"#, "cf-aig-max-attempts"),
            (r#"[{"provider":"openai","endpoint":"ok","query":{}}, 5]"#, "step 1"),
            (r#"[{"provider":"azure-openai","endpoint":"evil.com#/d/chat","query":{}}]"#, "azure resource"),
        ];
        for (body, mention) in cases {
            let err = parse(body).err().unwrap_or_else(|| panic!("{body} parsed"));
            assert!(matches!(err, Error::BadRequest(_)), "{body}: {err:?}");
            assert!(err.to_string().contains(mention), "{body}: {err}");
        }
    }
}
