//! The response body on its way back: forwarded as it arrives (pieces the upstream delivered
//! together pass as one, nothing waits for more), ended when the upstream goes silent for
//! longer than the idle timeout, and reporting how it ended when dropped.
//!
//! Once a byte has reached the client there is no retry and no fallback: a failure after that
//! ends the body. For an SSE response it ends with an `event: error` that both the OpenAI and
//! the Anthropic SDKs raise as an error, instead of a silently truncated stream.
//!
//! The upstream client reports a connection closed in the middle of a chunked body as a normal
//! end, so truncation is detected here: a body shorter than its `Content-Length`, or an SSE
//! stream of a format with a final event (`[DONE]`, `message_stop`, `response.completed`) that
//! ends without one.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use memchr::memmem;
use tokio::time::{Instant, Sleep};

use crate::logs::writer::ANSWERS_ENDING;
use crate::providers::WireFormat;

/// How a response stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The upstream body ended normally.
    Complete,
    /// The upstream connection failed or the body was cut short.
    UpstreamError(String),
    /// The upstream sent nothing for longer than the idle timeout.
    IdleTimeout,
    /// The client went away before the end (the upstream request is cancelled by the drop).
    ClientGone,
}

/// What the stream saw, handed to the finish callback.
#[derive(Debug, Clone)]
pub struct StreamSummary {
    /// How it ended.
    pub end: StreamEnd,
    /// Body bytes forwarded.
    pub bytes: u64,
    /// Chunks forwarded.
    pub chunks: u64,
    /// Token usage read from the body (parsed once for every tap), when a parser was attached.
    pub usage: Option<crate::providers::usage::Usage>,
}

/// What a complete body looks like, to tell a finished body from a cut one.
#[derive(Debug, Clone, Copy, Default)]
pub struct BodyShape {
    /// `text/event-stream`: failures become an SSE error event.
    pub sse: bool,
    /// What the stream's last event carries, by its wire format (empty: no final event; checked
    /// only when `sse`).
    pub final_markers: &'static [&'static [u8]],
    /// Declared `Content-Length`.
    pub content_length: Option<u64>,
}

/// Bytes kept across chunks to find a marker split between them (longer than every marker).
const MARKER_TAIL: usize = 24;

/// Pieces the upstream has already delivered are joined up to this many bytes (see
/// [`ProxyBody::gather`]); a piece this large passes on its own, uncopied.
const GATHER: usize = 16 * 1024;

/// At most this many pieces are joined in one poll (empty ones count: an upstream sending
/// empty frames does not hold the worker).
const GATHER_PIECES: usize = 64;

/// Observes the body on its way to the client (the log's usage parser and body capture).
pub trait Tap {
    /// Sees each chunk as it is forwarded.
    fn feed(&mut self, chunk: &[u8]);
    /// Sees how the stream ended; runs once.
    fn finish(self: Box<Self>, summary: &StreamSummary);
}

type Upstream = Pin<Box<dyn Stream<Item = Result<Bytes, String>>>>;
type OnFinish = Box<dyn FnOnce(StreamSummary)>;

/// The taps of one body: a log's and at most a cache entry's, held inline.
pub type Taps = smallvec::SmallVec<[Box<dyn Tap>; 2]>;

/// A pass-through body with an idle timeout, truncation detection and an end callback.
pub struct ProxyBody {
    inner: Upstream,
    idle: Duration,
    /// Fires at the idle deadline as last set; a chunk does not move it (that would take the
    /// timer out of the runtime's wheel and put it back, per chunk): when it fires, it is set
    /// again from `last_chunk` if a chunk came since.
    timer: Pin<Box<Sleep>>,
    /// When the last chunk arrived (or the body was made).
    last_chunk: Instant,
    shape: BodyShape,
    bytes: u64,
    chunks: u64,
    at_event_boundary: bool,
    final_seen: bool,
    tail: Vec<u8>,
    /// Searchers for `shape.final_markers`: the formats' own built once, others once per body.
    markers: std::borrow::Cow<'static, [memmem::Finder<'static>]>,
    taps: Taps,
    usage: Option<crate::providers::usage::UsageParser>,
    transform: Option<Box<dyn Transform>>,
    /// Where the upstream body is.
    phase: Phase,
    /// What the upstream said after the bytes last gathered, to be handled next.
    after: Option<After>,
    on_finish: Option<OnFinish>,
}

