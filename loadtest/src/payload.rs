//! The load-test payload: a JSON object carrying the per-topic counter and
//! the send time, padded to the size asked for.
//!
//! `{"c":<counter>,"t":<send time, µs since the Unix epoch>,"p":"xxx…"}`
//!
//! The counter starts at 1 on every topic of a run and grows by one per
//! publication, so a receiver can tell a loss (a hole) from a duplicate
//! (a counter seen before) without knowing the bus's sequence numbers.
//! The fields come first and in this order so that [`parse`] reads them
//! without a JSON parser; anything else falls back to serde.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// Smallest `size` that [`build`] always honours exactly: the fields with
/// their longest numbers and empty padding take 58 bytes.
pub const MIN_SIZE: usize = 64;

/// Microseconds since the Unix epoch, the clock every process shares.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Writes the payload for `counter` sent at `sent_us`, `size` bytes long
/// (or as short as possible when `size` is below what the fields need).
pub fn build(out: &mut Vec<u8>, counter: u64, sent_us: u64, size: usize) {
    out.clear();
    let mut num = itoa_buf();
    out.extend_from_slice(b"{\"c\":");
    out.extend_from_slice(fmt_u64(&mut num, counter));
    out.extend_from_slice(b",\"t\":");
    out.extend_from_slice(fmt_u64(&mut num, sent_us));
    out.extend_from_slice(b",\"p\":\"");
    let pad = size.saturating_sub(out.len() + 2);
    out.resize(out.len() + pad, b'x');
    out.extend_from_slice(b"\"}");
}

type NumBuf = [u8; 20];

fn itoa_buf() -> NumBuf {
    [0; 20]
}

fn fmt_u64(buf: &mut NumBuf, mut n: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// What a receiver reads from a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub counter: u64,
    pub sent_us: u64,
}

/// Reads counter and send time; `None` when the payload is not ours.
pub fn parse(data: &[u8]) -> Option<Stamp> {
    fast(data).or_else(|| slow(data))
}

fn fast(data: &[u8]) -> Option<Stamp> {
    let rest = data.strip_prefix(b"{\"c\":")?;
    let (counter, rest) = digits(rest)?;
    let rest = rest.strip_prefix(b",\"t\":")?;
    let (sent_us, rest) = digits(rest)?;
    if !(rest.starts_with(b",") || rest.starts_with(b"}")) {
        return None;
    }
    Some(Stamp { counter, sent_us })
}

/// Reads an unsigned decimal number at the start of `s`.
pub(crate) fn digits(s: &[u8]) -> Option<(u64, &[u8])> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 19 {
        return None;
    }
    let mut v = 0u64;
    for b in &s[..n] {
        v = v * 10 + u64::from(b - b'0');
    }
    Some((v, &s[n..]))
}

fn slow(data: &[u8]) -> Option<Stamp> {
    #[derive(Deserialize)]
    struct P {
        c: u64,
        t: u64,
    }
    let p: P = serde_json::from_slice(data).ok()?;
    Some(Stamp {
        counter: p.c,
        sent_us: p.t,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_exact_sizes_of_valid_json() {
        let mut out = Vec::new();
        for size in [0, 10, MIN_SIZE, 200, 4096] {
            build(&mut out, 42, 1_732_400_114_204_736, size);
            if size >= MIN_SIZE {
                assert_eq!(out.len(), size);
            }
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["c"], 42);
            assert_eq!(v["t"], 1_732_400_114_204_736u64);
            assert_eq!(
                parse(&out),
                Some(Stamp {
                    counter: 42,
                    sent_us: 1_732_400_114_204_736
                })
            );
        }
        build(&mut out, 0, 0, 0);
        assert_eq!(
            parse(&out),
            Some(Stamp {
                counter: 0,
                sent_us: 0
            })
        );
    }

    #[test]
    fn other_layouts_fall_back_to_serde() {
        let s = br#"{ "t": 5, "extra": [1], "c": 9 }"#;
        assert_eq!(
            parse(s),
            Some(Stamp {
                counter: 9,
                sent_us: 5
            })
        );
        assert_eq!(parse(br#"{"kind":"clip"}"#), None);
        assert_eq!(parse(b"not json"), None);
    }
}
