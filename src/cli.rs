//! Command-line interface: clap definitions and the commands that are not `serve`.

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::NewToken;
use crate::config::{Config, Flags, LogFormat};
use crate::store::{Scope, Store, TokenRecord};

/// Torii: a self-hosted AI gateway compatible with Cloudflare AI Gateway.
#[derive(Debug, Parser)]
#[command(name = "torii", version, about)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// TOML config file.
    #[arg(long, global = true, env = "TORII_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (the redb file lives here).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:8787.
    #[arg(long, global = true)]
    pub listen: Option<String>,
    /// Log line format.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve,
    /// Validate the configuration and exit.
    CheckConfig,
    /// Manage API tokens (works while the server is stopped).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage admin users of the web UI (works while the server is stopped).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Verify the database file (redb's integrity check; works while the server is stopped).
    Check,
    /// Write a consistent copy of the database to FILE (also while the server runs).
    Backup {
        /// The new file.
        file: std::path::PathBuf,
    },
    /// Check FILE and install it as the database (refused while a server runs).
    Restore {
        /// The backup to install.
        file: std::path::PathBuf,
    },
    /// Copy this node's settings (gateways, tokens, stored keys, custom providers, DLP profiles,
    /// routes, aliases, datasets, admins) into the PostgreSQL database named by
    /// `cluster.postgres_url` (the server must be stopped). Refused if that database already
    /// holds settings, unless `--merge` (this node's records then replace theirs key by key).
    MigrateToCluster {
        /// Add to a cluster that already has settings.
        #[arg(long)]
        merge: bool,
    },
}

/// `torii admin ...`: the password comes from `TORII_ADMIN_PASSWORD` or a prompt.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an admin user.
    Create {
        /// Login name.
        #[arg(long)]
        username: String,
    },
    /// Set an admin's password.
    SetPassword {
        /// Login name.
        username: String,
    },
}

/// `torii token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its secret (once) on stdout.
    Create {
        /// Label.
        #[arg(long)]
        name: String,
        /// Scope; repeat for several.
        #[arg(long = "scope", value_enum, required = true)]
        scopes: Vec<ScopeArg>,
        /// Gateway the token is limited to; repeat for several; none means all.
        #[arg(long = "gateway")]
        gateways: Vec<String>,
        /// Expiry (RFC 3339).
        #[arg(long)]
        expires_at: Option<String>,
        /// Requests per `--rate-limit-interval` for this token (on top of the gateway's limit).
        #[arg(long, requires = "rate_limit_interval")]
        rate_limit: Option<u64>,
        /// Seconds.
        #[arg(long, requires = "rate_limit")]
        rate_limit_interval: Option<u64>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id.
    Revoke {
        /// Token id.
        id: String,
    },
}

impl GlobalArgs {
    /// Loads and validates the configuration with these flags on top.
    pub fn load_config(&self) -> Result<Config, crate::config::ConfigError> {
        let flags = Flags {
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            log_format: self.log_format.map(LogFormat::from),
        };
        Config::load(self.config.as_deref(), &flags)
    }
}

/// The new password: `TORII_ADMIN_PASSWORD`, else asked twice on the terminal.
fn new_password() -> Result<String, String> {
    if let Ok(p) = std::env::var("TORII_ADMIN_PASSWORD") {
        return Ok(p);
    }
    let first = rpassword::prompt_password("new password: ")
        .map_err(|e| format!("cannot read a password ({e}); set TORII_ADMIN_PASSWORD instead"))?;
    let second = rpassword::prompt_password("again: ").map_err(|e| format!("cannot read a password: {e}"))?;
    if first != second {
        return Err("the passwords differ".into());
    }
    Ok(first)
}

/// Opens the store for a command run while the server is stopped; in cluster mode it first
/// catches up with PostgreSQL and then publishes its changes there.
fn open_store(config: &Config) -> Result<Store, String> {
    let store = Store::open(&config.db_path()).map_err(|e| e.to_string())?;
    if let Some(url) = &config.cluster.postgres_url {
        store
            .join_cluster_at(url, std::time::Duration::from_millis(config.cluster.postgres_timeout_ms))
            .map_err(|e| format!("cluster.postgres_url: {e}"))?;
    }
    Ok(store)
}

