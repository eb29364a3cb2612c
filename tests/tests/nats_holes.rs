//! Issue 22: no fan ever loses a message silently.
//!
//! Real nats-server, two real hub processes, 200 real websocket fans and an
//! editor publishing with JetStream (`Nats-Msg-Id`, retried until acked) at
//! 100 messages a second, through three faults: nats-server SIGKILLed and
//! restarted on its store, the hubs' link to NATS cut for longer than the
//! retention covers, and a hub SIGKILLed under its fans. Each fan records
//! every frame of its topic; one checker holds each record against the seqs
//! the stream stored (PROTOCOL.md section 5): every stored message arrives
//! exactly once, in order, with `prev` chaining, or a `gap` frame names it.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tribune_tests::editor::Editor;
use tribune_tests::hub::ConfigFile;
use tribune_tests::nats::{NatsServer, TcpProxy};
use tribune_tests::{Hub, eventually};

/// Fans per test, split evenly over the two hubs.
const FANS: usize = 200;

/// Publications per test, one every [`PACE`] (100 a second).
const MESSAGES: usize = 600;
const PACE: Duration = Duration::from_millis(10);

/// The fault comes after this many acked publications.
const FAULT_AFTER: usize = 150;

/// How long fans may take, after the editor's last ack, to hold it: generous,
/// the machine is shared; a correct hub needs well under a second.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// Each test alone loads the 2-core machine with 200 sockets, two hubs and a
/// nats-server; together they would measure the machine, not the hub.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------- editor

/// An editor back as soon as a restarted server listens, most likely before
/// the hubs (whose reconnect steps are longer): the order of the issue, where
/// what waited in the editor is stored in a burst before the hubs return.
async fn holes_editor(url: &str) -> Editor {
    Editor::connect_with(url, |_| Duration::from_millis(25)).await
}

/// Publishes [`MESSAGES`] to `topic`, one started every [`PACE`] whatever
/// NATS does (clips keep coming during an outage, as in the issue), each
/// retried until acked; the stored seqs, in order. `progress` counts acks.
///
/// Publications wait in the client while NATS is away and are stored in a
/// burst when it is back: a hub that reconnects after the editor then finds
/// the stream moved by a couple of seconds' worth at once.
fn publish_feed(
    editor: Editor,
    topic: &'static str,
    progress: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Vec<u64>> {
    let editor = Arc::new(editor);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PACE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut publications = Vec::with_capacity(MESSAGES);
        for i in 0..MESSAGES {
            tick.tick().await;
            let (editor, progress) = (editor.clone(), progress.clone());
            publications.push(tokio::spawn(async move {
                let seq = editor
                    .publish(topic, &format!("{{\"n\":{i}}}"), &format!("{topic}-{i}"))
                    .await;
                progress.fetch_add(1, Ordering::SeqCst);
                seq
            }));
        }
        let mut stored = Vec::with_capacity(MESSAGES);
        for p in publications {
            stored.push(p.await.expect("publication task"));
        }
        stored.sort_unstable();
        stored
    })
}

// ---------------------------------------------------------------- fans

/// One frame of a fan's subscription, in arrival order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// The `ack` of a subscribe; `since` is what a resume asked for.
    Ack {
        node: String,
        seq: u64,
        since: Option<u64>,
        recovered: Option<bool>,
    },
    Message {
        seq: u64,
        prev: u64,
    },
    Gap {
        after: u64,
        before: u64,
    },
    /// The connection ended; the fan resumes on its next hub, if it has one.
    Lost(String),
    /// Anything else: never expected on these topics.
    Unexpected(String),
}

/// What one fan has seen so far, shared with the test.
#[derive(Default)]
struct FanLog {
    state: Mutex<FanState>,
}

#[derive(Default)]
struct FanState {
    seen: Vec<Seen>,
    /// The epoch of the first `ack`: what a resume presents.
    epoch: Option<String>,
    /// Where the fan's chain stands: the last message's seq (or the first
    /// ack's seq before any); a resume's `since`.
    position: u64,
}

