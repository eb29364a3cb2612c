//! One generated hour of a speed-skating event, as its editors would
//! publish it (the `bandwidth` scenario): a women's 1500 m results board
//! (30 skaters in 15 pairs; rows with splits, times, gaps to the leader,
//! ranks and records; updated at the start of each pair, at every split, at
//! the finish and when the result is official) and a clips feed (a
//! highlight per pair and a few features). Deterministic: the same seed
//! gives the same bytes, so every variant of a run replays the same hour.
//!
//! The board is what a results page holds: its full state at every update,
//! 5 to 7 KiB, most of it unchanged from one update to the next.

use serde_json::{Value, json};

/// Pairs in the event: 30 skaters.
const PAIRS: usize = 15;
/// Split points of the 1500 m, metres.
const SPLITS: [u32; 3] = [300, 700, 1100];

/// What one hour of the event publishes, in order.
pub struct Hour {
    /// Every publication: (topic kind, payload).
    pub items: Vec<(Kind, Value)>,
}

/// Which topic a publication goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Board,
    Clip,
}

impl Hour {
    pub fn boards(&self) -> usize {
        self.items.iter().filter(|(k, _)| *k == Kind::Board).count()
    }

    pub fn clips(&self) -> usize {
        self.items.len() - self.boards()
    }
}

const NAMES: [(&str, &str); 30] = [
    ("Martina Sáblíková", "CZE"),
    ("Ragne Wiklund", "NOR"),
    ("Joy Beune", "NED"),
    ("Ivanie Blondin", "CAN"),
    ("Miho Takagi", "JPN"),
    ("Antoinette Rijpma-de Jong", "NED"),
    ("Isabelle Weidemann", "CAN"),
    ("Han Mei", "CHN"),
    ("Marijke Groenewoud", "NED"),
    ("Kaja Ziomek-Nogal", "POL"),
    ("Jutta Leerdam", "NED"),
    ("Yekaterina Aydova", "KAZ"),
    ("Nadezhda Morozova", "KAZ"),
    ("Francesca Lollobrigida", "ITA"),
    ("Ayano Sato", "JPN"),
    ("Greta Myers", "USA"),
    ("Brittany Bowe", "USA"),
    ("Zoë Ødegård", "NOR"),
    ("Kim Min-sun", "KOR"),
    ("Karolina Bosiek", "POL"),
    ("Elizaveta Golubeva", "KAZ"),
    ("Béatrice Lamarche", "CAN"),
    ("Natalia Czerwonka", "POL"),
    ("Valérie Maltais", "CAN"),
    ("Nikola Zdráhalová", "CZE"),
    ("Sofie Karoline Haugen", "NOR"),
    ("Yin Qi", "CHN"),
    ("Marina Zueva", "BLR"),
    ("Michelle Uhrig", "GER"),
    ("Josie Hofmann", "GER"),
];

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One skater's race.
#[derive(Clone)]
struct Skater {
    bib: usize,
    name: &'static str,
    noc: &'static str,
    pair: usize,
    lane: &'static str,
    personal_best_ms: u32,
    /// Split times once passed, ms.
    splits: Vec<u32>,
    /// Final time once finished, ms.
    time: Option<u32>,
    status: &'static str,
}

fn clock(ms: u32) -> String {
    let (m, s, c) = (ms / 60_000, ms / 1000 % 60, ms % 1000 / 10);
    if m > 0 {
        format!("{m}:{s:02}.{c:02}")
    } else {
        format!("{s}.{c:02}")
    }
}

fn board(skaters: &[Skater], heat: usize, phase: &str, official: bool) -> Value {
    let mut order: Vec<&Skater> = skaters.iter().collect();
    order.sort_by_key(|s| (s.time.unwrap_or(u32::MAX), s.pair, s.bib));
    let leader = order.first().and_then(|s| s.time);
    let rows: Vec<Value> = order
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let finished = s.time.is_some();
            json!({
                "rank": finished.then_some(i + 1),
                "bib": s.bib,
                "name": s.name,
                "noc": s.noc,
                "pair": s.pair,
                "lane": s.lane,
                "splits": SPLITS.iter().zip(&s.splits).map(|(m, t)| json!({"m": m, "t": clock(*t)})).collect::<Vec<_>>(),
                "time": s.time.map(clock),
                "behind": match (s.time, leader) {
                    (Some(t), Some(l)) if t > l => Some(format!("+{}", clock(t - l))),
                    _ => None,
                },
                "record": match s.time {
                    Some(t) if t < s.personal_best_ms => Some("PB"),
                    _ => None,
                },
                "status": s.status,
            })
        })
        .collect();
    json!({
        "kind": "results",
        "event": {
            "id": "milano2026-ssk-w1500",
            "name": "Women's 1500 m",
            "venue": "Milano Speed Skating Stadium",
            "phase": phase,
            "status": if official { "official" } else { "live" },
            "heat": heat,
        },
        "rows": rows,
    })
}

