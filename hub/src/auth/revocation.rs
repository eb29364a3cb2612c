//! Revoked tokens, as this node knows them: by `jti`, and by user for the
//! tokens issued (`iat`) before a time. An operator's `POST /v1/revoke` on
//! any node reaches every node as a control message; each keeps the list
//! in memory and refuses a revoked token at the handshake and in `auth`.
//!
//! Entries are kept as long as a token they cover can still be valid: a
//! `jti` until the time given with it (by default the longest lifetime the
//! policy accepts, or a day), a user's cut-off as long. The list is bounded;
//! past its bound the oldest entries go first.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;

use super::{Grant, unix_now};

/// Most entries of each kind kept.
const MAX_ENTRIES: usize = 100_000;

/// How long an entry lasts when nothing says otherwise.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Default)]
pub struct Revocations {
    /// `jti` → until when (Unix seconds) it stays revoked.
    ids: Mutex<HashMap<String, u64>>,
    /// user → (tokens issued before this Unix second are revoked, until when
    /// the entry is kept).
    users: Mutex<HashMap<String, (u64, u64)>>,
}

impl Revocations {
    /// Revokes the token `jti` until `until` (Unix seconds).
    pub fn revoke_id(&self, jti: &str, until: u64) {
        let mut ids = self.ids.lock();
        prune(&mut ids, |v| *v);
        ids.insert(jti.to_string(), until);
    }

    /// Revokes `user`'s tokens issued before `before` (Unix seconds); a later
    /// cut-off replaces an earlier one.
    pub fn revoke_user(&self, user: &str, before: u64, until: u64) {
        let mut users = self.users.lock();
        prune(&mut users, |v| v.1);
        let entry = users.entry(user.to_string()).or_insert((before, until));
        entry.0 = entry.0.max(before);
        entry.1 = entry.1.max(until);
    }

    /// Whether `grant` is revoked.
    pub fn covers(&self, grant: &Grant) -> bool {
        self.covers_token(
            grant.subject.as_deref(),
            grant.id.as_deref(),
            grant.issued_at,
        )
    }

    /// Whether the token of `user` with `jti` issued at `iat` is revoked. A
    /// token without `iat` of a user whose tokens are revoked cannot show it
    /// is newer: it is revoked too.
    pub fn covers_token(&self, user: Option<&str>, jti: Option<&str>, iat: Option<u64>) -> bool {
        let now = unix_now();
        if let Some(id) = jti
            && self.ids.lock().get(id).is_some_and(|until| *until >= now)
        {
            return true;
        }
        if let Some(user) = user
            && let Some((before, until)) = self.users.lock().get(user).copied()
            && until >= now
        {
            return iat.is_none_or(|iat| iat < before);
        }
        false
    }
}

/// Drops entries past their time; past the bound, the ones ending first.
fn prune<V>(map: &mut HashMap<String, V>, until: impl Fn(&V) -> u64) {
    if map.len() < MAX_ENTRIES {
        return;
    }
    let now = unix_now();
    map.retain(|_, v| until(v) >= now);
    while map.len() >= MAX_ENTRIES {
        let Some(first) = map
            .iter()
            .min_by_key(|(_, v)| until(v))
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        map.remove(&first);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(sub: &str, jti: Option<&str>, iat: Option<u64>) -> Grant {
        Grant {
            subject: Some(sub.into()),
            expires_at: None,
            topics: vec![],
            id: jti.map(String::from),
            issued_at: iat,
        }
    }

    #[test]
    fn by_id_and_by_user_before_a_time() {
        let r = Revocations::default();
        let now = unix_now();
        r.revoke_id("t-1", now + 60);
        assert!(r.covers(&grant("u1", Some("t-1"), Some(now))));
        assert!(!r.covers(&grant("u1", Some("t-2"), Some(now))));
        // Expired entries no longer count.
        r.revoke_id("t-3", now - 1);
        assert!(!r.covers(&grant("u1", Some("t-3"), Some(now))));
        r.revoke_user("u2", now, now + 60);
        assert!(r.covers(&grant("u2", None, Some(now - 10))));
        assert!(
            r.covers(&grant("u2", None, None)),
            "no iat: cannot be newer"
        );
        assert!(
            !r.covers(&grant("u2", None, Some(now))),
            "issued at the cut-off or after"
        );
        assert!(!r.covers(&grant("u3", None, Some(now - 10))));
        // An earlier cut-off does not undo a later one.
        r.revoke_user("u2", now - 100, now + 60);
        assert!(r.covers(&grant("u2", None, Some(now - 10))));
    }
}
