//! Where the client's token comes from, and when it is renewed.
//!
//! A token is fixed ([`ClientBuilder::token`](crate::ClientBuilder::token))
//! or comes from a provider ([`ClientBuilder::token_provider`](crate::ClientBuilder::token_provider)):
//! an async callback the client calls at connect, on every reconnect and
//! ahead of the token's `exp`, when it sends the new one in an `auth` frame
//! on the open connection (PROTOCOL.md section 3), so that a fan stays
//! connected through any number of token lifetimes.
//!
//! The moment of a refresh is drawn at random between half and four fifths
//! of the token's remaining life ([`refresh_delay`]): a million fans whose
//! tokens were issued in the same second do not all refresh in the same
//! second.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;

/// What a provider's call gives: a token, or why there is none (shown in
/// [`ConnectionEvent::TokenRefreshFailed`](crate::ConnectionEvent::TokenRefreshFailed)
/// and connect errors).
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

type Provider = Arc<dyn Fn() -> TokenFuture + Send + Sync>;

/// The client's token: none, fixed, or from a provider.
#[derive(Clone, Default)]
pub(crate) enum TokenSource {
    #[default]
    None,
    Fixed(String),
    Provider(Provider),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself: debug output ends up in logs.
        f.write_str(match self {
            TokenSource::None => "None",
            TokenSource::Fixed(_) => "Fixed(<redacted>)",
            TokenSource::Provider(_) => "Provider",
        })
    }
}

impl TokenSource {
    /// Wraps an application's async callback.
    pub(crate) fn provider<F, Fut, E>(f: F) -> TokenSource
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        TokenSource::Provider(Arc::new(move || {
            let fut = f();
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        }))
    }

    /// A token for the next handshake: the fixed one, or a fresh one from
    /// the provider.
    pub(crate) async fn get(&self) -> Result<Option<String>, String> {
        match self {
            TokenSource::None => Ok(None),
            TokenSource::Fixed(t) => Ok(Some(t.clone())),
            TokenSource::Provider(p) => p().await.map(Some),
        }
    }

    /// The provider, when tokens can be renewed on a live connection.
    pub(crate) fn renewable(&self) -> Option<Provider> {
        match self {
            TokenSource::Provider(p) => Some(p.clone()),
            _ => None,
        }
    }
}

/// Now, in Unix seconds.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How long from `now` (Unix seconds) to refresh a token expiring at `exp`:
/// a random point between 50 % and 80 % of what is left of it, so that
/// refreshes spread out and each leaves time for a retry before `exp`.
pub(crate) fn refresh_delay(exp: u64, now: u64, rng: &mut impl Rng) -> Duration {
    let left_ms = exp.saturating_sub(now).saturating_mul(1000);
    let from = left_ms / 2;
    let to = left_ms * 4 / 5;
    Duration::from_millis(if to > from {
        rng.random_range(from..to)
    } else {
        from
    })
}

/// How long to wait before trying again after a failed refresh: a quarter of
/// what is left of the token, between 200 ms and 30 s.
pub(crate) fn retry_delay(exp: Option<u64>, now: u64) -> Duration {
    let left_ms = exp.map_or(30_000, |exp| exp.saturating_sub(now).saturating_mul(1000));
    Duration::from_millis((left_ms / 4).clamp(200, 30_000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn refreshes_spread_over_the_later_part_of_the_remaining_life() {
        let mut rng = StdRng::seed_from_u64(7);
        let now = 1_000_000;
        let delays: Vec<Duration> = (0..1000)
            .map(|_| refresh_delay(now + 60, now, &mut rng))
            .collect();
        assert!(delays.iter().all(|d| *d >= Duration::from_secs(30)));
        assert!(delays.iter().all(|d| *d < Duration::from_secs(48)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 500, "jittered: {}", distinct.len());
        // An already expired token: at once.
        assert_eq!(refresh_delay(now - 5, now, &mut rng), Duration::ZERO);
    }

    #[test]
    fn a_failed_refresh_is_retried_well_before_exp() {
        let now = 1_000_000;
        assert_eq!(retry_delay(Some(now + 8), now), Duration::from_secs(2));
        assert_eq!(retry_delay(Some(now), now), Duration::from_millis(200));
        assert_eq!(retry_delay(None, now), Duration::from_millis(7500));
        assert_eq!(retry_delay(Some(now + 3600), now), Duration::from_secs(30));
    }

    #[tokio::test]
    async fn a_provider_is_called_for_each_token_and_its_error_is_text() {
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let source = TokenSource::provider({
            let calls = calls.clone();
            move || {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n == 2 {
                        Err(std::io::Error::other("login service down"))
                    } else {
                        Ok(format!("token-{n}"))
                    }
                }
            }
        });
        assert_eq!(source.get().await.unwrap().as_deref(), Some("token-0"));
        assert_eq!(source.get().await.unwrap().as_deref(), Some("token-1"));
        assert_eq!(source.get().await.unwrap_err(), "login service down");
        assert!(source.renewable().is_some());
        assert!(TokenSource::Fixed("x".into()).renewable().is_none());
        assert_eq!(
            format!("{:?}", TokenSource::Fixed("secret".into())),
            "Fixed(<redacted>)"
        );
    }
}
