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

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, mpsc, watch};
use tribune_harness::hub::{Hub, HubOptions};
use tribune_harness::nats::{NatsOptions, NatsServer};
use tribune_harness::procstat::{self, ProcSample};
use tribune_protocol::{delta, message_view};

use crate::boards::{self, Kind};
use crate::cli::Cli;
use crate::natsws::{NatsOp, NatsParser, connect_ops, sub_ops};
use crate::report::RunReport;
use crate::wire::Target;
use crate::ws::{Incoming, WsConn, WsUrl, encode_client_frame};

const BOARD: &str = "results.bandwidth.ssk-w1500";
const CLIPS: &str = "clips.bandwidth.ssk";
const NATS_BOARD: &str = "bw.board";
const NATS_CLIPS: &str = "bw.clips";
/// How long the fans get after the last publication to receive it all.
const DRAIN: Duration = Duration::from_secs(60);
/// Connections opened at once.
const CONNECTING: usize = 256;
/// The generated hour's seed: every run replays the same bytes.
const SEED: u64 = 2026;

/// One way of receiving the hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Full,
    Delta,
    Deflate,
    DeltaDeflate,
    /// A quarter of the fans in each of the four modes above, on one hub.
    Mixed,
    Nats,
    NatsCompressed,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Full => "tribune, full messages",
            Variant::Delta => "tribune, delta",
            Variant::Deflate => "tribune, permessage-deflate",
            Variant::DeltaDeflate => "tribune, delta + deflate",
            Variant::Mixed => "tribune, mixed (¼ each of the above)",
            Variant::Nats => "nats-server ws",
            Variant::NatsCompressed => "nats-server ws, compression on",
        }
    }

    fn delta(self) -> bool {
        matches!(self, Variant::Delta | Variant::DeltaDeflate)
    }

    fn deflate(self) -> bool {
        matches!(
            self,
            Variant::Deflate | Variant::DeltaDeflate | Variant::NatsCompressed
        )
    }

    fn nats(self) -> bool {
        matches!(self, Variant::Nats | Variant::NatsCompressed)
    }
}

/// What one variant measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VariantReport {
    pub variant: String,
    pub fans: u64,
    /// Fans that negotiated deflate (the variants that offer it).
    pub deflate_negotiated: u64,
    pub publications: u64,
    /// Per fan, over the hour: every byte received after the upgrade.
    pub bytes_per_fan: f64,
    pub board_bytes_per_fan: f64,
    pub clip_bytes_per_fan: f64,
    /// Messages received per fan (board and clips).
    pub messages_per_fan: f64,
    /// Server CPU while the hour was replayed, per message received.
    pub cpu_us_per_delivery: f64,
    pub server_cpu_s: f64,
    /// Server RSS per connection: with every fan subscribed and nothing
    /// sent yet, and after the hour (the server's RSS before any fan
    /// connected taken off both).
    pub rss_idle_per_conn_b: f64,
    pub rss_after_per_conn_b: f64,
    /// Payloads that differ from the published ones, and payloads owed but
    /// never received (feed items; the board's last state).
    pub mismatched: u64,
    pub missing: u64,
}

/// What one fan got.
#[derive(Default)]
struct Fan {
    bytes: u64,
    board_bytes: u64,
    clip_bytes: u64,
    /// (seq or index, hash of the payload rebuilt), in arrival order.
    boards: Vec<(u64, u64)>,
    clips: Vec<(u64, u64)>,
    deflate: bool,
    error: Option<String>,
}

/// The last publication of each topic: a fan is done once it has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Final {
    /// Tribune: the last board's seq; NATS: the number of boards.
    board: u64,
    /// Number of clips.
    clips: u64,
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

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

