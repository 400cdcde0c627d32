//! Black-box tests of the compiled binary: config validation, tokens, serve, single instance,
//! graceful shutdown.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::helpers::within;
use crate::mock;

#[must_use]
pub fn torii(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_torii"));
    c.arg("--data-dir").arg(dir).env_remove("TORII_CONFIG").env("TORII_LOG", "warn");
    c
}

/// A running `torii serve` and the address it printed.
pub struct Served {
    pub child: Child,
    pub addr: String,
    /// Lines printed after `listening on`.
    lines: mpsc::Receiver<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[must_use]
pub fn serve(dir: &std::path::Path, envs: &[(&str, String)]) -> Served {
    let mut cmd = torii(dir);
    cmd.args(["--listen", "127.0.0.1:0", "serve"]).stdout(Stdio::piped()).stderr(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("torii serve printed nothing"));
    let addr =
        line.strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line: {line}")).to_string();
    Served { child, addr, lines: rx }
}

pub fn wait_exit(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "process did not exit in {secs} s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn sigterm(child: &Child) {
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success();
    assert!(ok);
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "listen = \"127.0.0.1:9999\"\n[providers.openai]\nbase_url = \"http://127.0.0.1:1/v1\"\n")
        .unwrap();
    let out = torii(dir.path()).args(["--config", good.to_str().unwrap(), "check-config"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let cases = [
        ("bad1.toml", "[upstream]\nconnect_timeout_ms = \"soon\"\n", "upstream.connect_timeout_ms"),
        ("bad2.toml", "lisen = \"x\"\n", "lisen"),
        ("bad3.toml", "[providers.azure-openai]\nbase_url = \"http://x/{nope}\"\n", "providers.azure-openai.base_url"),
        ("bad4.toml", "listen = [", "bad4.toml"),
    ];
    for (name, text, key) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = torii(dir.path()).args(["--config", path.to_str().unwrap(), "check-config"]).output().unwrap();
        assert!(!out.status.success(), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{name}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // Environment beats the file; flags beat the environment.
    let out = torii(dir.path()).env("TORII_MAX_BODY_BYTES", "zero").arg("check-config").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_body_bytes"));
    let out = torii(dir.path())
        .env("TORII_LISTEN", "bogus")
        .args(["--listen", "127.0.0.1:1", "check-config"])
        .output()
        .unwrap();
    assert!(out.status.success(), "--listen must override TORII_LISTEN");
}

#[test]
fn token_create_list_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let out = torii(dir.path())
        .args(["token", "create", "--name", "ci", "--scope", "edit", "--scope", "read"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let secret = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "the secret alone on stdout");
    assert!(secret.starts_with("torii_") && secret.len() == 70);
    let list = torii(dir.path()).args(["token", "list"]).output().unwrap();
    let listed = String::from_utf8(list.stdout).unwrap();
    assert!(listed.contains("ci") && listed.contains("edit,read") && listed.contains("active"), "{listed}");
    assert!(!listed.contains(secret), "the secret is never listed");
    let db = std::fs::read(dir.path().join("torii.redb")).unwrap();
    assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()), "only the hash is stored");
    let id = listed.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    assert!(torii(dir.path()).args(["token", "revoke", &id]).status().unwrap().success());
    let listed = String::from_utf8(torii(dir.path()).args(["token", "list"]).output().unwrap().stdout).unwrap();
    assert!(listed.contains("revoked"));
    let out = torii(dir.path()).args(["token", "revoke", "no-such-id"]).output().unwrap();
    assert!(!out.status.success());
}

/// `token create` whose secret cannot be written (standard output closed): an error, no panic,
/// and the token it made is revoked, since nobody has its secret.
#[test]
fn token_create_with_standard_output_closed_revokes_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = torii(dir.path())
        .args(["token", "create", "--name", "lost", "--scope", "read"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("could not write the secret") && err.contains("revoked"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let list = torii(dir.path()).args(["token", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    let row = list.lines().find(|l| l.contains("lost")).unwrap_or_else(|| panic!("{list}"));
    assert!(row.ends_with("revoked"), "{list}");
}

/// `check-config` and `check` with standard output closed: the exit status still tells the
/// result, and nothing panics.
#[test]
fn checks_with_standard_output_closed_answer_by_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    // A store to check.
    assert!(torii(dir.path()).args(["token", "list"]).output().unwrap().status.success());
    for args in [&["check-config"][..], &["check"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = torii(dir.path()).args(args).stdout(writer).stderr(Stdio::piped()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// Standard output closed before the server prints its lines (a pipe nobody reads, as
/// `torii serve | head -1` leaves it): it starts and serves anyway, and nothing panics.
#[actix_web::test]
async fn serve_runs_on_when_nobody_reads_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // A pipe whose read end is gone before the server starts: every line it prints fails (a
    // fresh data dir has no admin, so there are two: the address and the setup link).
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = torii(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}"), "serve"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = awc::Client::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        assert!(child.try_wait().unwrap().is_none(), "torii serve exited");
        if let Ok(resp) = client.get(format!("http://127.0.0.1:{port}/healthz")).send().await {
            break resp.status();
        }
        assert!(Instant::now() < deadline, "torii serve never answered");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 200);
    sigterm(&child);
    assert!(wait_exit(&mut child, 30).success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!err.contains("panicked"), "{err}");
}

#[actix_web::test]
async fn serve_is_single_instance_and_tokens_work_once_started() {
    let dir = tempfile::tempdir().unwrap();
    let out = torii(dir.path()).args(["token", "create", "--name", "a", "--scope", "read"]).output().unwrap();
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let served = serve(dir.path(), &[]);
    let client = awc::Client::default();
    let mut resp = client
        .get(format!("http://{}/client/v4/accounts/local/ai-gateway/gateways/default", served.addr))
        .insert_header(("authorization", format!("Bearer {secret}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["result"]["id"], "default");
    // Transparent huge pages are off for the process (`main`).
    let status = std::fs::read_to_string(format!("/proc/{}/status", served.child.id())).unwrap();
    assert!(status.lines().any(|l| l.split_whitespace().eq(["THP_enabled:", "0"])), "{status}");

    let second = torii(dir.path()).args(["--listen", "127.0.0.1:0", "serve"]).output().unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by another torii process"), "{err}");
    assert!(!err.contains("panicked"));
    let token = torii(dir.path()).args(["token", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&token.stderr).contains("in use by another torii process"));
}

#[actix_web::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let mock = mock::start();
    let dir = tempfile::tempdir().unwrap();
    let out = torii(dir.path()).args(["token", "create", "--name", "reader", "--scope", "read"]).output().unwrap();
    let reader = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut served = serve(dir.path(), &[("TORII_PROVIDERS__OPENAI__BASE_URL", mock.url())]);
    let used = awc::Client::default()
        .get(format!("http://{}/client/v4/accounts/local/ai-gateway/gateways", served.addr))
        .insert_header(("authorization", format!("Bearer {reader}")))
        .send()
        .await
        .unwrap();
    assert_eq!(used.status(), 200);
    let url = format!("http://{}/v1/local/default/openai/chat/completions", served.addr);
    let arrived = mock.state.new_request.notified();
    let in_flight = actix_web::rt::spawn(async move {
        let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
        let mut resp = client.post(url).insert_header(("x-mock", "hang:drain")).send_body("{}").await.unwrap();
        (resp.status(), resp.body().await.unwrap())
    });
    within(20, "the request to reach the upstream", arrived).await;
    sigterm(&served.child);
    mock.open_gate("drain");
    let (status, body) = within(20, "the in-flight response", in_flight).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"late");
    let exit = wait_exit(&mut served.child, 20);
    assert!(exit.success(), "{exit:?}");
    // The queue was drained before exit: the in-flight request's log is in the store.
    let store = torii::store::Store::open(&dir.path().join("torii.redb")).unwrap();
    let q = torii::logs::query::parse_query(&[]).unwrap();
    let page = torii::logs::query::list(&store, "default", &q).unwrap();
    assert_eq!(page.total_count, 1);
    assert_eq!(page.logs[0].status_code, 200);
    // The token's last use, kept in memory while serving, was written at shutdown.
    let tokens = store.list::<torii::store::TokenRecord>().unwrap();
    let at = tokens[0].last_used_at.as_deref().expect("last use recorded");
    assert!(torii::control::parse_rfc3339(at).is_some(), "{at}");
}

async fn log_total(client: &awc::Client, addr: &str, token: &str) -> u64 {
    let mut resp = client
        .get(format!("http://{addr}/client/v4/accounts/local/ai-gateway/gateways/default/logs?per_page=100"))
        .insert_header(("authorization", format!("Bearer {token}")))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().limit(1 << 24).await.unwrap();
    body["result_info"]["total_count"].as_u64().unwrap()
}

#[actix_web::test]
async fn sigkill_mid_load_keeps_every_committed_log() {
    let mock = mock::start();
    let dir = tempfile::tempdir().unwrap();
    let out = torii(dir.path()).args(["token", "create", "--name", "a", "--scope", "edit"]).output().unwrap();
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let envs = [("TORII_PROVIDERS__OPENAI__BASE_URL", mock.url())];
    let mut served = serve(dir.path(), &envs);
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let url = format!("http://{}/v1/local/default/openai/chat/completions", served.addr);
    for _ in 0..50 {
        assert_eq!(client.post(&url).send_body("{}").await.unwrap().status(), 200);
    }
    let addr = served.addr.clone();
    let committed = within(20, "50 committed logs", async {
        loop {
            let n = log_total(&client, &addr, &token).await;
            if n >= 50 {
                break n;
            }
            actix_web::rt::task::yield_now().await;
        }
    })
    .await;
    // Keep the gateway busy, then kill it without warning.
    let load_url = url.clone();
    let load = actix_web::rt::spawn(async move {
        let client = awc::Client::default();
        loop {
            if client.post(&load_url).send_body("{}").await.is_err() {
                break;
            }
        }
    });
    within(20, "more logs under load", async {
        while log_total(&client, &addr, &token).await < committed + 20 {
            actix_web::rt::task::yield_now().await;
        }
    })
    .await;
    let before_kill = log_total(&client, &addr, &token).await;
    served.child.kill().unwrap();
    served.child.wait().unwrap();
    within(20, "the load to notice", load).await.unwrap();

    let restarted = serve(dir.path(), &envs);
    let after = log_total(&client, &restarted.addr, &token).await;
    assert!(after >= before_kill, "{after} logs after restart, {before_kill} were committed before the kill");
}

#[test]
fn log_format_json_writes_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = torii(dir.path())
        .args(["--listen", "127.0.0.1:0", "--log-format", "json", "serve"])
        .env("TORII_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("no log line"));
    let _ = child.kill();
    let _ = child.wait();
    let parsed: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(parsed["level"], "INFO", "{line}");
    assert!(parsed["fields"]["message"].is_string(), "{line}");
}

#[actix_web::test]
async fn admin_accounts_come_from_the_setup_link_the_cli_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), &[]);
    let line = served.lines.recv_timeout(Duration::from_secs(10)).unwrap();
    let link = line.split_whitespace().find(|w| w.contains("/admin/setup?token=")).unwrap_or_else(|| panic!("{line}"));
    let client = awc::Client::builder().disable_redirects().finish();
    assert_eq!(client.get(link).send().await.unwrap().status(), 200, "the printed link opens the setup page");
    drop(served);

    let admin = |args: &[&str], password: &str| {
        torii(dir.path()).arg("admin").args(args).env("TORII_ADMIN_PASSWORD", password).output().unwrap()
    };
    let out = admin(&["create", "--username", "ops"], "short");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password"), "says what is wrong");
    assert!(admin(&["create", "--username", "ops"], "long enough password").status.success());
    let out = admin(&["create", "--username", "ops"], "long enough password");
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"));
    assert!(!admin(&["set-password", "ghost"], "another long password").status.success());
    assert!(admin(&["set-password", "ops"], "another long password").status.success());
    let store = torii::store::Store::open(&dir.path().join("torii.redb")).unwrap();
    assert!(torii::auth::admin::verify(&store, "ops", "another long password").unwrap());
    assert!(!torii::auth::admin::verify(&store, "ops", "long enough password").unwrap());
    drop(store);
    // With an admin, no setup link works.
    let served = serve(dir.path(), &[]);
    let resp = client.get(format!("http://{}/admin/setup?token=x", served.addr)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    drop(served);

    // Unattended installs: TORII_ADMIN_PASSWORD creates `admin` at first start.
    let fresh = tempfile::tempdir().unwrap();
    let served = serve(fresh.path(), &[("TORII_ADMIN_PASSWORD", "unattended password".to_string())]);
    drop(served);
    let store = torii::store::Store::open(&fresh.path().join("torii.redb")).unwrap();
    assert!(torii::auth::admin::verify(&store, "admin", "unattended password").unwrap());
}

/// `torii backup` while the server runs under write load, then `torii restore` into a new data
/// directory: every log committed before the backup and every setting is there, the copy passes
/// the integrity check, and restore is refused while a server holds the database.
#[actix_web::test]
async fn backup_under_load_and_restore() {
    let mock = mock::start();
    let dir = tempfile::tempdir().unwrap();
    let out = torii(dir.path()).args(["token", "create", "--name", "a", "--scope", "edit"]).output().unwrap();
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let envs = [("TORII_PROVIDERS__OPENAI__BASE_URL", mock.url())];
    let served = serve(dir.path(), &envs);
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let api = format!("http://{}/client/v4/accounts/local/ai-gateway", served.addr);
    let mut gateway = crate::management::gateway_body("team");
    gateway["cache_ttl"] = serde_json::json!(600);
    let resp = client.post(format!("{api}/gateways")).insert_header(("authorization", format!("Bearer {token}")));
    assert_eq!(resp.send_json(&gateway).await.unwrap().status(), 200);
    let url = format!("http://{}/v1/local/default/openai/chat/completions", served.addr);
    for _ in 0..100 {
        assert_eq!(client.post(&url).send_body("{}").await.unwrap().status(), 200);
    }
    let addr = served.addr.clone();
    let committed = within(20, "100 committed logs", async {
        loop {
            let n = log_total(&client, &addr, &token).await;
            if n >= 100 {
                break n;
            }
            actix_web::rt::task::yield_now().await;
        }
    })
    .await;
    let load_url = url.clone();
    let load = actix_web::rt::spawn(async move {
        let client = awc::Client::default();
        for _ in 0..2000 {
            if client.post(&load_url).send_body("{}").await.is_err() {
                break;
            }
        }
    });
    let backup = dir.path().join("copy.redb");
    let out = torii(dir.path()).arg("backup").arg(&backup).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let refused = torii(dir.path()).arg("restore").arg(&backup).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("stop it before restoring"));
    load.abort();
    drop(served);

    let fresh = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("secrets.key"), fresh.path().join("secrets.key")).unwrap();
    let out = torii(fresh.path()).arg("restore").arg(&backup).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let check = torii(fresh.path()).arg("check").output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("ok (2 gateways"),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let restored = serve(fresh.path(), &envs);
    let after = log_total(&client, &restored.addr, &token).await;
    assert!(after >= committed, "{after} logs restored, {committed} were committed before the backup");
    let mut resp = client
        .get(format!("http://{}/client/v4/accounts/local/ai-gateway/gateways/team", restored.addr))
        .insert_header(("authorization", format!("Bearer {token}")))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["result"]["cache_ttl"], 600, "settings and tokens came back: {body}");
    // An existing target is refused, not overwritten.
    let again = torii(fresh.path()).arg("backup").arg(&backup).output().unwrap();
    assert!(!again.status.success());
}

/// `systemctl reload` sends SIGHUP: the server keeps running (without a handler the signal would
/// end it).
#[actix_web::test]
async fn sighup_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = serve(dir.path(), &[]);
    let client = awc::Client::default();
    assert_eq!(client.get(format!("http://{}/healthz", served.addr)).send().await.unwrap().status(), 200);
    let ok = Command::new("kill").args(["-HUP", &served.child.id().to_string()]).status().unwrap().success();
    assert!(ok);
    // Still answering after the signal was handled (several requests over a short while).
    for _ in 0..20 {
        assert_eq!(client.get(format!("http://{}/healthz", served.addr)).send().await.unwrap().status(), 200);
        assert!(served.child.try_wait().unwrap().is_none(), "the server exited on SIGHUP");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// SIGHUP re-reads the config file: a provider's base URL changes without a restart; a file that
/// no longer loads leaves the running configuration as it was.
#[actix_web::test]
async fn sighup_reloads_what_can_change_live() {
    let (a, b) = (mock::start(), mock::start());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("torii.toml");
    let write =
        |base: &str| std::fs::write(&file, format!("[providers.openai]\nbase_url = \"{base}/openai/v1\"\n")).unwrap();
    write(&a.url());
    let served = serve(dir.path(), &[("TORII_CONFIG", file.display().to_string())]);
    let client = awc::Client::default();
    let url = format!("http://{}/v1/local/default/openai/chat/completions", served.addr);
    assert_eq!(client.post(&url).send_body("{}").await.unwrap().status(), 200);
    assert_eq!(a.requests().len(), 1);
    write(&b.url());
    let hup =
        || assert!(Command::new("kill").args(["-HUP", &served.child.id().to_string()]).status().unwrap().success());
    hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.requests().is_empty() {
        assert!(Instant::now() < deadline, "the new base URL was never used");
        assert_eq!(client.post(&url).send_body("{}").await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(&file, "[providers.openai]\nbase_url = \"ftp://nowhere\"\n").unwrap();
    hup();
    let before = b.requests().len();
    for _ in 0..5 {
        assert_eq!(client.post(&url).send_body("{}").await.unwrap().status(), 200, "still serving");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.requests().len(), before + 5, "a bad file changes nothing");
}
