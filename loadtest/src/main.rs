//! `tribune-loadtest`: parses the command line and runs the coordinator,
//! or a subcommand: `markdown` (BENCHMARKS.md from reports), `worker` (one
//! worker process, see the crate docs).

use clap::{CommandFactory, Parser};
use tribune_loadtest::cli::{Cli, Command, Tool};
use tribune_loadtest::wire::Target;
use tribune_loadtest::{coordinator, html, report};

fn main() {
    let command = Command::parse();
    match command.tool {
        Some(Tool::Worker) => {
            if let Err(e) = tribune_loadtest::worker::main() {
                eprintln!("worker: {e:#}");
                std::process::exit(1);
            }
        }
        Some(Tool::Markdown(args)) => {
            if let Err(e) = tribune_loadtest::markdown::main(&args) {
                eprintln!("markdown: {e:#}");
                std::process::exit(1);
            }
        }
        None => {
            // clap requires the scenario when no subcommand is given, so a
            // run is there; the message only guards that configuration.
            let Some(cli) = command.run else {
                Command::command()
                    .error(
                        clap::error::ErrorKind::MissingRequiredArgument,
                        "a scenario or a subcommand is required",
                    )
                    .exit()
            };
            std::process::exit(match run(cli) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("tribune-loadtest: {e:#}");
                    1
                }
            });
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let feed = cli.scenario.is_feed();
    let (report, dir) = rt.block_on(coordinator::run(cli))?;
    let json = dir.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)?;
    std::fs::write(dir.join("report.html"), html::render(&report))?;
    eprint!("{}", report::summary(&report));
    eprintln!("report: {} and report.html", json.display());
    // Loss or duplicates on the hub in a feed scenario fail the run; the
    // peer (core NATS, at most once) is measured, not judged.
    let hub_lost = report
        .runs
        .iter()
        .filter(|r| r.target == Some(Target::Tribune))
        .any(|r| r.delivery.loss.lost > 0 || r.delivery.loss.duplicated > 0);
    // Summed `stats` windows that differ from the accepted reactions too.
    let reactions_off = report
        .runs
        .iter()
        .filter_map(|r| r.reactions.as_ref())
        .any(|r| !r.all_equal);
    Ok(if (feed && hub_lost) || reactions_off {
        3
    } else {
        0
    })
}
