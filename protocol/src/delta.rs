//! Fossil deltas between two payloads of a `state` topic (PROTOCOL.md
//! section 4, "Delta updates").
//!
//! The format is Fossil's (the `fossil-delta` crate and npm package,
//! Centrifugo and Ably use it): a header `<target size>\n`, then commands
//! `<n>@<offset>,` (copy `n` bytes of the base from `offset`) and `<n>:<n
//! bytes>` (insert those bytes), then `<checksum>;`, numbers in Fossil's
//! base 64. The hub makes a delta once per message per topic ([`make`]); the
//! SDKs apply it ([`apply`]), which checks the size and the checksum.
//!
//! A delta travels as a JSON string, so it must be valid UTF-8. Fossil cuts
//! wherever bytes match, also inside a multi-byte character (two names that
//! share the first byte of an `é`), and an insert that starts or ends there
//! would carry half a character. [`make`] therefore moves every copy's ends
//! to character boundaries of the target: the bytes it trims become inserts,
//! so every insert is a whole run of the target's characters, and the delta
//! is ASCII commands around valid UTF-8. Offsets and sizes count UTF-8 bytes.

/// Fossil's base-64 digits.
const DIGITS: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";

/// Why a delta could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("delta is malformed")]
    Malformed,
    #[error("delta copies past the end of its base")]
    BadCopy,
    #[error("delta output does not have the announced size")]
    BadSize,
    #[error("delta output fails its checksum")]
    BadChecksum,
}

/// One command of a delta, with insert bytes borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command<'a> {
    Copy { offset: usize, len: usize },
    Insert(&'a [u8]),
}

/// A parsed delta: the target size, its commands and the checksum.
struct Parsed<'a> {
    size: usize,
    commands: Vec<Command<'a>>,
    checksum: u32,
}

/// Reads a base-64 number at the start of `s`; `None` without a digit or
/// past `usize`.
fn read_int(s: &[u8]) -> Option<(usize, &[u8])> {
    let mut value: usize = 0;
    let mut n = 0;
    for &b in s {
        let Some(d) = DIGITS.iter().position(|&x| x == b) else {
            break;
        };
        value = value.checked_mul(64)?.checked_add(d)?;
        n += 1;
    }
    (n > 0).then(|| (value, &s[n..]))
}

fn write_int(out: &mut Vec<u8>, mut v: usize) {
    let mut buf = [0u8; 12];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = DIGITS[v & 63];
        v >>= 6;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Fossil's checksum: the big-endian 32-bit words of `data` (zero-padded)
/// summed modulo 2^32.
fn checksum(data: &[u8]) -> u32 {
    let mut sum = 0u32;
    for chunk in data.chunks(4) {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        sum = sum.wrapping_add(u32::from_be_bytes(word));
    }
    sum
}

fn parse(delta: &[u8]) -> Result<Parsed<'_>, DeltaError> {
    let (size, rest) = read_int(delta).ok_or(DeltaError::Malformed)?;
    let mut rest = rest.strip_prefix(b"\n").ok_or(DeltaError::Malformed)?;
    let mut commands = Vec::new();
    loop {
        let (n, after) = read_int(rest).ok_or(DeltaError::Malformed)?;
        match after.split_first() {
            Some((b'@', after)) => {
                let (offset, after) = read_int(after).ok_or(DeltaError::Malformed)?;
                rest = after.strip_prefix(b",").ok_or(DeltaError::Malformed)?;
                commands.push(Command::Copy { offset, len: n });
            }
            Some((b':', after)) => {
                if after.len() < n {
                    return Err(DeltaError::Malformed);
                }
                let (bytes, after) = after.split_at(n);
                commands.push(Command::Insert(bytes));
                rest = after;
            }
            Some((b';', [])) => {
                let checksum = u32::try_from(n).map_err(|_| DeltaError::Malformed)?;
                return Ok(Parsed {
                    size,
                    commands,
                    checksum,
                });
            }
            _ => return Err(DeltaError::Malformed),
        }
    }
}

/// Rebuilds the target from `base` and `delta`, checking every copy, the
/// announced size and the checksum. Never panics on hostile input.
pub fn apply(base: &[u8], delta: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let parsed = parse(delta)?;
    // The size is the sender's claim: reserve no more than the delta can make.
    let mut out = Vec::with_capacity(parsed.size.min(base.len() + delta.len()));
    for command in parsed.commands {
        match command {
            Command::Copy { offset, len } => {
                let end = offset.checked_add(len).ok_or(DeltaError::BadCopy)?;
                out.extend_from_slice(base.get(offset..end).ok_or(DeltaError::BadCopy)?);
            }
            Command::Insert(bytes) => out.extend_from_slice(bytes),
        }
        if out.len() > parsed.size {
            return Err(DeltaError::BadSize);
        }
    }
    if out.len() != parsed.size {
        return Err(DeltaError::BadSize);
    }
    if checksum(&out) != parsed.checksum {
        return Err(DeltaError::BadChecksum);
    }
    Ok(out)
}

