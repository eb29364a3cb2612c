//! `bandwidth`: bytes on the wire per fan per hour of a real event.
//!
//! One generated hour of a speed-skating event (`boards.rs`: a 30-row
//! results board updated 91 times, 20 clips) is replayed at `--rate`
//! publications per second to `-n` subscribers of both topics, once per
//! variant, each on a fresh server:
//!
//! - tribune: full messages; Fossil deltas; permessage-deflate; both; a
//!   mixed population (a quarter each) on one hub;
//! - nats-ws: nats-server's websocket listener, plain and with its
//!   `compression: true` (the same payloads on two core NATS subjects).
//!
//! Measured per variant: bytes received per fan (every frame after the
//! upgrade: welcome, acks, pings, messages), split by topic; server CPU per
//! delivery while the hour is replayed; server RSS per connection idle and
//! after the hour. Every payload each fan ends with (deltas applied,
//! messages inflated) is checked against what was published, by hash: a
//! mixed population receives identical payloads, or the run fails.
//!
//! The clients run in the coordinator's process on the lean websocket
//! client (`ws.rs`); they count bytes, they do not time deliveries.
//!
//! Split by job: [`plan`] holds the variants and what a fan gathers,
//! [`run`] runs one variant on a fresh server, [`fan`] connects the fans and
//! reads the hour on each, [`report`] sums a variant up and prints the table.

mod fan;
mod plan;
mod report;
mod run;

use std::path::Path;
use std::time::Instant;

use anyhow::bail;

use crate::boards;
use crate::cli::Cli;
use crate::report::RunReport;
use crate::wire::Target;

use self::plan::{SEED, Variant};
use self::report::table;
use self::run::{run_nats, run_tribune};

/// Runs every variant of `target`; returns the run report (problems: any
/// payload that differed or went missing).
pub async fn run_target(
    cli: &Cli,
    target: Target,
    run_dir: &Path,
    hard_deadline: Instant,
) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let variants: &[Variant] = match target {
        Target::Tribune => &[
            Variant::Full,
            Variant::Delta,
            Variant::Deflate,
            Variant::DeltaDeflate,
            Variant::Mixed,
        ],
        Target::NatsWs => &[Variant::Nats, Variant::NatsCompressed],
    };
    let hour = boards::hour(SEED);
    let mut reports = Vec::new();
    for &v in variants {
        if Instant::now() > hard_deadline {
            bail!("--max-seconds reached before {}", v.name());
        }
        eprintln!("bandwidth: {} · {} fans", v.name(), cli.clients);
        let r = if v.nats() {
            run_nats(cli, v, &hour, run_dir).await?
        } else {
            run_tribune(cli, v, &hour, run_dir).await?
        };
        eprintln!(
            "bandwidth: {}: {:.0} B per fan-hour (board {:.0}, clips {:.0}), {:.2} µs CPU per delivery, RSS {:.0} B per idle connection",
            v.name(),
            r.bytes_per_fan,
            r.board_bytes_per_fan,
            r.clip_bytes_per_fan,
            r.cpu_us_per_delivery,
            r.rss_idle_per_conn_b
        );
        reports.push(r);
    }
    let path = run_dir.join(format!("bandwidth-{}.json", target.as_str()));
    std::fs::write(&path, serde_json::to_string_pretty(&reports)?)?;
    eprint!("{}", table(&reports));
    let mut rep = RunReport {
        target: Some(target),
        topics: 2,
        per_client: 2,
        duration_s: started.elapsed().as_secs_f64(),
        ..RunReport::default()
    };
    for r in &reports {
        if r.mismatched > 0 || r.missing > 0 {
            rep.problems.push(format!(
                "{}: {} payloads differ from the published ones, {} missing",
                r.variant, r.mismatched, r.missing
            ));
        }
    }
    if !rep.problems.is_empty() {
        bail!("bandwidth: {}", rep.problems.join("; "));
    }
    Ok(rep)
}
