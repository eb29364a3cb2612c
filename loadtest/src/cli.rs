//! The command line of `tribune-loadtest`: a run of a scenario ([`Cli`]),
//! or one of the subcommands ([`Tool`]: `markdown`, and the hidden `worker`
//! the coordinator starts).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::wire::Target;

/// Load generator for Tribune hubs, compared with nats-server's websocket listener.
///
/// Starts nats-server and hub nodes itself unless given their URLs, runs the
/// scenario against each target in turn with the same clients, and writes
/// `report.json` and `report.html` into the output directory. Exit status: 0,
/// 3 when a feed scenario lost or duplicated messages on the tribune target
/// or when a node's summed `stats` differ from the accepted reactions,
/// 1 on errors.
///
/// `tribune-loadtest markdown` turns the reports of several runs into
/// BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(
    name = "tribune-loadtest",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Command {
    #[command(subcommand)]
    pub tool: Option<Tool>,
    /// The run, when no subcommand is given (clap requires its scenario then).
    #[command(flatten)]
    pub run: Option<Cli>,
}

/// What `tribune-loadtest` does besides running a scenario.
#[derive(Debug, Subcommand)]
pub enum Tool {
    /// Writes BENCHMARKS.md from the report.json files of a benchmark session (scripts/bench).
    Markdown(crate::markdown::MarkdownArgs),
    /// One worker process of a run: started by the coordinator, spec and
    /// commands on stdin, reports on stdout.
    #[command(hide = true)]
    Worker,
}

/// The servers `--target` names: `both` is `tribune,nats-ws`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TargetArg {
    /// The hub nodes.
    Tribune,
    /// nats-server's own websocket listener.
    NatsWs,
    /// The hub, then nats-server's websocket listener, with the same clients.
    Both,
}

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Hold N connections and report memory.
    Idle,
    /// N clients on one topic.
    Fanout,
    /// N clients, each on K of T topics chosen by Zipf popularity.
    Topics,
    /// N connected clients all subscribe to one topic within S seconds.
    Storm,
    /// Clients disconnect and new ones connect at a rate while traffic flows.
    Churn,
    /// Kill or drain a hub node; time until every client is back, no loss.
    Resume,
    /// N clients react at `--rate` (all together); every node's summed `stats`
    /// windows must equal the reactions accepted.
    Reactions,
    /// One generated hour of a speed-skating event (results board, clips)
    /// replayed at `--rate` to N fans, full, delta, deflate and both (and
    /// nats-server ws, plain and compressed): bytes per fan-hour, CPU per
    /// delivery, memory.
    Bandwidth,
    /// Two regions (nats-servers joined by a leaf node, the stream in A, a
    /// mirror in B), a hub in each, fans split between them: publish→screen
    /// latency per region, with `--region-delay-ms` between the regions.
    Regions,
}

impl Scenario {
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::Fanout => "fanout",
            Scenario::Topics => "topics",
            Scenario::Storm => "storm",
            Scenario::Churn => "churn",
            Scenario::Resume => "resume",
            Scenario::Reactions => "reactions",
            Scenario::Bandwidth => "bandwidth",
            Scenario::Regions => "regions",
        }
    }

    /// Scenarios whose messages are a feed: any loss fails the run.
    pub fn is_feed(self) -> bool {
        !matches!(
            self,
            Scenario::Idle | Scenario::Reactions | Scenario::Bandwidth
        )
    }
}

/// How the hub's bus runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Bus {
    /// `--nats` on a nats-server (started by the harness or `--nats-url`).
    Nats,
    /// No `--nats`: the in-process bus; publications go through `POST /v1/publish`.
    Embedded,
}

/// Where publications enter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PublishVia {
    /// JetStream publish on `tribune.fan.<topic>`.
    Nats,
    /// The hub's `POST /v1/publish`.
    Http,
}

/// How `resume` takes a node away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ResumeAction {
    /// SIGKILL: connections drop without notice.
    Kill,
    /// SIGTERM: the node sends `drain` and closes its clients over its window.
    Drain,
}

