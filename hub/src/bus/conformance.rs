//! The bus conformance suite: the [`Bus`] and [`SideChannel`] contracts as
//! test functions that run against every implementation (the embedded bus in
//! its unit tests, NATS in `tests/tests/nats_conformance.rs`), both through
//! [`bus_conformance_tests!`](crate::bus_conformance_tests), so that the two
//! cannot drift apart. Built for the hub's own tests and, with the
//! `test-support` feature, for the integration tests; never in the binary.
//!
//! Each function takes a bus and a unique token for its topics (so that one
//! NATS stream can serve several runs) and panics on a breach. Topics live in
//! the `clips` (retention 100) and `results` (retention 10) namespaces.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use tribune_protocol::Topic;

use super::{After, Bus, BusMessage, LiveFeed, SideChannel};

fn topic(ns: &str, unique: &str, name: &str) -> Topic {
    Topic::new(&format!("{ns}.{unique}.{name}")).expect("valid test topic")
}

async fn next(feed: &mut LiveFeed) -> BusMessage {
    tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .expect("a live message within 5 s")
        .expect("the live feed stays open")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// One global sequence, per-topic `prev`, storage `ts`, payload untouched.
pub async fn sequence_prev_and_ts(bus: &dyn Bus, unique: &str) {
    let a = topic("clips", unique, "seq-a");
    let b = topic("clips", unique, "seq-b");
    let before = now_ms();
    let s1 = bus
        .publish(&a, Bytes::from_static(b"{\"n\":1}"), None)
        .await
        .unwrap();
    let s2 = bus
        .publish(&b, Bytes::from_static(b"{\"n\":2}"), None)
        .await
        .unwrap();
    let s3 = bus
        .publish(&a, Bytes::from_static(b"{\"n\":3}"), None)
        .await
        .unwrap();
    assert!(
        s1 < s2 && s2 < s3,
        "one sequence for all topics: {s1} {s2} {s3}"
    );
    let got = bus.last(&a, 10).await.unwrap();
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![s1, s3]);
    assert_eq!(got[0].prev, 0, "first message of a topic has prev 0");
    assert_eq!(
        got[1].prev, s1,
        "prev is the topic's previous seq, not the global one"
    );
    for m in &got {
        assert_eq!(m.topic, a);
        assert!(
            m.ts + 5_000 >= before && m.ts <= now_ms() + 5_000,
            "ts is storage time in ms"
        );
    }
    assert_eq!(got[1].data, Bytes::from_static(b"{\"n\":3}"));
}

/// The payload comes back byte for byte, whatever it is (validation is the relay's).
pub async fn payload_byte_for_byte(bus: &dyn Bus, unique: &str) {
    let t = topic("clips", unique, "bytes");
    let odd = Bytes::from_static("{ \"b\" : 1,\n\t\"a\":[ ] , \"é\":\"\\u00e9\" }".as_bytes());
    let broken = Bytes::from_static(b"{not json");
    bus.publish(&t, odd.clone(), None).await.unwrap();
    bus.publish(&t, broken.clone(), None).await.unwrap();
    let got = bus.last(&t, 10).await.unwrap();
    assert_eq!(got[0].data, odd);
    assert_eq!(got[1].data, broken);
}

/// A retraction marker is a stored message of its topic (own `seq`, `prev`,
/// empty payload) naming its target, in live feeds and every history read;
/// retracting the same message again within the window stores one marker;
/// the retracted message stays stored byte for byte (the relay hides it).
pub async fn retraction_markers(bus: &dyn Bus, unique: &str) {
    let t = topic("clips", unique, "retract");
    let mut feed = bus.live(&t).await.unwrap();
    let first = bus
        .publish(&t, Bytes::from_static(b"{\"n\":1}"), None)
        .await
        .unwrap();
    let marker = bus.retract(&t, first).await.unwrap();
    assert!(marker > first);
    assert_eq!(bus.retract(&t, first).await.unwrap(), marker, "stored once");
    let after = bus
        .publish(&t, Bytes::from_static(b"{\"n\":2}"), None)
        .await
        .unwrap();
    let live: Vec<BusMessage> = vec![
        next(&mut feed).await,
        next(&mut feed).await,
        next(&mut feed).await,
    ];
    let shape = |m: &BusMessage| (m.seq, m.retracts, m.data.clone());
    let want = vec![
        (first, None, Bytes::from_static(b"{\"n\":1}")),
        (marker, Some(first), Bytes::new()),
        (after, None, Bytes::from_static(b"{\"n\":2}")),
    ];
    assert_eq!(live.iter().map(shape).collect::<Vec<_>>(), want);
    assert_eq!((live[1].prev, live[2].prev), (first, marker));
    let last = bus.last(&t, 10).await.unwrap();
    assert_eq!(last.iter().map(shape).collect::<Vec<_>>(), want);
    assert_eq!((last[1].prev, last[2].prev), (first, marker));
    let read = bus.after(&t, first, 10).await.unwrap();
    assert_eq!(
        read.messages.iter().map(shape).collect::<Vec<_>>(),
        want[1..]
    );
    assert!(!read.hole);
}

