//! The internal listener's routes (`internal_listen`, loopback by default):
//! `GET /metrics`, `POST /v1/publish`, `POST /v1/retract`, `GET /healthz`, `GET /readyz`, the
//! admin page (`/admin`, with an admin key), the server API (`POST
//! /v1/disconnect`, `/v1/unsubscribe`, `/v1/revoke`, with the operator
//! key), and every operator endpoint to come. None of them is for fans, and none is
//! on the public listener: a browser page, a fan's app or a DNS-rebinding
//! attack reaching the public port finds only the websocket and the assets.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::answer::{healthz, not_found, readyz};
use crate::node::Node;

/// The internal listener's routes.
pub fn router(node: Arc<Node>) -> Router {
    let mut routes = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/publish", post(crate::publish::publish))
        .route("/v1/retract", post(crate::retract::retract))
        .route("/v1/disconnect", post(crate::server_api::disconnect))
        .route("/v1/unsubscribe", post(crate::server_api::unsubscribe))
        .route("/v1/revoke", post(crate::server_api::revoke))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(node.clone());
    // `/admin` exists only with an admin key (`admin/`).
    if let Some(admin) = crate::admin::router(node) {
        routes = routes.merge(admin);
    }
    routes
        .fallback(not_found)
        .layer(axum::middleware::from_fn(crate::edge::headers::add))
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        node.metrics.render(),
    )
        .into_response()
}
