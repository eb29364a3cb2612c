//! Issue 14, the edge, against the real hub: what a stadium behind one
//! address, a slowloris attacker, a proxy chain and a hostile client each
//! meet before and right after the upgrade.
//!
//! Client addresses are chosen among 127.0.0.0/8 (Linux routes all of it to
//! `lo`), or named by `X-Forwarded-For` and PROXY headers from a trusted
//! proxy, so that per-address limits can be seen apart on one machine.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tribune_tests::hub::ConfigFile;
use tribune_tests::ws::Refused;
use tribune_tests::{Hub, WsClient, eventually};

const SECRET: &str = "edge-suite-hs256-secret-0123456789abcdef";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An HS256 token for `sub`, granting `topics`, optionally naming a `kid`.
fn token(sub: &str, topics: &[&str], kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(String::from);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = json!({"sub": sub, "exp": exp, "topics": topics});
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Connects from `source` with `headers`; the welcome, or the refusal.
async fn try_connect(
    hub: &Hub,
    source: &str,
    headers: &[(&str, &str)],
) -> Result<WsClient, Refused> {
    let mut c = WsClient::connect_from(&hub.ws_url(), ip(source), headers).await?;
    let welcome = c.recv().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    Ok(c.without_stats())
}

async fn connect(hub: &Hub, source: &str, headers: &[(&str, &str)]) -> WsClient {
    try_connect(hub, source, headers)
        .await
        .unwrap_or_else(|r| panic!("{source} {headers:?} refused: {r:?}"))
}

async fn refused(hub: &Hub, source: &str, headers: &[(&str, &str)]) -> Refused {
    match try_connect(hub, source, headers).await {
        Ok(_) => panic!("{source} {headers:?} was let in"),
        Err(r) => r,
    }
}

// ---------------------------------------------------------------------------
// A stadium behind one address
// ---------------------------------------------------------------------------

/// 3,000 fans behind one address (a stadium's NAT) reconnect at once, each
/// retrying when `Retry-After` says: with the default configuration all of
/// them are in within 20 s.
#[tokio::test]
async fn three_thousand_fans_behind_one_address_connect_within_20s_by_default() {
    const FANS: usize = 3_000;
    let hub = Hub::start(&[]).await;
    let url = hub.ws_url();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(20);
    let refusals = Arc::new(AtomicUsize::new(0));
    let fans: Vec<_> = (0..FANS)
        .map(|_| {
            let url = url.clone();
            let refusals = refusals.clone();
            tokio::spawn(async move {
                loop {
                    if Instant::now() > deadline {
                        return None;
                    }
                    match WsClient::connect_from(&url, ip("127.0.0.1"), &[]).await {
                        Ok(mut c) => {
                            let welcome = c.recv().await;
                            assert_eq!(welcome["type"], "welcome");
                            return Some(c);
                        }
                        Err(r) => {
                            refusals.fetch_add(1, Ordering::Relaxed);
                            // As told; a socket-level failure (a full
                            // backlog) is retried after a second.
                            let secs = r
                                .retry_after
                                .as_deref()
                                .and_then(|s| s.parse::<u64>().ok())
                                .unwrap_or(1);
                            assert!(
                                matches!(r.status, 0 | 429 | 503),
                                "a refusal to retry: {r:?}"
                            );
                            tokio::time::sleep(Duration::from_secs(secs)).await;
                        }
                    }
                }
            })
        })
        .collect();
    let mut connected = Vec::new();
    for fan in fans {
        if let Some(c) = fan.await.unwrap() {
            connected.push(c);
        }
    }
    let took = started.elapsed();
    println!(
        "{} of {FANS} fans in after {took:?}; {} refusals retried",
        connected.len(),
        refusals.load(Ordering::Relaxed)
    );
    assert_eq!(connected.len(), FANS, "every fan got in within 20 s");
    assert_eq!(hub.metric("tribune_connections").await, FANS as f64);
}

/// One address still cannot take more than its share of a node; another
/// address gets in.
#[tokio::test]
async fn one_address_holds_at_most_its_share_of_the_node() {
    // 40 connections, 25%: 10 per address.
    let cfg = ConfigFile::new("[limits]\nmax_connections = 40\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(connect(&hub, "127.0.10.1", &[]).await);
    }
    let r = refused(&hub, "127.0.10.1", &[]).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.body.contains("share"), "{}", r.body);
    assert!(r.retry_after.is_some());
    let _other = connect(&hub, "127.0.10.2", &[]).await;
    // A place comes back when a connection ends.
    held.pop();
    eventually(
        "the address's place comes back",
        Duration::from_secs(5),
        || async { try_connect(&hub, "127.0.10.1", &[]).await.ok() },
    )
    .await;
    assert!(
        hub.metric("tribune_refusals_total{reason=\"address_share\"}")
            .await
            >= 1.0
    );
}

