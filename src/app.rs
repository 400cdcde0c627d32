//! Builds the shared state, binds the listener (port 0 works), runs the server.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};

use crate::cache::Cache;
use crate::config::Config;
use crate::control::{self, Change, Settings};
use crate::gateway::body::PendingBodies;
use crate::gateway::{Gateway, client};
use crate::http::{self, Surfaces, ops::Observed, ui::AdminState};
use crate::metrics::Metrics;
use crate::secrets::SecretBox;
use crate::store::Store;
use crate::store::replica::PgTarget;

/// Settings every listener shares (a macro: `HttpServer`'s generic bounds are long).
macro_rules! tune {
    ($server:expr, $config:expr) => {{
        let server = $server
            .shutdown_timeout($config.shutdown_grace_secs)
            // A response head and body written apart must not wait for the client's delayed ACK.
            .tcp_nodelay(true)
            // A client that closes its side has gone (as nginx takes it): the answer it waits
            // for is dropped at once, which cancels the upstream request, instead of running on
            // until the next chunk fails to send or the idle timeout.
            .h1_allow_half_closed(false)
            .client_request_timeout(Duration::from_secs(60));
        if $config.workers > 0 { server.workers($config.workers) } else { server }
    }};
}

/// Binds a server to a listener, over TLS when a certificate is configured.
macro_rules! listen {
    ($server:expr, $listener:expr, $addr:expr, $cert:expr) => {{
        let bound = match &$cert {
            Some(cert) => $server.listen_rustls_0_23($listener, cert.server_config()),
            None => $server.listen($listener),
        };
        bound.map_err(|source| StartError::Bind { addr: $addr.to_string(), source })?
    }};
}

/// A started server: its address, and a handle to stop it.
pub struct Running {
    /// The bound address (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// The admin UI's own listener, when `admin_listen` is set.
    pub admin_addr: Option<SocketAddr>,
    /// Stops the server.
    pub handle: ServerHandle,
    /// The server future (both listeners); await it (or spawn it) to run.
    pub server: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>>>>,
    /// Shared state, for tests and background tasks.
    pub gateway: Arc<Gateway>,
    /// Admin UI sessions and the bootstrap link.
    pub admin: Arc<AdminState>,
    /// While no admin exists: the one-time path (`/admin/setup?token=...`) that creates the first.
    pub setup_path: Option<String>,
}

/// A startup failure, with a message for operators.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    /// TLS or other configuration could not be loaded.
    #[error("{0}")]
    Config(String),
}

/// The key stored provider keys are sealed with (created on first start, unless the store holds
/// keys sealed with a key that has gone missing).
fn open_secrets(store: &Store, key_path: &std::path::Path) -> Result<SecretBox, StartError> {
    if !key_path.exists() {
        let sealed = store.list::<crate::store::ProviderKeyRecord>()?.len();
        if sealed > 0 {
            return Err(StartError::Config(format!(
                "the secrets key {} is missing, but the database holds {sealed} stored provider key(s) sealed with it; \
                 restore the key file from a backup (a new key could not open them)",
                key_path.display()
            )));
        }
    }
    SecretBox::open_or_create(key_path).map_err(StartError::Config)
}

/// Cluster mode: connects to PostgreSQL, applies its migrations and replaces this node's control
/// records with the cluster's (before anything else reads them).
fn join_cluster(store: &Store, url: &str, timeout_ms: u64) -> Result<PgTarget, StartError> {
    store
        .join_cluster_at(url, Duration::from_millis(timeout_ms))
        .map_err(|e| StartError::Config(format!("cluster.postgres_url: {e}")))
}

/// Cluster mode: applies the other nodes' changes as they are published, and rebuilds the
/// snapshot the request path reads.
fn follow_cluster(target: PgTarget, settings: &Arc<Settings>) -> std::io::Result<()> {
    let reader = Arc::clone(settings);
    let applier = Arc::clone(settings);
    crate::store::replica::listen(
        target,
        move || reader.control_version().unwrap_or(0),
        move |pulled| match applier.apply_cluster_changes(&pulled) {
            Ok(()) => {}
            Err(e) => tracing::error!(error = %e, "cannot apply the cluster's settings changes here"),
        },
    )
}

