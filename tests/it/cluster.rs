//! Cluster mode against a real `redis-server` (Debian's, started here on a loopback port in a
//! temporary directory): the rate-limit windows behave the same embedded and in Redis, three
//! nodes share one gateway limit, and a Redis outage follows the configured policy and heals by
//! itself.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use torii::cluster::{Held, Refusal, Spend, Verdict, Windows};
use torii::config::{ClusterConfig, RedisFailure};
use torii::limits::{Rule, Technique};
use torii::policy::spend::Claim;

use crate::helpers::{TestApp, spawn_app_with, within};

/// A `redis-server` on a loopback port, stopped when dropped.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_on(port)
    }

    fn start_on(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server (the test command installs Debian's): {e}"));
        let redis = Self { child, port, _dir: dir };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(10));
        }
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn cluster(url: Option<String>, on_failure: RedisFailure) -> ClusterConfig {
    ClusterConfig { redis_url: url, on_redis_failure: on_failure, ..ClusterConfig::default() }
}

const MIN: u64 = 60_000;

/// The nodes' Redis timeout in these tests: long enough that a busy CI machine never turns a
/// slow answer into a failure (the outage test's Redis refuses connections at once).
const SLOW_CI_TIMEOUT_MS: u64 = 5_000;

/// One scenario, run against either implementation: what each check answers.
async fn scenario(windows: &Windows, prefix: &str) -> Vec<Verdict> {
    let noon = 1_780_000_000_000 - 1_780_000_000_000 % (10 * MIN);
    let mut out = Vec::new();
    for technique in [Technique::Fixed, Technique::Sliding] {
        let key = format!("{prefix}:{technique:?}");
        let rule = Rule { limit: 10, interval_ms: 10 * MIN, technique };
        // The reference's example: ten at 12:09, ten at 12:11.
        for i in 0..10 {
            out.push(windows.check_all(&[(&key, rule)], noon + 9 * MIN + i).await);
        }
        for i in 0..11 {
            out.push(windows.check_all(&[(&key, rule)], noon + 11 * MIN + i).await);
        }
        // Changed settings count afresh.
        let wider = Rule { limit: 11, ..rule };
        out.push(windows.check_all(&[(&key, wider)], noon + 11 * MIN + 20).await);
    }
    // All or nothing: a request the second window refuses uses up none of the first.
    let (a, b) = (format!("{prefix}:a"), format!("{prefix}:b"));
    let roomy = Rule { limit: 5, interval_ms: MIN, technique: Technique::Sliding };
    let tight = Rule { limit: 1, interval_ms: MIN, technique: Technique::Fixed };
    for i in 0..4 {
        out.push(windows.check_all(&[(&a, roomy), (&b, tight)], noon + i).await);
    }
    for i in 0..5 {
        out.push(windows.check_all(&[(&a, roomy)], noon + 10 + i).await);
    }
    out
}

/// One shared suite for both implementations of the seam: the same answers, and the expected ones.
#[actix_web::test]
async fn rate_windows_behave_alike_embedded_and_in_redis() {
    let redis = Redis::start();
    let local = Windows::new(&cluster(None, RedisFailure::Refuse));
    let shared = Windows::new(&cluster(Some(redis.url()), RedisFailure::Refuse));
    let embedded = scenario(&local, "suite").await;
    let in_redis = scenario(&shared, "suite").await;
    assert_eq!(embedded, in_redis, "the embedded and Redis windows answer differently");
    let admitted = |range: std::ops::Range<usize>| embedded[range].iter().filter(|v| **v == Verdict::Admit).count();
    // Fixed: all twenty in two windows pass, the 21st (12:11) waits for 12:20.
    assert_eq!(admitted(0..20), 20);
    assert_eq!(embedded[20], Verdict::Wait(9 * MIN - 10));
    assert_eq!(embedded[21], Verdict::Admit, "a changed rule counts afresh");
    // Sliding: the ten at 12:11 wait until the first of 12:09 leaves the trailing window.
    assert_eq!(admitted(22..32), 10);
    assert_eq!(admitted(32..43), 0);
    assert_eq!(embedded[32], Verdict::Wait(8 * MIN));
    // All or nothing: only the first paired request passes; then `a` still has four left.
    assert_eq!(
        &embedded[44..48],
        &[Verdict::Admit, Verdict::Wait(MIN - 1), Verdict::Wait(MIN - 2), Verdict::Wait(MIN - 3)]
    );
    assert_eq!(embedded[48..52].iter().filter(|v| **v == Verdict::Admit).count(), 4);
    assert!(matches!(embedded[52], Verdict::Wait(_)));
    assert_eq!(shared.failures(), 0);
}

