//! Issue 8, bad input: one table of hostile or broken client behaviour run
//! against one real hub, while a healthy client on the same node keeps
//! receiving a feed.
//!
//! Each case says what a client does and the outcome PROTOCOL.md promises:
//! an `error` with its code and the request's `id` (and the connection stays
//! open), a close code (section 6), or an HTTP refusal before the upgrade
//! (section 1). After every case one message is published to the healthy
//! client's feed topic; at the end that client must have received every one,
//! in order, with its `prev` chain intact, and never have been closed: no bad
//! input on one connection may cost another connection anything.
//!
//! Every case connects from its own loopback address (Linux routes all of
//! 127.0.0.0/8 to `lo`), so that the per-address handshake limit sees each
//! case apart and only the handshake-flood case trips it. Frames that the
//! harness's `WsClient` cannot send (invalid UTF-8 in a text frame) are
//! written as raw tungstenite frames here.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tribune_tests::hub::ConfigFile;
use tribune_tests::{Hub, WsClient, eventually};

/// HS256 secret of the hub under test (at least 32 bytes, as `auth.rs` requires).
const SECRET: &str = "reliability-suite-hs256-secret-0123456789";
/// Another secret, for a wrongly signed token.
const OTHER_SECRET: &str = "another-hs256-secret-of-at-least-32-bytes";
const AUDIENCE: &str = "fans";
/// The healthy client's feed.
const HEALTHY: &str = "clips.reliability.healthy";
/// Small, so that the connection-limit case fills the node quickly.
const MAX_CONNECTIONS: usize = 24;
/// Per client address; every case has its own address, the flood case trips it.
const HANDSHAKES_PER_SECOND: usize = 10;
/// How long any single expected frame may take.
const WITHIN: Duration = Duration::from_secs(10);
/// The request id of the liveness ping sent after an `error`.
const PING_ID: u64 = 424_242;

fn hub_config() -> String {
    format!(
        r#"
allowed_origins = ["https://fans.example.org"]

[limits]
max_connections = {MAX_CONNECTIONS}
handshakes_per_second = {HANDSHAKES_PER_SECOND}
handshakes_burst = {HANDSHAKES_PER_SECOND}

[auth]
algorithm = "HS256"
secret = "{SECRET}"
audience = "{AUDIENCE}"

[namespaces.premium]
mode = "state"
retained = 1
token = true

[namespaces.cheers]
mode = "feed"
retained = 5
publish = true
"#
    )
}

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

/// How a case connects: query string and extra request headers.
#[derive(Clone, Default)]
struct Hs {
    query: String,
    headers: Vec<(&'static str, Vec<u8>)>,
}

impl Hs {
    fn plain() -> Hs {
        Hs::default()
    }

    fn query(token: &str) -> Hs {
        Hs {
            query: format!("?token={token}"),
            ..Hs::default()
        }
    }

    fn raw_query(query: &str) -> Hs {
        Hs {
            query: query.to_string(),
            ..Hs::default()
        }
    }

    fn header(name: &'static str, value: impl AsRef<[u8]>) -> Hs {
        Hs {
            headers: vec![(name, value.as_ref().to_vec())],
            ..Hs::default()
        }
    }

