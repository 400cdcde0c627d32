//! The upstream HTTP client: TLS roots, timeouts, pooling, no redirects. Connector concerns
//! change here and nowhere else.

use std::sync::Arc;
use std::time::Duration;

use actix_service::Service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection, Connector as TcpConnector, Resolver};
use awc::http::Uri;
use futures_util::TryFutureExt;
use futures_util::future::LocalBoxFuture;

use crate::egress::ProxyRules;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;

use crate::config::UpstreamConfig;

/// TLS settings shared by every worker: web PKI roots plus the optional extra CA bundle.
pub fn tls_config(cfg: &UpstreamConfig) -> Result<Arc<rustls::ClientConfig>, String> {
    crate::tls::install_crypto_provider();
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = &cfg.extra_ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("upstream.extra_ca_file: cannot read {}: {e}", path.display()))?;
        let mut added = 0;
        for cert in certs {
            let cert = cert.map_err(|e| format!("upstream.extra_ca_file: bad PEM: {e}"))?;
            roots.add(cert).map_err(|e| format!("upstream.extra_ca_file: bad certificate: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("upstream.extra_ca_file: no certificates in {}", path.display()));
        }
    }
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

mod plain;

/// One client per worker (neither half is `Send`). `proxies`: the egress proxy rules (validated
/// with the configuration).
#[must_use]
pub fn build_client(cfg: &UpstreamConfig, tls: Arc<rustls::ClientConfig>, proxies: Arc<ProxyRules>) -> Client {
    let connect = Duration::from_millis(cfg.connect_timeout_ms);
    let plain = plain::Plain::new(cfg.pool_limit, connect, Arc::clone(&proxies));
    let tcp = Egress { inner: TcpConnector::new(Resolver::default()).service(), proxies, timeout: connect };
    let mut connector = awc::Connector::new()
        .connector(tcp)
        .rustls_0_23(tls)
        .timeout(connect)
        .handshake_timeout(connect)
        .conn_keep_alive(Duration::from_secs(60))
        .conn_lifetime(Duration::from_secs(300));
    if cfg.pool_limit > 0 {
        connector = connector.limit(cfg.pool_limit);
    } else {
        connector = connector.limit(0);
    }
    let awc = awc::Client::builder()
        .connector(connector)
        .disable_redirects()
        .no_default_headers()
        .timeout(Duration::from_millis(cfg.first_byte_timeout_ms))
        .finish();
    Client { awc, plain }
}

/// The upstream client (every other module names this, not the library's types): `http://`
/// requests go over this module's own HTTP/1.1 pool (`plain`), everything else (HTTPS with
/// HTTP/2 by ALPN, the realtime WebSocket passthrough, log export) over awc.
pub struct Client {
    awc: awc::Client,
    plain: plain::Plain,
}

impl Client {
    /// awc, for what only it does here (upstream sockets, the log export's requests).
    #[must_use]
    pub fn awc(&self) -> &awc::Client {
        &self.awc
    }
}

/// An upstream answer's body: its bytes as they arrive, or why it broke.
pub type Body = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, String>>>>;

/// An upstream answer as the pipeline sees it, whatever client produced it: the head (the `http`
/// crate's status and the header map the server side uses too) and the body as a byte stream.
pub struct Response {
    /// Status.
    pub status: awc::http::StatusCode,
    /// Headers as the upstream sent them.
    pub headers: awc::http::header::HeaderMap,
    /// Body.
    pub body: Body,
}

/// Why no answer came.
#[derive(Debug)]
pub enum SendError {
    /// No response head within the timeout.
    Timeout,
    /// The URL could not be used.
    Url,
    /// Anything else (connection refused, TLS, a broken head), described.
    Other(String),
}

/// Sends one request and hands back its head and body stream.
pub async fn send(
    client: &Client,
    (method, url): (awc::http::Method, &str),
    headers: awc::http::header::HeaderMap,
    extra: Option<(awc::http::header::HeaderName, awc::http::header::HeaderValue)>,
    body: &bytes::Bytes,
    timeout: Duration,
) -> Result<Response, SendError> {
    use futures_util::StreamExt as _;
    // The request's headers are moved in whole: neither client adds its own (awc's
    // `no_default_headers` in `build_client`) beyond `Host` and the body's length.
    let mut headers = headers;
    if let Some((name, value)) = extra {
        headers.insert(name, value);
    }
    // Asked when the request names no encoding (neither client decodes one): from a static value,
    // where awc's own would copy its text into a new value for every request.
    if !headers.contains_key(awc::http::header::ACCEPT_ENCODING) {
        headers.insert(awc::http::header::ACCEPT_ENCODING, awc::http::header::HeaderValue::from_static("identity"));
    }
    if url.starts_with("http://") {
        return match tokio::time::timeout(timeout, client.plain.send(method, url, headers, body)).await {
            Ok(sent) => sent,
            Err(_) => Err(SendError::Timeout),
        };
    }
    let mut req = client.awc.request(method, url).timeout(timeout);
    *req.headers_mut() = headers;
    let sent = if body.is_empty() { req.send().await } else { req.send_body(body.clone()).await };
    match sent {
        Ok(resp) => {
            let status = resp.status();
            // Taken, not copied (awc chose the body's decoding from them already).
            let mut headers = awc::http::header::HeaderMap::new();
            let resp = resp.map_body(|head, payload| {
                headers = std::mem::take(&mut head.headers);
                payload
            });
            let body: Body = Box::pin(resp.map(|r| r.map_err(|e| e.to_string())));
            Ok(Response { status, headers, body })
        }
        Err(awc::error::SendRequestError::Timeout) => Err(SendError::Timeout),
        Err(awc::error::SendRequestError::Url(_)) => Err(SendError::Url),
        Err(other) => Err(SendError::Other(other.to_string())),
    }
}

impl Response {
    /// Reads the whole body: `Err` past `limit` bytes or when the body breaks.
    pub async fn read(&mut self, limit: usize) -> Result<bytes::Bytes, String> {
        use futures_util::StreamExt as _;
        let mut out = bytes::BytesMut::new();
        while let Some(chunk) = self.body.next().await {
            let chunk = chunk?;
            if out.len() + chunk.len() > limit {
                return Err(format!("the body is larger than {limit} bytes"));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }
}

/// The TCP connector: `TCP_NODELAY` on each new socket (a request head and body written apart
/// must not wait for the upstream's delayed ACK, ~40 ms on Linux), and through the egress proxy
/// (`CONNECT`) when one applies to the target.
#[derive(Clone)]
struct Egress<S> {
    inner: S,
    proxies: Arc<ProxyRules>,
    timeout: Duration,
}

type Tcp = Connection<Uri, TcpStream>;

impl<S> Service<ConnectInfo<Uri>> for Egress<S>
where
    S: Service<ConnectInfo<Uri>, Response = Tcp, Error = ConnectError>,
    S::Future: 'static,
{
    type Response = Tcp;
    type Error = ConnectError;
    type Future = LocalBoxFuture<'static, Result<Tcp, ConnectError>>;

    actix_service::forward_ready!(inner);

    fn call(&self, req: ConnectInfo<Uri>) -> Self::Future {
        fn nodelay(conn: Tcp) -> Tcp {
            if let Err(e) = conn.io_ref().set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on an upstream socket");
            }
            conn
        }
        let https = req.request().scheme_str() == Some("https");
        if let Some(proxy) = self.proxies.for_target(https, req.hostname()).cloned() {
            let (host, port, uri) = (req.hostname().to_string(), req.port(), req.request().clone());
            let timeout = self.timeout;
            return Box::pin(async move {
                let stream = crate::egress::tunnel(&proxy, &host, port, timeout).await.map_err(|e| {
                    tracing::warn!(error = %e, "egress proxy");
                    ConnectError::Io(e)
                })?;
                Ok(Connection::new(uri, stream))
            });
        }
        Box::pin(self.inner.call(req).map_ok(nodelay as fn(Tcp) -> Tcp))
    }
}

/// An upstream WebSocket: frames in, messages out.
pub type WebSocket = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

/// What comes and goes on an upstream WebSocket.
pub use awc::ws::{Frame, Message};

/// Opens a WebSocket to `url` with `headers`, refusing frames over `max_frame` bytes.
pub async fn connect_websocket(
    client: &Client,
    url: &str,
    headers: &actix_web::http::header::HeaderMap,
    max_frame: usize,
) -> Result<WebSocket, String> {
    let mut request = client.awc.ws(url).max_frame_size(max_frame);
    for (name, value) in headers {
        request = request.set_header(name.clone(), value.clone());
    }
    request.connect().await.map(|(_, socket)| socket).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn upstream_sockets_have_nodelay() -> Result<(), Box<dyn std::error::Error>> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let uri: Uri = format!("http://{}/", listener.local_addr()?).parse()?;
        let connector = Egress {
            inner: TcpConnector::new(Resolver::default()).service(),
            proxies: Arc::new(ProxyRules::default()),
            timeout: Duration::from_secs(5),
        };
        let conn = connector.call(ConnectInfo::new(uri)).await?;
        assert!(conn.io_ref().nodelay()?);
        // The plain connector leaves Nagle on: the wrapper is what sets it.
        let plain = TcpConnector::new(Resolver::default()).service();
        let uri: Uri = format!("http://{}/", listener.local_addr()?).parse()?;
        assert!(!plain.call(ConnectInfo::new(uri)).await?.io_ref().nodelay()?);
        Ok(())
    }
}
