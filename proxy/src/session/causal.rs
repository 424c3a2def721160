//! The session's causal position against the world outside the connection: the monitor's
//! samples that release a sticky read, the session store that holds a shared session's
//! floor (read before a routed read, raised after a probe), and the hold on a write's
//! ReadyForQuery when its floor could not be stored (DESIGN.md §1 rules 2 and 4, §3).

use std::time::Instant;

use crate::lsn::{Lsn, Position};
use crate::metrics::StoreOp;
use crate::monitor::{Sampled, TopologySnapshot};
use crate::router::{Floor, Node, ReplicaView, Unknown, Unprobed};
use crate::session_store::{lost_floor_window, StoreError};

use super::probe::ProbeKind;
use super::{ClientStream, Session};

impl<C: ClientStream> Session<C> {
    /// Monotonic reads without a probe: once the monitor has sampled the replica of the last
    /// unprobed read since it completed, raise the floor to that sample and forget the
    /// replica; until then, return it (reads must stay there or go to the primary).
    /// `snapshot` and `views` are the monitor's view for this decision.
    pub(super) fn resolve_sticky(
        &mut self,
        snapshot: &TopologySnapshot,
        views: &[ReplicaView],
    ) -> Option<usize> {
        let sticky = self.routing.floors.sticky()?;
        let sampled = match self.ctx.replicas.get(sticky.replica) {
            Some(replica) => self.ctx.topology.replay_sampled_after(
                snapshot,
                &replica.addr.name,
                tokio::time::Instant::from_std(sticky.done),
                sticky.connection,
            ),
            None => Sampled::Unknown,
        };
        let timeline = views.get(sticky.replica).map_or(0, |v| v.timeline);
        self.routing.floors.resolve_sticky(sampled, timeline)
    }

    /// Read-your-writes without a probe: once the monitor has sampled the primary since the
    /// connection's last request there completed, under the same election, that sample
    /// settles the floor. A changed primary leaves the floor unknown until the connection's
    /// next request on the primary (DESIGN.md §1 rules 1 and 5).
    pub(super) fn resolve_unprobed(&mut self) {
        let Some(unprobed) = self.routing.floors.unprobed() else {
            return;
        };
        if let Some(position) = self.unprobed_sample(unprobed) {
            self.routing.floors.resolve_unprobed(position);
        }
    }

    /// [`Session::resolve_unprobed`] by a refresh of the primary that starts now (shared
    /// with every connection asking meanwhile), waited for until `deadline`. True when the
    /// floor is settled.
    pub(super) async fn refresh_unprobed(&mut self, deadline: std::time::Instant) -> bool {
        let Some(unprobed) = self.routing.floors.unprobed() else {
            return true;
        };
        let Some(name) = self.unprobed_node(unprobed) else {
            return false;
        };
        let refreshed = self.ctx.topology.refresh_primary(&name, deadline).await;
        // Still the same primary once the sample is in.
        let generation = self.ctx.topology.primary().current().generation;
        match refreshed.filter(|_| generation == unprobed.generation) {
            Some(position) => {
                self.routing.floors.resolve_unprobed(position);
                true
            }
            None => false,
        }
    }

    /// A sample of the primary that settles `unprobed`, if the monitor has one.
    fn unprobed_sample(&self, unprobed: Unprobed) -> Option<Position> {
        let name = self.unprobed_node(unprobed)?;
        let after = tokio::time::Instant::from_std(unprobed.done);
        self.ctx.topology.insert_sampled_after(&name, after)
    }

    /// The node the unprobed request ran on, while it is still the primary.
    fn unprobed_node(&self, unprobed: Unprobed) -> Option<std::sync::Arc<str>> {
        let view = self.ctx.topology.primary();
        let current = view.current();
        if current.generation != unprobed.generation {
            return None;
        }
        view.name(current.node?).cloned()
    }

    /// The floor of the session `key` names, or the connection's own without a key. A named
    /// session's floor is the stored one alone: the connection adds nothing to it. Also
    /// returns what the store held, when it was read.
    pub(super) async fn session_floor(&self, key: Option<&str>) -> (Floor, Option<Position>) {
        let Some(key) = key else {
            return (self.routing.floors.floor(), None);
        };
        if self.routing.unstored.contains(key) {
            return (Floor::Unknown, None);
        }
        match self.store_get(key).await {
            Some(Some(shared)) => (Floor::At(shared), Some(shared)),
            Some(None) => (Floor::None, None),
            None => (Floor::Unknown, None),
        }
    }

    /// The floor a read must respect: its session's and an `after_lsn` hint's, on the
    /// primary's timeline.
    pub(super) async fn current_floor(&mut self, after_lsn: Option<u64>) -> Floor {
        let key = self.routing.request.key.clone();
        let (floor, stored) = self.session_floor(key.as_deref()).await;
        self.routing.request.stored = stored;
        self.with_after_lsn(floor, after_lsn)
    }