/// The side-by-side table (markdown).
fn table(reports: &[VariantReport]) -> String {
    let full = reports.first().map(|r| r.bytes_per_fan).unwrap_or(0.0);
    let full_board = reports
        .first()
        .map(|r| r.board_bytes_per_fan)
        .unwrap_or(0.0);
    let full_cpu = reports
        .first()
        .map(|r| r.cpu_us_per_delivery)
        .unwrap_or(0.0);
    let mut out = String::from(
        "| variant | bytes per fan-hour | of the first | board | of the first's board | clips | CPU per delivery | of the first | RSS per idle conn | RSS per conn after |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let pct = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.1} %", 100.0 * a / b)
        } else {
            "–".into()
        }
    };
    for r in reports {
        out += &format!(
            "| {} | {:.0} | {} | {:.0} | {} | {:.0} | {:.2} µs | {} | {:.0} B | {:.0} B |\n",
            r.variant,
            r.bytes_per_fan,
            pct(r.bytes_per_fan, full),
            r.board_bytes_per_fan,
            pct(r.board_bytes_per_fan, full_board),
            r.clip_bytes_per_fan,
            r.cpu_us_per_delivery,
            if full_cpu > 0.0 {
                format!("{:.2}×", r.cpu_us_per_delivery / full_cpu)
            } else {
                "–".into()
            },
            r.rss_idle_per_conn_b,
            r.rss_after_per_conn_b,
        );
    }
    out
}

/// Connects `n` fans with `fan` (at most [`CONNECTING`] at once) and waits
/// until each says it is subscribed.
async fn connect_fans<F, Fut>(n: u64, fan: F) -> anyhow::Result<Vec<tokio::task::JoinHandle<Fan>>>
where
    F: Fn(u64, mpsc::Sender<()>) -> Fut,
    Fut: std::future::Future<Output = Fan> + Send + 'static,
{
    let (ready_tx, mut ready_rx) = mpsc::channel(n.max(1) as usize);
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let mut tasks = Vec::new();
    for i in 0..n {
        let permit = gate.clone().acquire_owned().await?;
        let (tx, mut rx) = mpsc::channel(1);
        let ready = ready_tx.clone();
        let f = fan(i, tx);
        tasks.push(tokio::spawn(f));
        tokio::spawn(async move {
            // `None`: the fan failed before it was subscribed (it says why).
            let subscribed = rx.recv().await.is_some();
            drop(permit);
            let _ = ready.send(subscribed).await;
        });
    }
    drop(ready_tx);
    let (mut answered, mut subscribed) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered < n {
        match tokio::time::timeout_at(deadline.into(), ready_rx.recv()).await {
            Ok(Some(ok)) => {
                answered += 1;
                subscribed += ok as u64;
            }
            _ => bail!("only {answered} of {n} fans answered within 120 s"),
        }
    }
    if subscribed < n {
        eprintln!(
            "bandwidth: {} of {n} fans could not subscribe",
            n - subscribed
        );
    }
    Ok(tasks)
}

fn sample(pid: Option<u32>) -> anyhow::Result<ProcSample> {
    procstat::sample(pid.context("server gone")?).context("server gone")
}

