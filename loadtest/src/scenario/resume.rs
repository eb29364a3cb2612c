//! `resume`: with messages flowing, after `--resume-after-s` a hub node is
//! killed (SIGKILL) or drained (SIGTERM), and restarted if asked; its
//! clients reconnect elsewhere or to it and resume with `since`. Measured:
//! the time until every affected client is back, and that nothing was lost;
//! and the memory of the node that took them back (the restarted one): its
//! RSS per connection before the node went away (idle), at its peak during
//! the storm, and 30 s after everyone was back (`takeover memory` line).

use std::time::{Duration, Instant};

use anyhow::bail;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Scenario, Traffic};
use crate::cli::ResumeAction;
use crate::payload::now_us;
use crate::publisher::Published;
use crate::report::ResumeReport;

pub struct Resume;

/// How long a restarted node is watched after the storm, traffic flowing.
const AFTER_STORM: Duration = Duration::from_secs(30);

impl Scenario for Resume {
    async fn traffic(&self, t: &mut Traffic<'_>) -> anyhow::Result<Published> {
        // Publication outlasts the longest wait for everyone to be back;
        // it is stopped once they are.
        let long = Duration::from_secs_f64(t.cli.resume_after_s)
            + Duration::from_secs(t.cli.resume_timeout_s + 30);
        let task = t.publish_for(long);
        t.mon
            .pump_for(Duration::from_secs_f64(t.cli.resume_after_s))
            .await;
        let idle_kib = resume_node_rss(t);
        let away = Instant::now();
        let r = take_node_away(t).await?;
        let back = Instant::now();
        let restarted = r.restarted;
        t.rep.resume = Some(r);
        if restarted {
            // Traffic goes on while the node that took the storm settles.
            t.mon.pump_for(AFTER_STORM).await;
            takeover_memory(t, idle_kib, away, back);
        } else {
            // Traffic goes on a little after everyone is back.
            t.mon.pump_for(Duration::from_secs(2)).await;
        }
        t.stop_publishing();
        t.published(task).await
    }
}

/// The resume node's latest RSS reading (KiB).
fn resume_node_rss(t: &Traffic<'_>) -> Option<u64> {
    let name = format!("hub {}", t.cli.resume_node);
    t.mon.node_rss.get(&name)?.last().map(|(_, kib)| *kib)
}

/// Says the restarted node's RSS per connection: before it went away, its
/// peak while its clients came back, and at the end of [`AFTER_STORM`]
/// (each its RSS over the clients it serves: its share of `-n`).
fn takeover_memory(t: &Traffic<'_>, idle_kib: Option<u64>, away: Instant, back: Instant) {
    let nodes = t.hubs.len().max(t.cli.hub_url.len()).max(1) as u64;
    let conns = (0..t.cli.clients)
        .filter(|i| i % nodes == t.cli.resume_node as u64)
        .count()
        .max(1) as f64;
    let name = format!("hub {}", t.cli.resume_node);
    let Some(series) = t.mon.node_rss.get(&name) else {
        return;
    };
    let peak = series
        .iter()
        .filter(|(at, _)| *at >= away && *at <= back + Duration::from_secs(2))
        .map(|(_, kib)| *kib)
        .max();
    let after = series.last().map(|(_, kib)| *kib);
    let per = |kib: Option<u64>| kib.map(|k| k as f64 * 1024.0 / conns);
    let (idle, peak, after) = (per(idle_kib), per(peak), per(after));
    let ratio = |x: Option<f64>| match (x, idle) {
        (Some(x), Some(i)) if i > 0.0 => format!("{:.2}×", x / i),
        _ => "–".into(),
    };
    let b = |x: Option<f64>| x.map_or("–".into(), |x| format!("{x:.0} B"));
    t.mon.note(format!(
        "takeover memory ({name}, {conns:.0} connections): idle {} per connection; peak during the storm {} ({} idle); {} s after {} ({} idle)",
        b(idle),
        b(peak),
        ratio(peak),
        AFTER_STORM.as_secs(),
        b(after),
        ratio(after),
    ));
}

/// Kills or drains the resume node, restarts it if asked, and waits until
/// every affected client is back.
async fn take_node_away(t: &mut Traffic<'_>) -> anyhow::Result<ResumeReport> {
    let (cli, hard_deadline) = (t.cli, t.hard_deadline);
    let mon = &mut *t.mon;
    let hubs = &mut *t.hubs;
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
    match hubs.get(node) {
        Some(h) => h.signal(signal)?,
        None => match cli.hub_pid.get(node) {
            Some(&pid) => kill(Pid::from_raw(pid as i32), signal)?,
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
            && let Some(h) = hubs.get_mut(node)
            && h.has_exited()
        {
            h.try_restart().await?;
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
