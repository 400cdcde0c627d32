//! Proxy overhead: a zero-latency mock upstream driven directly and through Torii with the
//! same load generator; RPS, p50/p99 latency (or time to first SSE chunk) and the gateway's
//! CPU time per request, non-streaming and streaming, at concurrency 1 and 32 (`json-varied`:
//! logged JSON whose last user message differs from request to request, as an application's
//! do); and the universal endpoint with one step, and with a step 0 that fails fast (401)
//! before step 1.
//!
//! Run: `cargo bench --bench proxy` (`BENCH_SECS` sets the seconds per scenario, default 3;
//! `BENCH_ONLY` picks scenarios; `BENCH_REDIS=redis://...` runs Torii in cluster mode;
//! `BENCH_FLOOR=1` adds a bare actix-web + awc proxy, the stack Torii is built on without
//! Torii's own work). nginx and the bare proxy get the scenario's request as a client sends it
//! to the provider (the SSE scenario's asks to stream).
//! Torii is pinned to CPU 0, the mock and the load generator to CPU 1 (when `taskset` exists).

#![expect(
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a benchmark harness: any failure aborts the run; float conversions are for reporting"
)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CHAT: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"gpt-bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the benchmark upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#;
/// A 1 KB chat request (990 bytes: a system prompt and three turns), the size issue 13 measures with.
const REQUEST_BODY: &str = r#"{"model":"gpt-bench","temperature":0.2,"max_tokens":256,"messages":[{"role":"system","content":"You are a careful assistant for an internal support desk. Answer in plain English, name the runbook section you used, and say so when you are unsure. Keep answers under two hundred words."},{"role":"user","content":"Our nightly export job failed again with a timeout after the database maintenance window moved to 02:00 UTC. The job starts at 01:45, reads about forty thousand rows from the orders table, writes a CSV file to the shared bucket, and then posts a summary to the team channel. Yesterday it ran for nineteen minutes before the connection dropped."},{"role":"assistant","content":"The timing suggests the maintenance window cuts the job's connection. Check the database log for a restart near 02:00 UTC, and the job's retry settings."},{"role":"user","content":"Is it safe to move the job to 03:00 UTC, given that the finance dashboards read that CSV at 06:00 UTC every weekday?"}]}"#;

/// The provider every target reaches: a small HTTP/1.1 server on a thread of its own (one
/// current-thread runtime) that answers as providers send. Each answer's head and body leave in
/// writes of their own, and a stream's first event apart from the rest (see [`Answers::new`]),
/// with `TCP_NODELAY` (DESIGN §7: no target may count on an answer arriving whole). It is
/// written on tokio and `httparse` rather than actix-web because it shares a core with the load
/// generator: the framework's per-request work made that core the limit once the answers were
/// split (README, Performance).
fn start_mock() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let answers = std::sync::Arc::new(Answers::new());
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                tokio::spawn(mock_connection(stream, std::sync::Arc::clone(&answers)));
            }
        });
    });
    addr
}

/// The mock's answers, framed once: each is the writes it is sent in, in order.
struct Answers {
    chat: [Bytes; 2],
    /// A stream without and with `"usage":null` in its deltas.
    streamed: [Vec<Bytes>; 2],
    fail: [Bytes; 2],
    hold: [Bytes; 2],
    not_found: [Bytes; 1],
}

impl Answers {
    fn new() -> Self {
        const DATE: &str = "date: Tue, 01 Dec 2026 10:00:00 GMT\r\n";
        let sized = |status: &str, body: &'static str| {
            [
                Bytes::from(format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{DATE}\r\n",
                    body.len()
                )),
                Bytes::from_static(body.as_bytes()),
            ]
        };
        let stream_head = Bytes::from(format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n{DATE}\r\n"
        ));
        let chunk = |event: &str| format!("{:x}\r\n{event}\r\n", event.len());
        // The head, the first event (what the time to the first chunk measures), then the other
        // events and the stream's end together. One write per event made the mock's core (shared
        // with the load generator) the limit of every target at c=32 (README, Performance).
        let streamed = |usage: bool| {
            let events = stream_events(usage);
            let rest: String = events[1..].iter().map(|e| chunk(e)).collect();
            vec![stream_head.clone(), Bytes::from(chunk(&events[0])), Bytes::from(rest + "0\r\n\r\n")]
        };
        Self {
            chat: sized("200 OK", CHAT),
            streamed: [streamed(false), streamed(true)],
            fail: sized(
                "401 Unauthorized",
                r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}"#,
            ),
            hold: [stream_head.clone(), Bytes::from(chunk("data: {\"choices\":[]}\n\n"))],
            not_found: [Bytes::from(format!("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n{DATE}\r\n"))],
        }
    }
}

