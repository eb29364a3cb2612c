//! `tribune disconnect` and `tribune revoke`: the hub's server API
//! (`POST /v1/disconnect`, `POST /v1/revoke` on its internal listener, with
//! the operator key). The hub called applies the call and carries it to
//! every node of its cluster.

use clap::Args;
use serde_json::{Value, json};

use crate::{Failure, runtime, usage};

/// Where the server API is and its key.
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// Hub internal listener URL (http://HOST:9090).
    #[arg(long, env = "TRIBUNE_HUB")]
    hub: String,
    /// The hub's operator key.
    #[arg(long, env = "TRIBUNE_OPERATOR_KEY", hide_env_values = true)]
    key: String,
}

#[derive(Debug, Args)]
pub(crate) struct DisconnectArgs {
    /// Close every connection of this user (the token's `sub`), on every node.
    #[arg(long, required_unless_present = "conn", conflicts_with = "conn")]
    user: Option<String>,
    /// Close this connection (the `conn` of its `welcome`).
    #[arg(long)]
    conn: Option<String>,
    /// The node of --conn (the `node` of its `welcome`); default the hub called.
    #[arg(long, requires = "conn")]
    node: Option<String>,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// Revoke the token with this `jti`.
    #[arg(long, required_unless_present = "user", conflicts_with = "user")]
    jti: Option<String>,
    /// Revoke this user's tokens issued before --before.
    #[arg(long)]
    user: Option<String>,
    /// Unix seconds: the user's tokens issued before are revoked (default now).
    #[arg(long, requires = "user")]
    before: Option<u64>,
    /// Unix seconds: when the hub may forget the revocation (default: the
    /// longest token lifetime it accepts).
    #[arg(long)]
    until: Option<u64>,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn disconnect(args: DisconnectArgs) -> Result<(), Failure> {
    let mut body = json!({});
    if let Some(user) = args.user {
        body["user"] = json!(user);
    }
    if let Some(conn) = args.conn {
        body["conn"] = json!(conn);
    }
    if let Some(node) = args.node {
        body["node"] = json!(node);
    }
    call(&args.target, "/v1/disconnect", body).await
}

pub(crate) async fn revoke(args: RevokeArgs) -> Result<(), Failure> {
    let mut body = json!({});
    if let Some(jti) = args.jti {
        body["jti"] = json!(jti);
    }
    if let Some(user) = args.user {
        body["user"] = json!(user);
    }
    if let Some(before) = args.before {
        body["before"] = json!(before);
    }
    if let Some(until) = args.until {
        body["until"] = json!(until);
    }
    call(&args.target, "/v1/revoke", body).await
}

/// Posts `body`; prints the hub's answer (`{"node","closed"}`) on success.
async fn call(target: &Target, path: &str, body: Value) -> Result<(), Failure> {
    let mut url =
        url::Url::parse(&target.hub).map_err(|e| usage(format!("--hub {}: {e}", target.hub)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(usage(format!("--hub {}: give an http(s) URL", target.hub)));
    }
    url.set_path(path);
    let res = reqwest::Client::new()
        .post(url.clone())
        .bearer_auth(&target.key)
        .json(&body)
        .send()
        .await
        .map_err(|e| runtime(format!("{url}: {e}")))?;
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    if !status.is_success() {
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(String::from))
            .unwrap_or(text);
        let fail = if status.is_client_error() && status != reqwest::StatusCode::UNAUTHORIZED {
            usage
        } else {
            runtime
        };
        return Err(fail(format!("{path}: {status}: {message}")));
    }
    println!("{text}");
    Ok(())
}