// ---------------------------------------------------------------------------
// Slowloris and the pending cap
// ---------------------------------------------------------------------------

/// 300 sockets sending a handshake one header line at a time, slower than
/// the header-read timeout allows: the hub cuts them all within 15 s, while
/// a real fan connects in the middle of it. Default configuration.
#[tokio::test]
async fn slowloris_handshakes_are_cut_within_15s_while_a_fan_connects() {
    const SLOW: usize = 300;
    let hub = Hub::start(&[]).await;
    let addr = hub.addr();
    let started = Instant::now();
    let slow: Vec<_> = (0..SLOW)
        .map(|i| {
            tokio::spawn(async move {
                let mut tcp = TcpStream::connect(addr).await.expect("connect");
                let head = format!("GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n");
                tcp.write_all(head.as_bytes()).await.expect("first lines");
                // One more header line every 2 s, never the end of the
                // headers; stop at 40 s (the hub must cut it long before).
                let mut n = 0;
                let mut buf = [0u8; 256];
                loop {
                    tokio::select! {
                        read = tcp.read(&mut buf) => match read {
                            // Closed (or an answer, then closed): cut.
                            Ok(0) | Err(_) => return Some(started.elapsed()),
                            Ok(_) => continue,
                        },
                        () = tokio::time::sleep(Duration::from_secs(2)) => {
                            n += 1;
                            if n > 20 {
                                return None;
                            }
                            let line = format!("X-Slow-{i}-{n}: x\r\n");
                            if tcp.write_all(line.as_bytes()).await.is_err() {
                                return Some(started.elapsed());
                            }
                        }
                    }
                }
            })
        })
        .collect();
    // Let them all be in flight, then a real fan connects.
    tokio::time::sleep(Duration::from_secs(2)).await;
    eventually(
        "300 slow sockets are pending",
        Duration::from_secs(5),
        || async { (hub.metric("tribune_pending_sockets").await >= SLOW as f64).then_some(()) },
    )
    .await;
    let mut fan = connect(&hub, "127.0.0.1", &[]).await;
    assert_eq!(fan.request(json!({"type": "ping"})).await["type"], "pong");
    let mut cut = Vec::new();
    for s in slow {
        cut.push(s.await.unwrap());
    }
    let slowest = cut
        .iter()
        .map(|c| c.expect("every slow socket is cut by the hub"))
        .max()
        .unwrap();
    println!("{SLOW} slow sockets cut, the last after {slowest:?}");
    assert!(slowest < Duration::from_secs(15), "{slowest:?}");
    eventually(
        "the timeouts are audited",
        Duration::from_secs(5),
        || async {
            let n = hub
                .metric("tribune_refusals_total{reason=\"header_timeout\"}")
                .await;
            (n >= SLOW as f64).then_some(())
        },
    )
    .await;
    assert_eq!(hub.metric("tribune_pending_sockets").await, 0.0);
    assert_eq!(fan.request(json!({"type": "ping"})).await["type"], "pong");
}

