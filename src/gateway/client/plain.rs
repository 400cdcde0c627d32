//! Plain-HTTP upstreams (`http://`: self-hosted models, sidecars, a local provider) over
//! HTTP/1.1, on actix-http's own client codec with a keep-alive pool per worker.
//!
//! awc builds a new codec configuration for every HTTP/1.1 request it sends, and with it a date
//! service: a spawned task and an interval timer the client never reads (the runtime's `eventfd`
//! written 0.32 times a request at c=32), plus a new pair of framing buffers. Here a worker's
//! connections share one configuration, and a pooled connection keeps its buffers. HTTPS
//! upstreams stay on awc (HTTP/2 by ALPN has no such cost).
//!
//! As awc with this module's connector: connect timeout, `TCP_NODELAY`, the egress proxy's
//! `CONNECT` tunnel, keep-alive for 60 s idle and 300 s in all, a pooled connection reused only
//! while it has nothing unread and has not been closed, `upstream.pool_limit` connections in use
//! per worker (a request waits for one), and no redirects. Unlike awc, at most 128 connections
//! per host stay idle (the longest idle are closed first), since each keeps its buffers.

use foldhash::HashMap;
use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_codec::Framed;
use actix_http::body::BodySize;
use actix_http::h1::{ClientCodec, ClientPayloadCodec, Message, MessageType};
use actix_http::header::{HOST, HeaderMap, HeaderValue};
use actix_http::uri::{Authority, PathAndQuery};
use actix_http::{Method, RequestHead, RequestHeadType, ServiceConfig, Uri};
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Response, SendError};
use crate::egress::ProxyRules;

/// How long a pooled connection may sit unused.
const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// How long a connection is reused at most, from its opening.
const LIFETIME: Duration = Duration::from_secs(300);
/// Idle connections kept per host and worker (as nginx's `keepalive`): each holds two 8 KiB
/// framing buffers, so a burst of a thousand streams does not leave a thousand of them behind.
const IDLE_PER_HOST: usize = 128;
/// Request bodies up to this size are copied after the head into the connection's write buffer
/// (one write); larger ones are written from their own bytes.
const BUFFERED_BODY: usize = 64 * 1024;

type Conn = Framed<TcpStream, ClientCodec>;

struct Idle {
    conn: Conn,
    opened: Instant,
    used: Instant,
}

/// One worker's plain-HTTP client: its pool of idle connections by `host:port`.
pub(super) struct Plain {
    inner: Rc<Pool>,
}

struct Pool {
    /// The codec settings every connection shares; made on first use, inside the worker's runtime
    /// (its date service spawns a task there).
    config: RefCell<Option<ServiceConfig>>,
    /// The request head each request fills and the codec encodes (it holds it only while
    /// encoding): a new head would allocate a header table for every request, only to drop it
    /// for the request's own.
    head: RefCell<Rc<RequestHead>>,
    /// By the URL's authority (`host:port` as written).
    sites: RefCell<HashMap<Rc<str>, Site>>,
    /// Connections in use, when `upstream.pool_limit` bounds them.
    limit: Option<Arc<Semaphore>>,
    connect_timeout: Duration,
    proxies: Arc<ProxyRules>,
}

/// One upstream authority: its `Host` header value and its idle connections, newest last.
struct Site {
    name: Rc<str>,
    host: HeaderValue,
    /// The host to connect to (an IPv6 literal in its brackets) and its port.
    hostname: Rc<str>,
    port: u16,
    idle: Vec<Idle>,
}

