//! PROXY protocol v2 (HAProxy's), for L4 load balancers that keep the fan's
//! address in a binary header before the first byte of HTTP.
//!
//! Read only when `proxy_protocol = true`, and only from trusted proxies
//! (the listener closes every other peer first). Exactly the header's bytes
//! are read, so what follows is left to HTTP or TLS untouched. Parsing is
//! `ppp`'s; this file adds the reading and what the result means here.

use std::net::SocketAddr;

use ppp::v2::{Addresses, Command, Header};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{ProxyHeaderError, ProxyHeaderErrorKind};

/// Signature, version and command, family, length: the fixed part.
const FIXED: usize = 16;

/// Longest address block and TLVs read. Load balancers send a few dozen
/// bytes (addresses, maybe a connection id or a VPC endpoint id); a bound
/// keeps a trusted but broken peer from making the node buffer 64 KiB.
const MAX_REST: usize = 1024;

/// Reads the header. `Some(address)` is the client's (the `PROXY`
/// command with an IPv4 or IPv6 source); `None` means the peer speaks for
/// itself: a `LOCAL` command (the balancer's own health check) or an
/// address family without an IP (UNIX, unspecified).
pub async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut buf = vec![0u8; FIXED];
    read(io, &mut buf).await?;
    if !buf.starts_with(ppp::v2::PROTOCOL_PREFIX) {
        return Err(ProxyHeaderErrorKind::Missing.into());
    }
    let rest = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if rest > MAX_REST {
        return Err(ProxyHeaderErrorKind::TooLong.into());
    }
    buf.resize(FIXED + rest, 0);
    read(io, &mut buf[FIXED..]).await?;
    let header = Header::try_from(buf.as_slice()).map_err(|e| {
        ProxyHeaderError::with_source(
            ProxyHeaderErrorKind::Malformed,
            ProxyHeaderErrorKind::Malformed.to_string(),
            e,
        )
    })?;
    Ok(client_of(&header))
}

async fn read<R: AsyncRead + Unpin>(io: &mut R, buf: &mut [u8]) -> Result<(), ProxyHeaderError> {
    io.read_exact(buf).await.map(|_| ()).map_err(|e| {
        ProxyHeaderError::with_source(
            ProxyHeaderErrorKind::Io,
            ProxyHeaderErrorKind::Io.to_string(),
            e,
        )
    })
}

/// The client a parsed header names, if any.
fn client_of(header: &Header<'_>) -> Option<SocketAddr> {
    if header.command == Command::Local {
        return None;
    }
    match header.addresses {
        Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Unix(_) | Addresses::Unspecified => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 header written by hand from the specification (not by `ppp`).
    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    fn ipv4_block() -> Vec<u8> {
        let mut a = vec![192, 0, 2, 10, 10, 0, 0, 1];
        a.extend_from_slice(&5555u16.to_be_bytes());
        a.extend_from_slice(&443u16.to_be_bytes());
        a
    }

    #[tokio::test]
    async fn reads_exactly_the_header_and_names_the_client() {
        let mut bytes = v2(0x1, 0x11, &ipv4_block());
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut io = bytes.as_slice();
        let client = read_header(&mut io).await.unwrap();
        assert_eq!(client, Some("192.0.2.10:5555".parse().unwrap()));
        assert_eq!(io, b"GET / HTTP/1.1\r\n", "HTTP is left untouched");

        let mut a = vec![0x20, 0x01, 0x0d, 0xb8];
        a.extend_from_slice(&[0; 11]);
        a.push(7);
        a.extend_from_slice(&[0; 16]);
        a.extend_from_slice(&[0x12, 0x34, 0x01, 0xbb]);
        let bytes = v2(0x1, 0x21, &a);
        let client = read_header(&mut bytes.as_slice()).await.unwrap();
        assert_eq!(client, Some("[2001:db8::7]:4660".parse().unwrap()));
    }

    #[tokio::test]
    async fn local_commands_speak_for_the_peer() {
        let bytes = v2(0x0, 0x00, &[]);
        assert_eq!(read_header(&mut bytes.as_slice()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        let kind = |bytes: Vec<u8>| async move {
            read_header(&mut bytes.as_slice()).await.unwrap_err().kind()
        };
        assert_eq!(
            kind(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await,
            ProxyHeaderErrorKind::Missing
        );
        // PROXY protocol v1 (text) is not accepted.
        assert_eq!(
            kind(b"PROXY TCP4 192.0.2.1 10.0.0.1 5555 443\r\n".to_vec()).await,
            ProxyHeaderErrorKind::Missing
        );
        let mut short = v2(0x1, 0x11, &ipv4_block());
        short.truncate(20);
        assert_eq!(kind(short).await, ProxyHeaderErrorKind::Io);
        assert_eq!(
            kind(v2(0x1, 0x11, &[0; 4])).await,
            ProxyHeaderErrorKind::Malformed,
            "an IPv4 header shorter than its addresses"
        );
        let mut long = v2(0x1, 0x11, &ipv4_block());
        long[14..16].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(kind(long).await, ProxyHeaderErrorKind::TooLong);
    }
}
