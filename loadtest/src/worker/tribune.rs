//! The hub's protocol on a worker's client: subscribing (with `since` and
//! `epoch` when resuming), and what each frame from the hub does to the
//! client: acks confirm, messages are accounted and checked against
//! `prev`, `drain` schedules leaving. Frames are read by `crate::tribune`.

use std::time::{Duration, Instant};

use rand::Rng;

use super::client::{Client, Conn, Protocol, confirmed, delivered};
use super::shared::Shared;
use super::stats::bump;
use crate::tribune::{HubFrame, classify, subscribe_frame};
use crate::ws::encode_client_frame;

/// A hub connection's own state.
#[derive(Debug)]
pub struct Tribune {
    /// The next request id.
    next_id: u64,
}

impl Default for Tribune {
    fn default() -> Tribune {
        Tribune { next_id: 1 }
    }
}

impl Protocol for Tribune {
    const SUBPROTOCOL: Option<&'static str> = Some(tribune_protocol::SUBPROTOCOL);

    fn subscribe(&mut self, shared: &Shared, client: &mut Client, out: &mut Vec<u8>) {
        let now = Instant::now();
        for s in client.subs.iter_mut() {
            let resume = match (s.last_seq, client.epoch.as_deref()) {
                (Some(seq), Some(epoch)) if s.counted => Some((seq, epoch)),
                _ => None,
            };
            let text = subscribe_frame(self.next_id, &s.name, shared.spec.history, resume);
            self.next_id += 1;
            encode_client_frame(out, 0x1, text.as_bytes());
            s.sent_at = Some(now);
        }
    }

    fn on_frame(
        &mut self,
        shared: &Shared,
        client: &mut Client,
        st: &mut Conn,
        data: &[u8],
        now: u64,
        _out: &mut Vec<u8>,
    ) -> Result<(), String> {
        match classify(data) {
            HubFrame::Message(m) => {
                on_hub_message(
                    shared, client, m.topic, m.seq, m.prev, m.replay, m.data, now,
                );
            }
            HubFrame::OwnedMessage {
                topic,
                seq,
                prev,
                replay,
                data,
                ..
            } => {
                on_hub_message(
                    shared,
                    client,
                    topic.as_bytes(),
                    seq,
                    prev,
                    replay,
                    data.as_bytes(),
                    now,
                );
            }
            HubFrame::Welcome => st.hello_received(shared),
            HubFrame::SubscribeAck {
                topic,
                seq,
                epoch,
                recovered,
                ..
            } => {
                let Some(k) = client.sub_of(shared, topic.as_bytes()) else {
                    bump(
                        &mut shared.stats.borrow_mut().errors,
                        "ack_for_unknown_topic",
                    );
                    return Ok(());
                };
                match recovered {
                    Some(true) => shared.stats.borrow_mut().recovered += 1,
                    Some(false) => shared.stats.borrow_mut().not_recovered += 1,
                    None => {}
                }
                if epoch.is_some() {
                    client.epoch = epoch;
                }
                let s = &mut client.subs[k];
                if recovered != Some(true) {
                    s.last_seq = Some(seq);
                }
                // Nothing ever published on the topic: every counter is owed.
                let baseline_zero = seq == 0;
                confirmed(shared, client, k, baseline_zero);
            }
            HubFrame::OtherAck | HubFrame::Pong | HubFrame::Stats => {}
            // An announced loss is still a loss: the run reports it as an error.
            HubFrame::Gap { .. } => bump(&mut shared.stats.borrow_mut().errors, "gap"),
            HubFrame::Error { code, .. } => {
                bump(&mut shared.stats.borrow_mut().errors, &code);
            }
            HubFrame::Drain { retry_ms } => {
                let delay = if retry_ms == 0 {
                    0
                } else {
                    rand::rng().random_range(0..retry_ms)
                };
                st.leave_at = Some(Instant::now() + Duration::from_millis(delay));
            }
            HubFrame::Invalid(e) => {
                bump(&mut shared.stats.borrow_mut().errors, "invalid_frame");
                eprintln!("client {}: invalid frame from hub: {e}", client.index);
            }
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn on_hub_message(
    shared: &Shared,
    client: &mut Client,
    topic: &[u8],
    seq: u64,
    prev: u64,
    replay: bool,
    data: &[u8],
    now: u64,
) {
    let Some(k) = client.sub_of(shared, topic) else {
        bump(
            &mut shared.stats.borrow_mut().errors,
            "message_for_unknown_topic",
        );
        return;
    };
    let s = &mut client.subs[k];
    if !replay
        && let Some(last) = s.last_seq
        && prev != last
    {
        shared.stats.borrow_mut().prev_mismatch += 1;
    }
    s.last_seq = Some(s.last_seq.map_or(seq, |l| l.max(seq)));
    delivered(shared, client, k, data, !replay, now);
}
