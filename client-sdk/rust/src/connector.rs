//! Getting (back) onto a hub: the handshake of one attempt, and the policy
//! that decides whether and when the next attempt happens (PROTOCOL.md
//! sections 1 and 6).
//!
//! The policy is pure and unit-tested: no retry after 1000 or 1008 (or a 401
//! or 403 handshake refusal), an immediate resume after 4008, after a `drain`
//! the random instant drawn in `[0, retry_ms)`, after a 503/429 at least a
//! random part of `Retry-After`, and otherwise full-jitter exponential
//! backoff. A successful connection resets the backoff, except after a 4029
//! (flood) close, so that a client that floods keeps slowing down.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tribune_protocol::close::Reconnect;
use tribune_protocol::{CloseCode, PROTOCOL_VERSION, SUBPROTOCOL, ServerFrame, WS_PATH, Welcome};
use url::Url;

use crate::backoff::{Backoff, jitter_below};
use crate::error::{ConnectError, ConnectErrorKind};
use crate::events::DisconnectReason;
use crate::tls;

pub(crate) type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Turns what a user typed into the hub's websocket URL: `http(s)` becomes
/// `ws(s)`, and an empty path becomes `/v1/ws`.
pub(crate) fn ws_url(input: &str) -> Result<Url, ConnectError> {
    let mut url = Url::parse(input).map_err(|e| {
        ConnectError::with_source(ConnectErrorKind::InvalidUrl, input.to_string(), e)
    })?;
    let scheme = match url.scheme() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        other => {
            return Err(ConnectError::new(
                ConnectErrorKind::InvalidUrl,
                format!("{input}: scheme '{other}' is not ws, wss, http or https"),
            ));
        }
    };
    if url.scheme() != scheme {
        // Both schemes are "special" in the URL standard, so this cannot fail.
        let _ = url.set_scheme(scheme);
    }
    if url.path().is_empty() || url.path() == "/" {
        url.set_path(WS_PATH);
    }
    Ok(url)
}

/// A failed attempt: the error, and what the hub asked about retrying.
#[derive(Debug)]
pub(crate) struct ConnectFailure {
    pub(crate) error: ConnectError,
    /// The HTTP status of a refused handshake.
    pub(crate) status: Option<u16>,
    /// The `Retry-After` of a 503 or 429.
    pub(crate) retry_after: Option<Duration>,
}

impl ConnectFailure {
    pub(crate) fn new(kind: ConnectErrorKind, detail: String) -> Self {
        Self {
            error: ConnectError::new(kind, detail),
            status: None,
            retry_after: None,
        }
    }

    /// The failure as the application's connection events report it.
    pub(crate) fn reason(&self) -> DisconnectReason {
        match (self.status, self.error.kind()) {
            (Some(status), _) => DisconnectReason::Refused {
                status,
                message: self.error.detail().to_string(),
            },
            (None, ConnectErrorKind::Protocol) => {
                DisconnectReason::Protocol(self.error.detail().to_string())
            }
            (None, _) => DisconnectReason::Io(self.error.to_string()),
        }
    }
}

