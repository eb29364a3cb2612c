//! A real nats-server for tests: JetStream on, loopback only, its own temp
//! store, killed on drop, restartable on the same port and store (to test
//! faults), a 3-node JetStream cluster whose nodes can be killed and
//! restarted one by one, and a TCP proxy that cuts one client's link to NATS
//! while everyone else keeps theirs.
//!
//! The binary is `$NATS_SERVER_BIN`, else `.tools/bin/nats-server` (where
//! `scripts/install-nats` puts it), else `nats-server` in `PATH`; it must be
//! 2.11 or newer (batched direct get).

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to say "Server is ready" (a restart replays its store).
const READY_WITHIN: Duration = Duration::from_secs(20);

/// The nats-server binary to run; panics with what to do when there is none.
pub fn nats_server_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
        let candidates = std::env::var_os("NATS_SERVER_BIN")
            .map(PathBuf::from)
            .into_iter()
            .chain([root.join(".tools/bin/nats-server")])
            .chain(std::env::var_os("PATH").into_iter().flat_map(|p| {
                std::env::split_paths(&p).map(|d| d.join("nats-server")).collect::<Vec<_>>()
            }));
        let mut too_old = Vec::new();
        for bin in candidates.filter(|b| b.is_file()) {
            match server_version(&bin) {
                Some((major, minor)) if (major, minor) >= (2, 11) => return bin,
                version => too_old.push(format!("{} ({version:?})", bin.display())),
            }
        }
        panic!(
            "no nats-server 2.11 or newer found (NATS_SERVER_BIN, .tools/bin, PATH; too old or unreadable: {too_old:?}): run scripts/install-nats"
        );
    })
}

fn server_version(bin: &Path) -> Option<(u64, u64)> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // "nats-server: v2.15.1"
    let start = text.find(": v")? + 3;
    let version = &text[start..];
    let mut parts = version.split('.');
    let major = parts.next()?.trim().parse().ok()?;
    let minor = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    Some((major, minor))
}

/// A free loopback port (bound and released: a small race, retried by callers).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One nats-server process with a fixed config file, store and log.
#[derive(Debug)]
struct Node {
    name: String,
    port: u16,
    monitor_port: u16,
    config: PathBuf,
    log: PathBuf,
    store: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn new(dir: &Path, name: &str, cluster: Option<(&str, u16, &[u16])>) -> Node {
        let port = free_port();
        let monitor_port = free_port();
        let store = dir.join(format!("{name}-store"));
        fs::create_dir_all(&store).expect("store dir");
        let mut config = format!(
            "server_name: {name}\nlisten: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor_port}\"\n\
             jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 256MB\n  max_file_store: 1GB\n}}\n",
            store.display()
        );
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
        fs::write(&path, config).expect("write nats config");
        Node {
            name: name.to_string(),
            port,
            monitor_port,
            config: path,
            log: dir.join(format!("{name}.log")),
            store,
            child: None,
        }
    }

    /// Starts the process; returns the log offset from which its lines are new.
    fn spawn(&mut self) -> u64 {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("nats log file");
        let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", nats_server_bin().display()));
        self.child = Some(child);
        offset
    }

