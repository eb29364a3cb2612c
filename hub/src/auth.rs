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
//! Claims: `sub` (optional, shown in logs), `exp` and `nbf` (optional, checked
//! with the configured leeway), `aud` (required and checked only when an
//! audience is configured) and `topics`, an array of exact topics or prefixes
//! (`"results.lausanne2020."`).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use tribune_protocol::Topic;

use crate::config::AuthConfig;
use crate::error::{AuthError, AuthErrorKind, ConfigError, ConfigErrorKind};

/// Longest token accepted, in bytes. Real tokens are well under 2 KiB; the
/// bound keeps a hostile handshake from costing more than a small request.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Shortest HS256 secret: RFC 7518 section 3.2 requires a key at least as
/// long as the hash output (32 bytes).
pub const MIN_SECRET_BYTES: usize = 32;

/// Largest clock-skew allowance; more would make `exp` meaningless.
pub const MAX_LEEWAY_SECS: u64 = 24 * 3600;

/// How often a JWKS file is looked at for changes, at most.
const JWKS_CHECK_INTERVAL: Duration = Duration::from_secs(1);

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
            if cfg.algorithm.is_some() || cfg.audience.is_some() {
                return Err(ConfigError::invalid(
                    "auth: algorithm or audience set without a key \
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
        // `exp` is checked when present but not required: a deployment may
        // hand out tokens for a whole event and revoke by rotating keys.
        validation.required_spec_claims.clear();
        match &cfg.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.set_required_spec_claims(&["aud"]);
            }
            // No audience configured: `aud` means nothing to this hub.
            None => validation.validate_aud = false,
        }

        Ok(Some(Authenticator {
            inner: Arc::new(Inner {
                algorithm,
                algorithm_name: algorithm_name(algorithm),
                validation,
                keys,
            }),
        }))
    }

    /// Verifies a token: its algorithm (only the configured one), its
    /// signature, `exp`/`nbf` with leeway, `aud` when configured; returns what
    /// it grants.
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
        Ok(Grant {
            subject: claims.sub,
            expires_at: claims.exp.as_ref().and_then(numeric_date),
            topics: claims.topics.unwrap_or_default(),
        })
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

