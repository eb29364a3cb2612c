//! History reads through the batched direct get: async-nats has none, so
//! it is written here (a request to `$JS.API.DIRECT.GET.<stream>` with
//! `next_by_subj` or `multi_last`, replies read until status 204).
//!
//! # `prev` in history reads
//!
//! A direct-get batch reply carries `Nats-Last-Sequence`, but it names the
//! previous reply *of the batch* (0 on the first), not the previous message of
//! the subject (checked against nats-server 2.15). In a `next_by_subj` batch on
//! one subject both agree from the second reply on; the first reply's
//! predecessor is known when the batch starts at the message that precedes it,
//! when it starts at sequence 1 (nothing before: 0), or else is read with one
//! `multi_last` request bounded by `up_to_seq`. It is the last message *still
//! stored* before it, which is the contract's `prev` except when older
//! messages were removed meanwhile (removal, not loss).

use std::collections::HashMap;

use async_nats::Message;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tribune_protocol::Topic;

use super::headers::{header, header_u64, retract_target, timestamp_ms};
use super::state::{Eviction, Inner};
use crate::bus::{After, BusError, BusMessage, BusResult};

/// nats-server answers `413 Too Many Results` above this many subjects.
const MULTI_LAST_MAX: usize = 1024;
/// Replies asked for in one `next_by_subj` batch; longer reads take several.
const BATCH_MAX: usize = 1024;