/// One connection attempt: the websocket handshake (offering `tribune.v1`,
/// with the token as a bearer header, over TLS with `tls` for `wss://`) and
/// the hub's `welcome`, all within `timeout`.
pub(crate) async fn connect_once(
    url: &Url,
    token: Option<&str>,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Result<(WsStream, Welcome), ConnectFailure> {
    match tokio::time::timeout(timeout, handshake(url, token, tls)).await {
        Ok(result) => result,
        Err(_) => Err(ConnectFailure::new(
            ConnectErrorKind::TimedOut,
            format!("{url}: no welcome within {timeout:?}"),
        )),
    }
}

async fn handshake(
    url: &Url,
    token: Option<&str>,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<(WsStream, Welcome), ConnectFailure> {
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectFailure::new(ConnectErrorKind::InvalidUrl, format!("{url}: {e}")))?;
    let headers = request.headers_mut();
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            ConnectFailure::new(
                ConnectErrorKind::Unauthorized,
                "token is not a valid header value".into(),
            )
        })?;
        headers.insert(header::AUTHORIZATION, value);
    }
    let connector = tls.map(|config| Connector::Rustls(config.clone()));
    let (mut ws, _response) =
        tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector)
            .await
            .map_err(|e| handshake_failure(url, e))?;
    // The first frame of every connection is `welcome`; the hub may ping first.
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Text(text))) => {
                return match serde_json::from_str::<ServerFrame>(&text) {
                    Ok(ServerFrame::Welcome(w)) if w.protocol == PROTOCOL_VERSION => Ok((ws, w)),
                    Ok(ServerFrame::Welcome(w)) => Err(ConnectFailure::new(
                        ConnectErrorKind::Protocol,
                        format!(
                            "{url}: hub speaks protocol {}, this client {PROTOCOL_VERSION}",
                            w.protocol
                        ),
                    )),
                    _ => Err(ConnectFailure::new(
                        ConnectErrorKind::Protocol,
                        format!("{url}: first frame is not a welcome: {}", truncate(&text)),
                    )),
                };
            }
            Some(Ok(WsMessage::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return Err(ConnectFailure::new(
                    ConnectErrorKind::Io,
                    format!("{url}: closed before welcome ({code} {reason})"),
                ));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                return Err(ConnectFailure::new(
                    ConnectErrorKind::Io,
                    format!("{url}: {e}"),
                ));
            }
            None => {
                return Err(ConnectFailure::new(
                    ConnectErrorKind::Io,
                    format!("{url}: connection ended before welcome"),
                ));
            }
        }
    }
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(120) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Maps a failed websocket handshake, reading a refusal's status, JSON body
/// (`{"error":{"code","message"}}`) and `Retry-After`.
fn handshake_failure(url: &Url, err: tungstenite::Error) -> ConnectFailure {
    match err {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let message = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<tribune_protocol::frame::HttpError>(b).ok())
                .map(|e| format!("{}: {}", e.error.code, e.error.message))
                .unwrap_or_else(|| response.status().to_string());
            let kind = match status {
                401 => ConnectErrorKind::Unauthorized,
                403 => ConnectErrorKind::Forbidden,
                429 | 503 => ConnectErrorKind::Unavailable,
                _ => ConnectErrorKind::Protocol,
            };
            ConnectFailure {
                error: ConnectError::new(kind, format!("{url}: {message}")),
                status: Some(status),
                retry_after,
            }
        }
        tungstenite::Error::Url(e) => {
            ConnectFailure::new(ConnectErrorKind::InvalidUrl, format!("{url}: {e}"))
        }
        tungstenite::Error::Io(e) if tls::tls_failure(&e).is_some() => {
            let detail = tls::tls_failure(&e).map(tls::explain).unwrap_or_default();
            ConnectFailure {
                error: ConnectError::with_source(
                    ConnectErrorKind::Tls,
                    format!("{url}: {detail}"),
                    e,
                ),
                status: None,
                retry_after: None,
            }
        }
        tungstenite::Error::Tls(tungstenite::error::TlsError::InvalidDnsName) => {
            ConnectFailure::new(
                ConnectErrorKind::InvalidUrl,
                format!("{url}: the host is not a valid TLS server name"),
            )
        }
        tungstenite::Error::Tls(e) => {
            ConnectFailure::new(ConnectErrorKind::Tls, format!("{url}: {e}"))
        }
        tungstenite::Error::Io(e) => ConnectFailure {
            error: ConnectError::with_source(ConnectErrorKind::Io, url.to_string(), e),
            status: None,
            retry_after: None,
        },
        other => ConnectFailure::new(ConnectErrorKind::Protocol, format!("{url}: {other}")),
    }
}

/// When to try again, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Do not reconnect.
    Stop,
    /// Reconnect after this delay.
    After(Duration),
}

/// The reconnection policy of one client, and the URL rotation.
#[derive(Debug)]
pub(crate) struct Reconnector {
    /// Hub URLs, tried in turn: a dead node is left for the next one.
    urls: Vec<Url>,
    /// Index of the URL of the next attempt.
    next_url: usize,
    /// Delays between failed attempts.
    backoff: Backoff,
    /// The last connection was closed for flooding: the next one that
    /// succeeds must not reset the backoff.
    flooded: bool,
}

impl Reconnector {
    pub(crate) fn new(urls: Vec<Url>, backoff: Backoff) -> Self {
        Self {
            urls,
            next_url: 0,
            backoff,
            flooded: false,
        }
    }