    /// `floor` raised to an `after_lsn` hint's position, on the primary's timeline.
    pub(super) fn with_after_lsn(&self, mut floor: Floor, after_lsn: Option<u64>) -> Floor {
        if let Some(lsn) = after_lsn {
            let timeline = self
                .ctx
                .topology
                .snapshot()
                .primary()
                .and_then(|p| p.timeline)
                .unwrap_or(1);
            floor.raise(Position {
                timeline,
                lsn: Lsn::new(lsn),
            });
        }
        floor
    }

    /// Read a shared floor; `None` on error or timeout (counted). The store enforces
    /// `session_store.timeout` itself.
    async fn store_get(&self, key: &str) -> Option<Option<Position>> {
        let started = Instant::now();
        let result = self.ctx.store.get(key).await;
        self.record_store_call(StoreOp::Get, started, &result);
        result.ok()
    }

    /// Count a store call: its duration if it reached the store (a call refused during
    /// backoff would only skew the latency histogram), and its failure.
    fn record_store_call<T>(&self, op: StoreOp, started: Instant, result: &Result<T, StoreError>) {
        if !matches!(result, Err(StoreError::Refused(_))) {
            self.ctx.metrics.store_duration(op, started.elapsed());
        }
        if let Err(e) = result {
            tracing::debug!(error = %e, ?op, "session store call failed; reading from the primary");
            self.ctx.metrics.store_error(op);
        }
    }

    /// A probe answered: raise the floor of the request's session (the connection's, or a
    /// named session's in the store), then let the client see its ReadyForQuery.
    pub(super) async fn on_probed(
        &mut self,
        kind: ProbeKind,
        node: Node,
        position: Option<Position>,
    ) {
        let now = Instant::now();
        if let (ProbeKind::Replica { .. }, Some(p), Node::Replica(i)) = (kind, position, node) {
            self.routing.floors.replica_reported(i, p, now);
        }
        match (self.routing.request.key.clone(), position) {
            (None, Some(p)) if kind == ProbeKind::Primary => self.routing.floors.primary_probed(p),
            (None, Some(p)) => self.routing.floors.replica_probed(node.replica(), p, now),
            (None, None) => self.routing.floors.forget(Unknown::Position),
            // Boxed: the store call's future would otherwise be part of every session's
            // task, idle or not.
            (Some(key), Some(p)) => Box::pin(self.raise_named(&key, p)).await,
            (Some(key), None) => self.routing.unstored.insert(&key),
        }
        if let Some(held) = self.link.server.as_mut() {
            held.relay.release_ready(&mut self.to_client);
        }
    }

    /// Raise named session `key`'s stored floor to `floor`, unless the request read no data
    /// or the store already holds it (read for this request). Expiry counts from the last
    /// raise, which is safe: a floor older than session_ttl is behind every replica still in
    /// the pool.
    async fn raise_named(&mut self, key: &str, floor: Position) {
        let request = &self.routing.request;
        if !request.raises_shared || request.stored.is_some_and(|stored| stored >= floor) {
            return;
        }
        let started = Instant::now();
        let stored = self.ctx.store.advance(key, floor).await;
        self.record_store_call(StoreOp::Advance, started, &stored);
        if stored.is_ok() {
            self.routing.unstored.stored(key);
            return;
        }
        // The write committed; the client gets its result. Until this session's floor can be
        // stored, its reads through this connection go to the primary.
        self.routing.unstored.insert(key);
        if self.routing.request.may_write {
            // A read's raise is not waited for: it only keeps reads of this session on
            // other instances monotonic, and an outage should not slow every read down to
            // the replicas' lag.
            self.hold_output_until_replayed(floor);
        }
    }

    /// The store does not hold `floor`, so another connection or instance of this session
    /// would not see it: keep the client's output (its ReadyForQuery) back until every
    /// replica that can serve reads has replayed it, for at most the time after which any
    /// replica still in a pool has. The server connection is free meanwhile.
    fn hold_output_until_replayed(&mut self, floor: Position) {
        let topology = self.ctx.topology.clone();
        let lag = &self.ctx.config.lag;
        let window = lost_floor_window(lag);
        let settle = lag.poll_interval.saturating_mul(2);
        let started = tokio::time::Instant::now();
        let wait = tokio::spawn(async move {
            let replayed = topology
                .wait_replayed(floor.lsn, settle, started + window)
                .await;
            tracing::debug!(
                %floor,
                replayed,
                waited = ?started.elapsed(),
                "floor not stored: held ReadyForQuery until the replicas replayed it"
            );
        });
        self.output_hold = Some(tokio_util::task::AbortOnDropHandle::new(wait));
    }
}
