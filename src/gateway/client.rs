//! The upstream HTTP client: TLS roots, timeouts, pooling, no redirects. Connector concerns
//! change here and nowhere else.

use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::UpstreamConfig;

/// Installs the process-wide rustls crypto provider (ring). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// TLS settings shared by every worker: web PKI roots plus the optional extra CA bundle.
pub fn tls_config(cfg: &UpstreamConfig) -> Result<Arc<rustls::ClientConfig>, String> {
    install_crypto_provider();
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = &cfg.extra_ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("upstream.extra_ca_file: cannot read {}: {e}", path.display()))?;
        let mut added = 0;
        for cert in certs {
            let cert = cert.map_err(|e| format!("upstream.extra_ca_file: bad PEM: {e}"))?;
            roots.add(cert).map_err(|e| format!("upstream.extra_ca_file: bad certificate: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("upstream.extra_ca_file: no certificates in {}", path.display()));
        }
    }
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One client per worker (awc clients are not `Send`).
#[must_use]
pub fn build_client(cfg: &UpstreamConfig, tls: Arc<rustls::ClientConfig>) -> awc::Client {
    let connect = Duration::from_millis(cfg.connect_timeout_ms);
    let mut connector = awc::Connector::new()
        .rustls_0_23(tls)
        .timeout(connect)
        .handshake_timeout(connect)
        .conn_keep_alive(Duration::from_secs(60))
        .conn_lifetime(Duration::from_secs(300));
    if cfg.pool_limit > 0 {
        connector = connector.limit(cfg.pool_limit);
    } else {
        connector = connector.limit(0);
    }
    awc::Client::builder()
        .connector(connector)
        .disable_redirects()
        .no_default_headers()
        .timeout(Duration::from_millis(cfg.first_byte_timeout_ms))
        .finish()
}
