//! The publisher: paced publications with counters and send times.
//!
//! Message `i` of a run goes to topic `i % topics`, so every topic gets the
//! same rate; each topic's counter starts at 1. Through NATS, one task
//! publishes to JetStream (`<prefix>.fan.<topic>`) in order on one
//! connection, with up to `MAX_IN_FLIGHT` acknowledgements outstanding: the
//! stream stores them in the order sent, so counters grow with `seq`.
//! Through the hub's `POST /v1/publish` (embedded bus), each topic has its
//! own task that waits for each answer before the next request, which keeps
//! the order per topic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};

use crate::payload::{self, now_us};
use crate::plan::TopicPlan;

/// Acknowledgements awaited at once through JetStream.
const MAX_IN_FLIGHT: usize = 2048;

/// Where publications go.
#[derive(Debug, Clone)]
pub enum Via {
    /// JetStream publish on `<subject_prefix><topic>`.
    Nats { url: String, subject_prefix: String },
    /// `POST <base>/v1/publish` on one hub's internal listener, with its
    /// publish key.
    Http { base: String, key: Option<String> },
}

/// What to publish.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub plan: TopicPlan,
    /// Messages per second, all topics together.
    pub rate: f64,
    pub duration: Duration,
    pub payload_size: usize,
}

/// What the publisher did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Published {
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    /// First error text, to explain `errors`.
    pub first_error: Option<String>,
    /// Highest acknowledged counter per topic: what every subscriber is owed.
    #[serde(skip)]
    pub last_counter: Vec<u64>,
    pub started_us: u64,
    pub ended_us: u64,
    /// Achieved publication rate, per second.
    pub rate: f64,
}

/// A running publisher, stoppable early.
#[derive(Debug, Clone, Default)]
pub struct Control {
    stop: Arc<AtomicBool>,
    /// Messages sent so far, for progress display.
    pub sent: Arc<AtomicU64>,
}

impl Control {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Makes sure the stream the hub would create exists, for runs against
/// nats-server alone: same subjects, republish and direct access as the hub's.
pub async fn ensure_stream(url: &str, prefix: &str) -> anyhow::Result<()> {
    use async_nats::jetstream::stream::{Config, Republish, StorageType};
    let client = async_nats::connect(url)
        .await
        .context("connecting to NATS")?;
    let js = async_nats::jetstream::new(client);
    if js.get_stream("TRIBUNE").await.is_ok() {
        return Ok(());
    }
    js.create_stream(Config {
        name: "TRIBUNE".into(),
        subjects: vec![format!("{prefix}.fan.>")],
        max_messages_per_subject: 100,
        max_age: Duration::from_secs(24 * 3600),
        duplicate_window: Duration::from_secs(120),
        storage: StorageType::File,
        republish: Some(Republish {
            source: format!("{prefix}.fan.>"),
            destination: format!("{prefix}.live.>"),
            headers_only: false,
        }),
        allow_direct: true,
        ..Default::default()
    })
    .await
    .context("creating stream TRIBUNE")?;
    Ok(())
}

/// The counter of the last message the stream stores on each topic: what
/// every subscriber is owed, whatever became of the publisher's
/// acknowledgements (an ack that timed out may still have been stored).
pub async fn stored_counters(
    url: &str,
    subject_prefix: &str,
    plan: &TopicPlan,
) -> anyhow::Result<Vec<u64>> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let client = async_nats::connect(url)
        .await
        .context("connecting to NATS")?;
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("TRIBUNE").await.context("stream TRIBUNE")?;
    let mut out = vec![0u64; plan.count as usize];
    for (t, slot) in out.iter_mut().enumerate() {
        let subject = format!("{subject_prefix}{}", plan.name(t as u32));
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => *slot = payload::parse(&m.payload).map_or(0, |s| s.counter),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(anyhow::anyhow!("last message of {subject}: {e}")),
        }
    }
    Ok(out)
}

/// Publishes the schedule; returns when done or stopped.
pub async fn run(via: &Via, schedule: &Schedule, control: &Control) -> anyhow::Result<Published> {
    match via {
        Via::Nats {
            url,
            subject_prefix,
        } => run_nats(url, subject_prefix, schedule, control).await,
        Via::Http { base, key } => run_http(base, key.as_deref(), schedule, control).await,
    }
}

/// How many messages are due `elapsed` into the run.
fn due(rate: f64, elapsed: Duration, total: u64) -> u64 {
    ((elapsed.as_secs_f64() * rate) as u64).min(total)
}

fn total_of(schedule: &Schedule) -> u64 {
    (schedule.rate * schedule.duration.as_secs_f64()).round() as u64
}

