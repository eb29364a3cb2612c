//! Tribune load-test harness: drives thousands of websocket clients against
//! a hub (`/v1/ws`) or against nats-server's websocket listener, publishes
//! through NATS JetStream or the hub's HTTP endpoint, and reports
//! connection, latency, throughput, loss and resource figures.
//!
//! Layout:
//! - [`cli`]: the command line.
//! - [`coordinator`]: runs each target through its scenario: servers,
//!   workers, phases; `scenario/`: what each scenario decides and its
//!   traffic phase (`reactions` runs its own clients); `fleet`: the worker
//!   processes; `monitor`: their reports, the timeline, server sampling,
//!   progress bars; `results`: final statistics into the report.
//! - [`servers`]: the run's nats-server and hub nodes (started through
//!   `tribune-harness`, or given by URL).
//! - [`publisher`]: paced publications (JetStream or `POST /v1/publish`).
//! - [`worker`]: a worker process running its share of the clients.
//! - [`ws`]: the lean websocket client (one small buffer, frames in place).
//! - [`tribune`]: the hub protocol as the client speaks it.
//! - [`natsws`]: the NATS text protocol over websocket (the peer).
//! - [`payload`]: the JSON payload carrying counter and send time.
//! - [`boards`]: one generated hour of a speed-skating event (results
//!   board and clips), for the `bandwidth` scenario.
//! - [`account`]: loss and duplicate accounting per subscription.
//! - [`plan`]: topic names and which client subscribes to what (Zipf).
//! - [`wire`]: coordinator ↔ worker messages and histogram transport.
//! - [`machine`]: the machine's description, the open-files limit (process
//!   RSS and CPU come from `tribune_harness::procstat`).
//! - [`report`]: the JSON report, comparison and target checks;
//!   [`html`]: the self-contained HTML report; [`markdown`]: BENCHMARKS.md.

pub mod account;
pub mod boards;
pub mod cli;
pub mod coordinator;
pub mod html;
pub mod machine;
pub mod markdown;
pub mod natsws;
pub mod payload;
pub mod plan;
pub mod publisher;
pub mod report;
pub mod servers;
pub mod tribune;
pub mod wire;
pub mod worker;
pub mod ws;

mod fleet;
mod monitor;
mod results;
mod scenario;
