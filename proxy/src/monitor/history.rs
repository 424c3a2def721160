//! The recent history of the primary's WAL position: a bounded ring of (time, LSN) samples
//! from which a replica's lag in seconds is read, as the walsender does for `replay_lag`.
//!
//! `lag_seconds` = now − the time of the oldest retained sample whose LSN is beyond the
//! replica's replay LSN. It is 0 when the replica has replayed the latest sample, so an
//! idle primary never looks lagging (unlike `now() - pg_last_xact_replay_timestamp()`),
//! and it keeps growing while replay is stuck, even when the primary goes idle afterwards.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::lsn::Lsn;

/// The shortest history kept, whatever `lag.max_seconds` is.
const MIN_HORIZON: Duration = Duration::from_secs(60);

/// Upper bound on retained samples, whatever the poll interval.
const MAX_SAMPLES: usize = 1 << 20;

/// Primary samples, oldest first, with strictly increasing LSNs.
#[derive(Debug)]
pub(crate) struct PrimaryHistory {
    samples: VecDeque<Sample>,
    horizon: Duration,
    capacity: usize,
    /// The primary's timeline at its latest trusted sample.
    timeline: Option<u32>,
}

/// The primary was at `lsn` at time `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    at: Instant,
    lsn: Lsn,
}

impl PrimaryHistory {
    /// A history long enough to measure lag up to twice `max_seconds` (at least
    /// [`MIN_HORIZON`]), at the granularity of `poll_interval`.
    pub(crate) fn new(max_seconds: Duration, poll_interval: Duration) -> PrimaryHistory {
        let (horizon, capacity) = bounds(max_seconds, poll_interval);
        PrimaryHistory {
            samples: VecDeque::new(),
            horizon,
            capacity,
            timeline: None,
        }
    }

    /// A reload changed `lag.max_seconds` or `lag.poll_interval`: keep the history they
    /// need from now on (a longer one fills as samples come).
    pub(crate) fn set_limits(&mut self, max_seconds: Duration, poll_interval: Duration) {
        (self.horizon, self.capacity) = bounds(max_seconds, poll_interval);
        while self.samples.len() > self.capacity {
            self.samples.pop_front();
        }
    }

    /// Notes the primary's current timeline. LSNs continue across a timeline switch, so the
    /// samples stay valid.
    /// A new timeline (a promotion) starts the history over: positions of the old one are
    /// not comparable.
    pub(crate) fn set_timeline(&mut self, timeline: u32) {
        if self.timeline.is_some_and(|old| old != timeline) {
            self.samples.clear();
        }
        self.timeline = Some(timeline);
    }

    /// The primary's timeline at its latest trusted sample.
    pub(crate) fn timeline(&self) -> Option<u32> {
        self.timeline
    }

    /// Records that the primary was at `lsn` at `at`.
    ///
    /// An LSN equal to the latest one is coalesced (the earlier time is the one that
    /// matters). An LSN below the latest one means the primary is another server now (or
    /// went back): the history restarts, and `true` is returned.
    pub(crate) fn record(&mut self, at: Instant, lsn: Lsn) -> bool {
        let restarted = match self.samples.back() {
            Some(last) if lsn == last.lsn || at < last.at => return false,
            Some(last) if lsn < last.lsn => {
                self.samples.clear();
                true
            }
            _ => false,
        };
        self.samples.push_back(Sample { at, lsn });
        self.prune(at);
        restarted
    }

    /// The latest LSN the primary was seen at.
    pub(crate) fn latest(&self) -> Option<Lsn> {
        self.samples.back().map(|s| s.lsn)
    }

    /// When the primary was last seen short of `lsn`: whatever wrote `lsn` happened after
    /// then. `None` when no retained sample is short of it (an old position).
    pub(crate) fn last_short_of(&self, lsn: Lsn) -> Option<Instant> {
        let short = self.samples.partition_point(|s| s.lsn < lsn);
        short
            .checked_sub(1)
            .and_then(|i| self.samples.get(i))
            .map(|s| s.at)
    }

    /// Bytes and time by which `replay` trails the primary, as of `now`; `None` before the
    /// first primary sample.
    pub(crate) fn lag(&self, replay: Lsn, now: Instant) -> Option<Lag> {
        let latest = self.latest()?;
        let first_ahead = self.samples.partition_point(|s| s.lsn <= replay);
        let seconds = match self.samples.get(first_ahead) {
            Some(sample) => now.saturating_duration_since(sample.at),
            None => Duration::ZERO,
        };
        Some(Lag {
            bytes: latest.bytes_since(replay),
            seconds,
        })
    }

    /// Drops samples that no lag measurement needs. The front sample goes only once the
    /// one after it is also older than the horizon: a replica behind the front then still
    /// reads a lag of at least the horizon (more than `max_seconds`), never a small one.
    fn prune(&mut self, now: Instant) {
        while self.samples.len() >= 2
            && self
                .samples
                .get(1)
                .is_some_and(|next| now.saturating_duration_since(next.at) >= self.horizon)
        {
            self.samples.pop_front();
        }
        while self.samples.len() > self.capacity {
            self.samples.pop_front();
        }
    }
}

