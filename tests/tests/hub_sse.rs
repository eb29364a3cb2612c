//! The HTTP fallback (PROTOCOL.md section 11) with the real `curl -N`
//! binary and the real hub: a stream resumed on another node with
//! `Last-Event-ID` over NATS (and a reaction key taken by the other node),
//! and on one node: events, heartbeats, reactions with the stream's key,
//! refusals, CORS, the drain, and tokens (in `Authorization` only, grants,
//! the user bound to the key, the end at `exp`).

use std::time::Duration;

use serde_json::{Value, json};
use tribune_tests::Hub;
use tribune_tests::editor::Editor;
use tribune_tests::hub::ConfigFile;
use tribune_tests::jwt;
use tribune_tests::nats::NatsServer;
use tribune_tests::sse::CurlStream;

const WAIT: Duration = Duration::from_secs(10);

/// Reads `n` message events; checks each event's id against its frame.
async fn messages(s: &mut CurlStream, epoch: &str, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < n {
        let ev = s
            .next_named("message", WAIT)
            .await
            .unwrap_or_else(|| panic!("message {} of {n} not within {WAIT:?}", got.len() + 1));
        let m = ev.json();
        assert_eq!(m["type"], "message", "{m}");
        let seq = m["seq"].as_u64().unwrap();
        assert_eq!(ev.id.as_deref(), Some(format!("{epoch}:{seq}").as_str()));
        got.push(m);
    }
    got
}

#[tokio::test]
async fn curl_resumes_on_the_other_node_with_last_event_id_exactly() {
    let nats = NatsServer::start().await;
    let cfg = ConfigFile::new(
        "[bus]\nrequest_timeout_ms = 1000\ncheck_interval_ms = 500\n\
         [limits]\nhandshakes_per_second = 100000\n\
         [stats]\nkey = \"0123456789abcdef0123456789abcdef-cluster\"\n",
    );
    let a = Hub::on_nats(&nats.url(), &cfg, "node-a").await;
    let b = Hub::on_nats(&nats.url(), &cfg, "node-b").await;
    let editor = Editor::connect(&nats.url()).await;
    let topic = "clips.sse.resume";
    let publish = |i: u32| {
        let editor = &editor;
        async move {
            editor
                .publish(topic, &json!({"clip": i}).to_string(), &format!("sse-{i}"))
                .await
        }
    };

    let mut first = CurlStream::open(&format!("{}/v1/sse?topic={topic}", a.http_url()), &[]);
    let welcome = first.next_named("welcome", WAIT).await.expect("welcome");
    assert_eq!(welcome.json()["node"], "node-a");
    let ack = first.next_named("ack", WAIT).await.expect("ack").json();
    assert_eq!(ack["topic"], topic);
    assert_eq!(ack["mode"], "feed");
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    let mut seen = Vec::new();
    for i in 0..5 {
        seen.push(publish(i).await);
    }
    let got = messages(&mut first, &epoch, 5).await;
    let seqs: Vec<u64> = got.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, seen);
    for w in got.windows(2) {
        assert_eq!(w[1]["prev"], w[0]["seq"], "the prev chain is whole");
    }
    let last_id = format!("{epoch}:{}", seqs[4]);
    first.kill().await;
    // Not every stream carries a reaction key: `clips` takes no reactions.
    // A `results` stream on node a gives one that node b takes (same
    // cluster key: no sticky sessions for reactions either).
    let board = "results.sse.cluster";
    let mut on_a = CurlStream::open(&format!("{}/v1/sse?topic={board}", a.http_url()), &[]);
    let key = on_a.next_named("react", WAIT).await.expect("a key").json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let on_b = reqwest::Client::new()
        .post(format!("{}/v1/react", b.http_url()))
        .json(&json!({"topic": board, "reaction": "🔥", "key": key}))
        .send()
        .await
        .unwrap();
    assert_eq!(on_b.status(), 200, "node b takes node a's key");
    on_a.kill().await;

    let mut missed = Vec::new();
    for i in 5..10 {
        missed.push(publish(i).await);
    }
    let mut second = CurlStream::open(
        &format!("{}/v1/sse?topic={topic}", b.http_url()),
        &[&format!("Last-Event-ID: {last_id}")],
    );
    let welcome = second.next_named("welcome", WAIT).await.expect("welcome");
    assert_eq!(
        welcome.json()["node"],
        "node-b",
        "resumed on the other node"
    );
    let ack = second.next_named("ack", WAIT).await.expect("ack");
    assert_eq!(ack.json()["recovered"], true, "{}", ack.data);
    assert_eq!(ack.id.as_deref(), Some(last_id.as_str()));
    let replayed = messages(&mut second, &epoch, 5).await;
    let seqs: Vec<u64> = replayed
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, missed, "exactly the missed messages");
    assert_eq!(replayed[0]["prev"].as_u64(), Some(seen[4]));
    for (m, i) in replayed.iter().zip(5..) {
        assert_eq!(m["replay"], true);
        assert_eq!(m["data"], json!({"clip": i}));
    }
    // Then live, continuing the chain, and nothing twice.
    let next = publish(10).await;
    let live = messages(&mut second, &epoch, 1).await;
    assert_eq!(live[0]["seq"].as_u64(), Some(next));
    assert_eq!(live[0]["prev"].as_u64(), Some(missed[4]));
    assert!(live[0].get("replay").is_none());
    assert!(
        second
            .next_named("message", Duration::from_millis(500))
            .await
            .is_none(),
        "nothing after the live message"
    );
}

