//! The JetStream stream: the config PROTOCOL.md section 10 asks for,
//! provisioning it (or checking an operator's), what evicts a subject's
//! messages, the JetStream API with its errors, and storing a message.

use async_nats::HeaderMap;
use bytes::Bytes;
use serde_json::{Value, json};
use tribune_protocol::Topic;

use super::headers::{RETRACT_HEADER, rfc3339_to_ns};
use super::state::{Eviction, Inner};
use crate::bus::{BusError, BusResult};
use crate::config::BusConfig;

/// What the hub needs from `$JS.API.STREAM.INFO`.
pub(super) struct StreamInfo {
    /// `created`: the stream's creation time, half of the epoch.
    pub(super) created_ns: u128,
    /// `config`: checked when an operator owns the stream; eviction
    /// settings; a mirror's origin and a recorded epoch (`region.rs`).
    pub(super) config: Value,
    /// `state.last_seq`: where a promoted copy continues (`region.rs`).
    pub(super) last_seq: u64,
}

/// The stream as PROTOCOL.md section 10 wants it; every field explicit, so an
/// update restores anything an operator changed by hand.
pub(super) fn stream_config(cfg: &BusConfig, max_retained: u32) -> Value {
    let mut config = kept_and_read(cfg, max_retained);
    config["subjects"] = json!([format!("{}.fan.>", cfg.prefix)]);
    // No hub of this release reads the republished subject (live feeds
    // are consumers of the stream); it stays for hubs of earlier releases
    // during a rolling upgrade and for integrations. Nobody but the stream
    // may publish there (nats/least-privilege.conf).
    config["republish"] = json!({
        "src": format!("{}.fan.>", cfg.prefix),
        "dest": format!("{}.live.>", cfg.prefix),
    });
    config
}

/// What a stream the hub creates keeps and how it is read, the same for
/// the origin and a region's mirror (`region.rs`): a mirror keeping less
/// would turn resumes away that the origin could serve.
pub(super) fn kept_and_read(cfg: &BusConfig, max_retained: u32) -> Value {
    let secs_to_ns = |s: u64| s.saturating_mul(1_000_000_000);
    json!({
        "name": cfg.stream,
        "retention": "limits",
        // Explicit: from 2.15 on, nats-server limits a stream without one
        // to 1,000 consumers, and every hub holds one per active topic.
        "max_consumers": cfg.max_consumers,
        "max_msgs": -1,
        "max_bytes": -1,
        "max_age": secs_to_ns(cfg.max_age_secs),
        "max_msgs_per_subject": max_retained.max(1),
        "max_msg_size": -1,
        "discard": "old",
        "storage": cfg.storage,
        "num_replicas": cfg.replicas.max(1),
        "duplicate_window": secs_to_ns(cfg.duplicate_window_secs),
        // Must be set explicitly: history reads are direct gets.
        "allow_direct": true,
        "mirror_direct": false,
        "sealed": false,
        "deny_delete": false,
        "deny_purge": false,
        "allow_rollup_hdrs": false,
    })
}

/// An operator-owned stream must still give what the hub relies on: direct
/// gets (history reads). The republish is not needed: hubs read live
/// messages through consumers of the stream (`live.rs`).
fn check_operator_stream(info: &StreamInfo, cfg: &BusConfig) -> BusResult<()> {
    let config = &info.config;
    if config.get("allow_direct").and_then(Value::as_bool) != Some(true) {
        return Err(BusError::unusable(format!(
            "stream {} must have allow_direct: true (history reads are direct gets)",
            cfg.stream
        )));
    }
    let max_consumers = config.get("max_consumers").and_then(Value::as_i64);
    if let Some(max) = max_consumers.filter(|m| *m > 0 && (*m as u64) < cfg.max_consumers) {
        tracing::warn!(stream = %cfg.stream, max_consumers = max, wanted = cfg.max_consumers,
            "the stream allows fewer consumers than bus.max_consumers: each hub takes one per active topic");
    }
    Ok(())
}

