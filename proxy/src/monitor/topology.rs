//! [`Topology`]: the cheap shared handle through which the router reads what the monitor
//! knows (a [`TopologySnapshot`] per statement), asks for a fresh replica sample while a
//! read waits for its floor, and reads eviction counts.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::history::PrimaryHistory;
use super::primary::PrimaryView;
use super::reason::{EvictionReason, State};
use crate::lsn::{Lsn, Position};

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The node that takes writes (node name `primary`).
    Primary,
    /// A streaming replica.
    Replica,
}

impl Role {
    /// `primary` or `replica`.
    pub const fn label(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// What the monitor knows about one node, as of its last probe.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// Node name (`primary`, or the replica's configured name).
    pub name: Arc<str>,
    /// Primary or replica.
    pub role: Role,
    /// In the pool, evicted (with a reason) or unknown.
    pub state: State,
    /// Why the node is evicted, if it is.
    pub reason: Option<EvictionReason>,
    /// `state == InPool` at the last probe; see [`NodeStatus::is_usable`], which also
    /// applies `lag.stale_after` at the time of the call.
    pub in_pool: bool,
    /// Primary: timeline of its current WAL. Replica: `received_tli` of its WAL receiver,
    /// when the monitor's user may see it (`pg_read_all_stats`).
    pub timeline: Option<u32>,
    /// Primary: `pg_current_wal_insert_lsn()`, normalized past a page header.
    pub insert_lsn: Option<Lsn>,
    /// Replica: `pg_last_wal_replay_lsn()`, a lower bound of what a read there sees.
    pub replay_lsn: Option<Lsn>,
    /// Replica: `pg_last_wal_receive_lsn()`.
    pub receive_lsn: Option<Lsn>,
    /// Replica: primary insert LSN − replay LSN (0 when ahead of the last primary sample).
    pub lag_bytes: Option<u64>,
    /// Replica: how long ago the primary was first seen beyond the replay LSN.
    pub lag_seconds: Option<Duration>,
    /// Replica: replay paused or a pause requested.
    pub paused: bool,
    /// `pg_is_in_recovery()` at the last successful sample.
    pub in_recovery: Option<bool>,
    /// Replica: whether a WAL receiver runs.
    pub wal_receiver: Option<bool>,
    /// When the last successful sample completed.
    pub sampled_at: Option<Instant>,
    /// The last probe error, cleared by the next success.
    pub last_error: Option<Arc<str>>,
    stale_after: Duration,
    /// Identifies the node's monitor task for as long as the node is configured (a node
    /// removed and added again by a reload gets a new one).
    pub(crate) id: u64,
    /// The plumbing between this node's monitor task and the readers.
    pub(crate) probes: Arc<Probes>,
}

impl NodeStatus {
    /// A node that has not been sampled yet.
    pub(crate) fn new(name: Arc<str>, role: Role, stale_after: Duration) -> NodeStatus {
        NodeStatus {
            name,
            role,
            state: State::Unknown,
            reason: None,
            in_pool: false,
            timeline: None,
            insert_lsn: None,
            replay_lsn: None,
            receive_lsn: None,
            lag_bytes: None,
            lag_seconds: None,
            paused: false,
            in_recovery: None,
            wal_receiver: None,
            sampled_at: None,
            last_error: None,
            stale_after,
            id: 0,
            probes: Arc::new(Probes::default()),
        }
    }

    /// Sets the state (and the derived `reason` and `in_pool`).
    pub(crate) fn set_state(&mut self, state: State) {
        self.state = state;
        self.reason = state.reason();
        self.in_pool = state.in_pool();
    }

    /// `lag.stale_after`: how old a sample may be before the node counts as unknown.
    pub(crate) fn stale_after(&self) -> Duration {
        self.stale_after
    }

    /// A reload changed `lag.stale_after`.
    pub(crate) fn set_stale_after(&mut self, stale_after: Duration) {
        self.stale_after = stale_after;
    }

    /// Time since the last successful sample, now.
    pub fn last_sample_age(&self) -> Option<Duration> {
        self.sampled_at.map(|at| at.elapsed())
    }

