//! Control headers (`cf-aig-*`) read once into a typed [`RequestOptions`].
//! A malformed value is a 400 naming the header.

use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::store::Backoff;

/// Custom per-token prices from `cf-aig-custom-cost` (USD per token).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomCost {
    /// Price per input token.
    pub per_token_in: Option<f64>,
    /// Price per output token.
    pub per_token_out: Option<f64>,
    /// Price per cached input token read.
    pub per_cache_read_token: Option<f64>,
    /// Price per cache write token.
    pub per_cache_write_token: Option<f64>,
}

/// Every per-request control, parsed once.
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    /// `cf-aig-request-timeout`: time to the upstream's first byte.
    pub request_timeout: Option<Duration>,
    /// `cf-aig-max-attempts` (1–5).
    pub max_attempts: Option<u8>,
    /// `cf-aig-retry-delay` (≤ 5000 ms).
    pub retry_delay: Option<Duration>,
    /// `cf-aig-backoff`.
    pub backoff: Option<Backoff>,
    /// `cf-aig-event-id`.
    pub event_id: Option<String>,
    /// `cf-aig-cache-ttl` (or legacy `cf-cache-ttl`), seconds; 0: no caching for this request.
    pub cache_ttl: Option<u64>,
    /// `cf-aig-skip-cache` (or legacy `cf-skip-cache`).
    pub skip_cache: bool,
    /// `cf-aig-cache-key`.
    pub cache_key: Option<String>,
    /// `cf-aig-collect-log`.
    pub collect_log: Option<bool>,
    /// `cf-aig-collect-log-payload`.
    pub collect_log_payload: Option<bool>,
    /// `cf-aig-metadata`: flat object, at most 5 entries, `cf.` keys dropped.
    pub metadata: Option<Map<String, Value>>,
    /// `cf-aig-custom-cost`.
    pub custom_cost: Option<CustomCost>,
    /// `cf-aig-byok-alias`.
    pub byok_alias: Option<String>,
}

const MAX_ATTEMPTS: u64 = 5;
const MAX_RETRY_DELAY_MS: u64 = 5_000;
const MIN_CACHE_TTL: u64 = 60;
const MAX_CACHE_TTL: u64 = 30 * 24 * 3600;

fn bad(name: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidHeader { name, reason: reason.into() }
}

fn text<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<Option<&'h str>, Error> {
    // Looked up by a static name: a `&str` of a name that is not a standard header is parsed
    // into a new allocated name on every lookup, and a request with controls makes a dozen.
    headers
        .get(HeaderName::from_static(name))
        .map(|v| v.to_str().map(str::trim).map_err(|_| bad(name, "must be visible ASCII")))
        .transpose()
}

fn integer(
    headers: &HeaderMap,
    name: &'static str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, Error> {
    let Some(raw) = text(headers, name)? else {
        return Ok(None);
    };
    let n: u64 = raw.parse().map_err(|_| bad(name, format!("expected an integer, got '{}'", clip(raw))))?;
    if !range.contains(&n) {
        return Err(bad(name, format!("must be between {} and {}", range.start(), range.end())));
    }
    Ok(Some(n))
}

fn boolean(headers: &HeaderMap, name: &'static str) -> Result<Option<bool>, Error> {
    match text(headers, name)? {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(Some(false)),
        Some(v) => Err(bad(name, format!("expected true or false, got '{}'", clip(v)))),
    }
}

/// `cf-aig-cache-ttl` like Cloudflare: 0 turns caching off for the request, 1–59 mean the 60 s
/// minimum, more than a month is refused.
fn cache_ttl(headers: &HeaderMap, name: &'static str) -> Result<Option<u64>, Error> {
    Ok(integer(headers, name, 0..=MAX_CACHE_TTL)?.map(|ttl| if ttl == 0 { 0 } else { ttl.max(MIN_CACHE_TTL) }))
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

impl RequestOptions {
    /// The cache controls, as the cache takes them.
    pub fn cache_controls(&self) -> crate::cache::Controls<'_> {
        crate::cache::Controls { ttl: self.cache_ttl, skip: self.skip_cache, key: self.cache_key.as_deref() }
    }

    /// Parses every control header.
    pub fn from_headers(h: &HeaderMap) -> Result<Self, Error> {
        // Every control header starts with `cf-`: a request without one (most) has no controls,
        // known after one pass over its names instead of a lookup per control.
        if !h.keys().any(|k| k.as_str().starts_with("cf-")) {
            return Ok(Self::default());
        }
        let backoff = match text(h, "cf-aig-backoff")? {
            None => None,
            Some("constant") => Some(Backoff::Constant),
            Some("linear") => Some(Backoff::Linear),
            Some("exponential") => Some(Backoff::Exponential),
            Some(other) => {
                return Err(bad(
                    "cf-aig-backoff",
                    format!("expected constant, linear or exponential, got '{}'", clip(other)),
                ));
            }
        };
        let event_id = text(h, "cf-aig-event-id")?.map(str::to_string);
        if event_id.as_ref().is_some_and(|e| e.is_empty() || e.len() > 128) {
            return Err(bad("cf-aig-event-id", "must be 1-128 characters"));
        }
        let cache_ttl = match cache_ttl(h, "cf-aig-cache-ttl")? {
            Some(ttl) => Some(ttl),
            None => cache_ttl(h, "cf-cache-ttl")?,
        };
        let skip_cache = boolean(h, "cf-aig-skip-cache")?.or(boolean(h, "cf-skip-cache")?).unwrap_or(false);
        let cache_key = text(h, "cf-aig-cache-key")?.map(str::to_string);
        if cache_key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 1024) {
            return Err(bad("cf-aig-cache-key", "must be 1-1024 characters"));
        }
        let custom_cost = text(h, "cf-aig-custom-cost")?
            .map(|raw| {
                serde_json::from_str::<CustomCost>(raw)
                    .map_err(|e| bad("cf-aig-custom-cost", format!("expected a JSON object of per-token prices: {e}")))
            })
            .transpose()?;
        Ok(Self {
            request_timeout: integer(h, "cf-aig-request-timeout", 1..=u64::from(u32::MAX))?.map(Duration::from_millis),
            max_attempts: integer(h, "cf-aig-max-attempts", 1..=MAX_ATTEMPTS)?.and_then(|n| u8::try_from(n).ok()),
            retry_delay: integer(h, "cf-aig-retry-delay", 0..=MAX_RETRY_DELAY_MS)?.map(Duration::from_millis),
            backoff,
            event_id,
            cache_ttl,
            skip_cache,
            cache_key,
            collect_log: boolean(h, "cf-aig-collect-log")?,
            collect_log_payload: boolean(h, "cf-aig-collect-log-payload")?,
            metadata: text(h, "cf-aig-metadata")?.map(parse_metadata).transpose()?.flatten(),
            custom_cost,
            byok_alias: text(h, "cf-aig-byok-alias")?.map(str::to_string),
        })
    }
}

