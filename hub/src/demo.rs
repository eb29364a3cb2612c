//! The simulated live event behind `--demo`: speed-skating heats whose
//! results board updates every second or two, a clip every few seconds, and
//! a simulated crowd reacting (shapes of docs/PAYLOADS.md).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tribune_protocol::Topic;

use crate::node::Node;

/// The results board of the demo event.
pub const RESULTS_TOPIC: &str = "results.demo2026.speed-skating.mixed-team-sprint";
/// The simulated crowd's node name in the statistics partials.
const CROWD_NODE: &str = "demo-crowd";

/// The clips feed of the demo event.
pub const CLIPS_TOPIC: &str = "clips.demo2026.speed-skating";

const TEAMS: [(&str, &[&str]); 8] = [
    (
        "Team 13",
        &["Eittrem (NOR)", "Rosanelli (ITA)", "Vanhutter (BEL)"],
    ),
    (
        "Team 5",
        &["Nakamura (JPN)", "Keller (SUI)", "Dubois (FRA)"],
    ),
    ("Team 9", &["Olsen (DEN)", "Park (KOR)", "Moreau (CAN)"]),
    (
        "Team 2",
        &["Schmidt (GER)", "Kowalski (POL)", "Ivanova (BUL)"],
    ),
    (
        "Team 11",
        &["Lindqvist (SWE)", "Horvat (CRO)", "Silva (BRA)"],
    ),
    ("Team 7", &["Novak (CZE)", "Jensen (NOR)", "Bakker (NED)"]),
    ("Team 3", &["Chen (CHN)", "Murphy (IRL)", "Tanaka (JPN)"]),
    ("Team 16", &["Petrov (KAZ)", "Rossi (ITA)", "Smith (USA)"]),
];

fn now_iso() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let (secs, millis) = (ms / 1000, ms % 1000);
    let days = secs / 86_400;
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    let (y, mo, d) = civil_from_days(days as i64);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn fmt_time(centis: u64) -> String {
    format!(
        "{}:{:02}.{:02}",
        centis / 6000,
        centis / 100 % 60,
        centis % 100
    )
}

/// One heat: teams race; every update some finish; then the board is final.
struct Heat {
    number: u32,
    /// (team index, finish time in centiseconds or None while racing, dnf).
    lanes: Vec<(usize, Option<u64>, bool)>,
}

impl Heat {
    fn new(number: u32, rng: &mut impl Rng) -> Self {
        let mut lanes: Vec<(usize, Option<u64>, bool)> =
            (0..TEAMS.len()).map(|i| (i, None, false)).collect();
        for i in (1..lanes.len()).rev() {
            let j = rng.random_range(0..=i);
            lanes.swap(i, j);
        }
        lanes.truncate(6);
        Heat { number, lanes }
    }

    fn step(&mut self, rng: &mut impl Rng) {
        let racing: Vec<usize> = (0..self.lanes.len())
            .filter(|&i| self.lanes[i].1.is_none() && !self.lanes[i].2)
            .collect();
        if let Some(&i) = racing.get(rng.random_range(0..racing.len().max(1))) {
            if rng.random_ratio(1, 25) {
                self.lanes[i].2 = true;
            } else {
                self.lanes[i].1 = Some(12_800 + rng.random_range(0..600));
            }
        }
    }

    fn finished(&self) -> bool {
        self.lanes.iter().all(|l| l.1.is_some() || l.2)
    }

    fn board(&self) -> Value {
        let mut done: Vec<&(usize, Option<u64>, bool)> =
            self.lanes.iter().filter(|l| l.1.is_some()).collect();
        done.sort_by_key(|l| l.1);
        let best = done.first().and_then(|l| l.1);
        let mut rows: Vec<Value> = done
            .iter()
            .enumerate()
            .map(|(rank, (team, time, _))| {
                let t = time.expect("finished");
                let gap = best
                    .filter(|b| *b != t)
                    .map(|b| format!("+{}.{:02}", (t - b) / 100, (t - b) % 100));
                json!({"rank": rank + 1, "name": TEAMS[*team].0, "members": TEAMS[*team].1,
                       "noc": "MIX", "result": fmt_time(t), "gap": gap, "status": "ok"})
            })
            .collect();
        for (team, time, dnf) in &self.lanes {
            if time.is_none() {
                rows.push(json!({"rank": null, "name": TEAMS[*team].0, "members": TEAMS[*team].1,
                    "noc": "MIX", "result": null, "gap": null, "status": if *dnf { "dnf" } else { "ok" }}));
            }
        }
        json!({
            "kind": "results",
            "event": {
                "id": "demo2026.speed-skating.mixed-team-sprint",
                "name": "Speed skating, mixed NOC team sprint",
                "sport": "speed-skating",
                "venue": "St. Moritz",
                "phase": format!("Heat {}", self.number),
                "status": if self.finished() { "final" } else { "live" },
                "updated_at": now_iso(),
            },
            "rows": rows,
        })
    }
}

