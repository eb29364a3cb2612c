//! Each `[section]` of the configuration with its documented defaults, and
//! the built-in namespaces (PROTOCOL.md section 2).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tribune_protocol::Mode;

use crate::error::ConfigError;

/// One entry of `trusted_proxies`: an address (`10.0.0.7`) or a range
/// (`10.0.0.0/8`, `fd00::/8`). An IPv4-mapped IPv6 entry is stored as the
/// IPv4 one, as peers are compared in their canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyNet(pub ipnet::IpNet);

impl std::str::FromStr for ProxyNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let net = match s.parse::<ipnet::IpNet>() {
            Ok(net) => net,
            Err(_) => match s.parse::<std::net::IpAddr>() {
                Ok(ip) => ipnet::IpNet::from(ip),
                Err(_) => return Err(format!("'{s}' is neither an IP address nor a CIDR range")),
            },
        };
        let net = match net {
            ipnet::IpNet::V6(v6)
                if v6.addr().to_ipv4_mapped().is_some() && v6.prefix_len() >= 96 =>
            {
                let v4 = v6.addr().to_ipv4_mapped().expect("checked");
                ipnet::IpNet::V4(
                    ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).expect("prefix within 32"),
                )
            }
            other => other,
        };
        // Host bits set (`10.1.2.3/8`) are almost always a typo for the
        // range; the range is what is meant either way.
        Ok(ProxyNet(net.trunc()))
    }
}

impl Serialize for ProxyNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            s.serialize_str(&self.0.addr().to_string())
        } else {
            s.serialize_str(&self.0.to_string())
        }
    }
}

impl<'de> Deserialize<'de> for ProxyNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Optional TLS on the public listener, for deployments without an ingress
/// that terminates it. Both files are PEM; they are read again when they
/// change (a renewed certificate needs no restart).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Whether TLS is on (both files set; validation refuses one alone).
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }
}

/// PROTOCOL.md section 8; every figure configurable. The README's
/// configuration reference gives the reason for each default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_payload_bytes: usize,
    pub max_subscriptions: usize,
    /// Client frames per connection, websocket pings and pongs included.
    pub frames_per_second: u32,
    pub frames_burst: u32,
    pub max_connections: usize,
    /// Handshakes per client address (an IPv4 address, an IPv6 prefix).
    pub handshakes_per_second: u32,
    pub handshakes_burst: u32,
    /// Handshakes per node, whatever the address: what the node can verify
    /// and upgrade without starving the fans it already serves.
    pub node_handshakes_per_second: u32,
    pub node_handshakes_burst: u32,
    /// Share of the node's connection cap (and of its pending handshakes)
    /// that one client address may hold, in percent.
    pub address_share_percent: u32,
    /// Leading bits of an IPv6 address that make a client address: a home or
    /// a phone gets a whole /64, so keying by the full address would let one
    /// client take any number of keys.
    pub ipv6_prefix_len: u8,
    /// Connections per user (the token's `sub`), on one node.
    pub max_connections_per_user: usize,
    /// Time a socket has to send its request's headers (and finish TLS and
    /// the PROXY header); also the idle time allowed between two requests.
    pub header_read_timeout_ms: u64,
    /// Accepted sockets that are not (yet) websockets: counted against
    /// `max_connections` too.
    pub max_pending_handshakes: usize,
    /// Subscriptions to topics new to a connection, per second (burst
    /// allowed); past it `rate_limited`.
    pub new_topics_per_second: u32,
    pub new_topics_burst: u32,
    /// Topics with a relay on this node; past it a subscription to one more
    /// topic answers `unavailable`.
    pub max_relays: usize,
    /// `GET /v1/history` requests per client address per second (burst
    /// allowed); past it 429 with `Retry-After`.
    pub history_per_second: u32,
    pub history_burst: u32,
    /// The same per token `sub` (a user behind many addresses), checked
    /// after the address's.
    pub history_token_per_second: u32,
    pub history_token_burst: u32,
    /// Failed `POST /v1/publish` attempts per caller address per minute;
    /// past it the caller is refused with 429, its key not even checked.
    pub publish_failures_per_minute: u32,
    pub reactions_per_second: u32,
    pub reactions_burst: u32,
    pub queue_bytes: usize,
    pub queue_messages: usize,
    pub bad_frames: u32,
    pub bad_frames_window_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 4 * 1024,
            max_payload_bytes: 256 * 1024,
            max_subscriptions: 64,
            frames_per_second: 20,
            frames_burst: 40,
            max_connections: 200_000,
            handshakes_per_second: 200,
            handshakes_burst: 1_000,
            node_handshakes_per_second: 3_000,
            node_handshakes_burst: 3_000,
            address_share_percent: 25,
            ipv6_prefix_len: 64,
            max_connections_per_user: 10,
            header_read_timeout_ms: 10_000,
            max_pending_handshakes: 4_096,
            new_topics_per_second: 4,
            new_topics_burst: 64,
            max_relays: 10_000,
            history_per_second: 50,
            history_burst: 200,
            history_token_per_second: 5,
            history_token_burst: 20,
            publish_failures_per_minute: 10,
            reactions_per_second: 5,
            reactions_burst: 10,
            queue_bytes: 1024 * 1024,
            queue_messages: 1024,
            bad_frames: 10,
            bad_frames_window_ms: 60_000,
        }
    }
}

