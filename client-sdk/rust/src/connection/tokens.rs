//! The connection task's tokens: when the current one lapses, fetching a
//! fresh one from the provider, and sending it in an `auth` frame.

use super::*;

impl ConnectionTask {
    /// The connection's token expires at `exp` (None: never): with a
    /// provider, its refresh is drawn in the later part of its life.
    pub(super) fn token_valid_until(&mut self, exp: Option<u64>) {
        self.refresh.expires_at = exp;
        self.refresh.at = None;
        if self.config.token.renewable().is_none() {
            return;
        }
        if let Some(exp) = exp {
            let delay = refresh_delay(exp, unix_now(), &mut self.rng);
            self.refresh.at = Some(Instant::now() + delay);
        }
    }

    /// Calls the provider in a task of its own: the connection keeps serving.
    pub(super) fn fetch_token(&mut self) {
        let Some(provider) = self.config.token.renewable() else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let _ = tx.send(provider().await);
        });
        self.refresh.fetching = Some(rx);
    }

    /// Sends the provider's new token in an `auth` frame, or plans another
    /// try when the provider failed.
    pub(super) async fn send_token(
        &mut self,
        token: Result<String, String>,
        ws: &mut WsStream,
    ) -> Result<(), SendFailed> {
        match token {
            Ok(token) => {
                let id = self.next_id();
                self.pending.insert(id, Pending::Auth);
                self.send_frame(ws, &ClientFrame::Auth(Auth { id, token }))
                    .await
            }
            Err(reason) => {
                self.refresh_failed(reason);
                Ok(())
            }
        }
    }

    /// A refresh failed: the current token serves until it expires; try
    /// again before then.
    pub(super) fn refresh_failed(&mut self, reason: String) {
        tracing::warn!(%reason, "token refresh failed; the current token serves until it expires");
        self.events
            .emit(ConnectionEvent::TokenRefreshFailed { reason });
        let delay = retry_delay(self.refresh.expires_at, unix_now());
        self.refresh.at = Some(Instant::now() + delay);
    }
}
