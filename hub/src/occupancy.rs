//! What each client address and each user holds on this node: the counts
//! behind `limits.address_share_percent` (one address, or one IPv6 prefix,
//! may hold only its share of the node) and `max_connections_per_user` (one
//! token `sub`, whatever the addresses).
//!
//! A count lives only while something holds a place under it: the entry of
//! a key is removed when its count returns to zero, so addresses that come
//! and go cost nothing once gone.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;

/// Places held per key; an absent key holds none.
#[derive(Debug)]
pub struct Counts<K: Eq + Hash> {
    held: DashMap<K, usize>,
}

impl<K: Eq + Hash + Clone> Default for Counts<K> {
    fn default() -> Self {
        Self {
            held: DashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone> Counts<K> {
    /// Takes one place under `key` if it holds fewer than `max`.
    pub fn try_take(&self, key: &K, max: usize) -> bool {
        let mut held = self.held.entry(key.clone()).or_insert(0);
        if *held >= max {
            return false;
        }
        *held += 1;
        true
    }

    /// Gives one place under `key` back.
    pub fn release(&self, key: &K) {
        if let Some(mut held) = self.held.get_mut(key) {
            *held = held.saturating_sub(1);
        }
        self.held.remove_if(key, |_, held| *held == 0);
    }

    /// Keys holding at least one place.
    pub fn keys(&self) -> usize {
        self.held.len()
    }
}

/// Why a connection could not take its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Its address holds its share of the node.
    Address,
    /// Its user holds `max_connections_per_user`.
    User,
}

/// Connections per client address (limit key) and per user.
#[derive(Debug, Default)]
pub struct Occupancy {
    addresses: Counts<IpAddr>,
    users: Counts<String>,
}

impl Occupancy {
    /// A connection's place under its address and, when its token names
    /// one, its user; both or neither.
    pub fn take(
        self: &Arc<Self>,
        address: IpAddr,
        address_max: usize,
        user: Option<&str>,
        user_max: usize,
    ) -> Result<Place, Full> {
        if !self.addresses.try_take(&address, address_max) {
            return Err(Full::Address);
        }
        if let Some(user) = user
            && !self.users.try_take(&user.to_string(), user_max)
        {
            self.addresses.release(&address);
            return Err(Full::User);
        }
        Ok(Place {
            occupancy: self.clone(),
            address,
            user: user.map(str::to_string),
        })
    }

    /// Addresses holding a connection now.
    pub fn addresses(&self) -> usize {
        self.addresses.keys()
    }
}

/// One connection's place; given back when dropped.
#[derive(Debug)]
pub struct Place {
    occupancy: Arc<Occupancy>,
    /// The limit key of the client's address.
    address: IpAddr,
    /// The token's `sub`, when it had one.
    user: Option<String>,
}

impl Place {
    /// The limit key of the client's address (for the audit log).
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// The user this place counts under, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Counts a connection that logged in after its handshake (a first
    /// `auth` frame) under its user; false when the user holds `max`
    /// already. A place that has a user keeps it.
    pub fn add_user(&mut self, user: &str, max: usize) -> bool {
        if self.user.is_some() {
            return true;
        }
        if !self.occupancy.users.try_take(&user.to_string(), max) {
            return false;
        }
        self.user = Some(user.to_string());
        true
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.occupancy.addresses.release(&self.address);
        if let Some(user) = &self.user {
            self.occupancy.users.release(user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_hold_until_released_and_leave_no_entry() {
        let o = Arc::new(Occupancy::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = o.take(a, 2, Some("fan"), 2).unwrap();
        let p2 = o.take(a, 2, None, 2).unwrap();
        assert_eq!(o.take(a, 2, None, 2).unwrap_err(), Full::Address);
        let p3 = o.take(b, 2, Some("fan"), 2).unwrap();
        // The user is full: the address place taken for it is given back.
        assert_eq!(o.take(b, 2, Some("fan"), 2).unwrap_err(), Full::User);
        assert_eq!(o.addresses.held.get(&b).map(|h| *h), Some(1));
        drop((p1, p2, p3));
        assert_eq!(o.addresses(), 0);
        assert_eq!(o.users.keys(), 0);
    }
}