/// A connection's claim while it carries a request: where it goes back, when it opened, and its
/// place under the pool limit.
struct Lease {
    pool: Rc<Pool>,
    site: Rc<str>,
    opened: Instant,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Plain {
    pub(super) fn new(pool_limit: usize, connect_timeout: Duration, proxies: Arc<ProxyRules>) -> Self {
        let limit = (pool_limit > 0).then(|| Arc::new(Semaphore::new(pool_limit)));
        Self {
            inner: Rc::new(Pool {
                config: RefCell::new(None),
                head: RefCell::new(Rc::new(RequestHead::default())),
                sites: RefCell::new(HashMap::default()),
                limit,
                connect_timeout,
                proxies,
            }),
        }
    }

    /// Sends one request to an `http://` URL; the caller's `timeout` runs until the response head.
    pub(super) async fn send(
        &self,
        method: Method,
        url: &str,
        mut headers: HeaderMap,
        body: &Bytes,
    ) -> Result<Response, SendError> {
        // Only the path goes on the request line: the authority is looked up as written (it is
        // parsed once, when its site is made), not parsed again for every request.
        let rest = url.strip_prefix("http://").ok_or(SendError::Url)?;
        let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
        let (site, host_value, host, port) = self.inner.site(authority)?;
        let uri = origin_form(path)?;
        if !headers.contains_key(HOST) {
            headers.insert(HOST, host_value);
        }
        let permit = match &self.inner.limit {
            Some(limit) => Some(Arc::clone(limit).acquire_owned().await.map_err(|e| SendError::Other(e.to_string()))?),
            None => None,
        };
        let (mut conn, opened) = match self.inner.take(&site) {
            Some(idle) => (idle.conn, idle.opened),
            None => (self.inner.connect(&host, port).await?, Instant::now()),
        };
        let lease = Lease { pool: Rc::clone(&self.inner), site, opened, _permit: permit };

        let head = self.inner.head(method, uri, headers);
        let length = BodySize::Sized(body.len() as u64);
        let written: Result<(), std::io::Error> = async {
            if body.len() <= BUFFERED_BODY {
                // Head and body in one write.
                conn.feed(Message::Item((RequestHeadType::Rc(head, None), length))).await?;
                if !body.is_empty() {
                    conn.feed(Message::Chunk(Some(body.clone()))).await?;
                }
                conn.send(Message::Chunk(None)).await
            } else {
                // A large body goes from its own buffer to the socket: the connection's write
                // buffer, kept while it is pooled, never grows to hold it. The codec's length
                // count for it is left unused (the next request's head resets it).
                conn.send(Message::Item((RequestHeadType::Rc(head, None), length))).await?;
                conn.io_mut().write_all(body).await?;
                conn.io_mut().flush().await
            }
        }
        .await;
        self.inner.forget_head();
        written.map_err(|e| SendError::Other(format!("cannot send the request: {e}")))?;

        let mut answer = match conn.next().await {
            Some(Ok(head)) => head,
            Some(Err(e)) => return Err(SendError::Other(format!("bad response head: {e}"))),
            None => return Err(SendError::Other("the connection closed before the response head".into())),
        };
        let status = answer.status;
        let headers = std::mem::take(&mut answer.headers);
        let body: super::Body = match conn.codec_ref().message_type() {
            MessageType::None => {
                if conn.codec_ref().keep_alive() {
                    lease.release(conn);
                }
                Box::pin(futures_util::stream::empty())
            }
            kind => Box::pin(PlainBody {
                conn: Some(conn.into_map_codec(ClientCodec::into_payload_codec)),
                lease: Some(lease),
                reusable: kind == MessageType::Payload,
            }),
        };
        Ok(Response { status, headers, body })
    }
}

/// The request line's target for the part of a URL after its authority (`/` for none), checked
/// as the URL parser checks it.
fn origin_form(path: &str) -> Result<Uri, SendError> {
    let target = if path.starts_with('/') {
        PathAndQuery::from_maybe_shared(Bytes::copy_from_slice(path.as_bytes()))
    } else {
        PathAndQuery::from_maybe_shared(Bytes::from(format!("/{path}")))
    };
    target.map(Uri::from).map_err(|_| SendError::Url)
}

impl Pool {
    /// The shared head with this request's parts; a new one when another request still holds it
    /// (its write waiting on a full socket).
    fn head(&self, method: Method, uri: Uri, headers: HeaderMap) -> Rc<RequestHead> {
        let mut shared = self.head.borrow_mut();
        if let Some(head) = Rc::get_mut(&mut shared) {
            head.method = method;
            head.uri = uri;
            head.headers = headers;
            return Rc::clone(&shared);
        }
        let mut head = RequestHead::default();
        head.method = method;
        head.uri = uri;
        head.headers = headers;
        Rc::new(head)
    }

    /// Drops the last request's headers from the shared head once they are written: its
    /// credentials are not kept past their request.
    fn forget_head(&self) {
        if let Some(head) = Rc::get_mut(&mut self.head.borrow_mut()) {
            head.headers.clear();
        }
    }