impl FanLog {
    fn push(&self, seen: Seen) {
        self.state.lock().unwrap().seen.push(seen);
    }

    fn subscribed(&self) -> bool {
        self.state.lock().unwrap().epoch.is_some()
    }

    fn position(&self) -> u64 {
        self.state.lock().unwrap().position
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Records one text frame from `node`.
    fn record(&self, node: &str, since: Option<u64>, topic: &str, text: &str) {
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => return self.push(Seen::Unexpected(text.to_string())),
        };
        let mut st = self.state.lock().unwrap();
        let seen = match (v["type"].as_str(), v["topic"].as_str()) {
            (Some("ack"), Some(t)) if t == topic => {
                let seq = v["seq"].as_u64().unwrap_or(0);
                if st.epoch.is_none() {
                    st.epoch = v["epoch"].as_str().map(String::from);
                    st.position = seq;
                }
                Seen::Ack {
                    node: node.to_string(),
                    seq,
                    since,
                    recovered: v["recovered"].as_bool(),
                }
            }
            (Some("message"), Some(t)) if t == topic => {
                let seq = v["seq"].as_u64().unwrap_or(0);
                st.position = seq;
                Seen::Message {
                    seq,
                    prev: v["prev"].as_u64().unwrap_or(u64::MAX),
                }
            }
            (Some("gap"), Some(t)) if t == topic => Seen::Gap {
                after: v["after"].as_u64().unwrap_or(u64::MAX),
                before: v["before"].as_u64().unwrap_or(0),
            },
            _ => Seen::Unexpected(text.to_string()),
        };
        st.seen.push(seen);
    }
}

/// Fan `i`'s own loopback address (127.1.x.y): the hub limits handshakes
/// per client address, and 200 fans (then 100 resuming at once) from one
/// address would be refused with 429 under the default limits these tests keep.
fn fan_address(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, (i / 200) as u8, (i % 200 + 1) as u8))
}

/// A websocket to `url` from the local address `from`.
async fn connect_from(url: &str, from: IpAddr) -> Result<WebSocketStream<TcpStream>, String> {
    let req = url.into_client_request().map_err(|e| e.to_string())?;
    let to: SocketAddr = req
        .uri()
        .authority()
        .ok_or("no authority")?
        .as_str()
        .parse()
        .map_err(|e| format!("{e}"))?;
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(from, 0))
        .map_err(|e| format!("bind {from}: {e}"))?;
    let tcp = socket.connect(to).await.map_err(|e| e.to_string())?;
    let (ws, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// One fan: subscribes to `topic` on `hubs[0]` (history 0, the feed
/// default) and records every frame until `stop`. When a connection ends it
/// resumes on the next hub with `since` = its last seq and the first ack's
/// `epoch`, as an SDK would.
async fn fan(
    index: usize,
    hubs: Vec<String>,
    topic: &'static str,
    log: Arc<FanLog>,
    mut stop: watch::Receiver<bool>,
) {
    for url in &hubs {
        let resume = {
            let st = log.state.lock().unwrap();
            st.epoch.clone().map(|e| (st.position, e))
        };
        let mut ws = match connect_from(url, fan_address(index)).await {
            Ok(ws) => ws,
            Err(e) => return log.push(Seen::Unexpected(format!("connect to {url}: {e}"))),
        };
        let welcome = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
        let node = match welcome {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                v["node"].as_str().unwrap_or_default().to_string()
            }
            other => return log.push(Seen::Unexpected(format!("{url}: no welcome: {other:?}"))),
        };
        let mut subscribe = json!({"type": "subscribe", "id": 1, "topic": topic});
        if let Some((since, epoch)) = &resume {
            subscribe["since"] = json!(since);
            subscribe["epoch"] = json!(epoch);
        }
        let since = resume.map(|(s, _)| s);
        if let Err(e) = ws.send(Message::text(subscribe.to_string())).await {
            log.push(Seen::Lost(format!("{node}: subscribe not sent: {e}")));
            continue;
        }
        loop {
            let frame = tokio::select! {
                _ = stop.changed() => return,
                frame = ws.next() => frame,
            };
            match frame {
                Some(Ok(Message::Text(t))) => log.record(&node, since, topic, t.as_str()),
                Some(Ok(Message::Close(c))) => {
                    log.push(Seen::Lost(format!("{node}: closed {c:?}")));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    log.push(Seen::Lost(format!("{node}: {e}")));
                    break;
                }
                None => {
                    log.push(Seen::Lost(format!("{node}: ended")));
                    break;
                }
            }
        }
    }
}