/// Sockets that never send a request count against the connection cap:
/// past it (under a file limit of 300), the node answers 503 at once, to
/// the silent ones and to a real fan alike, and never fails `accept` with
/// EMFILE; once the silent ones time out, the fan gets in.
#[tokio::test]
async fn silent_sockets_count_against_the_cap_and_get_503_not_emfile() {
    let cfg =
        ConfigFile::new("[limits]\nheader_read_timeout_ms = 3000\naddress_share_percent = 100\n");
    // 300 files: the hub keeps a reserve of 256, so 44 sockets fit.
    let hub = Hub::start_with_file_limit(&["--config", cfg.path()], 300).await;
    let addr = hub.addr().to_string();
    // More silent sockets than the process has files.
    let mut silent = Vec::new();
    for _ in 0..400 {
        silent.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    // The refusals of the silent sockets beyond the cap are over within a
    // fraction of a second; the first 44 still hold the node.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let url = format!("ws://{addr}/v1/ws");
    let r = tokio::time::timeout(Duration::from_secs(5), WsClient::connect_with(&url, &[]))
        .await
        .expect("an answer, not a hang")
        .err()
        .expect("refused while silent sockets fill the node");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("unavailable"), "{r:?}");
    eventually(
        "the fan gets in once the silent ones are cut",
        Duration::from_secs(10),
        || {
            let url = url.clone();
            async move { WsClient::connect_with(&url, &[]).await.ok() }
        },
    )
    .await;
    drop(silent);
    let log = hub.log();
    assert!(!log.contains("Too many open files"), "{log}");
}

// ---------------------------------------------------------------------------
// Users, the node, the limiter's memory
// ---------------------------------------------------------------------------

/// One user (the token's `sub`) holds at most `max_connections_per_user`
/// (10 by default) on a node, from any address; other users are untouched.
#[tokio::test]
async fn one_user_holds_at_most_ten_connections() {
    let cfg = ConfigFile::new(&format!("[auth]\nsecret = \"{SECRET}\"\n"));
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let fan = token("fan-1", &["results."], None);
    let auth = format!("Bearer {fan}");
    let mut held = Vec::new();
    for i in 0..10 {
        let source = format!("127.0.11.{}", i + 1);
        held.push(connect(&hub, &source, &[("authorization", &auth)]).await);
    }
    let r = refused(&hub, "127.0.11.50", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.body.contains("user"), "{}", r.body);
    let other = format!("Bearer {}", token("fan-2", &["results."], None));
    let _other = connect(&hub, "127.0.11.50", &[("authorization", &other)]).await;
    held.pop();
    eventually(
        "the user's place comes back",
        Duration::from_secs(5),
        || async {
            try_connect(&hub, "127.0.11.51", &[("authorization", &auth)])
                .await
                .ok()
        },
    )
    .await;
    assert!(
        hub.metric("tribune_refusals_total{reason=\"user_share\"}")
            .await
            >= 1.0
    );
    assert!(
        hub.log().contains("sub=fan-1"),
        "the audit names the user:\n{}",
        hub.log()
    );
}

