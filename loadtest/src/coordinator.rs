//! The coordinator: starts the servers and the worker processes, drives a
//! scenario through its phases, publishes, and builds the report.
//!
//! Phases of one target's run: servers up and sampled (RSS, CPU) → workers
//! connect their clients at the paced rate (and subscribe, except `idle`
//! and `storm`) → hold, memory sampled → traffic (the scenario's own
//! part: publication, storm order, churn, a node killed or drained) →
//! `Finish` with the last counter of every topic → workers settle and send
//! their final statistics → servers sampled again. Every wait has a
//! deadline; nothing here loops without bound.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

use crate::cli::{Bus, Cli, PublishVia, ResumeAction, Scenario};
use crate::payload::now_us;
use crate::plan::{TopicPlan, run_token};
use crate::procstat::{self, Machine, ProcSample};
use crate::publisher::{self, Published, Schedule, Via};
use crate::report::{
    ConnectReport, Pcts, ProcUsage, Report, ResourceReport, ResumeReport, RunReport, TimelinePoint,
    percentile_curve,
};
use crate::servers::{HubLauncher, HubNode, NatsServer, find_binary};
use crate::wire::{
    Command, Final, Progress, SubscribeWhen, Target, WorkerReport, WorkerSpec, new_hist,
};

/// The NATS server of the run, started here or given.
struct Nats {
    url: String,
    ws_url: Option<String>,
    pid: Option<u32>,
    /// Kept alive for the whole invocation (all targets use the same one).
    _spawned: Option<NatsServer>,
}

/// Runs every target of the command line; returns the report and the
/// directory it was written to.
pub async fn run(cli: Cli) -> anyhow::Result<(Report, PathBuf)> {
    cli.validate().map_err(anyhow::Error::msg)?;
    procstat::raise_nofile();
    let started = now_us();
    let run_dir = match &cli.out {
        Some(d) => d.clone(),
        None => PathBuf::from(format!(
            "target/loadtest/{}-{}",
            cli.scenario.as_str(),
            started / 1_000_000
        )),
    };
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let run_dir = run_dir.canonicalize()?;
    let machine = Machine::read();
    let mut versions = BTreeMap::new();
    versions.insert(
        "tribune-loadtest".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );

    let needs_nats = cli.target.contains(&Target::NatsWs)
        || (cli.target.contains(&Target::Tribune) && cli.bus == Bus::Nats);
    let nats = if needs_nats {
        Some(match &cli.nats_url {
            Some(url) => Nats {
                url: url.clone(),
                ws_url: cli.nats_ws_url.clone(),
                pid: cli.nats_pid,
                _spawned: None,
            },
            None => {
                let bin = find_binary("nats-server", cli.nats_server_bin.as_deref()).context(
                    "nats-server not found: run scripts/install-nats, or pass --nats-server-bin or --nats-url",
                )?;
                let server = NatsServer::start(&bin, &run_dir)?;
                versions.insert("nats-server".into(), server.version.clone());
                Nats {
                    url: server.url.clone(),
                    ws_url: Some(server.ws_url.clone()),
                    pid: Some(server.proc.pid()),
                    _spawned: Some(server),
                }
            }
        })
    } else {
        None
    };

    let launcher = if cli.target.contains(&Target::Tribune) && cli.hub_url.is_empty() {
        let bin = find_binary("tribune-hub", cli.hub_bin.as_deref()).context(
            "tribune-hub not found: build it (cargo build --release -p tribune-hub) or pass --hub-bin or --hub-url",
        )?;
        let config = match &cli.hub_config {
            Some(c) => c.clone(),
            None => {
                let path = HubLauncher::write_default_config(&run_dir, 2_000, 1_000)?;
                if let Some(w) = cli.stats_window_ms {
                    let mut text = std::fs::read_to_string(&path)?;
                    text.push_str(&format!("\n[stats]\nwindow_ms = {w}\n"));
                    std::fs::write(&path, text)?;
                }
                path
            }
        };
        let l = HubLauncher {
            bin,
            config,
            publish_key: crate::servers::publish_key(),
            nats: (cli.bus == Bus::Nats)
                .then(|| nats.as_ref().map(|n| n.url.clone()))
                .flatten(),
            extra_args: cli.hub_arg.clone(),
            run_dir: run_dir.clone(),
        };
        versions.insert("tribune-hub".into(), l.version());
        Some(l)
    } else {
        None
    };

    let mut report = Report {
        tool: format!("tribune-loadtest {}", env!("CARGO_PKG_VERSION")),
        started_at_unix_s: started / 1_000_000,
        command: std::env::args().collect(),
        scenario: cli.scenario.as_str().to_string(),
        params: serde_json::to_value(&cli)?,
        machine,
        versions,
        ..Report::default()
    };
    let hard_deadline = Instant::now() + Duration::from_secs(cli.max_seconds);
    for &target in &cli.target {
        eprintln!("== {} against {}", cli.scenario.as_str(), target.as_str());
        if cli.scenario == Scenario::Reactions {
            let r = crate::reactions::run_target(&cli, launcher.as_ref(), hard_deadline).await?;
            report.runs.push(r);
            continue;
        }
        let r = run_target(
            &cli,
            target,
            nats.as_ref(),
            launcher.as_ref(),
            &run_dir,
            hard_deadline,
        )
        .await?;
        report.runs.push(r);
    }
    report.compare();
    Ok((report, run_dir))
}