/// What gathering met and left for the next poll, after the gathered bytes: a piece that
/// would take them past [`GATHER`], the end, or a failure.
enum After {
    Piece(Bytes),
    End,
    Failed(String),
}

/// Where a proxied body's upstream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Still sending.
    Streaming,
    /// Ended (never polled again).
    Ended,
}

/// A body's taps and end callback with what they are told: run once, by [`Ending::run`].
struct Ending {
    /// How the body ended; its `usage` is filled in when the ending runs.
    summary: StreamSummary,
    /// The usage parser, finished (a whole JSON answer parsed) when the ending runs, so that
    /// the parse is not between the answer's last bytes and the client.
    usage: Option<crate::providers::usage::UsageParser>,
    taps: Taps,
    on_finish: OnFinish,
}

impl Ending {
    fn run(mut self) {
        self.summary.usage = self.usage.take().map(crate::providers::usage::UsageParser::finish);
        for tap in self.taps {
            tap.finish(&self.summary);
        }
        (self.on_finish)(self.summary);
    }
}

/// An ending put off until the server has written the answer's last bytes; it runs when
/// dropped, so one that never reached the worker's finisher (shutdown) runs all the same.
struct Deferred(Option<Ending>);

impl Drop for Deferred {
    fn drop(&mut self) {
        if let Some(ending) = self.0.take() {
            ending.run();
            ANSWERS_ENDING.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// This thread's endings waiting for its finisher, and the finisher's waker (none: no
/// finisher runs on this thread, and an ending runs where the body ends).
#[derive(Default)]
struct Finishing {
    queue: Vec<Deferred>,
    waker: Option<Waker>,
}

thread_local! {
    static FINISHING: RefCell<Finishing> = RefCell::new(Finishing::default());
}

/// Runs the worker thread's finisher, once per thread (later calls return at once): the task
/// that runs the endings of the bodies that ended on this thread. Their answers' last bytes
/// (a sized answer's, or a stream's closing chunk) then leave in the same write as the rest,
/// and the log record and the other taps' work come after it, off the answer's critical path.
/// Call it from inside the worker's runtime (the server's app factory).
pub fn start_finisher() {
    let started = FINISHING.with(|f| {
        let mut f = f.borrow_mut();
        let started = f.waker.is_some();
        f.waker.get_or_insert_with(|| Waker::noop().clone());
        started
    });
    if !started {
        actix_web::rt::spawn(finisher());
    }
}

async fn finisher() {
    /// A finisher dropped with its runtime runs what is still queued and lets later endings
    /// run where they end.
    struct Stop;
    impl Drop for Stop {
        fn drop(&mut self) {
            let queued = FINISHING.try_with(|f| {
                let mut f = f.borrow_mut();
                f.waker = None;
                std::mem::take(&mut f.queue)
            });
            drop(queued);
        }
    }
    let _stop = Stop;
    let mut batch = Vec::new();
    std::future::poll_fn(|cx| {
        loop {
            FINISHING.with(|f| {
                let mut f = f.borrow_mut();
                if !f.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    f.waker = Some(cx.waker().clone());
                }
                std::mem::swap(&mut f.queue, &mut batch);
            });
            if batch.is_empty() {
                return Poll::<()>::Pending;
            }
            // Run outside the borrow: an ending may end another body.
            batch.clear();
        }
    })
    .await;
}

/// Runs `ending` on this thread's finisher, or now when none runs here.
fn defer(ending: Ending) {
    let mut ending = Some(ending);
    let _ = FINISHING.try_with(|f| {
        let mut f = f.borrow_mut();
        if let Some(waker) = f.waker.as_ref() {
            waker.wake_by_ref();
            ANSWERS_ENDING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            f.queue.push(Deferred(ending.take()));
        }
    });
    if let Some(ending) = ending {
        ending.run();
    }
}

/// Changes the bytes on their way to the client, after the taps saw them (which keep seeing the
/// provider's own bytes): hiding a chunk, or translating to the client's wire format.
pub trait Transform {
    /// What the client gets now for `chunk` (possibly nothing yet).
    fn pass(&mut self, chunk: Bytes) -> Bytes;
    /// What the client gets when the upstream body has ended.
    fn rest(&mut self) -> Bytes;
}

/// Removes OpenAI's usage-only chunk (`"choices":[]` with `usage`) from an SSE stream whose
/// client did not ask for it (Torii asked, to count the stream's tokens). Complete events pass
/// at once; only the unfinished tail of an event waits for its end.
#[derive(Default)]
pub struct UsageChunkFilter {
    partial: Vec<u8>,
}

/// Searchers for `markers`: those of the wire formats are built once (building the five of an
/// OpenAI stream cost more than all its searches).
fn finders(markers: &'static [&'static [u8]]) -> std::borrow::Cow<'static, [memmem::Finder<'static>]> {
    type Built = Vec<(&'static [&'static [u8]], Vec<memmem::Finder<'static>>)>;
    static BUILT: LazyLock<Built> = LazyLock::new(|| {
        [WireFormat::OpenAi, WireFormat::Anthropic]
            .map(WireFormat::final_event_markers)
            .into_iter()
            .map(|set| (set, set.iter().map(|m| memmem::Finder::new(*m)).collect()))
            .collect()
    });
    match BUILT.iter().find(|(set, _)| *set == markers) {
        Some((_, built)) => std::borrow::Cow::Borrowed(built),
        None => markers.iter().map(|m| memmem::Finder::new(*m)).collect(),
    }
}