/// The node's own handshake rate holds whatever the addresses: past it,
/// 503 with `Retry-After` (another node may take the fan).
#[tokio::test]
async fn the_node_wide_handshake_rate_holds_across_addresses() {
    let cfg =
        ConfigFile::new("[limits]\nnode_handshakes_per_second = 1\nnode_handshakes_burst = 5\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let mut admitted = 0;
    let mut refusals = Vec::new();
    for i in 0..12 {
        match try_connect(&hub, &format!("127.0.12.{}", i + 1), &[]).await {
            Ok(_) => admitted += 1,
            Err(r) => refusals.push(r),
        }
    }
    // The burst, plus what refilled while the handshakes ran.
    assert!((5..=7).contains(&admitted), "{admitted} admitted");
    for r in &refusals {
        assert_eq!(r.status, 503, "{r:?}");
        assert!(r.retry_after.is_some(), "{r:?}");
        assert!(r.body.contains("busy"), "{r:?}");
    }
    assert_eq!(
        hub.metric("tribune_refusals_total{reason=\"rate_node\"}")
            .await,
        refusals.len() as f64
    );
}

/// The per-address limiter forgets addresses gone quiet: 200 addresses
/// make a handshake each, and their entries expire.
#[tokio::test]
async fn handshake_limiter_entries_expire() {
    let hub = Hub::start(&[]).await;
    for i in 0..200 {
        let source = format!("127.0.13.{}", i + 1);
        let _ = connect(&hub, &source, &[]).await;
    }
    eventually(
        "every address's entry expired",
        Duration::from_secs(20),
        || async {
            let expired = hub
                .metric("tribune_limiter_keys_expired_total{limiter=\"handshakes\"}")
                .await;
            let kept = hub
                .metric("tribune_limiter_keys{limiter=\"handshakes\"}")
                .await;
            (expired >= 200.0 && kept == 0.0).then_some(())
        },
    )
    .await;
}

// ---------------------------------------------------------------------------
// Proxies
// ---------------------------------------------------------------------------

/// A hub behind a proxy at 127.0.0.1, one handshake per client address.
async fn behind_proxy(extra: &str) -> (Hub, ConfigFile) {
    let cfg = ConfigFile::new(&format!(
        "trusted_proxies = [\"127.0.0.1\"]\n{extra}\n[limits]\nhandshakes_per_second = 1\nhandshakes_burst = 1\n"
    ));
    let hub = Hub::start(&["--config", cfg.path()]).await;
    (hub, cfg)
}

/// A client that sends its own `X-Forwarded-For` cannot choose its address:
/// the proxy's appended header counts, wherever it is.
#[tokio::test]
async fn every_forwarded_for_header_counts_in_order() {
    let (hub, _cfg) = behind_proxy("").await;
    let xff = "x-forwarded-for";
    let _a = connect(
        &hub,
        "127.0.0.1",
        &[(xff, "203.0.113.1"), (xff, "198.51.100.7")],
    )
    .await;
    // Another forged first header, the same client appended by the proxy.
    let r = refused(
        &hub,
        "127.0.0.1",
        &[(xff, "203.0.113.2"), (xff, "198.51.100.7")],
    )
    .await;
    assert_eq!(r.status, 429, "{r:?}");
    let _b = connect(&hub, "127.0.0.1", &[(xff, "198.51.100.8")]).await;
    // And the audit log names the client the proxy saw.
    assert!(hub.log().contains("client=198.51.100.7"), "{}", hub.log());
}

/// IPv6 clients count by /64: every address of one subscriber's prefix is
/// one client.
#[tokio::test]
async fn ipv6_clients_count_by_their_64() {
    let (hub, _cfg) = behind_proxy("").await;
    let xff = "x-forwarded-for";
    let _a = connect(&hub, "127.0.0.1", &[(xff, "2001:db8:1:2::1")]).await;
    let r = refused(&hub, "127.0.0.1", &[(xff, "2001:db8:1:2:ffff::9")]).await;
    assert_eq!(r.status, 429, "{r:?}");
    let _b = connect(&hub, "127.0.0.1", &[(xff, "2001:db8:1:3::1")]).await;
}

/// On a dual-stack `[::]` listener an IPv4 proxy arrives as
/// `::ffff:127.0.0.1`, and is still the trusted `127.0.0.1`.
#[tokio::test]
async fn ipv4_peers_of_a_dual_stack_listener_are_ipv4() {
    let cfg = ConfigFile::new(
        "trusted_proxies = [\"127.0.0.1\"]\n[limits]\nhandshakes_per_second = 1\nhandshakes_burst = 1\n",
    );
    let hub = Hub::start(&["--config", cfg.path(), "--listen", "[::]:0"]).await;
    let url = format!("ws://127.0.0.1:{}/v1/ws", hub.addr().port());
    let xff = "x-forwarded-for";
    let open = |client: &'static str| {
        let url = url.clone();
        async move {
            let mut c = WsClient::connect_from(&url, ip("127.0.0.1"), &[(xff, client)]).await?;
            c.recv().await;
            Ok::<_, Refused>(c)
        }
    };
    let _a = open("198.51.100.20").await.expect("first client");
    // Believed, hence another client: not refused.
    let _b = open("198.51.100.21").await.expect("second client");
    assert_eq!(open("198.51.100.21").await.err().unwrap().status, 429);
}

