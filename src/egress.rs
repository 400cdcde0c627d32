//! The egress proxy: upstream connections go through an HTTP proxy with `CONNECT host:port`
//! (TLS to the provider then runs inside the tunnel), unless `NO_PROXY` names the host. From
//! `upstream.proxy`, else `HTTPS_PROXY` / `HTTP_PROXY` (by the target's scheme); `NO_PROXY` takes
//! host names (a suffix match: `example.com` and `.example.com` both cover `api.example.com`),
//! IP addresses, CIDR ranges and `*`. Loopback is proxied too unless `NO_PROXY` names it.

use std::net::IpAddr;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed proxy URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `Proxy-Authorization` value for `user:password@` in the URL.
    pub authorization: Option<String>,
}

impl Proxy {
    /// Parses `http://[user:password@]host[:port]`; an error names what is wrong.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("'{url}' must start with http:// (a proxy reached over plain HTTP)"))?;
        let rest = rest.trim_end_matches('/');
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| format!("'{url}' has a bad port"))?)
            }
            _ => (hostport, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(format!("'{url}' has no host"));
        }
        let authorization = auth.map(|a| {
            let decoded = a.replace("%40", "@").replace("%3A", ":").replace("%3a", ":");
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(decoded))
        });
        Ok(Self { host: host.to_string(), port, authorization })
    }
}

/// One `NO_PROXY` entry.
#[derive(Debug, Clone, PartialEq)]
enum Bypass {
    All,
    Net(ipnet::IpNet),
    Suffix(String),
}

/// Which proxy a target uses.
#[derive(Debug, Clone, Default)]
pub struct ProxyRules {
    https: Option<Proxy>,
    http: Option<Proxy>,
    bypass: Vec<Bypass>,
}

impl ProxyRules {
    /// Rules from the configured proxy (both schemes), the per-scheme ones, and `NO_PROXY`.
    pub fn new(
        all: Option<&str>,
        https: Option<&str>,
        http: Option<&str>,
        no_proxy: Option<&str>,
    ) -> Result<Self, String> {
        let parse = |u: Option<&str>| u.filter(|u| !u.trim().is_empty()).map(|u| Proxy::parse(u.trim())).transpose();
        let all = parse(all)?;
        let bypass = no_proxy
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e == "*" {
                    Bypass::All
                } else if let Ok(net) = e.parse::<ipnet::IpNet>() {
                    Bypass::Net(net)
                } else if let Ok(ip) = e.parse::<IpAddr>() {
                    Bypass::Net(ipnet::IpNet::from(ip))
                } else {
                    let host = e.split(':').next().unwrap_or(e);
                    Bypass::Suffix(host.trim_start_matches('.').to_ascii_lowercase())
                }
            })
            .collect();
        Ok(Self { https: all.clone().or(parse(https)?), http: all.or(parse(http)?), bypass })
    }

    /// Whether any proxy is configured.
    #[must_use]
    pub fn any(&self) -> bool {
        self.https.is_some() || self.http.is_some()
    }

    /// The proxy for a target, or `None` to connect directly.
    #[must_use]
    pub fn for_target(&self, https: bool, host: &str) -> Option<&Proxy> {
        let proxy = if https { self.https.as_ref() } else { self.http.as_ref() }?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        let bypassed = self.bypass.iter().any(|b| match b {
            Bypass::All => true,
            Bypass::Net(net) => ip.is_some_and(|ip| net.contains(&ip)),
            Bypass::Suffix(s) => host == *s || host.ends_with(&format!(".{s}")),
        });
        (!bypassed).then_some(proxy)
    }
}

/// Opens a tunnel to `host:port` through `proxy`; an error says what the proxy answered.
pub async fn tunnel(proxy: &Proxy, host: &str, port: u16, timeout: std::time::Duration) -> std::io::Result<TcpStream> {
    let fail = |m: String| std::io::Error::other(m);
    let work = async {
        let mut sock = TcpStream::connect((proxy.host.as_str(), proxy.port))
            .await
            .map_err(|e| fail(format!("cannot reach the egress proxy {}:{}: {e}", proxy.host, proxy.port)))?;
        sock.set_nodelay(true)?;
        let target = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let auth = proxy.authorization.as_ref().map(|a| format!("Proxy-Authorization: {a}\r\n")).unwrap_or_default();
        let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n");
        sock.write_all(request.as_bytes()).await?;
        // Read the answer's head byte by byte: nothing after it may be consumed (it is the
        // tunnel's first bytes).
        let mut head = Vec::with_capacity(256);
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > 16 * 1024 {
                return Err(fail(format!(
                    "the egress proxy {}:{} sent an endless answer to CONNECT",
                    proxy.host, proxy.port
                )));
            }
            let mut byte = [0u8; 1];
            if sock.read(&mut byte).await? == 0 {
                return Err(fail(format!(
                    "the egress proxy {}:{} closed the connection during CONNECT",
                    proxy.host, proxy.port
                )));
            }
            head.push(byte[0]);
        }
        let status_line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_string();
        let code = status_line.split_whitespace().nth(1).unwrap_or("");
        if code != "200" {
            return Err(fail(format!(
                "the egress proxy {}:{} refused CONNECT {target}: {status_line}",
                proxy.host, proxy.port
            )));
        }
        Ok(sock)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| fail(format!("the egress proxy {}:{} did not answer in time", proxy.host, proxy.port)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_and_no_proxy_rules() {
        let p = Proxy::parse("http://user:p%40ss@proxy.corp:3128").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 3128));
        assert_eq!(p.authorization.as_deref(), Some("Basic dXNlcjpwQHNz"));
        assert_eq!(Proxy::parse("http://proxy.corp").unwrap().port, 80);
        assert!(Proxy::parse("proxy.corp:3128").unwrap_err().contains("http://"));
        assert!(Proxy::parse("https://proxy.corp:3128").is_err());
        assert!(Proxy::parse("http://:3128").is_err());

        let rules =
            ProxyRules::new(None, Some("http://p:1"), None, Some("internal.corp, .svc, 10.0.0.0/8, ::1")).unwrap();
        assert!(rules.for_target(true, "api.openai.com").is_some());
        assert!(rules.for_target(false, "api.openai.com").is_none(), "no HTTP proxy set");
        assert!(rules.for_target(true, "internal.corp").is_none());
        assert!(rules.for_target(true, "llm.internal.corp").is_none(), "a suffix");
        assert!(rules.for_target(true, "notinternal.corp").is_some(), "not a suffix at a dot");
        assert!(rules.for_target(true, "vllm.svc").is_none());
        assert!(rules.for_target(true, "10.1.2.3").is_none());
        assert!(rules.for_target(true, "[::1]").is_none());
        assert!(rules.for_target(true, "127.0.0.1").is_some(), "loopback is proxied unless named");
        let all = ProxyRules::new(Some("http://p:1"), None, None, Some("*")).unwrap();
        assert!(all.for_target(true, "api.openai.com").is_none());
    }
}
