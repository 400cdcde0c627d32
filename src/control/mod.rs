//! Runtime objects (gateways, tokens, custom providers): validation rules and the immutable
//! in-memory snapshot the request path reads, swapped atomically after every change.

pub mod custom_providers;
pub mod datasets;
pub mod dlp_profiles;
pub mod gateways;
pub mod input;
pub mod provider_keys;
mod records;
pub mod routes;

use foldhash::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::secrets::{Secret, SecretBox};
use crate::store::{
    CustomProviderRecord, DlpProfileRecord, GatewayRecord, ProviderKeyRecord, Store, StoreError, TokenRecord,
};

/// Everything the hot path needs, built from the store.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Gateways by id.
    pub gateways: HashMap<String, Arc<GatewayRecord>>,
    /// Enabled custom providers by slug (without the `custom-` prefix).
    pub custom_providers: HashMap<String, Arc<CustomProviderRecord>>,
    /// Live (not revoked) tokens by hex SHA-256 of their secret.
    pub tokens: crate::auth::Tokens,
    /// Stored provider keys, opened: gateway → provider → alias → key (see
    /// [`Snapshot::provider_key`]).
    pub provider_keys: HashMap<String, HashMap<String, HashMap<String, Secret>>>,
    /// Each gateway's DLP and guardrails, compiled; `Err` (a setting that no longer compiles)
    /// fails closed.
    pub policies: HashMap<String, Result<Arc<crate::policy::GatewayPolicies>, String>>,
    /// Custom DLP profiles.
    pub dlp_profiles: Vec<DlpProfileRecord>,
    /// Live dynamic routes by (gateway, name).
    pub routes: HashMap<(String, String), Arc<LiveRoute>>,
    /// Model aliases by (gateway, name): the models tried in turn.
    pub aliases: HashMap<(String, String), Arc<Vec<String>>>,
}

impl Snapshot {
    /// The stored key of `gateway` for `provider` under `alias`, looked up by `&str`s (every
    /// request asks, so no owned key is built).
    #[must_use]
    pub fn provider_key(&self, gateway: &str, provider: &str, alias: &str) -> Option<&Secret> {
        self.provider_keys.get(gateway)?.get(provider)?.get(alias)
    }
}

/// A route's live version, parsed.
#[derive(Debug)]
pub struct LiveRoute {
    /// Route id.
    pub id: String,
    /// Route name.
    pub name: String,
    /// The deployed version.
    pub version_id: String,
    /// Its graph.
    pub graph: crate::policy::route::Graph,
}

/// The management API's state: the control service, the configuration in force (shared with the
/// data plane, swapped on SIGHUP) and the response cache (stats and purges). The data plane's
/// pipeline state is not part of it.
pub struct ControlPlane {
    /// The control service.
    pub settings: Arc<Settings>,
    /// The configuration in force.
    pub live_config: Arc<arc_swap::ArcSwap<crate::config::Config>>,
    /// The response cache.
    pub cache: Arc<crate::cache::Cache>,
    /// In cluster mode, the cache the nodes share (purged through any node).
    pub shared_cache: Option<Arc<crate::cluster::SharedCache>>,
    /// Spend so far and reserved (the data plane writes it; the control surfaces show it).
    pub spend: Arc<crate::cluster::Spend>,
    /// The clock the spend windows are measured on.
    pub clock: Arc<crate::time::Clock>,
}

impl ControlPlane {
    /// The configuration in force (cheap: an atomic load).
    #[must_use]
    pub fn config(&self) -> Arc<crate::config::Config> {
        self.live_config.load_full()
    }
}

/// The store plus its current snapshot.
pub struct Settings {
    store: Store,
    secrets: Option<Arc<SecretBox>>,
    current: ArcSwap<Snapshot>,
    token_usage: crate::auth::TokenUsage,
    /// A log export receiver is configured (gateways may then turn `logpush` on).
    export_on: std::sync::atomic::AtomicBool,
    hooks: std::sync::RwLock<Vec<Hook>>,
}

