//! `resume`: with messages flowing, after `--resume-after-s` a hub node is
//! killed (SIGKILL) or drained (SIGTERM), and restarted if asked; its
//! clients reconnect elsewhere or to it and resume with `since`. Measured:
//! the time until every affected client is back, and that nothing was lost.

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
        t.rep.resume = Some(take_node_away(t).await?);
        // Traffic goes on a little after everyone is back.
        t.mon.pump_for(Duration::from_secs(2)).await;
        t.stop_publishing();
        t.published(task).await
    }
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
