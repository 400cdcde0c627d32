//! A failing disk: writes fail while a small tmpfs is full, Torii says so (readiness, metrics,
//! health page), keeps serving, and recovers by itself once space returns. Corruption: a damaged
//! database file never panics the start-up, and `torii check` names it. (The tests mount tmpfs:
//! they run as root, as CI does.)

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{TestApp, spawn_app_with};

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (these tests need root, as CI has): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Writes a file until the file system is full; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    path
}

async fn readyz(app: &TestApp) -> (u16, String) {
    let mut resp = app.client.get(app.url("/readyz")).send().await.unwrap();
    let body = crate::helpers::body_of(&mut resp).await;
    (resp.status().as_u16(), String::from_utf8_lossy(&body).into_owned())
}

async fn metric(app: &TestApp, name: &str) -> String {
    let mut resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    let body = crate::helpers::body_of(&mut resp).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines().find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_string)).unwrap_or_default()
}

async fn traffic(app: &TestApp, n: usize) {
    for _ in 0..n {
        let body = "x".repeat(4096);
        let resp = app.client.post(app.gw("openai/chat/completions")).send_body(body).await.unwrap();
        assert_eq!(resp.status(), 200, "the data plane keeps serving");
    }
    app.flush_logs().await;
}

#[actix_web::test]
async fn a_full_disk_is_reported_and_writes_recover_when_space_returns() {
    let fs = Tmpfs::mount("24m");
    let data = fs.path().join("data");
    let app = spawn_app_with(|c| c.data_dir = data.clone()).await;
    let (status, body) = app.call("POST", "/tokens", Some(json!({"name": "app", "scopes": ["run"]}))).await;
    assert_eq!(status, 200, "{body}");
    let (token_id, secret) = (body["result"]["id"].as_str().unwrap().to_string(), body["result"]["value"].clone());
    assert_eq!(readyz(&app).await.0, 200);

    let filler = fill(fs.path());
    traffic(&app, 20).await;
    let (status, why) = readyz(&app).await;
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("database writes failing"), "{why}");
    assert_eq!(metric(&app, "torii_store_writes_failing").await, "1");
    let (status, _) = app.call("DELETE", &format!("/tokens/{token_id}"), None).await;
    assert_eq!(status, 500, "the revocation could not be saved and says so");

    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        traffic(&app, 1).await;
        if readyz(&app).await.0 == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "writes never recovered: {:?}", readyz(&app).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&app, "torii_store_writes_failing").await, "0");
    let (status, body) = app.call("DELETE", &format!("/tokens/{token_id}"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.set_default(json!({"authentication": true})).await.0, 200);
    let resp = app
        .client
        .post(app.gw("openai/chat/completions"))
        .insert_header(("cf-aig-authorization", format!("Bearer {}", secret.as_str().unwrap())))
        .send_body("{}")
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "the revoked token no longer works");
    // Logs written after the recovery are there.
    let (status, logs) = app.api_get("/gateways/default/logs?per_page=1").await;
    assert_eq!(status, 200);
    assert!(logs["result_info"]["total_count"].as_u64().unwrap() >= 1, "{logs}");
}

/// Starts `torii serve` on `dir`; `Ok((child, addr))` once it listens, `Err((code, stderr))` when
/// it exits first.
fn try_serve(dir: &Path, envs: &[(&str, String)]) -> Result<(std::process::Child, String), (Option<i32>, String)> {
    use std::io::{BufRead as _, Read as _};
    let mut cmd = crate::cli::torii(dir);
    cmd.args(["--listen", "127.0.0.1:0", "serve"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) if line.starts_with("listening on ") => {
            let addr = line.trim_start_matches("listening on ").to_string();
            // Keep draining stdout and stderr so the child never blocks on a full pipe.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            let mut stderr = child.stderr.take().unwrap();
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            Ok((child, addr))
        }
        _ => {
            let status = crate::cli::wait_exit(&mut child, 30);
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            Err((status.code(), err))
        }
    }
}

