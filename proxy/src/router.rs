//! Routing decisions, pure: [`route`] maps what a request is (read-only or not, pinned),
//! the session's consistency requirement (level, floor, hints) and the replicas' states to
//! a node and a cause (DESIGN.md §1-§2); [`policy`] works out that requirement and
//! [`floor`] keeps a connection's floor. No I/O: `session::dispatch` gathers the inputs.

pub mod floor;
pub mod node_local;
pub mod policy;
pub mod timeline;
pub mod wait;

pub use floor::{Floor, FloorBook, Sticky, Unknown, Unprobed, Unstored};

use std::time::Duration;

use crate::config::{ConsistencyLevel, RouteTarget};
use crate::lsn::{Lsn, Position};

/// A node a request can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Primary,
    /// Index into the configured replicas.
    Replica(usize),
}

impl Node {
    /// Index into per-node tables ordered primary first, then replicas.
    pub fn index(self) -> usize {
        match self {
            Node::Primary => 0,
            Node::Replica(i) => i + 1,
        }
    }

    /// The replica's index, if this is a replica.
    pub fn replica(self) -> Option<usize> {
        match self {
            Node::Primary => None,
            Node::Replica(i) => Some(i),
        }
    }
}

/// One request to route (a simple Query, or an extended-protocol batch up to Sync).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    /// Classified read-only (or `BEGIN READ ONLY`).
    pub read_only: bool,
    /// The client is pinned to its primary connection.
    pub pinned: bool,
    pub level: ConsistencyLevel,
    /// `route=` from a hint or rule.
    pub route: Option<RouteTarget>,
    /// Largest lag a `bounded` read accepts.
    pub max_lag: Duration,
    pub floor: Floor,
}

/// What the router needs to know about one replica.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaView {
    /// In the pool (not evicted, not unknown, not promoted).
    pub in_pool: bool,
    pub timeline: u32,
    /// Replay position from the last sample (a lower bound of the real one).
    pub replay: Option<Lsn>,
    pub lag_seconds: f64,
    pub weight: u32,
    /// Queries currently running on it through this proxy.
    pub outstanding: usize,
}

/// Why a request went where it went (`causeway_queries_total{reason}`; the fallback ones
/// also count in `causeway_consistency_fallbacks_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    Write,
    Pinned,
    Strong,
    HintPrimary,
    Eventual,
    FreshReplica,
    Bounded,
    NoReplica,
    FloorAhead,
    FloorUnknown,
    LagTooHigh,
}

impl Cause {
    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Write => "write",
            Cause::Pinned => "pinned",
            Cause::Strong => "consistency_strong",
            Cause::HintPrimary => "route_primary",
            Cause::Eventual => "eventual",
            Cause::FreshReplica => "fresh_replica",
            Cause::Bounded => "bounded",
            Cause::NoReplica => "no_replica",
            Cause::FloorAhead => "floor_ahead",
            Cause::FloorUnknown => "floor_unknown",
            Cause::LagTooHigh => "lag_too_high",
        }
    }

    /// A read that could have gone to a replica but had to use the primary.
    pub fn is_fallback(self) -> bool {
        matches!(
            self,
            Cause::NoReplica | Cause::FloorAhead | Cause::FloorUnknown | Cause::LagTooHigh
        )
    }

    /// A fallback that waiting for a replica to catch up might avoid.
    pub fn worth_waiting(self) -> bool {
        matches!(self, Cause::FloorAhead | Cause::LagTooHigh)
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Primary(Cause),
    /// Index into the replica list.
    Replica(usize, Cause),
}

impl Route {
    /// The node the request runs on.
    pub fn node(self) -> Node {
        match self {
            Route::Primary(_) => Node::Primary,
            Route::Replica(i, _) => Node::Replica(i),
        }
    }

    /// Why it runs there.
    pub fn cause(self) -> Cause {
        match self {
            Route::Primary(cause) | Route::Replica(_, cause) => cause,
        }
    }
}

/// Decide where `request` runs. `tiebreak` rotates the choice among equally loaded replicas.
pub fn route(request: &Request, replicas: &[ReplicaView], tiebreak: usize) -> Route {
    route_without_floor(request, replicas, tiebreak)
        .unwrap_or_else(|| route_by_floor(request, replicas, tiebreak))
}

