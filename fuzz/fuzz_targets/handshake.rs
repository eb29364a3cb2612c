//! Fuzz target `handshake`: what an unauthenticated client controls before
//! the upgrade: the query string, the `Authorization` header, the token.
//!
//! Input layout: `<query>\n<authorization header>`; the whole input is also
//! tried as a token, and its halves as the header and claims of a token that
//! carries a *valid* HS256 signature, so that claim checks are reached.
//!
//! Properties, beyond "never panics":
//! - a token extracted from a request is within the size bound and made only
//!   of base64url characters and two dots;
//! - no token the fuzzer writes without the secret verifies (a forgery, or
//!   `alg: none` accepted, would);
//! - a correctly signed token verifies only with `alg: HS256` in its header,
//!   and then its grant reflects its claims.
#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use tribune_hub::auth::{Authenticator, MAX_TOKEN_BYTES, token_from_request};
use tribune_hub::config::AuthConfig;

const SECRET: &str = "fuzzing secret of at least thirty-two bytes";

/// One verifier without audience, one with: both claim paths are reached.
static AUTH: LazyLock<[Authenticator; 2]> = LazyLock::new(|| {
    let config = |audience: Option<&str>| AuthConfig {
        algorithm: Some("HS256".into()),
        secret: Some(SECRET.into()),
        audience: audience.map(String::from),
        leeway_secs: 30,
        ..AuthConfig::default()
    };
    [None, Some("tribune")].map(|aud| {
        Authenticator::from_config(&config(aud))
            .expect("valid fuzz config")
            .expect("a key is configured")
    })
});

static KEY: LazyLock<EncodingKey> = LazyLock::new(|| EncodingKey::from_secret(SECRET.as_bytes()));

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (query, header) = (&data[..split], data.get(split + 1..).unwrap_or_default());

    // The query reaches the hub as text (the URI parser refuses the rest).
    let query = std::str::from_utf8(query).ok();
    for (q, h) in [(query, Some(header)), (query, None), (None, Some(data))] {
        if let Ok(Some(token)) = token_from_request(q, h) {
            assert!(!token.is_empty() && token.len() <= MAX_TOKEN_BYTES);
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            );
            assert_eq!(token.bytes().filter(|b| *b == b'.').count(), 2);
            for auth in AUTH.iter() {
                assert!(
                    auth.verify(&token).is_err(),
                    "unsigned token accepted: {token}"
                );
            }
        }
    }

    let raw = String::from_utf8_lossy(data);
    for auth in AUTH.iter() {
        assert!(auth.verify(&raw).is_err(), "unsigned token accepted: {raw}");
    }

    // A correctly signed token around fuzzer-chosen header and claims bytes.
    let (head, claims) = data.split_at(split);
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(head),
        URL_SAFE_NO_PAD.encode(claims.get(1..).unwrap_or_default())
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &KEY, Algorithm::HS256)
        .expect("HMAC signs anything");
    let token = format!("{message}.{signature}");
    for auth in AUTH.iter() {
        if let Ok(grant) = auth.verify(&token) {
            // Accepted: header and claims are UTF-8 (verify insists). A field
            // no one reads may still hold what `Value` refuses (1e400, a lone
            // surrogate), so the comparisons are made when `Value` parses.
            let head = std::str::from_utf8(head).expect("an accepted header is UTF-8");
            let claims = std::str::from_utf8(claims.get(1..).unwrap_or_default())
                .expect("accepted claims are UTF-8");
            if let Ok(header) = serde_json::from_str::<serde_json::Value>(head) {
                assert_eq!(header["alg"], "HS256", "accepted with another alg");
            }
            if let Ok(claims) = serde_json::from_str::<serde_json::Value>(claims) {
                assert_eq!(grant.subject.as_deref(), claims["sub"].as_str());
                let topics: Vec<&str> = claims["topics"]
                    .as_array()
                    .map(|t| t.iter().filter_map(|v| v.as_str()).collect())
                    .unwrap_or_default();
                assert_eq!(grant.topics, topics);
            }
        }
    }
});
