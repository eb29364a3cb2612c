//! How the hub proves who it is to NATS and checks that it talks to the
//! right server: the credentials (`.creds` file, NKey seed file, user and
//! password, token: one kind at most) and TLS (a private CA, a client
//! certificate, TLS required) of `[bus]`, checked for `--check-config` and
//! at start, and handed to async-nats when connecting.
//!
//! Every check reads and parses the files, so a missing, unreadable or
//! malformed one is refused before the node starts, in one line that names
//! the key and the file and never what is in it.

use std::path::Path;

use async_nats::ConnectOptions;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::bus::{BusError, BusResult};
use crate::config::BusConfig;
use crate::error::{ConfigError, ConfigErrorKind};

/// Checks the credentials and TLS files of `[bus]`: each one set is read
/// and parsed, credentials are of one kind at most, the client certificate
/// comes with its key and they match.
pub fn check(cfg: &BusConfig) -> Result<(), ConfigError> {
    if let Some(path) = &cfg.credentials {
        let text = read("bus.credentials", path)?;
        ConnectOptions::with_credentials(&text).map_err(|e| {
            ConfigError::with_source(
                ConfigErrorKind::Malformed,
                format!(
                    "bus.credentials {}: not a NATS .creds file (user JWT and NKey seed)",
                    path.display()
                ),
                e,
            )
        })?;
    }
    if let Some(path) = &cfg.nkey_seed_file {
        nkey_seed(path)?;
    }
    if let Some(path) = &cfg.tls_ca_file {
        certificates("bus.tls_ca_file", path)?;
    }
    if let Some(path) = &cfg.tls_cert_file {
        certificates("bus.tls_cert_file", path)?;
    }
    if let Some(path) = &cfg.tls_key_file {
        PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error("bus.tls_key_file", path, e))?;
    }
    match (&cfg.tls_cert_file, &cfg.tls_key_file) {
        (Some(cert), Some(key)) => client_pair(cert, key)?,
        (None, None) => {}
        _ => {
            return Err(ConfigError::invalid(
                "bus.tls_cert_file and bus.tls_key_file go together: set both or neither",
            ));
        }
    }
    let kinds = [
        cfg.credentials.is_some(),
        cfg.nkey_seed_file.is_some(),
        cfg.user.is_some(),
        cfg.token.is_some(),
    ];
    if kinds.into_iter().filter(|set| *set).count() > 1 {
        return Err(ConfigError::invalid(
            "bus: set one kind of credentials: credentials (.creds), nkey_seed_file, \
             user and password, or token",
        ));
    }
    Ok(())
}

/// `options` with the credentials and TLS of `cfg` (already [`check`]ed).
pub(super) fn apply(cfg: &BusConfig, mut options: ConnectOptions) -> BusResult<ConnectOptions> {
    let unusable = |e: ConfigError| BusError::unusable(format!("{e:#}"));
    if let Some(path) = &cfg.credentials {
        let text = read("bus.credentials", path).map_err(unusable)?;
        options = options
            .credentials(&text)
            .map_err(|e| BusError::unusable(format!("bus.credentials {}: {e}", path.display())))?;
    }
    if let Some(path) = &cfg.nkey_seed_file {
        options = options.nkey(nkey_seed(path).map_err(unusable)?);
    }
    if let Some(user) = &cfg.user {
        options = options.user_and_password(user.clone(), cfg.password.clone().unwrap_or_default());
    }
    if let Some(token) = &cfg.token {
        options = options.token(token.clone());
    }
    if let Some(ca) = &cfg.tls_ca_file {
        // Only these roots: a private CA, not the system's as well.
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let tls_files =
        cfg.tls_ca_file.is_some() || cfg.tls_cert_file.is_some() || cfg.tls_key_file.is_some();
    if cfg.tls_required || tls_files {
        options = options.require_tls(true);
    }
    Ok(options)
}

/// Whether connecting would use TLS whatever the server offers.
pub(super) fn tls_required(cfg: &BusConfig) -> bool {
    cfg.tls_required
        || cfg.tls_ca_file.is_some()
        || cfg.tls_cert_file.is_some()
        || cfg.tls_key_file.is_some()
}

fn read(key: &str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigError::with_source(
            ConfigErrorKind::Unreadable,
            format!("cannot read {} ({key})", path.display()),
            e,
        )
    })
}

