//! Which servers the SDK trusts over TLS: the rustls client settings shared
//! by `wss://` hubs ([`Client`](crate::Client)) and `https://` hubs
//! ([`HubPublisher`](crate::HubPublisher)), the checks of the files handed
//! to async-nats for a TLS NATS ([`Publisher`](crate::Publisher)), and the
//! reading of a TLS failure into a message that says what to do.
//!
//! By default the platform's root certificates are trusted (the system
//! store, read by `rustls-native-certs`: what the operator installed,
//! corporate CAs included; async-nats trusts the same store for `tls://`
//! NATS). A CA file replaces them: only servers whose chain ends at one of
//! its certificates are accepted, which is what a private or test CA wants
//! and the meaning `--ca-file` has on the NATS side too.
//!
//! The crypto provider is named here (ring, the one async-nats already
//! builds) rather than taken from the process default, so that an
//! application linking another provider does not change or break ours.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::error::{ConnectError, ConnectErrorKind};

/// The client settings: the platform's roots, or only the certificates of
/// `ca_file` (PEM). Reads files (I/O).
pub(crate) fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, ConnectError> {
    let roots = match ca_file {
        Some(path) => roots_from_file(path)?,
        None => platform_roots()?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::with_source(ConnectErrorKind::TlsConfig, "TLS versions", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Checks that a CA file holds usable certificates (I/O), for settings that
/// another library reads later (async-nats).
pub(crate) fn check_ca_file(path: &Path) -> Result<(), ConnectError> {
    roots_from_file(path).map(|_| ())
}

/// Checks that a client certificate chain and its private key can be read
/// (I/O), before a library that would report them as a failed handshake.
pub(crate) fn check_client_identity(cert: &Path, key: &Path) -> Result<(), ConnectError> {
    let unusable = |what: &str, path: &Path, e: rustls::pki_types::pem::Error| {
        ConnectError::with_source(
            ConnectErrorKind::TlsConfig,
            format!("{what} {}", path.display()),
            e,
        )
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| unusable("client certificate", cert, e))?;
    if chain.is_empty() {
        return Err(ConnectError::new(
            ConnectErrorKind::TlsConfig,
            format!(
                "client certificate {}: no PEM certificate in it",
                cert.display()
            ),
        ));
    }
    PrivateKeyDer::from_pem_file(key).map_err(|e| unusable("client key", key, e))?;
    Ok(())
}

/// The certificates of a PEM file, each a trust anchor.
fn roots_from_file(path: &Path) -> Result<RootCertStore, ConnectError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            ConnectError::with_source(
                ConnectErrorKind::TlsConfig,
                format!("CA file {}", path.display()),
                e,
            )
        })?;
    if certs.is_empty() {
        return Err(ConnectError::new(
            ConnectErrorKind::TlsConfig,
            format!("CA file {}: no PEM certificate in it", path.display()),
        ));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| {
            ConnectError::with_source(
                ConnectErrorKind::TlsConfig,
                format!(
                    "CA file {}: a certificate is not usable as a CA",
                    path.display()
                ),
                e,
            )
        })?;
    }
    Ok(roots)
}

/// The system's root certificates. A store that cannot be read at all is
/// an error now rather than an "unknown issuer" at every connection.
fn platform_roots() -> Result<RootCertStore, ConnectError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        return Err(ConnectError::new(
            ConnectErrorKind::TlsConfig,
            format!(
                "no trusted root certificates on this system ({}); give the server's CA file",
                if errors.is_empty() {
                    "the store is empty".to_string()
                } else {
                    errors.join("; ")
                }
            ),
        ));
    }
    if !found.errors.is_empty() {
        tracing::debug!(errors = ?found.errors, added, "some platform root certificates were unreadable");
    }
    Ok(roots)
}

/// The TLS failure inside an I/O error from a handshake, if that is what it
/// is. Connectors wrap it in further I/O errors, which `source()` skips (an
/// `io::Error` reports its inner error's source, not the inner error), so
/// the wrapping is unpeeled here.
pub(crate) fn tls_failure(err: &std::io::Error) -> Option<&rustls::Error> {
    let mut inner = err.get_ref()?;
    loop {
        if let Some(found) = inner.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        inner = inner.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

/// The TLS failure anywhere in an error's chain of causes (an HTTP client
/// wraps it a few levels down).
pub(crate) fn tls_failure_in_chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(found) = e.downcast_ref::<std::io::Error>().and_then(tls_failure) {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// What a TLS failure means to the person running the client, with the fix
/// when there is an obvious one.
pub(crate) fn explain(err: &rustls::Error) -> String {
    use rustls::CertificateError as Cert;
    match err {
        rustls::Error::InvalidCertificate(Cert::UnknownIssuer) => {
            "the server's certificate is not signed by a trusted CA: \
             give its CA with ca_file (CLI: --ca-file)"
                .into()
        }
        rustls::Error::InvalidCertificate(Cert::NotValidForName)
        | rustls::Error::InvalidCertificate(Cert::NotValidForNameContext { .. }) => {
            format!("the server's certificate is not valid for this host name ({err})")
        }
        rustls::Error::InvalidCertificate(Cert::Expired)
        | rustls::Error::InvalidCertificate(Cert::ExpiredContext { .. }) => {
            format!("the server's certificate has expired ({err})")
        }
        other => format!("TLS handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = client_config(Some(&missing)).unwrap_err();
        assert_eq!(err.kind(), ConnectErrorKind::TlsConfig);
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = client_config(Some(&empty)).unwrap_err();
        assert_eq!(err.kind(), ConnectErrorKind::TlsConfig);
        assert!(err.to_string().contains("no PEM certificate"), "{err}");

        // A PEM block that is not a certificate's DER.
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = client_config(Some(&garbage)).unwrap_err();
        assert_eq!(err.kind(), ConnectErrorKind::TlsConfig);
    }

    #[test]
    fn unknown_issuer_names_the_fix() {
        let text = explain(&rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        assert!(text.contains("--ca-file"), "{text}");
    }

    #[test]
    fn handshake_errors_are_found_inside_io_errors() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(matches!(
            tls_failure(&io),
            Some(rustls::Error::InvalidCertificate(_))
        ));
        assert!(tls_failure(&std::io::Error::other("reset")).is_none());
        // Wrapped once more, as an HTTP client does.
        let wrapped = std::io::Error::other(io);
        assert!(tls_failure_in_chain(&wrapped).is_some());
    }
}
