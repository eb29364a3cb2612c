//! `resume`: with messages flowing, after `--resume-after-s` a hub node is
//! killed (SIGKILL) or drained (SIGTERM), and restarted if asked; its
//! clients reconnect elsewhere or to it and resume with `since`. Measured:
//! the time until every affected client is back, and that nothing was lost;
//! and the memory of the node that took them back (the restarted one, or
//! the next when the clients found it first): its RSS per connection before
//! the node went away, at its peak during the storm, and 30 s after
//! everyone was back (the `takeover memory` line).

use std::collections::BTreeMap;
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
        let rss_before = nodes_rss(t);
        let mut conns_before = Vec::new();
        for h in t.hubs.iter() {
            conns_before.push(h.metric("tribune_connections").await);
        }
        let away = Instant::now();
        let r = take_node_away(t).await?;
        let back = Instant::now();
        let restarted = r.restarted;
        t.rep.resume = Some(r);
        if restarted {
            // Traffic goes on while the node that took the storm settles.
            t.mon.pump_for(AFTER_STORM).await;
            takeover_memory(t, &rss_before, &conns_before, away, back).await;
        } else {
            // Traffic goes on a little after everyone is back.
            t.mon.pump_for(Duration::from_secs(2)).await;
        }
        t.stop_publishing();
        t.published(task).await
    }
}

/// Every node's latest RSS reading (KiB), by name.
fn nodes_rss(t: &Traffic<'_>) -> BTreeMap<String, u64> {
    t.mon
        .node_rss
        .iter()
        .filter_map(|(name, series)| Some((name.clone(), series.last()?.1)))
        .collect()
}

/// Says the memory of the node that took the storm (the one with the most
/// connections afterwards: the restarted node, or the next one when the
/// clients found it first): its RSS per connection before the node went
/// away, at its peak while the clients came back, and at the end of
/// [`AFTER_STORM`]; each over that node's connections at the time
/// (`tribune_connections` before, and after the storm).
async fn takeover_memory(
    t: &Traffic<'_>,
    before: &BTreeMap<String, u64>,
    conns_before: &[f64],
    away: Instant,
    back: Instant,
) {
    let mut conns_after = Vec::new();
    for h in t.hubs.iter() {
        conns_after.push(h.metric("tribune_connections").await);
    }
    let Some((i, &conns)) = conns_after
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
    else {
        return;
    };
    let name = format!("hub {i}");
    let Some(series) = t.mon.node_rss.get(&name) else {
        return;
    };
    let kib = |k: u64| k as f64 * 1024.0;
    let idle = before
        .get(&name)
        .zip(conns_before.get(i))
        .filter(|(_, c)| **c > 0.0)
        .map(|(k, c)| kib(*k) / c);
    let peak = series
        .iter()
        .filter(|(at, _)| *at >= away && *at <= back + Duration::from_secs(2))
        .map(|(_, k)| *k)
        .max()
        .map(|k| kib(k) / conns.max(1.0));
    let after = series.last().map(|(_, k)| kib(*k) / conns.max(1.0));
    let ratio = |x: Option<f64>| match (x, idle) {
        (Some(x), Some(i)) if i > 0.0 => format!("{:.2}×", x / i),
        _ => "–".into(),
    };
    let b = |x: Option<f64>| x.map_or("–".into(), |x| format!("{x:.0} B"));
    t.mon.note(format!(
        "takeover memory ({name} took the storm: {:.0} connections before, {conns:.0} after):          {} per connection before; peak during the storm {} ({} before); {} s after {} ({} before)",
        conns_before.get(i).copied().unwrap_or(0.0),
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