impl Inner {
    /// One direct-get request, reading replies until the end of the batch.
    async fn direct_get(&self, request: Value) -> BusResult<Vec<Stored>> {
        let inbox = self.client.new_inbox();
        // Subscribe before asking: commands reach the server in order.
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| BusError::unavailable(e.to_string()))?;
        self.client
            .publish_with_reply(
                self.subjects.direct_get.clone(),
                inbox,
                Bytes::from(request.to_string()),
            )
            .await
            .map_err(|e| BusError::unavailable(e.to_string()))?;
        let mut out = Vec::new();
        while let Some(reply) = replies.next().await {
            match classify(&reply)? {
                Reply::Stored(m) => out.push(m),
                Reply::End => return Ok(out),
            }
        }
        Err(BusError::unavailable("NATS connection closed"))
    }

    /// Stored messages of `subject` from `start` on (inclusive), oldest first:
    /// at most `max`, stopping early once a message at or past `stop_at` is read.
    async fn read_forward(
        &self,
        subject: &str,
        start: u64,
        max: usize,
        stop_at: Option<u64>,
    ) -> BusResult<Vec<Stored>> {
        let mut out: Vec<Stored> = Vec::new();
        let mut seq = start.max(1);
        while out.len() < max {
            let batch = (max - out.len()).min(BATCH_MAX);
            let got = self
                .direct_get(json!({"seq": seq, "next_by_subj": subject, "batch": batch}))
                .await?;
            let Some(last) = got.last() else { break };
            let (last_seq, pending) = (last.seq, last.pending);
            out.extend(got);
            if pending == 0 || stop_at.is_some_and(|s| last_seq >= s) {
                break;
            }
            seq = last_seq + 1;
        }
        Ok(out)
    }

    /// The last stored message of `subject` with `seq <= up_to` (if given).
    async fn last_of(&self, subject: &str, up_to: Option<u64>) -> BusResult<Option<Stored>> {
        let mut request = json!({"multi_last": [subject], "batch": 1});
        if let Some(up_to) = up_to {
            if up_to == 0 {
                return Ok(None);
            }
            request["up_to_seq"] = json!(up_to);
        }
        Ok(self.direct_get(request).await?.into_iter().next())
    }

    /// The `seq` of the message stored on `subject` just before `seq` (0: none).
    async fn prev_of(&self, subject: &str, seq: u64) -> BusResult<u64> {
        Ok(self
            .last_of(subject, Some(seq.saturating_sub(1)))
            .await?
            .map_or(0, |m| m.seq))
    }

    pub(super) async fn last(&self, topic: &Topic, n: u32) -> BusResult<Vec<BusMessage>> {
        let n = n as usize;
        if n == 0 {
            return Ok(Vec::new());
        }
        let subject = self.subjects.fan(topic);
        let Some(tail) = self.last_of(&subject, None).await? else {
            return Ok(Vec::new());
        };
        if n == 1 {
            let prev = self.prev_of(&subject, tail.seq).await?;
            return Ok(vec![tail.into_message(topic, prev)]);
        }
        // The subject's first stored message and how many follow it.
        let Some(head) = self.read_forward(&subject, 1, 1, None).await?.pop() else {
            return Ok(Vec::new());
        };
        let slack = n / 2 + 4;
        let target = n as u64 + 1; // the window and its predecessor
        let (msgs, from_first) = if head.pending < target + slack as u64 {
            (
                self.read_forward(&subject, head.seq, usize::MAX, Some(tail.seq))
                    .await?,
                true,
            )
        } else {
            let start = self
                .find_start(&subject, &head, &tail, target, slack as u64)
                .await?;
            (
                self.read_forward(&subject, start, usize::MAX, Some(tail.seq))
                    .await?,
                false,
            )
        };
        let skip = msgs.len().saturating_sub(n);
        let prev = if skip > 0 {
            msgs[skip - 1].seq
        } else if from_first && msgs.first().is_some_and(|m| m.seq == head.seq) {
            // `head` came from a read starting at sequence 1: nothing before it.
            0
        } else {
            match msgs.first() {
                Some(m) => self.prev_of(&subject, m.seq).await?,
                None => 0,
            }
        };
        Ok(chain(topic, msgs.into_iter().skip(skip), prev))
    }

    /// A sequence to read the latest `target` messages of `subject` from: one
    /// with at least `target` messages at or after it, and (when the probes
    /// allow) at most `target + slack`. Interpolates between what is known,
    /// bisecting every other probe so that skewed topics still converge.
    async fn find_start(
        &self,
        subject: &str,
        head: &Stored,
        tail: &Stored,
        target: u64,
        slack: u64,
    ) -> BusResult<u64> {
        // `*_count`: messages of the subject at or after that sequence.
        let (mut lo, mut lo_count) = (head.seq, head.pending + 1);
        let (mut hi, mut hi_count) = (tail.seq, 1u64);
        for probe in 0..24 {
            if lo_count <= target + slack || hi <= lo + 1 {
                break;
            }
            let seq = if probe % 2 == 0 {
                let want = target + slack / 2;
                let fraction =
                    (lo_count - want) as f64 / (lo_count.saturating_sub(hi_count)).max(1) as f64;
                lo + ((hi - lo) as f64 * fraction) as u64
            } else {
                lo + (hi - lo) / 2
            }
            .clamp(lo + 1, hi);
            match self.read_forward(subject, seq, 1, None).await?.pop() {
                Some(m) if m.pending + 1 >= target => (lo, lo_count) = (m.seq, m.pending + 1),
                Some(m) => (hi, hi_count) = (seq, m.pending + 1),
                None => (hi, hi_count) = (seq, 0),
            }
        }
        Ok(lo)
    }

    pub(super) async fn after(&self, topic: &Topic, after: u64, limit: u32) -> BusResult<After> {
        let limit = limit as usize;
        if limit == 0 {
            return Ok(After::default());
        }
        let subject = self.subjects.fan(topic);
        // Starting at `after` itself: when it is a message of this topic (the
        // usual case, a relay's last seen seq), it gives the first one's prev.
        let mut msgs = self
            .read_forward(&subject, after.max(1), limit.saturating_add(1), None)
            .await?;
        let (prev, hole) = match msgs.first() {
            None => return Ok(After::default()),
            Some(m) if m.seq == after => {
                msgs.remove(0);
                (after, false)
            }
            Some(m) => {
                // From sequence 1 on, the first reply is the subject's oldest.
                let prev = if after == 0 {
                    0
                } else {
                    self.prev_of(&subject, m.seq).await?
                };
                // `after` is not stored. Removal takes a subject's oldest
                // first: if an older message is still stored, `after` was
                // never one of this subject's. If `m` is the oldest, what
                // lay between `after` and `m` may have been removed, unless
                // the stream's limits cannot have removed anything yet. The
                // stored predecessor a direct get cannot give.
                let oldest = prev == 0;
                (prev, oldest && self.may_have_removed(m.pending + 1).await)
            }
        };
        msgs.truncate(limit);
        Ok(After {
            messages: chain(topic, msgs.into_iter(), prev),
            hole,
        })
    }

    /// Whether a subject holding `stored` messages may have lost older ones,
    /// by the stream's limits as they are now: another hub with a smaller
    /// retention (a rolling config change), or an operator, may have lowered
    /// them since this hub connected. Asked only where a hole is possible
    /// (rare), so one stream info request is cheap; unanswered, assume the
    /// worst.
    async fn may_have_removed(&self, stored: u64) -> bool {
        let eviction = match self.stream_info().await {
            Ok(Some(info)) => Eviction::of(&info.config),
            Ok(None) | Err(_) => Eviction::Any,
        };
        eviction.may_have_removed(stored)
    }
    pub(super) async fn last_seqs(&self, topics: &[Topic]) -> BusResult<HashMap<Topic, u64>> {
        let mut out = HashMap::with_capacity(topics.len());
        let requests = topics.chunks(MULTI_LAST_MAX).map(|chunk| async move {
            let subjects: Vec<String> = chunk.iter().map(|t| self.subjects.fan(t)).collect();
            let by_subject: HashMap<&str, &Topic> = subjects
                .iter()
                .map(String::as_str)
                .zip(chunk.iter())
                .collect();
            let got = self
                .direct_get(json!({"multi_last": subjects, "batch": chunk.len()}))
                .await?;
            Ok::<_, BusError>(
                got.into_iter()
                    .filter_map(|m| {
                        by_subject
                            .get(m.subject.as_str())
                            .map(|t| ((*t).clone(), m.seq))
                    })
                    .collect::<Vec<_>>(),
            )
        });
        for chunk in futures::future::try_join_all(requests).await? {
            out.extend(chunk);
        }
        Ok(out)
    }
}

