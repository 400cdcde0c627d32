//! The unified API: one OpenAI-compatible (or Anthropic-compatible) request for any model,
//! `model: "{provider}/{model}"`. Admit, translate the body to the provider's format, run the
//! same step as every other surface, and translate the answer back, streams event by event.
//!
//! Surfaces: `POST /v1/{account}/{gateway}/compat/chat/completions` and `/compat/embeddings`
//! (the gateway's own authentication; the provider key from the request, else the stored key),
//! and the REST API `POST /client/v4/accounts/{account}/ai/v1/chat/completions` and
//! `/ai/v1/messages` (a Torii API token with `run` scope; the gateway from
//! `cf-aig-gateway-id`; provider keys from stored keys).

use actix_web::http::Method;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use futures_util::Stream;
use serde_json::Value;

use super::access::authenticate;
use super::options::RequestOptions;
use super::resolve::{resolve_gateway, resolve_provider};
use super::step::Step;
use super::stream::Transform;
use super::tap::{Rejected, record_rejection};
use super::{Gateway, Ids, Inbound, Upstream, with_stream_usage};
use crate::auth;
use crate::config::Config;
use crate::control::Snapshot;
use crate::error::Error;
use crate::logs::record::RequestType;
use crate::providers::translate::canonical::{ChatRequest, Refused};
use crate::providers::translate::{self, Dialect, StreamTranscoder, anthropic, bedrock, cohere, google, openai};
use crate::providers::{self, Auth, Target, WireFormat};
use crate::store::Scope;

/// What the client calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// A chat: OpenAI Chat Completions or Anthropic Messages.
    Chat,
    /// OpenAI embeddings (OpenAI-compatible providers only).
    Embeddings,
    /// OpenAI Responses (OpenAI only: its body passes through with the model renamed).
    Responses,
    /// `/ai/run`: `{model, input}` for a Workers AI model (`@cf/...`), the input sent as is.
    Run,
}

/// One unified-API call as routed.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// Account id from the path.
    pub account: &'a str,
    /// Gateway id (path, or `cf-aig-gateway-id`).
    pub gateway: &'a str,
    /// The client's wire format.
    pub client: Dialect,
    /// What it calls.
    pub endpoint: Endpoint,
    /// REST surface: a Torii API token authorizes the call (`Authorization: Bearer` or
    /// `x-api-key`), and provider keys come only from stored keys.
    pub api_token: bool,
}

fn refused(e: &Refused) -> Error {
    Error::BadRequest(e.to_string())
}

/// Azure OpenAI's API version when the model names none.
const AZURE_API_VERSION: &str = "2024-10-21";

/// The provider's chat dialect, the path of its chat endpoint under its base URL (with its
/// query), and the model name the provider expects.
fn chat_route(
    target_format: WireFormat,
    slug: &str,
    model: &str,
    stream: bool,
) -> Result<(Dialect, String, String), Error> {
    let row = providers::builtin(slug);
    if row.is_some_and(|p| p.shape == providers::Shape::Bedrock) {
        // `aws-bedrock/{region}/{model id}`: Converse, whatever the model's family.
        let Some((region, id)) = model.split_once('/') else {
            return Err(Error::BadRequest("model: Bedrock is named aws-bedrock/{region}/{model id}".into()));
        };
        return Ok((Dialect::Bedrock, bedrock::path(region, id, stream), id.to_string()));
    }
    if row.is_some_and(|p| p.shape == providers::Shape::Vertex) {
        // `google-vertex-ai/{project}/{region}/{model}`: Gemini on Vertex, the same wire format.
        let mut parts = model.splitn(3, '/');
        let (Some(project), Some(region), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::BadRequest(
                "model: Vertex AI is named google-vertex-ai/{project}/{region}/{model}".into(),
            ));
        };
        let name = name.strip_prefix("google/").unwrap_or(name);
        let op = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
        let path = format!("v1/projects/{project}/locations/{region}/publishers/google/models/{name}:{op}");
        return Ok((Dialect::Google, path, name.to_string()));
    }
    if row.is_some_and(|p| p.shape == providers::Shape::Azure) {
        // `azure-openai/{resource}/{deployment}`: the deployment is the model.
        let Some((resource, deployment)) = model.split_once('/') else {
            return Err(Error::BadRequest("model: Azure OpenAI is named azure-openai/{resource}/{deployment}".into()));
        };
        let path = format!("{resource}/{deployment}/chat/completions?api-version={AZURE_API_VERSION}");
        return Ok((Dialect::OpenAi, path, deployment.to_string()));
    }
    let path = if slug.starts_with("custom-") { Some("chat/completions") } else { row.and_then(|p| p.chat_path) };
    match (target_format, path) {
        (WireFormat::Anthropic, Some(p)) => Ok((Dialect::Anthropic, p.to_string(), model.to_string())),
        (WireFormat::Google, Some(_)) => Ok((Dialect::Google, google::path(model, stream), model.to_string())),
        (WireFormat::Cohere, Some(p)) => Ok((Dialect::Cohere, p.to_string(), model.to_string())),
        (WireFormat::OpenAi | WireFormat::WorkersAi, Some(p)) => {
            Ok((Dialect::OpenAi, p.to_string(), model.to_string()))
        }
        _ => Err(Error::BadRequest(format!(
            "model: provider '{slug}' is not reachable through the unified API yet; use its passthrough endpoint"
        ))),
    }
}