/// Whether the session's floor can change where `request` goes: if not, a shared session
/// need not read its floor from the store (writes, pins, `strong`, `eventual`, no replica).
pub fn floor_matters(request: &Request, replicas: &[ReplicaView]) -> bool {
    route_without_floor(request, replicas, 0).is_none()
}

/// The route of a request that the floor cannot affect.
fn route_without_floor(
    request: &Request,
    replicas: &[ReplicaView],
    tiebreak: usize,
) -> Option<Route> {
    let primary = |reason| Some(Route::Primary(reason));
    if !request.read_only {
        return primary(Cause::Write);
    }
    if request.pinned {
        return primary(Cause::Pinned);
    }
    if request.route == Some(RouteTarget::Primary) {
        return primary(Cause::HintPrimary);
    }
    if request.level == ConsistencyLevel::Strong {
        return primary(Cause::Strong);
    }
    let in_pool = || replicas.iter().enumerate().filter(|(_, r)| r.in_pool);
    if in_pool().next().is_none() {
        return primary(Cause::NoReplica);
    }
    if request.level == ConsistencyLevel::Eventual {
        return Some(
            pick(in_pool(), tiebreak).map_or(Route::Primary(Cause::NoReplica), |i| {
                Route::Replica(i, Cause::Eventual)
            }),
        );
    }
    None
}

/// The route of a `session` or `bounded` read, decided by the floor.
fn route_by_floor(request: &Request, replicas: &[ReplicaView], tiebreak: usize) -> Route {
    let in_pool = || replicas.iter().enumerate().filter(|(_, r)| r.in_pool);
    let floor = match request.floor {
        Floor::Unknown => return Route::Primary(Cause::FloorUnknown),
        Floor::None => None,
        Floor::At(position) => Some(position),
    };
    let fresh = in_pool().filter(|(_, r)| satisfies(r, floor));
    if request.level == ConsistencyLevel::Bounded {
        let max_lag = request.max_lag.as_secs_f64();
        let within = fresh.filter(|(_, r)| r.lag_seconds <= max_lag);
        if let Some(i) = pick(within, tiebreak) {
            return Route::Replica(i, Cause::Bounded);
        }
        let any_fresh = in_pool().any(|(_, r)| satisfies(r, floor));
        let reason = if any_fresh {
            Cause::LagTooHigh
        } else {
            Cause::FloorAhead
        };
        return Route::Primary(reason);
    }
    match pick(fresh, tiebreak) {
        Some(i) => Route::Replica(i, Cause::FreshReplica),
        None => Route::Primary(Cause::FloorAhead),
    }
}

/// Whether a replica has replayed `floor`. Positions on another timeline are not comparable
/// (the floor may be a write lost in a failover): only the primary satisfies them, and the
/// session's next write replaces the floor (DESIGN.md §1 rule 5).
fn satisfies(replica: &ReplicaView, floor: Option<Position>) -> bool {
    let Some(floor) = floor else {
        return true;
    };
    replica.timeline == floor.timeline && replica.replay.is_some_and(|r| r >= floor.lsn)
}

/// The replica with the fewest running requests per unit of weight; among equally loaded
/// ones (always the case with serial traffic) `tiebreak` picks in proportion to weight, so
/// `weight` is each replica's share of reads whether or not requests overlap.
fn pick<'a>(
    candidates: impl Iterator<Item = (usize, &'a ReplicaView)> + Clone,
    tiebreak: usize,
) -> Option<usize> {
    let load = |r: &ReplicaView| (r.outstanding as u64, u64::from(r.weight.max(1)));
    // outstanding/weight compared without division: a/b < c/d ⇔ a·d < c·b.
    let (least, per) = candidates
        .clone()
        .map(|(_, r)| load(r))
        .min_by(|&(a, b), &(c, d)| (a * d).cmp(&(c * b)))?;
    // Three passes over a handful of replicas instead of a list of the tied ones: routing
    // allocates nothing.
    let tied = move |(_, r): &(usize, &ReplicaView)| {
        let (outstanding, weight) = load(r);
        outstanding * per == least * weight
    };
    let total: u64 = candidates
        .clone()
        .filter(tied)
        .map(|(_, r)| load(r).1)
        .sum();
    let mut ticket = (tiebreak as u64).checked_rem(total)?;
    for (i, r) in candidates.filter(tied) {
        let weight = load(r).1;
        if ticket < weight {
            return Some(i);
        }
        ticket -= weight;
    }
    None
}

#[cfg(test)]
mod tests;
