//! TLS end to end with a CA made here (rcgen): the SDK `Client` and
//! `tribune tail` over `wss://`, `tribune publish --hub https://`, and the
//! editors' `Publisher` (and `tribune publish --nats tls://`) on a nats-server
//! that requires TLS and client certificates.
//!
//! The hub has no TLS listener of its own here: a TLS-terminating proxy
//! (tokio-rustls on loopback) forwards to its plain port, as a load balancer
//! would. Every failure without the right CA must say what is wrong.
//!
//! Needs `target/debug/tribune-hub` and nats-server 2.11+ (`scripts/install-nats`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::time::timeout;
use tribune_client::{Client, ConnectErrorKind, Event, Publisher};
use tribune_tests::Hub;

const WAIT: Duration = Duration::from_secs(10);
const BIN: &str = env!("CARGO_BIN_EXE_tribune");

/// A test CA with a server certificate for 127.0.0.1 and localhost and a
/// client certificate, all as PEM files in a temporary directory.
struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// Makes a CA and its certificates; `name` tells two CAs apart.
    fn new(name: &str) -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("Tribune test CA {name}"));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |sans: Vec<String>, usage: ExtendedKeyUsagePurpose, file: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, file.to_string());
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.path().join(format!("{file}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{file}.key")), key.serialize_pem()).unwrap();
        };
        leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "server",
        );
        leaf(Vec::new(), ExtendedKeyUsagePurpose::ClientAuth, "client");
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        TestPki { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// Server settings with the server certificate, no client certificates.
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let chain = CertificateDer::pem_file_iter(self.path("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(self.path("server.key")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }
}

/// TLS on a loopback port, forwarded in plain to `target`: the hub behind a
/// TLS-terminating load balancer.
struct TlsProxy {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    async fn start(config: Arc<rustls::ServerConfig>, target: SocketAddr) -> TlsProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that does not trust us aborts the handshake: done.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsProxy { addr, task }
    }

    fn wss_url(&self) -> String {
        format!("wss://{}", self.addr)
    }

    fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `tribune args...`, bounded in time, with no TLS settings from the
/// environment.
async fn tribune(args: &[&str]) -> Run {
    let out = timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(BIN)
            .args(args)
            .env_remove("TRIBUNE_CA_FILE")
            .env_remove("TRIBUNE_URL")
            .env_remove("TRIBUNE_NATS")
            .env_remove("TRIBUNE_HUB")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("tribune {args:?} did not finish"))
    .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// A failure of the CLI: the code, and one line on stderr containing `needle`.
fn assert_fails_with(run: &Run, code: i32, needle: &str) {
    assert_eq!(
        run.code,
        Some(code),
        "stdout {:?} stderr {:?}",
        run.stdout,
        run.stderr
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {:?}", run.stderr);
    assert!(lines[0].contains(needle), "{:?} lacks {needle:?}", lines[0]);
}

async fn next_message(sub: &mut tribune_client::Subscription) -> (u64, Value) {
    loop {
        match timeout(WAIT, sub.next())
            .await
            .expect("an event")
            .expect("open")
        {
            Event::Message(m) => return (m.seq, serde_json::from_str(m.data.get()).unwrap()),
            Event::Stats(_) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn sdk_client_over_wss_trusts_the_ca_file_and_only_it() {
    let pki = TestPki::new("a");
    let hub = Hub::start(&[]).await;
    let proxy = TlsProxy::start(pki.server_config(), hub.addr()).await;
    let topic = "clips.tls.sdk";

    let client = Client::builder(proxy.wss_url())
        .ca_file(pki.ca())
        .connect()
        .await
        .expect("wss:// with the test CA");
    let mut sub = client.subscribe(topic).await.unwrap();
    let seq = hub.publish(topic, json!({"over": "tls"})).await;
    assert_eq!(next_message(&mut sub).await, (seq, json!({"over": "tls"})));
    client.close().await;

    // Another CA: the hub's certificate is refused, and the error says why
    // and what to do.
    let other = TestPki::new("b");
    let err = Client::builder(proxy.wss_url())
        .ca_file(other.ca())
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::Tls, "{err}");
    assert!(
        err.to_string().contains("not signed by a trusted CA"),
        "{err}"
    );
    assert!(err.to_string().contains("ca_file"), "{err}");

    // No CA file: the platform's roots do not know the test CA (or the
    // machine has none); either way the message points at the CA.
    let err = Client::builder(proxy.wss_url())
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ConnectErrorKind::Tls | ConnectErrorKind::TlsConfig
        ),
        "{err}"
    );
    assert!(err.to_string().contains("CA"), "{err}");

    // A CA file that is not one is a settings error, before any connection.
    let err = Client::builder(proxy.wss_url())
        .ca_file(pki.path("server.key"))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::TlsConfig, "{err}");
}

#[tokio::test]
async fn cli_tails_and_publishes_over_tls_with_ca_file() {
    let pki = TestPki::new("a");
    let hub = Hub::start(&[]).await;
    let proxy = TlsProxy::start(pki.server_config(), hub.addr()).await;
    // Publications go to the internal listener, with the hub's key.
    let internal = TlsProxy::start(pki.server_config(), hub.internal_addr()).await;
    let topic = "clips.tls.cli";
    let ca = pki.ca();
    let ca = ca.to_str().unwrap();

    // Publish through the hub's https:// endpoint, then tail it over wss://.
    let published = tribune(&[
        "publish",
        topic,
        "--data",
        r#"{"n":1}"#,
        "--hub",
        &internal.https_url(),
        "--key",
        hub.publish_key(),
        "--ca-file",
        ca,
    ])
    .await;
    assert_eq!(published.code, Some(0), "{}", published.stderr);
    let seq: u64 = published.stdout.trim().parse().unwrap();
    let tail = tribune(&[
        "tail",
        topic,
        "--url",
        &proxy.wss_url(),
        "--ca-file",
        ca,
        "--history",
        "1",
        "--count",
        "1",
    ])
    .await;
    assert_eq!(tail.code, Some(0), "{}", tail.stderr);
    assert_eq!(tail.stdout, format!("{topic} #{seq} {{\"n\":1}}\n"));

    // The wrong CA: exit 1, one line that names the problem and the flag.
    let other = TestPki::new("b");
    let other_ca = other.ca();
    let other_ca = other_ca.to_str().unwrap();
    let tail = tribune(&[
        "tail",
        topic,
        "--url",
        &proxy.wss_url(),
        "--ca-file",
        other_ca,
    ])
    .await;
    assert_fails_with(
        &tail,
        1,
        "not signed by a trusted CA: give its CA with ca_file (CLI: --ca-file)",
    );
    let publish = tribune(&[
        "publish",
        topic,
        "--data",
        "{}",
        "--hub",
        &proxy.https_url(),
        "--ca-file",
        other_ca,
    ])
    .await;
    assert_fails_with(&publish, 1, "--ca-file");
    // No CA at all: refused as well (exit 1 when the system roots were used,
    // 2 when the machine has none), with the CA named.
    let tail = tribune(&["tail", topic, "--url", &proxy.wss_url(), "--count", "1"]).await;
    assert!(matches!(tail.code, Some(1 | 2)), "{}", tail.stderr);
    assert!(tail.stderr.contains("CA"), "{}", tail.stderr);
    assert!(tail.stdout.is_empty());
    // A CA path that does not exist is bad input.
    let tail = tribune(&[
        "tail",
        topic,
        "--url",
        &proxy.wss_url(),
        "--ca-file",
        "/nonexistent/ca.pem",
    ])
    .await;
    assert_fails_with(&tail, 2, "/nonexistent/ca.pem");
}

/// A nats-server with JetStream that speaks only TLS and wants a client
/// certificate from the test CA (`verify: true`).
struct TlsNats {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsNats {
    /// Starts the server; a port picked free may be taken before the
    /// server binds it, so a server that exits at once is tried again.
    async fn start(pki: &TestPki) -> TlsNats {
        let mut last_log = String::new();
        for _ in 0..5 {
            match Self::try_start(pki).await {
                Ok(server) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("nats-server with TLS did not start:\n{last_log}");
    }

    async fn try_start(pki: &TestPki) -> Result<TlsNats, String> {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let config = format!(
            "listen: \"127.0.0.1:{port}\"\n\
             jetstream {{\n  store_dir: \"{store}\"\n}}\n\
             tls {{\n  cert_file: \"{cert}\"\n  key_file: \"{key}\"\n  ca_file: \"{ca}\"\n  verify: true\n  timeout: 2\n}}\n",
            store = dir.path().join("store").display(),
            cert = pki.path("server.pem").display(),
            key = pki.path("server.key").display(),
            ca = pki.ca().display(),
        );
        let conf = dir.path().join("nats.conf");
        std::fs::write(&conf, config).unwrap();
        let log = dir.path().join("nats.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(tribune_tests::nats::nats_server_bin())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut server = TlsNats {
            child,
            port,
            _dir: dir,
        };
        server.ready(&log).await?;
        Ok(server)
    }

    /// Waits for "Server is ready"; the log when the server exited instead.
    async fn ready(&mut self, log: &Path) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("Server is ready") {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited ({status}):\n{text}"));
            }
            assert!(Instant::now() < deadline, "nats-server not ready:\n{text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn publisher_reaches_a_tls_nats_with_ca_file_and_client_certificate() {
    let pki = TestPki::new("a");
    let nats = TlsNats::start(&pki).await;
    // The stream a hub would create (the hub is not part of this test).
    let admin = async_nats::ConnectOptions::new()
        .add_root_certificates(pki.ca())
        .add_client_certificate(pki.path("client.pem"), pki.path("client.key"))
        .connect(nats.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(admin);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "TRIBUNE".into(),
        subjects: vec!["tribune.fan.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();

    let topic = "clips.tls.nats";
    let publisher = Publisher::builder()
        .ca_file(pki.ca())
        .client_cert(pki.path("client.pem"), pki.path("client.key"))
        .connect(&nats.url())
        .await
        .expect("TLS NATS with the test CA and a client certificate");
    let first = publisher.publish(topic, &json!({"n": 1})).await.unwrap();
    let second = publisher.publish(topic, &json!({"n": 1})).await.unwrap();
    assert_eq!((first.seq, second.seq), (1, 2));

    // The CLI, with the same files.
    let ca = pki.ca();
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let run = tribune(&[
        "publish",
        topic,
        "--data",
        r#"{"n":2}"#,
        "--nats",
        &nats.url(),
        "--ca-file",
        ca.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "3");

    // Without the client certificate the server refuses the handshake; with
    // another CA the client refuses the server. Both are connect failures.
    let err = Publisher::builder()
        .ca_file(pki.ca())
        .connect_timeout(Duration::from_secs(3))
        .connect(&nats.url())
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ConnectErrorKind::Tls | ConnectErrorKind::Io),
        "{err:?}"
    );
    let other = TestPki::new("b");
    let err = Publisher::builder()
        .ca_file(other.ca())
        .client_cert(pki.path("client.pem"), pki.path("client.key"))
        .connect_timeout(Duration::from_secs(3))
        .connect(&nats.url())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::Tls, "{err:?}");
    assert!(
        err.to_string().contains("not signed by a trusted CA"),
        "{err}"
    );
    // Unreadable files are reported as such, before any connection.
    let err = Publisher::builder()
        .ca_file(pki.path("nope.pem"))
        .connect(&nats.url())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::TlsConfig, "{err}");
    assert!(err.to_string().contains("nope.pem"), "{err}");
    let err = Publisher::builder()
        .client_cert(pki.path("client.pem"), pki.path("nope.key"))
        .connect(&nats.url())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::TlsConfig, "{err}");
    let run = tribune(&[
        "publish",
        topic,
        "--data",
        "{}",
        "--nats",
        &nats.url(),
        "--ca-file",
        "/nonexistent/ca.pem",
    ])
    .await;
    assert_fails_with(&run, 2, "/nonexistent/ca.pem");
}
