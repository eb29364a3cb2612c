//! `idle`: clients connect and hold their connections for `--hold-s`;
//! nothing is subscribed or published. What it measures is memory per
//! connection.

use std::time::Duration;

use super::{Scenario, Traffic};
use crate::cli::Cli;
use crate::publisher::Published;
use crate::wire::SubscribeWhen;

pub struct Idle;

impl Scenario for Idle {
    fn subscribe(&self) -> SubscribeWhen {
        SubscribeWhen::Never
    }

    fn hold(&self, cli: &Cli) -> Duration {
        Duration::from_secs_f64(cli.hold_s)
    }

    fn publishes(&self) -> bool {
        false
    }

    async fn traffic(&self, t: &mut Traffic<'_>) -> anyhow::Result<Published> {
        Ok(Published {
            last_counter: vec![0; t.topics() as usize],
            ..Published::default()
        })
    }
}
