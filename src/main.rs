//! The `torii` binary: parse the CLI, load config, init tracing, run.

use std::process::ExitCode;

use clap::Parser;
use torii::cli::{Cli, Command};
use torii::config::{Config, LogFormat};

/// mimalloc: log records are built on the workers and freed on the writer thread, a pattern
/// glibc's malloc serves poorly (measured: malloc/free were ~16 % of the process's CPU).
#[global_allocator]
static GLOBAL: alloc::MiMalloc = alloc::MiMalloc;

/// mimalloc as the global allocator, calling the plain functions wherever the alignment asked
/// for is one `mi_malloc` gives anyway.
///
/// The `mimalloc` crate calls `mi_malloc_aligned` for every allocation. In mimalloc v3 that
/// path, when the page's free list is empty, over-allocates (`size + align - 1`) unless the
/// block size is a power of two: measured at c=32, 4.2 % of Torii's CPU samples were in
/// `mi_theap_malloc_zero_aligned_at_{overalloc,generic}`. As a C `malloc` replacement,
/// `mi_malloc` returns memory aligned for `max_align_t` (16 bytes) from 16 bytes up, and to
/// 8 below: the rule std's own `System` allocator applies to `malloc` on x86-64.
#[expect(unsafe_code, reason = "a global allocator is unsafe by definition: it forwards to mimalloc")]
mod alloc {
    use std::alloc::{GlobalAlloc, Layout};
    use std::ffi::c_void;

    use libmimalloc_sys as mi;

    /// The allocator.
    pub struct MiMalloc;

    /// What `mi_malloc` guarantees for blocks at least this large.
    const MIN_ALIGN: usize = 16;

    /// Whether the plain functions give `align` for `size` bytes.
    #[inline]
    fn plain(size: usize, align: usize) -> bool {
        align <= MIN_ALIGN && align <= size
    }

    /// `plain_fn` where it gives the layout's alignment, else `aligned_fn`.
    #[inline]
    unsafe fn allocate(
        layout: Layout,
        plain_fn: unsafe extern "C" fn(usize) -> *mut c_void,
        aligned_fn: unsafe extern "C" fn(usize, usize) -> *mut c_void,
    ) -> *mut u8 {
        // SAFETY: the caller passes a mimalloc allocation pair, which accepts any size and
        // power-of-two alignment.
        unsafe {
            if plain(layout.size(), layout.align()) {
                plain_fn(layout.size()).cast()
            } else {
                aligned_fn(layout.size(), layout.align()).cast()
            }
        }
    }

    // SAFETY: each method forwards to the mimalloc function with the same contract; the plain
    // ones only where their alignment guarantee covers the layout (see `plain`).
    unsafe impl GlobalAlloc for MiMalloc {
        #[inline]
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: mimalloc's allocation functions accept any size and power-of-two alignment.
            unsafe { allocate(layout, mi::mi_malloc, mi::mi_malloc_aligned) }
        }

        #[inline]
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: as `alloc`.
            unsafe { allocate(layout, mi::mi_zalloc, mi::mi_zalloc_aligned) }
        }

        #[inline]
        unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
            // SAFETY: `ptr` came from this allocator (the caller's contract); `mi_free` takes
            // any mimalloc pointer, aligned or not.
            unsafe { mi::mi_free(ptr.cast::<c_void>()) }
        }

        #[inline]
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: `ptr` came from this allocator; both functions take any mimalloc pointer
            // and keep the old contents up to the smaller size.
            unsafe {
                if plain(new_size, layout.align()) {
                    mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
                } else {
                    mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Every size and alignment a program asks for comes back aligned, zeroed where asked,
        /// and keeps its bytes through growing and shrinking.
        #[test]
        fn layouts_come_back_aligned() {
            let a = MiMalloc;
            for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
                for size in [1usize, 3, 8, 15, 16, 24, 40, 48, 100, 1000, 5000, 70_000] {
                    let Ok(layout) = Layout::from_size_align(size, align) else { continue };
                    // SAFETY: a non-zero size; every pointer is freed once, with its layout.
                    unsafe {
                        let p = a.alloc(layout);
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "size {size} align {align}");
                        p.write_bytes(0xAB, size);
                        let bigger = a.realloc(p, layout, size * 3);
                        assert_eq!(bigger as usize % align, 0, "grown {size} align {align}");
                        assert!((0..size).all(|i| *bigger.add(i) == 0xAB));
                        let grown = Layout::from_size_align(size * 3, align).unwrap_or(layout);
                        let smaller = a.realloc(bigger, grown, size.div_ceil(2));
                        assert_eq!(smaller as usize % align, 0, "shrunk {size} align {align}");
                        assert!((0..size.div_ceil(2)).all(|i| *smaller.add(i) == 0xAB));
                        a.dealloc(smaller, Layout::from_size_align(size.div_ceil(2), align).unwrap_or(layout));
                        let z = a.alloc_zeroed(layout);
                        assert_eq!(z as usize % align, 0);
                        assert!((0..size).all(|i| *z.add(i) == 0));
                        a.dealloc(z, layout);
                    }
                }
            }
        }
    }
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
            println!("configuration is valid");
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
        println!("listening on {}", running.addr);
        let admin_addr = running.admin_addr.unwrap_or(running.addr);
        if let Some(addr) = running.admin_addr {
            tracing::info!(%addr, "admin UI listening");
            println!("admin UI on http://{addr}/admin");
        }
        if let Some(path) = &running.setup_path {
            // The one place a secret is printed on purpose: it works once, until an admin exists.
            println!("no admin yet: open http://{admin_addr}{path} to create the first one (one-time link)");
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
