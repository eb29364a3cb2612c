//! Errors: one [`Error<Kind>`](Error) type, one kind enum per operation.
//!
//! As in async-nats, a caller matches on `err.kind()` to decide what to do
//! (retry, fix the input, give up) and prints the error for the detail. Kinds
//! are small `Copy` enums; the detail text and the underlying cause travel
//! beside them.

use std::error::Error as StdError;
use std::fmt;

use tribune_protocol::ErrorCode;

/// An error of one operation, with its kind `K`.
pub struct Error<K> {
    /// What went wrong, for callers to `match` on.
    kind: K,
    /// Human detail: which topic, what the hub said.
    detail: String,
    /// The underlying error, when there is one (I/O, NATS, JSON).
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl<K: Copy> Error<K> {
    pub(crate) fn new(kind: K, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        kind: K,
        detail: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            kind,
            detail: detail.into(),
            source: Some(source.into()),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> K {
        self.kind
    }

    /// The detail text, without the kind.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl<K: fmt::Display> fmt::Display for Error<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{}: {}", self.kind, self.detail)
        }
    }
}

impl<K: fmt::Debug> fmt::Debug for Error<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("detail", &self.detail)
            .field("source", &self.source)
            .finish()
    }
}

impl<K: fmt::Debug + fmt::Display> StdError for Error<K> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn StdError + 'static))
    }
}

/// Why a connection (to a hub or to NATS) could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectErrorKind {
    /// The URL is not a `ws://`, `wss://`, `http://`, `https://`, `nats://` or `tls://` URL.
    InvalidUrl,
    /// The hub refused the token (HTTP 401). Retrying with the same token is useless.
    Unauthorized,
    /// The hub refused this client (HTTP 403: origin not allowed).
    Forbidden,
    /// The hub is draining, full or rate-limiting handshakes (HTTP 503 or 429): retry later.
    Unavailable,
    /// The network failed (refused, reset, unreachable).
    Io,
    /// No answer within the connect timeout.
    TimedOut,
    /// The TLS handshake failed: the server's certificate is not trusted (give
    /// its CA), not valid for the host, or expired. The server may fix it.
    Tls,
    /// The TLS settings cannot be used: the CA file (or a client certificate)
    /// is unreadable or holds no certificate, or the system has no root
    /// certificates.
    TlsConfig,
    /// The peer is not a Tribune hub speaking protocol version 1.
    Protocol,
    /// The client was closed.
    Closed,
    /// The application's token provider failed (its message is the
    /// detail); tried again with backoff.
    TokenProvider,
}

impl fmt::Display for ConnectErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidUrl => "invalid URL",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Unavailable => "hub unavailable",
            Self::Io => "connection failed",
            Self::TimedOut => "connect timed out",
            Self::Tls => "TLS failed",
            Self::TlsConfig => "unusable TLS settings",
            Self::Protocol => "protocol error",
            Self::Closed => "client closed",
            Self::TokenProvider => "token provider failed",
        })
    }
}

impl ConnectErrorKind {
    /// Whether trying again later may succeed (unlike a refused token). A
    /// TLS failure may: servers renew or fix their certificates.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Unavailable | Self::Io | Self::TimedOut | Self::Tls | Self::TokenProvider
        )
    }
}

/// Why `subscribe` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscribeErrorKind {
    /// The topic breaks the rules of PROTOCOL.md section 2.
    InvalidTopic,
    /// This client already has a subscription to that topic.
    AlreadySubscribed,
    /// The hub answered `error` with this code.
    Refused(ErrorCode),
    /// No `ack` within the request timeout (also while reconnecting).
    TimedOut,
    /// The client was closed.
    Closed,
}

impl fmt::Display for SubscribeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidTopic => f.write_str("invalid topic"),
            Self::AlreadySubscribed => f.write_str("already subscribed"),
            Self::Refused(code) => write!(f, "refused ({code})"),
            Self::TimedOut => f.write_str("subscribe timed out"),
            Self::Closed => f.write_str("client closed"),
        }
    }
}

/// Why `unsubscribe` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnsubscribeErrorKind {
    /// No `ack` within the request timeout. Locally the subscription is gone anyway.
    TimedOut,
    /// The client was closed.
    Closed,
}