/// Three nodes sharing one Redis (each with its own store and mock upstream), following
/// `on_failure`, their default gateway set to `settings` on each.
async fn cluster_of_three(redis: &Redis, on_failure: RedisFailure, settings: serde_json::Value) -> Vec<TestApp> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let url = redis.url();
        let node = spawn_app_with(move |c| {
            c.cluster.redis_url = Some(url);
            c.cluster.redis_timeout_ms = SLOW_CI_TIMEOUT_MS;
            c.cluster.on_redis_failure = on_failure;
        })
        .await;
        let (status, body) = node.set_default(settings.clone()).await;
        assert_eq!(status, 200, "{body}");
        nodes.push(node);
    }
    nodes
}

/// Three nodes sharing one Redis with a sliding 30/min rate limit and a spend limit far above
/// what the tests spend (its reservations go to Redis as well).
async fn three_nodes(redis: &Redis, on_failure: RedisFailure) -> Vec<TestApp> {
    let spend = json!({"rules": [{"id": "wide", "limitType": "cost", "limit": 100, "window": 86400}]});
    let limit = json!({"rate_limiting_limit": 30, "rate_limiting_interval": 60, "rate_limiting_technique": "sliding",
        "spend_limits": spend});
    cluster_of_three(redis, on_failure, limit).await
}

async fn status_of(node: &TestApp) -> u16 {
    let mut resp = node
        .client
        .post(node.gw("openai/chat/completions"))
        .insert_header(("content-type", "application/json"))
        .send_body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
        .await
        .unwrap();
    let _ = resp.body().await;
    resp.status().as_u16()
}

