//! Where one subscription stands in its topic: continuity checks and resume
//! bookkeeping, as pure logic (no socket, no clock) so it is unit-tested alone.
//!
//! The rules come from PROTOCOL.md section 5:
//! - per topic, `seq` grows; a message at or below the last one delivered is a
//!   duplicate (a resume may overlap) and is dropped;
//! - on a `feed`, a message's `prev` must not be above the position held (the
//!   last seq delivered, or the `ack`'s seq): a higher `prev` means messages
//!   were missed, and the subscription is renewed with `since`. A *lower*
//!   `prev` is history that aged out on the bus: removal, not loss;
//! - a resume (`since` + `epoch`) answered `recovered: false` on a feed is an
//!   explicit gap for the application; on a `state` topic it is not, because
//!   the replay ends on the latest state anyway;
//! - a `gap` frame (`after`, `before`) on a feed is the hub saying that the
//!   bus lost what lies between: it is reported to the application, and the
//!   message `before` that follows is let through whatever its `prev` (the
//!   bus's, which may be anything below `before`). Its `after` must be the
//!   position held: a higher one means something was missed before the hole,
//!   a discontinuity like any other.
//! - a `retract` frame (PROTOCOL.md section 13) takes a place in the chain
//!   like a message: `at` is its seq, `prev` its prev; it is judged and
//!   advanced past the same way, so the next message's `prev` (the
//!   retraction's `at`) is no gap.
//!
//! Files: `state.rs`, the [`Tracker`] itself and its [`Phase`];
//! `resume.rs`, its life on the hub (`subscribe` frames, acks, refusals,
//! disconnects, suspension); `continuity.rs`, the judging of messages,
//! retractions and `gap` frames; `verdicts.rs`, what those judgements
//! answer; `tests.rs`, the unit tests.

mod continuity;
mod resume;
mod state;
mod verdicts;

#[cfg(test)]
mod tests;

pub(crate) use state::{Phase, Tracker};
pub(crate) use verdicts::{GapVerdict, Verdict};
