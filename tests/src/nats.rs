//! NATS for tests: the shared harness's nats-server and cluster
//! (`tribune_harness::nats`: JetStream, loopback, own temp store, killed on
//! drop, restartable), an [`Editor`] that stores messages in the stream as
//! editors do, and a TCP proxy that cuts one client's link to NATS while
//! everyone else keeps theirs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use tribune_harness::nats::{NatsCluster, NatsOptions, NatsServer, nats_server_bin};

/// An editor: publications to `tribune.fan.<topic>` that the stream
/// acknowledges, on a connection of its own (with the editor's credentials
/// where the server asks for some).
#[derive(Debug, Clone)]
pub struct Editor {
    client: async_nats::Client,
}

impl Editor {
    /// An editor without credentials.
    pub async fn connect(url: &str) -> Editor {
        Self::connect_with(url, async_nats::ConnectOptions::new()).await
    }

    /// An editor connecting with `options` (credentials, TLS); panics when
    /// it cannot connect.
    pub async fn connect_with(url: &str, options: async_nats::ConnectOptions) -> Editor {
        let client = options
            .connect(url)
            .await
            .unwrap_or_else(|e| panic!("editor cannot connect to {url}: {e}"));
        Editor { client }
    }

    /// The connection, for what a test does beside publishing.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Stores `data` on `topic`; the stored `seq`. Retried for a while (a
    /// stream still being created answers nothing); panics on a refusal.
    pub async fn publish(&self, topic: &str, data: &str) -> u64 {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let attempt = self
                .client
                .request(
                    format!("tribune.fan.{topic}"),
                    bytes::Bytes::from(data.to_string()),
                )
                .await;
            match attempt {
                Ok(reply) => {
                    let ack: serde_json::Value =
                        serde_json::from_slice(&reply.payload).expect("a JSON publish ack");
                    return ack["seq"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("publish to {topic} refused: {ack}"));
                }
                Err(e) if tokio::time::Instant::now() > deadline => {
                    panic!("publish to {topic} not acknowledged: {e}")
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }
}

/// The errors a server sent one connection (`-ERR`: permission violations
/// and the like), as text, in order.
#[derive(Debug)]
pub struct ServerErrors(tokio::sync::mpsc::UnboundedReceiver<String>);

impl ServerErrors {
    /// Waits for an error containing `needle`; panics with the errors seen
    /// instead after `within`.
    pub async fn expect(&mut self, needle: &str, within: std::time::Duration) -> String {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.0.recv()).await {
                Ok(Some(e)) if e.contains(needle) => return e,
                Ok(Some(e)) => seen.push(e),
                Ok(None) | Err(_) => {
                    panic!("no server error with {needle:?} within {within:?}; saw {seen:?}")
                }
            }
        }
    }
}

/// Connects with `options`, collecting the server's errors; panics when it
/// cannot connect.
pub async fn connect_noting_errors(
    url: &str,
    options: async_nats::ConnectOptions,
) -> (async_nats::Client, ServerErrors) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = options
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    (client, ServerErrors(rx))
}

/// A loopback TCP proxy in front of a server. [`TcpProxy::cut`] drops every
/// proxied connection and refuses new ones until [`TcpProxy::restore`]: the
/// client behind it loses the server while other clients keep it.
/// [`TcpProxy::silence`] black-holes the connections open now (nothing
/// passes, nothing closes: a phone's socket after a network change) while
/// new ones pass.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    /// Bumped by `cut`; every proxied connection ends when it changes.
    cuts: tokio::sync::watch::Sender<u64>,
    /// Bumped by `silence`; every proxied connection open then stops
    /// forwarding, its sockets kept open.
    silences: tokio::sync::watch::Sender<u64>,
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
        let (silences, _) = tokio::sync::watch::channel(0u64);
        let task = {
            let open = open.clone();
            let cuts = cuts.clone();
            let silences = silences.clone();
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropped: the client sees the connection close
                    }
                    let target = target.clone();
                    let mut cut = cuts.subscribe();
                    let mut silence = silences.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut.changed() => {}
                            _ = silence.changed() => {
                                // Held open, forwarding nothing, until cut or dropped.
                                let _ = cut.changed().await;
                            }
                        }
                        drop((inbound, outbound));
                    });
                }
            })
        };
        TcpProxy {
            addr,
            open,
            cuts,
            silences,
            task,
        }
    }

    /// The proxy's loopback address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Black-holes every connection open now; new ones pass.
    pub fn silence(&self) {
        self.silences.send_modify(|n| *n += 1);
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
