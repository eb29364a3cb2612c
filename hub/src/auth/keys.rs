//! The keys that verify tokens: one PEM public key, or a JWKS file read
//! again when it changes (checked at most once a second), keeping only the
//! keys usable with the configured algorithm.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::{Mutex, RwLock};

use crate::error::{AuthError, AuthErrorKind, ConfigError, ConfigErrorKind};

/// How often a JWKS file is looked at for changes, at most.
pub(super) const JWKS_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The name of an algorithm as configured and as tokens carry it.
pub(super) fn algorithm_name(algorithm: Algorithm) -> &'static str {
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
pub(super) fn read_pem_key(path: &Path, algorithm: Algorithm) -> Result<DecodingKey, ConfigError> {
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
pub(super) struct JwksFile {
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
    pub(super) fn open(path: PathBuf, algorithm: Algorithm) -> Result<JwksFile, ConfigError> {
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
    pub(super) fn key_for(&self, kid: Option<&str>) -> Result<Arc<DecodingKey>, AuthError> {
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
