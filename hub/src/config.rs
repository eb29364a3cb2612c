//! Every setting of a hub node with its documented default.
//!
//! Sources, later ones winning key by key: built-in defaults, the TOML file
//! (`--config`), `TRIBUNE_*` environment variables for every key, then the
//! flags (`config_layers` combines the first three). Namespaces come from the
//! defaults of PROTOCOL.md section 2, changed or extended by the file's
//! `[namespaces.<name>]` tables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use serde::{Deserialize, Serialize};
use tribune_protocol::Mode;

use crate::error::ConfigError;

/// The command line (ARCHITECTURE.md section 3).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tribune-hub",
    version,
    about = "Tribune hub node: live results and clips to fans over websockets"
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "TRIBUNE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "TRIBUNE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of the internal listener (`/metrics`, `/v1/publish`, probes).
    /// Left at its default while `--listen` asks for port 0, it takes a free
    /// loopback port too, so that test hubs never collide on 9090.
    #[arg(long, env = "TRIBUNE_INTERNAL_LISTEN")]
    pub internal_listen: Option<SocketAddr>,
    /// NATS server URL(s), comma-separated; without it the embedded bus is used.
    #[arg(long, env = "TRIBUNE_NATS")]
    pub nats: Option<String>,
    /// This node's name, shown in `welcome` and used for statistics subjects.
    #[arg(long, env = "TRIBUNE_NODE_NAME")]
    pub node_name: Option<String>,
    /// Publish a simulated live event (speed skating results and clips).
    #[arg(long, env = "TRIBUNE_DEMO", value_parser = clap::builder::BoolishValueParser::new())]
    pub demo: bool,
    /// Parse and validate the configuration, print it as TOML, exit 0 (or 2).
    #[arg(long)]
    pub check_config: bool,
}

/// The environment variable that sets `publish_key` (over the file's), so
/// that a key can come from a secret store rather than a file or the
/// command line, where `ps` would show it.
pub const PUBLISH_KEY_ENV: &str = "TRIBUNE_PUBLISH_KEY";

/// Shortest `publish_key`: as long as an HS256 secret (RFC 7518 section 3.2),
/// out of reach of guessing whatever the rate of attempts.
pub const MIN_PUBLISH_KEY_BYTES: usize = 32;

