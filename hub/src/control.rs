//! Control messages: an operator's server-API call (disconnect, unsubscribe,
//! revoke)
//! carried to every node over the bus side channel (`<prefix>.control`; the
//! embedded bus in-process), and applied by each.
//!
//! A message is sealed as the statistics partials are (`stats/seal.rs`):
//! `<HMAC-SHA256 hex>\n<JSON>` under the cluster's `stats.key`, which every
//! node shares. On NATS a node drops a message whose seal does not verify
//! (anyone who can publish on the bus could otherwise throw fans out), one
//! without a seal or without a key to check it, one whose `ts` is more than
//! [`FRESH`] from its clock, and one it has taken before (its random `id`):
//! a recorded message cannot be played again. The embedded bus carries only
//! this process's messages. Applying them is the node's (`Node::apply`);
//! following the feed, the server API's.

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use crate::stats::seal::FRESH;
use crate::stats::seal::{HmacSha256, Rejected, keyed, seal_json, verify_sealed};

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
    /// End `user`'s subscriptions to `topic`, each with `unsubscribed`.
    Unsubscribe { user: String, topic: String },
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

/// An [`Op`] as it travels: who sent it, when, and a random id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Message {
    /// The node that received the operator's call (and applied it first).
    origin: String,
    /// Unix milliseconds when it was sent.
    ts: u64,
    /// Random: a message taken once is not taken again.
    id: u64,
    #[serde(flatten)]
    op: Op,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seals and opens control messages with the cluster key.
pub struct Seal {
    mac: Option<HmacSha256>,
    /// The embedded bus: nothing but this process publishes there.
    trusted_bus: bool,
    /// Ids taken, and when: forgotten once [`FRESH`] makes a replay stale.
    seen: HashMap<u64, Instant>,
}

/// Why a control message was dropped (the `reason` label of
/// `tribune_control_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    Seal(Rejected),
    Malformed,
    Stale,
    Replayed,
}

impl Dropped {
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::Seal(r) => r.as_str(),
            Dropped::Malformed => "malformed",
            Dropped::Stale => "stale",
            Dropped::Replayed => "replayed",
        }
    }
}

impl Seal {
    /// `key`: the cluster's `stats.key`; `trusted_bus`: the embedded bus.
    pub fn new(key: Option<&[u8]>, trusted_bus: bool) -> Seal {
        Seal {
            mac: key.map(keyed),
            trusted_bus,
            seen: HashMap::new(),
        }
    }

    /// The bytes to publish for `op` from node `origin`.
    pub fn seal(&self, origin: &str, op: &Op) -> Bytes {
        self.seal_at(origin, op, now_ms())
    }

    fn seal_at(&self, origin: &str, op: &Op, ts: u64) -> Bytes {
        let json = serde_json::to_vec(&Message {
            origin: origin.to_string(),
            ts,
            id: rand::random(),
            op: op.clone(),
        })
        .expect("control messages serialize");
        seal_json(self.mac.as_ref(), json)
    }

    /// Opens a message: the sending node and the op.
    pub fn open(&mut self, payload: &[u8]) -> Result<(String, Op), Dropped> {
        self.open_at(payload, now_ms(), Instant::now())
    }

    fn open_at(&mut self, payload: &[u8], now: u64, at: Instant) -> Result<(String, Op), Dropped> {
        let json =
            verify_sealed(self.mac.as_ref(), self.trusted_bus, payload).map_err(Dropped::Seal)?;
        let msg: Message = serde_json::from_slice(json).map_err(|_| Dropped::Malformed)?;
        if msg.ts.abs_diff(now) > FRESH.as_millis() as u64 {
            return Err(Dropped::Stale);
        }
        self.seen
            .retain(|_, when| at.duration_since(*when) < FRESH * 2);
        if self.seen.insert(msg.id, at).is_some() {
            return Err(Dropped::Replayed);
        }
        Ok((msg.origin, msg.op))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"cluster-key-0123456789abcdef0123456789";

    fn op() -> Op {
        Op::Disconnect {
            user: Some("u1".into()),
            conn: None,
            node: None,
        }
    }

    #[test]
    fn sealed_messages_open_with_the_key_only_once_and_only_while_fresh() {
        let sender = Seal::new(Some(KEY), false);
        let mut receiver = Seal::new(Some(KEY), false);
        let at = Instant::now();
        let sealed = sender.seal_at("hub-a", &op(), 1_000_000);
        assert_eq!(
            receiver.open_at(&sealed, 1_000_500, at),
            Ok(("hub-a".to_string(), op()))
        );
        assert_eq!(
            receiver.open_at(&sealed, 1_000_600, at),
            Err(Dropped::Replayed)
        );
        let mut other = Seal::new(Some(b"another-key-0123456789abcdef0123456789"), false);
        assert_eq!(
            other.open_at(&sealed, 1_000_500, at),
            Err(Dropped::Seal(Rejected::BadSignature))
        );
        let late = sender.seal_at("hub-a", &op(), 1_000_000);
        assert_eq!(
            receiver.open_at(&late, 1_000_000 + 31_000, at),
            Err(Dropped::Stale)
        );
        // A changed body breaks the seal.
        let text = String::from_utf8(sealed.to_vec())
            .unwrap()
            .replace("u1", "u2");
        assert_eq!(
            receiver.open_at(text.as_bytes(), 1_000_500, at),
            Err(Dropped::Seal(Rejected::BadSignature))
        );
        // On NATS, without a key nothing is taken; unsealed, nothing either.
        let mut keyless = Seal::new(None, false);
        assert_eq!(
            keyless.open_at(&sealed, 1_000_500, at),
            Err(Dropped::Seal(Rejected::NoKey))
        );
        let unsealed = Seal::new(None, true).seal_at("hub-a", &op(), 1_000_000);
        assert_eq!(
            receiver.open_at(&unsealed, 1_000_500, at),
            Err(Dropped::Seal(Rejected::Unsigned))
        );
        // The embedded bus takes its own unsealed messages.
        let mut embedded = Seal::new(None, true);
        assert!(embedded.open_at(&unsealed, 1_000_500, at).is_ok());
    }
}
