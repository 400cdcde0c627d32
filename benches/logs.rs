//! Log store: sustained ingest through the batching writer (records with 1–2 KB bodies), the
//! stored metadata size, and the first page of filtered searches over 1,000,000 logs.
//!
//! Then the admin UI's pages over that store, through the real server (round trips on loopback,
//! so an upper bound on the server-side render time).
//!
//! Run: `cargo bench --bench logs` (`BENCH_LOGS` sets the search corpus size, default 1,000,000).

#![expect(
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "a benchmark harness: any failure aborts the run; float conversions are for reporting"
)]

mod common;

use std::sync::Arc;
use std::time::Instant;

/// The allocator the `torii` binary uses, so the writer is measured as it runs there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use serde_json::json;
use torii::control::{self, Settings};
use torii::logs::query::{Filter, ListQuery, Op};
use torii::logs::record::{Head, LogBodies, LogEntry, LogMeta, RequestType, encode_meta};
use torii::logs::writer::LogSink;
use torii::store::Store;

const MODELS: &[&str] = &["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash", "llama-3.1-8b-instant"];

/// Logs are spread over the 30 days before the run, so the overview reads a month of rollups.
const SPREAD_MS: i64 = 30 * 86_400_000;

fn entry(i: u64, with_body: bool) -> LogEntry {
    entry_at(i, with_body, 1_000_000)
}

fn entry_at(i: u64, with_body: bool, corpus: u64) -> LogEntry {
    let rare = (i + 1).is_multiple_of(1000);
    let model = if rare { "rare-model-x" } else { MODELS[(i % MODELS.len() as u64) as usize] };
    let body = with_body.then(|| LogBodies {
        request_headers: vec![("content-type".into(), "application/json".into()), ("authorization".into(), "REDACTED".into())].into(),
        request_body: format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"{}"}}]}}"#, "lorem ipsum ".repeat(40 + (i % 50) as usize)).into_bytes().into(),
        response_headers: vec![("content-type".into(), "application/json".into())].into(),
        response_body: format!(r#"{{"id":"chatcmpl-{i}","choices":[{{"message":{{"content":"{}"}}}}],"usage":{{"prompt_tokens":120,"completion_tokens":40}}}}"#, "dolor sit amet ".repeat(30 + (i % 40) as usize)).into_bytes(),
    });
    let created_at =
        now_ms() - SPREAD_MS + i64::try_from(i).unwrap() * (SPREAD_MS / i64::try_from(corpus.max(1)).unwrap());
    LogEntry {
        gateway: "default".into(),
        meta: LogMeta {
            id: torii::logs::record::log_id(created_at),
            created_at,
            provider: if model.starts_with("claude") { "anthropic".into() } else { "openai".into() },
            model: Some(model.into()),
            model_type: Some("chat".into()),
            method: "POST".into(),
            path: "chat/completions".into(),
            success: !i.is_multiple_of(20),
            cached: i.is_multiple_of(7),
            status_code: if i.is_multiple_of(20) { 500 } else { 200 },
            duration: 200 + (i % 900) as u32,
            ttfb: 80,
            tokens_in: 100 + (i % 2000) as u32,
            tokens_out: 20 + (i % 500) as u32,
            cached_tokens_in: 0,
            cache_write_tokens: 0,
            cost: Some((i % 1000) as f64 / 100_000.0),
            custom_cost: false,
            metadata: Some(json!({"user": format!("user-{}", i % 5000), "team": "search"}).to_string().into()),
            request_content_type: Some("application/json".into()),
            response_content_type: Some("application/json".into()),
            request_type: RequestType::Provider,
            step: 0,
            attempt: 1,
            event_id: uuid::Uuid::now_v7().to_string().into(),
            user_agent: Some("OpenAI/Python 1.99.0".into()),
            request_size: 1200,
            response_size: 900,
            error: None,
            payload: with_body,
            truncated: false,
            feedback: None,
            score: None,
            requested_model: None,
            policy: None,
        },
        bodies: body,
        store: true,
        trace: None,
    }
}

fn open(dir: &std::path::Path) -> (Arc<Settings>, Arc<LogSink>) {
    let store = Store::open(&dir.join("torii.redb")).unwrap();
    control::ensure_default_gateway(&store).unwrap();
    let settings = Arc::new(Settings::load(store).unwrap());
    let sink = settings.start_log_sink(200_000, torii::logs::writer::Hooks::default()).unwrap();
    (settings, sink)
}

