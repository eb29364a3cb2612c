//! Delta updates over real sockets (the hub binary on its embedded bus):
//! every board a delta subscriber rebuilds is byte for byte the payload the
//! editor published for that seq, after the hub conflated its queue and
//! across a 4008 and the resume that follows (PROTOCOL.md section 4).

use std::collections::HashMap;

use serde_json::{Value, json};
use tribune_protocol::{delta, message_view};
use tribune_tests::hub::ConfigFile;
use tribune_tests::{Hub, WsClient};

const BOARD: &str = "results.delta.speed-skating-1500m";
const HEAVY: &str = "results.delta.heavy";
const CLIPS: &str = "clips.delta.feed";

/// A 30-row speed-skating board after `finished` skaters finished: names
/// with diacritics and emoji, ranks by time among the finished.
fn board(finished: usize) -> Value {
    let names = [
        "Martina Sáblíková",
        "Ragne Wiklund",
        "Joy Beune",
        "Ivanie Blondin",
        "Miho Takagi",
        "Antoinette Rijpma-de Jong",
        "Isabelle Weidemann",
        "Han Mei",
        "Marijke Groenewoud",
        "Kaja Ziomek-Nogal",
        "Jutta Leerdam 🇳🇱",
        "Yekaterina Aydova",
        "Nadezhda Morozova",
        "Francesca Lollobrigida",
        "Ayano Sato",
        "Greta Myers",
        "Brittany Bowe 🇺🇸",
        "Zoë Ødegård",
        "Kim Min-sun",
        "Karolina Bosiek",
        "Elizaveta Golubeva",
        "Béatrice Lamarche",
        "Natalia Czerwonka",
        "Valérie Maltais",
        "Nikola Zdráhalová",
        "Sofie Karoline Haugen",
        "Yin Qi",
        "Marina Zueva",
        "Michelle Uhrig",
        "Josie Hofmann",
    ];
    let mut rows: Vec<(String, Option<u32>)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let done = i < finished;
            (
                n.to_string(),
                done.then(|| 113_000 + ((i * 7919) % 4000) as u32),
            )
        })
        .collect();
    rows.sort_by_key(|(_, t)| t.unwrap_or(u32::MAX));
    let rows: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(i, (name, t))| {
            json!({
                "rank": t.map(|_| i + 1),
                "name": name,
                "time": t.map(|ms| format!("{}:{:02}.{:02}", ms / 60_000, ms / 1000 % 60, ms % 1000 / 10)),
                "status": if t.is_some() { "finished" } else { "to skate" },
            })
        })
        .collect();
    json!({"event": "Women's 1500 m", "venue": "Milano Speed Skating Stadium", "heat": finished / 2, "rows": rows})
}

/// What one subscriber rebuilt, checked against what the editor published.
#[derive(Default)]
struct Rebuilder {
    base: Option<(u64, String)>,
    deltas: usize,
    fulls: usize,
    last: u64,
}

impl Rebuilder {
    /// Takes one frame of the board topic; returns the seq of a message.
    fn take(&mut self, text: &str, published: &HashMap<u64, String>) -> Option<u64> {
        let view = message_view(text.as_bytes())?;
        let payload = if view.delta {
            let (seq, base) = self
                .base
                .as_ref()
                .expect("a delta comes after a full message");
            assert_eq!(view.prev, *seq, "a delta's prev names the base held");
            let d: String = serde_json::from_slice(view.data).expect("a delta is a JSON string");
            let out = delta::apply(base.as_bytes(), d.as_bytes()).expect("the delta applies");
            self.deltas += 1;
            String::from_utf8(out).expect("UTF-8")
        } else {
            self.fulls += 1;
            String::from_utf8(view.data.to_vec()).unwrap()
        };
        let want = published
            .get(&view.seq)
            .unwrap_or_else(|| panic!("seq {} was published", view.seq));
        assert_eq!(&payload, want, "seq {}: byte for byte", view.seq);
        assert!(view.seq > self.last, "seq grows");
        self.last = view.seq;
        self.base = Some((view.seq, payload));
        Some(view.seq)
    }
}

async fn publish(hub: &Hub, topic: &str, data: Value, published: &mut HashMap<u64, String>) -> u64 {
    let text = serde_json::to_string(&data).unwrap();
    let seq = hub.publish(topic, data).await;
    published.insert(seq, text);
    seq
}

