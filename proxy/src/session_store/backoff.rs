//! Backing off a failing session store: after an error, calls fail at once (routing to the
//! primary) until a retry time; the wait doubles with each consecutive failure up to a
//! ceiling, and one success closes it. Clients never queue behind a store that is down.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// First wait after a failure.
pub const MIN_WAIT: Duration = Duration::from_millis(50);
/// Longest wait between attempts: how long a recovered store may go unused.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

/// Failure count and retry time of one store.
#[derive(Debug, Default)]
pub struct Backoff {
    state: Mutex<State>,
}

#[derive(Debug, Default, Clone, Copy)]
struct State {
    failures: u32,
    retry_at: Option<Instant>,
}

impl Backoff {
    /// Whether a call may go to the store at `now`.
    pub fn permits(&self, now: Instant) -> bool {
        self.read().retry_at.is_none_or(|at| now >= at)
    }

    /// A call failed at `now`: wait before the next one.
    pub fn failed(&self, now: Instant) {
        let mut state = self.lock();
        state.failures = state.failures.saturating_add(1);
        state.retry_at = Some(now + wait_after(state.failures));
    }

    /// A call succeeded: the store is up.
    pub fn succeeded(&self) {
        let mut state = self.lock();
        if state.failures != 0 {
            *state = State::default();
        }
    }

    /// Consecutive failures so far (0 = up).
    pub fn failures(&self) -> u32 {
        self.read().failures
    }

    fn read(&self) -> State {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two plain fields: a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The wait after `failures` consecutive failures: 50 ms, 100 ms, 200 ms, ... up to 1 s.
pub fn wait_after(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    MIN_WAIT.saturating_mul(1 << doublings).min(MAX_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_ceiling() {
        assert_eq!(wait_after(1), Duration::from_millis(50));
        assert_eq!(wait_after(2), Duration::from_millis(100));
        assert_eq!(wait_after(5), Duration::from_millis(800));
        assert_eq!(wait_after(6), MAX_WAIT);
        assert_eq!(wait_after(u32::MAX), MAX_WAIT);
    }

    #[test]
    fn a_failure_closes_the_store_until_the_retry_time() {
        let backoff = Backoff::default();
        let t0 = Instant::now();
        assert!(backoff.permits(t0));
        backoff.failed(t0);
        assert!(!backoff.permits(t0 + Duration::from_millis(49)));
        assert!(backoff.permits(t0 + Duration::from_millis(50)));
        backoff.failed(t0 + Duration::from_millis(50));
        assert_eq!(backoff.failures(), 2);
        assert!(!backoff.permits(t0 + Duration::from_millis(149)));
        assert!(backoff.permits(t0 + Duration::from_millis(150)));
        backoff.succeeded();
        assert_eq!(backoff.failures(), 0);
        assert!(backoff.permits(t0));
    }
}