impl Inner {
    /// Creates or updates the stream when the hub manages it, else checks
    /// the operator's. A region's mirror (`bus.mirror_of`) is created when
    /// missing and otherwise left as it is: it may have been promoted, and
    /// nats-server would refuse to make it a mirror again. Answers its info.
    pub(super) async fn set_up_stream(&self, cfg: &BusConfig) -> BusResult<StreamInfo> {
        let mirror_exists = if cfg.mirror_of.is_empty() || self.managed_config.is_none() {
            None
        } else {
            self.bounded(self.stream_info()).await.map_err(|e| {
                BusError::unusable(format!("cannot read stream {}: {e}", cfg.stream))
            })?
        };
        match (&self.managed_config, mirror_exists) {
            (Some(_), Some(info)) => {
                check_operator_stream(&info, cfg)?;
                Ok(info)
            }
            (Some(config), None) => self
                .bounded(self.create_or_update_stream(config))
                .await
                .map_err(|e| {
                    BusError::unusable(format!("cannot provision stream {}: {e}", cfg.stream))
                }),
            (None, _) => {
                let info = self
                    .bounded(self.stream_info())
                    .await
                    .map_err(|e| BusError::unusable(format!("cannot read stream {}: {e}", cfg.stream)))?
                    .ok_or_else(|| {
                        BusError::unusable(format!(
                            "stream {} does not exist and bus.manage_stream is false: create it (PROTOCOL.md section 10) or let the hub manage it",
                            cfg.stream
                        ))
                    })?;
                check_operator_stream(&info, cfg)?;
                Ok(info)
            }
        }
    }

    /// A JetStream API request whose answer is JSON (`error` left to the caller).
    pub(super) async fn api(&self, subject: String, body: Bytes) -> BusResult<Value> {
        let reply = self
            .client
            .request(subject, body)
            .await
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::NoResponders => {
                    BusError::unavailable("JetStream is not available on this NATS account")
                }
                _ => BusError::unavailable(e.to_string()),
            })?;
        serde_json::from_slice(&reply.payload)
            .map_err(|e| BusError::unavailable(format!("unreadable JetStream answer: {e}")))
    }

    /// Stream info, or `None` when the stream does not exist.
    pub(super) async fn stream_info(&self) -> BusResult<Option<StreamInfo>> {
        let answer = self
            .api(format!("$JS.API.STREAM.INFO.{}", self.stream), Bytes::new())
            .await?;
        if let Some(error) = answer.get("error") {
            if api_err_code(error) == 10059 {
                return Ok(None);
            }
            return Err(api_error(error));
        }
        let info = parse_stream_info(&answer)?;
        self.eviction.send_replace(Eviction::of(&info.config));
        Ok(Some(info))
    }

    /// Creates the stream, or updates it when it exists with another config.
    pub(super) async fn create_or_update_stream(&self, config: &Value) -> BusResult<StreamInfo> {
        let body = Bytes::from(config.to_string());
        let mut answer = self
            .api(
                format!("$JS.API.STREAM.CREATE.{}", self.stream),
                body.clone(),
            )
            .await?;
        // 10058: "stream name already in use with a different configuration".
        if answer
            .get("error")
            .is_some_and(|e| api_err_code(e) == 10058)
        {
            // A promoted copy's recorded epoch stays (an update replaces
            // the metadata): losing it would turn every resume away.
            let mut config = config.clone();
            if let Some(existing) = self.stream_info().await? {
                keep_recorded_epoch(&existing.config, &mut config);
            }
            answer = self
                .api(
                    format!("$JS.API.STREAM.UPDATE.{}", self.stream),
                    Bytes::from(config.to_string()),
                )
                .await?;
        }
        if let Some(error) = answer.get("error") {
            return Err(api_error(error));
        }
        let info = parse_stream_info(&answer)?;
        self.eviction.send_replace(Eviction::of(&info.config));
        Ok(info)
    }

    pub(super) async fn publish(
        &self,
        topic: &Topic,
        data: Bytes,
        msg_id: Option<String>,
        retracts: Option<u64>,
    ) -> BusResult<u64> {
        self.require_connection()?;
        let max = self.client.server_info().max_payload;
        if data.len() > max {
            return Err(BusError::rejected(format!(
                "payload of {} bytes exceeds the server's max_payload of {max}",
                data.len()
            )));
        }
        let subject = self.subjects.fan(topic);
        let sent = if msg_id.is_none() && retracts.is_none() {
            self.client.request(subject, data).await
        } else {
            let mut headers = HeaderMap::new();
            if let Some(id) = &msg_id {
                headers.insert("Nats-Msg-Id", id.as_str());
            }
            if let Some(seq) = retracts {
                headers.insert(RETRACT_HEADER, seq.to_string().as_str());
            }
            self.client
                .request_with_headers(subject, headers, data)
                .await
        };
        let reply = sent.map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => {
                BusError::unavailable(format!("no stream stores {}", self.subjects.fan(topic)))
            }
            _ => BusError::unavailable(e.to_string()),
        })?;
        let ack: Value = serde_json::from_slice(&reply.payload)
            .map_err(|e| BusError::unavailable(format!("unreadable publish ack: {e}")))?;
        if let Some(error) = ack.get("error") {
            return Err(api_error(error));
        }
        ack.get("seq")
            .and_then(Value::as_u64)
            .ok_or_else(|| BusError::unavailable(format!("publish ack without seq: {ack}")))
    }
}

