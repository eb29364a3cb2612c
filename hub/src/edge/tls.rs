//! Optional TLS on the public listener (`[tls] cert_file`, `key_file`), for
//! deployments without an ingress or load balancer that terminates it.
//!
//! rustls with the `ring` provider, TLS 1.2 and 1.3, HTTP/1.1 by ALPN (the
//! websocket upgrade is HTTP/1.1). The certificate is served through a
//! resolver that holds the current one: [`Tls::watch`] looks at both files
//! every few seconds and loads them again when either changed, so a renewed
//! certificate (cert-manager, certbot) is served without a restart; a pair
//! that does not load (half written, key and certificate not matching)
//! keeps the current one and is logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::error::{ConfigError, ConfigErrorKind};
use crate::metrics::Metrics;

/// How often the files are looked at for changes.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// TLS for the public listener.
pub struct Tls {
    acceptor: TlsAcceptor,
    resolver: Arc<Resolver>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl Tls {
    /// Loads the configured pair; `Ok(None)` when TLS is off. The error is
    /// the one line `--check-config` prints.
    pub fn load(cfg: &TlsConfig) -> Result<Option<Tls>, ConfigError> {
        let (Some(cert_file), Some(key_file)) = (&cfg.cert_file, &cfg.key_file) else {
            return Ok(None);
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = load_pair(&provider, cert_file, key_file)?;
        let resolver = Arc::new(Resolver {
            current: RwLock::new(Arc::new(key)),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::with_source(ConfigErrorKind::Invalid, "tls", e))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
        }))
    }

    /// The acceptor for one connection's handshake.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Loads the pair again whenever either file changes; runs for the
    /// node's life.
    pub async fn watch(self: Arc<Self>, metrics: Arc<Metrics>) {
        let provider = rustls::crypto::ring::default_provider();
        let mut seen = (stamp(&self.cert_file), stamp(&self.key_file));
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = (stamp(&self.cert_file), stamp(&self.key_file));
            if now == seen {
                continue;
            }
            // Remembered even when the load fails: a broken pair is retried
            // when it changes again, not logged every tick.
            seen = now;
            match load_pair(&provider, &self.cert_file, &self.key_file) {
                Ok(key) => {
                    *self.resolver.current.write() = Arc::new(key);
                    metrics.tls_reloads.inc();
                    tracing::info!(cert = %self.cert_file.display(), "tls: certificate reloaded");
                }
                Err(e) => tracing::warn!(
                    error = %format!("{e:#}"),
                    "tls: changed certificate or key not loaded; serving the previous one"
                ),
            }
        }
    }
}

/// What identifies a file's version: modification time and length.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reads a certificate chain and its key, and checks that they match.
fn load_pair(
    provider: &CryptoProvider,
    cert_file: &Path,
    key_file: &Path,
) -> Result<CertifiedKey, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| pem_error("tls.cert_file", cert_file, e))?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            ConfigErrorKind::Malformed,
            format!(
                "tls.cert_file {}: no CERTIFICATE in it",
                cert_file.display()
            ),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| pem_error("tls.key_file", key_file, e))?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| {
        ConfigError::with_source(
            ConfigErrorKind::Invalid,
            format!(
                "tls: {} and {} are not a usable certificate and key",
                cert_file.display(),
                key_file.display()
            ),
            e,
        )
    })
}

fn pem_error(what: &str, path: &Path, err: rustls_pki_types::pem::Error) -> ConfigError {
    let kind = match err {
        rustls_pki_types::pem::Error::Io(_) => ConfigErrorKind::Unreadable,
        _ => ConfigErrorKind::Malformed,
    };
    ConfigError::with_source(kind, format!("{what} {}", path.display()), err)
}

/// Serves the current certificate to every client.
#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}
