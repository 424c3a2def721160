//! Why a node is out of the pool ([`EvictionReason`]) and where it stands ([`State`]), with
//! the stable snake_case labels used in metrics and `/status`.

use std::fmt;

/// Why a node is not usable. The label ([`EvictionReason::label`]) is a stable metric label
/// value; `Display` is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EvictionReason {
    /// Replay is more than `lag.max_bytes` behind the primary.
    LagBytes,
    /// Replay is more than `lag.max_seconds` behind the primary.
    LagSeconds,
    /// Replay is paused, or a pause was requested.
    Paused,
    /// No WAL receiver is running: the replica is not streaming.
    NoWalReceiver,
    /// The replica is no longer in recovery: it was promoted.
    Promoted,
    /// The last probe failed: no connection, an error, or no answer within
    /// `lag.probe_timeout`.
    Unreachable,
    /// No successful sample for `lag.stale_after`.
    Stale,
    /// The replica streams a timeline other than the primary's.
    TimelineMismatch,
    /// The primary node is in recovery (a standby): its positions are not trusted.
    InRecovery,
}

impl EvictionReason {
    /// Every reason, in a fixed order (for metrics that pre-register label values).
    pub const ALL: [EvictionReason; 9] = [
        EvictionReason::LagBytes,
        EvictionReason::LagSeconds,
        EvictionReason::Paused,
        EvictionReason::NoWalReceiver,
        EvictionReason::Promoted,
        EvictionReason::Unreachable,
        EvictionReason::Stale,
        EvictionReason::TimelineMismatch,
        EvictionReason::InRecovery,
    ];

    /// Stable snake_case label, e.g. `lag_bytes` (the `reason` label of
    /// `causeway_replica_evictions_total`).
    pub const fn label(self) -> &'static str {
        match self {
            EvictionReason::LagBytes => "lag_bytes",
            EvictionReason::LagSeconds => "lag_seconds",
            EvictionReason::Paused => "paused",
            EvictionReason::NoWalReceiver => "no_wal_receiver",
            EvictionReason::Promoted => "promoted",
            EvictionReason::Unreachable => "unreachable",
            EvictionReason::Stale => "stale",
            EvictionReason::TimelineMismatch => "timeline_mismatch",
            EvictionReason::InRecovery => "in_recovery",
        }
    }
}

impl fmt::Display for EvictionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EvictionReason::LagBytes => {
                "replay is too many bytes behind the primary (lag.max_bytes)"
            }
            EvictionReason::LagSeconds => {
                "replay is too far behind the primary in time (lag.max_seconds)"
            }
            EvictionReason::Paused => "WAL replay is paused",
            EvictionReason::NoWalReceiver => "no WAL receiver is running (not streaming)",
            EvictionReason::Promoted => "not in recovery (promoted)",
            EvictionReason::Unreachable => "the probe failed",
            EvictionReason::Stale => "no successful sample within lag.stale_after",
            EvictionReason::TimelineMismatch => "streaming a timeline other than the primary's",
            EvictionReason::InRecovery => "the primary is in recovery",
        })
    }
}

/// Where a node stands. Only [`State::InPool`] may serve reads (replicas) or be trusted as
/// the source of LSNs (the primary).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum State {
    /// Not sampled successfully yet: not usable.
    #[default]
    Unknown,
    /// Healthy and within the lag limits.
    InPool,
    /// Out of the pool, for this reason.
    Evicted(EvictionReason),
}

impl State {
    /// Stable snake_case label: `unknown`, `in_pool` or `evicted`.
    pub const fn label(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::InPool => "in_pool",
            State::Evicted(_) => "evicted",
        }
    }

    /// The eviction reason, if evicted.
    pub const fn reason(self) -> Option<EvictionReason> {
        match self {
            State::Evicted(reason) => Some(reason),
            State::Unknown | State::InPool => None,
        }
    }

    /// Whether the node is in the pool.
    pub const fn in_pool(self) -> bool {
        matches!(self, State::InPool)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Evicted(reason) => write!(f, "evicted: {reason}"),
            State::Unknown | State::InPool => f.write_str(self.label()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stable_snake_case_and_unique() {
        let labels: Vec<_> = EvictionReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(
            labels,
            [
                "lag_bytes",
                "lag_seconds",
                "paused",
                "no_wal_receiver",
                "promoted",
                "unreachable",
                "stale",
                "timeline_mismatch",
                "in_recovery"
            ]
        );
        assert_eq!(State::Evicted(EvictionReason::Paused).label(), "evicted");
        assert_eq!(
            State::Evicted(EvictionReason::Paused).reason(),
            Some(EvictionReason::Paused)
        );
        assert_eq!(State::InPool.to_string(), "in_pool");
        assert!(State::Evicted(EvictionReason::Stale)
            .to_string()
            .contains("stale_after"));
    }
}