/// The stored messages of one topic, with `prev` chained from `first_prev`.
fn chain(topic: &Topic, msgs: impl Iterator<Item = Stored>, first_prev: u64) -> Vec<BusMessage> {
    let mut prev = first_prev;
    msgs.map(|m| {
        let seq = m.seq;
        let message = m.into_message(topic, prev);
        prev = seq;
        message
    })
    .collect()
}

/// One message read by a direct get.
#[derive(Debug)]
struct Stored {
    /// `Nats-Subject`: `p.fan.<topic>`.
    subject: String,
    seq: u64,
    ts: u64,
    /// `Nats-Num-Pending`: messages of the subject stored after this one.
    pending: u64,
    data: Bytes,
    /// `Tribune-Retract`: a retraction marker's target.
    retracts: Option<u64>,
}

impl Stored {
    fn into_message(self, topic: &Topic, prev: u64) -> BusMessage {
        BusMessage {
            topic: topic.clone(),
            seq: self.seq,
            prev,
            ts: self.ts,
            data: self.data,
            retracts: self.retracts,
        }
    }
}

enum Reply {
    Stored(Stored),
    /// End of the batch: `204 EOB`, or `404` (nothing matched).
    End,
}

/// Reads one direct-get reply.
fn classify(msg: &Message) -> BusResult<Reply> {
    let description = || msg.description.clone().unwrap_or_default();
    match msg.status.map(|s| s.as_u16()) {
        None | Some(200) => {}
        Some(204 | 404) => return Ok(Reply::End),
        Some(503) => {
            return Err(BusError::unavailable(
                "no answer to direct get: stream missing or JetStream unavailable",
            ));
        }
        Some(code @ (400 | 408 | 413)) => {
            return Err(BusError::rejected(format!(
                "direct get refused: {code} {}",
                description()
            )));
        }
        Some(code) => {
            return Err(BusError::unavailable(format!(
                "direct get failed: {code} {}",
                description()
            )));
        }
    }
    let stored = (|| {
        Some(Stored {
            subject: header(msg, "Nats-Subject")?.to_string(),
            seq: header_u64(msg, "Nats-Sequence")?,
            ts: timestamp_ms(msg)?,
            pending: header_u64(msg, "Nats-Num-Pending").unwrap_or(0),
            data: msg.payload.clone(),
            retracts: retract_target(msg),
        })
    })();
    stored.map(Reply::Stored).ok_or_else(|| {
        BusError::unavailable(format!(
            "direct get reply without its headers: {:?}",
            msg.headers
        ))
    })
}