    /// Waits until the log since `offset` says the server is ready.
    async fn ready(&mut self, offset: u64) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let text = fs::read(&self.log).unwrap_or_default();
            let new = String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default());
            if new.contains("Server is ready") {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "nats-server {} exited ({status}) while starting:\n{new}",
                    self.name
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "nats-server {} not ready within {READY_WITHIN:?}:\n{new}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL: no goodbye to clients or peers
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
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

/// One JetStream-enabled nats-server on a free loopback port.
#[derive(Debug)]
pub struct NatsServer {
    node: Node,
    /// Owns config, store and log; removed on drop, after the process.
    _dir: TempDir,
}

impl NatsServer {
    /// Starts a server and waits until it is ready.
    pub async fn start() -> NatsServer {
        let mut last_log = String::new();
        // A port picked free may be taken before the server binds it: retry.
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("tribune-nats-")
                .tempdir()
                .expect("temp dir");
            let mut node = Node::new(dir.path(), "n1", None);
            let offset = node.spawn();
            if start_or_port_clash(&mut node, offset).await {
                return NatsServer { node, _dir: dir };
            }
            last_log = node.log_text();
        }
        panic!("nats-server did not start after 5 attempts:\n{last_log}");
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.node.url()
    }

    pub fn port(&self) -> u16 {
        self.node.port
    }

    /// `http://127.0.0.1:<monitoring port>` (`/varz`, `/subsz`, `/healthz`...).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.node.monitor_port)
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
        self.signal("-STOP");
    }

    /// SIGCONTs a paused server.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.node.child.as_ref().expect("server running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.node
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the server if it runs, then starts it again on the same port and
    /// store, and waits until it is ready (its streams recovered).
    pub async fn restart(&mut self) {
        self.node.kill();
        let offset = self.node.spawn();
        self.node.ready(offset).await;
    }
}

/// Waits for readiness; false when the server lost the race for its port.
async fn start_or_port_clash(node: &mut Node, offset: u64) -> bool {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let text = fs::read(&node.log).unwrap_or_default();
        let new =
            String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default()).to_string();
        if new.contains("Server is ready") {
            return true;
        }
        let exited = node
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if exited.is_some() || Instant::now() > deadline {
            node.kill();
            if new.contains("address already in use") {
                return false;
            }
            panic!(
                "nats-server {} did not start ({exited:?}):\n{new}",
                node.name
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
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
    /// ready and the JetStream meta group has a leader (every `/healthz` is 200).
    pub async fn start(size: usize) -> NatsCluster {
        assert!(size >= 1);
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("tribune-nats-cluster-")
                .tempdir()
                .expect("temp dir");
            let cluster_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
            let mut nodes: Vec<Node> = (0..size)
                .map(|i| {
                    Node::new(
                        dir.path(),
                        &format!("n{}", i + 1),
                        Some(("tribune-test", cluster_ports[i], &cluster_ports)),
                    )
                })
                .collect();
            let offsets: Vec<u64> = nodes.iter_mut().map(Node::spawn).collect();
            let mut ok = true;
            for (node, offset) in nodes.iter_mut().zip(offsets) {
                ok &= start_or_port_clash(node, offset).await;
            }
            if ok {
                let cluster = NatsCluster { nodes, _dir: dir };
                cluster.wait_healthy().await;
                return cluster;
            }
            last_log = nodes
                .iter()
                .map(Node::log_text)
                .collect::<Vec<_>>()
                .join("\n");
        }
        panic!("nats cluster did not start after 5 attempts:\n{last_log}");
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

    /// Starts node `i` again (same ports and store) and waits until it is ready.
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i].kill();
        let offset = self.nodes[i].spawn();
        self.nodes[i].ready(offset).await;
    }

    /// Everything node `i` logged.
    pub fn log(&self, i: usize) -> String {
        self.nodes[i].log_text()
    }

    /// Waits until every running node's `/healthz` answers 200 (JetStream
    /// current, meta leader known).
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

/// A loopback TCP proxy in front of a server. [`TcpProxy::cut`] drops every
/// proxied connection and refuses new ones until [`TcpProxy::restore`]: the
/// client behind it loses the server while other clients keep it.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    /// Bumped by `cut`; every proxied connection ends when it changes.
    cuts: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Proxies a free loopback port to `target` (`host:port`, or a `nats://` URL).
    pub async fn start(target: &str) -> TcpProxy {
        let target = target.trim_start_matches("nats://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listener");
        let addr = listener.local_addr().expect("proxy address");
        let open = Arc::new(AtomicBool::new(true));
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let task = {
            let open = open.clone();
            let cuts = cuts.clone();
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropped: the client sees the connection close
                    }
                    let target = target.clone();
                    let mut cut = cuts.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        };
        TcpProxy {
            addr,
            open,
            cuts,
            task,
        }
    }

    /// `nats://127.0.0.1:<proxy port>`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Drops every proxied connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}
