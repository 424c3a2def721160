//! Floor bookkeeping for one connection (pure): the causal floor (DESIGN.md §1), the
//! replica a probe-less read must stick to until the monitor samples it, and the replay
//! position a replica reported after the session's last read there.

use std::time::{Duration, Instant};

use crate::lsn::Position;
use crate::monitor::Sampled;

use super::ReplicaView;

/// How long a replica's own reported replay position may stand in for the monitor's.
const LAST_READ_TRUST: Duration = Duration::from_millis(500);

/// What the session knows of its causal floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    /// Nothing written or read yet: any position satisfies it.
    None,
    /// Reads must see at least this position.
    At(Position),
    /// The floor could not be established (store error, failed probe): only the primary
    /// is known to satisfy it.
    Unknown,
}

impl Floor {
    /// Raise the floor to `position` (an atomic max; `Unknown` stays unknown until
    /// [`Floor::reset_to`]).
    pub fn raise(&mut self, position: Position) {
        match self {
            Floor::None => *self = Floor::At(position),
            Floor::At(current) if position > *current => *current = position,
            _ => {}
        }
    }

    /// Replace an unknown floor by a known position (after a successful probe on the primary,
    /// which covers everything before it).
    pub fn reset_to(&mut self, position: Position) {
        match self {
            Floor::Unknown => *self = Floor::At(position),
            _ => self.raise(position),
        }
    }
}

/// Why only the primary is known to satisfy a connection's floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unknown {
    /// The session store failed, or holds a floor this connection could not store.
    #[default]
    Store,
    /// The monitor reconnected to the replica a read stuck to: it may have restarted
    /// behind what the read saw.
    Monitor,
    /// The position after the last request could not be read (a COPY FROM STDIN, a lost
    /// probe).
    Position,
}

/// A read on a replica that completed without a probe: later reads stay on that replica
/// (where replay never goes backwards) until the monitor has sampled it since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sticky {
    /// Index of the replica.
    pub replica: usize,
    /// When the read completed.
    pub done: Instant,
    /// The monitor's control connection to that replica then: a new one means the replica
    /// may have restarted behind what the read saw.
    pub connection: u64,
}

/// A request on the primary that completed without a probe: until a sample of the primary's
/// insert position taken after it is known, only the primary is known to satisfy the floor
/// (DESIGN.md §1 rule 1: a probe that starts after a commit covers it, so one monitor
/// sample serves every connection that committed before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unprobed {
    /// When its last ReadyForQuery arrived.
    pub done: Instant,
    /// The primary's generation then ([`crate::monitor::Current`]): a sample of the node
    /// elected in the same generation covers it.
    pub generation: u64,
}

/// The floor of one client connection and what keeps its reads monotonic without probes.
#[derive(Debug, Clone)]
pub struct FloorBook {
    floor: Floor,
    /// The last request on the primary, while no sample since covers it.
    unprobed: Option<Unprobed>,
    /// The replay position a replica reported after this connection's last read there, and
    /// when: a real sample of that replica, so it may serve the next read at once. Used
    /// only while recent (a restarted replica is out of the pool for longer than that).
    last_read: Option<(usize, Position, Instant)>,
    sticky: Option<Sticky>,
    /// Why the floor is unknown, when it is.
    unknown: Unknown,
}

impl Default for FloorBook {
    fn default() -> Self {
        FloorBook {
            floor: Floor::None,
            unprobed: None,
            last_read: None,
            sticky: None,
            unknown: Unknown::Position,
        }
    }
}

impl FloorBook {
    /// The connection's own floor: unknown while a request on the primary awaits a sample.
    pub fn floor(&self) -> Floor {
        match self.unprobed {
            Some(_) => Floor::Unknown,
            None => self.floor,
        }
    }

    /// Only the primary is known to satisfy the floor now, for this reason.
    pub fn forget(&mut self, why: Unknown) {
        self.floor = Floor::Unknown;
        self.unknown = why;
    }

    /// Why the floor is unknown, if it is.
    pub fn unknown(&self) -> Option<Unknown> {
        if self.unprobed.is_some() {
            return Some(Unknown::Position);
        }
        (self.floor == Floor::Unknown).then_some(self.unknown)
    }

    /// A request on the primary completed without a probe (see [`Unprobed`]). A later one
    /// replaces an earlier one: a sample after it covers both.
    pub fn primary_unprobed(&mut self, unprobed: Unprobed) {
        self.unprobed = Some(unprobed);
    }