/// Splits `provider/model` (`workers-ai/@cf/meta/llama-3.1-8b-instruct` keeps its slashes).
/// Cloudflare's REST names work too: `@cf/...` (Workers AI), `google/...` (AI Studio), `xai/...`.
fn split_model(named: &str) -> Result<(&str, &str), Error> {
    if named.starts_with("@cf/") {
        return Ok(("workers-ai", named));
    }
    match named.split_once('/') {
        Some(("google", m)) if !m.is_empty() => Ok(("google-ai-studio", m)),
        Some(("xai", m)) if !m.is_empty() => Ok(("grok", m)),
        Some((p, m)) if !p.is_empty() && !m.is_empty() => Ok((p, m)),
        _ => Err(Error::BadModel(format!(
            "model '{}' names no provider: use \"{{provider}}/{{model}}\", e.g. \"openai/gpt-4o-mini\"",
            named.chars().take(128).collect::<String>()
        ))),
    }
}

/// How a step's answer goes back to its client: re-encoded from the provider's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The provider's format.
    pub from: Dialect,
    /// The client's format.
    pub to: Dialect,
    /// The OpenAI client asked for the usage chunk.
    pub include_usage: bool,
    /// The client asked for a stream (the provider's may not be SSE: Bedrock's is binary).
    pub stream: bool,
}

/// The upstream request of a unified-API call: where, what, and how the answer comes back.
pub struct Planned {
    /// Where it goes.
    pub target: Target,
    /// The body in the provider's format.
    pub body: Bytes,
    /// Path (and query) under the provider's base URL.
    pub rest: String,
    /// The provider's format.
    pub from: Dialect,
    /// How the answer is translated (`None`: the client speaks the provider's format).
    pub translation: Option<Translation>,
    /// Torii asked for the stream's usage; the client did not.
    pub hide_usage: bool,
}

impl Planned {
    /// The step that sends it: `index` in its request, `named` as the client named the model.
    #[must_use]
    pub fn into_step(
        self,
        index: usize,
        headers: HeaderMap,
        options: RequestOptions,
        (request_type, named): (RequestType, &str),
    ) -> Step {
        Step {
            index,
            target: self.target,
            method: Method::POST,
            headers,
            body_model: crate::providers::usage::request_facts(&self.body).model,
            body: self.body,
            options,
            rest: self.rest.clone(),
            cache_path: self.rest,
            request_type,
            hide_usage: self.hide_usage,
            translation: self.translation,
            requested_model: Some(named.to_string()),
            budgets: Vec::new(),
        }
    }

    /// Headers for its provider: on the REST API only the basics (stored keys authenticate),
    /// elsewhere the client's provider key too.
    #[must_use]
    pub fn headers(&self, client: &HeaderMap, api_token: bool) -> HeaderMap {
        if api_token {
            base_headers(client, self.from)
        } else {
            provider_headers(client, self.from, &self.target.provider)
        }
    }
}

