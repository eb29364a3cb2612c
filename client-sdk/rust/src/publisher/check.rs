//! What a publication must be before it leaves, whichever way it goes: a
//! valid topic, a payload that is one JSON value, at most
//! [`MAX_PAYLOAD_BYTES`].

use serde::de::IgnoredAny;
use tribune_protocol::validate_topic;

use crate::error::{PublishError, PublishErrorKind};

/// Largest payload the hub forwards (PROTOCOL.md section 8).
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// Checks a publication: topic rules, size, one JSON value.
pub fn check_publication(
    topic: &str,
    payload: &[u8],
    max_bytes: usize,
) -> Result<(), PublishError> {
    validate_topic(topic).map_err(|e| {
        PublishError::with_source(PublishErrorKind::InvalidTopic, topic.to_string(), e)
    })?;
    if payload.len() > max_bytes {
        return Err(PublishError::new(
            PublishErrorKind::PayloadTooLarge,
            format!("{topic}: {} bytes, the limit is {max_bytes}", payload.len()),
        ));
    }
    serde_json::from_slice::<IgnoredAny>(payload).map_err(|e| {
        PublishError::with_source(PublishErrorKind::InvalidJson, format!("{topic}: {e}"), e)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks() {
        let ok = br#"{"kind":"clip","id":"c1"}"#;
        assert!(check_publication("clips.a.b", ok, MAX_PAYLOAD_BYTES).is_ok());
        assert!(check_publication("clips.a.b", b"42", MAX_PAYLOAD_BYTES).is_ok());
        let kind = |t: &str, p: &[u8], max| check_publication(t, p, max).unwrap_err().kind();
        assert_eq!(
            kind("clips", ok, MAX_PAYLOAD_BYTES),
            PublishErrorKind::InvalidTopic
        );
        assert_eq!(
            kind("clips.*", ok, MAX_PAYLOAD_BYTES),
            PublishErrorKind::InvalidTopic
        );
        assert_eq!(
            kind("clips.a", b"{\"a\":", MAX_PAYLOAD_BYTES),
            PublishErrorKind::InvalidJson
        );
        assert_eq!(
            kind("clips.a", b"{} {}", MAX_PAYLOAD_BYTES),
            PublishErrorKind::InvalidJson
        );
        assert_eq!(
            kind("clips.a", b"", MAX_PAYLOAD_BYTES),
            PublishErrorKind::InvalidJson
        );
        assert_eq!(kind("clips.a", ok, 10), PublishErrorKind::PayloadTooLarge);
        let big = format!("\"{}\"", "x".repeat(MAX_PAYLOAD_BYTES));
        assert_eq!(
            kind("clips.a", big.as_bytes(), MAX_PAYLOAD_BYTES),
            PublishErrorKind::PayloadTooLarge
        );
    }
}
