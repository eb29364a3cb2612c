//! `churn`: while messages flow for `--duration-s`, clients close and fresh
//! ones take their place at `--churn-rate` per second, all workers together.

use std::time::Duration;

use super::{Scenario, Traffic};
use crate::publisher::Published;
use crate::wire::{Command, Target};

pub struct Churn;

impl Scenario for Churn {
    /// A replayed latest message gives a fresh client its baseline.
    fn history(&self, target: Target) -> Option<u32> {
        (target == Target::Tribune).then_some(1)
    }

    async fn traffic(&self, t: &mut Traffic<'_>) -> anyhow::Result<Published> {
        let task = t.publish_for(Duration::from_secs_f64(t.cli.duration_s));
        let per_s = t.cli.churn_rate / f64::from(t.cli.procs);
        t.fleet.send(&Command::Churn { per_s }).await;
        let published = t.published(task).await;
        t.fleet.send(&Command::StopChurn).await;
        published
    }
}
