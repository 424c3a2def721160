//! The bounded set of protocol-level prepared statements that exist on one server
//! connection, under Causeway's content-derived names, with least-recently-used eviction.

use std::collections::HashMap;

use bytes::Bytes;

/// Statement names prepared on one server connection.
#[derive(Debug)]
pub struct PreparedCache {
    capacity: usize,
    /// The server lost a statement recorded here (SQLSTATE 26000): anything not recorded may
    /// still exist on the server, so it is closed before it is prepared again.
    unsure: bool,
    tick: u64,
    entries: HashMap<Bytes, u64>,
}

impl PreparedCache {
    /// An empty cache holding at most `capacity` statements (at least one).
    pub fn new(capacity: usize) -> PreparedCache {
        PreparedCache {
            capacity: capacity.max(1),
            unsure: false,
            tick: 0,
            entries: HashMap::new(),
        }
    }

    /// Whether `name` is prepared; marks it recently used.
    pub fn touch(&mut self, name: &Bytes) -> bool {
        self.tick += 1;
        match self.entries.get_mut(name) {
            Some(used) => {
                *used = self.tick;
                true
            }
            None => false,
        }
    }

    /// Record `name` as prepared. Returns the least recently used name to close first when
    /// the cache is full.
    pub fn insert(&mut self, name: Bytes) -> Option<Bytes> {
        self.tick += 1;
        let evicted = if self.entries.len() >= self.capacity && !self.entries.contains_key(&name) {
            self.oldest()
        } else {
            None
        };
        if let Some(old) = &evicted {
            self.entries.remove(old);
        }
        self.entries.insert(name, self.tick);
        evicted
    }

    /// Put back a name whose Close the server skipped (it is still prepared there).
    pub fn restore(&mut self, name: Bytes) {
        self.entries.insert(name, 0);
    }

    /// Forget `name` (its Parse failed or was skipped).
    pub fn remove(&mut self, name: &[u8]) {
        self.entries.remove(name);
    }

    /// Forget everything (after `DEALLOCATE ALL` or `DISCARD ALL`).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.unsure = false;
    }

    /// The server reported a recorded statement missing (SQLSTATE 26000): forget every
    /// record, and close each name before preparing it again (some may still exist).
    pub fn lost(&mut self) {
        self.entries.clear();
        self.unsure = true;
    }

    /// Whether a name must be closed before it is prepared (see [`PreparedCache::lost`]).
    pub fn unsure(&self) -> bool {
        self.unsure
    }

    /// Number of statements recorded.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn oldest(&self) -> Option<Bytes> {
        self.entries
            .iter()
            .min_by_key(|(_, used)| **used)
            .map(|(name, _)| name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut cache = PreparedCache::new(2);
        let (a, b, c) = (Bytes::from("a"), Bytes::from("b"), Bytes::from("c"));
        assert_eq!(cache.insert(a.clone()), None);
        assert_eq!(cache.insert(b.clone()), None);
        assert!(cache.touch(&a));
        assert_eq!(cache.insert(c.clone()), Some(b.clone()));
        assert!(!cache.touch(&b));
        assert!(cache.touch(&c));
        assert_eq!(cache.len(), 2);
        cache.remove(b"a");
        assert!(!cache.touch(&a));
    }

    #[test]
    fn a_lost_statement_makes_every_record_unsure_until_cleared() {
        let mut cache = PreparedCache::new(4);
        let a = Bytes::from("a");
        cache.insert(a.clone());
        assert!(!cache.unsure());
        cache.lost();
        assert!(cache.is_empty());
        assert!(cache.unsure());
        assert!(!cache.touch(&a), "the next use prepares it again");
        cache.clear();
        assert!(
            !cache.unsure(),
            "DISCARD ALL / DEALLOCATE ALL: nothing exists"
        );
    }
}