/// `trusted_proxies` takes ranges: peers in 127.0.5.0/24 are proxies,
/// a peer outside it is a client whatever it forwards.
#[tokio::test]
async fn trusted_proxies_take_cidr_ranges() {
    let cfg = ConfigFile::new(
        "trusted_proxies = [\"127.0.5.0/24\"]\n[limits]\nhandshakes_per_second = 1\nhandshakes_burst = 1\n",
    );
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let xff = "x-forwarded-for";
    let _a = connect(&hub, "127.0.5.1", &[(xff, "198.51.100.1")]).await;
    let _b = connect(&hub, "127.0.5.2", &[(xff, "198.51.100.2")]).await;
    let _c = connect(&hub, "127.0.6.1", &[(xff, "198.51.100.3")]).await;
    let r = refused(&hub, "127.0.6.1", &[(xff, "198.51.100.4")]).await;
    assert_eq!(r.status, 429, "the untrusted peer is the client: {r:?}");
}

/// A PROXY protocol v2 header, written by hand from HAProxy's
/// specification: `command` 1 is PROXY, 0 is LOCAL.
fn proxy_v2(command: u8, source: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | command);
    h.push(0x11); // TCP over IPv4
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&source);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&80u16.to_be_bytes());
    h
}

async fn via_proxy(hub: &Hub, from: &str, header: &[u8]) -> Result<WsClient, Refused> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(ip(from), 0)).unwrap();
    let mut tcp = socket.connect(hub.addr()).await.unwrap();
    tcp.write_all(header).await.unwrap();
    let mut c = WsClient::connect_over(tcp, &hub.ws_url(), &[]).await?;
    assert_eq!(c.recv().await["type"], "welcome");
    Ok(c)
}

/// Behind an L4 load balancer, PROXY protocol v2 names the client: limits
/// count it, not the balancer. Sockets without the header, and headers
/// from peers that are not trusted proxies, are closed.
#[tokio::test]
async fn proxy_protocol_v2_names_the_client() {
    let (hub, _cfg) = behind_proxy("proxy_protocol = true").await;
    let _a = via_proxy(&hub, "127.0.0.1", &proxy_v2(1, [192, 0, 2, 10], 5555))
        .await
        .expect("a client behind the balancer");
    let r = via_proxy(&hub, "127.0.0.1", &proxy_v2(1, [192, 0, 2, 10], 5556))
        .await
        .err()
        .expect("the same client again is over its rate");
    assert_eq!(r.status, 429, "{r:?}");
    let _b = via_proxy(&hub, "127.0.0.1", &proxy_v2(1, [192, 0, 2, 11], 5555))
        .await
        .expect("another client behind the same balancer");
    // The balancer's own health check (LOCAL) speaks for itself.
    let _check = via_proxy(&hub, "127.0.0.1", &proxy_v2(0, [0, 0, 0, 0], 0))
        .await
        .expect("LOCAL");
    // No header at all: closed.
    assert!(via_proxy(&hub, "127.0.0.1", b"").await.is_err());
    // A header from a peer that is not a trusted proxy: closed.
    assert!(
        via_proxy(&hub, "127.0.0.2", &proxy_v2(1, [192, 0, 2, 12], 5555))
            .await
            .is_err()
    );
    eventually("refusals are counted", Duration::from_secs(5), || async {
        let header = hub
            .metric("tribune_refusals_total{reason=\"proxy_header\"}")
            .await;
        let untrusted = hub
            .metric("tribune_refusals_total{reason=\"proxy_untrusted\"}")
            .await;
        (header >= 1.0 && untrusted >= 1.0).then_some(())
    })
    .await;
    assert!(hub.log().contains("client=192.0.2.10"), "{}", hub.log());
}

