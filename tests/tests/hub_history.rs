//! `GET /v1/history` (PROTOCOL.md section 12) on the real hub binary with
//! the embedded bus: pages, the subscribe grants with the token only in
//! `Authorization`, the refusals with their status and JSON body, each
//! counted; the rate limits with `Retry-After`; cross-origin reads.

use std::time::Duration;

use serde_json::{Value, json};
use tribune_tests::Hub;
use tribune_tests::hub::ConfigFile;
use tribune_tests::jwt;

const SECRET: &str = "0123456789abcdef0123456789abcdef-history";

fn token(topics: &[&str]) -> String {
    let exp = jwt::unix_now() + 3600;
    jwt::hs256(
        SECRET,
        &json!({"sub": "fan-h", "exp": exp, "topics": topics}),
    )
}

fn config(extra: &str) -> ConfigFile {
    ConfigFile::new(&format!(
        "allowed_origins = [\"https://fans.example\"]\n\
         [auth]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\n\
         [namespaces.premium]\nmode = \"feed\"\nretained = 50\ntoken = true\n{extra}"
    ))
}

/// (status, headers, JSON body) of a GET with `headers`.
async fn get(
    hub: &Hub,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::new().get(format!("{}{path_and_query}", hub.http_url()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("GET");
    let status = res.status().as_u16();
    let h = res.headers().clone();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, h, body)
}

fn seqs(page: &Value) -> Vec<u64> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

/// The count of `tribune_refusals_total{reason}` on the metrics page.
async fn refusals(hub: &Hub, reason: &str) -> u64 {
    let (_, text) = hub.get_internal("/metrics").await;
    let needle = format!("tribune_refusals_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test]
async fn pages_grants_and_refusals() {
    let cfg = config("");
    let hub = Hub::start(&["--config", cfg.path()]).await;
    let mut open = Vec::new();
    for i in 0..12 {
        open.push(hub.publish("clips.h.open", json!({"i": i})).await);
    }
    let mut premium = Vec::new();
    for i in 0..3 {
        premium.push(hub.publish("premium.gold.x", json!({"i": i})).await);
    }

    // Anonymous on an open namespace: the newest, then the page before.
    let (status, h, page) = get(&hub, "/v1/history?topic=clips.h.open&limit=5", &[]).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(seqs(&page), open[7..]);
    assert_eq!(page["before"], json!(open[7]));
    assert!(page["epoch"].as_str().unwrap().starts_with("TRIBUNE@"));
    assert_eq!(page["messages"][0]["data"], json!({"i": 7}));
    let (_, _, older) = get(
        &hub,
        &format!("/v1/history?topic=clips.h.open&limit=5&before={}", open[7]),
        &[],
    )
    .await;
    assert_eq!(seqs(&older), open[2..7]);
    let (_, _, all) = get(&hub, "/v1/history?topic=clips.h.open", &[]).await;
    assert_eq!(seqs(&all), open, "the default limit (50) holds all 12");
    assert_eq!(all["before"], Value::Null);

    // Grants: as for subscribe, the token only from the header.
    let granted = format!("Bearer {}", token(&["premium.gold."]));
    let other = format!("Bearer {}", token(&["premium.silver."]));
    let q = "/v1/history?topic=premium.gold.x";
    let (status, _, body) = get(&hub, q, &[]).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized")),
        "{body}"
    );
    let (status, _, body) = get(&hub, q, &[("authorization", &other)]).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("forbidden")),
        "{body}"
    );
    let (status, _, body) = get(&hub, q, &[("authorization", "Bearer not.a.token")]).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, page) = get(&hub, q, &[("authorization", &granted)]).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(seqs(&page), premium);
    let in_url = format!("{q}&token={}", token(&["premium.gold."]));
    let (status, _, body) = get(&hub, &in_url, &[]).await;
    assert_eq!(status, 400, "a token in the URL is refused: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Authorization")
    );

    // Bad parameters and unknown namespaces.
    for bad in [
        "/v1/history",
        "/v1/history?topic=clips.h.open&limit=101",
        "/v1/history?topic=clips.h.open&limit=0",
        "/v1/history?topic=clips.h.open&before=abc",
        "/v1/history?topic=Clips..bad",
        "/v1/history?topic=clips.h.open&what=1",
    ] {
        let (status, _, body) = get(&hub, bad, &[]).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{bad}");
    }
    let (status, _, body) = get(&hub, "/v1/history?topic=nowhere.x", &[]).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("not_found")),
        "{body}"
    );

    // Other sites: the allowed origin may read the answer, others are refused.
    let (status, h, _) = get(
        &hub,
        "/v1/history?topic=clips.h.open",
        &[("origin", "https://fans.example")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h["access-control-allow-origin"], "https://fans.example");
    let (status, h, _) = get(
        &hub,
        "/v1/history?topic=clips.h.open",
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(status, 403);
    assert!(h.get("access-control-allow-origin").is_none());
    let preflight = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/history", hub.http_url()),
        )
        .header("origin", "https://fans.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(
        preflight.headers()["access-control-allow-headers"],
        "authorization"
    );

    // Pages served (three open, one granted, one cross-origin), and every
    // refusal counted by reason.
    assert_eq!(hub.metric("tribune_history_pages_total").await, 5.0);
    assert_eq!(refusals(&hub, "history_token").await, 2);
    assert_eq!(refusals(&hub, "history_grant").await, 1);
    assert_eq!(refusals(&hub, "history_params").await, 7);
    assert_eq!(refusals(&hub, "history_namespace").await, 1);
    assert_eq!(refusals(&hub, "history_origin").await, 1);
}

#[tokio::test]
async fn rate_limited_per_address_and_per_user_with_retry_after() {
    let cfg = config(
        "[limits]\nhistory_per_second = 1\nhistory_burst = 4\n\
         history_token_per_second = 1\nhistory_token_burst = 2\n",
    );
    let hub = Hub::start(&["--config", cfg.path()]).await;
    hub.publish("premium.gold.x", json!({"i": 0})).await;
    let granted = format!("Bearer {}", token(&["premium.gold."]));
    let q = "/v1/history?topic=premium.gold.x";
    // The user's budget (2) goes first, within the address's (4).
    for _ in 0..2 {
        let (status, _, body) = get(&hub, q, &[("authorization", &granted)]).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, h, body) = get(&hub, q, &[("authorization", &granted)]).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(body["error"]["message"].as_str().unwrap().contains("user"));
    let wait: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    // Anonymous from the same address: one left of its burst, then 429.
    let (status, _, _) = get(&hub, "/v1/history?topic=clips.h.x", &[]).await;
    assert_eq!(status, 200);
    let (status, h, body) = get(&hub, "/v1/history?topic=clips.h.x", &[]).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("address")
    );
    assert!(h.contains_key("retry-after"));
    assert_eq!(refusals(&hub, "history_rate").await, 2);
    // A second later the address has a cell again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, _) = get(&hub, "/v1/history?topic=clips.h.x", &[]).await;
    assert_eq!(status, 200);
}
