//! The processes a run may start itself: nats-server (JetStream plus its
//! websocket listener) and hub nodes, each on loopback ports the OS picks,
//! each with its own directory, killed when dropped. Starting them here is
//! what gives the report their pids (for RSS and CPU), and what lets the
//! `resume` scenario kill or drain a node and start it again.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A child process with its log file.
#[derive(Debug)]
pub struct Spawned {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (SIGTERM to drain, SIGKILL to kill).
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        kill(Pid::from_raw(self.child.id() as i32), signal)
            .with_context(|| format!("signalling {} ({})", self.name, self.child.id()))
    }

    /// Waits up to `within` for the process to exit; its status if it did.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process (if running) and reaps it.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// The last `lines` lines of its log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `cmd` with stdout and stderr going to `log`, after
/// `ready` has seen a line of it that `ready` accepts (within `within`).
fn spawn_until<F>(
    name: &str,
    mut cmd: Command,
    log: PathBuf,
    within: Duration,
    ready: F,
) -> anyhow::Result<(Spawned, String)>
where
    F: Fn(&str) -> Option<String> + Send + Sync + 'static,
{
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let log_err = log_file.try_clone()?;
    // nats-server logs to stderr, the hub prints its address to stdout:
    // both are read line by line and copied into the log.
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let (tx, rx) = mpsc::channel::<String>();
    let ready = std::sync::Arc::new(ready);
    for (stream, mut file) in [
        (
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            log_file,
        ),
        (
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            log_err,
        ),
    ] {
        let Some(stream) = stream else { continue };
        let tx = tx.clone();
        let ready = ready.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
                if let Some(found) = ready(&line) {
                    let _ = tx.send(found);
                }
            }
        });
    }
    let mut spawned = Spawned {
        name: name.to_string(),
        child,
        log,
    };
    match rx.recv_timeout(within) {
        Ok(found) => Ok((spawned, found)),
        Err(_) => {
            let status = spawned.wait_exit(Duration::from_millis(10));
            let tail = spawned.log_tail(15);
            spawned.stop();
            bail!("{name} did not become ready within {within:?} (exit: {status:?}); log:\n{tail}")
        }
    }
}

/// A nats-server with JetStream and a websocket listener.
#[derive(Debug)]
pub struct NatsServer {
    pub proc: Spawned,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    /// `ws://127.0.0.1:PORT`.
    pub ws_url: String,
    pub version: String,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    pub fn start(bin: &Path, run_dir: &Path) -> anyhow::Result<NatsServer> {
        let dir = tempfile::Builder::new()
            .prefix("nats-")
            .tempdir_in(run_dir)?;
        let conf = dir.path().join("nats.conf");
        // max_connections: the default (64k) would cap a 76,000-client
        // comparison; the websocket listener shares it.
        std::fs::write(
            &conf,
            format!(
                "listen: \"127.0.0.1:-1\"\nmax_connections: 1000000\n\
                 jetstream {{ store_dir: \"{}\" }}\n\
                 websocket {{ listen: \"127.0.0.1:-1\", no_tls: true }}\n",
                dir.path().join("js").display()
            ),
        )?;
        let version = Command::new(bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let mut cmd = Command::new(bin);
        cmd.arg("-c").arg(&conf);
        let log = run_dir.join(format!("nats-server-{}.log", std::process::id()));
        // Both listeners are logged (to stderr, copied line by line into the
        // log) before "Server is ready".
        let (proc, _) = spawn_until("nats-server", cmd, log, Duration::from_secs(20), |line| {
            line.contains("Server is ready").then(String::new)
        })?;
        let text = std::fs::read_to_string(&proc.log).unwrap_or_default();
        let find = |marker: &str| {
            text.lines()
                .find_map(|l| l.split(marker).nth(1))
                .map(|s| s.trim().to_string())
        };
        match (
            find("Listening for client connections on "),
            find("Listening for websocket clients on "),
        ) {
            (Some(nats), Some(ws)) => Ok(NatsServer {
                proc,
                url: format!("nats://{nats}"),
                ws_url: ws,
                version,
                _dir: dir,
            }),
            _ => bail!(
                "nats-server did not report its listeners; log:\n{}",
                proc.log_tail(15)
            ),
        }
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
    /// `--nats` URL; none: the embedded bus.
    pub nats: Option<String>,
    pub extra_args: Vec<String>,
    pub run_dir: PathBuf,
}

/// One running hub node.
#[derive(Debug)]
pub struct HubNode {
    pub index: usize,
    pub proc: Option<Spawned>,
    /// `127.0.0.1:PORT`; kept across restarts so clients find it again.
    pub addr: String,
    /// The internal listener (`/v1/publish`, `/metrics`): a free loopback
    /// port, new at every start.
    pub internal_addr: String,
}

impl HubNode {
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://` and the internal listener, where publications go.
    pub fn internal_url(&self) -> String {
        format!("http://{}", self.internal_addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}{}", self.addr, tribune_protocol::WS_PATH)
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Spawned::pid)
    }
}

impl HubLauncher {
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
        let nofile = crate::procstat::Machine::read().nofile_limit;
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