/// What `--check-config` prints in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// The whole configuration of one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Public listen address: the websocket and the web assets, nothing else.
    pub listen: SocketAddr,
    /// Internal listen address: `/metrics`, `/v1/publish`, `/healthz`,
    /// `/readyz` and every operator endpoint to come. Loopback by default:
    /// what it serves is for operators, never for fans.
    pub internal_listen: SocketAddr,
    /// Node name; a random `hub-xxxx` when empty.
    pub node_name: String,
    /// Run the simulated live event.
    pub demo: bool,
    /// Bearer key for `POST /v1/publish`, at least 32 bytes; also
    /// `TRIBUNE_PUBLISH_KEY`. Without one nobody may publish over HTTP, but
    /// loopback callers of a `--demo` node.
    pub publish_key: Option<String>,
    /// Bearer key of the server API on the internal listener
    /// (`/v1/disconnect`, `/v1/unsubscribe`, `/v1/revoke`), at least 32
    /// bytes; also `TRIBUNE_OPERATOR_KEY`. It also seals the control
    /// messages that carry those calls to every node, so every node of a
    /// cluster has the same one. Unset: the server API is off.
    pub operator_key: Option<String>,
    /// Interval of WebSocket pings (PROTOCOL.md section 7).
    pub heartbeat_ms: u64,
    /// How long a relay outlives its last subscriber, so that a fan who
    /// reconnects at once does not cost a new history read.
    pub relay_linger_ms: u64,
    /// How long a connection closed for being slow may take to receive its
    /// close frame before the socket is dropped.
    pub slow_close_grace_ms: u64,
    /// Browser origins allowed to open a websocket; empty allows any.
    pub allowed_origins: Vec<String>,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For`
    /// and PROXY protocol headers are believed; nobody else's are.
    pub trusted_proxies: Vec<ProxyNet>,
    /// Every connection to the public listener starts with a PROXY protocol
    /// v2 header (an L4 load balancer's); only trusted proxies may connect.
    pub proxy_protocol: bool,
    pub limits: Limits,
    pub auth: AuthConfig,
    pub bus: BusConfig,
    pub drain: DrainConfig,
    pub stats: StatsConfig,
    pub tls: TlsConfig,
    pub namespaces: BTreeMap<String, Namespace>,
}

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
    /// Interval of the batched last-sequence check of all active topics.
    pub check_interval_ms: u64,
    /// Optional credentials file, user/password or token.
    pub credentials: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
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
            credentials: None,
            user: None,
            password: None,
            token: None,
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

/// Audience and reaction windows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsConfig {
    pub window_ms: u64,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self { window_ms: 1_000 }
    }
}

/// One namespace: the first token of its topics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    pub mode: Mode,
    /// Retained history depth per topic.
    pub retained: u32,
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
}

/// Messages the built-in `clips` namespace retains per topic.
pub const CLIPS_RETAINED: u32 = 10_000;

pub fn default_namespaces() -> BTreeMap<String, Namespace> {
    BTreeMap::from([
        (
            "results".to_string(),
            Namespace {
                mode: Mode::State,
                retained: 10,
                token: false,
                publish: false,
                audience: true,
                reactions: ["🔥", "👏", "😮", "😢"].map(String::from).to_vec(),
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
                token: false,
                publish: false,
                audience: false,
                reactions: Vec::new(),
            },
        ),
    ])
}

/// The internal listener's default: loopback only, Prometheus' usual port.
pub const DEFAULT_INTERNAL_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            internal_listen: DEFAULT_INTERNAL_LISTEN,
            node_name: String::new(),
            demo: false,
            publish_key: None,
            operator_key: None,
            heartbeat_ms: 25_000,
            relay_linger_ms: 5_000,
            slow_close_grace_ms: 5_000,
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            limits: Limits::default(),
            auth: AuthConfig::default(),
            bus: BusConfig::default(),
            drain: DrainConfig::default(),
            stats: StatsConfig::default(),
            tls: TlsConfig::default(),
            namespaces: default_namespaces(),
        }
    }
}

impl Config {
    /// Builds the effective configuration from the command line.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let text = match &cli.config {
            Some(path) => {
                Some(std::fs::read_to_string(path).map_err(|e| ConfigError::unreadable(path, e))?)
            }
            None => None,
        };
        let file = cli.config.as_deref().zip(text.as_deref());
        let mut config =
            crate::config_layers::layered(&Config::default(), file, std::env::vars())?.normalized();
        if let Some(listen) = cli.listen {
            config.listen = listen;
        }
        if let Some(internal) = cli.internal_listen {
            config.internal_listen = internal;
        } else if config.listen.port() == 0 && config.internal_listen == DEFAULT_INTERNAL_LISTEN {
            config.internal_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        }
        // Set and empty: unset, as `publish_key = ""` in the file.
        if let Ok(key) = std::env::var(PUBLISH_KEY_ENV) {
            config.publish_key = (!key.is_empty()).then_some(key);
        }
        if let Some(url) = &cli.nats {
            config.bus.url = Some(url.clone());
        }
        if let Some(name) = &cli.node_name {
            config.node_name = name.clone();
        }
        if cli.demo {
            config.demo = true;
        }
        if config.node_name.is_empty() {
            config.node_name = format!("hub-{:04x}", rand::random::<u16>());
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML file's text over the defaults (no environment): keys
    /// and namespaces it does not name keep their defaults.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        crate::config_layers::layered(
            &Config::default(),
            Some((std::path::Path::new("config"), text)),
            std::iter::empty(),
        )
        .map(Config::normalized)
    }

    /// Spellings that mean "unset": `publish_key = ""` was the documented
    /// way to leave the key out.
    fn normalized(mut self) -> Config {
        if self.publish_key.as_deref() == Some("") {
            self.publish_key = None;
        }
        if self.operator_key.as_deref() == Some("") {
            self.operator_key = None;
        }
        self
    }

    /// Refuses settings that cannot work, with a one-line reason.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: String| Err(ConfigError::invalid(m));
        // The name is a token of bus subjects (`<prefix>.stats.<node>`).
        let name_ok = (1..=64).contains(&self.node_name.len())
            && self
                .node_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok && !self.node_name.is_empty() {
            return fail(format!(
                "node_name '{}' must be 1 to 64 characters of [A-Za-z0-9_-]",
                self.node_name
            ));
        }
        for (name, ns) in &self.namespaces {
            if tribune_protocol::validate_topic(&format!("{name}.x")).is_err() || name.contains('.')
            {
                return fail(format!("namespace '{name}' is not a valid topic token"));
            }
            if ns.retained == 0 || ns.retained > 10_000 {
                return fail(format!("namespace '{name}': retained must be 1..=10000"));
            }
            for r in &ns.reactions {
                if r.is_empty() || r.len() > 32 {
                    return fail(format!(
                        "namespace '{name}': reaction '{r}' must be 1..=32 bytes"
                    ));
                }
            }
        }
        let l = &self.limits;
        if l.max_frame_bytes < 256 {
            return fail("limits.max_frame_bytes must be at least 256".into());
        }
        let rates = [
            l.frames_per_second,
            l.frames_burst,
            l.handshakes_per_second,
            l.handshakes_burst,
            l.node_handshakes_per_second,
            l.node_handshakes_burst,
            l.new_topics_per_second,
            l.new_topics_burst,
            l.publish_failures_per_minute,
        ];
        if rates.contains(&0) {
            return fail("limits: rates and bursts must be at least 1".into());
        }
        if !(1..=100).contains(&l.address_share_percent) {
            return fail("limits.address_share_percent must be 1..=100".into());
        }
        if !(1..=128).contains(&l.ipv6_prefix_len) {
            return fail("limits.ipv6_prefix_len must be 1..=128".into());
        }
        if !(100..=60_000).contains(&l.header_read_timeout_ms) {
            return fail("limits.header_read_timeout_ms must be 100..=60000".into());
        }
        if l.max_pending_handshakes == 0 || l.max_relays == 0 || l.max_connections_per_user == 0 {
            return fail(
                "limits: max_pending_handshakes, max_relays and max_connections_per_user must be positive"
                    .into(),
            );
        }
        if let Some(key) = &self.publish_key
            && key.len() < MIN_PUBLISH_KEY_BYTES
        {
            return fail(format!(
                "publish_key must be at least {MIN_PUBLISH_KEY_BYTES} bytes (or unset)"
            ));
        }
        if let Some(key) = &self.operator_key
            && key.len() < MIN_PUBLISH_KEY_BYTES
        {
            return fail(format!(
                "operator_key must be at least {MIN_PUBLISH_KEY_BYTES} bytes (or unset)"
            ));
        }
        if self.proxy_protocol && self.trusted_proxies.is_empty() {
            return fail(
                "proxy_protocol needs trusted_proxies: the load balancers' addresses".into(),
            );
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return fail("tls: set both cert_file and key_file, or neither".into());
        }
        if self.internal_listen.port() != 0 && self.internal_listen == self.listen {
            return fail("internal_listen must differ from listen".into());
        }
        if l.reactions_per_second == 0 || l.reactions_burst == 0 {
            return fail("limits: reaction rate and burst must be at least 1".into());
        }
        if l.queue_messages == 0 || l.queue_bytes < 1024 || l.max_subscriptions == 0 {
            return fail("limits: queue and subscription limits must be positive".into());
        }
        if self.heartbeat_ms < 100 {
            return fail("heartbeat_ms must be at least 100".into());
        }
        if self.bus.duplicate_window_secs > self.bus.max_age_secs {
            return fail("bus.duplicate_window_secs must not exceed bus.max_age_secs".into());
        }
        if !matches!(self.bus.storage.as_str(), "file" | "memory") {
            return fail(format!(
                "bus.storage must be 'file' or 'memory', not '{}'",
                self.bus.storage
            ));
        }
        if self.drain.window_ms >= self.drain.grace_ms {
            return fail("drain.window_ms must be shorter than drain.grace_ms".into());
        }
        if self.stats.window_ms < 100 {
            return fail("stats.window_ms must be at least 100".into());
        }
        self.check_references()
    }

    /// Settings that name something outside the file: origins a browser
    /// can send, NATS URLs, credential files. Checked here so that
    /// `--check-config` refuses what the node would fail on later, or
    /// (an origin that can never match) silently never use.
    fn check_references(&self) -> Result<(), ConfigError> {
        for origin in &self.allowed_origins {
            let ok = url::Url::parse(origin).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.path() == "/"
                    && !origin.trim_end_matches('/').contains(['?', '#'])
                    && u.username().is_empty()
                    && !origin.ends_with('/')
            });
            if !ok {
                return Err(ConfigError::invalid(format!(
                    "allowed_origins: '{origin}' is not an origin a browser sends \
                     (scheme://host[:port], e.g. https://example.com)"
                )));
            }
        }
        if let Some(urls) = &self.bus.url {
            for (i, server) in urls.split(',').map(str::trim).enumerate() {
                let ok = url::Url::parse(server).is_ok_and(|u| {
                    matches!(u.scheme(), "nats" | "tls" | "ws" | "wss") && u.host_str().is_some()
                });
                // Not echoed: a URL may carry a password.
                if !ok {
                    return Err(ConfigError::invalid(format!(
                        "bus.url (--nats): server {} of the list is not a NATS URL \
                         (nats://host:port, tls://, ws:// or wss://)",
                        i + 1
                    )));
                }
            }
        }
        if let Some(path) = &self.bus.credentials {
            std::fs::metadata(path).map_err(|e| ConfigError::unreadable(path, e))?;
        }
        Ok(())
    }

    /// The namespace of a topic, if configured.
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.get(name)
    }

    /// The deepest retention of all namespaces: the stream's `max_msgs_per_subject`.
    pub fn deepest_retention(&self) -> u32 {
        self.namespaces
            .values()
            .map(|n| n.retained)
            .max()
            .unwrap_or(1)
    }

    /// The effective configuration as TOML, for `--check-config`, secrets
    /// redacted: its output ends up in terminals, CI logs and tickets.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(&self.redacted()).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }

    /// A copy without secrets: keys, passwords, tokens, and the password of
    /// a bus URL (`nats://user:secret@host`).
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        let hide = |v: &mut Option<String>| {
            if v.is_some() {
                *v = Some(REDACTED.to_string());
            }
        };
        hide(&mut c.publish_key);
        hide(&mut c.operator_key);
        hide(&mut c.auth.secret);
        hide(&mut c.bus.password);
        hide(&mut c.bus.token);
        if let Some(url) = &c.bus.url {
            c.bus.url = Some(redact_url_credentials(url));
        }
        c
    }
}