#[tokio::test]
async fn a_stream_heartbeats_takes_reactions_refuses_and_drains() {
    let cfg =
        ConfigFile::new("heartbeat_ms = 300\n[stats]\nwindow_ms = 200\n[drain]\nretry_ms = 1500\n");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let topic = "results.sse.board";
    let url = format!("{}/v1/sse?topic={topic}&history=1", hub.http_url());
    hub.publish(topic, json!({"lead": "A"})).await;
    let mut s = CurlStream::open(&url, &[]);
    s.next_named("welcome", WAIT).await.expect("welcome");
    let ack = s.next_named("ack", WAIT).await.expect("ack").json();
    let epoch = ack["epoch"].as_str().unwrap().to_string();
    let replay = messages(&mut s, &epoch, 1).await;
    assert_eq!(replay[0]["replay"], true);
    assert_eq!(replay[0]["data"], json!({"lead": "A"}));
    let key = s
        .next_named("react", WAIT)
        .await
        .expect("a reaction key")
        .json();
    let key = key["key"].as_str().unwrap().to_string();

    let http = reqwest::Client::new();
    let react = |body: Value| {
        http.post(format!("{}/v1/react", hub.http_url()))
            .json(&body)
            .send()
    };
    let ok = react(json!({"id": 3, "topic": topic, "reaction": "🔥", "key": key}))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.json::<Value>().await.unwrap(),
        json!({"type": "ack", "id": 3})
    );
    // Counted: the stream's own stats show it.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ev = s.next_named("stats", WAIT).await.expect("stats events");
        if ev.json()["reactions"]["🔥"] == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reaction not counted"
        );
    }
    // The key is the subscription's proof: another topic, a forged key,
    // none, or a body that is not JSON are refused.
    let other = react(json!({"topic": "results.sse.other", "reaction": "🔥", "key": key}))
        .await
        .unwrap();
    assert_eq!(other.status(), 403);
    // Its last character changed (to one it is not: a key ending in `0`
    // would otherwise be "forged" into itself).
    let last = if key.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &key[..key.len() - 1]);
    let forged = react(json!({"topic": topic, "reaction": "🔥", "key": forged}))
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let plain = http
        .post(format!("{}/v1/react", hub.http_url()))
        .body(json!({"topic": topic, "reaction": "🔥", "key": key}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 415, "only application/json");
    let bad = react(json!({"topic": topic, "reaction": "🍕", "key": key}))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // The stream is a connection of the node, and counted as a stream.
    assert_eq!(hub.metric("tribune_sse_streams").await, 1.0);
    assert_eq!(hub.metric("tribune_connections").await, 1.0);

    // Heartbeat comments keep proxies from timing the stream out.
    let before = s.comments;
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.comments == before {
        s.next(Duration::from_millis(100)).await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "no heartbeat comment"
        );
    }

    // Tokens never in the URL; a bad topic is the request's answer.
    let (status, body) = hub
        .get(&format!("/v1/sse?topic={topic}&token=abc.def.ghi"))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = hub.get("/v1/sse?topic=nowhere.at.all").await;
    assert_eq!(status, 400);
    let (status, _) = hub.get("/v1/sse?topic=results.sse.board&since=3").await;
    assert_eq!(status, 400, "since without epoch");
    // Every refusal is counted by reason.
    assert_eq!(
        hub.metric("tribune_refusals_total{reason=\"token_in_url\"}")
            .await,
        1.0
    );
    assert_eq!(
        hub.metric("tribune_refusals_total{reason=\"sse_request\"}")
            .await,
        1.0
    );

    // CORS: the origin is echoed for an allowed page, preflights answered.
    let pre = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/sse?topic={topic}", hub.http_url()),
        )
        .header("Origin", "https://news.example")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://news.example"
    );
    assert!(
        pre.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );

    // A client that goes away gives its place back (seen at the next write,
    // a heartbeat at the latest).
    let mut second = CurlStream::open(&url, &[]);
    second.next_named("ack", WAIT).await.expect("ack");
    assert_eq!(hub.metric("tribune_sse_streams").await, 2.0);
    second.kill().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while hub.metric("tribune_sse_streams").await != 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream of a client gone is still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(hub.metric("tribune_connections").await, 1.0);

    // A draining node ends the stream with a retry hint and 1001.
    hub.terminate();
    let drain = s.next_named("drain", WAIT).await.expect("drain event");
    assert_eq!(drain.retry, Some(1500));
    let close = s
        .next_named("close", WAIT)
        .await
        .expect("close event")
        .json();
    assert_eq!(close["code"], 1001);
    assert!(s.next(WAIT).await.is_none(), "the stream ends");
}