fn clip(rng: &mut Rng, n: usize, who: &Skater, heat: usize) -> Value {
    let id = format!("{:016x}", rng.next());
    json!({
        "kind": "clip",
        "id": id,
        "title": format!("Pair {heat}: {} ({}) crosses the line", who.name, who.noc),
        "athletes": [{"name": who.name, "noc": who.noc}],
        "sport": "speed-skating",
        "event": "Women's 1500 m",
        "duration_s": 20 + rng.below(70),
        "url": format!("https://media.example.invalid/clips/{id}/index.m3u8"),
        "thumbnail": format!("https://media.example.invalid/clips/{id}/poster-{n}.jpg"),
        "tags": ["highlight", "finish", "1500m"],
    })
}

/// The hour: `seed` varies the times and clip ids.
pub fn hour(seed: u64) -> Hour {
    let mut rng = Rng(seed);
    let mut skaters: Vec<Skater> = NAMES
        .iter()
        .enumerate()
        .map(|(i, (name, noc))| Skater {
            bib: i + 1,
            name,
            noc,
            pair: i / 2 + 1,
            lane: if i % 2 == 0 { "inner" } else { "outer" },
            personal_best_ms: 112_500 + rng.below(4_000) as u32,
            splits: Vec::new(),
            time: None,
            status: "to skate",
        })
        .collect();
    let mut items = vec![(Kind::Board, board(&skaters, 0, "start list", false))];
    let mut clips = 0;
    for pair in 0..PAIRS {
        let heat = pair + 1;
        let lanes = [pair * 2, pair * 2 + 1];
        for &i in &lanes {
            skaters[i].status = "racing";
        }
        items.push((Kind::Board, board(&skaters, heat, "racing", false)));
        // Splits: 300 m in about 25 s, then 400 m laps of about 30 s.
        let pace: Vec<u32> = lanes
            .iter()
            .map(|_| 29_000 + rng.below(2_500) as u32)
            .collect();
        for (k, _) in SPLITS.iter().enumerate() {
            for (j, &i) in lanes.iter().enumerate() {
                let t = 24_800 + rng.below(900) as u32 + k as u32 * pace[j];
                skaters[i].splits.push(t);
            }
            items.push((Kind::Board, board(&skaters, heat, "racing", false)));
        }
        for (j, &i) in lanes.iter().enumerate() {
            let last = *skaters[i].splits.last().expect("three splits");
            skaters[i].time = Some(last + pace[j] + rng.below(600) as u32);
            skaters[i].status = "finished";
        }
        items.push((Kind::Board, board(&skaters, heat, "finished", false)));
        items.push((Kind::Board, board(&skaters, heat, "official", true)));
        let winner = &skaters[lanes[rng.below(2) as usize]].clone();
        clips += 1;
        items.push((Kind::Clip, clip(&mut rng, clips, winner, heat)));
        if pair % 3 == 2 {
            // A feature between pairs: an interview, a replay.
            clips += 1;
            let who = &skaters[rng.below(30) as usize].clone();
            items.push((Kind::Clip, clip(&mut rng, clips, who, heat)));
        }
    }
    Hour { items }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_is_realistic_and_deterministic() {
        let h = hour(7);
        assert_eq!(h.boards(), 1 + 15 * 6);
        assert_eq!(h.clips(), 15 + 5);
        let sizes: Vec<usize> = h
            .items
            .iter()
            .filter(|(k, _)| *k == Kind::Board)
            .map(|(_, v)| serde_json::to_string(v).unwrap().len())
            .collect();
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(*min > 4_000 && *max < 9_000, "{min}..{max}");
        let again = hour(7);
        assert_eq!(
            serde_json::to_string(&h.items.last().unwrap().1).unwrap(),
            serde_json::to_string(&again.items.last().unwrap().1).unwrap()
        );
        let last = h
            .items
            .iter()
            .rev()
            .find(|(k, _)| *k == Kind::Board)
            .unwrap();
        assert_eq!(last.1["rows"][0]["rank"], 1, "everyone finished");
        assert_eq!(last.1["rows"][29]["rank"], 30);
    }
}
