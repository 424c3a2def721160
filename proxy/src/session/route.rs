//! Routing inside a session: collect a whole request (a simple Query, or extended-protocol
//! messages up to Sync/Flush), classify what it runs, work out the session's consistency
//! requirement (level, floor, hints, rules), and pick the node with [`crate::router`]. After
//! the request, the causal probe's answer raises the floor (DESIGN.md §1).

use std::time::Instant;

use crate::config::{ConsistencyLevel, RouteTarget};
use crate::hints::Hints;
use crate::lsn::Position;
use crate::metrics::{FallbackReason, RouteReason, StoreOp};
use crate::monitor::Sampled;
use crate::protocol::extended::{Bind, Parse};
use crate::protocol::{extended, tag, Message};
use crate::router::{self, Floor, ReplicaView, Request, Route};
use crate::session_store::{lost_floor_window, StoreError};

use super::probe::ProbeKind;
use super::{Session, SessionError};

/// Which node a held server connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Primary,
    /// Index into the configured replicas.
    Replica(usize),
}

/// Statements at least this long are classified on a blocking thread (see `plan`).
const CLASSIFY_OFF_THREAD: usize = 64 * 1024;

/// How long a replica's own reported replay position may stand in for the monitor's.
const LAST_READ_TRUST: std::time::Duration = std::time::Duration::from_millis(500);

impl Target {
    /// Index into per-node tables ordered primary first, then replicas.
    pub(super) fn index(self) -> usize {
        match self {
            Target::Primary => 0,
            Target::Replica(i) => i + 1,
        }
    }
}

/// What a collected request runs, as far as routing is concerned.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub read_only: bool,
    /// Runs or describes a statement (Query, Describe, Execute, FunctionCall); a batch of
    /// only Parse/Bind/Close reads no data, so its floor need not be read or raised.
    pub reads: bool,
    pub hints: Hints,
    pub tables: Vec<String>,
}

/// Per-session routing state.
#[derive(Debug)]
pub(super) struct Routing {
    /// The connection's own floor (shared sessions also consult the store).
    pub floor: Floor,
    /// `SET causeway.consistency`.
    pub level: Option<ConsistencyLevel>,
    /// `SET causeway.route`.
    pub route: Option<RouteTarget>,
    /// `SET causeway.max_lag`.
    pub max_lag: Option<std::time::Duration>,
    /// `SET causeway.session`, or the startup option `-c causeway.session=`.
    pub session_key: Option<String>,
    /// The shared session key of the request in flight, if any.
    pub request_key: Option<String>,
    /// The floor read from the store for the request in flight, if one was read.
    pub stored: Option<Position>,
    /// The request in flight writes or reads data, so a shared floor it raises is stored.
    pub raises_shared: bool,
    /// The request in flight may write: if its floor cannot be stored, its ReadyForQuery
    /// waits until the replicas have replayed it (DESIGN.md §1 rule 4).
    pub may_write: bool,
    /// Messages of a request not yet routed.
    pub batch: Vec<Message>,
    /// The collected request waits for the held replica connection to be released.
    pub stalled: bool,
    /// A replica the next routing decision must avoid (a recovery conflict there).
    pub exclude: Option<usize>,
    /// The replay position a replica reported after this session's last read there: a
    /// real sample of that replica, so it may serve the next read at once (no wait for
    /// the monitor to see it that far). Used only while recent: a replica that restarts
    /// can come back behind what it once showed, but it is out of the pool for longer than
    /// this while it does.
    pub last_read: Option<(usize, Position, Instant)>,
    /// The replica this connection last read from without a probe, and when that read
    /// completed: until the monitor has sampled that replica since (an upper bound of what
    /// the read saw), later reads stay on it, where replay never goes backwards (DESIGN.md
    /// §1 rule 2). Cleared by a sample or by a probe on the primary.
    /// The third field is the monitor's control connection to that replica at the time:
    /// a new one means the replica may have restarted behind what the read saw.
    pub sticky: Option<(usize, Instant, u64)>,
    pub tiebreak: usize,
}

