//! The harness that starts and watches real processes, shared by the
//! integration tests (`tribune-tests`) and the load generator
//! (`tribune-loadtest`). It is a development tool: nothing in the hub
//! depends on it.
//!
//! Errors: every step that can fail returns `anyhow::Result`; the
//! conveniences tests call (`NatsServer::start`, `Hub::start`, `restart`)
//! panic with that error, since a setup that fails fails the test.
//!
//! Layout:
//! - [`delay`]: a TCP proxy adding a fixed latency each way (a long link).
//! - [`binaries`]: where the nats-server and hub binaries are found.
//! - [`nats`]: nats-server (JetStream, optional websocket listener) on free
//!   loopback ports with its own store; a 3-node cluster.
//! - [`hub`]: the `tribune-hub` binary on a loopback port; its config file.
//! - [`procstat`]: memory and CPU time of a process, from `/proc`.
//! - [`region`]: two single-server regions (JetStream domains) joined by a
//!   leaf node: the stream in one, a mirror in the other.

pub mod binaries;
pub mod delay;
pub mod hub;
pub mod nats;
pub mod procstat;
pub mod region;
