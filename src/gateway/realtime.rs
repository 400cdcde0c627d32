//! WebSocket realtime passthrough (`wss://.../v1/{account}/{gateway}/{provider}/{path}?{query}`):
//! admission like any request (gateway, authentication, rate limit, stored key), then frames are
//! relayed both ways unchanged by the HTTP layer; one log per session.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

use super::access::{Outgoing, authenticate, inject_stored_key};
use super::forward::outbound_headers;
use super::options::RequestOptions;
use super::resolve::{DataPath, resolve_gateway, resolve_provider, split_path};
use super::tap::{LogContext, Rejected, StepInfo, record_rejection};
use super::{Gateway, Ids, Inbound};
use crate::error::Error;
use crate::logs::record::RequestType;

/// An admitted realtime session: where to connect and how to log it.
pub struct Realtime {
    /// The provider's WebSocket URL (`ws://` or `wss://`).
    pub url: String,
    /// Headers for the upstream handshake (the provider key, stored or the client's).
    pub headers: HeaderMap,
    /// The session's log.
    pub log: LogContext,
    /// The provider slug.
    pub provider: String,
}

/// The gateway token a browser sends as a subprotocol (`cf-aig-authorization.{token}`).
#[must_use]
pub fn token_from_subprotocol(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all("sec-websocket-protocol")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix("cf-aig-authorization."))
        .map(str::to_string)
}

impl Gateway {
    /// Admits a WebSocket session on the universal endpoint: the gateway exists and the client
    /// may use it. Returns the headers each `universal.create` request is sent with (the
    /// subprotocol token turned into `cf-aig-authorization`); rate limits apply per request.
    pub fn admit_universal_ws(&self, inbound: &Inbound) -> Result<HeaderMap, Error> {
        let Some(DataPath::Universal { account, gateway }) = split_path(&inbound.path) else {
            return Err(Error::no_route(&inbound.path));
        };
        let snapshot = self.settings.snapshot();
        let gw = resolve_gateway(&self.config(), &snapshot, account, gateway)?;
        let mut headers = inbound.headers.clone();
        if !headers.contains_key("cf-aig-authorization")
            && let Some(token) = token_from_subprotocol(&inbound.headers)
            && let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            headers.insert(HeaderName::from_static("cf-aig-authorization"), v);
        }
        authenticate(&self.settings, &snapshot, &gw, &headers)?;
        for h in [
            "upgrade",
            "connection",
            "sec-websocket-key",
            "sec-websocket-version",
            "sec-websocket-extensions",
            "sec-websocket-protocol",
        ] {
            headers.remove(h);
        }
        Ok(headers)
    }

    /// Admits a realtime WebSocket request; nothing is connected yet.
    pub async fn admit_realtime(&self, inbound: &Inbound, ids: &Ids) -> Result<Realtime, Error> {
        let Some(DataPath::Provider { account, gateway, provider, rest }) = split_path(&inbound.path) else {
            return Err(Error::no_route(&inbound.path));
        };
        let snapshot = self.settings.snapshot();
        let gw = resolve_gateway(&self.config(), &snapshot, account, gateway)?;
        let target = resolve_provider(&self.config(), &snapshot, account, provider, rest, &inbound.query)?;
        // A browser cannot set headers on a WebSocket: its gateway token comes as a subprotocol.
        let mut auth_headers = inbound.headers.clone();
        if !auth_headers.contains_key("cf-aig-authorization")
            && let Some(token) = token_from_subprotocol(&inbound.headers)
            && let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            auth_headers.insert(HeaderName::from_static("cf-aig-authorization"), v);
        }
        let token = authenticate(&self.settings, &snapshot, &gw, &auth_headers)?;
        if let Err(e) = self.rate_limit(&gw, token).await {
            let what = Rejected { provider: &target.provider, rest, request_type: RequestType::Provider };
            record_rejection(&self.logs, &gw, inbound, ids, &what, &e);
            return Err(e);
        }
        let options = RequestOptions::from_headers(&inbound.headers)?;
        let mut headers = outbound_headers(&inbound.headers);
        // The WebSocket handshake headers are the client library's to set on its own connection.
        for h in ["sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"] {
            headers.remove(h);
        }
        let out = Outgoing { method: "GET", body: &[] };
        inject_stored_key(&snapshot, &gw, &target, options.byok_alias.as_deref(), &out, &mut headers)?;
        let log = LogContext::new(&StepInfo {
            trace: None,
            gateway: &gw,
            options: &options,
            headers: &headers,
            client_headers: &inbound.headers,
            target: &target,
            rest,
            method: "GET",
            body: &bytes::Bytes::new(),
            request_type: RequestType::Provider,
            step: 0,
            ids,
            requested_model: None,
            body_model: None,
        });
        let url = if let Some(rest) = target.url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = target.url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            target.url.clone()
        };
        Ok(Realtime { url, headers, log, provider: target.provider })
    }
}
