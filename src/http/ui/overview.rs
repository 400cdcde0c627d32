//! Overview (analytics charts and breakdowns), cache and health pages.

use actix_web::{HttpResponse, web};
use askama::Template;

use super::Control;
use super::forms::Fields;
use super::{Admin, AdminForm, Layout, UiError, blocking, bytes, render, see_other, time_ms, usd};
use crate::analytics::Rollup;
use crate::control::{gateways, now_unix};
use crate::http::ops::Observed;

/// The ranges the overview offers: (query value, label, seconds, bucket seconds).
const RANGES: &[(&str, &str, i64, i64)] = &[
    ("1h", "last hour", 3600, 60),
    ("24h", "last 24 hours", 86_400, 3600),
    ("7d", "last 7 days", 7 * 86_400, 6 * 3600),
    ("30d", "last 30 days", 30 * 86_400, 86_400),
];

/// One bar of a server-rendered SVG chart (coordinates in the 600×160 view box).
pub struct Bar {
    pub x: String,
    pub y: String,
    pub w: String,
    pub h: String,
    pub label: String,
}

/// A bar chart.
pub struct Chart {
    pub title: &'static str,
    pub bars: Vec<Bar>,
    pub max: String,
    pub from: String,
    pub to: String,
}

#[expect(clippy::cast_precision_loss, reason = "chart geometry")]
fn chart(title: &'static str, points: &[(i64, f64)], show: impl Fn(f64) -> String) -> Chart {
    let max = points.iter().map(|p| p.1).fold(0.0_f64, f64::max);
    let n = points.len().max(1) as f64;
    let slot = 600.0 / n;
    let bars = points
        .iter()
        .enumerate()
        .map(|(i, (t, v))| {
            let h = if max > 0.0 { v / max * 150.0 } else { 0.0 };
            Bar {
                x: format!("{:.2}", i as f64 * slot + slot * 0.1),
                y: format!("{:.2}", 155.0 - h),
                w: format!("{:.2}", (slot * 0.8).max(0.5)),
                h: format!("{h:.2}"),
                label: format!("{}: {}", super::time_ms(t * 1000), show(*v)),
            }
        })
        .collect();
    let edge = |p: Option<&(i64, f64)>| p.map(|(t, _)| super::time_ms(t * 1000)).unwrap_or_default();
    Chart { title, bars, max: show(max), from: edge(points.first()), to: edge(points.last()) }
}

/// A row of a breakdown table.
pub struct Row {
    pub name: String,
    pub requests: u64,
    pub errors: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost: String,
    pub cached: u64,
}

fn row(name: &str, r: &Rollup) -> Row {
    Row {
        name: name.to_string(),
        requests: r.requests,
        errors: r.errors,
        tokens_in: r.tokens_in,
        tokens_out: r.tokens_out,
        cost: usd(r.cost),
        cached: r.cached,
    }
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    page: Layout,
    gateways: Vec<(String, bool)>,
    gateway: String,
    ranges: Vec<(&'static str, &'static str, bool)>,
    totals: Row,
    hit_ratio: String,
    charts: Vec<Chart>,
    providers: Vec<Row>,
    models: Vec<Row>,
}

