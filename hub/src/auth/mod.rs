//! Token verification for the handshake (PROTOCOL.md section 1).
//!
//! A fan's token is a JWT signed by the operator's ticketing or login service.
//! This file owns everything about it: where a handshake carries it
//! ([`token_from_request`]), which key verifies it (an HS256 secret, one PEM
//! public key, or a JWKS file that is reloaded when it changes), the checks of
//! its claims, and what it grants ([`Grant::allows`]). The handshake and
//! connection code only ask "who is this and which topics may they read".
//!
//! Exactly one algorithm is accepted, the configured one: the `alg` of the
//! token header is compared with it before any key is touched, so `alg: none`
//! and the classic "RS256 public key used as an HS256 secret" confusion are
//! refused as [`AuthErrorKind::WrongAlgorithm`], whatever the key.
//!
//! Claims: `sub` (optional, shown in logs), `exp` (required unless
//! `require_exp = false`, and no further ahead than `max_lifetime_secs` when
//! set) and `nbf` (checked with the configured leeway), `aud` and `iss`
//! (required and checked only when an audience or issuer is configured),
//! `iat` and `jti` (read for revocation and the lifetime rule) and `topics`,
//! an array of exact topics or prefixes (`"results.lausanne2020."`). A
//! refusal names the rule that failed ([`AuthErrorKind::rule`]), never the
//! token.
//!
//! Files: this one, the [`Authenticator`] and its checks; `keys`, reading
//! PEM keys and JWKS files (reloaded on change); `request`, where a
//! handshake carries the token; `expiry`, when a live connection's token
//! runs out (it moves with each refresh); `revocation`, the tokens an
//! operator revoked; `metrics`, the token counters.

mod expiry;
mod keys;
mod metrics;
mod request;
mod revocation;
#[cfg(test)]
mod tests;

pub use expiry::{Expiry, unix_now};
use keys::{JwksFile, algorithm_name, read_pem_key};
pub use metrics::TokenMetrics;
pub use request::{MAX_TOKEN_BYTES, token_from_request};
use request::{check_token_shape, malformed};
pub use revocation::{DEFAULT_RETENTION, Revocations};

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tribune_protocol::Topic;

use crate::config::AuthConfig;
use crate::error::{AuthError, AuthErrorKind, ConfigError};

/// Shortest HS256 secret: RFC 7518 section 3.2 requires a key at least as
/// long as the hash output (32 bytes).
pub const MIN_SECRET_BYTES: usize = 32;

/// Largest clock-skew allowance; more would make `exp` meaningless.
pub const MAX_LEEWAY_SECS: u64 = 24 * 3600;

/// What a verified token allows.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The `sub` claim, for logs.
    pub subject: Option<String>,
    /// The `exp` claim in Unix seconds: the connection is closed with 1008
    /// after it (plus the configured grace).
    pub expires_at: Option<u64>,
    /// Exact topics or prefixes this token may read.
    pub topics: Vec<String>,
    /// The `jti` claim: revocable by itself.
    pub id: Option<String>,
    /// The `iat` claim in Unix seconds: a user's tokens issued before a
    /// time are revocable together.
    pub issued_at: Option<u64>,
}

impl Grant {
    /// Whether `topic` is granted: one grant is the topic itself or a prefix
    /// of whole tokens (`results.lausanne2020.` or `results.lausanne2020`
    /// covers `results.lausanne2020.speed-skating`, never
    /// `results.lausanne2020x.speed-skating`).
    pub fn allows(&self, topic: &Topic) -> bool {
        self.topics.iter().any(|grant| topic.is_under(grant))
    }
}

/// Verifies tokens against the configured key; cheap to clone and share.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithm", &self.inner.algorithm)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// The one accepted algorithm.
    algorithm: Algorithm,
    /// Its JOSE name, compared with the header's `alg` before anything else.
    algorithm_name: &'static str,
    /// Claim checks handed to `jsonwebtoken` (algorithm, exp, nbf, aud).
    validation: Validation,
    /// Where the verifying key comes from.
    keys: KeySource,
    /// Refuse tokens without `exp`.
    require_exp: bool,
    /// Longest lifetime accepted (`exp` minus `iat`, or minus now without
    /// `iat`), in seconds; 0 for no maximum.
    max_lifetime_secs: u64,
}

enum KeySource {
    /// An HS256 secret or one PEM public key: fixed for the life of the node.
    Single(Arc<DecodingKey>),
    /// A JWKS file, reloaded when it changes, so that keys rotate without a
    /// restart.
    Jwks(JwksFile),
}

