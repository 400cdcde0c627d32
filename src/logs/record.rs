//! The log record: compact metadata (postcard) stored apart from the bodies (lz4-compressed,
//! see `logs::bodies`).

use std::sync::{Arc, LazyLock};

use actix_web::http::header::{HeaderName, HeaderValue};
use serde::ser::SerializeSeq;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::store::rollups::Rollup;

/// Which surface produced the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestType {
    /// Provider passthrough.
    Provider,
    /// Universal endpoint step.
    Universal,
    /// OpenAI-compatible unified API.
    Compat,
    /// A guardrail evaluation made by the gateway (linked to its request by the event id).
    Guardrail,
}

impl RequestType {
    /// Cloudflare's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provider => "provider",
            Self::Universal => "universal",
            Self::Compat => "compat",
            Self::Guardrail => "guardrail",
        }
    }
}

/// Searchable metadata of one upstream attempt (kept small: it is what list pages read).
#[expect(clippy::struct_excessive_bools, reason = "mirrors Cloudflare's log fields")]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogMeta {
    /// UUIDv7 as an integer (time-ordered).
    pub id: u128,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Provider slug.
    pub provider: Arc<str>,
    /// Model from the response, the request or the path.
    pub model: Option<Arc<str>>,
    /// `chat`, `completion`, `embedding`, `responses`, `messages`, ...
    pub model_type: Option<Arc<str>>,
    /// Method and upstream path (without query).
    pub method: Arc<str>,
    /// Path after the provider slug.
    pub path: Arc<str>,
    /// 2xx and the body ended normally.
    pub success: bool,
    /// Served from the cache.
    pub cached: bool,
    /// Upstream status (0 when none arrived).
    pub status_code: u16,
    /// Total duration in ms.
    pub duration: u32,
    /// Time to the response head in ms.
    pub ttfb: u32,
    /// Input tokens (cached included).
    pub tokens_in: u32,
    /// Output tokens.
    pub tokens_out: u32,
    /// Input tokens read from the provider's cache.
    pub cached_tokens_in: u32,
    /// Input tokens written to the provider's cache.
    pub cache_write_tokens: u32,
    /// USD.
    pub cost: Option<f64>,
    /// Priced with `cf-aig-custom-cost`.
    pub custom_cost: bool,
    /// `cf-aig-metadata` as JSON text.
    pub metadata: Option<Arc<str>>,
    /// Request `Content-Type`.
    pub request_content_type: Option<Arc<str>>,
    /// Response `Content-Type`.
    pub response_content_type: Option<Arc<str>>,
    /// Surface.
    pub request_type: RequestType,
    /// Universal step (0 elsewhere).
    pub step: u8,
    /// Attempt within the step (1-based).
    pub attempt: u8,
    /// `cf-aig-event-id`: shared by the attempts of one client request.
    pub event_id: Arc<str>,
    /// Client `User-Agent`.
    pub user_agent: Option<Arc<str>>,
    /// Request body bytes.
    pub request_size: u64,
    /// Response body bytes.
    pub response_size: u64,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Bodies were stored.
    pub payload: bool,
    /// A body exceeded the cap and was cut.
    pub truncated: bool,
    /// 1, -1 or none.
    pub feedback: Option<i8>,
    /// 0–100.
    pub score: Option<u8>,
    /// The model as the client named it (unified API: `{provider}/{model}`). Stored after the
    /// fields above, so logs written before it existed read as `None`.
    #[serde(skip)]
    pub requested_model: Option<Arc<str>>,
    /// What DLP and guardrails found (stored after `requested_model`, the same way).
    #[serde(skip)]
    pub policy: Option<PolicyLog>,
}

/// What the gateway's policies found in one request (never the matched text).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyLog {
    /// DLP findings and the action taken.
    pub dlp: crate::policy::dlp::Findings,
    /// Guardrail evaluations.
    pub guardrail: Option<GuardrailLog>,
}

/// What the guardrail evaluator said.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardrailLog {
    /// `FLAG` or `BLOCK` when a rule matched.
    pub action: Option<String>,
    /// Categories found (`S1`, `P1`, ...), with a rule or not.
    pub categories: Vec<String>,
    /// Phases checked (`prompt`, `response`).
    pub phases: Vec<String>,
    /// The evaluator could not be reached or read.
    pub unavailable: bool,
}