/// A JSON object's entries in the order they were written.
struct Entries(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// `cf-aig-metadata` like Cloudflare: a flat object; `cf.` keys are reserved and dropped; the
/// first five entries are kept; a nested object or array makes the whole header ignored (the
/// request still goes through). Only a value that is not a JSON object is refused.
fn parse_metadata(raw: &str) -> Result<Option<Map<String, Value>>, Error> {
    let Ok(Entries(entries)) = serde_json::from_str::<Entries>(raw) else {
        return Err(bad("cf-aig-metadata", "expected a JSON object"));
    };
    if entries.iter().any(|(_, v)| v.is_object() || v.is_array()) {
        return Ok(None);
    }
    let kept: Map<String, Value> =
        entries.into_iter().filter(|(k, v)| !k.starts_with("cf.") && !v.is_null()).take(5).collect();
    Ok(Some(kept))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_static(k), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_request_without_cf_headers_gets_what_the_full_parse_gives() {
        let fast = RequestOptions::from_headers(&headers(&[("content-type", "application/json")])).unwrap();
        // An unknown `cf-` header takes the full parse, which finds no control either.
        let full = RequestOptions::from_headers(&headers(&[("cf-unrelated", "1")])).unwrap();
        assert_eq!(format!("{fast:?}"), format!("{full:?}"));
    }

    #[test]
    fn parses_valid_values() {
        let o = RequestOptions::from_headers(&headers(&[
            ("cf-aig-request-timeout", "1500"),
            ("cf-aig-max-attempts", "3"),
            ("cf-aig-retry-delay", "200"),
            ("cf-aig-backoff", "exponential"),
            ("cf-aig-metadata", r#"{"user":"u1","n":3,"cf.x":1}"#),
            ("cf-skip-cache", "true"),
        ]))
        .unwrap();
        assert_eq!(o.request_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(o.max_attempts, Some(3));
        assert_eq!(o.backoff, Some(Backoff::Exponential));
        assert_eq!(o.metadata.unwrap().len(), 2);
        assert!(o.skip_cache);
    }

    /// Where Cloudflare tolerates a value, so does Torii.
    #[test]
    fn tolerated_like_cloudflare() {
        let o = |pairs: &[(&'static str, &str)]| RequestOptions::from_headers(&headers(pairs)).unwrap();
        let six = o(&[("cf-aig-metadata", r#"{"f":6,"a":1,"b":2,"c":3,"d":4,"e":5}"#)]).metadata.unwrap();
        assert_eq!(six.keys().cloned().collect::<Vec<_>>(), ["a", "b", "c", "d", "f"], "the first five as written");
        assert!(!six.contains_key("e"));
        assert!(o(&[("cf-aig-metadata", r#"{"a":{"b":1},"c":2}"#)]).metadata.is_none(), "nested: ignored");
        assert_eq!(o(&[("cf-aig-cache-ttl", "5")]).cache_ttl, Some(60));
        assert_eq!(o(&[("cf-aig-cache-ttl", "0")]).cache_ttl, Some(0));
        assert!(o(&[("cf-aig-skip-cache", "1")]).skip_cache);
        assert!(!o(&[("cf-aig-skip-cache", "0")]).skip_cache);
    }

    #[test]
    fn malformed_values_name_the_header() {
        for (name, value) in [
            ("cf-aig-request-timeout", "soon"),
            ("cf-aig-max-attempts", "6"),
            ("cf-aig-retry-delay", "5001"),
            ("cf-aig-backoff", "random"),
            ("cf-aig-cache-ttl", "-5"),
            ("cf-aig-cache-ttl", "2678401"),
            ("cf-aig-skip-cache", "yes"),
            ("cf-aig-metadata", "[1]"),
            ("cf-aig-custom-cost", r#"{"per_token":1}"#),
        ] {
            let err = RequestOptions::from_headers(&headers(&[(name, value)])).unwrap_err();
            assert!(matches!(err, Error::InvalidHeader { name: n, .. } if n == name), "{name}: {err}");
        }
    }
}