fn now_ms() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn ingest(sink: &LogSink, n: u64, with_body: bool) -> f64 {
    let started = Instant::now();
    for i in 0..n {
        let e = entry_at(i, with_body, n);
        // Keep the producer side realistic: never faster than the writer can drain.
        while sink.stats.depth() > 150_000 {
            std::thread::yield_now();
        }
        sink.submit(e);
    }
    sink.flush();
    n as f64 / started.elapsed().as_secs_f64()
}

fn time_query(settings: &Settings, name: &str, q: &ListQuery) {
    // Warm once, then take the median of five.
    settings.list_logs("default", q).unwrap();
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let page = settings.list_logs("default", q).unwrap();
            assert!(page.logs.len() <= q.per_page);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    let page = settings.list_logs("default", q).unwrap();
    println!("  {name:<44} {:>8.2} ms  (page {} rows, total {})", runs[2], page.logs.len(), page.total_count);
}

fn filter(key: &str, operator: Op, value: serde_json::Value) -> Filter {
    Filter { key: key.into(), operator, value: vec![value] }
}

/// A record as the proxy bench's logged JSON request leaves it: one gateway and provider, ids
/// 50 µs apart (20,000 requests a second), a 1 KB chat request and its answer, heads of a few
/// headers, no metadata.
fn proxy_like(i: u64, t0: i64) -> LogEntry {
    let created_at = t0 + i64::try_from(i / 20).unwrap();
    let model = MODELS[(i % 2) as usize];
    let mut e = entry_at(i, false, 1);
    e.meta.id = torii::logs::record::log_id(created_at);
    e.meta.created_at = created_at;
    e.meta.model = Some(model.into());
    e.meta.metadata = None;
    e.meta.payload = true;
    e.bodies = Some(LogBodies {
        // Heads as the proxy makes them: one string of `name:value` lines.
        request_headers: Head::Packed(
            "host:127.0.0.1:8080\ncontent-type:application/json\nauthorization:REDACTED\nuser-agent:wrk\n".into(),
            4,
        ),
        request_body: format!(
            r#"{{"model":"{model}","messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":"{} {i}"}}]}}"#,
            "Summarise the following paragraph in one sentence. ".repeat(17)
        )
        .into_bytes()
        .into(),
        response_headers: Head::Packed(
            "content-type:application/json\ncontent-length:412\ndate:Mon, 30 Nov 2026 12:00:00 GMT\n".into(),
            3,
        ),
        response_body: format!(
            r#"{{"id":"chatcmpl-{i}","object":"chat.completion","created":1780000000,"model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"A short summary of the paragraph, number {i}."}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":230,"completion_tokens":12,"total_tokens":242}}}}"#
        )
        .into_bytes(),
    });
    e
}

/// CPU time of this process's thread named `name` (its first 15 bytes, as the kernel keeps it).
fn thread_cpu(name: &str) -> std::time::Duration {
    let name = &name[..name.len().min(15)];
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        if std::fs::read_to_string(dir.join("comm")).unwrap().trim() == name {
            let ns: u64 =
                std::fs::read_to_string(dir.join("schedstat")).unwrap().split(' ').next().unwrap().parse().unwrap();
            return std::time::Duration::from_nanos(ns);
        }
    }
    panic!("no thread named {name}");
}

/// A record like [`proxy_like`] whose user message and answer are different text in every
/// log (the system prompt and the JSON around them are shared, as in one application's logs).
fn varied(i: u64, t0: i64) -> LogEntry {
    let mut e = proxy_like(i, t0);
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let model = e.meta.model.clone().unwrap_or_default();
    if let Some(b) = e.bodies.as_mut() {
        b.request_body = format!(
            r#"{{"model":"{model}","messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":"{}"}}]}}"#,
            common::words(&mut x, 880)
        )
        .into_bytes()
        .into();
        b.response_body = format!(
            r#"{{"id":"chatcmpl-{i}","object":"chat.completion","created":1780000000,"model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"{}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":230,"completion_tokens":12,"total_tokens":242}}}}"#,
            common::words(&mut x, 160)
        )
        .into_bytes();
    }
    e
}