// ---------------------------------------------------------------------------
// After the upgrade
// ---------------------------------------------------------------------------

/// A reaction needs what a subscription needs (the topic's grant) and the
/// subscription itself; the fans watching see only the legitimate ones.
#[tokio::test]
async fn reactions_need_the_grant_and_a_subscription() {
    let cfg = ConfigFile::new(&format!(
        "[stats]\nwindow_ms = 200\n[auth]\nsecret = \"{SECRET}\"\n\
         [namespaces.premium]\nmode = \"state\"\nretained = 1\ntoken = true\n\
         reactions = [\"🔥\"]\n"
    ));
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let topic = "premium.gold.final";
    let react = json!({"type": "react", "topic": topic, "reaction": "🔥"});
    let auth = format!("Bearer {}", token("fan-7", &["premium."], None));
    let mut watcher = connect(&hub, "127.0.14.1", &[("authorization", &auth)]).await;
    watcher.skip_stats = false;
    watcher.subscribe(topic, json!({})).await;

    // No token: no grant.
    let mut anonymous = connect(&hub, "127.0.14.2", &[]).await;
    let a = anonymous.request(react.clone()).await;
    assert_eq!(
        (a["type"].as_str(), a["code"].as_str()),
        (Some("error"), Some("forbidden")),
        "{a}"
    );
    // A token, no subscription.
    let mut fan = connect(&hub, "127.0.14.3", &[("authorization", &auth)]).await;
    let a = fan.request(react.clone()).await;
    assert_eq!(a["code"], "forbidden", "{a}");
    // On a namespace without tokens, a subscription is still needed.
    let board = json!({"type": "react", "topic": "results.edge.board", "reaction": "🔥"});
    assert_eq!(fan.request(board.clone()).await["code"], "forbidden");
    fan.subscribe("results.edge.board", json!({})).await;
    assert_eq!(fan.request(board).await["type"], "ack");
    // Subscribed with the grant: accepted.
    fan.subscribe(topic, json!({})).await;
    assert_eq!(fan.request(react).await["type"], "ack");

    // The watcher's windows sum to the one accepted reaction on its topic.
    let mut fire = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(s) = watcher.try_recv(Duration::from_millis(300)).await
            && s["type"] == "stats"
        {
            fire += s["reactions"]["🔥"].as_u64().unwrap_or(0);
        }
    }
    assert_eq!(fire, 1, "only the subscribed fan's reaction counts");
    assert_eq!(
        hub.metric("tribune_refusals_total{reason=\"react_grant\"}")
            .await,
        1.0
    );
    assert_eq!(
        hub.metric("tribune_refusals_total{reason=\"react_unsubscribed\"}")
            .await,
        2.0
    );
}

