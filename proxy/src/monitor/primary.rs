//! [`PrimaryView`]: which configured node takes writes now (DESIGN.md §9).
//!
//! The monitor tasks publish every sample through [`super::Topology::update`], which runs
//! the pure [`Election`] on the new snapshot under the snapshot's write lock; the result is
//! packed into one atomic that sessions read per request (no lock on the hot path), and a
//! watch channel wakes requests that wait for a primary.
//!
//! - `failover.mode = "off"`: the primary is node 0 (`[primary]`) while its probes succeed,
//!   none while they fail (requests that need it wait `failover.query_wait_timeout`).
//! - `"follow"`: every configured node is a candidate; the one not in recovery on the
//!   highest timeline is the primary. A node not in recovery on a timeline older than the
//!   newest one ever elected (an old primary restarted without being rewound: split brain)
//!   is never chosen, nor is a second node on the same timeline as the last primary.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::time::Instant;

use super::topology::NodeStatus;
use crate::lsn::{Lsn, Position};

/// Node index bits in the packed word (the rest is the generation).
const NODE_BITS: u32 = 16;
const NODE_MASK: u64 = (1 << NODE_BITS) - 1;

/// The primary as a session sees it: which node, and a generation that changes whenever the
/// primary does (also to and from "none").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    /// Index of the node: 0 is `[primary]`, `i + 1` is `replicas[i]`; `None` while there is
    /// no primary.
    pub node: Option<usize>,
    pub generation: u64,
}

/// What [`Election`] needs to know about one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Candidate {
    /// The last probe succeeded and is younger than `lag.stale_after`.
    pub(crate) up: bool,
    /// Not probed yet, and no probe failed.
    pub(crate) unprobed: bool,
    pub(crate) in_recovery: Option<bool>,
    /// The timeline of its WAL when it is not in recovery.
    pub(crate) timeline: Option<u32>,
    pub(crate) insert_lsn: Option<Lsn>,
}

impl Candidate {
    /// From a node's status at `now`.
    pub(crate) fn of(status: &NodeStatus, now: Instant) -> Candidate {
        let fresh = status
            .sampled_at
            .is_some_and(|at| now.saturating_duration_since(at) < status.stale_after());
        Candidate {
            up: fresh && status.last_error.is_none(),
            unprobed: status.sampled_at.is_none() && status.last_error.is_none(),
            in_recovery: status.in_recovery,
            timeline: status.timeline,
            insert_lsn: status.insert_lsn,
        }
    }

    /// A node taking writes: up and not in recovery, on a known timeline.
    fn writable_timeline(&self) -> Option<u32> {
        if self.up && self.in_recovery == Some(false) {
            self.timeline
        } else {
            None
        }
    }
}

/// A change the election made, to log and count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// A node became the primary (`previous`: the last primary, if it was another node).
    Elected {
        node: usize,
        timeline: Option<u32>,
        previous: Option<usize>,
    },
    /// The primary is gone and no node qualifies.
    Lost { previous: usize },
}

/// The election's state: pure, driven by snapshots of every node.
#[derive(Debug, Clone)]
pub(crate) struct Election {
    follow: bool,
    current: Option<usize>,
    /// The last node elected (the configured primary at first).
    last: usize,
    /// The newest timeline a primary was elected on.
    max_timeline: u32,
    /// The first position seen on `max_timeline` after a promotion: where the new
    /// timeline's history starts, as far as the monitor saw.
    switched: Option<Position>,
    generation: u64,
    /// Nodes already reported as a second primary (logged once per episode).
    rejected: Vec<bool>,
}

impl Election {
    /// Mode off: node 0 is the primary until its probe fails. Follow: no primary until
    /// every node has answered (or failed) once, so that an old primary on an older
    /// timeline sampled first is never taken for the primary at startup.
    pub(crate) fn new(follow: bool, nodes: usize) -> Election {
        Election {
            follow,
            current: (!follow).then_some(0),
            last: 0,
            max_timeline: 0,
            switched: None,
            generation: 0,
            rejected: vec![false; nodes],
        }
    }

    #[cfg(test)]
    pub(crate) fn current(&self) -> Option<usize> {
        self.current
    }

