//! The edge: what stands between the network and the node.
//!
//! - `address`: who a client is by address: canonical IPs, trusted proxies
//!   (CIDR), every `X-Forwarded-For` header, the limit key (IPv6 /64).
//! - `proxy_protocol`: the PROXY v2 header of L4 load balancers.
//! - `tls`: optional TLS on the public listener, reloaded on change.
//! - `listener`: both listeners' accept loops: pending sockets counted
//!   against the cap, header-read timeout, refusals answered at accept.
//! - `headers`: security headers on every HTTP answer.

pub mod address;
pub mod headers;
pub mod listener;
pub mod proxy_protocol;
pub mod tls;
