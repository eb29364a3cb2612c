//! `regions`: publish→screen latency per region (issue 20).
//!
//! Two nats-servers as two regions (`tribune_harness::region`: JetStream
//! domains `A` and `B`, B a leaf node of A), the stream in A, a hub in each
//! region (B's hub creates and reads the mirror `TRIBUNE_B`), `-n` fans
//! split over the two hubs on one `clips` topic, and an editor in region A
//! publishing at `--rate` for `--duration-s`. Each payload carries its
//! publication time; each fan records, per message, the time it read it
//! minus that time. Reported per region: messages owed and received, and the
//! latency's percentiles; the editor's ack latency too.
//!
//! Latency between the regions (`--region-delay-ms`, one way, default 40):
//! a delay proxy on the leaf node connection
//! (`tribune_harness::delay`), so that only what crosses between the
//! regions is late, as on a real long link. Not `tc netem` in a network
//! namespace: the machines this was built on run as root and may create
//! namespaces, but their kernel has no netem qdisc ("Specified qdisc kind
//! is unknown"; prio, fq_codel and sfq neither), and a developer's machine
//! may not give the rights.
//!
//! The fans run in the coordinator's process (tokio-tungstenite): a few
//! hundred of them measure latency, not capacity.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;
use tribune_harness::hub::{Hub, HubOptions};
use tribune_harness::nats::NatsOptions;
use tribune_harness::region::Regions;

use crate::cli::Cli;
use crate::payload::now_us;
use crate::report::RunReport;
use crate::wire::Target;

const TOPIC: &str = "clips.regions.latency";
/// Fans connected at once while the run starts.
const CONNECTING: usize = 64;

/// What one region's fans saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RegionFigures {
    pub region: String,
    pub fans: u64,
    /// Messages owed: fans × publications.
    pub owed: u64,
    /// Messages received once (latency recorded).
    pub received: u64,
    /// Messages received again (a `seq` not above the fan's last).
    pub duplicated: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The run's figures (written to `regions-tribune.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RegionsReport {
    /// The one-way delay added between the regions, ms (0: none).
    pub delay_ms: u64,
    /// How it was added.
    pub link: String,
    pub published: u64,
    /// The editor's publish→ack latency (in region A), ms.
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub regions: Vec<RegionFigures>,
}

