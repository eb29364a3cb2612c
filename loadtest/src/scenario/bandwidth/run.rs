//! Running one variant: a fresh server (tribune-hub or nats-server), the
//! fans connected, the hour published at `--rate`, and what each fan ended
//! with checked against what was published.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tribune_harness::hub::{Hub, HubOptions};
use tribune_harness::nats::{NatsOptions, NatsServer};
use tribune_harness::procstat::{self, ProcSample};

use crate::boards::{self, Kind};
use crate::cli::Cli;
use crate::ws::WsUrl;

use super::fan::{connect_fans, fan};
use super::plan::{BOARD, CLIPS, Fan, Final, NATS_BOARD, NATS_CLIPS, Variant, hash};
use super::report::{VariantReport, summarize};

fn sample(pid: Option<u32>) -> anyhow::Result<ProcSample> {
    procstat::sample(pid.context("server gone")?).context("server gone")
}

/// One tribune variant (or the mixed population) on a fresh hub.
pub(super) async fn run_tribune(
    cli: &Cli,
    v: Variant,
    hour: &boards::Hour,
    run_dir: &Path,
) -> anyhow::Result<VariantReport> {
    let bin = tribune_harness::binaries::find_binary("tribune-hub", cli.hub_bin.as_deref())
        .context("tribune-hub not found: pass --hub-bin")?;
    // No stats frames (the hour is replayed faster than it lasts: stats
    // windows would be counted per wall-clock second), limits for the crowd.
    let config = run_dir.join("bandwidth-hub.toml");
    std::fs::write(
        &config,
        "permessage_deflate = true\n[limits]\nhandshakes_per_second = 100000\nhandshakes_burst = 100000\n\
         node_handshakes_per_second = 100000\nnode_handshakes_burst = 100000\naddress_share_percent = 100\n\
         [namespaces.results]\naudience = false\nreactions = []\n",
    )?;
    let mut opts = HubOptions::for_tests(&["--config", config.to_str().context("utf-8 path")?]);
    opts.bin = bin;
    opts.log_level = "warn".into();
    opts.log_file = Some(run_dir.join("bandwidth-hub.log"));
    let hub = Hub::launch(opts).await?;
    let pid = hub.pid();
    let before = sample(pid)?;
    let url = WsUrl::parse(&hub.ws_url()).map_err(anyhow::Error::msg)?;
    let (fin_tx, fin_rx) = watch::channel(None::<Final>);
    let mixed = [
        Variant::Full,
        Variant::Delta,
        Variant::Deflate,
        Variant::DeltaDeflate,
    ];
    let tasks = connect_fans(cli.clients, |i, ready| {
        let mode = if v == Variant::Mixed {
            mixed[i as usize % 4]
        } else {
            v
        };
        fan(url.clone(), mode, ready, fin_rx.clone())
    })
    .await?;
    let idle = sample(pid)?;
    // The hour, paced at --rate.
    let mut board = HashMap::new();
    let mut clips = HashMap::new();
    let (mut last_board, mut n_clips) = (0, 0);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / cli.rate.max(0.1)));
    for (kind, value) in &hour.items {
        tick.tick().await;
        let text = serde_json::to_string(value)?;
        match kind {
            Kind::Board => {
                last_board = hub.publish(BOARD, value.clone()).await;
                board.insert(last_board, hash(text.as_bytes()));
            }
            Kind::Clip => {
                let seq = hub.publish(CLIPS, value.clone()).await;
                clips.insert(seq, hash(text.as_bytes()));
                n_clips += 1;
            }
        }
    }
    fin_tx.send_replace(Some(Final {
        board: last_board,
        clips: n_clips,
    }));
    let (fans, after) = gather(tasks, pid).await?;
    let check = |seq: &u64, h: &u64, map: &HashMap<u64, u64>| map.get(seq) != Some(h);
    let mut r = summarize(v, &fans, hour, &before, &idle, &after);
    for f in &fans {
        r.mismatched += f.boards.iter().filter(|(s, h)| check(s, h, &board)).count() as u64;
        r.mismatched += f.clips.iter().filter(|(s, h)| check(s, h, &clips)).count() as u64;
        r.missing += (f.boards.last().map(|b| b.0) != Some(last_board)) as u64;
        r.missing += n_clips.saturating_sub(f.clips.len() as u64);
    }
    drop(hub);
    Ok(r)
}

/// One nats-server variant on a fresh nats-server.
pub(super) async fn run_nats(
    cli: &Cli,
    v: Variant,
    hour: &boards::Hour,
    run_dir: &Path,
) -> anyhow::Result<VariantReport> {
    let bin = tribune_harness::binaries::find_binary("nats-server", cli.nats_server_bin.as_deref())
        .context("nats-server not found: pass --nats-server-bin")?;
    let server = NatsServer::try_start(&NatsOptions {
        bin: Some(bin),
        websocket: true,
        websocket_compression: v.deflate(),
        max_connections: Some(1_000_000),
        dir_in: Some(run_dir.to_path_buf()),
        log: None,
        ..NatsOptions::default()
    })
    .await?;
    let pid = server.pid();
    let before = sample(pid)?;
    let url = WsUrl::parse(&server.ws_url().context("websocket listener")?)
        .map_err(anyhow::Error::msg)?;
    let (fin_tx, fin_rx) = watch::channel(None::<Final>);
    let tasks = connect_fans(cli.clients, |_, ready| {
        fan(url.clone(), v, ready, fin_rx.clone())
    })
    .await?;
    let idle = sample(pid)?;
    let nc = async_nats::connect(server.url()).await?;
    let mut board = Vec::new();
    let mut clips = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / cli.rate.max(0.1)));
    for (kind, value) in &hour.items {
        tick.tick().await;
        let text = serde_json::to_string(value)?;
        let (subject, list) = match kind {
            Kind::Board => (NATS_BOARD, &mut board),
            Kind::Clip => (NATS_CLIPS, &mut clips),
        };
        list.push(hash(text.as_bytes()));
        nc.publish(subject, text.into()).await?;
    }
    nc.flush().await?;
    fin_tx.send_replace(Some(Final {
        board: board.len() as u64,
        clips: clips.len() as u64,
    }));
    let (fans, after) = gather(tasks, pid).await?;
    let mut r = summarize(v, &fans, hour, &before, &idle, &after);
    for f in &fans {
        // Core NATS keeps the order: the i-th payload is the i-th published.
        let differ = |got: &[(u64, u64)], want: &[u64]| {
            got.iter()
                .filter(|(i, h)| want.get(*i as usize) != Some(h))
                .count() as u64
        };
        r.mismatched += differ(&f.boards, &board) + differ(&f.clips, &clips);
        r.missing +=
            (board.len() + clips.len()).saturating_sub(f.boards.len() + f.clips.len()) as u64;
    }
    Ok(r)
}

/// Waits for every fan to end; then the server's sample.
async fn gather(
    tasks: Vec<tokio::task::JoinHandle<Fan>>,
    pid: Option<u32>,
) -> anyhow::Result<(Vec<Fan>, ProcSample)> {
    let mut fans = Vec::new();
    for t in tasks {
        fans.push(t.await?);
    }
    Ok((fans, sample(pid)?))
}
