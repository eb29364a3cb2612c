//! The two listeners' accept loops and the HTTP/1 connections behind them.
//!
//! Public listener, for each accepted socket, in order:
//! 1. with `proxy_protocol`, a peer that is not a trusted proxy is closed;
//! 2. the node counts it as pending ([`Node::accept`]): past the connection
//!    cap (pending sockets count against it), the pending cap or the peer's
//!    share of it, the socket gets a 503 or 429 written straight away and is
//!    closed, so a full node answers instead of running out of files;
//! 3. the PROXY v2 header, then the TLS handshake, each within
//!    `header_read_timeout_ms`;
//! 4. HTTP/1 with the same timeout on reading a request's headers, also
//!    between two requests of a kept-alive socket: a slowloris client, or
//!    one that connects and says nothing, is cut when it runs out;
//! 5. the pending place is given back when the socket closes or becomes a
//!    websocket (whose admission holds its place from then on).
//!
//! The internal listener serves operators: the same HTTP/1 timeouts, no
//! PROXY header, no TLS, and a small cap on concurrent sockets.
//!
//! `accept` failures (EMFILE) are counted, logged at a bounded rate and
//! followed by a short pause instead of a busy loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tower::ServiceExt;

use crate::audit::Who;
use crate::edge::address::{canonical, limit_key};
use crate::edge::headers::{self, OverTls};
use crate::edge::proxy_protocol;
use crate::edge::tls::Tls;
use crate::log_limit::LogLimit;
use crate::node::{Node, Pending};

/// Connections waiting in the kernel before `accept`: a stadium's fans
/// reconnecting after a goal arrive in the same second. Linux caps it at
/// `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: u32 = 4096;

/// Largest buffer HTTP/1 keeps per socket: a request line and headers,
/// including a token of up to 8 KiB, fit many times over.
const MAX_HTTP_BUFFER: usize = 64 * 1024;

/// Sockets being refused at once (answer written, closing): past it a
/// refused socket is closed without an answer, so that refusals themselves
/// cannot exhaust the reserve of files the connection cap leaves.
const MAX_REFUSING: usize = 128;

/// How long a refused socket may take its answer before it is closed.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// How long a refused socket that has sent nothing is kept: a client's
/// request follows its connect within a round trip.
const SILENT_GRACE: Duration = Duration::from_millis(200);

/// Concurrent sockets on the internal listener.
const MAX_INTERNAL: usize = 256;

/// Pause after a failed `accept` (EMFILE): the condition lasts until
/// sockets close, and retrying at once would spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

static ACCEPT_ERRORS_LOG: LogLimit = LogLimit::new(Duration::from_secs(5));

/// Binds a listener with a deep backlog.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves the public routes until `stop` resolves; then stops accepting
/// (sockets already accepted go on).
pub async fn serve_public(
    node: Arc<Node>,
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<Tls>>,
    stop: impl Future<Output = ()>,
) {
    let refusing = Arc::new(AtomicUsize::new(0));
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(&node, &e).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let peer_ip = canonical(peer.ip());
        let trusted = node.trusted_proxies.contains(peer_ip);
        if node.config.proxy_protocol && !trusted {
            node.audit.refused(
                "proxy_untrusted",
                Who::client(peer_ip),
                "PROXY protocol expected from trusted proxies only",
            );
            continue;
        }
        // A trusted proxy's sockets carry many clients: they are counted
        // per client at the handshake, not per peer here.
        let per_peer = (!trusted).then(|| limit_key(peer_ip, node.config.limits.ipv6_prefix_len));
        let pending = match node.accept(per_peer) {
            Ok(p) => p,
            Err(reason) => {
                tracing::debug!(reason, peer = %peer, "socket refused at accept");
                node.metrics.refused(reason);
                node.audit
                    .refused(reason, Who::client(peer_ip), "socket refused at accept");
                refuse(tcp, reason, tls.is_some(), &refusing);
                continue;
            }
        };
        let peer = SocketAddr::new(peer_ip, peer.port());
        tokio::spawn(public_connection(
            node.clone(),
            tcp,
            peer,
            router.clone(),
            tls.clone(),
            pending,
        ));
    }
}

