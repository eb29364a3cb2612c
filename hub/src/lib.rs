//! Tribune hub node: holds fans' websocket connections, subscribes to the bus
//! only for the topics its fans want, and fans every message out.
//!
//! Layout (one concern per file):
//! - `config`: every setting with its default (file, env, flags).
//! - `error`: the one error type, `Error<Kind>`, and each area's kinds.
//! - `node`: the `Node` every connection shares; its socket counts.
//! - `edge`: between the network and the node: client addresses behind
//!   proxies, PROXY protocol, TLS, the accept loops, security headers.
//! - `server`: the public listener's routes; the websocket upgrade.
//! - `internal`: the internal listener's routes (metrics, publish, probes).
//! - `admin`: the admin page (`/admin`, internal listener, with a key):
//!   nodes and topics from the statistics partials, a live tail.
//! - `publish`: `POST /v1/publish` and its guards.
//! - `history`: `GET /v1/history`, pages of a topic's retained messages.
//! - `retract`: `POST /v1/retract`, an editor's retraction, behind the same
//!   guards.
//! - `server_api`: the operators' `POST /v1/disconnect` and `/v1/revoke`;
//!   `control`: the sealed control messages that carry them to every node.
//! - `answer`: HTTP answers both listeners give (errors, health).
//! - `handshake`: checks before the upgrade (rate, capacity, origin, token,
//!   shares).
//! - `occupancy`: connections held per client address and per user.
//! - `audit`: the rate-limited log of refusals and their counts.
//! - `auth`: token verification and topic grants.
//! - `connection`: one socket: reader, writer, heartbeats, close codes.
//! - `ws`: the websocket itself: upgrade, permessage-deflate, frames built
//!   once and written to every connection with vectored writes.
//! - `outbox`: a connection's bounded queue: conflation, 4008, batching.
//! - `session`: a client's frames turned into registry actions.
//! - `sse`: the HTTP fallback for networks that block websockets:
//!   `GET /v1/sse` (one topic as server-sent events, a connection without
//!   a socket, subscribed through a `session`) and `POST /v1/react` with the
//!   stream's reaction key; CORS for both.
//! - `registry`: topic → relay; relay lifecycle; bus watch and checks.
//! - `relay`: per-topic ordering, gap repair, cache, encode-once fan-out.
//! - `bus`: the `Bus` (stored stream) and `SideChannel` traits and their
//!   contracts; `bus::memory` (embedded) and `bus::nats` (NATS JetStream:
//!   live feeds from consumers of the stream, credentials and TLS);
//!   `bus::conformance`, the shared suite.
//! - `limits`: every limit of PROTOCOL.md section 8.
//! - `log_limit`: warnings that hostile input could flood, at most one per interval.
//! - `metrics`: every metric name.
//! - `process`: the process's own readings (`/proc/self`) for `/metrics`.
//! - `drain`: SIGTERM and the paced drain.
//! - `stats`: audience and reaction windows summed across nodes, partials
//!   sealed with the cluster key.
//! - `demo`: the simulated live event behind `--demo`.
//!
//! Public, for `main.rs`, the integration tests and the fuzz targets:
//! [`run`], `config`, `auth`, `bus` and `error`. Every other module is
//! private to the crate.

pub(crate) mod admin;
pub(crate) mod answer;
pub(crate) mod audit;
pub mod auth;
pub mod bus;
pub mod config;
pub(crate) mod connection;
pub(crate) mod control;
pub(crate) mod demo;
pub(crate) mod drain;
pub(crate) mod edge;
pub mod error;
pub(crate) mod handshake;
pub(crate) mod heap;
pub(crate) mod history;
pub(crate) mod internal;
pub(crate) mod keyed;
pub(crate) mod limits;
pub(crate) mod log_limit;
pub(crate) mod metrics;
pub(crate) mod node;
pub(crate) mod occupancy;
pub(crate) mod outbox;
pub(crate) mod process;
pub(crate) mod publish;
pub(crate) mod registry;
pub(crate) mod relay;
pub(crate) mod retract;
pub(crate) mod server;
pub(crate) mod server_api;
pub(crate) mod session;
pub(crate) mod sse;
pub(crate) mod stats;
pub(crate) mod ws;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::bus::memory::MemoryBus;
use crate::bus::{Bus, SideChannel};
use crate::config::Config;
use crate::error::ConfigError;
use crate::metrics::Metrics;

/// How often per-address limiters forget the addresses gone quiet.
const LIMITER_SWEEP: Duration = Duration::from_secs(5);

/// Loads the `[tls]` pair as the node would at start, so that
/// `--check-config` refuses what the node would refuse.
pub fn check_tls(config: &config::TlsConfig) -> Result<(), ConfigError> {
    edge::tls::Tls::load(config).map(|_| ())
}

/// Reads the statistics key as the node would at start (its file
/// included), so that `--check-config` refuses what the node would refuse.
pub fn check_stats_key(stats: &config::StatsConfig) -> Result<(), ConfigError> {
    stats.key_bytes().map(drop)
}

/// Reads and parses the bus's credential and TLS files as connecting
/// would, so that `--check-config` refuses what the node would refuse.
pub fn check_bus(config: &config::BusConfig) -> Result<(), ConfigError> {
    bus::nats::settings::check(config)
}

