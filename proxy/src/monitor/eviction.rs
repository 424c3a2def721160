//! The eviction state machine of one node: pure, driven by samples, failures and the
//! clock, so it is tested with synthetic inputs and explicit instants.
//!
//! - [`judge`] turns a replica sample (plus its lag) into a [`Verdict`].
//! - [`Eviction`] keeps the [`State`]: evict at once on a bad verdict or a failed probe;
//!   readmit only after the replica stayed under `lag.readmit_fraction` × both limits and
//!   healthy for `lag.readmit_after` without interruption (hysteresis); drop out of the
//!   pool as `stale` when no sample succeeded for `lag.stale_after`.

#[cfg(test)]
mod tests;

use std::time::Duration;

use tokio::time::Instant;

use super::history::Lag;
use super::reason::{EvictionReason, State};
use super::sample::ReplicaSample;
use crate::config::LagConfig;

/// The `[lag]` limits the state machine applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Limits {
    pub(crate) max_bytes: u64,
    pub(crate) max_seconds: Duration,
    pub(crate) readmit_fraction: f64,
    pub(crate) readmit_after: Duration,
    pub(crate) stale_after: Duration,
}

impl Limits {
    /// The limits for replicas, from `[lag]`.
    pub(crate) fn replica(lag: &LagConfig) -> Limits {
        Limits {
            max_bytes: lag.max_bytes,
            max_seconds: lag.max_seconds,
            readmit_fraction: lag.readmit_fraction,
            readmit_after: lag.readmit_after,
            stale_after: lag.stale_after,
        }
    }

    /// The limits for the primary: no lag limits and no hysteresis (it is trusted again
    /// as soon as a sample succeeds), but the same staleness rule.
    pub(crate) fn primary(lag: &LagConfig) -> Limits {
        Limits {
            max_bytes: u64::MAX,
            max_seconds: Duration::MAX,
            readmit_fraction: 1.0,
            readmit_after: Duration::ZERO,
            stale_after: lag.stale_after,
        }
    }

    /// The lag limit `lag` exceeds, if any (bytes first).
    fn exceeded(&self, lag: Lag) -> Option<EvictionReason> {
        if lag.bytes > self.max_bytes {
            Some(EvictionReason::LagBytes)
        } else if lag.seconds > self.max_seconds {
            Some(EvictionReason::LagSeconds)
        } else {
            None
        }
    }

    /// The lag that keeps an evicted replica out: above `readmit_fraction` of a limit.
    fn above_readmit(&self, lag: Lag) -> Option<EvictionReason> {
        // Precision loss in the casts is irrelevant at these magnitudes.
        let byte_limit = self.max_bytes as f64 * self.readmit_fraction;
        let bytes = lag.bytes as f64;
        let second_limit = self.max_seconds.as_secs_f64() * self.readmit_fraction;
        if bytes > byte_limit {
            Some(EvictionReason::LagBytes)
        } else if lag.seconds.as_secs_f64() > second_limit {
            Some(EvictionReason::LagSeconds)
        } else {
            None
        }
    }
}

/// What one successful sample says about a node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Verdict {
    /// Usable, with this lag.
    Healthy(Lag),
    /// Not usable, for this reason.
    Unhealthy(EvictionReason),
    /// Cannot tell yet: no primary sample to measure lag against.
    Undetermined,
}

/// Judges a replica sample. Checks run in order of severity: promoted, timeline mismatch,
/// paused, no WAL receiver, then the lag limits.
///
/// `primary_timeline` is the primary's latest timeline; `lag` is `None` before the first
/// primary sample. A timeline is compared only when both sides are known (the server hides
/// `received_tli` from users without `pg_read_all_stats`).
pub(crate) fn judge(
    sample: &ReplicaSample,
    primary_timeline: Option<u32>,
    lag: Option<Lag>,
    limits: &Limits,
) -> Verdict {
    if !sample.in_recovery {
        return Verdict::Unhealthy(EvictionReason::Promoted);
    }
    if let (Some(replica), Some(primary)) = (sample.received_tli, primary_timeline) {
        if replica != primary {
            return Verdict::Unhealthy(EvictionReason::TimelineMismatch);
        }
    }
    if sample.pause.is_paused() {
        return Verdict::Unhealthy(EvictionReason::Paused);
    }
    if !sample.wal_receiver {
        return Verdict::Unhealthy(EvictionReason::NoWalReceiver);
    }
    if sample.replay_lsn.is_none() {
        // A hot standby always has a replay position; without one nothing can be promised.
        return Verdict::Unhealthy(EvictionReason::Stale);
    }
    match lag {
        None => Verdict::Undetermined,
        Some(lag) => match limits.exceeded(lag) {
            Some(reason) => Verdict::Unhealthy(reason),
            None => Verdict::Healthy(lag),
        },
    }
}

