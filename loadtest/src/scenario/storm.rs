//! `storm`: every client is connected first; then, with publication going
//! on, the coordinator orders everyone to subscribe to the one topic within
//! `--storm-spread-s`, and times until every subscription is confirmed.

use std::time::{Duration, Instant};

use super::{Scenario, Traffic};
use crate::publisher::Published;
use crate::wire::{Command, SubscribeWhen, Target};

pub struct Storm;

impl Scenario for Storm {
    fn subscribe(&self) -> SubscribeWhen {
        SubscribeWhen::OnCommand
    }

    /// A replayed latest message gives late subscribers their baseline.
    fn history(&self, target: Target) -> Option<u32> {
        (target == Target::Tribune).then_some(1)
    }

    /// Subscriptions arrive while messages flow: what came before is not
    /// owed.
    fn baseline_zero(&self) -> bool {
        false
    }

    async fn traffic(&self, t: &mut Traffic<'_>) -> anyhow::Result<Published> {
        let spread = Duration::from_secs_f64(t.cli.storm_spread_s);
        let duration =
            Duration::from_secs_f64(t.cli.duration_s).max(spread + Duration::from_secs(3));
        let task = t.publish_for(duration);
        t.mon.pump_for(Duration::from_secs(1)).await;
        let t_order = Instant::now();
        t.fleet
            .send(&Command::Subscribe {
                spread_ms: spread.as_millis() as u64,
            })
            .await;
        let expected = t.expected_subs;
        let all = t
            .mon
            .wait_for(
                (t_order + spread + Duration::from_secs(60)).min(t.hard_deadline),
                |totals| totals.subscribed >= expected,
            )
            .await;
        if all {
            t.rep.subscribe.all_confirmed_s = Some(t_order.elapsed().as_secs_f64());
        } else {
            t.rep.problems.push(format!(
                "storm: only {} of {expected} subscriptions confirmed",
                t.mon.totals().subscribed
            ));
        }
        t.published(task).await
    }
}
