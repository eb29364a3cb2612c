//! Integration-test helpers: real processes, real sockets, no mocks.
//!
//! Layout:
//! - [`hub`]: the real `tribune-hub` binary on a random loopback port (the
//!   shared `tribune-harness`).
//! - [`ws`]: a raw JSON websocket client for protocol-level assertions.
//! - [`editor`]: an editor publishing to JetStream with `Nats-Msg-Id`, retried until acked.
//! - [`eventually`]: polling with a deadline instead of sleeps.
//! - [`nats`]: a real nats-server on a random port with its own store, a
//!   3-node cluster (both from `tribune-harness`), a TCP proxy that cuts a link.
//! - [`sse`]: server-sent events read through the real `curl -N`.
//! - [`jwt`]: HS256 tokens and their clock.
//! - [`procstat`]: memory and CPU time of a process (from `tribune-harness`).
//! - [`region`]: two nats-servers as two regions (JetStream domains joined
//!   by a leaf node), from `tribune-harness`.

pub mod editor;
pub mod jwt;
pub mod nats;
pub mod sse;
pub mod ws;

pub use hub::Hub;
pub use tribune_harness::{hub, procstat, region};
pub use ws::WsClient;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("not within {within:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