    /// The URL of the next attempt; attempts go round the list.
    pub(crate) fn next_url(&mut self) -> Url {
        let url = self.urls[self.next_url % self.urls.len()].clone();
        self.next_url = (self.next_url + 1) % self.urls.len();
        url
    }

    /// Attempt number of the next attempt, from 1.
    pub(crate) fn attempt(&self) -> u32 {
        self.backoff.attempt() + 1
    }

    /// A hub welcomed the client.
    pub(crate) fn on_connected(&mut self) {
        if !self.flooded {
            self.backoff.reset();
        }
        self.flooded = false;
    }

    /// The app says the network is back (or changed): the failures so far
    /// say nothing about the new one, so the backoff starts again (unless
    /// the last close was for flooding).
    pub(crate) fn network_back(&mut self) {
        if !self.flooded {
            self.backoff.reset();
        }
    }

    /// After an established connection ended. `drain_at` is the instant
    /// drawn when the hub announced a drain on it.
    pub(crate) fn after_disconnect(
        &mut self,
        reason: &DisconnectReason,
        drain_at: Option<Instant>,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Plan {
        match reason {
            DisconnectReason::ClientClosed => return Plan::Stop,
            DisconnectReason::Drained => return Plan::After(Duration::ZERO),
            // A dead socket found by a check the app asked for: the network
            // is back, so back at once, as after a fresh start.
            DisconnectReason::Unresponsive => {
                self.network_back();
                return Plan::After(Duration::ZERO);
            }
            DisconnectReason::Closed { code, .. } => {
                let code = CloseCode(*code);
                if code == CloseCode::FLOOD {
                    self.flooded = true;
                }
                match code.reconnect() {
                    Reconnect::Never => return Plan::Stop,
                    Reconnect::Immediately => return Plan::After(Duration::ZERO),
                    Reconnect::WithBackoff => {}
                }
            }
            _ => {}
        }
        if let Some(at) = drain_at {
            // The hub asked for a spread-out reconnection; the instant was
            // drawn when `drain` arrived.
            return Plan::After(at.saturating_duration_since(now));
        }
        Plan::After(self.backoff.next_delay(rng))
    }

    /// After a failed attempt.
    pub(crate) fn after_failure(&mut self, failure: &ConnectFailure, rng: &mut impl Rng) -> Plan {
        match failure.error.kind() {
            // The same token or origin will be refused again.
            ConnectErrorKind::Unauthorized
            | ConnectErrorKind::Forbidden
            | ConnectErrorKind::InvalidUrl => Plan::Stop,
            _ => {
                let delay = self.backoff.next_delay(rng);
                match failure.retry_after {
                    Some(bound) => Plan::After(delay.max(jitter_below(bound, rng))),
                    None => Plan::After(delay),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn reconnector(min_ms: u64, max_ms: u64) -> Reconnector {
        Reconnector::new(
            vec![
                ws_url("ws://127.0.0.1:1").unwrap(),
                ws_url("ws://127.0.0.1:2").unwrap(),
            ],
            Backoff::new(Duration::from_millis(min_ms), Duration::from_millis(max_ms)),
        )
    }

    fn closed(code: u16) -> DisconnectReason {
        DisconnectReason::Closed {
            code,
            reason: String::new(),
        }
    }

    #[test]
    fn urls_are_normalised() {
        assert_eq!(
            ws_url("http://127.0.0.1:8080").unwrap().as_str(),
            "ws://127.0.0.1:8080/v1/ws"
        );
        assert_eq!(
            ws_url("https://hub.example/").unwrap().as_str(),
            "wss://hub.example/v1/ws"
        );
        assert_eq!(
            ws_url("ws://127.0.0.1:9/custom").unwrap().as_str(),
            "ws://127.0.0.1:9/custom"
        );
        let err = ws_url("nats://127.0.0.1:4222").unwrap_err();
        assert_eq!(err.kind(), ConnectErrorKind::InvalidUrl);
        assert_eq!(
            ws_url("not a url").unwrap_err().kind(),
            ConnectErrorKind::InvalidUrl
        );
    }

    #[test]
    fn urls_rotate() {
        let mut r = reconnector(10, 100);
        let ports: Vec<_> = (0..3).map(|_| r.next_url().port().unwrap()).collect();
        assert_eq!(ports, [1, 2, 1]);
    }

    #[test]
    fn close_codes_decide() {
        let mut rng = StdRng::seed_from_u64(1);
        let now = Instant::now();
        let mut r = reconnector(10_000, 10_000);
        assert_eq!(
            r.after_disconnect(&closed(1000), None, now, &mut rng),
            Plan::Stop
        );
        assert_eq!(
            r.after_disconnect(&closed(1008), None, now, &mut rng),
            Plan::Stop
        );
        assert_eq!(
            r.after_disconnect(&closed(4008), None, now, &mut rng),
            Plan::After(Duration::ZERO)
        );
        assert_eq!(
            r.after_disconnect(&DisconnectReason::ClientClosed, None, now, &mut rng),
            Plan::Stop
        );
        for reason in [
            closed(1001),
            closed(1011),
            closed(4029),
            DisconnectReason::HeartbeatTimeout,
        ] {
            match r.after_disconnect(&reason, None, now, &mut rng) {
                Plan::After(d) => assert!(d <= Duration::from_secs(10), "{reason:?} {d:?}"),
                Plan::Stop => panic!("{reason:?} must be retried"),
            }
        }
    }

    #[test]
    fn drain_instant_wins_over_backoff() {
        let mut rng = StdRng::seed_from_u64(2);
        let now = Instant::now();
        let mut r = reconnector(60_000, 60_000);
        let at = now + Duration::from_millis(250);
        assert_eq!(
            r.after_disconnect(&closed(1001), Some(at), now, &mut rng),
            Plan::After(Duration::from_millis(250))
        );
        // A drain instant already passed: at once.
        assert_eq!(
            r.after_disconnect(
                &closed(1001),
                Some(now),
                now + Duration::from_secs(1),
                &mut rng
            ),
            Plan::After(Duration::ZERO)
        );
        // 1000 stays final even on a draining node.
        assert_eq!(
            r.after_disconnect(&closed(1000), Some(at), now, &mut rng),
            Plan::Stop
        );
        assert_eq!(
            r.after_disconnect(&DisconnectReason::Drained, None, now, &mut rng),
            Plan::After(Duration::ZERO)
        );
    }

    #[test]
    fn backoff_resets_on_connect_except_after_flood() {
        let mut rng = StdRng::seed_from_u64(3);
        let now = Instant::now();
        let mut r = reconnector(100, 100_000);
        for _ in 0..3 {
            r.after_disconnect(&DisconnectReason::Io("x".into()), None, now, &mut rng);
        }
        assert_eq!(r.attempt(), 4);
        r.on_connected();
        assert_eq!(r.attempt(), 1);
        r.after_disconnect(&closed(4029), None, now, &mut rng);
        r.on_connected();
        r.after_disconnect(&closed(4029), None, now, &mut rng);
        r.on_connected();
        assert_eq!(r.attempt(), 3, "floods keep the backoff growing");
        r.after_disconnect(&closed(1011), None, now, &mut rng);
        r.on_connected();
        assert_eq!(r.attempt(), 1);
    }

    #[test]
    fn refusals() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut r = reconnector(1, 1);
        let refused = |kind, retry_after| ConnectFailure {
            error: ConnectError::new(kind, "x"),
            status: Some(0),
            retry_after,
        };
        assert_eq!(
            r.after_failure(&refused(ConnectErrorKind::Unauthorized, None), &mut rng),
            Plan::Stop
        );
        assert_eq!(
            r.after_failure(&refused(ConnectErrorKind::Forbidden, None), &mut rng),
            Plan::Stop
        );
        // 503 with Retry-After: 2 s spreads the retries over those 2 s, well
        // beyond the 1 ms backoff.
        let delays: Vec<_> = (0..50)
            .map(|_| {
                match r.after_failure(
                    &refused(ConnectErrorKind::Unavailable, Some(Duration::from_secs(2))),
                    &mut rng,
                ) {
                    Plan::After(d) => d,
                    Plan::Stop => panic!("503 must be retried"),
                }
            })
            .collect();
        assert!(delays.iter().all(|d| *d < Duration::from_secs(2)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(500)));
        match r.after_failure(&refused(ConnectErrorKind::Io, None), &mut rng) {
            Plan::After(d) => assert!(d <= Duration::from_millis(1)),
            Plan::Stop => panic!("I/O failures must be retried"),
        }
    }
}