    /// Applies the latest view of every node; returns what changed, if anything, and the
    /// nodes newly seen as a second primary (split brain).
    pub(crate) fn observe(&mut self, nodes: &[Candidate]) -> (Option<Change>, Vec<usize>) {
        let chosen = if self.follow {
            self.choose(nodes)
        } else {
            nodes.first().filter(|n| n.up || n.unprobed).map(|_| 0)
        };
        let rejected = self.note_rejected(nodes, chosen);
        if let Some(node) = chosen {
            if let Some(timeline) = nodes.get(node).and_then(|n| n.writable_timeline()) {
                if timeline > self.max_timeline {
                    let promoted = self.max_timeline > 0;
                    self.max_timeline = timeline;
                    self.switched = promoted
                        .then(|| nodes.get(node).and_then(|n| n.insert_lsn))
                        .flatten()
                        .map(|lsn| Position { timeline, lsn });
                }
            }
        }
        if chosen == self.current {
            return (None, rejected);
        }
        self.generation += 1;
        let change = match chosen {
            Some(node) => {
                let previous = (node != self.last).then_some(self.last);
                self.last = node;
                Change::Elected {
                    node,
                    timeline: nodes.get(node).and_then(|n| n.writable_timeline()),
                    previous,
                }
            }
            None => Change::Lost {
                previous: self.current.unwrap_or(self.last),
            },
        };
        self.current = chosen;
        (Some(change), rejected)
    }

    /// Follow mode: the node not in recovery on the highest timeline, never one on a
    /// timeline older than the newest elected, nor a second one on that same timeline.
    fn choose(&self, nodes: &[Candidate]) -> Option<usize> {
        let eligible = |(i, n): (usize, &Candidate)| {
            let timeline = n.writable_timeline()?;
            let newer = timeline > self.max_timeline;
            let same = timeline == self.max_timeline && i == self.last;
            (newer || same).then_some((i, timeline))
        };
        if self.max_timeline == 0 && nodes.iter().any(|n| n.unprobed) {
            // Startup: not every node has answered yet.
            return None;
        }
        let candidates: Vec<(usize, u32)> = nodes.iter().enumerate().filter_map(eligible).collect();
        let best = candidates.iter().map(|(_, t)| *t).max()?;
        let top: Vec<usize> = candidates
            .iter()
            .filter(|(_, t)| *t == best)
            .map(|(i, _)| *i)
            .collect();
        if top.contains(&self.last) {
            return Some(self.last);
        }
        // Two new primaries on one timeline are two histories: trust neither.
        match top.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    /// Nodes that take writes but are not the primary (each reported once until it stops):
    /// beside an elected primary, or, with none, when every node answered and several
    /// take writes (none of them is trusted then).
    fn note_rejected(&mut self, nodes: &[Candidate], chosen: Option<usize>) -> Vec<usize> {
        let writable = nodes
            .iter()
            .filter(|n| n.writable_timeline().is_some())
            .count();
        let contested = writable >= 2 && !nodes.iter().any(|n| n.unprobed);
        let mut fresh = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            let second = self.follow
                && chosen.map_or(contested, |c| c != i)
                && n.writable_timeline().is_some();
            if let Some(flag) = self.rejected.get_mut(i) {
                if second && !*flag {
                    fresh.push(i);
                }
                *flag = second;
            }
        }
        fresh
    }

    fn packed(&self) -> u64 {
        let node = self.current.map_or(0, |n| (n as u64 + 1) & NODE_MASK);
        (self.generation << NODE_BITS) | node
    }
}

/// The shared handle: sessions read [`PrimaryView::current`] (one atomic load).
#[derive(Debug, Clone)]
pub struct PrimaryView {
    shared: Arc<ViewShared>,
}

#[derive(Debug)]
struct ViewShared {
    packed: AtomicU64,
    /// The newest timeline a primary was elected on (read per request with a floor).
    newest: AtomicU32,
    election: Mutex<Election>,
    changed: watch::Sender<u64>,
    /// Changes of the primary to another node (`causeway_primary_changes_total`).
    changes: AtomicU64,
    names: Vec<Arc<str>>,
    follow: bool,
}

impl PrimaryView {
    /// A view over the nodes named `names` (configured primary first).
    pub(crate) fn new(follow: bool, names: Vec<Arc<str>>) -> PrimaryView {
        let election = Election::new(follow, names.len());
        PrimaryView {
            shared: Arc::new(ViewShared {
                packed: AtomicU64::new(election.packed()),
                newest: AtomicU32::new(0),
                election: Mutex::new(election),
                changed: watch::Sender::new(0),
                changes: AtomicU64::new(0),
                names,
                follow,
            }),
        }
    }

