//! The real `tribune-hub` binary on a random loopback port.
//!
//! The binary is `target/debug/tribune-hub` (or `$TRIBUNE_HUB_BIN`);
//! `scripts/test` builds it before running the tests. Nested cargo builds
//! would deadlock on cargo's lock, so the harness only looks for it.
//!
//! Each hub gets its internal listener on a random loopback port too, and a
//! fresh 48-character publish key in `TRIBUNE_PUBLISH_KEY`: [`Hub::publish`]
//! and [`Hub::metric`] go there with it, as an operator's tools would.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Path of the hub binary.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("TRIBUNE_HUB_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug/tribune-hub");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p tribune-hub` first (scripts/test does)",
        path.display()
    );
    path
}

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

/// A running hub process, killed on drop.
pub struct Hub {
    child: Child,
    addr: SocketAddr,
    /// The internal listener (`/metrics`, `/v1/publish`).
    internal: SocketAddr,
    /// The key `POST /v1/publish` takes.
    publish_key: String,
    args: Vec<String>,
    /// Environment given on top of the harness's.
    env: Vec<(String, String)>,
    /// What the hub wrote to stderr, for failure messages.
    log: Arc<Mutex<String>>,
    http: reqwest::Client,
}

impl Hub {
    /// Starts the hub with `args` (plus `--listen 127.0.0.1:0` unless given)
    /// and waits for its `listening on` line.
    pub async fn start(args: &[&str]) -> Hub {
        match Self::try_start(args).await {
            Ok(hub) => hub,
            Err(e) => panic!("hub did not start: {e}"),
        }
    }

    /// Like [`Hub::start`], but returns the failure (exit status and stderr).
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

    /// Like [`Hub::start_with_env`], but returns the failure.
    pub async fn try_start_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<Hub, String> {
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if !args.iter().any(|a| a == "--listen") {
            args.extend(["--listen".into(), "127.0.0.1:0".into()]);
        }
        // Also on restarts with a fixed public port: never the shared 9090.
        if !args.iter().any(|a| a == "--internal-listen") {
            args.extend(["--internal-listen".into(), "127.0.0.1:0".into()]);
        }
        let mut all = vec![(PUBLISH_KEY_ENV.to_string(), random_key())];
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self::spawn(args, all).await
    }

    async fn spawn(args: Vec<String>, env: Vec<(String, String)>) -> Result<Hub, String> {
        let publish_key = env
            .iter()
            .rev()
            .find(|(k, _)| k == PUBLISH_KEY_ENV)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let mut child = Command::new(binary())
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(
                "RUST_LOG",
                std::env::var("HUB_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot spawn {}: {e}", binary().display()))?;
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped");
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = sink.lock().unwrap();
                if log.len() < 1 << 20 {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        // The hub prints its internal listener first, then the public one.
        let mut addrs = Vec::new();
        for prefix in ["internal listener on http://", "listening on http"] {
            let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await;
            match line {
                Ok(Ok(Some(line))) => addrs.push(
                    // `https://` when the hub serves TLS.
                    line.strip_prefix(prefix)
                        .map(|a| a.trim_start_matches('s').trim_start_matches("://"))
                        .and_then(|a| a.trim().parse::<SocketAddr>().ok())
                        .ok_or_else(|| format!("expected {prefix}ADDR, got {line:?}"))?,
                ),
                _ => {
                    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return Err(format!(
                        "no {prefix} line; exit {status:?}; stderr:\n{}",
                        log.lock().unwrap()
                    ));
                }
            }
        }
        // Keep draining stdout so the hub never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Hub {
            child,
            internal: addrs[0],
            addr: addrs[1],
            publish_key,
            args,
            env,
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
        format!("ws://{}/v1/ws", self.addr)
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

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// What the hub printed on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGTERM (the paced drain); see [`Hub::wait`].
    pub fn terminate(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }

    /// Waits for the process to exit, at most `within`.
    pub async fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()?
            .ok()
    }

    /// Kills the hub and starts it again with the same arguments, on the same port.
    pub async fn restart(&mut self) {
        self.kill().await;
        let mut args = self.args.clone();
        if let Some(i) = args.iter().position(|a| a == "--listen") {
            args[i + 1] = self.addr.to_string();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Self::spawn(args.clone(), self.env.clone()).await {
                Ok(hub) => {
                    *self = hub;
                    return;
                }
                Err(e) if tokio::time::Instant::now() > deadline => {
                    panic!("hub did not restart: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// `POST /v1/publish` on the internal listener, with the key; returns
    /// the stored `seq`.
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

    /// `GET` a path of the public listener; (status, body).
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