/// The fans of one test and the switch that stops them.
struct Fans {
    logs: Vec<Arc<FanLog>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Fans {
    /// Starts [`FANS`] fans; fan `i` gets `hubs_of(i)` (first the hub it
    /// subscribes on, then where it resumes), and waits until all are subscribed.
    async fn start(topic: &'static str, hubs_of: impl Fn(usize) -> Vec<String>) -> Fans {
        let (stop, stopped) = watch::channel(false);
        let logs: Vec<Arc<FanLog>> = (0..FANS).map(|_| Arc::default()).collect();
        let tasks = logs
            .iter()
            .enumerate()
            .map(|(i, log)| tokio::spawn(fan(i, hubs_of(i), topic, log.clone(), stopped.clone())))
            .collect();
        let fans = Fans { logs, tasks, stop };
        eventually("every fan subscribed", Duration::from_secs(30), || async {
            let failed = fans.logs.iter().find_map(|l| {
                l.seen()
                    .into_iter()
                    .find(|s| matches!(s, Seen::Unexpected(_) | Seen::Lost(_)))
            });
            assert_eq!(failed, None, "a fan failed before the test began");
            fans.logs.iter().all(|l| l.subscribed()).then_some(())
        })
        .await;
        fans
    }

    /// Waits (at most `within`) until every fan's chain reaches `last`, then
    /// stops them all and returns what each saw. A fan that never gets there
    /// is left for the checker to explain, rather than a bare timeout.
    async fn settle(self, last: u64, within: Duration) -> Vec<Vec<Seen>> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline && self.logs.iter().any(|l| l.position() < last) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.logs.iter().map(|l| l.seen()).collect()
    }
}

// ---------------------------------------------------------------- checker

/// What a fan's record shows, once it passed [`check`].
#[derive(Debug, Default)]
struct Verdict {
    received: usize,
    gaps: Vec<(u64, u64)>,
    /// Stored messages that the gaps name.
    lost: usize,
    /// Node and `recovered` of every resume.
    resumes: Vec<(String, Option<bool>)>,
}

