//! One websocket: its reader, its writer, heartbeats and close codes.
//!
//! Both halves run in the connection's one task. The reader turns frames into
//! session actions; the writer drains the outbox in batches: every frame
//! queued since the last write goes out in one vectored write of the shared
//! frames (`ws::Writer`), so a burst costs one syscall, not one per frame,
//! and no payload is copied per connection. A connection that must close
//! (slow, flooding, draining) gets its close frame after what it is owed, or
//! is dropped if its socket does not take it within `slow_close_grace_ms`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tribune_protocol::{CloseCode, ServerFrame, Welcome, encode_server};

use crate::auth::{Expiry, Grant};
use crate::node::{Admission, Connected, Node};
use crate::outbox::{Frame, Outbox, Queued};
use crate::session::{Session, Verdict};
use crate::ws::{Incoming, OpCode, ReadError, ReadSide, Reader, WriteSide, Writer};

type Stream = Reader<ReadSide>;
type Sink = Writer<WriteSide>;

/// How long a closing connection waits for the peer's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// How the reader ended.
enum ReaderEnd {
    /// The peer closed or the socket failed: nothing more to send.
    PeerGone,
    /// The hub decided to close; the writer sends the close frame.
    Closing,
}

/// Serves one upgraded connection until it closes.
///
/// The setup runs before the returned future exists, and that future holds
/// only what the connection needs while it lives: an `async fn` would keep
/// its arguments (the upgraded socket, the grant) and setup locals in its
/// state for the connection's whole life, which is most of an idle fan's
/// memory.
pub fn serve(
    socket: hyper::upgrade::Upgraded,
    deflate: bool,
    admission: Admission,
    grant: Option<Grant>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let max_frame = admission.node().config.limits.max_frame_bytes;
    let Connected {
        node,
        conn_id,
        outbox,
        client,
        expiry,
        expires_at,
    } = admission.connect(grant.as_ref());
    let welcome = ServerFrame::Welcome(Welcome {
        protocol: tribune_protocol::PROTOCOL_VERSION,
        node: node.config.node_name.clone(),
        conn: format!("c-{conn_id:x}"),
        heartbeat_ms: node.config.heartbeat_ms,
        expires_at,
    });
    outbox.push_control(Frame::from(encode_server(&welcome)));

    let started = Instant::now();
    // Milliseconds since `started` of the last sign of life from the peer.
    let last_seen = AtomicU64::new(0);
    if deflate {
        node.metrics.deflate_connections.inc();
    }
    let (read, write, early) = crate::ws::split(socket);
    let stream = Reader::new(read, &early, max_frame, deflate);
    let sink = Writer::new(write, deflate, node.metrics.clone());
    let session = Session::new(
        node.clone(),
        outbox.clone(),
        grant,
        client,
        conn_id,
        expiry.clone(),
    );
    run(
        node, conn_id, outbox, session, sink, stream, started, last_seen, expiry,
    )
}

#[allow(clippy::too_many_arguments)]
async fn run(
    node: Arc<Node>,
    conn_id: u64,
    outbox: Arc<Outbox>,
    mut session: Session,
    sink: Sink,
    mut stream: Stream,
    started: Instant,
    last_seen: AtomicU64,
    expiry: Option<Arc<Expiry>>,
) {
    {
        let reader = read_loop(
            &mut stream,
            &mut session,
            &node,
            &outbox,
            started,
            &last_seen,
        );
        let writer = write_loop(sink, &node, &outbox, started, &last_seen, expiry.as_deref());
        tokio::pin!(reader, writer);
        tokio::select! {
            end = &mut reader => {
                if let ReaderEnd::Closing = end {
                    // Give the writer the time to deliver the close frame.
                    let grace = Duration::from_millis(node.config.slow_close_grace_ms);
                    // Boxed, as the linger below: a timer lives in the
                    // task only while the connection closes.
                    let _ = Box::pin(tokio::time::timeout(grace, &mut writer)).await;
                }
            }
            () = &mut writer => {}
        }
    }
    if let Some(code) = outbox.close_code().filter(|_| !outbox.closed_by_peer()) {
        node.metrics.closed(code.0);
        // The closing handshake: read (and discard) until the peer's close
        // frame or EOF, briefly. Dropping a socket with unread input makes
        // the kernel send RST, which can destroy the close frame in flight.
        let _ = Box::pin(tokio::time::timeout(CLOSE_LINGER, async {
            while let Ok(msg) = stream.next().await {
                if let Incoming::Close(_) = msg {
                    break;
                }
            }
        }))
        .await;
    }
    drop(session);
    node.detach(conn_id);
}