fn api_err_code(error: &Value) -> u64 {
    error.get("err_code").and_then(Value::as_u64).unwrap_or(0)
}

/// A JetStream API error: 503 (no quorum, JetStream down) is unavailability,
/// anything else a refusal.
pub(super) fn api_error(error: &Value) -> BusError {
    let code = error.get("code").and_then(Value::as_u64).unwrap_or(0);
    let description = error
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("unknown JetStream error");
    let text = format!("{description} ({})", api_err_code(error));
    if code == 503 || code == 408 {
        BusError::unavailable(text)
    } else {
        BusError::rejected(text)
    }
}

pub(super) fn parse_stream_info(answer: &Value) -> BusResult<StreamInfo> {
    let created = answer
        .get("created")
        .and_then(Value::as_str)
        .and_then(rfc3339_to_ns)
        .ok_or_else(|| {
            BusError::unavailable(format!(
                "stream info without a readable 'created': {answer}"
            ))
        })?;
    Ok(StreamInfo {
        created_ns: created,
        config: answer.get("config").cloned().unwrap_or(Value::Null),
        last_seq: answer
            .pointer("/state/last_seq")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

/// The stream metadata key holding the epoch: the origin's, recorded in a
/// mirror, or a promoted copy's own.
pub(super) const EPOCH_KEY: &str = "tribune_epoch";

/// Puts the epoch recorded in `existing` (a stream's config) into `update`,
/// a config about to replace it: nats-server replaces the metadata with the
/// update's, and a promoted copy without its recorded epoch would name a new
/// one (`<stream>@<created>`), turning every fan's resume away.
pub(super) fn keep_recorded_epoch(existing: &Value, update: &mut Value) {
    if let Some(epoch) = existing.pointer(&format!("/metadata/{EPOCH_KEY}")) {
        update["metadata"][EPOCH_KEY] = epoch.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_config_is_what_protocol_section_10_asks() {
        let cfg = BusConfig::default();
        let c = stream_config(&cfg, 100);
        assert_eq!(c["subjects"], json!(["tribune.fan.>"]));
        assert_eq!(
            c["republish"],
            json!({"src": "tribune.fan.>", "dest": "tribune.live.>"})
        );
        assert_eq!(c["allow_direct"], json!(true));
        assert_eq!(c["max_consumers"], json!(100_000));
        assert_eq!(c["max_msgs_per_subject"], json!(100));
        assert_eq!(c["duplicate_window"], json!(120_000_000_000u64));
        assert_eq!(c["max_age"], json!(86_400_000_000_000u64));
    }
}
