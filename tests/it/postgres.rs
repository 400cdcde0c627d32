//! Cluster mode's control plane against a real PostgreSQL (Debian's, started here on a loopback
//! port in a temporary directory): settings changed through any node hold on every node, a
//! revoked token is refused everywhere within a second, two nodes racing for one name cannot both
//! win, a PostgreSQL restart keeps the nodes serving, and `torii migrate-to-cluster` moves a
//! single node's settings into the cluster.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{TestApp, json_of, spawn_app_with};
use crate::management::gateway_body;

/// A PostgreSQL server on a loopback port, in its own temporary directory, stopped when dropped.
pub struct Postgres {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

/// A PostgreSQL program: from Debian's versioned directory (not on `PATH`), else from `PATH`.
fn pg_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(Result::ok).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter().rev().map(|d| d.join(name)).find(|p| p.exists()).unwrap_or_else(|| PathBuf::from(name))
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// PostgreSQL refuses to run as root: as root, run it as the `postgres` user Debian's package
/// creates.
fn as_postgres(program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_bin(program));
        c
    } else {
        Command::new(pg_bin(program))
    }
}

impl Postgres {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let ok = Command::new("chown").arg("postgres").arg(dir.path()).status().unwrap().success();
            assert!(ok, "chown the temporary directory to postgres");
        }
        let out = as_postgres("initdb")
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["--auth=trust", "-U", "torii", "--no-sync", "-E", "UTF8"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb (the test command installs Debian's postgresql): {e}"));
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut pg = Self { child: None, port, dir };
        pg.run();
        pg
    }

    /// Starts the server (again) on its port and waits until it answers queries.
    pub fn run(&mut self) {
        let child = as_postgres("postgres")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-p", &self.port.to_string(), "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let url = self.url();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match postgres::Client::connect(&url, postgres::NoTls).and_then(|mut c| c.simple_query("SELECT 1")) {
                    Ok(_) => return,
                    Err(e) => assert!(Instant::now() < deadline, "PostgreSQL did not come up: {e}"),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .join()
        .unwrap();
    }

    /// A fast shutdown (what `systemctl restart postgresql` does first).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The server's own pid (the child may be `runuser`, which does not pass SIGINT on).
            let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next().map(str::to_string))
                .unwrap_or_else(|| child.id().to_string());
            let _ = Command::new("kill").arg("-INT").arg(pid).status();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://torii@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A node of a cluster on `pg`, with its own store and mock upstream, and a management token
/// made through it (the node's own records were replaced by the cluster's when it joined).
pub async fn pg_node(pg: &Postgres) -> TestApp {
    let url = pg.url();
    let mut node = spawn_app_with(move |c| c.cluster.postgres_url = Some(url)).await;
    node.admin_token = node.token(&[torii::store::Scope::Read, torii::store::Scope::Edit], &[], None);
    node
}

async fn ask(node: &TestApp, token: Option<&str>) -> u16 {
    let mut req =
        node.client.post(node.gw("openai/chat/completions")).insert_header(("content-type", "application/json"));
    if let Some(t) = token {
        req = req.insert_header(("cf-aig-authorization", format!("Bearer {t}")));
    }
    let mut resp = req.send_body(r#"{"model":"gpt-4o-mini","messages":[]}"#).await.unwrap();
    let _ = resp.body().await;
    resp.status().as_u16()
}

/// Polls `node` until a request with `token` gets `status`; returns how long that took, or
/// fails after `secs`.
async fn until_status(node: &TestApp, token: Option<&str>, status: u16, secs: u64) -> Duration {
    let start = Instant::now();
    loop {
        let got = ask(node, token).await;
        if got == status {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(secs), "still {got}, not {status}, after {secs} s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_web::test]
async fn settings_made_through_any_node_hold_on_every_node() {
    let pg = Postgres::start();
    let nodes = [pg_node(&pg).await, pg_node(&pg).await, pg_node(&pg).await];
    // Authentication on, through node B; a token made through node A.
    assert_eq!(nodes[1].set_default(json!({"authentication": true})).await.0, 200);
    let (status, made) = nodes[0].call("POST", "/tokens", Some(json!({"name": "app", "scopes": ["run"]}))).await;
    assert_eq!(status, 200, "{made}");
    let secret = made["result"]["value"].as_str().unwrap().to_string();
    let id = made["result"]["id"].as_str().unwrap().to_string();
    for node in &nodes {
        until_status(node, Some(&secret), 200, 5).await;
        assert_eq!(ask(node, None).await, 401, "authentication is on everywhere");
    }
    // A gateway made through node C is listed by node A.
    let (status, body) = nodes[2].call("POST", "/gateways", Some(gateway_body("office"))).await;
    assert_eq!(status, 200, "{body}");
    let start = Instant::now();
    loop {
        let (_, list) = nodes[0].call("GET", "/gateways", None).await;
        if list["result"].as_array().unwrap().iter().any(|g| g["id"] == "office") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "node A never saw the gateway: {list}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Revoked through node A: refused by node C within a second (and by node B).
    let (status, body) = nodes[0].call("DELETE", &format!("/tokens/{id}"), None).await;
    assert_eq!(status, 200, "{body}");
    let took = until_status(&nodes[2], Some(&secret), 401, 1).await;
    eprintln!("a token revoked on node A was refused by node C after {took:?}");
    until_status(&nodes[1], Some(&secret), 401, 1).await;
}

#[actix_web::test]
async fn two_nodes_racing_for_one_name_cannot_both_win() {
    let pg = Postgres::start();
    let (a, b) = (pg_node(&pg).await, pg_node(&pg).await);
    for round in 0..5 {
        let id = format!("race-{round}");
        let (left, right) = tokio::join!(
            a.call("POST", "/gateways", Some(gateway_body(&id))),
            b.call("POST", "/gateways", Some(gateway_body(&id)))
        );
        let mut statuses = [left.0, right.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "round {round}: {left:?} {right:?}");
    }
    // Both nodes agree on what exists.
    for node in [&a, &b] {
        let (_, list) = node.call("GET", "/gateways", None).await;
        let races = list["result"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["id"].as_str().unwrap().starts_with("race-"))
            .count();
        assert_eq!(races, 5, "{list}");
    }
}

#[actix_web::test]
async fn a_postgres_restart_keeps_the_nodes_serving() {
    let mut pg = Postgres::start();
    let (a, b) = (pg_node(&pg).await, pg_node(&pg).await);
    pg.stop();
    // The data plane serves from each node's replica; a change is refused plainly, and nothing
    // changes.
    assert_eq!(ask(&a, None).await, 200);
    assert_eq!(ask(&b, None).await, 200);
    let (status, body) = a.call("POST", "/gateways", Some(gateway_body("during"))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["success"], json!(false));
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("PostgreSQL"), "{body}");
    let (_, list) = a.call("GET", "/gateways", None).await;
    assert!(!list["result"].as_array().unwrap().iter().any(|g| g["id"] == "during"), "{list}");
    pg.run();
    // Changes go through again by themselves and reach the other node.
    let start = Instant::now();
    loop {
        let (status, _) = a.call("POST", "/gateways", Some(gateway_body("after"))).await;
        if status == 200 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "changes never went through again: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = Instant::now();
    loop {
        let (_, list) = b.call("GET", "/gateways", None).await;
        if list["result"].as_array().unwrap().iter().any(|g| g["id"] == "after") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "node B never followed again: {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn migrate_to_cluster_copies_a_single_nodes_settings() {
    use torii::store::{GatewayRecord, Store};
    let pg = Postgres::start();
    // A single node's settings, written while its server is stopped.
    let old = tempfile::tempdir().unwrap();
    let secret = {
        let store = Store::open(&old.path().join("torii.redb")).unwrap();
        let mut gw = GatewayRecord::new_default("2026-01-01T00:00:00Z");
        gw.id = "office".into();
        gw.authentication = true;
        store.put(&gw).unwrap();
        let new = torii::auth::NewToken {
            name: "app".into(),
            scopes: vec![torii::store::Scope::Run],
            gateways: vec![],
            expires_at: None,
            rate_limit: None,
            limits: torii::store::TokenLimits::default(),
        };
        torii::auth::create_token(&store, new).unwrap().0
    };
    let migrate = |extra: &[&str]| {
        crate::cli::torii(old.path())
            .env("TORII_CLUSTER__POSTGRES_URL", pg.url())
            .arg("migrate-to-cluster")
            .args(extra)
            .output()
            .unwrap()
    };
    let out = migrate(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("copied"), "{}", String::from_utf8_lossy(&out.stderr));
    // Twice: refused, nothing overwritten.
    let again = migrate(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--merge"), "{}", String::from_utf8_lossy(&again.stderr));
    // A new node (its own empty file) joins and serves the migrated gateway with the migrated token.
    let node = pg_node(&pg).await;
    let (status, body) = node.call("GET", "/gateways/office", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["authentication"], json!(true));
    let call = |token: Option<String>| {
        let mut req = node.client.post(node.url("/v1/local/office/openai/chat/completions"));
        if let Some(t) = token {
            req = req.insert_header(("cf-aig-authorization", format!("Bearer {t}")));
        }
        req.send_body("{}")
    };
    assert_eq!(call(None).await.unwrap().status(), 401);
    let mut ok = call(Some(secret)).await.unwrap();
    assert_eq!(ok.status(), 200, "{}", json_of(&mut ok).await);
}

#[test]
fn a_bad_postgres_url_is_refused_by_name() {
    let mut config = torii::config::Config::default();
    for (url, want) in [("mysql://h/db", "postgres://"), ("postgres://h/db?sslmode=require", "TLS")] {
        config.cluster.postgres_url = Some(url.into());
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains("cluster.postgres_url") && e.contains(want), "{url}: {e}");
    }
    config.cluster.postgres_url = None;
    config.cluster.postgres_timeout_ms = 0;
    assert!(config.validate().unwrap_err().to_string().contains("cluster.postgres_timeout_ms"));
}
