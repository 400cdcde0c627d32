//! The `torii` binary: parse the CLI, load config, init tracing, run.

use std::process::ExitCode;

use clap::Parser;
use torii::cli::{Cli, Command};
use torii::config::{Config, LogFormat};

/// mimalloc: log records are built on the workers and freed on the writer thread, a pattern
/// glibc's malloc serves poorly (measured: malloc/free were ~16 % of the process's CPU).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gives the calling thread's unused memory back to the system (see `torii::memory`): frees
/// its heap's empty pages and purges them at once, instead of at its next allocation.
#[expect(unsafe_code, reason = "mimalloc's `mi_collect` has no safe wrapper in any crate")]
fn release_unused_memory() {
    // SAFETY: `mi_collect` takes no pointer and touches only the allocator's own state; mimalloc
    // is this process's global allocator, so its heaps are the ones to collect.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

fn init_tracing(config: &Config) {
    let from_env = tracing_subscriber::EnvFilter::try_from_env("TORII_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .ok();
    let overridden = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(&config.log_level));
    // SIGHUP applies a changed `log_level` (unless TORII_LOG / RUST_LOG decide the filter).
    macro_rules! install {
        ($builder:expr) => {{
            let builder = $builder;
            let handle = builder.reload_handle();
            builder.init();
            torii::app::set_log_level_reloader(Box::new(move |level: &str| {
                if overridden {
                    return Err("TORII_LOG or RUST_LOG sets the filter; log_level is not applied".into());
                }
                handle.reload(tracing_subscriber::EnvFilter::new(level)).map_err(|e| e.to_string())
            }));
        }};
    }
    if config.log_format == LogFormat::Json {
        install!(
            tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_filter_reloading()
        );
    } else {
        install!(
            tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_filter_reloading()
        );
    }
}

fn main() -> ExitCode {
    // Transparent huge pages off for this process. mimalloc asks for them on its arenas, and
    // memory it hands back and takes again (the log writer's batch buffers, redb's page
    // buffers) then costs zeroing a whole 2 MiB page at each fault. Measured on logged JSON at
    // c=32: the writer's CPU went from 8.2–9.5 to 6.9–7.7 µs a record. An older kernel
    // without the flag runs as before.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    torii::memory::set_release(release_unused_memory);
    let cli = Cli::parse();
    let config = match cli.global.load_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("torii: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::CheckConfig => {
            let _ = torii::cli::say(format_args!("configuration is valid"));
            Ok(())
        }
        Command::Token(cmd) => torii::cli::run_token(&config, cmd),
        Command::Admin(cmd) => torii::cli::run_admin(&config, cmd),
        Command::Check => torii::cli::run_check(&config),
        Command::Backup { file } => torii::cli::run_backup(&config, &file),
        Command::Restore { file } => torii::cli::run_restore(&config, &file),
        Command::MigrateToCluster { merge } => torii::cli::run_migrate_to_cluster(&config, merge),
        Command::Serve => {
            init_tracing(&config);
            serve(config)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("torii: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> Result<(), String> {
    actix_web::rt::System::new().block_on(async move {
        let running = torii::app::start(config).map_err(|e| e.to_string())?;
        tracing::info!(addr = %running.addr, "listening");
        let _ = torii::cli::say(format_args!("listening on {}", running.addr));
        let admin_addr = running.admin_addr.unwrap_or(running.addr);
        if let Some(addr) = running.admin_addr {
            tracing::info!(%addr, "admin UI listening");
            let _ = torii::cli::say(format_args!("admin UI on http://{addr}/admin"));
        }
        if let Some(path) = &running.setup_path {
            // The one place a secret is printed on purpose: it works once, until an admin exists.
            let _ = torii::cli::say(format_args!(
                "no admin yet: open http://{admin_addr}{path} to create the first one (one-time link)"
            ));
            tracing::warn!("no admin user yet: the one-time setup link is on standard output");
        }
        let logs = std::sync::Arc::clone(&running.gateway.logs);
        let gateway = std::sync::Arc::clone(&running.gateway);
        let settings = std::sync::Arc::clone(&running.gateway.settings);
        running.server.await.map_err(|e| e.to_string())?;
        // In-flight requests have finished: commit every queued log before exiting.
        logs.close();
        if let Err(e) = settings.persist_token_usage() {
            tracing::warn!(error = %e, "cannot record token last-use times");
        }
        gateway.save_spend();
        gateway.traces.flush();
        tracing::info!("stopped");
        Ok(())
    })
}