/// A change of [`State`], to be logged and (for evictions) counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    pub(crate) from: State,
    pub(crate) to: State,
}

impl Transition {
    /// Whether the node left the pool (or never joined it) for a reason: what
    /// `causeway_replica_evictions_total` counts. A change of reason while already evicted
    /// is logged but is not a new eviction.
    pub(crate) fn is_eviction(&self) -> bool {
        matches!(self.to, State::Evicted(_)) && !matches!(self.from, State::Evicted(_))
    }
}

/// The state machine of one node.
#[derive(Debug, Clone)]
pub(crate) struct Eviction {
    limits: Limits,
    state: State,
    /// When the last successful sample completed.
    last_success: Option<Instant>,
    /// Since when an evicted node has been healthy and under the readmit limits.
    clean_since: Option<Instant>,
}

impl Eviction {
    /// A node not sampled yet: [`State::Unknown`].
    pub(crate) fn new(limits: Limits) -> Eviction {
        Eviction {
            limits,
            state: State::Unknown,
            last_success: None,
            clean_since: None,
        }
    }

    /// A reload changed `[lag]`: the next sample is judged by `limits`. The state stays
    /// (a replica in the pool is evicted by the next sample over a lower limit; an evicted
    /// one is readmitted as usual, after `readmit_after` under the new readmit limits).
    pub(crate) fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The limits samples are judged by now.
    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// The current state.
    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// A sample completed at `at` with this verdict.
    pub(crate) fn on_sample(&mut self, at: Instant, verdict: Verdict) -> Option<Transition> {
        self.last_success = Some(at);
        match verdict {
            Verdict::Undetermined => None,
            Verdict::Unhealthy(reason) => self.evict(reason),
            Verdict::Healthy(lag) => self.on_healthy(at, lag),
        }
    }

    /// A probe failed at `at` (no connection, an error, a timeout).
    pub(crate) fn on_failure(&mut self, _at: Instant) -> Option<Transition> {
        self.evict(EvictionReason::Unreachable)
    }

    /// When the node goes stale unless a sample succeeds first; `None` unless in the pool.
    pub(crate) fn stale_deadline(&self) -> Option<Instant> {
        match (self.state, self.last_success) {
            (State::InPool, Some(last)) => Some(last + self.limits.stale_after),
            _ => None,
        }
    }

    /// The clock reached `now`: a node in the pool whose last success is `stale_after` old
    /// is evicted as stale.
    pub(crate) fn on_tick(&mut self, now: Instant) -> Option<Transition> {
        match self.stale_deadline() {
            Some(deadline) if now >= deadline => self.evict(EvictionReason::Stale),
            _ => None,
        }
    }

    fn on_healthy(&mut self, at: Instant, lag: Lag) -> Option<Transition> {
        match self.state {
            State::InPool => None,
            // First contact: nothing to debounce yet.
            State::Unknown => self.set(State::InPool),
            State::Evicted(reason) => match self.limits.above_readmit(lag) {
                Some(blocking) => {
                    self.clean_since = None;
                    if blocking == reason {
                        None
                    } else {
                        self.set(State::Evicted(blocking))
                    }
                }
                None => {
                    let since = *self.clean_since.get_or_insert(at);
                    if at.saturating_duration_since(since) >= self.limits.readmit_after {
                        self.set(State::InPool)
                    } else {
                        None
                    }
                }
            },
        }
    }

    fn evict(&mut self, reason: EvictionReason) -> Option<Transition> {
        self.clean_since = None;
        self.set(State::Evicted(reason))
    }

    fn set(&mut self, to: State) -> Option<Transition> {
        if to == self.state {
            return None;
        }
        if to == State::InPool {
            self.clean_since = None;
        }
        let from = std::mem::replace(&mut self.state, to);
        Some(Transition { from, to })
    }
}
