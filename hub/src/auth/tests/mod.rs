//! The authenticator's tests: claims, algorithms, grants; `jwks`: key files;
//! `request`: where the token travels.

mod jwks;
mod request;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    // A token without exp is refused by default; with `require_exp` off, a
    // token without exp or topics is valid and grants nothing.
    let bare = sign(Algorithm::HS256, &hs_key(), None, &json!({}));
    assert_eq!(
        a.verify(&bare).unwrap_err().kind(),
        AuthErrorKind::MissingExp
    );
    let lax = auth(&AuthConfig {
        require_exp: false,
        ..hs256_config()
    });
    let grant = lax.verify(&bare).unwrap();
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
    assert!(at(json!({"nbf": now() + 20, "exp": now() + 600})).is_ok());
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
    let at = |mut claims: Value| {
        claims["exp"] = json!(now() + 600);
        with_aud.verify(&sign(Algorithm::HS256, &hs_key(), None, &claims))
    };
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
        &json!({"aud": "anything", "exp": now() + 600}),
    );
    assert!(without.verify(&token).is_ok());
}

#[test]
fn policy_refuses_no_exp_a_long_lifetime_and_a_wrong_issuer_naming_the_rule() {
    let strict = auth(&AuthConfig {
        leeway_secs: 0,
        issuer: Some("https://tickets.example.org".into()),
        max_lifetime_secs: 900,
        ..hs256_config()
    });
    let at = |claims: Value| strict.verify(&sign(Algorithm::HS256, &hs_key(), None, &claims));
    let iss = "https://tickets.example.org";
    let ok = at(json!({"iss": iss, "iat": now(), "exp": now() + 600, "jti": "t-1"})).unwrap();
    assert_eq!(ok.id.as_deref(), Some("t-1"));
    assert!(ok.issued_at.is_some());
    let refused = |claims: Value| at(claims).unwrap_err();
    let e = refused(json!({"iss": iss}));
    assert_eq!(
        (e.kind(), e.kind().rule()),
        (AuthErrorKind::MissingExp, "require_exp")
    );
    assert!(e.to_string().contains("auth.require_exp"), "{e}");
    // Over the maximum by `iat`, and by what is left without `iat`.
    let e = refused(json!({"iss": iss, "iat": now() - 600, "exp": now() + 600}));
    assert_eq!(
        (e.kind(), e.kind().rule()),
        (AuthErrorKind::LifetimeTooLong, "max_lifetime")
    );
    assert!(
        e.to_string()
            .contains("1200 s is over the maximum of 900 s"),
        "{e}"
    );
    assert_eq!(
        refused(json!({"iss": iss, "exp": now() + 3600})).kind(),
        AuthErrorKind::LifetimeTooLong
    );
    for claims in [
        json!({"iss": "https://evil.example.org", "exp": now() + 600}),
        json!({"exp": now() + 600}),
    ] {
        let e = refused(claims);
        assert_eq!(
            (e.kind(), e.kind().rule()),
            (AuthErrorKind::WrongIssuer, "issuer")
        );
        assert!(e.to_string().contains("auth.issuer"), "{e}");
    }
    // No issuer configured: `iss` means nothing; a maximum without `exp` is
    // refused for the missing `exp` even where `exp` is not required.
    let open = auth(&AuthConfig {
        require_exp: false,
        max_lifetime_secs: 900,
        ..hs256_config()
    });
    let token = sign(Algorithm::HS256, &hs_key(), None, &json!({"iss": "x"}));
    assert_eq!(
        open.verify(&token).unwrap_err().kind(),
        AuthErrorKind::MissingExp
    );
    let token = sign(
        Algorithm::HS256,
        &hs_key(),
        None,
        &json!({"iss": "x", "exp": now() + 60}),
    );
    assert!(open.verify(&token).is_ok());
    // A token's text never reaches the message.
    let token = sign(Algorithm::HS256, &hs_key(), None, &json!({"iss": iss}));
    assert!(
        !strict
            .verify(&token)
            .unwrap_err()
            .to_string()
            .contains(&token)
    );
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
        id: None,
        issued_at: None,
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
