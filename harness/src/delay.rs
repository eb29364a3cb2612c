//! A TCP proxy on loopback that delays every byte by a fixed time in each
//! direction, as a long link between two regions does: the loadtest's
//! `regions` run puts it on the leaf node connection between its two
//! nats-servers. Order is kept and bandwidth is not limited: each chunk
//! read is written `delay` after it was read.
//!
//! Why not `tc netem`: it needs the kernel's netem qdisc, which the build
//! machines lack ("Specified qdisc kind is unknown" even in a network
//! namespace of one's own), and rights a developer's machine may not give.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Chunks in flight per direction before reading pauses: bounds memory.
const IN_FLIGHT: usize = 4096;

/// A listening delay proxy; stops accepting when dropped (connections it
/// carries end with their sockets).
#[derive(Debug)]
pub struct DelayProxy {
    port: u16,
    accept: JoinHandle<()>,
}

impl DelayProxy {
    /// Listens on a free loopback port; every connection is forwarded to
    /// `target` with `one_way` added in each direction.
    pub async fn start(target: SocketAddr, one_way: Duration) -> anyhow::Result<DelayProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("a loopback port for the delay proxy")?;
        let port = listener.local_addr()?.port();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::join!(
                        pipe(in_read, out_write, one_way),
                        pipe(out_read, in_write, one_way)
                    );
                });
            }
        });
        Ok(DelayProxy { port, accept })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read; ends when
/// either side closes.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_arrive_in_order_and_late() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                s.write_all(&buf[..n]).await.unwrap();
            }
        });
        let delay = Duration::from_millis(50);
        let proxy = DelayProxy::start(target, delay).await.unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap();
        let sent = Instant::now();
        c.write_all(b"one two three").await.unwrap();
        let mut got = vec![0u8; 13];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one two three");
        assert!(
            sent.elapsed() >= delay * 2,
            "a round trip takes both delays"
        );
    }
}