/// The workers of one target's run.
struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    pids: Vec<u32>,
}

impl Workers {
    async fn spawn(
        specs: Vec<WorkerSpec>,
        run_dir: &Path,
        tx: mpsc::UnboundedSender<WorkerReport>,
    ) -> anyhow::Result<Workers> {
        let exe = std::env::current_exe().context("locating this binary")?;
        let mut w = Workers {
            children: Vec::new(),
            stdins: Vec::new(),
            pids: Vec::new(),
        };
        for spec in specs {
            let log = std::fs::File::create(run_dir.join(format!(
                "worker-{}-{}.log",
                spec.target.as_str(),
                spec.worker
            )))?;
            let mut child = tokio::process::Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log))
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker process")?;
            let mut stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let line = serde_json::to_string(&spec)? + "\n";
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await?;
            let tx = tx.clone();
            let worker = spec.worker;
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<WorkerReport>(&line) {
                        Ok(r) => {
                            if tx.send(r).is_err() {
                                break;
                            }
                        }
                        Err(e) => eprintln!("worker {worker}: unreadable report: {e}"),
                    }
                }
            });
            w.pids.push(child.id().unwrap_or(0));
            w.children.push(child);
            w.stdins.push(stdin);
        }
        Ok(w)
    }

    async fn send(&mut self, cmd: &Command) {
        let line = serde_json::to_string(cmd).expect("commands serialize") + "\n";
        for s in &mut self.stdins {
            // A worker that died is reported through its missing final report.
            let _ = s.write_all(line.as_bytes()).await;
            let _ = s.flush().await;
        }
    }

    async fn reap(mut self) {
        drop(std::mem::take(&mut self.stdins));
        for c in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(5), c.wait())
                .await
                .is_err()
            {
                let _ = c.kill().await;
            }
        }
    }
}

/// Sums over the workers' latest progress.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    open: u64,
    subscribed: u64,
    deliveries: u64,
    resumed: u64,
    away: u64,
    last_back_us: u64,
}

/// A measured server process.
struct Watched {
    role: String,
    name: String,
    pid: u32,
    /// Whether it counts for RSS per connection and CPU per delivery.
    measured: bool,
}

/// Reads worker reports, keeps the timeline, samples servers, draws progress.
struct Monitor {
    rx: mpsc::UnboundedReceiver<WorkerReport>,
    latest: Vec<Progress>,
    finals: Vec<Option<Final>>,
    t0_us: u64,
    /// Per second since `t0_us`: merged latency and the most clients open.
    buckets: BTreeMap<u64, (Histogram<u64>, u64)>,
    server_rss: BTreeMap<u64, u64>,
    watched: Vec<Watched>,
    peak_open: u64,
    peak_subscribed: u64,
    last_sample: Instant,
    bars: Bars,
}

struct Bars {
    visible: bool,
    multi: MultiProgress,
    conns: ProgressBar,
    traffic: ProgressBar,
}

