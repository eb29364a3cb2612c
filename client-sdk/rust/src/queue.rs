//! What flows from the connection task to one [`Subscription`](crate::Subscription):
//! the [`Event`]s, and the bounded [`SubQueue`] that carries them.
//!
//! The queue never makes the connection task wait: a task that blocked on one
//! slow consumer would stall every other topic and the heartbeats. Instead,
//! when the application falls `capacity` items behind:
//! - on a `state` topic the oldest queued message is dropped (conflation: the
//!   newest state always stays);
//! - on a `feed` the subscription is suspended (unsubscribed at the hub) and,
//!   once the application has consumed half the queue, renewed with `since`:
//!   the hub replays what it missed from the bus, or the stream says `Gap`.
//!
//! Live `stats` are dropped when the queue is full: the next window brings
//! fresh figures.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tribune_protocol::{ErrorCode, Message, Stats};

/// One item of a [`Subscription`](crate::Subscription).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A message, in order, once. `message.data` is the publisher's JSON,
    /// byte for byte (`serde_json::from_str(message.data.get())`).
    Message(Message),
    /// Messages of a `feed` were lost: they will never be delivered to this
    /// subscription. Never sent for `state` topics, whose latest state always
    /// arrives.
    ///
    /// - `before_seq: Some(b)`: the hub announced a hole in the bus (messages
    ///   that aged out before it could repair, or that could not be read):
    ///   every message of the topic with `after_seq < seq < b` is lost, and
    ///   the message with seq `b` comes next. Seqs are stream-wide, so the
    ///   range may hold seqs of other topics too.
    /// - `before_seq: None`: a resume after `after_seq` could not be served:
    ///   the bus no longer retains everything after it, or its epoch changed.
    ///   What follows is the hub's replay for the subscription's `history`,
    ///   then live messages.
    Gap {
        topic: String,
        /// The last seq delivered before the loss.
        after_seq: u64,
        /// The first seq after the loss, where the hub knows it.
        before_seq: Option<u64>,
        /// The bus was recreated: `after_seq` belongs to the old epoch.
        epoch_changed: bool,
        /// The epoch from here on.
        epoch: Option<String>,
    },
    /// An editor retracted the message `seq` of the topic (a clip taken
    /// down): an application that shows it removes it. The SDK removes
    /// nothing itself; a retraction of a message the application never got
    /// (it came after the subscription's replay, or before it) is announced
    /// all the same and can be ignored. `at` is the retraction's own place
    /// in the topic (the seq the subscription resumes after).
    Retract { topic: String, seq: u64, at: u64 },
    /// Live audience and reaction figures of the topic (never replayed).
    Stats(Stats),
    /// The subscription ended without the application asking: the hub
    /// refused to renew it (`code`), or the client closed for good (`None`).
    /// It is the last item; the stream ends after it.
    Closed {
        code: Option<ErrorCode>,
        reason: String,
    },
}

/// The shared queue between the connection task and a [`Subscription`](crate::Subscription).
#[derive(Debug)]
pub(crate) struct SubQueue {
    state: Mutex<QueueState>,
}

#[derive(Debug)]
struct QueueState {
    /// Events not yet taken by the application.
    items: VecDeque<Event>,
    /// How far the application may fall behind.
    capacity: usize,
    /// The task to wake when an item arrives.
    waker: Option<Waker>,
    /// No more items will come once `items` is empty.
    ended: bool,
    /// A feed message was refused for lack of room; the subscription is
    /// suspended until the application catches up.
    overflowed: bool,
    /// The catch-up has been reported to the connection task.
    resume_sent: bool,
    /// The latest epoch, for [`Subscription::epoch`](crate::Subscription::epoch).
    epoch: Option<String>,
}

/// The outcome of offering a feed message to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    Queued,
    /// No room: the subscription must be suspended.
    Overflow,
    /// The application is gone or the stream ended.
    Gone,
}

