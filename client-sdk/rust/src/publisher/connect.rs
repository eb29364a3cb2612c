//! The [`Publisher`](crate::Publisher)'s connection to NATS: the TLS files
//! checked before the handshake, and async-nats's errors said as a
//! [`ConnectError`] (a refused certificate as such, not as I/O).

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{ConnectError, ConnectErrorKind};
use crate::tls;

/// Connects to NATS at `url` within `timeout`, trusting only `ca_file` when
/// given and presenting `client_cert` (certificate, key) when given.
pub(super) async fn connect_nats(
    url: &str,
    timeout: Duration,
    ca_file: Option<&PathBuf>,
    client_cert: Option<&(PathBuf, PathBuf)>,
) -> Result<async_nats::Client, ConnectError> {
    let mut options = async_nats::ConnectOptions::new().connection_timeout(timeout);
    // Files are checked here, so that a wrong path is reported as such
    // and not as a failed handshake.
    if let Some(ca) = ca_file {
        tls::check_ca_file(ca)?;
        options = options.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = client_cert {
        tls::check_client_identity(cert, key)?;
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let client = options.connect(url).await.map_err(|e| {
        // async-nats reports a refused certificate as I/O; say what it is.
        if let Some(tls_error) = tls::tls_failure_in_chain(&e) {
            let detail = format!("{url}: {}", tls::explain(tls_error));
            return ConnectError::with_source(ConnectErrorKind::Tls, detail, e);
        }
        let kind = match e.kind() {
            async_nats::ConnectErrorKind::ServerParse => ConnectErrorKind::InvalidUrl,
            async_nats::ConnectErrorKind::TimedOut => ConnectErrorKind::TimedOut,
            async_nats::ConnectErrorKind::Authentication
            | async_nats::ConnectErrorKind::AuthorizationViolation => {
                ConnectErrorKind::Unauthorized
            }
            async_nats::ConnectErrorKind::Tls => ConnectErrorKind::Tls,
            _ => ConnectErrorKind::Io,
        };
        ConnectError::with_source(kind, url.to_string(), e)
    })?;
    Ok(client)
}