/// Live delivery: in order, only the subscribed topic, with `seq` and `prev`.
pub async fn live_delivery(bus: &dyn Bus, unique: &str) {
    let a = topic("clips", unique, "live-a");
    let b = topic("clips", unique, "live-b");
    let mut feed = bus.live(&a).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(
            bus.publish(&a, Bytes::from(format!("{{\"i\":{i}}}")), None)
                .await
                .unwrap(),
        );
        bus.publish(&b, Bytes::from_static(b"{}"), None)
            .await
            .unwrap();
    }
    let mut prev = 0;
    for (i, seq) in sent.iter().enumerate() {
        let m = next(&mut feed).await;
        assert_eq!(m.topic, a);
        assert_eq!(m.seq, *seq);
        assert_eq!(m.prev, prev);
        assert_eq!(m.data, Bytes::from(format!("{{\"i\":{i}}}")));
        prev = m.seq;
    }
    drop(feed);
    // Publishing after the feed is gone must still work.
    bus.publish(&a, Bytes::from_static(b"{}"), None)
        .await
        .unwrap();
}

/// A feed opened on a topic with history yields only what is stored after
/// it opened; its first `prev` is exact or 0 (unknown), every later one exact.
pub async fn live_feed_after_history(bus: &dyn Bus, unique: &str) {
    let t = topic("clips", unique, "live-after");
    let mut before = 0;
    for _ in 0..2 {
        before = bus
            .publish(&t, Bytes::from_static(b"{}"), None)
            .await
            .unwrap();
    }
    let mut feed = bus.live(&t).await.unwrap();
    let s3 = bus
        .publish(&t, Bytes::from_static(b"{\"n\":3}"), None)
        .await
        .unwrap();
    let s4 = bus
        .publish(&t, Bytes::from_static(b"{\"n\":4}"), None)
        .await
        .unwrap();
    let first = next(&mut feed).await;
    assert_eq!(first.seq, s3, "nothing stored before the feed opened");
    assert!(
        first.prev == before || first.prev == 0,
        "the first prev is exact or unknown: {}",
        first.prev
    );
    let second = next(&mut feed).await;
    assert_eq!((second.seq, second.prev), (s4, s3));
}

/// `last` gives the newest n oldest first; `after` gives what follows a seq.
pub async fn history_reads(bus: &dyn Bus, unique: &str) {
    let t = topic("results", unique, "history");
    let mut seqs = Vec::new();
    for i in 0..15 {
        seqs.push(
            bus.publish(&t, Bytes::from(format!("{i}")), None)
                .await
                .unwrap(),
        );
    }
    let last3 = bus.last(&t, 3).await.unwrap();
    assert_eq!(
        last3.iter().map(|m| m.seq).collect::<Vec<_>>(),
        seqs[12..].to_vec()
    );
    assert_eq!(last3[0].prev, seqs[11]);
    let last10 = bus.last(&t, 10).await.unwrap();
    assert_eq!(
        last10.iter().map(|m| m.seq).collect::<Vec<_>>(),
        seqs[5..].to_vec(),
        "at least the namespace's retention is kept"
    );
    let after = bus.after(&t, seqs[10], 3).await.unwrap();
    assert_eq!(
        after.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        seqs[11..14].to_vec()
    );
    assert_eq!(after.messages[0].prev, seqs[10]);
    assert!(!after.hole, "nothing was removed after seqs[10]");
    assert_eq!(bus.after(&t, seqs[14], 10).await.unwrap(), After::default());
    let empty = topic("results", unique, "never");
    assert!(bus.last(&empty, 5).await.unwrap().is_empty());
    assert_eq!(bus.after(&empty, 0, 5).await.unwrap(), After::default());
}

