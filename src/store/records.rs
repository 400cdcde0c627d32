//! The stored configuration records, with Cloudflare's field names.

use std::collections::BTreeMap;

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use super::Record;

/// Rate-limit window technique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitTechnique {
    /// Aligned windows.
    Fixed,
    /// Trailing window.
    Sliding,
}

/// What happens when a gateway reaches its log cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LogStrategy {
    /// Keep the old logs, store no new ones.
    StopInserting,
    /// Delete the oldest logs to make room.
    DeleteOldest,
}

/// How retry delays grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// `delay` every time.
    Constant,
    /// `delay × n`.
    Linear,
    /// `delay × 2^(n-1)`.
    Exponential,
}

/// A gateway and its settings (Cloudflare's gateway object).
#[expect(clippy::struct_excessive_bools, reason = "mirrors Cloudflare's gateway object field for field")]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayRecord {
    /// Gateway name, unique per account.
    pub id: String,
    /// Purge the gateway's cache when its settings change.
    pub cache_invalidate_on_update: bool,
    /// Default cache TTL in seconds; 0 or null is off.
    pub cache_ttl: Option<u64>,
    /// Store a log per request.
    pub collect_logs: bool,
    /// Rate-limit window in seconds.
    pub rate_limiting_interval: Option<u64>,
    /// Requests allowed per window; 0 or null is off.
    pub rate_limiting_limit: Option<u64>,
    /// Window technique.
    pub rate_limiting_technique: Option<RateLimitTechnique>,
    /// Require `cf-aig-authorization`.
    pub authentication: bool,
    /// Maximum stored logs.
    pub log_management: Option<u64>,
    /// What to do at the log cap.
    pub log_management_strategy: Option<LogStrategy>,
    /// Default attempts per request (1–5).
    pub retry_max_attempts: Option<u8>,
    /// Default base retry delay in ms (0–5000).
    pub retry_delay: Option<u64>,
    /// Default backoff.
    pub retry_backoff: Option<Backoff>,
    /// Logs older than this many days are deleted (Torii's field; none: the global default).
    #[serde(default)]
    pub log_retention_days: Option<u64>,
    /// Whether this is the auto-created `default` gateway.
    pub is_default: bool,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 last modification time.
    pub modified_at: String,
    /// Cloudflare fields kept in the shape the client gave them (`dlp`, `guardrails`, and the
    /// "off" values of fields Torii does not implement); each one is checked on save.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl GatewayRecord {
    /// The `default` gateway: authentication off, logs on, cache off, rate limit off.
    #[must_use]
    pub fn new_default(now: &str) -> Self {
        Self {
            id: "default".into(),
            cache_invalidate_on_update: false,
            cache_ttl: Some(0),
            collect_logs: true,
            rate_limiting_interval: Some(0),
            rate_limiting_limit: Some(0),
            rate_limiting_technique: Some(RateLimitTechnique::Fixed),
            authentication: false,
            log_management: None,
            log_management_strategy: None,
            retry_max_attempts: None,
            retry_delay: None,
            retry_backoff: None,
            log_retention_days: None,
            is_default: true,
            created_at: now.into(),
            modified_at: now.into(),
            extra: BTreeMap::new(),
        }
    }
}

impl Record for GatewayRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("gateways_v1");
    fn key(&self) -> &str {
        &self.id
    }
}

/// A dynamic route of a gateway: its versions (each a graph of elements) and deployments (the
/// last one is live).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteRecord {
    /// UUID.
    pub id: String,
    /// The gateway it belongs to.
    pub gateway_id: String,
    /// Invoked as `dynamic/{name}`.
    pub name: String,
    /// Every saved version, oldest first.
    pub versions: Vec<RouteVersion>,
    /// Every deployment, oldest first; the last is live.
    pub deployments: Vec<RouteDeployment>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub modified_at: String,
}

/// One saved graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteVersion {
    /// UUID.
    pub version_id: String,
    /// The elements, in the SDK's spelling.
    pub elements: serde_json::Value,
    /// RFC 3339.
    pub created_at: String,
}

/// One deployment of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteDeployment {
    /// UUID.
    pub deployment_id: String,
    /// The version made live.
    pub version_id: String,
    /// RFC 3339.
    pub created_at: String,
}

impl RouteRecord {
    /// The live version.
    #[must_use]
    pub fn live(&self) -> Option<&RouteVersion> {
        let d = self.deployments.last()?;
        self.versions.iter().find(|v| v.version_id == d.version_id)
    }
}

impl Record for RouteRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("routes_v1");
    fn key(&self) -> &str {
        &self.id
    }
}

/// A saved log filter of a gateway (Cloudflare's dataset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRecord {
    /// UUID.
    pub id: String,
    /// The gateway.
    pub gateway_id: String,
    /// Name.
    pub name: String,
    /// Whether evaluations may use it.
    pub enable: bool,
    /// `{key, operator, value}` filters, all of which a log must match.
    pub filters: serde_json::Value,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub modified_at: String,
}

impl Record for DatasetRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("datasets_v1");
    fn key(&self) -> &str {
        &self.id
    }
}