/// Token verification (PROTOCOL.md section 1); used by `auth.rs`.
///
/// No key configured: tokens are not checked, and namespaces with
/// `token = true` refuse every subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The one accepted algorithm: `HS256`, `RS256`, `ES256` or `EdDSA`.
    /// A token signed with any other (or `none`) is refused.
    pub algorithm: Option<String>,
    /// HS256 shared secret.
    pub secret: Option<String>,
    /// PEM public key file (RS256, ES256, EdDSA).
    pub public_key_file: Option<PathBuf>,
    /// JWKS file, reloaded when it changes; keys picked by `kid`.
    pub jwks_file: Option<PathBuf>,
    /// Required `aud` claim, when set.
    pub audience: Option<String>,
    /// Required `iss` claim, when set.
    pub issuer: Option<String>,
    /// Refuse tokens without `exp`: a token that never expires cannot be
    /// withdrawn but by rotating the key.
    pub require_exp: bool,
    /// Longest token lifetime accepted (`exp` − `iat`, or `exp` − now without
    /// `iat`), in seconds; 0 for no maximum.
    pub max_lifetime_secs: u64,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// How long a connection may stay open after its token expired before it
    /// is closed with 1008: the time a client has to refresh a token whose
    /// refresh failed or came late.
    pub expiry_grace_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            algorithm: None,
            secret: None,
            public_key_file: None,
            jwks_file: None,
            audience: None,
            issuer: None,
            require_exp: true,
            max_lifetime_secs: 0,
            leeway_secs: 0,
            expiry_grace_ms: 0,
        }
    }
}

/// The NATS JetStream bus (PROTOCOL.md section 10). Unused by the embedded bus.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// NATS URL(s), comma-separated. None: the embedded bus.
    pub url: Option<String>,
    /// Subject prefix: `<prefix>.fan.>`, `<prefix>.live.>`, `<prefix>.in.>`, `<prefix>.stats.>`.
    pub prefix: String,
    /// JetStream stream name.
    pub stream: String,
    /// Create or update the stream at start; false for operators who own it.
    pub manage_stream: bool,
    /// Stream replicas.
    pub replicas: usize,
    /// `file` or `memory`.
    pub storage: String,
    /// Oldest message the stream keeps, in seconds.
    pub max_age_secs: u64,
    /// Window in which a repeated `Nats-Msg-Id` is stored once; at most `max_age_secs`.
    pub duplicate_window_secs: u64,
    /// Timeout of every bus request.
    pub request_timeout_ms: u64,
    /// Client ping interval, so that a dead server is noticed quickly.
    pub ping_interval_ms: u64,
    /// Interval of the batched last-sequence check of all active topics;
    /// also the idle heartbeat of every live feed's consumer.
    pub check_interval_ms: u64,
    /// The stream's `max_consumers`: every hub holds one consumer per topic
    /// its fans watch, so at least hubs × active topics per hub. nats-server
    /// 2.15 allows 1,000 per stream unless the stream says otherwise.
    pub max_consumers: u64,
    /// Regions (`bus/nats/region.rs`): the name of the origin stream when
    /// `stream` is this region's mirror of it. With `manage_stream` the hub
    /// creates the mirror when it is missing (never rewrites one); empty:
    /// `stream` is the origin (or an operator's mirror, found from its
    /// config all the same).
    pub mirror_of: String,
    /// The JetStream API prefix of the origin's domain (`$JS.<domain>.API`),
    /// for the mirror the hub creates; empty: the origin is in this domain.
    pub mirror_api: String,
    /// Credentials, one kind at most (`bus::nats::settings` checks them,
    /// and `--check-config` with it): a `.creds` file (user JWT and NKey
    /// seed, operator mode)...
    pub credentials: Option<PathBuf>,
    /// ...or a file holding a user NKey seed (`SU...`)...
    pub nkey_seed_file: Option<PathBuf>,
    /// ...or a user and password...
    pub user: Option<String>,
    pub password: Option<String>,
    /// ...or a token.
    pub token: Option<String>,
    /// PEM CA certificate(s) the server's certificate must chain to,
    /// instead of the system's roots (a private CA).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for servers that verify clients
    /// (with `tls_key_file`).
    pub tls_cert_file: Option<PathBuf>,
    /// The client certificate's PEM private key.
    pub tls_key_file: Option<PathBuf>,
    /// Refuse to talk to NATS without TLS. Also implied by any `tls_*` file
    /// and by `tls://` URLs.
    pub tls_required: bool,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            url: None,
            prefix: "tribune".into(),
            stream: "TRIBUNE".into(),
            manage_stream: true,
            replicas: 1,
            storage: "file".into(),
            max_age_secs: 24 * 3600,
            duplicate_window_secs: 120,
            request_timeout_ms: 2_000,
            ping_interval_ms: 5_000,
            check_interval_ms: 3_000,
            max_consumers: 100_000,
            mirror_of: String::new(),
            mirror_api: String::new(),
            credentials: None,
            nkey_seed_file: None,
            user: None,
            password: None,
            token: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_required: false,
        }
    }
}