// The arguments of a run (`Command` holds the program's description).
#[derive(Debug, Clone, Args, Serialize)]
pub struct Cli {
    /// What the run does.
    #[arg(value_enum, required = true)]
    pub scenario: Scenario,

    /// Servers to measure, one after the other: tribune, nats-ws, or both
    /// (the same as tribune,nats-ws).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "tribune")]
    pub target: Vec<TargetArg>,

    // --- clients ---
    /// Number of clients.
    #[arg(long, short = 'n', default_value_t = 200)]
    pub clients: u64,
    /// Worker processes holding the clients (each may open at most 20,000 files).
    #[arg(long, default_value_t = 1)]
    pub procs: u32,
    /// Loopback source addresses to spread clients over (127.0.0.2, 127.0.0.3...)
    /// so that ephemeral ports never run out; 0 lets the kernel choose.
    /// Default: one per 15,000 clients.
    #[arg(long)]
    pub source_addrs: Option<u32>,
    /// New connections per second, all workers together.
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// Time allowed for every client to connect (and subscribe).
    #[arg(long, default_value_t = 120)]
    pub connect_timeout_s: u64,
    /// Read buffer per connection, bytes.
    #[arg(long, default_value_t = 4096)]
    pub read_buf: usize,

    // --- traffic ---
    /// Topics (default: 1; 500 for `topics`; 10 for `churn`).
    #[arg(long)]
    pub topics: Option<u32>,
    /// Topics per client (default: 5 for `topics`, else 1).
    #[arg(long)]
    pub per_client: Option<u32>,
    /// Zipf exponent of topic popularity.
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Publications per second, all topics together.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// How long the publisher runs, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// Payload size, bytes (at least 64).
    #[arg(long, default_value_t = 200)]
    pub payload_size: usize,
    /// Where publications enter (default: nats, or http with the embedded bus).
    #[arg(long, value_enum)]
    pub publish: Option<PublishVia>,
    /// Time allowed after the last publication for deliveries to arrive
    /// (the wait ends earlier, 2 s after the last delivery).
    #[arg(long, default_value_t = 60_000)]
    pub settle_ms: u64,

    // --- scenarios ---
    /// idle: how long connections are held before memory is read.
    #[arg(long, default_value_t = 3.0)]
    pub hold_s: f64,
    /// storm: window over which all clients subscribe.
    #[arg(long, default_value_t = 5.0)]
    pub storm_spread_s: f64,
    /// churn: clients closed and replaced per second.
    #[arg(long, default_value_t = 20.0)]
    pub churn_rate: f64,
    /// resume: kill or drain.
    #[arg(long, value_enum, default_value = "kill")]
    pub resume_action: ResumeAction,
    /// resume: which hub node (index) is taken away.
    #[arg(long, default_value_t = 0)]
    pub resume_node: usize,
    /// resume: seconds of traffic before the node is taken away.
    #[arg(long, default_value_t = 2.0)]
    pub resume_after_s: f64,
    /// resume: time allowed for every client to be back.
    #[arg(long, default_value_t = 60)]
    pub resume_timeout_s: u64,
    /// resume: start the node again (default: only with a single node).
    #[arg(long)]
    pub restart: Option<bool>,

    /// regions: one-way latency added between the two regions, ms (a delay
    /// proxy on their leaf node connection; 0: none).
    #[arg(long, default_value_t = 40)]
    pub region_delay_ms: u64,