const CLIP_TITLES: [&str; 6] = [
    "Final lap of heat {n}",
    "Photo finish in heat {n}",
    "Start of heat {n} from the ice",
    "Coach's reaction after heat {n}",
    "Slow motion: the last corner of heat {n}",
    "Crowd goes wild in heat {n}",
];

fn clip(counter: u64, heat: u32, rng: &mut impl Rng) -> Value {
    let title =
        CLIP_TITLES[rng.random_range(0..CLIP_TITLES.len())].replace("{n}", &heat.to_string());
    json!({
        "kind": "clip",
        "id": format!("clip-demo-{counter:04}"),
        "title": title,
        "url": format!("https://media.example.org/clips/{counter:04}.mp4"),
        // Served by the hub itself, so the demo shows thumbnails offline.
        "thumbnail": "/demo/thumb.svg",
        "duration_s": (rng.random_range(80..400) as f64) / 10.0,
        "source": "OBS",
        "event_id": "demo2026.speed-skating.mixed-team-sprint",
        "published_at": now_iso(),
        "tags": ["speed-skating", "demo2026"],
    })
}

async fn publish(node: &Node, topic: &Topic, value: &Value, id: String) {
    let data = Bytes::from(value.to_string());
    if let Err(e) = node.bus.publish(topic, data, Some(id)).await {
        tracing::warn!(%topic, error = %e, "demo publication failed");
    }
}

/// A simulated audience, published every window as one more node's partial,
/// so that it goes through the same cross-node sums as real nodes' figures.
async fn crowd(node: Arc<Node>) {
    let mut rng = StdRng::from_os_rng();
    let mut crowd: u64 = 84_000;
    let mut tick = tokio::time::interval(Duration::from_millis(node.config.stats.window_ms));
    loop {
        tick.tick().await;
        crowd = (crowd as i64 + rng.random_range(-400..=600)).clamp(20_000, 120_000) as u64;
        let partial = crate::stats::Partial {
            node: CROWD_NODE.to_string(),
            topics: std::collections::BTreeMap::from([(
                RESULTS_TOPIC.to_string(),
                crate::stats::TopicFigures {
                    audience: crowd,
                    reactions: Default::default(),
                },
            )]),
            ..Default::default()
        };
        // Sealed as the node's own partials are, so that the other nodes
        // take it.
        let bytes = node.stats.seal(partial);
        if let Err(e) = node.side.publish_stats(CROWD_NODE, bytes).await {
            tracing::debug!(error = %e, "demo crowd not published");
        }
    }
}

/// Runs the simulated event until the node stops.
pub async fn run(node: Arc<Node>) {
    tokio::spawn(crowd(node.clone()));
    let results = Topic::new(RESULTS_TOPIC).expect("valid demo topic");
    let clips = Topic::new(CLIPS_TOPIC).expect("valid demo topic");
    let mut rng = StdRng::from_os_rng();
    let run_id: u32 = rng.random();
    let mut heat = Heat::new(1, &mut rng);
    let mut n: u64 = 0;
    let mut clip_counter: u64 = 0;
    loop {
        n += 1;
        publish(
            &node,
            &results,
            &heat.board(),
            format!("demo-{run_id:x}-r{n}"),
        )
        .await;
        if n.is_multiple_of(3) {
            clip_counter += 1;
            let c = clip(clip_counter, heat.number, &mut rng);
            publish(
                &node,
                &clips,
                &c,
                format!("demo-{run_id:x}-c{clip_counter}"),
            )
            .await;
        }
        // A simulated crowd reacting: counted like real fans' reactions.
        for _ in 0..rng.random_range(0..6) {
            let reaction = ["🔥", "👏", "😮", "😢"][rng.random_range(0..4)];
            node.stats.react(&results, reaction);
        }
        if heat.finished() {
            tokio::time::sleep(Duration::from_secs(4)).await;
            heat = Heat::new(heat.number + 1, &mut rng);
        } else {
            heat.step(&mut rng);
            tokio::time::sleep(Duration::from_millis(rng.random_range(1000..2000))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(18_276), (2020, 1, 15));
    }

    #[test]
    fn heat_reaches_final_with_ranked_rows() {
        let mut rng = rand::rng();
        let mut heat = Heat::new(1, &mut rng);
        assert_eq!(heat.board()["event"]["status"], "live");
        for _ in 0..200 {
            heat.step(&mut rng);
        }
        let board = heat.board();
        assert_eq!(board["event"]["status"], "final");
        let rows = board["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 6);
        assert_eq!(rows[0]["gap"], Value::Null);
        assert!(
            clip(1, 1, &mut rng)["url"]
                .as_str()
                .unwrap()
                .starts_with("https://")
        );
    }
}
