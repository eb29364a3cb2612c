//! Regions: a hub reads its own region's copy of the stream (a JetStream
//! mirror, whose sequence numbers and storage times are the origin's), and
//! names the epoch after the origin, so that a fan resumes in any region
//! (PROTOCOL.md section 10, "Regions"; ARCHITECTURE.md, "Regions").
//!
//! Owns: the config of the mirror a hub creates (`bus.mirror_of`), the
//! epoch of a stream (the origin's identity for a mirror, read across the
//! domains and recorded in the mirror's metadata for when the origin is
//! unreachable; the recorded epoch of a promoted copy), and the promotion
//! of a region's mirror to origin (`tribune-hub --promote-region`).
//!
//! Why a mirror per region in its own JetStream domain (regions joined by
//! leaf nodes), not one supercluster-wide JetStream: a region keeps its own
//! JetStream quorum, so consumers, reads and a promotion in region B need
//! nothing from region A. Why the epoch is recorded in the mirror: a hub of
//! B that starts while A is unreachable must announce the same epoch as
//! before, or every fan of B would be told `recovered: false` for nothing.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::state::{Inner, NatsBus};
use super::stream::{EPOCH_KEY, StreamInfo, api_error, kept_and_read};
use crate::bus::{BusError, BusResult, Epoch};
use crate::config::BusConfig;
use crate::log_limit::LogLimit;

/// "Origin unreachable" is logged at most this often: the watcher asks at
/// every check while a region is cut off.
static UNREACHABLE_LOG: LogLimit = LogLimit::new(Duration::from_secs(30));
/// A mirror whose metadata the hub may not write is logged at most this often.
static RECORD_FAILED_LOG: LogLimit = LogLimit::new(Duration::from_secs(30));

/// The mirror a hub with `bus.manage_stream` and `bus.mirror_of` creates:
/// the origin's limits (so that the copy holds what the origin holds),
/// direct gets (history reads), no subjects (a mirror takes none), and the
/// origin's domain API when it is in another domain.
pub(super) fn mirror_config(cfg: &BusConfig, max_retained: u32) -> Value {
    let mut mirror = json!({"name": cfg.mirror_of});
    if !cfg.mirror_api.is_empty() {
        mirror["external"] = json!({"api": cfg.mirror_api});
    }
    let mut config = kept_and_read(cfg, max_retained);
    config["mirror"] = mirror;
    // A mirror takes no publications of its own to de-duplicate.
    config
        .as_object_mut()
        .expect("an object")
        .remove("duplicate_window");
    config
}

/// The epoch recorded in a stream's config, if any (a malformed one is an
/// error: it would be sent to every fan).
fn recorded(config: &Value) -> BusResult<Option<Epoch>> {
    match config.pointer(&format!("/metadata/{EPOCH_KEY}")) {
        None => Ok(None),
        Some(value) => value
            .as_str()
            .and_then(Epoch::parse)
            .map(Some)
            .ok_or_else(|| {
                BusError::unusable(format!(
                    "stream metadata {EPOCH_KEY} is not an epoch (<stream>@<ns>[+<seq>...])"
                ))
            }),
    }
}

/// Where a mirror's origin is: its name and its domain's API prefix.
fn origin_of(config: &Value) -> Option<(String, String)> {
    let mirror = config.get("mirror")?;
    let name = mirror.get("name")?.as_str()?.to_string();
    let api = mirror
        .pointer("/external/api")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .unwrap_or("$JS.API")
        .to_string();
    Some((name, api))
}

