//! The embedded session store: floors in a concurrent map, expired lazily and by a
//! background sweep, capped in entries. A floor the store could not keep is never read as
//! "no floor": while the store refuses new sessions, a session it does not know is unknown
//! (its reads go to the primary), never stale.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use super::{SessionStore, StoreError, StoreFuture, StoreHealth};
use crate::lsn::Position;

/// Most sessions kept (about 100 bytes each plus the key).
pub const MAX_SESSIONS: usize = 1_000_000;

/// Floors of this process's shared sessions.
#[derive(Debug)]
pub struct MemoryStore {
    ttl: Duration,
    capacity: usize,
    floors: DashMap<String, (Position, Instant)>,
    /// When a new session was last refused for lack of room: until a TTL after that, a
    /// session the store does not know may be one it refused.
    refused_at: Mutex<Option<Instant>>,
    refusals: AtomicU64,
}

impl MemoryStore {
    /// An empty store whose entries expire after `ttl` without activity.
    pub fn new(ttl: Duration) -> MemoryStore {
        MemoryStore::with_capacity(ttl, MAX_SESSIONS)
    }

    /// An empty store that keeps at most `capacity` sessions.
    pub fn with_capacity(ttl: Duration, capacity: usize) -> MemoryStore {
        MemoryStore {
            ttl,
            capacity,
            floors: DashMap::new(),
            refused_at: Mutex::new(None),
            refusals: AtomicU64::new(0),
        }
    }

    /// Open a store whose expired entries a named background task sweeps until `stop`
    /// (when called inside a Tokio runtime).
    pub fn open(ttl: Duration, stop: CancellationToken) -> Arc<MemoryStore> {
        let store = Arc::new(MemoryStore::new(ttl));
        let weak = Arc::downgrade(&store);
        let every = (ttl / 4).max(Duration::from_millis(100));
        let span = tracing::info_span!("session-store-sweep");
        // Outside a runtime (a synchronous caller, such as a unit test) expired entries
        // are still ignored when read, and swept when the store is full.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(tracing::Instrument::instrument(
                sweep(weak, every, stop),
                span,
            ));
        }
        store
    }

    fn lookup(&self, key: &str) -> Result<Option<Position>, StoreError> {
        let now = Instant::now();
        match self.floors.get(key).map(|e| *e.value()) {
            Some((floor, touched)) if now.duration_since(touched) < self.ttl => Ok(Some(floor)),
            _ if self.refused_recently(now) => Err(StoreError::Refused("session store full")),
            _ => Ok(None),
        }
    }

    fn raise(&self, key: &str, floor: Position) -> Result<Position, StoreError> {
        let now = Instant::now();
        if !self.floors.contains_key(key) && self.floors.len() >= self.capacity {
            self.sweep(now);
            if self.floors.len() >= self.capacity {
                if let Ok(mut at) = self.refused_at.lock() {
                    *at = Some(now);
                }
                self.refusals.fetch_add(1, Ordering::Relaxed);
                return Err(StoreError::Refused("session store full"));
            }
        }
        let mut entry = self.floors.entry(key.to_owned()).or_insert((floor, now));
        let (current, touched) = entry.value_mut();
        if now.duration_since(*touched) >= self.ttl || floor > *current {
            *current = floor;
        }
        *touched = now;
        Ok(*current)
    }

    fn refused_recently(&self, now: Instant) -> bool {
        self.refused_at
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| now.duration_since(at) < self.ttl)
    }

    fn sweep(&self, now: Instant) {
        self.floors
            .retain(|_, (_, touched)| now.duration_since(*touched) < self.ttl);
    }
}

/// The named sweep task: expired sessions leave the map off the request path.
async fn sweep(store: Weak<MemoryStore>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let Some(store) = store.upgrade() else {
            return;
        };
        store.sweep(Instant::now());
    }
}

impl SessionStore for MemoryStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Position>> {
        Box::pin(std::future::ready(self.lookup(key)))
    }

    fn advance<'a>(&'a self, key: &'a str, floor: Position) -> StoreFuture<'a, Position> {
        Box::pin(std::future::ready(self.raise(key, floor)))
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
    async fn a_full_store_refuses_new_sessions_and_never_reads_as_empty() {
        let store = MemoryStore::with_capacity(Duration::from_secs(60), 2);
        store.advance("a", pos(1, 1)).await.unwrap();
        store.advance("b", pos(1, 2)).await.unwrap();
        assert!(store.advance("c", pos(1, 3)).await.is_err());
        // "c" may be a session it refused: unknown (the primary), not "no floor".
        assert!(store.get("c").await.is_err());
        assert_eq!(store.get("a").await.unwrap(), Some(pos(1, 1)));
        assert_eq!(store.advance("a", pos(1, 9)).await.unwrap(), pos(1, 9));
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