fn with_model(mut body: Value, model: &str) -> Bytes {
    body["model"] = Value::String(model.to_string());
    Bytes::from(body.to_string())
}

impl Gateway {
    /// Serves one unified-API call.
    pub async fn unified<S, E>(
        &self,
        client: &crate::gateway::client::Client,
        inbound: &Inbound,
        call: Call<'_>,
        payload: S,
        ids: &Ids,
    ) -> Result<Upstream, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let snapshot = self.settings.snapshot();
        let gw = resolve_gateway(&self.config(), &snapshot, call.account, call.gateway)?;
        if inbound.method != Method::POST {
            return Err(Error::MethodNotAllowed(inbound.method.to_string()));
        }
        let token = if call.api_token {
            let secret = auth::bearer(inbound.headers.get("authorization").map(HeaderValue::as_bytes))
                .or_else(|| inbound.headers.get("x-api-key").and_then(|v| v.to_str().ok()));
            let token =
                auth::check_token(&snapshot.tokens, secret, Scope::Run, Some(&gw.id)).map_err(Error::Unauthorized)?;
            self.settings.token_usage().touch(&token.id);
            Some(token)
        } else {
            authenticate(&self.settings, &snapshot, &gw, &inbound.headers)?
        };
        let rate = match self.admit_rate(&snapshot, &gw, token).await {
            Ok(rate) => rate,
            Err(e) => {
                let what = Rejected { provider: "compat", rest: "", request_type: RequestType::Compat };
                record_rejection(&self.logs, &gw, inbound, ids, &what, &e);
                return Err(e);
            }
        };
        let options = RequestOptions::from_headers(&inbound.headers)?;
        let raw = self.read_body(&inbound.headers, payload).await?;
        let body: Value =
            serde_json::from_slice(&raw).map_err(|e| Error::BadRequest(format!("the body is not JSON: {e}")))?;
        let named =
            body.get("model").and_then(Value::as_str).ok_or_else(|| Error::BadRequest("model: is required".into()))?;
        if named.starts_with("dynamic/") || named.starts_with("custom/") {
            // Routes reserve per element: the rate check runs on its own first.
            self.run_deferred(rate.as_ref()).await?;
            let routed = super::routing::Routed {
                inbound,
                call,
                gw: &gw,
                snapshot: &snapshot,
                token,
                options: &options,
                body: body.clone(),
                ids,
            };
            if let Some(answer) = self.route_call(client, &routed, named).await {
                return answer;
            }
        }
        let planned = plan(&self.config(), &snapshot, call.account, (call.client, call.endpoint), named, body.clone())?;
        let headers = planned.headers(&inbound.headers, call.api_token);
        let mut step = planned.into_step(0, headers, options, (RequestType::Compat, named));
        self.only_step(client, (&gw, &snapshot, ids, &inbound.headers), (token, rate.as_ref()), &mut step).await
    }
}