/// Opens the store, ensures the `default` gateway, binds, and builds the server (not yet polled).
pub fn start(config: Config) -> Result<Running, StartError> {
    let addr = config.listen_addr().map_err(|e| StartError::Config(e.to_string()))?;
    let tls = client::tls_config(&config.upstream).map_err(StartError::Config)?;
    let proxies = Arc::new(config.upstream.proxy_rules().map_err(|e| StartError::Config(e.to_string()))?);
    if proxies.any() {
        tracing::info!("upstream connections go through the egress proxy (NO_PROXY excepted)");
    }
    let store = Store::open(&config.db_path())?;
    let postgres = config
        .cluster
        .postgres_url
        .as_deref()
        .map(|url| join_cluster(&store, url, config.cluster.postgres_timeout_ms))
        .transpose()?;
    control::ensure_default_gateway(&store)?;
    let secrets = open_secrets(&store, &config.data_dir.join("secrets.key"))?;
    crate::control_socket::serve(&config.data_dir, store.clone()).map_err(|e| {
        StartError::Config(format!("cannot open the control socket in {}: {e}", config.data_dir.display()))
    })?;
    let settings = Arc::new(Settings::load_with_secrets(store, Some(Arc::new(secrets)))?);
    if let Some(target) = postgres {
        let failed = |e: std::io::Error| StartError::Config(format!("cannot start a thread for PostgreSQL: {e}"));
        follow_cluster(target.clone(), &settings).map_err(failed)?;
        crate::logs::pg::ship(settings.store().clone(), target).map_err(failed)?;
    }
    let (listener, addr) = bind(addr)?;
    let admin_listener =
        config.admin_listen_addr().map_err(|e| StartError::Config(e.to_string()))?.map(bind).transpose()?;
    let config = Arc::new(config);
    let gateway = new_gateway(&config, settings)?;
    crate::gateway::export::spawn(
        &gateway.settings,
        config.export.clone(),
        (config.upstream.clone(), Arc::clone(&tls), Arc::clone(&proxies)),
        Arc::clone(&gateway.export),
    )
    .map_err(|e| StartError::Config(format!("cannot start the log exporter: {e}")))?;
    spawn_housekeeping(&gateway);
    purge_cache_on_change(&gateway);
    let data = web::Data::from(Arc::clone(&gateway));
    let control = control_plane(&gateway);
    let trusted_proxies = config.trusted_proxy_nets().map_err(|e| StartError::Config(e.to_string()))?;
    let data_plane_port = admin_listener.is_some().then_some(addr.port());
    let shared_sessions = gateway.limiter.shared_sessions();
    let admin = Arc::new(AdminState { trusted_proxies, data_plane_port, shared_sessions, ..AdminState::default() });
    let setup_path = first_admin(&gateway.settings, &admin)?;
    let admin_data = web::Data::from(Arc::clone(&admin));
    let started = web::Data::new(Observed {
        started: Instant::now(),
        metrics: Arc::clone(&gateway.metrics),
        log_stats: Arc::clone(&gateway.logs.stats),
        export: Arc::clone(&gateway.export),
        pending_bodies: Arc::clone(&gateway.pending_bodies),
        limits: Arc::clone(&gateway.limiter),
    });
    let upstream = config.upstream.clone();
    let surfaces = if admin_listener.is_some() { Surfaces::DataPlane } else { Surfaces::All };
    let server = HttpServer::new({
        let (data, control, admin_data, started) = (data.clone(), control.clone(), admin_data.clone(), started.clone());
        move || {
            // The factory runs on each worker's thread.
            crate::memory::look_on_this_worker();
            App::new()
                .app_data(data.clone())
                .app_data(control.clone())
                .app_data(started.clone())
                .app_data(admin_data.clone())
                .app_data(web::Data::new(client::build_client(&upstream, Arc::clone(&tls), Arc::clone(&proxies))))
                .configure(|cfg| http::configure(cfg, surfaces))
                .wrap_fn(http::data_plane_first)
        }
    });
    let cert = tls_cert(&config, &gateway)?;
    let server = listen!(tune!(server, config), listener, addr, cert).run();
    let handle = server.handle();
    let mut servers: Vec<ServerFuture> = vec![Box::pin(server)];
    let mut admin_addr = None;
    if let Some((admin_listener, bound)) = admin_listener {
        let admin_server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(control.clone())
                .app_data(started.clone())
                .app_data(admin_data.clone())
                .configure(|cfg| http::configure(cfg, Surfaces::Admin))
        });
        let admin_server = tune!(admin_server, config).workers(1);
        servers.push(Box::pin(listen!(admin_server, admin_listener, bound, cert).run()));
        admin_addr = Some(bound);
    }
    if let (Some(tls), Some(_)) = (&config.tls, &cert)
        && let Some(redirect) = &tls.redirect_http
    {
        servers.push(redirect_server(redirect, addr.port(), &config)?);
    }
    let server: ServerFuture = Box::pin(async move { futures_util::future::try_join_all(servers).await.map(|_| ()) });
    Ok(Running { addr, admin_addr, handle, server, gateway, admin, setup_path })
}

type ServerFuture = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>>>>;

type LogLevelReloader = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

static LOG_LEVEL_RELOADER: std::sync::OnceLock<LogLevelReloader> = std::sync::OnceLock::new();