/// The user NKey seed held in `path` (`SU...`, whitespace around it ignored).
fn nkey_seed(path: &Path) -> Result<String, ConfigError> {
    let text = read("bus.nkey_seed_file", path)?;
    let seed = text.trim();
    let refused = || {
        ConfigError::new(
            ConfigErrorKind::Malformed,
            format!(
                "bus.nkey_seed_file {}: not a user NKey seed (one line starting with SU)",
                path.display()
            ),
        )
    };
    let pair = nkeys::KeyPair::from_seed(seed).map_err(|_| refused())?;
    if pair.key_pair_type() != nkeys::KeyPairType::User {
        return Err(refused());
    }
    Ok(seed.to_string())
}

/// The PEM certificates of `path`: at least one.
fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| pem_error(key, path, e))?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            ConfigErrorKind::Malformed,
            format!("{key} {}: no CERTIFICATE in it", path.display()),
        ));
    }
    Ok(certs)
}

/// Checks that the client certificate and key belong together.
fn client_pair(cert: &Path, key: &Path) -> Result<(), ConfigError> {
    let chain = certificates("bus.tls_cert_file", cert)?;
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error("bus.tls_key_file", key, e))?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, private, &provider)
        .map(drop)
        .map_err(|e| {
            ConfigError::with_source(
                ConfigErrorKind::Invalid,
                format!(
                    "bus: {} and {} are not a client certificate and its key",
                    cert.display(),
                    key.display()
                ),
                e,
            )
        })
}

fn pem_error(key: &str, path: &Path, err: rustls_pki_types::pem::Error) -> ConfigError {
    let kind = match err {
        rustls_pki_types::pem::Error::Io(_) => ConfigErrorKind::Unreadable,
        _ => ConfigErrorKind::Malformed,
    };
    ConfigError::with_source(kind, format!("{key} {}", path.display()), err)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A self-signed certificate and its key, as PEM.
    fn cert_and_key() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["hub".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn files_are_read_and_parsed_and_errors_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let check_with = |f: &dyn Fn(&mut BusConfig)| {
            let mut cfg = BusConfig::default();
            f(&mut cfg);
            check(&cfg)
        };
        let missing = PathBuf::from("/nonexistent/hub.creds");
        let e = check_with(&|c| c.credentials = Some(missing.clone())).unwrap_err();
        assert_eq!(e.kind(), ConfigErrorKind::Unreadable);
        assert!(e.to_string().contains("/nonexistent/hub.creds"), "{e}");

        let junk = write(&dir, "junk.creds", "not a creds file");
        let e = check_with(&|c| c.credentials = Some(junk.clone())).unwrap_err();
        assert_eq!(e.kind(), ConfigErrorKind::Malformed);

        let user = nkeys::KeyPair::new_user();
        let seed = user.seed().unwrap();
        let good = write(&dir, "hub.nk", &format!("{seed}\n"));
        assert!(check_with(&|c| c.nkey_seed_file = Some(good.clone())).is_ok());
        let account = write(
            &dir,
            "account.nk",
            &nkeys::KeyPair::new_account().seed().unwrap(),
        );
        let e = check_with(&|c| c.nkey_seed_file = Some(account.clone())).unwrap_err();
        assert!(e.to_string().contains("not a user NKey seed"), "{e}");
        assert!(!format!("{e:#}").contains(&seed), "the seed is never shown");

        let (cert, key) = cert_and_key();
        let cert_file = write(&dir, "client.pem", &cert);
        let key_file = write(&dir, "client.key", &key);
        assert!(
            check_with(&|c| {
                c.tls_ca_file = Some(cert_file.clone());
                c.tls_cert_file = Some(cert_file.clone());
                c.tls_key_file = Some(key_file.clone());
            })
            .is_ok()
        );
        let e = check_with(&|c| c.tls_ca_file = Some(key_file.clone())).unwrap_err();
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
        let e = check_with(&|c| c.tls_cert_file = Some(cert_file.clone())).unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
        let (_, other_key) = cert_and_key();
        let other_key = write(&dir, "other.key", &other_key);
        let e = check_with(&|c| {
            c.tls_cert_file = Some(cert_file.clone());
            c.tls_key_file = Some(other_key.clone());
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("not a client certificate and its key"),
            "{e}"
        );
    }

    #[test]
    fn one_kind_of_credentials_at_most() {
        let cfg = BusConfig {
            user: Some("hub".into()),
            token: Some("t".into()),
            ..BusConfig::default()
        };
        let e = check(&cfg).unwrap_err();
        assert!(e.to_string().contains("one kind of credentials"), "{e}");
        let alone = BusConfig {
            password: Some("p".into()),
            ..BusConfig::default()
        };
        assert!(check(&alone).is_ok(), "a password without a user is unused");
    }
}