/// Searchers built once (building one costs more than a search in a short chunk).
static USAGE: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"\"usage\":{"));
static NO_CHOICES: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"\"choices\":[]"));
static EVENT_END: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"\n\n"));
static EVENT_END_BACK: LazyLock<memmem::FinderRev<'static>> = LazyLock::new(|| memmem::FinderRev::new(b"\n\n"));

impl UsageChunkFilter {
    fn is_usage_only(event: &[u8]) -> bool {
        NO_CHOICES.find(event).is_some() && USAGE.find(event).is_some()
    }

    /// The events of `complete` (whole events only) but the usage-only one: `complete` itself
    /// when it has none, nothing when it is all it has (neither copies).
    fn without_usage_only(complete: &[u8]) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        let mut start = 0;
        while let Some(i) = EVENT_END.find(&complete[start..]) {
            let event = &complete[start..start + i + 2];
            match out.as_mut() {
                None if Self::is_usage_only(event) => {
                    out = Some(complete[..start].to_vec());
                }
                Some(out) if !Self::is_usage_only(event) => out.extend_from_slice(event),
                _ => {}
            }
            start += i + 2;
        }
        out
    }
}

impl Transform for UsageChunkFilter {
    fn pass(&mut self, chunk: Bytes) -> Bytes {
        if self.partial.is_empty() && chunk.ends_with(b"\n\n") {
            if USAGE.find(&chunk).is_none() {
                return chunk;
            }
            return Self::without_usage_only(&chunk).map_or(chunk, Bytes::from);
        }
        self.partial.extend_from_slice(&chunk);
        let Some(end) = EVENT_END_BACK.rfind(&self.partial).map(|i| i + 2) else {
            return Bytes::new();
        };
        let rest = self.partial[end..].to_vec();
        self.partial.truncate(end);
        let out =
            Self::without_usage_only(&self.partial).map_or_else(|| Bytes::copy_from_slice(&self.partial), Bytes::from);
        self.partial = rest;
        out
    }

    /// An unfinished last event goes as it is.
    fn rest(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.partial))
    }
}

impl ProxyBody {
    /// Wraps an upstream body. `on_finish` runs exactly once, when the stream ends or is dropped.
    pub fn new<S, E>(inner: S, idle: Duration, shape: BodyShape, taps: Taps, on_finish: OnFinish) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + 'static,
        E: std::fmt::Display,
    {
        use futures_util::StreamExt as _;
        Self {
            inner: Box::pin(inner.map(|r| r.map_err(|e| e.to_string()))),
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            last_chunk: Instant::now(),
            shape,
            bytes: 0,
            chunks: 0,
            at_event_boundary: true,
            final_seen: false,
            tail: Vec::new(),
            markers: if shape.sse { finders(shape.final_markers) } else { std::borrow::Cow::Borrowed(&[]) },
            taps,
            usage: None,
            transform: None,
            phase: Phase::Streaming,
            after: None,
            on_finish: Some(on_finish),
        }
    }

