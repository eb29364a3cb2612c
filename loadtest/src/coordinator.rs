//! The coordinator: starts the servers, runs the scenario against each
//! target in turn, and builds the report.
//!
//! Phases of one target's run (scenarios in `scenario/` other than
//! `reactions`): servers up and sampled (RSS, CPU) → workers connect their
//! clients at the paced rate (and subscribe, as the scenario says) → hold,
//! memory sampled → the scenario's traffic (publication, storm order,
//! churn, a node killed or drained) → `Finish` with the last counter of
//! every topic → workers settle and send their final statistics → servers
//! sampled again. Every wait has a deadline; nothing here loops without
//! bound.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;
use tribune_harness::hub::Hub;

use crate::cli::{self, Bus, Cli, PublishVia};
use crate::fleet::Fleet;
use crate::machine::{self, Machine};
use crate::monitor::{self, Bars, Monitor, Watched};
use crate::payload::now_us;
use crate::plan::{TopicPlan, run_token};
use crate::publisher::{self, Published, Via};
use crate::report::{Report, RunReport};
use crate::results::{Samples, fill_report};
use crate::scenario::churn::Churn;
use crate::scenario::fanout::Fanout;
use crate::scenario::idle::Idle;
use crate::scenario::resume::Resume;
use crate::scenario::storm::Storm;
use crate::scenario::{Scenario, Traffic, bandwidth, reactions, regions};
use crate::servers::{HubLauncher, Nats};
use crate::wire::{Command, SubscribeWhen, Target, WorkerSpec};

/// Runs every target of the command line; returns the report and the
/// directory it was written to.
pub async fn run(cli: Cli) -> anyhow::Result<(Report, PathBuf)> {
    cli.validate().map_err(anyhow::Error::msg)?;
    machine::raise_nofile();
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
    let nats = Nats::for_run(&cli, &run_dir, &mut versions).await?;
    let launcher = HubLauncher::for_run(&cli, &run_dir, nats.as_ref(), &mut versions)?;

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
    for target in cli.targets() {
        eprintln!("== {} against {}", cli.scenario.as_str(), target.as_str());
        let servers = TargetServers {
            target,
            nats: nats.as_ref(),
            launcher: launcher.as_ref(),
            run_dir: &run_dir,
        };
        let r = match cli.scenario {
            cli::Scenario::Idle => run_target(&Idle, &cli, servers, hard_deadline).await?,
            cli::Scenario::Fanout | cli::Scenario::Topics => {
                run_target(&Fanout, &cli, servers, hard_deadline).await?
            }
            cli::Scenario::Storm => run_target(&Storm, &cli, servers, hard_deadline).await?,
            cli::Scenario::Churn => run_target(&Churn, &cli, servers, hard_deadline).await?,
            cli::Scenario::Resume => run_target(&Resume, &cli, servers, hard_deadline).await?,
            cli::Scenario::Reactions => {
                reactions::run_target(&cli, launcher.as_ref(), hard_deadline).await?
            }
            cli::Scenario::Bandwidth => {
                bandwidth::run_target(&cli, target, &run_dir, hard_deadline).await?
            }
            cli::Scenario::Regions => {
                regions::run_target(&cli, target, &run_dir, hard_deadline).await?
            }
        };
        report.runs.push(r);
    }
    report.compare();
    Ok((report, run_dir))
}

/// What one target's run starts from.
struct TargetServers<'a> {
    target: Target,
    nats: Option<&'a Nats>,
    launcher: Option<&'a HubLauncher>,
    run_dir: &'a Path,
}

/// The servers clients connect to in one target's run.
struct Started {
    /// Websocket URLs, one per node.
    urls: Vec<String>,
    /// The hub nodes started for this run (none when given by URL).
    hubs: Vec<Hub>,
    /// Processes sampled for RSS and CPU.
    watched: Vec<Watched>,
}

