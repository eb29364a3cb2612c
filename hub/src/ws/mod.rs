//! The hub's own websocket (RFC 6455) and permessage-deflate (RFC 7692):
//! the upgrade, reading a client's frames, writing pre-built frames.
//!
//! Why not the websocket library: it frames every message again for every
//! connection (one copy and, at low rates, one `sendto` per message per
//! connection) and cannot send a frame compressed once for all. Here a
//! frame is built once per message per node ([`Frame`]: header and payload,
//! and its deflated form made on first need) and every connection's writer
//! hands the same bytes to the kernel with vectored writes.
//!
//! Deflate is negotiated with `server_no_context_takeover` (each message
//! compressed alone: the bytes do not depend on what a connection got
//! before, so one compression serves every connection) and
//! `client_no_context_takeover` (each client message inflated alone: no
//! inflate window is kept per connection). An idle connection with deflate
//! costs no more memory than one without.
//!
//! Files: this one (the upgrade: checks, negotiation, the 101 answer);
//! `frame`, the shared frame; `read`, the reader; `write`, the writer.

mod frame;
mod read;
mod write;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub use frame::{Frame, OpCode};

use crate::error::{UpgradeError, UpgradeErrorKind};
pub use read::{Incoming, ReadError, Reader};

pub use write::Writer;

/// The read side of an upgraded socket.
pub type ReadSide = Box<dyn AsyncRead + Send + Unpin>;
/// The write side of an upgraded socket.
pub type WriteSide = Box<dyn AsyncWrite + Send + Unpin>;

/// Splits an upgraded socket for its reader and its writer. A plain TCP
/// socket gives its two owned halves: no lock between reading and writing
/// (tokio's generic split takes one on every poll of either side). Anything
/// else (TLS) is split generically. Also returns the bytes the HTTP layer
/// read past the upgrade request (a client's first frames), which come
/// before anything read from the socket.
pub fn split(upgraded: Upgraded) -> (ReadSide, WriteSide, Bytes) {
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let (read, write) = parts.io.into_inner().into_split();
            (Box::new(read), Box::new(write), parts.read_buf)
        }
        Err(upgraded) => {
            let (read, write) = tokio::io::split(TokioIo::new(upgraded));
            (Box::new(read), Box::new(write), Bytes::new())
        }
    }
}

/// What the extension response says when deflate is accepted.
const DEFLATE_RESPONSE: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// A websocket upgrade request that passed RFC 6455's checks.
pub struct Offer {
    key: HeaderValue,
    subprotocol: bool,
    /// The client offered permessage-deflate with parameters we can honour.
    deflate: bool,
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether one `permessage-deflate` offer can be accepted as we answer it:
/// no parameter we do not know, and no `server_max_window_bits` below 15
/// (the compressor always uses a 32 KiB window).
fn deflate_offer_ok(offer: &str) -> bool {
    let mut parts = offer.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate"))
    {
        return false;
    }
    parts.all(|p| {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (p, None),
        };
        match name {
            "server_no_context_takeover" | "client_no_context_takeover" => value.is_none(),
            "client_max_window_bits" => {
                value.is_none_or(|v| v.parse::<u8>().is_ok_and(|b| (8..=15).contains(&b)))
            }
            "server_max_window_bits" => value.is_some_and(|v| v == "15"),
            _ => false,
        }
    })
}

impl Offer {
    /// Reads an upgrade request; `Err` says what is missing.
    pub fn read(req: &Request) -> Result<Offer, UpgradeError> {
        let h = req.headers();
        if req.method() != axum::http::Method::GET {
            return Err(UpgradeErrorKind::NotGet.into());
        }
        if !has_token(h, header::CONNECTION, "upgrade")
            || !has_token(h, header::UPGRADE, "websocket")
        {
            return Err(UpgradeErrorKind::NoUpgradeHeaders.into());
        }
        if h.get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v != "13")
        {
            return Err(UpgradeErrorKind::WrongVersion.into());
        }
        let key = h
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or(UpgradeError::from(UpgradeErrorKind::NoKey))?
            .clone();
        let subprotocol = has_token(
            h,
            header::SEC_WEBSOCKET_PROTOCOL,
            tribune_protocol::SUBPROTOCOL,
        );
        let deflate = h
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(deflate_offer_ok);
        Ok(Offer {
            key,
            subprotocol,
            deflate,
        })
    }

    /// Whether the client offered deflate we can accept.
    pub fn deflate(&self) -> bool {
        self.deflate
    }

    /// The `101 Switching Protocols` answer; `deflate`: deflate accepted.
    pub fn accept(&self, deflate: bool) -> Response {
        let accept =
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        let mut res = Response::new(axum::body::Body::empty());
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = res.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).expect("base64 is a header value"),
        );
        if self.subprotocol {
            h.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(tribune_protocol::SUBPROTOCOL),
            );
        }
        if deflate && self.deflate {
            h.insert(
                header::SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_static(DEFLATE_RESPONSE),
            );
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: &[(&str, &str)]) -> Request {
        let mut b = axum::http::Request::get("/v1/ws")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn accepts_rfc_6455_sample_and_echoes_subprotocol() {
        let offer = Offer::read(&request(&[("sec-websocket-protocol", "x, tribune.v1")])).unwrap();
        let res = offer.accept(true);
        assert_eq!(res.status(), 101);
        assert_eq!(
            res.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            "RFC 6455 section 1.3's example"
        );
        assert_eq!(res.headers()["sec-websocket-protocol"], "tribune.v1");
        assert!(
            res.headers().get("sec-websocket-extensions").is_none(),
            "not offered"
        );
    }

    #[test]
    fn deflate_offers() {
        for (offer, ok) in [
            ("permessage-deflate; client_max_window_bits", true),
            ("permessage-deflate", true),
            (
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
                true,
            ),
            ("permessage-deflate; client_max_window_bits=10", true),
            ("permessage-deflate; server_max_window_bits=10", false),
            (
                "permessage-deflate; server_max_window_bits=10, permessage-deflate",
                true,
            ),
            ("x-webkit-deflate-frame", false),
            ("permessage-deflate; unknown", false),
        ] {
            let o = Offer::read(&request(&[("sec-websocket-extensions", offer)])).unwrap();
            assert_eq!(o.deflate(), ok, "{offer}");
            let res = o.accept(true);
            assert_eq!(
                res.headers().get("sec-websocket-extensions").is_some(),
                ok,
                "{offer}"
            );
            assert!(
                o.accept(false)
                    .headers()
                    .get("sec-websocket-extensions")
                    .is_none()
            );
        }
    }

    #[test]
    fn not_upgrades() {
        let mut no_key = request(&[]);
        no_key.headers_mut().remove("sec-websocket-key");
        let mut old = request(&[]);
        old.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("8"));
        let mut plain = request(&[]);
        plain.headers_mut().remove("upgrade");
        let kinds: Vec<UpgradeErrorKind> = [no_key, old, plain]
            .iter()
            .map(|r| Offer::read(r).err().unwrap().kind())
            .collect();
        assert_eq!(
            kinds,
            [
                UpgradeErrorKind::NoKey,
                UpgradeErrorKind::WrongVersion,
                UpgradeErrorKind::NoUpgradeHeaders
            ]
        );
    }
}
