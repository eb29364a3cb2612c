//! The worker processes of one target's run: started as `tribune-loadtest
//! worker` with their spec on stdin, ordered by commands on stdin, heard
//! through the reports they print on stdout (see `wire`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tribune_harness::procstat::{self, ProcSample};

use crate::wire::{Command, WorkerReport, WorkerSpec};

/// The worker processes of one target's run.
pub struct Fleet {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    pub pids: Vec<u32>,
}

impl Fleet {
    /// Starts one worker per spec (this binary as `tribune-loadtest
    /// worker`, its stderr into `worker-<target>-<n>.log`) and forwards
    /// every report it prints to `tx`.
    pub async fn spawn(
        specs: Vec<WorkerSpec>,
        run_dir: &Path,
        tx: mpsc::UnboundedSender<WorkerReport>,
    ) -> anyhow::Result<Fleet> {
        let exe = std::env::current_exe().context("locating this binary")?;
        let mut w = Fleet {
            children: Vec::new(),
            stdins: Vec::new(),
            pids: Vec::new(),
        };
        for spec in specs {
            let log = std::fs::File::create(run_dir.join(format!(
                "worker-{}-{}.log",
                spec.target.as_str(),
                spec.worker
            )))?;
            let mut child = tokio::process::Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log))
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker process")?;
            let mut stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let line = serde_json::to_string(&spec)? + "\n";
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await?;
            let tx = tx.clone();
            let worker = spec.worker;
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<WorkerReport>(&line) {
                        Ok(r) => {
                            if tx.send(r).is_err() {
                                break;
                            }
                        }
                        Err(e) => eprintln!("worker {worker}: unreadable report: {e}"),
                    }
                }
            });
            w.pids.push(child.id().unwrap_or(0));
            w.children.push(child);
            w.stdins.push(stdin);
        }
        Ok(w)
    }

    /// Sends `cmd` to every worker.
    pub async fn send(&mut self, cmd: &Command) {
        let line = serde_json::to_string(cmd).expect("commands serialize") + "\n";
        for s in &mut self.stdins {
            // A worker that died is reported through its missing final report.
            let _ = s.write_all(line.as_bytes()).await;
            let _ = s.flush().await;
        }
    }

    /// Closes the workers' stdin and waits for them (killed after 5 s).
    pub async fn reap(mut self) {
        drop(std::mem::take(&mut self.stdins));
        for c in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(5), c.wait())
                .await
                .is_err()
            {
                let _ = c.kill().await;
            }
        }
    }

    /// One reading of every worker process.
    pub fn sample(&self) -> Vec<Option<ProcSample>> {
        self.pids.iter().map(|&p| procstat::sample(p)).collect()
    }
}
