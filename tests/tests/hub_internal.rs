//! Issue 14, what the hub serves besides the websocket: the internal
//! listener and `POST /v1/publish`'s guards, security headers on every
//! answer, and a `--check-config` that prints no secret. Real hub binary.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tribune_tests::hub::{ConfigFile, PUBLISH_KEY_ENV, binary};
use tribune_tests::{Hub, WsClient};

const CLIPS: &str = "clips.internal.feed";

fn publish_body() -> Value {
    json!({"topic": CLIPS, "data": {"n": 1}})
}

/// The first stdout lines of a hub started with `args` (killed after).
async fn first_lines(args: &[&str], env: &[(&str, &str)], n: usize) -> Vec<String> {
    let mut child = tokio::process::Command::new(binary())
        .args(args)
        .envs(env.iter().copied())
        .env_remove(PUBLISH_KEY_ENV)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    for _ in 0..n {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("a line");
        out.push(line);
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    out
}

/// `/metrics`, `/v1/publish` and the probes are on the internal listener,
/// announced before the public one; the public listener has the websocket,
/// the assets and the probes only.
#[tokio::test]
async fn the_internal_listener_serves_operators_and_the_public_one_fans() {
    // Announced first; with `--listen 127.0.0.1:0` a free loopback port.
    let lines = first_lines(&["--listen", "127.0.0.1:0"], &[], 2).await;
    let internal = lines[0]
        .strip_prefix("internal listener on http://127.0.0.1:")
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_ne!(internal, "9090", "{lines:?}");
    assert!(
        lines[1].starts_with("listening on http://127.0.0.1:"),
        "{lines:?}"
    );

    let hub = Hub::start(&[]).await;
    let http = reqwest::Client::new();
    for path in ["/metrics", "/v1/publish"] {
        assert_eq!(hub.get(path).await.0, 404, "{path} is not public");
    }
    let res = http
        .post(format!("{}/v1/publish", hub.http_url()))
        .bearer_auth(hub.publish_key())
        .json(&publish_body())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "publishing is not public");
    let (status, text) = hub.get_internal("/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("tribune_connections"));
    for path in ["/healthz", "/readyz"] {
        assert_eq!(hub.get(path).await.0, 200, "public {path}");
        assert_eq!(hub.get_internal(path).await.0, 200, "internal {path}");
    }
    // The internal listener serves no web assets.
    assert_eq!(hub.get_internal("/").await.0, 404);
    assert!(hub.publish(CLIPS, json!({"ok": true})).await > 0);
}

/// Every refusal of `POST /v1/publish`: a short key does not start, a
/// browser request (`Origin`) and a non-JSON content type are refused even
/// with the right key, publishing is off without a key (but for loopback
/// with `--demo`), and guessing keys is limited and logged.
#[tokio::test]
async fn publish_refuses_short_keys_origins_text_plain_and_guessing() {
    // A short key in the file or the environment: the node does not start.
    let cfg = ConfigFile::new("publish_key = \"a\"\n");
    let out = std::process::Command::new(binary())
        .args(["--check-config", "--config", cfg.path()])
        .env_remove(PUBLISH_KEY_ENV)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("publish_key must be at least 32 bytes"),
        "{err}"
    );
    let err = Hub::try_start_with_env(&[], &[(PUBLISH_KEY_ENV, "short")])
        .await
        .expect_err("a short key in the environment is refused too");
    assert!(err.contains("publish_key"), "{err}");

    let hub = Hub::start(&[]).await;
    let url = format!("{}/v1/publish", hub.internal_url());
    let key = hub.publish_key().to_string();
    let http = reqwest::Client::new();
    // The shape of a cross-site request or DNS rebinding: refused.
    let res = http
        .post(&url)
        .bearer_auth(&key)
        .header("origin", "https://evil.example.com")
        .json(&publish_body())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = http
        .post(&url)
        .bearer_auth(&key)
        .header("content-type", "text/plain")
        .body(publish_body().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    let res = http
        .post(&url)
        .bearer_auth(&key)
        .body(publish_body().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415, "no content type is not JSON either");

    // Guessing: a few wrong keys are 401, then the address is refused
    // without its key being looked at, the right one included.
    let mut statuses = Vec::new();
    for i in 0..200 {
        let res = http
            .post(&url)
            .bearer_auth(format!("guess-{i:04}-guess-guess-guess-guess-guess"))
            .json(&publish_body())
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 10);
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    let res = http
        .post(&url)
        .bearer_auth(&key)
        .json(&publish_body())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(
        hub.metric("tribune_refusals_total{reason=\"publish_key\"}")
            .await,
        10.0
    );
    assert!(
        hub.metric("tribune_refusals_total{reason=\"publish_rate\"}")
            .await
            >= 190.0
    );
    let log = hub.log();
    assert!(
        log.lines()
            .any(|l| l.contains("tribune::audit") && l.contains("publish_rate")),
        "{log}"
    );
    assert!(
        !log.contains("guess-0"),
        "wrong keys are never logged:\n{log}"
    );
    // Another address is not blocked by the first one's guesses.
    let other = reqwest::Client::builder()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .build()
        .unwrap();
    let res = other
        .post(&url)
        .bearer_auth(&key)
        .json(&publish_body())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // No key: off. With --demo, loopback may publish without one.
    for (args, expected) in [(&[][..], 403), (&["--demo"][..], 200)] {
        let hub = Hub::start_with_env(args, &[(PUBLISH_KEY_ENV, "")]).await;
        let res = http
            .post(format!("{}/v1/publish", hub.internal_url()))
            .json(&publish_body())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), expected, "{args:?}");
    }
}

