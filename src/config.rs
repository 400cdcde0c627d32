//! Typed configuration: defaults < TOML file < `TORII_*` environment < command-line flags,
//! validated once. Only this module reads configuration files and environment variables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::providers::{self, ProviderOverride};
use crate::store::is_valid_id;

/// Environment variables with the `TORII_` prefix that are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &["CONFIG", "ADMIN_PASSWORD", "LOG"];

/// The whole configuration of one appliance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the server listens on; port 0 picks a free port.
    pub listen: String,
    /// Optional separate listener for the admin UI (`/admin`, `/static`): the hardened setup,
    /// where no data-plane answer shares the admin UI's origin. When set, the main listener
    /// serves no admin page.
    pub admin_listen: Option<String>,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For`, `-Proto` and `-Host`
    /// are believed: for the sign-in throttle's client address, `Secure` cookies, and the URLs
    /// the admin UI shows. Empty: nobody's (the connection's own peer, scheme and `Host`).
    /// A list, or one comma-separated string (`TORII_TRUSTED_PROXIES=10.0.0.1,10.1.0.0/16`).
    #[serde(deserialize_with = "list_or_commas")]
    pub trusted_proxies: Vec<String>,
    /// Serve HTTPS on `listen` (and `admin_listen`) with these PEM files.
    pub tls: Option<TlsConfig>,
    /// Directory holding the redb file and the secrets key.
    pub data_dir: PathBuf,
    /// The appliance's account id, the first path segment after `/v1/`.
    pub account_id: String,
    /// Largest accepted request body, in bytes.
    #[serde(deserialize_with = "lenient")]
    pub max_body_bytes: usize,
    /// Bytes all request bodies still being received may hold together; beyond it a request
    /// is answered 503 (memory stays bounded however many clients declare large bodies).
    #[serde(deserialize_with = "lenient")]
    pub max_pending_body_bytes: usize,
    /// Time every request body gets to arrive, whatever its size.
    #[serde(deserialize_with = "lenient")]
    pub body_timeout_ms: u64,
    /// Beyond `body_timeout_ms`, bytes per second a body must keep up on average (0: no
    /// minimum); a slower body is answered 408.
    #[serde(deserialize_with = "lenient")]
    pub body_min_rate: u64,
    /// `text` or `json` log lines.
    pub log_format: LogFormat,
    /// Default tracing filter (overridden by `TORII_LOG` / `RUST_LOG`).
    pub log_level: String,
    /// How long in-flight requests may run after SIGTERM before the server stops.
    #[serde(deserialize_with = "lenient")]
    pub shutdown_grace_secs: u64,
    /// Upper bound on a universal request's failover phase (all steps, retries and waits).
    #[serde(deserialize_with = "lenient")]
    pub universal_deadline_ms: u64,
    /// Upper bound on cached response bodies, in bytes (least recently used evicted).
    #[serde(deserialize_with = "lenient")]
    pub cache_max_bytes: u64,
    /// Logs older than this many days are deleted (0: kept until a cap removes them); a
    /// gateway's `log_retention_days` overrides it.
    #[serde(deserialize_with = "lenient")]
    pub log_retention_days: u64,
    /// Log records that may wait for the writer; more are dropped (and counted).
    #[serde(deserialize_with = "lenient")]
    pub log_queue: usize,
    /// Worker threads; 0 means one per core.
    #[serde(deserialize_with = "lenient")]
    pub workers: usize,
    /// Outbound connection settings.
    pub upstream: UpstreamConfig,
    /// Per-provider overrides of the built-in URL templates, keyed by slug.
    pub providers: BTreeMap<String, ProviderOverride>,
    /// The models that evaluate guardrails.
    pub guardrails: GuardrailsConfig,
    /// Spend limits and budgets.
    pub spend: SpendConfig,
    /// Log export (what Cloudflare calls Logpush) for gateways with `logpush: true`.
    pub export: ExportConfig,
    /// OpenTelemetry traces of every gateway (a gateway's `otel` adds its own receivers).
    pub otel: OtelConfig,
    /// Cluster mode: state several nodes share (today: the rate-limit windows, in Redis).
    pub cluster: ClusterConfig,
    /// Where this configuration was read from, so SIGHUP can read it again.
    #[serde(skip)]
    pub source: Option<Source>,
}

/// The inputs a configuration was loaded from.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// The TOML file, if any.
    pub file: Option<PathBuf>,
    /// The command-line values.
    pub flags: Flags,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where every gateway's traces go (OTLP/HTTP, JSON encoding).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtelConfig {
    /// The collector's traces URL (`http://host:4318/v1/traces`); none: only the gateways' own.
    pub endpoint: Option<String>,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// `protobuf` (the collectors' default, cheaper to encode) or `json`.
    pub content_type: OtlpEncoding,
}