impl Authenticator {
    /// Builds the verifier from the `[auth]` section. `Ok(None)` when no key
    /// is configured: tokens are then not checked at all.
    ///
    /// Reads the PEM or JWKS file (I/O). The error is the one line printed by
    /// `--check-config`.
    pub fn from_config(cfg: &AuthConfig) -> Result<Option<Authenticator>, ConfigError> {
        let sources = [
            cfg.secret.is_some(),
            cfg.public_key_file.is_some(),
            cfg.jwks_file.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count();
        if sources == 0 {
            // An algorithm or audience without a key is a configuration that
            // looks protected and is not: refuse it rather than run open.
            if cfg.algorithm.is_some() || cfg.audience.is_some() || cfg.issuer.is_some() {
                return Err(ConfigError::invalid(
                    "auth: algorithm, audience or issuer set without a key \
                     (secret, public_key_file or jwks_file)",
                ));
            }
            return Ok(None);
        }
        if sources > 1 {
            return Err(ConfigError::invalid(
                "auth: set only one of secret, public_key_file, jwks_file",
            ));
        }
        if cfg.leeway_secs > MAX_LEEWAY_SECS {
            return Err(ConfigError::invalid(format!(
                "auth.leeway_secs must be at most {MAX_LEEWAY_SECS}"
            )));
        }
        let algorithm = match cfg.algorithm.as_deref() {
            None if cfg.secret.is_some() => Algorithm::HS256,
            None => {
                return Err(ConfigError::invalid(
                    "auth.algorithm is required with a key file (RS256, ES256, EdDSA or HS256)",
                ));
            }
            Some("HS256") => Algorithm::HS256,
            Some("RS256") => Algorithm::RS256,
            Some("ES256") => Algorithm::ES256,
            Some("EdDSA") => Algorithm::EdDSA,
            Some(other) => {
                return Err(ConfigError::invalid(format!(
                    "auth.algorithm '{other}' is not supported: use HS256, RS256, ES256 or EdDSA"
                )));
            }
        };

        let keys = if let Some(secret) = &cfg.secret {
            if algorithm != Algorithm::HS256 {
                return Err(ConfigError::invalid(
                    "auth.secret goes with algorithm HS256 only",
                ));
            }
            if secret.len() < MIN_SECRET_BYTES {
                return Err(ConfigError::invalid(format!(
                    "auth.secret must be at least {MIN_SECRET_BYTES} bytes (RFC 7518 section 3.2)"
                )));
            }
            KeySource::Single(Arc::new(DecodingKey::from_secret(secret.as_bytes())))
        } else if let Some(path) = &cfg.public_key_file {
            KeySource::Single(Arc::new(read_pem_key(path, algorithm)?))
        } else if let Some(path) = &cfg.jwks_file {
            KeySource::Jwks(JwksFile::open(path.clone(), algorithm)?)
        } else {
            unreachable!("one key source is set")
        };

        let mut validation = Validation::new(algorithm);
        validation.leeway = cfg.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // `exp` is checked when present; whether it must be there is this
        // file's rule (`require_exp`), so that its refusal names the rule.
        let mut required = Vec::new();
        match &cfg.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // No audience configured: `aud` means nothing to this hub.
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &cfg.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);

        Ok(Some(Authenticator {
            inner: Arc::new(Inner {
                algorithm,
                algorithm_name: algorithm_name(algorithm),
                validation,
                keys,
                require_exp: cfg.require_exp,
                max_lifetime_secs: cfg.max_lifetime_secs,
            }),
        }))
    }