impl fmt::Display for UnsubscribeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TimedOut => "unsubscribe timed out",
            Self::Closed => "client closed",
        })
    }
}

/// Why a publication failed: a fan's `Client::publish`, the editors'
/// [`Publisher`](crate::Publisher) on NATS, or [`HubPublisher`](crate::HubPublisher).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishErrorKind {
    /// The topic breaks the rules of PROTOCOL.md section 2.
    InvalidTopic,
    /// The payload is not one valid JSON value.
    InvalidJson,
    /// The payload (or the client frame around it) is over the size limit.
    PayloadTooLarge,
    /// The hub connection is down; nothing was sent.
    NotConnected,
    /// The connection dropped after sending: the outcome is unknown.
    Disconnected,
    /// The hub answered `error` (or an HTTP error) with this code.
    Refused(ErrorCode),
    /// No JetStream stream takes `tribune.fan.<topic>` (is a hub with `--nats` managing it?).
    NoStream,
    /// No acknowledgement in time, retries included.
    TimedOut,
    /// The transport (NATS or HTTP) failed.
    Transport,
    /// The client was closed.
    Closed,
}

impl fmt::Display for PublishErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidTopic => f.write_str("invalid topic"),
            Self::InvalidJson => f.write_str("invalid JSON"),
            Self::PayloadTooLarge => f.write_str("payload too large"),
            Self::NotConnected => f.write_str("not connected"),
            Self::Disconnected => f.write_str("disconnected before the answer"),
            Self::Refused(code) => write!(f, "refused ({code})"),
            Self::NoStream => f.write_str("no stream for this subject"),
            Self::TimedOut => f.write_str("publish timed out"),
            Self::Transport => f.write_str("transport failed"),
            Self::Closed => f.write_str("client closed"),
        }
    }
}

/// Why `react` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReactErrorKind {
    /// The topic breaks the rules of PROTOCOL.md section 2.
    InvalidTopic,
    /// The hub connection is down; nothing was sent.
    NotConnected,
    /// The connection dropped after sending: the outcome is unknown.
    Disconnected,
    /// The hub answered `error`: `forbidden` (no reactions in that namespace),
    /// `bad_request` (reaction not allowed), `rate_limited`.
    Refused(ErrorCode),
    /// No answer within the request timeout.
    TimedOut,
    /// The client was closed.
    Closed,
}

impl fmt::Display for ReactErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidTopic => f.write_str("invalid topic"),
            Self::NotConnected => f.write_str("not connected"),
            Self::Disconnected => f.write_str("disconnected before the answer"),
            Self::Refused(code) => write!(f, "refused ({code})"),
            Self::TimedOut => f.write_str("react timed out"),
            Self::Closed => f.write_str("client closed"),
        }
    }
}

/// Why `ping` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PingErrorKind {
    /// The hub connection is down.
    NotConnected,
    /// The connection dropped before the `pong`.
    Disconnected,
    /// No `pong` within the request timeout.
    TimedOut,
    /// The client was closed.
    Closed,
}

impl fmt::Display for PingErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotConnected => "not connected",
            Self::Disconnected => "disconnected before the answer",
            Self::TimedOut => "ping timed out",
            Self::Closed => "client closed",
        })
    }
}

pub type ConnectError = Error<ConnectErrorKind>;
pub type SubscribeError = Error<SubscribeErrorKind>;
pub type UnsubscribeError = Error<UnsubscribeErrorKind>;
pub type PublishError = Error<PublishErrorKind>;
pub type ReactError = Error<ReactErrorKind>;
pub type PingError = Error<PingErrorKind>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_kind_and_detail() {
        let err = SubscribeError::new(
            SubscribeErrorKind::Refused(ErrorCode::Forbidden),
            "namespace 'premium' needs a token",
        );
        assert_eq!(
            err.to_string(),
            "refused (forbidden): namespace 'premium' needs a token"
        );
        assert_eq!(
            err.kind(),
            SubscribeErrorKind::Refused(ErrorCode::Forbidden)
        );
        let io = std::io::Error::other("boom");
        let err = ConnectError::with_source(ConnectErrorKind::Io, "127.0.0.1:1", io);
        assert!(StdError::source(&err).is_some());
        assert_eq!(err.to_string(), "connection failed: 127.0.0.1:1");
    }
}
