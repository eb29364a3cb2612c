//! SIGTERM: not ready at once, stop accepting, then a paced drain.
//!
//! Clients get `drain` with a `retry_ms` and a 1001 close, in batches spread
//! over `drain.window_ms`, so that 200,000 fans do not reconnect to the other
//! nodes in the same second. The process exits when every connection is
//! gone, at the `drain.grace_ms` deadline, or at a second signal.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tribune_protocol::{CloseCode, Drain, ServerFrame, encode_server};

use crate::node::Node;
use crate::outbox::Frame;

/// Interval between two batches of closes.
const BATCH_EVERY: Duration = Duration::from_millis(100);

/// SIGTERM and Ctrl-C, caught from the node's first instant: a signal that
/// came before the handler existed would kill the process without a drain.
pub struct Shutdown {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Installs the handlers; call before the node announces itself.
    pub fn install() -> std::io::Result<Shutdown> {
        Ok(Shutdown {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?,
        })
    }

    /// Resolves at the next SIGTERM or Ctrl-C.
    pub async fn requested(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Drains the node; returns when every connection is closed or time is up.
/// The caller has already stopped the listener.
pub async fn drain(node: &Arc<Node>, shutdown: &mut Shutdown) {
    let cfg = &node.config.drain;
    node.start_draining();
    let deadline = Instant::now() + Duration::from_millis(cfg.grace_ms);
    let frame = Frame::from(encode_server(&ServerFrame::Drain(Drain {
        retry_ms: cfg.retry_ms,
    })));
    let outboxes = node.outboxes();
    let batches = (cfg.window_ms / BATCH_EVERY.as_millis() as u64).max(1) as usize;
    let per_batch = outboxes.len().div_ceil(batches).max(1);
    tracing::info!(connections = outboxes.len(), batches, "draining");
    let paced = async {
        for chunk in outboxes.chunks(per_batch) {
            for outbox in chunk {
                outbox.push_control(frame.clone());
                outbox.close(CloseCode::DRAINING, false);
            }
            tokio::time::sleep(BATCH_EVERY).await;
        }
        while node.connection_count() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        () = paced => tracing::info!("drained"),
        () = tokio::time::sleep_until(deadline) => tracing::warn!(left = node.connection_count(), "drain grace period over"),
        () = shutdown.requested() => tracing::warn!(left = node.connection_count(), "second signal: closing now"),
    }
}