/// `GET /admin?gateway=&range=`
#[expect(clippy::cast_precision_loss, reason = "ratios and chart values")]
pub async fn overview(who: Admin, gw: Control, q: web::Query<Fields>) -> Result<HttpResponse, UiError> {
    let &(range, _, span, bucket) = RANGES.iter().find(|r| r.0 == q.get("range")).unwrap_or(&RANGES[1]);
    let wanted = q.get("gateway").to_string();
    let (ids, gateway, report, end) = blocking(&gw, move |s| {
        let ids: Vec<String> = gateways::list(s, None)?.into_iter().map(|g| g.id).collect();
        let gateway = if ids.contains(&wanted) { wanted } else { ids.first().cloned().unwrap_or_default() };
        let end = now_unix();
        let report = s.analytics(&gateway, end - span, end, bucket)?;
        Ok((ids, gateway, report, end))
    })
    .await?;
    // Every bucket of the range, empty ones included.
    let first = (end - span) - (end - span).rem_euclid(bucket);
    let mut buckets: Vec<(i64, Rollup)> = Vec::new();
    let mut t = first;
    let mut series = report.series.iter().peekable();
    while t <= end {
        let mut r = Rollup::default();
        while let Some((at, got)) = series.peek() {
            if *at > t {
                break;
            }
            if *at == t {
                r.merge(got);
            }
            series.next();
        }
        buckets.push((t, r));
        t += bucket;
    }
    let pts = |f: &dyn Fn(&Rollup) -> f64| buckets.iter().map(|(t, r)| (*t, f(r))).collect::<Vec<_>>();
    let count = |v: f64| format!("{v:.0}");
    let charts = vec![
        chart("Requests", &pts(&|r| r.requests as f64), count),
        chart("Errors", &pts(&|r| r.errors as f64), count),
        chart("Tokens (in + out)", &pts(&|r| (r.tokens_in + r.tokens_out) as f64), count),
        chart("Cost (USD)", &pts(&|r| r.cost), usd),
    ];
    let totals = &report.totals;
    let hit_ratio = if totals.requests == 0 {
        "–".to_string()
    } else {
        format!("{:.1} %", totals.cached as f64 * 100.0 / totals.requests as f64)
    };
    let mut providers: Vec<Row> = report.by_provider.iter().map(|(k, r)| row(k, r)).collect();
    providers.sort_by_key(|r| std::cmp::Reverse(r.requests));
    let mut models: Vec<Row> = report.by_model.iter().map(|(k, r)| row(k, r)).collect();
    models.sort_by_key(|r| std::cmp::Reverse(r.requests));
    render(&OverviewPage {
        page: Layout::new(&who, "overview", "Overview"),
        gateways: ids.into_iter().map(|g| (g.clone(), g == gateway)).collect(),
        gateway,
        ranges: RANGES.iter().map(|r| (r.0, r.1, r.0 == range)).collect(),
        totals: row("total", totals),
        hit_ratio,
        charts,
        providers,
        models,
    })
}

/// A gateway's cache line.
pub struct CacheRow {
    pub gateway: String,
    pub ttl: String,
    pub entries: u64,
    pub size: String,
    pub hits: u64,
    pub misses: u64,
    pub ratio: String,
    pub tokens_saved: u64,
    pub cost_saved: String,
}

#[derive(Template)]
#[template(path = "cache.html")]
struct CachePage {
    page: Layout,
    rows: Vec<CacheRow>,
    total_entries: u64,
    total_size: String,
    cap: String,
}

/// `GET /admin/cache`
pub async fn cache(who: Admin, gw: Control) -> Result<HttpResponse, UiError> {
    let list = blocking(&gw, |s| Ok(gateways::list(s, None)?)).await?;
    let rows = list
        .iter()
        .map(|g| {
            let st = gw.cache.stats(&g.id);
            CacheRow {
                gateway: g.id.clone(),
                ttl: g.cache_ttl.filter(|t| *t > 0).map_or_else(|| "off".into(), |t| format!("{t} s")),
                entries: st.entries,
                size: bytes(st.bytes),
                hits: st.counters.hits,
                misses: st.counters.misses,
                ratio: format!("{:.1} %", st.hit_ratio * 100.0),
                tokens_saved: st.counters.tokens_saved_in + st.counters.tokens_saved_out,
                cost_saved: usd(st.counters.cost_saved),
            }
        })
        .collect();
    let (total_entries, total) = gw.cache.totals();
    render(&CachePage {
        page: Layout::new(&who, "cache", "Cache"),
        rows,
        total_entries,
        total_size: bytes(total),
        cap: bytes(gw.config().cache_max_bytes),
    })
}

/// `POST /admin/cache/{gateway}/purge`
pub async fn purge(
    gw: Control,
    path: web::Path<String>,
    AdminForm { who, .. }: AdminForm,
) -> Result<HttpResponse, UiError> {
    let id = path.into_inner();
    let found = blocking(&gw, {
        let id = id.clone();
        move |s| Ok(gateways::get(s, &id)?)
    })
    .await?;
    let mut n = gw.cache.purge_gateway(&found.id);
    if let Some(shared) = &gw.shared_cache {
        n += shared.purge_gateway(&found.id).await;
    }
    tracing::info!(gateway = %found.id, entries = n, admin = %who.0.username, "cache purged from the admin UI");
    Ok(see_other("/admin/cache"))
}

