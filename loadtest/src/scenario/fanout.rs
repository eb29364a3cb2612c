//! `fanout` (every client on one topic) and `topics` (each client on K of T
//! topics by Zipf popularity): publication at `--rate` for `--duration-s`,
//! every client subscribed from its connection on. The two differ only in
//! the topic plan, which the command line sets.

use std::time::Duration;

use super::{Scenario, Traffic};
use crate::publisher::Published;

pub struct Fanout;

impl Scenario for Fanout {
    async fn traffic(&self, t: &mut Traffic<'_>) -> anyhow::Result<Published> {
        let task = t.publish_for(Duration::from_secs_f64(t.cli.duration_s));
        t.published(task).await
    }
}