/// Holds one fan's record against the seqs the stream stored for its topic
/// (all published after the fan subscribed): every stored seq is received
/// exactly once, in increasing order, each `prev` the seq received before
/// (the first ack's seq to start with), or lies inside a `gap` that comes
/// right after the last message received and right before the message it
/// names as `before`. A gap naming no stored message is a false alarm.
fn check(seen: &[Seen], stored: &[u64]) -> Result<Verdict, String> {
    let stored_set: BTreeSet<u64> = stored.iter().copied().collect();
    let Some(Seen::Ack {
        seq: start,
        since: None,
        ..
    }) = seen.first()
    else {
        return Err(format!(
            "the first frame is not the ack: {:?}",
            seen.first()
        ));
    };
    let mut verdict = Verdict::default();
    let mut last = *start;
    let mut received = BTreeSet::new();
    let mut pending_gap: Option<(u64, u64)> = None;
    let mut disconnected = false;
    for (i, s) in seen.iter().enumerate().skip(1) {
        match s {
            Seen::Ack {
                node, recovered, ..
            } => {
                if !disconnected {
                    return Err(format!("frame {i}: a second ack on one connection: {s:?}"));
                }
                disconnected = false;
                verdict.resumes.push((node.clone(), *recovered));
            }
            Seen::Message { seq, prev } => {
                if *seq <= last {
                    return Err(format!(
                        "frame {i}: seq {seq} after {last}: duplicate or out of order"
                    ));
                }
                match pending_gap.take() {
                    Some((_, before)) if *seq != before => {
                        return Err(format!(
                            "frame {i}: seq {seq} right after a gap whose before is {before}"
                        ));
                    }
                    // After a gap, `prev` is the bus's: anything below the message.
                    Some(_) if *prev >= *seq => {
                        return Err(format!("frame {i}: seq {seq} with prev {prev}"));
                    }
                    Some(_) => {}
                    None if *prev != last => {
                        return Err(format!(
                            "frame {i}: seq {seq} has prev {prev}, but the fan's last seq is {last}"
                        ));
                    }
                    None => {}
                }
                if !stored_set.contains(seq) {
                    return Err(format!("frame {i}: seq {seq} was never stored"));
                }
                received.insert(*seq);
                last = *seq;
            }
            Seen::Gap { after, before } => {
                if pending_gap.is_some() {
                    return Err(format!("frame {i}: two gaps in a row: {s:?}"));
                }
                if *after != last {
                    return Err(format!(
                        "frame {i}: gap after {after}, but the fan's last seq is {last}"
                    ));
                }
                let named = stored_set.range(after + 1..*before).count();
                if *before <= *after || named == 0 {
                    return Err(format!("frame {i}: {s:?} names no stored message"));
                }
                verdict.gaps.push((*after, *before));
                verdict.lost += named;
                pending_gap = Some((*after, *before));
            }
            Seen::Lost(_) => {
                // A gap whose message never came is told again after the resume.
                if let Some(gap) = pending_gap.take() {
                    verdict.gaps.retain(|g| *g != gap);
                    verdict.lost -= stored_set.range(gap.0 + 1..gap.1).count();
                }
                disconnected = true;
            }
            Seen::Unexpected(what) => return Err(format!("frame {i}: unexpected {what}")),
        }
    }
    if let Some(gap) = pending_gap {
        return Err(format!(
            "the last gap {gap:?} was never followed by its message"
        ));
    }
    if disconnected {
        return Err("the connection was lost and never resumed".into());
    }
    let in_gap = |seq: u64| verdict.gaps.iter().any(|(a, b)| *a < seq && seq < *b);
    let missing: Vec<u64> = stored
        .iter()
        .copied()
        .filter(|s| *s > *start && !received.contains(s) && !in_gap(*s))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} stored messages neither received nor named by a gap: {}",
            missing.len(),
            runs(&missing)
        ));
    }
    verdict.received = received.len();
    Ok(verdict)
}

/// `1..=3, 7, 9..=10`: seqs as runs of consecutive values.
fn runs(seqs: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let mut j = i;
        while j + 1 < seqs.len() && seqs[j + 1] == seqs[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            seqs[i].to_string()
        } else {
            format!("{}..={}", seqs[i], seqs[j])
        });
        i = j + 1;
    }
    out.join(", ")
}

/// A fan's record in short: runs of messages that follow each other both in
/// `prev` and in what was stored, every other frame as is.
fn sketch(seen: &[Seen], stored: &[u64]) -> String {
    let next_stored = |seq: u64| stored.iter().copied().find(|s| *s > seq);
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(u64, u64, u64)> = None; // first seq, its prev, last seq
    let flush = |run: &mut Option<(u64, u64, u64)>, out: &mut Vec<String>| {
        if let Some((first, prev, last)) = run.take() {
            out.push(format!("messages {first}..={last} (first prev {prev})"));
        }
    };
    for s in seen {
        match (s, &mut run) {
            (Seen::Message { seq, prev }, Some((_, _, last)))
                if *prev == *last && next_stored(*last) == Some(*seq) =>
            {
                *last = *seq
            }
            (Seen::Message { seq, prev }, _) => {
                flush(&mut run, &mut out);
                run = Some((*seq, *prev, *seq));
            }
            (other, _) => {
                flush(&mut run, &mut out);
                out.push(format!("{other:?}"));
            }
        }
    }
    flush(&mut run, &mut out);
    out.join("; ")
}