/// Creates or updates the stream as `[bus]` describes it, as a hub with
/// `manage_stream = true` does at start, and answers its epoch: what the job
/// holding the stream administrator's credentials runs
/// (`--provision-stream`), so that hubs need no right to change the stream.
pub async fn provision_stream(config: &Config) -> anyhow::Result<String> {
    if config.bus.url.is_none() {
        anyhow::bail!("--provision-stream needs a NATS bus: --nats or bus.url");
    }
    let bus_config = config::BusConfig {
        manage_stream: true,
        ..config.bus.clone()
    };
    let bus = bus::nats::NatsBus::connect(&bus_config, config.deepest_retention() + 1).await?;
    let status = bus.status().borrow().clone();
    if !status.connected {
        // A region's mirror, created, whose origin could not be asked.
        anyhow::bail!(
            "stream {} ready, but its origin's epoch is not known yet (origin unreachable): run again",
            config.bus.stream
        );
    }
    Ok(status.epoch.to_string())
}

/// Promotes this region's mirror of the stream to origin, after its origin
/// region was lost (`--promote-region`, k8s/README.md "Regions"): answers
/// the line for the operator, with the old and new epoch.
pub async fn promote_region(config: &Config) -> anyhow::Result<String> {
    if config.bus.url.is_none() {
        anyhow::bail!("--promote-region needs a NATS bus: --nats or bus.url");
    }
    let (before, after) = bus::nats::NatsBus::promote_region(&config.bus).await?;
    Ok(if before == after {
        format!(
            "stream {} is already promoted: epoch {after}",
            config.bus.stream
        )
    } else {
        format!(
            "stream {} promoted: epoch {after} (was {before}; resumes up to its last seq recover)",
            config.bus.stream
        )
    })
}

/// Builds the bus the configuration asks for: one object, seen as the stored
/// stream and as the side channel.
async fn connect_bus(
    config: &Config,
    metrics: &Metrics,
) -> anyhow::Result<(Arc<dyn Bus>, Arc<dyn SideChannel>)> {
    // BUS SELECTION
    match &config.bus.url {
        None => {
            let retention: HashMap<String, u32> = config
                .namespaces
                .iter()
                // The memory bus keeps what the stream would: the depth.
                .map(|(n, ns)| (n.clone(), ns.depth()))
                .collect();
            let window = Duration::from_secs(config.bus.duplicate_window_secs);
            let bus = Arc::new(MemoryBus::new(retention, window));
            Ok((bus.clone(), bus))
        }
        Some(_url) => connect_nats(config, metrics).await,
    }
}

async fn connect_nats(
    config: &Config,
    metrics: &Metrics,
) -> anyhow::Result<(Arc<dyn Bus>, Arc<dyn SideChannel>)> {
    // One message more than the deepest retention: the oldest message a relay
    // caches then still has its predecessor stored, so its `prev` is exact and
    // a resume from that predecessor recovers, as on the embedded bus.
    let bus = bus::nats::NatsBus::connect_counted(
        &config.bus,
        config.deepest_retention() + 1,
        metrics.bus_refused.clone(),
    )
    .await?;
    let bus = Arc::new(bus);
    Ok((bus.clone(), bus))
}

/// Runs a node until SIGTERM and its drain; prints `internal listener on
/// http://<addr>`, then `listening on http://<addr>` (the public one;
/// `https://` with `[tls]`).
pub async fn run(config: Config) -> anyhow::Result<()> {
    let mut shutdown = drain::Shutdown::install()?;
    let config = Arc::new(config);
    let auth = auth::Authenticator::from_config(&config.auth)?;
    let tls = edge::tls::Tls::load(&config.tls)?.map(Arc::new);
    let metrics = Arc::new(Metrics::new());
    let (bus, side) = connect_bus(&config, &metrics).await?;
    let node = node::Node::new(config.clone(), bus, side, auth, metrics);
    let internal = edge::listener::bind(config.internal_listen).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {} (internal_listen): {e}",
            config.internal_listen
        )
    })?;
    let internal_addr = internal.local_addr()?;
    let listener = edge::listener::bind(config.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    {
        // Two lines, in this order: harnesses read the first for the
        // internal address and take the second as "ready".
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "internal listener on http://{internal_addr}")?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        writeln!(out, "listening on {scheme}://{addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, internal = %internal_addr, tls = tls.is_some(),
        node = %config.node_name, bus = node.bus.kind(),
        max_connections = node.max_connections, "hub node started");
    if config.publish_key.is_none() {
        tracing::info!(
            "no publish_key: POST /v1/publish is off{}",
            if config.demo {
                " (but for loopback callers, --demo)"
            } else {
                ""
            }
        );
    }
    if node.max_connections < config.limits.max_connections {
        tracing::warn!(
            configured = config.limits.max_connections,
            effective = node.max_connections,
            "the open-files limit caps connections: raise it (ulimit -n, LimitNOFILE) for more"
        );
    }
    tokio::spawn(node.registry.clone().watch_bus());
    tokio::spawn(node.stats.clone().run());
    tokio::spawn(server_api::follow(node.clone()));
    if config.heap_trim_ms > 0 {
        tokio::spawn(heap::run(
            Duration::from_millis(config.heap_trim_ms),
            node.metrics.clone(),
        ));
    }
    if config.demo {
        tokio::spawn(demo::run(node.clone()));
    }
    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().watch(node.metrics.clone()));
    }
    {
        let node = node.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LIMITER_SWEEP);
            loop {
                tick.tick().await;
                node.sweep_limiters();
            }
        });
    }
    // The internal listener serves through the drain: readiness reports it
    // and metrics show it.
    tokio::spawn(edge::listener::serve_internal(
        node.clone(),
        internal,
        internal::router(node.clone()),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(edge::listener::serve_public(
        node.clone(),
        listener,
        server::router(node.clone()),
        tls,
        async move {
            let _ = stop_rx.await;
        },
    ));
    shutdown.requested().await;
    tracing::info!("SIGTERM: not ready, no new connections, draining");
    node.start_draining();
    let _ = stop_tx.send(());
    drain::drain(&node, &mut shutdown).await;
    server.abort();
    Ok(())
}
