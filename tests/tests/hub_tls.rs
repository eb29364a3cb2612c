//! Issue 14, TLS in the hub itself (`[tls] cert_file/key_file`), end to end:
//! a fan over `wss://` trusting only the test CA, HSTS on HTTPS answers, a
//! renewed certificate served without a restart, a broken renewal ignored.
//! Certificates come from the `openssl` command line, as an operator's
//! would; the client is rustls.
//!
//! `tls_memory_per_connection` (ignored by default) measures the hub's
//! resident memory per idle connection with and without TLS:
//! `cargo test -p tribune-tests --test hub_tls -- --ignored --nocapture`
//! (`TLS_MEM_CONNECTIONS`, default 2,000).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tribune_tests::hub::ConfigFile;
use tribune_tests::{Hub, WsClient, eventually};

/// A CA and a leaf for 127.0.0.1 signed by it, written by `openssl`.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let subject = format!("/CN=tribune test CA {name}");
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", &subject,
        ]);
        run(&ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ]);
        run(&csr);
        std::fs::write(
            dir.join("leaf.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ]);
        Pki { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A TLS client that trusts this CA only.
    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.path("ca.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

/// Installs `pki`'s leaf as the hub's pair: written aside, then renamed,
/// as certificate tools do.
fn install(pki: &Pki, cert: &Path, key: &Path) {
    for (from, to) in [("leaf.pem", cert), ("leaf.key", key)] {
        let tmp = to.with_extension("tmp");
        std::fs::copy(pki.path(from), &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
}

async fn tls(hub: &Hub, connector: &TlsConnector) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(hub.addr()).await?;
    let name = ServerName::IpAddress(hub.addr().ip().into());
    connector.connect(name, tcp).await
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

async fn wss(hub: &Hub, connector: &TlsConnector) -> Result<Wss, String> {
    let stream = tls(hub, connector).await.map_err(|e| e.to_string())?;
    let url = format!("wss://{}/v1/ws", hub.addr());
    let (ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

async fn next_json(ws: &mut Wss) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("a frame");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] != "stats" {
                return v;
            }
        }
    }
}

#[tokio::test]
async fn tls_end_to_end_and_a_renewed_certificate_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let a = Pki::new(dir.path(), "a");
    let b = Pki::new(dir.path(), "b");
    let cert = dir.path().join("tls.pem");
    let key = dir.path().join("tls.key");
    install(&a, &cert, &key);
    let cfg = ConfigFile::new(&format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    let hub = Hub::start(&["--config", cfg.path()]).await;

    // A fan over wss://, trusting the CA: welcome, subscribe, a message.
    let mut ws = wss(&hub, &a.connector()).await.expect("wss handshake");
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    let topic = "clips.tls.feed";
    ws.send(Message::text(
        json!({"type": "subscribe", "id": 1, "topic": topic}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "ack");
    let seq = hub.publish(topic, json!({"over": "tls"})).await;
    let m = next_json(&mut ws).await;
    assert_eq!(
        (m["seq"].as_u64(), &m["data"]),
        (Some(seq), &json!({"over": "tls"}))
    );

    // HTTPS answers carry HSTS.
    let mut stream = tls(&hub, &a.connector()).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age="),
        "{answer}"
    );
    // Plain websockets get nowhere on the TLS port; a client that does
    // not trust the CA neither.
    assert!(
        WsClient::connect_with(&hub.ws_url(), &[]).await.is_err(),
        "plain ws on the TLS port"
    );
    assert!(wss(&hub, &b.connector()).await.is_err(), "untrusted CA");

    // Renewal: the files change, new handshakes get the new certificate,
    // the open connection goes on.
    install(&b, &cert, &key);
    eventually(
        "the renewed certificate is served",
        Duration::from_secs(10),
        || async { wss(&hub, &b.connector()).await.ok() },
    )
    .await;
    assert!(hub.metric("tribune_tls_reloads_total").await >= 1.0);
    let seq = hub.publish(topic, json!({"after": "renewal"})).await;
    assert_eq!(next_json(&mut ws).await["seq"].as_u64(), Some(seq));

    // A broken renewal (A's key with B's certificate) is not loaded: B
    // stays.
    let reloads = hub.metric("tribune_tls_reloads_total").await;
    let tmp = key.with_extension("tmp");
    std::fs::copy(a.path("leaf.key"), &tmp).unwrap();
    std::fs::rename(&tmp, &key).unwrap();
    eventually(
        "the broken pair is noticed",
        Duration::from_secs(10),
        || async { hub.log().contains("not loaded").then_some(()) },
    )
    .await;
    assert_eq!(hub.metric("tribune_tls_reloads_total").await, reloads);
    assert!(wss(&hub, &b.connector()).await.is_ok(), "still B");
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Opens `n` idle connections (welcome read) and returns the hub's RSS
/// growth per connection in bytes, after the node settled.
async fn per_connection(hub: &Hub, n: usize, tls: Option<&TlsConnector>) -> f64 {
    let pid = hub.pid().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let mut plain = Vec::new();
    let mut secure = Vec::new();
    for _ in 0..n {
        match tls {
            Some(c) => {
                let mut ws = wss(hub, c).await.expect("wss");
                assert_eq!(next_json(&mut ws).await["type"], "welcome");
                secure.push(ws);
            }
            None => plain.push(WsClient::connect(&hub.ws_url()).await.0),
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid);
    assert_eq!(hub.metric("tribune_connections").await, n as f64);
    (after.saturating_sub(before) * 1024) as f64 / n as f64
}

#[tokio::test]
#[ignore = "a measurement, not a check: run with --ignored --nocapture"]
async fn tls_memory_per_connection() {
    let n: usize = std::env::var("TLS_MEM_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "m");
    let limits = "[limits]\nhandshakes_burst = 100000\naddress_share_percent = 100\n";
    let plain_cfg = ConfigFile::new(limits);
    let plain = Hub::start(&["--config", plain_cfg.path()]).await;
    let plain_bytes = per_connection(&plain, n, None).await;
    drop(plain);
    let tls_cfg = ConfigFile::new(&format!(
        "{limits}[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        pki.path("leaf.pem").display(),
        pki.path("leaf.key").display()
    ));
    let secure = Hub::start(&["--config", tls_cfg.path()]).await;
    let tls_bytes = per_connection(&secure, n, Some(&pki.connector())).await;
    println!(
        "hub RSS per idle connection over {n}: plain {:.1} KiB, TLS {:.1} KiB (TLS adds {:.1} KiB)",
        plain_bytes / 1024.0,
        tls_bytes / 1024.0,
        (tls_bytes - plain_bytes) / 1024.0
    );
}