    pub fn start(&self, index: usize, addr: Option<&str>) -> anyhow::Result<HubNode> {
        let listen = addr.unwrap_or("127.0.0.1:0");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--listen")
            .arg(listen)
            .arg("--internal-listen")
            .arg("127.0.0.1:0")
            .env("TRIBUNE_PUBLISH_KEY", &self.publish_key)
            .arg("--node-name")
            .arg(format!("lt-hub-{index}"));
        if let Some(url) = &self.nats {
            cmd.arg("--nats").arg(url);
        }
        cmd.args(&self.extra_args);
        cmd.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        );
        let log = self.run_dir.join(format!("hub-{index}.log"));
        // The hub prints its internal listener first, then the public one.
        let internal = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let seen = internal.clone();
        let (proc, addr) = spawn_until(
            &format!("hub {index}"),
            cmd,
            log,
            Duration::from_secs(30),
            move |line| {
                let line = line.trim();
                if let Some(a) = line.strip_prefix("internal listener on http://") {
                    *seen.lock().expect("not poisoned") = a.trim_end_matches('/').to_string();
                }
                line.strip_prefix("listening on http://")
                    .map(|a| a.trim_end_matches('/').to_string())
            },
        )?;
        let internal_addr = internal.lock().expect("not poisoned").clone();
        Ok(HubNode {
            index,
            proc: Some(proc),
            addr,
            internal_addr,
        })
    }

    /// Starts a node again on its old address (after a kill or a drain).
    pub fn restart(&self, node: &mut HubNode) -> anyhow::Result<()> {
        if let Some(mut p) = node.proc.take() {
            p.stop();
        }
        // The old socket may linger briefly; retry the bind a few times.
        let mut last = None;
        for _ in 0..20 {
            match self.start(node.index, Some(&node.addr)) {
                Ok(n) => {
                    node.proc = n.proc;
                    node.internal_addr = n.internal_addr;
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// `tribune-hub --version`, for the report.
    pub fn version(&self) -> String {
        Command::new(&self.bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }
}

/// A fresh publish key for the hubs this run starts: 24 random bytes as
/// 48 hex characters (the hub wants at least 32 bytes).
pub fn publish_key() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Finds a binary: the path given, else `.tools/bin/<name>` or
/// `target/<profile>/<name>` above the current directory, else `PATH`.
pub fn find_binary(name: &str, given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return p.exists().then(|| p.to_path_buf());
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        // Next to this binary (target/<profile>/), or one level up from a
        // test's deps/ directory.
        candidates.push(dir.join(name));
        if let Some(up) = dir.parent() {
            candidates.push(up.join(name));
        }
    }
    if let Ok(mut dir) = std::env::current_dir() {
        for _ in 0..4 {
            candidates.push(dir.join(".tools/bin").join(name));
            candidates.push(dir.join("target/release").join(name));
            candidates.push(dir.join("target/debug").join(name));
            if !dir.pop() {
                break;
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    candidates.into_iter().find(|p| p.is_file())
}
