//! What NATS tells about a stored message in headers: those of direct-get
//! replies (`Nats-Subject`, `Nats-Sequence`, `Nats-Time-Stamp`,
//! `Nats-Num-Pending`) and of a consumer's heartbeats (`Nats-Last-Consumer`),
//! and the RFC 3339 times NATS writes there and in stream info, read with
//! the `time` crate.

use async_nats::Message;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The value of header `name`, if the message has it.
pub(super) fn header<'a>(msg: &'a Message, name: &str) -> Option<&'a str> {
    msg.headers.as_ref()?.get(name).map(|v| v.as_str())
}

/// A numeric header: a sequence or a count.
pub(super) fn header_u64(msg: &Message, name: &str) -> Option<u64> {
    header(msg, name)?.trim().parse().ok()
}

/// The header of a retraction marker: the `seq` it retracts.
pub(super) use tribune_protocol::RETRACT_HEADER;

/// The `seq` a stored message retracts, if it is a retraction marker. A
/// header that is not a number makes no marker: the message is then an
/// ordinary one, whose empty payload the relay drops as not JSON.
pub(super) fn retract_target(msg: &Message) -> Option<u64> {
    header_u64(msg, RETRACT_HEADER)
}

/// `Nats-Time-Stamp`, when the stream stored the message, in Unix
/// milliseconds (the contract's `ts`).
pub(super) fn timestamp_ms(msg: &Message) -> Option<u64> {
    let ns = rfc3339_to_ns(header(msg, "Nats-Time-Stamp")?)?;
    u64::try_from(ns / 1_000_000).ok()
}

/// An RFC 3339 time (`2026-11-25T03:18:55.371628942Z`, or with an offset)
/// in Unix nanoseconds. Pre-1970 times are refused: NATS writes none, and
/// neither an epoch nor a `ts` can be negative.
pub(super) fn rfc3339_to_ns(text: &str) -> Option<u128> {
    let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    u128::try_from(at.unix_timestamp_nanos()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_unix_time() {
        assert_eq!(rfc3339_to_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_to_ns("2026-11-25T03:18:55.371628942Z"),
            Some(1_795_576_735_371_628_942)
        );
        assert_eq!(
            rfc3339_to_ns("2020-01-15T14:22:03.456Z"),
            Some(1_579_098_123_456_000_000)
        );
        assert_eq!(
            rfc3339_to_ns("2020-01-15T15:22:03.456+01:00"),
            rfc3339_to_ns("2020-01-15T14:22:03.456Z")
        );
        assert_eq!(
            rfc3339_to_ns("2024-02-29T23:59:59Z"),
            Some(1_709_251_199_000_000_000)
        );
        for bad in [
            "",
            "2020-01-15",
            "2020-13-01T00:00:00Z",
            "2020-01-15T14:22:03",
            "1969-12-31T23:59:59Z",
            "2020-01-15T14:22:03.Z",
        ] {
            assert_eq!(rfc3339_to_ns(bad), None, "{bad}");
        }
    }
}
