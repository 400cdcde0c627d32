//! The response body on its way back: forwarded chunk by chunk, ended when the upstream goes
//! silent for longer than the idle timeout, and reporting how it ended when dropped.
//!
//! Once a byte has reached the client there is no retry and no fallback: a failure after that
//! ends the body. For an SSE response it ends with an `event: error` that both the OpenAI and
//! the Anthropic SDKs raise as an error, instead of a silently truncated stream.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

/// How a response stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The upstream body ended normally.
    Complete,
    /// The upstream connection failed mid-body.
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
}

type Upstream = Pin<Box<dyn Stream<Item = Result<Bytes, String>>>>;
type OnFinish = Box<dyn FnOnce(StreamSummary)>;

/// A pass-through body with an idle timeout and an end-of-stream callback.
pub struct ProxyBody {
    inner: Upstream,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    bytes: u64,
    chunks: u64,
    sse: bool,
    at_event_boundary: bool,
    on_finish: Option<OnFinish>,
}

impl ProxyBody {
    /// Wraps an upstream body. `sse` turns a mid-stream failure into an SSE error event.
    /// `on_finish` runs exactly once, when the stream ends or is dropped.
    pub fn new<S, E>(inner: S, idle: Duration, sse: bool, on_finish: OnFinish) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + 'static,
        E: std::fmt::Display,
    {
        use futures_util::StreamExt as _;
        Self {
            inner: Box::pin(inner.map(|r| r.map_err(|e| e.to_string()))),
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            bytes: 0,
            chunks: 0,
            sse,
            at_event_boundary: true,
            on_finish: Some(on_finish),
        }
    }

    /// Ends the stream after a failure: an SSE error event, or an I/O error that aborts the body.
    fn fail(
        &mut self,
        end: StreamEnd,
        message: &str,
    ) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        self.finish(end);
        if !self.sse {
            return Poll::Ready(Some(Err(std::io::Error::other(message.to_string()))));
        }
        let error = serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}});
        let lead = if self.at_event_boundary { "" } else { "\n\n" };
        Poll::Ready(Some(Ok(Bytes::from(format!(
            "{lead}event: error\ndata: {error}\n\n"
        )))))
    }

    fn finish(&mut self, end: StreamEnd) {
        if let Some(f) = self.on_finish.take() {
            f(StreamSummary {
                end,
                bytes: self.bytes,
                chunks: self.chunks,
            });
        }
    }
}

impl Stream for ProxyBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.on_finish.is_none() {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.bytes += chunk.len() as u64;
                self.chunks += 1;
                if !chunk.is_empty() {
                    self.at_event_boundary =
                        chunk.ends_with(b"\n\n") || chunk.ends_with(b"\r\n\r\n");
                }
                let deadline = Instant::now() + self.idle;
                self.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                let message = format!("the upstream response failed mid-stream: {e}");
                self.fail(StreamEnd::UpstreamError(e), &message)
            }
            Poll::Ready(None) => {
                self.finish(StreamEnd::Complete);
                Poll::Ready(None)
            }
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let message = format!(
                        "the upstream sent nothing for {} ms (idle timeout)",
                        self.idle.as_millis()
                    );
                    self.fail(StreamEnd::IdleTimeout, &message)
                }
                Poll::Pending => Poll::Pending,
            },
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
    use futures_util::StreamExt;
    use std::cell::RefCell;
    use std::rc::Rc;

    fn capture() -> (Rc<RefCell<Option<StreamSummary>>>, OnFinish) {
        let seen = Rc::new(RefCell::new(None));
        let s = seen.clone();
        (
            seen,
            Box::new(move |summary| *s.borrow_mut() = Some(summary)),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn forwards_then_reports_complete() {
        let (seen, f) = capture();
        let chunks = futures_util::stream::iter(vec![
            Ok::<_, String>(Bytes::from("a")),
            Ok(Bytes::from("bc")),
        ]);
        let body = ProxyBody::new(chunks, Duration::from_secs(1), false, f);
        let got: Vec<_> = body.map(Result::unwrap).collect().await;
        assert_eq!(got, [Bytes::from("a"), Bytes::from("bc")]);
        let s = seen.borrow().clone().unwrap();
        assert_eq!((s.end, s.bytes, s.chunks), (StreamEnd::Complete, 3, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_upstream_hits_idle_timeout() {
        let (seen, f) = capture();
        let chunks = futures_util::stream::iter(vec![Ok::<_, String>(Bytes::from("a"))])
            .chain(futures_util::stream::pending());
        let mut body = ProxyBody::new(chunks, Duration::from_secs(5), false, f);
        assert!(body.next().await.unwrap().is_ok());
        assert!(body.next().await.unwrap().is_err());
        assert!(body.next().await.is_none());
        assert_eq!(seen.borrow().as_ref().unwrap().end, StreamEnd::IdleTimeout);
    }

    #[tokio::test]
    async fn drop_before_end_reports_client_gone() {
        let (seen, f) = capture();
        let body = ProxyBody::new(
            futures_util::stream::pending::<Result<Bytes, String>>(),
            Duration::from_secs(5),
            false,
            f,
        );
        drop(body);
        assert_eq!(seen.borrow().as_ref().unwrap().end, StreamEnd::ClientGone);
    }

    #[tokio::test]
    async fn sse_failure_becomes_an_error_event_after_a_partial_event() {
        let (seen, f) = capture();
        let chunks = futures_util::stream::iter(vec![
            Ok(Bytes::from("data: {\"a\"")),
            Err("reset".to_string()),
        ]);
        let body = ProxyBody::new(chunks, Duration::from_secs(5), true, f);
        let got: Vec<_> = body.collect().await;
        assert_eq!(got.len(), 2);
        let event = String::from_utf8(got[1].as_ref().unwrap().to_vec()).unwrap();
        assert!(event.starts_with("\n\nevent: error\ndata: {"), "{event}");
        assert!(
            event.contains("\"type\":\"api_error\"") && event.contains("reset"),
            "{event}"
        );
        assert!(matches!(
            seen.borrow().as_ref().unwrap().end,
            StreamEnd::UpstreamError(_)
        ));
    }
}
