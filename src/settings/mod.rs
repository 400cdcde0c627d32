//! Runtime objects (gateways, tokens, custom providers): validation rules and the immutable
//! in-memory snapshot the request path reads, swapped atomically after every change.

pub mod custom_providers;
pub mod gateways;
pub mod input;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::store::{CustomProviderRecord, GatewayRecord, Store, StoreError, TokenRecord};

/// Everything the hot path needs, built from the store.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Gateways by id.
    pub gateways: HashMap<String, Arc<GatewayRecord>>,
    /// Enabled custom providers by slug (without the `custom-` prefix).
    pub custom_providers: HashMap<String, Arc<CustomProviderRecord>>,
    /// Live (not revoked) tokens by hex SHA-256 of their secret.
    pub tokens: HashMap<String, Arc<TokenRecord>>,
}

/// The store plus its current snapshot.
pub struct Settings {
    store: Store,
    current: ArcSwap<Snapshot>,
}

impl Settings {
    /// Builds the first snapshot from the store.
    pub fn load(store: Store) -> Result<Self, StoreError> {
        let snapshot = build_snapshot(&store)?;
        Ok(Self { store, current: ArcSwap::from_pointee(snapshot) })
    }

    /// The current snapshot (lock-free).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The underlying store, for the management API and CLI.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Rebuilds the snapshot after a change. Blocking: call from a blocking context.
    pub fn reload(&self) -> Result<(), StoreError> {
        self.current.store(Arc::new(build_snapshot(&self.store)?));
        Ok(())
    }
}

fn build_snapshot(store: &Store) -> Result<Snapshot, StoreError> {
    let gateways = store.list::<GatewayRecord>()?.into_iter().map(|g| (g.id.clone(), Arc::new(g))).collect();
    let custom_providers = store
        .list::<CustomProviderRecord>()?
        .into_iter()
        .filter(|p| p.enable)
        .map(|p| (p.slug.clone(), Arc::new(p)))
        .collect();
    let tokens = store
        .list::<TokenRecord>()?
        .into_iter()
        .filter(|t| t.revoked_at.is_none())
        .map(|t| (t.hash.clone(), Arc::new(t)))
        .collect();
    Ok(Snapshot { gateways, custom_providers, tokens })
}

/// Creates the `default` gateway if it does not exist yet.
pub fn ensure_default_gateway(store: &Store) -> Result<(), StoreError> {
    store.insert_new(&GatewayRecord::new_default(&now_rfc3339()))?;
    Ok(())
}

/// Ids of gateways and accounts: 1–64 characters from `A-Za-z0-9-_`.
#[must_use]
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Current time as RFC 3339 (UTC, seconds).
#[must_use]
pub fn now_rfc3339() -> String {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| OffsetDateTime::now_utc());
    now.format(&Rfc3339).unwrap_or_default()
}

/// Current time as Unix seconds.
#[must_use]
pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Parses an RFC 3339 time.
#[must_use]
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}