    /// The primary now. One atomic load.
    pub fn current(&self) -> Current {
        let packed = self.shared.packed.load(Ordering::Acquire);
        let node = (packed & NODE_MASK) as usize;
        Current {
            node: node.checked_sub(1),
            generation: packed >> NODE_BITS,
        }
    }

    /// The name of node `index`.
    pub fn name(&self, index: usize) -> Option<&Arc<str>> {
        self.shared.names.get(index)
    }

    /// Whether `failover.mode = "follow"`.
    pub fn follows(&self) -> bool {
        self.shared.follow
    }

    /// How many times the primary moved to another node.
    pub fn changes(&self) -> u64 {
        self.shared.changes.load(Ordering::Relaxed)
    }

    /// The primary now, or the last one elected while there is none: where a connection
    /// that does not wait (readiness, logins, background reads) should go.
    pub fn node_or_last(&self) -> usize {
        self.current().node.unwrap_or_else(|| self.last_elected())
    }

    /// The last node elected, even while it is unreachable (for `/status` and timelines).
    pub fn last_elected(&self) -> usize {
        self.with(|e| e.last)
    }

    /// The newest timeline a primary was elected on (0 before any). One atomic load.
    pub fn newest_timeline(&self) -> u32 {
        self.shared.newest.load(Ordering::Acquire)
    }

    /// The newest timeline a primary was elected on, and where its history began as far
    /// as the monitor saw (its first position; `None` before any promotion was seen).
    pub fn timeline(&self) -> (u32, Option<Position>) {
        self.with(|e| (e.max_timeline, e.switched))
    }

    /// Waits until the primary changes from `seen` or `deadline` passes.
    pub async fn changed_since(&self, seen: u64, deadline: Instant) {
        let mut rx = self.shared.changed.subscribe();
        let wait = rx.wait_for(|generation| *generation != seen);
        let _ = tokio::time::timeout_at(deadline, wait).await;
    }

    /// Runs the election on `nodes` (called by the topology under its write lock).
    pub(crate) fn observe(&self, nodes: &[NodeStatus]) {
        let now = Instant::now();
        let candidates: Vec<Candidate> = nodes.iter().map(|n| Candidate::of(n, now)).collect();
        let (change, rejected, packed, newest) = self.with(|e| {
            let (change, rejected) = e.observe(&candidates);
            (change, rejected, e.packed(), e.max_timeline)
        });
        self.shared.newest.store(newest, Ordering::Release);
        // With no primary elected, rejected nodes are rivals none of which is trusted.
        let contested = packed & NODE_MASK == 0;
        for node in rejected {
            if contested {
                tracing::error!(node = %self.label(node), timeline = ?candidates.get(node).and_then(|c| c.timeline),
                    "several nodes accept writes and none is on a newer timeline than the others \
                     (split brain?); no primary is used until only one does");
                continue;
            }
            tracing::error!(node = %self.label(node), timeline = ?candidates.get(node).and_then(|c| c.timeline),
                "a node other than the primary accepts writes (split brain: an old primary \
                 restarted without being rewound?); it is never written to or read from");
        }
        let Some(change) = change else {
            return;
        };
        self.shared.packed.store(packed, Ordering::Release);
        self.shared.changed.send_replace(packed >> NODE_BITS);
        match change {
            Change::Elected {
                node,
                timeline,
                previous: Some(previous),
            } => {
                self.shared.changes.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(primary = %self.label(node), ?timeline, previous = %self.label(previous),
                    "the primary changed");
            }
            Change::Elected { node, timeline, .. } => {
                tracing::info!(primary = %self.label(node), ?timeline, "primary available");
            }
            Change::Lost { previous } => {
                tracing::warn!(previous = %self.label(previous),
                    "no primary: requests that need one wait up to failover.query_wait_timeout");
            }
        }
    }

    fn label(&self, node: usize) -> Arc<str> {
        self.name(node)
            .cloned()
            .unwrap_or_else(|| Arc::from(node.to_string()))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Election) -> T) -> T {
        match self.shared.election.lock() {
            Ok(mut guard) => f(&mut guard),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests;