/// An evaluation: figures computed over the logs of some datasets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationRecord {
    /// UUID.
    pub id: String,
    /// The gateway.
    pub gateway_id: String,
    /// Name.
    pub name: String,
    /// The datasets (as they were when it ran).
    pub datasets: Vec<DatasetRecord>,
    /// One result per evaluation type.
    pub results: Vec<EvaluationResult>,
    /// Logs evaluated.
    pub total_logs: u64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub modified_at: String,
}

/// One evaluation type's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationResult {
    /// UUID.
    pub id: String,
    /// `cost`, `speed` or `performance`.
    pub evaluation_type_id: String,
    /// The figures, as JSON text.
    pub result: String,
    /// Logs it covers.
    pub total_logs: u64,
}

impl Record for EvaluationRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("evaluations_v1");
    fn key(&self) -> &str {
        &self.id
    }
}

/// A model alias of a gateway: `custom/{name}` tries its models in turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasRecord {
    /// `{gateway}/{name}`.
    pub key: String,
    /// The gateway.
    pub gateway_id: String,
    /// Invoked as `custom/{name}`.
    pub name: String,
    /// `{provider}/{model}` names, tried in this order.
    pub models: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub modified_at: String,
}

impl Record for AliasRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("aliases_v1");
    fn key(&self) -> &str {
        &self.key
    }
}

/// A custom DLP profile: a pattern, and optionally keywords that must stand near a match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DlpProfileRecord {
    /// The id policies name (`[a-z0-9-]`, not a built-in id).
    pub id: String,
    /// Human name.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Regex (the `regex` crate's syntax).
    pub pattern: String,
    /// Case-insensitive keywords of which one must stand within `proximity` characters.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Characters around the match a keyword may stand within.
    #[serde(default)]
    pub proximity: usize,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub modified_at: String,
}

impl Record for DlpProfileRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("dlp_profiles_v1");
    fn key(&self) -> &str {
        &self.id
    }
}

/// An admin-defined provider reachable as `custom-{slug}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomProviderRecord {
    /// UUID.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `[a-z0-9-]` slug; the provider is `custom-{slug}`.
    pub slug: String,
    /// Upstream base URL (http allowed for internal hosts).
    pub base_url: String,
    /// Free text.
    pub description: Option<String>,
    /// Documentation link.
    pub link: Option<String>,
    /// Disabled providers are not routed.
    pub enable: bool,
    /// Marked as beta in listings.
    pub beta: bool,
    /// Example shown to users.
    pub curl_example: Option<String>,
    /// Example shown to users.
    pub js_example: Option<String>,
    /// Owning account.
    pub account_id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub modified_at: i64,
}

impl Record for CustomProviderRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("custom_providers_v1");
    fn key(&self) -> &str {
        &self.id
    }
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send data-plane requests through authenticated gateways.
    Run,
    /// Read through the management API.
    Read,
    /// Change through the management API (implies read).
    Edit,
}

impl Scope {
    /// Lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Read => "read",
            Self::Edit => "edit",
        }
    }
}

/// An API token; the secret itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// UUIDv7.
    pub id: String,
    /// Human label.
    pub name: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    /// Granted scopes.
    pub scopes: Vec<Scope>,
    /// Gateways the token is valid for; empty means all.
    pub gateways: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; none means never.
    pub expires_at: Option<String>,
    /// RFC 3339 revocation time.
    pub revoked_at: Option<String>,
    /// Requests this token may make per `rate_limit_interval` (on top of the gateway's limit).
    #[serde(default)]
    pub rate_limit: Option<u64>,
    /// Seconds.
    #[serde(default)]
    pub rate_limit_interval: Option<u64>,
    /// RFC 3339, to the second; written in the background (at most 30 s behind, and at shutdown).
    #[serde(default)]
    pub last_used_at: Option<String>,
    /// Budget, token rate and allow-lists (what `LiteLLM` calls a virtual key).
    #[serde(default, flatten)]
    pub limits: TokenLimits,
}

/// What a token may spend and reach.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenLimits {
    /// USD the token may spend per `budget_period` (reserved before forwarding: never exceeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// Budget window in seconds (sliding); 30 days when a budget is set without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_period: Option<u64>,
    /// Input plus output tokens per minute (sliding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Provider slugs (globs with `*`) the token may reach; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_providers: Vec<String>,
    /// Models (globs with `*`, `{provider}/{model}` or the bare model) the token may use; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_models: Vec<String>,
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
#[must_use]
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

impl Record for TokenRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("tokens_v1");
    fn key(&self) -> &str {
        &self.id
    }
}

/// A provider key stored for a gateway (BYOK), sealed with the secrets key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderKeyRecord {
    /// UUID.
    pub id: String,
    /// Gateway.
    pub gateway_id: String,
    /// Provider slug.
    pub provider_slug: String,
    /// Alias (`default` unless `cf-aig-byok-alias` names another).
    pub alias: String,
    /// Hex of nonce ‖ ciphertext ‖ tag.
    pub sealed: String,
    /// Masked preview.
    pub secret_preview: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub modified_at: String,
}

impl Record for ProviderKeyRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("provider_keys_v1");
    fn key(&self) -> &str {
        &self.id
    }
}

/// An admin of the web UI; the password is stored only as an argon2id PHC string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminRecord {
    /// Login name.
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339 of the last password change.
    pub modified_at: String,
}

impl Record for AdminRecord {
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("admins_v1");
    fn key(&self) -> &str {
        &self.username
    }
}