/// Three base64url segments, within the size bound. Cheap, and it keeps
/// obvious garbage away from the decoder.
fn check_token_shape(token: &str) -> Result<(), AuthError> {
    if token.is_empty() {
        return Err(malformed("empty token"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(malformed(format!(
            "token longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(malformed("token holds characters outside base64url"));
    }
    if token.bytes().filter(|b| *b == b'.').count() != 2 {
        return Err(malformed("token must have three dot-separated parts"));
    }
    Ok(())
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

/// A token that is not one: `malformed token: <what>`.
fn malformed(what: impl Into<String>) -> AuthError {
    AuthError::new(
        AuthErrorKind::Malformed,
        format!("malformed token: {}", what.into()),
    )
}

fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        // `from_config` builds no other.
        _ => "unsupported",
    }
}

/// Reads a PEM public key for `algorithm` (I/O).
fn read_pem_key(path: &Path, algorithm: Algorithm) -> Result<DecodingKey, ConfigError> {
    let pem = fs::read(path).map_err(|e| ConfigError::unreadable(path, e))?;
    let key = match algorithm {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => DecodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
        _ => {
            return Err(ConfigError::invalid(
                "auth.public_key_file goes with RS256, ES256 or EdDSA",
            ));
        }
    };
    key.map_err(|e| {
        let message = format!(
            "{}: not a {} public key in PEM",
            path.display(),
            algorithm_name(algorithm)
        );
        ConfigError::with_source(ConfigErrorKind::Malformed, message, e)
    })
}

/// A JWKS file and the keys last read from it.
struct JwksFile {
    /// The file, as configured.
    path: PathBuf,
    /// Only keys usable with this algorithm are kept.
    algorithm: Algorithm,
    /// The usable keys and the file state they were read from.
    state: RwLock<JwksState>,
    /// When the file may next be looked at; `try_lock`ed so that concurrent
    /// handshakes never queue behind a reload.
    next_check: Mutex<Instant>,
}

/// The usable keys of a JWKS, each with its `kid`.
type KeyRing = Vec<(Option<String>, Arc<DecodingKey>)>;

struct JwksState {
    keys: KeyRing,
    /// What the file looked like when last read, successfully or not, so a
    /// broken file is reported once rather than every second.
    stamp: Option<FileStamp>,
}

/// Enough of a file's metadata to tell that it changed: an atomic replace
/// (write then rename) changes the inode, an in-place write the mtime or size.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    fn of(meta: &fs::Metadata) -> FileStamp {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
        }
    }
}

impl JwksFile {
    /// Reads the file once; a node does not start with a JWKS it cannot use.
    fn open(path: PathBuf, algorithm: Algorithm) -> Result<JwksFile, ConfigError> {
        let stamp = fs::metadata(&path)
            .map(|m| FileStamp::of(&m))
            .map_err(|e| ConfigError::unreadable(&path, e))?;
        let keys = read_jwks(&path, algorithm)?;
        if keys.is_empty() {
            return Err(ConfigError::invalid(format!(
                "{}: no key usable with {}",
                path.display(),
                algorithm_name(algorithm)
            )));
        }
        Ok(JwksFile {
            path,
            algorithm,
            state: RwLock::new(JwksState {
                keys,
                stamp: Some(stamp),
            }),
            next_check: Mutex::new(Instant::now() + JWKS_CHECK_INTERVAL),
        })
    }

    /// The key for a token's `kid`; a token without `kid` is accepted only
    /// when the set holds exactly one usable key.
    fn key_for(&self, kid: Option<&str>) -> Result<Arc<DecodingKey>, AuthError> {
        self.reload_if_changed();
        let state = self.state.read();
        match kid {
            Some(kid) => state
                .keys
                .iter()
                .find(|(id, _)| id.as_deref() == Some(kid))
                .map(|(_, key)| key.clone())
                .ok_or_else(|| AuthErrorKind::NoKey.into()),
            None if state.keys.len() == 1 => Ok(state.keys[0].1.clone()),
            None => Err(AuthError::from(AuthErrorKind::NoKey)),
        }
    }

    /// Looks at the file at most once per [`JWKS_CHECK_INTERVAL`] and
    /// rereads it when it changed (I/O). A file that cannot be read or parsed
    /// leaves the current keys in place: a half-written file must not lock
    /// every fan out.
    fn reload_if_changed(&self) {
        let now = Instant::now();
        {
            let Some(mut next) = self.next_check.try_lock() else {
                return;
            };
            if now < *next {
                return;
            }
            *next = now + JWKS_CHECK_INTERVAL;
        }
        let stamp = match fs::metadata(&self.path) {
            Ok(meta) => FileStamp::of(&meta),
            Err(err) => {
                let mut state = self.state.write();
                if state.stamp.take().is_some() {
                    tracing::warn!(path = %self.path.display(), %err, "auth: JWKS file unreadable; keeping the current keys");
                }
                return;
            }
        };
        if self.state.read().stamp.as_ref() == Some(&stamp) {
            return;
        }
        let result = read_jwks(&self.path, self.algorithm);
        let mut state = self.state.write();
        state.stamp = Some(stamp);
        match result {
            Ok(keys) => {
                if keys.is_empty() {
                    tracing::warn!(path = %self.path.display(), "auth: JWKS file holds no usable key; every token is refused");
                } else {
                    tracing::info!(path = %self.path.display(), keys = keys.len(), "auth: JWKS reloaded");
                }
                state.keys = keys;
            }
            Err(err) => {
                tracing::warn!(path = %self.path.display(), err = %format_args!("{err:#}"), "auth: JWKS file invalid; keeping the current keys");
            }
        }
    }
}

/// Reads a JWKS file and keeps the keys usable with `algorithm` (I/O).
fn read_jwks(path: &Path, algorithm: Algorithm) -> Result<KeyRing, ConfigError> {
    let text = fs::read(path).map_err(|e| ConfigError::unreadable(path, e))?;
    let set: JwkSet = serde_json::from_slice(&text).map_err(|e| {
        let message = format!("{}: not a JWKS", path.display());
        ConfigError::with_source(ConfigErrorKind::Malformed, message, e)
    })?;
    let mut keys = Vec::with_capacity(set.keys.len());
    for jwk in &set.keys {
        if !jwk_fits(jwk, algorithm) {
            continue;
        }
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => keys.push((jwk.common.key_id.clone(), Arc::new(key))),
            Err(err) => {
                tracing::warn!(path = %path.display(), kid = ?jwk.common.key_id, %err, "auth: JWKS key skipped")
            }
        }
    }
    Ok(keys)
}

