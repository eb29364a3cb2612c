//! Connection state as the application sees it: the current
//! [`ConnectionState`] and a stream of [`ConnectionEvent`]s (connecting,
//! connected, disconnected with a reason, draining, resumed, closed).

use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, watch};

/// Where the client's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// A handshake is under way (or about to be).
    Connecting,
    /// Welcomed by a hub.
    Connected,
    /// Down, waiting for the next attempt.
    Disconnected,
    /// Down for good: closed by the application, or by the hub with 1000/1008,
    /// or the token was refused.
    Closed,
}

/// Why a connection ended (or could not be made).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The hub closed the socket with this code (PROTOCOL.md section 6).
    Closed { code: u16, reason: String },
    /// No frame, ping or pong from the hub for two heartbeat intervals.
    HeartbeatTimeout,
    /// The network failed or the socket ended without a close frame.
    Io(String),
    /// The hub refused the handshake with this HTTP status (401, 403, 429, 503...).
    Refused { status: u16, message: String },
    /// The hub did not speak Tribune v1 (no `welcome`, other version).
    Protocol(String),
    /// The client moved away from a draining node at its chosen instant.
    Drained,
    /// The application closed the client.
    ClientClosed,
    /// The network changed (or the app came back) and the hub did not
    /// answer the check within the probe timeout: the socket was dead.
    Unresponsive,
    /// The application paused the client (in the background).
    Paused,
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed { code, reason } if reason.is_empty() => {
                write!(f, "closed by the hub ({code})")
            }
            Self::Closed { code, reason } => write!(f, "closed by the hub ({code}: {reason})"),
            Self::HeartbeatTimeout => f.write_str("no sign of life from the hub"),
            Self::Io(e) => write!(f, "connection lost: {e}"),
            Self::Refused { status, message } => {
                write!(f, "handshake refused ({status}): {message}")
            }
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::Drained => f.write_str("left a draining node"),
            Self::ClientClosed => f.write_str("closed by the application"),
            Self::Unresponsive => f.write_str("no answer to a check after a network change"),
            Self::Paused => f.write_str("paused by the application"),
        }
    }
}

/// A change of the connection, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// Attempt number `attempt` (from 1 since the last connection) starts.
    Connecting { attempt: u32, url: String },
    /// A hub welcomed the client.
    Connected {
        node: String,
        conn: String,
        url: String,
    },
    /// The connection ended; the next attempt follows after `retry_in`, or
    /// never (`None`: a [`ConnectionEvent::Closed`] follows).
    Disconnected {
        reason: DisconnectReason,
        retry_in: Option<Duration>,
    },
    /// The hub announced it is shutting down: the client moves to another
    /// node after `reconnect_in`, drawn in `[0, retry_ms)`.
    Draining {
        retry_ms: u64,
        reconnect_in: Duration,
    },
    /// After a reconnection, every subscription was renewed: `recovered` of
    /// them resumed where they were, `gaps` could not and reported an
    /// [`Event::Gap`](crate::Event::Gap) (with `before_seq: None`), `refused`
    /// were ended by the hub. A hole the hub announces inside a replay (a
    /// `gap` frame after the `ack`) is reported on its subscription only,
    /// not counted here.
    Resumed {
        subscriptions: usize,
        recovered: usize,
        gaps: usize,
        refused: usize,
    },
    /// The client stopped for good.
    Closed { reason: DisconnectReason },
    /// The token provider's new token replaced the current one on the open
    /// connection; it expires at `expires_at` (Unix seconds), if ever.
    TokenRefreshed { expires_at: Option<u64> },
    /// A refresh failed (the provider, or the hub refused the new token):
    /// the current token serves until it expires, and the refresh is tried
    /// again before then.
    TokenRefreshFailed { reason: String },
}

/// Fan-out of connection events to every listener, and the current state.
#[derive(Debug)]
pub(crate) struct EventHub {
    listeners: Mutex<Vec<mpsc::UnboundedSender<ConnectionEvent>>>,
    state: watch::Sender<ConnectionState>,
    node: Mutex<Option<String>>,
}

impl EventHub {
    pub(crate) fn new(state: ConnectionState) -> Self {
        Self {
            listeners: Mutex::new(Vec::new()),
            state: watch::Sender::new(state),
            node: Mutex::new(None),
        }
    }

    pub(crate) fn emit(&self, event: ConnectionEvent) {
        let state = match &event {
            ConnectionEvent::Connecting { .. } => Some(ConnectionState::Connecting),
            ConnectionEvent::Connected { node, .. } => {
                *self.node.lock().unwrap_or_else(|p| p.into_inner()) = Some(node.clone());
                Some(ConnectionState::Connected)
            }
            ConnectionEvent::Disconnected { .. } => Some(ConnectionState::Disconnected),
            ConnectionEvent::Closed { .. } => Some(ConnectionState::Closed),
            ConnectionEvent::Draining { .. }
            | ConnectionEvent::Resumed { .. }
            | ConnectionEvent::TokenRefreshed { .. }
            | ConnectionEvent::TokenRefreshFailed { .. } => None,
        };
        if let Some(state) = state {
            self.state.send_replace(state);
        }
        tracing::debug!(?event, "connection event");
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        listeners.retain(|l| l.send(event.clone()).is_ok());
    }

    pub(crate) fn listen(&self) -> ConnectionEvents {
        let (tx, rx) = mpsc::unbounded_channel();
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        ConnectionEvents { rx }
    }

    pub(crate) fn state(&self) -> ConnectionState {
        *self.state.borrow()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    pub(crate) fn node(&self) -> Option<String> {
        self.node.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A stream of [`ConnectionEvent`]s from the moment it was created.
///
/// Unbounded on purpose: events are a handful per reconnection, and a
/// listener that looks late still sees all of them, in order.
#[derive(Debug)]
pub struct ConnectionEvents {
    rx: mpsc::UnboundedReceiver<ConnectionEvent>,
}

impl Stream for ConnectionEvents {
    type Item = ConnectionEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ConnectionEvent>> {
        self.rx.poll_recv(cx)
    }
}