/// Paced drain on SIGTERM.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrainConfig {
    /// Window over which clients are closed, in batches.
    pub window_ms: u64,
    /// Upper bound of the reconnect delay announced in `drain`.
    pub retry_ms: u64,
    /// Hard deadline after SIGTERM; whatever is still open is closed then.
    pub grace_ms: u64,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            window_ms: 10_000,
            retry_ms: 5_000,
            grace_ms: 25_000,
        }
    }
}

/// Audience and reaction windows, and the key that seals this cluster's
/// statistics partials on the bus.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsConfig {
    pub window_ms: u64,
    /// HMAC-SHA256 key, at least 32 bytes, the same on every node of the
    /// cluster: only partials sealed with it count. Unused by the embedded
    /// bus; on NATS without it, other nodes' partials are ignored. A secret:
    /// set it with `TRIBUNE_STATS__KEY` or `key_file`.
    pub key: Option<String>,
    /// A file holding the key (surrounding whitespace ignored).
    pub key_file: Option<PathBuf>,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            window_ms: 1_000,
            key: None,
            key_file: None,
        }
    }
}

/// The shortest statistics key accepted, in bytes.
pub const STATS_KEY_MIN_BYTES: usize = 32;

impl StatsConfig {
    /// What is checked without reading the key file (`--print-config` reads
    /// none): not both `key` and `key_file`, and a `key` long enough.
    pub fn check_key_settings(&self) -> Result<(), ConfigError> {
        match (&self.key, &self.key_file) {
            (Some(_), Some(_)) => Err(ConfigError::invalid(
                "stats.key and stats.key_file are both set: keep one".to_string(),
            )),
            (Some(key), None) => long_enough(key.trim().as_bytes()),
            _ => Ok(()),
        }
    }

    /// The statistics key from `key` or `key_file` (read here), if one is
    /// set. Errors never show the key.
    pub fn key_bytes(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        self.check_key_settings()?;
        let key = match (&self.key, &self.key_file) {
            (Some(key), _) => key.trim().as_bytes().to_vec(),
            (None, Some(path)) => {
                let text = std::fs::read(path).map_err(|e| ConfigError::unreadable(path, e))?;
                text.trim_ascii().to_vec()
            }
            (None, None) => return Ok(None),
        };
        long_enough(&key)?;
        Ok(Some(key))
    }
}

fn long_enough(key: &[u8]) -> Result<(), ConfigError> {
    if key.len() < STATS_KEY_MIN_BYTES {
        return Err(ConfigError::invalid(format!(
            "stats.key must be at least {STATS_KEY_MIN_BYTES} bytes \
             (e.g. the output of `openssl rand -base64 32`)"
        )));
    }
    Ok(())
}

