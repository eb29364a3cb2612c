//! What the coordinator and its worker processes say to each other.
//!
//! The coordinator starts each worker as `tribune-loadtest worker`, writes
//! one [`WorkerSpec`] line and then [`Command`] lines to its stdin, and reads
//! [`WorkerReport`] lines from its stdout (one JSON object per line).
//! Latency histograms travel as hex of HdrHistogram's V2 serialization, so
//! the coordinator merges exact histograms, never percentiles of percentiles.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

use crate::account::Loss;

/// Which server the clients speak to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// The hub's `/v1/ws` protocol.
    Tribune,
    /// nats-server's own websocket listener, NATS text protocol.
    NatsWs,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Tribune => "tribune",
            Target::NatsWs => "nats-ws",
        }
    }
}

/// When clients subscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscribeWhen {
    /// Right after the connection is ready.
    OnConnect,
    /// When the coordinator says so (storm), spread over a window.
    OnCommand,
    /// Never (idle).
    Never,
}

/// Everything a worker needs to run its share of the clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// This worker's number, `0..procs`.
    pub worker: u32,
    pub procs: u32,
    pub target: Target,
    /// Websocket URLs; client `i` starts on `urls[i % len]` and moves to the
    /// next one when a connection fails.
    pub urls: Vec<String>,
    /// Loopback source addresses bound before connect, client `i` using
    /// `sources[i % len]`; empty: the kernel chooses.
    pub sources: Vec<IpAddr>,
    /// All clients of the run; this worker runs those with `i % procs == worker`.
    pub clients: u64,
    /// This worker's connection rate, per second.
    pub connect_rate: f64,
    pub connect_timeout_ms: u64,
    /// `clips.<run>`: topics are `<prefix>.t<i>`.
    pub topic_prefix: String,
    pub topics: u32,
    pub per_client: u32,
    pub zipf_s: f64,
    pub seed: u64,
    /// NATS subject prefix before the topic, `tribune.live.`.
    pub subject_prefix: String,
    pub subscribe: SubscribeWhen,
    /// `history` of the hub's `subscribe` (1 gives a baseline counter).
    pub history: Option<u32>,
    /// The first subscriptions are confirmed before the first publication
    /// (the coordinator waits for them), so their baseline is counter 0.
    pub baseline_zero: bool,
    /// Read buffer per connection, bytes.
    pub read_buf: usize,
    /// Reconnect (and resume where the protocol allows) after a close that
    /// the run did not ask for.
    pub reconnect: bool,
    /// Test hook: the first client of worker 0 discards its first live message.
    pub drop_one: bool,
    /// Test hook: the first client of worker 0 accounts its first live message twice.
    pub dup_one: bool,
    /// The worker gives up and exits after this long, whatever happens.
    pub max_life_ms: u64,
    /// Interval of progress reports.
    pub report_ms: u64,
}

/// Orders from the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Every client subscribes, at a random moment within `spread_ms`.
    Subscribe {
        spread_ms: u64,
    },
    /// Close and replace this many clients per second (this worker's share).
    Churn {
        per_s: f64,
    },
    StopChurn,
    /// Publication is over: `published[t]` is the last counter of topic `t`.
    /// Wait up to `settle_ms` for subscriptions to catch up, then report.
    Finish {
        published: Vec<u64>,
        settle_ms: u64,
    },
}

/// A latency histogram in microseconds, as sent between processes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistBlob(pub String);

/// Highest latency a histogram records, µs (values above are clamped).
pub const HIST_MAX_US: u64 = 600_000_000;

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

impl HistBlob {
    pub fn encode(h: &Histogram<u64>) -> HistBlob {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(h, &mut bytes)
            .expect("serializing to memory cannot fail");
        let mut hex = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            hex.push_str(&format!("{b:02x}"));
        }
        HistBlob(hex)
    }

    pub fn decode(&self) -> anyhow::Result<Histogram<u64>> {
        if self.0.is_empty() {
            return Ok(new_hist());
        }
        let bytes = (0..self.0.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&self.0[i..(i + 2).min(self.0.len())], 16))
            .collect::<Result<Vec<u8>, _>>()?;
        let h: Histogram<u64> = Deserializer::new().deserialize(&mut bytes.as_slice())?;
        Ok(h)
    }
}

