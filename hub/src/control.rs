//! Control messages: an operator's server-API call (disconnect, revoke) carried to every node over the bus side channel
//! (`<prefix>.control`; the embedded bus in-process), and applied by each.
//!
//! A message is sealed with HMAC-SHA256 under the `operator_key` that every
//! node of a cluster shares: a node drops a message whose seal does not
//! verify (anyone who can publish on the bus could otherwise throw fans
//! out) or that is more than [`MAX_AGE`] old or ahead (a replay). This file
//! is the only one that knows the seal, so that it can move to the
//! cluster's common sealing of side-channel messages in one place. Applying
//! them is the node's (`Node::apply`); following the feed, the server API's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Oldest (and furthest ahead) a control message is accepted.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// What an operator asked of every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Close with 1008 every connection of `user`, or the connection
    /// `conn` of node `node`.
    Disconnect {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conn: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    /// Revoke the token `jti`, or `user`'s tokens issued before `before`,
    /// until `until` (Unix seconds); connections holding one close with 1008.
    Revoke {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jti: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        until: u64,
    },
}

/// An [`Op`] as it travels: who sent it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Message {
    /// The node that received the operator's call (and applied it first).
    origin: String,
    /// Unix milliseconds when it was sent.
    ts: u64,
    #[serde(flatten)]
    op: Op,
}

/// The sealed form on the bus.
#[derive(Serialize, Deserialize)]
struct Sealed {
    /// The [`Message`] as JSON text.
    body: String,
    /// HMAC-SHA256 of `body` under the operator key, hex.
    mac: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// HMAC-SHA256 (RFC 2104).
fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(data)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seals `op` from node `origin` under `key`.
pub fn seal(key: &str, origin: &str, op: &Op) -> Bytes {
    seal_at(key, origin, op, now_ms())
}

fn seal_at(key: &str, origin: &str, op: &Op, ts: u64) -> Bytes {
    let body = serde_json::to_string(&Message {
        origin: origin.to_string(),
        ts,
        op: op.clone(),
    })
    .expect("control messages serialize");
    let mac = hex(&hmac(key.as_bytes(), body.as_bytes()));
    Bytes::from(serde_json::to_vec(&Sealed { body, mac }).expect("serializes"))
}

/// Why a control message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    Malformed,
    BadSeal,
    Stale,
}

/// Opens a sealed message: the sending node and the op.
pub fn open(key: &str, payload: &[u8]) -> Result<(String, Op), Dropped> {
    open_at(key, payload, now_ms())
}

fn open_at(key: &str, payload: &[u8], now: u64) -> Result<(String, Op), Dropped> {
    let sealed: Sealed = serde_json::from_slice(payload).map_err(|_| Dropped::Malformed)?;
    let expected = hex(&hmac(key.as_bytes(), sealed.body.as_bytes()));
    // Constant time: a forger learns nothing from how fast a guess fails.
    let same = expected.len() == sealed.mac.len()
        && expected
            .bytes()
            .zip(sealed.mac.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(Dropped::BadSeal);
    }
    let msg: Message = serde_json::from_str(&sealed.body).map_err(|_| Dropped::Malformed)?;
    if msg.ts.abs_diff(now) > MAX_AGE.as_millis() as u64 {
        return Err(Dropped::Stale);
    }
    Ok((msg.origin, msg.op))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "operator-key-0123456789abcdef0123456789";

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn sealed_messages_open_with_the_key_only_and_only_while_fresh() {
        let op = Op::Disconnect {
            user: Some("u1".into()),
            conn: None,
            node: None,
        };
        let sealed = seal_at(KEY, "hub-a", &op, 1_000_000);
        assert_eq!(
            open_at(KEY, &sealed, 1_000_500),
            Ok(("hub-a".to_string(), op.clone()))
        );
        assert_eq!(
            open_at("another-key-0123456789abcdef0123456789", &sealed, 1_000_500),
            Err(Dropped::BadSeal)
        );
        assert_eq!(
            open_at(KEY, &sealed, 1_000_000 + 61_000),
            Err(Dropped::Stale)
        );
        // A changed body breaks the seal.
        let text = String::from_utf8(sealed.to_vec())
            .unwrap()
            .replace("u1", "u2");
        assert_eq!(
            open_at(KEY, text.as_bytes(), 1_000_500),
            Err(Dropped::BadSeal)
        );
        assert_eq!(open_at(KEY, b"{}", 1_000_500), Err(Dropped::Malformed));
    }
}