/// One client connection to the mock: requests in turn (kept alive) until it closes.
async fn mock_connection(mut stream: TcpStream, answers: std::sync::Arc<Answers>) {
    let mut buf = bytes::BytesMut::with_capacity(8192);
    loop {
        let (head, length, route, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(head)) => {
                    let value =
                        |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
                    // The targets send sized bodies; anything else ends the connection.
                    if value("transfer-encoding").is_some() {
                        return;
                    }
                    let length = value("content-length")
                        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    let close = value("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
                    break (head, length, req.path.unwrap_or("").to_owned(), close);
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return,
            }
            if !matches!(stream.read_buf(&mut buf).await, Ok(1..)) {
                return;
            }
        };
        while buf.len() < head + length {
            if !matches!(stream.read_buf(&mut buf).await, Ok(1..)) {
                return;
            }
        }
        let body = buf.split_to(head + length).split_off(head);
        let writes: &[Bytes] = match route.as_str() {
            "/v1/chat/completions" if memchr::memmem::find(&body, br#""stream":true"#).is_some() => {
                &answers.streamed[usize::from(memchr::memmem::find(&body, br#""include_usage":true"#).is_some())]
            }
            "/v1/chat/completions" => &answers.chat,
            "/v1/fail" => &answers.fail,
            "/v1/hold" => &answers.hold,
            _ => &answers.not_found,
        };
        for piece in writes {
            if stream.write_all(piece).await.is_err() {
                return;
            }
        }
        if route == "/v1/hold" {
            // The stream never ends: hold the connection until the client closes it.
            while matches!(stream.read_buf(&mut buf).await, Ok(1..)) {
                buf.clear();
            }
            return;
        }
        if close {
            return;
        }
    }
}

/// A streamed chat completion's events as OpenAI sends them: five deltas, the usage chunk, then
/// `[DONE]`. A request that asked for usage (`stream_options.include_usage`, as Torii asks) also
/// gets `"usage":null` in every delta, as OpenAI sends them. (OpenAI sends no usage chunk to a
/// request that did not ask; the direct call and nginx get one all the same, as before: a stream
/// without it raised nginx's CPU per streamed request by 2 to 7 µs in this bench, for reasons not
/// found.)
fn stream_events(usage: bool) -> Vec<String> {
    let null = if usage { r#","usage":null"# } else { "" };
    (0..5)
        .map(move |i| format!("data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-bench\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i}\"}},\"finish_reason\":null}}]{null}}}\n\n"))
        .chain([
            "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-bench\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5,\"total_tokens\":17}}\n\n".to_string(),
            "data: [DONE]\n\n".to_string(),
        ])
        .collect()
}

/// One benchmark scenario: the direct path on the mock and the equivalent request via Torii.
struct Scenario<'a> {
    mode: &'a str,
    /// Extra request header lines for the gateway (`name: value\r\n`).
    headers: &'a str,
    /// The path and body sent straight to the mock and through nginx: the scenario's own request
    /// as a client sends it to the provider (the SSE scenario's asks to stream).
    direct: (&'a str, &'a str),
    path: &'a str,
    body: &'a str,
    /// Each request's last user message is different text of the same length (one of
    /// [`VARIANTS`]), as an application's logs differ; otherwise every request is the same.
    varied: bool,
    concurrency: &'a [usize],
    metric: &'a str,
}

/// How many different bodies a varied scenario cycles through.
const VARIANTS: usize = 4096;

/// `body` as it is, or [`VARIANTS`] copies whose last user message is replaced by words of two
/// or three syllables drawn by xorshift, of the same length (so each copy is as long as `body`).
fn bodies_of(body: &str, varied: bool) -> Vec<String> {
    const MARK: &str = r#""role":"user","content":""#;
    let Some(start) = body.rfind(MARK).map(|i| i + MARK.len()) else { return vec![body.to_string()] };
    let Some(len) = body[start..].find('"') else { return vec![body.to_string()] };
    if !varied {
        return vec![body.to_string()];
    }
    (0..VARIANTS as u64)
        .map(|i| {
            let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut text = common::words(&mut x, len);
            text.truncate(len);
            format!("{}{text}{}", &body[..start], &body[start + len..])
        })
        .collect()
}

/// Stops the gateway process even when the benchmark panics: asked with SIGTERM first (so a
/// profile-generating build writes its profile on the way out, see `systemd/pgo-build`), killed
/// if it has not exited within 10 s.
struct Killer(Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let asked = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status().is_ok_and(|s| s.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while asked && Instant::now() < deadline {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn has_taskset() -> bool {
    Command::new("taskset").arg("-V").output().is_ok_and(|o| o.status.success())
}

/// `--bare UPSTREAM`: the bench binary serves as a bare proxy (`BENCH_FLOOR`), an actix-web
/// server on one worker that forwards each request to the mock with awc and streams the answer
/// back with its `Content-Type` and `Content-Length`, nothing else: what the server and client
/// Torii is built on cost without any of Torii's own work.
fn serve_bare(upstream: SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    println!("listening on {}", listener.local_addr().unwrap());
    serve_one(listener, move || {
        let connector = awc::Connector::new().limit(0);
        let client = awc::Client::builder().connector(connector).disable_redirects().no_default_headers().finish();
        App::new().app_data(web::Data::new(upstream)).app_data(web::Data::new(client)).default_service(web::to(via_awc))
    });
}

/// Serves `app` on `listener` with one worker, on this thread, until the process ends; its
/// sockets send at once (`TCP_NODELAY`, as Torii's: an answer that arrives in pieces is passed
/// on in pieces, which must not wait for the client's delayed ACK).
fn serve_one<T, B>(listener: std::net::TcpListener, app: impl Fn() -> App<T> + Send + Clone + 'static)
where
    T: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: actix_web::body::MessageBody + 'static,
{
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(app).workers(1).tcp_nodelay(true).listen(listener).unwrap().run().await.unwrap();
    });
}

const FORWARDED: [&str; 2] = ["content-type", "content-length"];

async fn via_awc(
    req: actix_web::HttpRequest,
    body: Bytes,
    client: web::Data<awc::Client>,
    upstream: web::Data<SocketAddr>,
) -> HttpResponse {
    let url = format!("http://{}{}", upstream.get_ref(), req.uri());
    match client.post(url).insert_header(("content-type", "application/json")).send_body(body).await {
        Ok(answer) => {
            let mut out = HttpResponse::build(answer.status());
            for name in FORWARDED {
                if let Some(v) = answer.headers().get(name) {
                    out.insert_header((name, v.clone()));
                }
            }
            out.streaming(answer)
        }
        Err(e) => HttpResponse::BadGateway().body(e.to_string()),
    }
}

/// Starts this binary as a bare proxy (see [`serve_bare`]), pinned as Torii is.
fn start_bare(upstream: SocketAddr) -> (Child, SocketAddr) {
    let mut cmd = pinned(std::env::current_exe().unwrap());
    cmd.args(["--bare", &upstream.to_string()]).stdout(Stdio::piped()).stderr(Stdio::null());
    spawn_listening(cmd)
}

/// A command for `program` on CPU 0 (through `taskset`, when there is one), as Torii runs.
fn pinned(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if has_taskset() {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Spawns `cmd` and reads the address from its first line (`listening on ADDR`).
fn spawn_listening(mut cmd: Command) -> (Child, SocketAddr) {
    let mut child = cmd.spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap().parse().unwrap();
    (child, addr)
}

fn start_torii(upstream: SocketAddr, dir: &std::path::Path) -> (Child, SocketAddr) {
    // `BENCH_TORII_EXE=target/profiling/torii`: a binary with line tables, to take a profile.
    let exe = std::env::var("BENCH_TORII_EXE").unwrap_or_else(|_| env!("CARGO_BIN_EXE_torii").to_string());
    let mut cmd = pinned(&exe);
    // `BENCH_OTEL=1`: traces of every request go to the mock (which answers 200), to measure
    // what tracing costs.
    if std::env::var_os("BENCH_OTEL").is_some() {
        cmd.env("TORII_OTEL__ENDPOINT", format!("http://{upstream}/v1/traces"));
    }
    // `BENCH_REDIS=redis://127.0.0.1:PORT`: cluster mode on that Redis (limits, spend and the
    // cache go through it), to measure what cluster mode costs.
    if let Ok(url) = std::env::var("BENCH_REDIS") {
        cmd.env("TORII_CLUSTER__REDIS_URL", url);
    }
    // `BENCH_POSTGRES=postgres://...`: the settings, logs and analytics in that PostgreSQL (the
    // log shipping thread's work counts in Torii's CPU).
    if let Ok(url) = std::env::var("BENCH_POSTGRES") {
        cmd.env("TORII_CLUSTER__POSTGRES_URL", url);
    }
    // `BENCH_RATE_LIMIT=1`: the default gateway gets a rate limit no run reaches (fixed, a
    // billion a minute), to measure what checking one costs (embedded, or with BENCH_REDIS).
    if std::env::var_os("BENCH_RATE_LIMIT").is_some() {
        let store = torii::store::Store::open(&dir.join("torii.redb")).unwrap();
        torii::control::ensure_default_gateway(&store).unwrap();
        let settings = torii::control::Settings::load(store).unwrap();
        let body = serde_json::json!({"cache_invalidate_on_update": false, "cache_ttl": 0, "collect_logs": true,
            "rate_limiting_interval": 60, "rate_limiting_limit": 1_000_000_000u64, "rate_limiting_technique": "fixed"});
        let body = body.as_object().unwrap().clone();
        torii::control::gateways::update(&settings, "default", &body).unwrap();
    }
    cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .arg("serve")
        .env("TORII_WORKERS", "1")
        .env("TORII_LOG", "warn")
        .env("TORII_PROVIDERS__OPENAI__BASE_URL", format!("http://{upstream}/v1"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    spawn_listening(cmd)
}

/// nginx `proxy_pass` to the same mock (one process, no master, pinned like Torii): the floor of
/// one L7 hop. Installed from Debian's package when missing (the bench runs as root on CI).
fn start_nginx(upstream: SocketAddr, dir: &std::path::Path) -> Option<(Child, SocketAddr)> {
    // `BENCH_TRAIN=1` (`systemd/pgo-build`): Torii's scenarios only, to train a profile.
    if std::env::var_os("BENCH_TRAIN").is_some() {
        return None;
    }
    if Command::new("nginx").arg("-v").output().is_err() {
        eprintln!("nginx missing: installing Debian's package");
        let _ = Command::new("apt-get").args(["install", "-y", "-qq", "nginx-light"]).status();
        if Command::new("nginx").arg("-v").output().is_err() {
            eprintln!("nginx unavailable: ratios to nginx are skipped");
            return None;
        }
    }
    // The port is picked by binding port 0 and letting it go, so another socket can take it
    // before nginx binds it (nginx then exits), and a connect to a port nobody listens on can
    // meet itself (TCP's simultaneous open). So nginx counts as up only once it answers HTTP,
    // and is started again on a new port if it does not.
    (0..5).find_map(|_| nginx_on_a_free_port(upstream, dir))
}

/// One attempt of `start_nginx`: `None` when nginx exits or does not answer within 10 s.
fn nginx_on_a_free_port(upstream: SocketAddr, dir: &std::path::Path) -> Option<(Child, SocketAddr)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\nmaster_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             upstream mock {{ server {upstream}; keepalive 64; }}\n\
             server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;\n\
             location / {{ proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; }} }}\n}}\n"
        ),
    )
    .ok()?;
    let mut cmd = pinned("nginx");
    let mut child = cmd
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers_http(addr) {
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((child, addr))
}

/// Whether an HTTP server answers on `addr` (a socket connected to itself would echo the
/// request back instead).
fn answers_http(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut sock) = std::net::TcpStream::connect(addr) else { return false };
    let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 5];
    sock.write_all(b"GET /nginx-ready HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").is_ok()
        && sock.read_exact(&mut head).is_ok()
        && &head == b"HTTP/"
}

fn cpu_ticks(pid: u32) -> u64 {
    let (user, system) = cpu_split(pid);
    user + system
}

/// The numeric fields of a process's or thread's `stat` file after the command name (state is
/// index 0, so it and anything unreadable read 0).
fn stat_fields(path: impl AsRef<std::path::Path>) -> Vec<u64> {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    after.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect()
}

/// (utime, stime) in clock ticks from a `stat` file's fields: 11 and 12 after the command name.
fn ticks_of(fields: &[u64]) -> (u64, u64) {
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    (field(11), field(12))
}

/// One read of a process's `stat` file: (utime, stime) in clock ticks and its minor page faults
/// so far (field 7 after the command name).
fn proc_stat(pid: u32) -> ((u64, u64), u64) {
    let fields = stat_fields(format!("/proc/{pid}/stat"));
    (ticks_of(&fields), fields.get(7).copied().unwrap_or(0))
}

/// (utime, stime) in clock ticks.
fn cpu_split(pid: u32) -> (u64, u64) {
    proc_stat(pid).0
}

/// utime + stime of the process's thread named `name` (the log writer), in clock ticks.
fn thread_ticks(pid: u32, name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let (user, system) = ticks_of(&stat_fields(task.path().join("stat")));
            return user + system;
        }
    }
    0
}

