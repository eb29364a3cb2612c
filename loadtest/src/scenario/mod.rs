//! The scenarios a run can drive, each in its own module, and what the
//! coordinator asks of them.
//!
//! Every scenario but `reactions` runs its clients in worker processes and
//! shares the coordinator's phases: servers up and sampled → clients
//! connect (and subscribe) → hold → **traffic** → finish and settle →
//! report. A scenario states how its clients subscribe and what they are
//! owed (the [`Scenario`] trait's answers, read when the workers are
//! specified) and runs its own traffic phase through [`Traffic`]:
//!
//! - [`idle`]: clients only hold their connections; nothing is published.
//! - [`fanout`]: publication for `--duration-s` (also `topics`, whose
//!   difference is only in the topic plan).
//! - [`storm`]: everyone subscribes at the coordinator's order, within
//!   `--storm-spread-s`.
//! - [`churn`]: clients leave and new ones arrive while messages flow.
//! - [`resume`]: a hub node is killed or drained; everyone must come back.
//!
//! [`reactions`] is a run of its own: its clients live in the
//! coordinator's process and send reactions rather than count messages.
//! So is [`bandwidth`]: one generated hour of an event replayed to fans
//! with and without deltas and deflate, bytes on the wire counted. And
//! [`regions`]: two regions (a stream and its mirror), a hub in each,
//! publish→screen latency per region.

pub mod bandwidth;
pub mod churn;
pub mod fanout;
pub mod idle;
pub mod reactions;
pub mod regions;
pub mod resume;
pub mod storm;

use std::time::{Duration, Instant};

use tribune_harness::hub::Hub;
use tribune_harness::procstat::ProcSample;

use crate::cli::Cli;
use crate::fleet::Fleet;
use crate::monitor::Monitor;
use crate::plan::TopicPlan;
use crate::publisher::{self, Published, Schedule, Via};
use crate::report::RunReport;
use crate::wire::{SubscribeWhen, Target};

/// What one worker-driven scenario decides; the coordinator does the rest.
pub trait Scenario {
    /// When clients subscribe.
    fn subscribe(&self) -> SubscribeWhen {
        SubscribeWhen::OnConnect
    }

    /// Messages a hub subscription asks to be replayed.
    fn history(&self, _target: Target) -> Option<u32> {
        None
    }

    /// Whether a subscription confirmed before the first publication is
    /// owed every counter from the first (otherwise its first message sets
    /// its starting point).
    fn baseline_zero(&self) -> bool {
        true
    }

    /// How long every client stays connected before memory is read.
    fn hold(&self, _cli: &Cli) -> Duration {
        Duration::from_millis(500)
    }

    /// Whether messages flow: if not, there is nothing to settle or to
    /// read back from the stream.
    fn publishes(&self) -> bool {
        true
    }

    /// The traffic phase, every client connected; returns what was
    /// published.
    async fn traffic(&self, t: &mut Traffic<'_>) -> anyhow::Result<Published>;
}

/// What a scenario's traffic phase works with.
pub struct Traffic<'a> {
    pub cli: &'a Cli,
    /// Worker reports and server samples: pump it while waiting.
    pub mon: &'a mut Monitor,
    /// The worker processes, to send them orders.
    pub fleet: &'a mut Fleet,
    /// The hub nodes this run started (empty when given by URL).
    pub hubs: &'a mut [Hub],
    pub rep: &'a mut RunReport,
    /// Subscriptions the clients ask for, all together.
    pub expected_subs: u64,
    /// No wait goes past this.
    pub hard_deadline: Instant,
    via: &'a Via,
    plan: &'a TopicPlan,
    control: publisher::Control,
    /// Server readings when traffic began.
    started: Option<Vec<Option<ProcSample>>>,
}

impl<'a> Traffic<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cli: &'a Cli,
        mon: &'a mut Monitor,
        fleet: &'a mut Fleet,
        hubs: &'a mut [Hub],
        rep: &'a mut RunReport,
        expected_subs: u64,
        hard_deadline: Instant,
        via: &'a Via,
        plan: &'a TopicPlan,
    ) -> Traffic<'a> {
        Traffic {
            cli,
            mon,
            fleet,
            hubs,
            rep,
            expected_subs,
            hard_deadline,
            via,
            plan,
            control: publisher::Control::default(),
            started: None,
        }
    }

    /// Topics of the run's plan.
    pub fn topics(&self) -> u32 {
        self.plan.count
    }

    /// Traffic begins: servers are read (their CPU counts for traffic from
    /// here) and the publisher starts at `--rate` for `duration`.
    pub fn publish_for(
        &mut self,
        duration: Duration,
    ) -> tokio::task::JoinHandle<anyhow::Result<Published>> {
        self.started = Some(self.mon.read_servers());
        let schedule = Schedule {
            plan: self.plan.clone(),
            rate: self.cli.rate,
            duration,
            payload_size: self.cli.payload_size,
        };
        let via = self.via.clone();
        let control = self.control.clone();
        tokio::spawn(async move { publisher::run(&via, &schedule, &control).await })
    }

    /// Ends the publication early.
    pub fn stop_publishing(&self) {
        self.control.stop();
    }

    /// Processes reports until the publisher is done (or the deadline);
    /// what it published.
    pub async fn published(
        &mut self,
        task: tokio::task::JoinHandle<anyhow::Result<Published>>,
    ) -> anyhow::Result<Published> {
        while !task.is_finished() && Instant::now() < self.hard_deadline {
            self.mon.pump_for(Duration::from_millis(100)).await;
        }
        task.await?
    }

    /// Server readings when traffic began (none if it never did).
    pub fn started(self) -> Option<Vec<Option<ProcSample>>> {
        self.started
    }
}
