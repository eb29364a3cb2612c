//! Who a client is, by address: the peer in its canonical form, the client
//! behind trusted proxies (`X-Forwarded-For`, PROXY protocol), and the key
//! under which per-address limits count it.
//!
//! Pure functions over addresses and headers, so every rule is unit-tested
//! without sockets.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::http::HeaderMap;

use crate::config::ProxyNet;

/// An address as limits and logs see it: an IPv4 peer of a dual-stack
/// (`[::]`) listener arrives as `::ffff:a.b.c.d` and is `a.b.c.d` here, so
/// that it matches IPv4 proxy ranges and counts under its IPv4 key.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The configured reverse proxies: addresses and ranges.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<ipnet::IpNet>,
}

impl TrustedProxies {
    pub fn new(nets: &[ProxyNet]) -> Self {
        Self {
            nets: nets.iter().map(|n| n.0).collect(),
        }
    }

    /// Whether `ip` (in any form) is one of the proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy,
/// the nearest address of `X-Forwarded-For` that is not one.
///
/// Every `X-Forwarded-For` header counts, joined in order as one list (RFC
/// 9110 section 5.3): a proxy may append its own header rather than extend
/// the client's, and reading only the first would let the client choose its
/// address. The list is walked from the nearest hop back; everything left
/// of the first untrusted hop was written by the client and is ignored. An
/// entry that is not an address stops the walk at the hop that wrote it.
pub fn client_ip(peer: IpAddr, trusted: &TrustedProxies, headers: &HeaderMap) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            return client;
        };
        client = ip;
        if !trusted.contains(ip) {
            return ip;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`), as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(canonical)
}

/// The key per-address limits count a client under: its IPv4 address, or
/// the first `v6_prefix` bits of its IPv6 address (a subscriber gets a whole
/// /64, and every address in it is theirs).
pub fn limit_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match canonical(ip) {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let prefix = u32::from(v6_prefix.min(128));
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        let nets: Vec<ProxyNet> = list.iter().map(|s| s.parse().unwrap()).collect();
        TrustedProxies::new(&nets)
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_send() {
        let t = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("198.51.100.9"), &t, &xff(&["203.0.113.1"])),
            ip("198.51.100.9")
        );
    }

    #[test]
    fn every_forwarded_header_counts_in_order() {
        let t = proxies(&["10.0.0.0/8"]);
        // The client sent the first header; the proxy appended the second.
        let h = xff(&["203.0.113.66", "198.51.100.7"]);
        assert_eq!(client_ip(ip("10.1.1.1"), &t, &h), ip("198.51.100.7"));
        // Chained proxies: skip every trusted hop.
        let h = xff(&["203.0.113.66, 198.51.100.7", "10.2.2.2"]);
        assert_eq!(client_ip(ip("10.1.1.1"), &t, &h), ip("198.51.100.7"));
        // No header: the proxy itself.
        assert_eq!(client_ip(ip("10.1.1.1"), &t, &xff(&[])), ip("10.1.1.1"));
        // Garbage where a proxy wrote: the hop that wrote it.
        let h = xff(&["198.51.100.7", "nonsense", "10.2.2.2"]);
        assert_eq!(client_ip(ip("10.1.1.1"), &t, &h), ip("10.2.2.2"));
        // Ports and brackets as some proxies write them.
        let h = xff(&["[2001:db8::5]:4711"]);
        assert_eq!(client_ip(ip("10.1.1.1"), &t, &h), ip("2001:db8::5"));
    }

    #[test]
    fn mapped_ipv4_peers_are_ipv4() {
        let t = proxies(&["127.0.0.1"]);
        let h = xff(&["198.51.100.7"]);
        assert_eq!(
            client_ip(ip("::ffff:127.0.0.1"), &t, &h),
            ip("198.51.100.7")
        );
        assert_eq!(client_ip(ip("::ffff:192.0.2.1"), &t, &h), ip("192.0.2.1"));
        let h = xff(&["::ffff:198.51.100.8"]);
        assert_eq!(client_ip(ip("127.0.0.1"), &t, &h), ip("198.51.100.8"));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_prefix() {
        assert_eq!(
            limit_key(ip("2001:db8:1:2:aaaa::1"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            limit_key(ip("2001:db8:1:2:bbbb::9"), 64),
            limit_key(ip("2001:db8:1:2:aaaa::1"), 64)
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:3::1"), 64),
            limit_key(ip("2001:db8:1:2::1"), 64)
        );
        assert_eq!(limit_key(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(limit_key(ip("192.0.2.1"), 64), ip("192.0.2.1"));
        assert_eq!(limit_key(ip("::ffff:192.0.2.1"), 64), ip("192.0.2.1"));
    }
}