    // --- servers ---
    /// Hub nodes to start.
    #[arg(long, default_value_t = 1)]
    pub hubs: usize,
    /// The hub binary (default: tribune-hub next to this binary, in target/, or in PATH).
    #[arg(long)]
    pub hub_bin: Option<PathBuf>,
    /// Hub configuration file (default: one written by the harness with raised
    /// handshake and connection limits and a 2 s drain window).
    #[arg(long)]
    pub hub_config: Option<PathBuf>,
    /// `[stats] window_ms` of the harness's hub configuration (default: the hub's).
    #[arg(long)]
    pub stats_window_ms: Option<u64>,
    /// Extra argument for every hub (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    pub hub_arg: Vec<String>,
    /// The hub's bus.
    #[arg(long, value_enum, default_value = "nats")]
    pub bus: Bus,
    /// The nats-server binary (default: .tools/bin/nats-server or PATH).
    #[arg(long)]
    pub nats_server_bin: Option<PathBuf>,
    /// Use running hubs instead of starting them (repeatable, ws://IP:PORT/v1/ws).
    #[arg(long)]
    pub hub_url: Vec<String>,
    /// Pids of the running hubs, for memory and CPU (repeatable).
    #[arg(long)]
    pub hub_pid: Vec<u32>,
    /// Use a running nats-server (nats://IP:PORT) instead of starting one.
    #[arg(long)]
    pub nats_url: Option<String>,
    /// Its websocket listener (ws://IP:PORT), for `--target nats-ws`.
    #[arg(long)]
    pub nats_ws_url: Option<String>,
    /// Its pid, for memory and CPU.
    #[arg(long)]
    pub nats_pid: Option<u32>,

    // --- output ---
    /// Output directory for reports and logs (default: target/loadtest/<scenario>-<time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Hard limit on the whole run, seconds.
    #[arg(long, default_value_t = 900)]
    pub max_seconds: u64,
    /// Seed of the topic choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    // --- test hooks ---
    /// Test hook: one client discards one received message (must count as lost
    /// == 1); reactions: node 0's watcher discards its first `stats` frame.
    #[arg(long, hide = true)]
    pub test_drop_one: bool,
    /// Test hook: one client accounts one message twice (must count as duplicated == 1).
    #[arg(long, hide = true)]
    pub test_dup_one: bool,
}