/// The Fossil delta from `base` to `target`, its copies cut at character
/// boundaries of `target` (see the module doc), so that it is valid UTF-8.
/// Checked by applying it before it is returned: a delta that would not
/// rebuild `target` exactly is never sent (`None`; the caller sends the
/// full payload).
pub fn make(base: &[u8], target: &str) -> Option<String> {
    // The crate's argument order is (target, base).
    let raw = fossil_delta::delta(target.as_bytes(), base);
    let parsed = parse(&raw).ok()?;
    let t = target.as_bytes();
    let boundary = |i: usize| i >= t.len() || (t[i] & 0xC0) != 0x80;
    let mut out = Vec::with_capacity(raw.len() + 16);
    write_int(&mut out, t.len());
    out.push(b'\n');
    // Output position, and where the pending insert (target bytes) began.
    let mut pos = 0usize;
    let mut insert_from = 0usize;
    let flush_insert = |out: &mut Vec<u8>, from: usize, to: usize| {
        if to > from {
            write_int(out, to - from);
            out.push(b':');
            out.extend_from_slice(&t[from..to]);
        }
    };
    for command in &parsed.commands {
        match *command {
            Command::Insert(bytes) => pos += bytes.len(),
            Command::Copy { offset, len } => {
                let mut start = pos;
                while start < pos + len && !boundary(start) {
                    start += 1;
                }
                let mut end = pos + len;
                while end > start && !boundary(end) {
                    end -= 1;
                }
                if end > start {
                    flush_insert(&mut out, insert_from, start);
                    write_int(&mut out, end - start);
                    out.push(b'@');
                    write_int(&mut out, offset + (start - pos));
                    out.push(b',');
                    insert_from = end;
                }
                pos += len;
            }
        }
    }
    if pos != t.len() {
        return None;
    }
    flush_insert(&mut out, insert_from, t.len());
    write_int(&mut out, checksum(t) as usize);
    out.push(b';');
    let delta = String::from_utf8(out).ok()?;
    (apply(base, delta.as_bytes()).ok()?.as_slice() == t).then_some(delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(names: &[&str], times: &[u32]) -> String {
        let rows: Vec<String> = names
            .iter()
            .zip(times)
            .enumerate()
            .map(|(i, (n, t))| format!(r#"{{"rank":{},"name":"{n}","time":{t}}}"#, i + 1))
            .collect();
        format!(r#"{{"rows":[{}]}}"#, rows.join(","))
    }

    #[test]
    fn round_trips_and_is_small() {
        let names = [
            "Ivanie Blondin",
            "Joy Beune",
            "Miho Takagi",
            "Antoinette Rijpma",
        ];
        let a = board(&names, &[1000, 2000, 3000, 4000]);
        let b = board(&names, &[1000, 2000, 3001, 4000]);
        let d = make(a.as_bytes(), &b).unwrap();
        assert!(d.len() < b.len() / 3, "{} vs {}", d.len(), b.len());
        assert_eq!(apply(a.as_bytes(), d.as_bytes()).unwrap(), b.as_bytes());
    }

    #[test]
    fn cuts_inside_characters_are_moved_to_boundaries() {
        // "é" is C3 A9 and "è" C3 A8: the raw delta copies C3 and inserts a
        // lone A8, which is not UTF-8. The made delta inserts the whole "è".
        let base = format!("{}é{}", "x".repeat(40), "y".repeat(40));
        let target = format!("{}è{}", "x".repeat(40), "y".repeat(40));
        let raw = fossil_delta::delta(target.as_bytes(), base.as_bytes());
        assert!(std::str::from_utf8(&raw).is_err(), "the case this guards");
        let d = make(base.as_bytes(), &target).unwrap();
        assert_eq!(
            apply(base.as_bytes(), d.as_bytes()).unwrap(),
            target.as_bytes()
        );
        for (a, b) in [
            ("Zoë 🇳🇱 Ødegård", "Zoé 🇳🇴 Ødegård"),
            (
                "😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀",
                "😀😀😀😀😀😀😁😀😀😀😀😀😀😀😀😀😀😀",
            ),
            ("", "ü"),
            ("ü", ""),
        ] {
            let a = a.repeat(5);
            let b = b.repeat(5);
            let d = make(a.as_bytes(), &b).unwrap();
            assert_eq!(apply(a.as_bytes(), d.as_bytes()).unwrap(), b.as_bytes());
        }
    }

    #[test]
    fn apply_refuses_bad_deltas() {
        let a = "the quick brown fox jumps over the lazy dog".repeat(3);
        let b = a.replace("lazy", "sleepy");
        let d = make(a.as_bytes(), &b).unwrap();
        assert_eq!(
            apply(&a.as_bytes()[..20], d.as_bytes()),
            Err(DeltaError::BadCopy)
        );
        let mut other = a.clone().into_bytes();
        other[2] = b'E';
        assert_eq!(apply(&other, d.as_bytes()), Err(DeltaError::BadChecksum));
        for bad in [
            "",
            "\n",
            "1\n1:",
            "2\n1:x1;",
            "1\n1:x",
            "1\n1:x0;junk",
            "1\n9@0,1;",
            "Z\n",
        ] {
            assert!(apply(b"abc", bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(
            apply(b"", b"1\n1:x1W;").map(|_| ()),
            Err(DeltaError::BadChecksum)
        );
    }

    #[test]
    fn checksum_matches_fossil() {
        // The crate's checksum, read back from its own delta of an empty base.
        for t in ["", "a", "ab", "abc", "abcd", "abcde", "ünïcødé"] {
            let raw = fossil_delta::delta(t.as_bytes(), b"");
            let parsed = parse(&raw).unwrap();
            assert_eq!(parsed.checksum, checksum(t.as_bytes()), "{t:?}");
        }
    }
}
