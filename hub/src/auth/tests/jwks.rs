//! Key files: PEM keys, JWKS files by kid and their reload, bad configurations.

use super::*;
use std::time::Instant;

use jsonwebtoken::jwk::{Jwk, JwkSet};

use crate::auth::keys::JWKS_CHECK_INTERVAL;
use crate::error::ConfigErrorKind;

/// A scratch directory removed on drop (one per test: tests run in parallel).
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(test: &str) -> ScratchDir {
        let path = std::env::temp_dir().join(format!("tribune-auth-{test}-{}", std::process::id()));
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
    let refused = |cfg: AuthConfig| format!("{:#}", Authenticator::from_config(&cfg).unwrap_err());
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
    assert!(refused(jwks_config("ES256", &dir.path().join("none.json"))).contains("cannot read"));
}