/// Plans a unified-API request: the provider from `named` (`{provider}/{model}`), the body in its
/// format, and how its answer comes back. Nothing is sent; every refusal names its field.
pub fn plan(
    config: &Config,
    snapshot: &Snapshot,
    account: &str,
    (client, endpoint): (Dialect, Endpoint),
    named: &str,
    body: Value,
) -> Result<Planned, Error> {
    let (slug, model) = split_model(named)?;
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    match endpoint {
        Endpoint::Run => return plan_run(config, snapshot, account, slug, model, &body),
        Endpoint::Responses => {
            if slug != "openai" {
                return Err(Error::BadRequest(format!(
                    "model: the Responses API reaches OpenAI models only through Torii, not '{slug}'"
                )));
            }
            let target = resolve_provider(config, snapshot, account, slug, "responses", "")?;
            let body = with_model(body, model);
            return Ok(Planned {
                target,
                body,
                rest: "responses".into(),
                from: Dialect::OpenAi,
                translation: None,
                hide_usage: false,
            });
        }
        Endpoint::Chat | Endpoint::Embeddings => {}
    }
    // The provider's format decides the path.
    let format = match providers::builtin(slug) {
        Some(p) => p.format,
        None if slug.strip_prefix("custom-").is_some_and(|s| snapshot.custom_providers.contains_key(s)) => {
            WireFormat::OpenAi
        }
        None => return Err(Error::ProviderNotFound(slug.chars().take(64).flat_map(char::escape_default).collect())),
    };
    let (from, path, model) = chat_route(format, slug, model, stream)?;
    if endpoint == Endpoint::Embeddings {
        if from != Dialect::OpenAi {
            return Err(Error::BadRequest(format!(
                "model: embeddings through the unified API reach OpenAI-compatible providers only, not '{slug}'"
            )));
        }
        let rest = path.replace("chat/completions", "embeddings");
        let (r, q) = rest.split_once('?').unwrap_or((rest.as_str(), ""));
        let target = resolve_provider(config, snapshot, account, slug, r, q)?;
        let body = with_model(body, &model);
        return Ok(Planned { target, body, rest, from, translation: None, hide_usage: false });
    }
    let (rest, query) = path.split_once('?').unwrap_or((path.as_str(), ""));
    let target = resolve_provider(config, snapshot, account, slug, rest, query)?;
    let canonical = |body: &Value| -> Result<ChatRequest, Error> {
        let mut req = match client {
            Dialect::Anthropic => anthropic::request_from(body),
            _ => openai::request_from(body),
        }
        .map_err(|e| refused(&e))?;
        req.model.clone_from(&model);
        Ok(req)
    };
    let include_usage = match client {
        Dialect::Anthropic => true,
        _ => body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false),
    };
    let (bytes, hide_usage) = match (client, from) {
        // Same format: only the model changes; unknown fields pass through untouched.
        (client, target_dialect) if client == target_dialect => {
            // Validate the shape (tools, messages) before anything is sent.
            canonical(&body)?;
            let streams = body.get("stream") == Some(&Value::Bool(true));
            let bytes = with_model(body, &model);
            if target_dialect == Dialect::OpenAi {
                with_stream_usage(&target, rest, bytes, streams)
            } else {
                (bytes, false)
            }
        }
        (_, Dialect::OpenAi) => (Bytes::from(openai::request_to(&canonical(&body)?).to_string()), false),
        (_, Dialect::Anthropic) => {
            (Bytes::from(anthropic::request_to(&canonical(&body)?).map_err(|e| refused(&e))?.to_string()), false)
        }
        (_, Dialect::Google) => {
            (Bytes::from(google::request_to(&canonical(&body)?).map_err(|e| refused(&e))?.to_string()), false)
        }
        (_, Dialect::Cohere) => {
            (Bytes::from(cohere::request_to(&canonical(&body)?).map_err(|e| refused(&e))?.to_string()), false)
        }
        (_, Dialect::Bedrock) => {
            (Bytes::from(bedrock::request_to(&canonical(&body)?).map_err(|e| refused(&e))?.to_string()), false)
        }
    };
    let translation = (from != client).then_some(Translation { from, to: client, include_usage, stream });
    Ok(Planned { target, body: bytes, rest: path.clone(), from, translation, hide_usage })
}

/// `/ai/run` for a Workers AI model: `input` is the model's own request body.
fn plan_run(
    config: &Config,
    snapshot: &Snapshot,
    account: &str,
    slug: &str,
    model: &str,
    body: &Value,
) -> Result<Planned, Error> {
    if slug != "workers-ai" {
        return Err(Error::BadRequest(format!(
            "model: /ai/run serves Workers AI models (@cf/...) in Torii; use /ai/v1/chat/completions for '{slug}'"
        )));
    }
    if body.pointer("/options/background").and_then(Value::as_bool) == Some(true) {
        return Err(Error::BadRequest("options.background: background runs are not supported".into()));
    }
    let input = body
        .get("input")
        .filter(|i| i.is_object())
        .ok_or_else(|| Error::BadRequest("input: must be an object".into()))?;
    let rest = format!("run/{model}");
    let target = resolve_provider(config, snapshot, account, slug, &rest, "")?;
    let bytes = Bytes::from(input.to_string());
    Ok(Planned { target, body: bytes, rest, from: Dialect::OpenAi, translation: None, hide_usage: false })
}

