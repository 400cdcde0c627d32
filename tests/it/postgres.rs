//! Cluster mode's control plane against a real PostgreSQL (Debian's, started here on a loopback
//! port in a temporary directory): settings changed through any node hold on every node, a
//! revoked token is refused everywhere within a second, two nodes racing for one name cannot both
//! win, a PostgreSQL restart keeps the nodes serving, and `torii migrate-to-cluster` moves a
//! single node's settings into the cluster.

use std::fmt::Write as _;
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
    a.gateway.logs.flush(); // no write of the node's own after the refused change
    let (status, body) = a.call("POST", "/gateways", Some(gateway_body("during"))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["success"], json!(false));
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("PostgreSQL"), "{body}");
    let (_, list) = a.call("GET", "/gateways", None).await;
    assert!(!list["result"].as_array().unwrap().iter().any(|g| g["id"] == "during"), "{list}");
    // Still ready: its own file is fine, and it serves (a load balancer keeps it).
    let mut ready = a.client.get(a.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "{:?}", ready.body().await);
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
    // `torii admin create` on another, stopped node's directory joins the cluster and publishes:
    // the running node knows the admin within a second.
    let other = tempfile::tempdir().unwrap();
    let out = crate::cli::torii(other.path())
        .env("TORII_CLUSTER__POSTGRES_URL", pg.url())
        .env("TORII_ADMIN_PASSWORD", "a long enough password")
        .args(["admin", "create", "--username", "ops"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let settings = node.settings();
    let start = Instant::now();
    loop {
        let s = std::sync::Arc::clone(&settings);
        if actix_web::web::block(move || s.verify_admin("ops", "a long enough password").unwrap()).await.unwrap() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(1), "the running node does not know the admin");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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

/// The default gateway's logs as `node` lists them (newest first, up to 100), with `filters`
/// (key, value) as equalities; `None` while PostgreSQL cannot answer.
async fn try_logs_via(node: &TestApp, filters: &[(&str, &str)]) -> Option<(u64, Vec<serde_json::Value>)> {
    let mut query = String::from("/gateways/default/logs?per_page=100");
    for (i, (key, value)) in filters.iter().enumerate() {
        let _ = write!(
            query,
            "&filters%5B{i}%5D%5Bkey%5D={key}&filters%5B{i}%5D%5Boperator%5D=eq&filters%5B{i}%5D%5Bvalue%5D={value}"
        );
    }
    let (status, body) = node.call("GET", &query, None).await;
    if status == 503 {
        return None;
    }
    assert_eq!(status, 200, "{body}");
    Some((body["result_info"]["total_count"].as_u64().unwrap(), body["result"].as_array().unwrap().clone()))
}

async fn logs_via(node: &TestApp, filters: &[(&str, &str)]) -> (u64, Vec<serde_json::Value>) {
    try_logs_via(node, filters).await.unwrap()
}

/// Polls until node `node`'s logs API counts `want` logs; fails after `secs`.
async fn until_logs(node: &TestApp, want: u64, secs: u64) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let seen = try_logs_via(node, &[]).await;
        if let Some((total, logs)) = &seen
            && *total == want
        {
            return logs.clone();
        }
        let total = seen.map(|s| s.0);
        assert!(start.elapsed() < Duration::from_secs(secs), "{total:?} logs, not {want}, after {secs} s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn logs_from_every_node_are_found_through_any_node() {
    let pg = Postgres::start();
    let nodes = [pg_node(&pg).await, pg_node(&pg).await, pg_node(&pg).await];
    for (i, node) in nodes.iter().enumerate() {
        for j in 0..2 {
            let mut resp = node
                .client
                .post(node.gw("openai/chat/completions"))
                .insert_header(("content-type", "application/json"))
                .insert_header(("cf-aig-metadata", format!(r#"{{"node":"n{i}","n":{j}}}"#)))
                .send_body(format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"node {i}"}}]}}"#))
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let _ = resp.body().await;
        }
    }
    // Every node lists the six, newest first, the same.
    let through_a = until_logs(&nodes[0], 6, 10).await;
    let ids =
        |logs: &[serde_json::Value]| logs.iter().map(|l| l["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    for node in &nodes[1..] {
        assert_eq!(ids(&until_logs(node, 6, 10).await), ids(&through_a));
    }
    // The analytics count the six too, through any node.
    let start = Instant::now();
    loop {
        let (status, report) = nodes[2].call("GET", "/gateways/default/analytics?bucket=day", None).await;
        if status == 200 && report["result"]["totals"]["requests"] == 6 {
            assert_eq!(report["result"]["by_provider"]["openai"]["requests"], 6, "{report}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "analytics: {report}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // UUIDv7: in time order.
    let mut newest_first = ids(&through_a);
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids(&through_a), newest_first, "newest first");
    // Filters and search act as on one node: node 2's logs through node A, by metadata.
    let (total, of_c) = logs_via(&nodes[0], &[("metadata.node", "n2")]).await;
    assert_eq!(total, 2, "{of_c:?}");
    let model = through_a[0]["model"].as_str().unwrap();
    let (total, _) = logs_via(&nodes[1], &[("provider", "openai"), ("model", model)]).await;
    assert_eq!(total, 6, "{model}");
    let (total, _) = logs_via(&nodes[1], &[("provider", "openai"), ("model", "another")]).await;
    assert_eq!(total, 0);
    let (total, _) = logs_via(&nodes[1], &[("provider", "anthropic")]).await;
    assert_eq!(total, 0);
    // A log stored by node C: its request body through node A, feedback through node B, seen by node C.
    let id = of_c[0]["id"].as_str().unwrap();
    let mut raw = nodes[0]
        .client
        .get(nodes[0].api(&format!("/gateways/default/logs/{id}/request")))
        .insert_header(("authorization", nodes[0].bearer()))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    assert!(String::from_utf8_lossy(&raw.body().await.unwrap()).contains("node 2"));
    let (status, body) =
        nodes[1].call("PATCH", &format!("/gateways/default/logs/{id}"), Some(json!({"feedback": 1}))).await;
    assert_eq!(status, 200, "{body}");
    let (_, log) = nodes[2].call("GET", &format!("/gateways/default/logs/{id}"), None).await;
    assert_eq!(log["result"]["feedback"], json!(1), "{log}");
    // Feedback right after the answer, through the node that served it (its log may not have
    // reached PostgreSQL yet): accepted, and seen through another node.
    let mut resp = nodes[0]
        .client
        .post(nodes[0].gw("openai/chat/completions"))
        .insert_header(("content-type", "application/json"))
        .insert_header(("cf-aig-metadata", r#"{"node":"late"}"#))
        .send_body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
        .await
        .unwrap();
    let late = resp.headers().get("cf-aig-log-id").unwrap().to_str().unwrap().to_string();
    let _ = resp.body().await;
    nodes[0].gateway.logs.flush();
    let (status, body) =
        nodes[0].call("PATCH", &format!("/gateways/default/logs/{late}"), Some(json!({"feedback": -1}))).await;
    assert_eq!(status, 200, "{body}");
    let start = Instant::now();
    loop {
        let (status, log) = nodes[1].call("GET", &format!("/gateways/default/logs/{late}"), None).await;
        if status == 200 && log["result"]["feedback"] == json!(-1) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = nodes[0].call(
        "DELETE",
        "/gateways/default/logs?filters%5B0%5D%5Bkey%5D=metadata.node&filters%5B0%5D%5Boperator%5D=eq&filters%5B0%5D%5Bvalue%5D=late",
        None,
    ).await;
    assert_eq!(status, 200, "{body}");
    // Deleted through node B: gone for all.
    let (status, body) = nodes[1].call(
        "DELETE",
        "/gateways/default/logs?filters%5B0%5D%5Bkey%5D=metadata.node&filters%5B0%5D%5Boperator%5D=eq&filters%5B0%5D%5Bvalue%5D=n0",
        None,
    ).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(logs_via(&nodes[2], &[]).await.0, 4);
    // Retention: a gateway's expired logs are deleted, and whole days are dropped.
    let settings = nodes[0].settings();
    // Ten days from now: every log is past it.
    let far = i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis())
        .unwrap()
        + 10 * 86_400_000;
    let dropped = actix_web::web::block(move || {
        (
            settings.expire_cluster_logs("default", far).unwrap().unwrap(),
            settings.drop_cluster_log_days(far).unwrap().unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(dropped.0, 4, "expired");
    assert!(dropped.1 >= 1, "the day's partition dropped");
    assert_eq!(logs_via(&nodes[1], &[]).await.0, 0);
}

#[actix_web::test]
async fn a_postgres_outage_loses_no_committed_log() {
    let mut pg = Postgres::start();
    let (a, b) = (pg_node(&pg).await, pg_node(&pg).await);
    pg.stop();
    for i in 0..20 {
        assert_eq!(ask(if i % 2 == 0 { &a } else { &b }, None).await, 200);
    }
    // Committed in each node's file, waiting for PostgreSQL.
    a.gateway.logs.flush();
    b.gateway.logs.flush();
    let (status, body) = a.call("GET", "/gateways/default/logs", None).await;
    assert_eq!(status, 503, "the logs API says PostgreSQL is away: {body}");
    pg.run();
    until_logs(&b, 20, 15).await;
    // And their analytics, each batch added once.
    let start = Instant::now();
    loop {
        let (status, report) = a.call("GET", "/gateways/default/analytics?bucket=day", None).await;
        if status == 200 && report["result"]["totals"]["requests"] == 20 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "analytics: {report}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn a_rollup_batch_is_added_once_even_when_sent_twice() {
    use torii::logs::pg::{RollupBatch, add_rollups};
    use torii::store::rollups::Rollup;
    let pg = Postgres::start();
    let _node = pg_node(&pg).await; // applies the schema
    let url = pg.url();
    let requests = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let r = Rollup { requests: 3, tokens_in: 30, cost: 0.5, ..Rollup::default() };
        let batch: RollupBatch = vec![("gw".into(), 29_000_000, "openai".into(), "m".into(), r)];
        let bytes = postcard::to_stdvec(&batch).unwrap();
        // Sent twice (PostgreSQL committed, the node did not hear it): added once; another node's
        // batch with the same number is its own.
        add_rollups(&mut c, 7, &[(1, bytes.clone())]).unwrap();
        add_rollups(&mut c, 7, &[(1, bytes.clone())]).unwrap();
        add_rollups(&mut c, 8, &[(1, bytes)]).unwrap();
        let row = c
            .query_one("SELECT requests, tokens_in, cost FROM torii_rollups WHERE gateway = 'gw' AND unit = 'h'", &[])
            .unwrap();
        (row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, f64>(2))
    })
    .join()
    .unwrap();
    assert_eq!(requests, (6, 60, 1.0));
}

/// Without Redis each node caches for itself: a gateway change made through node A that
/// invalidates the cache empties node B's cache too, as it would on one node.
#[actix_web::test]
async fn a_gateway_change_through_one_node_purges_another_nodes_own_cache() {
    use crate::cluster::cached_ask;
    let pg = Postgres::start();
    let (a, b) = (pg_node(&pg).await, pg_node(&pg).await);
    let cached = json!({"cache_ttl": 300, "cache_invalidate_on_update": true});
    assert_eq!(a.set_default(cached.clone()).await.0, 200);
    // Node B follows, then caches.
    let start = Instant::now();
    loop {
        let _ = cached_ask(&b, "say").await;
        if cached_ask(&b, "say").await.1.as_deref() == Some("HIT") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "node B never cached");
    }
    let mut changed = cached.clone();
    changed["collect_logs"] = json!(false);
    assert_eq!(a.set_default(changed).await.0, 200);
    let start = Instant::now();
    while cached_ask(&b, "say").await.1.as_deref() == Some("HIT") {
        assert!(start.elapsed() < Duration::from_secs(2), "node B still answers from its cache");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The logs API scenario both stores must answer alike: requests of two providers, one failing,
/// with metadata; then listings with filters, search, orders, pages and aggregates, feedback and a
/// delete. Returns what was seen, without the ids and times that differ between runs.
async fn logs_scenario(node: &TestApp) -> Vec<serde_json::Value> {
    for i in 0..6 {
        let (path, mock) = if i % 3 == 2 { ("anthropic/v1/messages", "") } else { ("openai/chat/completions", "") };
        let mock = if i == 4 { "status:500" } else { mock };
        let mut resp = node
            .client
            .post(node.gw(path))
            .insert_header(("content-type", "application/json"))
            .insert_header(("x-mock", mock))
            .insert_header(("cf-aig-metadata", format!(r#"{{"user":"u{}","i":"n{i}"}}"#, i % 3)))
            .send_body(format!(
                r#"{{"model":"m{}","max_tokens":{},"messages":[{{"role":"user","content":"hello {i}"}}]}}"#,
                i % 2,
                10 + i
            ))
            .await
            .unwrap();
        let _ = resp.body().await;
    }
    node.gateway.logs.flush();
    until_logs(node, 6, 10).await;
    let shape = |logs: &[serde_json::Value]| -> serde_json::Value {
        logs.iter()
            .map(|l| json!([l["metadata"], l["provider"], l["success"], l["status_code"], l["feedback"]]))
            .collect()
    };
    let mut seen = Vec::new();
    for query in [
        "",
        "&order_by_direction=asc",
        "&filters%5B0%5D%5Bkey%5D=provider&filters%5B0%5D%5Boperator%5D=eq&filters%5B0%5D%5Bvalue%5D=anthropic",
        "&filters%5B0%5D%5Bkey%5D=metadata.user&filters%5B0%5D%5Boperator%5D=eq&filters%5B0%5D%5Bvalue%5D=u1",
        "&filters%5B0%5D%5Bkey%5D=success&filters%5B0%5D%5Boperator%5D=eq&filters%5B0%5D%5Bvalue%5D=false",
        "&filters%5B0%5D%5Bkey%5D=status_code&filters%5B0%5D%5Boperator%5D=neq&filters%5B0%5D%5Bvalue%5D=200",
        "&search=n3",
        "&order_by=provider&order_by_direction=asc&per_page=4&page=2",
        "&per_page=2&page=2",
        "&meta_info=true&per_page=1",
    ] {
        let (status, body) = node.call("GET", &format!("/gateways/default/logs?per_page=100{query}"), None).await;
        assert_eq!(status, 200, "{query}: {body}");
        let mut info = body["result_info"].clone();
        for k in ["min_duration", "max_duration"] {
            info.as_object_mut().map(|o| o.remove(k));
        }
        seen.push(json!({"query": query, "logs": shape(body["result"].as_array().unwrap()), "info": info}));
    }
    // Feedback on the oldest, then filter by it; delete the anthropic ones.
    let (_, oldest) = node.call("GET", "/gateways/default/logs?per_page=1&order_by_direction=asc", None).await;
    let id = oldest["result"][0]["id"].as_str().unwrap().to_string();
    let (status, _) = node.call("PATCH", &format!("/gateways/default/logs/{id}"), Some(json!({"feedback": 1}))).await;
    assert_eq!(status, 200);
    let (_, liked) = node
        .call(
            "GET",
            "/gateways/default/logs?filters%5B0%5D%5Bkey%5D=feedback&filters%5B0%5D%5Boperator%5D=eq&filters%5B0%5D%5Bvalue%5D=1",
            None,
        )
        .await;
    seen.push(json!({"liked": shape(liked["result"].as_array().unwrap())}));
    let (status, gone) = node
        .call(
            "DELETE",
            "/gateways/default/logs?filters%5B0%5D%5Bkey%5D=provider&filters%5B0%5D%5Boperator%5D=eq&filters%5B0%5D%5Bvalue%5D=anthropic",
            None,
        )
        .await;
    assert_eq!(status, 200, "{gone}");
    let (_, left) = node.call("GET", "/gateways/default/logs", None).await;
    seen.push(json!({"left": shape(left["result"].as_array().unwrap()), "total": left["result_info"]["total_count"]}));
    seen
}

/// Runs `scenario` on a node with its own file and on a node of a PostgreSQL cluster, checks
/// that every answer is the same, and returns the answers.
async fn answers_alike(scenario: impl AsyncFn(&TestApp) -> Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    let single = crate::helpers::spawn_app().await;
    let embedded = scenario(&single).await;
    let pg = Postgres::start();
    let node = pg_node(&pg).await;
    let clustered = scenario(&node).await;
    for (a, b) in embedded.iter().zip(&clustered) {
        assert_eq!(a, b, "embedded vs PostgreSQL");
    }
    assert_eq!(embedded.len(), clustered.len());
    embedded
}

/// One node with its own file and a node of a PostgreSQL cluster give the same answers to the
/// same logs API calls.
#[actix_web::test]
async fn the_logs_api_answers_alike_from_the_file_and_from_postgres() {
    let embedded = answers_alike(logs_scenario).await;
    // The scenario saw something: six logs, two of them anthropic, one failure.
    assert_eq!(embedded[0]["info"]["total_count"], 6, "{}", embedded[0]);
    assert_eq!(embedded[2]["logs"].as_array().unwrap().len(), 2);
    assert_eq!(embedded[4]["logs"].as_array().unwrap().len(), 1);
}

/// The control plane scenario both stores must answer alike: gateways, tokens, custom providers
/// and DLP profiles made, refused, changed, listed and deleted. Returns each answer's status,
/// error codes and the fields that do not differ between runs.
async fn control_scenario(node: &TestApp) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    let codes = |b: &serde_json::Value| -> serde_json::Value {
        b["errors"].as_array().map(|e| e.iter().map(|x| x["code"].clone()).collect()).unwrap_or_default()
    };
    let ids = |b: &serde_json::Value, key: &str| -> serde_json::Value {
        let mut v: Vec<String> = b["result"]
            .as_array()
            .or_else(|| b["data"][key].as_array())
            .map(|a| {
                a.iter().filter_map(|x| x[key].as_str().or_else(|| x["id"].as_str()).map(str::to_string)).collect()
            })
            .unwrap_or_default();
        v.sort();
        json!(v)
    };
    let mut office = gateway_body("office");
    office["rate_limiting_limit"] = json!(5);
    office["rate_limiting_interval"] = json!(60);
    for (method, path, body, key) in [
        ("POST", "/gateways", Some(gateway_body("office")), "id"),
        ("POST", "/gateways", Some(gateway_body("office")), "id"),
        ("PUT", "/gateways/office", Some(office), "id"),
        ("GET", "/gateways", None, "id"),
        (
            "POST",
            "/custom-providers",
            Some(json!({"name": "vLLM", "slug": "vllm", "base_url": "http://127.0.0.1:9/v1"})),
            "slug",
        ),
        (
            "POST",
            "/custom-providers",
            Some(json!({"name": "dup", "slug": "vllm", "base_url": "http://127.0.0.1:9/v1"})),
            "slug",
        ),
        ("GET", "/custom-providers", None, "slug"),
        (
            "POST",
            "/dlp/profiles",
            Some(json!({"id": "employee-id", "name": "Employee ids", "pattern": r"\bE-[0-9]{6}\b"})),
            "id",
        ),
        ("POST", "/dlp/profiles", Some(json!({"id": "bad", "name": "x", "pattern": "(unclosed"})), "id"),
        ("POST", "/tokens", Some(json!({"name": "app", "scopes": ["run"], "gateways": ["office"]})), "name"),
        ("POST", "/tokens", Some(json!({"name": "bad", "scopes": ["fly"]})), "name"),
    ] {
        let (status, answer) = node.call(method, path, body).await;
        let shown = if method == "GET" { ids(&answer, key) } else { answer["result"][key].clone() };
        seen.push(json!([method, path, status, codes(&answer), shown]));
    }
    let (_, tokens) = node.call("GET", "/tokens", None).await;
    let app_token = tokens["result"].as_array().unwrap().iter().find(|t| t["name"] == "app").unwrap()["id"].clone();
    let (status, _) = node.call("DELETE", &format!("/tokens/{}", app_token.as_str().unwrap()), None).await;
    seen.push(json!(["DELETE", "/tokens/{app}", status]));
    let (status, answer) = node.call("DELETE", "/gateways/office", None).await;
    seen.push(json!(["DELETE", "/gateways/office", status, codes(&answer)]));
    let (_, gateways) = node.call("GET", "/gateways", None).await;
    seen.push(json!(["GET", "/gateways", ids(&gateways, "id")]));
    seen
}

/// One node with its own file and a node of a PostgreSQL cluster give the same answers to the
/// same management calls.
#[actix_web::test]
async fn the_control_plane_answers_alike_from_the_file_and_from_postgres() {
    let embedded = answers_alike(control_scenario).await;
    // The scenario saw both successes and refusals.
    let statuses: Vec<u64> = embedded.iter().filter_map(|s| s[2].as_u64()).collect();
    assert!(statuses.contains(&200) && statuses.contains(&409) && statuses.contains(&400), "{embedded:?}");
}

/// The first node of a new cluster brings its settings; a node joining a cluster that has some
/// takes the cluster's, and its own are kept in a file next to its database.
#[actix_web::test]
async fn the_first_node_brings_its_settings_and_a_later_one_keeps_its_own_in_a_file() {
    use torii::store::{GatewayRecord, Store};
    let pg = Postgres::start();
    let seeded = |id: &str| {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("torii.redb")).unwrap();
        let mut gw = GatewayRecord::new_default("2026-01-01T00:00:00Z");
        gw.id = id.into();
        store.put(&gw).unwrap();
        dir
    };
    let (first, second) = (seeded("alpha"), seeded("beta"));
    let node = |dir: std::path::PathBuf| {
        let url = pg.url();
        spawn_app_with(move |c| {
            c.data_dir = dir;
            c.cluster.postgres_url = Some(url);
        })
    };
    let mut a = node(first.path().to_path_buf()).await;
    a.admin_token = a.token(&[torii::store::Scope::Read, torii::store::Scope::Edit], &[], None);
    let mut b = node(second.path().to_path_buf()).await;
    b.admin_token = b.token(&[torii::store::Scope::Read, torii::store::Scope::Edit], &[], None);
    for n in [&a, &b] {
        assert_eq!(n.call("GET", "/gateways/alpha", None).await.0, 200, "the first node's gateway is the cluster's");
        assert_eq!(n.call("GET", "/gateways/beta", None).await.0, 404, "the later node's own is not");
    }
    let kept: Vec<_> = std::fs::read_dir(second.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("settings-replaced-by-cluster-"))
        .collect();
    assert_eq!(kept.len(), 1, "one file of replaced settings");
    let text = std::fs::read_to_string(kept[0].path()).unwrap();
    let records: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        records.as_array().unwrap().iter().any(|r| r["table"] == "gateways_v1" && r["record"]["id"] == "beta"),
        "{text}"
    );
}

/// `postgres_timeout_ms` bounds how long a node waits on a PostgreSQL that does not answer: a
/// server that takes the connection and says nothing makes the start fail after about three
/// timeouts (connect, then the first statement), naming the setting, not hang.
#[actix_web::test]
async fn a_silent_postgres_fails_the_start_within_its_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming() {
            held.push(conn); // accepted, never answered
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut config = torii::config::Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        ..torii::config::Config::default()
    };
    config.cluster.postgres_url = Some(format!("postgres://torii@{addr}/postgres"));
    config.cluster.postgres_timeout_ms = 300;
    let start = Instant::now();
    let e = torii::app::start(config).err().expect("no start without PostgreSQL").to_string();
    let took = start.elapsed();
    assert!(e.contains("cluster.postgres_url"), "{e}");
    // Three timeouts of 300 ms and some slack; the default (2,000 ms) would take over 6 s.
    assert!(took < Duration::from_secs(3), "took {took:?}");
}