/// A delta subscriber whose socket stalls while a heavy topic floods the
/// same connection: the hub conflates its queue, swaps in full frames where
/// a delta's base was dropped, and every board rebuilt is exact.
#[tokio::test]
async fn deltas_survive_conflation() {
    let cfg = ConfigFile::new("[limits]\nqueue_messages = 16\nqueue_bytes = 65536\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let mut published = HashMap::new();
    publish(&hub, BOARD, board(0), &mut published).await;
    let (c, _) = WsClient::connect_small_buffer(&hub.ws_url(), 4096).await;
    let mut c = c.without_stats();
    c.subscribe(HEAVY, json!({})).await;
    let ack = c.subscribe(BOARD, json!({"delta": "fossil"})).await;
    assert_eq!(ack["delta"], true, "{ack}");
    let mut last = 0;
    for i in 0..300 {
        // Each heavy state is unlike the one before: always a full frame.
        let pad: String = (0..2_000)
            .map(|k| format!("{:x}", (i * 7 + k) % 16))
            .collect();
        hub.publish(HEAVY, json!({"i": i, "pad": pad.repeat(10)}))
            .await;
        last = publish(&hub, BOARD, board(i % 31), &mut published).await;
    }
    let mut r = Rebuilder::default();
    loop {
        let text = c.recv_text().await;
        if text.contains(HEAVY) {
            continue;
        }
        if r.take(&text, &published) == Some(last) {
            break;
        }
    }
    assert!(hub.metric("tribune_frames_conflated_total").await > 0.0);
    assert!(r.deltas > 0, "deltas went out ({} full)", r.fulls);
    // At most one per message per topic after the first (300 boards, 299
    // heavy states), whatever the queue did. Fewer when a relay's live feed
    // lagged past the namespace's retention: those states were superseded,
    // and no delta crosses the hole.
    assert!(hub.metric("tribune_deltas_total").await <= 599.0);
}

/// A delta subscriber closed with 4008 (its feed overflowed) resumes on a
/// new connection with `since`: the replay is full, the next updates are
/// deltas again, and every board rebuilt is exact.
#[tokio::test]
async fn deltas_across_a_4008_and_its_resume() {
    let cfg = ConfigFile::new(
        "slow_close_grace_ms = 20000\n[limits]\nqueue_messages = 64\nqueue_bytes = 65536\n",
    );
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let mut published = HashMap::new();
    publish(&hub, BOARD, board(0), &mut published).await;
    let (c, _) = WsClient::connect_small_buffer(&hub.ws_url(), 4096).await;
    let mut c = c.without_stats();
    c.subscribe(CLIPS, json!({})).await;
    let ack = c.subscribe(BOARD, json!({"delta": "fossil"})).await;
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    let mut r = Rebuilder::default();
    r.take(&c.recv_text().await, &published).expect("the board");
    for i in 1..6 {
        let seq = publish(&hub, BOARD, board(i), &mut published).await;
        assert_eq!(r.take(&c.recv_text().await, &published), Some(seq));
    }
    assert_eq!(r.deltas, 5, "updates after the first board are deltas");
    // The client stops reading; boards and a flood of clips follow.
    let pad = "p".repeat(20_000);
    for i in 6..12 {
        publish(&hub, BOARD, board(i), &mut published).await;
        for k in 0..70 {
            hub.publish(CLIPS, json!({"i": i * 100 + k, "pad": pad}))
                .await;
        }
    }
    assert_eq!(c.close_code().await, Some(4008));
    let (d, _) = WsClient::connect(&hub.ws_url()).await;
    let mut d = d.without_stats();
    let ack = d
        .subscribe(
            BOARD,
            json!({"delta": "fossil", "since": r.last, "epoch": epoch}),
        )
        .await;
    assert_eq!(
        (ack["recovered"].as_bool(), ack["delta"].as_bool()),
        (Some(true), Some(true)),
        "{ack}"
    );
    let latest = ack["seq"].as_u64().unwrap();
    while r.last < latest {
        let text = d.recv_text().await;
        assert!(
            !message_view(text.as_bytes()).unwrap().delta,
            "a replay is full"
        );
        r.take(&text, &published);
    }
    let before = r.deltas;
    for i in 12..31 {
        let seq = publish(&hub, BOARD, board(i), &mut published).await;
        assert_eq!(r.take(&d.recv_text().await, &published), Some(seq));
    }
    assert_eq!(r.deltas - before, 19, "deltas again after the resume");
}