/// Whether a JWK can verify `algorithm` signatures: right key type and
/// curve, not marked for encryption, and no other `alg` declared.
fn jwk_fits(jwk: &Jwk, algorithm: Algorithm) -> bool {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return false;
    }
    let declared_ok = match jwk.common.key_algorithm {
        None => true,
        Some(declared) => {
            declared
                == match algorithm {
                    Algorithm::HS256 => KeyAlgorithm::HS256,
                    Algorithm::RS256 => KeyAlgorithm::RS256,
                    Algorithm::ES256 => KeyAlgorithm::ES256,
                    Algorithm::EdDSA => KeyAlgorithm::EdDSA,
                    _ => return false,
                }
        }
    };
    declared_ok
        && match (&jwk.algorithm, algorithm) {
            (AlgorithmParameters::OctetKey(_), Algorithm::HS256) => true,
            (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
            (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => {
                p.curve == EllipticCurve::P256
            }
            (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
                p.curve == EllipticCurve::Ed25519
            }
            _ => false,
        }
}

/// The token a handshake carries: the `token` query parameter
/// (percent-decoded) or an `Authorization: Bearer` header. `Ok(None)` when
/// there is none; an error for a token that is there but unusable (bad
/// percent-encoding, empty, not base64url, given twice with different values).
///
/// Another authorization scheme (`Basic` from a proxy in front of the hub) is
/// not ours and is ignored.
pub fn token_from_request(
    query: Option<&str>,
    authorization: Option<&[u8]>,
) -> Result<Option<String>, AuthError> {
    let from_query = match query {
        Some(query) => token_from_query(query)?,
        None => None,
    };
    let from_header = match authorization {
        Some(value) => token_from_authorization(value)?,
        None => None,
    };
    match (from_query, from_header) {
        (Some(q), Some(h)) if q != h => Err(malformed(
            "different tokens in the query and the Authorization header",
        )),
        (Some(token), _) | (None, Some(token)) => Ok(Some(token)),
        (None, None) => Ok(None),
    }
}

fn token_from_query(query: &str) -> Result<Option<String>, AuthError> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let mut found: Option<String> = None;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        // Other parameters are not ours: a broken encoding there is ignored.
        let is_token = name == "token"
            || (name.contains('%') && percent_decode(name).ok().as_deref() == Some("token"));
        if !is_token {
            continue;
        }
        if found.is_some() {
            return Err(malformed("token given more than once in the query"));
        }
        let token = percent_decode(value)?;
        check_token_shape(&token)?;
        found = Some(token);
    }
    Ok(found)
}

fn token_from_authorization(value: &[u8]) -> Result<Option<String>, AuthError> {
    let value = std::str::from_utf8(value)
        .map_err(|_| malformed("Authorization header is not text"))?
        .trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim_start_matches([' ', '\t']);
    check_token_shape(token)?;
    Ok(Some(token.to_string()))
}