/// Checks every fan; panics with the first failing fans' records (and, on
/// the way out, the hubs' logs), else returns the verdicts.
fn check_all(records: &[Vec<Seen>], stored: &[u64]) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    let mut failures = Vec::new();
    for (i, seen) in records.iter().enumerate() {
        match check(seen, stored) {
            Ok(v) => verdicts.push(v),
            Err(e) => failures.push(format!("fan {i}: {e}\n  saw: {}", sketch(seen, stored))),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fans hold a wrong record of {} stored messages (seqs {}..={}); the first ones:\n{}",
        failures.len(),
        records.len(),
        stored.len(),
        stored.first().unwrap_or(&0),
        stored.last().unwrap_or(&0),
        failures
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    verdicts
}

// ---------------------------------------------------------------- helpers

async fn ready(hub: &Hub) -> bool {
    hub.get("/readyz").await.0 == 200
}

async fn wait_ready(hubs: &[&Hub]) {
    eventually("every hub ready", Duration::from_secs(20), || async {
        for hub in hubs {
            if !ready(hub).await {
                return None;
            }
        }
        Some(())
    })
    .await;
}

async fn wait_progress(progress: &AtomicUsize, n: usize) {
    eventually(
        &format!("{n} publications acked"),
        Duration::from_secs(30),
        || async { (progress.load(Ordering::SeqCst) >= n).then_some(()) },
    )
    .await;
}

/// The editor's stored seqs (sorted): one distinct seq per publication,
/// retries included (the `Nats-Msg-Id` de-duplicates them).
fn assert_all_stored(stored: &[u64]) {
    assert_eq!(stored.len(), MESSAGES, "every publication acked");
    assert!(
        stored.windows(2).all(|w| w[0] < w[1]),
        "one seq per publication: {}",
        runs(stored)
    );
}

fn summary(test: &str, verdicts: &[Verdict], stored: &[u64], started: Instant) {
    let gaps: usize = verdicts.iter().map(|v| v.gaps.len()).sum();
    let lost: usize = verdicts.iter().map(|v| v.lost).sum();
    let resumes: usize = verdicts.iter().map(|v| v.resumes.len()).sum();
    eprintln!(
        "{test}: {} fans, {} messages, {gaps} gaps naming {lost} lost, {resumes} resumes, {:.1} s",
        verdicts.len(),
        stored.len(),
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------- tests

/// The measurement: default configuration, nats-server SIGKILLed
/// after message 150 and restarted on its store 2 s later. The default
/// retention covers that outage, so every fan gets all 600, no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_of_two_seconds_loses_nothing_with_defaults() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let mut server = NatsServer::start().await;
    let url = server.url();
    // No config file: the defaults (ping 5 s, check 3 s, clips retained) are the subject.
    let hub_a = Hub::start(&["--nats", &url, "--node-name", "hub-a"]).await;
    let hub_b = Hub::start(&["--nats", &url, "--node-name", "hub-b"]).await;
    wait_ready(&[&hub_a, &hub_b]).await;
    let topic = "clips.holes.restart";
    let urls = [hub_a.ws_url(), hub_b.ws_url()];
    let fans = Fans::start(topic, |i| vec![urls[i % 2].clone()]).await;

    let editor = holes_editor(&url).await;
    let progress = Arc::new(AtomicUsize::new(0));
    let publisher = publish_feed(editor, topic, progress.clone());
    wait_progress(&progress, FAULT_AFTER).await;
    server.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.restart().await;
    let stored = publisher.await.expect("editor");
    assert_all_stored(&stored);

    let records = fans.settle(*stored.last().unwrap(), SETTLE_WITHIN).await;
    let verdicts = check_all(&records, &stored);
    summary("nats restart, defaults", &verdicts, &stored, started);
    for (i, v) in verdicts.iter().enumerate() {
        assert_eq!(
            (v.received, v.gaps.as_slice()),
            (MESSAGES, &[][..]),
            "fan {i}: the default retention covers a 2 s restart: everything, no gap"
        );
        assert!(v.resumes.is_empty(), "fan {i} was disconnected: {v:?}");
    }
    for hub in [&hub_a, &hub_b] {
        assert!(
            hub.metric("tribune_bus_reconnects_total").await >= 1.0,
            "the hub saw the restart"
        );
        // Repairs show whether the editor's burst came before the hub was
        // back (the order), which the editor's quick reconnect makes likely.
        eprintln!(
            "  {}: gaps repaired {}",
            hub.addr(),
            hub.metric("tribune_gaps_repaired_total").await
        );
    }
}

/// Retention shorter than the outage: the hubs' link to NATS is cut for 3 s
/// while the editor (connected directly) goes on at 100/s, with `clips`
/// keeping 20. What aged out cannot be repaired: every fan is told exactly
/// which messages it lost, and misses nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_retention_is_a_gap_that_names_every_lost_message() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let server = NatsServer::start().await;
    let proxy = TcpProxy::start(&server.url()).await;
    // Count only: the built-in five-minute window (issue 19) would keep what
    // this test needs to age out.
    let cfg =
        ConfigFile::new("[namespaces.clips]\nmode = \"feed\"\nretained = 20\nretained_secs = 0\n");
    let hub_on = |name: &'static str| {
        let nats = proxy.url();
        let cfg = cfg.path().to_string();
        async move { Hub::start(&["--nats", &nats, "--config", &cfg, "--node-name", name]).await }
    };
    let hub_a = hub_on("hub-a").await;
    let hub_b = hub_on("hub-b").await;
    wait_ready(&[&hub_a, &hub_b]).await;
    let topic = "clips.holes.cut";
    let urls = [hub_a.ws_url(), hub_b.ws_url()];
    let fans = Fans::start(topic, |i| vec![urls[i % 2].clone()]).await;

    let editor = holes_editor(&server.url()).await;
    let progress = Arc::new(AtomicUsize::new(0));
    let publisher = publish_feed(editor, topic, progress.clone());
    wait_progress(&progress, FAULT_AFTER).await;
    proxy.cut();
    let cut_at = progress.load(Ordering::SeqCst);
    eventually(
        "both hubs see the link cut",
        Duration::from_secs(10),
        || async { (!ready(&hub_a).await && !ready(&hub_b).await).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restored_at = progress.load(Ordering::SeqCst);
    proxy.restore();
    assert!(
        restored_at - cut_at > 100,
        "the editor published {} messages during the cut: more than the 21 the stream keeps",
        restored_at - cut_at
    );
    let stored = publisher.await.expect("editor");
    assert_all_stored(&stored);

    let records = fans.settle(*stored.last().unwrap(), SETTLE_WITHIN).await;
    let verdicts = check_all(&records, &stored);
    summary("link cut beyond retention", &verdicts, &stored, started);
    for (i, v) in verdicts.iter().enumerate() {
        assert!(
            !v.gaps.is_empty() && v.lost > 0,
            "fan {i} must be told of the messages that aged out during the cut: {v:?}"
        );
        assert!(v.resumes.is_empty(), "fan {i} was disconnected: {v:?}");
    }
    let lost: Vec<usize> = verdicts.iter().map(|v| v.lost).collect();
    eprintln!(
        "  lost per fan: {}..={} (published during the cut: {})",
        lost.iter().min().unwrap(),
        lost.iter().max().unwrap(),
        restored_at - cut_at
    );
    for hub in [&hub_a, &hub_b] {
        let (_, metrics) = hub.get_internal("/metrics").await;
        let gap_lines: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("tribune_gaps_"))
            .collect();
        eprintln!("  {}: {}", hub.addr(), gap_lines.join(" | "));
        assert!(
            hub.metric("tribune_gaps_unrepairable_total{mode=\"feed\"}")
                .await
                >= 1.0,
            "{} counts the gap it could not repair: {gap_lines:?}",
            hub.addr()
        );
    }
}

/// Hub A SIGKILLed after message 150 under its 100 fans: they resume on hub B
/// with `since` and the epoch of their first ack, and recover exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fans_of_a_sigkilled_hub_resume_on_another_and_lose_nothing() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let server = NatsServer::start().await;
    let url = server.url();
    let mut hub_a = Hub::start(&["--nats", &url, "--node-name", "hub-a"]).await;
    let hub_b = Hub::start(&["--nats", &url, "--node-name", "hub-b"]).await;
    wait_ready(&[&hub_a, &hub_b]).await;
    let topic = "clips.holes.hubkill";
    let (a, b) = (hub_a.ws_url(), hub_b.ws_url());
    // Even fans start on A and resume on B; odd fans stay on B throughout.
    let fans = Fans::start(topic, |i| {
        if i % 2 == 0 {
            vec![a.clone(), b.clone()]
        } else {
            vec![b.clone()]
        }
    })
    .await;

    let editor = holes_editor(&url).await;
    let progress = Arc::new(AtomicUsize::new(0));
    let publisher = publish_feed(editor, topic, progress.clone());
    wait_progress(&progress, FAULT_AFTER).await;
    hub_a.kill().await;
    let stored = publisher.await.expect("editor");
    assert_all_stored(&stored);

    let records = fans.settle(*stored.last().unwrap(), SETTLE_WITHIN).await;
    let verdicts = check_all(&records, &stored);
    summary("hub killed", &verdicts, &stored, started);
    for (i, v) in verdicts.iter().enumerate() {
        assert_eq!(
            (v.received, v.gaps.as_slice()),
            (MESSAGES, &[][..]),
            "fan {i}: a resume within the retention loses nothing and needs no gap"
        );
        let want: Vec<(String, Option<bool>)> = if i % 2 == 0 {
            vec![("hub-b".into(), Some(true))]
        } else {
            vec![]
        };
        assert_eq!(v.resumes, want, "fan {i}: its resumes (node, recovered)");
    }
}

