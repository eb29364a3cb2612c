//! The [`HubPublisher`]: publications and retractions through a hub's
//! `POST /v1/publish` and `POST /v1/retract` (its publish key as a bearer
//! token), and the hub's answers or refusals.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tribune_protocol::frame::{HttpError, PublishRequest, PublishResponse, RetractRequest};
use tribune_protocol::validate_topic;

use super::check::{MAX_PAYLOAD_BYTES, check_publication};
use crate::error::{ConnectError, ConnectErrorKind, PublishError, PublishErrorKind};
use crate::tls;

/// Publishing through a hub's `POST /v1/publish` (on its internal
/// listener): for integrations, tests and the embedded bus. The hub wants
/// its `publish_key` ([`HubPublisher::key`]); without one configured it
/// takes publications only from loopback on a `--demo` node.
#[derive(Debug, Clone)]
pub struct HubPublisher {
    http: reqwest::Client,
    /// `http(s)://host:port/v1/publish`.
    endpoint: url::Url,
    /// The hub's publish key, sent as a bearer token.
    key: Option<String>,
    max_payload: usize,
}

impl HubPublisher {
    /// A publisher for the hub at `url` (`http://host:port`; `ws://` is
    /// accepted and mapped). An `https://` hub must have a certificate that
    /// the platform's roots trust.
    pub fn new(url: &str) -> Result<Self, ConnectError> {
        Self::build(url, None)
    }

    /// A publisher for an `https://` hub whose certificate chains to one of
    /// the CA certificates of this PEM file (only those are trusted).
    pub fn with_ca_file(url: &str, ca_file: impl AsRef<Path>) -> Result<Self, ConnectError> {
        Self::build(url, Some(ca_file.as_ref()))
    }

    fn build(url: &str, ca_file: Option<&Path>) -> Result<Self, ConnectError> {
        let mut endpoint = url::Url::parse(url).map_err(|e| {
            ConnectError::with_source(ConnectErrorKind::InvalidUrl, url.to_string(), e)
        })?;
        let scheme = match endpoint.scheme() {
            "http" | "ws" => "http",
            "https" | "wss" => "https",
            other => {
                return Err(ConnectError::new(
                    ConnectErrorKind::InvalidUrl,
                    format!("{url}: scheme '{other}' is not http or https"),
                ));
            }
        };
        if endpoint.scheme() != scheme {
            let _ = endpoint.set_scheme(scheme);
        }
        endpoint.set_path("/v1/publish");
        endpoint.set_query(None);
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if scheme == "https" || ca_file.is_some() {
            let config = tls::client_config(ca_file)?;
            http = http.use_preconfigured_tls(rustls::ClientConfig::clone(&config));
        }
        let http = http
            .build()
            .map_err(|e| ConnectError::with_source(ConnectErrorKind::Io, "HTTP client", e))?;
        Ok(Self {
            http,
            endpoint,
            key: None,
            max_payload: MAX_PAYLOAD_BYTES,
        })
    }

    /// The hub's publish key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Publishes a payload that is already JSON (checked here); returns the seq.
    pub async fn publish_json(&self, topic: &str, json: &str) -> Result<u64, PublishError> {
        check_publication(topic, json.as_bytes(), self.max_payload)?;
        let data = serde_json::value::RawValue::from_string(json.to_string()).map_err(|e| {
            PublishError::with_source(PublishErrorKind::InvalidJson, topic.to_string(), e)
        })?;
        let body = PublishRequest {
            topic: topic.to_string(),
            data,
        };
        let mut request = self.http.post(self.endpoint.clone()).json(&body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        self.answer(topic, request).await
    }

    /// Publishes `data` serialized to JSON; returns the seq.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        data: &T,
    ) -> Result<u64, PublishError> {
        let json = serde_json::to_string(data).map_err(|e| {
            PublishError::with_source(PublishErrorKind::InvalidJson, topic.to_string(), e)
        })?;
        self.publish_json(topic, &json).await
    }

    /// Retracts the message `seq` of `topic` through the hub's `POST
    /// /v1/retract` (same key as publishing); returns the retraction's own
    /// seq. A `state` topic is refused (`bad_request`, HTTP 409).
    pub async fn retract(&self, topic: &str, seq: u64) -> Result<u64, PublishError> {
        validate_topic(topic).map_err(|e| {
            PublishError::with_source(PublishErrorKind::InvalidTopic, topic.to_string(), e)
        })?;
        let mut endpoint = self.endpoint.clone();
        endpoint.set_path("/v1/retract");
        let body = RetractRequest {
            topic: topic.to_string(),
            seq,
        };
        let mut request = self.http.post(endpoint).json(&body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        self.answer(topic, request).await
    }

    /// Sends a request to the hub and reads its `{"seq"}` answer or refusal.
    async fn answer(
        &self,
        topic: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<u64, PublishError> {
        let response = request.send().await.map_err(|e| {
            let kind = if e.is_timeout() {
                PublishErrorKind::TimedOut
            } else {
                PublishErrorKind::Transport
            };
            // reqwest's own text does not say why a connection failed; a TLS
            // refusal is worth spelling out (and its fix).
            let detail = match tls::tls_failure_in_chain(&e) {
                Some(tls_error) => format!("{}: {}", self.endpoint, tls::explain(tls_error)),
                None => format!("{}", self.endpoint),
            };
            PublishError::with_source(kind, detail, e)
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            PublishError::with_source(PublishErrorKind::Transport, topic.to_string(), e)
        })?;
        if status.is_success() {
            let answer: PublishResponse = serde_json::from_str(&text).map_err(|e| {
                PublishError::with_source(
                    PublishErrorKind::Transport,
                    format!("{topic}: unexpected answer {text}"),
                    e,
                )
            })?;
            return Ok(answer.seq);
        }
        match serde_json::from_str::<HttpError>(&text) {
            Ok(err) => Err(PublishError::new(
                PublishErrorKind::Refused(err.error.code),
                format!("{topic}: {} ({status})", err.error.message),
            )),
            Err(_) => Err(PublishError::new(
                PublishErrorKind::Transport,
                format!("{topic}: HTTP {status}: {text}"),
            )),
        }
    }
}
