//! Every setting of a hub node with its documented default.
//!
//! Sources, later ones winning key by key: built-in defaults, the TOML file
//! (`--config`), `TRIBUNE_*` environment variables for every key, then the
//! flags (`layers` combines the first three). Namespaces come from the
//! defaults of PROTOCOL.md section 2, changed or extended by the file's
//! `[namespaces.<name>]` tables.
//!
//! Files: this one, the command line, the whole [`Config`] and how it is
//! loaded; `sections`, each `[section]` with its defaults; `layers`, the
//! sources merged key by key; `validate`, what `--check-config` refuses;
//! `render`, the effective configuration as TOML with secrets redacted.

mod layers;
mod render;
mod sections;
#[cfg(test)]
mod tests;
mod validate;

pub(crate) use render::redact_url_credentials;
pub use sections::*;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use serde::{Deserialize, Serialize};

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
    /// Create or update the NATS stream as `[bus]` describes it (what a hub
    /// with `bus.manage_stream = true` does at start), print its epoch and
    /// exit: for the job that declares the stream with the stream
    /// administrator's credentials, while hubs run with `manage_stream =
    /// false` and may not change it.
    #[arg(long)]
    pub provision_stream: bool,
    /// Promote this region's mirror (`bus.stream`) to origin after the
    /// origin's region was lost: it stops copying, takes the editors'
    /// subjects and a new epoch that still recovers resumes up to its last
    /// message; refused while the origin answers. Prints the epochs, exits.
    #[arg(long, conflicts_with = "provision_stream")]
    pub promote_region: bool,
    /// Print the effective configuration (defaults, file, environment and
    /// flags merged; secrets redacted) as TOML and exit 0, without reading
    /// the key and certificate files it names.
    #[arg(long, conflicts_with = "check_config")]
    pub print_config: bool,
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
    /// Key of the admin page (`/admin` on the internal listener), at least
    /// 32 bytes; also `TRIBUNE_ADMIN_KEY`. Unset: no admin page.
    pub admin_key: Option<String>,
    /// Bearer key of the server API on the internal listener
    /// (`/v1/disconnect`, `/v1/unsubscribe`, `/v1/revoke`), at least 32 bytes; also
    /// `TRIBUNE_OPERATOR_KEY`. Unset: the server API is off.
    pub operator_key: Option<String>,
    /// Interval of WebSocket pings (PROTOCOL.md section 7).
    pub heartbeat_ms: u64,
    /// Accept permessage-deflate (RFC 7692) from clients that offer it. Each
    /// message is compressed once per node, the same bytes for every such
    /// connection, and no compression state is kept per connection.
    pub permessage_deflate: bool,
    /// How long a relay outlives its last subscriber, so that a fan who
    /// reconnects at once does not cost a new history read.
    pub relay_linger_ms: u64,
    /// How long a connection closed for being slow may take to receive its
    /// close frame before the socket is dropped.
    pub slow_close_grace_ms: u64,
    /// How often the node checks whether its allocator holds enough freed
    /// memory to give back to the system (after a resume storm); 0 never.
    pub heap_trim_ms: u64,
    /// Browser origins allowed to open a websocket; empty allows any.
    pub allowed_origins: Vec<String>,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For`
    /// and PROXY protocol headers are believed; nobody else's are.
    pub trusted_proxies: Vec<ProxyNet>,
    /// Every connection to the public listener starts with a PROXY protocol
    /// v2 header (an L4 load balancer's); only trusted proxies may connect.
    pub proxy_protocol: bool,
    /// How log lines are written to stderr: `text` (`key=value`, colours
    /// only at a terminal) or `json` (one object per line, for log shippers).
    /// `RUST_LOG` picks what is logged (default `info`).
    pub log_format: LogFormat,
    pub limits: Limits,
    pub auth: AuthConfig,
    pub bus: BusConfig,
    pub drain: DrainConfig,
    pub stats: StatsConfig,
    pub tls: TlsConfig,
    pub namespaces: BTreeMap<String, Namespace>,
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
            admin_key: None,
            operator_key: None,
            heartbeat_ms: 25_000,
            permessage_deflate: true,
            relay_linger_ms: 5_000,
            slow_close_grace_ms: 5_000,
            heap_trim_ms: 5_000,
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            log_format: LogFormat::Text,
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
        let mut config = layers::layered(&Config::default(), file, std::env::vars())?.normalized();
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
        layers::layered(
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
        if self.admin_key.as_deref() == Some("") {
            self.admin_key = None;
        }
        if self.operator_key.as_deref() == Some("") {
            self.operator_key = None;
        }
        self
    }

    /// The namespace of a topic, if configured.
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.get(name)
    }

    /// The deepest retention of all namespaces in messages (`retained`, or
    /// `retained_secs × expected_rate` when more): the stream's
    /// `max_msgs_per_subject` (plus one), since NATS removes a message when
    /// any limit is exceeded.
    pub fn deepest_retention(&self) -> u32 {
        self.namespaces
            .values()
            .map(Namespace::depth)
            .max()
            .unwrap_or(1)
    }
}