const SECRET: &str = "0123456789abcdef0123456789abcdef-sse-test";

fn token(sub: &str, secs: u64) -> String {
    let exp = jwt::unix_now() + secs;
    jwt::hs256(
        SECRET,
        &json!({"sub": sub, "exp": exp, "topics": ["premium."]}),
    )
}

#[tokio::test]
async fn a_token_topic_needs_the_grant_in_authorization_and_the_stream_ends_at_exp() {
    let cfg = ConfigFile::new(&format!(
        "allowed_origins = [\"https://news.example\"]\n\
         [auth]\nsecret = \"{SECRET}\"\nexpiry_grace_ms = 200\n\
         [namespaces.premium]\nmode = \"feed\"\nretained = 100\ntoken = true\nreactions = [\"🔥\"]\n"
    ));
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let topic = "premium.sse.feed";
    let url = format!("{}/v1/sse?topic={topic}", hub.http_url());
    // Without a token: the subscription's refusal, as HTTP.
    let http = reqwest::Client::new();
    let res = http.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    // Origins as at the websocket's handshake: another site's page is
    // refused; an allowed one may read the answer (CORS).
    let evil = http
        .get(&url)
        .header("Origin", "https://evil.example")
        .bearer_auth(token("fan-1", 60))
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), 403);
    assert!(evil.headers().get("access-control-allow-origin").is_none());
    let res = http
        .post(format!("{}/v1/react", hub.http_url()))
        .header("Origin", "https://evil.example")
        .json(&json!({"topic": topic, "reaction": "🔥", "key": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // A bad token: 401, as at a websocket handshake.
    let res = http
        .get(&url)
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let tok = token("fan-1", 3);
    let auth = format!("Authorization: Bearer {tok}");
    let mut s = CurlStream::open(&url, &[&auth, "Origin: https://news.example"]);
    let welcome = s.next_named("welcome", WAIT).await.expect("welcome").json();
    assert!(welcome["expires_at"].is_u64(), "{welcome}");
    s.next_named("ack", WAIT).await.expect("ack");
    let key = s.next_named("react", WAIT).await.expect("key").json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    // The key is bound to the user: another user's token cannot use it.
    let react = |tok: String| {
        http.post(format!("{}/v1/react", hub.http_url()))
            .bearer_auth(tok)
            .json(&json!({"topic": topic, "reaction": "🔥", "key": key}))
            .send()
    };
    assert_eq!(react(token("fan-1", 60)).await.unwrap().status(), 200);
    assert_eq!(react(token("fan-2", 60)).await.unwrap().status(), 403);
    let seq = hub.publish(topic, json!({"n": 1})).await;
    let got = s
        .next_named("message", WAIT)
        .await
        .expect("a message")
        .json();
    assert_eq!(got["seq"].as_u64(), Some(seq));
    // At exp plus grace the stream ends with 1008, as a websocket would close.
    let close = s
        .next_named("close", Duration::from_secs(8))
        .await
        .expect("closed at exp")
        .json();
    assert_eq!(close["code"], 1008, "{close}");
    assert!(s.next(WAIT).await.is_none(), "the stream ends");
}