/// The node carries at most `max_relays` topics; a subscription to one
/// more answers `unavailable`, while topics it carries stay open to all.
#[tokio::test]
async fn relays_per_node_are_capped() {
    let cfg = ConfigFile::new("[limits]\nmax_relays = 3\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let mut c = connect(&hub, "127.0.15.1", &[]).await;
    for t in ["clips.cap.a", "clips.cap.b", "clips.cap.c"] {
        c.subscribe(t, json!({})).await;
    }
    let a = c
        .request(json!({"type": "subscribe", "topic": "clips.cap.d"}))
        .await;
    assert_eq!(a["code"], "unavailable", "{a}");
    let mut d = connect(&hub, "127.0.15.2", &[]).await;
    d.subscribe("clips.cap.a", json!({})).await;
    assert_eq!(hub.metric("tribune_relays").await, 3.0);
    assert_eq!(
        hub.metric("tribune_refusals_total{reason=\"relay_cap\"}")
            .await,
        1.0
    );
}

/// New topics per connection are rate-limited (burst allowed); topics the
/// connection already has are not new.
#[tokio::test]
async fn new_topics_per_connection_are_rate_limited() {
    let cfg = ConfigFile::new("[limits]\nnew_topics_per_second = 1\nnew_topics_burst = 3\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let mut c = connect(&hub, "127.0.16.1", &[]).await;
    for t in ["clips.churn.a", "clips.churn.b", "clips.churn.c"] {
        c.subscribe(t, json!({})).await;
    }
    let a = c
        .request(json!({"type": "subscribe", "topic": "clips.churn.d"}))
        .await;
    assert_eq!(a["code"], "rate_limited", "{a}");
    // Already subscribed: just an ack.
    c.subscribe("clips.churn.a", json!({})).await;
    // And after a second, one more.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.subscribe("clips.churn.d", json!({})).await;
}

/// Websocket pings count toward the frame rate: a ping flood is closed
/// with 4029 like a text flood. Default configuration.
#[tokio::test]
async fn ping_flood_is_closed_with_4029() {
    let hub = Hub::start(&[]).await;
    let mut c = connect(&hub, "127.0.17.1", &[]).await;
    for _ in 0..200 {
        if futures::SinkExt::send(&mut c.stream, Message::Ping(vec![1].into()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(c.close_code().await, Some(4029));
    eventually("the flood is audited", Duration::from_secs(5), || async {
        (hub.metric("tribune_refusals_total{reason=\"flood\"}").await == 1.0).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------
// The audit log
// ---------------------------------------------------------------------------

/// Hundreds of refused handshakes leave structured, rate-limited lines:
/// reason, client, sub, kid; each reason at most once a second, with the
/// count held back; every refusal counted.
#[tokio::test]
async fn refusals_are_audited_with_reason_client_and_kid_at_a_bounded_rate() {
    let cfg = ConfigFile::new(&format!(
        "allowed_origins = [\"https://fans.example.org\"]\n[auth]\nsecret = \"{SECRET}\"\n"
    ));
    let hub = Hub::start(&["--config", cfg.path()]).await;
    // Signed with another secret, naming a key id.
    let forged = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rotated-2025".into());
        jsonwebtoken::encode(
            &header,
            &json!({"sub": "mallory", "topics": ["premium."]}),
            &EncodingKey::from_secret(b"not-the-hub-secret-not-the-hub-secret!!"),
        )
        .unwrap()
    };
    let auth = format!("Bearer {forged}");
    for i in 0..300 {
        let source = format!("127.0.18.{}", i % 250 + 1);
        let r = refused(&hub, &source, &[("authorization", &auth)]).await;
        assert_eq!(r.status, 401);
    }
    for i in 0..50 {
        let source = format!("127.0.19.{}", i + 1);
        let r = refused(&hub, &source, &[("origin", "https://evil.example.com")]).await;
        assert_eq!(r.status, 403);
    }
    // One more after the second is over: its line counts the held back.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    refused(&hub, "127.0.18.251", &[("authorization", &auth)]).await;
    assert_eq!(
        hub.metric("tribune_refusals_total{reason=\"token\"}").await,
        301.0
    );
    assert_eq!(
        hub.metric("tribune_refusals_total{reason=\"origin\"}")
            .await,
        50.0
    );
    let log = hub.log();
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("tribune::audit"))
        .collect();
    let token_line = audit
        .iter()
        .find(|l| l.contains("reason=\"token\"") || l.contains("reason=token"))
        .unwrap_or_else(|| panic!("no token refusal in the log:\n{log}"));
    assert!(token_line.contains("kid=rotated-2025"), "{token_line}");
    assert!(token_line.contains("client=127.0.18."), "{token_line}");
    assert!(
        audit.iter().any(|l| l.contains("origin")),
        "no origin refusal in the log:\n{log}"
    );
    // 350 refusals in a few seconds: a handful of lines per reason (one a
    // second at most), not 350.
    assert!(
        audit.len() <= 20,
        "{} audit lines for 350 refusals:\n{log}",
        audit.len()
    );
    assert!(
        audit
            .iter()
            .any(|l| l.contains("held_back=") && !l.contains("held_back=0")),
        "a line says how many were held back:\n{log}"
    );
}
