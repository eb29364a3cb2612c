//! Reaction keys: how an HTTP stream proves its subscription to
//! `POST /v1/react` (PROTOCOL.md section 11), and the reaction rate per
//! stream.
//!
//! A websocket reaction needs a subscription on the same connection. An
//! HTTP reaction arrives on another request, maybe at another node (no
//! sticky sessions), so a stream's `react` event holds a key
//! `<nonce>.<exp>.<mac>`: an HMAC-SHA256, under a key derived from the
//! cluster's `stats.key` (a random key of this process when none is set),
//! over the topic, the token's `sub`, the stream's random nonce and a short
//! expiry; the stream sends a new one before the old runs out. Any node
//! with the same key checks it without shared state. The rate limit is per
//! nonce (so per stream) on each node.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::Mac;

use crate::limits::{self, KeyedLimiter};
use crate::stats::seal::{HmacSha256, keyed};

/// How long a reaction key is good for, in seconds; a stream renews its
/// key at half this age.
pub const KEY_TTL_SECS: u64 = 120;

/// Signs and checks reaction keys; limits reactions per stream.
pub struct ReactKeys {
    mac: HmacSha256,
    limiter: KeyedLimiter<u64>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ReactKeys {
    /// `key`: the cluster's `stats.key`; without one, a random key that
    /// only this process knows (reactions then must reach the node that
    /// serves the stream).
    pub fn new(key: Option<&[u8]>, limits: &crate::config::Limits) -> ReactKeys {
        let mac = match key {
            Some(key) => keyed(&[b"tribune-react-key\n", key].concat()),
            None => keyed(&rand::random::<[u8; 32]>()),
        };
        ReactKeys {
            mac,
            limiter: limits::stream_reaction_rate(limits),
        }
    }

    fn sign(&self, topic: &str, sub: Option<&str>, nonce: u64, exp: u64) -> String {
        let mut mac = self.mac.clone();
        mac.update(format!("{topic}\n{}\n{nonce:016x}\n{exp}", sub.unwrap_or("")).as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// A key for one stream, good until the returned expiry (Unix seconds).
    pub fn issue(&self, topic: &str, sub: Option<&str>, nonce: u64) -> (String, u64) {
        let exp = now_secs() + KEY_TTL_SECS;
        let mac = self.sign(topic, sub, nonce, exp);
        (format!("{nonce:016x}.{exp}.{mac}"), exp)
    }

    /// The stream's nonce if `key` was issued for this topic and user and
    /// has not run out.
    pub fn verify(&self, key: &str, topic: &str, sub: Option<&str>) -> Option<u64> {
        let mut parts = key.splitn(3, '.');
        let nonce_hex = parts.next()?;
        let exp: u64 = parts.next()?.parse().ok()?;
        let given = unhex(parts.next()?)?;
        if nonce_hex.len() != 16 || exp < now_secs() || exp > now_secs() + KEY_TTL_SECS {
            return None;
        }
        let nonce = u64::from_str_radix(nonce_hex, 16).ok()?;
        let mut mac = self.mac.clone();
        mac.update(format!("{topic}\n{}\n{nonce:016x}\n{exp}", sub.unwrap_or("")).as_bytes());
        // Constant time: a key must not be guessable byte by byte.
        mac.verify_slice(&given).ok()?;
        Some(nonce)
    }

    /// Takes one reaction of the stream `nonce`; when refused, how long
    /// until one is allowed.
    pub fn check_rate(&self, nonce: u64) -> Result<(), Duration> {
        self.limiter.check(&nonce)
    }

    /// Forgets streams back to a full burst; how many.
    pub fn sweep(&self) -> usize {
        self.limiter.sweep()
    }

    /// Streams remembered by the limiter now.
    pub fn keys(&self) -> usize {
        self.limiter.keys()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_for_its_topic_and_user_only() {
        let keys = ReactKeys::new(Some(&[7; 32]), &crate::config::Limits::default());
        let (key, _) = keys.issue("results.a.b", Some("fan-1"), 42);
        assert_eq!(keys.verify(&key, "results.a.b", Some("fan-1")), Some(42));
        assert_eq!(keys.verify(&key, "results.a.c", Some("fan-1")), None);
        assert_eq!(keys.verify(&key, "results.a.b", Some("fan-2")), None);
        assert_eq!(keys.verify(&key, "results.a.b", None), None);
        // Another node with the same cluster key checks it; one without does not.
        let same = ReactKeys::new(Some(&[7; 32]), &crate::config::Limits::default());
        assert_eq!(same.verify(&key, "results.a.b", Some("fan-1")), Some(42));
        let other = ReactKeys::new(None, &crate::config::Limits::default());
        assert_eq!(other.verify(&key, "results.a.b", Some("fan-1")), None);
        // Tampering with the nonce or the expiry breaks the MAC.
        let (nonce, rest) = key.split_once('.').unwrap();
        let forged = format!(
            "{:016x}.{rest}",
            u64::from_str_radix(nonce, 16).unwrap() + 1
        );
        assert_eq!(keys.verify(&forged, "results.a.b", Some("fan-1")), None);
        let (exp, mac) = rest.split_once('.').unwrap();
        let later = format!("{nonce}.{}.{mac}", exp.parse::<u64>().unwrap() + 1);
        assert_eq!(keys.verify(&later, "results.a.b", Some("fan-1")), None);
        assert_eq!(keys.verify("garbage", "results.a.b", None), None);
    }

    #[test]
    fn an_expired_key_is_refused() {
        let keys = ReactKeys::new(None, &crate::config::Limits::default());
        let exp = now_secs() - 1;
        let mac = keys.sign("results.a.b", None, 1, exp);
        let key = format!("{:016x}.{exp}.{mac}", 1);
        assert_eq!(keys.verify(&key, "results.a.b", None), None);
    }
}