/// Runs the scenario and reports the figures per region.
pub async fn run_target(
    cli: &Cli,
    target: Target,
    run_dir: &Path,
    hard_deadline: Instant,
) -> anyhow::Result<RunReport> {
    if target != Target::Tribune {
        bail!("regions measures hubs: run it with --target tribune");
    }
    let started = Instant::now();
    let report = measure(cli, run_dir, hard_deadline).await?;
    std::fs::write(
        run_dir.join("regions-tribune.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    eprint!("{}", table(&report));
    let mut rep = RunReport {
        target: Some(target),
        topics: 1,
        per_client: 1,
        duration_s: started.elapsed().as_secs_f64(),
        ..RunReport::default()
    };
    // Loss or duplicates in either region fail the run (exit 3), as in the
    // other feed scenarios.
    for r in &report.regions {
        rep.delivery.deliveries += r.received;
        rep.delivery.loss.lost += r.owed.saturating_sub(r.received);
        rep.delivery.loss.duplicated += r.duplicated;
        if r.received < r.owed || r.duplicated > 0 {
            rep.problems.push(format!(
                "region {}: {} of {} messages received, {} twice",
                r.region, r.received, r.owed, r.duplicated
            ));
        }
    }
    Ok(rep)
}

/// The measurement itself: regions, hubs, fans, the editor.
async fn measure(
    cli: &Cli,
    run_dir: &Path,
    hard_deadline: Instant,
) -> anyhow::Result<RegionsReport> {
    let delay_ms = cli.region_delay_ms;
    let bin = tribune_harness::binaries::find_binary("nats-server", cli.nats_server_bin.as_deref())
        .context("nats-server not found: run scripts/install-nats, or pass --nats-server-bin")?;
    let base = NatsOptions {
        bin: Some(bin),
        dir_in: Some(run_dir.to_path_buf()),
        ..NatsOptions::default()
    };
    let regions = Regions::try_start_with_latency(&base, Duration::from_millis(delay_ms)).await?;
    let link = if delay_ms > 0 {
        format!("{delay_ms} ms each way on the leaf node connection (delay proxy)")
    } else {
        "none".to_string()
    };
    let hub_a = start_hub(cli, run_dir, &regions.a.url(), "a", "").await?;
    let mirror = format!(
        "stream = \"TRIBUNE_B\"\nmirror_of = \"TRIBUNE\"\nmirror_api = \"{}\"\n",
        Regions::a_api()
    );
    let hub_b = start_hub(cli, run_dir, &regions.b.url(), "b", &mirror).await?;
    // B's hub is ready once it knows the origin's epoch (asked across the
    // link): fans arriving before would be moved to it with a 1001 close.
    for hub in [&hub_a, &hub_b] {
        while hub.get_internal("/readyz").await.0 != 200 {
            if Instant::now() > hard_deadline {
                bail!("hub {} not ready before --max-seconds", hub.ws_url());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let fans_a = cli.clients.div_ceil(2);
    let fans_b = cli.clients - fans_a;
    let latency_a = Arc::new(Mutex::new(histogram()));
    let latency_b = Arc::new(Mutex::new(histogram()));
    let dups_a = Arc::new(AtomicU64::new(0));
    let dups_b = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECTING));
    let mut ready = Vec::new();
    for (hub, count, hist, dups) in [
        (&hub_a, fans_a, &latency_a, &dups_a),
        (&hub_b, fans_b, &latency_b, &dups_b),
    ] {
        for _ in 0..count {
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            ready.push(ready_rx);
            tasks.push(tokio::spawn(fan(
                hub.ws_url(),
                hist.clone(),
                dups.clone(),
                stop_rx.clone(),
                gate.clone(),
                ready_tx,
            )));
        }
    }
    for r in ready {
        let left = hard_deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, r)
            .await
            .context("fans not subscribed before --max-seconds")?
            .context("a fan failed to subscribe")?;
    }
    eprintln!(
        "regions: {fans_a} fans in A, {fans_b} in B subscribed; publishing {} msg/s for {} s (link: {link})",
        cli.rate, cli.duration_s
    );

    let (published, acks) = publish(cli, &regions.a.url(), hard_deadline).await?;
    // Settle: until every fan has every message, or the settle time.
    let owed_each = published;
    let settle = Instant::now() + Duration::from_millis(cli.settle_ms);
    loop {
        let got = locked(&latency_a).len() + locked(&latency_b).len();
        if got >= owed_each * cli.clients || Instant::now() > settle.min(hard_deadline) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let figures = |region: &str, fans: u64, h: &Histogram<u64>, dups: &AtomicU64| RegionFigures {
        region: region.to_string(),
        fans,
        owed: fans * owed_each,
        received: h.len(),
        duplicated: dups.load(Ordering::Relaxed),
        p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
        p90_ms: h.value_at_quantile(0.9) as f64 / 1000.0,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
        max_ms: h.max() as f64 / 1000.0,
    };
    let report = RegionsReport {
        delay_ms,
        link,
        published,
        ack_p50_ms: acks.value_at_quantile(0.5) as f64 / 1000.0,
        ack_p99_ms: acks.value_at_quantile(0.99) as f64 / 1000.0,
        regions: vec![
            figures("A (origin)", fans_a, &locked(&latency_a), &dups_a),
            figures("B (mirror)", fans_b, &locked(&latency_b), &dups_b),
        ],
    };
    drop((hub_a, hub_b));
    Ok(report)
}

/// The histogram behind `m`; a fan that panicked holding it left figures
/// that are still counts.
fn locked(m: &Mutex<Histogram<u64>>) -> std::sync::MutexGuard<'_, Histogram<u64>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn histogram() -> Histogram<u64> {
    // Microseconds, up to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

async fn start_hub(
    cli: &Cli,
    run_dir: &Path,
    nats_url: &str,
    region: &str,
    bus_lines: &str,
) -> anyhow::Result<Hub> {
    let bin = tribune_harness::binaries::find_binary("tribune-hub", cli.hub_bin.as_deref())
        .context("tribune-hub not found: pass --hub-bin")?;
    let config = run_dir.join(format!("regions-hub-{region}.toml"));
    std::fs::write(
        &config,
        format!(
            "[bus]\n{bus_lines}[limits]\nhandshakes_per_second = 100000\nhandshakes_burst = 100000\n\
             node_handshakes_per_second = 100000\nnode_handshakes_burst = 100000\naddress_share_percent = 100\n"
        ),
    )?;
    let config = config.to_str().context("utf-8 path")?.to_string();
    let name = format!("regions-{region}");
    let mut opts = HubOptions::for_tests(&[
        "--nats",
        nats_url,
        "--config",
        &config,
        "--node-name",
        &name,
    ]);
    opts.bin = bin;
    opts.log_level = "warn".into();
    opts.log_file = Some(run_dir.join(format!("regions-hub-{region}.log")));
    Hub::launch(opts).await
}

/// One fan: subscribes, then records each message's age until told to stop.
async fn fan(
    url: String,
    latency: Arc<Mutex<Histogram<u64>>>,
    duplicated: Arc<AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    gate: Arc<tokio::sync::Semaphore>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<()> {
    let permit = gate.acquire_owned().await?;
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let subscribe = serde_json::json!({"type": "subscribe", "id": 1, "topic": TOPIC});
    ws.send(Message::text(subscribe.to_string())).await?;
    loop {
        let Some(frame) = ws.next().await else {
            bail!("closed before the ack");
        };
        if let Message::Text(t) = frame? {
            let v: serde_json::Value = serde_json::from_str(&t)?;
            if v["type"] == "ack" {
                break;
            }
        }
    }
    drop(permit);
    let _ = ready.send(());
    let mut last_seq = 0;
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            frame = ws.next() => {
                let Some(frame) = frame else { return Ok(()) };
                let Message::Text(t) = frame? else { continue };
                let at = now_us();
                let v: serde_json::Value = serde_json::from_str(&t)?;
                if v["type"] != "message" {
                    continue;
                }
                let seq = v["seq"].as_u64().unwrap_or(0);
                if seq <= last_seq {
                    duplicated.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                last_seq = seq;
                if let Some(sent) = v["data"]["t"].as_u64() {
                    let _ = locked(&latency).record(at.saturating_sub(sent).max(1));
                }
            }
        }
    }
}

/// The editor in region A: `--rate` publications a second for
/// `--duration-s`, each acked before the next is due; the count and the
/// ack latency.
async fn publish(
    cli: &Cli,
    url: &str,
    hard_deadline: Instant,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client);
    let total = (cli.rate * cli.duration_s).round().max(1.0) as u64;
    let every = Duration::from_secs_f64(1.0 / cli.rate.max(0.001));
    let pad = "x".repeat(cli.payload_size.saturating_sub(48));
    let mut acks = histogram();
    let start = tokio::time::Instant::now();
    for i in 0..total {
        if Instant::now() > hard_deadline {
            bail!("--max-seconds reached while publishing");
        }
        tokio::time::sleep_until(start + every * i as u32).await;
        let sent = now_us();
        let data = serde_json::json!({"t": sent, "i": i, "pad": pad}).to_string();
        let ack = js
            .publish(format!("tribune.fan.{TOPIC}"), data.into())
            .await?;
        tokio::time::timeout(Duration::from_secs(10), ack)
            .await
            .context("no ack within 10 s")??;
        let _ = acks.record(now_us().saturating_sub(sent).max(1));
    }
    Ok((total, acks))
}

/// The figures as a markdown table.
fn table(r: &RegionsReport) -> String {
    let mut out = format!(
        "regions: {} publications; added latency between the regions: {}\n\
         editor (region A) publish→ack: p50 {:.2} ms, p99 {:.2} ms\n\n\
         | region | fans | received / owed | duplicated | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|---|\n",
        r.published, r.link, r.ack_p50_ms, r.ack_p99_ms
    );
    for g in &r.regions {
        out += &format!(
            "| {} | {} | {} / {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            g.region,
            g.fans,
            g.received,
            g.owed,
            g.duplicated,
            g.p50_ms,
            g.p90_ms,
            g.p99_ms,
            g.max_ms
        );
    }
    out
}