    /// Verifies a token: its algorithm (only the configured one), its
    /// signature, `exp`/`nbf` with leeway, `aud` and `iss` when configured,
    /// the lifetime policy; returns what it grants.
    ///
    /// With a JWKS file this may look at the file (one `stat` at most once a
    /// second, a read when it changed): cheap enough for the handshake path.
    pub fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        check_token_shape(token)?;
        let header = peek_header(token)?;
        if header.alg != self.inner.algorithm_name {
            return Err(AuthError::from(AuthErrorKind::WrongAlgorithm));
        }
        let key = match &self.inner.keys {
            KeySource::Single(key) => key.clone(),
            KeySource::Jwks(jwks) => jwks.key_for(header.kid.as_deref())?,
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.inner.validation)
            .map_err(|err| from_jwt_error(err.into_kind()))?;
        let claims = data.claims;
        let expires_at = claims.exp.as_ref().and_then(numeric_date);
        let issued_at = claims.iat.as_ref().and_then(numeric_date);
        self.check_lifetime(expires_at, issued_at)?;
        Ok(Grant {
            subject: claims.sub,
            expires_at,
            topics: claims.topics.unwrap_or_default(),
            id: claims.jti,
            issued_at,
        })
    }

    /// `require_exp` and `max_lifetime_secs`.
    fn check_lifetime(&self, exp: Option<u64>, iat: Option<u64>) -> Result<(), AuthError> {
        let max = self.inner.max_lifetime_secs;
        let Some(exp) = exp else {
            if self.inner.require_exp || max > 0 {
                return Err(AuthErrorKind::MissingExp.into());
            }
            return Ok(());
        };
        if max > 0 {
            // Without `iat`, what is left of the token is its lifetime here.
            let from = iat.unwrap_or_else(unix_now);
            let lifetime = exp.saturating_sub(from);
            if lifetime > max {
                return Err(AuthError::new(
                    AuthErrorKind::LifetimeTooLong,
                    format!(
                        "token lifetime {lifetime} s is over the maximum of {max} s \
                         (auth.max_lifetime_secs)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The `kid` of a token's header, unverified, for the audit log: which key a
/// refused token named (a rotated-out key, or a forger's guess). `None` when
/// the token is not shaped like one or names no key.
pub fn key_id(token: &str) -> Option<String> {
    check_token_shape(token).ok()?;
    peek_header(token).ok()?.kid
}

/// The claims this hub reads; the others are ignored.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    /// A JWT NumericDate may carry a fraction; `jsonwebtoken` checks it.
    #[serde(default)]
    exp: Option<serde_json::Number>,
    #[serde(default)]
    iat: Option<serde_json::Number>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    topics: Option<Vec<String>>,
}

fn numeric_date(n: &serde_json::Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// The header fields read before verification.
#[derive(Deserialize)]
struct PeekedHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Reads `alg` and `kid` from the header without trusting anything else in it
/// (an embedded `jwk` or `jku` is never used). Done here rather than by
/// `jsonwebtoken` so that `none` or an unknown name is reported as the wrong
/// algorithm, not as a parse error.
///
/// Also insists that header and claims are UTF-8 text (RFC 7519 section 7.2):
/// serde skips unknown fields without looking at their bytes, so without this
/// check a token holding invalid UTF-8 in a claim nobody reads would pass.
fn peek_header(token: &str) -> Result<PeekedHeader, AuthError> {
    let mut segments = token.split('.');
    let mut text = |part: &str| -> Result<String, AuthError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(segments.next().unwrap_or_default())
            .map_err(|_| malformed(format!("{part}: not base64url")))?;
        String::from_utf8(bytes).map_err(|_| malformed(format!("{part}: not UTF-8")))
    };
    let header = text("header")?;
    text("claims")?;
    serde_json::from_str(&header)
        .map_err(|_| malformed("header is not a JSON object with a string alg"))
}

/// What `jsonwebtoken`'s refusal means to the fan.
fn from_jwt_error(kind: ErrorKind) -> AuthError {
    let refused = match kind {
        ErrorKind::ExpiredSignature => AuthErrorKind::Expired,
        ErrorKind::ImmatureSignature => AuthErrorKind::NotYetValid,
        ErrorKind::InvalidSignature => AuthErrorKind::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthErrorKind::WrongAlgorithm
        }
        ErrorKind::InvalidAudience => AuthErrorKind::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthErrorKind::WrongAudience,
        ErrorKind::InvalidIssuer => AuthErrorKind::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthErrorKind::WrongIssuer,
        // A key that the crypto backend cannot use (a bad JWK, say): the
        // token cannot be verified, and the operator must hear of it.
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => {
            tracing::warn!(error = ?kind, "auth: configured key cannot verify tokens");
            AuthErrorKind::BadSignature
        }
        ErrorKind::Base64(_) => return malformed("a part is not base64url"),
        ErrorKind::Json(err) => return malformed(format!("claims: {err}")),
        ErrorKind::Utf8(_) => return malformed("claims are not UTF-8"),
        ErrorKind::InvalidClaimFormat(claim) => {
            return malformed(format!("claim '{claim}' has the wrong type"));
        }
        ErrorKind::MissingRequiredClaim(claim) => {
            return malformed(format!("claim '{claim}' is missing"));
        }
        other => return malformed(format!("{other:?}")),
    };
    refused.into()
}