/// `torii migrate-to-cluster`: copies this node's control records into PostgreSQL.
pub fn run_migrate_to_cluster(config: &Config, merge: bool) -> Result<(), String> {
    use crate::store::replica::{self, PgTarget, Replica};
    let Some(url) = &config.cluster.postgres_url else {
        return Err("set cluster.postgres_url (or TORII_CLUSTER__POSTGRES_URL) to the cluster's database first".into());
    };
    let store = Store::open(&config.db_path()).map_err(|e| e.to_string())?;
    let rows = store.control_rows().map_err(|e| e.to_string())?;
    let target = PgTarget::parse(url, std::time::Duration::from_millis(config.cluster.postgres_timeout_ms))
        .map_err(|e| e.to_string())?;
    let pg = Replica::start(target).map_err(|e| e.to_string())?;
    let existing = pg.run(replica::count).map_err(|e| e.to_string())?;
    if existing > 0 && !merge {
        return Err(format!(
            "the cluster's database already holds {existing} settings record(s); nothing copied (use --merge to add this node's, replacing records with the same keys)"
        ));
    }
    let n = rows.len();
    let version = pg.run(move |c| replica::publish_all(c, &rows)).map_err(|e| e.to_string())?;
    eprintln!(
        "copied {n} settings record(s) into PostgreSQL (cluster settings version {version}); logs and analytics stay in this node's file"
    );
    Ok(())
}

/// Runs a `torii admin` command against the store (the server must be stopped).
pub fn run_admin(config: &Config, command: AdminCommand) -> Result<(), String> {
    let store = open_store(config)?;
    let settings = crate::control::Settings::load(store).map_err(|e| e.to_string())?;
    match command {
        AdminCommand::Create { username } => {
            let password = new_password()?;
            settings.create_admin(&username, &password).map_err(|e| e.to_string())?;
            eprintln!("created admin {username}");
        }
        AdminCommand::SetPassword { username } => {
            let password = new_password()?;
            settings.set_admin_password(&username, &password).map_err(|e| e.to_string())?;
            eprintln!("changed the password of {username}; sign in again with it");
        }
    }
    Ok(())
}

/// Writes a line to standard output. It may be closed or a pipe nobody reads any more (`torii
/// serve | head -1`), where `println!` would panic: the caller decides what a failed write means.
///
/// # Errors
/// The write's or the flush's.
pub fn say(line: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(line)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Runs a `torii token` command against the store (the server must be stopped).
pub fn run_token(config: &Config, command: TokenCommand) -> Result<(), String> {
    let store = open_store(config)?;
    // The same operations (and the same validation) as the API and the admin UI.
    let settings = crate::control::Settings::load(store).map_err(|e| e.to_string())?;
    match command {
        TokenCommand::Create { name, scopes, gateways, expires_at, rate_limit, rate_limit_interval } => {
            let scopes = scopes.into_iter().map(Scope::from).collect();
            let new = NewToken {
                name,
                scopes,
                gateways,
                expires_at,
                rate_limit: rate_limit.zip(rate_limit_interval),
                limits: crate::store::TokenLimits::default(),
            };
            new.validate().map_err(|(field, reason)| format!("--{}: {reason}", field.replace('_', "-")))?;
            let (secret, record) = settings.create_token(new).map_err(|e| e.to_string())?;
            eprintln!("created token {} ({}) with scopes {}", record.id, record.name, scope_list(&record));
            eprintln!("the secret is shown once, below; store it now");
            if let Err(e) = say(format_args!("{secret}")) {
                // A secret nobody could read is of use to no one: it does not stay valid.
                let revoked = settings.revoke_token(&record.id).map_err(|e| e.to_string())?;
                let what = if revoked { "revoked" } else { "not found to revoke" };
                return Err(format!("could not write the secret to standard output ({e}); token {} {what}", record.id));
            }
        }
        TokenCommand::List => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{:<38} {:<20} {:<16} {:<24} {:<22} STATUS",
                "ID", "NAME", "SCOPES", "GATEWAYS", "LAST USED"
            );
            for t in settings.tokens().map_err(|e| e.to_string())? {
                let gateways = if t.gateways.is_empty() { "*".to_string() } else { t.gateways.join(",") };
                let status = if t.revoked_at.is_some() { "revoked" } else { "active" };
                let used = t.last_used_at.as_deref().unwrap_or("never");
                let _ = writeln!(
                    out,
                    "{:<38} {:<20} {:<16} {:<24} {used:<22} {status}",
                    t.id,
                    t.name,
                    scope_list(&t),
                    gateways
                );
            }
        }
        TokenCommand::Revoke { id } => {
            if !settings.revoke_token(&id).map_err(|e| e.to_string())? {
                return Err(format!("no token with id {id}"));
            }
            eprintln!("revoked token {id}");
        }
    }
    Ok(())
}