/// A line from a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkerReport {
    Progress(Progress),
    Final(Box<Final>),
}

/// Sent every `report_ms`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    pub worker: u32,
    /// When this report was made, µs since the epoch.
    pub at_us: u64,
    /// Connections open now.
    pub open: u64,
    /// Connections established so far (reconnections included).
    pub established: u64,
    /// Failed connection attempts so far.
    pub failed: u64,
    /// Subscriptions confirmed and not ended, now.
    pub subscribed: u64,
    /// Live messages received so far.
    pub deliveries: u64,
    /// Live delivery latency since the previous report.
    pub interval_latency: HistBlob,
    /// Clients back after a disconnect the run did not ask for, so far.
    pub resumed: u64,
    /// Clients disconnected and not back yet, now.
    pub away: u64,
    /// When the last client came back so far, µs since the epoch (0: none).
    pub last_back_us: u64,
    /// When this worker's first client started connecting, µs since the epoch.
    pub first_attempt_us: u64,
    /// When every client of this worker had connected once (0: not yet).
    pub all_connected_us: u64,
}

/// Sent once, after `Finish`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Final {
    pub worker: u32,
    /// TCP connect plus websocket upgrade, µs.
    pub handshake: HistBlob,
    /// Upgrade done until the server said hello (`welcome`, NATS `PONG`), µs.
    pub ready: HistBlob,
    /// Subscribe sent until confirmed (`ack`, NATS `PONG`), µs.
    pub subscribe: HistBlob,
    /// Live delivery latency over the whole run, µs.
    pub latency: HistBlob,
    /// Disconnect (or `drain`) until every subscription of the client was
    /// confirmed again, µs.
    pub resume: HistBlob,
    pub loss: Loss,
    pub deliveries: u64,
    /// Messages replayed by the hub (`replay: true`), not in the latency.
    pub replayed: u64,
    /// Messages whose `prev` was not the `seq` received before (hub only).
    pub prev_mismatch: u64,
    pub established: u64,
    pub failed: u64,
    /// Failed attempts by kind (`http_429`, `tcp_connectionrefused`...).
    pub failures: BTreeMap<String, u64>,
    /// Closes the run did not ask for, by close code or cause.
    pub closes: BTreeMap<String, u64>,
    /// `error` frames or `-ERR` lines, by code.
    pub errors: BTreeMap<String, u64>,
    /// Clients closed and replaced by churn.
    pub churned: u64,
    /// Subscriptions answered `recovered: true` / `false` on resume.
    pub recovered: u64,
    pub not_recovered: u64,
    /// Clients back after an unrequested disconnect.
    pub resumed: u64,
    /// Clients still away at the end.
    pub away: u64,
    pub first_delivery_us: u64,
    pub last_delivery_us: u64,
    /// When the last client came back, µs since the epoch (0: none did).
    pub last_back_us: u64,
    /// Subscriptions confirmed at the end.
    pub subscribed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_travel_exactly() {
        let mut h = new_hist();
        for v in [1u64, 250, 999, 12_345, 5_000_000] {
            h.record(v).unwrap();
        }
        let back = HistBlob::encode(&h).decode().unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(back.max(), h.max());
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert_eq!(HistBlob::default().decode().unwrap().len(), 0);
    }

    #[test]
    fn lines_round_trip() {
        let c = Command::Finish {
            published: vec![3, 4],
            settle_ms: 100,
        };
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.starts_with(r#"{"cmd":"finish""#));
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), c);
        let r = WorkerReport::Progress(Progress {
            worker: 1,
            open: 5,
            ..Progress::default()
        });
        let text = serde_json::to_string(&r).unwrap();
        match serde_json::from_str::<WorkerReport>(&text).unwrap() {
            WorkerReport::Progress(p) => assert_eq!((p.worker, p.open), (1, 5)),
            other => panic!("{other:?}"),
        }
    }
}
