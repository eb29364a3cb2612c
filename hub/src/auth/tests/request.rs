//! Tokens in the query or the Authorization header, and the 401 texts.

use super::*;

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
