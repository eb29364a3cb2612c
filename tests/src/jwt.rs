//! Tokens for the tests of a hub that verifies them: HS256 with a shared
//! secret, as a token service would sign them, and the clock they use.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::Value;

/// Seconds since the Unix epoch (a token's `iat`/`exp` clock).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs()
}

/// `claims` signed with HS256 under `secret`.
pub fn hs256(secret: &str, claims: &Value) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signs any claims")
}