/// What an admin change means for state kept elsewhere (the response cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// A gateway's settings changed; `purge_cache` per its `cache_invalidate_on_update`.
    GatewayUpdated { id: &'a str, purge_cache: bool },
    /// A gateway was deleted (or reset, for `default`).
    GatewayDeleted { id: &'a str },
    /// A provider now answers from elsewhere (a custom provider's `base_url` or slug changed,
    /// or it was deleted): what it answered before is stale.
    ProviderMoved { slug: &'a str },
}

type Hook = Box<dyn Fn(&Change<'_>) + Send + Sync>;

impl Settings {
    /// Builds the first snapshot from the store.
    pub fn load(store: Store) -> Result<Self, StoreError> {
        Self::load_with_secrets(store, None)
    }

    /// Builds the first snapshot, opening stored provider keys with `secrets`.
    pub fn load_with_secrets(store: Store, secrets: Option<Arc<SecretBox>>) -> Result<Self, StoreError> {
        let snapshot = build_snapshot(&store, secrets.as_deref())?;
        Ok(Self {
            store,
            secrets,
            current: ArcSwap::from_pointee(snapshot),
            token_usage: crate::auth::TokenUsage::default(),
            export_on: std::sync::atomic::AtomicBool::new(false),
            hooks: std::sync::RwLock::new(Vec::new()),
        })
    }

    /// Registers a hook run after every change (once, at start-up: the cache purge).
    pub fn on_change(&self, hook: impl Fn(&Change<'_>) + Send + Sync + 'static) {
        self.hooks.write().unwrap_or_else(std::sync::PoisonError::into_inner).push(Box::new(hook));
    }

    /// Runs the hooks for a change that has been committed and loaded.
    pub(crate) fn changed(&self, change: &Change<'_>) {
        for hook in self.hooks.read().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
            hook(change);
        }
    }

    /// The sealing key, when stored provider keys are enabled.
    #[must_use]
    pub fn secrets(&self) -> Option<&SecretBox> {
        self.secrets.as_deref()
    }

    /// The current snapshot (lock-free).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Token last-use times not yet written to the store.
    pub fn token_usage(&self) -> &crate::auth::TokenUsage {
        &self.token_usage
    }

    /// Every token as stored, with last uses not yet written filled in.
    pub fn tokens(&self) -> Result<Vec<crate::store::TokenRecord>, StoreError> {
        let mut all = self.store.list::<crate::store::TokenRecord>()?;
        for t in &mut all {
            if let Some(at) = self.token_usage.pending(&t.id) {
                t.last_used_at = Some(at);
            }
        }
        Ok(all)
    }

    /// The underlying store, for tests that look at its tables (everything else goes through
    /// the operations on `Settings`).
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether a log export receiver is configured.
    pub fn export_on(&self) -> bool {
        self.export_on.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Says whether a log export receiver is configured (at start, and when the configuration
    /// is reloaded).
    pub fn set_export_on(&self, on: bool) {
        self.export_on.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// For the log writer: whether a gateway's stored logs are queued for export (export
    /// configured and the gateway's `logpush` on).
    pub fn export_filter(self: &Arc<Self>) -> crate::logs::writer::ExportFilter {
        let settings = Arc::clone(self);
        Box::new(move |gateway| {
            settings.export_on()
                && settings
                    .current
                    .load()
                    .gateways
                    .get(gateway)
                    .is_some_and(|g| g.extra.get("logpush").and_then(serde_json::Value::as_bool) == Some(true))
        })
    }

    /// The log writer's view of the gateways' log caps, following every settings change.
    pub fn log_caps(self: &Arc<Self>) -> crate::logs::writer::LogCaps {
        let settings = Arc::clone(self);
        Box::new(move |gateway| {
            let snapshot = settings.current.load();
            snapshot.gateways.get(gateway).and_then(|g| g.log_management.map(|cap| (cap, g.log_management_strategy)))
        })
    }

    /// Cluster mode: the control version this node's replica is at.
    pub fn control_version(&self) -> Result<u64, StoreError> {
        self.store.control_version()
    }

    /// Cluster mode: applies other nodes' changes to the replica and, if anything changed,
    /// rebuilds the snapshot.
    pub fn apply_cluster_changes(&self, pulled: &crate::store::replica::Pulled) -> Result<(), StoreError> {
        let before = self.snapshot();
        if !self.store.apply(pulled)? {
            return Ok(());
        }
        self.reload()?;
        // What another node's change means for this node's own state (its response cache), as
        // the node that made it ran for itself.
        let after = self.snapshot();
        for (id, old) in &before.gateways {
            match after.gateways.get(id) {
                None => self.changed(&Change::GatewayDeleted { id }),
                Some(new) if new != old => {
                    self.changed(&Change::GatewayUpdated { id, purge_cache: new.cache_invalidate_on_update });
                }
                Some(_) => {}
            }
        }
        for (slug, old) in &before.custom_providers {
            if after.custom_providers.get(slug).is_none_or(|new| new.base_url != old.base_url) {
                self.changed(&Change::ProviderMoved { slug: &format!("custom-{slug}") });
            }
        }
        Ok(())
    }

    /// Rebuilds the snapshot after a change. Blocking: call from a blocking context.
    pub fn reload(&self) -> Result<(), StoreError> {
        self.current.store(Arc::new(build_snapshot(&self.store, self.secrets.as_deref())?));
        Ok(())
    }
}

fn build_snapshot(store: &Store, secrets: Option<&SecretBox>) -> Result<Snapshot, StoreError> {
    let dlp_profiles = store.list::<DlpProfileRecord>()?;
    let gateways: HashMap<String, Arc<GatewayRecord>> =
        store.list::<GatewayRecord>()?.into_iter().map(|g| (g.id.clone(), Arc::new(g))).collect();
    let policies = gateways
        .values()
        .map(|g| {
            let compiled = crate::policy::compile(g, &dlp_profiles);
            if let Err(e) = &compiled {
                tracing::error!(gateway = %g.id, error = %e, "the gateway's DLP or guardrails do not compile; its requests are refused");
            }
            (g.id.clone(), compiled)
        })
        .collect();
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
    let mut provider_keys = HashMap::default();
    if let Some(secrets) = secrets {
        for k in store.list::<ProviderKeyRecord>()? {
            let context = provider_keys::context(&k.gateway_id, &k.provider_slug, &k.alias);
            let opened = hex::decode(&k.sealed).ok().and_then(|s| secrets.open(&s, context.as_bytes()));
            if let Some(secret) = opened.and_then(|p| String::from_utf8(p).ok()) {
                let by_provider: &mut HashMap<_, HashMap<_, _>> = provider_keys.entry(k.gateway_id).or_default();
                by_provider.entry(k.provider_slug).or_default().insert(k.alias, Secret::new(secret));
            } else {
                tracing::error!(id = %k.id, "a stored provider key cannot be opened with this secrets key");
            }
        }
    }
    let mut routes = HashMap::default();
    for r in store.list::<crate::store::RouteRecord>()? {
        let Some(live) = r.live() else { continue };
        match crate::policy::route::parse(&live.elements) {
            Ok(graph) => {
                let route =
                    LiveRoute { id: r.id.clone(), name: r.name.clone(), version_id: live.version_id.clone(), graph };
                routes.insert((r.gateway_id.clone(), r.name.clone()), Arc::new(route));
            }
            Err(e) => tracing::error!(route = %r.id, error = %e, "a deployed route does not parse; it is not served"),
        }
    }
    let aliases = store
        .list::<crate::store::AliasRecord>()?
        .into_iter()
        .map(|a| ((a.gateway_id, a.name), Arc::new(a.models)))
        .collect();
    Ok(Snapshot { gateways, custom_providers, tokens, provider_keys, policies, dlp_profiles, routes, aliases })
}

/// Creates the `default` gateway if it does not exist yet.
pub fn ensure_default_gateway(store: &Store) -> Result<(), StoreError> {
    store.insert_new(&GatewayRecord::new_default(&now_rfc3339()))?;
    Ok(())
}

pub use crate::store::is_valid_id;
pub use crate::time::{now_rfc3339, now_unix, parse_rfc3339};
