//! The domain error and its one mapping to HTTP status and Cloudflare error code.
//!
//! Surfaces (data plane, management API) choose the body shape; the status and the code are
//! decided here, once, by an exhaustive match.

use std::fmt;

/// Why a credential was refused; the message tells the caller which case it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential was sent.
    Missing,
    /// A credential was sent but names no live token (unknown, revoked or expired).
    Invalid,
    /// The token is valid but not for this gateway.
    WrongGateway,
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "missing token",
            Self::Invalid => "invalid, revoked or expired token",
            Self::WrongGateway => "token is not valid for this gateway",
        })
    }
}

/// Every error Torii turns into a response.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The account id in the path is not this appliance's.
    #[error("unknown account '{0}'")]
    AccountNotFound(String),
    /// The gateway id names no gateway.
    #[error("Please configure AI Gateway: gateway '{0}' does not exist")]
    GatewayNotFound(String),
    /// The provider slug names no provider.
    #[error("Invalid provider: '{0}'")]
    ProviderNotFound(String),
    /// A part of the provider path is malformed or unsafe (would steer the upstream host).
    #[error("Invalid provider path: {part} {reason}")]
    InvalidPath { part: &'static str, reason: String },
    /// A `cf-aig-*` control header has a malformed value.
    #[error("Invalid header {name}: {reason}")]
    InvalidHeader { name: &'static str, reason: String },
    /// The request body is malformed.
    #[error("Invalid request: {0}")]
    BadRequest(String),
    /// Unified API: the model names no provider (`{provider}/{model}`).
    #[error("Chat completion bad format: {0}")]
    BadModel(String),
    /// The request body is larger than `max_body_bytes`.
    #[error("Request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// The request body did not arrive in time (a deadline that stretches with a minimum rate).
    #[error("Request body not received in time ({received} bytes arrived)")]
    BodyTimeout { received: usize },
    /// A shared resource is exhausted; the client may retry shortly.
    #[error("Gateway busy: too many {what}; retry shortly")]
    Busy { what: &'static str },
    /// Cluster mode: the rate limits' shared store cannot be reached and the operator chose to
    /// refuse rather than admit unchecked.
    #[error("Rate limits unavailable: the cluster's shared store cannot be reached; retry shortly")]
    LimitsUnavailable,
    /// The data-plane gateway token was refused.
    #[error("Unauthorized: {0}")]
    Unauthorized(AuthFailure),
    /// `cf-aig-byok-alias` names no stored key for this provider.
    #[error("Provider '{provider}' has no BYOK credential named '{alias}'")]
    ByokAliasNotFound { provider: String, alias: String },
    /// A gateway or token rate limit refused the request.
    #[error("Rate limited: retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// The upstream could not be reached or broke before answering.
    #[error("Failed to get response from provider {provider}: {reason}")]
    UpstreamFailed { provider: String, reason: String },
    /// Every step of a universal request failed without a response to return.
    #[error("All steps failed: {}", .0.join("; "))]
    AllStepsFailed(Vec<String>),
    /// The path exists but not for this method.
    #[error("Method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// The upstream sent no response head within the timeout.
    #[error("Provider {provider} did not respond within {after_ms} ms")]
    UpstreamTimeout { provider: String, after_ms: u64 },
    /// Management API: the bearer token was refused.
    #[error("Authentication error: {0}")]
    ApiUnauthenticated(AuthFailure),
    /// Management API: the token lacks the scope the call needs.
    #[error("Unauthorized to access requested resource: the '{needed}' scope is required")]
    ApiForbidden { needed: &'static str },
    /// Management API: the token is limited to other gateways than the call touches.
    #[error(
        "Unauthorized to access requested resource: the token is limited to some gateways and cannot act on {what}"
    )]
    ApiGatewayForbidden { what: String },
    /// Management API: a field is missing or out of range.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// Management API: the object already exists.
    #[error("{kind} '{id}' already exists")]
    Conflict { kind: &'static str, id: String },
    /// Management API: the object does not exist.
    #[error("{kind} '{id}' not found")]
    NotFound { kind: &'static str, id: String },
    /// No route matches the path.
    #[error("No route for {0}")]
    NoRoute(String),
    /// A DLP policy blocked the request (2029) or its answer (2030); `header` is the
    /// `cf-aig-dlp` value (profiles, entries and policies; never the matched text).
    #[error("{} content blocked due to DLP policy violations", if *.response { "Response" } else { "Request" })]
    DlpBlocked { response: bool, header: String },
    /// A guardrail blocked the prompt (2016) or the answer (2017).
    #[error("{} blocked due to security configurations", if *.response { "Response" } else { "Prompt" })]
    GuardrailBlocked { response: bool },
    /// The guardrail evaluator could not be reached or read, and a BLOCK rule applies.
    #[error("Guardrail scanner unavailable: {0}")]
    GuardrailUnavailable(String),
    /// The gateway's DLP or guardrail settings cannot be applied (a profile they name is
    /// gone): its requests are refused rather than let through unchecked.
    #[error("The gateway's DLP or guardrail settings cannot be applied: {0}")]
    PolicyBroken(String),
    /// `byok_only` is on and the request carries no provider credential (nor a stored key).
    #[error(
        "Provider credentials are required on this gateway (byok_only): send the provider's key or store one for {0}"
    )]
    CredentialsRequired(String),
    /// A spend limit, a token budget or a token rate cannot take this request.
    #[error("{message}")]
    SpendLimited { message: String, retry_after_secs: u64 },
    /// The API token may not use this provider or model.
    #[error("Not allowed: {0}")]
    NotAllowed(String),
    /// The store failed; details go to the log, not to the client.
    #[error("internal storage error")]
    Store(String),
    /// Cluster mode: PostgreSQL, which holds the settings, did not confirm a change.
    #[error("the cluster's settings store (PostgreSQL) cannot be reached; try again")]
    SettingsUnavailable(String),
    /// Something that cannot happen did (a bad stored value, missing state); details go to the
    /// log, not to the client.
    #[error("internal error")]
    Internal(String),
}

impl Error {
    /// HTTP status and Cloudflare error code for this error.
    #[must_use]
    pub fn status_and_code(&self) -> (u16, u32) {
        match self {
            Self::AccountNotFound(_) => (404, 2001),
            // Cloudflare answers an unknown gateway with 400 (code 2001).
            Self::GatewayNotFound(_) => (400, 2001),
            Self::ProviderNotFound(_) => (404, 2008),
            Self::InvalidPath { .. } => (400, 2008),
            Self::InvalidHeader { .. } | Self::BadRequest(_) | Self::CredentialsRequired(_) => (400, 2002),
            Self::BadModel(_) => (400, 2019),
            Self::BodyTooLarge { .. } => (413, 2004),
            Self::BodyTimeout { .. } => (408, 2002),
            Self::Busy { .. } | Self::LimitsUnavailable => (503, 2010),
            Self::Unauthorized(_) => (401, 2009),
            Self::RateLimited { .. } => (429, 2003),
            Self::ByokAliasNotFound { .. } => (400, 2040),
            Self::UpstreamFailed { .. } | Self::AllStepsFailed(_) => (502, 2005),
            Self::MethodNotAllowed(_) => (405, 2002),
            Self::UpstreamTimeout { .. } => (504, 2005),
            Self::ApiUnauthenticated(_) => (401, 10000),
            Self::ApiForbidden { .. } | Self::ApiGatewayForbidden { .. } => (403, 9109),
            Self::Invalid { .. } => (400, 1002),
            Self::Conflict { .. } => (409, 1003),
            Self::NotFound { .. } => (404, 1004),
            Self::NoRoute(_) => (404, 7000),
            Self::DlpBlocked { response: false, .. } => (424, 2029),
            Self::DlpBlocked { response: true, .. } => (424, 2030),
            Self::GuardrailBlocked { response: false } => (424, 2016),
            Self::GuardrailBlocked { response: true } => (424, 2017),
            Self::GuardrailUnavailable(_) | Self::PolicyBroken(_) => (503, 7013),
            Self::SpendLimited { .. } => (429, 2045),
            Self::NotAllowed(_) => (403, 2046),
            Self::Store(_) | Self::Internal(_) => (500, 5000),
            Self::SettingsUnavailable(_) => (503, 5000),
        }
    }

    /// No route for `path`: the whole path up to 2,048 characters (longer ones end in `…`).
    #[must_use]
    pub fn no_route(path: &str) -> Self {
        const MAX: usize = 2048;
        let mut shown: String = path.chars().take(MAX).collect();
        if shown.len() < path.len() {
            shown.push('…');
        }
        Self::NoRoute(shown)
    }

    /// Shorthand for a management-API validation error.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), reason: reason.into() }
    }
}
