//! Whether floors stored in Redis can be trusted after a failure. A slow answer loses
//! nothing. A broken connection may mean Redis restarted empty or failed over to a replica
//! that missed the last floors; a server with another `run_id` than before certainly is not
//! the one that stored them. Either way stored floors are distrusted (reads go to the
//! primary) for a grace period, after which every replica still in the pool has replayed
//! what a lost floor covered. A break after which the same server answers lost nothing.
//! Pure bookkeeping: the store does the I/O.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Outage state of one store.
#[derive(Debug)]
pub struct Outage {
    grace: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The connection broke since the last success.
    broken: bool,
    /// Stored floors are not trusted before this, and why.
    distrust: Option<(Instant, Cause)>,
    /// The identity (`run_id`) of the server whose floors are trusted, when known.
    server_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The connection broke: cleared if the same server answers afterwards.
    Break,
    /// Another server answers now: floors stored before are gone for sure.
    NewServer,
}

impl Outage {
    /// `grace`: how long a lost floor can matter.
    pub fn new(grace: Duration) -> Outage {
        Outage {
            grace,
            state: Mutex::new(State::default()),
        }
    }

    /// The connection broke or could not be made.
    pub fn connection_broke(&self) {
        self.lock().broken = true;
    }

    /// The first success after failures, at `now`: after a break, distrust stored floors
    /// for the grace period, or until the server's identity shows it is the same one.
    pub fn recovered(&self, now: Instant) {
        let mut state = self.lock();
        if std::mem::take(&mut state.broken)
            && !matches!(state.distrust, Some((_, Cause::NewServer)))
        {
            state.distrust = Some((now + self.grace, Cause::Break));
        }
    }

    /// The server answers as `id` at `now` (`None`: unknown, as in a cluster).
    pub fn identified(&self, id: Option<String>, now: Instant) {
        let mut state = self.lock();
        let Some(id) = id else { return };
        match &state.server_id {
            Some(previous) if *previous == id => {
                if matches!(state.distrust, Some((_, Cause::Break))) {
                    state.distrust = None;
                }
                state.broken = false;
            }
            Some(_) => {
                state.distrust = Some((now + self.grace, Cause::NewServer));
                state.server_id = Some(id);
            }
            None => state.server_id = Some(id),
        }
    }

    /// Whether stored floors are distrusted at `now`.
    pub fn distrusted(&self, now: Instant) -> bool {
        let mut state = self.lock();
        match state.distrust {
            Some((until, _)) if now < until => true,
            Some(_) => {
                state.distrust = None;
                false
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain fields: a panic elsewhere cannot leave them inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(6);

    fn id(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn a_slow_store_is_trusted_as_soon_as_it_answers() {
        let outage = Outage::new(GRACE);
        let now = Instant::now();
        outage.identified(id("a"), now);
        outage.recovered(now);
        assert!(!outage.distrusted(now));
    }

    #[test]
    fn a_break_distrusts_floors_for_the_grace_period() {
        let outage = Outage::new(GRACE);
        let now = Instant::now();
        outage.connection_broke();
        outage.recovered(now);
        assert!(outage.distrusted(now + GRACE - Duration::from_millis(1)));
        // An unknown identity (a cluster) proves nothing.
        outage.identified(None, now);
        assert!(outage.distrusted(now));
        assert!(!outage.distrusted(now + GRACE));
        outage.recovered(now + GRACE);
        assert!(
            !outage.distrusted(now + GRACE),
            "the break was answered for"
        );
    }

    #[test]
    fn the_same_server_after_a_break_lost_nothing() {
        let outage = Outage::new(GRACE);
        let now = Instant::now();
        outage.identified(id("a"), now);
        outage.connection_broke();
        outage.recovered(now);
        assert!(outage.distrusted(now));
        outage.identified(id("a"), now);
        assert!(!outage.distrusted(now), "a network blip loses nothing");
        // Reconnected to the same server before any call succeeded: nothing to distrust.
        outage.connection_broke();
        outage.identified(id("a"), now);
        outage.recovered(now);
        assert!(!outage.distrusted(now));
    }

    #[test]
    fn a_restarted_or_failed_over_server_keeps_the_grace_period() {
        let outage = Outage::new(GRACE);
        let now = Instant::now();
        outage.identified(id("a"), now);
        outage.connection_broke();
        // Reconnected (to a new process) before the first successful call.
        outage.identified(id("b"), now);
        outage.recovered(now);
        outage.identified(id("b"), now);
        assert!(outage.distrusted(now), "b's floors are not a's");
        assert!(!outage.distrusted(now + GRACE));
        // b is the reference from now on.
        outage.connection_broke();
        outage.recovered(now + GRACE);
        outage.identified(id("b"), now + GRACE);
        assert!(!outage.distrusted(now + GRACE));
    }
}