/// The horizon and sample capacity of a history for these limits.
fn bounds(max_seconds: Duration, poll_interval: Duration) -> (Duration, usize) {
    let horizon = max_seconds.saturating_mul(2).max(MIN_HORIZON);
    let per_horizon = horizon.as_nanos() / poll_interval.as_nanos().max(1);
    // Twice the expected count: on-demand probes may come faster than the interval.
    let capacity = usize::try_from(per_horizon.saturating_mul(2).saturating_add(4))
        .unwrap_or(MAX_SAMPLES)
        .min(MAX_SAMPLES);
    (horizon, capacity)
}

/// How far a replica trails the primary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Lag {
    /// Primary LSN − replay LSN, 0 if the replica is ahead of the last primary sample.
    pub(crate) bytes: u64,
    /// How long ago the primary was first seen beyond the replay LSN; 0 when caught up.
    pub(crate) seconds: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_sample_short_of_a_position_bounds_when_it_was_written() {
        let start = Instant::now();
        let mut history = PrimaryHistory::new(Duration::from_secs(5), ms(50));
        history.record(start, Lsn::new(100));
        history.record(start + ms(50), Lsn::new(200));
        assert_eq!(history.last_short_of(Lsn::new(100)), None);
        assert_eq!(history.last_short_of(Lsn::new(150)), Some(start));
        assert_eq!(history.last_short_of(Lsn::new(900)), Some(start + ms(50)));
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn lsn(n: u64) -> Lsn {
        Lsn::new(n)
    }

    /// A history with samples (ms after `t0`, LSN).
    fn history(t0: Instant, samples: &[(u64, u64)]) -> PrimaryHistory {
        let mut h = PrimaryHistory::new(Duration::from_secs(5), ms(50));
        for &(at, l) in samples {
            h.record(t0 + ms(at), lsn(l));
        }
        h
    }

    #[test]
    fn lag_table() {
        let t0 = Instant::now();
        // The primary moves at 0, 100, 200 ms, then stays idle at 300.
        let h = history(
            t0,
            &[(0, 100), (100, 200), (200, 300), (300, 300), (400, 300)],
        );
        let cases = [
            // (replay, now in ms, bytes, seconds in ms)
            (300, 400, 0, 0),         // caught up: no lag while the primary is idle
            (350, 400, 0, 0),         // ahead of the last sample (sampled later): no lag
            (299, 400, 1, 200),       // behind the sample taken at 200 ms
            (200, 400, 100, 200),     // equal LSN is not behind it
            (150, 400, 150, 300),     // behind the 100 ms sample
            (0, 400, 300, 400),       // behind everything
            (150, 10_000, 150, 9900), // stuck replay keeps growing with an idle primary
            (150, 50, 150, 0),        // a replica sampled before the primary: never negative
        ];
        for (replay, now, bytes, seconds) in cases {
            let got = h.lag(lsn(replay), t0 + ms(now)).unwrap_or_default();
            assert_eq!(
                got,
                Lag {
                    bytes,
                    seconds: ms(seconds)
                },
                "replay {replay} at {now} ms"
            );
        }
    }

    #[test]
    fn no_lag_before_the_first_primary_sample() {
        let h = PrimaryHistory::new(Duration::from_secs(5), ms(50));
        assert_eq!(h.lag(lsn(5), Instant::now()), None);
        assert_eq!(h.latest(), None);
    }

    #[test]
    fn equal_lsns_coalesce_to_the_first_time() {
        let t0 = Instant::now();
        let h = history(t0, &[(0, 100), (50, 100), (100, 100), (150, 200)]);
        assert_eq!(h.samples.len(), 2);
        assert_eq!(
            h.lag(lsn(99), t0 + ms(150)).map(|l| l.seconds),
            Some(ms(150))
        );
    }

    #[test]
    fn a_primary_that_goes_back_restarts_the_history() {
        let t0 = Instant::now();
        let mut h = history(t0, &[(0, 100), (50, 200)]);
        assert!(h.record(t0 + ms(100), lsn(50)));
        assert_eq!(h.samples.len(), 1);
        assert_eq!(h.latest(), Some(lsn(50)));
    }

    #[test]
    fn pruning_keeps_old_lag_large() {
        let t0 = Instant::now();
        let mut h = PrimaryHistory::new(Duration::from_secs(1), ms(50)); // horizon 60 s
        h.record(t0, lsn(100));
        h.record(t0 + Duration::from_secs(100), lsn(200));
        // The first sample stays: dropping it would make a replica at 50 look 0 s behind.
        assert_eq!(h.samples.len(), 2);
        h.record(t0 + Duration::from_secs(170), lsn(300));
        // Now the 100 s sample is past the horizon too, so the first can go.
        assert_eq!(h.samples.len(), 2);
        let lag = h.lag(lsn(50), t0 + Duration::from_secs(170));
        assert!(lag.is_some_and(|l| l.seconds >= Duration::from_secs(60)));
    }

    #[test]
    fn capacity_bounds_memory() {
        let t0 = Instant::now();
        let mut h = PrimaryHistory::new(Duration::from_secs(1), Duration::from_secs(10));
        for i in 0..100 {
            h.record(t0 + ms(i), lsn(i + 1));
        }
        assert_eq!(h.samples.len(), h.capacity);
        assert!(h.capacity < 100);
    }
}