/// CPU ticks of the log writer thread and of the PostgreSQL log shipping thread.
fn background_ticks(pid: u32) -> (u64, u64) {
    (thread_ticks(pid, "torii-log-write"), thread_ticks(pid, "torii-pg-logs"))
}

/// How a scenario's CPU per request splits between the background threads and the rest.
fn print_split((mode, c): (&str, usize), (writer, shipper): (u64, u64), requests: u64, cpu_per_req: f64) {
    let (writer, shipper) = (us_per_req(writer, requests), us_per_req(shipper, requests));
    println!(
        "{mode:<10} {c:>3} torii cpu split: log writer thread {writer:.1} µs/req, PostgreSQL log shipping {shipper:.1} µs/req, the rest {:.1} µs/req",
        cpu_per_req - writer - shipper
    );
}

/// Torii against the direct call: RPS, p50 and p99.
fn print_direct_ratio((mode, c): (&str, usize), direct: &Run, through: &Run) {
    let rps_ratio = (through.requests as f64 / through.elapsed.as_secs_f64())
        / (direct.requests as f64 / direct.elapsed.as_secs_f64());
    println!(
        "{:<10} {:>3} ratio    rps {:.2}x  p50 {:.2}x (+{:.0} µs)  p99 {:.2}x (+{:.0} µs)",
        mode,
        c,
        rps_ratio,
        us(pct(&through.latencies, 0.5)) / us(pct(&direct.latencies, 0.5)),
        us(pct(&through.latencies, 0.5)) - us(pct(&direct.latencies, 0.5)),
        us(pct(&through.latencies, 0.99)) / us(pct(&direct.latencies, 0.99)),
        us(pct(&through.latencies, 0.99)) - us(pct(&direct.latencies, 0.99)),
    );
}

