//! The `reactions` scenario: N clients, spread over the hub nodes, all
//! subscribed to one `results.*` topic, each sending `react` at its share of
//! `--rate` for `--duration-s` and counting the acks per reaction kind; one
//! watcher per node sums the `reactions` of every `stats` frame it receives
//! for the topic until the sums stop changing. The hub's promise (PROTOCOL.md
//! sections 4 and 10): every node's summed windows equal the reactions
//! accepted on all nodes, exactly.
//!
//! The clients run in the coordinator's process (tokio-tungstenite): the
//! figures here are counts, not latencies, and a few thousand clients at a
//! few reactions per second each are light work.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tribune_protocol::{ClientFrame, ErrorCode, React, ServerFrame, Subscribe};

use crate::cli::Cli;
use crate::plan::run_token;
use crate::report::{ProcUsage, ReactionsNode, ReactionsReport, RunReport};
use crate::servers::HubLauncher;
use crate::wire::Target;
use tribune_harness::hub::Hub;
use tribune_harness::procstat::{self, ProcSample};

/// The reactions the built-in `results` namespace allows.
pub const KINDS: [&str; 4] = ["🔥", "👏", "😮", "😢"];

/// The hub's default reactions per connection per second (PROTOCOL.md §8).
pub const PER_CONN_LIMIT: f64 = 5.0;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn text(frame: &ClientFrame) -> WsMessage {
    WsMessage::text(serde_json::to_string(frame).expect("client frames serialize"))
}

/// Connects and subscribes to `topic`; the socket is ready for reacts.
async fn join(url: &str, topic: &str, within: Duration) -> anyhow::Result<Ws> {
    tokio::time::timeout(within, async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        ws.send(text(&ClientFrame::Subscribe(Subscribe {
            id: 1,
            topic: topic.to_string(),
            history: None,
            since: None,
            epoch: None,
            delta: None,
            delay_ms: None,
        })))
        .await?;
        while let Some(m) = ws.next().await {
            let m = m?;
            let Ok(t) = m.to_text() else { continue };
            match serde_json::from_str::<ServerFrame>(t) {
                Ok(ServerFrame::Ack(a)) if a.id == 1 => return Ok(ws),
                Ok(ServerFrame::Error(e)) if e.id == Some(1) => {
                    anyhow::bail!("subscribe refused: {:?} {}", e.code, e.message)
                }
                _ => {}
            }
        }
        anyhow::bail!("closed before the subscription was acked")
    })
    .await
    .context("connect and subscribe timed out")?
}

/// What one reacting client did.
#[derive(Debug, Default)]
struct Outcome {
    sent: u64,
    accepted: BTreeMap<String, u64>,
    rate_limited: u64,
    errors: BTreeMap<String, u64>,
    unanswered: u64,
}