async fn read_loop(
    stream: &mut Stream,
    session: &mut Session,
    node: &Node,
    outbox: &Outbox,
    started: Instant,
    last_seen: &AtomicU64,
) -> ReaderEnd {
    let frames = crate::limits::frame_rate(&node.config.limits);
    let expiry = session.expiry();
    loop {
        let msg = tokio::select! {
            msg = stream.next() => msg,
            // Stop reading once the connection closes for another reason.
            () = outbox.closed() => return ReaderEnd::Closing,
            // An operator ended topics of this connection's user.
            () = async { expiry.as_ref().expect("guarded").topics_ended().await }, if expiry.is_some() => {
                session.end_operator_topics();
                continue;
            }
        };
        if msg != Err(ReadError::Gone) {
            last_seen.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        let verdict = match msg {
            Ok(Incoming::Text(text)) => {
                node.metrics.client_frames.inc();
                if frames.check().is_err() {
                    Verdict::Close(CloseCode::FLOOD)
                } else {
                    // Boxed: the request's future (a subscribe may wait for
                    // history) is large and only lives while a frame is
                    // handled; inline, every idle connection would carry it.
                    Box::pin(session.handle(text.as_str())).await
                }
            }
            // Control frames count too: each costs a read and (a ping) a
            // pong, and a flood of them is as much a flood as text frames.
            Ok(Incoming::Ping(payload)) => {
                if frames.check().is_err() {
                    Verdict::Close(CloseCode::FLOOD)
                } else {
                    outbox.push_control(Frame::control(OpCode::Pong, payload));
                    Verdict::Continue
                }
            }
            Ok(Incoming::Pong) => {
                if frames.check().is_err() {
                    Verdict::Close(CloseCode::FLOOD)
                } else {
                    Verdict::Continue
                }
            }
            Ok(Incoming::Close(_)) => {
                // The writer answers it; browsers report 1006 otherwise.
                outbox.close_by_peer();
                return ReaderEnd::Closing;
            }
            Err(ReadError::Refused(code)) => Verdict::Close(code),
            Err(ReadError::Gone) => return ReaderEnd::PeerGone,
        };
        if let Verdict::Close(code) = verdict {
            if code == CloseCode::FLOOD {
                session.flooded();
            }
            outbox.close(code, true);
            return ReaderEnd::Closing;
        }
    }
}

async fn write_loop(
    mut sink: Sink,
    node: &Node,
    outbox: &Outbox,
    started: Instant,
    last_seen: &AtomicU64,
    expiry: Option<&Expiry>,
) {
    let heartbeat = Duration::from_millis(node.config.heartbeat_ms);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Allocated only on nodes that verify tokens; follows refreshes.
    let grace = Duration::from_millis(node.config.auth.expiry_grace_ms);
    let mut expired = expiry.map(|e| Box::pin(e.passed(grace)));
    let mut batch: VecDeque<Queued> = VecDeque::new();
    loop {
        let close = outbox.take(&mut batch);
        if !batch.is_empty() {
            // Boxed: one allocation per flush (not per frame) keeps the
            // sink's write futures out of every idle connection's task.
            let mut write = Box::pin(write_batch(&mut sink, &mut batch));
            let ok = tokio::select! {
                ok = &mut write => ok,
                () = outbox.closed(), if close.is_none() => {
                    // Closing while a write is stuck on a slow socket: finish it
                    // within the grace period or give up on the peer.
                    let grace = Duration::from_millis(node.config.slow_close_grace_ms);
                    tokio::time::timeout(grace, &mut write).await.unwrap_or(false)
                }
            };
            if !ok {
                return;
            }
            continue;
        }
        if let Some(code) = close {
            // The peer's close is answered with 1000 (RFC 6455 section
            // 5.5.1: the answer completes the closing handshake).
            let frame = if outbox.closed_by_peer() {
                Frame::close(CloseCode::NORMAL.0, "")
            } else {
                Frame::close(code.0, code.reason())
            };
            // Boxed, as every write: a write's future holds its slices (a
            // kilobyte), which an idle connection's task must not carry.
            if Box::pin(sink.write([&frame])).await.is_ok() {
                Box::pin(sink.shutdown()).await;
            }
            return;
        }
        // An idle connection keeps no queue storage; a busy one allocates
        // once per batch.
        batch = VecDeque::new();
        tokio::select! {
            () = outbox.ready() => {}
            _ = ping.tick() => {
                let idle = started.elapsed().as_millis() as u64 - last_seen.load(Ordering::Relaxed);
                if idle > 2 * heartbeat.as_millis() as u64 {
                    // No pong, no frame for two intervals: the peer is gone.
                    outbox.close(CloseCode::GOING_AWAY, true);
                    continue;
                }
                let ping = Frame::control(OpCode::Ping, bytes::Bytes::new());
                if Box::pin(sink.write([&ping])).await.is_err() {
                    return;
                }
            }
            () = async { expired.as_mut().expect("guarded").await }, if expired.is_some() => {
                expired = None;
                node.metrics.tokens.expired.inc();
                outbox.close(CloseCode::POLICY, false);
            }
        }
    }
}

/// Writes every frame of the batch (one vectored write where the kernel
/// takes it) and flushes; false if the socket failed.
async fn write_batch(sink: &mut Sink, batch: &mut VecDeque<Queued>) -> bool {
    let ok = sink.write(batch.iter().map(Queued::frame)).await.is_ok();
    batch.clear();
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every idle connection's task carries: its future. The sizes
    /// that matter (a write's slices, a request's future) are boxed and
    /// live only while used, and this keeps them out: with the close
    /// frame's write inline, heaptrack showed a task of 2.8 KB per
    /// connection; boxed, the future was about 2.3 KB; with the closing
    /// timers boxed and the session's rarely used parts (a reaction
    /// limiter, an anonymous fan's grant) behind pointers, 1,760 bytes.
    #[tokio::test]
    async fn the_connection_future_stays_small() {
        fn size<F: std::future::Future>(_: &F) -> usize {
            std::mem::size_of::<F>()
        }
        let (a, _b) = tokio::io::duplex(64);
        let (r, w) = tokio::io::split(a);
        let stream: Stream = Reader::new(Box::new(r), &[], 4096, false);
        let bus = Arc::new(crate::bus::memory::MemoryBus::new(
            std::collections::HashMap::new(),
            Duration::from_secs(60),
        ));
        let node = Node::new(
            Arc::new(crate::config::Config::default()),
            bus.clone(),
            bus,
            None,
            Arc::new(crate::metrics::Metrics::new()),
        );
        let metrics = node.metrics.clone();
        let sink: Sink = Writer::new(Box::new(w), false, metrics);
        let outbox = Arc::new(Outbox::new(1 << 20, 1024));
        let session = Session::new(node.clone(), outbox.clone(), None, None, 1, None);
        let conn = run(
            node,
            1,
            outbox,
            session,
            sink,
            stream,
            Instant::now(),
            AtomicU64::new(0),
            None,
        );
        let conn = size(&conn);
        assert!(conn <= 1856, "a connection future: {conn} bytes");
    }
}
