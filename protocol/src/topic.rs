//! Topic names (PROTOCOL.md section 2): the only validator in the project.

use std::fmt;
use std::sync::Arc;

/// Longest topic, in bytes.
pub const MAX_TOPIC_BYTES: usize = 200;
/// Longest token, in characters.
pub const MAX_TOKEN_LEN: usize = 64;
/// Fewest tokens: a namespace and at least one more.
pub const MIN_TOKENS: usize = 2;
/// Most tokens.
pub const MAX_TOKENS: usize = 8;

/// Why a topic was refused; the text goes to the client in a `bad_topic` error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic is longer than {MAX_TOPIC_BYTES} bytes")]
    TooLong,
    #[error("topic needs at least {MIN_TOKENS} dot-separated tokens")]
    TooFewTokens,
    #[error("topic has more than {MAX_TOKENS} tokens")]
    TooManyTokens,
    #[error("topic has an empty token")]
    EmptyToken,
    #[error("topic token is longer than {MAX_TOKEN_LEN} characters")]
    TokenTooLong,
    #[error("topic may only hold [A-Za-z0-9_-] and dots (no wildcards, no spaces)")]
    BadCharacter,
}

/// Checks a topic against every rule of PROTOCOL.md section 2.
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong);
    }
    let mut tokens = 0usize;
    for token in topic.split('.') {
        tokens += 1;
        if token.is_empty() {
            return Err(TopicError::EmptyToken);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TopicError::TokenTooLong);
        }
        if !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(TopicError::BadCharacter);
        }
    }
    if tokens < MIN_TOKENS {
        return Err(TopicError::TooFewTokens);
    }
    if tokens > MAX_TOKENS {
        return Err(TopicError::TooManyTokens);
    }
    Ok(())
}

/// A validated topic name; cheap to clone (shared string).
///
/// The characters allowed in a topic never need escaping in JSON, which is
/// what lets [`crate::encode_message`] write frames without a serializer.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Validates and wraps a topic name.
    pub fn new(name: &str) -> Result<Self, TopicError> {
        validate_topic(name)?;
        Ok(Self(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first token, which names the namespace.
    pub fn namespace(&self) -> &str {
        self.0.split('.').next().unwrap_or_default()
    }

    /// Whether this topic is `prefix` or lies under it: a grant of
    /// `results.lausanne2020.` or `results.lausanne2020` covers
    /// `results.lausanne2020.speed-skating`.
    pub fn is_under(&self, prefix: &str) -> bool {
        let prefix = prefix.strip_suffix('.').unwrap_or(prefix);
        self.0.as_ref() == prefix
            || (self.0.len() > prefix.len()
                && self.0.starts_with(prefix)
                && self.0.as_bytes()[prefix.len()] == b'.')
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for Topic {
    type Error = TopicError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Topic::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_and_prefix() {
        let t = Topic::new("results.lausanne2020.speed-skating").unwrap();
        assert_eq!(t.namespace(), "results");
        assert!(t.is_under("results.lausanne2020."));
        assert!(t.is_under("results.lausanne2020"));
        assert!(t.is_under("results.lausanne2020.speed-skating"));
        assert!(!t.is_under("results.lausanne"));
        assert!(!t.is_under("clips."));
    }
}
