//! A fan tailing a live results board and the clips of the same event.
//!
//! ```text
//! cargo run -p tribune-hub -- --demo            # a hub with a simulated event
//! cargo run -p tribune-client --example results_board -- ws://127.0.0.1:8080
//! # or another event: ... -- ws://HUB results.<event> clips.<event>
//! ```
//!
//! The board (a `state` topic) is redrawn on every update; clips (a `feed`)
//! are listed as they come, with a note if any were lost while offline.
//! Reconnections happen on their own and are only reported.

use futures::StreamExt;
use serde::Deserialize;
use tribune_client::{Client, ConnectionEvent, Event, SubscribeOptions};

/// The topics of the hub's `--demo` event.
const BOARD: &str = "results.demo2026.speed-skating.mixed-team-sprint";
const CLIPS: &str = "clips.demo2026.speed-skating";

/// The fields of docs/PAYLOADS.md this example shows; unknown ones are ignored.
#[derive(Debug, Deserialize)]
struct Board {
    event: BoardEvent,
    #[serde(default)]
    rows: Vec<Row>,
}

#[derive(Debug, Deserialize)]
struct BoardEvent {
    name: String,
    #[serde(default)]
    phase: Option<String>,
    status: String,
}

#[derive(Debug, Deserialize)]
struct Row {
    rank: Option<u32>,
    name: String,
    result: Option<String>,
    gap: Option<String>,
    status: String,
}

#[derive(Debug, Deserialize)]
struct Clip {
    title: String,
    #[serde(default)]
    duration_s: Option<f64>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080".into());
    let board_topic = args.next().unwrap_or_else(|| BOARD.into());
    let clips_topic = args.next().unwrap_or_else(|| CLIPS.into());
    let client = Client::builder(&url)
        .retry_initial_connect(true)
        .connect()
        .await?;
    let mut events = client.events();
    let mut board = client.subscribe(board_topic).await?;
    let mut clips = client
        .subscribe_with(clips_topic, SubscribeOptions::new().history(5))
        .await?;

    loop {
        tokio::select! {
            Some(event) = board.next() => match event {
                Event::Message(msg) => match serde_json::from_str::<Board>(msg.data.get()) {
                    Ok(b) => draw(&b),
                    // A payload this example does not understand is skipped, never fatal.
                    Err(e) => eprintln!("(board #{} not shown: {e})", msg.seq),
                },
                Event::Stats(stats) => {
                    let reactions: Vec<String> = stats.reactions.iter().map(|(r, n)| format!("{r}{n}")).collect();
                    println!("  {} watching {}", stats.audience, reactions.join(" "));
                }
                Event::Closed { reason, .. } => break eprintln!("board ended: {reason}"),
                _ => {}
            },
            Some(event) = clips.next() => match event {
                Event::Message(msg) => {
                    if let Ok(clip) = serde_json::from_str::<Clip>(msg.data.get()) {
                        println!("▶ {} ({:.0} s)", clip.title, clip.duration_s.unwrap_or(0.0));
                    }
                }
                Event::Gap { after_seq, before_seq: Some(before), .. } => {
                    println!("(clips between #{after_seq} and #{before} were lost)")
                }
                Event::Gap { after_seq, .. } => println!("(clips after #{after_seq} are no longer available)"),
                Event::Closed { reason, .. } => break eprintln!("clips ended: {reason}"),
                _ => {}
            },
            Some(event) = events.next() => match event {
                ConnectionEvent::Connected { node, .. } => eprintln!("(connected to {node})"),
                ConnectionEvent::Disconnected { reason, retry_in } => eprintln!("({reason}; retry in {retry_in:?})"),
                ConnectionEvent::Resumed { gaps: 0, .. } => eprintln!("(resumed, nothing missed)"),
                _ => {}
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.close().await;
    Ok(())
}

fn draw(board: &Board) {
    println!(
        "\n{} · {} · {}",
        board.event.name,
        board.event.phase.as_deref().unwrap_or(""),
        board.event.status
    );
    for row in &board.rows {
        let rank = row
            .rank
            .map(|r| r.to_string())
            .unwrap_or_else(|| "-".into());
        let result = row.result.as_deref().unwrap_or(&row.status);
        println!(
            "{rank:>3}  {:<24} {result:>9} {}",
            row.name,
            row.gap.as_deref().unwrap_or("")
        );
    }
}
