//! A real nats-server: JetStream on, loopback only, its own temp store and
//! log, killed on drop, restartable on the same ports and store (to test
//! faults); optionally a websocket listener (the load generator's peer
//! target) and any further configuration (TLS, users and permissions,
//! operator and accounts) with the environment its variables name; and a
//! 3-node JetStream cluster whose nodes can be killed and restarted one by
//! one.
//!
//! Ports are picked free before the server starts, so that a restart finds
//! the same ones; a port taken in between is a start retried on new ones.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

pub use crate::binaries::nats_server_bin;

/// How long a server may take to say "Server is ready" (a restart replays its store).
const READY_WITHIN: Duration = Duration::from_secs(20);

/// Starts tried on fresh ports before giving up.
const ATTEMPTS: usize = 5;

/// What a server needs beyond the tests' defaults.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// The binary; `None`: [`nats_server_bin`].
    pub bin: Option<PathBuf>,
    /// Also accept websocket clients (no TLS) on a loopback port.
    pub websocket: bool,
    /// The websocket listener accepts permessage-deflate (`compression: true`).
    pub websocket_compression: bool,
    /// `max_connections`, websocket clients included; `None`: the server's
    /// default (64k), which would cap a large load run.
    pub max_connections: Option<u64>,
    /// Where the server's temp folder (config, store) is made; `None`: the
    /// system's temp folder.
    pub dir_in: Option<PathBuf>,
    /// The log file; `None`: inside the temp folder, removed with it.
    pub log: Option<PathBuf>,
    /// Appended to the server's config file as is: `tls {...}`,
    /// `authorization {...}`, `include ./file.conf`, `operator: ...`.
    pub extra_config: Option<String>,
    /// Set in the server's environment: the values of `$VARIABLES` its
    /// config refers to (passwords, public keys).
    pub env: Vec<(String, String)>,
    /// The JetStream domain (`jetstream { domain }`): a region of its own
    /// (`region.rs`); `None`: none.
    pub jetstream_domain: Option<String>,
}

/// `n` distinct free loopback ports. Every probe listener is held until all
/// are chosen: a port released at once may be handed out again by the very
/// next probe (seen in CI: a server's client and monitor ports the same).
pub(crate) fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("a free loopback port"))
        .collect::<anyhow::Result<Vec<TcpListener>>>()?;
    held.iter()
        .map(|l| Ok(l.local_addr().context("a free loopback port")?.port()))
        .collect()
}

