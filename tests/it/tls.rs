//! HTTPS upstreams: the web PKI by default, plus an operator's extra CA file.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{json_of, spawn_app_with};

/// A CA (PEM) and a TLS upstream on localhost whose leaf certificate it signed.
async fn tls_upstream() -> (String, std::net::SocketAddr) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&leaf_key, &issuer).unwrap();

    torii::gateway::client::install_crypto_provider();
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