#[derive(Template)]
#[template(path = "health.html")]
struct HealthPage {
    page: Layout,
    version: &'static str,
    uptime: String,
    db_size: String,
    queue_depth: u64,
    queue_capacity: usize,
    written: u64,
    dropped: u64,
    capped: u64,
    failed_batches: u64,
    writer_panics: u64,
    store_failure: String,
    cache_entries: u64,
    cache_size: String,
    export: String,
}

/// `GET /admin/health`
pub async fn health(who: Admin, gw: Control, seen: web::Data<Observed>) -> Result<HttpResponse, UiError> {
    use std::sync::atomic::Ordering::Relaxed;
    let path = gw.config().db_path();
    let settings = gw.settings.clone();
    let (db, backlog) = web::block(move || (std::fs::metadata(path).map_or(0, |m| m.len()), settings.export_backlog()))
        .await
        .map_err(|e| UiError::Internal(e.to_string()))?;
    let export = match &gw.config().export.url {
        None => "off (no [export] url)".to_string(),
        Some(url) => {
            let e = &seen.export;
            let last = e.last_sent_ms.load(Relaxed);
            let last = if last == 0 { "never".to_string() } else { time_ms(i64::try_from(last).unwrap_or(0)) };
            let error = e.last_error.lock().ok().and_then(|x| x.clone());
            format!(
                "to {url}: {} sent, last at {last}; {} waiting; {} failed attempts{}",
                e.sent.load(Relaxed),
                backlog.map_or_else(|e| format!("(unknown: {e})"), |n| n.to_string()),
                e.failures.load(Relaxed),
                error.map_or_else(String::new, |why| format!(" (now failing: {why})"))
            )
        }
    };
    let up = seen.started.elapsed().as_secs();
    let stats = &seen.log_stats;
    let (cache_entries, cache_bytes) = gw.cache.totals();
    render(&HealthPage {
        page: Layout::new(&who, "health", "Health"),
        version: env!("CARGO_PKG_VERSION"),
        uptime: format!("{}d {}h {}m {}s", up / 86_400, up / 3600 % 24, up / 60 % 60, up % 60),
        db_size: bytes(db),
        queue_depth: stats.depth(),
        queue_capacity: gw.config().log_queue,
        written: stats.written.load(Relaxed),
        dropped: stats.dropped.load(Relaxed),
        capped: stats.capped.load(Relaxed),
        failed_batches: stats.failed_batches.load(Relaxed),
        writer_panics: stats.panics.load(Relaxed),
        store_failure: gw.settings.store_failure().unwrap_or_default(),
        cache_entries,
        cache_size: bytes(cache_bytes),
        export,
    })
}

/// A file read in 64 KiB pieces off the worker threads, removed when the download ends.
struct Download {
    file: Option<std::fs::File>,
    path: std::path::PathBuf,
}

impl Drop for Download {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `GET /admin/backup`: a consistent copy of the database, taken now, as a download.
pub async fn backup(who: Admin, gw: Control) -> Result<HttpResponse, UiError> {
    let path = gw.config().data_dir.join(format!("backup-{}.redb", uuid::Uuid::now_v7().simple()));
    let target = path.clone();
    let copied = blocking(&gw, move |s| s.backup_to(&target).map_err(|e| UiError::Internal(e.to_string()))).await?;
    tracing::info!(admin = %who.0.username, entries = copied.entries, bytes = copied.bytes, "backup downloaded");
    let file = std::fs::File::open(&path).map_err(|e| UiError::Internal(e.to_string()))?;
    let state = Download { file: Some(file), path };
    let body = futures_util::stream::unfold(state, |mut state| async move {
        let mut file = state.file.take()?;
        let read = web::block(move || {
            use std::io::Read as _;
            let mut buf = vec![0u8; 64 * 1024];
            let n = file.read(&mut buf)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((buf, file))
        })
        .await;
        match read {
            Ok(Ok((buf, _))) if buf.is_empty() => None,
            Ok(Ok((buf, file))) => {
                state.file = Some(file);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), state))
            }
            Ok(Err(e)) => Some((Err(e), state)),
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), state)),
        }
    });
    let name = format!("torii-{}.redb", time::OffsetDateTime::now_utc().unix_timestamp());
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("content-disposition", format!("attachment; filename=\"{name}\"")))
        .insert_header(("content-length", copied.bytes.to_string()))
        .streaming(body))
}