/// How the binary's tracing subscriber applies a new `log_level` (set once, by `main`).
pub fn set_log_level_reloader(f: LogLevelReloader) {
    let _ = LOG_LEVEL_RELOADER.set(f);
}

/// SIGHUP: reads the configuration again; what can change live does (log level, timeouts to the
/// first byte and between chunks, body limits, the universal deadline, provider URLs), the rest
/// is named in the log as needing a restart; TLS certificates reload.
fn reload_config(gateway: &Gateway) {
    let current = gateway.config();
    let new = match current.reload() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "SIGHUP: configuration not reloaded; the current one stays");
            return;
        }
    };
    let (merged, restart) = current.with_live_changes(&new);
    if merged.log_level != current.log_level
        && let Some(reload) = LOG_LEVEL_RELOADER.get()
        && let Err(e) = reload(&merged.log_level)
    {
        tracing::warn!(error = %e, "SIGHUP: log level not changed");
    }
    gateway.live_config.store(Arc::new(merged));
    if restart.is_empty() {
        tracing::info!("SIGHUP: configuration reloaded");
    } else {
        tracing::warn!(settings = ?restart, "SIGHUP: configuration reloaded; these changed settings need a restart");
    }
}

/// The TLS listener's certificate, watched for changes; SIGHUP (`systemctl reload`) reloads it.
/// The SIGHUP handler is installed either way: without one the signal would end the process.
fn tls_cert(config: &Config, gateway: &Arc<Gateway>) -> Result<Option<Arc<crate::tls::ReloadingCert>>, StartError> {
    let cert = match &config.tls {
        Some(tls) => {
            let cert = crate::tls::ReloadingCert::open(&tls.cert_file, &tls.key_file).map_err(StartError::Config)?;
            cert.watch();
            Some(cert)
        }
        None => None,
    };
    let on_hup = cert.clone();
    let weak = Arc::downgrade(gateway);
    // Registered now, before `start` returns (and the address is announced): a SIGHUP that
    // arrives before the task below first runs is queued for it instead of ending the process.
    let hup = {
        use actix_web::rt::signal::unix::{SignalKind, signal};
        signal(SignalKind::hangup())
    };
    actix_web::rt::spawn(async move {
        let Ok(mut hup) = hup else { return };
        while hup.recv().await.is_some() {
            if let Some(gateway) = weak.upgrade() {
                reload_config(&gateway);
            }
            let Some(cert) = &on_hup else {
                tracing::info!(
                    "SIGHUP: nothing to reload (only TLS certificates reload live; restart for other settings)"
                );
                continue;
            };
            if let Err(e) = cert.reload() {
                tracing::warn!(error = %e, "SIGHUP: TLS certificate not reloaded; the previous one stays");
            }
        }
    });
    Ok(cert)
}

/// A plain-HTTP listener that sends every request to the same path over HTTPS.
fn redirect_server(addr: &str, https_port: u16, config: &Config) -> Result<ServerFuture, StartError> {
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|_| StartError::Config(format!("tls.redirect_http: '{addr}' is not an IP:port address")))?;
    let (listener, bound) = bind(parsed)?;
    let server = HttpServer::new(move || {
        App::new().default_service(web::to(move |req: actix_web::HttpRequest| async move {
            let host = req.connection_info().host().to_string();
            let name = host
                .rsplit_once(':')
                .map_or(host.as_str(), |(n, p)| if p.bytes().all(|b| b.is_ascii_digit()) { n } else { host.as_str() });
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let location = if https_port == 443 {
                format!("https://{name}{path}")
            } else {
                format!("https://{name}:{https_port}{path}")
            };
            actix_web::HttpResponse::PermanentRedirect().insert_header(("location", location)).finish()
        }))
    })
    .workers(1)
    .shutdown_timeout(config.shutdown_grace_secs)
    .listen(listener)
    .map_err(|source| StartError::Bind { addr: bound.to_string(), source })?
    .run();
    Ok(Box::pin(server))
}

fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = TcpListener::bind(addr).map_err(|source| StartError::Bind { addr: addr.to_string(), source })?;
    let bound = listener.local_addr().map_err(|source| StartError::Bind { addr: addr.to_string(), source })?;
    Ok((listener, bound))
}

/// With no admin yet: `TORII_ADMIN_PASSWORD` creates `admin` (unattended installs), otherwise a
/// one-time setup link is issued for `serve` to print.
fn first_admin(settings: &Settings, admin: &AdminState) -> Result<Option<String>, StartError> {
    if settings.any_admin()? {
        return Ok(None);
    }
    if let Ok(password) = std::env::var("TORII_ADMIN_PASSWORD") {
        settings
            .create_admin("admin", &password)
            .map_err(|e| StartError::Config(format!("TORII_ADMIN_PASSWORD: {e}")))?;
        tracing::info!("created the admin user 'admin' from TORII_ADMIN_PASSWORD");
        return Ok(None);
    }
    Ok(Some(format!("/admin/setup?token={}", admin.bootstrap.issue())))
}

