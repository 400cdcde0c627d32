//! The local control socket (`data_dir/torii.sock`, mode 0600): how `torii backup` asks a running
//! server for a consistent copy (the server holds the database file). One command per connection,
//! one line each way: `backup /absolute/path` → `ok ENTRIES BYTES` or `error MESSAGE`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::store::Store;

/// The socket's path in a data directory.
#[must_use]
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("torii.sock")
}

/// Serves the socket on its own thread until the process ends.
pub fn serve(data_dir: &Path, store: Store) -> std::io::Result<()> {
    let path = path(data_dir);
    // A socket left by a server that did not stop cleanly (this process holds the database now).
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let store = Arc::new(store);
    std::thread::Builder::new().name("torii-control".into()).spawn(move || {
        for conn in listener.incoming() {
            match conn {
                Ok(conn) => answer(&conn, &store),
                Err(e) => tracing::warn!(error = %e, "control socket"),
            }
        }
    })?;
    Ok(())
}

fn answer(conn: &UnixStream, store: &Store) {
    let mut line = String::new();
    if BufReader::new(std::io::Read::take(conn, 4096)).read_line(&mut line).is_err() {
        return;
    }
    let reply = match line.trim_end().split_once(' ') {
        Some(("backup", target)) if Path::new(target).is_absolute() => match store.backup_to(Path::new(target)) {
            Ok(c) => {
                tracing::info!(path = target, entries = c.entries, bytes = c.bytes, "backup written");
                format!("ok {} {}\n", c.entries, c.bytes)
            }
            Err(e) => format!("error {e}\n"),
        },
        _ => "error unknown command (expected: backup /absolute/path)\n".to_string(),
    };
    let _ = (&*conn).write_all(reply.as_bytes());
}

/// Asks the server on `data_dir` for a backup to `target` (an absolute path).
pub fn request_backup(data_dir: &Path, target: &Path) -> Result<String, String> {
    let path = path(data_dir);
    let mut conn = UnixStream::connect(&path).map_err(|e| {
        format!("the server holds the database but its control socket {} does not answer: {e}", path.display())
    })?;
    conn.write_all(format!("backup {}\n", target.display()).as_bytes()).map_err(|e| e.to_string())?;
    let mut reply = String::new();
    BufReader::new(conn).read_line(&mut reply).map_err(|e| e.to_string())?;
    match reply.trim_end().split_once(' ') {
        Some(("ok", counts)) => Ok(counts.to_string()),
        Some(("error", message)) => Err(message.to_string()),
        _ => Err(format!("unexpected answer from the server: {reply}")),
    }
}
