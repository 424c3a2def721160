//! What one probe of a node returns: [`PrimarySample`] and [`ReplicaSample`]. Plain data,
//! filled in by `probe` and judged by `eviction`.

use crate::lsn::Lsn;

/// One sample of the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PrimarySample {
    /// `pg_is_in_recovery()`: a "primary" in recovery is reported, not trusted.
    pub(crate) in_recovery: bool,
    /// `pg_current_wal_insert_lsn()`, normalized past a page header; `None` in recovery.
    pub(crate) insert_lsn: Option<Lsn>,
    /// The timeline of the current WAL file; `None` in recovery.
    pub(crate) timeline: Option<u32>,
}

/// `pg_get_wal_replay_pause_state()` (PostgreSQL 14+).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum PauseState {
    /// Replay runs (also reported when the node is not in recovery).
    #[default]
    NotPaused,
    /// `pg_wal_replay_pause()` was called; replay stops at the next record.
    PauseRequested,
    /// Replay is paused.
    Paused,
}

impl PauseState {
    /// Parses the function's result (`not paused`, `pause requested`, `paused`); anything
    /// else, e.g. from a newer server, counts as paused (the safe side).
    pub(crate) fn parse(text: &str) -> PauseState {
        match text {
            "not paused" => PauseState::NotPaused,
            "pause requested" => PauseState::PauseRequested,
            _ => PauseState::Paused,
        }
    }

    /// Whether replay is paused or about to pause.
    pub(crate) fn is_paused(self) -> bool {
        !matches!(self, PauseState::NotPaused)
    }
}

/// One sample of a replica, read in one statement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReplicaSample {
    /// `pg_is_in_recovery()`: false once promoted.
    pub(crate) in_recovery: bool,
    /// `pg_last_wal_replay_lsn()`.
    pub(crate) replay_lsn: Option<Lsn>,
    /// `pg_last_wal_receive_lsn()`.
    pub(crate) receive_lsn: Option<Lsn>,
    /// `pg_get_wal_replay_pause_state()`.
    pub(crate) pause: PauseState,
    /// Whether `pg_stat_wal_receiver` has a row (a WAL receiver runs).
    pub(crate) wal_receiver: bool,
    /// `pg_stat_wal_receiver.received_tli`; `None` without a receiver, or when the
    /// monitor's user lacks `pg_read_all_stats` (the server hides the column).
    pub(crate) received_tli: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_states() {
        assert_eq!(PauseState::parse("not paused"), PauseState::NotPaused);
        assert_eq!(
            PauseState::parse("pause requested"),
            PauseState::PauseRequested
        );
        assert_eq!(PauseState::parse("paused"), PauseState::Paused);
        assert_eq!(PauseState::parse("something new"), PauseState::Paused);
        assert!(!PauseState::NotPaused.is_paused());
        assert!(PauseState::PauseRequested.is_paused());
    }
}
