//! Where a handshake carries a token: the `token` query parameter (browsers
//! cannot set headers on a WebSocket) or `Authorization: Bearer`.

use crate::error::{AuthError, AuthErrorKind};

/// Longest token accepted, in bytes. Real tokens are well under 2 KiB; the
/// bound keeps a hostile handshake from costing more than a small request.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A token that is not one: `malformed token: <what>`.
pub(super) fn malformed(what: impl Into<String>) -> AuthError {
    AuthError::new(
        AuthErrorKind::Malformed,
        format!("malformed token: {}", what.into()),
    )
}

/// Three base64url segments, within the size bound. Cheap, and it keeps
/// obvious garbage away from the decoder.
pub(super) fn check_token_shape(token: &str) -> Result<(), AuthError> {
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