impl Routing {
    pub(super) fn new(session_key: Option<String>) -> Routing {
        Routing {
            floor: Floor::None,
            level: None,
            route: None,
            max_lag: None,
            session_key,
            request_key: None,
            stored: None,
            raises_shared: true,
            may_write: true,
            batch: Vec::new(),
            stalled: false,
            exclude: None,
            last_read: None,
            sticky: None,
            // Sessions stay on the replica of their last read: start each one at a random
            // place in the rotation, or idle ties would send every new session to the same one.
            tiebreak: rand::random::<u32>() as usize,
        }
    }
}

/// Whether a message ends a request (the point at which it can be routed).
pub(super) fn ends_request(t: u8) -> bool {
    matches!(
        t,
        tag::QUERY | tag::SYNC | tag::FLUSH | tag::FUNCTION_CALL | tag::TERMINATE
    ) || matches!(t, tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL)
}

impl Session {
    /// Whether replicas exist, so requests are routed and floors tracked.
    pub(super) fn routing_enabled(&self) -> bool {
        !self.ctx.replicas.is_empty()
    }

    /// Route and run the collected request.
    pub(super) async fn dispatch_batch(&mut self) -> Result<(), SessionError> {
        if self.server.is_some() {
            // A replica connection still answers the previous request: wait for it, then
            // route this one afresh (run loop).
            self.routing.stalled = true;
            return Ok(());
        }
        let batch = std::mem::take(&mut self.routing.batch);
        let mut plan = self.plan(&batch).await;
        self.routing.batch = batch;
        if self
            .routing
            .batch
            .last()
            .is_some_and(|m| m.tag == tag::FLUSH)
        {
            // The rest of this sequence (up to its Sync) must run on the same server
            // connection and could write: only the primary can take whatever comes.
            plan.read_only = false;
        }
        let target = if self.needs_server_for_batch() {
            self.choose_target(&plan).await
        } else {
            Target::Primary
        };
        let batch = std::mem::take(&mut self.routing.batch);
        tracing::debug!(?target, read_only = plan.read_only, tags = ?batch.iter().map(|m| m.tag as char).collect::<String>(), "routing request");
        for msg in batch {
            self.handle_message(msg, target).await?;
        }
        Ok(())
    }

    /// A batch made only of messages Causeway answers itself needs no routing decision.
    fn needs_server_for_batch(&self) -> bool {
        self.routing.batch.iter().any(|m| match m.tag {
            tag::SYNC | tag::FLUSH | tag::TERMINATE => false,
            tag::PARSE => Parse::decode(m.body()).is_none_or(|p| p.name.is_empty()),
            _ => true,
        })
    }

    /// Classify what a batch runs: every Query text, every Parse text, and the statement
    /// behind every Bind. Long statements are parsed on a blocking thread: a megabyte of
    /// SQL takes long enough to stall every session (and the replica monitor, whose samples
    /// would then look stale) sharing this runtime thread.
    pub(super) async fn plan(&self, batch: &[Message]) -> Plan {
        let mut plan = Plan {
            read_only: true,
            ..Plan::default()
        };
        for text in self.batch_texts(batch, &mut plan) {
            let class = if text.len() >= CLASSIFY_OFF_THREAD {
                let classifier = self.ctx.classifier.clone();
                let owned = text.clone();
                match tokio::task::spawn_blocking(move || classifier.classify(&owned)).await {
                    Ok(class) => class,
                    Err(_) => self.ctx.classifier.classify(&text),
                }
            } else {
                self.ctx.classifier.classify(&text)
            };
            // `BEGIN READ ONLY` classifies as read-only: its whole transaction runs on one
            // replica (DESIGN.md §2).
            if !class.is_read_only() {
                plan.read_only = false;
            }
            plan.tables.extend(class.tables.iter().cloned());
            merge_hints(&mut plan.hints, crate::hints::parse(&text));
        }
        plan
    }

