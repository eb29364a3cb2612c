//! An editor as the tests play one: JetStream publications to
//! `tribune.fan.<topic>` with a `Nats-Msg-Id`, retried until acked (a retry
//! is stored once), and plain JetStream API requests.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

/// An editor's NATS connection.
pub struct Editor {
    js: async_nats::jetstream::Context,
}

impl Editor {
    /// Connects to `urls` (comma-separated), reconnecting in steps of 50 ms
    /// up to half a second.
    pub async fn connect(urls: &str) -> Editor {
        Self::connect_with(urls, |n| Duration::from_millis(50 * n.min(10) as u64)).await
    }

    /// Connects to `urls`, waiting `reconnect_delay(attempt)` before each
    /// reconnect attempt.
    pub async fn connect_with(
        urls: &str,
        reconnect_delay: impl Fn(usize) -> Duration + Send + Sync + 'static,
    ) -> Editor {
        let servers: Vec<&str> = urls.split(',').collect();
        let client = async_nats::ConnectOptions::new()
            .reconnect_delay_callback(reconnect_delay)
            .connect(servers)
            .await
            .expect("editor connects");
        Editor {
            js: async_nats::jetstream::new(client),
        }
    }

    /// Publishes until the stream acknowledges; the stored `seq` (the first
    /// one when a retry was a duplicate, which the `Nats-Msg-Id` makes it).
    pub async fn publish(&self, topic: &str, data: &str, id: &str) -> u64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id);
            let attempt = async {
                self.js
                    .publish_with_headers(
                        format!("tribune.fan.{topic}"),
                        headers,
                        Bytes::from(data.to_string()),
                    )
                    .await
                    .ok()?
                    .await
                    .ok()
            };
            if let Ok(Some(ack)) = tokio::time::timeout(Duration::from_secs(1), attempt).await {
                return ack.sequence;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "publication {id} not acked within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Retracts message `seq` of `topic` as an editor does on NATS: an empty
    /// message with `Tribune-Retract: <seq>` (PROTOCOL.md section 13),
    /// retried until acked; the marker's own seq.
    pub async fn retract(&self, topic: &str, seq: u64) -> u64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut headers = async_nats::HeaderMap::new();
            let id = tribune_protocol::retract_msg_id(topic, seq);
            headers.insert("Nats-Msg-Id", id.as_str());
            headers.insert(tribune_protocol::RETRACT_HEADER, seq.to_string().as_str());
            let attempt = async {
                self.js
                    .publish_with_headers(format!("tribune.fan.{topic}"), headers, Bytes::new())
                    .await
                    .ok()?
                    .await
                    .ok()
            };
            if let Ok(Some(ack)) = tokio::time::timeout(Duration::from_secs(1), attempt).await {
                return ack.sequence;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "retraction of {seq} not acked within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A JetStream API request; the JSON answer.
    pub async fn api(&self, subject: &str) -> Value {
        let reply = self
            .js
            .client()
            .request(subject.to_string(), Bytes::new())
            .await
            .expect("JetStream API answers");
        serde_json::from_slice(&reply.payload).expect("JSON answer")
    }
}
