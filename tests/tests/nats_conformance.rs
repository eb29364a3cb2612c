//! The shared bus conformance suite (`tribune_hub::bus::conformance`) against
//! the NATS JetStream bus and a real nats-server: the same functions, through
//! the same macro, as the embedded bus, so the two cannot drift apart.

use tribune_hub::bus::nats::NatsBus;
use tribune_hub::config::BusConfig;
use tribune_tests::nats::NatsServer;

/// A fresh server for each test (the guard: killed when the test ends) and a
/// bus on it, with the default retention (100, clips).
async fn bus() -> (NatsServer, NatsBus) {
    let server = NatsServer::start().await;
    let cfg = BusConfig {
        url: Some(server.url()),
        ..BusConfig::default()
    };
    let bus = NatsBus::connect(&cfg, 100)
        .await
        .expect("NATS bus connects");
    (server, bus)
}

tribune_hub::bus_conformance_tests!(bus);