    /// The statement texts a batch runs; notes in `plan` whether it reads (or calls a
    /// function, which is never read-only).
    fn batch_texts(&self, batch: &[Message], plan: &mut Plan) -> Vec<String> {
        let mut texts = Vec::new();
        let mut unnamed = self.unnamed.clone();
        for msg in batch {
            plan.reads |= matches!(
                msg.tag,
                tag::QUERY | tag::DESCRIBE | tag::EXECUTE | tag::FUNCTION_CALL
            );
            let text = match msg.tag {
                tag::QUERY => {
                    extended::query_text(msg.body()).map(|t| crate::protocol::text(t).into_owned())
                }
                tag::PARSE => Parse::decode(msg.body()).map(|p| {
                    let text = crate::protocol::text(p.query).into_owned();
                    if p.name.is_empty() {
                        unnamed = None;
                    }
                    text
                }),
                tag::BIND => Bind::decode(msg.body()).and_then(|b| {
                    let def = if b.statement.is_empty() {
                        unnamed.clone()
                    } else {
                        self.state.statements.get(b.statement).cloned()
                    };
                    def.map(|d| crate::protocol::text(&d.query).into_owned())
                }),
                tag::FUNCTION_CALL => {
                    plan.read_only = false;
                    None
                }
                _ => None,
            };
            texts.extend(text);
        }
        texts
    }

    /// Decide the node for a request; waits up to `consistency.max_wait` for a replica to
    /// catch up when one could.
    async fn choose_target(&mut self, plan: &Plan) -> Target {
        for _ in 0..plan.hints.errors {
            self.ctx.metrics.hint_error();
        }
        let policy = self.ctx.rules.policy(
            plan.hints.tag.as_deref(),
            &plan.tables,
            self.application_name(),
        );
        let level = plan
            .hints
            .consistency
            .or(policy.consistency)
            .or(self.routing.level)
            .unwrap_or(self.ctx.config.consistency.default);
        let route_hint = plan.hints.route.or(policy.route).or(self.routing.route);
        let max_lag = plan
            .hints
            .max_lag
            .or(policy.max_lag)
            .or(self.routing.max_lag)
            .unwrap_or(self.ctx.config.consistency.max_lag);
        self.routing.request_key = self.shared_key(plan);
        self.routing.stored = None;
        let stick_to = self.resolve_sticky();
        let mut request = Request {
            read_only: plan.read_only,
            pinned: self.state.pin.is_some(),
            level,
            route: route_hint,
            max_lag,
            floor: self.routing.floor,
        };
        let mut views = self.replica_views();
        if let Some(i) = stick_to {
            for (j, view) in views.iter_mut().enumerate() {
                view.in_pool &= j == i;
            }
        }
        self.routing.raises_shared = !plan.read_only || plan.reads;
        self.routing.may_write = !plan.read_only;
        if plan.reads && router::floor_matters(&request, &views) {
            // Only reads that a replica could serve pay for reading a shared floor.
            request.floor = self.current_floor(plan).await;
        }
        let started = Instant::now();
        if let Some((i, seen, _)) = self
            .routing
            .last_read
            .filter(|(_, _, at)| at.elapsed() < LAST_READ_TRUST)
        {
            if let Some(view) = views.get_mut(i).filter(|v| v.timeline == seen.timeline) {
                view.replay = Some(view.replay.map_or(seen.lsn, |r| r.max(seen.lsn)));
            }
        }
        if let Some(view) = self.routing.exclude.take().and_then(|i| views.get_mut(i)) {
            view.in_pool = false;
        }
        self.routing.tiebreak = self.routing.tiebreak.wrapping_add(1);
        let mut route = router::route(&request, &views, self.routing.tiebreak);
        let deadline = started + self.ctx.config.consistency.max_wait;
        let mut waited = false;
        while let Route::Primary(reason) = route {
            if !reason.worth_waiting() || Instant::now() >= deadline {
                break;
            }
            waited = true;
            if !self.refresh_views(&mut views, deadline).await {
                break;
            }
            route = router::route(&request, &views, self.routing.tiebreak);
        }
        if waited {
            self.ctx.metrics.consistency_wait(started.elapsed());
        }
        self.record_route(
            route,
            waited,
            hinted(plan, route_hint, policy.consistency.is_some()),
        );
        match route {
            Route::Primary(_) => Target::Primary,
            Route::Replica(i, _) => Target::Replica(i),
        }
    }

