//! The hub's bus connection secured the ways NATS deployments do it
//! (issue 13, part 3), each end to end on a real nats-server and the real
//! hub binary (an editor publishes, a fan of the hub receives):
//!
//! - TLS with a private CA (made here with rcgen) and client-certificate
//!   authentication (`verify_and_map`); a hub trusting another CA, or
//!   without a client certificate, is refused at start with one line;
//! - a user NKey seed file;
//! - a `.creds` file (user JWT and seed) on a server in operator mode, the
//!   operator, account and user JWTs signed here with NKeys.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair as NKey;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};
use tribune_tests::hub::ConfigFile;
use tribune_tests::nats::{Editor, NatsOptions, NatsServer};
use tribune_tests::{Hub, WsClient};

const SETTLE: Duration = Duration::from_secs(10);

/// A test CA with a server certificate for 127.0.0.1 and client
/// certificates for the hub and the editor, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, format!("Tribune bus test CA {name}"));
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |file: &str, sans: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.path().join(format!("{file}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{file}.key")), key.serialize_pem()).unwrap();
        };
        leaf(
            "server",
            vec!["127.0.0.1".into(), "localhost".into()],
            "nats",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        leaf(
            "hub",
            Vec::new(),
            "tribune-hub",
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        leaf(
            "editor",
            Vec::new(),
            "tribune-editor",
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

/// A nats-server with `extra` in its config; panics with its log when it
/// does not start.
async fn nats_with(extra: String) -> NatsServer {
    NatsServer::try_start(&NatsOptions {
        extra_config: Some(extra),
        ..NatsOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn hub_config(bus: &str) -> ConfigFile {
    ConfigFile::new(&format!("[bus]\nrequest_timeout_ms = 2000\n{bus}\n"))
}

fn quoted(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

/// An editor publishes on `hub`'s bus; a fan of `hub` receives it.
async fn end_to_end(hub: &Hub, editor: &Editor, topic: &str) {
    let (fan, _) = WsClient::connect(&hub.ws_url()).await;
    let mut fan = fan.without_stats();
    fan.subscribe(topic, json!({})).await;
    let seq = editor.publish(topic, r#"{"secure":true}"#).await;
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let f = fan
            .try_recv(left)
            .await
            .unwrap_or_else(|| panic!("message {seq} not delivered within {SETTLE:?}"));
        if f["type"] == "message" && f["seq"] == seq {
            assert_eq!(f["data"], json!({"secure": true}));
            return;
        }
    }
}

/// The one line the hub prints when it refuses to start.
fn refusal_line(failure: &str) -> String {
    let lines: Vec<&str> = failure
        .lines()
        .filter(|l| l.starts_with("tribune-hub: "))
        .collect();
    assert_eq!(lines.len(), 1, "one line of refusal in:\n{failure}");
    lines[0].to_string()
}

#[tokio::test]
async fn tls_with_a_client_certificate_works_and_a_wrong_ca_is_refused_in_one_line() {
    let pki = Pki::new("right");
    let nats = nats_with(format!(
        "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify_and_map: true\n  timeout: 2\n}}\n\
         authorization {{\n  users = [\n    {{user: \"CN=tribune-hub\"}}\n    {{user: \"CN=tribune-editor\"}}\n  ]\n}}\n",
        quoted(&pki.path("server.pem")),
        quoted(&pki.path("server.key")),
        quoted(&pki.path("ca.pem")),
    ))
    .await;
    let url = format!("tls://127.0.0.1:{}", nats.port());

    let cfg = hub_config(&format!(
        "tls_ca_file = {}\ntls_cert_file = {}\ntls_key_file = {}\n",
        quoted(&pki.path("ca.pem")),
        quoted(&pki.path("hub.pem")),
        quoted(&pki.path("hub.key")),
    ));
    let hub = Hub::start(&["--nats", &url, "--config", cfg.path()]).await;
    let editor = Editor::connect_with(
        &url,
        async_nats::ConnectOptions::new()
            .add_root_certificates(pki.path("ca.pem"))
            .add_client_certificate(pki.path("editor.pem"), pki.path("editor.key"))
            .require_tls(true),
    )
    .await;
    end_to_end(&hub, &editor, "results.secure.tls").await;

    // A hub that trusts another CA does not talk to this server.
    let other = Pki::new("wrong");
    let wrong_ca = hub_config(&format!(
        "tls_ca_file = {}\ntls_cert_file = {}\ntls_key_file = {}\n",
        quoted(&other.path("ca.pem")),
        quoted(&pki.path("hub.pem")),
        quoted(&pki.path("hub.key")),
    ));
    let failure = Hub::try_start(&["--nats", &url, "--config", wrong_ca.path()])
        .await
        .expect_err("a server certificate from another CA is refused");
    let line = refusal_line(&failure);
    assert!(line.contains("not signed by a CA the hub trusts"), "{line}");
    // A hub without a client certificate is not let in.
    let no_cert = hub_config(&format!("tls_ca_file = {}\n", quoted(&pki.path("ca.pem"))));
    let failure = Hub::try_start(&["--nats", &url, "--config", no_cert.path()])
        .await
        .expect_err("a hub without a client certificate is refused");
    let line = refusal_line(&failure);
    assert!(line.contains("NATS at tls://127.0.0.1:"), "{line}");
}

#[tokio::test]
async fn an_nkey_seed_file_works() {
    let hub_key = NKey::new_user();
    let editor_key = NKey::new_user();
    let nats = nats_with(format!(
        "authorization {{\n  users = [\n    {{nkey: \"{}\"}}\n    {{nkey: \"{}\"}}\n  ]\n}}\n",
        hub_key.public_key(),
        editor_key.public_key()
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let seed_file = dir.path().join("hub.nk");
    std::fs::write(&seed_file, format!("{}\n", hub_key.seed().unwrap())).unwrap();
    let cfg = hub_config(&format!("nkey_seed_file = {}\n", quoted(&seed_file)));
    let hub = Hub::start(&["--nats", &nats.url(), "--config", cfg.path()]).await;
    let editor = Editor::connect_with(
        &nats.url(),
        async_nats::ConnectOptions::with_nkey(editor_key.seed().unwrap()),
    )
    .await;
    end_to_end(&hub, &editor, "results.secure.nkey").await;

    // Another seed is not let in, and the refusal says where to look.
    let stranger = dir.path().join("stranger.nk");
    std::fs::write(&stranger, NKey::new_user().seed().unwrap()).unwrap();
    let cfg = hub_config(&format!("nkey_seed_file = {}\n", quoted(&stranger)));
    let failure = Hub::try_start(&["--nats", &nats.url(), "--config", cfg.path()])
        .await
        .expect_err("an unknown NKey is refused");
    let line = refusal_line(&failure);
    assert!(line.contains("refused the hub's credentials"), "{line}");
}

/// A JWT of `claims` about `subject`, signed by `issuer` (the NATS JWT v2
/// form: ed25519-nkey).
fn jwt(issuer: &NKey, subject: &str, name: &str, nats: Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "jti": format!("TRIBUNETEST{}{now}", name.to_ascii_uppercase()),
        "iat": now,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A `.creds` file for a user of `account`.
fn creds(dir: &Path, name: &str, account: &NKey) -> PathBuf {
    let user = NKey::new_user();
    let token = jwt(
        account,
        &user.public_key(),
        name,
        json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
               "type": "user", "version": 2}),
    );
    let text = format!(
        "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    );
    let path = dir.join(format!("{name}.creds"));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn a_creds_file_works_on_a_server_in_operator_mode() {
    let operator = NKey::new_operator();
    let account = NKey::new_account();
    let system = NKey::new_account();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "tribune-test",
        json!({"type": "operator", "version": 2}),
    );
    let unlimited = json!({"subs": -1, "data": -1, "payload": -1, "imports": -1,
        "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1});
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "tribune",
        json!({"limits": unlimited, "type": "account", "version": 2}),
    );
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        json!({"type": "account", "version": 2}),
    );
    let nats = nats_with(format!(
        "operator: \"{operator_jwt}\"\nsystem_account: \"{sys}\"\nresolver: MEMORY\n\
         resolver_preload: {{\n  {acc}: \"{account_jwt}\"\n  {sys}: \"{system_jwt}\"\n}}\n",
        sys = system.public_key(),
        acc = account.public_key(),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let hub_creds = creds(dir.path(), "hub", &account);
    let editor_creds = creds(dir.path(), "editor", &account);
    let cfg = hub_config(&format!("credentials = {}\n", quoted(&hub_creds)));
    let hub = Hub::start(&["--nats", &nats.url(), "--config", cfg.path()]).await;
    let editor = Editor::connect_with(
        &nats.url(),
        async_nats::ConnectOptions::with_credentials_file(&editor_creds)
            .await
            .unwrap(),
    )
    .await;
    end_to_end(&hub, &editor, "results.secure.creds").await;
}
