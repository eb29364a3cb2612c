//! The hub's errors: one [`Error<Kind>`](Error) type, one kind enum per area.
//!
//! As in the SDK (`client-sdk/rust/src/error.rs`) and async-nats, code
//! decides with `err.kind()` (refuse the config, answer 401, retry the bus)
//! and people read the error's text. A kind is a small `Copy` enum; the
//! message and the underlying cause travel beside it.
//!
//! The text is the line an operator or a client reads, and it is part of the
//! contract (`--check-config` prints it, a 401 body carries it):
//! - `{}` is the message, or the kind's own text when there is none (the
//!   message is the whole line, not a detail after the kind as in the SDK:
//!   the hub's texts were written as whole lines and are kept);
//! - `{:#}` adds `: <cause>` for each cause, as anyhow's `{:#}` does: the
//!   form for a line that must say everything (`cannot read tribune.toml: No
//!   such file or directory (os error 2)`).
//!
//! The cause is not in `{}`, so that whoever prints the chain (anyhow, a
//! log layer) does not print it twice.

use std::error::Error as StdError;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// An error of one area, with its kind `K`.
///
/// Cheap to clone (the cause is shared), so that one failure can answer
/// several waiters.
#[derive(Clone, Debug)]
pub struct Error<K> {
    /// What went wrong, for code to `match` on.
    kind: K,
    /// The text a person reads, without the cause; empty: the kind's text.
    message: String,
    /// The underlying error, when there is one (I/O, JSON, a key parser).
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

impl<K: Copy> Error<K> {
    /// An error whose text is `message`.
    pub fn new(kind: K, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error whose text is `message`, caused by `source` (shown by `{:#}`).
    pub fn with_source(
        kind: K,
        message: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            source: Some(Arc::from(source.into())),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> K {
        self.kind
    }
}

/// An error whose text is its kind's.
impl<K: Copy> From<K> for Error<K> {
    fn from(kind: K) -> Self {
        Self::new(kind, String::new())
    }
}

impl<K: fmt::Display> fmt::Display for Error<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.kind)?;
        } else {
            f.write_str(&self.message)?;
        }
        if f.alternate() {
            let mut cause = self.source.as_deref().map(|s| s as &dyn StdError);
            while let Some(err) = cause {
                write!(f, ": {err}")?;
                cause = err.source();
            }
        }
        Ok(())
    }
}

impl<K: fmt::Debug + fmt::Display> StdError for Error<K> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

/// Why a configuration cannot run: the TOML file, or the `[auth]` section
/// and the key files it names. `--check-config` prints the text and exits 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// A file the configuration names cannot be read (I/O).
    Unreadable,
    /// A file is not what it must be: not TOML, an unknown key, a value of
    /// the wrong type; a key file that is not a PEM public key or a JWKS.
    Malformed,
    /// A value out of its range, or settings that cannot go together.
    Invalid,
}

impl fmt::Display for ConfigErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unreadable => "file cannot be read",
            Self::Malformed => "malformed file",
            Self::Invalid => "invalid setting",
        })
    }
}

/// A configuration that cannot run.
pub type ConfigError = Error<ConfigErrorKind>;

impl ConfigError {
    /// `cannot read <path>`, caused by the I/O error: the TOML file or a key file.
    pub(crate) fn unreadable(path: &Path, err: std::io::Error) -> Self {
        Self::with_source(
            ConfigErrorKind::Unreadable,
            format!("cannot read {}", path.display()),
            err,
        )
    }

    /// A value out of its range, or settings that cannot go together.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ConfigErrorKind::Invalid, message)
    }
}

/// Why a fan's token was refused at the handshake. The text is the
/// `message` of the 401 body: it says what is wrong without echoing the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthErrorKind {
    /// `exp` is past, beyond the leeway.
    Expired,
    /// `nbf` is ahead, beyond the leeway.
    NotYetValid,
    /// The signature does not verify with the configured key.
    BadSignature,
    /// Not signed with the one algorithm this hub accepts (`none` included).
    WrongAlgorithm,
    /// `aud` does not name this hub (when an audience is configured).
    WrongAudience,
    /// Not a token: its shape, encoding or claims; the message says which.
    Malformed,
    /// No configured key fits the token (an unknown or missing `kid`).
    NoKey,
    /// No `exp`, and the policy requires one (`auth.require_exp`).
    MissingExp,
    /// `exp` further ahead than `auth.max_lifetime_secs` allows.
    LifetimeTooLong,
    /// `iss` is not the configured issuer.
    WrongIssuer,
    /// Revoked by an operator (its `jti`, or its user's tokens issued
    /// before a time).
    Revoked,
}

impl AuthErrorKind {
    /// The rule that refused the token, for metrics labels and the audit
    /// log.
    pub fn rule(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadSignature => "signature",
            Self::WrongAlgorithm => "algorithm",
            Self::WrongAudience => "audience",
            Self::Malformed => "malformed",
            Self::NoKey => "no_key",
            Self::MissingExp => "require_exp",
            Self::LifetimeTooLong => "max_lifetime",
            Self::WrongIssuer => "issuer",
            Self::Revoked => "revoked",
        }
    }
}