/// Cluster mode: nodes behind one load balancer share state through Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://[:password@]host:port[/db]`: the gateways' and tokens' rate-limit windows
    /// are kept there, shared by every node that names the same server. None: in this process.
    pub redis_url: Option<String>,
    /// What a rate limit does while Redis cannot be reached: `allow` (fail open: the request
    /// goes on, counted in `torii_cluster_redis_failures_total` and logged) or `refuse` (fail
    /// closed: 503).
    pub on_redis_failure: RedisFailure,
    /// How long one Redis round trip may take before it counts as a failure.
    pub redis_timeout_ms: u64,
    /// `postgres://user[:password]@host:port/db`: the control plane (gateways, tokens, stored
    /// keys, custom providers, DLP profiles, routes, aliases, datasets, admins) is kept there,
    /// shared by every node that names the same database; each node keeps a replica in its own
    /// file and follows the others' changes within a second. None: in this node's file only.
    pub postgres_url: Option<String>,
    /// How long connecting to PostgreSQL, or one statement, may take.
    pub postgres_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            on_redis_failure: RedisFailure::Allow,
            redis_timeout_ms: 250,
            postgres_url: None,
            postgres_timeout_ms: 2000,
        }
    }
}

/// What a shared limit does while its store cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisFailure {
    /// Fail open: admit, count and log.
    #[default]
    Allow,
    /// Fail closed: refuse with 503.
    Refuse,
}

/// How spans are encoded for an OTLP/HTTP receiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpEncoding {
    /// Binary protobuf.
    #[default]
    Protobuf,
    /// JSON.
    Json,
}

/// Where and how stored logs are exported.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// The receiver (`http://` or `https://`); none: export is off.
    pub url: Option<String>,
    /// `json` (one JSON log per line) or `otlp` (OTLP/HTTP logs in JSON, e.g. a collector's `/v1/logs`).
    pub format: ExportFormat,
    /// Extra request headers (an `Authorization` for the receiver, ...).
    pub headers: BTreeMap<String, String>,
    /// Most logs per request.
    #[serde(deserialize_with = "lenient")]
    pub batch: usize,
    /// How often the queue is looked at when it was empty.
    #[serde(deserialize_with = "lenient")]
    pub interval_ms: u64,
}

/// Log export body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// Newline-delimited JSON, the logs API's shape plus `gateway`.
    Json,
    /// OpenTelemetry logs over HTTP, JSON encoding.
    Otlp,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self { url: None, format: ExportFormat::Json, headers: BTreeMap::new(), batch: 500, interval_ms: 2_000 }
    }
}

/// Spend limits and budgets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpendConfig {
    /// Output tokens a request is assumed to produce when it names no maximum (its worst case
    /// is reserved against the limits that apply).
    #[serde(deserialize_with = "lenient")]
    pub default_max_output_tokens: u64,
}

impl Default for SpendConfig {
    fn default() -> Self {
        Self { default_max_output_tokens: 4096 }
    }
}

/// Which models evaluate a gateway's guardrails, named as on the unified API
/// (`{provider}/{model}`): reached through the gateway being checked, with its stored keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardrailsConfig {
    /// Llama Guard (categories S1–S13), asked as a chat model; answers `safe` or `unsafe` and
    /// the categories.
    pub safety_model: String,
    /// Prompt Guard (P1): on Workers AI run as a text classifier (`{"text"}` →
    /// `[{label, score}]`), elsewhere asked as a chat model answering a label.
    pub injection_model: String,
    /// Time an evaluation may take before the evaluator counts as unavailable.
    #[serde(deserialize_with = "lenient")]
    pub timeout_ms: u64,
}