    /// The request on the primary that awaits a sample, if any.
    pub fn unprobed(&self) -> Option<Unprobed> {
        self.unprobed
    }

    /// A sample of the primary taken after the unprobed request read `position`: it is
    /// what a probe behind that request would have read, or more.
    pub fn resolve_unprobed(&mut self, position: Position) {
        self.unprobed = None;
        self.primary_probed(position);
    }

    /// A probe on the primary read `position` after the request: it covers anything a
    /// replica showed before, so no read needs to stick anywhere.
    pub fn primary_probed(&mut self, position: Position) {
        self.floor.reset_to(position);
        self.sticky = None;
    }

    /// A probe on replica `replica` read `position` after this connection's own read
    /// completed (at `now`): it raises the connection's floor.
    pub fn replica_probed(&mut self, replica: Option<usize>, position: Position, now: Instant) {
        self.floor.raise(position);
        if let Some(replica) = replica {
            self.replica_reported(replica, position, now);
        }
    }

    /// Replica `replica` reported replaying `position` at `now` (after any read there, a
    /// named session's too): a sample of the replica, not a floor of this connection.
    pub fn replica_reported(&mut self, replica: usize, position: Position, now: Instant) {
        self.last_read = Some((replica, position, now));
    }

    /// A read on replica `replica` completed without a probe.
    pub fn read_unprobed(&mut self, sticky: Sticky) {
        self.sticky = Some(sticky);
    }

    /// The replica reads must stay on, if any (see [`FloorBook::resolve_sticky`]).
    pub fn sticky(&self) -> Option<Sticky> {
        self.sticky
    }

    /// The monitor's answer about the sticky replica, whose timeline is `timeline`: once it
    /// has sampled the replica since the read completed, the sample (an upper bound of what
    /// the read saw) raises the floor and reads may move; until then the replica is
    /// returned. An unknown answer leaves only the primary satisfying the floor.
    pub fn resolve_sticky(&mut self, sampled: Sampled, timeline: u32) -> Option<usize> {
        let sticky = self.sticky?;
        match sampled {
            Sampled::NotYet => return Some(sticky.replica),
            Sampled::Replay(lsn) => self.floor.raise(Position { timeline, lsn }),
            Sampled::Unknown => self.forget(Unknown::Monitor),
        }
        self.sticky = None;
        None
    }

    /// Let the replica of the last probed read serve at the position it reported, while
    /// that report is recent and on the replica's timeline (the monitor may not have
    /// sampled that far yet).
    pub fn apply_last_read(&self, views: &mut [ReplicaView], now: Instant) {
        let Some((i, seen, at)) = self.last_read else {
            return;
        };
        if now.saturating_duration_since(at) >= LAST_READ_TRUST {
            return;
        }
        if let Some(view) = views.get_mut(i).filter(|v| v.timeline == seen.timeline) {
            view.replay = Some(view.replay.map_or(seen.lsn, |r| r.max(seen.lsn)));
        }
    }
}

/// Most named sessions one connection remembers as not stored before it distrusts them all.
const MAX_UNSTORED: usize = 256;

/// Named sessions whose floor this connection raised but could not store (store error or
/// lost probe): until a later store of theirs succeeds, their reads through this connection
/// go to the primary, which covers the write the store missed. Boxed: most connections
/// never have one.
#[derive(Debug, Default, Clone)]
pub struct Unstored(Option<Box<UnstoredKeys>>);

#[derive(Debug, Default, Clone)]
struct UnstoredKeys {
    keys: std::collections::HashSet<String>,
    /// More keys than [`MAX_UNSTORED`] failed: every named session is distrusted.
    overflow: bool,
}

impl Unstored {
    /// Whether `key`'s stored floor may lack something this connection did.
    pub fn contains(&self, key: &str) -> bool {
        self.0
            .as_ref()
            .is_some_and(|u| u.overflow || u.keys.contains(key))
    }

    /// `key`'s floor could not be stored.
    pub fn insert(&mut self, key: &str) {
        let unstored = self.0.get_or_insert_with(Box::default);
        if unstored.keys.len() >= MAX_UNSTORED {
            unstored.overflow = true;
            unstored.keys.clear();
        } else if !unstored.overflow {
            unstored.keys.insert(key.to_owned());
        }
    }