impl Inner {
    /// The epoch of the stream whose info is `info`, and whether
    /// publications can be stored (the origin answers):
    /// - a mirror: the origin's (read across the domains; when that fails,
    ///   the one recorded in the mirror, else `known`, else an error);
    /// - a stream with a recorded epoch (a promoted copy): that one;
    /// - any other: `<stream>@<created>`, as without regions.
    pub(super) async fn epoch_of(
        &self,
        info: &StreamInfo,
        known: Option<&Epoch>,
    ) -> BusResult<(Epoch, bool)> {
        let recorded = recorded(&info.config)?;
        let Some((origin, api)) = origin_of(&info.config) else {
            let epoch = recorded.unwrap_or_else(|| Epoch::new(&self.stream, info.created_ns));
            return Ok((epoch, true));
        };
        match self.bounded(self.origin_epoch(&origin, &api)).await {
            Ok(epoch) => {
                if self.managed_config.is_some() && recorded.as_ref() != Some(&epoch) {
                    self.record_epoch(&info.config, &epoch).await;
                }
                Ok((epoch, true))
            }
            Err(e) => {
                if let Some(held_back) = UNREACHABLE_LOG.allow() {
                    warn!(origin = %origin, error = %e, held_back,
                        "origin stream unreachable: reads go on from this region's mirror, publications fail");
                }
                let epoch = recorded.or_else(|| known.cloned()).ok_or_else(|| {
                    BusError::unavailable(format!(
                        "the origin stream {origin} is unreachable ({e}) and mirror {} has no \
                         recorded epoch (metadata {EPOCH_KEY})",
                        self.stream
                    ))
                })?;
                Ok((epoch, false))
            }
        }
    }

    /// The origin's epoch, asked of its domain: its recorded one (it was
    /// promoted) or `<origin>@<created>`.
    async fn origin_epoch(&self, origin: &str, api: &str) -> BusResult<Epoch> {
        let answer = self
            .api(format!("{api}.STREAM.INFO.{origin}"), Bytes::new())
            .await?;
        if let Some(error) = answer.get("error") {
            return Err(api_error(error));
        }
        let created = super::stream::parse_stream_info(&answer)?;
        let config = &created.config;
        if config.get("mirror").is_none()
            && let Some(epoch) = recorded(config)?
        {
            return Ok(epoch);
        }
        Ok(Epoch::new(origin, created.created_ns))
    }

    /// Writes `epoch` into the mirror's metadata, so that hubs of this region
    /// starting while the origin is unreachable still know it. Best effort:
    /// a failure is logged and tried again at the next check.
    async fn record_epoch(&self, config: &Value, epoch: &Epoch) {
        let mut config = config.clone();
        config["metadata"][EPOCH_KEY] = json!(epoch.as_str());
        let subject = format!("$JS.API.STREAM.UPDATE.{}", self.stream);
        match self
            .bounded(self.api(subject, Bytes::from(config.to_string())))
            .await
        {
            Ok(answer) if answer.get("error").is_none() => {
                info!(stream = %self.stream, epoch = %epoch, "origin epoch recorded in the mirror");
            }
            // Tried again at every check: one line in 30 seconds.
            Ok(answer) => {
                if let Some(held_back) = RECORD_FAILED_LOG.allow() {
                    warn!(stream = %self.stream, error = %answer["error"], held_back,
                        "cannot record the origin epoch in the mirror");
                }
            }
            Err(e) => {
                if let Some(held_back) = RECORD_FAILED_LOG.allow() {
                    warn!(stream = %self.stream, error = %e, held_back,
                        "cannot record the origin epoch in the mirror");
                }
            }
        }
    }

    /// Promotes this region's mirror to origin: it stops copying, takes the
    /// editors' subjects and records the epoch `<origin epoch>+<last seq>`.
    /// Refused while the origin answers (two streams on one subject would
    /// both store every publication: split brain). Idempotent: a promoted
    /// stream answers its epoch again. Returns `(old epoch, new epoch)`.
    pub(super) async fn promote(
        &self,
        prefix: &str,
        known: Option<&Epoch>,
    ) -> BusResult<(Epoch, Epoch)> {
        let info = self
            .bounded(self.stream_info())
            .await?
            .ok_or_else(|| BusError::unusable(format!("stream {} does not exist", self.stream)))?;
        let Some((origin, api)) = origin_of(&info.config) else {
            return match recorded(&info.config)? {
                Some(epoch) => Ok((epoch.clone(), epoch)),
                None => Err(BusError::rejected(format!(
                    "stream {} is not a mirror: nothing to promote",
                    self.stream
                ))),
            };
        };
        if self.bounded(self.origin_epoch(&origin, &api)).await.is_ok() {
            return Err(BusError::rejected(format!(
                "the origin stream {origin} still answers ({api}): stop the origin region first \
                 (promoting now would store every publication twice)"
            )));
        }
        let before = recorded(&info.config)?
            .or_else(|| known.cloned())
            .ok_or_else(|| {
                BusError::unusable(format!(
                    "the origin's epoch is unknown (mirror {} has no metadata {EPOCH_KEY} and \
                     the origin never answered): promoting would invent one",
                    self.stream
                ))
            })?;
        let after = before.promoted(info.last_seq);
        let mut config = info.config.clone();
        if let Some(map) = config.as_object_mut() {
            map.remove("mirror");
        }
        config["subjects"] = json!([format!("{prefix}.fan.>")]);
        config["republish"] =
            json!({"src": format!("{prefix}.fan.>"), "dest": format!("{prefix}.live.>")});
        config["metadata"][EPOCH_KEY] = json!(after.as_str());
        let answer = self
            .bounded(self.api(
                format!("$JS.API.STREAM.UPDATE.{}", self.stream),
                Bytes::from(config.to_string()),
            ))
            .await?;
        if let Some(error) = answer.get("error") {
            return Err(api_error(error));
        }
        warn!(stream = %self.stream, old = %before, new = %after, last_seq = info.last_seq,
            "mirror promoted to origin");
        Ok((before, after))
    }
}