    /// For a client that did not ask for a stream's usage: drops the usage-only chunk Torii
    /// asked the upstream for (the taps still see it).
    #[must_use]
    pub fn hiding_usage_chunk(mut self) -> Self {
        if self.shape.sse {
            self.transform = Some(Box::new(UsageChunkFilter::default()));
        }
        self
    }

    /// Changes what the client gets (see [`Transform`]); replaces any earlier transform.
    #[must_use]
    pub fn transformed(mut self, transform: Box<dyn Transform>) -> Self {
        self.transform = Some(transform);
        self
    }

    /// Whether the body is an event stream.
    #[must_use]
    pub fn is_sse(&self) -> bool {
        self.shape.sse
    }

    /// The answer to a `HEAD` request: its `Content-Length` describes a body that never comes.
    #[must_use]
    pub fn bodiless(mut self) -> Self {
        self.shape.content_length = None;
        self
    }

    /// Parses the body's token usage as it passes, for the taps' [`StreamSummary`].
    #[must_use]
    pub fn with_usage(mut self, parser: Option<crate::providers::usage::UsageParser>) -> Self {
        self.usage = parser;
        self
    }

    /// Joins to `first` the pieces the upstream has already delivered, never waiting for more,
    /// up to [`GATHER`] bytes and [`GATHER_PIECES`] pieces; a piece that does not fit, an end or
    /// a failure met on the way is kept for the next poll.
    ///
    /// A read from the upstream often holds several pieces (a chunked body's chunks, an
    /// HTTP/2 stream's frames, a burst of events): each piece passed on alone costs the taps,
    /// the usage parser, the transform and the server's framing once more. Joined they cost
    /// one copy, and the client gets the same bytes at the same moment: nothing waits.
    fn gather(&mut self, first: Bytes, cx: &mut Context<'_>) -> Bytes {
        if first.len() >= GATHER {
            return first;
        }
        let mut joined: Option<bytes::BytesMut> = None;
        for _ in 1..GATHER_PIECES {
            let have = joined.as_ref().map_or(first.len(), bytes::BytesMut::len);
            match self.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(next))) if have + next.len() > GATHER => {
                    self.after = Some(After::Piece(next));
                    break;
                }
                Poll::Ready(Some(Ok(next))) => {
                    // Room for a few more pieces like these, so that a burst grows it rarely.
                    let joined = joined.get_or_insert_with(|| {
                        let mut j = bytes::BytesMut::with_capacity(GATHER.min(4 * (first.len() + next.len())));
                        j.extend_from_slice(&first);
                        j
                    });
                    joined.extend_from_slice(&next);
                }
                Poll::Ready(Some(Err(e))) => {
                    self.after = Some(After::Failed(e));
                    break;
                }
                Poll::Ready(None) => {
                    self.after = Some(After::End);
                    break;
                }
                Poll::Pending => break,
            }
        }
        joined.map_or(first, bytes::BytesMut::freeze)
    }

    fn observe(&mut self, chunk: &Bytes) {
        self.bytes += chunk.len() as u64;
        self.chunks += 1;
        if let Some(p) = self.usage.as_mut() {
            p.feed(chunk);
        }
        for tap in &mut self.taps {
            tap.feed(chunk);
        }
        if chunk.is_empty() || !self.shape.sse {
            return;
        }
        self.at_event_boundary = chunk.ends_with(b"\n\n") || chunk.ends_with(b"\r\n\r\n");
        if !self.shape.final_markers.is_empty() && !self.final_seen {
            self.tail.extend_from_slice(chunk);
            self.final_seen = self.markers.iter().any(|m| m.find(&self.tail).is_some());
            let keep = self.tail.len().saturating_sub(MARKER_TAIL);
            self.tail.drain(..keep);
        }
    }

    /// Why a body that ended cleanly is nevertheless incomplete.
    fn truncation(&self) -> Option<String> {
        if let Some(len) = self.shape.content_length.filter(|len| self.bytes < *len) {
            return Some(format!("the upstream closed after {} of {len} bytes", self.bytes));
        }
        (self.shape.sse && !self.shape.final_markers.is_empty() && !self.final_seen)
            .then(|| "the upstream stream ended before its final event".to_string())
    }

    /// Ends the stream after a failure: an SSE error event, or an I/O error that aborts the body.
    fn fail(&mut self, end: StreamEnd, message: &str) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        self.finish(end);
        if !self.shape.sse {
            return Poll::Ready(Some(Err(std::io::Error::other(message.to_string()))));
        }
        let error = serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}});
        let lead = if self.at_event_boundary { "" } else { "\n\n" };
        Poll::Ready(Some(Ok(Bytes::from(format!("{lead}event: error\ndata: {error}\n\n")))))
    }

    /// The taps and the end callback with how the body ended, the first time it ends.
    fn ending(&mut self, end: StreamEnd) -> Option<Ending> {
        let on_finish = self.on_finish.take()?;
        let summary = StreamSummary { end, bytes: self.bytes, chunks: self.chunks, usage: None };
        Some(Ending { summary, usage: self.usage.take(), taps: std::mem::take(&mut self.taps), on_finish })
    }

    fn finish(&mut self, end: StreamEnd) {
        if let Some(ending) = self.ending(end) {
            ending.run();
        }
    }
}