    /// In the pool, and the last successful sample is younger than `lag.stale_after`: the
    /// check the router should use (a hung monitor must not keep a replica usable).
    pub fn is_usable(&self) -> bool {
        self.is_usable_at(Instant::now())
    }

    /// [`NodeStatus::is_usable`] as of `now` (one clock read for several nodes).
    pub fn is_usable_at(&self, now: Instant) -> bool {
        self.in_pool
            && self
                .sampled_at
                .is_some_and(|at| now.saturating_duration_since(at) < self.stale_after)
    }

    /// The node's position: the primary's insert LSN or a replica's replay LSN, on the
    /// node's timeline (`None` when either is unknown).
    pub fn position(&self) -> Option<Position> {
        let acting_primary = match self.in_recovery {
            Some(in_recovery) => !in_recovery,
            None => self.role == Role::Primary,
        };
        let lsn = if acting_primary {
            self.insert_lsn
        } else {
            self.replay_lsn
        }?;
        Some(Position {
            timeline: self.timeline?,
            lsn,
        })
    }
}

/// Every node's status at one moment: the primary first, then the replicas in config order.
#[derive(Debug, Clone)]
pub struct TopologySnapshot {
    nodes: Vec<NodeStatus>,
    /// Index of the primary (the last one elected, even while it is unreachable).
    primary: usize,
}

impl TopologySnapshot {
    /// Every node, primary first.
    pub fn nodes(&self) -> &[NodeStatus] {
        &self.nodes
    }

    /// The primary's status: `[primary]`, or with `failover.mode = "follow"` the node
    /// elected last (see [`PrimaryView`]).
    pub fn primary(&self) -> Option<&NodeStatus> {
        self.nodes.get(self.primary)
    }

    /// The replicas' statuses, in config order.
    pub fn replicas(&self) -> impl Iterator<Item = &NodeStatus> {
        self.nodes.iter().filter(|n| n.role == Role::Replica)
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&NodeStatus> {
        self.nodes.iter().find(|n| &*n.name == name)
    }
}

/// See [`Topology::replay_sampled_after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampled {
    /// The replay LSN of a probe that started after the given time.
    Replay(Lsn),
    /// No such probe has finished yet.
    NotYet,
    /// The node was reconnected since (it may have restarted), or is not a known replica.
    Unknown,
}

/// The latest probe of one node, for on-demand refreshes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProbeMark {
    /// When the probe started.
    pub(crate) started: Option<Instant>,
    /// Its replay LSN, if it succeeded (replicas).
    pub(crate) replay_lsn: Option<Lsn>,
    /// Its insert position, if it succeeded on a node out of recovery (the primary).
    pub(crate) insert: Option<Position>,
    /// Which control connection took it (see [`Probes::connections`]).
    pub(crate) connection: u64,
}

/// Per-node plumbing between the topology and the node's monitor task.
#[derive(Debug)]
pub(crate) struct Probes {
    /// Set when the node is removed by a reload: its task stops.
    pub(crate) removed: tokio_util::sync::CancellationToken,
    /// Set when the node's task starts (at most one per node, whoever starts it).
    pub(crate) started: std::sync::atomic::AtomicBool,
    /// Wakes the task for an early probe; one stored permit serves every waiting caller.
    pub(crate) wake: Notify,
    /// A caller waits for the next probe (a read's refresh): it starts at once, without
    /// the spacing of early probes that nobody waits for.
    pub(crate) urgent: std::sync::atomic::AtomicBool,
    /// The latest finished probe.
    pub(crate) latest: watch::Sender<ProbeMark>,
    /// Probes started so far.
    pub(crate) count: AtomicU64,
    /// Control connections opened so far: a new one means the node may have restarted
    /// (and come back behind what it showed before).
    pub(crate) connections: AtomicU64,
    /// The latest insert positions sampled on the node (out of recovery), oldest first:
    /// the first one after a request ended is the tightest floor for it (the lag history
    /// coalesces equal positions, so it cannot tell when one was sampled last).
    pub(crate) inserts: Mutex<VecDeque<(Instant, Position)>>,
}

/// Insert positions kept per node: 2 s of probes at the shortest spacing.
const RECENT_INSERTS: usize = 1024;

