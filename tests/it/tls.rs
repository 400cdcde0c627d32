//! HTTPS upstreams: the web PKI by default, plus an operator's extra CA file.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{json_of, spawn_app_with, try_spawn_app_with};

/// A CA (PEM) and a TLS upstream on localhost whose leaf certificate it signed.
pub async fn tls_upstream() -> (String, std::net::SocketAddr) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();

    torii::tls::install_crypto_provider();
    let key = rustls_pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let config =
        rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(vec![leaf.der().clone()], key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    actix_web::rt::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            actix_web::rt::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let mut buf = vec![0u8; 65536];
                let n = tls.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string();
                let body = serde_json::json!({ "tls": true, "request_line": head }).to_string();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (ca_cert.pem(), addr)
}

#[actix_web::test]
async fn https_upstream_needs_its_ca_and_then_works() {
    let (ca_pem, upstream) = tls_upstream().await;
    let base = format!("https://localhost:{}/v1", upstream.port());

    // Web PKI only: the private CA is not trusted, so the call fails cleanly.
    let untrusting = spawn_app_with(|c| c.providers.get_mut("openai").unwrap().base_url = Some(base.clone())).await;
    let mut resp = untrusting.client.post(untrusting.gw("openai/chat/completions")).send_body("{}").await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(json_of(&mut resp).await["error"][0]["code"], 2005);

    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("internal-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let trusting = spawn_app_with(|c| {
        c.providers.get_mut("openai").unwrap().base_url = Some(base.clone());
        c.upstream.extra_ca_file = Some(ca_file.clone());
    })
    .await;
    let mut resp = trusting.client.post(trusting.gw("openai/chat/completions")).send_body("{}").await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = json_of(&mut resp).await;
    assert_eq!(body["tls"], true);
    assert_eq!(body["request_line"], "POST /v1/chat/completions HTTP/1.1");
}

/// A CA and a leaf for `localhost` it signed: (CA PEM, leaf cert PEM, leaf key PEM).
fn leaf_for_localhost(ca: &Issuer<'static, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn new_ca() -> (String, Issuer<'static, KeyPair>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    (ca_cert.pem(), Issuer::new(ca_params, ca_key))
}

/// An HTTPS client trusting `ca_pem`, offering h2 and http/1.1.
fn client_trusting(ca_pem: &str) -> awc::Client {
    torii::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(Arc::new(config)))
        .timeout(std::time::Duration::from_secs(10))
        .disable_redirects()
        .finish()
}

use rustls_pki_types::pem::PemObject as _;

/// Torii serves HTTPS (HTTP/2 by ALPN), redirects plain HTTP, takes a new certificate without a
/// restart when its files change, keeps the old one when the new pair is broken, and refuses to
/// start with a mismatched pair, naming the setting.
#[actix_web::test]
async fn https_listener_serves_redirects_and_reloads() {
    let (ca_pem, ca) = new_ca();
    let files = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (files.path().join("cert.pem"), files.path().join("key.pem"));
    let (cert, key) = leaf_for_localhost(&ca);
    std::fs::write(&cert_file, &cert).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    let app = spawn_app_with(|c| {
        c.tls = Some(torii::config::TlsConfig {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            redirect_http: None,
        });
    })
    .await;
    let https = client_trusting(&ca_pem);
    let url = format!("https://localhost:{}/v1/local/default/openai/chat/completions", app.addr.port());
    let resp = https.post(&url).send_body("{}").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), awc::http::Version::HTTP_2, "HTTP/2 by ALPN");
    // The admin session cookie is Secure over HTTPS (no proxy header involved).
    let settings = app.settings();
    actix_web::web::block(move || settings.create_admin("root", "pw-123456789").unwrap()).await.unwrap();
    let base = format!("https://localhost:{}", app.addr.port());
    let mut form = https.get(format!("{base}/admin/login")).send().await.unwrap();
    let login_cookie = crate::ui::set_cookie(form.headers(), "torii_login").unwrap();
    let html = String::from_utf8_lossy(&crate::helpers::body_of(&mut form).await).into_owned();
    let csrf = crate::ui::csrf_of(&html).unwrap();
    let done = https
        .post(format!("{base}/admin/login"))
        .insert_header(("cookie", login_cookie))
        .send_form(&[("csrf", csrf.as_str()), ("username", "root"), ("password", "pw-123456789")])
        .await
        .unwrap();
    assert_eq!(done.status(), 303);
    let session = done.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
    assert!(session.starts_with("torii_session=") && session.contains("; Secure"), "{session}");
    // The served certificate changes when the files do (a new CA: the old client stops trusting).
    let (ca2_pem, ca2) = new_ca();
    let (cert2, key2) = leaf_for_localhost(&ca2);
    std::fs::write(&key_file, &key2).unwrap();
    std::fs::write(&cert_file, &cert2).unwrap();
    let fresh = client_trusting(&ca2_pem);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while fresh.get(format!("https://localhost:{}/healthz", app.addr.port())).send().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the new certificate was never served");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A broken pair on disk: the previous certificate stays.
    std::fs::write(&key_file, &key).unwrap();
    let _ = torii::tls::load(&cert_file, &key_file).unwrap_err();
    assert_eq!(fresh.get(format!("https://localhost:{}/healthz", app.addr.port())).send().await.unwrap().status(), 200);

    // Start-up with a mismatched pair names the setting.
    let config = torii::config::Config {
        listen: "127.0.0.1:0".into(),
        data_dir: files.path().join("data"),
        tls: Some(torii::config::TlsConfig {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            redirect_http: None,
        }),
        ..torii::config::Config::default()
    };
    let err = torii::app::start(config).err().unwrap().to_string();
    assert!(err.contains("tls.key_file") && err.contains("does not fit"), "{err}");
}

#[actix_web::test]
async fn plain_http_redirects_to_https() {
    let (_, ca) = new_ca();
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = leaf_for_localhost(&ca);
    std::fs::write(files.path().join("cert.pem"), cert).unwrap();
    std::fs::write(files.path().join("key.pem"), key).unwrap();
    // The redirect listener needs a port named in advance: one freed after binding port 0, which
    // a parallel test can take first; then another is tried.
    let mut tries = 0;
    let (app, redirect) = loop {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let redirect = probe.local_addr().unwrap();
        drop(probe);
        let started = try_spawn_app_with(|c| {
            c.tls = Some(torii::config::TlsConfig {
                cert_file: files.path().join("cert.pem"),
                key_file: files.path().join("key.pem"),
                redirect_http: Some(redirect.to_string()),
            });
        })
        .await;
        tries += 1;
        match started {
            Ok(app) => break (app, redirect),
            Err(torii::app::StartError::Bind { .. }) if tries < 5 => {}
            Err(e) => panic!("{e}"),
        }
    };
    let resp = app.client.get(format!("http://localhost:{}/admin?x=1", redirect.port())).send().await.unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(resp.headers().get("location").unwrap(), &format!("https://localhost:{}/admin?x=1", app.addr.port()));
}
