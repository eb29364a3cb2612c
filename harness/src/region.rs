//! Two "regions" on loopback, as `docs/ARCHITECTURE.md` ("Regions") lays
//! them out: region A's nats-server holds the stream, region B's holds a
//! mirror of it; each server is its own JetStream domain (`A`, `B`), and B
//! joins A as a leaf node, so that core NATS subjects (editors' publications,
//! statistics partials, control messages) cross between them and B's mirror
//! reads A's stream through `$JS.A.API`. Each server can be killed and
//! restarted on its ports and store, as a lost region and its return. The
//! link between them may have a latency ([`DelayProxy`]).

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::delay::DelayProxy;
use crate::nats::{NatsOptions, NatsServer, free_ports};

/// How long B may take to (re)join A as a leaf node.
const LINKED_WITHIN: Duration = Duration::from_secs(15);

/// Starts tried on fresh leaf ports before giving up.
const ATTEMPTS: usize = 3;

/// Region A (origin, domain `A`) and region B (domain `B`, a leaf node of A).
#[derive(Debug)]
pub struct Regions {
    pub a: NatsServer,
    pub b: NatsServer,
    /// Region A's leaf node port, which B connects to.
    leaf_port: u16,
    /// Between B and A's leaf port when the link has a latency.
    _link: Option<DelayProxy>,
}

impl Regions {
    /// Both regions, B linked to A; panics with the logs when they cannot start.
    pub async fn start() -> Regions {
        Self::try_start(&NatsOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Both regions from `base` (binary, folders), B linked to A.
    pub async fn try_start(base: &NatsOptions) -> anyhow::Result<Regions> {
        Self::try_start_with_latency(base, Duration::ZERO).await
    }

    /// Both regions, B linked to A through a [`DelayProxy`] adding
    /// `one_way` in each direction when it is not zero.
    pub async fn try_start_with_latency(
        base: &NatsOptions,
        one_way: Duration,
    ) -> anyhow::Result<Regions> {
        Self::try_start_each(base, base, one_way).await
    }

    /// Region A from `a_opts`, region B from `b_opts` (their `extra_config` and
    /// `env` kept: users and permissions, say), B linked to A through a
    /// [`DelayProxy`] adding `one_way` in each direction when it is not zero.
    pub async fn try_start_each(
        a_opts: &NatsOptions,
        b_opts: &NatsOptions,
        one_way: Duration,
    ) -> anyhow::Result<Regions> {
        let with = |opts: &NatsOptions, domain: &str, block: String| NatsOptions {
            jetstream_domain: Some(domain.into()),
            extra_config: Some(match &opts.extra_config {
                Some(extra) => format!("{extra}\n{block}"),
                None => block,
            }),
            ..opts.clone()
        };
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let leaf = free_ports(1)?[0];
            let a = NatsServer::try_start(&with(
                a_opts,
                "A",
                format!("leafnodes {{\n  listen: \"127.0.0.1:{leaf}\"\n}}"),
            ))
            .await?;
            if a.log().contains("address already in use") {
                continue;
            }
            let link = if one_way.is_zero() {
                None
            } else {
                Some(DelayProxy::start(([127, 0, 0, 1], leaf).into(), one_way).await?)
            };
            let remote = link.as_ref().map_or(leaf, DelayProxy::port);
            let b = NatsServer::try_start(&with(
                b_opts,
                "B",
                format!(
                    "leafnodes {{\n  remotes: [{{url: \"nats-leaf://127.0.0.1:{remote}\"}}]\n}}"
                ),
            ))
            .await?;
            let regions = Regions {
                a,
                b,
                leaf_port: leaf,
                _link: link,
            };
            match regions.linked(1).await {
                Ok(()) => return Ok(regions),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no free leaf node port")))
    }

    /// Region A's leaf node port: everything between the regions goes
    /// through it.
    pub fn leaf_port(&self) -> u16 {
        self.leaf_port
    }

    /// The JetStream API prefix of region A's domain, seen from B.
    pub fn a_api() -> &'static str {
        "$JS.A.API"
    }

    /// Waits until B's log shows its `times`-th leaf node connection to A
    /// (1 at start; one more after each restart of either side).
    pub async fn linked(&self, times: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + LINKED_WITHIN;
        loop {
            if self.b.log().matches("Leafnode connection created").count() >= times {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "region B did not join region A as a leaf node:\n{}",
                    self.b.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