/// The headers every answer must carry.
fn assert_secure(what: &str, headers: &reqwest::header::HeaderMap) {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what}: no {name} in {headers:?}"))
            .to_string()
    };
    let csp = get("content-security-policy");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(csp.contains("default-src 'self'"), "{what}: {csp}");
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(get("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(get("x-frame-options"), "DENY", "{what}");
}

/// Security headers on every HTTP answer, no wildcard CORS but on the
/// assets other sites embed, no echo of the request path.
#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let cfg = ConfigFile::new("allowed_origins = [\"https://fans.example.org\"]\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.unwrap() }
    };
    let page = get(format!("{}/", hub.http_url())).await;
    assert_eq!(page.status(), 200);
    assert_secure("/", page.headers());
    assert!(
        page.headers().get("access-control-allow-origin").is_none(),
        "the demo page is not for other origins"
    );
    for path in ["/widget/tribune-widget.js", "/sdk/tribune.js"] {
        let res = get(format!("{}{path}", hub.http_url())).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_secure(path, res.headers());
        assert_eq!(
            res.headers()["access-control-allow-origin"],
            "*",
            "{path} is embedded by other sites"
        );
    }
    let probe = "/nope/<script>alert(1)</script>";
    let res = get(format!("{}{probe}", hub.http_url())).await;
    assert_eq!(res.status(), 404);
    assert_secure("404", res.headers());
    let body = res.text().await.unwrap();
    assert!(!body.contains("script") && !body.contains("nope"), "{body}");
    let res = get(format!("{}/sdk/<b>x</b>.js", hub.http_url())).await;
    assert_eq!(res.status(), 404);
    assert!(!res.text().await.unwrap().contains("<b>"));
    for (base, path) in [
        (hub.http_url(), "/healthz"),
        (hub.internal_url(), "/metrics"),
        (hub.internal_url(), "/nope"),
    ] {
        let res = get(format!("{base}{path}")).await;
        assert_secure(path, res.headers());
    }
    // A refused handshake (403), and a socket refused at accept (503).
    let ws = |origin: &'static str| {
        let http = http.clone();
        let url = format!("{}/v1/ws", hub.http_url());
        async move {
            http.get(url)
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
                .header("origin", origin)
                .send()
                .await
                .unwrap()
        }
    };
    let res = ws("https://evil.example.com").await;
    assert_eq!(res.status(), 403);
    assert_secure("403", res.headers());
    let cfg = ConfigFile::new("[limits]\nmax_connections = 1\naddress_share_percent = 100\n");
    let full = Hub::start(&["--config", cfg.path()]).await;
    let _held = WsClient::connect_with(&full.ws_url(), &[]).await.unwrap();
    let mut tcp = tokio::net::TcpStream::connect(full.addr()).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("frame-ancestors 'none'"), "{answer}");
    assert!(
        lower.contains("x-content-type-options: nosniff"),
        "{answer}"
    );
}

/// `--check-config` prints the effective configuration without a secret.
#[tokio::test]
async fn check_config_prints_no_secret() {
    let cfg = ConfigFile::new(
        r#"
publish_key = "publish-key-0123456789-0123456789-abc"
[auth]
secret = "auth-secret-0123456789-0123456789-abc"
[bus]
url = "nats://editor:url-password-1234@nats-1:4222"
password = "bus-password-1234"
token = "bus-token-1234"
"#,
    );
    let out = std::process::Command::new(binary())
        .args(["--check-config", "--config", cfg.path()])
        .env(PUBLISH_KEY_ENV, "env-publish-key-0123456789-0123456789")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for secret in [
        "publish-key-0123456789",
        "env-publish-key",
        "auth-secret-0123456789",
        "url-password-1234",
        "bus-password-1234",
        "bus-token-1234",
    ] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert!(text.contains("<redacted>"), "{text}");
    assert!(
        text.contains("nats://editor:<redacted>@nats-1:4222"),
        "{text}"
    );
    // What is not secret is still shown.
    assert!(
        text.contains("internal_listen = \"127.0.0.1:9090\""),
        "{text}"
    );
}