impl PolicyLog {
    /// Whether there is anything to record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.dlp.is_empty() && self.guardrail.is_none()
    }
}

impl LogMeta {
    /// Adds this attempt to a rollup.
    pub fn add_to(&self, r: &mut Rollup) {
        r.requests += 1;
        r.errors += u64::from(!self.success);
        r.cached += u64::from(self.cached);
        r.tokens_in += u64::from(self.tokens_in);
        r.tokens_out += u64::from(self.tokens_out);
        r.cost += self.cost.unwrap_or(0.0);
        r.duration_ms += u64::from(self.duration);
    }
}

/// Request and response heads and bodies of one log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogBodies {
    /// Request headers (credentials redacted), shared by a step's records.
    pub request_headers: Head,
    /// Request body (capped): the request's own bytes. Encoded as bytes, the same postcard
    /// encoding as a sequence of `u8`.
    pub request_body: Bytes,
    /// Response headers (credentials redacted).
    pub response_headers: Head,
    /// Response body as the client received it (capped).
    #[serde(with = "serde_bytes")]
    pub response_body: Vec<u8>,
}

/// A head as a log keeps it: (name, value) pairs in order, credential values redacted.
///
/// Made from a request or an answer, it is one shared string (one allocation for the whole
/// head instead of two per header, and nothing of the connection's buffers kept alive while
/// the record waits for the writer), shared by a step's records. Read back it is a list of
/// strings. Either way it is encoded as a sequence of (text, text) pairs, as the
/// `Vec<(String, String)>` it was; values that are not UTF-8 are kept lossily, as they always
/// were.
#[derive(Debug, Clone)]
pub enum Head {
    /// Made from a live head: `name:value\n` per pair. A header name is a token (never `:` or
    /// a line break) and a header value never holds a line break (`HeaderValue` refuses
    /// control characters but the tab), so the text splits back into the pairs it was made of.
    /// With the number of pairs (an encoding states it first).
    Packed(Arc<str>, u32),
    /// Read back, or made from text.
    Text(Vec<(String, String)>),
}

impl Default for Head {
    fn default() -> Self {
        Self::Text(Vec::new())
    }
}

/// The pairs of a packed head's text: up to the first `:` of a line, then to its end. Read
/// with `memchr` on the bytes (both bytes are ASCII, so every cut is on a character boundary);
/// the writer reads two heads a log, and `str::split` was 0.2 µs of them.
fn packed_pairs(text: &str) -> impl Iterator<Item = (&str, &str)> + '_ {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = memchr::memchr(b'\n', rest.as_bytes()).unwrap_or(rest.len());
        let line = rest.get(..end).unwrap_or(rest);
        rest = rest.get(end + 1..).unwrap_or("");
        Some(match memchr::memchr(b':', line.as_bytes()) {
            Some(colon) => (line.get(..colon).unwrap_or(line), line.get(colon + 1..).unwrap_or("")),
            None => (line, ""),
        })
    })
}

