//! The TLS listener's certificate: PEM files loaded and checked at start (a bad or mismatched
//! pair is an error naming the setting), and reloaded without a restart when the files change
//! (checked every few seconds) or on SIGHUP. A reload that fails keeps the certificate in use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Installs the process-wide rustls crypto provider (ring). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The listener's certificate, swapped in place on reload.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<CertifiedKey>,
    loaded_at: std::sync::Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reads and checks a certificate chain and its key.
pub fn load(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("tls.cert_file: cannot read {}: {e}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.cert_file: {} is not PEM: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("tls.cert_file: no certificate in {}", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("tls.key_file: cannot read a private key from {}: {e}", key_file.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, key, &provider).map_err(|e| {
        format!("tls.key_file: {} does not fit tls.cert_file {}: {e}", key_file.display(), cert_file.display())
    })
}

impl ReloadingCert {
    /// Loads the pair (an error names the bad setting).
    pub fn open(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, String> {
        let key = load(cert_file, key_file)?;
        Ok(Arc::new(Self {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: ArcSwap::from_pointee(key),
            loaded_at: std::sync::Mutex::new((modified(cert_file), modified(key_file))),
        }))
    }

    /// Reloads the files; on failure the certificate in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let stamps = (modified(&self.cert_file), modified(&self.key_file));
        let key = load(&self.cert_file, &self.key_file)?;
        self.current.store(Arc::new(key));
        *self.loaded_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = stamps;
        tracing::info!(cert = %self.cert_file.display(), "TLS certificate reloaded");
        Ok(())
    }

    /// Reloads when either file changed since the last load.
    pub fn reload_if_changed(&self) {
        let stamps = (modified(&self.cert_file), modified(&self.key_file));
        let changed = *self.loaded_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner) != stamps;
        if changed && let Err(e) = self.reload() {
            tracing::warn!(error = %e, "TLS certificate not reloaded; the previous one stays in use");
        }
    }

    /// The server configuration using it (HTTP/2 and HTTP/1.1 by ALPN).
    #[must_use]
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        install_crypto_provider();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }

    /// Watches the files (every 2 s) and SIGHUP, reloading on change, for the process's life.
    pub fn watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let _ = std::thread::Builder::new().name("torii-tls-watch".into()).spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(2));
                let Some(cert) = weak.upgrade() else { return };
                cert.reload_if_changed();
            }
        });
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
