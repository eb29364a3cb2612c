//! WebSocket close codes (PROTOCOL.md section 6) and the client's duty after each.

/// A close code the hub sends, or a client receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: CloseCode = CloseCode(1000);
    pub const DRAINING: CloseCode = CloseCode(1001);
    /// Same code as `DRAINING`: the hub goes away from this peer (no sign of
    /// life for two heartbeats, or the bus's epoch changed).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    pub const BINARY_FRAME: CloseCode = CloseCode(1003);
    /// A text frame that is not UTF-8 (RFC 6455 section 7.4.1).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    pub const POLICY: CloseCode = CloseCode(1008);
    pub const FRAME_TOO_LARGE: CloseCode = CloseCode(1009);
    pub const INTERNAL: CloseCode = CloseCode(1011);
    pub const SLOW_CONSUMER: CloseCode = CloseCode(4008);
    pub const FLOOD: CloseCode = CloseCode(4029);

    /// What a client should do after this close.
    pub fn reconnect(self) -> Reconnect {
        match self.0 {
            1000 | 1008 => Reconnect::Never,
            4008 => Reconnect::Immediately,
            _ => Reconnect::WithBackoff,
        }
    }

    /// A short reason string for the close frame.
    pub fn reason(self) -> &'static str {
        match self.0 {
            1000 => "normal",
            1001 => "node draining",
            1002 => "protocol error",
            1003 => "binary frames are not accepted",
            1007 => "text frame is not UTF-8",
            1008 => "policy violation",
            1009 => "frame too large",
            1011 => "internal error",
            4008 => "slow consumer: resume with since",
            4029 => "flood: reconnect after backoff",
            _ => "",
        }
    }
}

/// A client's duty after a close (PROTOCOL.md section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// 1000 and 1008: do not reconnect on your own.
    Never,
    /// 4008: resume at once with `since`.
    Immediately,
    /// Everything else: jittered exponential backoff.
    WithBackoff,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_rules() {
        assert_eq!(CloseCode::NORMAL.reconnect(), Reconnect::Never);
        assert_eq!(CloseCode::POLICY.reconnect(), Reconnect::Never);
        assert_eq!(CloseCode::SLOW_CONSUMER.reconnect(), Reconnect::Immediately);
        for c in [1001, 1003, 1009, 1011, 4029, 1006] {
            assert_eq!(CloseCode(c).reconnect(), Reconnect::WithBackoff, "{c}");
        }
    }
}