impl Bars {
    fn new(clients: u64, target: Target, visible: bool) -> Bars {
        let multi = MultiProgress::with_draw_target(if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let conns = multi.add(ProgressBar::new(clients));
        conns.set_style(
            ProgressStyle::with_template("{prefix:>8} conns  [{bar:30}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        conns.set_prefix(target.as_str());
        let traffic = multi.add(ProgressBar::new_spinner());
        traffic.set_style(
            ProgressStyle::with_template("{prefix:>8} {spinner} {msg}").expect("valid template"),
        );
        traffic.set_prefix(target.as_str());
        Bars {
            visible,
            multi,
            conns,
            traffic,
        }
    }
}

impl Monitor {
    /// A line about the run's progress, above the bars (or plain on stderr).
    fn note(&self, text: String) {
        if self.bars.visible {
            let _ = self.bars.multi.println(text);
        } else {
            eprintln!("{text}");
        }
    }

    fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for p in &self.latest {
            t.open += p.open;
            t.subscribed += p.subscribed;
            t.deliveries += p.deliveries;
            t.resumed += p.resumed;
            t.away += p.away;
            t.last_back_us = t.last_back_us.max(p.last_back_us);
        }
        t
    }

    fn absorb(&mut self, r: WorkerReport) {
        match r {
            WorkerReport::Progress(p) => {
                let w = p.worker as usize;
                if let Ok(h) = p.interval_latency.decode() {
                    let sec = p.at_us.saturating_sub(self.t0_us) / 1_000_000;
                    let b = self.buckets.entry(sec).or_insert_with(|| (new_hist(), 0));
                    let _ = b.0.add(&h);
                }
                if w < self.latest.len() {
                    self.latest[w] = p;
                }
                let t = self.totals();
                self.peak_open = self.peak_open.max(t.open);
                self.peak_subscribed = self.peak_subscribed.max(t.subscribed);
                let sec = now_us().saturating_sub(self.t0_us) / 1_000_000;
                let b = self.buckets.entry(sec).or_insert_with(|| (new_hist(), 0));
                b.1 = b.1.max(t.open);
            }
            WorkerReport::Final(f) => {
                let w = f.worker as usize;
                if w < self.finals.len() {
                    self.finals[w] = Some(*f);
                }
            }
        }
    }

    fn sample_servers(&mut self) {
        let rss: u64 = self
            .watched
            .iter()
            .filter(|w| w.measured)
            .filter_map(|w| procstat::sample(w.pid))
            .map(|s| s.rss_kib)
            .sum();
        let sec = now_us().saturating_sub(self.t0_us) / 1_000_000;
        self.server_rss.insert(sec, rss);
        let t = self.totals();
        self.bars.conns.set_position(t.open);
        self.bars
            .conns
            .set_message(format!("subscribed {}", t.subscribed));
        let last = self
            .buckets
            .values()
            .rev()
            .find(|b| !b.0.is_empty())
            .map(|b| b.0.value_at_quantile(0.99))
            .unwrap_or(0);
        self.bars.traffic.set_message(format!(
            "deliveries {}  p99(last s) {}  server RSS {} MiB  away {}",
            t.deliveries,
            crate::report::fmt_us(last),
            rss / 1024,
            t.away
        ));
        self.bars.traffic.tick();
    }

    /// Processes reports until `until`, sampling servers every second.
    async fn pump_until(&mut self, until: Instant) {
        loop {
            let now = Instant::now();
            if now >= until {
                return;
            }
            let next_sample = self.last_sample + Duration::from_secs(1);
            let wake = until.min(next_sample);
            match tokio::time::timeout_at(wake.into(), self.rx.recv()).await {
                Ok(Some(r)) => self.absorb(r),
                // Every worker gone: nothing more will come.
                Ok(None) => tokio::time::sleep_until(wake.into()).await,
                Err(_) => {}
            }
            if Instant::now() >= next_sample {
                self.last_sample = Instant::now();
                self.sample_servers();
            }
        }
    }

    async fn pump_for(&mut self, d: Duration) {
        self.pump_until(Instant::now() + d).await;
    }

    /// Pumps until `cond` holds (true) or `deadline` passes (false).
    async fn wait_for(&mut self, deadline: Instant, cond: impl Fn(&Totals) -> bool) -> bool {
        loop {
            if cond(&self.totals()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.pump_until((Instant::now() + Duration::from_millis(100)).min(deadline))
                .await;
        }
    }

    /// Waits for every worker's final report (false at the deadline).
    async fn collect_finals(&mut self, deadline: Instant) -> bool {
        while self.finals.iter().any(Option::is_none) {
            if Instant::now() >= deadline {
                return false;
            }
            match tokio::time::timeout_at(deadline.into(), self.rx.recv()).await {
                Ok(Some(r)) => self.absorb(r),
                Ok(None) | Err(_) => return false,
            }
        }
        true
    }
}

fn sources(n: u32) -> Vec<IpAddr> {
    (0..n)
        .map(|i| {
            IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                (2 + i) as u8 / 255,
                ((2 + i) % 255) as u8,
            ))
        })
        .collect()
}

fn sample_all(watched: &[Watched]) -> Vec<Option<ProcSample>> {
    watched.iter().map(|w| procstat::sample(w.pid)).collect()
}

async fn run_target(
    cli: &Cli,
    target: Target,
    nats: Option<&Nats>,
    launcher: Option<&HubLauncher>,
    run_dir: &Path,
    hard_deadline: Instant,
) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let mut rep = RunReport {
        target: Some(target),
        topics: cli.topics(),
        per_client: cli.per_client(),
        ..RunReport::default()
    };
    let plan = TopicPlan::new(&format!("clips.{}", run_token()), cli.topics(), cli.zipf);