/// Headers for the provider: JSON, the client's user agent, Anthropic's version headers.
#[must_use]
pub fn base_headers(client: &HeaderMap, target: Dialect) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(HeaderName::from_static("content-type"), HeaderValue::from_static("application/json"));
    if let Some(ua) = client.get("user-agent") {
        h.insert(HeaderName::from_static("user-agent"), ua.clone());
    }
    if target == Dialect::Anthropic {
        let version = client.get("anthropic-version").cloned().unwrap_or(HeaderValue::from_static("2023-06-01"));
        h.insert(HeaderName::from_static("anthropic-version"), version);
        if let Some(beta) = client.get("anthropic-beta") {
            h.insert(HeaderName::from_static("anthropic-beta"), beta.clone());
        }
    }
    h
}

/// [`base_headers`] plus the client's provider key (`Authorization: Bearer` or `x-api-key`) in
/// the header the provider's registry row names; a stored key replaces it in `run_step`.
pub fn provider_headers(client: &HeaderMap, target: Dialect, provider: &str) -> HeaderMap {
    let mut h = base_headers(client, target);
    let key = auth::bearer(client.get("authorization").map(HeaderValue::as_bytes))
        .or_else(|| client.get("x-api-key").and_then(|v| v.to_str().ok()));
    if let Some(key) = key {
        let (name, value) = match providers::builtin(provider).map_or(Auth::Bearer, |p| p.auth) {
            Auth::Header(name) => (name, key.to_string()),
            Auth::Scheme(scheme) => ("authorization", format!("{scheme} {key}")),
            // Vertex takes an OAuth access token as a bearer, Bedrock its API keys (stored AWS
            // credentials sign instead), custom providers their key.
            Auth::Bearer | Auth::SigV4 { .. } => ("authorization", format!("Bearer {key}")),
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    h
}

/// The provider's answer in the client's format: streams event by event, whole answers and
/// errors once they are complete.
#[must_use]
pub fn translated(mut upstream: Upstream, t: Translation) -> Upstream {
    let Translation { from, to, include_usage, stream } = t;
    upstream.headers.remove("content-length");
    upstream.headers.remove("content-encoding");
    let status = upstream.status.as_u16();
    let transform: Box<dyn Transform> = if !upstream.status.is_success() {
        set_type(&mut upstream.headers, "application/json");
        Box::new(Whole::new(move |body| translate::translate_error(from, to, status, body)))
    } else if stream || upstream.body.is_sse() {
        set_type(&mut upstream.headers, "text/event-stream");
        Box::new(Transcode(StreamTranscoder::new(from, to, include_usage)))
    } else {
        set_type(&mut upstream.headers, "application/json");
        Box::new(Whole::new(move |body| {
            translate::translate_response(from, to, body)
                .unwrap_or_else(|e| translate::translate_error(from, to, 502, e.as_bytes()))
        }))
    };
    upstream.body = upstream.body.transformed(transform);
    upstream
}

fn set_type(headers: &mut HeaderMap, value: &'static str) {
    headers.insert(HeaderName::from_static("content-type"), HeaderValue::from_static(value));
}

struct Transcode(StreamTranscoder);

impl Transform for Transcode {
    fn pass(&mut self, chunk: Bytes) -> Bytes {
        Bytes::from(self.0.feed(&chunk))
    }

    fn rest(&mut self) -> Bytes {
        Bytes::from(self.0.finish())
    }
}

/// Largest whole answer translated (a larger one is an error in the client's format).
const MAX_WHOLE: usize = 32 << 20;

/// Collects a whole answer, then writes it translated.
struct Whole<F> {
    body: Vec<u8>,
    translate: Option<F>,
}

impl<F: FnOnce(&[u8]) -> Value> Whole<F> {
    fn new(translate: F) -> Self {
        Self { body: Vec::new(), translate: Some(translate) }
    }
}

impl<F: FnOnce(&[u8]) -> Value> Transform for Whole<F> {
    fn pass(&mut self, chunk: Bytes) -> Bytes {
        if self.body.len() + chunk.len() <= MAX_WHOLE {
            self.body.extend_from_slice(&chunk);
        }
        Bytes::new()
    }

    fn rest(&mut self) -> Bytes {
        match self.translate.take() {
            Some(f) => Bytes::from(f(&self.body).to_string()),
            None => Bytes::new(),
        }
    }
}