/// The writer's own CPU time per record, for records like the proxy bench's (made before the
/// clock starts, so only the writer is measured), the bodies' stored size per record and the
/// time to read one log's bodies back: records
/// alike but for their ids and numbers (as the proxy bench sends), then records whose text
/// differs in each.
fn writer_cpu_per_log() {
    const N: u64 = 200_000;
    for (what, make) in [
        ("alike but for ids (the proxy bench's)", proxy_like as fn(u64, i64) -> LogEntry),
        ("a different user message and answer in each", varied),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (settings, sink) = open(dir.path());
        let t0 = now_ms() - 60_000;
        let records: Vec<LogEntry> = (0..N).map(|i| make(i, t0)).collect();
        let sampled: Vec<String> =
            records.iter().step_by(997).map(|e| uuid::Uuid::from_u128(e.meta.id).to_string()).collect();
        let before = thread_cpu("torii-log-writer");
        for e in records {
            sink.submit(e);
        }
        sink.flush();
        let used = thread_cpu("torii-log-writer").saturating_sub(before);
        assert_eq!(sink.stats.written.load(std::sync::atomic::Ordering::Relaxed), N, "every record stored");
        sink.close();
        // The bodies' stored bytes (the file grows in steps, so its length says little).
        let bodies_bytes = {
            use redb::{ReadableDatabase as _, ReadableTableMetadata as _};
            let txn = settings.store().db().unwrap().begin_read().unwrap();
            let stats = txn.open_table(torii::store::tables::LOG_BODY_CHUNKS).unwrap().stats().unwrap();
            stats.stored_bytes() + stats.fragmented_bytes()
        };
        // Reading one log's bodies (a chunk read and decompressed), as the log detail does.
        let mut reads: Vec<std::time::Duration> = sampled
            .iter()
            .map(|id| {
                let t = Instant::now();
                assert!(torii::logs::query::bodies(settings.store(), "default", id).unwrap().is_some());
                t.elapsed()
            })
            .collect();
        reads.sort();
        println!(
            "log writer CPU per record, proxy-like records (1.3 KB bodies, 20,000 a second), {what}: {:.2} µs; bodies stored in {:.0} bytes a record; one log's bodies read in {:.0} µs (median of {}) ({N} records)",
            used.as_secs_f64() * 1e6 / N as f64,
            bodies_bytes as f64 / N as f64,
            reads[reads.len() / 2].as_secs_f64() * 1e6,
            reads.len()
        );
    }
}

