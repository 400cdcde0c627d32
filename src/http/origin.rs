//! Who a request came from and how it was addressed, believing `X-Forwarded-*` only from the
//! operator's `trusted_proxies` (anyone can send those headers).

use std::net::IpAddr;

use actix_web::HttpRequest;
use actix_web::http::header::HOST;
use ipnet::IpNet;

/// The client as far as Torii can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The client address: the peer, or (behind trusted proxies) the nearest untrusted address
    /// in `X-Forwarded-For`.
    pub ip: IpAddr,
    /// Whether the client used HTTPS (to Torii, or to a trusted proxy per `X-Forwarded-Proto`).
    pub https: bool,
    /// The host the client addressed (`Host`, or a trusted proxy's `X-Forwarded-Host`).
    pub host: String,
}

impl Origin {
    /// Resolves the origin of `req` given the trusted proxy ranges.
    #[must_use]
    pub fn of(req: &HttpRequest, trusted: &[IpNet]) -> Self {
        let peer = req.peer_addr().map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
        let own_host = || {
            req.headers()
                .get(HOST)
                .and_then(|v| v.to_str().ok())
                .map_or_else(|| req.app_config().host().to_string(), str::to_string)
        };
        let own_https = req.app_config().secure();
        if !is_trusted(&peer) {
            return Self { ip: peer, https: own_https, host: own_host() };
        }
        let header = |name: &str| {
            req.headers()
                .get_all(name)
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        // Right to left: each trusted hop vouches for the address before it.
        let mut ip = peer;
        for hop in header("x-forwarded-for").iter().rev() {
            let Ok(addr) = hop.parse::<IpAddr>() else { break };
            ip = addr;
            if !is_trusted(&addr) {
                break;
            }
        }
        let https = header("x-forwarded-proto").first().map_or(own_https, |p| p.eq_ignore_ascii_case("https"));
        let host = header("x-forwarded-host")
            .first()
            .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
            .cloned()
            .unwrap_or_else(own_host);
        Self { ip, https, host }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let req = TestRequest::default()
            .peer_addr("10.0.0.5:4000".parse().unwrap())
            .insert_header(("host", "gw.internal"))
            .insert_header(("x-forwarded-for", "203.0.113.9, 10.0.0.7"))
            .insert_header(("x-forwarded-proto", "https"))
            .insert_header(("x-forwarded-host", "ai.example.com"))
            .to_http_request();
        let untrusted = Origin::of(&req, &[]);
        assert_eq!(untrusted.ip, "10.0.0.5".parse::<IpAddr>().unwrap());
        assert!(!untrusted.https);
        assert_eq!(untrusted.host, "gw.internal");
        let trusted = Origin::of(&req, &nets(&["10.0.0.0/24"]));
        assert_eq!(trusted.ip, "203.0.113.9".parse::<IpAddr>().unwrap(), "the nearest untrusted hop");
        assert!(trusted.https);
        assert_eq!(trusted.host, "ai.example.com");
        // A client cannot push a fake address past an untrusted hop.
        let req = TestRequest::default()
            .peer_addr("10.0.0.5:4000".parse().unwrap())
            .insert_header(("x-forwarded-for", "1.2.3.4, 198.51.100.1"))
            .to_http_request();
        assert_eq!(Origin::of(&req, &nets(&["10.0.0.0/24"])).ip, "198.51.100.1".parse::<IpAddr>().unwrap());
    }
}
