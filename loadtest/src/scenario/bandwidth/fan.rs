//! The fans: connecting them (a bounded number at once, each saying when it
//! is subscribed), and one fan's read loop per protocol: a hub fan rebuilds
//! every board (deltas applied to the payload it holds), a NATS fan parses
//! core NATS operations; both count bytes per topic and hash every payload.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, mpsc, watch};
use tribune_protocol::{delta, message_view};

use crate::natsws::{NatsOp, NatsParser, connect_ops, sub_ops};
use crate::ws::{Incoming, WsConn, WsUrl, encode_client_frame};

use super::plan::{
    BOARD, CLIPS, CONNECTING, DRAIN, Fan, Final, NATS_BOARD, NATS_CLIPS, Variant, hash,
};

/// Connects `n` fans with `fan` (at most [`CONNECTING`] at once) and waits
/// until each says it is subscribed.
pub(super) async fn connect_fans<F, Fut>(
    n: u64,
    fan: F,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<Fan>>>
where
    F: Fn(u64, mpsc::Sender<()>) -> Fut,
    Fut: std::future::Future<Output = Fan> + Send + 'static,
{
    let (ready_tx, mut ready_rx) = mpsc::channel(n.max(1) as usize);
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let mut tasks = Vec::new();
    for i in 0..n {
        let permit = gate.clone().acquire_owned().await?;
        let (tx, mut rx) = mpsc::channel(1);
        let ready = ready_tx.clone();
        let f = fan(i, tx);
        tasks.push(tokio::spawn(f));
        tokio::spawn(async move {
            // `None`: the fan failed before it was subscribed (it says why).
            let subscribed = rx.recv().await.is_some();
            drop(permit);
            let _ = ready.send(subscribed).await;
        });
    }
    drop(ready_tx);
    let (mut answered, mut subscribed) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered < n {
        match tokio::time::timeout_at(deadline.into(), ready_rx.recv()).await {
            Ok(Some(ok)) => {
                answered += 1;
                subscribed += ok as u64;
            }
            _ => bail!("only {answered} of {n} fans answered within 120 s"),
        }
    }
    if subscribed < n {
        eprintln!(
            "bandwidth: {} of {n} fans could not subscribe",
            n - subscribed
        );
    }
    Ok(tasks)
}

/// One fan of `v`: a hub fan subscribes to both topics, rebuilds every board
/// (deltas applied to the payload it holds) and hashes every payload; a NATS
/// fan sends `CONNECT`, `SUB`s both subjects and hashes every payload. What
/// went wrong, if anything, is in [`Fan::error`].
pub(super) async fn fan(
    url: WsUrl,
    v: Variant,
    ready: mpsc::Sender<()>,
    mut fin: watch::Receiver<Option<Final>>,
) -> Fan {
    let mut fan = Fan::default();
    let read = if v.nats() {
        nats_fan(&url, v, ready, &mut fin, &mut fan).await
    } else {
        tribune_fan(&url, v, ready, &mut fin, &mut fan).await
    };
    if let Err(e) = read {
        fan.error = Some(format!("{e:#}"));
    }
    fan
}

/// Reads more bytes into `conn`: `None` once the last publication is known
/// and `done` says the fan has it all; an error if it has not within
/// [`DRAIN`] of the last publication, or if the server closed.
async fn read_more(
    conn: &mut WsConn,
    fin: &mut watch::Receiver<Option<Final>>,
    done_at: &mut Option<Instant>,
    done: impl Fn(Final) -> bool,
) -> anyhow::Result<Option<usize>> {
    loop {
        if let Some(f) = *fin.borrow() {
            if done(f) {
                return Ok(None);
            }
            let at = *done_at.get_or_insert_with(|| Instant::now() + DRAIN);
            if Instant::now() > at {
                bail!("not everything within {DRAIN:?} of the last publication");
            }
        }
        let n = tokio::select! {
            n = conn.fill() => n?,
            _ = fin.changed() => continue,
            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
        };
        if n == 0 {
            bail!("the server closed the connection");
        }
        return Ok(Some(n));
    }
}
/// The next message read off `conn`, with the bytes it took on the wire
/// (frame headers included, every fragment); pongs owed go to `out`.
fn next_message<'a>(
    conn: &'a mut WsConn,
    out: &mut Vec<u8>,
) -> anyhow::Result<Option<(Incoming<'a>, u64)>> {
    let mut wire = 0usize;
    let msg = conn
        .reader
        .next_sized(out, &mut wire)
        .map_err(|e| anyhow::anyhow!(e.0))?;
    Ok(msg.map(|m| (m, wire as u64)))
}