/// One namespace: the first token of its topics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    pub mode: Mode,
    /// Retained history depth per topic: at least this many of the latest
    /// messages are kept (within `retained_bytes`).
    pub retained: u32,
    /// Also keep every message of the last this many seconds (0: none), up
    /// to `expected_rate` per second: the hub keeps what satisfies the larger
    /// of `retained` and this window (PROTOCOL.md section 12).
    #[serde(default)]
    pub retained_secs: u32,
    /// The namespace's expected peak rate per topic, messages per second:
    /// sizes the time window in messages (`retained_secs × expected_rate`),
    /// which is what the stream's per-subject limit must hold.
    #[serde(default = "default_expected_rate")]
    pub expected_rate: u32,
    /// Hard cap on one relay's cache of a topic of this namespace, in bytes
    /// (each message counted as its live and replay frames plus bookkeeping):
    /// the per-relay memory bound, whatever the counts and window say.
    #[serde(default = "default_retained_bytes")]
    pub retained_bytes: u64,
    /// Whether subscribing needs a token that grants the topic.
    #[serde(default)]
    pub token: bool,
    /// Whether clients may `publish` (to `<prefix>.in.<topic>`).
    #[serde(default)]
    pub publish: bool,
    /// Whether subscribers get live audience counts in `stats`.
    #[serde(default)]
    pub audience: bool,
    /// Reactions fans may send; empty: none.
    #[serde(default)]
    pub reactions: Vec<String>,
    /// Whether `state` subscribers may ask for Fossil delta updates
    /// (`subscribe` with `"delta":"fossil"`). No effect on `feed` namespaces.
    #[serde(default)]
    pub delta: bool,
}

/// Messages the built-in `clips` namespace retains per topic.
pub const CLIPS_RETAINED: u32 = 10_000;

/// Seconds of history the built-in `clips` namespace keeps (issue 19: a fan
/// away for five minutes resumes without a loss).
pub const CLIPS_RETAINED_SECS: u32 = 300;

/// A namespace's expected peak rate unless it says otherwise (msgs/s).
pub const DEFAULT_EXPECTED_RATE: u32 = 10;

/// A relay cache's byte cap unless the namespace says otherwise: 8 MiB.
pub const DEFAULT_RETAINED_BYTES: u64 = 8 * 1024 * 1024;

/// The `clips` cache's byte cap: 32 MiB holds its 10,000 retained clips of
/// the usual size (PAYLOADS.md's shape: a 500-byte frame, counted four times
/// with its replay and deflated forms, plus bookkeeping, about 2.2 KB).
pub const CLIPS_RETAINED_BYTES: u64 = 32 * 1024 * 1024;

fn default_expected_rate() -> u32 {
    DEFAULT_EXPECTED_RATE
}

fn default_retained_bytes() -> u64 {
    DEFAULT_RETAINED_BYTES
}

impl Namespace {
    /// The most messages a topic of this namespace keeps, on the stream and
    /// in a relay: `retained`, or the time window at the expected rate when
    /// that is more. The stream's `max_msgs_per_subject` covers it.
    pub fn depth(&self) -> u32 {
        let window = u64::from(self.retained_secs) * u64::from(self.expected_rate);
        u64::from(self.retained)
            .max(window)
            .min(u64::from(u32::MAX)) as u32
    }
}

pub fn default_namespaces() -> BTreeMap<String, Namespace> {
    BTreeMap::from([
        (
            "results".to_string(),
            Namespace {
                mode: Mode::State,
                retained: 10,
                retained_secs: 0,
                expected_rate: DEFAULT_EXPECTED_RATE,
                retained_bytes: DEFAULT_RETAINED_BYTES,
                token: false,
                publish: false,
                audience: true,
                reactions: ["🔥", "👏", "😮", "😢"].map(String::from).to_vec(),
                delta: true,
            },
        ),
        (
            "clips".to_string(),
            Namespace {
                mode: Mode::Feed,
                // A feed's retention is what a fan, or a hub whose live feed
                // went dark (a NATS restart), can still get back: 10,000
                // covers 100 s of a 100 msg/s topic, minutes of a busy one.
                retained: CLIPS_RETAINED,
                // Five minutes at 10 msg/s (3,000) is within the 10,000: the
                // window matters for namespaces with a smaller `retained`
                // and for topics the count alone would cover for less time.
                retained_secs: CLIPS_RETAINED_SECS,
                expected_rate: DEFAULT_EXPECTED_RATE,
                retained_bytes: CLIPS_RETAINED_BYTES,
                token: false,
                publish: false,
                audience: false,
                reactions: Vec::new(),
                delta: false,
            },
        ),
    ])
}

/// The shape of log lines (`log_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `timestamp LEVEL target: message key=value`, for people.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`),
    /// for log shippers.
    Json,
}