async fn run_tribune(
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
        tribune_fan(url.clone(), mode, ready, fin_rx.clone())
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
    let mut fans = Vec::new();
    for t in tasks {
        fans.push(t.await?);
    }
    let after = sample(pid)?;
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

fn summarize(
    v: Variant,
    fans: &[Fan],
    hour: &boards::Hour,
    before: &ProcSample,
    idle: &ProcSample,
    after: &ProcSample,
) -> VariantReport {
    let n = fans.len().max(1) as f64;
    let sum = |f: &dyn Fn(&Fan) -> u64| fans.iter().map(f).sum::<u64>() as f64;
    let deliveries = sum(&|f| (f.boards.len() + f.clips.len()) as u64);
    for f in fans.iter().filter_map(|f| f.error.as_ref()).take(3) {
        eprintln!("bandwidth: {}: a fan failed: {f}", v.name());
    }
    let cpu = after.cpu_s - idle.cpu_s;
    VariantReport {
        variant: v.name().into(),
        fans: fans.len() as u64,
        deflate_negotiated: fans.iter().filter(|f| f.deflate).count() as u64,
        publications: hour.items.len() as u64,
        bytes_per_fan: sum(&|f| f.bytes) / n,
        board_bytes_per_fan: sum(&|f| f.board_bytes) / n,
        clip_bytes_per_fan: sum(&|f| f.clip_bytes) / n,
        messages_per_fan: deliveries / n,
        cpu_us_per_delivery: if deliveries > 0.0 {
            cpu * 1e6 / deliveries
        } else {
            0.0
        },
        server_cpu_s: cpu,
        rss_idle_per_conn_b: (idle.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / n,
        rss_after_per_conn_b: (after.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / n,
        mismatched: 0,
        missing: fans.iter().filter(|f| f.error.is_some()).count() as u64,
    }
}

/// One hub fan: subscribes to both topics, rebuilds every board (deltas
/// applied to the payload it holds), hashes every payload.
async fn tribune_fan(
    url: WsUrl,
    v: Variant,
    ready: mpsc::Sender<()>,
    mut fin: watch::Receiver<Option<Final>>,
) -> Fan {
    let mut fan = Fan::default();
    if let Err(e) = tribune_fan_inner(&url, v, ready, &mut fin, &mut fan).await {
        fan.error = Some(format!("{e:#}"));
    }
    fan
}

async fn tribune_fan_inner(
    url: &WsUrl,
    v: Variant,
    ready: mpsc::Sender<()>,
    fin: &mut watch::Receiver<Option<Final>>,
    fan: &mut Fan,
) -> anyhow::Result<()> {
    let mut conn = WsConn::connect_offering(
        url,
        None,
        Some(tribune_protocol::SUBPROTOCOL),
        4096,
        Duration::from_secs(30),
        v.deflate(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    fan.deflate = conn.deflate;
    let delta = if v.delta() {
        r#","delta":"fossil""#
    } else {
        ""
    };
    let mut out = Vec::new();
    let board = format!(r#"{{"type":"subscribe","id":1,"topic":"{BOARD}","history":0{delta}}}"#);
    let clips = format!(r#"{{"type":"subscribe","id":2,"topic":"{CLIPS}"}}"#);
    encode_client_frame(&mut out, 0x1, board.as_bytes());
    encode_client_frame(&mut out, 0x1, clips.as_bytes());
    conn.stream.write_all(&out).await?;
    out.clear();
    let mut acks = 0;
    let mut base: Option<(u64, Vec<u8>)> = None;
    let mut last_board = 0;
    let mut done_at: Option<Instant> = None;
    loop {
        if let Some(f) = *fin.borrow() {
            if last_board == f.board && fan.clips.len() as u64 == f.clips {
                return Ok(());
            }
            let at = *done_at.get_or_insert_with(|| Instant::now() + DRAIN);
            if Instant::now() > at {
                bail!("not everything within {DRAIN:?} of the last publication");
            }
        }
        let n = tokio::select! {
            n = conn.fill() => n?,
            _ = fin.changed() => continue,
            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
        };
        if n == 0 {
            bail!("the server closed the connection");
        }
        fan.bytes += n as u64;
        let mut wire = 0usize;
        while let Some(msg) = conn
            .reader
            .next_sized(&mut out, &mut wire)
            .map_err(|e| anyhow::anyhow!(e.0))?
        {
            let wire = wire as u64;
            let text = match msg {
                Incoming::Text(t) => t,
                Incoming::Binary(_) => bail!("a binary frame"),
                Incoming::Close(code) => bail!("closed by the server ({code:?})"),
            };
            if text.starts_with(br#"{"type":"ack""#) {
                acks += 1;
                if acks == 2 {
                    let _ = ready.send(()).await;
                }
                continue;
            }
            let Some(m) = message_view(text) else {
                continue;
            };
            if m.topic == BOARD.as_bytes() {
                let payload = if m.delta {
                    let Some((seq, held)) = base.as_ref().filter(|(s, _)| *s == m.prev) else {
                        bail!(
                            "a delta on {} needs {}, this fan holds {:?}",
                            m.seq,
                            m.prev,
                            base.as_ref().map(|b| b.0)
                        );
                    };
                    let d: String = serde_json::from_slice(m.data)?;
                    let _ = seq;
                    delta::apply(held, d.as_bytes())
                        .map_err(|e| anyhow::anyhow!("delta on {}: {e}", m.seq))?
                } else {
                    m.data.to_vec()
                };
                fan.board_bytes += wire;
                fan.boards.push((m.seq, hash(&payload)));
                last_board = m.seq;
                base = Some((m.seq, payload));
            } else if m.topic == CLIPS.as_bytes() {
                fan.clip_bytes += wire;
                fan.clips.push((m.seq, hash(m.data)));
            }
        }
        if !out.is_empty() {
            conn.stream.write_all(&out).await?;
            out.clear();
        }
    }
}

async fn run_nats(
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
        nats_fan(url.clone(), v, ready, fin_rx.clone())
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
    let mut fans = Vec::new();
    for t in tasks {
        fans.push(t.await?);
    }
    let after = sample(pid)?;
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

/// One NATS fan: `CONNECT`, `SUB` both subjects, hashes every payload.
async fn nats_fan(
    url: WsUrl,
    v: Variant,
    ready: mpsc::Sender<()>,
    mut fin: watch::Receiver<Option<Final>>,
) -> Fan {
    let mut fan = Fan::default();
    if let Err(e) = nats_fan_inner(&url, v, ready, &mut fin, &mut fan).await {
        fan.error = Some(format!("{e:#}"));
    }
    fan
}

async fn nats_fan_inner(
    url: &WsUrl,
    v: Variant,
    ready: mpsc::Sender<()>,
    fin: &mut watch::Receiver<Option<Final>>,
    fan: &mut Fan,
) -> anyhow::Result<()> {
    let mut conn =
        WsConn::connect_offering(url, None, None, 4096, Duration::from_secs(30), v.deflate())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    fan.deflate = conn.deflate;
    let mut ops = connect_ops().to_vec();
    sub_ops(&mut ops, NATS_BOARD, 1);
    sub_ops(&mut ops, NATS_CLIPS, 2);
    let mut out = Vec::new();
    encode_client_frame(&mut out, 0x2, &ops);
    conn.stream.write_all(&out).await?;
    out.clear();
    let mut parser = NatsParser::default();
    let mut pongs = 0;
    let mut done_at: Option<Instant> = None;
    loop {
        if let Some(f) = *fin.borrow() {
            if fan.boards.len() as u64 == f.board && fan.clips.len() as u64 == f.clips {
                return Ok(());
            }
            let at = *done_at.get_or_insert_with(|| Instant::now() + DRAIN);
            if Instant::now() > at {
                bail!("not everything within {DRAIN:?} of the last publication");
            }
        }
        let n = tokio::select! {
            n = conn.fill() => n?,
            _ = fin.changed() => continue,
            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
        };
        if n == 0 {
            bail!("the server closed the connection");
        }
        fan.bytes += n as u64;
        let mut answer = Vec::new();
        let mut wire = 0usize;
        while let Some(msg) = conn
            .reader
            .next_sized(&mut out, &mut wire)
            .map_err(|e| anyhow::anyhow!(e.0))?
        {
            let wire = wire as u64;
            let bytes = match msg {
                Incoming::Text(t) | Incoming::Binary(t) => t,
                Incoming::Close(code) => bail!("closed by the server ({code:?})"),
            };
            parser.push(bytes);
            // A frame's bytes go to the subject of the messages it carries
            // (the server packs several operations into one frame).
            let mut board_msgs = 0u64;
            let mut clip_msgs = 0u64;
            while let Some(op) = parser.next_op().map_err(|e| anyhow::anyhow!(e.0))? {
                match op {
                    NatsOp::Pong => {
                        pongs += 1;
                        if pongs == 3 {
                            let _ = ready.send(()).await;
                        }
                    }
                    NatsOp::Ping => answer.extend_from_slice(b"PONG\r\n"),
                    NatsOp::Msg { sid, payload, .. } => {
                        if sid == 1 {
                            fan.boards.push((fan.boards.len() as u64, hash(payload)));
                            board_msgs += 1;
                        } else {
                            fan.clips.push((fan.clips.len() as u64, hash(payload)));
                            clip_msgs += 1;
                        }
                    }
                    NatsOp::Err(e) => bail!("-ERR {}", String::from_utf8_lossy(e)),
                    NatsOp::Info | NatsOp::Ok => {}
                }
            }
            if let Some(board) = (wire * board_msgs).checked_div(board_msgs + clip_msgs) {
                fan.board_bytes += board;
                fan.clip_bytes += wire - board;
            }
        }
        if !answer.is_empty() {
            encode_client_frame(&mut out, 0x2, &answer);
        }
        if !out.is_empty() {
            conn.stream.write_all(&out).await?;
            out.clear();
        }
    }
}