    // Servers.
    let mut hubs: Vec<HubNode> = Vec::new();
    let mut watched: Vec<Watched> = Vec::new();
    let urls: Vec<String> = match target {
        Target::Tribune => {
            rep.bus = Some(
                match cli.bus {
                    Bus::Nats => "nats",
                    Bus::Embedded => "embedded",
                }
                .to_string(),
            );
            if !cli.hub_url.is_empty() {
                for (i, pid) in cli.hub_pid.iter().enumerate() {
                    watched.push(Watched {
                        role: "hub".into(),
                        name: format!("hub {i}"),
                        pid: *pid,
                        measured: true,
                    });
                }
                cli.hub_url.clone()
            } else {
                let l = launcher.context("no hub launcher")?;
                for i in 0..cli.hubs {
                    let node = l.start(i, None)?;
                    watched.push(Watched {
                        role: "hub".into(),
                        name: format!("hub {i}"),
                        pid: node.pid().unwrap_or(0),
                        measured: true,
                    });
                    hubs.push(node);
                }
                hubs.iter().map(HubNode::ws_url).collect()
            }
        }
        Target::NatsWs => {
            let n = nats.context("no nats-server")?;
            let ws = n.ws_url.clone().context(
                "--target nats-ws needs the server's websocket listener (--nats-ws-url)",
            )?;
            vec![ws]
        }
    };
    if let Some(n) = nats
        && let Some(pid) = n.pid
        && (target == Target::NatsWs || cli.bus == Bus::Nats)
    {
        watched.push(Watched {
            role: "nats-server".into(),
            name: if target == Target::NatsWs {
                "nats-server (websocket listener)".into()
            } else {
                "nats-server (bus)".into()
            },
            pid,
            measured: target == Target::NatsWs,
        });
    }
    if cli.publish_via() == PublishVia::Nats
        && let Some(n) = nats
    {
        publisher::ensure_stream(&n.url, "tribune").await?;
    }
    rep.urls = urls.clone();
    let via = match cli.publish_via() {
        PublishVia::Nats => Via::Nats {
            url: nats
                .context("publishing through NATS needs a nats-server")?
                .url
                .clone(),
            subject_prefix: "tribune.fan.".into(),
        },
        PublishVia::Http => match (hubs.first(), &launcher) {
            (Some(h), Some(l)) => Via::Http {
                base: h.internal_url(),
                key: Some(l.publish_key.clone()),
            },
            // A hub started elsewhere: its internal listener and key come
            // from the environment (TRIBUNE_PUBLISH_URL, TRIBUNE_PUBLISH_KEY).
            _ => Via::Http {
                base: std::env::var("TRIBUNE_PUBLISH_URL").context(
                    "publishing to a hub started elsewhere needs TRIBUNE_PUBLISH_URL: its internal listener, http://HOST:PORT",
                )?,
                key: std::env::var("TRIBUNE_PUBLISH_KEY").ok(),
            },
        },
    };

    let before = sample_all(&watched);

