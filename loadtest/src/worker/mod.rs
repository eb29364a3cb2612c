//! A worker process: its share of the clients, on one thread.
//!
//! The coordinator re-executes this binary as `tribune-loadtest worker`, so
//! that more connections than one process may hold files for (20,000) can
//! be opened, and so that clients use several cores. A worker runs a
//! single-threaded runtime; each client is one task (a few hundred bytes
//! plus its read buffer) that connects at its paced moment, subscribes,
//! accounts every message, and reconnects (resuming where the protocol
//! allows) after a close the run did not ask for.
//!
//! Layout: this file is the process (spec and commands on stdin, reports
//! on stdout, the paced start of the clients, churn); `shared`: what the
//! client tasks share; `stats`: the statistics and the reports made of
//! them; `client`: one client's state machine and the `Protocol` it
//! speaks; `tribune` and `natsws`: the two protocols.

mod client;
mod natsws;
mod shared;
mod stats;
mod tribune;

use std::cell::{Cell, RefCell};
use std::io::{BufRead, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use tokio::sync::Notify;
use tokio::time::{Instant as TokioInstant, sleep, sleep_until};

use self::client::client_task;
use self::natsws::NatsWs;
use self::shared::{Control, Shared, SlotCtl};
use self::stats::Stats;
use self::tribune::Tribune;
use crate::plan::TopicPlan;
use crate::wire::{Command, Target, WorkerReport, WorkerSpec};
use crate::ws::WsUrl;

/// Entry point of `tribune-loadtest worker`: spec and commands on stdin,
/// reports on stdout.
pub fn main() -> anyhow::Result<()> {
    crate::machine::raise_nofile();
    let stdin = std::io::stdin();
    let mut first = String::new();
    stdin
        .lock()
        .read_line(&mut first)
        .context("reading the worker spec")?;
    let spec: WorkerSpec = serde_json::from_str(&first).context("parsing the worker spec")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run(spec))
}

/// Prints one report line for the coordinator.
fn emit(report: &WorkerReport) {
    let line = serde_json::to_string(report).expect("reports serialize");
    let mut out = std::io::stdout().lock();
    // The coordinator gone means nobody reads: nothing useful to do then.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn run(spec: WorkerSpec) -> anyhow::Result<()> {
    let urls = spec
        .urls
        .iter()
        .map(|u| WsUrl::parse(u).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!urls.is_empty(), "no URL to connect to");
    let shared = Rc::new(Shared {
        plan: TopicPlan::new(&spec.topic_prefix, spec.topics, spec.zipf_s),
        urls,
        control: RefCell::new(Control::default()),
        stats: RefCell::new(Stats::new(&spec)),
        spec,
    });
    let spec = &shared.spec;
    let started = Instant::now();
    let max_life = Duration::from_millis(spec.max_life_ms);
    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::unbounded_channel::<Option<Command>>();
    // Commands arrive on a plain thread: stdin is blocking, and its end (the
    // coordinator gone) must also end the worker.
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Command>(&line) {
                Ok(cmd) => {
                    if cmd_tx.send(Some(cmd)).is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("worker: bad command '{line}': {e}"),
            }
        }
        let _ = cmd_tx.send(None);
    });

    let my_clients: Vec<u64> = (u64::from(spec.worker)..spec.clients)
        .step_by(spec.procs.max(1) as usize)
        .collect();
    shared.stats.borrow_mut().clients = my_clients.len() as u64;
    let slots: Rc<Vec<Rc<SlotCtl>>> = Rc::new(
        my_clients
            .iter()
            .map(|_| Rc::new(SlotCtl::default()))
            .collect(),
    );
    let done = Rc::new(Cell::new(0usize));
    let all_done = Rc::new(Notify::new());

    // Paced start of the clients.
    {
        let shared = shared.clone();
        let slots = slots.clone();
        let done = done.clone();
        let all_done = all_done.clone();
        let clients = my_clients.clone();
        tokio::task::spawn_local(async move {
            let start = TokioInstant::now();
            let rate = shared.spec.connect_rate.max(0.001);
            for (k, client) in clients.into_iter().enumerate() {
                if shared.control.borrow().finish.is_some() {
                    // Clients not started yet have nothing to report.
                    done.set(done.get() + 1);
                    continue;
                }
                // Sleep in short steps so that a finished run stops the
                // pacing at once.
                let at = start + Duration::from_secs_f64(k as f64 / rate);
                while TokioInstant::now() < at && shared.control.borrow().finish.is_none() {
                    sleep_until(at.min(TokioInstant::now() + Duration::from_millis(200))).await;
                }
                let shared = shared.clone();
                let ctl = slots[k].clone();
                let done = done.clone();
                let all_done = all_done.clone();
                tokio::task::spawn_local(async move {
                    match shared.spec.target {
                        Target::Tribune => client_task::<Tribune>(&shared, client, &ctl).await,
                        Target::NatsWs => client_task::<NatsWs>(&shared, client, &ctl).await,
                    }
                    done.set(done.get() + 1);
                    all_done.notify_one();
                });
            }
            all_done.notify_one();
        });
    }

    let mut ticker = tokio::time::interval(Duration::from_millis(spec.report_ms.max(50)));
    let mut churn: Option<tokio::time::Interval> = None;
    let mut finishing: Option<Instant> = None;
    loop {
        if done.get() >= my_clients.len() && finishing.is_some() {
            break;
        }
        if started.elapsed() > max_life {
            eprintln!(
                "worker {}: maximum life reached, reporting what it has",
                spec.worker
            );
            break;
        }
        if let Some(deadline) = finishing
            && Instant::now() > deadline
        {
            eprintln!("worker {}: clients did not finish in time", spec.worker);
            break;
        }
        tokio::select! {
            _ = ticker.tick() => {
                let p = shared.stats.borrow_mut().progress(spec.worker);
                emit(&WorkerReport::Progress(p));
            }
            cmd = cmd_rx.recv() => match cmd.flatten() {
                Some(Command::Subscribe { spread_ms }) => {
                    shared.control.borrow_mut().subscribe = Some((Instant::now(), spread_ms));
                    wake_all(&slots);
                }
                Some(Command::Churn { per_s }) if per_s > 0.0 => {
                    let mut iv = tokio::time::interval(Duration::from_secs_f64(1.0 / per_s));
                    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    iv.reset();
                    churn = Some(iv);
                }
                Some(Command::Churn { .. }) | Some(Command::StopChurn) => churn = None,
                Some(Command::Finish { published, settle_ms }) => {
                    let deadline = Instant::now() + Duration::from_millis(settle_ms);
                    shared.control.borrow_mut().finish = Some((Arc::new(published), deadline));
                    finishing = Some(deadline + Duration::from_secs(5));
                    churn = None;
                    wake_all(&slots);
                }
                None => {
                    if finishing.is_none() {
                        // The coordinator went away: stop now.
                        eprintln!("worker {}: coordinator gone", spec.worker);
                        return Ok(());
                    }
                }
            },
            _ = async { churn.as_mut().expect("guarded").tick().await }, if churn.is_some() => {
                if !slots.is_empty() {
                    let k = rand::rng().random_range(0..slots.len());
                    slots[k].churn.set(true);
                    slots[k].notify.notify_one();
                }
            }
            _ = all_done.notified() => {}
            _ = sleep(Duration::from_millis(200)) => {}
        }
    }
    let f = shared.stats.borrow_mut().final_report(spec.worker);
    emit(&WorkerReport::Final(Box::new(f)));
    Ok(())
}

fn wake_all(slots: &[Rc<SlotCtl>]) {
    for s in slots {
        s.notify.notify_one();
    }
}
