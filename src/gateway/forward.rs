//! Building and sending the upstream request: header hygiene, timeout to first byte, retries.

use std::time::{Duration, Instant};

use actix_web::http::Method;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;

use super::retry::{RetryPolicy, is_retryable_status};
use crate::error::Error;

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus those the client library sets itself, as names
/// (removing or comparing by a `&str` parses the name on every call).
const HOP_BY_HOP: [HeaderName; 11] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
    header::CONTENT_LENGTH,
];

/// Gateway control headers: never forwarded upstream.
#[must_use]
pub fn is_control_header(name: &str) -> bool {
    name.starts_with("cf-aig-") || name == "cf-cache-ttl" || name == "cf-skip-cache"
}

fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("connection")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The client's headers as sent upstream: minus hop-by-hop, `Connection`-listed and control headers.
#[must_use]
pub fn outbound_headers(inbound: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(inbound);
    let mut out = HeaderMap::with_capacity(inbound.len());
    for (name, value) in inbound {
        let n = name.as_str();
        if HOP_BY_HOP.contains(name) || is_control_header(n) || listed.iter().any(|l| l == n) {
            continue;
        }
        if n == "cookie" {
            if let Some(v) = without_own_cookies(value) {
                out.append(name.clone(), v);
            }
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// A `Cookie` header minus Torii's own cookies (`torii_*`: the admin session and sign-in
/// form), which a browser may send along with data-plane requests; `None` when nothing is left.
fn without_own_cookies(value: &HeaderValue) -> Option<HeaderValue> {
    let Ok(text) = value.to_str() else { return Some(value.clone()) };
    if !text.contains("torii_") {
        return Some(value.clone());
    }
    let kept: Vec<&str> =
        text.split(';').map(str::trim).filter(|c| !c.is_empty() && !c.starts_with("torii_")).collect();
    if kept.is_empty() { None } else { HeaderValue::from_str(&kept.join("; ")).ok() }
}

/// The upstream's response headers as sent to the client: minus hop-by-hop ones and
/// `Set-Cookie` (an upstream must not set cookies on Torii's origin). The `Content-Length` is
/// kept so a sized body stays sized.
#[must_use]
pub fn inbound_response_headers(mut upstream: HeaderMap) -> HeaderMap {
    // The answer keeps its Content-Length (the server frames the body by it).
    let dropped = |n: &HeaderName| (*n != header::CONTENT_LENGTH && HOP_BY_HOP.contains(n)) || *n == header::SET_COOKIE;
    // Most answers carry none of these: one pass over their few names (standard names compare
    // as tags) instead of a hashed lookup for each of the twelve.
    if !upstream.keys().any(dropped) {
        return upstream;
    }
    // Removed in place: the upstream's map is the client's, less a few names.
    if upstream.contains_key(header::CONNECTION) {
        for name in connection_listed(&upstream) {
            upstream.remove(name.as_str());
        }
    }
    for name in HOP_BY_HOP.iter().filter(|n| **n != header::CONTENT_LENGTH).chain([&header::SET_COOKIE]) {
        upstream.remove(name);
    }
    upstream
}

/// One upstream attempt, for tracing now and for the log later.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// 0-based step of the universal endpoint (0 on provider endpoints).
    pub step: usize,
    /// 1-based attempt number.
    pub attempt: u8,
    /// Upstream status when a response head arrived.
    pub status: Option<u16>,
    /// When it was sent.
    pub started: Instant,
    /// Time from send to response head (or failure).
    pub duration: Duration,
    /// Why the attempt failed before a response head.
    pub error: Option<String>,
}

/// Everything needed to send one upstream request (possibly several times).
pub struct Outbound<'a> {
    /// 0-based step (universal endpoint), for tracing and the log.
    pub step: usize,
    /// Provider slug, for errors and tracing.
    pub provider: &'a str,
    /// Method as the client sent it.
    pub method: Method,
    /// Full upstream URL.
    pub url: &'a str,
    /// Filtered headers (moved into the last attempt, copied for any before it).
    pub headers: HeaderMap,
    /// Body bytes, unchanged.
    pub body: Bytes,
    /// Time allowed until the response head.
    pub timeout: Duration,
    /// Time allowed to the final attempt of several (Cloudflare lets it run to completion: the
    /// request timeout cuts the attempts before it); bounded by the configured first-byte timeout.
    pub final_timeout: Duration,
    /// When traces are exported: each attempt sends a `traceparent` naming its own span.
    pub trace: Option<crate::logs::record::TraceInfo>,
}

/// The upstream response or the last failure, plus every attempt made.
pub struct Sent {
    /// Response head and streaming body, or why none came.
    pub result: Result<super::client::Response, Error>,
    /// All attempts, in order.
    pub attempts: Vec<Attempt>,
}

fn map_send_error(provider: &str, timeout: Duration, e: super::client::SendError) -> Error {
    use super::client::SendError;
    match e {
        SendError::Timeout => Error::UpstreamTimeout {
            provider: provider.to_string(),
            after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        },
        SendError::Url => {
            Error::UpstreamFailed { provider: provider.to_string(), reason: "invalid upstream URL".into() }
        }
        SendError::Other(reason) => Error::UpstreamFailed { provider: provider.to_string(), reason },
    }
}

async fn send_once(
    client: &super::client::Client,
    out: &Outbound<'_>,
    headers: HeaderMap,
    (timeout, attempt): (Duration, u8),
) -> Result<super::client::Response, Error> {
    let traceparent = out.trace.and_then(|t| {
        let span = t.attempt_span(u8::try_from(out.step).unwrap_or(u8::MAX), attempt);
        let value = HeaderValue::from_str(&format!("00-{:032x}-{span:016x}-01", t.trace_id)).ok()?;
        Some((HeaderName::from_static("traceparent"), value))
    });
    super::client::send(client, (out.method.clone(), out.url), headers, traceparent, &out.body, timeout)
        .await
        .map_err(|e| map_send_error(out.provider, timeout, e))
}

/// Sends with retries: failures before a response head, 429 and 5xx are retried per the
/// policy. No byte has reached the client while this runs, so a retry is always safe.
pub async fn send_with_retries(client: &super::client::Client, mut out: Outbound<'_>, policy: RetryPolicy) -> Sent {
    let mut attempts = Vec::with_capacity(usize::from(policy.max_attempts));
    let mut attempt = 1u8;
    loop {
        let started = Instant::now();
        let last = attempt >= policy.max_attempts;
        let timeout = if last && attempt > 1 { out.final_timeout } else { out.timeout };
        let headers = if last { std::mem::take(&mut out.headers) } else { out.headers.clone() };
        let result = send_once(client, &out, headers, (timeout, attempt)).await;
        let record = Attempt {
            step: out.step,
            attempt,
            status: result.as_ref().ok().map(|r| r.status.as_u16()),
            started,
            duration: started.elapsed(),
            error: result.as_ref().err().map(ToString::to_string),
        };
        let duration_us = u64::try_from(record.duration.as_micros()).unwrap_or(u64::MAX);
        if record.error.is_some() || record.status.is_some_and(|s| s >= 400) {
            tracing::info!(
                provider = out.provider,
                step = out.step,
                attempt,
                status = record.status,
                duration_us,
                error = record.error.as_deref(),
                "upstream attempt failed"
            );
        } else {
            tracing::debug!(
                provider = out.provider,
                step = out.step,
                attempt,
                status = record.status,
                duration_us,
                "upstream attempt"
            );
        }
        attempts.push(record);
        let retry = match &result {
            Ok(resp) => is_retryable_status(resp.status.as_u16()),
            Err(_) => true,
        };
        if !retry || last {
            return Sent { result, attempts };
        }
        drop(result);
        tokio::time::sleep(policy.delay_before(attempt)).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_lose_hop_by_hop_listed_and_cookie_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("content-length", "5"),
            ("content-type", "application/json"),
            ("x-many", "1"),
            ("x-many", "2"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = inbound_response_headers(h);
        let mut names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "content-type", "x-many"]);
        assert_eq!(out.get_all("x-many").count(), 2);
    }

    #[test]
    fn an_answer_with_one_dropped_header_loses_it_and_a_clean_one_keeps_all() {
        let dropped = [
            "connection",
            "keep-alive",
            "proxy-authenticate",
            "proxy-authorization",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "host",
            "set-cookie",
        ];
        for name in dropped {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            let out = inbound_response_headers(h);
            assert!(!out.contains_key(name), "{name} is dropped");
            assert_eq!(out.len(), 2, "{name}: the others stay");
        }
        let mut h = HeaderMap::new();
        for (k, v) in [("content-type", "application/json"), ("content-length", "2"), ("x-request-id", "r")] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = inbound_response_headers(h);
        assert_eq!(out.len(), 3);
        assert_eq!(out.get("x-request-id").map(HeaderValue::as_bytes), Some(&b"r"[..]));
    }

    #[test]
    fn strips_hop_by_hop_and_control_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer sk"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("host", "gateway"),
            ("content-length", "5"),
            ("cf-aig-authorization", "Bearer t"),
            ("cf-aig-cache-ttl", "60"),
            ("cf-skip-cache", "true"),
            ("transfer-encoding", "chunked"),
            ("anthropic-version", "2023-06-01"),
            ("cookie", "torii_session=abc; torii_login=def"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = outbound_headers(&h);
        let names: Vec<_> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(out.contains_key("authorization") && out.contains_key("anthropic-version"));
    }

    #[test]
    fn torii_cookies_never_go_upstream() {
        let mut h = HeaderMap::new();
        h.append(HeaderName::from_static("cookie"), HeaderValue::from_static("a=1; torii_session=s3cret; b=2"));
        let out = outbound_headers(&h);
        assert_eq!(out.get("cookie").unwrap(), "a=1; b=2");
    }
}
