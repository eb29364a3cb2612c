//! A server-sent events reader over the real `curl -N` binary (the HTTP
//! fallback's tests, PROTOCOL.md section 11): curl's output is parsed into
//! events as a browser's `EventSource` would.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// One event: its `id`, `event` name (`message` when none), `data` lines
/// joined with LF, and a `retry` hint.
#[derive(Debug, Clone, Default)]
pub struct Event {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
    pub retry: Option<u64>,
}

impl Event {
    /// The data as JSON (every event of the hub holds one object).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is JSON ({e}): {}", self.data))
    }
}

/// A running `curl -N` reading one stream.
pub struct CurlStream {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Heartbeat comments seen so far.
    pub comments: usize,
}

impl CurlStream {
    /// Starts `curl -N -sS <url>` with extra headers (`"Name: value"`).
    /// Panics when no `curl` can be run: these tests need the real binary.
    pub fn open(url: &str, headers: &[&str]) -> CurlStream {
        let mut cmd = Command::new("curl");
        cmd.arg("-N").arg("-sS").arg("--max-time").arg("60");
        for h in headers {
            cmd.arg("-H").arg(h);
        }
        cmd.arg(url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("the curl binary runs");
        let stdout = child.stdout.take().expect("piped");
        CurlStream {
            child,
            lines: BufReader::new(stdout).lines(),
            comments: 0,
        }
    }

    /// The next event within `within`; `None` at the end of the stream or
    /// after `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + within;
        let mut ev = Event::default();
        let mut data: Vec<String> = Vec::new();
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .ok()?
                .ok()??;
            if line.is_empty() {
                if data.is_empty() && ev.id.is_none() && ev.retry.is_none() {
                    continue;
                }
                if ev.event.is_empty() {
                    ev.event = "message".into();
                }
                ev.data = data.join("\n");
                return Some(ev);
            }
            if line.starts_with(':') {
                self.comments += 1;
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => ev.id = Some(value.to_string()),
                "event" => ev.event = value.to_string(),
                "data" => data.push(value.to_string()),
                "retry" => ev.retry = value.parse().ok(),
                _ => {}
            }
        }
    }

    /// The next event named `name`, skipping others (`stats`, `react`).
    pub async fn next_named(&mut self, name: &str, within: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ev = self.next(left).await?;
            if ev.event == name {
                return Some(ev);
            }
        }
    }

    /// Kills curl: the hub sees the connection go.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}
