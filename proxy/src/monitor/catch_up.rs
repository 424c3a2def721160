//! Waiting until the replicas have replayed a position: what a request whose raised floor
//! could not be stored in the session store waits for before its client sees ReadyForQuery
//! (DESIGN.md §1 rules 4 and 6). Another Causeway instance reads that session's floor from
//! the store, and a read there could otherwise land on a replica that misses the write.
//!
//! Every replica in the pool must have replayed the position. A replica out of this
//! instance's pool may already be back in another instance's (both judge the same samples,
//! at most a poll interval apart), so for a short settling time those count too.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::topology::{Topology, TopologySnapshot};
use crate::lsn::Lsn;

/// What the waiting loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Every replica that can serve reads has replayed the position.
    Done,
    /// These replicas in the pool are behind (or their position is unknown): sample them.
    Refresh(Vec<Arc<str>>),
    /// Only replicas out of the pool are behind, and the settling time is not over.
    Settle,
}

/// The next step for `lsn`, given the monitor's `snapshot`, the replicas a fresh sample has
/// already shown at or past it (`confirmed`), and whether the settling time still runs.
pub(crate) fn next_step(
    snapshot: &TopologySnapshot,
    lsn: Lsn,
    confirmed: &[Arc<str>],
    settling: bool,
) -> Step {
    let behind = |usable: bool| {
        snapshot
            .replicas()
            .filter(move |r| r.is_usable() == usable)
            .filter(|r| !confirmed.contains(&r.name))
            .filter(move |r| r.replay_lsn.is_none_or(|replay| replay < lsn))
    };
    let refresh: Vec<Arc<str>> = behind(true).map(|r| Arc::clone(&r.name)).collect();
    if !refresh.is_empty() {
        Step::Refresh(refresh)
    } else if settling && behind(false).next().is_some() {
        Step::Settle
    } else {
        Step::Done
    }
}

impl Topology {
    /// Waits until every replica that can serve reads has replayed `lsn`: those in the pool,
    /// and for `settle` also those out of it. Concurrent waiters share the samples they ask
    /// for. Returns false if `deadline` passed first.
    pub async fn wait_replayed(&self, lsn: Lsn, settle: Duration, deadline: Instant) -> bool {
        let settled = Instant::now() + settle;
        let mut confirmed: Vec<Arc<str>> = Vec::new();
        loop {
            let now = Instant::now();
            match next_step(&self.snapshot(), lsn, &confirmed, now < settled) {
                Step::Done => return true,
                _ if now >= deadline => return false,
                Step::Refresh(names) => {
                    let fresh = names.iter().map(|name| async move {
                        let replay = self.refresh_replica(name, deadline).await;
                        (name, replay)
                    });
                    let mut sampled = false;
                    for (name, replay) in futures_util::future::join_all(fresh).await {
                        sampled |= replay.is_some();
                        if replay.is_some_and(|replay| replay >= lsn) {
                            confirmed.push(Arc::clone(name));
                        }
                    }
                    if !sampled {
                        // Probes fail: wait for the monitor instead of asking again at once.
                        tokio::time::sleep_until(deadline.min(now + RETRY_AFTER)).await;
                    }
                }
                Step::Settle => tokio::time::sleep_until(settled.min(deadline)).await,
            }
        }
    }
}

/// Pause between rounds when no replica could be sampled.
const RETRY_AFTER: Duration = Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::history::PrimaryHistory;
    use crate::monitor::reason::{EvictionReason, State};
    use crate::monitor::topology::{NodeStatus, Role};

    fn replica(name: &str, state: State, replay: Option<u64>) -> NodeStatus {
        let mut node = NodeStatus::new(Arc::from(name), Role::Replica, Duration::from_secs(5));
        node.set_state(state);
        node.replay_lsn = replay.map(Lsn::new);
        node.sampled_at = Some(Instant::now());
        node
    }

    fn snapshot(replicas: Vec<NodeStatus>) -> TopologySnapshot {
        let mut nodes = vec![NodeStatus::new(
            Arc::from("primary"),
            Role::Primary,
            Duration::from_secs(5),
        )];
        nodes.extend(replicas);
        TopologySnapshot::clone(&topology(nodes).snapshot())
    }

    fn topology(nodes: Vec<NodeStatus>) -> Topology {
        let names = nodes.iter().map(|n| Arc::clone(&n.name)).collect();
        Topology::new(
            nodes,
            PrimaryHistory::new(Duration::from_secs(5), Duration::from_millis(50)),
            crate::monitor::PrimaryView::new(false, names),
        )
    }

    const AT: Lsn = Lsn::new(100);

    #[test]
    fn replicas_in_the_pool_behind_the_position_are_sampled() {
        let s = snapshot(vec![
            replica("r1", State::InPool, Some(100)),
            replica("r2", State::InPool, Some(99)),
            replica("r3", State::InPool, None),
        ]);
        assert_eq!(
            next_step(&s, AT, &[], true),
            Step::Refresh(vec![Arc::from("r2"), Arc::from("r3")])
        );
        assert_eq!(
            next_step(&s, AT, &[Arc::from("r2")], false),
            Step::Refresh(vec![Arc::from("r3")])
        );
        assert_eq!(
            next_step(&s, AT, &[Arc::from("r2"), Arc::from("r3")], false),
            Step::Done
        );
    }

    #[test]
    fn replicas_out_of_the_pool_count_only_while_settling() {
        let s = snapshot(vec![
            replica("r1", State::InPool, Some(120)),
            replica("r2", State::Evicted(EvictionReason::LagSeconds), Some(10)),
            replica("r3", State::Unknown, None),
        ]);
        assert_eq!(next_step(&s, AT, &[], true), Step::Settle);
        assert_eq!(next_step(&s, AT, &[], false), Step::Done);
        let caught_up = snapshot(vec![replica(
            "r2",
            State::Evicted(EvictionReason::Paused),
            Some(100),
        )]);
        assert_eq!(next_step(&caught_up, AT, &[], true), Step::Done);
    }

    #[test]
    fn no_replicas_means_nothing_to_wait_for() {
        assert_eq!(next_step(&snapshot(vec![]), AT, &[], true), Step::Done);
    }

    #[tokio::test]
    async fn the_wait_ends_at_the_deadline_when_samples_fail() {
        let topology = topology(vec![replica("r1", State::InPool, Some(1))]);
        let started = Instant::now();
        let deadline = started + Duration::from_millis(100);
        assert!(
            !topology
                .wait_replayed(AT, Duration::from_millis(50), deadline)
                .await
        );
        assert!(Instant::now() >= deadline);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