/// The management API's view of the data plane's state.
fn control_plane(gateway: &Gateway) -> web::Data<crate::control::ControlPlane> {
    web::Data::new(crate::control::ControlPlane {
        settings: Arc::clone(&gateway.settings),
        live_config: Arc::clone(&gateway.live_config),
        cache: Arc::clone(&gateway.cache),
        shared_cache: gateway.shared_cache.clone(),
        spend: Arc::clone(&gateway.spend),
        clock: Arc::clone(&gateway.clock),
    })
}

/// The data plane's state, fresh, with its log writer (which also counts the labeled metrics and
/// queues logs for export).
fn new_gateway(config: &Arc<Config>, settings: Arc<Settings>) -> Result<Arc<Gateway>, StartError> {
    let metrics = Arc::new(Metrics::default());
    let traces = Arc::new(crate::gateway::trace::Traces::new(&config.otel));
    let (counted, spans, seen) = (Arc::clone(&metrics), Arc::clone(&traces), Arc::downgrade(&settings));
    let observe: crate::logs::writer::Observer = Box::new(move |batch| {
        counted.labeled.observe_all(batch.iter().map(|e| (&e.gateway, &e.meta)));
        if batch.iter().any(|e| e.trace.is_some())
            && let Some(settings) = seen.upgrade()
        {
            let snapshot = settings.snapshot();
            for e in batch.iter().filter(|e| e.trace.is_some()) {
                spans.record(snapshot.gateways.get(&*e.gateway).map(AsRef::as_ref), e);
            }
        }
    });
    settings.set_export_on(config.export.url.is_some());
    let hooks = crate::logs::writer::Hooks {
        observe: Some(observe),
        export: Some(settings.export_filter()),
        ship: config.cluster.postgres_url.is_some(),
    };
    let logs = settings
        .start_log_sink(config.log_queue, hooks)
        .map_err(|e| StartError::Config(format!("cannot start the log writer: {e}")))?;
    let limiter = Arc::new(crate::cluster::Windows::new(&config.cluster));
    Ok(Arc::new(Gateway {
        live_config: Arc::new(arc_swap::ArcSwap::new(Arc::clone(config))),
        settings,
        metrics,
        logs,
        limiter: Arc::clone(&limiter),
        clock: Arc::default(),
        spend: Arc::new(crate::cluster::Spend::new(&limiter)),
        dice: crate::gateway::routing::Dice::default(),
        export: Arc::default(),
        traces,
        cache: Cache::new(config.cache_max_bytes),
        shared_cache: tokio::runtime::Handle::try_current().ok().and_then(|h| limiter.shared_cache(h)),
        pending_bodies: Arc::new(PendingBodies::new(config.max_pending_body_bytes)),
    }))
}

/// The one registration of the cache purges that admin changes call for.
fn purge_cache_on_change(gateway: &Arc<Gateway>) {
    let cache = Arc::downgrade(&gateway.cache);
    let shared = gateway.shared_cache.as_ref().map(Arc::downgrade);
    gateway.settings.on_change(move |change| {
        let Some(cache) = cache.upgrade() else { return };
        let shared = shared.as_ref().and_then(std::sync::Weak::upgrade);
        match change {
            Change::GatewayUpdated { id, purge_cache: true } | Change::GatewayDeleted { id } => {
                cache.purge_gateway(id);
                if let Some(shared) = shared {
                    shared.purge_gateway_later(id);
                }
            }
            Change::GatewayUpdated { purge_cache: false, .. } => {}
            Change::ProviderMoved { slug } => {
                cache.purge_provider(slug);
                if let Some(shared) = shared {
                    shared.purge_provider_later(slug);
                }
            }
        }
    });
}

/// Reads the saved spend; then every 30 s, until the gateway is dropped: removes expired cache
/// entries, writes token last-use times and the spend so far to the store (off the request path).
fn spawn_housekeeping(gateway: &Arc<Gateway>) {
    gateway.restore_spend();
    let weak = Arc::downgrade(gateway);
    let _ = std::thread::Builder::new().name("torii-housekeeping".into()).spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(30));
            let Some(gateway) = weak.upgrade() else { return };
            gateway.cache.sweep();
            if let Err(e) = gateway.settings.persist_token_usage() {
                tracing::warn!(error = %e, "cannot record token last-use times");
            }
            gateway.save_spend();
            gateway.expire_logs();
        }
    });
}
