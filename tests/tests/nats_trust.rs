//! Nothing a third party publishes on the bus changes what a fan sees
//! (issue 13), on a nats-server **without any permissions**, where anyone
//! with a connection publishes whatever they like, headers included:
//!
//! - "republished" messages forged on `tribune.live.<topic>` with the
//!   headers of a real one, three in a row, at and ahead of the next real
//!   seq, never reach a fan nor enter history or a resume, and the genuine
//!   message with that seq arrives;
//! - messages injected into a hub's private delivery subject (learnt by
//!   listening to the JetStream API, a delivery's reply by listening on
//!   `_INBOX.>`) never reach a fan: without a consumer's `$JS.ACK` reply the
//!   hub refuses and counts them; with one (another consumer's, or a genuine
//!   delivery's reused) nats-server refuses the publication itself;
//! - forged, unsigned, mis-signed, mis-addressed, replayed, stale and
//!   overflowing statistics partials never change the figures fans see, and
//!   each is counted by reason.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::time::Instant;
use tribune_tests::hub::ConfigFile;
use tribune_tests::nats::{Editor, NatsServer, connect_noting_errors};
use tribune_tests::{Hub, WsClient, eventually};

const FORGED: &str = r#"{"leader":"FORGED"}"#;
/// The statistics key both test hubs share.
const KEY: &str = "test-cluster-key-0123456789-abcdefghij";
/// How long anything a test waits for may take on a loaded machine: a
/// bound on correctness, not a speed target.
const SETTLE: Duration = Duration::from_secs(10);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn hub_on(nats: &NatsServer, config: &ConfigFile, name: &str) -> Hub {
    Hub::start(&[
        "--nats",
        &nats.url(),
        "--config",
        config.path(),
        "--node-name",
        name,
    ])
    .await
}

/// Reads `c` until the message with `seq` on `topic`; every message frame
/// read on the way (the last one included). Panics on a forged payload or
/// after [`SETTLE`].
async fn messages_until(c: &mut WsClient, topic: &str, seq: u64) -> Vec<Value> {
    let deadline = Instant::now() + SETTLE;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let f = c
            .try_recv(left)
            .await
            .unwrap_or_else(|| panic!("message {seq} not within {SETTLE:?}; got {got:?}"));
        if f["type"] == "message" && f["topic"] == topic {
            assert_ne!(
                f["data"]["leader"], "FORGED",
                "a forged message reached a fan: {f}"
            );
            let at = f["seq"].as_u64().expect("seq");
            got.push(f);
            if at >= seq {
                return got;
            }
        }
    }
}

fn seqs(frames: &[Value]) -> Vec<(u64, u64)> {
    frames
        .iter()
        .map(|f| (f["seq"].as_u64().unwrap(), f["prev"].as_u64().unwrap()))
        .collect()
}

/// RFC 3339 of now, as NATS writes `Nats-Time-Stamp`.
fn rfc3339_now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// What a release hub took for the stream's republication of `seq`.
fn republish_headers(topic: &str, seq: u64, last: u64) -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Stream", "TRIBUNE");
    h.insert("Nats-Subject", format!("tribune.fan.{topic}").as_str());
    h.insert("Nats-Sequence", seq.to_string().as_str());
    h.insert("Nats-Last-Sequence", last.to_string().as_str());
    h.insert("Nats-Time-Stamp", rfc3339_now().as_str());
    h
}