impl fmt::Display for AuthErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Expired => "token expired",
            Self::NotYetValid => "token not yet valid (nbf is in the future)",
            Self::BadSignature => "token signature does not verify",
            Self::WrongAlgorithm => "token is not signed with the algorithm this hub accepts",
            Self::WrongAudience => "token audience is not this hub",
            Self::Malformed => "malformed token",
            Self::NoKey => "no key to verify this token",
            Self::MissingExp => "token has no exp and this hub requires one (auth.require_exp)",
            Self::LifetimeTooLong => {
                "token lifetime is over this hub's maximum (auth.max_lifetime_secs)"
            }
            Self::WrongIssuer => "token issuer is not the one this hub accepts (auth.issuer)",
            Self::Revoked => "token revoked",
        })
    }
}

/// A fan's token refused.
pub type AuthError = Error<AuthErrorKind>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_the_message_or_the_kind_and_the_causes_with_alternate() {
        let err = AuthError::from(AuthErrorKind::Expired);
        assert_eq!(err.to_string(), "token expired");
        assert_eq!(err.kind(), AuthErrorKind::Expired);
        let err = ConfigError::new(
            ConfigErrorKind::Invalid,
            "heartbeat_ms must be at least 100",
        );
        assert_eq!(format!("{err:#}"), "heartbeat_ms must be at least 100");
        assert!(StdError::source(&err).is_none());
        let io = std::io::Error::other("boom");
        let err = ConfigError::with_source(ConfigErrorKind::Unreadable, "cannot read x.toml", io);
        assert_eq!(err.to_string(), "cannot read x.toml");
        assert_eq!(format!("{err:#}"), "cannot read x.toml: boom");
        assert_eq!(StdError::source(&err).unwrap().to_string(), "boom");
        // Wrapped by anyhow, the cause is printed once.
        let copy = err.clone();
        assert_eq!(
            format!("{:#}", anyhow::Error::from(copy)),
            "cannot read x.toml: boom"
        );
    }
}

/// Why a subscription could not join its topic's relay; the client gets
/// `error` with `unavailable` and the text, and may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinErrorKind {
    /// The topic's history could not be read from the bus.
    Unavailable,
    /// The topic's relay kept closing under the join (its linger ended).
    Restarting,
    /// The node carries `limits.max_relays` topics and this one is not
    /// among them.
    TooManyTopics,
}

impl fmt::Display for JoinErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unavailable => "history is unavailable",
            Self::Restarting => "topic is restarting, retry",
            Self::TooManyTopics => "this node carries its maximum of topics; retry later",
        })
    }
}

/// A subscription that could not join.
pub type JoinError = Error<JoinErrorKind>;

/// Why a request to the websocket path is not a websocket upgrade (RFC
/// 6455 section 4.2.1); answered 426 with the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeErrorKind {
    NotGet,
    NoUpgradeHeaders,
    WrongVersion,
    NoKey,
}

impl fmt::Display for UpgradeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotGet => "a websocket upgrade is a GET",
            Self::NoUpgradeHeaders => "no 'Connection: upgrade' with 'Upgrade: websocket'",
            Self::WrongVersion => "'Sec-WebSocket-Version' must be 13",
            Self::NoKey => "no 'Sec-WebSocket-Key'",
        })
    }
}

/// A request that is not a websocket upgrade.
pub type UpgradeError = Error<UpgradeErrorKind>;

/// Why a connection's PROXY protocol v2 header was refused; the socket is
/// closed and the reason audited as `proxy_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyHeaderErrorKind {
    /// The socket closed or failed before the header was complete.
    Io,
    /// The first bytes are not the PROXY protocol v2 signature.
    Missing,
    /// The header is longer than this hub reads.
    TooLong,
    /// The signature is there, the rest is not a valid v2 header.
    Malformed,
}

impl fmt::Display for ProxyHeaderErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Io => "connection ended inside the PROXY header",
            Self::Missing => "no PROXY protocol v2 header",
            Self::TooLong => "PROXY header too long",
            Self::Malformed => "malformed PROXY protocol v2 header",
        })
    }
}

/// A PROXY protocol header refused.
pub type ProxyHeaderError = Error<ProxyHeaderErrorKind>;

/// Why a bus call failed; code decides with it (retry, refuse to start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BusErrorKind {
    /// Disconnected, timed out, or refused by the server.
    Unavailable,
    /// The request itself was refused (a payload too large, say).
    Rejected,
    /// The hub will not start on this bus as configured: no server answers,
    /// the server is too old or runs without JetStream, the stream is missing
    /// or unfit, or the settings are not usable. Only connecting returns it;
    /// the text is the operator's whole one-line message.
    Unusable,
}

impl fmt::Display for BusErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unavailable => "bus unavailable",
            Self::Rejected => "bus refused the request",
            Self::Unusable => "bus unusable",
        })
    }
}

/// A bus call that failed.
pub type BusError = Error<BusErrorKind>;

impl BusError {
    /// `bus unavailable: <detail>`.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            BusErrorKind::Unavailable,
            format!("bus unavailable: {}", detail.into()),
        )
    }

    /// `bus refused the request: <detail>`.
    pub fn rejected(detail: impl Into<String>) -> Self {
        Self::new(
            BusErrorKind::Rejected,
            format!("bus refused the request: {}", detail.into()),
        )
    }

    /// The operator's one-line reason the hub will not use this bus.
    pub fn unusable(message: impl Into<String>) -> Self {
        Self::new(BusErrorKind::Unusable, message)
    }
}