    // Workers.
    let subscribe = match cli.scenario {
        Scenario::Idle => SubscribeWhen::Never,
        Scenario::Storm => SubscribeWhen::OnCommand,
        _ => SubscribeWhen::OnConnect,
    };
    let history = match (target, cli.scenario) {
        // A replayed latest message gives late subscribers their baseline.
        (Target::Tribune, Scenario::Storm | Scenario::Churn) => Some(1),
        _ => None,
    };
    let procs = cli.procs;
    let specs: Vec<WorkerSpec> = (0..procs)
        .map(|w| WorkerSpec {
            worker: w,
            procs,
            target,
            urls: urls.clone(),
            sources: sources(cli.source_addrs()),
            clients: cli.clients,
            connect_rate: cli.connect_rate / f64::from(procs),
            connect_timeout_ms: 10_000,
            topic_prefix: plan.prefix.clone(),
            topics: plan.count,
            per_client: cli.per_client(),
            zipf_s: cli.zipf,
            seed: cli.seed,
            subject_prefix: "tribune.live.".into(),
            subscribe,
            history,
            baseline_zero: cli.scenario != Scenario::Storm,
            read_buf: cli.read_buf,
            reconnect: true,
            drop_one: cli.test_drop_one,
            dup_one: cli.test_dup_one,
            max_life_ms: hard_deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u64,
            report_ms: 500,
        })
        .collect();
    let (tx, rx) = mpsc::unbounded_channel();
    let t0_us = now_us();
    let mut workers = Workers::spawn(specs, run_dir, tx).await?;
    let visible = !cli.no_progress && std::io::stderr().is_terminal();
    let mut mon = Monitor {
        rx,
        latest: vec![Progress::default(); procs as usize],
        finals: vec![None; procs as usize],
        t0_us,
        buckets: BTreeMap::new(),
        server_rss: BTreeMap::new(),
        watched,
        peak_open: 0,
        peak_subscribed: 0,
        last_sample: Instant::now(),
        bars: Bars::new(cli.clients, target, visible),
    };
    // Connect (and subscribe).
    let clients = cli.clients;
    let expected_subs = if subscribe == SubscribeWhen::Never {
        0
    } else {
        clients * u64::from(cli.per_client())
    };
    rep.subscribe.expected = expected_subs;
    let connect_deadline =
        (Instant::now() + Duration::from_secs(cli.connect_timeout_s)).min(hard_deadline);
    let t_connect = Instant::now();
    let need_subs = if subscribe == SubscribeWhen::OnConnect {
        expected_subs
    } else {
        0
    };
    let all_in = mon
        .wait_for(connect_deadline, |t| {
            t.open >= clients && t.subscribed >= need_subs
        })
        .await;
    rep.connect.connect_s = t_connect.elapsed().as_secs_f64();
    // The workers' own timestamps are finer than the progress reports.
    let first = mon
        .latest
        .iter()
        .map(|p| p.first_attempt_us)
        .filter(|&t| t > 0)
        .min();
    let last = mon.latest.iter().map(|p| p.all_connected_us).max();
    if all_in
        && let (Some(first), Some(last)) = (first, last)
        && mon.latest.iter().all(|p| p.all_connected_us > 0)
        && last > first
    {
        rep.connect.connect_s = (last - first) as f64 / 1e6;
    }
    if !all_in {
        let t = mon.totals();
        rep.problems.push(format!(
            "only {} of {clients} clients connected ({} of {need_subs} subscriptions) within {} s",
            t.open, t.subscribed, cli.connect_timeout_s
        ));
    }
    mon.bars
        .conns
        .set_message(format!("connected in {:.1} s", rep.connect.connect_s));
    let t = mon.totals();
    mon.note(format!(
        "{}: {} of {clients} clients connected in {:.1} s, {} subscriptions confirmed",
        target.as_str(),
        t.open,
        rep.connect.connect_s,
        t.subscribed
    ));

    // Hold, then read memory with every client in place.
    let hold = if cli.scenario == Scenario::Idle {
        Duration::from_secs_f64(cli.hold_s)
    } else {
        Duration::from_millis(500)
    };
    mon.pump_for(hold).await;
    let connected = sample_all(&mon.watched);
    let workers_connected: Vec<Option<ProcSample>> =
        workers.pids.iter().map(|&p| procstat::sample(p)).collect();

