//! Records the token endpoint reads on every request, served from memory
//! for at most [`RECENT`] after they were read from the database.
//!
//! A refresh grant needs its client and its user; reading both from SQL on
//! every grant cost more than everything else the endpoint does besides
//! signing. What is held here is only ever a copy no older than
//! [`RECENT`]: a client changed or deleted by `switchyard clients` (another
//! process, perhaps on another machine) applies on every instance within
//! that bound plus the time of one read, as the cutover rules do, and a
//! change made by this process forgets its copy at once ([`Recent::forget`]).
//!
//! Whether a user may still receive tokens is never decided from a copy:
//! the rotation that spends a refresh token checks the user's row in the
//! same statement ([`crate::store::refresh::RefreshStore::rotate`]), so a
//! blocked or deleted user is refused at once on every instance. The copy
//! only supplies the profile claims of the new ID token.
//!
//! Unknown ids are not remembered: a flood of made-up client ids can
//! neither fill the memory nor hide a client created a moment later.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::{Client, Database, StoreResult, User};

/// How long a copy is served: well inside the 2 s within which a change
/// must apply on every instance.
pub const RECENT: Duration = Duration::from_secs(1);

/// Entries kept at most; past it, stale ones are dropped, and if all are
/// fresh the map starts over (a cache miss is a read, never an error).
const CAPACITY: usize = 10_000;

/// Copies of records by id, each served for [`RECENT`] after it was read.
pub struct Recent<V> {
    map: RwLock<HashMap<String, (Instant, Arc<V>)>>,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl<V> Recent<V> {
    /// The copy of `id`, if one was read less than [`RECENT`] ago.
    pub fn get(&self, id: &str) -> Option<Arc<V>> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(id)
            .filter(|(read_at, _)| read_at.elapsed() < RECENT)
            .map(|(_, v)| v.clone())
    }

    /// Keeps `value`, read from the database at `read_at` (taken before the
    /// read, so the copy is never thought younger than it is).
    pub fn put(&self, id: &str, value: Arc<V>, read_at: Instant) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CAPACITY && !map.contains_key(id) {
            map.retain(|_, (at, _)| at.elapsed() < RECENT);
            if map.len() >= CAPACITY {
                map.clear();
            }
        }
        map.insert(id.to_string(), (read_at, value));
    }

    /// Drops the copy of `id`: this process has just changed the record.
    pub fn forget(&self, id: &str) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// The copy of `id`, or `read`'s answer, kept when there is one.
    async fn get_or_read<F>(&self, id: &str, read: F) -> StoreResult<Option<Arc<V>>>
    where
        F: Future<Output = StoreResult<Option<V>>>,
    {
        if let Some(v) = self.get(id) {
            return Ok(Some(v));
        }
        let read_at = Instant::now();
        let Some(v) = read.await?.map(Arc::new) else {
            return Ok(None);
        };
        self.put(id, v.clone(), read_at);
        Ok(Some(v))
    }
}

/// Recent copies of the clients and users the token endpoint reads.
#[derive(Default)]
pub struct Recents {
    pub clients: Recent<Client>,
    pub users: Recent<User>,
}

impl Recents {
    /// The client, from a copy at most [`RECENT`] old.
    pub async fn client(&self, db: &dyn Database, id: &str) -> StoreResult<Option<Arc<Client>>> {
        self.clients.get_or_read(id, db.get_client(id)).await
    }

    /// The user, from a copy at most [`RECENT`] old: for what a token says
    /// about them, never for whether they may have one.
    pub async fn user(&self, db: &dyn Database, id: &str) -> StoreResult<Option<Arc<User>>> {
        self.users.get_or_read(id, db.get_user(id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_served_for_recent_only_and_forgotten_on_demand() {
        let recent = Recent::<u32>::default();
        recent.put("a", Arc::new(1), Instant::now());
        assert_eq!(recent.get("a").as_deref(), Some(&1));
        recent.forget("a");
        assert_eq!(recent.get("a"), None);
        // Read longer ago than RECENT: stale, so not served.
        recent.put("b", Arc::new(2), Instant::now() - RECENT);
        assert_eq!(recent.get("b"), None);
    }

    #[test]
    fn a_full_map_drops_stale_copies_first() {
        let recent = Recent::<usize>::default();
        let old = Instant::now() - RECENT * 2;
        for i in 0..CAPACITY {
            recent.put(&i.to_string(), Arc::new(i), old);
        }
        recent.put("new", Arc::new(0), Instant::now());
        let map = recent.map.read().unwrap();
        assert_eq!(map.len(), 1);
    }
}
