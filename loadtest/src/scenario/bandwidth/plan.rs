//! The plan of a run: the topics and subjects, the variants (how a fan
//! receives the hour), what one fan gathers and the last publication it
//! waits for.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

pub(super) const BOARD: &str = "results.bandwidth.ssk-w1500";
pub(super) const CLIPS: &str = "clips.bandwidth.ssk";
pub(super) const NATS_BOARD: &str = "bw.board";
pub(super) const NATS_CLIPS: &str = "bw.clips";
/// How long the fans get after the last publication to receive it all.
pub(super) const DRAIN: Duration = Duration::from_secs(60);
/// Connections opened at once.
pub(super) const CONNECTING: usize = 256;
/// The generated hour's seed: every run replays the same bytes.
pub(super) const SEED: u64 = 2026;

/// One way of receiving the hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Variant {
    Full,
    Delta,
    Deflate,
    DeltaDeflate,
    /// A quarter of the fans in each of the four modes above, on one hub.
    Mixed,
    Nats,
    NatsCompressed,
}

impl Variant {
    pub(super) fn name(self) -> &'static str {
        match self {
            Variant::Full => "tribune, full messages",
            Variant::Delta => "tribune, delta",
            Variant::Deflate => "tribune, permessage-deflate",
            Variant::DeltaDeflate => "tribune, delta + deflate",
            Variant::Mixed => "tribune, mixed (¼ each of the above)",
            Variant::Nats => "nats-server ws",
            Variant::NatsCompressed => "nats-server ws, compression on",
        }
    }

    pub(super) fn delta(self) -> bool {
        matches!(self, Variant::Delta | Variant::DeltaDeflate)
    }

    pub(super) fn deflate(self) -> bool {
        matches!(
            self,
            Variant::Deflate | Variant::DeltaDeflate | Variant::NatsCompressed
        )
    }

    pub(super) fn nats(self) -> bool {
        matches!(self, Variant::Nats | Variant::NatsCompressed)
    }
}

/// What one fan got.
#[derive(Default)]
pub(super) struct Fan {
    pub(super) bytes: u64,
    pub(super) board_bytes: u64,
    pub(super) clip_bytes: u64,
    /// (seq or index, hash of the payload rebuilt), in arrival order.
    pub(super) boards: Vec<(u64, u64)>,
    pub(super) clips: Vec<(u64, u64)>,
    pub(super) deflate: bool,
    pub(super) error: Option<String>,
}

/// The last publication of each topic: a fan is done once it has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Final {
    /// Tribune: the last board's seq; NATS: the number of boards.
    pub(super) board: u64,
    /// Number of clips.
    pub(super) clips: u64,
}

pub(super) fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}
