//! A connection's bounded outbound queue, filled by relays and the session,
//! drained by the connection's writer in batches.
//!
//! Relays never await a client: [`Outbox::push_message`] takes a short lock,
//! appends the shared frame and wakes the writer only when the queue was
//! empty (one wake per batch, not per message). Past the limits of PROTOCOL.md
//! section 8, a `state` frame evicts the queued frames of its own topic
//! (conflation: the newest state wins) and anything else closes the
//! connection with 4008 (the client resumes with `since`).
//!
//! A delta frame is queued with its full frame beside it: when conflation
//! drops frames of its topic, the client no longer holds the delta's base,
//! so the full frame (a keyframe) is queued instead.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tribune_protocol::CloseCode;

/// One encoded frame, shared by every connection it is queued to.
pub use crate::ws::Frame;

/// A frame waiting in an outbox.
#[derive(Debug, Clone)]
pub struct Queued {
    pub frame: Frame,
    /// The relay it came from (0 for control frames), for conflation.
    relay: u32,
    /// Superseded by the next frame of the same relay (state topics).
    conflatable: bool,
    /// For a delta frame: the full message, sent instead if conflation
    /// drops the frame the delta is based on.
    keyframe: Option<Frame>,
}

impl Queued {
    pub fn frame(&self) -> &Frame {
        &self.frame
    }
}

/// What became of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued after evicting superseded frames of the same topic.
    Conflated(usize),
    /// The connection is closing (now or before): the frame was dropped.
    Closed,
    /// This push overflowed the queue: the connection now closes with 4008.
    Overflowed,
}

/// A connection's outbound queue; see the module docs.
pub struct Outbox {
    queue: Mutex<Queue>,
    /// Wakes the writer when the queue goes from empty to not empty, or closes.
    wake: Notify,
    /// Wakes a writer stuck on a slow socket when the connection must close.
    closing: Notify,
    max_bytes: usize,
    max_messages: usize,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Queued>,
    bytes: usize,
    close: Option<CloseCode>,
    /// The peer started the closing handshake: the writer only completes it.
    by_peer: bool,
}

