//! Delta updates through the SDK against the real `tribune-hub` binary on
//! its embedded bus: 1,000 subscribers, most asking for deltas (the SDK's
//! default) and the rest for full messages, follow a 30-state replay of a
//! results board; every payload each application sees is the editor's, byte
//! for byte (SHA-256 of each against the published one), whichever way it
//! travelled, and the hub made one delta per message.
//!
//! Needs `target/debug/tribune-hub` (`cargo build -p tribune-hub`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::time::timeout;
use tribune_client::{Client, Event, SubscribeOptions};
use tribune_tests::Hub;
use tribune_tests::hub::ConfigFile;

const TOPIC: &str = "results.sdk.delta-board";
const FANS: usize = 1_000;
const STATES: usize = 30;

/// A 30-row board after `n` results: names with diacritics and emoji.
fn board(n: usize) -> Value {
    let rows: Vec<Value> = (0..30)
        .map(|i| {
            let done = i < n;
            json!({
                "rank": done.then_some(i + 1),
                "name": format!("Skåter Nº{i} {}", if i % 7 == 0 { "🥇" } else { "Ødegård" }),
                "time": done.then(|| format!("1:5{}.{:02}", i % 10, (i * 37 + n) % 100)),
            })
        })
        .collect();
    json!({"event": "1500 m", "heat": n / 2, "rows": rows})
}

fn sha(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_subscribers_mixed_delta_and_full_see_exact_boards() {
    let cfg = ConfigFile::new("[limits]\nhandshakes_per_second = 100000\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let mut published: HashMap<u64, [u8; 32]> = HashMap::new();
    let first = board(0);
    let seq = hub.publish(TOPIC, first.clone()).await;
    published.insert(seq, sha(&serde_json::to_string(&first).unwrap()));

    let mut fans = Vec::new();
    for i in 0..FANS {
        let client = Client::builder(hub.ws_url()).connect().await.unwrap();
        // Two in ten ask for full messages: a mixed population.
        let options = if i % 10 < 2 {
            SubscribeOptions::new().full_messages()
        } else {
            SubscribeOptions::new()
        };
        let sub = client.subscribe_with(TOPIC, options).await.unwrap();
        fans.push((client, sub));
    }
    let mut last = 0;
    for n in 1..STATES {
        let data = board(n);
        last = hub.publish(TOPIC, data.clone()).await;
        published.insert(last, sha(&serde_json::to_string(&data).unwrap()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let published = Arc::new(published);
    let mut readers = Vec::new();
    for (client, mut sub) in fans {
        let published = published.clone();
        readers.push(tokio::spawn(async move {
            let mut seen = 0;
            loop {
                let event = timeout(Duration::from_secs(30), sub.next())
                    .await
                    .expect("the last board within 30 s")
                    .expect("stream open");
                if let Event::Message(m) = event {
                    assert_eq!(
                        published.get(&m.seq),
                        Some(&sha(m.data.get())),
                        "seq {}: the editor's payload",
                        m.seq
                    );
                    seen += 1;
                    if m.seq == last {
                        drop(client);
                        return seen;
                    }
                }
            }
        }));
    }
    let mut boards = 0;
    for r in readers {
        boards += r.await.unwrap();
    }
    assert!(boards >= FANS, "every fan ended on the last board");
    assert_eq!(
        hub.metric("tribune_deltas_total").await,
        (STATES - 1) as f64,
        "one delta per message, whatever the audience"
    );
    let delta_frames = hub.metric("tribune_delta_deliveries_total").await;
    assert!(
        delta_frames >= (FANS * 8 / 10) as f64 * 0.9 * (STATES - 1) as f64,
        "delta fans got deltas ({delta_frames})"
    );
}
