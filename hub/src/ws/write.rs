//! Writing pre-built frames to one connection: every frame of a batch goes
//! out in as few vectored writes as the kernel takes, headers and payloads
//! straight from the shared frames (no per-connection copy), in their
//! permessage-deflate form where the connection negotiated it.

use std::io::IoSlice;
use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::frame::Frame;
use crate::metrics::Metrics;

/// Slices per vectored write: on the stack (no allocation per batch), and
/// far below Linux's `IOV_MAX` (1,024). A larger batch takes more writes.
const MAX_SLICES: usize = 64;

/// One connection's write half.
pub struct Writer<W> {
    io: W,
    deflate: bool,
    metrics: Arc<Metrics>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub fn new(io: W, deflate: bool, metrics: Arc<Metrics>) -> Self {
        Self {
            io,
            deflate,
            metrics,
        }
    }

    /// Writes the frames in order and flushes.
    pub async fn write<'a>(
        &mut self,
        frames: impl IntoIterator<Item = &'a Frame>,
    ) -> std::io::Result<()> {
        let compressions = &self.metrics.compressions;
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut used = 0;
        let mut bytes = 0;
        for frame in frames {
            for slice in frame.wire(self.deflate, compressions) {
                if !slice.is_empty() {
                    bytes += slice.len();
                    slices[used] = slice;
                    used += 1;
                }
            }
            if used >= MAX_SLICES - 1 {
                write_slices(&mut self.io, &mut slices[..used]).await?;
                used = 0;
            }
        }
        write_slices(&mut self.io, &mut slices[..used]).await?;
        self.io.flush().await?;
        // What the connection put on the wire: headers included, compressed
        // where it negotiated deflate.
        self.metrics.bytes_sent.inc_by(bytes as u64);
        Ok(())
    }

    /// Shuts the write side down (after the close frame).
    pub async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

/// Writes every slice, however the kernel splits them.
async fn write_slices<W: AsyncWrite + Unpin>(
    io: &mut W,
    mut rest: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    while !rest.is_empty() {
        let n = io.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that takes at most 7 bytes per write, to split every frame.
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(7);
            self.0.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// One compression per message, whatever the number of connections
    /// (counted): 300 connections that negotiated deflate get the same
    /// bytes, and a plain one the plain frame.
    #[tokio::test]
    async fn one_compression_per_frame_whatever_the_audience() {
        let metrics = Arc::new(Metrics::new());
        let board = format!(
            r#"{{"rows":[{}]}}"#,
            r#"{"name":"Martina Sáblíková","time":"1:55.01"},"#.repeat(30)
        );
        let frames = [
            Frame::from(board.clone()),
            Frame::from(board.replace("1:55", "1:54")),
        ];
        let mut outputs = Vec::new();
        for _ in 0..300 {
            let mut w = Writer::new(Trickle(Vec::new()), true, metrics.clone());
            w.write(&frames).await.unwrap();
            outputs.push(w.io.0);
        }
        assert_eq!(metrics.compressions.get(), 2, "one per frame");
        assert!(
            outputs.windows(2).all(|w| w[0] == w[1]),
            "the same bytes for all"
        );
        assert!(outputs[0].len() < board.len() / 2);
        let mut plain = Writer::new(Trickle(Vec::new()), false, metrics.clone());
        plain.write(&frames).await.unwrap();
        assert_eq!(plain.io.0.len(), 2 * (4 + board.len()));
        assert_eq!(metrics.compressions.get(), 2);
    }

    #[tokio::test]
    async fn partial_writes_keep_every_byte_in_order() {
        let metrics = Arc::new(Metrics::new());
        let frames: Vec<Frame> = (0..3000)
            .map(|i| Frame::from(format!("{{\"n\":{i}}}")))
            .collect();
        let mut w = Writer::new(Trickle(Vec::new()), false, metrics);
        w.write(&frames).await.unwrap();
        let mut want = Vec::new();
        for f in &frames {
            want.extend_from_slice(&[0x81, f.len() as u8]);
            want.extend_from_slice(f.as_bytes());
        }
        assert_eq!(w.io.0, want);
    }
}