    fn record_route(&self, route: Route, waited: bool, by_hint: Option<RouteReason>) {
        let (target, reason) = match route {
            Route::Primary(reason) => ("primary", reason),
            Route::Replica(i, reason) => (
                self.ctx
                    .replicas
                    .get(i)
                    .map_or("replica", |r| &*r.addr.name),
                reason,
            ),
        };
        let label = by_hint.unwrap_or(match reason {
            router::Reason::Write => RouteReason::Write,
            router::Reason::Pinned => RouteReason::Pinned,
            router::Reason::Strong => RouteReason::ConsistencyStrong,
            router::Reason::HintPrimary => RouteReason::Hint,
            router::Reason::Eventual | router::Reason::Bounded => RouteReason::ReadOnly,
            router::Reason::FreshReplica => RouteReason::FreshReplica,
            router::Reason::NoReplica => RouteReason::NoReplica,
            router::Reason::FloorAhead
            | router::Reason::FloorUnknown
            | router::Reason::LagTooHigh => RouteReason::ConsistencyFallback,
        });
        self.ctx.metrics.query(target, label);
        tracing::debug!(target, reason = %label, router = ?reason, waited, "routed");
        if reason.is_fallback() && reason != router::Reason::NoReplica {
            let fallback = match reason {
                router::Reason::FloorUnknown => FallbackReason::StoreError,
                _ if waited => FallbackReason::WaitTimeout,
                _ => FallbackReason::FloorAhead,
            };
            self.ctx.metrics.fallback(fallback);
        } else if reason == router::Reason::NoReplica {
            self.ctx.metrics.fallback(FallbackReason::NoEligibleReplica);
        }
    }

    /// The replicas as the router sees them now.
    fn replica_views(&self) -> Vec<ReplicaView> {
        let Some(topology) = &self.ctx.topology else {
            return Vec::new();
        };
        let snapshot = topology.snapshot();
        let primary_timeline = snapshot.primary().and_then(|p| p.timeline);
        self.ctx
            .replicas
            .iter()
            .map(|replica| {
                let status = snapshot.node(&replica.addr.name);
                ReplicaView {
                    in_pool: status.is_some_and(|s| s.is_usable()),
                    timeline: status
                        .and_then(|s| s.timeline)
                        .or(primary_timeline)
                        .unwrap_or(0),
                    replay: status.and_then(|s| s.replay_lsn),
                    lag_seconds: status
                        .and_then(|s| s.lag_seconds)
                        .map_or(f64::INFINITY, |d| d.as_secs_f64()),
                    weight: replica.weight,
                    outstanding: replica.outstanding(),
                }
            })
            .collect()
    }

    /// One shared refresh of every usable replica's replay position. Returns false when
    /// nothing could be refreshed.
    async fn refresh_views(&self, views: &mut [ReplicaView], deadline: Instant) -> bool {
        let Some(topology) = &self.ctx.topology else {
            return false;
        };
        let refreshes =
            self.ctx
                .replicas
                .iter()
                .zip(views.iter())
                .map(|(replica, view)| async move {
                    if view.in_pool {
                        topology.refresh_replica(&replica.addr.name, deadline).await
                    } else {
                        None
                    }
                });
        let fresh = futures_util::future::join_all(refreshes).await;
        let mut any = false;
        for (view, lsn) in views.iter_mut().zip(fresh) {
            if let Some(lsn) = lsn {
                any = true;
                view.replay = Some(view.replay.map_or(lsn, |r| r.max(lsn)));
            }
        }
        any
    }

