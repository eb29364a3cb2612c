//! The headers of a stored message, as direct gets and republished
//! messages carry them: `Nats-Subject`, `Nats-Sequence`, `Nats-Time-Stamp`
//! (RFC 3339), `Nats-Last-Sequence`, `Nats-Num-Pending`.

use async_nats::Message;

pub(super) fn header<'a>(msg: &'a Message, name: &str) -> Option<&'a str> {
    msg.headers.as_ref()?.get(name).map(|v| v.as_str())
}

pub(super) fn header_u64(msg: &Message, name: &str) -> Option<u64> {
    header(msg, name)?.trim().parse().ok()
}

/// Parses an RFC 3339 timestamp (`2026-11-25T03:18:55.371628942Z`, or with an
/// offset) into Unix nanoseconds. Pre-1970 times are refused.
pub(super) fn rfc3339_to_ns(text: &str) -> Option<u128> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &text[start..i];
        if digits.is_empty() {
            return None;
        }
        let mut padded = digits.chars().take(9).collect::<String>();
        while padded.len() < 9 {
            padded.push('0');
        }
        nanos = padded.parse().ok()?;
    }
    let offset_secs = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let secs = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let total = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    u128::try_from(total).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