/// CPU per request in user and in kernel mode, Torii's and each reference's: the kernel's part
/// (the sockets, the loopback's delivery to the peer, waking it) is work every proxy does.
fn print_user_kernel((mode, c): (&str, usize), torii: &Run, references: &[(&str, Run, f64)], splits: &[(u64, u64)]) {
    let runs = std::iter::once(("torii", torii)).chain(references.iter().map(|(name, run, _)| (*name, run)));
    let parts: Vec<String> = runs
        .zip(splits)
        .map(|((name, run), (user, kernel))| {
            format!("{name} {:.1} / {:.1}", us_per_req(*user, run.requests), us_per_req(*kernel, run.requests))
        })
        .collect();
    println!("{mode:<10} {c:>3} cpu µs/req user / kernel: {}", parts.join(", "));
}

/// CPU ticks spent on `requests` requests, in µs a request.
fn us_per_req(ticks: u64, requests: u64) -> f64 {
    (ticks as f64 / clock_ticks_per_sec() as f64) * 1e6 / requests.max(1) as f64
}

/// The kernel's clock ticks a second (`getconf CLK_TCK`, asked once).
fn clock_ticks_per_sec() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Reads one HTTP/1.1 response; returns the time from `sent` to the first body byte.
async fn read_response(sock: &mut TcpStream, buf: &mut Vec<u8>, sent: Instant) -> Duration {
    buf.clear();
    let mut chunk = vec![0u8; 16384];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed after {:?}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let length =
        head.lines().find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()));
    while buf.len() == head_end {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
    let first_byte = sent.elapsed();
    match length {
        Some(len) => {
            while buf.len() < head_end + len {
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0);
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        None => {
            while !buf.ends_with(b"0\r\n\r\n") {
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0);
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
    first_byte
}

#[derive(Default)]
struct Run {
    requests: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    /// Adds another round's requests, time and latencies (sort the latencies when done).
    fn absorb(&mut self, other: Run) {
        self.requests += other.requests;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }
}

async fn drive(addr: SocketAddr, path: &str, headers: &str, bodies: &[String], concurrency: usize, secs: f64) -> Run {
    drive_until(addr, (path, headers, bodies), concurrency, Until::Secs(secs)).await
}

/// When a load run ends.
#[derive(Clone, Copy)]
enum Until {
    Secs(f64),
    Requests(u64),
}

async fn drive_until(
    addr: SocketAddr,
    (path, headers, bodies): (&str, &str, &[String]),
    concurrency: usize,
    until: Until,
) -> Run {
    let left = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(match until {
        Until::Requests(n) => n,
        Until::Secs(_) => u64::MAX,
    }));
    let secs = match until {
        Until::Secs(s) => s,
        Until::Requests(_) => 1e9,
    };
    // Made before the clock starts; a connection sends them in turn, from its own place.
    let requests: std::sync::Arc<Vec<String>> = std::sync::Arc::new(
        bodies
            .iter()
            .map(|body| {
                format!(
                    "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer sk-bench\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            })
            .collect(),
    );
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for connection in 0..concurrency {
        let requests = std::sync::Arc::clone(&requests);
        let left = std::sync::Arc::clone(&left);
        tasks.push(tokio::spawn(async move {
            let mut turn = connection;
            let mut sock = TcpStream::connect(addr).await.unwrap();
            sock.set_nodelay(true).unwrap();
            let mut buf = Vec::with_capacity(16384);
            let mut lat = Vec::new();
            // Warm-up request (connection pool, caches).
            let t = Instant::now();
            sock.write_all(requests[turn % requests.len()].as_bytes()).await.unwrap();
            read_response(&mut sock, &mut buf, t).await;
            while Instant::now() < deadline && left.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_ok() {
                turn += 1;
                let t = Instant::now();
                sock.write_all(requests[turn % requests.len()].as_bytes()).await.unwrap();
                lat.push(read_response(&mut sock, &mut buf, t).await);
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Run { requests: latencies.len() as u64, elapsed, latencies }
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = (((v.len() - 1) as f64) * p).round() as usize;
    v[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The scenarios: each gateway request with its direct equivalent.
fn scenarios<'a>(universal_one: &'a str, universal_failover: &'a str, stream_body: &'a str) -> Vec<Scenario<'a>> {
    vec![
        Scenario {
            mode: "json-nolog",
            headers: "cf-aig-collect-log: false\r\n",
            direct: ("/v1/chat/completions", REQUEST_BODY),
            path: "/v1/local/default/openai/chat/completions",
            body: REQUEST_BODY,
            varied: false,
            concurrency: &[1, 32],
            metric: "latency",
        },
        Scenario {
            mode: "json",
            headers: "",
            direct: ("/v1/chat/completions", REQUEST_BODY),
            path: "/v1/local/default/openai/chat/completions",
            body: REQUEST_BODY,
            varied: false,
            concurrency: &[1, 32],
            metric: "latency",
        },
        Scenario {
            mode: "json-varied",
            headers: "",
            direct: ("/v1/chat/completions", REQUEST_BODY),
            path: "/v1/local/default/openai/chat/completions",
            body: REQUEST_BODY,
            varied: true,
            concurrency: &[1, 32],
            metric: "latency",
        },
        Scenario {
            mode: "cache-miss",
            headers: "cf-aig-cache-ttl: 300\r\ncf-aig-skip-cache: true\r\n",
            direct: ("/v1/chat/completions", REQUEST_BODY),
            path: "/v1/local/default/openai/chat/completions",
            body: REQUEST_BODY,
            varied: false,
            concurrency: &[1, 32],
            metric: "latency",
        },
        Scenario {
            mode: "cache-hit",
            headers: "cf-aig-cache-ttl: 300\r\n",
            direct: ("/v1/chat/completions", REQUEST_BODY),
            path: "/v1/local/default/openai/chat/completions",
            body: REQUEST_BODY,
            varied: false,
            concurrency: &[1, 32],
            metric: "latency",
        },
        Scenario {
            mode: "sse",
            headers: "",
            direct: ("/v1/chat/completions", stream_body),
            path: "/v1/local/default/openai/chat/completions",
            body: stream_body,
            varied: false,
            concurrency: &[1, 32],
            metric: "first chunk",
        },
        Scenario {
            mode: "univ-1",
            headers: "",
            direct: ("/v1/chat/completions", REQUEST_BODY),
            path: "/v1/local/default",
            body: universal_one,
            varied: false,
            concurrency: &[1],
            metric: "latency",
        },
        Scenario {
            mode: "failover",
            headers: "",
            direct: ("/v1/chat/completions", REQUEST_BODY),
            path: "/v1/local/default",
            body: universal_failover,
            varied: false,
            concurrency: &[1],
            metric: "latency",
        },
    ]
}

/// The nginx row and Torii's ratios to it.
fn print_nginx(
    (mode, c, metric): (&str, usize, &str),
    direct: &Run,
    (through, cpu_per_req): (&Run, f64),
    (n, ncpu): (&Run, f64),
) {
    let rps = |r: &Run| r.requests as f64 / r.elapsed.as_secs_f64();
    println!(
        "{:<10} {:>3} {:<8} {:>10.0} {:>10.1} {:>10.1} {:>12.1} {:>12}",
        mode,
        c,
        "nginx",
        rps(n),
        us(pct(&n.latencies, 0.5)),
        us(pct(&n.latencies, 0.99)),
        ncpu,
        metric
    );
    println!(
        "{:<10} {:>3} vs nginx cpu {:.2}x  rps {:.2}x  added p50 torii +{:.0} µs / nginx +{:.0} µs  added p99 torii +{:.0} µs / nginx +{:.0} µs",
        mode,
        c,
        cpu_per_req / ncpu.max(0.001),
        rps(through) / rps(n),
        us(pct(&through.latencies, 0.5)) - us(pct(&direct.latencies, 0.5)),
        us(pct(&n.latencies, 0.5)) - us(pct(&direct.latencies, 0.5)),
        us(pct(&through.latencies, 0.99)) - us(pct(&direct.latencies, 0.99)),
        us(pct(&n.latencies, 0.99)) - us(pct(&direct.latencies, 0.99)),
    );
    // nginx at the direct call's own rate is held by the load generator's core (shared with the
    // mock), not by its own: its RPS, and the RPS ratio with it, then understate nginx.
    if c > 1 && rps(n) >= 0.97 * rps(direct) {
        println!(
            "{mode:<10} {c:>3} note: nginx ran at {:.0}% of the direct call's rate; the load generator's core may have held it there",
            100.0 * rps(n) / rps(direct)
        );
    }
}

/// Torii's CPU ratio to nginx and its p50 gap to nginx, lowest and highest over the rounds; then
/// each round's CPU ratio in order, with Torii's minor page faults per 1,000 requests in it (a
/// process still growing to its steady size pays for the growth in its first rounds).
fn print_rounds((mode, c): (&str, usize), rounds_seen: &[(f64, f64, f64)], (rounds, slice): (u32, f64)) {
    let range = |v: &mut dyn Iterator<Item = f64>| v.fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(r), hi.max(r)));
    let (lo, hi) = range(&mut rounds_seen.iter().map(|r| r.0));
    let (glo, ghi) = range(&mut rounds_seen.iter().map(|r| r.1));
    println!(
        "{mode:<10} {c:>3} vs nginx by round: cpu {lo:.2}x to {hi:.2}x, p50 gap {glo:+.0} to {ghi:+.0} µs ({rounds} rounds of {slice:.2} s each)"
    );
    let in_order: Vec<String> = rounds_seen.iter().map(|r| format!("{:.2}x ({:.0})", r.0, r.2)).collect();
    println!(
        "{mode:<10} {c:>3} rounds in order: cpu vs nginx (torii minor faults per 1,000 requests) {}",
        in_order.join(" ")
    );
}

/// A bare proxy's row: its CPU per request and RPS, against nginx's and Torii's.
fn print_floor(
    (mode, c): (&str, usize),
    name: &str,
    (run, cpu): (&Run, f64),
    torii_cpu: f64,
    nginx: Option<(&Run, f64)>,
) {
    let rps = |r: &Run| r.requests as f64 / r.elapsed.as_secs_f64();
    // Without nginx there is nothing to compare the floor with but Torii.
    let vs_nginx = nginx.map_or_else(String::new, |(n, ncpu)| {
        format!(" = {:.2}x nginx (rps {:.2}x)", cpu / ncpu.max(0.001), rps(run) / rps(n))
    });
    println!(
        "{mode:<10} {c:>3} floor {name:<12} rps {:.0}  p50 {:.1} µs  p99 {:.1} µs  cpu {cpu:.1} µs/req{vs_nginx}; torii {:.2}x this floor's cpu",
        rps(run),
        us(pct(&run.latencies, 0.5)),
        us(pct(&run.latencies, 0.99)),
        torii_cpu / cpu.max(0.001),
    );
}

/// A process's resident set in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A value of Torii's `/metrics`.
async fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let mut sock = TcpStream::connect(addr).await.ok()?;
    sock.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut text = String::new();
    sock.read_to_string(&mut text).await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `/metrics` until `name` reads `want` (or a minute has gone).
async fn settle(addr: SocketAddr, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(addr, name).await != Some(want) {
        assert!(Instant::now() < deadline, "{name} did not reach {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens `n` streams through Torii that stay open (the mock sends one event, then nothing),
/// each read up to its first event.
async fn open_streams(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let body = REQUEST_BODY;
    let request = format!(
        "POST /v1/local/default/openai/hold HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer sk-bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut open = Vec::with_capacity(n);
    let mut chunk = vec![0u8; 4096];
    for _ in 0..n {
        let mut sock = TcpStream::connect(addr).await.unwrap();
        sock.write_all(request.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        while !seen.windows(5).any(|w| w == b"data:") {
            let got = sock.read(&mut chunk).await.unwrap();
            assert!(got > 0, "stream closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&chunk[..got]);
        }
        open.push(sock);
    }
    open
}

/// Torii's memory: idle, with 1,000 streams open, after they close (at once and over 3 s), and
/// through 1,000,000 logged requests (`BENCH_MEMORY_REQUESTS`), read after each quarter once the
/// log queue is empty, and over 5 s after the load.
fn memory(rt: &tokio::runtime::Runtime, mock: SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let (child, gw) = start_torii(mock, dir.path());
    let torii = Killer(child);
    let pid = torii.0.id();
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("memory: idle RSS {:.1} MiB", mib(rss_kib(pid)));
    // Rounds (three unless `BENCH_MEMORY_ROUNDS`): memory that comes back is reused by the next
    // round, a leak adds up.
    let rounds: u32 = std::env::var("BENCH_MEMORY_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    for round in 1..=rounds {
        let streams = rt.block_on(open_streams(gw, 1000));
        rt.block_on(settle(gw, "torii_open_streams", 1000.0));
        let open = rss_kib(pid);
        drop(streams);
        rt.block_on(settle(gw, "torii_open_streams", 0.0));
        rt.block_on(settle(gw, "torii_log_queue_depth", 0.0));
        let closed = rss_kib(pid);
        println!(
            "memory: round {round}: 1,000 open streams RSS {:.1} MiB, after they closed {:.1} MiB, \
             lowest read within 3 s {:.1} MiB",
            mib(open),
            mib(closed),
            mib(lowest_rss(pid, 12))
        );
    }
    let total: u64 = std::env::var("BENCH_MEMORY_REQUESTS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let body = [REQUEST_BODY.to_string()];
    let json = ("/v1/local/default/openai/chat/completions", "", &body[..]);
    let mut done = 0;
    for _ in 0..4 {
        let run = rt.block_on(drive_until(gw, json, 32, Until::Requests(total / 4)));
        done += run.requests + 32;
        rt.block_on(settle(gw, "torii_log_queue_depth", 0.0));
        let file = std::fs::metadata(dir.path().join("torii.redb")).map_or(0, |m| m.len());
        println!(
            "memory: after {done} logged requests RSS {:.1} MiB, database {:.0} MiB",
            mib(rss_kib(pid)),
            file as f64 / 1_048_576.0
        );
    }
    // Whether what the load took comes back: Torii gives it back once idle for a second.
    let lowest = lowest_rss(pid, 20);
    println!("memory: 5 s after the load RSS {:.1} MiB (lowest read {:.1} MiB)", mib(rss_kib(pid)), mib(lowest));
}

/// The lowest of `reads` readings of RSS 250 ms apart, with no load (Torii gives back what the
/// allocator keeps between one and two seconds after its last request, `torii::memory`).
fn lowest_rss(pid: u32, reads: u32) -> u64 {
    let mut lowest = u64::MAX;
    for _ in 0..reads {
        std::thread::sleep(Duration::from_millis(250));
        lowest = lowest.min(rss_kib(pid));
    }
    lowest
}

/// All nodes driven at once (the connections spread evenly): their aggregate throughput and CPU
/// per request, against the first node alone (`one`).
fn cluster_run(
    rt: &tokio::runtime::Runtime,
    (mode, c, metric): (&str, usize, &str),
    first: (&Killer, SocketAddr),
    others: &[(Killer, SocketAddr)],
    (path, headers, bodies): (&str, &str, &[String]),
    secs: f64,
    one: &Run,
) {
    let nodes: Vec<(u32, SocketAddr)> =
        std::iter::once((first.0.0.id(), first.1)).chain(others.iter().map(|(k, a)| (k.0.id(), *a))).collect();
    let per = c.div_ceil(nodes.len());
    let before: Vec<u64> = nodes.iter().map(|(pid, _)| cpu_ticks(*pid)).collect();
    let runs = rt.block_on(futures_util::future::join_all(
        nodes.iter().map(|(_, a)| drive(*a, path, headers, bodies, per, secs)),
    ));
    let ticks: u64 = nodes.iter().zip(&before).map(|((pid, _), b)| cpu_ticks(*pid) - b).sum();
    let requests: u64 = runs.iter().map(|r| r.requests).sum();
    let elapsed = runs.iter().map(|r| r.elapsed).max().unwrap_or_default();
    let mut latencies: Vec<Duration> = runs.into_iter().flat_map(|r| r.latencies).collect();
    latencies.sort_unstable();
    let rps = requests as f64 / elapsed.as_secs_f64();
    let cpu = us_per_req(ticks, requests);
    println!(
        "{mode:<10} {c:>3} {:<8} {rps:>10.0} {:>10.1} {:>10.1} {cpu:>12.1} {metric:>12}",
        format!("torii×{}", nodes.len()),
        us(pct(&latencies, 0.5)),
        us(pct(&latencies, 0.99)),
    );
    println!(
        "{mode:<10} {c:>3} {} nodes on one core: {:.2}x one node's RPS",
        nodes.len(),
        rps / (one.requests as f64 / one.elapsed.as_secs_f64())
    );
}

/// A proxy Torii is compared with, driven with the direct request: nginx, and with `BENCH_FLOOR`
/// the bare actix-web + awc proxy ([`serve_bare`]).
struct Reference {
    name: &'static str,
    pid: u32,
    addr: SocketAddr,
}

/// What one scenario at one concurrency measured, over all its rounds.
struct Measured {
    direct: Run,
    through: Run,
    /// Torii's CPU ticks, the log writer's work for these requests included.
    ticks: u64,
    /// The log writer's and the PostgreSQL shipper's ticks.
    threads: (u64, u64),
    /// Each reference's requests and CPU ticks (in the order given).
    references: Vec<(Run, u64)>,
    /// Torii's and then each reference's CPU ticks in user and in kernel mode.
    splits: Vec<(u64, u64)>,
    /// Torii's CPU per request over nginx's, Torii's p50 less nginx's (µs) and Torii's minor page
    /// faults per 1,000 requests, round by round.
    round_ratios: Vec<(f64, f64, f64)>,
    rounds: u32,
    slice: f64,
}

/// Drives the direct path, the references (nginx first) and Torii. The run is cut into rounds
/// (`BENCH_ROUNDS`, 4 unless set), each driving them in turn for its share of the time: a
/// machine whose speed drifts (a VM's neighbours) then slows all alike, and the ratios are taken
/// from the same moments. The figures are over all rounds; the CPU ratio to nginx and the p50
/// gap to nginx of each round are kept too, to show how far one run's rounds agree.
fn measure(
    rt: &tokio::runtime::Runtime,
    (mock, (direct_path, direct_body)): (SocketAddr, (&str, &[String])),
    refs: &[Reference],
    (torii, gw, (gw_path, headers, gw_body)): (u32, SocketAddr, (&str, &str, &[String])),
    (c, secs): (usize, f64),
) -> Measured {
    let rounds: u32 = std::env::var("BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(4).max(1);
    let slice = secs / f64::from(rounds);
    let mut direct = Run::default();
    let mut references: Vec<(Run, u64)> = refs.iter().map(|_| (Run::default(), 0)).collect();
    let mut through = Run::default();
    let (mut ticks, mut threads) = (0, (0, 0));
    let mut splits = vec![(0, 0); 1 + refs.len()];
    let add = |into: &mut (u64, u64), before: (u64, u64), after: (u64, u64)| {
        into.0 += after.0 - before.0;
        into.1 += after.1 - before.1;
    };
    let mut round_ratios = Vec::new();
    // One unmeasured slice through each first: pools, caches and the log writer warm, the
    // warm-up's records written before the clock starts.
    for r in refs {
        rt.block_on(drive(r.addr, direct_path, "", direct_body, c, slice.min(0.5)));
    }
    rt.block_on(drive(gw, gw_path, headers, gw_body, c, slice.min(0.5)));
    rt.block_on(settle(gw, "torii_log_queue_depth", 0.0));
    for _ in 0..rounds {
        direct.absorb(rt.block_on(drive(mock, direct_path, "", direct_body, c, slice)));
        // The references forward the direct request as it is (nginx: the floor for what a hop
        // costs).
        let mut nginx_round = None;
        let mut nginx_p50 = Duration::ZERO;
        for ((r, (total, total_ticks)), split) in refs.iter().zip(references.iter_mut()).zip(&mut splits[1..]) {
            let before = cpu_split(r.pid);
            let run = rt.block_on(drive(r.addr, direct_path, "", direct_body, c, slice));
            let after = cpu_split(r.pid);
            let used = after.0 + after.1 - before.0 - before.1;
            add(split, before, after);
            if r.name == "nginx" {
                nginx_round = Some(used as f64 / run.requests.max(1) as f64);
                nginx_p50 = pct(&run.latencies, 0.5);
            }
            *total_ticks += used;
            total.absorb(run);
        }
        let ((split_before, faults_before), threads_before) = (proc_stat(torii), background_ticks(torii));
        let run = rt.block_on(drive(gw, gw_path, headers, gw_body, c, slice));
        // The log writer's work for these requests counts even when it runs after the load.
        rt.block_on(settle(gw, "torii_log_queue_depth", 0.0));
        let ((split_after, faults_after), threads_after) = (proc_stat(torii), background_ticks(torii));
        let used = (split_after.0 + split_after.1).saturating_sub(split_before.0 + split_before.1);
        ticks += used;
        add(&mut splits[0], split_before, split_after);
        threads = (threads.0 + threads_after.0 - threads_before.0, threads.1 + threads_after.1 - threads_before.1);
        if let Some(nginx_per_req) = nginx_round {
            let ratio = used as f64 / run.requests.max(1) as f64 / nginx_per_req.max(1e-9);
            let faults = faults_after.saturating_sub(faults_before) as f64 * 1000.0 / run.requests.max(1) as f64;
            round_ratios.push((ratio, us(pct(&run.latencies, 0.5)) - us(nginx_p50), faults));
        }
        through.absorb(run);
    }
    // Records are never dropped to make a figure: a full queue would count them here.
    let dropped = rt.block_on(metric(gw, "torii_log_records_dropped_total"));
    assert_eq!(dropped, Some(0.0), "{gw_path} c={c}: log records dropped");
    direct.latencies.sort();
    through.latencies.sort();
    for (run, _) in &mut references {
        run.latencies.sort();
    }
    Measured { direct, through, ticks, threads, references, splits, round_ratios, rounds, slice }
}

/// nginx, and with `BENCH_FLOOR=1` the bare actix-web + awc proxy ([`serve_bare`]).
fn start_references(mock: SocketAddr, dir: &std::path::Path) -> Vec<(&'static str, Killer, SocketAddr)> {
    let nginx = start_nginx(mock, dir).map(|(child, addr)| ("nginx", Killer(child), addr));
    let floor = std::env::var_os("BENCH_FLOOR").map(|_| {
        let (child, addr) = start_bare(mock);
        ("actix+awc", Killer(child), addr)
    });
    nginx.into_iter().chain(floor).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--bare") {
        serve_bare(args[i + 1].parse().unwrap());
        return;
    }
    let secs: f64 = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    if has_taskset() {
        let _ = Command::new("taskset").args(["-p", "-c", "1", &std::process::id().to_string()]).output();
    }
    torii::tls::install_crypto_provider();
    let mock = start_mock();
    let dir = tempfile::tempdir().unwrap();
    let (torii, gw) = start_torii(mock, dir.path());
    let torii = Killer(torii);
    // `BENCH_NODES=3` (with BENCH_REDIS and BENCH_POSTGRES): as many more nodes, on the same
    // core; each scenario then also drives all of them at once, the connections spread evenly,
    // and reports their aggregate throughput.
    let more: Vec<(Killer, SocketAddr)> =
        (1..std::env::var("BENCH_NODES").ok().and_then(|n| n.parse().ok()).unwrap_or(1))
            .map(|i| {
                let d = dir.path().join(format!("node{i}"));
                let (child, addr) = start_torii(mock, &d);
                (Killer(child), addr)
            })
            .collect();
    let started = start_references(mock, dir.path());
    let refs: Vec<Reference> =
        started.iter().map(|(name, k, addr)| Reference { name, pid: k.0.id(), addr: *addr }).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    println!("proxy overhead, {secs} s per scenario; torii pinned to cpu0, mock + load on cpu1");
    println!(
        "{:<10} {:>3} {:<8} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "mode", "c", "target", "rps", "p50 µs", "p99 µs", "cpu µs/req", "metric"
    );
    let universal_one = format!(r#"[{{"provider":"openai","endpoint":"chat/completions","query":{REQUEST_BODY}}}]"#);
    let universal_failover = format!(
        r#"[{{"provider":"openai","endpoint":"fail","query":{REQUEST_BODY}}},{{"provider":"openai","endpoint":"chat/completions","query":{REQUEST_BODY}}}]"#
    );
    // As the SDKs ask for a stream: `"stream": true`, no `stream_options` (Torii asks for the
    // usage chunk and hides it from the client, as it does for them).
    let stream_body = REQUEST_BODY.replacen(r#""model":"gpt-bench","#, r#""model":"gpt-bench","stream":true,"#, 1);
    let scenarios = scenarios(&universal_one, &universal_failover, &stream_body);
    // `BENCH_ONLY=json,cache-hit` runs just those scenarios.
    let only = std::env::var("BENCH_ONLY").ok();
    if only.as_deref().is_none_or(|o| o.split(',').any(|m| m == "memory")) {
        memory(&rt, mock);
    }
    for Scenario { mode, headers, direct, path: gw_path, body, varied, concurrency, metric } in scenarios {
        if only.as_deref().is_some_and(|o| !o.split(',').any(|m| m == mode)) {
            continue;
        }
        let (direct_bodies, gw_body) = (bodies_of(direct.1, varied), bodies_of(body, varied));
        // `BENCH_C=32` runs just that concurrency.
        let only_c: Option<usize> = std::env::var("BENCH_C").ok().and_then(|c| c.parse().ok());
        for &c in concurrency.iter().filter(|c| only_c.is_none_or(|o| o == **c)) {
            let Measured { direct, through, ticks, threads, references, splits, round_ratios, rounds, slice } = measure(
                &rt,
                (mock, (direct.0, &direct_bodies)),
                &refs,
                (torii.0.id(), gw, (gw_path, headers, &gw_body)),
                (c, secs),
            );
            let per_req = |run: &Run, used: u64| us_per_req(used, run.requests);
            let references: Vec<(&str, Run, f64)> = refs
                .iter()
                .zip(references)
                .map(|(r, (run, used))| {
                    let cpu = per_req(&run, used);
                    (r.name, run, cpu)
                })
                .collect();
            let cpu_per_req = us_per_req(ticks, through.requests);
            for (name, run, cpu) in [("direct", &direct, None), ("torii", &through, Some(cpu_per_req))] {
                println!(
                    "{:<10} {:>3} {:<8} {:>10.0} {:>10.1} {:>10.1} {:>12} {:>12}",
                    mode,
                    c,
                    name,
                    run.requests as f64 / run.elapsed.as_secs_f64(),
                    us(pct(&run.latencies, 0.5)),
                    us(pct(&run.latencies, 0.99)),
                    cpu.map_or("-".to_string(), |v| format!("{v:.1}")),
                    metric
                );
            }
            print_split((mode, c), threads, through.requests, cpu_per_req);
            print_user_kernel((mode, c), &through, &references, &splits);
            let nginx = references.iter().find(|(name, ..)| *name == "nginx");
            if let Some((_, n, ncpu)) = nginx {
                print_nginx((mode, c, metric), &direct, (&through, cpu_per_req), (n, *ncpu));
                print_rounds((mode, c), &round_ratios, (rounds, slice));
            }
            for (name, run, cpu) in references.iter().filter(|(name, ..)| *name != "nginx") {
                print_floor((mode, c), name, (run, *cpu), cpu_per_req, nginx.map(|(_, n, ncpu)| (n, *ncpu)));
            }
            if !more.is_empty() {
                cluster_run(&rt, (mode, c, metric), (&torii, gw), &more, (gw_path, headers, &gw_body), secs, &through);
            }
            print_direct_ratio((mode, c), &direct, &through);
        }
    }
}