    /// Monotonic reads without a probe: once the monitor has sampled the replica of the last
    /// unprobed read since it completed, raise the floor to that sample and forget the
    /// replica; until then, return it (reads must stay there or go to the primary).
    fn resolve_sticky(&mut self) -> Option<usize> {
        let (i, done, connection) = self.routing.sticky?;
        let sampled = match (&self.ctx.topology, self.ctx.replicas.get(i)) {
            (Some(topology), Some(replica)) => topology.replay_sampled_after(
                &replica.addr.name,
                tokio::time::Instant::from_std(done),
                connection,
            ),
            _ => Sampled::Unknown,
        };
        match sampled {
            Sampled::NotYet => return Some(i),
            Sampled::Replay(lsn) => {
                let ProbeKind::Replica { timeline } = probe_kind(self, Target::Replica(i)) else {
                    return Some(i);
                };
                self.routing.floor.raise(Position { timeline, lsn });
            }
            // What the read saw is no longer bounded by anything known: only the primary
            // satisfies the floor until a probe there re-establishes it.
            Sampled::Unknown => self.routing.floor = Floor::Unknown,
        }
        self.routing.sticky = None;
        None
    }

    /// A read on replica `i` completed without a probe: stay there until it is sampled.
    pub(super) fn stick_to(&mut self, i: usize) {
        let connection = match (&self.ctx.topology, self.ctx.replicas.get(i)) {
            (Some(topology), Some(replica)) => topology.replica_connection(&replica.addr.name),
            _ => 0,
        };
        self.routing.sticky = Some((i, Instant::now(), connection));
    }

    /// The shared session key for this request, if the session is shared (DESIGN.md §3).
    fn shared_key(&self, plan: &Plan) -> Option<String> {
        if let Some(key) = &plan.hints.session {
            return Some(format!("s:{key}"));
        }
        if let Some(key) = &self.routing.session_key {
            return Some(format!("s:{key}"));
        }
        match self.ctx.config.session.key {
            crate::config::SessionKeyMode::User => Some(format!("u:{}", self.login.user)),
            crate::config::SessionKeyMode::Connection => None,
        }
    }

    /// The session's floor: the connection's own and, for a shared session, the stored one.
    pub(super) async fn session_floor(&mut self) -> Floor {
        let mut floor = self.routing.floor;
        let key = self
            .routing
            .request_key
            .clone()
            .or_else(|| self.shared_key(&Plan::default()));
        if let Some(key) = key {
            match self.store_get(&key).await {
                Some(Some(shared)) => {
                    self.routing.stored = Some(shared);
                    floor.raise(shared);
                }
                Some(None) => {}
                None => floor = Floor::Unknown,
            }
        }
        floor
    }

