//! The real `tribune-hub` binary as a child process on a loopback port: it
//! is started with its arguments, ready once it prints `internal listener on
//! http://ADDR` and then `listening on http://ADDR` (`https://` when it serves
//! TLS; the real ports when asked for port 0), killed on drop, and can be
//! signalled (SIGTERM drains it), killed and restarted on the same address.
//! What it prints on stderr is kept for failure messages and, if asked,
//! copied with its stdout into a log file.
//!
//! Each tests' hub gets its internal listener on a random loopback port too,
//! and a fresh 48-character publish key in `TRIBUNE_PUBLISH_KEY`:
//! [`Hub::publish`] and [`Hub::metric`] go there with it, as an operator's
//! tools would.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

pub use crate::binaries::hub_bin as binary;

/// How long a hub may take to print its `listening on` line.
const LISTENING_WITHIN: Duration = Duration::from_secs(30);

/// How long a restart keeps trying to bind the old address again.
const RESTART_WITHIN: Duration = Duration::from_secs(10);

/// The most stderr kept in memory (the log file, if any, has it all).
const LOG_KEPT: usize = 1 << 20;

/// The environment variable the hub reads its publish key from.
pub const PUBLISH_KEY_ENV: &str = "TRIBUNE_PUBLISH_KEY";

/// A random key of 48 hex characters (24 bytes from the kernel).
pub fn random_key() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How to start a hub.
#[derive(Debug, Clone)]
pub struct HubOptions {
    pub bin: PathBuf,
    /// Its command line; `--listen 127.0.0.1:0` and `--internal-listen
    /// 127.0.0.1:0` are added unless given.
    pub args: Vec<String>,
    /// Environment on top of the harness's own (a `TRIBUNE_PUBLISH_KEY`
    /// here is the key [`Hub::publish`] uses).
    pub env: Vec<(String, String)>,
    /// `RUST_LOG` for the hub.
    pub log_level: String,
    /// A file that gets every line the hub prints (appended, across restarts).
    pub log_file: Option<PathBuf>,
    /// Its open-files limit (`ulimit -n`), to test what the node does at
    /// the limit; `None`: the harness's own.
    pub file_limit: Option<u64>,
}

impl HubOptions {
    /// The tests' hub: [`binary`], `RUST_LOG` from `$HUB_LOG` (else `warn`,
    /// and the audit log's `info` lines).
    pub fn for_tests(args: &[&str]) -> HubOptions {
        HubOptions {
            bin: binary(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![(PUBLISH_KEY_ENV.to_string(), random_key())],
            log_level: std::env::var("HUB_LOG")
                .unwrap_or_else(|_| "warn,tribune::audit=info".into()),
            log_file: None,
            file_limit: None,
        }
    }
}

/// A running hub process, killed on drop.
pub struct Hub {
    child: Child,
    addr: SocketAddr,
    /// The internal listener (`/metrics`, `/v1/publish`).
    internal: SocketAddr,
    /// The key `POST /v1/publish` takes.
    publish_key: String,
    /// What it was started with (`--listen` always among the arguments).
    opts: HubOptions,
    /// What the hub wrote to stderr, for failure messages.
    log: Arc<Mutex<String>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("addr", &self.addr)
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// Starts the tests' hub with `args` (plus `--listen 127.0.0.1:0` unless
    /// given) and waits for its `listening on` line; panics when it cannot.
    pub async fn start(args: &[&str]) -> Hub {
        match Self::try_start(args).await {
            Ok(hub) => hub,
            Err(e) => panic!("hub did not start: {e}"),
        }
    }

    /// A hub node named `name` on the NATS server(s) at `url`, with
    /// `config`: the usual node of the multi-node tests.
    pub async fn on_nats(url: &str, config: &ConfigFile, name: &str) -> Hub {
        Self::start(&[
            "--nats",
            url,
            "--config",
            config.path(),
            "--node-name",
            name,
        ])
        .await
    }

    /// Like [`Hub::start`], but returns the failure (exit status and
    /// stderr) as text.
    pub async fn try_start(args: &[&str]) -> Result<Hub, String> {
        Self::try_start_with_env(args, &[]).await
    }

    /// Like [`Hub::start`], with environment variables on top of the
    /// harness's (a `TRIBUNE_PUBLISH_KEY` here replaces the generated key).
    pub async fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Hub {
        match Self::try_start_with_env(args, env).await {
            Ok(hub) => hub,
            Err(e) => panic!("hub did not start: {e}"),
        }
    }