async fn run_nats(
    url: &str,
    subject_prefix: &str,
    schedule: &Schedule,
    control: &Control,
) -> anyhow::Result<Published> {
    let client = async_nats::ConnectOptions::new()
        .name("tribune-loadtest publisher")
        .connect(url)
        .await
        .context("connecting the publisher to NATS")?;
    let js = async_nats::jetstream::new(client.clone());
    let topics = schedule.plan.count as usize;
    let subjects: Vec<String> = (0..topics as u32)
        .map(|t| format!("{subject_prefix}{}", schedule.plan.name(t)))
        .collect();
    let mut out = Published {
        last_counter: vec![0; topics],
        ..Published::default()
    };
    let mut counters = vec![0u64; topics];
    let total = total_of(schedule);
    let mut acks = FuturesUnordered::new();
    let mut buf = Vec::with_capacity(schedule.payload_size + 64);
    let start = Instant::now();
    out.started_us = now_us();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while out.sent < total && !control.stopped() {
        tick.tick().await;
        let due = due(schedule.rate, start.elapsed(), total);
        while out.sent < due {
            let t = (out.sent % topics as u64) as usize;
            counters[t] += 1;
            payload::build(&mut buf, counters[t], now_us(), schedule.payload_size);
            match js
                .publish(subjects[t].clone(), bytes::Bytes::copy_from_slice(&buf))
                .await
            {
                Ok(ack) => {
                    let counter = counters[t];
                    acks.push(async move { (t, counter, ack.await) });
                }
                Err(e) => note_error(&mut out, e.to_string()),
            }
            out.sent += 1;
            control.sent.store(out.sent, Ordering::Relaxed);
            while acks.len() >= MAX_IN_FLIGHT {
                if let Some(r) = acks.next().await {
                    settle_ack(&mut out, r);
                }
            }
        }
        // Collect acknowledgements that are ready without waiting.
        while let Some(Some(r)) = futures::FutureExt::now_or_never(acks.next()) {
            settle_ack(&mut out, r);
        }
    }
    let drain_until = Instant::now() + Duration::from_secs(15);
    while !acks.is_empty() && Instant::now() < drain_until {
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(1), acks.next()).await {
            settle_ack(&mut out, r);
        }
    }
    if !acks.is_empty() {
        note_error(
            &mut out,
            format!("{} acknowledgements never came", acks.len()),
        );
        out.errors += acks.len() as u64 - 1;
    }
    let _ = client.flush().await;
    out.ended_us = now_us();
    out.rate = out.sent as f64 / start.elapsed().as_secs_f64().max(1e-6);
    Ok(out)
}

type AckResult = (
    usize,
    u64,
    Result<
        async_nats::jetstream::publish::PublishAck,
        async_nats::jetstream::context::PublishError,
    >,
);

fn settle_ack(out: &mut Published, (t, counter, r): AckResult) {
    match r {
        Ok(_) => {
            out.acked += 1;
            out.last_counter[t] = out.last_counter[t].max(counter);
        }
        Err(e) => note_error(out, e.to_string()),
    }
}

fn note_error(out: &mut Published, e: String) {
    out.errors += 1;
    if out.first_error.is_none() {
        out.first_error = Some(e);
    }
}

async fn run_http(
    base: &str,
    key: Option<&str>,
    schedule: &Schedule,
    control: &Control,
) -> anyhow::Result<Published> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(256)
        .build()?;
    let topics = schedule.plan.count as usize;
    let total = total_of(schedule);
    let url = format!("{base}/v1/publish");
    let start = Instant::now();
    let started_us = now_us();
    let per_topic_rate = schedule.rate / topics as f64;
    let mut tasks = Vec::with_capacity(topics);
    for t in 0..topics {
        // Topic t publishes messages t, t + T, t + 2T...: the same share of
        // the schedule as the NATS publisher gives it.
        let count = total / topics as u64 + u64::from((t as u64) < total % topics as u64);
        let http = http.clone();
        let url = url.clone();
        let key = key.map(str::to_string);
        let topic = schedule.plan.name(t as u32);
        let control = control.clone();
        let size = schedule.payload_size;
        let offset = t as f64 / schedule.rate;
        tasks.push(tokio::spawn(async move {
            let mut p = Published::default();
            let mut buf = Vec::with_capacity(size + 64);
            for counter in 1..=count {
                if control.stopped() {
                    break;
                }
                let at = Duration::from_secs_f64(offset + (counter - 1) as f64 / per_topic_rate);
                tokio::time::sleep_until((start + at).into()).await;
                payload::build(&mut buf, counter, now_us(), size);
                let body = format!(
                    "{{\"topic\":\"{topic}\",\"data\":{}}}",
                    std::str::from_utf8(&buf).expect("payloads are ASCII")
                );
                p.sent += 1;
                control.sent.fetch_add(1, Ordering::Relaxed);
                let mut req = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body);
                if let Some(key) = &key {
                    req = req.bearer_auth(key);
                }
                let r = req.send().await;
                match r {
                    Ok(resp) if resp.status().is_success() => {
                        p.acked += 1;
                        p.last_counter = vec![counter];
                    }
                    Ok(resp) => note_error(&mut p, format!("HTTP {}", resp.status())),
                    Err(e) => note_error(&mut p, e.to_string()),
                }
            }
            p
        }));
    }
    let mut out = Published {
        last_counter: vec![0; topics],
        started_us,
        ..Published::default()
    };
    for (t, task) in tasks.into_iter().enumerate() {
        let p = task.await.context("publisher task")?;
        out.sent += p.sent;
        out.acked += p.acked;
        out.errors += p.errors;
        if out.first_error.is_none() {
            out.first_error = p.first_error;
        }
        out.last_counter[t] = p.last_counter.first().copied().unwrap_or(0);
    }
    out.ended_us = now_us();
    out.rate = out.sent as f64 / start.elapsed().as_secs_f64().max(1e-6);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_is_linear_and_bounded() {
        assert_eq!(due(1000.0, Duration::from_millis(500), 10_000), 500);
        assert_eq!(due(1000.0, Duration::from_secs(60), 10_000), 10_000);
        let s = Schedule {
            plan: TopicPlan::new("clips.x", 3, 1.0),
            rate: 200.0,
            duration: Duration::from_millis(1500),
            payload_size: 200,
        };
        assert_eq!(total_of(&s), 300);
    }
}