    /// `authority`'s entry (made on first use, when the authority is parsed): its name, its
    /// `Host` value as awc wrote it (no port for 80), and the host and port to connect to.
    fn site(&self, authority: &str) -> Result<(Rc<str>, HeaderValue, Rc<str>, u16), SendError> {
        let mut sites = self.sites.borrow_mut();
        if let Some(site) = sites.get(authority) {
            return Ok((Rc::clone(&site.name), site.host.clone(), Rc::clone(&site.hostname), site.port));
        }
        let parsed: Authority = authority.parse().map_err(|_| SendError::Url)?;
        let hostname: Rc<str> = Rc::from(parsed.host());
        // What follows the host is nothing or an empty port (port 80, RFC 3986 §3.2.3) or a port
        // that fits in 16 bits: the parser lets `:99999` through, with no port to read.
        let after = authority.rfind(parsed.host()).map_or("", |at| &authority[at + hostname.len()..]);
        let port = match after {
            "" | ":" => 80,
            p => p
                .strip_prefix(':')
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or(SendError::Url)?,
        };
        if hostname.is_empty() {
            return Err(SendError::Url);
        }
        let value = if port == 80 { hostname.to_string() } else { format!("{hostname}:{port}") };
        let host = HeaderValue::from_str(&value).map_err(|_| SendError::Url)?;
        let name: Rc<str> = Rc::from(authority);
        let site =
            Site { name: Rc::clone(&name), host: host.clone(), hostname: Rc::clone(&hostname), port, idle: Vec::new() };
        sites.insert(Rc::clone(&name), site);
        Ok((name, host, hostname, port))
    }

    /// The most recently used idle connection to `site` that is still good.
    fn take(&self, site: &str) -> Option<Idle> {
        let mut sites = self.sites.borrow_mut();
        let list = &mut sites.get_mut(site)?.idle;
        let now = Instant::now();
        while let Some(c) = list.pop() {
            if now.duration_since(c.used) > KEEP_ALIVE || now.duration_since(c.opened) > LIFETIME {
                continue;
            }
            if !c.conn.is_read_buf_empty() {
                continue;
            }
            // Nothing to read means the upstream has neither closed it nor sent something unasked
            // (either makes it unusable). The readiness is the runtime's, so this is usually no
            // system call at all.
            if matches!(c.conn.io_ref().try_read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
                return Some(c);
            }
        }
        None
    }

    async fn connect(&self, host: &str, port: u16) -> Result<Conn, SendError> {
        let timeout = self.connect_timeout;
        let stream = if let Some(proxy) = self.proxies.for_target(false, host) {
            crate::egress::tunnel(proxy, host, port, timeout).await.map_err(|e| {
                tracing::warn!(error = %e, "egress proxy");
                SendError::Other(format!("cannot connect through the egress proxy: {e}"))
            })?
        } else {
            // An IPv6 literal arrives in brackets from the URL.
            let name = host.trim_start_matches('[').trim_end_matches(']');
            match tokio::time::timeout(timeout, TcpStream::connect((name, port))).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Err(SendError::Other(format!("cannot connect to {host}:{port}: {e}"))),
                Err(_) => return Err(SendError::Other(format!("cannot connect to {host}:{port}: timed out"))),
            }
        };
        // A request head and body written apart must not wait for the upstream's delayed ACK.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an upstream socket");
        }
        let config = self.config.borrow_mut().get_or_insert_with(ServiceConfig::default).clone();
        Ok(Framed::new(stream, ClientCodec::new(config)))
    }
}

impl Lease {
    /// Puts a connection whose exchange ended cleanly back in the pool.
    fn release(self, conn: Conn) {
        let now = Instant::now();
        let mut sites = self.pool.sites.borrow_mut();
        let Some(site) = sites.get_mut(&*self.site) else { return };
        let list = &mut site.idle;
        // The oldest sit at the front; drop those past their time while here.
        let stale = list.iter().take_while(|c| now.duration_since(c.used) > KEEP_ALIVE).count();
        let over = (list.len() - stale + 1).saturating_sub(IDLE_PER_HOST);
        list.drain(..stale + over);
        list.push(Idle { conn, opened: self.opened, used: now });
    }
}