async fn tribune_fan(
    url: &WsUrl,
    v: Variant,
    ready: mpsc::Sender<()>,
    fin: &mut watch::Receiver<Option<Final>>,
    fan: &mut Fan,
) -> anyhow::Result<()> {
    let mut conn = WsConn::connect_offering(
        url,
        None,
        Some(tribune_protocol::SUBPROTOCOL),
        4096,
        Duration::from_secs(30),
        v.deflate(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    fan.deflate = conn.deflate;
    let delta = if v.delta() {
        r#","delta":"fossil""#
    } else {
        ""
    };
    let mut out = Vec::new();
    let board = format!(r#"{{"type":"subscribe","id":1,"topic":"{BOARD}","history":0{delta}}}"#);
    let clips = format!(r#"{{"type":"subscribe","id":2,"topic":"{CLIPS}"}}"#);
    encode_client_frame(&mut out, 0x1, board.as_bytes());
    encode_client_frame(&mut out, 0x1, clips.as_bytes());
    conn.stream.write_all(&out).await?;
    out.clear();
    let mut acks = 0;
    let mut base: Option<(u64, Vec<u8>)> = None;
    let mut last_board = 0;
    let mut done_at: Option<Instant> = None;
    loop {
        let have = fan.clips.len() as u64;
        let done = |f: Final| last_board == f.board && have == f.clips;
        let Some(n) = read_more(&mut conn, fin, &mut done_at, done).await? else {
            return Ok(());
        };
        fan.bytes += n as u64;
        while let Some((msg, wire)) = next_message(&mut conn, &mut out)? {
            let text = match msg {
                Incoming::Text(t) => t,
                Incoming::Binary(_) => bail!("a binary frame"),
                Incoming::Close(code) => bail!("closed by the server ({code:?})"),
            };
            if text.starts_with(br#"{"type":"ack""#) {
                acks += 1;
                if acks == 2 {
                    let _ = ready.send(()).await;
                }
                continue;
            }
            let Some(m) = message_view(text) else {
                continue;
            };
            if m.topic == BOARD.as_bytes() {
                let payload = if m.delta {
                    let Some((seq, held)) = base.as_ref().filter(|(s, _)| *s == m.prev) else {
                        bail!(
                            "a delta on {} needs {}, this fan holds {:?}",
                            m.seq,
                            m.prev,
                            base.as_ref().map(|b| b.0)
                        );
                    };
                    let d: String = serde_json::from_slice(m.data)?;
                    let _ = seq;
                    delta::apply(held, d.as_bytes())
                        .map_err(|e| anyhow::anyhow!("delta on {}: {e}", m.seq))?
                } else {
                    m.data.to_vec()
                };
                fan.board_bytes += wire;
                fan.boards.push((m.seq, hash(&payload)));
                last_board = m.seq;
                base = Some((m.seq, payload));
            } else if m.topic == CLIPS.as_bytes() {
                fan.clip_bytes += wire;
                fan.clips.push((m.seq, hash(m.data)));
            }
        }
        if !out.is_empty() {
            conn.stream.write_all(&out).await?;
            out.clear();
        }
    }
}

async fn nats_fan(
    url: &WsUrl,
    v: Variant,
    ready: mpsc::Sender<()>,
    fin: &mut watch::Receiver<Option<Final>>,
    fan: &mut Fan,
) -> anyhow::Result<()> {
    let mut conn =
        WsConn::connect_offering(url, None, None, 4096, Duration::from_secs(30), v.deflate())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    fan.deflate = conn.deflate;
    let mut ops = connect_ops().to_vec();
    sub_ops(&mut ops, NATS_BOARD, 1);
    sub_ops(&mut ops, NATS_CLIPS, 2);
    let mut out = Vec::new();
    encode_client_frame(&mut out, 0x2, &ops);
    conn.stream.write_all(&out).await?;
    out.clear();
    let mut parser = NatsParser::default();
    let mut pongs = 0;
    let mut done_at: Option<Instant> = None;
    loop {
        let have = (fan.boards.len() as u64, fan.clips.len() as u64);
        let done = |f: Final| have == (f.board, f.clips);
        let Some(n) = read_more(&mut conn, fin, &mut done_at, done).await? else {
            return Ok(());
        };
        fan.bytes += n as u64;
        let mut answer = Vec::new();
        while let Some((msg, wire)) = next_message(&mut conn, &mut out)? {
            let bytes = match msg {
                Incoming::Text(t) | Incoming::Binary(t) => t,
                Incoming::Close(code) => bail!("closed by the server ({code:?})"),
            };
            parser.push(bytes);
            // A frame's bytes go to the subject of the messages it carries
            // (the server packs several operations into one frame).
            let mut board_msgs = 0u64;
            let mut clip_msgs = 0u64;
            while let Some(op) = parser.next_op().map_err(|e| anyhow::anyhow!(e.0))? {
                match op {
                    NatsOp::Pong => {
                        pongs += 1;
                        if pongs == 3 {
                            let _ = ready.send(()).await;
                        }
                    }
                    NatsOp::Ping => answer.extend_from_slice(b"PONG\r\n"),
                    NatsOp::Msg { sid, payload, .. } => {
                        if sid == 1 {
                            fan.boards.push((fan.boards.len() as u64, hash(payload)));
                            board_msgs += 1;
                        } else {
                            fan.clips.push((fan.clips.len() as u64, hash(payload)));
                            clip_msgs += 1;
                        }
                    }
                    NatsOp::Err(e) => bail!("-ERR {}", String::from_utf8_lossy(e)),
                    NatsOp::Info | NatsOp::Ok => {}
                }
            }
            if let Some(board) = (wire * board_msgs).checked_div(board_msgs + clip_msgs) {
                fan.board_bytes += board;
                fan.clip_bytes += wire - board;
            }
        }
        if !answer.is_empty() {
            encode_client_frame(&mut out, 0x2, &answer);
        }
        if !out.is_empty() {
            conn.stream.write_all(&out).await?;
            out.clear();
        }
    }
}
