//! The egress proxy against a real proxy (Debian's `tinyproxy`, which `.ci/test` installs):
//! upstream calls tunnel through it with `CONNECT`, `NO_PROXY` bypasses it, and a proxy that
//! refuses is named in the answer.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{json_of, spawn_app_with, within};

/// A tinyproxy on a free loopback port, logging to a file; killed on drop.
struct Tinyproxy {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tinyproxy() -> Tinyproxy {
    let dir = tempfile::tempdir().unwrap();
    // tinyproxy takes its port from the file: a free one from the kernel (bound and released).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = dir.path().join("tinyproxy.log");
    let conf = dir.path().join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 50\n",
            log.display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new("tinyproxy")
        .args(["-d", "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start tinyproxy ({e}); .ci/test installs it"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "tinyproxy never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    Tinyproxy { child, port, log, _dir: dir }
}

#[actix_web::test]
async fn upstream_calls_tunnel_through_the_proxy_unless_no_proxy_names_them() {
    let proxy = tinyproxy();
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let app = spawn_app_with(|c| c.upstream.proxy = Some(proxy_url.clone())).await;
    let resp = app.client.post(app.gw("openai/chat/completions")).send_body("{}").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(app.mock.requests().len(), 1);
    let log = std::fs::read_to_string(&proxy.log).unwrap_or_default();
    assert!(log.contains("CONNECT"), "tinyproxy saw no CONNECT: {log}");

    let direct = spawn_app_with(|c| {
        c.upstream.proxy = Some(proxy_url.clone());
        c.upstream.no_proxy = Some("localhost, 127.0.0.0/8".into());
    })
    .await;
    let before = std::fs::read_to_string(&proxy.log).unwrap_or_default().matches("CONNECT").count();
    let resp = direct.client.post(direct.gw("openai/chat/completions")).send_body("{}").await.unwrap();
    assert_eq!(resp.status(), 200);
    let after = std::fs::read_to_string(&proxy.log).unwrap_or_default().matches("CONNECT").count();
    assert_eq!(before, after, "NO_PROXY bypassed the proxy");
}

/// A proxy that answers `CONNECT` with 407: the request fails with 502 naming the proxy's answer.
#[actix_web::test]
async fn a_refusing_proxy_is_named_in_the_answer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    actix_web::rt::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let _ = sock.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n").await;
        }
    });
    let app = spawn_app_with(|c| c.upstream.proxy = Some(format!("http://user:pw@{addr}"))).await;
    let mut resp =
        within(20, "the answer", app.client.post(app.gw("openai/chat/completions")).send_body("{}")).await.unwrap();
    assert_eq!(resp.status(), 502);
    let body = json_of(&mut resp).await;
    let message = body["error"][0]["message"].as_str().unwrap();
    assert!(message.contains("refused CONNECT") && message.contains("407"), "{message}");
    assert!(app.mock.requests().is_empty());
}

#[test]
fn a_proxy_url_without_a_scheme_is_refused_naming_the_setting() {
    let env = vec![("HTTPS_PROXY".to_string(), "proxy.corp:3128".to_string())];
    let err = torii::config::Config::load_from(None, env, &torii::config::Flags::default()).unwrap_err().to_string();
    assert!(err.contains("HTTPS_PROXY") && err.contains("http://"), "{err}");
    let env = vec![("TORII_UPSTREAM__PROXY".to_string(), "socks5://x:1".to_string())];
    let err = torii::config::Config::load_from(None, env, &torii::config::Flags::default()).unwrap_err().to_string();
    assert!(err.contains("upstream.proxy"), "{err}");
}

/// TLS to the provider runs inside the tunnel (the proxy sees only `CONNECT host:port`).
#[actix_web::test]
async fn https_upstreams_are_reached_through_the_tunnel() {
    let proxy = tinyproxy();
    let (ca_pem, upstream) = crate::tls::tls_upstream().await;
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let app = spawn_app_with(|c| {
        c.upstream.proxy = Some(format!("http://127.0.0.1:{}", proxy.port));
        c.upstream.extra_ca_file = Some(ca_file.clone());
        c.providers.get_mut("openai").unwrap().base_url = Some(format!("https://localhost:{}/v1", upstream.port()));
    })
    .await;
    let mut resp = app.client.post(app.gw("openai/chat/completions")).send_body("{}").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(json_of(&mut resp).await["tls"], true);
    let log = std::fs::read_to_string(&proxy.log).unwrap_or_default();
    assert!(log.contains(&format!("localhost:{}", upstream.port())), "the tunnel went to the provider: {log}");
}