    fn bearer(token: &str) -> Hs {
        Hs::header("authorization", format!("Bearer {token}"))
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.query.is_empty() {
            parts.push(format!("query `{}`", shorten(&self.query, 40)));
        }
        for (k, v) in &self.headers {
            parts.push(format!(
                "header `{k}: {}`",
                shorten(&String::from_utf8_lossy(v), 40)
            ));
        }
        parts.join(", ")
    }
}

/// What the client does.
enum How {
    /// A fresh connection sends one text frame.
    Send(Hs, String),
    /// Like `Send`, with a token (granting `premium.`) made at run time that
    /// expires this many seconds later.
    SendExpiring(i64, String),
    /// A fresh connection sends one raw websocket message.
    Raw(Message),
    /// A fresh connection sends these text frames back to back, reading nothing.
    Burst(Vec<String>),
    /// Only the handshake.
    Handshake(Hs),
    /// This many handshakes at once from one client address.
    HandshakeFlood(usize),
    /// Connections from fresh addresses until the node refuses one.
    FillToLimit,
}

/// The outcome PROTOCOL.md promises.
#[derive(Clone, Copy)]
enum Expect {
    /// `error` with this code and `id` (null when none could be read); the
    /// connection stays open (a `ping` is answered after it).
    Error(&'static str, Option<u64>),
    /// `ack` with this id; the connection stays open.
    Ack(u64),
    /// `pong` with this id.
    Pong(u64),
    /// The hub closes the connection with this code.
    Close(u16),
    /// HTTP refusal before the upgrade: status and error code of the JSON
    /// body (with `Retry-After` for 429 and 503).
    Refused(u16, &'static str),
    /// The upgrade succeeds and `welcome` arrives.
    Welcome,
    /// `ack` with this id, then a close with this code (a token expiring).
    AckThenClose(u64, u16),
}

impl Expect {
    fn describe(&self) -> String {
        match self {
            Expect::Error(code, Some(id)) => format!("`error` `{code}`, id {id}; stays open"),
            Expect::Error(code, None) => format!("`error` `{code}`, id null; stays open"),
            Expect::Ack(id) => format!("`ack` id {id}; stays open"),
            Expect::Pong(id) => format!("`pong` id {id}"),
            Expect::Close(code) => format!("close {code}"),
            Expect::Refused(status, code) if *status == 429 || *status == 503 => {
                format!("HTTP {status} `{code}` with Retry-After, before the upgrade")
            }
            Expect::Refused(status, code) => format!("HTTP {status} `{code}`, before the upgrade"),
            Expect::Welcome => "upgrade, `welcome`".into(),
            Expect::AckThenClose(id, code) => format!("`ack` id {id}, then close {code}"),
        }
    }
}

struct Case {
    name: &'static str,
    how: How,
    expect: Expect,
    /// What the client does, in words, where the frame or token says little.
    what: Option<&'static str>,
}

impl Case {
    fn what(self, what: &'static str) -> Case {
        Case {
            what: Some(what),
            ..self
        }
    }

    fn does(&self) -> String {
        if let Some(what) = self.what {
            return what.to_string();
        }
        match &self.how {
            How::Send(hs, frame) if hs.query.is_empty() && hs.headers.is_empty() => {
                format!("sends `{}`", shorten(frame, 70))
            }
            How::Send(hs, frame) => format!("{}; sends `{}`", hs.describe(), shorten(frame, 60)),
            How::SendExpiring(secs, frame) => {
                format!(
                    "token expiring {secs} s after the handshake; sends `{}`",
                    shorten(frame, 60)
                )
            }
            How::Raw(msg) => format!("sends a raw {}-byte frame", msg.len()),
            How::Burst(frames) => format!("sends {} frames back to back", frames.len()),
            How::Handshake(hs) => format!("handshake with {}", hs.describe()),
            How::HandshakeFlood(n) => format!("{n} handshakes at once from one address"),
            How::FillToLimit => {
                format!("opens connections past `max_connections` ({MAX_CONNECTIONS})")
            }
        }
    }
}

fn shorten(text: &str, max: usize) -> String {
    let text = text.replace('|', "\\|").replace('\n', " ");
    if text.chars().count() <= max {
        text
    } else {
        let head: String = text.chars().take(max).collect();
        format!("{head}…")
    }
}

fn case(name: &'static str, how: How, expect: Expect) -> Case {
    Case {
        name,
        how,
        expect,
        what: None,
    }
}

/// One frame from a fresh connection without a token.
fn send(name: &'static str, frame: impl Into<String>, expect: Expect) -> Case {
    case(name, How::Send(Hs::plain(), frame.into()), expect)
}

fn nested(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

/// A topic of exactly `bytes` bytes (tokens of at most 64 characters).
fn topic_of_len(bytes: usize) -> String {
    let mut topic = String::from("clips");
    while topic.len() < bytes {
        let room = bytes - topic.len() - 1;
        topic.push('.');
        // Never leave a remainder of 0 (an empty last token).
        let take = if room > 64 && room - 64 < 2 {
            60
        } else {
            room.min(64)
        };
        topic.push_str(&"t".repeat(take));
    }
    assert_eq!(topic.len(), bytes);
    topic
}

fn subscribe(id: u64, topic: &str) -> String {
    json!({"type": "subscribe", "id": id, "topic": topic}).to_string()
}

// ---------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sign(alg: Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// Claims for `topics`, valid for an hour, for this hub's audience.
fn claims(topics: &[&str]) -> Value {
    json!({"sub": "fan-1", "aud": AUDIENCE, "exp": now() + 3600, "topics": topics})
}

fn valid(topics: &[&str]) -> String {
    sign(Algorithm::HS256, SECRET, &claims(topics))
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

/// base64url without padding (RFC 7515), for hand-built tokens.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An unsigned token: `{"alg":"none"}`, the claims, an empty signature.
fn alg_none(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    )
}

/// A valid token whose claims were swapped for others after signing.
fn tampered() -> String {
    let token = valid(&["premium.bronze."]);
    let parts: Vec<&str> = token.split('.').collect();
    let forged = b64url(claims(&["premium."]).to_string().as_bytes());
    format!("{}.{forged}.{}", parts[0], parts[2])
}

// ---------------------------------------------------------------------------
// Every case
// ---------------------------------------------------------------------------

/// A `subscribe` to `clips.a` with extra raw fields.
fn sub_with(id: u64, extra: &str) -> String {
    format!(r#"{{"type":"subscribe","id":{id},"topic":"clips.a",{extra}}}"#)
}

/// A frame of `kind` with extra raw fields.
fn frame(kind: &str, id: u64, extra: &str) -> String {
    format!(r#"{{"type":"{kind}","id":{id},{extra}}}"#)
}

/// An HS256 token signed with the hub's secret.
fn hs256(claims: &Value) -> String {
    sign(Algorithm::HS256, SECRET, claims)
}

fn cases() -> Vec<Case> {
    use Expect::*;
    let bad = |id| Error("bad_request", id);
    let bad_topic = |id| Error("bad_topic", Some(id));
    let denied = || Refused(401, "unauthorized");
    let premium = || claims(&["premium."]);
    let deep = 1500; // far beyond serde_json's recursion limit of 128
    let gold = "premium.gold.final";
    vec![
        // Malformed JSON: nothing can be read, so the error has no id.
        send(
            "json_truncated",
            r#"{"type":"subscribe","id":1,"topic":"clips.a""#,
            bad(None),
        ),
        send("json_not_json", "hello", bad(None)),
        send("json_empty_frame", "", bad(None)),
        send("json_null", "null", bad(None)),
        send("json_array_frame", r#"[{"type":"ping","id":5}]"#, bad(None)),
        send(
            "json_two_objects",
            r#"{"type":"ping","id":6} {"type":"ping","id":6}"#,
            bad(None),
        ),
        send("json_single_quotes", "{'type':'ping','id':7}", bad(None)),
        send(
            "json_duplicate_id",
            frame("ping", 8, r#""id":8"#),
            bad(None),
        ),
        // Wrong types and missing fields: the id is echoed when it is a u64.
        send("type_unknown", r#"{"type":"shout","id":9}"#, bad(Some(9))),
        send("type_number", r#"{"type":1,"id":10}"#, bad(Some(10))),
        send(
            "type_missing",
            r#"{"id":11,"topic":"clips.a"}"#,
            bad(Some(11)),
        ),
        send("id_missing", r#"{"type":"ping"}"#, bad(None)),
        send("id_string", r#"{"type":"ping","id":"13"}"#, bad(None)),
        send(
            "id_above_u64",
            r#"{"type":"ping","id":18446744073709551616}"#,
            bad(None),
        ),
        send("id_float", r#"{"type":"ping","id":15.5}"#, bad(None)),
        send("id_negative", r#"{"type":"ping","id":-16}"#, bad(None)),
        send("id_exponent", r#"{"type":"ping","id":1.7e1}"#, bad(None)),
        send(
            "topic_missing",
            r#"{"type":"subscribe","id":18}"#,
            bad(Some(18)),
        ),
        send(
            "topic_number",
            frame("subscribe", 19, r#""topic":19"#),
            bad(Some(19)),
        ),
        send(
            "topic_null",
            frame("subscribe", 20, r#""topic":null"#),
            bad(Some(20)),
        ),
        send(
            "history_string",
            sub_with(21, r#""history":"5""#),
            bad(Some(21)),
        ),
        send(
            "history_above_u32",
            sub_with(22, r#""history":4294967296"#),
            bad(Some(22)),
        ),
        send(
            "history_negative",
            sub_with(23, r#""history":-1"#),
            bad(Some(23)),
        ),
        send(
            "history_float",
            sub_with(24, r#""history":1.5"#),
            bad(Some(24)),
        ),
        send(
            "since_above_u64",
            sub_with(25, r#""since":99999999999999999999,"epoch":"TRIBUNE@1""#),
            bad(Some(25)),
        ),
        send(
            "since_negative",
            sub_with(26, r#""since":-3,"epoch":"TRIBUNE@1""#),
            bad(Some(26)),
        ),
        send(
            "since_without_epoch",
            sub_with(27, r#""since":3"#),
            bad(Some(27)),
        ),
        send(
            "epoch_without_since",
            sub_with(28, r#""epoch":"TRIBUNE@1""#),
            bad(Some(28)),
        ),
        send(
            "epoch_number",
            sub_with(29, r#""since":1,"epoch":5"#),
            bad(Some(29)),
        ),
        send(
            "publish_without_data",
            frame("publish", 30, r#""topic":"cheers.a""#),
            bad(Some(30)),
        ),
        send(
            "react_without_reaction",
            frame("react", 31, r#""topic":"results.a""#),
            bad(Some(31)),
        ),
        send(
            "react_reaction_number",
            frame("react", 32, r#""topic":"results.a","reaction":1"#),
            bad(Some(32)),
        ),
        send(
            "unsubscribe_without_topic",
            r#"{"type":"unsubscribe","id":33}"#,
            bad(Some(33)),
        ),
        // Deep nesting: payloads are opaque (never recursed into), so depth is
        // bounded only by the frame size; a nested frame is not an object.
        send(
            "publish_data_nested_100",
            frame(
                "publish",
                34,
                &format!(r#""topic":"cheers.deep","data":{}"#, nested(100)),
            ),
            Ack(34),
        )
        .what("publish to `cheers` (client publishing on) with `data` 100 nested arrays"),
        send(
            "publish_data_nested_1500",
            frame(
                "publish",
                35,
                &format!(r#""topic":"cheers.deep","data":{}"#, nested(deep)),
            ),
            Ack(35),
        )
        .what("publish with `data` 1,500 nested arrays (serde_json's recursion limit is 128)"),
        send("frame_nested_1500", nested(deep), bad(None))
            .what("a frame that is 1,500 nested arrays"),
        send(
            "unknown_field_nested_1500",
            frame("ping", 37, &format!(r#""extra":{}"#, nested(deep))),
            // Unknown fields are ignored (forward compatibility).
            Pong(37),
        )
        .what("`ping` with an unknown field holding 1,500 nested arrays"),
        send(
            "topic_nested_1500",
            frame("subscribe", 38, &format!(r#""topic":{}"#, nested(deep))),
            bad(Some(38)),
        )
        .what("`subscribe` whose `topic` is 1,500 nested arrays"),
        // Topics (section 2).
        send(
            "topic_wildcard_star",
            subscribe(39, "clips.*"),
            bad_topic(39),
        ),
        send("topic_wildcard_gt", subscribe(40, "clips.>"), bad_topic(40)),
        send(
            "topic_wildcard_in_token",
            subscribe(41, "clips.a*b"),
            bad_topic(41),
        ),
        send("topic_space", subscribe(42, "clips.a b"), bad_topic(42)),
        send(
            "topic_empty_token",
            subscribe(43, "clips..a"),
            bad_topic(43),
        ),
        send(
            "topic_trailing_dot",
            subscribe(44, "clips.a."),
            bad_topic(44),
        ),
        send(
            "topic_leading_dot",
            subscribe(45, ".clips.a"),
            bad_topic(45),
        ),
        send("topic_one_token", subscribe(46, "clips"), bad_topic(46)),
        send("topic_empty", subscribe(47, ""), bad_topic(47)),
        send(
            "topic_9_tokens",
            subscribe(48, "clips.a.b.c.d.e.f.g.h"),
            bad_topic(48),
        ),
        send(
            "topic_8_tokens",
            subscribe(49, "clips.a.b.c.d.e.f.g"),
            Ack(49),
        ),
        send(
            "topic_201_bytes",
            subscribe(50, &topic_of_len(201)),
            bad_topic(50),
        )
        .what("subscribe to a 201-byte topic (tokens of at most 64 characters)"),
        send(
            "topic_200_bytes",
            subscribe(51, &topic_of_len(200)),
            Ack(51),
        )
        .what("subscribe to a 200-byte topic"),
        send(
            "topic_token_65_chars",
            subscribe(52, &format!("clips.{}", "x".repeat(65))),
            bad_topic(52),
        )
        .what("subscribe to `clips.<65 characters>`"),
        send(
            "topic_token_64_chars",
            subscribe(53, &format!("clips.{}", "x".repeat(64))),
            Ack(53),
        )
        .what("subscribe to `clips.<64 characters>`"),
        send(
            "topic_non_ascii",
            subscribe(54, "clips.café"),
            bad_topic(54),
        ),
        send(
            "topic_control_char",
            subscribe(55, "clips.a\u{0}b"),
            bad_topic(55),
        ),
        send(
            "unsubscribe_bad_topic",
            frame("unsubscribe", 56, r#""topic":"clips.>""#),
            bad_topic(56),
        ),
        send(
            "publish_bad_topic",
            frame("publish", 57, r#""topic":"cheers.*","data":1"#),
            bad_topic(57),
        ),
        // Namespaces and permissions.
        send(
            "subscribe_unknown_namespace",
            subscribe(58, "nope.a"),
            Error("unknown_namespace", Some(58)),
        ),
        send(
            "publish_unknown_namespace",
            frame("publish", 59, r#""topic":"nope.a","data":1"#),
            Error("unknown_namespace", Some(59)),
        ),
        send(
            "react_unknown_namespace",
            frame("react", 60, r#""topic":"nope.a","reaction":"🔥""#),
            Error("unknown_namespace", Some(60)),
        ),
        send(
            "publish_without_client_publishing",
            frame("publish", 61, r#""topic":"results.a","data":{}"#),
            Error("forbidden", Some(61)),
        ),
        send(
            "react_reaction_not_allowed",
            frame("react", 62, r#""topic":"results.a","reaction":"💩""#),
            bad(Some(62)),
        ),
        send(
            "react_namespace_without_reactions",
            frame("react", 63, r#""topic":"clips.a","reaction":"🔥""#),
            Error("forbidden", Some(63)),
        ),
        send(
            "premium_without_token",
            subscribe(64, gold),
            Error("forbidden", Some(64)),
        ),
        // Frames (section 6).
        case(
            "invalid_utf8_text_frame",
            How::Raw(text_frame(b"{\"type\":\"ping\",\"id\":65}\xff\xfe")),
            Close(1007),
        )
        .what("text frame ending in bytes 0xFF 0xFE"),
        case(
            "invalid_utf8_in_json_string",
            How::Raw(text_frame(
                b"{\"type\":\"ping\",\"id\":66,\"x\":\"\xc3\x28\"}",
            )),
            Close(1007),
        )
        .what("text frame, a JSON string holding 0xC3 0x28"),
        case(
            "overlong_utf8_text_frame",
            How::Raw(text_frame(
                b"{\"type\":\"ping\",\"id\":67,\"x\":\"\xc0\xaf\"}",
            )),
            Close(1007),
        )
        .what("text frame with overlong UTF-8 (0xC0 0xAF for `/`)"),
        case(
            "oversized_frame",
            How::Raw(Message::text(frame(
                "ping",
                68,
                &format!(r#""pad":"{}""#, "x".repeat(5000)),
            ))),
            Close(1009),
        )
        .what("text frame of 5 KiB (limit 4 KiB)"),
        case(
            "binary_frame",
            How::Raw(Message::binary(vec![1, 2, 3])),
            Close(1003),
        )
        .what("binary frame"),
        case(
            "frame_flood",
            How::Burst((0..100).map(|i| frame("ping", i, r#""f":1"#)).collect()),
            Close(4029),
        )
        .what("100 pings back to back (limit 20/s, burst 40)"),
        case(
            "bad_frame_flood",
            How::Burst(vec!["nonsense".to_string(); 11]),
            Close(4029),
        )
        .what("11 invalid frames (limit 10 in 60 s)"),
        // Tokens (section 1): refused before the upgrade.
        case(
            "token_expired",
            How::Handshake(Hs::query(&hs256(&with(
                premium(),
                "exp",
                json!(now() - 120),
            )))),
            denied(),
        )
        .what("`?token=` whose `exp` passed 2 minutes ago"),
        case(
            "token_not_yet_valid",
            How::Handshake(Hs::query(&hs256(&with(
                premium(),
                "nbf",
                json!(now() + 3600),
            )))),
            denied(),
        )
        .what("`?token=` whose `nbf` is an hour ahead"),
        case(
            "token_wrongly_signed",
            How::Handshake(Hs::query(&sign(Algorithm::HS256, OTHER_SECRET, &premium()))),
            denied(),
        )
        .what("`?token=` signed with another HS256 secret"),
        case(
            "token_tampered_claims",
            How::Handshake(Hs::query(&tampered())),
            denied(),
        )
        .what("`?token=` whose claims were replaced after signing"),
        case(
            "token_alg_none",
            How::Handshake(Hs::query(&alg_none(&premium()))),
            denied(),
        )
        .what("`?token=` with header `{\"alg\":\"none\"}` and no signature"),
        case(
            "token_alg_hs384",
            How::Handshake(Hs::query(&sign(Algorithm::HS384, SECRET, &premium()))),
            denied(),
        )
        .what("`?token=` signed HS384 with the right secret (the hub accepts HS256)"),
        case(
            "token_wrong_audience",
            How::Handshake(Hs::bearer(&hs256(&with(
                premium(),
                "aud",
                json!("editors"),
            )))),
            denied(),
        )
        .what("`Authorization: Bearer` token with `aud` `editors` (the hub wants `fans`)"),
        case(
            "token_missing_audience",
            How::Handshake(Hs::bearer(&hs256(&without(premium(), "aud")))),
            denied(),
        )
        .what("`Authorization: Bearer` token without `aud` (the hub wants `fans`)"),
        case(
            "bearer_not_a_jwt",
            How::Handshake(Hs::header("authorization", "Bearer not-a-jwt")),
            denied(),
        ),
        case(
            "bearer_without_token",
            How::Handshake(Hs::header("authorization", "Bearer")),
            denied(),
        ),
        case(
            "authorization_not_utf8",
            How::Handshake(Hs::header("authorization", b"Bearer \xff.b.c")),
            denied(),
        )
        .what("`Authorization: Bearer` followed by byte 0xFF"),
        case(
            "query_token_bad_percent_encoding",
            How::Handshake(Hs::raw_query("?token=a.b.%zz")),
            denied(),
        ),
        case(
            "query_and_header_tokens_differ",
            How::Handshake(Hs {
                query: format!("?token={}", valid(&["premium."])),
                headers: vec![(
                    "authorization",
                    format!("Bearer {}", valid(&["premium.gold."])).into_bytes(),
                )],
            }),
            denied(),
        )
        .what("valid but different tokens in `?token=` and `Authorization: Bearer`"),
        // Tokens that verify: what they grant decides.
        case(
            "basic_scheme_is_not_a_token",
            How::Send(
                Hs::header("authorization", "Basic dXNlcjpwYXNz"),
                subscribe(84, gold),
            ),
            Error("forbidden", Some(84)),
        )
        .what("`Authorization: Basic …` (not ours: no token); subscribes `premium.gold.final`"),
        case(
            "query_token_grants_another_topic",
            How::Send(Hs::query(&valid(&["premium.silver."])), subscribe(85, gold)),
            Error("forbidden", Some(85)),
        )
        .what("`?token=` granting `premium.silver.`; subscribes `premium.gold.final`"),
        case(
            "query_token_grants_partial_token_prefix",
            How::Send(
                Hs::query(&valid(&["premium.gold"])),
                subscribe(86, "premium.golden.final"),
            ),
            Error("forbidden", Some(86)),
        )
        .what("`?token=` granting `premium.gold`; subscribes `premium.golden.final`"),
        case(
            "query_token_grants_the_topic",
            How::Send(Hs::query(&valid(&[gold])), subscribe(87, gold)),
            Ack(87),
        )
        .what("`?token=` granting `premium.gold.final`; subscribes to it"),
        case(
            "bearer_token_grants_the_topic",
            How::Send(Hs::bearer(&valid(&[gold])), subscribe(88, gold)),
            Ack(88),
        )
        .what("`Authorization: Bearer` token granting `premium.gold.final`; subscribes to it"),
        case(
            "bearer_token_grants_a_prefix",
            How::Send(
                Hs::bearer(&valid(&["premium.gold."])),
                subscribe(89, "premium.gold.final.heat-2"),
            ),
            Ack(89),
        )
        .what("`Bearer` token granting `premium.gold.`; subscribes `premium.gold.final.heat-2`"),
        case(
            "token_expires_while_connected",
            How::SendExpiring(2, subscribe(90, gold)),
            AckThenClose(90, 1008),
        )
        .what("`?token=` expiring 2 s after the handshake; subscribes `premium.gold.final`"),
        // Origins, handshake rate, capacity (section 1).
        case(
            "origin_not_allowed",
            How::Handshake(Hs::header("origin", "https://evil.example.com")),
            Refused(403, "forbidden"),
        ),
        case(
            "origin_null",
            How::Handshake(Hs::header("origin", "null")),
            Refused(403, "forbidden"),
        ),
        case(
            "origin_allowed",
            How::Handshake(Hs::header("origin", "https://fans.example.org")),
            Welcome,
        ),
        case(
            "handshake_flood",
            // At once, and fewer than `max_connections`: accepted sockets
            // not yet upgraded count against the cap (503) before the rate.
            How::HandshakeFlood(2 * HANDSHAKES_PER_SECOND),
            Refused(429, "rate_limited"),
        ),
        case(
            "connection_limit",
            How::FillToLimit,
            Refused(503, "unavailable"),
        ),
    ]
}

fn text_frame(bytes: &[u8]) -> Message {
    Message::Frame(Frame::message(
        bytes.to_vec(),
        OpCode::Data(Data::Text),
        true,
    ))
}

// ---------------------------------------------------------------------------
// A client bound to a chosen loopback address
// ---------------------------------------------------------------------------

/// Hands out 127.1.x.y, one per connection of a case.
struct Sources(AtomicU32);

impl Sources {
    fn next(&self) -> Ipv4Addr {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        assert!(n < 250 * 250, "out of source addresses");
        Ipv4Addr::new(127, 1, (n / 250) as u8, (n % 250 + 1) as u8)
    }
}

use tribune_tests::ws::Refused as Refusal;

struct Conn {
    ws: WebSocketStream<TcpStream>,
}

enum Next {
    Frame(Value),
    Closed(Option<u16>),
    Silent,
}

async fn open(hub: SocketAddr, source: Ipv4Addr, hs: &Hs) -> Result<Conn, Refusal> {
    let mut req = format!("ws://{hub}/v1/ws{}", hs.query)
        .into_client_request()
        .expect("ws request");
    for (name, value) in &hs.headers {
        req.headers_mut()
            .insert(*name, HeaderValue::from_bytes(value).expect("header value"));
    }
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source.into(), 0))
        .expect("bind a loopback source address");
    let tcp = socket.connect(hub).await.map_err(|e| Refusal {
        status: 0,
        body: e.to_string(),
        retry_after: None,
    })?;
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok((ws, _)) => Ok(Conn { ws }),
        Err(e) => Err(Refusal::from_handshake(e)),
    }
}

impl Conn {
    async fn next(&mut self, within: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Next::Silent,
                Ok(None | Some(Err(_))) => return Next::Closed(None),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return Next::Frame(
                        serde_json::from_str(t.as_str())
                            .unwrap_or_else(|_| json!({"unparsable": t.as_str()})),
                    );
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Next::Closed(frame.map(|f| f.code.into()));
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    async fn frame(&mut self) -> Result<Value, String> {
        match self.next(WITHIN).await {
            Next::Frame(v) => Ok(v),
            Next::Closed(code) => Err(format!("closed ({code:?}) instead of a frame")),
            Next::Silent => Err(format!("no frame within {WITHIN:?}")),
        }
    }

    async fn welcome(&mut self) -> Result<(), String> {
        let w = self.frame().await?;
        if w["type"] != "welcome" {
            return Err(format!("first frame is not welcome: {w}"));
        }
        Ok(())
    }

    /// Skips text frames until the hub's close frame.
    async fn close_code(&mut self) -> Result<Option<u16>, String> {
        for _ in 0..1000 {
            match self.next(WITHIN).await {
                Next::Frame(_) => continue,
                Next::Closed(code) => return Ok(code),
                Next::Silent => return Err(format!("not closed within {WITHIN:?}")),
            }
        }
        Err("more than 1000 frames before the close".into())
    }

    /// The connection still serves requests.
    async fn still_open(&mut self) -> Result<(), String> {
        let ping = json!({"type": "ping", "id": PING_ID}).to_string();
        self.ws
            .send(Message::text(ping))
            .await
            .map_err(|e| format!("send ping: {e}"))?;
        let pong = self.frame().await?;
        if pong != json!({"type": "pong", "id": PING_ID}) {
            return Err(format!("expected the pong, got {pong}"));
        }
        Ok(())
    }

    /// Closes politely so that the node's connection count settles.
    async fn finish(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

// ---------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------

fn check_refusal(r: &Refusal, status: u16, code: &str) -> Result<(), String> {
    if r.status != status {
        return Err(format!("expected HTTP {status}, got {r:?}"));
    }
    let body: Value = serde_json::from_str(&r.body)
        .map_err(|_| format!("refusal body is not JSON: {:?}", r.body))?;
    if body["error"]["code"] != code || !body["error"]["message"].is_string() {
        return Err(format!("expected error code {code}: {body}"));
    }
    if (status == 429 || status == 503) && r.retry_after.is_none() {
        return Err(format!("{status} without Retry-After"));
    }
    Ok(())
}

/// Checks the answer to the request a case sent.
async fn check_answer(c: &mut Conn, expect: &Expect) -> Result<(), String> {
    match expect {
        Expect::Pong(id) => {
            let a = c.frame().await?;
            if a != json!({"type": "pong", "id": id}) {
                return Err(format!("expected pong id {id}, got {a}"));
            }
            Ok(())
        }
        Expect::Error(code, id) => {
            let a = c.frame().await?;
            let want_id = id.map_or(Value::Null, |id| json!(id));
            if a["type"] != "error" || a["code"] != *code || a["id"] != want_id {
                return Err(format!("expected error {code} id {want_id}, got {a}"));
            }
            if a["message"].as_str().is_none_or(str::is_empty) {
                return Err(format!("error without a message: {a}"));
            }
            c.still_open().await
        }
        Expect::Ack(id) => {
            let a = c.frame().await?;
            if a["type"] != "ack" || a["id"] != *id {
                return Err(format!("expected ack id {id}, got {a}"));
            }
            c.still_open().await
        }
        Expect::AckThenClose(id, code) => {
            let a = c.frame().await?;
            if a["type"] != "ack" || a["id"] != *id {
                return Err(format!("expected ack id {id}, got {a}"));
            }
            match c.close_code().await? {
                Some(got) if got == *code => Ok(()),
                got => Err(format!("expected close {code}, got {got:?}")),
            }
        }
        Expect::Close(code) => match c.close_code().await? {
            Some(got) if got == *code => Ok(()),
            got => Err(format!("expected close {code}, got {got:?}")),
        },
        Expect::Welcome | Expect::Refused(..) => {
            Err("this expectation does not follow a frame".into())
        }
    }
}

async fn run(hub: &Hub, sources: &Sources, case: &Case) -> Result<(), String> {
    let addr = hub.addr();
    match (&case.how, &case.expect) {
        (How::Handshake(hs), Expect::Refused(status, code)) => {
            match open(addr, sources.next(), hs).await {
                Ok(c) => {
                    c.finish().await;
                    Err("the upgrade succeeded".into())
                }
                Err(r) => check_refusal(&r, *status, code),
            }
        }
        (How::Handshake(hs), Expect::Welcome) => {
            let mut c = open(addr, sources.next(), hs)
                .await
                .map_err(|r| format!("refused: {r:?}"))?;
            let result = c.welcome().await;
            c.finish().await;
            result
        }
        (How::SendExpiring(secs, text), _) => {
            let token = sign(
                Algorithm::HS256,
                SECRET,
                &with(claims(&["premium."]), "exp", json!(now() + secs)),
            );
            let send = How::Send(Hs::query(&token), text.clone());
            let case = Case {
                how: send,
                what: None,
                ..*case
            };
            Box::pin(run(hub, sources, &case)).await
        }
        (How::Send(hs, text), expect) => {
            let mut c = open(addr, sources.next(), hs)
                .await
                .map_err(|r| format!("refused: {r:?}"))?;
            c.welcome().await?;
            c.ws.send(Message::text(text.clone()))
                .await
                .map_err(|e| format!("send: {e}"))?;
            let result = check_answer(&mut c, expect).await;
            c.finish().await;
            result
        }
        (How::Raw(msg), expect) => {
            let mut c = open(addr, sources.next(), &Hs::plain())
                .await
                .map_err(|r| format!("refused: {r:?}"))?;
            c.welcome().await?;
            c.ws.send(msg.clone())
                .await
                .map_err(|e| format!("send: {e}"))?;
            let result = check_answer(&mut c, expect).await;
            c.finish().await;
            result
        }
        (How::Burst(frames), expect) => {
            let mut c = open(addr, sources.next(), &Hs::plain())
                .await
                .map_err(|r| format!("refused: {r:?}"))?;
            c.welcome().await?;
            for f in frames {
                // The hub may close before the last ones are sent.
                if c.ws.send(Message::text(f.clone())).await.is_err() {
                    break;
                }
            }
            let result = check_answer(&mut c, expect).await;
            c.finish().await;
            result
        }
        (How::HandshakeFlood(n), Expect::Refused(status, code)) => {
            let source = sources.next();
            let plain = Hs::plain();
            let attempts =
                futures::future::join_all((0..*n).map(|_| open(addr, source, &plain))).await;
            let mut upgraded = 0;
            let mut refused = 0;
            for attempt in attempts {
                match attempt {
                    Ok(c) => {
                        upgraded += 1;
                        c.finish().await;
                    }
                    Err(r) => {
                        check_refusal(&r, *status, code)?;
                        refused += 1;
                    }
                }
            }
            // The burst (one second's worth) passes, plus at most what refills
            // while the handshakes run.
            if upgraded == 0 || upgraded > HANDSHAKES_PER_SECOND + 2 || refused == 0 {
                return Err(format!("{upgraded} upgraded, {refused} refused of {n}"));
            }
            Ok(())
        }
        (How::FillToLimit, Expect::Refused(status, code)) => {
            // Only the healthy client is connected before the fill.
            settle(hub, 1).await;
            let mut open_conns = Vec::new();
            let mut refusal = None;
            for _ in 0..MAX_CONNECTIONS + 2 {
                match open(addr, sources.next(), &Hs::plain()).await {
                    Ok(c) => open_conns.push(c),
                    Err(r) => {
                        refusal = Some(r);
                        break;
                    }
                }
            }
            let opened = open_conns.len();
            for c in open_conns {
                c.finish().await;
            }
            settle(hub, 1).await;
            let r = refusal.ok_or("never refused")?;
            check_refusal(&r, *status, code)?;
            if opened + 1 != MAX_CONNECTIONS {
                return Err(format!(
                    "refused after {opened} connections (+1 healthy), limit {MAX_CONNECTIONS}"
                ));
            }
            // A slot is free again.
            let c = open(addr, sources.next(), &Hs::plain())
                .await
                .map_err(|r| format!("not served after the fill: {r:?}"))?;
            c.finish().await;
            Ok(())
        }
        _ => Err("invalid case".into()),
    }
}

/// Waits until the node counts `n` open connections.
async fn settle(hub: &Hub, n: usize) {
    eventually(
        &format!("the node counts {n} open connection(s)"),
        Duration::from_secs(10),
        || async { (hub.metric("tribune_connections").await == n as f64).then_some(()) },
    )
    .await;
}

// ---------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_table_while_a_healthy_client_streams() {
    let cfg = ConfigFile::new(&hub_config());
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names are unique");

    // The healthy client reads continuously in its own task.
    let (mut healthy, _) = WsClient::connect(&hub.ws_url()).await;
    let ack = healthy.subscribe(HEALTHY, json!({})).await;
    let start_seq = ack["seq"].as_u64().expect("ack seq");
    let (target_tx, mut target_rx) = tokio::sync::watch::channel(None::<usize>);
    let reader = tokio::spawn(async move {
        let mut received: Vec<Value> = Vec::new();
        let ended = loop {
            let target = *target_rx.borrow();
            if target.is_some_and(|n| received.len() >= n) {
                break None;
            }
            tokio::select! {
                msg = healthy.stream.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        let m = serde_json::from_str(t.as_str()).expect("hub frames are JSON");
                        received.push(m);
                    }
                    Some(Ok(Message::Close(frame))) => {
                        break Some(format!("closed by the hub: {frame:?}"));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break Some(format!("socket error: {e}")),
                    None => break Some("stream ended".to_string()),
                },
                changed = target_rx.changed() => {
                    if changed.is_err() {
                        break Some("test ended early".to_string());
                    }
                }
            }
        };
        (healthy, received, ended)
    });

    let sources = Sources(AtomicU32::new(0));
    let mut published = Vec::new();
    let mut failures = Vec::new();
    println!("| fault or bad input | expected outcome | test case |");
    println!("|---|---|---|");
    for (i, case) in cases.iter().enumerate() {
        let outcome = tokio::time::timeout(Duration::from_secs(30), run(&hub, &sources, case))
            .await
            .unwrap_or_else(|_| Err("case took over 30 s".into()));
        if let Err(e) = outcome {
            failures.push(format!("{}: {e}", case.name));
        }
        println!(
            "| {} | {} | `reliability_bad_input.rs` case `{}` |",
            case.does(),
            case.expect.describe(),
            case.name
        );
        published.push(
            hub.publish(HEALTHY, json!({"case": i, "name": case.name}))
                .await,
        );
    }

    target_tx.send(Some(published.len())).unwrap();
    let (mut healthy, received, ended) = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the healthy client received everything within 30 s")
        .unwrap();
    assert_eq!(ended, None, "the healthy client was never closed");
    // Every message, in order, the prev chain intact from the ack's seq.
    let mut prev = start_seq;
    for (i, (m, seq)) in received.iter().zip(&published).enumerate() {
        assert_eq!(m["type"], "message", "{m}");
        assert_eq!(m["topic"], HEALTHY, "{m}");
        assert_eq!(m["seq"], *seq, "message {i}: {m}");
        assert_eq!(m["prev"], prev, "message {i}: prev chain: {m}");
        assert_eq!(m["data"]["case"], i, "{m}");
        prev = *seq;
    }
    assert_eq!(received.len(), published.len());
    assert_eq!(
        healthy.request(json!({"type": "ping"})).await["type"],
        "pong",
        "the healthy connection still serves requests"
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    println!(
        "{} cases passed; healthy client got {} of {}",
        cases.len(),
        received.len(),
        published.len()
    );
}