impl Outbox {
    pub fn new(max_bytes: usize, max_messages: usize) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            closing: Notify::new(),
            max_bytes,
            max_messages,
        }
    }

    /// Queues a control frame (welcome, ack, error, pong, drain, stats).
    pub fn push_control(&self, frame: Frame) -> Pushed {
        self.push(Queued {
            frame,
            relay: 0,
            conflatable: false,
            keyframe: None,
        })
    }

    /// Queues a message frame of a relay; `state` frames may be conflated.
    pub fn push_message(&self, relay: u32, state: bool, frame: Frame) -> Pushed {
        self.push(Queued {
            frame,
            relay,
            conflatable: state,
            keyframe: None,
        })
    }

    /// Queues a state topic's delta frame, with its full frame for when
    /// conflation drops the frames before it.
    pub fn push_delta(&self, relay: u32, delta: Frame, full: Frame) -> Pushed {
        self.push(Queued {
            frame: delta,
            relay,
            conflatable: true,
            keyframe: Some(full),
        })
    }

    fn push(&self, mut item: Queued) -> Pushed {
        let mut len = item.frame.len();
        let mut q = self.queue.lock();
        if q.close.is_some() {
            return Pushed::Closed;
        }
        let fits = |q: &Queue, len: usize| {
            q.bytes + len <= self.max_bytes && q.frames.len() < self.max_messages
        };
        let mut evicted = 0;
        if !fits(&q, len) {
            if item.conflatable {
                let before = q.frames.len();
                q.frames
                    .retain(|f| !(f.conflatable && f.relay == item.relay));
                evicted = before - q.frames.len();
                q.bytes = q.frames.iter().map(|f| f.frame.len()).sum();
                if evicted > 0
                    && let Some(full) = item.keyframe.take()
                {
                    item.frame = full;
                    len = item.frame.len();
                }
            }
            // Still over: a state frame behind nothing but other state frames
            // is kept (each topic's next frame evicts its older ones, so the
            // queue stays near the limit); anything else means the client
            // cannot keep up with an item it must receive.
            let only_state = item.conflatable && q.frames.iter().all(|f| f.conflatable);
            if !fits(&q, len) && !only_state {
                q.frames.clear();
                q.bytes = 0;
                q.close = Some(CloseCode::SLOW_CONSUMER);
                drop(q);
                self.wake.notify_one();
                self.closing.notify_waiters();
                return Pushed::Overflowed;
            }
        }
        let was_empty = q.frames.is_empty();
        q.bytes += len;
        q.frames.push_back(item);
        drop(q);
        if was_empty {
            self.wake.notify_one();
        }
        if evicted > 0 {
            Pushed::Conflated(evicted)
        } else {
            Pushed::Queued
        }
    }

    /// Closes the connection with `code`. Frames already queued are sent first
    /// unless `discard` (a slow or abusive client gets its close frame at once).
    pub fn close(&self, code: CloseCode, discard: bool) {
        let mut q = self.queue.lock();
        if q.close.is_some() {
            return;
        }
        if discard {
            q.frames.clear();
            q.bytes = 0;
        }
        q.close = Some(code);
        drop(q);
        self.wake.notify_one();
        self.closing.notify_waiters();
    }

    /// The peer sent its close frame: the connection closes with nothing
    /// more queued, and the writer answers the close (RFC 6455 section 5.5.1).
    pub fn close_by_peer(&self) {
        let mut q = self.queue.lock();
        if q.close.is_none() {
            q.by_peer = true;
        }
        drop(q);
        self.close(CloseCode::NORMAL, true);
    }

    /// Whether the peer started the closing handshake.
    pub fn closed_by_peer(&self) -> bool {
        self.queue.lock().by_peer
    }

    /// The close code once the connection is closing.
    pub fn close_code(&self) -> Option<CloseCode> {
        self.queue.lock().close
    }

    /// Moves every queued frame into `batch` (reusing its allocation); returns
    /// the close code when the connection must close after sending them.
    pub fn take(&self, batch: &mut VecDeque<Queued>) -> Option<CloseCode> {
        let mut q = self.queue.lock();
        std::mem::swap(&mut q.frames, batch);
        q.bytes = 0;
        q.close
    }

    /// Resolves when there may be frames to take (or a close).
    pub async fn ready(&self) {
        self.wake.notified().await;
    }

    /// Resolves once the connection is closing.
    pub async fn closed(&self) {
        let notified = self.closing.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.queue.lock().close.is_some() {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(s: &str) -> Frame {
        Frame::from(s.to_string())
    }

    fn texts(o: &Outbox) -> (Vec<String>, Option<CloseCode>) {
        let mut b = VecDeque::new();
        let c = o.take(&mut b);
        (
            b.into_iter()
                .map(|q| q.frame.as_str().to_string())
                .collect(),
            c,
        )
    }

    #[test]
    fn state_frames_conflate_per_topic() {
        let o = Outbox::new(1 << 20, 3);
        assert_eq!(o.push_message(1, true, frame("a1")), Pushed::Queued);
        assert_eq!(o.push_message(2, true, frame("b1")), Pushed::Queued);
        assert_eq!(o.push_message(1, true, frame("a2")), Pushed::Queued);
        assert_eq!(o.push_message(1, true, frame("a3")), Pushed::Conflated(2));
        assert_eq!(texts(&o), (vec!["b1".into(), "a3".into()], None));
    }

    #[test]
    fn feed_overflow_closes_with_4008_and_discards() {
        let o = Outbox::new(1 << 20, 2);
        o.push_message(1, false, frame("f1"));
        o.push_message(1, false, frame("f2"));
        assert_eq!(o.push_message(1, false, frame("f3")), Pushed::Overflowed);
        assert_eq!(o.push_message(1, false, frame("f4")), Pushed::Closed);
        assert_eq!(texts(&o), (vec![], Some(CloseCode::SLOW_CONSUMER)));
    }

    #[test]
    fn byte_limit_counts_too() {
        let o = Outbox::new(10, 100);
        o.push_message(1, false, frame("123456"));
        assert_eq!(
            o.push_message(1, false, frame("123456")),
            Pushed::Overflowed
        );
    }

    #[test]
    fn state_frame_behind_stuck_feed_frames_closes() {
        let o = Outbox::new(1 << 20, 2);
        o.push_message(1, false, frame("f1"));
        o.push_message(1, false, frame("f2"));
        assert_eq!(o.push_message(2, true, frame("s1")), Pushed::Overflowed);
    }

    #[test]
    fn conflation_turns_a_delta_into_its_keyframe() {
        let o = Outbox::new(1 << 20, 2);
        assert_eq!(o.push_message(1, true, frame("full1")), Pushed::Queued);
        assert_eq!(
            o.push_delta(1, frame("d2"), frame("full2")),
            Pushed::Queued,
            "room: the delta goes"
        );
        assert_eq!(
            o.push_delta(1, frame("d3"), frame("full3")),
            Pushed::Conflated(2)
        );
        assert_eq!(texts(&o), (vec!["full3".into()], None));
        // A delta that evicted nothing of its own topic stays a delta.
        let o = Outbox::new(1 << 20, 2);
        o.push_message(2, true, frame("other1"));
        o.push_message(2, true, frame("other2"));
        assert_eq!(o.push_delta(1, frame("d"), frame("full")), Pushed::Queued);
        assert_eq!(
            texts(&o),
            (vec!["other1".into(), "other2".into(), "d".into()], None)
        );
    }

    #[test]
    fn stats_conflate_apart_from_messages() {
        // Stats frames use their own key: the newest stats of a topic win,
        // and the topic's latest state message is never evicted by them.
        let o = Outbox::new(1 << 20, 3);
        let stats_key = 1 | (1 << 31);
        o.push_message(1, true, frame("state1"));
        o.push_message(stats_key, true, frame("stats1"));
        o.push_message(stats_key, true, frame("stats2"));
        assert_eq!(
            o.push_message(stats_key, true, frame("stats3")),
            Pushed::Conflated(2)
        );
        assert_eq!(texts(&o), (vec!["state1".into(), "stats3".into()], None));
    }

    #[test]
    fn close_keeps_pending_unless_discarded() {
        let o = Outbox::new(1 << 20, 10);
        o.push_control(frame("drain"));
        o.close(CloseCode::DRAINING, false);
        assert_eq!(texts(&o), (vec!["drain".into()], Some(CloseCode::DRAINING)));
        assert_eq!(o.push_control(frame("x")), Pushed::Closed);
    }
}