impl Default for GuardrailsConfig {
    fn default() -> Self {
        Self {
            safety_model: "workers-ai/@cf/meta/llama-guard-3-8b".into(),
            injection_model: "workers-ai/@cf/meta/prompt-guard-2-86m".into(),
            timeout_ms: 10_000,
        }
    }
}

/// Outbound HTTP settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// TCP connect (and TLS handshake) timeout.
    #[serde(deserialize_with = "lenient")]
    pub connect_timeout_ms: u64,
    /// Time allowed until the upstream's response head arrives.
    #[serde(deserialize_with = "lenient")]
    pub first_byte_timeout_ms: u64,
    /// A response body that sends nothing for this long is ended.
    #[serde(deserialize_with = "lenient")]
    pub idle_timeout_ms: u64,
    /// Extra PEM CA bundle trusted next to the web PKI roots (internal endpoints).
    pub extra_ca_file: Option<PathBuf>,
    /// Upstream connections in use at once per worker, for plain HTTP and for HTTPS each (a
    /// request waits for one); 0 means no limit.
    #[serde(deserialize_with = "lenient")]
    pub pool_limit: usize,
    /// Egress proxy for every upstream (`http://[user:password@]host:port`); without it,
    /// `HTTPS_PROXY` / `HTTP_PROXY` from the environment apply by the target's scheme.
    pub proxy: Option<String>,
    /// Hosts, domain suffixes, IPs and CIDR ranges reached directly (comma-separated, `*` for
    /// all); without it, `NO_PROXY` from the environment.
    pub no_proxy: Option<String>,
    /// `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` as the environment gave them.
    #[serde(skip)]
    pub env_proxy: EnvProxy,
}

/// The standard proxy variables (upper or lower case).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EnvProxy {
    /// `HTTPS_PROXY`.
    pub https: Option<String>,
    /// `HTTP_PROXY`.
    pub http: Option<String>,
    /// `NO_PROXY`.
    pub no_proxy: Option<String>,
}

impl UpstreamConfig {
    /// The proxy rules in force.
    pub fn proxy_rules(&self) -> Result<crate::egress::ProxyRules, ConfigError> {
        let no_proxy = self.no_proxy.as_deref().or(self.env_proxy.no_proxy.as_deref());
        crate::egress::ProxyRules::new(
            self.proxy.as_deref(),
            self.env_proxy.https.as_deref(),
            self.env_proxy.http.as_deref(),
            no_proxy,
        )
        .map_err(|reason| {
            let key = if self.proxy.is_some() { "upstream.proxy" } else { "HTTPS_PROXY / HTTP_PROXY" };
            key_err(key, reason)
        })
    }
}

/// The TLS listener's files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first).
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Optional plain-HTTP listener that redirects every request to HTTPS.
    pub redirect_http: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8787".into(),
            admin_listen: None,
            trusted_proxies: Vec::new(),
            tls: None,
            data_dir: PathBuf::from("./data"),
            account_id: "local".into(),
            max_body_bytes: 25 * 1024 * 1024,
            max_pending_body_bytes: 256 * 1024 * 1024,
            body_timeout_ms: 30_000,
            body_min_rate: 16 * 1024,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            shutdown_grace_secs: 30,
            universal_deadline_ms: 300_000,
            log_queue: 100_000,
            log_retention_days: 0,
            cache_max_bytes: 1 << 30,
            workers: 0,
            upstream: UpstreamConfig::default(),
            guardrails: GuardrailsConfig::default(),
            spend: SpendConfig::default(),
            export: ExportConfig::default(),
            otel: OtelConfig::default(),
            cluster: ClusterConfig::default(),
            providers: BTreeMap::new(),
            source: None,
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 10_000,
            first_byte_timeout_ms: 120_000,
            idle_timeout_ms: 300_000,
            extra_ca_file: None,
            pool_limit: 0,
            proxy: None,
            no_proxy: None,
            env_proxy: EnvProxy::default(),
        }
    }
}

