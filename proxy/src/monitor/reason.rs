//! Why a node is out of the pool ([`Reason`]) and where it stands ([`State`]), with the
//! stable snake_case labels used in metrics and `/status`.

use std::fmt;

/// Why a node is not usable. The label ([`Reason::label`]) is a stable metric label value;
/// `Display` is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
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

impl Reason {
    /// Every reason, in a fixed order (for metrics that pre-register label values).
    pub const ALL: [Reason; 9] = [
        Reason::LagBytes,
        Reason::LagSeconds,
        Reason::Paused,
        Reason::NoWalReceiver,
        Reason::Promoted,
        Reason::Unreachable,
        Reason::Stale,
        Reason::TimelineMismatch,
        Reason::InRecovery,
    ];

    /// Stable snake_case label, e.g. `lag_bytes` (the `reason` label of
    /// `causeway_replica_evictions_total`).
    pub const fn label(self) -> &'static str {
        match self {
            Reason::LagBytes => "lag_bytes",
            Reason::LagSeconds => "lag_seconds",
            Reason::Paused => "paused",
            Reason::NoWalReceiver => "no_wal_receiver",
            Reason::Promoted => "promoted",
            Reason::Unreachable => "unreachable",
            Reason::Stale => "stale",
            Reason::TimelineMismatch => "timeline_mismatch",
            Reason::InRecovery => "in_recovery",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::LagBytes => "replay is too many bytes behind the primary (lag.max_bytes)",
            Reason::LagSeconds => "replay is too far behind the primary in time (lag.max_seconds)",
            Reason::Paused => "WAL replay is paused",
            Reason::NoWalReceiver => "no WAL receiver is running (not streaming)",
            Reason::Promoted => "not in recovery (promoted)",
            Reason::Unreachable => "the probe failed",
            Reason::Stale => "no successful sample within lag.stale_after",
            Reason::TimelineMismatch => "streaming a timeline other than the primary's",
            Reason::InRecovery => "the primary is in recovery",
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
    Evicted(Reason),
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
    pub const fn reason(self) -> Option<Reason> {
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
        let labels: Vec<_> = Reason::ALL.iter().map(|r| r.label()).collect();
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
        assert_eq!(State::Evicted(Reason::Paused).label(), "evicted");
        assert_eq!(
            State::Evicted(Reason::Paused).reason(),
            Some(Reason::Paused)
        );
        assert_eq!(State::InPool.to_string(), "in_pool");
        assert!(State::Evicted(Reason::Stale)
            .to_string()
            .contains("stale_after"));
    }
}