/// A read after a message that was removed says `hole`; a read that follows
/// on from what is stored does not. `HOLE_DEPTH` messages are more than
/// either bus keeps of a `results` topic in these tests (the embedded bus
/// 10, the NATS stream 100 per subject).
pub async fn removed_messages_are_a_hole(bus: &dyn Bus, unique: &str) {
    const HOLE_DEPTH: usize = 105;
    let t = topic("results", unique, "evicted");
    let mut seqs = Vec::new();
    for i in 0..HOLE_DEPTH {
        seqs.push(
            bus.publish(&t, Bytes::from(format!("{i}")), None)
                .await
                .unwrap(),
        );
    }
    let from_removed = bus.after(&t, seqs[0], 5).await.unwrap();
    assert!(from_removed.hole, "seqs[0] and its successors were removed");
    assert!(from_removed.messages[0].seq > seqs[1]);
    let from_start = bus.after(&t, 0, 5).await.unwrap();
    assert!(from_start.hole, "the topic's first messages were removed");
    let kept = bus.after(&t, seqs[HOLE_DEPTH - 3], 5).await.unwrap();
    assert!(!kept.hole);
    assert_eq!(
        kept.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        seqs[HOLE_DEPTH - 2..].to_vec()
    );
    // A short topic lost nothing: reading it from the start is no hole.
    let short = topic("results", unique, "short");
    for i in 0..3 {
        bus.publish(&short, Bytes::from(format!("{i}")), None)
            .await
            .unwrap();
    }
    let whole = bus.after(&short, 0, 5).await.unwrap();
    assert_eq!((whole.messages.len(), whole.hole), (3, false));
}

/// One batched answer with the last seq of every topic that has messages.
pub async fn last_seqs_batched(bus: &dyn Bus, unique: &str) {
    let topics: Vec<Topic> = (0..40)
        .map(|i| topic("clips", unique, &format!("ls{i}")))
        .collect();
    let mut expected = std::collections::HashMap::new();
    for (i, t) in topics.iter().enumerate().skip(1) {
        let mut seq = 0;
        for _ in 0..(i % 3 + 1) {
            seq = bus
                .publish(t, Bytes::from_static(b"1"), None)
                .await
                .unwrap();
        }
        expected.insert(t.clone(), seq);
    }
    let got = bus.last_seqs(&topics).await.unwrap();
    assert_eq!(got, expected, "topics without messages are absent");
}

/// A repeated message id is stored once and answers the first seq.
pub async fn duplicate_publications_stored_once(bus: &dyn Bus, unique: &str) {
    let t = topic("clips", unique, "dedupe");
    let id = format!("{unique}-msg-1");
    let s1 = bus
        .publish(&t, Bytes::from_static(b"{\"x\":1}"), Some(id.clone()))
        .await
        .unwrap();
    let s2 = bus
        .publish(&t, Bytes::from_static(b"{\"x\":1}"), Some(id))
        .await
        .unwrap();
    assert_eq!(s1, s2);
    assert_eq!(bus.last(&t, 10).await.unwrap().len(), 1);
    let s3 = bus
        .publish(&t, Bytes::from_static(b"{\"x\":1}"), None)
        .await
        .unwrap();
    assert!(s3 > s1, "without an id, a publication is stored again");
}

/// Fans' publications never enter what fans read.
pub async fn inbound_stays_out_of_the_stream(bus: &(impl Bus + SideChannel), unique: &str) {
    let t = topic("clips", unique, "inbound");
    let mut feed = bus.live(&t).await.unwrap();
    bus.publish_inbound(&t, Bytes::from_static(b"{\"fan\":true}"))
        .await
        .unwrap();
    let marker = bus
        .publish(&t, Bytes::from_static(b"{\"editor\":true}"), None)
        .await
        .unwrap();
    assert_eq!(
        next(&mut feed).await.seq,
        marker,
        "the fan's publication was not delivered"
    );
    assert_eq!(bus.last(&t, 10).await.unwrap().len(), 1);
}