impl NatsBus {
    /// `tribune-hub --promote-region`: connects as a hub of this region
    /// would (without changing the stream) and promotes its mirror; see
    /// [`Inner::promote`]. Returns `(old epoch, new epoch)`.
    pub async fn promote_region(cfg: &BusConfig) -> BusResult<(Epoch, Epoch)> {
        let cfg = BusConfig {
            manage_stream: false,
            ..cfg.clone()
        };
        // The retention only shapes a stream the hub creates: none here.
        let bus = NatsBus::connect(&cfg, 1).await?;
        let known = {
            let s = bus.inner.status.borrow();
            (s.generation > 0).then(|| s.epoch.clone())
        };
        bus.inner.promote(&cfg.prefix, known.as_ref()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::nats::stream::keep_recorded_epoch;

    #[test]
    fn a_mirror_config_copies_the_origin_and_takes_no_subjects() {
        let cfg = BusConfig {
            stream: "TRIBUNE_B".into(),
            mirror_of: "TRIBUNE".into(),
            mirror_api: "$JS.A.API".into(),
            ..BusConfig::default()
        };
        let c = mirror_config(&cfg, 100);
        assert_eq!(
            c["mirror"],
            json!({"name": "TRIBUNE", "external": {"api": "$JS.A.API"}})
        );
        assert!(c.get("subjects").is_none());
        assert_eq!(c["allow_direct"], json!(true));
        assert_eq!(c["max_msgs_per_subject"], json!(100));
        assert_eq!(
            origin_of(&c),
            Some(("TRIBUNE".to_string(), "$JS.A.API".to_string()))
        );
        let local = BusConfig {
            mirror_api: String::new(),
            ..cfg
        };
        assert_eq!(
            origin_of(&mirror_config(&local, 1)),
            Some(("TRIBUNE".to_string(), "$JS.API".to_string()))
        );
    }

    #[test]
    fn an_update_keeps_the_recorded_epoch() {
        let existing = json!({"metadata": {EPOCH_KEY: "TRIBUNE@17+40", "other": "x"}});
        let mut update = json!({"name": "TRIBUNE_B", "subjects": ["tribune.fan.>"]});
        keep_recorded_epoch(&existing, &mut update);
        assert_eq!(update["metadata"], json!({EPOCH_KEY: "TRIBUNE@17+40"}));
        let mut plain = json!({"name": "TRIBUNE"});
        keep_recorded_epoch(&json!({"metadata": {}}), &mut plain);
        assert!(plain.get("metadata").is_none());
    }

    #[test]
    fn recorded_epochs_are_read_and_malformed_ones_refused() {
        assert_eq!(recorded(&json!({})).unwrap(), None);
        let good = json!({"metadata": {EPOCH_KEY: "TRIBUNE@17+40"}});
        assert_eq!(recorded(&good).unwrap().unwrap().as_str(), "TRIBUNE@17+40");
        for bad in [json!("x y"), json!(5), json!("TRIBUNE")] {
            assert!(recorded(&json!({"metadata": {EPOCH_KEY: bad}})).is_err());
        }
    }
}