    /// `key`'s floor was stored.
    pub fn stored(&mut self, key: &str) {
        if let Some(unstored) = self.0.as_mut() {
            unstored.keys.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;

    fn at(lsn: u64) -> Position {
        Position {
            timeline: 1,
            lsn: Lsn::new(lsn),
        }
    }

    fn view(replay: Option<u64>) -> ReplicaView {
        ReplicaView {
            in_pool: true,
            timeline: 1,
            replay: replay.map(Lsn::new),
            lag_seconds: 0.0,
            weight: 1,
            outstanding: 0,
        }
    }

    #[test]
    fn a_primary_probe_replaces_an_unknown_floor_and_unsticks() {
        let mut book = FloorBook::default();
        book.forget(Unknown::Position);
        book.read_unprobed(Sticky {
            replica: 0,
            done: Instant::now(),
            connection: 1,
        });
        book.primary_probed(at(10));
        assert_eq!(book.floor(), Floor::At(at(10)));
        assert_eq!(book.sticky(), None);
        book.primary_probed(at(5));
        assert_eq!(book.floor(), Floor::At(at(10)), "floors never go down");
    }

    #[test]
    fn an_unprobed_primary_request_leaves_the_floor_unknown_until_sampled() {
        let mut book = FloorBook::default();
        book.primary_probed(at(10));
        book.read_unprobed(Sticky {
            replica: 0,
            done: Instant::now(),
            connection: 1,
        });
        let unprobed = Unprobed {
            done: Instant::now(),
            generation: 1,
        };
        book.primary_unprobed(unprobed);
        assert_eq!(book.floor(), Floor::Unknown);
        assert_eq!(book.unknown(), Some(Unknown::Position));
        assert_eq!(book.unprobed(), Some(unprobed));
        // The sample after the request covers it and whatever a replica showed before.
        book.resolve_unprobed(at(30));
        assert_eq!(book.floor(), Floor::At(at(30)));
        assert_eq!(book.unprobed(), None);
        assert_eq!(book.sticky(), None);
        // An unknown floor is settled by it too; floors never go down.
        book.forget(Unknown::Monitor);
        book.primary_unprobed(unprobed);
        book.resolve_unprobed(at(20));
        assert_eq!(book.floor(), Floor::At(at(20)));
        book.primary_unprobed(unprobed);
        book.resolve_unprobed(at(15));
        assert_eq!(book.floor(), Floor::At(at(20)));
    }

    #[test]
    fn sticky_reads_resolve_by_the_monitor_sample() {
        let mut book = FloorBook::default();
        let sticky = Sticky {
            replica: 1,
            done: Instant::now(),
            connection: 3,
        };
        book.read_unprobed(sticky);
        assert_eq!(book.resolve_sticky(Sampled::NotYet, 1), Some(1));
        assert_eq!(book.resolve_sticky(Sampled::Replay(Lsn::new(42)), 1), None);
        assert_eq!(book.floor(), Floor::At(at(42)));
        assert_eq!(book.sticky(), None);
        book.read_unprobed(sticky);
        assert_eq!(book.resolve_sticky(Sampled::Unknown, 1), None);
        assert_eq!(book.floor(), Floor::Unknown);
        assert_eq!(book.unknown(), Some(Unknown::Monitor));
    }

    #[test]
    fn unstored_keys_are_remembered_until_stored_and_bounded() {
        let mut unstored = Unstored::default();
        unstored.insert("a");
        assert!(unstored.contains("a") && !unstored.contains("b"));
        unstored.stored("a");
        assert!(!unstored.contains("a"));
        for i in 0..=MAX_UNSTORED {
            unstored.insert(&i.to_string());
        }
        assert!(
            unstored.contains("never seen"),
            "past the bound every key is distrusted"
        );
    }

    #[test]
    fn a_replica_report_is_no_floor() {
        let mut book = FloorBook::default();
        book.replica_reported(0, at(100), Instant::now());
        assert_eq!(book.floor(), Floor::None);
        let mut views = [view(Some(50))];
        book.apply_last_read(&mut views, Instant::now());
        assert_eq!(views[0].replay, Some(Lsn::new(100)));
    }

    #[test]
    fn a_recent_replica_report_lifts_its_view_only() {
        let mut book = FloorBook::default();
        let now = Instant::now();
        book.replica_probed(Some(0), at(100), now);
        assert_eq!(book.floor(), Floor::At(at(100)));
        let mut views = [view(Some(50)), view(Some(60))];
        book.apply_last_read(&mut views, now);
        assert_eq!(views[0].replay, Some(Lsn::new(100)));
        assert_eq!(views[1].replay, Some(Lsn::new(60)));
        let mut views = [view(None)];
        book.apply_last_read(&mut views, now + LAST_READ_TRUST);
        assert_eq!(views[0].replay, None, "an old report is not trusted");
    }
}
