//! The servers a run measures: a nats-server and hub nodes started through
//! the shared harness (`tribune_harness`), each logging into the run's
//! directory, or servers given by URL (and pid, for RSS and CPU). Starting
//! them here is what gives the report their pids, and what lets the
//! `resume` scenario kill or drain a node and start it again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tribune_harness::binaries::{find_binary, version_line};
use tribune_harness::hub::{Hub, HubOptions, PUBLISH_KEY_ENV, random_key};
use tribune_harness::nats::{NatsOptions, NatsServer};

use crate::cli::{Bus, Cli};
use crate::report::bare_version;
use crate::wire::Target;

/// The NATS server of the run, started here or given.
pub struct Nats {
    pub url: String,
    pub ws_url: Option<String>,
    pub pid: Option<u32>,
    /// Kept alive for the whole invocation (all targets use the same one).
    _spawned: Option<NatsServer>,
}

impl Nats {
    /// The run's nats-server when a target needs one: the one given
    /// (`--nats-url`), else one started here with JetStream and a websocket
    /// listener, whose version goes into `versions`.
    pub async fn for_run(
        cli: &Cli,
        run_dir: &Path,
        versions: &mut BTreeMap<String, String>,
    ) -> anyhow::Result<Option<Nats>> {
        let targets = cli.targets();
        let needs_nats = targets.contains(&Target::NatsWs)
            || (targets.contains(&Target::Tribune) && cli.bus == Bus::Nats);
        if !needs_nats {
            return Ok(None);
        }
        if let Some(url) = &cli.nats_url {
            return Ok(Some(Nats {
                url: url.clone(),
                ws_url: cli.nats_ws_url.clone(),
                pid: cli.nats_pid,
                _spawned: None,
            }));
        }
        let bin = find_binary("nats-server", cli.nats_server_bin.as_deref()).context(
            "nats-server not found: run scripts/install-nats, or pass --nats-server-bin or --nats-url",
        )?;
        versions.insert(
            "nats-server".into(),
            bare_version("nats-server", &version_line(&bin)),
        );
        let server = NatsServer::try_start(&NatsOptions {
            bin: Some(bin),
            websocket: true,
            // The default (64k) would cap a 76,000-client comparison; the
            // websocket listener shares it.
            max_connections: Some(1_000_000),
            dir_in: Some(run_dir.to_path_buf()),
            log: Some(run_dir.join(format!("nats-server-{}.log", std::process::id()))),
            ..NatsOptions::default()
        })
        .await?;
        Ok(Some(Nats {
            url: server.url(),
            ws_url: server.ws_url(),
            pid: server.pid(),
            _spawned: Some(server),
        }))
    }
}

/// How to start hub nodes.
#[derive(Debug, Clone)]
pub struct HubLauncher {
    pub bin: PathBuf,
    pub config: PathBuf,
    /// The key every launched hub takes on `POST /v1/publish`, given to it
    /// as `TRIBUNE_PUBLISH_KEY` (never on the command line).
    pub publish_key: String,
    /// The cluster key sealing the hubs' statistics partials, given to each
    /// as `TRIBUNE_STATS__KEY`.
    pub stats_key: String,
    /// `--nats` URL; none: the embedded bus.
    pub nats: Option<String>,
    pub extra_args: Vec<String>,
    pub run_dir: PathBuf,
}

impl HubLauncher {
    /// The launcher of the run's hub nodes, unless there is no tribune
    /// target or the hubs are given (`--hub-url`); its version goes into
    /// `versions`.
    pub fn for_run(
        cli: &Cli,
        run_dir: &Path,
        nats: Option<&Nats>,
        versions: &mut BTreeMap<String, String>,
    ) -> anyhow::Result<Option<HubLauncher>> {
        if !cli.targets().contains(&Target::Tribune) || !cli.hub_url.is_empty() {
            return Ok(None);
        }
        let bin = find_binary("tribune-hub", cli.hub_bin.as_deref()).context(
            "tribune-hub not found: build it (cargo build --release -p tribune-hub) or pass --hub-bin or --hub-url",
        )?;
        let config = match &cli.hub_config {
            Some(c) => c.clone(),
            None => {
                let path = Self::write_default_config(run_dir, 2_000, 1_000)?;
                if let Some(w) = cli.stats_window_ms {
                    let mut text = std::fs::read_to_string(&path)?;
                    text.push_str(&format!("\n[stats]\nwindow_ms = {w}\n"));
                    std::fs::write(&path, text)?;
                }
                path
            }
        };
        versions.insert(
            "tribune-hub".into(),
            bare_version("tribune-hub", &version_line(&bin)),
        );
        Ok(Some(HubLauncher {
            bin,
            config,
            publish_key: random_key(),
            stats_key: random_key(),
            nats: (cli.bus == Bus::Nats)
                .then(|| nats.map(|n| n.url.clone()))
                .flatten(),
            extra_args: cli.hub_arg.clone(),
            run_dir: run_dir.to_path_buf(),
        }))
    }

    /// Writes the harness's hub configuration: limits raised so that the
    /// handshake rate limit and connection cap measure nothing but the
    /// hub, and a short drain so that `resume` runs take seconds.
    ///
    /// `max_connections` stays below the open-files limit the hub inherits
    /// (with room for its listener, NATS and logs): past it, accept() fails
    /// with EMFILE and clients time out, where a 503 sends them elsewhere.
    pub fn write_default_config(
        run_dir: &Path,
        drain_window_ms: u64,
        drain_retry_ms: u64,
    ) -> anyhow::Result<PathBuf> {
        let nofile = crate::machine::Machine::read().nofile_limit;
        let max_connections = if nofile > 1_000 {
            nofile - 400
        } else {
            1_000_000
        };
        let path = run_dir.join("hub-loadtest.toml");
        std::fs::write(
            &path,
            format!(
                "# Written by tribune-loadtest.\n\
                 [limits]\nhandshakes_per_second = 1000000\nhandshakes_burst = 1000000\n\
                 node_handshakes_per_second = 1000000\nnode_handshakes_burst = 1000000\n\
                 address_share_percent = 100\nmax_relays = 1000000\n\
                 max_connections = {max_connections}\n\n\
                 [drain]\nwindow_ms = {drain_window_ms}\nretry_ms = {drain_retry_ms}\ngrace_ms = {}\n",
                drain_window_ms + 10_000
            ),
        )?;
        Ok(path)
    }

    /// Starts hub node `index` on a free loopback port, logging to
    /// `hub-<index>.log` in the run's directory.
    pub async fn start(&self, index: usize) -> anyhow::Result<Hub> {
        let mut args: Vec<String> = vec![
            "--config".into(),
            self.config.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--node-name".into(),
            format!("lt-hub-{index}"),
        ];
        if let Some(url) = &self.nats {
            args.extend(["--nats".into(), url.clone()]);
        }
        args.extend(self.extra_args.iter().cloned());
        Hub::launch(HubOptions {
            bin: self.bin.clone(),
            args,
            env: vec![
                (PUBLISH_KEY_ENV.to_string(), self.publish_key.clone()),
                // One cluster key for the run's hubs: on NATS, a node counts
                // only the statistics partials sealed with it.
                ("TRIBUNE_STATS__KEY".to_string(), self.stats_key.clone()),
            ],
            log_level: std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            log_file: Some(self.run_dir.join(format!("hub-{index}.log"))),
            file_limit: None,
        })
        .await
        .with_context(|| format!("hub {index} did not start"))
    }
}
