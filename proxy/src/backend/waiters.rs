//! Clients waiting for a server connection of one pool, with when each began, for the
//! admin console's `cl_waiting` and `maxwait`. Touched only on the slow path (a checkout
//! that has to wait), never when a connection is at hand.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    since: BTreeMap<u64, Instant>,
}

/// The waiters of one pool.
#[derive(Debug, Default, Clone)]
pub struct Waiters {
    inner: Arc<Mutex<Inner>>,
}

impl Waiters {
    /// Counts a waiter from now until the guard is dropped.
    pub fn enter(&self) -> Waiting {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let id = inner.next;
        inner.next = inner.next.wrapping_add(1);
        inner.since.insert(id, Instant::now());
        Waiting {
            waiters: self.clone(),
            id,
        }
    }

    /// How many wait now, and how long the longest has waited.
    pub fn snapshot(&self, now: Instant) -> (usize, Duration) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let longest = inner.since.values().next().map_or(Duration::ZERO, |since| {
            now.saturating_duration_since(*since)
        });
        (inner.since.len(), longest)
    }
}

/// One waiter, counted until dropped.
#[derive(Debug)]
pub struct Waiting {
    waiters: Waiters,
    id: u64,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut inner = self
            .waiters
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        inner.since.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_are_counted_until_dropped_and_the_oldest_sets_maxwait() {
        let waiters = Waiters::default();
        assert_eq!(waiters.snapshot(Instant::now()), (0, Duration::ZERO));
        let first = waiters.enter();
        let second = waiters.enter();
        let later = Instant::now() + Duration::from_secs(3);
        let (count, longest) = waiters.snapshot(later);
        assert_eq!(count, 2);
        assert!(longest >= Duration::from_secs(3));
        drop(first);
        drop(second);
        assert_eq!(waiters.snapshot(later).0, 0);
    }
}