/// A real database (gateways, tokens, logs) damaged at many offsets: `torii check` and
/// `torii serve` never panic; serve either refuses with an error naming the file, or runs and
/// keeps answering (the log writer survives damaged pages).
#[actix_web::test]
async fn a_damaged_database_never_panics() {
    let mock = crate::mock::start();
    let envs = [("TORII_PROVIDERS__OPENAI__BASE_URL", format!("{}/openai/v1", mock.url()))];
    let dir = tempfile::tempdir().unwrap();
    let out =
        crate::cli::torii(dir.path()).args(["token", "create", "--name", "t", "--scope", "edit"]).output().unwrap();
    assert!(out.status.success());
    let client = awc::Client::default();
    {
        let (mut child, addr) = try_serve(dir.path(), &envs).unwrap();
        for i in 0..200 {
            let body = format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"hello {i}"}}]}}"#);
            let url = format!("http://{addr}/v1/local/default/openai/chat/completions");
            assert_eq!(client.post(url).send_body(body).await.unwrap().status(), 200);
        }
        crate::cli::sigterm(&child);
        assert!(crate::cli::wait_exit(&mut child, 30).success());
    }
    let db = dir.path().join("torii.redb");
    let original = std::fs::read(&db).unwrap();
    let key = std::fs::read(dir.path().join("secrets.key")).unwrap();
    let cases = 24;
    let (mut refused, mut served) = (0, 0);
    for i in 1..=cases {
        let offset = original.len() * i / (cases + 1);
        let mut damaged = original.clone();
        for (j, b) in damaged[offset..(offset + 512).min(original.len())].iter_mut().enumerate() {
            *b = 0xA5 ^ u8::try_from(j % 256).unwrap();
        }
        let case = tempfile::tempdir().unwrap();
        std::fs::write(case.path().join("torii.redb"), &damaged).unwrap();
        std::fs::write(case.path().join("secrets.key"), &key).unwrap();
        let check = crate::cli::torii(case.path()).arg("check").output().unwrap();
        let said = String::from_utf8_lossy(&check.stderr).to_string() + &String::from_utf8_lossy(&check.stdout);
        assert_ne!(check.status.code(), Some(101), "torii check panicked at offset {offset}: {said}");
        assert!(said.contains("torii.redb"), "offset {offset}: {said}");
        match try_serve(case.path(), &envs) {
            Ok((mut child, addr)) => {
                served += 1;
                for _ in 0..20 {
                    let url = format!("http://{addr}/v1/local/default/openai/chat/completions");
                    let resp = client.post(url).send_body("{}").await;
                    assert!(resp.is_ok(), "offset {offset}: the server stopped answering");
                }
                let health = client.get(format!("http://{addr}/healthz")).send().await.unwrap();
                assert_eq!(health.status(), 200, "offset {offset}");
                assert!(child.try_wait().unwrap().is_none(), "offset {offset}: the server exited");
                let _ = child.kill();
                let _ = child.wait();
            }
            Err((code, err)) => {
                refused += 1;
                assert_ne!(code, Some(101), "serve panicked at offset {offset}: {err}");
                assert!(err.contains("torii.redb") && !err.contains("panicked"), "offset {offset}: {err}");
            }
        }
    }
    eprintln!("{cases} damaged copies: {refused} refused with an error naming the file, {served} served");
}

/// An empty database file is not a new appliance; a missing key with sealed keys in the database
/// is not a fresh start either: both refuse to start, naming what is wrong. The file is 0600.
#[actix_web::test]
async fn start_up_refuses_an_empty_database_and_a_lost_key() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("torii.redb"), b"").unwrap();
    let (code, err) = try_serve(dir.path(), &[]).map(|_| ()).unwrap_err();
    assert_ne!(code, Some(0));
    assert!(err.contains("torii.redb") && err.contains("empty file"), "{err}");
    assert_eq!(std::fs::metadata(dir.path().join("torii.redb")).unwrap().len(), 0, "left as it was");

    // A real appliance with a stored provider key.
    let dir = tempfile::tempdir().unwrap();
    let out =
        crate::cli::torii(dir.path()).args(["token", "create", "--name", "t", "--scope", "edit"]).output().unwrap();
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (mut child, addr) = try_serve(dir.path(), &[]).unwrap();
    let mode = std::fs::metadata(dir.path().join("torii.redb")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the database is readable by its owner only");
    let client = awc::Client::default();
    let api = format!("http://{addr}/client/v4/accounts/local/ai-gateway/gateways/default");
    let mut gateway = crate::management::gateway_body("default");
    gateway["authentication"] = json!(true);
    let resp = client
        .put(&api)
        .insert_header(("authorization", format!("Bearer {secret}")))
        .send_json(&gateway)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut resp = client
        .post(format!("{api}/provider_configs"))
        .insert_header(("authorization", format!("Bearer {secret}")))
        .send_json(&json!({"provider_slug": "openai", "secret": "sk-sealed-1234567890"}))
        .await
        .unwrap();
    let answer = crate::helpers::body_of(&mut resp).await;
    assert_eq!(resp.status(), 200, "{}", String::from_utf8_lossy(&answer));
    crate::cli::sigterm(&child);
    assert!(crate::cli::wait_exit(&mut child, 30).success());
    std::fs::remove_file(dir.path().join("secrets.key")).unwrap();
    let (code, err) = try_serve(dir.path(), &[]).map(|_| ()).unwrap_err();
    assert_ne!(code, Some(0));
    assert!(err.contains("secrets.key") && err.contains("is missing"), "{err}");
    assert!(!dir.path().join("secrets.key").exists(), "no new key was made");
}