#[actix_web::test]
async fn three_nodes_share_one_gateway_limit() {
    let redis = Redis::start();
    let nodes = three_nodes(&redis, RedisFailure::Refuse).await;
    let mut passed = 0;
    let mut limited = 0;
    for i in 0..90 {
        match status_of(&nodes[i % 3]).await {
            200 => passed += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((passed, limited), (30, 60), "a limit of 30 per minute across three nodes");
    // Each node served some of the 30.
    for node in &nodes {
        assert!(node.mock.state.requests.lock().unwrap().len() >= 10);
    }
}

#[actix_web::test]
async fn a_redis_outage_follows_the_policy_and_heals_by_itself() {
    for policy in [RedisFailure::Allow, RedisFailure::Refuse] {
        let mut redis = Redis::start();
        let port = redis.port;
        let nodes = three_nodes(&redis, policy).await;
        assert_eq!(status_of(&nodes[0]).await, 200);
        redis.stop();
        let during = status_of(&nodes[1]).await;
        let want = match policy {
            RedisFailure::Allow => 200,
            RedisFailure::Refuse => 503,
        };
        assert_eq!(during, want, "{policy:?} while Redis is down");
        assert!(failures(&nodes[1]).await > 0, "the failure is counted");
        // Redis comes back (empty, as after a crash): the nodes use it again by themselves, and
        // the one window they share fills to exactly 30.
        let _back = Redis::start_on(port);
        within(20, "the nodes to reach Redis again", async {
            for node in &nodes {
                loop {
                    let before = failures(node).await;
                    let _ = status_of(node).await;
                    if failures(node).await == before {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        })
        .await;
        let mut statuses = Vec::new();
        for i in 0..45 {
            statuses.push(status_of(&nodes[i % 3]).await);
        }
        let first_refusal = statuses.iter().position(|s| *s == 429).unwrap_or_else(|| panic!("{statuses:?}"));
        assert!(statuses[first_refusal..].iter().all(|s| *s == 429), "{policy:?}: {statuses:?}");
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let counted: u64 =
            redis::cmd("ZCARD").arg("torii:rl:gateway:default:s:30:60000").query_async(&mut connection).await.unwrap();
        assert_eq!(counted, 30, "{policy:?}: the shared window after Redis came back");
    }
}

async fn failures(node: &TestApp) -> u64 {
    counter(node, "torii_cluster_redis_failures_total").await
}

async fn counter(node: &TestApp, name: &str) -> u64 {
    let metrics = node.client.get(node.url("/metrics")).send().await.unwrap().body().await.unwrap();
    String::from_utf8_lossy(&metrics)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} is not exposed"))
}

/// Leases (reserved spend) held in Redis, read past the nodes.
async fn leases(redis: &Redis) -> usize {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("torii:spend:*:a").query_async(&mut connection).await.unwrap();
    let mut held = 0;
    for key in keys {
        let n: usize = redis::cmd("HLEN").arg(&key).query_async(&mut connection).await.unwrap();
        held += n;
    }
    held
}

/// A request under a rate limit and a spend limit, both in Redis, makes one round trip before
/// it is forwarded (the rate check and the reservation in one script) and one after it (the
/// settlement, off the request path): two in all, where checking them one after the other
/// takes three.
#[actix_web::test]
async fn rate_and_spend_limits_take_one_round_trip_before_forwarding() {
    let redis = Redis::start();
    let nodes = three_nodes(&redis, RedisFailure::Refuse).await;
    let node = &nodes[0];
    // The first request loads the scripts and opens the connection.
    assert_eq!(status_of(node).await, 200);
    within(10, "the first settlement", async {
        while leases(&redis).await > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let before = counter(node, "torii_cluster_redis_round_trips_total").await;
    assert_eq!(status_of(node).await, 200);
    let made = within(10, "the settlement", async {
        loop {
            let made = counter(node, "torii_cluster_redis_round_trips_total").await - before;
            if made >= 2 && leases(&redis).await == 0 {
                return made;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(made, 2, "round trips for one request with rate and spend limits");
}

/// Polls until `key` shows `want` (spent, reserved): a shared lease ends in a task of its own.
async fn usage_reaches(ledger: &Spend, key: &str, now: u64, want: (f64, f64)) {
    within(10, "the spend to settle", async {
        loop {
            let (so_far, held) = ledger.usage(key, now).await;
            if (so_far - want.0).abs() < 1e-9 && (held - want.1).abs() < 1e-9 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

fn claim(key: &str, limit: f64, window: u64, sliding: bool) -> Claim {
    Claim { key: key.into(), limit, window, sliding, label: format!("{key} label") }
}

/// One scenario for both ledgers: what each reservation answers (held, or the refusal's
/// label and wait).
async fn spend_scenario(spend: &Spend) -> Vec<String> {
    let mut out = Vec::new();
    let show = |r: &Result<Held, Refusal>| match r {
        Ok(Held::Unchecked) => "unchecked".to_string(),
        Ok(_) => "held".to_string(),
        Err(Refusal::Exceeded(e)) => format!("refused: {} ({} s)", e.label, e.retry_after_secs),
        Err(Refusal::Unavailable) => "unavailable".to_string(),
    };
    // Reservations never exceed the limit; a failed request's is released, a settled one counts
    // its real cost.
    let dollar = [claim("k", 1.0, 3600, false)];
    let mut held = Vec::new();
    for _ in 0..4 {
        let r = spend.reserve(&dollar, 0.3, 1_000).await;
        out.push(show(&r));
        held.extend(r.ok());
    }
    let mut it = held.into_iter();
    it.next().unwrap().settle(Some(0.1), 1_000);
    drop(it.next());
    usage_reaches(spend, "k", 1_000, (0.1, 0.3)).await;
    out.push(show(&spend.reserve(&dollar, 0.3, 1_000).await));
    // A fixed window resets at its end; a sliding one drains as its spend ages out.
    for (key, sliding) in [("fixed", false), ("sliding", true)] {
        let c = [claim(key, 1.0, 60, sliding)];
        spend.reserve(&c, 1.0, 10_000).await.unwrap().settle(Some(1.0), 10_000);
        usage_reaches(spend, key, 10_000, (1.0, 0.0)).await;
        out.push(show(&spend.reserve(&c, 0.0, 30_000).await));
        out.push(show(&spend.reserve(&c, 0.5, 71_000).await));
    }
    // Spend so far counts only the window's own.
    usage_reaches(spend, "fixed", 200_000, (0.0, 0.0)).await;
    usage_reaches(spend, "sliding", 71_000, (0.0, 0.0)).await;
    // All or nothing across claims: the second refuses, the first keeps nothing reserved.
    let pair = [claim("roomy", 10.0, 60, true), claim("tight", 0.5, 60, true)];
    out.push(show(&spend.reserve(&pair, 0.6, 1_000).await));
    let (so_far, held) = spend.usage("roomy", 1_000).await;
    out.push(format!("{:.4} spent, {:.4} reserved", so_far + 0.0, held + 0.0));
    out
}

#[actix_web::test]
async fn spend_ledgers_behave_alike_embedded_and_in_redis() {
    let redis = Redis::start();
    let local = Spend::new(&Windows::new(&cluster(None, RedisFailure::Refuse)));
    let shared = Spend::new(&Windows::new(&cluster(Some(redis.url()), RedisFailure::Refuse)));
    let embedded = spend_scenario(&local).await;
    let in_redis = spend_scenario(&shared).await;
    assert_eq!(embedded, in_redis, "the embedded and Redis ledgers answer differently");
    assert_eq!(&embedded[..5], ["held", "held", "held", "refused: k label (3599 s)", "held"], "{embedded:?}");
    assert_eq!(embedded[5], "refused: fixed label (30 s)");
    assert_eq!(embedded[6], "held", "the next fixed window");
    assert!(embedded[7].starts_with("refused: sliding label"), "{embedded:?}");
    assert_eq!(embedded[8], "held", "the sliding window's spend aged out");
    assert_eq!(embedded[9], "refused: tight label (1 s)");
    assert_eq!(embedded[10], "0.0000 spent, 0.0000 reserved");
}

/// 50 requests at once over three nodes against one $1 limit: the provider is never asked for
/// more than $1 of answers in all.
#[actix_web::test]
async fn three_nodes_never_spend_more_than_one_shared_limit() {
    let redis = Redis::start();
    let limits =
        json!({"rules": [{"id": "dollar", "limitType": "cost", "limit": 1, "window": 86400, "technique": "sliding"}]});
    // A rate limit no run reaches as well: each request's rate check and reservation then go in
    // one script, whose spend refusals must hold the same.
    let settings = json!({"spend_limits": limits, "rate_limiting_limit": 10_000, "rate_limiting_interval": 60});
    let nodes = cluster_of_three(&redis, RedisFailure::Allow, settings).await;
    let calls = (0..50).map(|i| crate::spend::ask(&nodes[i % 3], None, None, 5));
    let answers = futures_util::future::join_all(calls).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let refused = answers.iter().filter(|(s, b)| *s == 429 && b["error"][0]["code"] == 2045).count();
    assert_eq!(ok + refused, 50, "{answers:?}");
    let forwarded: usize = nodes.iter().map(crate::spend::forwarded).sum();
    assert_eq!(forwarded, ok);
    #[expect(clippy::cast_precision_loss, reason = "a small count")]
    let spent = ok as f64 * crate::spend::ANSWER_COST;
    assert!(spent <= 1.0 + 1e-9, "{ok} answers cost ${spent} across the nodes");
    assert!(ok >= 10, "settling to the real cost lets most of the dollar be used: {ok}");
    // Every node shows the same spend so far (the admin UI's list, read from Redis), once the
    // settlements, which run after each answer, have landed.
    let now = nodes[0].gateway.clock.now_ms();
    within(10, "the spend to settle in Redis", async {
        loop {
            let lists: Vec<Vec<(String, f64, f64)>> = futures_util::future::join_all(
                nodes.iter().map(|n| async move { n.gateway.spend.list("gateway:default|", now).await }),
            )
            .await;
            let settled = lists
                .iter()
                .all(|l| l.len() == 1 && l[0].0.contains("dollar") && (l[0].1 - spent).abs() < 1e-6 && l[0].2 == 0.0);
            if settled {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Three nodes with caching on, sharing one Redis.
async fn caching_nodes(redis: &Redis) -> Vec<TestApp> {
    cluster_of_three(redis, RedisFailure::Allow, json!({"cache_ttl": 300})).await
}

pub async fn cached_ask(node: &TestApp, mock: &str) -> (u16, Option<String>, bytes::Bytes) {
    let mut resp = node
        .client
        .post(node.gw("openai/chat/completions"))
        .insert_header(("authorization", "Bearer sk-a"))
        .insert_header(("x-mock", mock))
        .send_body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
        .await
        .unwrap();
    let status = resp.headers().get("cf-aig-cache-status").map(|v| v.to_str().unwrap().to_string());
    let body = resp.body().await.unwrap();
    (resp.status().as_u16(), status, body)
}

async fn cache_entries(redis: &Redis) -> usize {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("torii:cache:*").query_async(&mut connection).await.unwrap();
    keys.len()
}

/// An answer stored through node A is a HIT on node B (whose upstream is never asked), and a
/// purge through node C empties it for every node.
#[actix_web::test]
async fn an_answer_cached_by_one_node_is_a_hit_on_another_and_purged_for_all() {
    let mut redis = Redis::start();
    let nodes = caching_nodes(&redis).await;
    let (status, cache, first) = cached_ask(&nodes[0], "say").await;
    assert_eq!((status, cache.as_deref()), (200, Some("MISS")));
    within(10, "the entry to reach Redis", async {
        while cache_entries(&redis).await == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let (status, cache, second) = cached_ask(&nodes[1], "say").await;
    assert_eq!((status, cache.as_deref()), (200, Some("HIT")));
    assert_eq!(first, second, "the same answer");
    assert!(nodes[1].mock.requests().is_empty(), "node B's upstream was not asked");
    let (status, body) = nodes[2].call("DELETE", "/gateways/default/cache", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["result"]["purged"].as_u64().unwrap() >= 1, "{body}");
    assert_eq!(cache_entries(&redis).await, 0);
    let (_, cache, _) = cached_ask(&nodes[1], "say").await;
    assert_eq!(cache.as_deref(), Some("MISS"), "purged through node C, gone for node B");
    // Without Redis a lookup is a MISS: the request is answered, and the failure counted.
    redis.stop();
    let (status, cache, _) = cached_ask(&nodes[0], "say").await;
    assert_eq!((status, cache.as_deref()), (200, Some("MISS")));
    assert!(failures(&nodes[0]).await > 0, "the failed lookup is counted");
}

/// Ten identical requests at once, spread over three nodes: one upstream call in all.
#[actix_web::test]
async fn identical_requests_across_nodes_share_one_upstream_call() {
    let redis = Redis::start();
    let nodes = caching_nodes(&redis).await;
    let mut calls = Vec::new();
    for i in 0..10 {
        let (client, url) = (nodes[i % 3].client.clone(), nodes[i % 3].gw("openai/chat/completions"));
        calls.push(actix_web::rt::spawn(async move {
            let mut r = client
                .post(url)
                .insert_header(("authorization", "Bearer sk-a"))
                .insert_header(("x-mock", "hang:flight"))
                .send_body("{}")
                .await
                .unwrap();
            (r.status().as_u16(), r.body().await.unwrap())
        }));
    }
    // Whichever node leads, its upstream holds the answer until the gate opens.
    within(10, "the leader's upstream call", async {
        while nodes.iter().map(|n| n.mock.requests().len()).sum::<usize>() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    for node in &nodes {
        node.mock.open_gate("flight");
    }
    for call in calls {
        let (status, body) = within(20, "every response", call).await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"late"[..]));
    }
    let upstream: usize = nodes.iter().map(|n| n.mock.requests().len()).sum();
    assert_eq!(upstream, 1, "exactly one upstream call for ten identical requests on three nodes");
}

/// The admin UI behind a load balancer with no sticky sessions: the sign-in form comes from
/// node A and is posted to node B, the session works on node C, and signing out on node A ends
/// it everywhere.
#[actix_web::test]
async fn an_admin_session_holds_on_every_node() {
    use crate::ui::{PASSWORD, csrf_of, fetch, set_cookie};
    let redis = Redis::start();
    let nodes = cluster_of_three(&redis, RedisFailure::Refuse, json!({})).await;
    for node in &nodes {
        // Every node's store knows the admin (the control plane is not shared yet).
        let settings = node.settings();
        actix_web::web::block(move || settings.create_admin("root", PASSWORD).unwrap()).await.unwrap();
    }
    let form = fetch(&nodes[0], "GET", "/admin/login", "", None).await;
    let login_cookie = set_cookie(&form.headers, "torii_login").unwrap();
    let csrf = csrf_of(&form.html).unwrap();
    let fields = [("csrf", csrf.as_str()), ("username", "root"), ("password", PASSWORD), ("next", "/admin")];
    let done = fetch(&nodes[1], "POST", "/admin/login", &login_cookie, Some(&fields)).await;
    assert_eq!(done.status, 303, "a form from node A is accepted by node B: {}", done.html);
    let cookie = set_cookie(&done.headers, "torii_session").unwrap();
    let page = fetch(&nodes[2], "GET", "/admin/tokens", &cookie, None).await;
    assert_eq!(page.status, 200, "node C knows the session");
    let csrf = csrf_of(&page.html).unwrap();
    let out = fetch(&nodes[0], "POST", "/admin/logout", &cookie, Some(&[("csrf", csrf.as_str())])).await;
    assert_eq!(out.status, 303);
    for node in &nodes {
        let page = fetch(node, "GET", "/admin/tokens", &cookie, None).await;
        assert_eq!(page.status, 303, "signed out everywhere");
    }
    // The form's pre-session was used up by the sign-in: it cannot sign in again.
    let again = fetch(&nodes[2], "POST", "/admin/login", &login_cookie, Some(&fields)).await;
    assert_eq!(again.status, 403, "{}", again.html);
}