/// Values given on the command line; they win over every other layer.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    /// `--listen`
    pub listen: Option<String>,
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--log-format`
    pub log_format: Option<LogFormat>,
}

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    /// A key is unknown, has the wrong type, or an invalid value.
    #[error("invalid config key `{key}`: {reason}")]
    Key { key: String, reason: String },
}

fn key_err(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Key { key: key.into(), reason: reason.into() }
}

impl Config {
    /// Loads every layer from the real environment and validates the result.
    pub fn load(file: Option<&Path>, flags: &Flags) -> Result<Self, ConfigError> {
        let mut config = Self::load_from(file, std::env::vars(), flags)?;
        config.source = Some(Source { file: file.map(Path::to_path_buf), flags: flags.clone() });
        Ok(config)
    }

    /// Reads the configuration again from where it came from (SIGHUP).
    pub fn reload(&self) -> Result<Self, ConfigError> {
        let source = self.source.clone().unwrap_or_default();
        Self::load(source.file.as_deref(), &source.flags)
    }

    /// `self` with the settings that can change while serving taken from `new`, and the names
    /// of the changed settings that need a restart.
    #[must_use]
    pub fn with_live_changes(&self, new: &Self) -> (Self, Vec<&'static str>) {
        let mut merged = self.clone();
        merged.log_level.clone_from(&new.log_level);
        merged.max_body_bytes = new.max_body_bytes;
        merged.body_timeout_ms = new.body_timeout_ms;
        merged.body_min_rate = new.body_min_rate;
        merged.universal_deadline_ms = new.universal_deadline_ms;
        merged.upstream.first_byte_timeout_ms = new.upstream.first_byte_timeout_ms;
        merged.upstream.idle_timeout_ms = new.upstream.idle_timeout_ms;
        merged.providers.clone_from(&new.providers);
        let json = |c: &Self| serde_json::to_value(c).unwrap_or_default();
        let (merged_json, new_json) = (json(&merged), json(new));
        let mut restart = Vec::new();
        for key in [
            "listen",
            "admin_listen",
            "trusted_proxies",
            "tls",
            "data_dir",
            "account_id",
            "max_pending_body_bytes",
            "log_format",
            "shutdown_grace_secs",
            "cache_max_bytes",
            "log_queue",
            "workers",
            "upstream",
        ] {
            if merged_json.get(key) != new_json.get(key) {
                restart.push(key);
            }
        }
        (merged, restart)
    }

    /// Loads the layers from explicit inputs (tests pass their own environment).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Flags,
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => read_table(path)?,
            None => toml::Table::new(),
        };
        let mut env_proxy = EnvProxy::default();
        for (name, value) in env {
            match name.as_str() {
                "HTTPS_PROXY" | "https_proxy" => env_proxy.https = Some(value.clone()),
                "HTTP_PROXY" | "http_proxy" => env_proxy.http = Some(value.clone()),
                "NO_PROXY" | "no_proxy" => env_proxy.no_proxy = Some(value.clone()),
                _ => {}
            }
            let Some(rest) = name.strip_prefix("TORII_") else {
                continue;
            };
            if rest.is_empty() || NON_CONFIG_ENV.contains(&rest) || rest.starts_with("TEST_") {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            set_path(&mut table, &path, toml::Value::String(value), &name)?;
        }
        if let Some(listen) = &flags.listen {
            table.insert("listen".into(), toml::Value::String(listen.clone()));
        }
        if let Some(dir) = &flags.data_dir {
            table.insert("data_dir".into(), toml::Value::String(dir.display().to_string()));
        }
        if let Some(format) = flags.log_format {
            let name = if format == LogFormat::Json { "json" } else { "text" };
            table.insert("log_format".into(), toml::Value::String(name.into()));
        }
        normalise_provider_keys(&mut table);
        let mut config: Self = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            key_err(if key == "." { "(root)".into() } else { key }, e.into_inner().to_string())
        })?;
        config.upstream.env_proxy = env_proxy;
        config.validate()?;
        Ok(config)
    }

    /// The `[cluster]` settings.
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.cluster.redis_url
            && !url.starts_with("redis://")
        {
            return Err(key_err(
                "cluster.redis_url",
                format!("'{url}' must be a redis:// URL (TLS, rediss://, is not supported yet)"),
            ));
        }
        if !(1..=60_000).contains(&self.cluster.redis_timeout_ms) {
            return Err(key_err("cluster.redis_timeout_ms", "must be 1-60000"));
        }
        if let Some(url) = &self.cluster.postgres_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(key_err("cluster.postgres_url", "must be a postgres:// URL"));
        }
        if let Some(url) = &self.cluster.postgres_url
            && url.contains("sslmode=require")
        {
            return Err(key_err("cluster.postgres_url", "TLS (sslmode=require) is not supported yet"));
        }
        if !(100..=60_000).contains(&self.cluster.postgres_timeout_ms) {
            return Err(key_err("cluster.postgres_timeout_ms", "must be 100-60000"));
        }
        Ok(())
    }

    /// Checks values serde cannot: addresses, ranges, charsets, URL templates.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.admin_listen_addr()?;
        self.trusted_proxy_nets()?;
        self.upstream.proxy_rules()?;
        if let Some(tls) = &self.tls {
            for (key, path) in [("tls.cert_file", &tls.cert_file), ("tls.key_file", &tls.key_file)] {
                if !path.is_file() {
                    return Err(key_err(key, format!("{} is not a readable file", path.display())));
                }
            }
            if let Some(addr) = &tls.redirect_http {
                addr.parse::<SocketAddr>()
                    .map_err(|_| key_err("tls.redirect_http", format!("'{addr}' is not an IP:port address")))?;
            }
        }
        if !is_valid_id(&self.account_id) {
            return Err(key_err("account_id", "use 1-64 characters from a-z, A-Z, 0-9, '-', '_'"));
        }
        if self.max_body_bytes == 0 {
            return Err(key_err("max_body_bytes", "must be greater than 0"));
        }
        if let Some(url) = &self.export.url {
            let ok = url.parse::<actix_web::http::Uri>().ok().is_some_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
            });
            if !ok {
                return Err(key_err("export.url", format!("'{url}' is not an http(s) URL")));
            }
        }
        if let Some(url) = &self.otel.endpoint
            && !url.starts_with("http://")
        {
            return Err(key_err(
                "otel.endpoint",
                format!("'{url}' must be an http:// URL (a local collector); https is not supported yet"),
            ));
        }
        self.validate_cluster()?;
        if !(1..=10_000).contains(&self.export.batch) {
            return Err(key_err("export.batch", "must be 1-10000"));
        }
        for (name, value) in &self.export.headers {
            if actix_web::http::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || actix_web::http::header::HeaderValue::from_str(value).is_err()
            {
                return Err(key_err("export.headers", format!("'{name}' is not a valid header")));
            }
        }
        for (key, value) in [
            ("universal_deadline_ms", self.universal_deadline_ms),
            ("body_timeout_ms", self.body_timeout_ms),
            ("max_pending_body_bytes", self.max_pending_body_bytes as u64),
            ("log_queue", self.log_queue as u64),
            ("upstream.connect_timeout_ms", self.upstream.connect_timeout_ms),
            ("upstream.first_byte_timeout_ms", self.upstream.first_byte_timeout_ms),
            ("upstream.idle_timeout_ms", self.upstream.idle_timeout_ms),
        ] {
            if value == 0 {
                return Err(key_err(key, "must be greater than 0"));
            }
        }
        if let Some(path) = &self.upstream.extra_ca_file
            && !path.is_file()
        {
            return Err(key_err("upstream.extra_ca_file", format!("{} is not a file", path.display())));
        }
        for (slug, over) in &self.providers {
            let Some(provider) = providers::builtin(slug) else {
                return Err(key_err(format!("providers.{slug}"), "unknown provider slug"));
            };
            if let Some(url) = &over.base_url {
                providers::check_template(provider, url)
                    .map_err(|reason| key_err(format!("providers.{slug}.base_url"), reason))?;
            }
            if let Some(account) = &over.account_id {
                providers::check_host_part(account)
                    .map_err(|reason| key_err(format!("providers.{slug}.account_id"), reason))?;
            }
        }
        Ok(())
    }

    /// The parsed listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| key_err("listen", format!("'{}' is not an IP:port address", self.listen)))
    }

    /// The parsed admin listen address, when the admin UI has its own listener.
    pub fn admin_listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        self.admin_listen
            .as_deref()
            .map(|a| a.parse().map_err(|_| key_err("admin_listen", format!("'{a}' is not an IP:port address"))))
            .transpose()
    }

    /// The parsed `trusted_proxies` (a bare address is a /32 or /128).
    pub fn trusted_proxy_nets(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.trusted_proxies
            .iter()
            .map(|p| {
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| key_err("trusted_proxies", format!("'{p}' is not an IP address or CIDR range")))
            })
            .collect()
    }

    /// Path of the redb file inside the data directory.
    #[must_use]
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("torii.redb")
    }
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    text.parse::<toml::Table>().map_err(|e| ConfigError::Syntax { path: path.to_path_buf(), message: e.to_string() })
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value, env_name: &str) -> Result<(), ConfigError> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut current = table;
    for part in parents {
        let entry = current.entry(part.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| key_err(env_name, format!("`{part}` is not a table")))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// Environment variables cannot carry `-`, so `azure_openai` means `azure-openai`.
fn normalise_provider_keys(table: &mut toml::Table) {
    if let Some(toml::Value::Table(providers)) = table.get_mut("providers") {
        let taken = std::mem::take(providers);
        for (slug, mut value) in taken {
            if let toml::Value::Table(inner) = &mut value {
                let inner_taken = std::mem::take(inner);
                for (k, v) in inner_taken {
                    inner.insert(k.replace('-', "_"), v);
                }
            }
            let slug = slug.replace('_', "-");
            match (providers.get_mut(&slug), value) {
                (Some(toml::Value::Table(existing)), toml::Value::Table(more)) => {
                    existing.extend(more);
                }
                (_, value) => {
                    providers.insert(slug, value);
                }
            }
        }
    }
}

/// Accepts a list of strings, or one string of comma-separated items (environment values).
fn list_or_commas<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Raw::deserialize(deserializer)? {
        Raw::List(items) => items,
        Raw::Text(s) => s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(String::from).collect(),
    })
}

/// Accepts a number either as a TOML integer or as a string (environment values are strings).
fn lenient<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + std::str::FromStr,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(i64),
        Text(String),
    }
    let fail = || serde::de::Error::custom("expected a non-negative integer");
    match Raw::deserialize(deserializer)? {
        Raw::Int(n) => u64::try_from(n).ok().and_then(|n| T::try_from(n).ok()).ok_or_else(fail),
        Raw::Text(s) => s.trim().parse().map_err(|_| fail()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:1\"\naccount_id = \"fromfile\"\nmax_body_bytes = 10\n[upstream]\nconnect_timeout_ms = 5\n").unwrap();
        let flags = Flags { listen: Some("127.0.0.1:3".into()), ..Flags::default() };
        let c = Config::load_from(
            Some(&file),
            env(&[
                ("TORII_LISTEN", "127.0.0.1:2"),
                ("TORII_ACCOUNT_ID", "fromenv"),
                ("TORII_UPSTREAM__CONNECT_TIMEOUT_MS", "7"),
            ]),
            &flags,
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:3");
        assert_eq!(c.account_id, "fromenv");
        assert_eq!(c.max_body_bytes, 10);
        assert_eq!(c.upstream.connect_timeout_ms, 7);
        assert_eq!(c.upstream.first_byte_timeout_ms, 120_000);
    }

    #[test]
    fn cluster_settings_load_from_the_environment_and_bad_ones_are_named() {
        let c = Config::load_from(
            None,
            env(&[
                ("TORII_CLUSTER__REDIS_URL", "redis://127.0.0.1:6390"),
                ("TORII_CLUSTER__ON_REDIS_FAILURE", "refuse"),
            ]),
            &Flags::default(),
        )
        .unwrap();
        assert_eq!(c.cluster.redis_url.as_deref(), Some("redis://127.0.0.1:6390"));
        assert_eq!(c.cluster.on_redis_failure, RedisFailure::Refuse);
        for (key, value) in [("TORII_CLUSTER__REDIS_URL", "rediss://h:1"), ("TORII_CLUSTER__REDIS_TIMEOUT_MS", "0")] {
            let e = Config::load_from(None, env(&[(key, value)]), &Flags::default()).unwrap_err().to_string();
            assert!(e.contains("cluster.redis_"), "{key}: {e}");
        }
    }

    #[test]
    fn env_provider_slugs_map_to_hyphens() {
        let c = Config::load_from(
            None,
            env(&[("TORII_PROVIDERS__AZURE_OPENAI__BASE_URL", "http://127.0.0.1:9/{resource}/{deployment}")]),
            &Flags::default(),
        )
        .unwrap();
        assert!(c.providers["azure-openai"].base_url.as_deref().unwrap().starts_with("http://127.0.0.1:9/"));
    }

    #[test]
    fn trusted_proxies_from_a_list_or_commas() {
        let c =
            Config::load_from(None, env(&[("TORII_TRUSTED_PROXIES", "10.0.0.1, 192.168.0.0/16")]), &Flags::default())
                .unwrap();
        let nets = c.trusted_proxy_nets().unwrap();
        assert_eq!(nets.len(), 2);
        assert!(nets[1].contains(&"192.168.7.7".parse::<std::net::IpAddr>().unwrap()));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "trusted_proxies = [\"::1\", \"127.0.0.0/8\"]\n").unwrap();
        let c = Config::load_from(Some(&file), env(&[]), &Flags::default()).unwrap();
        assert_eq!(c.trusted_proxy_nets().unwrap().len(), 2);
    }

    #[test]
    fn live_changes_apply_and_the_rest_is_named() {
        let old = Config::default();
        let mut new = Config { log_level: "debug".into(), listen: "127.0.0.1:9999".into(), ..Config::default() };
        new.upstream.first_byte_timeout_ms = 5_000;
        new.providers.insert(
            "openai".into(),
            ProviderOverride { base_url: Some("http://127.0.0.1:9/v1".into()), account_id: None },
        );
        new.upstream.connect_timeout_ms = 1;
        let (merged, restart) = old.with_live_changes(&new);
        assert_eq!(merged.log_level, "debug");
        assert_eq!(merged.upstream.first_byte_timeout_ms, 5_000);
        assert!(merged.providers.contains_key("openai"));
        assert_eq!(merged.listen, old.listen, "the listener stays until a restart");
        assert_eq!(merged.upstream.connect_timeout_ms, old.upstream.connect_timeout_ms);
        assert_eq!(restart, ["listen", "upstream"]);
        assert!(old.with_live_changes(&old).1.is_empty());
    }

    #[test]
    fn bad_keys_are_named() {
        let cases = [
            (vec![("TORII_LISTEN", "nonsense")], "listen"),
            (vec![("TORII_UPSTREAM__CONNECT_TIMEOUT_MS", "soon")], "upstream.connect_timeout_ms"),
            (vec![("TORII_BOGUS", "1")], "bogus"),
            (vec![("TORII_PROVIDERS__NOPE__BASE_URL", "http://x")], "providers.nope"),
            (vec![("TORII_PROVIDERS__OPENAI__BASE_URL", "ftp://x")], "providers.openai.base_url"),
            (vec![("TORII_PROVIDERS__OPENAI__BASE_URL", "http://x/{nope}")], "providers.openai.base_url"),
            (vec![("TORII_ACCOUNT_ID", "a/b")], "account_id"),
            (vec![("TORII_TRUSTED_PROXIES", "10.0.0.1,nope")], "trusted_proxies"),
            (vec![("TORII_ADMIN_LISTEN", "here")], "admin_listen"),
        ];
        for (vars, key) in cases {
            let err = Config::load_from(None, env(&vars), &Flags::default()).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}")), "{vars:?}: {err}");
        }
    }
}