/// Sends `react` every `interval` from `start` until `end` (bounded by
/// count too), then waits up to 5 s for the last answers.
async fn react(
    ws: &mut Ws,
    index: u64,
    topic: &str,
    interval: Duration,
    start: tokio::time::Instant,
    end: tokio::time::Instant,
) -> Outcome {
    let mut out = Outcome::default();
    let mut pending: BTreeMap<u64, &'static str> = BTreeMap::new();
    // Spread the clients over one interval so the hub sees a steady rate.
    let offset = interval.mul_f64((index % 997) as f64 / 997.0);
    let mut next = start + offset;
    let max = (end - start).as_secs_f64() / interval.as_secs_f64() + 2.0;
    let mut id = 1u64;
    let answers_until = end + Duration::from_secs(5);
    loop {
        let sending = next < end && (out.sent as f64) < max;
        if !sending && pending.is_empty() {
            break;
        }
        let wake = if sending { next } else { answers_until };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                if !sending {
                    break;
                }
                id += 1;
                let kind = KINDS[((index + out.sent) % KINDS.len() as u64) as usize];
                let frame = ClientFrame::React(React {
                    id,
                    topic: topic.to_string(),
                    reaction: kind.to_string(),
                });
                if ws.send(text(&frame)).await.is_err() {
                    break;
                }
                out.sent += 1;
                pending.insert(id, kind);
                next += interval;
            }
            m = ws.next() => {
                let Some(Ok(m)) = m else { break };
                let Ok(t) = m.to_text() else { continue };
                match serde_json::from_str::<ServerFrame>(t) {
                    Ok(ServerFrame::Ack(a)) => {
                        if let Some(kind) = pending.remove(&a.id) {
                            *out.accepted.entry(kind.to_string()).or_insert(0) += 1;
                        }
                    }
                    Ok(ServerFrame::Error(e)) => {
                        if let Some(id) = e.id {
                            pending.remove(&id);
                        }
                        if e.code == ErrorCode::RateLimited {
                            out.rate_limited += 1;
                        } else {
                            let code = serde_json::to_value(e.code)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default();
                            *out.errors.entry(code).or_insert(0) += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out.unanswered = pending.len() as u64;
    out
}

/// What a node's watcher has summed so far.
#[derive(Debug, Default, Clone)]
struct Seen {
    sum: BTreeMap<String, u64>,
    frames: u64,
    audience_last: u64,
    audience_max: u64,
    window_ms: u64,
}

/// Reads `stats` frames for `topic` into `seen` until `stop` turns true.
/// `skip_one` (test hook) discards the first frame carrying reactions, so
/// that the comparison must find this node different.
async fn watch_stats(
    mut ws: Ws,
    topic: String,
    seen: Arc<Mutex<Seen>>,
    mut stop: watch::Receiver<bool>,
    mut skip_one: bool,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            m = ws.next() => {
                let Some(Ok(m)) = m else { return };
                let Ok(t) = m.to_text() else { continue };
                if let Ok(ServerFrame::Stats(s)) = serde_json::from_str::<ServerFrame>(t)
                    && s.topic == topic
                {
                    if skip_one && !s.reactions.is_empty() {
                        skip_one = false;
                        continue;
                    }
                    let mut g = seen.lock().expect("watcher state");
                    for (k, v) in &s.reactions {
                        *g.sum.entry(k.clone()).or_insert(0) += v;
                    }
                    g.frames += 1;
                    g.audience_last = s.audience;
                    g.audience_max = g.audience_max.max(s.audience);
                    g.window_ms = s.window_ms;
                }
            }
        }
    }
}

fn delta(a: Option<ProcSample>, b: Option<ProcSample>) -> Option<f64> {
    let (a, b) = (a?, b?);
    (b.cpu_s >= a.cpu_s).then_some(b.cpu_s - a.cpu_s)
}

/// Runs the scenario against hubs started by `launcher` (or `--hub-url`).
pub async fn run_target(
    cli: &Cli,
    launcher: Option<&HubLauncher>,
    hard_deadline: Instant,
) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let mut rep = RunReport {
        target: Some(Target::Tribune),
        bus: Some(format!("{:?}", cli.bus).to_lowercase()),
        topics: 1,
        per_client: 1,
        ..RunReport::default()
    };
    let mut hubs: Vec<Hub> = Vec::new();
    let mut pids: Vec<Option<u32>> = Vec::new();
    let urls: Vec<String> = if cli.hub_url.is_empty() {
        let l = launcher.context("no hub launcher")?;
        for i in 0..cli.hubs {
            let node = l.start(i).await?;
            pids.push(node.pid());
            hubs.push(node);
        }
        hubs.iter().map(Hub::ws_url).collect()
    } else {
        pids = (0..cli.hub_url.len())
            .map(|i| cli.hub_pid.get(i).copied())
            .collect();
        cli.hub_url.clone()
    };
    rep.urls = urls.clone();
    let nodes = urls.len();
    let topic = format!("results.{}.reactions", run_token());
    let within = Duration::from_secs(cli.connect_timeout_s.min(60));

    // Watchers first, so that no window with reactions goes unseen.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut seen = Vec::new();
    let mut watchers = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let ws = join(url, &topic, within)
            .await
            .with_context(|| format!("watcher on {url}"))?;
        let s = Arc::new(Mutex::new(Seen::default()));
        seen.push(s.clone());
        watchers.push(tokio::spawn(watch_stats(
            ws,
            topic.clone(),
            s,
            stop_rx.clone(),
            cli.test_drop_one && i == 0,
        )));
    }

    // Reactors: client i on node i % nodes, connected at the paced rate.
    let per_client = cli.rate / cli.clients as f64;
    if per_client > PER_CONN_LIMIT {
        rep.problems.push(format!(
            "{per_client:.2} reactions/s per client is over the hub's default limit of {PER_CONN_LIMIT}/s: expect rate_limited"
        ));
    }
    let interval = Duration::from_secs_f64(1.0 / per_client);
    let (go_tx, go_rx) =
        watch::channel::<Option<(tokio::time::Instant, tokio::time::Instant)>>(None);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let t_connect = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..cli.clients {
        let url = urls[(i as usize) % nodes].clone();
        let topic = topic.clone();
        let ready = ready_tx.clone();
        let mut go = go_rx.clone();
        let delay = Duration::from_secs_f64(i as f64 / cli.connect_rate);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut ws = match join(&url, &topic, within).await {
                Ok(ws) => ws,
                Err(e) => {
                    let _ = ready.send(false);
                    return Err(e);
                }
            };
            let _ = ready.send(true);
            let (start, end) = loop {
                if let Some(w) = *go.borrow_and_update() {
                    break w;
                }
                go.changed().await.context("no start")?;
            };
            let out = react(&mut ws, i, &topic, interval, start, end).await;
            Ok((out, ws))
        }));
    }
    drop(ready_tx);
    let connect_deadline =
        tokio::time::Instant::from_std((t_connect + within * 2).min(hard_deadline));
    let (mut ok, mut failed) = (0u64, 0u64);
    while ok + failed < cli.clients {
        match tokio::time::timeout_at(connect_deadline, ready_rx.recv()).await {
            Ok(Some(true)) => ok += 1,
            Ok(Some(false)) => failed += 1,
            _ => break,
        }
    }
    rep.connect.requested = cli.clients;
    rep.connect.established = ok;
    rep.connect.failed = failed;
    rep.connect.peak_open = ok;
    rep.connect.connect_s = t_connect.elapsed().as_secs_f64();
    rep.connect.rate_per_s = ok as f64 / rep.connect.connect_s.max(1e-3);
    rep.subscribe.expected = cli.clients + nodes as u64;
    rep.subscribe.confirmed = ok + nodes as u64;
    if ok < cli.clients {
        rep.problems.push(format!(
            "only {ok} of {} clients connected and subscribed",
            cli.clients
        ));
    }
    eprintln!(
        "reactions: {ok} of {} clients on {nodes} node(s) in {:.1} s; reacting {per_client:.2}/s each for {} s on {topic}",
        cli.clients, rep.connect.connect_s, cli.duration_s
    );

    // React.
    let before: Vec<Option<ProcSample>> =
        pids.iter().map(|p| p.and_then(procstat::sample)).collect();
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let end = start + Duration::from_secs_f64(cli.duration_s);
    let _ = go_tx.send(Some((start, end)));
    let mut r = ReactionsReport {
        topic: topic.clone(),
        per_client_rate: per_client,
        ..ReactionsReport::default()
    };
    let mut accepted_here: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); nodes];
    let mut clients_here = vec![0u64; nodes];
    let mut sockets = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let Ok(Ok((out, ws))) = t.await else { continue };
        sockets.push(ws);
        let node = i % nodes;
        clients_here[node] += 1;
        r.sent += out.sent;
        r.rate_limited += out.rate_limited;
        r.unanswered += out.unanswered;
        for (k, v) in &out.accepted {
            *r.accepted.entry(k.clone()).or_insert(0) += v;
            *accepted_here[node].entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in out.errors {
            *r.errors.entry(k).or_insert(0) += v;
        }
    }
    r.accepted_total = r.accepted.values().sum();
    let last_react = Instant::now();

    // Settle: the sums are final once they have not moved for five windows
    // (the hub sends a frame only when a figure changed).
    let window = Duration::from_millis(
        seen.iter()
            .map(|s| s.lock().expect("watcher state").window_ms)
            .max()
            .filter(|&w| w > 0)
            .unwrap_or(1_000),
    );
    let quiet = (window * 5).max(Duration::from_secs(2));
    let settle_until = (Instant::now() + Duration::from_millis(cli.settle_ms)).min(hard_deadline);
    let snapshot = |seen: &[Arc<Mutex<Seen>>]| -> Vec<(BTreeMap<String, u64>, u64)> {
        seen.iter()
            .map(|s| {
                let g = s.lock().expect("watcher state");
                (g.sum.clone(), g.frames)
            })
            .collect()
    };
    let mut last = (snapshot(&seen), Instant::now());
    while Instant::now() < settle_until {
        tokio::time::sleep(window / 2).await;
        let now = snapshot(&seen);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= quiet {
            break;
        }
    }
    r.settle_s = last.1.saturating_duration_since(last_react).as_secs_f64();
    let after: Vec<Option<ProcSample>> =
        pids.iter().map(|p| p.and_then(procstat::sample)).collect();
    let _ = stop_tx.send(true);
    for w in watchers {
        let _ = w.await;
    }
    drop(sockets);

    for (i, url) in urls.iter().enumerate() {
        let g = seen[i].lock().expect("watcher state").clone();
        let cpu = delta(before[i], after[i]);
        let span_s = cli.duration_s + r.settle_s;
        let windows = span_s * 1000.0 / g.window_ms.max(1) as f64;
        r.nodes.push(ReactionsNode {
            node: i,
            url: url.clone(),
            clients: clients_here[i],
            accepted_here: accepted_here[i].clone(),
            equal: g.sum == r.accepted,
            stats_sum: g.sum,
            stats_frames: g.frames,
            audience_last: g.audience_last,
            audience_max: g.audience_max,
            window_ms: g.window_ms,
            cpu_s: cpu,
            cpu_ms_per_window: cpu
                .filter(|_| g.window_ms > 0 && windows > 0.0)
                .map(|c| c * 1000.0 / windows),
        });
        rep.resources.servers.push(ProcUsage {
            role: "hub".into(),
            name: format!("hub {i}"),
            pid: pids[i].unwrap_or(0),
            rss_kib_end: after[i].map_or(0, |s| s.rss_kib),
            hwm_kib: after[i].map_or(0, |s| s.hwm_kib),
            cpu_s_traffic: cpu.unwrap_or(0.0),
            ..ProcUsage::default()
        });
    }
    r.all_equal = r.accepted_total > 0 && r.nodes.iter().all(|n| n.equal);
    for n in &r.nodes {
        if !n.equal {
            rep.problems.push(format!(
                "node {}: stats summed to {:?}, {} reactions accepted {:?}",
                n.node, n.stats_sum, r.accepted_total, r.accepted
            ));
        }
    }
    if r.accepted_total == 0 {
        rep.problems
            .push("no reaction was accepted: nothing to compare".into());
    }
    rep.reactions = Some(r);
    rep.duration_s = started.elapsed().as_secs_f64();
    drop(hubs);
    Ok(rep)
}
