//! The admin page's door on the real binary (the page itself is tested in
//! headless Chromium: `client-sdk/widget/test/admin.browser.test.js`): no
//! page without an `admin_key`; without the key or with a wrong one 401 and
//! a Basic challenge, each refusal counted and audited; wrong keys spend the
//! address's failure budget, then 429; the key opens the page, its script,
//! the cluster view and the live tail.

use std::time::Duration;

use base64::Engine;
use serde_json::json;
use tribune_tests::hub::ConfigFile;
use tribune_tests::{Hub, eventually};

const KEY: &str = "admin-key-0123456789abcdef0123456789";

async fn get(hub: &Hub, path: &str, auth: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(format!("{}{path}", hub.internal_url()));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.expect("GET")
}

#[tokio::test]
async fn no_admin_key_no_admin_page() {
    let hub = Hub::start(&[]).await;
    let res = get(&hub, "/admin", Some(&format!("Bearer {KEY}"))).await;
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn the_key_opens_the_page_and_refusals_are_counted_and_audited() {
    let hub = Hub::start_with_env(&[], &[("TRIBUNE_ADMIN_KEY", KEY)]).await;
    let res = get(&hub, "/admin", None).await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers()["www-authenticate"],
        "Basic realm=\"tribune admin\", charset=\"UTF-8\""
    );
    for path in [
        "/admin/admin.js",
        "/admin/api/cluster",
        "/admin/api/tail?topic=results.a.b",
    ] {
        let res = get(&hub, path, Some("Bearer wrong-key")).await;
        assert_eq!(res.status(), 401, "{path}");
    }
    assert_eq!(
        hub.metric("tribune_refusals_total{reason=\"admin_key\"}")
            .await,
        4.0
    );
    eventually("the refusal is audited", Duration::from_secs(5), || async {
        hub.log()
            .lines()
            .any(|l| l.contains("tribune::audit") && l.contains("admin_key"))
            .then_some(())
    })
    .await;
    assert!(!hub.log().contains("wrong-key"), "keys are never logged");

    // Basic (any user, the key as password), as a browser sends it.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("ops:{KEY}"))
    );
    let page = get(&hub, "/admin", Some(&basic)).await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<script type=\"module\" src=\"/admin/admin.js\">"),
        "{html}"
    );
    let script = get(&hub, "/admin/admin.js", Some(&basic)).await;
    assert_eq!(script.status(), 200);
    let script = script.text().await.unwrap();
    assert!(script.contains("textContent") && !script.contains("innerHTML"));

    // The cluster view lists this node once its first partial is heard.
    let view = eventually("the node is listed", Duration::from_secs(10), || async {
        let v: serde_json::Value = get(&hub, "/admin/api/cluster", Some(&basic))
            .await
            .json()
            .await
            .unwrap();
        (v["nodes"].as_array().is_some_and(|n| n.len() == 1)).then_some(v)
    })
    .await;
    assert_eq!(view["nodes"][0]["name"], view["node"]);

    // The tail streams what is published, as server-sent events.
    let res = get(
        &hub,
        "/admin/api/tail?topic=results.admin.tail",
        Some(&basic),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut res = res;
    let mut seen = String::new();
    let mut published = false;
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = res.chunk().await.expect("the stream goes on") {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if !published && seen.contains("\"type\":\"ack\"") {
                hub.publish("results.admin.tail", json!({"lap": 3})).await;
                published = true;
            }
            if seen.contains("\"data\":{\"lap\":3}") {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no message in the tail:\n{seen}"));
    let bad = get(&hub, "/admin/api/tail?topic=no..topic", Some(&basic)).await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn wrong_admin_keys_spend_the_address_budget() {
    let cfg = ConfigFile::new("[limits]\npublish_failures_per_minute = 3\n");
    let hub = Hub::start_with_env(&["--config", cfg.path()], &[("TRIBUNE_ADMIN_KEY", KEY)]).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            get(&hub, "/admin", Some("Bearer wrong"))
                .await
                .status()
                .as_u16(),
        );
    }
    // Three failures a minute, then 429.
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    // Blocked: not even the right key is looked at until the minute is over.
    let res = get(&hub, "/admin", Some(&format!("Bearer {KEY}"))).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert!(
        hub.metric("tribune_refusals_total{reason=\"admin_rate\"}")
            .await
            >= 3.0
    );
}
