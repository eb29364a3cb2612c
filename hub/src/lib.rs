//! Tribune hub node: holds fans' websocket connections, subscribes to the bus
//! only for the topics its fans want, and fans every message out.
//!
//! Layout (one concern per file):
//! - `config`: every setting with its default (file, env, flags).
//! - `config_layers`: defaults, file and `TRIBUNE_*` variables combined key by key.
//! - `error`: the one error type, `Error<Kind>`, and each area's kinds.
//! - `node`: the `Node` every connection shares; its connection count.
//! - `server`: HTTP routes; the websocket upgrade.
//! - `handshake`: checks before the upgrade (origin, token, rate, capacity).
//! - `auth`: token verification and topic grants.
//! - `connection`: one socket: reader, writer, heartbeats, close codes.
//! - `outbox`: a connection's bounded queue: conflation, 4008, batching.
//! - `session`: a client's frames turned into registry actions.
//! - `registry`: topic → relay; relay lifecycle; bus watch and checks.
//! - `relay`: per-topic ordering, gap repair, cache, encode-once fan-out.
//! - `bus`: the `Bus` (stored stream) and `SideChannel` traits and their
//!   contracts; `bus::memory` (embedded) and `bus::nats` (NATS JetStream);
//!   `bus::conformance`, the shared suite.
//! - `limits`: every limit of PROTOCOL.md section 8.
//! - `log_limit`: warnings that hostile input could flood, at most one per interval.
//! - `metrics`: every metric name.
//! - `drain`: SIGTERM and the paced drain.
//! - `stats`: audience and reaction windows summed across nodes.
//! - `demo`: the simulated live event behind `--demo`.
//!
//! Public, for `main.rs`, the integration tests and the fuzz targets:
//! [`run`], `config`, `auth`, `bus` and `error`. Every other module is
//! private to the crate.

pub mod auth;
pub mod bus;
pub mod config;
pub(crate) mod config_layers;
pub(crate) mod connection;
pub(crate) mod demo;
pub(crate) mod drain;
pub mod error;
pub(crate) mod handshake;
pub(crate) mod limits;
pub(crate) mod log_limit;
pub(crate) mod metrics;
pub(crate) mod node;
pub(crate) mod outbox;
pub(crate) mod registry;
pub(crate) mod relay;
pub(crate) mod server;
pub(crate) mod session;
pub(crate) mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::bus::memory::MemoryBus;
use crate::bus::{Bus, SideChannel};
use crate::config::Config;
use crate::metrics::Metrics;

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
                .map(|(n, ns)| (n.clone(), ns.retained))
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

/// Runs a node until SIGTERM and its drain; prints `listening on http://<addr>`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let mut shutdown = drain::Shutdown::install()?;
    let config = Arc::new(config);
    let auth = auth::Authenticator::from_config(&config.auth)?;
    let metrics = Arc::new(Metrics::new());
    let (bus, side) = connect_bus(&config, &metrics).await?;
    let node = node::Node::new(config.clone(), bus, side, auth, metrics);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, node = %config.node_name, bus = node.bus.kind(),
        max_connections = node.max_connections, "hub node started");
    if node.max_connections < config.limits.max_connections {
        tracing::warn!(
            configured = config.limits.max_connections,
            effective = node.max_connections,
            "the open-files limit caps connections: raise it (ulimit -n, LimitNOFILE) for more"
        );
    }
    tokio::spawn(node.registry.clone().watch_bus());
    tokio::spawn(node.stats.clone().run());
    if config.demo {
        tokio::spawn(demo::run(node.clone()));
    }
    let app = server::router(node.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop_rx.await;
    });
    let server = tokio::spawn(server.into_future());
    shutdown.requested().await;
    tracing::info!("SIGTERM: not ready, no new connections, draining");
    node.start_draining();
    let _ = stop_tx.send(());
    drain::drain(&node, &mut shutdown).await;
    server.abort();
    Ok(())
}