/// Serves the internal routes for the node's life.
pub async fn serve_internal(node: Arc<Node>, listener: TcpListener, router: Router) {
    let open = Arc::new(AtomicUsize::new(0));
    let timeout = header_timeout(&node);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                accept_failed(&node, &e).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= MAX_INTERNAL {
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let open = open.clone();
        let router = router.clone();
        let peer = SocketAddr::new(canonical(peer.ip()), peer.port());
        tokio::spawn(async move {
            let _ = serve_http(tcp, peer, router, timeout, false).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn accept_failed(node: &Node, err: &std::io::Error) {
    node.metrics.accept_errors.inc();
    if let Some(held_back) = ACCEPT_ERRORS_LOG.allow() {
        tracing::warn!(error = %err, held_back, "accept failed");
    }
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

fn header_timeout(node: &Node) -> Duration {
    Duration::from_millis(node.config.limits.header_read_timeout_ms)
}

/// One public socket, from its PROXY header to its close or upgrade. The
/// pending place is held until this returns.
async fn public_connection(
    node: Arc<Node>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    tls: Option<Arc<Tls>>,
    pending: Pending,
) {
    let timeout = header_timeout(&node);
    let client = if node.config.proxy_protocol {
        match tokio::time::timeout(timeout, proxy_protocol::read_header(&mut tcp)).await {
            Ok(Ok(Some(client))) => SocketAddr::new(canonical(client.ip()), client.port()),
            Ok(Ok(None)) => peer,
            Ok(Err(e)) => {
                node.audit
                    .refused("proxy_header", Who::client(peer.ip()), &format!("{e:#}"));
                return;
            }
            Err(_) => {
                node.audit.refused(
                    "header_timeout",
                    Who::client(peer.ip()),
                    "no PROXY header in time",
                );
                return;
            }
        }
    } else {
        peer
    };
    let served = match tls {
        Some(tls) => match tokio::time::timeout(timeout, tls.acceptor().accept(tcp)).await {
            Ok(Ok(stream)) => serve_http(stream, client, router, timeout, true).await,
            Ok(Err(e)) => {
                node.audit
                    .refused("tls_handshake", Who::client(client.ip()), &e.to_string());
                return;
            }
            Err(_) => {
                node.audit.refused(
                    "header_timeout",
                    Who::client(client.ip()),
                    "no TLS handshake in time",
                );
                return;
            }
        },
        None => serve_http(tcp, client, router, timeout, false).await,
    };
    if let Err(e) = served
        && e.is_timeout()
    {
        node.audit.refused(
            "header_timeout",
            Who::client(client.ip()),
            "request headers not received in time",
        );
    }
    drop(pending);
}

/// HTTP/1 on one socket, upgrades allowed, with the header-read timeout.
/// Returns when the socket closes or has been upgraded.
async fn serve_http<I>(
    io: I,
    client: SocketAddr,
    router: Router,
    timeout: Duration,
    over_tls: bool,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(client));
        if over_tls {
            req.extensions_mut().insert(OverTls);
        }
        router.clone().oneshot(req)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(true)
        .max_buf_size(MAX_HTTP_BUFFER);
    http.serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await
}

/// Answers a socket refused at accept, then closes it. Over TLS no answer
/// can be written without a handshake, which a node refusing sockets should
/// not pay for: the socket is closed at once.
fn refuse(tcp: TcpStream, reason: &'static str, tls: bool, refusing: &Arc<AtomicUsize>) {
    if tls {
        return;
    }
    if refusing.load(Ordering::Relaxed) >= MAX_REFUSING {
        // No file to spare for a linger: the answer goes out if the socket
        // takes it at once (a client that already sent its request reads
        // it), and the socket is closed.
        let _ = tcp.try_write(&refusal_bytes(reason));
        return;
    }
    refusing.fetch_add(1, Ordering::Relaxed);
    let refusing = refusing.clone();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_LINGER, answer_and_close(tcp, reason)).await;
        refusing.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Reads the client's request head, answers it, then closes. An answer
/// before the request would confuse HTTP clients (a response to nothing),
/// and closing with a request unread would make the kernel send RST, which
/// can destroy the answer in flight. A socket that sends nothing within
/// [`SILENT_GRACE`] asked nothing and is closed unanswered, so that silent
/// sockets do not hold the refusal slots.
async fn answer_and_close(mut tcp: TcpStream, reason: &'static str) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    let mut wait = SILENT_GRACE;
    loop {
        match tokio::time::timeout(wait, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ if head.is_empty() => return,
            _ => break,
        }
        // The end of the head, or more than any request we would read.
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() > MAX_HTTP_BUFFER {
            break;
        }
        wait = REFUSAL_LINGER;
    }
    let _ = tcp.write_all(&refusal_bytes(reason)).await;
    let _ = tcp.shutdown().await;
    while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// The whole HTTP answer to a socket refused at accept: the same JSON body
/// and `Retry-After` as a refused handshake, with the security headers.
fn refusal_bytes(reason: &str) -> Vec<u8> {
    let (status, code, message) = match reason {
        "pending_address" => (
            "429 Too Many Requests",
            "rate_limited",
            "too many handshakes in progress from this address",
        ),
        "pending" => (
            "503 Service Unavailable",
            "unavailable",
            "node is busy with handshakes",
        ),
        _ => (
            "503 Service Unavailable",
            "unavailable",
            "node is at its connection limit",
        ),
    };
    let body = format!("{{\"error\":{{\"code\":\"{code}\",\"message\":\"{message}\"}}}}");
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: {}\r\nconnection: close\r\n",
        body.len(),
        1 + u8::from(rand::random::<bool>()),
    );
    for (name, value) in headers::common() {
        out.push_str(name.as_str());
        out.push_str(": ");
        out.push_str(value.to_str().unwrap_or_default());
        out.push_str("\r\n");
    }
    out.push_str("cross-origin-resource-policy: same-origin\r\n\r\n");
    out.push_str(&body);
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_complete_http_answers() {
        let bytes = refusal_bytes("capacity");
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(head.contains("x-content-type-options: nosniff"));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "unavailable");
        let text = String::from_utf8(refusal_bytes("pending_address")).unwrap();
        assert!(text.starts_with("HTTP/1.1 429 "), "{text}");
    }
}