impl Probes {
    /// Notes an insert position sampled by a probe that started at `started`.
    pub(crate) fn note_insert(&self, started: Instant, insert: Position) {
        if let Ok(mut inserts) = self.inserts.lock() {
            if inserts.len() >= RECENT_INSERTS {
                inserts.pop_front();
            }
            inserts.push_back((started, insert));
        }
    }

    /// The insert position of the first probe that started at or after `after`, among
    /// those kept.
    fn first_insert_since(&self, after: Instant) -> Option<Position> {
        let inserts = self.inserts.lock().ok()?;
        let i = inserts.partition_point(|(at, _)| *at < after);
        inserts.get(i).map(|(_, insert)| *insert)
    }
}

impl Default for Probes {
    fn default() -> Probes {
        Probes {
            removed: tokio_util::sync::CancellationToken::new(),
            started: std::sync::atomic::AtomicBool::new(false),
            wake: Notify::new(),
            urgent: std::sync::atomic::AtomicBool::new(false),
            latest: watch::Sender::new(ProbeMark::default()),
            count: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            inserts: Mutex::new(VecDeque::new()),
        }
    }
}

/// A cheap clonable handle on the monitor's view of the cluster.
///
/// Locks are `std::sync` and never held across an `.await`: the snapshot is replaced
/// wholesale under a short write lock and read by cloning an `Arc` under a read lock.
#[derive(Debug, Clone)]
pub struct Topology {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    snapshot: RwLock<Arc<TopologySnapshot>>,
    /// The id the next node added by a reload gets.
    next_id: AtomicU64,
    /// How to start a node's monitor task, once the monitor runs.
    spawner: std::sync::OnceLock<super::control::Spawner>,
    history: Mutex<PrimaryHistory>,
    primary: PrimaryView,
    evictions: Mutex<BTreeMap<(Arc<str>, EvictionReason), u64>>,
}

// === impl Topology ===