/// Each comma-separated URL with its userinfo's password (or token) replaced.
fn redact_url_credentials(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let Some((scheme, rest)) = url.split_once("://") else {
                return url.to_string();
            };
            let host_start = rest.find(['/', '?']).unwrap_or(rest.len());
            match rest[..host_start].rfind('@') {
                Some(at) => {
                    let user = rest[..at].split(':').next().unwrap_or("");
                    let hidden = if rest[..at].contains(':') {
                        format!("{user}:{REDACTED}")
                    } else {
                        REDACTED.to_string()
                    };
                    format!("{scheme}://{hidden}{}", &rest[at..])
                }
                None => url.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::error::ConfigErrorKind;

    #[test]
    fn references_outside_the_file_are_checked() {
        let check = |toml: &str| Config::from_toml(toml).unwrap().validate();
        let e = check("allowed_origins = [\"example.com\"]\n").unwrap_err();
        assert!(
            e.to_string().contains("'example.com' is not an origin"),
            "{e}"
        );
        assert!(check("allowed_origins = [\"https://example.com/app\"]\n").is_err());
        assert!(check("allowed_origins = [\"https://example.com:8443\"]\n").is_ok());
        let e = check("[bus]\nurl = \"nats://a:4222, localhost:4222\"\n").unwrap_err();
        assert!(e.to_string().contains("server 2 of the list"), "{e}");
        assert!(check("[bus]\nurl = \"nats://a:4222,tls://b:4222\"\n").is_ok());
        let e = check("[bus]\ncredentials = \"/nonexistent/hub.creds\"\n").unwrap_err();
        assert_eq!(e.kind(), ConfigErrorKind::Unreadable);
    }

    #[test]
    fn defaults_match_protocol() {
        let c = Config::default();
        assert!(c.validate().is_ok());
        assert_eq!(c.namespaces["results"].mode, Mode::State);
        assert_eq!(c.namespaces["results"].retained, 10);
        assert_eq!(c.namespaces["clips"].mode, Mode::Feed);
        assert_eq!(c.namespaces["clips"].retained, 10_000);
        assert_eq!(c.limits.max_frame_bytes, 4096);
        assert_eq!(c.deepest_retention(), CLIPS_RETAINED);
    }

    #[test]
    fn file_adds_namespaces_and_keeps_defaults() {
        let c = Config::from_toml(
            r#"
            heartbeat_ms = 1000
            [limits]
            max_subscriptions = 3
            [namespaces.cheers]
            mode = "feed"
            retained = 5
            publish = true
            "#,
        )
        .unwrap();
        assert_eq!(c.heartbeat_ms, 1000);
        assert_eq!(c.limits.max_subscriptions, 3);
        assert_eq!(c.limits.frames_burst, 40);
        assert!(c.namespaces["cheers"].publish);
        assert!(c.namespaces.contains_key("results"));
        let again = Config::from_toml(&c.to_toml()).unwrap();
        assert_eq!(again.namespaces, c.namespaces);
    }

    #[test]
    fn trusted_proxies_take_addresses_and_ranges_in_canonical_form() {
        let c = Config::from_toml(
            "trusted_proxies = [\"10.0.0.7\", \"10.1.2.3/16\", \"fd00::/8\", \"::ffff:192.0.2.0/120\"]\n",
        )
        .unwrap();
        let shown: Vec<String> = c.trusted_proxies.iter().map(|n| n.0.to_string()).collect();
        assert_eq!(
            shown,
            ["10.0.0.7/32", "10.1.0.0/16", "fd00::/8", "192.0.2.0/24"]
        );
        let again = Config::from_toml(&c.to_toml()).unwrap();
        assert_eq!(again.trusted_proxies, c.trusted_proxies);
        let err = Config::from_toml("trusted_proxies = [\"proxy.local\"]\n").unwrap_err();
        assert!(err.to_string().contains("proxy.local"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_in_the_printed_configuration() {
        let mut c = Config::from_toml(
            r#"
            publish_key = "publish-key-of-at-least-32-bytes-xyz"
            operator_key = "operator-key-of-at-least-32-bytes-xyz"
            [auth]
            secret = "auth-secret-of-at-least-32-bytes-xyz"
            [bus]
            url = "nats://editor:bus-url-pass@nats-1:4222,nats://nats-2:4222"
            password = "bus-password"
            token = "bus-token"
            "#,
        )
        .unwrap();
        c.node_name = "n".into();
        c.validate().unwrap();
        let text = c.to_toml();
        for secret in [
            "publish-key-of",
            "operator-key-of",
            "auth-secret-of",
            "bus-url-pass",
            "bus-password",
            "bus-token",
        ] {
            assert!(!text.contains(secret), "{secret} printed:\n{text}");
        }
        assert!(
            text.contains("nats://editor:<redacted>@nats-1:4222,nats://nats-2:4222"),
            "{text}"
        );
        assert_eq!(text.matches(REDACTED).count(), 6, "{text}");
    }

    #[test]
    fn short_publish_keys_and_half_tls_are_refused() {
        for (toml, needle) in [
            ("publish_key = \"a\"\n", "publish_key"),
            ("[tls]\ncert_file = \"/c.pem\"\n", "tls"),
            ("proxy_protocol = true\n", "proxy_protocol"),
            (
                "[limits]\naddress_share_percent = 0\n",
                "address_share_percent",
            ),
        ] {
            let c = Config::from_toml(toml).unwrap();
            let err = c.validate().unwrap_err();
            assert!(err.to_string().contains(needle), "{toml}: {err}");
        }
        // "" is how the old reference left the key unset.
        assert!(
            Config::from_toml("publish_key = \"\"\n")
                .unwrap()
                .publish_key
                .is_none()
        );
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let err = Config::from_toml("nonsense = 1").unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::Malformed);
        assert!(err.to_string().contains("nonsense"), "{err}");
        let c = Config::from_toml("[namespaces.x]\nmode = \"feed\"\nretained = 0\n").unwrap();
        let err = c.validate().unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::Invalid);
        assert!(err.to_string().contains("retained"), "{err}");
        let cli = Cli::parse_from(["tribune-hub", "--config", "/nonexistent/tribune.toml"]);
        let err = Config::load(&cli).unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::Unreadable);
        assert!(
            format!("{err:#}").starts_with("cannot read /nonexistent/tribune.toml: "),
            "{err:#}"
        );
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_layer_changes_only_what_it_names() {
        let file = "heartbeat_ms = 1000\n[namespaces.results]\nretained = 20\n";
        let c = crate::config_layers::layered(
            &Config::default(),
            Some((Path::new("t.toml"), file)),
            env(&[
                ("TRIBUNE_BUS__PASSWORD", "s3cret"),
                ("TRIBUNE_DEMO", "1"),
                ("TRIBUNE_LIMITS__FRAMES_BURST", "80"),
                (
                    "TRIBUNE_ALLOWED_ORIGINS",
                    "https://a.example, https://b.example",
                ),
                ("TRIBUNE_HUB_BIN", "/not/a/setting"),
                ("TRIBUNE_NATS", "nats://x:4222"),
            ]),
        )
        .unwrap();
        assert_eq!(c.heartbeat_ms, 1000);
        let results = &c.namespaces["results"];
        assert_eq!(results.retained, 20);
        assert_eq!(
            results.mode,
            tribune_protocol::Mode::State,
            "kept from the built-in"
        );
        assert_eq!(results.reactions.len(), 4, "kept from the built-in");
        assert_eq!(c.bus.password.as_deref(), Some("s3cret"));
        assert!(c.demo);
        assert_eq!(c.limits.frames_burst, 80);
        assert_eq!(
            c.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
    }

    #[test]
    fn errors_say_where() {
        let file = "demo = false\n\n[limits]\nframes_burst = \"lots\"\n";
        let e = crate::config_layers::layered(
            &Config::default(),
            Some((Path::new("t.toml"), file)),
            env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("t.toml:4: limits.frames_burst: invalid type"),
            "{e}"
        );
        let e = crate::config_layers::layered(
            &Config::default(),
            None,
            env(&[("TRIBUNE_HEARTBEAT_MS", "25s")]),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "TRIBUNE_HEARTBEAT_MS: expected an integer, got '25s'");
        let e = crate::config_layers::layered(
            &Config::default(),
            None,
            env(&[("TRIBUNE_DEMO", "maybe")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("TRIBUNE_DEMO: expected a boolean"), "{e}");
        let e = crate::config_layers::layered(
            &Config::default(),
            None,
            env(&[("TRIBUNE_BUS__PASWORD", "x")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("TRIBUNE_BUS__PASWORD: unknown field `pasword`"),
            "{e}"
        );
        let e = crate::config_layers::layered(
            &Config::default(),
            Some((Path::new("t.toml"), "[namespaces.new]\nretained = 3\n")),
            env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("missing field `mode`"), "{e}");
        let e = crate::config_layers::layered(
            &Config::default(),
            Some((Path::new("t.toml"), "a = [\n")),
            env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("t.toml:"), "{e}");
    }
}