/// Statistics partials reach every node's feed, this node's own included.
pub async fn stats_partials(bus: &dyn SideChannel, unique: &str) {
    let mut feed = bus.stats_feed().await.unwrap();
    let node = format!("node-{unique}");
    let payload = Bytes::from(format!("{{\"node\":\"{node}\"}}"));
    // The subscription may take a moment to be active on a remote bus.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        bus.publish_stats(&node, payload.clone()).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(200), feed.next()).await {
            Ok(Some((n, p))) if n == node => {
                assert_eq!(p, payload);
                return;
            }
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => panic!("stats feed ended"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no stats partial within 5 s"
        );
    }
}

/// Control messages reach every node's feed, this node's own included,
/// byte for byte.
pub async fn control_messages(bus: &dyn SideChannel, unique: &str) {
    let mut feed = bus.control_feed().await.unwrap();
    let payload = Bytes::from(format!("{{\"origin\":\"node-{unique}\"}}"));
    // The subscription may take a moment to be active on a remote bus.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        bus.publish_control(payload.clone()).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(200), feed.next()).await {
            Ok(Some(p)) if p == payload => return,
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => panic!("control feed ended"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no control message within 5 s"
        );
    }
}

/// A connected bus reports an epoch of the form `<stream>@<ns>`.
pub async fn status_and_epoch(bus: &dyn Bus, _unique: &str) {
    let status = bus.status().borrow().clone();
    assert!(status.connected);
    let (stream, ns) = status
        .epoch
        .as_str()
        .split_once('@')
        .expect("epoch is <stream>@<ns>");
    assert!(!stream.is_empty());
    assert!(ns.parse::<u128>().is_ok(), "creation time in ns: {ns}");
}

/// Generates one `#[tokio::test]` per conformance function, each against a
/// fresh bus from `$make`: an async fn returning `(guard, bus)`. The guard
/// lives as long as the test (a nats-server process; `()` for the embedded
/// bus); the bus implements [`Bus`] and [`SideChannel`]. Both buses run
/// the suite through this macro:
///
/// ```ignore
/// async fn make() -> ((), MemoryBus) { ((), MemoryBus::new(retention, window)) }
/// tribune_hub::bus_conformance_tests!(make);
/// ```
///
/// The list in the `@with_list` arm is the suite's one list; a unit test
/// checks that it names every `pub async fn` of this module, so no function
/// runs against one bus only.
#[macro_export]
macro_rules! bus_conformance_tests {
    ($make:path) => {
        $crate::bus_conformance_tests!(@with_list tests $make);
    };
    // Hands the list of conformance functions to the `@$then` arm.
    (@with_list $then:ident $($arg:tt)*) => {
        // Braces: the expansion is items (`@tests`) or an expression (`@names`).
        $crate::bus_conformance_tests! { @$then $($arg)*;
            sequence_prev_and_ts, payload_byte_for_byte, live_delivery, live_feed_after_history,
            history_reads, retraction_markers,
            removed_messages_are_a_hole,
            last_seqs_batched, duplicate_publications_stored_once,
            inbound_stays_out_of_the_stream, stats_partials, control_messages, status_and_epoch
        }
    };
    (@tests $make:path; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (_guard, bus) = $make().await;
                let unique = format!("{}{}", stringify!($name).replace('_', "-"), std::process::id());
                $crate::bus::conformance::$name(&bus, &unique).await;
            }
        )*
    };
    (@names; $($name:ident),*) => {
        [$(stringify!($name)),*]
    };
}

#[cfg(test)]
mod tests {
    /// Every `pub async fn` of the suite is in the macro's list, and
    /// nothing else is: both buses run exactly the suite.
    #[test]
    fn the_macro_lists_every_conformance_function() {
        let mut listed = crate::bus_conformance_tests!(@with_list names).to_vec();
        let mut defined: Vec<&str> = include_str!("conformance.rs")
            .lines()
            .filter_map(|line| line.strip_prefix("pub async fn "))
            .map(|rest| rest.split(['(', '<']).next().unwrap_or_default())
            .collect();
        listed.sort_unstable();
        defined.sort_unstable();
        assert_eq!(listed, defined);
    }
}