/// A response body read from its connection; at its clean end the connection goes back to the
/// pool (dropped early, it is closed).
struct PlainBody {
    conn: Option<Framed<TcpStream, ClientPayloadCodec>>,
    lease: Option<Lease>,
    /// Framed by length or chunks (not read to the connection's close).
    reusable: bool,
}

impl futures_util::Stream for PlainBody {
    type Item = Result<Bytes, String>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
        match Pin::new(conn).next_item(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(Some(chunk)))) => Poll::Ready(Some(Ok(chunk))),
            Poll::Ready(Some(Ok(None))) => {
                if let (Some(conn), Some(lease)) = (this.conn.take(), this.lease.take())
                    && this.reusable
                    && conn.codec_ref().keep_alive()
                {
                    lease.release(conn.into_map_codec(ClientPayloadCodec::into_message_codec));
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.conn = None;
                this.lease = None;
                Poll::Ready(Some(Err(e.to_string())))
            }
            Poll::Ready(None) => {
                this.conn = None;
                this.lease = None;
                Poll::Ready(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;

    /// What the test upstream saw: a connection accepted, or a request (head and body) read on one.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Accepted,
        Request(String),
    }

    /// A raw HTTP/1.1 upstream. Each request gets `answer(n)` (n counts requests over all
    /// connections), written as a head and then the body in two writes; an answer with
    /// `connection: close` ends its connection. A head naming `hold` waits for a `release` signal
    /// before its body's last piece.
    async fn upstream(
        answer: fn(usize) -> (&'static str, &'static str),
    ) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>, mpsc::UnboundedSender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen, seen_rx) = mpsc::unbounded_channel();
        let (release, release_rx) = mpsc::unbounded_channel::<()>();
        let release_rx = Rc::new(tokio::sync::Mutex::new(release_rx));
        let count = Rc::new(std::cell::Cell::new(0));
        actix_rt::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let _ = seen.send(Seen::Accepted);
                let (seen, release_rx, count) = (seen.clone(), Rc::clone(&release_rx), Rc::clone(&count));
                actix_rt::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(end) = read_head(&mut sock, &mut buf).await else { return };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        while buf.len() < end + len {
                            let mut more = [0u8; 4096];
                            match sock.read(&mut more).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&more[..n]),
                            }
                        }
                        let request = String::from_utf8_lossy(&buf[..end + len]).to_string();
                        buf.drain(..end + len);
                        let n = count.get();
                        count.set(n + 1);
                        let hold = head.contains("hold");
                        let _ = seen.send(Seen::Request(request));
                        let (response_head, body) = answer(n);
                        let (first, last) = body.split_at(body.len() / 2);
                        if sock.write_all(response_head.as_bytes()).await.is_err()
                            || sock.write_all(first.as_bytes()).await.is_err()
                        {
                            return;
                        }
                        if hold {
                            release_rx.lock().await.recv().await;
                        }
                        if sock.write_all(last.as_bytes()).await.is_err() || response_head.contains("connection: close")
                        {
                            return;
                        }
                    }
                });
            }
        });
        (addr, seen_rx, release)
    }

    /// Reads until a blank line; the head's length, or `None` at the connection's end.
    async fn read_head(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
        loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Some(i + 4);
            }
            let mut more = [0u8; 4096];
            match sock.read(&mut more).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&more[..n]),
            }
        }
    }

    fn ok(_: usize) -> (&'static str, &'static str) {
        ("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", "0123456789")
    }

    fn chunked(_: usize) -> (&'static str, &'static str) {
        ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n")
    }

    /// A length-framed answer followed by bytes nobody asked for, in the body's second write.
    fn trailing(_: usize) -> (&'static str, &'static str) {
        ("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", "0123456789EXTRA")
    }

    fn closing(_: usize) -> (&'static str, &'static str) {
        ("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n", "ok")
    }

    fn client(limit: usize) -> Plain {
        Plain::new(limit, Duration::from_secs(5), Arc::new(ProxyRules::default()))
    }

    async fn post(client: &Plain, addr: SocketAddr, path: &str) -> Result<Response, SendError> {
        post_body(client, addr, path, Bytes::from_static(b"{\"q\":1}")).await
    }

    async fn post_body(client: &Plain, addr: SocketAddr, path: &str, body: Bytes) -> Result<Response, SendError> {
        client.send(Method::POST, &format!("http://{addr}{path}"), HeaderMap::new(), &body).await
    }

    async fn body_of(resp: Response) -> String {
        let mut resp = resp;
        String::from_utf8(resp.read(1 << 20).await.unwrap().to_vec()).unwrap()
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Vec<Seen> {
        let mut out = Vec::new();
        while let Ok(s) = rx.try_recv() {
            out.push(s);
        }
        out
    }

    /// The request line's target and the site's host and port are what the URL parser makes of
    /// the whole URL (but that the target always begins with `/`); what it refuses is refused.
    #[actix_web::test]
    async fn urls_are_split_as_the_url_parser_splits_them() {
        let pool = client(0);
        for url in [
            "http://127.0.0.1:8080/v1/chat/completions",
            "http://127.0.0.1:8080/v1/chat/completions?api-version=2024-06-01&x=%20y",
            "http://localhost/v1/models",
            "http://localhost:80/a",
            "http://[::1]:9000/v1",
            "http://[::1]/v1",
            "http://user:secret@example.internal:81/p",
            "http://example.internal",
            "http://example.internal?q=1",
            "http://example.internal/p#frag",
            "http://example.internal:/p",
        ] {
            let parsed: Uri = url.parse().unwrap();
            let rest = url.strip_prefix("http://").unwrap();
            let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
            let (name, host_value, host, port) = pool.inner.site(authority).unwrap();
            assert_eq!(&*name, parsed.authority().unwrap().as_str(), "{url}");
            assert_eq!(&*host, parsed.host().unwrap(), "{url}");
            assert_eq!(port, parsed.port_u16().unwrap_or(80), "{url}");
            let expect_host = if port == 80 { host.to_string() } else { format!("{host}:{port}") };
            assert_eq!(host_value.to_str().unwrap(), expect_host, "{url}");
            let target = origin_form(path).unwrap();
            // The parser leaves a query with no path as it is (`?q=1`), which is not a request
            // line's target (RFC 9112 §3.2.1: origin-form begins with `/`).
            let want = parsed.path_and_query().map_or("/".to_string(), |p| match p.as_str() {
                t if t.starts_with('/') => t.to_string(),
                t => format!("/{t}"),
            });
            assert_eq!(target.path_and_query().unwrap().as_str(), want, "{url}");
            // Cached: the same answer again.
            assert_eq!(pool.inner.site(authority).unwrap().2, host, "{url}");
        }
        for url in [
            "http:///v1",
            "http://exa mple/v1",
            "http://host:99999/v1",
            "http://host:+80/v1",
            "http://host/v 1",
            "https://host/",
        ] {
            let sent = client(0).send(Method::GET, url, HeaderMap::new(), &Bytes::new()).await;
            assert!(matches!(sent, Err(SendError::Url)), "{url}");
        }
    }

    #[actix_web::test]
    async fn a_finished_exchange_leaves_its_connection_for_the_next() {
        for answer in [ok as fn(usize) -> _, chunked] {
            let (addr, mut seen, _) = upstream(answer).await;
            let client = client(0);
            let mut bodies = Vec::new();
            for path in ["/one", "/two", "/three"] {
                let resp = post(&client, addr, path).await.unwrap();
                assert_eq!(resp.status, 200);
                bodies.push(body_of(resp).await);
            }
            assert!(bodies.iter().all(|b| b == "0123456789" || b == "hello"), "{bodies:?}");
            let seen = drain(&mut seen);
            assert_eq!(seen.iter().filter(|s| **s == Seen::Accepted).count(), 1, "{seen:?}");
            let Some(Seen::Request(first)) = seen.get(1) else { panic!("{seen:?}") };
            // The head names the host, the body's length, and keeps the connection.
            assert!(first.starts_with("POST /one HTTP/1.1\r\n"), "{first}");
            assert!(first.contains(&format!("host: {addr}\r\n")), "{first}");
            assert!(first.contains("content-length: 7\r\n"), "{first}");
            assert!(!first.contains("connection:"), "{first}");
        }
    }

    #[actix_web::test]
    async fn a_large_body_goes_out_whole_and_its_connection_is_kept() {
        let (addr, mut seen, _) = upstream(ok).await;
        let client = client(0);
        let large: String =
            b"abcdefghijklmnopqrstuvwxyz".iter().cycle().take(200_000).map(|&b| char::from(b)).collect();
        for body in [large.clone(), "{}".to_string(), large.clone()] {
            let resp = post_body(&client, addr, "/", Bytes::from(body)).await.unwrap();
            assert_eq!(body_of(resp).await, "0123456789");
        }
        let seen = drain(&mut seen);
        assert_eq!(seen.iter().filter(|s| **s == Seen::Accepted).count(), 1, "one connection");
        let requests: Vec<&String> =
            seen.iter().filter_map(|s| if let Seen::Request(r) = s { Some(r) } else { None }).collect();
        assert_eq!(requests.len(), 3);
        for (request, body) in requests.iter().zip([&large, &"{}".to_string(), &large]) {
            let (head, sent) = request.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
            assert_eq!(sent, body.as_str());
        }
    }

    #[actix_web::test]
    async fn a_closed_or_unfinished_exchange_opens_a_new_connection() {
        let (addr, mut seen, _) = upstream(closing).await;
        let client = client(0);
        for _ in 0..2 {
            assert_eq!(body_of(post(&client, addr, "/").await.unwrap()).await, "ok");
        }
        assert_eq!(drain(&mut seen).iter().filter(|s| **s == Seen::Accepted).count(), 2);

        // Bytes after the answer make the connection unusable: the next request opens another.
        let (addr, mut seen, _) = upstream(trailing).await;
        for _ in 0..2 {
            assert_eq!(body_of(post(&client, addr, "/").await.unwrap()).await, "0123456789");
        }
        assert_eq!(drain(&mut seen).iter().filter(|s| **s == Seen::Accepted).count(), 2);

        // A body dropped before its end takes its connection with it.
        let (addr, mut seen, release) = upstream(ok).await;
        let resp = post(&client, addr, "/hold").await.unwrap();
        drop(resp);
        release.send(()).unwrap();
        assert_eq!(body_of(post(&client, addr, "/").await.unwrap()).await, "0123456789");
        assert_eq!(drain(&mut seen).iter().filter(|s| **s == Seen::Accepted).count(), 2);
    }

    #[actix_web::test]
    async fn the_pool_limit_holds_a_request_until_a_connection_is_free() {
        let (addr, mut seen, release) = upstream(ok).await;
        let client = client(1);
        let mut first = post(&client, addr, "/hold").await.unwrap();
        let mut second = Box::pin(post(&client, addr, "/second"));
        // The second waits for the one connection the limit allows: nothing reaches the upstream.
        assert!(futures_util::poll!(second.as_mut()).is_pending());
        let head = first.body.next().await.unwrap().unwrap();
        assert_eq!(&head[..], b"01234");
        assert!(futures_util::poll!(second.as_mut()).is_pending());
        assert_eq!(drain(&mut seen).iter().filter(|s| matches!(s, Seen::Request(_))).count(), 1);
        release.send(()).unwrap();
        assert_eq!(body_of(first).await, "56789");
        // The first's end frees the connection, and the second goes out on it.
        assert_eq!(body_of(second.await.unwrap()).await, "0123456789");
        let seen = drain(&mut seen);
        assert_eq!(seen.iter().filter(|s| **s == Seen::Accepted).count(), 0, "{seen:?}");
        assert!(matches!(&seen[..], [Seen::Request(h)] if h.starts_with("POST /second")), "{seen:?}");
    }

    #[actix_web::test]
    async fn a_burst_leaves_at_most_the_idle_cap_open() {
        let (addr, mut seen, _) = upstream(ok).await;
        let client = client(0);
        let burst = IDLE_PER_HOST + 5;
        let sent = futures_util::future::join_all((0..burst).map(|_| post(&client, addr, "/"))).await;
        for resp in sent {
            assert_eq!(body_of(resp.unwrap()).await, "0123456789");
        }
        let seen = drain(&mut seen);
        assert_eq!(seen.iter().filter(|s| **s == Seen::Accepted).count(), burst, "one connection each");
        assert_eq!(client.inner.sites.borrow()[addr.to_string().as_str()].idle.len(), IDLE_PER_HOST);
    }

    #[actix_web::test]
    async fn an_upstream_that_is_not_there_is_an_error_naming_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let Err(SendError::Other(reason)) = post(&client(0), addr, "/").await else { panic!("connected") };
        assert!(reason.contains(&format!("cannot connect to 127.0.0.1:{}", addr.port())), "{reason}");
    }
}