/// One nats-server process with a fixed config file, store and log.
#[derive(Debug)]
struct Node {
    name: String,
    bin: PathBuf,
    port: u16,
    monitor_port: u16,
    ws_port: Option<u16>,
    config: PathBuf,
    log: PathBuf,
    store: PathBuf,
    /// The server's environment beyond the inherited one.
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Node {
    fn new(
        dir: &Path,
        name: &str,
        opts: &NatsOptions,
        cluster: Option<(&str, u16, &[u16])>,
    ) -> anyhow::Result<Node> {
        let ports = free_ports(3)?;
        let (port, monitor_port) = (ports[0], ports[1]);
        let ws_port = opts.websocket.then_some(ports[2]);
        let store = dir.join(format!("{name}-store"));
        fs::create_dir_all(&store).context("store dir")?;
        let domain = opts
            .jetstream_domain
            .as_ref()
            .map(|d| format!("  domain: {d}\n"))
            .unwrap_or_default();
        let mut config = format!(
            "server_name: {name}\nlisten: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor_port}\"\n\
             jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 256MB\n  max_file_store: 1GB\n{domain}}}\n",
            store.display()
        );
        if let Some(max) = opts.max_connections {
            config += &format!("max_connections: {max}\n");
        }
        if let Some(ws) = ws_port {
            let compression = if opts.websocket_compression {
                "  compression: true\n"
            } else {
                ""
            };
            config += &format!(
                "websocket {{\n  listen: \"127.0.0.1:{ws}\"\n  no_tls: true\n{compression}}}\n"
            );
        }
        if let Some(extra) = &opts.extra_config {
            config += extra;
            config.push('\n');
        }
        if let Some((cluster_name, cluster_port, routes)) = cluster {
            let routes: Vec<String> = routes
                .iter()
                .filter(|p| **p != cluster_port)
                .map(|p| format!("    \"nats-route://127.0.0.1:{p}\""))
                .collect();
            config += &format!(
                "cluster {{\n  name: {cluster_name}\n  listen: \"127.0.0.1:{cluster_port}\"\n  routes: [\n{}\n  ]\n}}\n",
                routes.join("\n")
            );
        }
        let path = dir.join(format!("{name}.conf"));
        fs::write(&path, config).context("writing the nats config")?;
        Ok(Node {
            name: name.to_string(),
            bin: opts
                .bin
                .clone()
                .unwrap_or_else(|| nats_server_bin().to_path_buf()),
            port,
            monitor_port,
            ws_port,
            config: path,
            log: opts
                .log
                .clone()
                .unwrap_or_else(|| dir.join(format!("{name}.log"))),
            store,
            env: opts.env.clone(),
            child: None,
        })
    }

    /// Starts the process; returns the log offset from which its lines are new.
    fn spawn(&mut self) -> anyhow::Result<u64> {
        if self.child.is_some() {
            bail!("{} already running", self.name);
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(offset)
    }

    /// Waits until the log since `offset` says the server is ready: true,
    /// or false when it lost the race for a port (it is then stopped).
    async fn ready(&mut self, offset: u64) -> anyhow::Result<bool> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let new = self.log_since(offset);
            if new.contains("Server is ready") {
                return Ok(true);
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                self.kill();
                if new.contains("address already in use") {
                    return Ok(false);
                }
                match exited {
                    Some(status) => bail!(
                        "nats-server {} exited ({status}) while starting:\n{new}",
                        self.name
                    ),
                    None => bail!(
                        "nats-server {} not ready within {READY_WITHIN:?}:\n{new}",
                        self.name
                    ),
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the process if it runs, starts it again on the same ports and
    /// store, and waits until it is ready.
    async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let offset = self.spawn()?;
        if !self.ready(offset).await? {
            bail!("nats-server {}: its port was taken", self.name);
        }
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL: no goodbye to clients or peers
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: Signal) {
        let pid = self.child.as_ref().expect("server running").id();
        kill(Pid::from_raw(pid as i32), signal)
            .unwrap_or_else(|e| panic!("kill {signal} {pid}: {e}"));
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn log_since(&self, offset: u64) -> String {
        let text = fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default()).into_owned()
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A temp folder for a server's files, in `dir_in` or the system's.
fn temp_dir(prefix: &str, dir_in: Option<&Path>) -> anyhow::Result<TempDir> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix);
    match dir_in {
        Some(d) => b.tempdir_in(d),
        None => b.tempdir(),
    }
    .context("creating a temp folder for nats-server")
}

/// One JetStream-enabled nats-server on free loopback ports.
#[derive(Debug)]
pub struct NatsServer {
    node: Node,
    /// Owns config and store; removed on drop, after the process.
    _dir: TempDir,
}

impl NatsServer {
    /// Starts a server with the tests' defaults and waits until it is
    /// ready; panics with its log when it cannot.
    pub async fn start() -> NatsServer {
        Self::try_start(&NatsOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Starts a server as `opts` say and waits until it is ready.
    pub async fn try_start(opts: &NatsOptions) -> anyhow::Result<NatsServer> {
        let mut last_log = String::new();
        for _ in 0..ATTEMPTS {
            let dir = temp_dir("tribune-nats-", opts.dir_in.as_deref())?;
            let mut node = Node::new(dir.path(), "n1", opts, None)?;
            let offset = node.spawn()?;
            if node.ready(offset).await? {
                return Ok(NatsServer { node, _dir: dir });
            }
            last_log = node.log_since(offset);
        }
        bail!("nats-server did not start after {ATTEMPTS} attempts:\n{last_log}")
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.node.url()
    }

    pub fn port(&self) -> u16 {
        self.node.port
    }

    /// `ws://127.0.0.1:<port>` when started with a websocket listener.
    pub fn ws_url(&self) -> Option<String> {
        self.node.ws_port.map(|p| format!("ws://127.0.0.1:{p}"))
    }

    /// `http://127.0.0.1:<monitoring port>` (`/varz`, `/subsz`, `/healthz`...).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.node.monitor_port)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.node.child.as_ref().map(Child::id)
    }

    /// The JetStream store directory (kept across restarts).
    pub fn store_dir(&self) -> &Path {
        &self.node.store
    }

    /// Everything the server logged, across restarts.
    pub fn log(&self) -> String {
        self.node.log_text()
    }

    /// SIGKILLs the server (no clean shutdown); `restart` brings it back.
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// SIGSTOPs the server: connections stay open but nothing is answered
    /// (a hung server, not a dead one); [`NatsServer::resume`] continues it.
    pub fn pause(&self) {
        self.node.signal(Signal::SIGSTOP);
        // SIGSTOP is delivered asynchronously: until the kernel shows the
        // process stopped, a request sent now may still be answered.
        if let Some(pid) = self.pid() {
            let stat = format!("/proc/{pid}/stat");
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while std::time::Instant::now() < deadline {
                let state = std::fs::read_to_string(&stat).unwrap_or_default();
                // `pid (comm) S ...`: the state follows the command's `)`.
                if state
                    .rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('T'))
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// SIGCONTs a paused server.
    pub fn resume(&self) {
        self.node.signal(Signal::SIGCONT);
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.node
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the server if it runs, then starts it again on the same port and
    /// store, and waits until it is ready (its streams recovered); panics
    /// when it cannot.
    pub async fn restart(&mut self) {
        self.node
            .restart()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
}

/// A JetStream cluster of nats-servers on loopback ports.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
    _dir: TempDir,
}

impl NatsCluster {
    /// Starts `size` nodes routed to each other and waits until every node is
    /// ready and the JetStream meta group has a leader (every `/healthz` is
    /// 200); panics when it cannot.
    pub async fn start(size: usize) -> NatsCluster {
        Self::try_start(size)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    async fn try_start(size: usize) -> anyhow::Result<NatsCluster> {
        assert!(size >= 1);
        let mut last_log = String::new();
        let opts = NatsOptions::default();
        for _ in 0..ATTEMPTS {
            let dir = temp_dir("tribune-nats-cluster-", None)?;
            let cluster_ports = free_ports(size)?;
            let mut nodes = (0..size)
                .map(|i| {
                    Node::new(
                        dir.path(),
                        &format!("n{}", i + 1),
                        &opts,
                        Some(("tribune-test", cluster_ports[i], &cluster_ports)),
                    )
                })
                .collect::<anyhow::Result<Vec<Node>>>()?;
            let offsets = nodes
                .iter_mut()
                .map(Node::spawn)
                .collect::<anyhow::Result<Vec<u64>>>()?;
            let mut ok = true;
            for (node, offset) in nodes.iter_mut().zip(offsets) {
                ok &= node.ready(offset).await?;
            }
            if ok {
                let cluster = NatsCluster { nodes, _dir: dir };
                cluster.wait_healthy().await;
                return Ok(cluster);
            }
            last_log = nodes
                .iter()
                .map(Node::log_text)
                .collect::<Vec<_>>()
                .join("\n");
        }
        bail!("nats cluster did not start after {ATTEMPTS} attempts:\n{last_log}")
    }

    /// The client URLs of all nodes, comma-separated (what `--nats` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(Node::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of node `i`.
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// The `server_name` of node `i` (`n1`, `n2`, ...), as stream info names leaders.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The index of the node called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again (same ports and store) and waits until it is
    /// ready; panics when it cannot.
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i]
            .restart()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Everything node `i` logged.
    pub fn log(&self, i: usize) -> String {
        self.nodes[i].log_text()
    }

    /// Waits until every running node's `/healthz` answers 200 (JetStream
    /// current, meta leader known); panics after a while.
    pub async fn wait_healthy(&self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + READY_WITHIN;
        for node in &self.nodes {
            if node.child.is_none() {
                continue;
            }
            let url = format!("http://127.0.0.1:{}/healthz", node.monitor_port);
            loop {
                let ok = http
                    .get(&url)
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    break;
                }
                if Instant::now() > deadline {
                    panic!(
                        "nats node {} not healthy within {READY_WITHIN:?}:\n{}",
                        node.name,
                        node.log_text()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