#[tokio::test]
async fn forged_republished_messages_never_reach_fans_nor_history() {
    let nats = NatsServer::start().await;
    let cfg = ConfigFile::new("[bus]\ncheck_interval_ms = 500\n");
    let hub = hub_on(&nats, &cfg, "trust-live").await;
    let editor = Editor::connect(&nats.url()).await;
    let topic = "results.trust.final";
    let s1 = editor.publish(topic, r#"{"leader":"NED"}"#).await;
    let (fan, _) = WsClient::connect(&hub.ws_url()).await;
    let mut fan = fan.without_stats();
    let ack = fan.subscribe(topic, json!({"history": 10})).await;
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    assert_eq!(seqs(&messages_until(&mut fan, topic, s1).await), [(s1, 0)]);

    // Three forged republications in a row: at the next real seq and ahead.
    let attacker = async_nats::connect(nats.url()).await.unwrap();
    for (seq, last) in [(s1 + 1, s1), (s1 + 2, s1 + 1), (s1 + 3, s1 + 2)] {
        attacker
            .publish_with_headers(
                format!("tribune.live.{topic}"),
                republish_headers(topic, seq, last),
                Bytes::from_static(FORGED.as_bytes()),
            )
            .await
            .unwrap();
    }
    attacker.flush().await.unwrap();
    // Time for a hub that listened there to have taken them.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let s2 = editor.publish(topic, r#"{"leader":"NOR"}"#).await;
    assert_eq!(s2, s1 + 1, "the first forgery claimed the next real seq");
    let s3 = editor
        .publish(topic, r#"{"leader":"NED","final":true}"#)
        .await;
    let live = messages_until(&mut fan, topic, s3).await;
    assert_eq!(seqs(&live), [(s2, s1), (s3, s2)], "{live:?}");
    assert_eq!(live[0]["data"], json!({"leader": "NOR"}));

    // Neither history nor a resume holds a forgery.
    let (newcomer, _) = WsClient::connect(&hub.ws_url()).await;
    let mut newcomer = newcomer.without_stats();
    newcomer.subscribe(topic, json!({"history": 10})).await;
    let history = messages_until(&mut newcomer, topic, s3).await;
    assert_eq!(seqs(&history), [(s1, 0), (s2, s1), (s3, s2)]);
    let (resumer, _) = WsClient::connect(&hub.ws_url()).await;
    let mut resumer = resumer.without_stats();
    let ack = resumer
        .subscribe(topic, json!({"since": s1, "epoch": epoch}))
        .await;
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(
        seqs(&messages_until(&mut resumer, topic, s3).await),
        [(s2, s1), (s3, s2)]
    );
    assert_eq!(
        hub.metric("tribune_bus_messages_refused_total{reason=\"not_from_stream\"}")
            .await,
        0.0,
        "the hub does not even listen where the forgeries went"
    );
}

#[tokio::test]
async fn messages_injected_into_a_hubs_delivery_subject_are_refused() {
    let nats = NatsServer::start().await;
    let cfg = ConfigFile::new("[bus]\ncheck_interval_ms = 500\n");
    let hub = hub_on(&nats, &cfg, "trust-inbox").await;
    let editor = Editor::connect(&nats.url()).await;
    let topic = "clips.trust.inbox";
    // The attacker listens to the JetStream API (where a hub names its
    // delivery subject) and where the server delivers to clients.
    let attacker = async_nats::connect(nats.url()).await.unwrap();
    let mut api = attacker
        .subscribe("$JS.API.CONSUMER.CREATE.TRIBUNE.>")
        .await
        .unwrap();
    let mut sniffer = attacker.subscribe("_INBOX.>").await.unwrap();
    attacker.flush().await.unwrap();

    let (fan, _) = WsClient::connect(&hub.ws_url()).await;
    let mut fan = fan.without_stats();
    fan.subscribe(topic, json!({})).await;
    let create = tokio::time::timeout(SETTLE, api.next())
        .await
        .expect("the hub creates a consumer")
        .unwrap();
    let create: Value = serde_json::from_slice(&create.payload).unwrap();
    let inbox = create["config"]["deliver_subject"]
        .as_str()
        .expect("a push consumer's delivery subject")
        .to_string();
    let g1 = editor.publish(topic, r#"{"clip":1}"#).await;
    assert_eq!(seqs(&messages_until(&mut fan, topic, g1).await), [(g1, 0)]);
    // The hub's delivery of g1, as anyone on `_INBOX.>` sees it.
    let delivery = tokio::time::timeout(SETTLE, async {
        loop {
            let m = sniffer.next().await.expect("sniffer open");
            if m.reply
                .as_ref()
                .is_some_and(|r| r.starts_with("$JS.ACK.TRIBUNE."))
            {
                return m;
            }
        }
    })
    .await
    .expect("the delivery of g1 seen on _INBOX.>");
    let reply = delivery.reply.clone().unwrap().to_string();
    let (injector, mut injector_errors) =
        connect_noting_errors(&nats.url(), async_nats::ConnectOptions::new()).await;

    let forged = Bytes::from_static(br#"{"clip":"FORGED"}"#);
    // Without a reply, with a reply that is no consumer's: the hub refuses
    // them (only the stream's deliveries carry a `$JS.ACK` reply).
    attacker
        .publish(inbox.clone(), forged.clone())
        .await
        .unwrap();
    attacker
        .publish_with_reply(inbox.clone(), "_INBOX.forged.1", forged.clone())
        .await
        .unwrap();
    attacker.flush().await.unwrap();
    eventually("two injections refused", SETTLE, || async {
        let n = hub
            .metric("tribune_bus_messages_refused_total{reason=\"not_from_stream\"}")
            .await;
        (n >= 2.0).then_some(())
    })
    .await;
    // With a `$JS.ACK` reply, another consumer's or the genuine delivery's:
    // nats-server keeps those replies to itself and refuses the publication.
    let other = reply.replacen("$JS.ACK.TRIBUNE.tribune_", "$JS.ACK.TRIBUNE.other_", 1);
    for fake in [other, reply] {
        injector
            .publish_with_reply(inbox.clone(), fake, forged.clone())
            .await
            .unwrap();
        injector.flush().await.unwrap();
        injector_errors
            .expect("Permissions Violation for Publish with Reply", SETTLE)
            .await;
    }

    let g2 = editor.publish(topic, r#"{"clip":2}"#).await;
    let g3 = editor.publish(topic, r#"{"clip":3}"#).await;
    let got = messages_until(&mut fan, topic, g3).await;
    assert_eq!(seqs(&got), [(g2, g1), (g3, g2)], "{got:?}");
    assert_eq!(
        hub.metric("tribune_bus_messages_refused_total{reason=\"not_from_stream\"}")
            .await,
        2.0
    );
    assert!(got.iter().all(|f| f["data"]["clip"] != "FORGED"), "{got:?}");
    let (newcomer, _) = WsClient::connect(&hub.ws_url()).await;
    let mut newcomer = newcomer.without_stats();
    newcomer.subscribe(topic, json!({"history": 10})).await;
    let history = messages_until(&mut newcomer, topic, g3).await;
    assert_eq!(seqs(&history), [(g1, 0), (g2, g1), (g3, g2)], "{history:?}");
}

/// `json` sealed as a hub seals its partials: the HMAC-SHA256 of the JSON
/// with `key`, in hex, a newline, the JSON.
fn sealed(key: &[u8], json: &Value) -> Bytes {
    let body = json.to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(body.as_bytes());
    let tag: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Bytes::from(format!("{tag}\n{body}"))
}

/// A partial of `node` claiming `audience` fans of `topic` and `fire` 🔥.
fn partial(node: &str, topic: &str, audience: u64, fire: u64, n: u64, at: u64) -> Value {
    json!({"node": node, "boot": 1, "n": n, "at": at,
           "topics": {topic: {"a": audience, "r": {"🔥": fire}}}})
}

#[tokio::test]
async fn forged_and_overflowing_stats_partials_never_change_what_fans_see() {
    let nats = NatsServer::start().await;
    let cfg = ConfigFile::new(&format!(
        "[stats]\nwindow_ms = 200\nkey = \"{KEY}\"\n[limits]\nhandshakes_per_second = 1000\n"
    ));
    let a = hub_on(&nats, &cfg, "trust-a").await;
    let b = hub_on(&nats, &cfg, "trust-b").await;
    let topic = "results.trust.stats";
    let (mut fan_a, _) = WsClient::connect(&a.ws_url()).await;
    fan_a.subscribe(topic, json!({})).await;
    let (mut fan_b, _) = WsClient::connect(&b.ws_url()).await;
    fan_b.subscribe(topic, json!({})).await;
    // Both hubs' partials count: each fan sees the audience of both nodes.
    for c in [&mut fan_a, &mut fan_b] {
        let deadline = Instant::now() + SETTLE;
        loop {
            let f = c
                .try_recv(deadline.saturating_duration_since(Instant::now()))
                .await
                .expect("stats showing both nodes");
            if f["type"] == "stats" && f["audience"] == 2 {
                break;
            }
        }
    }

    let attacker = async_nats::connect(nats.url()).await.unwrap();
    // A genuine partial of trust-b, recorded as anyone can.
    let mut recorder = attacker.subscribe("tribune.stats.trust-b").await.unwrap();
    attacker.flush().await.unwrap();
    let recorded = tokio::time::timeout(SETTLE, recorder.next())
        .await
        .expect("a partial of trust-b")
        .unwrap()
        .payload;

    let now = now_ms();
    let forgeries: Vec<(&str, Bytes)> = vec![
        // As tried on a release hub: unsigned, huge, a reaction storm.
        (
            "evil",
            Bytes::from(
                json!({"node": "evil", "topics": {topic: {"a": 987654321u64, "r": {"🔥": 1000000}}}})
                    .to_string(),
            ),
        ),
        // Unsigned, to wrap the sum around.
        (
            "evil",
            Bytes::from(
                json!({"node": "evil", "topics": {topic: {"a": u64::MAX}}}).to_string(),
            ),
        ),
        // Signed with another key.
        (
            "evil",
            sealed(b"not-the-cluster-key-0123456789-abcdef", &partial("evil", topic, 5_000, 0, 1, now)),
        ),
        // Signed, but beyond what a node holds (a key holder's bug).
        (
            "evil",
            sealed(KEY.as_bytes(), &partial("evil", topic, u64::MAX, u64::MAX, 1, now)),
        ),
        // Signed, published on another node's subject.
        (
            "evil",
            sealed(KEY.as_bytes(), &partial("trust-b", topic, 5_000, 0, 99, now)),
        ),
        // Signed, recorded a minute ago.
        (
            "evil",
            sealed(KEY.as_bytes(), &partial("evil", topic, 5_000, 7, 2, now - 60_000)),
        ),
        // The genuine partial of trust-b, played again.
        ("trust-b", recorded),
    ];
    for (node, payload) in forgeries {
        attacker
            .publish(format!("tribune.stats.{node}"), payload)
            .await
            .unwrap();
    }
    attacker.flush().await.unwrap();

    // Ten windows: every figure either fan sees stays the true one.
    let until = Instant::now() + Duration::from_secs(2);
    for c in [&mut fan_a, &mut fan_b] {
        while let Some(f) = c
            .try_recv(until.saturating_duration_since(Instant::now()))
            .await
        {
            if f["type"] == "stats" {
                assert_eq!(f["audience"], 2, "{f}");
                assert_eq!(f["reactions"], json!({}), "{f}");
            }
        }
    }
    for reason in [
        "unsigned",
        "bad_signature",
        "overflow",
        "node_mismatch",
        "stale",
        "replayed",
    ] {
        let sample = format!("tribune_stats_partials_rejected_total{{reason=\"{reason}\"}}");
        eventually(&format!("{reason} counted on trust-a"), SETTLE, || async {
            (a.metric(&sample).await >= 1.0).then_some(())
        })
        .await;
    }
    let unsigned = a
        .metric("tribune_stats_partials_rejected_total{reason=\"unsigned\"}")
        .await;
    assert_eq!(unsigned, 2.0, "the two unsigned forgeries");
}