impl Cli {
    /// The servers to measure, in the order given, each once.
    pub fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        for t in &self.target {
            let named: &[Target] = match t {
                TargetArg::Tribune => &[Target::Tribune],
                TargetArg::NatsWs => &[Target::NatsWs],
                TargetArg::Both => &[Target::Tribune, Target::NatsWs],
            };
            for &n in named {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }

    pub fn topics(&self) -> u32 {
        self.topics.unwrap_or(match self.scenario {
            Scenario::Topics => 500,
            Scenario::Churn => 10,
            _ => 1,
        })
    }

    pub fn per_client(&self) -> u32 {
        self.per_client
            .unwrap_or(if self.scenario == Scenario::Topics {
                5
            } else {
                1
            })
            .min(self.topics())
            .max(1)
    }

    pub fn source_addrs(&self) -> u32 {
        self.source_addrs
            .unwrap_or(self.clients.div_ceil(15_000) as u32)
            .min(250)
    }

    pub fn publish_via(&self) -> PublishVia {
        self.publish.unwrap_or(match self.bus {
            Bus::Embedded => PublishVia::Http,
            Bus::Nats => PublishVia::Nats,
        })
    }

    /// Refuses combinations that cannot run, with the reason.
    pub fn validate(&self) -> Result<(), String> {
        if self.clients == 0 || self.procs == 0 || self.hubs == 0 {
            return Err("--clients, --procs and --hubs must be at least 1".into());
        }
        if self.clients / u64::from(self.procs) > 19_000 {
            return Err(format!(
                "{} clients over {} worker(s) is more than 19,000 per process (the file limit is 20,000): use --procs {}",
                self.clients,
                self.procs,
                self.clients.div_ceil(19_000)
            ));
        }
        if self.payload_size < crate::payload::MIN_SIZE {
            return Err(format!(
                "--payload-size must be at least {}",
                crate::payload::MIN_SIZE
            ));
        }
        if self.rate <= 0.0 || self.duration_s <= 0.0 || self.connect_rate <= 0.0 {
            return Err("--rate, --duration-s and --connect-rate must be positive".into());
        }
        let targets = self.targets();
        if self.scenario == Scenario::Regions
            && (targets.contains(&Target::NatsWs) || self.bus == Bus::Embedded)
        {
            return Err("regions measures hubs on NATS: use --target tribune --bus nats".into());
        }
        if self.scenario == Scenario::Resume {
            if targets.contains(&Target::NatsWs) {
                return Err("resume measures hub nodes: use --target tribune".into());
            }
            if self.bus == Bus::Embedded {
                return Err("resume needs --bus nats: an embedded bus dies with its node".into());
            }
            if self.resume_node >= self.hubs.max(self.hub_url.len()) {
                return Err("--resume-node is not one of the hubs".into());
            }
        }
        if self.scenario == Scenario::Reactions && targets != [Target::Tribune] {
            return Err("reactions measures hub nodes: use --target tribune".into());
        }
        if targets.contains(&Target::Tribune)
            && self.bus == Bus::Embedded
            && self.publish_via() == PublishVia::Nats
        {
            return Err("the embedded bus only hears POST /v1/publish: use --publish http".into());
        }
        if targets.contains(&Target::NatsWs) && self.publish_via() == PublishVia::Http {
            return Err("--target nats-ws needs --publish nats".into());
        }
        if !self.hub_url.is_empty() && self.hub_pid.len() > self.hub_url.len() {
            return Err("more --hub-pid than --hub-url".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Command::try_parse_from(std::iter::once("tribune-loadtest").chain(args.iter().copied()))
    }

    fn run(args: &[&str]) -> Cli {
        let c = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(c.tool.is_none(), "{args:?} is a run");
        c.run.expect("a run")
    }

    #[test]
    fn target_both_is_the_hub_then_nats_ws() {
        assert_eq!(
            run(&["fanout", "--target", "both"]).targets(),
            [Target::Tribune, Target::NatsWs]
        );
        assert_eq!(
            run(&["fanout", "--target", "tribune,nats-ws"]).targets(),
            [Target::Tribune, Target::NatsWs]
        );
        // In the order given, each once.
        assert_eq!(
            run(&["fanout", "--target", "nats-ws,both"]).targets(),
            [Target::NatsWs, Target::Tribune]
        );
        assert_eq!(run(&["fanout"]).targets(), [Target::Tribune]);
        // `both` meets the same rules as naming the two.
        let reactions = run(&["reactions", "--target", "both"]);
        assert!(
            reactions
                .validate()
                .unwrap_err()
                .contains("--target tribune")
        );
        assert!(run(&["idle", "--target", "both"]).validate().is_ok());
        assert!(parse(&["fanout", "--target", "all"]).is_err());
    }

    #[test]
    fn markdown_is_a_subcommand_with_its_own_help() {
        let help = parse(&["markdown", "--help"]).unwrap_err();
        assert_eq!(help.kind(), ErrorKind::DisplayHelp);
        let text = help.render().to_string();
        for flag in ["--out", "--notes", "--title", "<REPORTS>"] {
            assert!(text.contains(flag), "{flag} in:\n{text}");
        }
        let top = parse(&["--help"]).unwrap_err().render().to_string();
        let commands = &top
            [top.find("Commands:").expect("a Commands section")..top.find("Arguments:").unwrap()];
        assert!(commands.contains("markdown"), "{commands}");
        assert!(
            !commands.contains("worker"),
            "the worker subcommand is internal: {commands}"
        );

        let c = parse(&["markdown", "--out", "B.md", "a.json", "b.json"]).unwrap();
        assert!(c.run.is_none());
        let Some(Tool::Markdown(m)) = c.tool else {
            panic!("markdown: {:?}", c.tool)
        };
        assert_eq!(m.out, PathBuf::from("B.md"));
        assert_eq!(m.title, "Benchmarks");
        assert_eq!(
            m.reports,
            [PathBuf::from("a.json"), PathBuf::from("b.json")]
        );
        // Reports are required, and a scenario's options do not mix in.
        assert!(parse(&["markdown", "--out", "B.md"]).is_err());
        assert!(parse(&["markdown", "--out", "B.md", "--clients", "5", "a.json"]).is_err());

        assert!(matches!(
            parse(&["worker"]).unwrap().tool,
            Some(Tool::Worker)
        ));
        assert_eq!(
            parse(&[]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
    }
}