    /// The floor this request must respect: the session's and an `after_lsn` hint.
    async fn current_floor(&mut self, plan: &Plan) -> Floor {
        let mut floor = self.session_floor().await;
        if let Some(lsn) = plan.hints.after_lsn {
            let timeline = self
                .ctx
                .topology
                .as_ref()
                .and_then(|t| t.snapshot().primary().and_then(|p| p.timeline))
                .unwrap_or(1);
            floor.raise(Position {
                timeline,
                lsn: crate::lsn::Lsn::new(lsn),
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

    /// A probe answered: raise the floor, store it for a shared session, then let the
    /// client see its ReadyForQuery.
    pub(super) async fn on_probed(
        &mut self,
        kind: ProbeKind,
        target: Target,
        position: Option<Position>,
    ) {
        match (kind, position) {
            (ProbeKind::Primary, Some(p)) => {
                // The primary's position after this request covers anything a replica
                // showed earlier.
                self.routing.floor.reset_to(p);
                self.routing.sticky = None;
            }
            (ProbeKind::Replica { .. }, Some(p)) => {
                self.routing.floor.raise(p);
                if let Target::Replica(i) = target {
                    self.routing.last_read = Some((i, p, Instant::now()));
                }
            }
            (_, None) => self.routing.floor = Floor::Unknown,
        }
        if let (Some(key), Floor::At(floor)) =
            (self.routing.request_key.clone(), self.routing.floor)
        {
            if !self.routing.raises_shared
                || self.routing.stored.is_some_and(|stored| stored >= floor)
            {
                // The request read no data, or the store already holds this floor (read
                // for this request): nothing to raise. Expiry counts from the last raise, which is safe: a floor older
                // than session_ttl is behind every replica still in the pool.
                return self.release_ready();
            }
            let started = Instant::now();
            let stored = self.ctx.store.advance(&key, floor).await;
            self.record_store_call(StoreOp::Advance, started, &stored);
            if stored.is_err() {
                // The write committed; the client gets its result. Until the floor can be
                // stored, this connection reads from the primary.
                self.routing.floor = Floor::Unknown;
                if self.routing.may_write {
                    // A read's raise is not waited for: it only keeps reads of this
                    // session on other instances monotonic, and an outage should not
                    // slow every read down to the replicas' lag.
                    self.hold_output_until_replayed(floor);
                }
            }
        }
        self.release_ready();
    }

    /// The store does not hold `floor`, so another connection or instance of this session
    /// would not see it: keep the client's output (its ReadyForQuery) back until every
    /// replica that can serve reads has replayed it, for at most the time after which any
    /// replica still in a pool has. The server connection is free meanwhile.
    fn hold_output_until_replayed(&mut self, floor: Position) {
        let Some(topology) = self.ctx.topology.clone() else {
            return;
        };
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

    /// Let the client see the ReadyForQuery held for the probe.
    fn release_ready(&mut self) {
        if let Some(held) = self.server.as_mut() {
            held.relay.release_ready(&mut self.to_client);
        }
    }

    /// The client's application_name (startup parameter or a tracked SET).
    fn application_name(&self) -> Option<&str> {
        self.state.application_name()
    }
}

/// A route chosen by a hint or rule is labelled as such in metrics.
fn hinted(
    plan: &Plan,
    route_hint: Option<RouteTarget>,
    rule_consistency: bool,
) -> Option<RouteReason> {
    if plan.hints.route.is_some() || plan.hints.consistency.is_some() {
        Some(RouteReason::Hint)
    } else if route_hint.is_some() || rule_consistency {
        Some(RouteReason::Rule)
    } else {
        None
    }
}

/// Probe kind for a server connection on `target`.
pub(super) fn probe_kind(session: &Session, target: Target) -> ProbeKind {
    match target {
        Target::Primary => ProbeKind::Primary,
        Target::Replica(i) => {
            let Some(topology) = &session.ctx.topology else {
                return ProbeKind::Replica { timeline: 0 };
            };
            let snapshot = topology.snapshot();
            let timeline = session
                .ctx
                .replicas
                .get(i)
                .and_then(|r| snapshot.node(&r.addr.name))
                .and_then(|s| s.timeline)
                .or_else(|| snapshot.primary().and_then(|p| p.timeline))
                .unwrap_or(0);
            ProbeKind::Replica { timeline }
        }
    }
}

/// Combine the hints of several statements of one request: the first value of each key
/// wins; errors add up.
fn merge_hints(into: &mut Hints, more: Hints) {
    into.route = into.route.or(more.route);
    into.consistency = into.consistency.or(more.consistency);
    into.max_lag = into.max_lag.or(more.max_lag);
    into.after_lsn = into.after_lsn.or(more.after_lsn);
    if into.session.is_none() {
        into.session = more.session;
    }
    if into.tag.is_none() {
        into.tag = more.tag;
    }
    into.errors = into.errors.saturating_add(more.errors);
}