    /// Starts the tests' hub with `args` under an open-files limit of
    /// `limit`; panics when it cannot.
    pub async fn start_with_file_limit(args: &[&str], limit: u64) -> Hub {
        let mut opts = HubOptions::for_tests(args);
        opts.file_limit = Some(limit);
        match Self::launch(opts).await {
            Ok(hub) => hub,
            Err(e) => panic!("hub did not start: {e:#}"),
        }
    }

    /// Like [`Hub::start_with_env`], but returns the failure as text.
    pub async fn try_start_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<Hub, String> {
        let mut opts = HubOptions::for_tests(args);
        opts.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self::launch(opts).await.map_err(|e| format!("{e:#}"))
    }

    /// Starts a hub as `opts` say and waits for its two listener lines.
    pub async fn launch(mut opts: HubOptions) -> anyhow::Result<Hub> {
        if !opts.args.iter().any(|a| a == "--listen") {
            opts.args.extend(["--listen".into(), "127.0.0.1:0".into()]);
        }
        // Also on restarts with a fixed public port: never the shared 9090.
        if !opts.args.iter().any(|a| a == "--internal-listen") {
            opts.args
                .extend(["--internal-listen".into(), "127.0.0.1:0".into()]);
        }
        Self::spawn(opts).await
    }

    async fn spawn(opts: HubOptions) -> anyhow::Result<Hub> {
        let publish_key = opts
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == PUBLISH_KEY_ENV)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        // A lower file limit through the shell's `ulimit` (the workspace
        // forbids the unsafe `pre_exec` that setrlimit in the child needs);
        // `exec` keeps the hub's own pid.
        let mut command = match opts.file_limit {
            None => Command::new(&opts.bin),
            Some(limit) => {
                let mut c = Command::new("bash");
                c.args(["-c", r#"ulimit -n "$0" && exec "$@""#])
                    .arg(limit.to_string())
                    .arg(&opts.bin);
                c
            }
        };
        let mut child = command
            .args(&opts.args)
            .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", &opts.log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot spawn {}", opts.bin.display()))?;
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().context("piped stderr")?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let file = |path: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))
        };
        let (stderr_file, stdout_file) = match &opts.log_file {
            Some(p) => (Some(file(p)?), Some(file(p)?)),
            None => (None, None),
        };
        tokio::spawn(copy_lines(stderr, stderr_file, Some(log.clone()), None));
        let (found_tx, found_rx) = oneshot::channel();
        // The stdout reader goes on after the address: the hub must never
        // block on a full pipe.
        tokio::spawn(copy_lines(stdout, stdout_file, None, Some(found_tx)));
        let (internal, addr) = match tokio::time::timeout(LISTENING_WITHIN, found_rx).await {
            Ok(Ok(addrs)) => addrs,
            outcome => {
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                // Let the stderr reader take the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let why = if outcome.is_err() {
                    format!("no listening line within {LISTENING_WITHIN:?}")
                } else {
                    "no listening line".to_string()
                };
                bail!(
                    "{why}; exit {status:?}; stderr:\n{}",
                    log.lock().expect("hub log")
                );
            }
        };
        Ok(Hub {
            child,
            addr,
            internal,
            publish_key,
            opts,
            log,
            http: reqwest::Client::new(),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}{}", self.addr, tribune_protocol::WS_PATH)
    }

    /// The internal listener's address.
    pub fn internal_addr(&self) -> SocketAddr {
        self.internal
    }

    /// `http://` and the internal listener's address.
    pub fn internal_url(&self) -> String {
        format!("http://{}", self.internal)
    }

    /// The key `POST /v1/publish` takes on this hub.
    pub fn publish_key(&self) -> &str {
        &self.publish_key
    }

    /// The process id, while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// What the hub printed on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("hub log").clone()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGTERM (the paced drain); see [`Hub::wait`].
    pub fn terminate(&self) {
        let _ = self.signal(Signal::SIGTERM);
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = self.child.id().context("the hub has exited")?;
        kill(Pid::from_raw(pid as i32), signal)
            .with_context(|| format!("signalling hub {} ({pid})", self.addr))
    }

    /// Whether the process has exited (does not wait).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit, at most `within`.
    pub async fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()?
            .ok()
    }

    /// Kills the hub and starts it again with the same arguments, on the
    /// same port; panics when it cannot.
    pub async fn restart(&mut self) {
        if let Err(e) = self.try_restart().await {
            panic!("hub did not restart: {e:#}")
        }
    }

    /// Like [`Hub::restart`], but returns the failure. The old socket may
    /// linger briefly: binding is retried for a while.
    pub async fn try_restart(&mut self) -> anyhow::Result<()> {
        self.kill().await;
        let mut opts = self.opts.clone();
        if let Some(i) = opts.args.iter().position(|a| a == "--listen") {
            opts.args[i + 1] = self.addr.to_string();
        }
        let deadline = tokio::time::Instant::now() + RESTART_WITHIN;
        loop {
            match Self::spawn(opts.clone()).await {
                Ok(hub) => {
                    *self = hub;
                    return Ok(());
                }
                Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// `POST /v1/publish` on the internal listener, with the key; returns
    /// the stored `seq`. For tests: panics on any failure.
    pub async fn publish(&self, topic: &str, data: Value) -> u64 {
        let res = self
            .http
            .post(format!("{}/v1/publish", self.internal_url()))
            .bearer_auth(&self.publish_key)
            .json(&serde_json::json!({"topic": topic, "data": data}))
            .send()
            .await
            .expect("publish request");
        let status = res.status();
        let body: Value = res.json().await.expect("publish answer is JSON");
        assert!(status.is_success(), "publish failed: {status} {body}");
        body["seq"].as_u64().expect("seq")
    }

    /// `GET` a path of the public listener; (status, body). For tests:
    /// panics when the request fails.
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.get_from(&self.http_url(), path).await
    }

    /// `GET` a path of the internal listener; (status, body).
    pub async fn get_internal(&self, path: &str) -> (u16, String) {
        self.get_from(&self.internal_url(), path).await
    }

    async fn get_from(&self, base: &str, path: &str) -> (u16, String) {
        let res = self
            .http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("GET");
        (res.status().as_u16(), res.text().await.unwrap_or_default())
    }

    /// The value of one sample of `/metrics` (exact name with labels), 0 if absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let (_, text) = self.get_internal("/metrics").await;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                (name == sample).then(|| value.parse().ok()).flatten()
            })
            .unwrap_or(0.0)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: String = log
                .chars()
                .rev()
                .take(4000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            eprintln!("--- hub {} stderr (tail) ---\n{tail}", self.addr);
        }
    }
}

