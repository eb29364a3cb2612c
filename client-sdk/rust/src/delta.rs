//! Delta updates on the client side: a `state` subscription asks for Fossil
//! deltas (`subscribe` with `"delta":"fossil"`), keeps the payload it last
//! delivered as the base, and turns every `"delta":true` message back into
//! the full payload before the application sees it (PROTOCOL.md section 4).
//!
//! A delta is applied only to the message its `prev` names, and the result
//! must pass the delta's size and checksum checks and parse as JSON;
//! anything else is a [`Mismatch`], after which the connection resubscribes
//! with `since` and the hub replays the latest state in full. A wrong board
//! is never shown.

use serde_json::value::RawValue;
use tribune_protocol::Message;
use tribune_protocol::delta;

/// The payload a state subscription delivered last: the next delta's base.
#[derive(Debug, Clone)]
pub(crate) struct Base {
    seq: u64,
    data: Box<RawValue>,
}

impl Base {
    /// The base after delivering `msg` (a full message by then).
    pub(crate) fn of(msg: &Message) -> Self {
        Self {
            seq: msg.seq,
            data: msg.data.clone(),
        }
    }
}

/// Why a delta message could not be turned back into its payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Mismatch {
    #[error("delta on {seq} needs {prev}, this subscription holds {held:?}")]
    WrongBase {
        seq: u64,
        prev: u64,
        held: Option<u64>,
    },
    #[error("delta on {seq} is not a JSON string")]
    NotAString { seq: u64 },
    #[error("delta on {seq}: {why}")]
    Rebuild { seq: u64, why: delta::DeltaError },
    #[error("delta on {seq} rebuilds something that is not JSON")]
    NotJson { seq: u64 },
}

/// Replaces a delta message's `data` by the payload it stands for; a full
/// message is left as it is.
pub(crate) fn resolve(base: Option<&Base>, msg: &mut Message) -> Result<(), Mismatch> {
    if !msg.delta {
        return Ok(());
    }
    let seq = msg.seq;
    let base = match base {
        Some(b) if b.seq == msg.prev => b,
        _ => {
            return Err(Mismatch::WrongBase {
                seq,
                prev: msg.prev,
                held: base.map(|b| b.seq),
            });
        }
    };
    let d: String =
        serde_json::from_str(msg.data.get()).map_err(|_| Mismatch::NotAString { seq })?;
    let bytes = delta::apply(base.data.get().as_bytes(), d.as_bytes())
        .map_err(|why| Mismatch::Rebuild { seq, why })?;
    let text = String::from_utf8(bytes).map_err(|_| Mismatch::NotJson { seq })?;
    msg.data = RawValue::from_string(text).map_err(|_| Mismatch::NotJson { seq })?;
    msg.delta = false;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64, prev: u64, delta: bool, data: &str) -> Message {
        Message {
            topic: "results.a.b".into(),
            seq,
            prev,
            ts: 1,
            replay: false,
            delta,
            data: RawValue::from_string(data.into()).unwrap(),
        }
    }

    #[test]
    fn rebuilds_from_the_base_its_prev_names() {
        let a = r#"{"rows":[{"name":"Martina Sáblíková","time":"1:55.01"}],"n":"🇨🇿"}"#;
        let b = r#"{"rows":[{"name":"Martina Sáblíková","time":"1:54.99"}],"n":"🇨🇿"}"#;
        let d = delta::make(a.as_bytes(), b).unwrap();
        let base = Base::of(&message(4, 1, false, a));
        let mut msg = message(9, 4, true, &serde_json::to_string(&d).unwrap());
        resolve(Some(&base), &mut msg).unwrap();
        assert_eq!((msg.data.get(), msg.delta), (b, false));
        let mut full = message(10, 9, false, a);
        resolve(None, &mut full).unwrap();
        assert_eq!(full.data.get(), a, "full messages pass untouched");
    }

    #[test]
    fn every_mismatch_is_refused() {
        let a = r#"{"time":"1:55.01","name":"a long enough name to copy from"}"#;
        let b = r#"{"time":"1:54.99","name":"a long enough name to copy from"}"#;
        let d = serde_json::to_string(&delta::make(a.as_bytes(), b).unwrap()).unwrap();
        let base = Base::of(&message(4, 1, false, a));
        let other = Base::of(&message(4, 1, false, &a.replace("long", "LONG")));
        assert!(matches!(
            resolve(None, &mut message(9, 4, true, &d)),
            Err(Mismatch::WrongBase { held: None, .. })
        ));
        assert!(matches!(
            resolve(Some(&base), &mut message(9, 5, true, &d)),
            Err(Mismatch::WrongBase { held: Some(4), .. })
        ));
        assert!(matches!(
            resolve(Some(&other), &mut message(9, 4, true, &d)),
            Err(Mismatch::Rebuild { .. })
        ));
        assert!(matches!(
            resolve(Some(&base), &mut message(9, 4, true, "{}")),
            Err(Mismatch::NotAString { .. })
        ));
        // A well-formed delta whose output is not JSON.
        let not_json = serde_json::to_string(&delta::make(a.as_bytes(), "{oops").unwrap()).unwrap();
        assert_eq!(
            resolve(Some(&base), &mut message(9, 4, true, &not_json)),
            Err(Mismatch::NotJson { seq: 9 })
        );
    }
}