fn main() {
    writer_cpu_per_log();
    if std::env::var("BENCH_ONLY").is_ok_and(|o| o == "writer") {
        return;
    }
    let corpus: u64 = std::env::var("BENCH_LOGS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);

    let dir = tempfile::tempdir().unwrap();
    let (_, sink) = open(dir.path());
    let rate = ingest(&sink, 100_000, true);
    println!("ingest with 1-2 KB bodies: {rate:.0} records/s (100,000 records, batched commits)");
    let meta_avg =
        (0..10_000).map(|i| encode_meta(&entry(i, false).meta).map_or(0, |b| b.len())).sum::<usize>() as f64 / 10_000.0;
    println!("stored metadata per log: {meta_avg:.0} bytes on average (postcard, excluding bodies and index entries)");
    sink.close();

    let dir = tempfile::tempdir().unwrap();
    let (settings, sink) = open(dir.path());
    let rate = ingest(&sink, corpus, false);
    println!("ingest without bodies: {rate:.0} records/s ({corpus} records)");
    let size = std::fs::metadata(dir.path().join("torii.redb")).unwrap().len();
    println!(
        "database with {corpus} logs (metadata + indexes + counters): {:.0} bytes per log",
        size as f64 / corpus as f64
    );
    let base = ListQuery {
        page: 1,
        per_page: 50,
        order_by: "created_at".into(),
        descending: true,
        filters: vec![],
        search: None,
        meta_info: false,
    };
    let with = |filters: Vec<Filter>| ListQuery { filters, ..base.clone() };
    println!("first page (50 rows) over {corpus} logs:");
    time_query(&settings, "no filter", &base);
    time_query(&settings, "provider = anthropic", &with(vec![filter("provider", Op::Eq, json!("anthropic"))]));
    time_query(&settings, "success = false", &with(vec![filter("success", Op::Eq, json!(false))]));
    time_query(&settings, "model = rare-model-x (0.1%)", &with(vec![filter("model", Op::Eq, json!("rare-model-x"))]));
    time_query(
        &settings,
        "metadata.user = user-42 (0.02%)",
        &with(vec![filter("metadata.user", Op::Eq, json!("user-42"))]),
    );
    time_query(&settings, "cost > 0.005", &with(vec![filter("cost", Op::Gt, json!(0.005))]));
    time_query(&settings, "tokens_in < 150", &with(vec![filter("tokens_in", Op::Lt, json!(150))]));
    time_query(
        &settings,
        "provider = openai and success = false",
        &with(vec![filter("provider", Op::Eq, json!("openai")), filter("success", Op::Eq, json!(false))]),
    );
    time_query(&settings, "search \"rare-model\"", &ListQuery { search: Some("rare-model".into()), ..base.clone() });
    let day = 86_400_000;
    time_query(
        &settings,
        "created_at < 15 days ago",
        &with(vec![filter("created_at", Op::Lt, json!(now_ms() - 15 * day))]),
    );
    time_query(
        &settings,
        "one hour, 10 days ago",
        &with(vec![
            filter("created_at", Op::Gt, json!(now_ms() - 10 * day)),
            filter("created_at", Op::Lt, json!(now_ms() - 10 * day + day / 24)),
        ]),
    );
    sink.close();
    let log_id = uuid::Uuid::from_u128(settings.list_logs("default", &base).unwrap().logs[0].id).to_string();
    settings.create_admin("bench", "bench password").unwrap();
    drop(sink);
    drop(settings);
    ui_pages(dir.path(), corpus, &log_id);
}

/// Median round trip of each admin page over the seeded store.
fn ui_pages(dir: &std::path::Path, corpus: u64, log_id: &str) {
    let config = torii::config::Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        workers: 1,
        ..torii::config::Config::default()
    };
    actix_web::rt::System::new().block_on(async move {
        let running = torii::app::start(config).unwrap();
        let base = format!("http://{}", running.addr);
        actix_web::rt::spawn(running.server);
        let client = awc::Client::builder().disable_redirects().timeout(std::time::Duration::from_secs(60)).finish();
        let mut form = client.get(format!("{base}/admin/login")).send().await.unwrap();
        let cookie_of = |r: &awc::ClientResponse, name: &str| {
            r.headers()
                .get_all("set-cookie")
                .filter_map(|v| v.to_str().ok())
                .find(|v| v.starts_with(name))
                .map(|v| v.split(';').next().unwrap().to_string())
                .unwrap()
        };
        let login_cookie = cookie_of(&form, "torii_login=");
        let html = String::from_utf8(form.body().await.unwrap().to_vec()).unwrap();
        let marker = "name=\"csrf\" value=\"";
        let at = html.find(marker).unwrap() + marker.len();
        let csrf: String = html[at..].chars().take_while(|c| *c != '"').collect();
        let done = client
            .post(format!("{base}/admin/login"))
            .insert_header(("cookie", login_cookie))
            .send_form(&[("csrf", csrf.as_str()), ("username", "bench"), ("password", "bench password")])
            .await
            .unwrap();
        let session = cookie_of(&done, "torii_session=");
        println!("admin UI pages over {corpus} logs (median of 5 round trips on loopback):");
        let pages = [
            ("overview, last 24 hours", "/admin".to_string()),
            ("overview, last 30 days", "/admin?range=30d".to_string()),
            ("logs, first page", "/admin/gateways/default/logs".to_string()),
            ("logs, provider = anthropic", "/admin/gateways/default/logs?provider=anthropic".to_string()),
            ("logs, model = rare-model-x", "/admin/gateways/default/logs?model=rare-model-x".to_string()),
            (
                "logs, metadata user = user-42",
                "/admin/gateways/default/logs?meta_key=user&meta_value=user-42".to_string(),
            ),
            ("logs, page 100", "/admin/gateways/default/logs?page=100".to_string()),
            ("log detail", format!("/admin/gateways/default/logs/{log_id}")),
            ("gateway", "/admin/gateways/default".to_string()),
            ("tokens", "/admin/tokens".to_string()),
            ("cache", "/admin/cache".to_string()),
            ("health", "/admin/health".to_string()),
        ];
        for (name, path) in pages {
            let mut runs = Vec::new();
            for _ in 0..6 {
                let started = Instant::now();
                let mut resp = client
                    .get(format!("{base}{path}"))
                    .insert_header(("cookie", session.clone()))
                    .send()
                    .await
                    .unwrap();
                let body = resp.body().limit(64 << 20).await.unwrap();
                runs.push(started.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(resp.status(), 200, "{path}: {}", String::from_utf8_lossy(&body));
            }
            runs.remove(0);
            runs.sort_by(f64::total_cmp);
            println!("  {name:<44} {:>8.2} ms", runs[2]);
        }
    });
}