/// The address a start-up line announces after `prefix` (`http://` or,
/// with TLS, `https://`).
fn announced(line: &str, prefix: &str) -> Option<SocketAddr> {
    let rest = line.trim().strip_prefix(prefix)?;
    let rest = rest
        .strip_prefix("http://")
        .or_else(|| rest.strip_prefix("https://"))?;
    rest.trim_end_matches('/').parse().ok()
}

/// Reads `stream` line by line until it ends: each line goes to `file`, to
/// `kept` (up to [`LOG_KEPT`]), and the addresses of the first `internal
/// listener on` and `listening on` lines, in that order, to `listening`.
async fn copy_lines(
    stream: impl AsyncRead + Unpin,
    mut file: Option<std::fs::File>,
    kept: Option<Arc<Mutex<String>>>,
    mut listening: Option<oneshot::Sender<(SocketAddr, SocketAddr)>>,
) {
    let mut internal = None;
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(f) = file.as_mut() {
            // One write per line: lines of both streams do not interleave.
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
        if let Some(kept) = &kept {
            let mut kept = kept.lock().expect("hub log");
            if kept.len() < LOG_KEPT {
                kept.push_str(&line);
                kept.push('\n');
            }
        }
        match internal {
            None => internal = announced(&line, "internal listener on "),
            Some(first) => {
                if let Some(addr) = announced(&line, "listening on ")
                    && let Some(tx) = listening.take()
                {
                    let _ = tx.send((first, addr));
                }
            }
        }
    }
}

/// A temporary TOML config file for a hub.
pub struct ConfigFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfigFile {
    pub fn new(toml: &str) -> ConfigFile {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tribune.toml");
        std::fs::write(&path, toml).expect("write config");
        ConfigFile { _dir: dir, path }
    }

    pub fn path(&self) -> &str {
        self.path.to_str().expect("utf-8 temp path")
    }
}
