//! An editor publishing a results board and a clip on NATS JetStream.
//!
//! ```text
//! cargo run -p tribune-hub -- --nats nats://127.0.0.1:4222   # creates the TRIBUNE stream
//! cargo run -p tribune-client --example editor -- nats://127.0.0.1:4222
//! ```
//!
//! Each publication is checked (topic, JSON, 256 KiB), carries a
//! `Nats-Msg-Id` and returns the stream seq fans will see. Every board
//! publication gets a new id, so each is stored, even one equal to an earlier
//! board; the clip gets the editor's own id, so that publishing it again
//! after a crash stores it once.

use serde_json::json;
use tribune_client::{PublishErrorKind, Publisher};

/// The topics the `results_board` example shows by default.
const BOARD: &str = "results.demo2026.speed-skating.mixed-team-sprint";
const CLIPS: &str = "clips.demo2026.speed-skating";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let publisher = Publisher::connect(&url).await?;

    let board = json!({
        "kind": "results",
        "event": {
            "id": "lausanne2020.speed-skating.mixed-team-sprint",
            "name": "Speed skating, mixed NOC team sprint",
            "sport": "speed-skating",
            "venue": "St. Moritz",
            "phase": "Heat 6",
            "status": "live",
            "updated_at": "2020-01-15T10:42:03.120Z"
        },
        "rows": [
            {"rank": 1, "name": "Team 13", "noc": "MIX", "result": "2:09.47", "gap": null, "status": "ok"},
            {"rank": 2, "name": "Team 5", "noc": "MIX", "result": "2:10.02", "gap": "+0.55", "status": "ok"}
        ]
    });
    let first = publisher.publish(BOARD, &board).await?;
    println!("board stored as seq {}", first.seq);
    let again = publisher.publish(BOARD, &board).await?;
    println!("same board again, a new publication: seq {}", again.seq);

    let clip = json!({
        "kind": "clip",
        "id": "clip-2020-01-15-0042",
        "title": "Final lap of heat 6",
        "url": "https://media.example.org/clips/0042.mp4",
        "duration_s": 18.5,
        "event_id": "lausanne2020.speed-skating.mixed-team-sprint"
    });
    let stored = publisher
        .publish_with_id(CLIPS, serde_json::to_vec(&clip)?, "clip-2020-01-15-0042")
        .await?;
    println!("clip stored as seq {}", stored.seq);
    let rerun = publisher
        .publish_with_id(CLIPS, serde_json::to_vec(&clip)?, "clip-2020-01-15-0042")
        .await?;
    println!(
        "clip again with its id: seq {} (duplicate: {})",
        rerun.seq, rerun.duplicate
    );

    // Mistakes are refused before anything is sent.
    match publisher.publish_json("clips.bad topic", "{}").await {
        Err(e) if e.kind() == PublishErrorKind::InvalidTopic => {
            println!("refused as expected: {e}")
        }
        other => println!("unexpected: {other:?}"),
    }
    Ok(())
}