/// Starts (or finds) the target's servers: hub nodes for `tribune`,
/// nats-server's websocket listener for `nats-ws`.
async fn start_servers(cli: &Cli, s: &TargetServers<'_>) -> anyhow::Result<Started> {
    let mut hubs: Vec<Hub> = Vec::new();
    let mut watched: Vec<Watched> = Vec::new();
    let hub = |i: usize, pid: u32| Watched {
        role: "hub".into(),
        name: format!("hub {i}"),
        pid,
        measured: true,
    };
    let urls: Vec<String> = match s.target {
        Target::Tribune if !cli.hub_url.is_empty() => {
            for (i, pid) in cli.hub_pid.iter().enumerate() {
                watched.push(hub(i, *pid));
            }
            cli.hub_url.clone()
        }
        Target::Tribune => {
            let l = s.launcher.context("no hub launcher")?;
            for i in 0..cli.hubs {
                let node = l.start(i).await?;
                watched.push(hub(i, node.pid().unwrap_or(0)));
                hubs.push(node);
            }
            hubs.iter().map(Hub::ws_url).collect()
        }
        Target::NatsWs => {
            let n = s.nats.context("no nats-server")?;
            let ws = n.ws_url.clone().context(
                "--target nats-ws needs the server's websocket listener (--nats-ws-url)",
            )?;
            vec![ws]
        }
    };
    if let Some(n) = s.nats
        && let Some(pid) = n.pid
        && (s.target == Target::NatsWs || cli.bus == Bus::Nats)
    {
        watched.push(Watched {
            role: "nats-server".into(),
            name: if s.target == Target::NatsWs {
                "nats-server (websocket listener)".into()
            } else {
                "nats-server (bus)".into()
            },
            pid,
            measured: s.target == Target::NatsWs,
        });
    }
    Ok(Started {
        urls,
        hubs,
        watched,
    })
}