impl SubQueue {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                capacity: capacity.max(2),
                waker: None,
                ended: false,
                overflowed: false,
                resume_sent: false,
                epoch: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // A panic while holding this lock cannot leave the queue half-written
        // (each method is a few pushes and pops), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(state: &mut QueueState) {
        if let Some(w) = state.waker.take() {
            w.wake();
        }
    }

    /// A feed message: queued, or refused when the application is too far behind.
    pub(crate) fn offer_feed(&self, msg: Message) -> Offer {
        let mut s = self.lock();
        if s.ended {
            return Offer::Gone;
        }
        if s.items.len() >= s.capacity {
            s.overflowed = true;
            s.resume_sent = false;
            return Offer::Overflow;
        }
        s.items.push_back(Event::Message(msg));
        Self::wake(&mut s);
        Offer::Queued
    }

    /// A state message: always queued; the oldest queued message makes room.
    pub(crate) fn push_state(&self, msg: Message) {
        let mut s = self.lock();
        if s.ended {
            return;
        }
        if s.items.len() >= s.capacity
            && let Some(i) = s.items.iter().position(|e| matches!(e, Event::Message(_)))
        {
            s.items.remove(i);
        }
        s.items.push_back(Event::Message(msg));
        Self::wake(&mut s);
    }

    /// Live figures: dropped when there is no room, the next window refreshes them.
    pub(crate) fn push_stats(&self, stats: Stats) {
        let mut s = self.lock();
        if s.ended || s.items.len() >= s.capacity {
            return;
        }
        s.items.push_back(Event::Stats(stats));
        Self::wake(&mut s);
    }

    /// An event that must reach the application (gap): room or not.
    pub(crate) fn push_always(&self, event: Event) {
        let mut s = self.lock();
        if s.ended {
            return;
        }
        s.items.push_back(event);
        Self::wake(&mut s);
    }

    /// Ends the stream, after an optional last event.
    pub(crate) fn end(&self, last: Option<Event>) {
        let mut s = self.lock();
        if s.ended {
            return;
        }
        if let Some(event) = last {
            s.items.push_back(event);
        }
        s.ended = true;
        Self::wake(&mut s);
    }

    pub(crate) fn set_epoch(&self, epoch: Option<String>) {
        self.lock().epoch = epoch;
    }

    /// The latest epoch the connection task saw, if any ack carried one.
    pub(crate) fn epoch(&self) -> Option<String> {
        self.lock().epoch.clone()
    }

    /// The connection task renewed a suspended subscription.
    pub(crate) fn clear_overflow(&self) {
        let mut s = self.lock();
        s.overflowed = false;
        s.resume_sent = false;
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Takes the next event; `Ready(None)` once ended and empty. The bool says
    /// whether the application just caught up after an overflow.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> (Poll<Option<Event>>, bool) {
        let mut s = self.lock();
        let item = s.items.pop_front();
        let caught_up = s.overflowed && !s.resume_sent && s.items.len() <= s.capacity / 2;
        if caught_up {
            s.resume_sent = true;
        }
        let poll = match item {
            Some(event) => Poll::Ready(Some(event)),
            None if s.ended => Poll::Ready(None),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        };
        (poll, caught_up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker;
    use serde_json::value::RawValue;

    fn msg(seq: u64) -> Message {
        Message {
            topic: "results.a.b".into(),
            seq,
            prev: seq.saturating_sub(1),
            ts: 0,
            replay: false,
            data: RawValue::from_string("{}".into()).unwrap(),
            delta: false,
        }
    }

    fn pop(q: &SubQueue) -> (Option<Event>, bool) {
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        match q.poll_pop(&mut cx) {
            (Poll::Ready(e), c) => (e, c),
            (Poll::Pending, c) => (None, c),
        }
    }

    fn seq_of(e: Option<Event>) -> u64 {
        match e {
            Some(Event::Message(m)) => m.seq,
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn state_queue_conflates_keeping_the_newest() {
        let q = SubQueue::new(3);
        for s in 1..=10 {
            q.push_state(msg(s));
        }
        assert_eq!(q.len(), 3);
        assert_eq!(
            [seq_of(pop(&q).0), seq_of(pop(&q).0), seq_of(pop(&q).0)],
            [8, 9, 10]
        );
    }

    #[test]
    fn feed_overflow_then_catch_up_is_reported_once() {
        let q = SubQueue::new(4);
        for s in 1..=4 {
            assert_eq!(q.offer_feed(msg(s)), Offer::Queued);
        }
        assert_eq!(q.offer_feed(msg(5)), Offer::Overflow);
        // Stats are dropped when full, a gap is not.
        q.push_stats(Stats {
            topic: "results.a.b".into(),
            audience: 1,
            reactions: Default::default(),
            window_ms: 1000,
        });
        assert_eq!(q.len(), 4);
        let (e, caught_up) = pop(&q);
        assert_eq!((seq_of(e), caught_up), (1, false));
        let (e, caught_up) = pop(&q);
        assert_eq!((seq_of(e), caught_up), (2, true));
        let (e, caught_up) = pop(&q);
        assert_eq!((seq_of(e), caught_up), (3, false));
        q.clear_overflow();
        q.push_always(Event::Gap {
            topic: "results.a.b".into(),
            after_seq: 3,
            before_seq: None,
            epoch_changed: false,
            epoch: None,
        });
        assert_eq!(seq_of(pop(&q).0), 4);
        assert!(matches!(pop(&q).0, Some(Event::Gap { after_seq: 3, .. })));
    }

    #[test]
    fn end_delivers_the_last_event_then_none() {
        let q = SubQueue::new(4);
        q.offer_feed(msg(1));
        q.end(Some(Event::Closed {
            code: Some(ErrorCode::Forbidden),
            reason: "no".into(),
        }));
        assert_eq!(q.offer_feed(msg(2)), Offer::Gone);
        assert_eq!(seq_of(pop(&q).0), 1);
        assert!(matches!(pop(&q).0, Some(Event::Closed { .. })));
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(q.poll_pop(&mut cx).0, Poll::Ready(None)));
    }
}
