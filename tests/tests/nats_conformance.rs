//! The shared bus conformance suite (`tribune_hub::bus::conformance`) against
//! the NATS JetStream bus and a real nats-server: the same functions the
//! embedded bus passes, so the two cannot drift apart.
//!
//! Each test gets its own server (a guard the hub's `bus_conformance_tests!`
//! macro has no place for), so the functions are listed here.

use tribune_hub::bus::nats::NatsBus;
use tribune_hub::config::BusConfig;
use tribune_tests::nats::NatsServer;

/// A fresh server and a bus on it, with the default retention (100, clips).
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

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        /// Every public function of the suite runs here too: a function added
        /// to `conformance.rs` and not listed above fails this test.
        #[test]
        fn every_conformance_function_runs_against_nats() {
            let listed = [$(stringify!($name)),*];
            let source = include_str!("../../hub/src/bus/conformance.rs");
            for line in source.lines() {
                if let Some(rest) = line.strip_prefix("pub async fn ") {
                    let name = rest.split('(').next().unwrap_or_default();
                    assert!(listed.contains(&name), "conformance::{name} is not run against NATS");
                }
            }
        }
        $(
            #[tokio::test]
            async fn $name() {
                let (_server, bus) = bus().await;
                let unique = format!("{}{}", stringify!($name).replace('_', "-"), std::process::id());
                tribune_hub::bus::conformance::$name(&bus, &unique).await;
            }
        )*
    };
}

conformance!(
    sequence_prev_and_ts,
    payload_byte_for_byte,
    live_delivery,
    history_reads,
    removed_messages_are_a_hole,
    last_seqs_batched,
    duplicate_publications_stored_once,
    inbound_stays_out_of_the_stream,
    stats_partials,
    status_and_epoch,
);