/// Where publications enter: JetStream (the stream made sure of) or the
/// first hub's `POST /v1/publish`.
async fn publish_via(cli: &Cli, nats: Option<&Nats>, hubs: &[Hub]) -> anyhow::Result<Via> {
    if cli.publish_via() == PublishVia::Nats
        && let Some(n) = nats
    {
        publisher::ensure_stream(&n.url, "tribune").await?;
    }
    Ok(match cli.publish_via() {
        PublishVia::Nats => Via::Nats {
            url: nats
                .context("publishing through NATS needs a nats-server")?
                .url
                .clone(),
            subject_prefix: "tribune.fan.".into(),
        },
        PublishVia::Http => match hubs.first() {
            Some(h) => Via::Http {
                base: h.internal_url(),
                key: Some(h.publish_key().to_string()),
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
    })
}

/// Loopback source addresses from 127.0.0.2 on, so that ephemeral ports
/// never run out.
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

/// One spec per worker process.
fn worker_specs(
    scenario: &impl Scenario,
    cli: &Cli,
    target: Target,
    urls: &[String],
    plan: &TopicPlan,
    hard_deadline: Instant,
) -> Vec<WorkerSpec> {
    let procs = cli.procs;
    (0..procs)
        .map(|w| WorkerSpec {
            worker: w,
            procs,
            target,
            urls: urls.to_vec(),
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
            subscribe: scenario.subscribe(),
            history: scenario.history(target),
            baseline_zero: scenario.baseline_zero(),
            read_buf: cli.read_buf,
            reconnect: true,
            drop_one: cli.test_drop_one,
            dup_one: cli.test_dup_one,
            max_life_ms: hard_deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u64,
            report_ms: 500,
        })
        .collect()
}

/// Runs a worker-driven scenario against one target.
async fn run_target(
    scenario: &impl Scenario,
    cli: &Cli,
    servers: TargetServers<'_>,
    hard_deadline: Instant,
) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let target = servers.target;
    let mut rep = RunReport {
        target: Some(target),
        topics: cli.topics(),
        per_client: cli.per_client(),
        ..RunReport::default()
    };
    let plan = TopicPlan::new(&format!("clips.{}", run_token()), cli.topics(), cli.zipf);

    // Servers.
    if target == Target::Tribune {
        rep.bus = Some(
            match cli.bus {
                Bus::Nats => "nats",
                Bus::Embedded => "embedded",
            }
            .to_string(),
        );
    }
    let Started {
        urls,
        mut hubs,
        watched,
    } = start_servers(cli, &servers).await?;
    let via = publish_via(cli, servers.nats, &hubs).await?;
    rep.urls = urls.clone();

    // Workers.
    let specs = worker_specs(scenario, cli, target, &urls, &plan, hard_deadline);
    let (tx, rx) = mpsc::unbounded_channel();
    let t0_us = now_us();
    let before = monitor::read(&watched);
    let mut fleet = Fleet::spawn(specs, servers.run_dir, tx).await?;
    let visible = !cli.no_progress && std::io::stderr().is_terminal();
    let bars = Bars::new(cli.clients, target, visible);
    let mut mon = Monitor::new(rx, cli.procs, t0_us, watched, bars);

    // Connect (and subscribe).
    let clients = cli.clients;
    let subscribe = scenario.subscribe();
    let expected_subs = if subscribe == SubscribeWhen::Never {
        0
    } else {
        clients * u64::from(cli.per_client())
    };
    rep.subscribe.expected = expected_subs;
    connect(cli, target, subscribe, &mut mon, &mut rep, hard_deadline).await;

    // Hold, then read memory with every client in place.
    mon.pump_for(scenario.hold(cli)).await;
    let connected = mon.read_servers();
    let workers_connected = fleet.sample();

    // Traffic: the scenario's own part.
    if scenario.publishes() {
        mon.note(format!(
            "{}: publishing {:.0} msgs/s of {} B over {} topic(s)",
            target.as_str(),
            cli.rate,
            cli.payload_size,
            plan.count
        ));
    }
    let mut traffic = Traffic::new(
        cli,
        &mut mon,
        &mut fleet,
        &mut hubs,
        &mut rep,
        expected_subs,
        hard_deadline,
        &via,
        &plan,
    );
    let mut published = scenario.traffic(&mut traffic).await?;
    let traffic_start = traffic.started();
    if let Via::Nats {
        url,
        subject_prefix,
    } = &via
        && scenario.publishes()
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
    let traffic_end_workers = fleet.sample();
    if scenario.publishes() {
        settle(cli, &mut mon, hard_deadline).await;
    }
    mon.note(format!(
        "{}: {} published ({} acked); deliveries settled, finishing",
        target.as_str(),
        published.sent,
        published.acked
    ));

    // Finish.
    finish(
        cli,
        &published,
        &mut fleet,
        &mut mon,
        &mut rep,
        hard_deadline,
    )
    .await;
    let end = mon.read_servers();
    mon.bars.conns.finish();
    mon.bars.traffic.finish();
    let worker_pids = fleet.pids.clone();
    fleet.reap().await;

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

/// Waits until every client is connected (and subscribed, if it does so on
/// connecting), within `--connect-timeout-s`; records how long it took.
async fn connect(
    cli: &Cli,
    target: Target,
    subscribe: SubscribeWhen,
    mon: &mut Monitor,
    rep: &mut RunReport,
    hard_deadline: Instant,
) {
    let clients = cli.clients;
    let connect_deadline =
        (Instant::now() + Duration::from_secs(cli.connect_timeout_s)).min(hard_deadline);
    let t_connect = Instant::now();
    let need_subs = if subscribe == SubscribeWhen::OnConnect {
        rep.subscribe.expected
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
}

/// Deliveries may lag far behind a saturated server: waits until they stop
/// coming (2 s without one), within the settle time.
async fn settle(cli: &Cli, mon: &mut Monitor, hard_deadline: Instant) {
    let settle_until = (Instant::now() + Duration::from_millis(cli.settle_ms)).min(hard_deadline);
    let mut last = (mon.totals().deliveries, Instant::now());
    while Instant::now() < settle_until {
        mon.pump_for(Duration::from_millis(250)).await;
        let d = mon.totals().deliveries;
        if d != last.0 {
            last = (d, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(2) {
            break;
        }
    }
}

/// Tells the workers the last counter of every topic and waits for their
/// final reports.
async fn finish(
    cli: &Cli,
    published: &Published,
    fleet: &mut Fleet,
    mon: &mut Monitor,
    rep: &mut RunReport,
    hard_deadline: Instant,
) {
    fleet
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
}