fn scope_list(t: &TokenRecord) -> String {
    t.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

/// `torii check`: opens the store and runs redb's integrity check (checksums of every page).
pub fn run_check(config: &Config) -> Result<(), String> {
    let path = config.db_path();
    if !path.exists() {
        return Err(format!("no database at {}", path.display()));
    }
    let report = crate::store::Store::check(&path).map_err(|e| e.to_string())?;
    // The exit status carries the result; a closed standard output does not change it.
    let _ = say(format_args!("{}: {report}", path.display()));
    Ok(())
}

/// `torii backup FILE`: directly when no server runs, else through the server's control socket.
pub fn run_backup(config: &Config, file: &std::path::Path) -> Result<(), String> {
    let target = if file.is_absolute() {
        file.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| e.to_string())?.join(file)
    };
    if target.exists() {
        return Err(format!("{} exists already; name a new file", target.display()));
    }
    match crate::store::Store::open(&config.db_path()) {
        Ok(store) => {
            let c = store.backup_to(&target).map_err(|e| e.to_string())?;
            eprintln!("wrote {} ({} entries, {} bytes)", target.display(), c.entries, c.bytes);
        }
        Err(crate::store::StoreError::InUse(_)) => {
            let counts = crate::control_socket::request_backup(&config.data_dir, &target)?;
            eprintln!("the running server wrote {} ({counts} entries and bytes)", target.display());
        }
        Err(e) => return Err(e.to_string()),
    }
    Ok(())
}

/// `torii restore FILE`: refused while a server holds the database.
pub fn run_restore(config: &Config, file: &std::path::Path) -> Result<(), String> {
    let db = config.db_path();
    if db.exists() {
        match crate::store::Store::open(&db) {
            Ok(store) => drop(store),
            Err(crate::store::StoreError::InUse(_)) => {
                return Err(format!(
                    "a torii server is running on {}; stop it before restoring",
                    config.data_dir.display()
                ));
            }
            // A damaged current database is a reason to restore, not to refuse.
            Err(_) => {}
        }
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|e| e.to_string())?;
    let report = crate::store::backup::restore(file, &db).map_err(|e| e.to_string())?;
    eprintln!("restored {} from {}: {report}", db.display(), file.display());
    Ok(())
}

/// `--log-format` (the command line's name for [`LogFormat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(f: LogFormatArg) -> Self {
        match f {
            LogFormatArg::Text => Self::Text,
            LogFormatArg::Json => Self::Json,
        }
    }
}

/// `--scope` (the command line's name for a token [`Scope`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// Send data-plane requests through authenticated gateways.
    Run,
    /// Read through the management API.
    Read,
    /// Change through the management API (implies read).
    Edit,
}

impl From<ScopeArg> for Scope {
    fn from(s: ScopeArg) -> Self {
        match s {
            ScopeArg::Run => Self::Run,
            ScopeArg::Read => Self::Read,
            ScopeArg::Edit => Self::Edit,
        }
    }
}