impl Topology {
    /// A topology of `nodes` (all unknown), measuring lag with `history`.
    pub(crate) fn new(
        mut nodes: Vec<NodeStatus>,
        history: PrimaryHistory,
        primary: PrimaryView,
    ) -> Topology {
        for (id, node) in (0u64..).zip(nodes.iter_mut()) {
            node.id = id;
        }
        Topology {
            shared: Arc::new(Shared {
                next_id: AtomicU64::new(nodes.len() as u64),
                spawner: std::sync::OnceLock::new(),
                snapshot: RwLock::new(Arc::new(TopologySnapshot { nodes, primary: 0 })),
                history: Mutex::new(history),
                primary,
                evictions: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The current view of every node. Cheap: one `Arc` clone under a read lock.
    pub fn snapshot(&self) -> Arc<TopologySnapshot> {
        match self.shared.snapshot.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Which node is the primary now (one atomic load per request).
    pub fn primary(&self) -> &PrimaryView {
        &self.shared.primary
    }

    /// Whether the replica `name` may serve reads now ([`NodeStatus::is_usable`]).
    pub fn replica_in_pool(&self, name: &str) -> bool {
        self.snapshot()
            .node(name)
            .is_some_and(|n| n.role == Role::Replica && n.is_usable())
    }

    /// A fresh replay LSN of replica `name`, from a probe that *starts after* this call,
    /// or `None` if there is no such replica, the probe fails, or `deadline` passes first.
    ///
    /// Concurrent callers share one probe: each wakes the replica's monitor task early (a
    /// single stored wake-up), and all of them take the first probe that started after
    /// they asked. Such a sample is an upper bound of what a read that finished before the
    /// call observed, and a lower bound of what any later read there will see. The caller
    /// still checks [`NodeStatus::is_usable`]: a promoted or paused node has a replay LSN
    /// too.
    ///
    /// `deadline` is a `tokio::time::Instant` or a `std::time::Instant`.
    pub async fn refresh_replica(&self, name: &str, deadline: impl Into<Instant>) -> Option<Lsn> {
        let probes = self.with_reader(name, Arc::clone)?;
        refresh(&probes, deadline.into()).await?.replay_lsn
    }

    /// The insert position of node `name` (out of recovery: the primary), from a probe that
    /// *starts after* this call, or `None` if there is no such node, the probe fails, the
    /// node is in recovery, or `deadline` passes first. Concurrent callers share one probe,
    /// as with [`Topology::refresh_replica`]: it covers every commit that ended before the
    /// call (DESIGN.md §1 rule 1).
    pub async fn refresh_primary(
        &self,
        name: &str,
        deadline: impl Into<Instant>,
    ) -> Option<Position> {
        let probes = self.snapshot().node(name).map(|n| Arc::clone(&n.probes))?;
        refresh(&probes, deadline.into()).await?.insert
    }

    /// Asks node `name`'s monitor task for a probe soon (it spaces early probes), without
    /// waiting for it: a request that just ended on the primary will want its sample.
    pub fn sample_soon(&self, name: &str) {
        if let Some(node) = self.snapshot().node(name) {
            node.probes.wake.notify_one();
        }
    }

    /// What the monitor knows of node `name`'s insert position since `after`: the one
    /// sampled by the first probe that started at or after `after` (an upper bound of the
    /// end of every request there that completed before `after`), or `None` before such a
    /// probe finished. The caller checks that `name` has been the primary all along.
    pub fn insert_sampled_after(&self, name: &str, after: Instant) -> Option<Position> {
        let snapshot = self.snapshot();
        let probes = &snapshot.node(name)?.probes;
        let mark = *probes.latest.borrow();
        let latest = mark
            .insert
            .filter(|_| mark.started.is_some_and(|s| s >= after))?;
        Some(probes.first_insert_since(after).unwrap_or(latest))
    }

    /// When the primary was last seen short of `lsn` (so whatever wrote `lsn` came after),
    /// from the monitor's recent samples; `None` for a position older than them.
    pub fn primary_short_of(&self, lsn: Lsn) -> Option<Instant> {
        self.with_history(|history| history.last_short_of(lsn))
    }

    /// The control connection of the latest probe of replica `name` (0 before any).
    pub fn replica_connection(&self, name: &str) -> u64 {
        self.with_reader(name, |probes| probes.latest.borrow().connection)
            .unwrap_or(0)
    }

    /// What the monitor knows of replica `name` in `snapshot` since `after`, when the latest
    /// probe then was taken on control connection `connection`: a replay LSN sampled by a
    /// probe that started at or after `after` on the same connection is an upper bound of
    /// what a read there that completed before `after` saw (replay only moves forward while
    /// the server runs).
    pub fn replay_sampled_after(
        &self,
        snapshot: &TopologySnapshot,
        name: &str,
        after: Instant,
        connection: u64,
    ) -> Sampled {
        let Some(mark) = self.reader_in(snapshot, name, |probes| *probes.latest.borrow()) else {
            return Sampled::Unknown;
        };
        if mark.connection != connection {
            return Sampled::Unknown;
        }
        match (mark.started, mark.replay_lsn) {
            (Some(started), Some(lsn)) if started >= after => Sampled::Replay(lsn),
            _ => Sampled::NotYet,
        }
    }

    /// How many times each replica was evicted, by reason: (replica, reason label, count),
    /// sorted. Only nonzero counts appear.
    pub fn eviction_counts(&self) -> Vec<(Arc<str>, &'static str, u64)> {
        let counts = match self.shared.evictions.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        counts
            .iter()
            .map(|((name, reason), n)| (Arc::clone(name), reason.label(), *n))
            .collect()
    }

    /// How many probes of node `name` have started (for tests and debugging).
    pub fn probe_count(&self, name: &str) -> Option<u64> {
        let snapshot = self.snapshot();
        let node = snapshot.node(name)?;
        Some(node.probes.count.load(Ordering::Relaxed))
    }

    // --- for the monitor tasks ---

    /// The plumbing of the node at `index` (for tests).
    #[cfg(test)]
    pub(crate) fn probes(&self, index: usize) -> Option<Arc<Probes>> {
        let snapshot = self.snapshot();
        snapshot.nodes.get(index).map(|n| Arc::clone(&n.probes))
    }

    /// Runs `f` on the primary history (a short critical section).
    pub(crate) fn with_history<T>(&self, f: impl FnOnce(&mut PrimaryHistory) -> T) -> T {
        match self.shared.history.lock() {
            Ok(mut guard) => f(&mut guard),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Replaces the status of the node at `index` with `f` applied to it, and publishes a
    /// new snapshot (tests; the monitor tasks use [`Topology::update_node`]).
    #[cfg(test)]
    pub(crate) fn update(&self, index: usize, f: impl FnOnce(&mut NodeStatus)) {
        self.replace(|nodes| {
            if let Some(node) = nodes.get_mut(index) {
                f(node);
            }
        });
    }

    /// [`Topology::update`] of the node with `id` (nothing once it is removed).
    pub(crate) fn update_node(&self, id: u64, f: impl FnOnce(&mut NodeStatus)) {
        self.replace(|nodes| {
            if let Some(node) = nodes.iter_mut().find(|n| n.id == id) {
                f(node);
            }
        });
    }

    /// Keeps how node tasks are started (the first call wins).
    pub(crate) fn set_spawner(&self, spawner: super::control::Spawner) -> &super::control::Spawner {
        self.shared.spawner.get_or_init(|| spawner)
    }

    /// How node tasks are started; `None` before the monitor runs.
    pub(crate) fn spawner(&self) -> Option<&super::control::Spawner> {
        self.shared.spawner.get()
    }

    /// The position of the node with `id` in the snapshot (the index the election uses).
    pub(crate) fn index_of(&self, id: u64) -> Option<usize> {
        self.snapshot().nodes.iter().position(|n| n.id == id)
    }

    /// Adds a node (unknown until its task samples it); returns its id and plumbing.
    pub(crate) fn add_node(&self, mut status: NodeStatus) -> (u64, Arc<Probes>) {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        status.id = id;
        let probes = Arc::clone(&status.probes);
        self.replace(|nodes| nodes.push(status));
        (id, probes)
    }

    /// Removes the node named `name` (it serves no new reads from the next snapshot on)
    /// and stops its monitor task. Returns whether it was there.
    pub(crate) fn remove_node(&self, name: &str) -> bool {
        let mut removed = None;
        self.replace(|nodes| {
            if let Some(i) = nodes.iter().position(|n| &*n.name == name) {
                removed = Some(nodes.remove(i));
            }
        });
        removed
            .inspect(|node| node.probes.removed.cancel())
            .is_some()
    }

    /// The ids of the nodes now, and the plumbing of each (for the reload).
    pub(crate) fn node_ids(&self) -> Vec<(Arc<str>, u64, Arc<Probes>)> {
        let snapshot = self.snapshot();
        snapshot
            .nodes
            .iter()
            .map(|n| (Arc::clone(&n.name), n.id, Arc::clone(&n.probes)))
            .collect()
    }

    /// Applies `f` to a copy of the nodes, runs the election and publishes the result.
    fn replace(&self, f: impl FnOnce(&mut Vec<NodeStatus>)) {
        let mut guard = match self.shared.snapshot.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut next = TopologySnapshot::clone(&guard);
        f(&mut next.nodes);
        self.shared.primary.observe(&next.nodes);
        next.primary = self.shared.primary.last_elected();
        *guard = Arc::new(next);
    }

    /// Counts one eviction of `name` for `reason`.
    pub(crate) fn count_eviction(&self, name: &Arc<str>, reason: EvictionReason) {
        let mut counts = match self.shared.evictions.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *counts.entry((Arc::clone(name), reason)).or_default() += 1;
    }

    /// `f` on the plumbing of node `name`, a replica or (following failovers) any node
    /// that may be one now; the caller checks it is usable and in recovery.
    fn with_reader<T>(&self, name: &str, f: impl FnOnce(&Arc<Probes>) -> T) -> Option<T> {
        self.reader_in(&self.snapshot(), name, f)
    }

    /// [`Topology::with_reader`] in `snapshot`.
    fn reader_in<T>(
        &self,
        snapshot: &TopologySnapshot,
        name: &str,
        f: impl FnOnce(&Arc<Probes>) -> T,
    ) -> Option<T> {
        let node = snapshot.node(name)?;
        let reader = node.role == Role::Replica
            || (self.shared.primary.follows() && node.in_recovery == Some(true));
        reader.then(|| f(&node.probes))
    }
}

/// Wakes the node's monitor task early and waits for the first probe that started after
/// the call: concurrent callers share it (one stored wake-up).
async fn refresh(probes: &Probes, deadline: Instant) -> Option<ProbeMark> {
    let asked = Instant::now();
    let mut latest = probes.latest.subscribe();
    probes.urgent.store(true, Ordering::Relaxed);
    probes.wake.notify_one();
    let fresh = latest.wait_for(|mark| mark.started.is_some_and(|s| s >= asked));
    let mark = *tokio::time::timeout_at(deadline, fresh).await.ok()?.ok()?;
    Some(mark)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        let stale = Duration::from_secs(1);
        Topology::new(
            vec![
                NodeStatus::new(Arc::from("primary"), Role::Primary, stale),
                NodeStatus::new(Arc::from("r1"), Role::Replica, stale),
            ],
            PrimaryHistory::new(Duration::from_secs(5), Duration::from_millis(50)),
            PrimaryView::new(false, vec![Arc::from("primary"), Arc::from("r1")]),
        )
    }

    #[test]
    fn snapshots_are_immutable_and_updates_publish_new_ones() {
        let topology = topology();
        let before = topology.snapshot();
        assert!(!topology.replica_in_pool("r1"));
        topology.update(1, |n| {
            n.set_state(State::InPool);
            n.sampled_at = Some(Instant::now());
        });
        assert!(topology.replica_in_pool("r1"));
        assert!(!topology.replica_in_pool("primary"), "not a replica");
        assert!(!topology.replica_in_pool("nope"));
        assert_eq!(before.node("r1").map(|n| n.state), Some(State::Unknown));
        let after = topology.snapshot();
        assert_eq!(after.replicas().count(), 1);
        assert_eq!(after.primary().map(|n| &*n.name), Some("primary"));
    }

    #[test]
    fn nodes_added_start_unknown_and_removed_ones_are_gone_at_once() {
        let topology = topology();
        let stale = Duration::from_secs(1);
        let (id, probes) =
            topology.add_node(NodeStatus::new(Arc::from("r2"), Role::Replica, stale));
        assert!(
            !topology.replica_in_pool("r2"),
            "never trusted before a sample"
        );
        let in_pool = |n: &mut NodeStatus| {
            n.set_state(State::InPool);
            n.sampled_at = Some(Instant::now());
        };
        topology.update_node(id, in_pool);
        assert!(topology.replica_in_pool("r2"));
        assert_eq!(topology.index_of(id), Some(2));
        assert!(topology.remove_node("r2"));
        assert!(probes.removed.is_cancelled(), "its task is told to stop");
        assert!(!topology.replica_in_pool("r2"));
        assert!(topology.snapshot().node("r2").is_none());
        assert!(!topology.remove_node("r2"));
        // A late update of the removed node changes nothing; added again, it is new.
        topology.update_node(id, in_pool);
        assert!(topology.snapshot().node("r2").is_none());
        let (again, _) = topology.add_node(NodeStatus::new(Arc::from("r2"), Role::Replica, stale));
        assert_ne!(again, id);
        topology.update_node(id, in_pool);
        assert!(
            !topology.replica_in_pool("r2"),
            "the old id does not reach the new node"
        );
        // The primary stays first (the election's node 0).
        assert_eq!(
            topology.snapshot().primary().map(|n| &*n.name),
            Some("primary")
        );
    }

    #[test]
    fn stale_samples_make_a_replica_unusable() {
        let topology = topology();
        let old = Instant::now().checked_sub(Duration::from_millis(1001));
        topology.update(1, |n| {
            n.set_state(State::InPool);
            n.sampled_at = old;
        });
        assert!(old.is_some());
        assert!(!topology.replica_in_pool("r1"));
        assert!(topology.snapshot().node("r1").is_some_and(|n| n.in_pool));
    }

    #[test]
    fn counts_evictions_by_replica_and_reason() {
        let topology = topology();
        let r1: Arc<str> = Arc::from("r1");
        topology.count_eviction(&r1, EvictionReason::Paused);
        topology.count_eviction(&r1, EvictionReason::Paused);
        topology.count_eviction(&r1, EvictionReason::LagBytes);
        assert_eq!(
            topology.eviction_counts(),
            [(r1.clone(), "lag_bytes", 1), (r1, "paused", 2)]
        );
    }

    /// Runs `refresh` on a task and, once it has woken the monitor task, publishes `fresh`
    /// as a probe that started after that: what the refresh returns.
    async fn answer_refresh<T: Send + 'static>(
        probes: &Probes,
        fresh: ProbeMark,
        refresh: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let waiter = tokio::spawn(refresh);
        // The monitor task is woken (the waiter runs while this waits).
        tokio::time::timeout(Duration::from_secs(5), probes.wake.notified())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        probes.latest.send_replace(ProbeMark {
            started: Some(Instant::now()),
            ..fresh
        });
        waiter.await.unwrap()
    }

    #[tokio::test]
    async fn refresh_waits_for_a_probe_that_started_after_the_call() {
        let topology = topology();
        let probes = topology.probes(1).unwrap();
        // A probe that started before the call does not count.
        probes.latest.send_replace(ProbeMark {
            started: Some(Instant::now()),
            replay_lsn: Some(Lsn::new(1)),
            ..ProbeMark::default()
        });
        tokio::time::sleep(Duration::from_millis(2)).await;
        let fresh = ProbeMark {
            replay_lsn: Some(Lsn::new(2)),
            ..ProbeMark::default()
        };
        let refreshed = answer_refresh(&probes, fresh, {
            let topology = topology.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(5);
                topology.refresh_replica("r1", deadline).await
            }
        });
        assert_eq!(refreshed.await, Some(Lsn::new(2)));
        // No probe in time: None at the deadline.
        let deadline = Instant::now() + Duration::from_millis(20);
        assert_eq!(topology.refresh_replica("r1", deadline).await, None);
        assert_eq!(topology.refresh_replica("primary", deadline).await, None);
    }

    #[tokio::test]
    async fn a_primary_sample_after_a_request_bounds_its_position() {
        let topology = topology();
        let probes = topology.probes(0).unwrap();
        let at = |lsn| Position {
            timeline: 1,
            lsn: Lsn::new(lsn),
        };
        let before = Instant::now();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let done = Instant::now();
        // Only a probe that started after the request completed covers it.
        probes.latest.send_replace(ProbeMark {
            started: Some(before),
            insert: Some(at(100)),
            ..ProbeMark::default()
        });
        assert_eq!(topology.insert_sampled_after("primary", done), None);
        tokio::time::sleep(Duration::from_millis(2)).await;
        let first = Instant::now();
        tokio::time::sleep(Duration::from_millis(2)).await;
        probes.latest.send_replace(ProbeMark {
            started: Some(Instant::now()),
            insert: Some(at(300)),
            ..ProbeMark::default()
        });
        assert_eq!(
            topology.insert_sampled_after("primary", done),
            Some(at(300))
        );
        // The first probe since then is the tightest bound, whatever came after it.
        probes.note_insert(before, at(100));
        probes.note_insert(first, at(200));
        probes.note_insert(Instant::now(), at(300));
        assert_eq!(
            topology.insert_sampled_after("primary", done),
            Some(at(200))
        );
        // A replica's probe has no insert position.
        assert_eq!(topology.insert_sampled_after("r1", done), None);

        // A refresh waits for a probe that starts after it is asked.
        let fresh = ProbeMark {
            insert: Some(at(400)),
            ..ProbeMark::default()
        };
        let refreshed = answer_refresh(&probes, fresh, {
            let topology = topology.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(5);
                topology.refresh_primary("primary", deadline).await
            }
        });
        assert_eq!(refreshed.await, Some(at(400)));
        let deadline = Instant::now() + Duration::from_millis(20);
        assert_eq!(topology.refresh_primary("primary", deadline).await, None);
        assert_eq!(topology.refresh_primary("nowhere", deadline).await, None);
    }
}