/// Found while writing the tests above; ignored until the hub is fixed (see
/// the h-t22 report). Hubs with different `clips` retention share the
/// stream during a rolling config change, and the last one started sets its
/// per-subject limit. Hub B (default retention) starts first, hub A
/// (`retained = 20`) then lowers the stream to 21 per subject; B's link is
/// cut for 3 s. B judges "may messages have been removed?" from the limit of
/// its own config, read once at connect, so it repairs from the oldest stored
/// message with a `prev` that claims continuity: 340 messages lost, no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_limit_lowered_by_another_hub_still_makes_no_silent_hole() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let server = NatsServer::start().await;
    let proxy = TcpProxy::start(&server.url()).await;
    let hub_b = Hub::start(&["--nats", &proxy.url(), "--node-name", "hub-b"]).await;
    // Count only: the built-in five-minute window (issue 19) would keep what
    // this test needs to age out.
    let cfg =
        ConfigFile::new("[namespaces.clips]\nmode = \"feed\"\nretained = 20\nretained_secs = 0\n");
    let hub_a = Hub::start(&[
        "--nats",
        &server.url(),
        "--config",
        cfg.path(),
        "--node-name",
        "hub-a",
    ])
    .await;
    wait_ready(&[&hub_a, &hub_b]).await;
    let topic = "clips.holes.mixed";
    let urls = [hub_a.ws_url(), hub_b.ws_url()];
    let fans = Fans::start(topic, |i| vec![urls[i % 2].clone()]).await;

    let editor = holes_editor(&server.url()).await;
    let progress = Arc::new(AtomicUsize::new(0));
    let publisher = publish_feed(editor, topic, progress.clone());
    wait_progress(&progress, FAULT_AFTER).await;
    proxy.cut();
    eventually(
        "hub B sees the link cut",
        Duration::from_secs(10),
        || async { (!ready(&hub_b).await).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore();
    let stored = publisher.await.expect("editor");
    assert_all_stored(&stored);

    let records = fans.settle(*stored.last().unwrap(), SETTLE_WITHIN).await;
    let verdicts = check_all(&records, &stored);
    summary(
        "stream limit lowered by another hub",
        &verdicts,
        &stored,
        started,
    );
    assert!(
        hub_b
            .metric("tribune_gaps_unrepairable_total{mode=\"feed\"}")
            .await
            >= 1.0,
        "hub B counts the gap"
    );
}

/// The checker itself, on records written by hand: it passes a whole chain
/// and a truthful gap, and catches each way a hub could mislead a fan.
#[test]
fn the_checker_tells_a_truthful_record_from_a_misleading_one() {
    use Seen::{Gap, Lost, Message as M};
    let ack = |since: Option<u64>, recovered: Option<bool>| Seen::Ack {
        node: "hub-x".into(),
        seq: 0,
        since,
        recovered,
    };
    let stored = [1, 2, 3, 4, 5];
    let whole = [
        ack(None, None),
        M { seq: 1, prev: 0 },
        M { seq: 2, prev: 1 },
        M { seq: 3, prev: 2 },
        Lost("killed".into()),
        ack(Some(3), Some(true)),
        M { seq: 4, prev: 3 },
        M { seq: 5, prev: 4 },
    ];
    let v = check(&whole, &stored).expect("a whole record");
    assert_eq!((v.received, v.lost, v.resumes.len()), (5, 0, 1));
    let gap = [
        ack(None, None),
        M { seq: 1, prev: 0 },
        Gap {
            after: 1,
            before: 4,
        },
        M { seq: 4, prev: 3 },
        M { seq: 5, prev: 4 },
    ];
    let v = check(&gap, &stored).expect("a truthful gap");
    assert_eq!((v.received, v.lost, v.gaps), (3, 2, vec![(1, 4)]));

    // Each record is whole but for one defect; the checker names that one.
    let whole_from = |from: u64| (from..=5).map(|seq| M { seq, prev: seq - 1 });
    let misleading: Vec<(&str, Vec<Seen>, &str)> = vec![
        (
            "silent hole, prev rewritten (issue 22)",
            vec![
                ack(None, None),
                M { seq: 1, prev: 0 },
                M { seq: 4, prev: 1 },
                M { seq: 5, prev: 4 },
            ],
            "neither received nor named by a gap: 2..=3",
        ),
        (
            "silent hole, bus prev",
            vec![
                ack(None, None),
                M { seq: 1, prev: 0 },
                M { seq: 4, prev: 3 },
                M { seq: 5, prev: 4 },
            ],
            "seq 4 has prev 3, but the fan's last seq is 1",
        ),
        (
            "duplicate",
            [
                ack(None, None),
                M { seq: 1, prev: 0 },
                M { seq: 1, prev: 0 },
            ]
            .into_iter()
            .chain(whole_from(2))
            .collect(),
            "seq 1 after 1",
        ),
        (
            "gap not after the last message",
            vec![
                ack(None, None),
                M { seq: 1, prev: 0 },
                M { seq: 2, prev: 1 },
                Gap {
                    after: 1,
                    before: 4,
                },
                M { seq: 4, prev: 3 },
                M { seq: 5, prev: 4 },
            ],
            "gap after 1, but the fan's last seq is 2",
        ),
        (
            "gap not right before its message",
            vec![
                ack(None, None),
                M { seq: 1, prev: 0 },
                Gap {
                    after: 1,
                    before: 3,
                },
                M { seq: 4, prev: 3 },
                M { seq: 5, prev: 4 },
            ],
            "seq 4 right after a gap whose before is 3",
        ),
        (
            "gap naming nothing",
            [
                ack(None, None),
                M { seq: 1, prev: 0 },
                Gap {
                    after: 1,
                    before: 2,
                },
            ]
            .into_iter()
            .chain(whole_from(2))
            .collect(),
            "names no stored message",
        ),
        (
            "lost and never resumed",
            [ack(None, None)]
                .into_iter()
                .chain(whole_from(1))
                .chain([Lost("killed".into())])
                .collect(),
            "never resumed",
        ),
    ];
    for (what, record, why) in misleading {
        match check(&record, &stored) {
            Ok(v) => panic!("{what} passed the checker: {v:?}"),
            Err(e) => assert!(e.contains(why), "{what}: {e}"),
        }
    }
}
