//! The embedded session store: floors in a concurrent map, expired lazily and by a sweep.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::{SessionStore, StoreFuture, StoreHealth};
use crate::lsn::Position;

/// Sweep expired keys once every this many updates.
const SWEEP_EVERY: u64 = 4096;

/// Floors of this process's shared sessions.
#[derive(Debug)]
pub struct MemoryStore {
    ttl: Duration,
    floors: DashMap<String, (Position, Instant)>,
    updates: AtomicU64,
}

impl MemoryStore {
    /// An empty store whose entries expire after `ttl` without activity.
    pub fn new(ttl: Duration) -> MemoryStore {
        MemoryStore {
            ttl,
            floors: DashMap::new(),
            updates: AtomicU64::new(0),
        }
    }

    fn lookup(&self, key: &str) -> Option<Position> {
        let now = Instant::now();
        let entry = self.floors.get(key).map(|e| *e.value())?;
        if now.duration_since(entry.1) >= self.ttl {
            self.floors.remove_if(key, |_, (_, touched)| {
                now.duration_since(*touched) >= self.ttl
            });
            return None;
        }
        Some(entry.0)
    }

    fn raise(&self, key: &str, floor: Position) -> Position {
        let now = Instant::now();
        if self.updates.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.floors
                .retain(|_, (_, touched)| now.duration_since(*touched) < self.ttl);
        }
        let mut entry = self.floors.entry(key.to_owned()).or_insert((floor, now));
        let (current, touched) = entry.value_mut();
        if now.duration_since(*touched) >= self.ttl || floor > *current {
            *current = floor;
        }
        *touched = now;
        *current
    }
}

impl SessionStore for MemoryStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Position>> {
        Box::pin(std::future::ready(Ok(self.lookup(key))))
    }

    fn advance<'a>(&'a self, key: &'a str, floor: Position) -> StoreFuture<'a, Position> {
        Box::pin(std::future::ready(Ok(self.raise(key, floor))))
    }

    fn health(&self) -> StoreHealth {
        StoreHealth {
            kind: "memory",
            up: true,
            recovering: false,
            consecutive_failures: 0,
            pending_floors: 0,
            last_error: None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;

    fn pos(timeline: u32, lsn: u64) -> Position {
        Position {
            timeline,
            lsn: Lsn::new(lsn),
        }
    }

    #[tokio::test]
    async fn floors_are_an_atomic_max_per_key() {
        let store = MemoryStore::new(Duration::from_secs(60));
        assert_eq!(store.get("k").await.unwrap(), None);
        assert_eq!(store.advance("k", pos(1, 10)).await.unwrap(), pos(1, 10));
        assert_eq!(store.advance("k", pos(1, 5)).await.unwrap(), pos(1, 10));
        assert_eq!(store.advance("k", pos(2, 1)).await.unwrap(), pos(2, 1));
        assert_eq!(store.get("k").await.unwrap(), Some(pos(2, 1)));
        assert_eq!(store.get("other").await.unwrap(), None);
    }

    #[tokio::test]
    async fn floors_expire_after_the_ttl() {
        let store = MemoryStore::new(Duration::from_millis(30));
        store.advance("k", pos(1, 10)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(store.get("k").await.unwrap(), None);
        assert_eq!(store.advance("k", pos(1, 3)).await.unwrap(), pos(1, 3));
    }
}
