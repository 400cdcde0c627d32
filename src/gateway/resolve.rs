//! Stage 1: account, gateway and provider from the raw request path, against the snapshot.

use std::sync::Arc;

use crate::config::Config;
use crate::control::Snapshot;
use crate::error::Error;
use crate::providers::{self, Target, resolve_target};
use crate::store::GatewayRecord;

/// The data-plane path, split but not decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum DataPath<'a> {
    /// `/v1/{account}/{gateway}`: the universal endpoint.
    Universal { account: &'a str, gateway: &'a str },
    /// `/v1/{account}/{gateway}/{provider}/{rest}`.
    Provider { account: &'a str, gateway: &'a str, provider: &'a str, rest: &'a str },
}

/// Splits a raw `/v1/...` path; `None` when it has too few segments.
#[must_use]
pub fn split_path(path: &str) -> Option<DataPath<'_>> {
    let tail = path.strip_prefix("/v1/")?;
    let (account, tail) = tail.split_once('/').unwrap_or((tail, ""));
    let (gateway, tail) = tail.split_once('/').unwrap_or((tail, ""));
    if account.is_empty() || gateway.is_empty() {
        return None;
    }
    if tail.is_empty() {
        return Some(DataPath::Universal { account, gateway });
    }
    let (provider, rest) = tail.split_once('/').unwrap_or((tail, ""));
    Some(DataPath::Provider { account, gateway, provider, rest })
}

/// Checks the account and finds the gateway in the snapshot.
pub fn resolve_gateway(
    config: &Config,
    snapshot: &Snapshot,
    account: &str,
    gateway: &str,
) -> Result<Arc<GatewayRecord>, Error> {
    if account != config.account_id {
        return Err(Error::AccountNotFound(printable(account)));
    }
    snapshot.gateways.get(gateway).cloned().ok_or_else(|| Error::GatewayNotFound(printable(gateway)))
}

/// Finds the provider (built-in or `custom-{slug}`) and maps the path onto its upstream URL.
pub fn resolve_provider(
    config: &Config,
    snapshot: &Snapshot,
    account: &str,
    provider: &str,
    rest: &str,
    query: &str,
) -> Result<Target, Error> {
    let source = if let Some(p) = providers::builtin(provider) {
        providers::route::Source::Builtin(p, config.providers.get(provider))
    } else if let Some(custom) = provider.strip_prefix("custom-").and_then(|s| snapshot.custom_providers.get(s)) {
        providers::route::Source::Custom { slug: &custom.slug, base_url: &custom.base_url }
    } else {
        return Err(Error::ProviderNotFound(printable(provider)));
    };
    resolve_target(source, rest, query, account)
}

fn printable(s: &str) -> String {
    s.chars().take(64).flat_map(char::escape_default).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_paths() {
        assert_eq!(split_path("/v1/a/g"), Some(DataPath::Universal { account: "a", gateway: "g" }));
        assert_eq!(
            split_path("/v1/a/g/openai/v1/chat"),
            Some(DataPath::Provider { account: "a", gateway: "g", provider: "openai", rest: "v1/chat" })
        );
        assert_eq!(
            split_path("/v1/a/g/openai"),
            Some(DataPath::Provider { account: "a", gateway: "g", provider: "openai", rest: "" })
        );
        assert_eq!(split_path("/v1/a"), None);
        assert_eq!(split_path("/v2/a/g"), None);
        assert_eq!(split_path("/v1//g"), None);
    }
}