    // Traffic.
    let schedule = |duration: Duration| Schedule {
        plan: plan.clone(),
        rate: cli.rate,
        duration,
        payload_size: cli.payload_size,
    };
    let pub_control = publisher::Control::default();
    if cli.scenario != Scenario::Idle {
        mon.note(format!(
            "{}: publishing {:.0} msgs/s of {} B over {} topic(s)",
            target.as_str(),
            cli.rate,
            cli.payload_size,
            plan.count
        ));
    }
    let mut traffic_start: Option<Vec<Option<ProcSample>>> = None;
    let published: Published = match cli.scenario {
        Scenario::Reactions => bail!("reactions runs in crate::reactions"),
        Scenario::Idle => Published {
            last_counter: vec![0; plan.count as usize],
            ..Published::default()
        },
        Scenario::Fanout | Scenario::Topics => {
            traffic_start = Some(sample_all(&mon.watched));
            let task = spawn_publisher(
                &via,
                schedule(Duration::from_secs_f64(cli.duration_s)),
                &pub_control,
            );
            pump_until_done(&mut mon, &task, hard_deadline).await;
            task.await??
        }
        Scenario::Storm => {
            traffic_start = Some(sample_all(&mon.watched));
            let spread = Duration::from_secs_f64(cli.storm_spread_s);
            let duration =
                Duration::from_secs_f64(cli.duration_s).max(spread + Duration::from_secs(3));
            let task = spawn_publisher(&via, schedule(duration), &pub_control);
            mon.pump_for(Duration::from_secs(1)).await;
            let t_order = Instant::now();
            workers
                .send(&Command::Subscribe {
                    spread_ms: spread.as_millis() as u64,
                })
                .await;
            let all = mon
                .wait_for(
                    (t_order + spread + Duration::from_secs(60)).min(hard_deadline),
                    |t| t.subscribed >= expected_subs,
                )
                .await;
            if all {
                rep.subscribe.all_confirmed_s = Some(t_order.elapsed().as_secs_f64());
            } else {
                rep.problems.push(format!(
                    "storm: only {} of {expected_subs} subscriptions confirmed",
                    mon.totals().subscribed
                ));
            }
            pump_until_done(&mut mon, &task, hard_deadline).await;
            task.await??
        }
        Scenario::Churn => {
            traffic_start = Some(sample_all(&mon.watched));
            let task = spawn_publisher(
                &via,
                schedule(Duration::from_secs_f64(cli.duration_s)),
                &pub_control,
            );
            workers
                .send(&Command::Churn {
                    per_s: cli.churn_rate / f64::from(procs),
                })
                .await;
            pump_until_done(&mut mon, &task, hard_deadline).await;
            workers.send(&Command::StopChurn).await;
            task.await??
        }
        Scenario::Resume => {
            traffic_start = Some(sample_all(&mon.watched));
            let long = Duration::from_secs_f64(cli.resume_after_s)
                + Duration::from_secs(cli.resume_timeout_s + 30);
            let task = spawn_publisher(&via, schedule(long), &pub_control);
            mon.pump_for(Duration::from_secs_f64(cli.resume_after_s))
                .await;
            let r = take_node_away(cli, &mut mon, &mut hubs, launcher, hard_deadline).await?;
            rep.resume = Some(r);
            // Traffic goes on a little after everyone is back.
            mon.pump_for(Duration::from_secs(2)).await;
            pub_control.stop();
            pump_until_done(&mut mon, &task, hard_deadline).await;
            task.await??
        }
    };
    let mut published = published;
    if let Via::Nats {
        url,
        subject_prefix,
    } = &via
        && cli.scenario != Scenario::Idle
    {
        // The stream's own last message per topic is the truth about what
        // subscribers are owed; acks that timed out said nothing either way.
        match publisher::stored_counters(url, subject_prefix, &plan).await {
            Ok(stored) => published.last_counter = stored,
            Err(e) => rep
                .problems
                .push(format!("reading the stream's last counters: {e:#}")),
        }
    }
    if published.errors > 0 {
        rep.problems.push(format!(
            "publisher: {} errors (first: {})",
            published.errors,
            published.first_error.clone().unwrap_or_default()
        ));
    }
    let traffic_end_workers: Vec<Option<ProcSample>> =
        workers.pids.iter().map(|&p| procstat::sample(p)).collect();

