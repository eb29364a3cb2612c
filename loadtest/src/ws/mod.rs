//! A lean RFC 6455 client: one TCP socket, one small read buffer, frames
//! parsed in place.
//!
//! The load generator shares two cores with the hub it measures, so every
//! delivery it reads must cost as little as possible: no per-frame
//! allocation, no copy of the payload, no wakeup beyond the socket's own.
//! `tokio-tungstenite` copies every payload into its own buffer and validates
//! it again; here a text frame is handed to the caller as a slice of the read
//! buffer. Only what the harness needs is implemented: the client side of the
//! handshake (checked with tungstenite's accept-key derivation), unmasked
//! server frames with continuation, pings answered at once, masked client
//! frames, and close; permessage-deflate on request (the `bandwidth`
//! scenario): offered with no context takeover, compressed messages
//! inflated into a buffer of their own.
//!
//! Split by job: [`conn`] opens a connection (URL, upgrade, deflate
//! negotiation), [`read`] parses the server's frames out of the read buffer,
//! [`write`] encodes the client's masked frames.

mod conn;
mod read;
mod write;

pub use conn::{ConnectError, WsConn, WsUrl};
pub use read::{FrameError, FrameReader, Incoming};
pub use write::{encode_client_frame, encode_close};
