//! `Nats-Msg-Id`s (see the module doc of `publisher`): a new UUIDv7 per
//! publication, or one derived from topic and payload; [`MsgIds`] chooses,
//! and `IdOrigin` says whether an id may be older than the call.

use sha2::{Digest, Sha256};

/// How a [`Publisher`](crate::Publisher) picks the `Nats-Msg-Id` of a publication without an
/// explicit id (see the module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MsgIds {
    /// A new UUIDv7 for every publication, kept across its retries: every
    /// publication is stored, whatever its payload. The default.
    #[default]
    Unique,
    /// Derived from topic and payload by [`content_message_id`]: a payload
    /// equal to one stored on the topic within the stream's duplicate window
    /// is not stored again (its earlier seq is returned, marked duplicate).
    FromContent,
}

/// A new `Nats-Msg-Id` for one publication: a UUIDv7, so ids sort by the
/// time they were made, which helps when reading the stream or logs.
pub fn unique_message_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The `Nats-Msg-Id` derived from a publication's content (see the module
/// doc); used with [`MsgIds::FromContent`].
pub fn content_message_id(topic: &str, payload: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(topic.as_bytes());
    hash.update([0u8]);
    hash.update(payload);
    let digest = hash.finalize();
    let mut id = String::with_capacity(3 + 32);
    id.push_str("t1-");
    for byte in &digest[..16] {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// Whether anyone but this call can have used a message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IdOrigin {
    /// Made for this publication: only its own attempts carry it.
    ThisPublication,
    /// The caller's or derived from content: earlier publications may carry it.
    Shared,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_ids_differ_and_are_uuid_v7() {
        let a = unique_message_id();
        let b = unique_message_id();
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 7, "{a}");
        // Time-ordered: within a process each id sorts after the one before
        // (hyphenated lowercase hex sorts like the bytes).
        let later = unique_message_id();
        assert!(a < b && b < later, "{a} {b} {later}");
    }

    #[test]
    fn content_ids_are_deterministic_and_content_bound() {
        let a = content_message_id("clips.a.b", b"{\"n\":1}");
        assert_eq!(a, content_message_id("clips.a.b", b"{\"n\":1}"));
        assert_ne!(a, content_message_id("clips.a.b", b"{\"n\":2}"));
        assert_ne!(a, content_message_id("clips.a.c", b"{\"n\":1}"));
        // The separator keeps topic and payload apart: "a.b" + "c" ≠ "a.bc" + "".
        assert_ne!(
            content_message_id("x.ab", b"c"),
            content_message_id("x.a", b"bc")
        );
        assert!(a.starts_with("t1-") && a.len() == 35, "{a}");
        // Pinned: the derivation is part of the contract (retries across
        // processes and versions must agree). Computed independently:
        // python3 -c 'import hashlib;print(hashlib.sha256(b"x.y\x00{}").hexdigest()[:32])'
        assert_eq!(
            content_message_id("x.y", b"{}"),
            "t1-b61f707121a61495f140645963e8f586"
        );
    }
}