    // Deliveries may lag far behind a saturated server: wait until they
    // stop coming (2 s without one), within the settle time.
    let settle_until = (Instant::now() + Duration::from_millis(cli.settle_ms)).min(hard_deadline);
    let mut last = (mon.totals().deliveries, Instant::now());
    while Instant::now() < settle_until && cli.scenario != Scenario::Idle {
        mon.pump_for(Duration::from_millis(250)).await;
        let d = mon.totals().deliveries;
        if d != last.0 {
            last = (d, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(2) {
            break;
        }
    }
    mon.note(format!(
        "{}: {} published ({} acked); deliveries settled, finishing",
        target.as_str(),
        published.sent,
        published.acked
    ));
    // Finish.
    workers
        .send(&Command::Finish {
            published: published.last_counter.clone(),
            settle_ms: cli.settle_ms.min(3_000),
        })
        .await;
    let finals_deadline =
        (Instant::now() + Duration::from_millis(cli.settle_ms) + Duration::from_secs(30))
            .min(hard_deadline + Duration::from_secs(30));
    if !mon.collect_finals(finals_deadline).await {
        let missing: Vec<usize> = (0..mon.finals.len())
            .filter(|&w| mon.finals[w].is_none())
            .collect();
        rep.problems
            .push(format!("no final report from worker(s) {missing:?}"));
    }
    let end = sample_all(&mon.watched);
    mon.bars.conns.finish();
    mon.bars.traffic.finish();
    let worker_pids = workers.pids.clone();
    workers.reap().await;

    // The report.
    fill_report(
        &mut rep,
        clients,
        &mon,
        &published,
        Samples {
            before,
            connected,
            traffic_start,
            end,
        },
        &worker_pids,
        (workers_connected, traffic_end_workers),
    );
    rep.duration_s = started.elapsed().as_secs_f64();
    drop(hubs);
    Ok(rep)
}

fn spawn_publisher(
    via: &Via,
    schedule: Schedule,
    control: &publisher::Control,
) -> tokio::task::JoinHandle<anyhow::Result<Published>> {
    let via = via.clone();
    let control = control.clone();
    tokio::spawn(async move { publisher::run(&via, &schedule, &control).await })
}

async fn pump_until_done<T>(
    mon: &mut Monitor,
    task: &tokio::task::JoinHandle<T>,
    hard_deadline: Instant,
) {
    while !task.is_finished() && Instant::now() < hard_deadline {
        mon.pump_for(Duration::from_millis(100)).await;
    }
}

/// Kills or drains the resume node, restarts it if asked, and waits until
/// every affected client is back.
async fn take_node_away(
    cli: &Cli,
    mon: &mut Monitor,
    hubs: &mut [HubNode],
    launcher: Option<&HubLauncher>,
    hard_deadline: Instant,
) -> anyhow::Result<ResumeReport> {
    let nodes = hubs.len().max(cli.hub_url.len()).max(1);
    let node = cli.resume_node;
    let affected = (0..cli.clients)
        .filter(|i| (*i as usize) % nodes == node)
        .count() as u64;
    let restart = cli.restart.unwrap_or(nodes == 1);
    let signal = match cli.resume_action {
        ResumeAction::Kill => Signal::SIGKILL,
        ResumeAction::Drain => Signal::SIGTERM,
    };
    let mut r = ResumeReport {
        action: format!("{:?}", cli.resume_action).to_lowercase(),
        node,
        affected,
        ..ResumeReport::default()
    };
    let base = mon.totals();
    let t0_us = now_us();
    let t0 = Instant::now();
    match hubs.get(node).and_then(|h| h.proc.as_ref()) {
        Some(p) => p.signal(signal)?,
        None => match cli.hub_pid.get(node) {
            Some(&pid) => nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)?,
            None => bail!("resume: no pid for hub node {node}"),
        },
    }
    mon.bars
        .traffic
        .set_message(format!("{} hub node {node}", r.action));
    let deadline = (t0 + Duration::from_secs(cli.resume_timeout_s)).min(hard_deadline);
    let mut restarted = false;
    loop {
        mon.pump_for(Duration::from_millis(100)).await;
        if restart
            && !restarted
            && let (Some(l), Some(h)) = (launcher, hubs.get_mut(node))
            && h.proc
                .as_mut()
                .is_none_or(|p| p.wait_exit(Duration::ZERO).is_some())
        {
            tokio::task::block_in_place(|| l.restart(h))?;
            restarted = true;
            if let Some(w) = mon
                .watched
                .iter_mut()
                .find(|w| w.name == format!("hub {node}"))
            {
                w.pid = h.pid().unwrap_or(0);
            }
        }
        let t = mon.totals();
        if t.resumed >= base.resumed + affected && t.away == 0 {
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    r.restarted = restarted;
    let t = mon.totals();
    r.resumed = t.resumed - base.resumed;
    r.still_away = t.away;
    if r.resumed >= affected && t.away == 0 && t.last_back_us > t0_us {
        r.all_back_ms = Some((t.last_back_us - t0_us) as f64 / 1000.0);
    }
    Ok(r)
}

struct Samples {
    before: Vec<Option<ProcSample>>,
    connected: Vec<Option<ProcSample>>,
    traffic_start: Option<Vec<Option<ProcSample>>>,
    end: Vec<Option<ProcSample>>,
}

fn merge(finals: &[&Final], pick: impl Fn(&Final) -> &crate::wire::HistBlob) -> Histogram<u64> {
    let mut h = new_hist();
    for f in finals {
        if let Ok(x) = pick(f).decode() {
            let _ = h.add(&x);
        }
    }
    h
}

fn add_map(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_insert(0) += v;
    }
}

fn fill_report(
    rep: &mut RunReport,
    clients: u64,
    mon: &Monitor,
    published: &Published,
    s: Samples,
    worker_pids: &[u32],
    (workers_connected, workers_end): (Vec<Option<ProcSample>>, Vec<Option<ProcSample>>),
) {
    let finals: Vec<&Final> = mon.finals.iter().flatten().collect();
    let latency = merge(&finals, |f| &f.latency);
    let mut c = ConnectReport {
        requested: clients,
        peak_open: mon.peak_open,
        handshake_us: Pcts::of(&merge(&finals, |f| &f.handshake)),
        ready_us: Pcts::of(&merge(&finals, |f| &f.ready)),
        connect_s: rep.connect.connect_s,
        ..ConnectReport::default()
    };
    for f in &finals {
        c.established += f.established;
        c.failed += f.failed;
        add_map(&mut c.failures, &f.failures);
        add_map(&mut rep.closes, &f.closes);
        add_map(&mut rep.errors, &f.errors);
        rep.churned += f.churned;
        rep.delivery.loss.add(&f.loss);
        rep.delivery.deliveries += f.deliveries;
        rep.delivery.replayed += f.replayed;
        rep.delivery.prev_mismatch += f.prev_mismatch;
        if let Some(r) = rep.resume.as_mut() {
            r.recovered += f.recovered;
            r.not_recovered += f.not_recovered;
        }
    }
    c.rate_per_s = if c.connect_s > 0.0 {
        mon.peak_open.min(c.requested) as f64 / c.connect_s
    } else {
        0.0
    };
    rep.connect = c;
    rep.subscribe.confirmed = mon.peak_subscribed;
    rep.subscribe.latency_us = Pcts::of(&merge(&finals, |f| &f.subscribe));
    if let Some(r) = rep.resume.as_mut() {
        r.latency_us = Pcts::of(&merge(&finals, |f| &f.resume));
    }
    let last_delivery = finals.iter().map(|f| f.last_delivery_us).max().unwrap_or(0);
    if published.started_us > 0 && last_delivery > published.started_us {
        rep.delivery.window_s = (last_delivery - published.started_us) as f64 / 1e6;
        rep.delivery.per_s = rep.delivery.deliveries as f64 / rep.delivery.window_s;
    }
    rep.delivery.latency_us = Pcts::of(&latency);
    rep.delivery.percentiles = percentile_curve(&latency);
    rep.publish = Some(published.clone());

    // Resources.
    let mut servers = Vec::new();
    let mut rss_growth_kib = 0i64;
    let mut measured_cpu = 0.0;
    let mut any_measured = false;
    for (i, w) in mon.watched.iter().enumerate() {
        let get = |v: &Vec<Option<ProcSample>>| v.get(i).copied().flatten().unwrap_or_default();
        let b = get(&s.before);
        let cn = get(&s.connected);
        let e = get(&s.end);
        let ts = s.traffic_start.as_ref().map(get);
        // A restarted node has a new pid: its CPU restarts from zero.
        let cpu_run = if e.cpu_s >= b.cpu_s {
            e.cpu_s - b.cpu_s
        } else {
            e.cpu_s
        };
        let cpu_traffic = ts.map_or(0.0, |t| {
            if e.cpu_s >= t.cpu_s {
                e.cpu_s - t.cpu_s
            } else {
                e.cpu_s
            }
        });
        if w.measured {
            any_measured = true;
            rss_growth_kib += cn.rss_kib as i64 - b.rss_kib as i64;
            measured_cpu += cpu_traffic;
        }
        servers.push(ProcUsage {
            role: w.role.clone(),
            name: w.name.clone(),
            pid: w.pid,
            rss_kib_before: b.rss_kib,
            rss_kib_connected: cn.rss_kib,
            rss_kib_end: e.rss_kib,
            hwm_kib: e.hwm_kib.max(cn.hwm_kib),
            cpu_s_run: cpu_run,
            cpu_s_traffic: cpu_traffic,
        });
    }
    let workers = ProcUsage {
        role: "workers".into(),
        name: format!("{} worker process(es)", worker_pids.len()),
        pid: 0,
        rss_kib_connected: workers_connected.iter().flatten().map(|p| p.rss_kib).sum(),
        rss_kib_end: workers_end.iter().flatten().map(|p| p.rss_kib).sum(),
        hwm_kib: workers_end.iter().flatten().map(|p| p.hwm_kib).sum(),
        cpu_s_run: workers_end.iter().flatten().map(|p| p.cpu_s).sum(),
        cpu_s_traffic: workers_end.iter().flatten().map(|p| p.cpu_s).sum::<f64>()
            - workers_connected
                .iter()
                .flatten()
                .map(|p| p.cpu_s)
                .sum::<f64>(),
        ..ProcUsage::default()
    };
    let open = mon.peak_open;
    rep.resources = ResourceReport {
        servers,
        workers,
        rss_per_conn_bytes: (any_measured && open > 0)
            .then(|| rss_growth_kib as f64 * 1024.0 / open as f64),
        cpu_us_per_delivery: (any_measured && rep.delivery.deliveries > 0)
            .then(|| measured_cpu * 1e6 / rep.delivery.deliveries as f64),
    };

    // Timeline.
    rep.timeline = mon
        .buckets
        .iter()
        .map(|(sec, (h, open))| TimelinePoint {
            t_s: *sec as f64,
            open: *open,
            deliveries: h.len(),
            p50_us: if h.is_empty() {
                0
            } else {
                h.value_at_quantile(0.5)
            },
            p99_us: if h.is_empty() {
                0
            } else {
                h.value_at_quantile(0.99)
            },
            max_us: if h.is_empty() { 0 } else { h.max() },
            server_rss_kib: mon.server_rss.get(sec).copied().unwrap_or(0),
        })
        .collect();

    if rep.delivery.loss.unaccounted > 0 {
        rep.problems.push(format!(
            "{} subscriptions received nothing and had no known starting point: their losses cannot be counted",
            rep.delivery.loss.unaccounted
        ));
    }
}