impl Stream for ProxyBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.on_finish.is_none() {
            return Poll::Ready(None);
        }
        loop {
            let next = match self.after.take() {
                Some(After::Piece(piece)) => Poll::Ready(Some(Ok(piece))),
                Some(After::Failed(e)) => Poll::Ready(Some(Err(e))),
                None if self.phase == Phase::Streaming => self.inner.as_mut().poll_next(cx),
                Some(After::End) | None => Poll::Ready(None),
            };
            return match next {
                Poll::Ready(Some(Ok(chunk))) => {
                    let chunk = self.gather(chunk, cx);
                    self.observe(&chunk);
                    self.last_chunk = Instant::now();
                    let chunk = match self.transform.as_mut() {
                        Some(t) => t.pass(chunk),
                        None => chunk,
                    };
                    if chunk.is_empty() {
                        continue;
                    }
                    Poll::Ready(Some(Ok(chunk)))
                }
                Poll::Ready(Some(Err(e))) => {
                    let message = format!("the upstream response failed mid-stream: {e}");
                    self.fail(StreamEnd::UpstreamError(e), &message)
                }
                Poll::Ready(None) => {
                    self.phase = Phase::Ended;
                    if let Some(rest) = self.transform.as_mut().map(|t| t.rest()).filter(|r| !r.is_empty()) {
                        return Poll::Ready(Some(Ok(rest)));
                    }
                    if let Some(reason) = self.truncation() {
                        return self.fail(StreamEnd::UpstreamError(reason.clone()), &reason);
                    }
                    // The server writes the answer's last bytes before the taps finish.
                    if let Some(ending) = self.ending(StreamEnd::Complete) {
                        defer(ending);
                    }
                    Poll::Ready(None)
                }
                Poll::Pending => {
                    while self.timer.as_mut().poll(cx).is_ready() {
                        let due = self.last_chunk + self.idle;
                        if due <= Instant::now() {
                            let message =
                                format!("the upstream sent nothing for {} ms (idle timeout)", self.idle.as_millis());
                            return self.fail(StreamEnd::IdleTimeout, &message);
                        }
                        // A chunk came since the deadline was set: wait until idle from it.
                        self.timer.as_mut().reset(due);
                    }
                    Poll::Pending
                }
            };
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        self.finish(StreamEnd::ClientGone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::WireFormat;
    use futures_util::StreamExt;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// The usage-only chunk is dropped in every split of the stream; everything else passes.
    #[actix_web::test]
    async fn the_usage_chunk_is_hidden_in_every_split() {
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n\
                      data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n\
                      data: [DONE]\n\n";
        let expected = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\ndata: [DONE]\n\n";
        for size in [1, 2, 3, 7, 16, 64, stream.len()] {
            let pieces = apart(stream.as_bytes().chunks(size).map(Bytes::copy_from_slice).collect());
            let (seen, on_finish) = capture();
            let shape =
                BodyShape { sse: true, final_markers: WireFormat::OpenAi.final_event_markers(), content_length: None };
            let body =
                ProxyBody::new(pieces, Duration::from_secs(5), shape, Taps::new(), on_finish).hiding_usage_chunk();
            let out: Vec<Bytes> = body.map(Result::unwrap).collect().await;
            assert_eq!(String::from_utf8(out.concat()).unwrap(), expected, "pieces of {size}");
            assert_eq!(seen.borrow().as_ref().unwrap().end, StreamEnd::Complete);
            assert_eq!(seen.borrow().as_ref().unwrap().bytes, stream.len() as u64, "the taps saw everything");
        }
    }

    fn capture() -> (Rc<RefCell<Option<StreamSummary>>>, OnFinish) {
        let seen = Rc::new(RefCell::new(None));
        let s = seen.clone();
        (seen, Box::new(move |summary| *s.borrow_mut() = Some(summary)))
    }

    fn chunks(items: &[&'static str]) -> impl Stream<Item = Result<Bytes, String>> + use<> {
        let owned: Vec<Result<Bytes, String>> = items.iter().map(|s| Ok(Bytes::from(*s))).collect();
        futures_util::stream::iter(owned)
    }

    /// The pieces one poll apart, as pieces read one at a time arrive: each after a `Pending`
    /// (the end comes with the last).
    fn apart(pieces: Vec<Bytes>) -> impl Stream<Item = Result<Bytes, String>> + use<> {
        let mut pieces = std::collections::VecDeque::from(pieces);
        let mut due = false;
        futures_util::stream::poll_fn(move |cx| {
            if pieces.is_empty() {
                return Poll::Ready(None);
            }
            if !due {
                due = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            due = false;
            Poll::Ready(pieces.pop_front().map(Ok))
        })
    }

    /// [`apart`] for text pieces.
    fn one_by_one(items: &[&'static str]) -> impl Stream<Item = Result<Bytes, String>> + use<> {
        apart(items.iter().map(|s| Bytes::from(*s)).collect())
    }

    const SSE: BodyShape =
        BodyShape { sse: true, final_markers: WireFormat::OpenAi.final_event_markers(), content_length: None };

    #[tokio::test(start_paused = true)]
    async fn forwards_then_reports_complete() {
        let (seen, f) = capture();
        let body =
            ProxyBody::new(one_by_one(&["a", "bc"]), Duration::from_secs(1), BodyShape::default(), Taps::new(), f);
        let got: Vec<_> = body.map(Result::unwrap).collect().await;
        assert_eq!(got, [Bytes::from("a"), Bytes::from("bc")]);
        let s = seen.borrow().clone().unwrap();
        assert_eq!((s.end, s.bytes, s.chunks), (StreamEnd::Complete, 3, 2));
    }

    /// Pieces already delivered together pass as one (the taps see it once), up to `GATHER`
    /// bytes and `GATHER_PIECES` pieces; a piece that comes after a `Pending` is not waited for;
    /// a piece that does not fit, an end or a failure met while gathering comes after the
    /// gathered bytes.
    #[tokio::test(start_paused = true)]
    async fn pieces_delivered_together_pass_as_one_and_nothing_waits() {
        let (seen, f) = capture();
        let together = chunks(&["a", "b", "c"]).chain(one_by_one(&["d", "e"]));
        let body = ProxyBody::new(together, Duration::from_secs(1), BodyShape::default(), Taps::new(), f);
        let got: Vec<_> = body.map(Result::unwrap).collect().await;
        assert_eq!(got, [Bytes::from("abc"), Bytes::from("d"), Bytes::from("e")]);
        let s = seen.borrow().clone().unwrap();
        assert_eq!((s.end, s.bytes, s.chunks), (StreamEnd::Complete, 5, 3));

        let big = Bytes::from(vec![b'x'; GATHER]);
        let pieces: Vec<Result<Bytes, String>> =
            vec![Ok(Bytes::from("y")), Ok(big.clone()), Ok(Bytes::from("z")), Ok(big.clone())];
        let (_, f) = capture();
        let body = ProxyBody::new(
            futures_util::stream::iter(pieces),
            Duration::from_secs(1),
            BodyShape::default(),
            Taps::new(),
            f,
        );
        let got: Vec<_> = body.map(Result::unwrap).collect().await;
        let sizes: Vec<usize> = got.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [1, GATHER, 1, GATHER], "a piece past the cap waits for the next poll, uncopied");

        let many = futures_util::stream::iter((0..100).map(|_| Ok::<_, String>(Bytes::from("p"))));
        let (_, f) = capture();
        let got: Vec<_> = ProxyBody::new(many, Duration::from_secs(1), BodyShape::default(), Taps::new(), f)
            .map(Result::unwrap)
            .collect()
            .await;
        let sizes: Vec<usize> = got.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [GATHER_PIECES, 100 - GATHER_PIECES], "at most GATHER_PIECES pieces a poll");

        let (seen, f) = capture();
        let failing = futures_util::stream::iter(vec![
            Ok::<_, String>(Bytes::from("a")),
            Ok(Bytes::from("b")),
            Err("reset".to_string()),
        ]);
        let got: Vec<_> =
            ProxyBody::new(failing, Duration::from_secs(1), BodyShape::default(), Taps::new(), f).collect().await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap(), &Bytes::from("ab"));
        assert!(got[1].is_err());
        assert_eq!(seen.borrow().as_ref().unwrap().bytes, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_upstream_hits_idle_timeout() {
        let (seen, f) = capture();
        let stream = chunks(&["a"]).chain(futures_util::stream::pending());
        let mut body = ProxyBody::new(stream, Duration::from_secs(5), BodyShape::default(), Taps::new(), f);
        assert!(body.next().await.unwrap().is_ok());
        assert!(body.next().await.unwrap().is_err());
        assert!(body.next().await.is_none());
        assert_eq!(seen.borrow().as_ref().unwrap().end, StreamEnd::IdleTimeout);
    }

    /// Chunks 3 s apart for 12 s under a 5 s idle timeout: never idle for 5 s, so complete; then
    /// a silence of 5 s after the last chunk is cut, 5 s after that chunk.
    #[tokio::test(start_paused = true)]
    async fn the_idle_timeout_counts_from_the_last_chunk() {
        let spaced = |n: usize| {
            futures_util::stream::iter(0..n).then(|i| async move {
                if i > 0 {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                Ok::<_, String>(Bytes::from("x"))
            })
        };
        let (seen, f) = capture();
        let got: Vec<_> =
            ProxyBody::new(spaced(5), Duration::from_secs(5), BodyShape::default(), Taps::new(), f).collect().await;
        assert!(got.iter().all(Result::is_ok) && got.len() == 5);
        assert_eq!(seen.borrow().as_ref().unwrap().end, StreamEnd::Complete);

        let (seen, f) = capture();
        let start = Instant::now();
        let silent = spaced(3).chain(futures_util::stream::pending());
        let got: Vec<_> =
            ProxyBody::new(silent, Duration::from_secs(5), BodyShape::default(), Taps::new(), f).collect().await;
        assert_eq!(got.iter().filter(|r| r.is_ok()).count(), 3);
        assert_eq!(seen.borrow().as_ref().unwrap().end, StreamEnd::IdleTimeout);
        assert_eq!(start.elapsed(), Duration::from_secs(6 + 5));
    }

    #[tokio::test]
    async fn drop_before_end_reports_client_gone() {
        let (seen, f) = capture();
        let pending = futures_util::stream::pending::<Result<Bytes, String>>();
        drop(ProxyBody::new(pending, Duration::from_secs(5), BodyShape::default(), Taps::new(), f));
        assert_eq!(seen.borrow().as_ref().unwrap().end, StreamEnd::ClientGone);
    }

    #[tokio::test]
    async fn sse_failure_becomes_an_error_event_after_a_partial_event() {
        let (seen, f) = capture();
        let stream = futures_util::stream::iter(vec![Ok(Bytes::from("data: {\"a\"")), Err("reset".to_string())]);
        let got: Vec<_> = ProxyBody::new(stream, Duration::from_secs(5), SSE, Taps::new(), f).collect().await;
        assert_eq!(got.len(), 2);
        let event = String::from_utf8(got[1].as_ref().unwrap().to_vec()).unwrap();
        assert!(event.starts_with("\n\nevent: error\ndata: {"), "{event}");
        assert!(event.contains("\"type\":\"api_error\"") && event.contains("reset"), "{event}");
        assert!(matches!(seen.borrow().as_ref().unwrap().end, StreamEnd::UpstreamError(_)));
    }

    #[tokio::test]
    async fn sse_without_its_final_event_is_cut() {
        let (seen, f) = capture();
        let got: Vec<_> =
            ProxyBody::new(chunks(&["data: {}\n\n"]), Duration::from_secs(5), SSE, Taps::new(), f).collect().await;
        assert_eq!(got.len(), 2);
        assert!(String::from_utf8_lossy(got[1].as_ref().unwrap()).contains("before its final event"));
        assert!(matches!(seen.borrow().as_ref().unwrap().end, StreamEnd::UpstreamError(_)));
    }

    #[tokio::test]
    async fn final_markers_split_across_chunks_count() {
        // A set no wire format has gets its own searchers.
        const OWN: &[&[u8]] = &[b"the end"];
        for (markers, parts) in [
            (WireFormat::OpenAi.final_event_markers(), &["data: {}\n\ndata: [DO", "NE]\n\n"][..]),
            (
                WireFormat::Anthropic.final_event_markers(),
                &["event: message_st", "op\ndata: {\"type\":\"message_stop\"}\n\n"][..],
            ),
            (WireFormat::OpenAi.final_event_markers(), &["event: response.completed\n", "data: {}\n\n"][..]),
            (OWN, &["data: the e", "nd\n\n"][..]),
        ] {
            let (seen, f) = capture();
            let shape = BodyShape { final_markers: markers, ..SSE };
            let got: Vec<_> =
                ProxyBody::new(one_by_one(parts), Duration::from_secs(5), shape, Taps::new(), f).collect().await;
            assert_eq!(got.len(), parts.len(), "{parts:?}");
            assert_eq!(seen.borrow().as_ref().unwrap().end, StreamEnd::Complete, "{parts:?}");
        }
    }

    /// With a finisher on the thread, a body's ending runs on it after the body's last poll
    /// returned (so the server writes the answer's last bytes first), sized or chunked, and
    /// dropping the body then does not make it a client gone. An ending still queued when the
    /// runtime goes runs all the same.
    #[test]
    fn an_ending_runs_on_the_finisher_after_the_last_poll() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let local = tokio::task::LocalSet::new();
        let queued = local.block_on(&rt, async {
            start_finisher();
            for shape in [BodyShape { content_length: Some(3), ..BodyShape::default() }, BodyShape::default()] {
                let (seen, f) = capture();
                let body = ProxyBody::new(one_by_one(&["a", "bc"]), Duration::from_secs(5), shape, Taps::new(), f);
                let got: Vec<_> = body.map(Result::unwrap).collect().await;
                assert_eq!(got.len(), 2);
                assert!(seen.borrow().is_none(), "the ending waits for the finisher: {shape:?}");
                for _ in 0..100 {
                    if seen.borrow().is_some() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                let s = seen.borrow().clone().expect("the finisher ran the ending");
                assert_eq!((s.end, s.bytes, s.chunks), (StreamEnd::Complete, 3, 2), "{shape:?}");
            }
            let (seen, f) = capture();
            let body = ProxyBody::new(chunks(&["abc"]), Duration::from_secs(5), BodyShape::default(), Taps::new(), f);
            assert_eq!(body.count().await, 1);
            assert!(seen.borrow().is_none());
            seen
        });
        drop(local);
        assert_eq!(queued.borrow().as_ref().map(|s| s.end.clone()), Some(StreamEnd::Complete));
    }

    #[tokio::test]
    async fn short_sized_body_is_an_error() {
        let (seen, f) = capture();
        let shape = BodyShape { content_length: Some(10), ..BodyShape::default() };
        let got: Vec<_> =
            ProxyBody::new(chunks(&["12345"]), Duration::from_secs(5), shape, Taps::new(), f).collect().await;
        assert!(got[1].is_err());
        assert!(matches!(seen.borrow().as_ref().unwrap().end, StreamEnd::UpstreamError(_)));
    }
}