impl Head {
    /// The pairs as text.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        // One of the two is empty: no boxed iterator (the writer serializes two heads a log).
        let (packed, text) = match self {
            Self::Packed(p, _) => (Some(packed_pairs(p)), None),
            Self::Text(pairs) => (None, Some(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))),
        };
        packed.into_iter().flatten().chain(text.into_iter().flatten())
    }

    /// The pairs as owned text.
    #[must_use]
    pub fn to_vec(&self) -> Vec<(String, String)> {
        self.pairs().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The first value of `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<String> {
        self.pairs().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    fn len(&self) -> usize {
        match self {
            Self::Packed(_, n) => *n as usize,
            Self::Text(pairs) => pairs.len(),
        }
    }

    /// The head as `name:value` lines. A pair that could not split back (a name with `:` or a
    /// line break, a value with a line break: no HTTP header has them) has those characters
    /// replaced.
    #[must_use]
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Self::Packed(p, _) => std::borrow::Cow::Borrowed(p),
            Self::Text(pairs) => {
                let mut out = String::with_capacity(pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
                for (k, v) in pairs {
                    if k.contains([':', '\n', '\r']) {
                        out.extend(k.chars().map(|c| if matches!(c, ':' | '\n' | '\r') { '_' } else { c }));
                    } else {
                        out.push_str(k);
                    }
                    out.push(':');
                    if v.contains(['\n', '\r']) {
                        out.extend(v.chars().map(|c| if matches!(c, '\n' | '\r') { ' ' } else { c }));
                    } else {
                        out.push_str(v);
                    }
                    out.push('\n');
                }
                std::borrow::Cow::Owned(out)
            }
        }
    }

    /// A head from its `name:value` lines (as [`Head::text`] gives them).
    #[must_use]
    pub fn from_text(text: &str) -> Self {
        let pairs = u32::try_from(text.split_terminator('\n').count()).unwrap_or(u32::MAX);
        Self::Packed(Arc::from(text), pairs)
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.pairs().eq(other.pairs())
    }
}

impl From<Vec<(String, String)>> for Head {
    fn from(pairs: Vec<(String, String)>) -> Self {
        Self::Text(pairs)
    }
}

impl Serialize for Head {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        // Each variant's own loop: the writer serializes two heads a log, and `pairs()` (one
        // of two iterators, chained) cost about 0.35 µs a log in its profile.
        match self {
            Self::Packed(p, _) => {
                for pair in packed_pairs(p) {
                    seq.serialize_element(&pair)?;
                }
            }
            Self::Text(pairs) => {
                for (k, v) in pairs {
                    seq.serialize_element(&(k.as_str(), v.as_str()))?;
                }
            }
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::deserialize(deserializer).map(Self::Text)
    }
}

/// One log ready for the writer.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Gateway id.
    pub gateway: Arc<str>,
    /// Metadata.
    pub meta: LogMeta,
    /// Bodies, when payload collection is on.
    pub bodies: Option<LogBodies>,
    /// Store the log (false: count it in analytics only, as with logs off).
    pub store: bool,
    /// The request's trace, when its spans are exported (OpenTelemetry).
    pub trace: Option<TraceInfo>,
}

/// Where a record sits in its request's trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceInfo {
    /// W3C trace id.
    pub trace_id: u128,
    /// The request's own span.
    pub request_span: u64,
    /// The client's span, when it sent one (`traceparent`).
    pub parent_span: Option<u64>,
    /// When the request arrived (Unix ms).
    pub started_ms: i64,
    /// This record ends the request (its span closes the request span).
    pub last: bool,
}

impl TraceInfo {
    /// The span id of one upstream attempt (the `traceparent` sent upstream names it).
    #[must_use]
    pub fn attempt_span(&self, step: u8, attempt: u8) -> u64 {
        let mixed = (u64::from(step) << 8 | u64::from(attempt)).wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (self.request_span ^ mixed).max(1)
    }
}

/// A log's id: a UUIDv7 whose timestamp is its `created_at` (Unix ms), so a time range is an
/// id range (see `logs::filter::id_bounds`). Its 12-bit `rand_a` field is a process-wide
/// counter, so ids of the same millisecond sort in the order they were made (attempts and
/// steps of one request); the other 62 bits are random.
#[must_use]
pub fn log_id(created_at_ms: i64) -> u128 {
    static SEQUENCE: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let ms = u64::try_from(created_at_ms).unwrap_or(0);
    let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & 0x0fff;
    let mut bytes: [u8; 10] = rand::random();
    // The builder keeps the low nibble of byte 0 (the version takes the high one) and byte 1.
    bytes[0] = u8::try_from(seq >> 8).unwrap_or(0);
    bytes[1] = u8::try_from(seq & 0xff).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(ms, &bytes).into_uuid().as_u128()
}

/// The Unix millisecond a log id (a UUIDv7, as [`log_id`] and the request ids make) was made at.
#[must_use]
pub fn log_id_ms(id: u128) -> i64 {
    // 128 - 80 = 48 bits: always fits.
    i64::try_from(id >> 80).unwrap_or(i64::MAX)
}

/// Credential headers beyond the providers' own (which the registry rows name).
const OTHER_CREDENTIAL_HEADERS: &[&str] =
    &["authorization", "proxy-authorization", "cf-aig-authorization", "x-amz-content-sha256", "cookie", "set-cookie"];

/// Every header whose value is a credential: always redacted in stored logs.
static CREDENTIAL_HEADERS: LazyLock<foldhash::HashSet<&'static str>> =
    LazyLock::new(|| crate::providers::credential_headers().chain(OTHER_CREDENTIAL_HEADERS.iter().copied()).collect());

/// A head with credential values replaced by `REDACTED`.
pub fn redacted<'a>(headers: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>) -> Head {
    thread_local! {
        /// The text is made here, then copied once into its shared string.
        static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    let secret = |n: &str| CREDENTIAL_HEADERS.contains(n) || n.starts_with("x-amz-") && n.contains("signature");
    SCRATCH.with_borrow_mut(|text| {
        text.clear();
        let mut pairs = 0u32;
        for (name, value) in headers {
            pairs = pairs.saturating_add(1);
            text.push_str(name.as_str());
            text.push(':');
            if secret(name.as_str()) {
                text.push_str("REDACTED");
            } else {
                text.push_str(&crate::text::lossy(value.as_bytes()));
            }
            text.push('\n');
        }
        let head = Head::Packed(Arc::from(text.as_str()), pairs);
        // A rare huge head does not keep its buffer for the thread's life.
        if text.capacity() > 64 * 1024 {
            *text = String::new();
        }
        head
    })
}

/// The kind of call, from the path.
#[must_use]
pub fn model_type(path: &str) -> Option<&'static str> {
    let path = path.split('?').next().unwrap_or(path);
    let kind = if path.ends_with("chat/completions") || path.ends_with("/chat") || path.ends_with("converse") {
        "chat"
    } else if path.ends_with("/messages") {
        "messages"
    } else if path.ends_with("completions") {
        "completion"
    } else if path.ends_with("embeddings") || path.contains(":embed") {
        "embedding"
    } else if path.ends_with("responses") {
        "responses"
    } else if path.contains(":generateContent") || path.contains(":streamGenerateContent") {
        "generate"
    } else if path.contains("/invoke") {
        "invoke"
    } else if path.starts_with("@cf/") || path.starts_with("@hf/") || path.starts_with("run/") {
        "run"
    } else {
        return None;
    };
    Some(kind)
}

/// Encodes metadata (postcard).
pub fn encode_meta(meta: &LogMeta) -> Result<Vec<u8>, postcard::Error> {
    let mut bytes = Vec::new();
    encode_meta_append(meta, &mut bytes)?;
    Ok(bytes)
}

/// [`encode_meta`] appended to `out` (the writer gathers a batch's metadata in one buffer).
pub fn encode_meta_append(meta: &LogMeta, out: &mut Vec<u8>) -> Result<(), postcard::Error> {
    let mut bytes = postcard::to_extend(meta, std::mem::take(out))?;
    if meta.requested_model.is_some() || meta.policy.is_some() {
        bytes = postcard::to_extend(&meta.requested_model, bytes)?;
    }
    if meta.policy.is_some() {
        bytes = postcard::to_extend(&meta.policy, bytes)?;
    }
    *out = bytes;
    Ok(())
}

/// Decodes metadata.
#[must_use]
pub fn decode_meta(bytes: &[u8]) -> Option<LogMeta> {
    let (mut meta, rest): (LogMeta, &[u8]) = postcard::take_from_bytes(bytes).ok()?;
    if let Ok((model, rest)) = postcard::take_from_bytes::<Option<Arc<str>>>(rest) {
        meta.requested_model = model;
        meta.policy = postcard::from_bytes::<Option<PolicyLog>>(rest).ok().flatten();
    }
    Some(meta)
}

/// Appends a log's bodies to `out` as a compressed chunk keeps them (`logs::bodies`): each head
/// as its `name:value` lines, one string, and each body as bytes (postcard: a length, then the
/// bytes). Chunks compressed log by log, and PostgreSQL, keep the heads as sequences of pairs
/// instead ([`encode_bodies`]); a sequence cost the writer a `memchr` and two strings a header.
pub fn encode_bodies_append(bodies: &LogBodies, out: &mut Vec<u8>) -> Result<(), postcard::Error> {
    let entry = (
        &*bodies.request_headers.text(),
        serde_bytes::Bytes::new(&bodies.request_body),
        &*bodies.response_headers.text(),
        serde_bytes::Bytes::new(&bodies.response_body),
    );
    *out = postcard::to_extend(&entry, std::mem::take(out))?;
    Ok(())
}

/// Decodes bodies as [`encode_bodies_append`] wrote them.
#[must_use]
pub fn decode_plain_bodies(plain: &[u8]) -> Option<LogBodies> {
    let (request_head, request_body, response_head, response_body): (
        &str,
        &serde_bytes::Bytes,
        &str,
        &serde_bytes::Bytes,
    ) = postcard::from_bytes(plain).ok()?;
    Some(LogBodies {
        request_headers: Head::from_text(request_head),
        request_body: Bytes::copy_from_slice(request_body),
        response_headers: Head::from_text(response_head),
        response_body: response_body.to_vec(),
    })
}

/// Bodies encoded with their heads as sequences of pairs (the `LogBodies` they were), as
/// PostgreSQL and chunks compressed log by log keep them.
pub fn encode_bodies(bodies: &LogBodies) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(bodies)
}

/// Encoded bodies compressed on their own: lz4 with the plain size prepended, as PostgreSQL and
/// chunks written before compressed chunks keep them ([`decode_bodies`] reads them).
#[must_use]
pub fn pack_bodies(plain: &[u8]) -> Vec<u8> {
    lz4_flex::compress_prepend_size(plain)
}

/// Decompresses and decodes bodies.
#[must_use]
pub fn decode_bodies(bytes: &[u8]) -> Option<LogBodies> {
    let raw = lz4_flex::decompress_size_prepended(bytes).ok()?;
    postcard::from_bytes(&raw).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    /// The shared strings encode as the `String`s they replaced: files written before read
    /// unchanged.
    #[test]
    fn shared_strings_encode_as_strings() {
        let text = "anthropic/claude-sonnet-4-5";
        let (shared, owned) = (Arc::<str>::from(text), text.to_string());
        assert_eq!(postcard::to_stdvec(&shared).unwrap(), postcard::to_stdvec(&owned).unwrap());
        assert_eq!(postcard::to_stdvec(&Some(shared)).unwrap(), postcard::to_stdvec(&Some(owned)).unwrap());
    }

    /// Logs written before `requested_model` existed read as `None`; new ones keep it.
    #[test]
    fn requested_model_is_stored_after_the_older_fields() {
        let mut meta = sample(7);
        let old = postcard::to_stdvec(&meta).unwrap();
        assert_eq!(decode_meta(&old).unwrap().requested_model, None);
        meta.requested_model = Some("anthropic/claude-sonnet-4-5".into());
        let new = encode_meta(&meta).unwrap();
        assert_eq!(decode_meta(&new).unwrap().requested_model.as_deref(), Some("anthropic/claude-sonnet-4-5"));
        assert_eq!(decode_meta(&new).unwrap().provider, meta.provider);
    }

    use super::*;

    /// Appending encoders give the bytes the one-shot encoders gave (what older files hold),
    /// record after record, larger and smaller; metadata appended after the last record's reads
    /// back on its own.
    #[test]
    fn appended_encoding_matches_the_one_shot_encoding() {
        let mut plain = Vec::new();
        let mut meta_buf = Vec::new();
        for (i, size) in [3000usize, 10, 70_000, 0, 500].into_iter().enumerate() {
            let bodies = LogBodies {
                request_headers: vec![("content-type".into(), "application/json".into())].into(),
                request_body: (0..size).map(|b| u8::try_from(b % 251).unwrap_or(0)).collect::<Vec<u8>>().into(),
                response_headers: Head::default(),
                response_body: vec![b'x'; size / 2],
            };
            // Appended after other logs' entries, each reads back alone.
            let start = plain.len();
            encode_bodies_append(&bodies, &mut plain).unwrap();
            assert_eq!(decode_plain_bodies(&plain[start..]).as_ref(), Some(&bodies));
            // Compressed on its own, with its heads as pairs: the bytes older files hold.
            let one_shot = postcard::to_stdvec(&bodies).unwrap();
            assert_eq!(encode_bodies(&bodies).unwrap(), one_shot);
            let packed = pack_bodies(&one_shot);
            assert_eq!(packed, lz4_flex::compress_prepend_size(&one_shot));
            assert_eq!(decode_bodies(&packed).as_ref(), Some(&bodies));
            let mut meta = sample(i as u128);
            meta.requested_model = (i % 2 == 0).then(|| format!("openai/gpt-{i}").into());
            let start = meta_buf.len();
            encode_meta_append(&meta, &mut meta_buf).unwrap();
            let mut one_shot = postcard::to_stdvec(&meta).unwrap();
            if meta.requested_model.is_some() {
                one_shot.extend(postcard::to_stdvec(&meta.requested_model).unwrap());
            }
            assert_eq!(meta_buf[start..], one_shot[..]);
            assert_eq!(decode_meta(&meta_buf[start..]).unwrap().requested_model, meta.requested_model);
        }
    }

    #[test]
    fn log_ids_carry_their_time_and_keep_creation_order_within_a_millisecond() {
        let ids: Vec<u128> = (0..100).map(|_| log_id(1_780_000_000_123)).collect();
        // In order, except where the 12-bit counter wraps (after 4,096 ids).
        let seq = |id: u128| (id >> 64) & 0x0fff;
        assert!(ids.windows(2).all(|w| w[0] < w[1] || seq(w[1]) == 0), "made in order, sorted in order");
        for id in &ids {
            let u = uuid::Uuid::from_u128(*id);
            assert_eq!(u.get_version_num(), 7);
            assert_eq!(id >> 80, 1_780_000_000_123);
        }
        assert!(log_id(1_780_000_000_124) > ids[99]);
    }

    #[test]
    fn bodies_as_bytes_keep_the_sequence_encoding() {
        #[derive(Serialize)]
        struct Before {
            request_headers: Vec<(String, String)>,
            request_body: Vec<u8>,
            response_headers: Vec<(String, String)>,
            response_body: Vec<u8>,
        }
        let now = LogBodies {
            request_headers: vec![("a".into(), "b".into())].into(),
            request_body: (0..=255).collect::<Vec<u8>>().into(),
            response_headers: Head::default(),
            response_body: b"data: {}\n\n".to_vec(),
        };
        let before = Before {
            request_headers: now.request_headers.to_vec(),
            request_body: now.request_body.to_vec(),
            response_headers: vec![],
            response_body: now.response_body.clone(),
        };
        assert_eq!(postcard::to_stdvec(&now).unwrap(), postcard::to_stdvec(&before).unwrap());
        assert_eq!(decode_bodies(&pack_bodies(&postcard::to_stdvec(&before).unwrap())), Some(now));
    }

    pub(crate) fn sample(id: u128) -> LogMeta {
        LogMeta {
            id,
            created_at: 1_780_000_000_000,
            provider: "openai".into(),
            model: Some("gpt-4o-mini-2024-07-18".into()),
            model_type: Some("chat".into()),
            method: "POST".into(),
            path: "chat/completions".into(),
            success: true,
            cached: false,
            status_code: 200,
            duration: 812,
            ttfb: 240,
            tokens_in: 1219,
            tokens_out: 310,
            cached_tokens_in: 1024,
            cache_write_tokens: 0,
            cost: Some(0.000_123),
            custom_cost: false,
            metadata: Some(r#"{"user":"u-123","team":"search"}"#.into()),
            request_content_type: Some("application/json".into()),
            response_content_type: Some("text/event-stream".into()),
            request_type: RequestType::Provider,
            step: 0,
            attempt: 1,
            event_id: uuid::Uuid::now_v7().to_string().into(),
            user_agent: Some("OpenAI/Python 1.99.0".into()),
            request_size: 1800,
            response_size: 2400,
            error: None,
            payload: true,
            truncated: false,
            feedback: None,
            score: None,
            requested_model: None,
            policy: None,
        }
    }

    /// A compressed chunk keeps a head as its lines: a live (packed) head is written as it is,
    /// reads back equal, and encodes as pairs exactly as the pairs it came from; a head of pairs
    /// that could not split back has those characters replaced.
    #[test]
    fn heads_are_kept_as_their_lines() {
        let pairs: Vec<(String, String)> = vec![
            ("host".into(), "api.example:8443".into()),
            ("x-empty".into(), String::new()),
            ("x-url".into(), "https://a.example/b?c=d:e".into()),
            ("x-tab".into(), "a\tb".into()),
        ];
        let text: String = pairs.iter().flat_map(|(k, v)| [k.as_str(), ":", v.as_str(), "\n"]).collect();
        let live = Head::Packed(Arc::from(text.as_str()), 4);
        assert_eq!(live.text(), text.as_str());
        let back = Head::from_text(&live.text());
        assert_eq!(back, Head::Text(pairs.clone()));
        assert_eq!(postcard::to_stdvec(&back).unwrap(), postcard::to_stdvec(&Head::Text(pairs.clone())).unwrap());
        for text in ["", "\n", "a:b", "a:b\n\nc:d\n", "no colon\n"] {
            let head = Head::from_text(text);
            let listed: Vec<(String, String)> = head.to_vec();
            assert_eq!(postcard::to_stdvec(&head).unwrap(), postcard::to_stdvec(&listed).unwrap(), "{text:?}");
        }
        let odd = Head::Text(vec![("a:b".into(), "line\nbreak\r".into())]);
        assert_eq!(odd.text(), "a_b:line break \n");
        let bodies = LogBodies { request_headers: live, response_headers: odd, ..LogBodies::default() };
        let mut plain = Vec::new();
        encode_bodies_append(&bodies, &mut plain).unwrap();
        let read = decode_plain_bodies(&plain).unwrap();
        assert_eq!(read.request_headers, Head::Text(pairs));
        assert_eq!(read.response_headers.to_vec(), vec![("a_b".to_string(), "line break ".to_string())]);
        for cut in 0..plain.len() {
            assert!(decode_plain_bodies(&plain[..cut]).is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn metadata_is_small_and_round_trips() {
        let meta = sample(uuid::Uuid::now_v7().as_u128());
        let bytes = encode_meta(&meta).unwrap();
        assert!(bytes.len() < 300, "{} bytes", bytes.len());
        assert_eq!(decode_meta(&bytes).unwrap(), meta);
        let bodies = LogBodies { request_body: b"{\"a\":1}".repeat(100).into(), ..LogBodies::default() };
        let packed = pack_bodies(&encode_bodies(&bodies).unwrap());
        assert!(packed.len() < 200);
        assert_eq!(decode_bodies(&packed).unwrap(), bodies);
    }

    #[test]
    fn credentials_are_redacted() {
        let headers = [
            ("authorization", &b"Bearer sk-secret"[..]),
            ("x-api-key", b"sk-ant"),
            ("api-key", b"az"),
            ("x-goog-api-key", b"AIza"),
            ("cf-aig-authorization", b"Bearer torii_x"),
            ("x-amz-security-token", b"tok"),
            ("content-type", b"application/json"),
        ]
        .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_bytes(v).unwrap()));
        let out = redacted(headers.iter().map(|(k, v)| (k, v)));
        assert_eq!(out.pairs().count(), headers.len());
        for (k, v) in out.pairs() {
            if k == "content-type" {
                assert_eq!(v, "application/json");
            } else {
                assert_eq!(v, "REDACTED", "{k}");
            }
        }
    }

    /// A head packed from live headers encodes as the text pairs it reads back as (values that
    /// are not UTF-8 lossily, as the text copy made them), and as the `Vec` it was.
    #[test]
    fn a_packed_head_encodes_as_its_text() {
        let live = [
            (HeaderName::from_static("content-type"), HeaderValue::from_static("application/json")),
            (HeaderName::from_static("x-odd"), HeaderValue::from_bytes(b"caf\xe9").unwrap()),
            (HeaderName::from_static("authorization"), HeaderValue::from_static("Bearer sk-1")),
            (HeaderName::from_static("x-odd"), HeaderValue::from_static("again")),
            // The packed text splits at the first ':' of a line: values may hold more.
            (HeaderName::from_static("host"), HeaderValue::from_static("localhost:8080")),
            (HeaderName::from_static("x-url"), HeaderValue::from_static("https://a:b@c/d?e=f:g")),
            (HeaderName::from_static("x-empty"), HeaderValue::from_static("")),
            (HeaderName::from_static("x-tab"), HeaderValue::from_static("a\tb")),
        ];
        let head = redacted(live.iter().map(|(k, v)| (k, v)));
        let text: Vec<(String, String)> = vec![
            ("content-type".into(), "application/json".into()),
            ("x-odd".into(), "caf\u{fffd}".into()),
            ("authorization".into(), "REDACTED".into()),
            ("x-odd".into(), "again".into()),
            ("host".into(), "localhost:8080".into()),
            ("x-url".into(), "https://a:b@c/d?e=f:g".into()),
            ("x-empty".into(), String::new()),
            ("x-tab".into(), "a\tb".into()),
        ];
        assert_eq!(head.to_vec(), text);
        assert_eq!(postcard::to_stdvec(&head).unwrap(), postcard::to_stdvec(&text).unwrap());
        let back: Head = postcard::from_bytes(&postcard::to_stdvec(&head).unwrap()).unwrap();
        assert_eq!(back, head);
        assert_eq!(back.get("x-odd").as_deref(), Some("caf\u{fffd}"));
        // An empty head packs to nothing and reads back empty.
        let none = redacted(std::iter::empty());
        assert_eq!((none.pairs().count(), postcard::to_stdvec(&none).unwrap()), (0, vec![0]));
    }
}