/// Percent-decodes a query component (`+` is a space, as in HTML forms).
fn percent_decode(text: &str) -> Result<String, AuthError> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let decoded = bytes
                    .get(i + 1)
                    .and_then(|h| hex(*h))
                    .zip(bytes.get(i + 2).and_then(|l| hex(*l)))
                    .map(|(h, l)| (h << 4) | l)
                    .ok_or_else(|| malformed("bad percent-encoding in the query"))?;
                out.push(decoded);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| malformed("query token is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::{Value, json};

    const SECRET: &str = "an HS256 secret of at least 32 bytes, for tests";

    fn keys_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
    }

    fn read_key(name: &str) -> Vec<u8> {
        fs::read(keys_dir().join(name)).unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(String::from);
        encode(&header, claims, key).unwrap()
    }

    fn hs_key() -> EncodingKey {
        EncodingKey::from_secret(SECRET.as_bytes())
    }

    fn hs256_config() -> AuthConfig {
        AuthConfig {
            secret: Some(SECRET.into()),
            leeway_secs: 60,
            ..AuthConfig::default()
        }
    }

    fn auth(cfg: &AuthConfig) -> Authenticator {
        Authenticator::from_config(cfg).unwrap().unwrap()
    }

    fn claims() -> Value {
        json!({"sub": "fan-42", "exp": now() + 600, "topics": ["results.lausanne2020."]})
    }

    fn topic(name: &str) -> Topic {
        Topic::new(name).unwrap()
    }

    /// A token with any header and claims and a garbage signature.
    fn forged(header: &Value, claims: &Value, signature: &str) -> String {
        format!(
            "{}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    /// Why a verification failed, if it did.
    fn refusal<T>(result: Result<T, AuthError>) -> Option<AuthErrorKind> {
        result.err().map(|e| e.kind())
    }

    fn pem_config(alg: &str, file: &str) -> AuthConfig {
        AuthConfig {
            algorithm: Some(alg.into()),
            public_key_file: Some(keys_dir().join(file)),
            ..AuthConfig::default()
        }
    }

    #[test]
    fn no_key_means_no_checks() {
        assert!(
            Authenticator::from_config(&AuthConfig::default())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn valid_hs256_token_grants_its_claims() {
        let a = auth(&hs256_config());
        let exp = now() + 600;
        let token = sign(
            Algorithm::HS256,
            &hs_key(),
            None,
            &json!({"sub": "fan-42", "exp": exp, "topics": ["results.lausanne2020.", "clips.x"]}),
        );
        let grant = a.verify(&token).unwrap();
        assert_eq!(grant.subject.as_deref(), Some("fan-42"));
        assert_eq!(grant.expires_at, Some(exp));
        assert_eq!(grant.topics, ["results.lausanne2020.", "clips.x"]);
        // A token without exp or topics is valid and grants nothing.
        let bare = sign(Algorithm::HS256, &hs_key(), None, &json!({}));
        let grant = a.verify(&bare).unwrap();
        assert_eq!(grant.expires_at, None);
        assert!(grant.topics.is_empty());
        assert!(!grant.allows(&topic("results.lausanne2020.x")));
    }

    #[test]
    fn valid_rs256_es256_eddsa_tokens() {
        for (alg, name, private, public) in [
            (
                Algorithm::RS256,
                "RS256",
                "rsa.private.pem",
                "rsa.public.pem",
            ),
            (Algorithm::ES256, "ES256", "ec.private.pem", "ec.public.pem"),
            (Algorithm::EdDSA, "EdDSA", "ed.private.pem", "ed.public.pem"),
        ] {
            let pem = read_key(private);
            let key = match alg {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
                Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
                _ => EncodingKey::from_ed_pem(&pem),
            }
            .unwrap();
            let a = auth(&pem_config(name, public));
            let grant = a.verify(&sign(alg, &key, None, &claims())).unwrap();
            assert_eq!(grant.subject.as_deref(), Some("fan-42"), "{name}");
            assert!(
                grant.allows(&topic("results.lausanne2020.speed-skating")),
                "{name}"
            );
            // The same token with one claim changed no longer verifies.
            let token = sign(alg, &key, None, &claims());
            let mut parts: Vec<&str> = token.split('.').collect();
            let tampered_claims = URL_SAFE_NO_PAD.encode(
                json!({"sub": "fan-42", "exp": now() + 600, "topics": ["results."]}).to_string(),
            );
            parts[1] = &tampered_claims;
            assert_eq!(
                a.verify(&parts.join(".")).unwrap_err().kind(),
                AuthErrorKind::BadSignature,
                "{name}"
            );
        }
    }

    #[test]
    fn expired_and_not_yet_valid_with_leeway() {
        let a = auth(&hs256_config());
        let at = |claims: Value| a.verify(&sign(Algorithm::HS256, &hs_key(), None, &claims));
        assert_eq!(
            at(json!({"exp": now() - 3600})).unwrap_err().kind(),
            AuthErrorKind::Expired
        );
        assert_eq!(
            at(json!({"nbf": now() + 3600})).unwrap_err().kind(),
            AuthErrorKind::NotYetValid
        );
        // Within the 60 s leeway both pass.
        assert!(at(json!({"exp": now() - 20})).is_ok());
        assert!(at(json!({"nbf": now() + 20})).is_ok());
        // Without leeway the same expired token is refused.
        let strict = auth(&AuthConfig {
            leeway_secs: 0,
            ..hs256_config()
        });
        let token = sign(
            Algorithm::HS256,
            &hs_key(),
            None,
            &json!({"exp": now() - 20}),
        );
        assert_eq!(
            strict.verify(&token).unwrap_err().kind(),
            AuthErrorKind::Expired
        );
        // A fractional NumericDate is read.
        let exp = now() + 100;
        let token = sign(
            Algorithm::HS256,
            &hs_key(),
            None,
            &json!({"exp": exp as f64 + 0.5}),
        );
        assert_eq!(strict.verify(&token).unwrap().expires_at, Some(exp));
    }

    #[test]
    fn wrongly_signed_tokens_are_refused() {
        let a = auth(&hs256_config());
        let other = EncodingKey::from_secret(b"another secret that is also 32+ bytes long");
        let token = sign(Algorithm::HS256, &other, None, &claims());
        assert_eq!(
            a.verify(&token).unwrap_err().kind(),
            AuthErrorKind::BadSignature
        );
        let es = auth(&pem_config("ES256", "ec.public.pem"));
        let other_ec = EncodingKey::from_ec_pem(&read_key("ec2.private.pem")).unwrap();
        let token = sign(Algorithm::ES256, &other_ec, None, &claims());
        assert_eq!(
            es.verify(&token).unwrap_err().kind(),
            AuthErrorKind::BadSignature
        );
        // A correct header and claims with an empty or garbage signature.
        let forged_token = forged(&json!({"alg": "HS256", "typ": "JWT"}), &claims(), "");
        assert_eq!(
            a.verify(&forged_token).unwrap_err().kind(),
            AuthErrorKind::BadSignature
        );
        let forged_token = forged(&json!({"alg": "HS256"}), &claims(), "c2lnbmF0dXJl");
        assert_eq!(
            a.verify(&forged_token).unwrap_err().kind(),
            AuthErrorKind::BadSignature
        );
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let a = auth(&hs256_config());
        for alg in ["none", "None", "NONE", "HS512", "RS256", "", "hs256"] {
            let token = forged(&json!({"alg": alg, "typ": "JWT"}), &claims(), "");
            assert_eq!(
                a.verify(&token).unwrap_err().kind(),
                AuthErrorKind::WrongAlgorithm,
                "{alg}"
            );
        }
        // Really signed with HS512 and the right secret: still refused.
        let token = sign(Algorithm::HS512, &hs_key(), None, &claims());
        assert_eq!(
            a.verify(&token).unwrap_err().kind(),
            AuthErrorKind::WrongAlgorithm
        );
        // Key confusion: the RSA public key used as an HS256 secret.
        let rs = auth(&pem_config("RS256", "rsa.public.pem"));
        let confused = EncodingKey::from_secret(&read_key("rsa.public.pem"));
        let token = sign(Algorithm::HS256, &confused, None, &claims());
        assert_eq!(
            rs.verify(&token).unwrap_err().kind(),
            AuthErrorKind::WrongAlgorithm
        );
        // An ES256 token against an EdDSA key.
        let ed = auth(&pem_config("EdDSA", "ed.public.pem"));
        let ec = EncodingKey::from_ec_pem(&read_key("ec.private.pem")).unwrap();
        let token = sign(Algorithm::ES256, &ec, None, &claims());
        assert_eq!(
            ed.verify(&token).unwrap_err().kind(),
            AuthErrorKind::WrongAlgorithm
        );
    }

    #[test]
    fn audience_is_checked_only_when_configured() {
        let with_aud = auth(&AuthConfig {
            audience: Some("tribune".into()),
            ..hs256_config()
        });
        let at = |claims: Value| with_aud.verify(&sign(Algorithm::HS256, &hs_key(), None, &claims));
        assert!(at(json!({"aud": "tribune"})).is_ok());
        assert!(at(json!({"aud": ["ticketing", "tribune"]})).is_ok());
        assert_eq!(
            at(json!({"aud": "ticketing"})).unwrap_err().kind(),
            AuthErrorKind::WrongAudience
        );
        assert_eq!(
            at(json!({"aud": ["a", "b"]})).unwrap_err().kind(),
            AuthErrorKind::WrongAudience
        );
        assert_eq!(
            at(json!({})).unwrap_err().kind(),
            AuthErrorKind::WrongAudience
        );
        let without = auth(&hs256_config());
        let token = sign(
            Algorithm::HS256,
            &hs_key(),
            None,
            &json!({"aud": "anything"}),
        );
        assert!(without.verify(&token).is_ok());
    }

    #[test]
    fn malformed_tokens() {
        let a = auth(&hs256_config());
        for token in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "a b.c.d",
            "%%%.a.b",
            "e30.e30.",
            "eyJhbGciOiJIUzI1NiJ9.!!!.x",
        ] {
            assert!(
                refusal(a.verify(token)) == Some(AuthErrorKind::Malformed),
                "{token:?}: {:?}",
                a.verify(token)
            );
        }
        let long = "a".repeat(MAX_TOKEN_BYTES) + ".b.c";
        assert!(refusal(a.verify(&long)) == Some(AuthErrorKind::Malformed));
        // Claims of the wrong type, correctly signed.
        for bad in [
            json!({"topics": "results.x"}),
            json!({"topics": [1, 2]}),
            json!({"sub": 5}),
            json!({"exp": "tomorrow"}),
        ] {
            let token = sign(Algorithm::HS256, &hs_key(), None, &bad);
            assert!(
                refusal(a.verify(&token)) == Some(AuthErrorKind::Malformed),
                "{bad}"
            );
        }
        // Correctly signed, but a claim nobody reads is not UTF-8.
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#),
            URL_SAFE_NO_PAD.encode(b"{\"x\":\"\xff\",\"sub\":\"s\"}")
        );
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &hs_key(), Algorithm::HS256).unwrap();
        assert_eq!(
            a.verify(&format!("{message}.{signature}"))
                .unwrap_err()
                .to_string(),
            "malformed token: claims: not UTF-8"
        );
        // A JSON array as claims.
        let token = forged(&json!({"alg": "HS256"}), &json!([1]), "x");
        assert!(matches!(
            refusal(a.verify(&token)),
            Some(AuthErrorKind::BadSignature | AuthErrorKind::Malformed)
        ));
    }

    #[test]
    fn topic_grants_exact_and_prefix_never_partial_tokens() {
        let grant = Grant {
            subject: None,
            expires_at: None,
            topics: vec![
                "results.lausanne2020.".into(),
                "clips.lausanne2020.speed-skating".into(),
                "premium".into(),
                "".into(),
                "*".into(),
            ],
        };
        assert!(grant.allows(&topic("results.lausanne2020.speed-skating")));
        assert!(grant.allows(&topic(
            "results.lausanne2020.speed-skating.mixed-team-sprint"
        )));
        assert!(grant.allows(&topic("results.lausanne2020")));
        assert!(grant.allows(&topic("clips.lausanne2020.speed-skating")));
        assert!(grant.allows(&topic("clips.lausanne2020.speed-skating.final")));
        assert!(grant.allows(&topic("premium.anything")));
        assert!(!grant.allows(&topic("results.lausanne2020x.speed-skating")));
        assert!(!grant.allows(&topic("results.lausanne.speed-skating")));
        assert!(!grant.allows(&topic("clips.lausanne2020.speed")));
        assert!(!grant.allows(&topic("clips.lausanne2020.speed-skatingx")));
        assert!(!grant.allows(&topic("clips.lausanne2020")));
        assert!(!grant.allows(&topic("premiumx.a")));
        assert!(!grant.allows(&topic("other.a")));
    }

    /// A scratch directory removed on drop (one per test: tests run in parallel).
    struct ScratchDir(PathBuf);

    impl ScratchDir {
        fn new(test: &str) -> ScratchDir {
            let path =
                std::env::temp_dir().join(format!("tribune-auth-{test}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            ScratchDir(path)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A JWKS document holding the public halves of `(kid, private PEM)` pairs.
    fn jwks(alg: Algorithm, keys: &[(&str, &str)]) -> String {
        let keys: Vec<Jwk> = keys
            .iter()
            .map(|(kid, private)| {
                let encoding = match alg {
                    Algorithm::ES256 => EncodingKey::from_ec_pem(&read_key(private)),
                    Algorithm::RS256 => EncodingKey::from_rsa_pem(&read_key(private)),
                    _ => EncodingKey::from_ed_pem(&read_key(private)),
                }
                .unwrap();
                let mut jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
                jwk.common.key_id = Some(kid.to_string());
                jwk
            })
            .collect();
        serde_json::to_string(&JwkSet { keys }).unwrap()
    }

    /// Replaces the file the way operators should: write aside, then rename.
    fn replace(path: &Path, text: &str) {
        let aside = path.with_extension("tmp");
        fs::write(&aside, text).unwrap();
        fs::rename(&aside, path).unwrap();
    }

    fn jwks_config(alg: &str, path: &Path) -> AuthConfig {
        AuthConfig {
            algorithm: Some(alg.into()),
            jwks_file: Some(path.to_path_buf()),
            ..AuthConfig::default()
        }
    }

    #[test]
    fn jwks_keys_by_kid_and_reload_on_change() {
        let dir = ScratchDir::new("reload");
        let path = dir.path().join("jwks.json");
        replace(&path, &jwks(Algorithm::ES256, &[("one", "ec.private.pem")]));
        let a = auth(&jwks_config("ES256", &path));
        let one = EncodingKey::from_ec_pem(&read_key("ec.private.pem")).unwrap();
        let two = EncodingKey::from_ec_pem(&read_key("ec2.private.pem")).unwrap();
        let by_one = sign(Algorithm::ES256, &one, Some("one"), &claims());
        let by_two = sign(Algorithm::ES256, &two, Some("two"), &claims());
        assert!(a.verify(&by_one).is_ok());
        // A single-key set also serves tokens without kid.
        assert!(
            a.verify(&sign(Algorithm::ES256, &one, None, &claims()))
                .is_ok()
        );
        assert_eq!(a.verify(&by_two).unwrap_err().kind(), AuthErrorKind::NoKey);
        // The right kid with the wrong key's signature.
        let lying = sign(Algorithm::ES256, &two, Some("one"), &claims());
        assert_eq!(
            a.verify(&lying).unwrap_err().kind(),
            AuthErrorKind::BadSignature
        );

        // Rotation: key two joins, then key one leaves.
        replace(
            &path,
            &jwks(
                Algorithm::ES256,
                &[("one", "ec.private.pem"), ("two", "ec2.private.pem")],
            ),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.verify(&by_two).is_err() {
            assert!(Instant::now() < deadline, "JWKS change not picked up");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(a.verify(&by_one).is_ok());
        // Two keys: a token without kid is ambiguous.
        assert_eq!(
            a.verify(&sign(Algorithm::ES256, &one, None, &claims()))
                .unwrap_err()
                .kind(),
            AuthErrorKind::NoKey
        );

        // A broken file keeps the keys in place.
        replace(&path, "{\"keys\": [");
        std::thread::sleep(JWKS_CHECK_INTERVAL + Duration::from_millis(100));
        assert!(a.verify(&by_two).is_ok());
        assert!(a.verify(&by_two).is_ok());

        replace(
            &path,
            &jwks(Algorithm::ES256, &[("two", "ec2.private.pem")]),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.verify(&by_one).is_ok() {
            assert!(Instant::now() < deadline, "JWKS removal not picked up");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(a.verify(&by_one).unwrap_err().kind(), AuthErrorKind::NoKey);
        assert!(a.verify(&by_two).is_ok());
    }

    #[test]
    fn jwks_keeps_only_keys_for_the_algorithm() {
        let dir = ScratchDir::new("filter");
        let path = dir.path().join("jwks.json");
        // An RSA key, an Ed25519 key, an encryption key and an HS256 key.
        let mut set: Value =
            serde_json::from_str(&jwks(Algorithm::RS256, &[("rsa", "rsa.private.pem")])).unwrap();
        let ed: Value =
            serde_json::from_str(&jwks(Algorithm::EdDSA, &[("ed", "ed.private.pem")])).unwrap();
        let mut enc = set["keys"][0].clone();
        enc["kid"] = json!("enc");
        enc["use"] = json!("enc");
        let oct = json!({"kty": "oct", "kid": "oct", "k": URL_SAFE_NO_PAD.encode(SECRET)});
        let keys = set["keys"].as_array_mut().unwrap();
        keys.extend([
            ed["keys"][0].clone(),
            enc,
            oct,
            json!({"kty": "weird", "kid": "w"}),
        ]);
        replace(&path, &set.to_string());

        let rs = auth(&jwks_config("RS256", &path));
        let rsa = EncodingKey::from_rsa_pem(&read_key("rsa.private.pem")).unwrap();
        assert!(
            rs.verify(&sign(Algorithm::RS256, &rsa, Some("rsa"), &claims()))
                .is_ok()
        );
        assert_eq!(
            rs.verify(&sign(Algorithm::RS256, &rsa, Some("enc"), &claims()))
                .unwrap_err()
                .kind(),
            AuthErrorKind::NoKey
        );
        let ed = auth(&jwks_config("EdDSA", &path));
        let ed_key = EncodingKey::from_ed_pem(&read_key("ed.private.pem")).unwrap();
        assert!(
            ed.verify(&sign(Algorithm::EdDSA, &ed_key, Some("ed"), &claims()))
                .is_ok()
        );
        assert!(
            ed.verify(&sign(Algorithm::EdDSA, &ed_key, None, &claims()))
                .is_ok()
        );
        let hs = auth(&jwks_config("HS256", &path));
        assert!(
            hs.verify(&sign(Algorithm::HS256, &hs_key(), Some("oct"), &claims()))
                .is_ok()
        );
        // No ES256 key at all: the node does not start.
        let err = Authenticator::from_config(&jwks_config("ES256", &path)).unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::Invalid);
        assert!(err.to_string().contains("no key usable"), "{err}");
    }

    #[test]
    fn bad_configurations_are_refused() {
        // The line `--check-config` prints.
        let refused =
            |cfg: AuthConfig| format!("{:#}", Authenticator::from_config(&cfg).unwrap_err());
        assert!(
            refused(AuthConfig {
                secret: Some("short".into()),
                ..AuthConfig::default()
            })
            .contains("32 bytes")
        );
        assert!(
            refused(AuthConfig {
                algorithm: Some("HS256".into()),
                ..AuthConfig::default()
            })
            .contains("without a key")
        );
        assert!(
            refused(AuthConfig {
                audience: Some("x".into()),
                ..AuthConfig::default()
            })
            .contains("without a key")
        );
        assert!(
            refused(AuthConfig {
                algorithm: Some("RS256".into()),
                ..hs256_config()
            })
            .contains("HS256 only")
        );
        assert!(
            refused(AuthConfig {
                algorithm: Some("none".into()),
                ..hs256_config()
            })
            .contains("not supported")
        );
        assert!(
            refused(AuthConfig {
                algorithm: Some("HS512".into()),
                ..hs256_config()
            })
            .contains("not supported")
        );
        assert!(
            refused(AuthConfig {
                leeway_secs: u64::MAX,
                ..hs256_config()
            })
            .contains("leeway")
        );
        assert!(
            refused(AuthConfig {
                public_key_file: Some(keys_dir().join("ec.public.pem")),
                ..hs256_config()
            })
            .contains("only one")
        );
        let mut cfg = pem_config("ES256", "ec.public.pem");
        cfg.algorithm = None;
        assert!(refused(cfg).contains("algorithm is required"));
        assert!(refused(pem_config("HS256", "ec.public.pem")).contains("RS256, ES256 or EdDSA"));
        assert!(refused(pem_config("RS256", "ec.public.pem")).contains("not a RS256 public key"));
        assert!(refused(pem_config("ES256", "missing.pem")).contains("cannot read"));
        let dir = ScratchDir::new("config");
        let path = dir.path().join("jwks.json");
        fs::write(&path, "not json").unwrap();
        assert!(refused(jwks_config("ES256", &path)).contains("not a JWKS"));
        assert!(
            refused(jwks_config("ES256", &dir.path().join("none.json"))).contains("cannot read")
        );
    }

    #[test]
    fn token_from_query_and_header() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_";
        let t = |q: Option<&str>, h: Option<&[u8]>| token_from_request(q, h);
        assert_eq!(t(None, None).unwrap(), None);
        assert_eq!(t(Some(""), None).unwrap(), None);
        assert_eq!(t(Some("a=1&b"), None).unwrap(), None);
        assert_eq!(
            t(Some(&format!("token={jwt}")), None).unwrap().as_deref(),
            Some(jwt)
        );
        assert_eq!(
            t(Some(&format!("?token={jwt}")), None).unwrap().as_deref(),
            Some(jwt)
        );
        // Among other parameters, in any place.
        let q = format!("v=1&lang=fr%20CH&token={jwt}&x=%ZZ&tokens=1&mytoken=2");
        assert_eq!(t(Some(&q), None).unwrap().as_deref(), Some(jwt));
        // Percent-encoded value and name.
        let encoded = jwt.replace('.', "%2E").replace('-', "%2d");
        assert_eq!(
            t(Some(&format!("%74oken={encoded}")), None)
                .unwrap()
                .as_deref(),
            Some(jwt)
        );
        // Bearer header, scheme in any case, extra blanks.
        for header in [
            format!("Bearer {jwt}"),
            format!("bearer {jwt}"),
            format!("BEARER  {jwt} "),
            format!("\tBearer\t{jwt}"),
        ] {
            assert_eq!(
                t(None, Some(header.as_bytes())).unwrap().as_deref(),
                Some(jwt),
                "{header:?}"
            );
        }
        // Another scheme is not ours.
        assert_eq!(t(None, Some(b"Basic dXNlcjpwYXNz")).unwrap(), None);
        // The same token in both places is fine; different ones are not.
        let header = format!("Bearer {jwt}");
        assert_eq!(
            t(Some(&format!("token={jwt}")), Some(header.as_bytes()))
                .unwrap()
                .as_deref(),
            Some(jwt)
        );
        assert!(t(Some("token=a.b.c"), Some(header.as_bytes())).is_err());

        for (query, header) in [
            (Some("token="), None),
            (Some("token"), None),
            (Some("token=a.b.%4"), None),
            (Some("token=a.b.%zz"), None),
            (Some("token=a.b.%FF"), None),
            (Some("token=a.b"), None),
            (Some("token=a+b.c.d"), None),
            (Some("token=a.b.c&token=a.b.c"), None),
            (None, Some(&b"Bearer"[..])),
            (None, Some(&b"Bearer "[..])),
            (None, Some(&b"Bearer a.b"[..])),
            (None, Some(&b"Bearer a.b.c d"[..])),
            (None, Some(&b"Bearer \xff.b.c"[..])),
        ] {
            assert!(
                refusal(t(query, header)) == Some(AuthErrorKind::Malformed),
                "{query:?} {header:?}: {:?}",
                t(query, header)
            );
        }
        let long = format!("token={}", "a".repeat(MAX_TOKEN_BYTES) + ".b.c");
        assert!(t(Some(&long), None).is_err());
    }

    #[test]
    fn messages_are_clear_for_the_401_body() {
        assert_eq!(
            AuthError::from(AuthErrorKind::Expired).to_string(),
            "token expired"
        );
        assert!(malformed("x").to_string().contains("malformed token: x"));
        assert!(
            AuthError::from(AuthErrorKind::WrongAlgorithm)
                .to_string()
                .contains("algorithm")
        );
    }
}
