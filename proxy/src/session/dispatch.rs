//! Routing a collected request (a simple Query, or extended-protocol messages up to
//! Sync/Flush): classify it (`plan`), work out its requirement ([`policy`]), read the
//! session's floor (`causal`), ask the pure router for a node, wait up to
//! `consistency.max_wait` for a replica to catch up, count the decision, and run the
//! request there.

use std::time::Instant;

use crate::config::{ConsistencyLevel, RouteTarget};
use crate::context::Context;
use crate::lsn::Position;
use crate::metrics::{RouteReason, WaitOutcome};
use crate::monitor::TopologySnapshot;
use crate::protocol::{tag, Message};
use crate::router::policy::{self, FallbackContext, Settings};
use crate::router::{
    self, Cause, Floor, FloorBook, Node, ReplicaView, Request, Route, Unknown, Unstored,
};

use super::plan::{self, Plan};

mod now;

use super::probe::ProbeKind;
use super::{ClientStream, Session, SessionError};
pub(super) use now::Later;

/// Per-connection routing state.
#[derive(Debug)]
pub(super) struct Routing {
    /// Replicas are configured: requests are routed and floors tracked.
    pub enabled: bool,
    /// The connection's own floor (named sessions' floors are in the store).
    pub floors: FloorBook,
    /// Named sessions whose floors this connection could not store.
    pub unstored: Unstored,
    /// `SET causeway.*`.
    pub settings: Settings,
    /// The request in flight, as far as its shared floor is concerned.
    pub request: InFlight,
    /// Messages of a request not yet routed, and their bytes.
    pub batch: Vec<Message>,
    batch_bytes: usize,
    /// The collected request waits for the held replica connection to be released.
    pub stalled: bool,
    /// A replica the next routing decision must avoid (a recovery conflict there).
    pub exclude: Option<usize>,
    /// The next routing decision must pick the primary (a standby refused the request).
    pub force_primary: bool,
    /// The request being sent only changes session settings: no causal probe follows it.
    pub state_only: bool,
    /// The connection reads what a replica could serve (since its last read-write
    /// transaction block): its requests on the primary ask the monitor for a sample at
    /// once, so the floor of the read after them is tight. A connection that only runs
    /// write transactions (TPC-B) never asks.
    pub replica_reader: bool,
    tiebreak: usize,
}

/// What the request in flight does with a shared session's floor.
#[derive(Debug)]
pub(super) struct InFlight {
    /// The named session the request belongs to, if any: its floor is the request's
    /// alone (DESIGN.md §3); unnamed requests use the connection's.
    pub key: Option<String>,
    /// The floor read from the store for the request, if one was read.
    pub stored: Option<Position>,
    /// The request writes or reads data, so a shared floor it raises is stored.
    pub raises_shared: bool,
    /// The request may write: if its floor cannot be stored, its ReadyForQuery waits until
    /// the replicas have replayed it (DESIGN.md §1 rule 4).
    pub may_write: bool,
    /// The request promises monotonic reads (every level but `eventual`): an unprobed
    /// replica read of it makes the connection's later reads stay on that replica.
    pub monotonic: bool,
}

impl Routing {
    pub(super) fn new(session_key: Option<String>, enabled: bool) -> Routing {
        Routing {
            enabled,
            floors: FloorBook::default(),
            unstored: Unstored::default(),
            settings: Settings {
                session_key,
                ..Settings::default()
            },
            request: InFlight {
                key: None,
                stored: None,
                raises_shared: true,
                may_write: true,
                monotonic: true,
            },
            batch: Vec::new(),
            batch_bytes: 0,
            stalled: false,
            exclude: None,
            force_primary: false,
            state_only: false,
            replica_reader: false,
            // Sessions stay on the replica of their last read: start each one at a random
            // place in the rotation, or idle ties would send every new session to the same one.
            tiebreak: rand::random::<u32>() as usize,
        }
    }

    /// Keep `msg` with the request being collected.
    pub(super) fn collect(&mut self, msg: Message) {
        self.batch_bytes = self.batch_bytes.saturating_add(msg.raw.len());
        super::io::push_kept(&mut self.batch, msg);
    }

    /// Whether keeping `msg` too would take the collected request past
    /// [`REQUEST_BUFFER`]: it is then routed as it stands (DESIGN.md §7).
    pub(super) fn over_budget(&self, msg: &Message) -> bool {
        self.batch_bytes.saturating_add(msg.raw.len()) > REQUEST_BUFFER
    }

    /// Take the collected request.
    fn take_batch(&mut self) -> Vec<Message> {
        self.batch_bytes = 0;
        std::mem::take(&mut self.batch)
    }

    /// Reuse a routed request's emptied list for the next one, unless a new request is
    /// already being collected or it grew large (a long pipeline).
    fn keep_batch_buffer(&mut self, mut batch: Vec<Message>) {
        if self.batch.capacity() == 0 && batch.capacity() <= SPARE_BATCH_MAX {
            batch.clear();
            self.batch = batch;
        }
    }

    /// The causal probe a connection on `node` gets when floors are tracked: the
    /// primary's, appended only behind a named session's requests (which must store their
    /// floor before the client sees the result, DESIGN.md §1 rule 4; a key named inside a
    /// transaction counts, so this is decided per request); a replica's only for a named
    /// session. A connection's own reads stick to their replica instead, and its requests
    /// on the primary wait for a monitor sample taken after them, shared by every
    /// connection ([`crate::router::Unprobed`]).
    pub(super) fn probe_for(&self, ctx: &Context, node: Node) -> Option<ProbeKind> {
        if !self.enabled {
            return None;
        }
        match node {
            Node::Primary => Some(ProbeKind::Primary),
            Node::Replica(i) => self.request.key.is_some().then(|| ProbeKind::Replica {
                timeline: replica_timeline(ctx, i),
            }),
        }
    }
}

/// Bytes of a request kept to route it as a whole. A longer one (a JDBC batch of a million
/// statements before its Sync is legal) cannot be proven read-only without seeing it all:
/// it goes to the primary, and what follows streams there.
pub(super) const REQUEST_BUFFER: usize = 1 << 20;

/// The longest request list kept for the next request.
const SPARE_BATCH_MAX: usize = 16;

/// Whether a message ends a request (the point at which it can be routed).
pub(super) fn ends_request(t: u8) -> bool {
    matches!(
        t,
        tag::QUERY | tag::SYNC | tag::FLUSH | tag::FUNCTION_CALL | tag::TERMINATE
    ) || matches!(t, tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL)
}

impl<C: ClientStream> Session<C> {
    /// Route and run the collected request.
    pub(super) async fn dispatch_batch(&mut self) -> Result<(), SessionError> {
        if self.link.server.is_some() {
            // A replica connection still answers the previous request: wait for it, then
            // route this one afresh (run loop).
            self.routing.stalled = true;
            return Ok(());
        }
        let batch = self.routing.take_batch();
        let mut plan = plan::plan(&self.ctx, &self.front, &batch).await;
        if !batch.last().is_some_and(|m| ends_request(m.tag)) {
            // Routed before its end (past REQUEST_BUFFER): only the primary can take
            // whatever follows.
            plan.read_only = false;
        }
        self.routing.state_only = plan.state_only;
        let node = if plan::needs_server(&batch) {
            self.choose_node(&plan).await
        } else {
            Node::Primary
        };
        tracing::debug!(?node, read_only = plan.read_only, tags = ?batch.iter().map(|m| m.tag as char).collect::<String>(), "routing request");
        self.run_batch(batch, node).await
    }

    /// Run a routed request on `node`.
    async fn run_batch(&mut self, mut batch: Vec<Message>, node: Node) -> Result<(), SessionError> {
        let handled = self.handle_batch(&mut batch, node).await;
        self.routing.keep_batch_buffer(batch);
        // Only this request's own messages may skip the probe (a pinned or in-transaction
        // client's next messages are forwarded without a plan).
        self.routing.state_only = false;
        handled
    }

    async fn handle_batch(
        &mut self,
        batch: &mut Vec<Message>,
        node: Node,
    ) -> Result<(), SessionError> {
        for msg in batch.drain(..) {
            self.handle_message(msg, node).await?;
        }
        Ok(())
    }

    /// Decide the node for a request; waits up to `consistency.max_wait` for a replica to
    /// catch up when one could.
    async fn choose_node(&mut self, plan: &Plan) -> Node {
        let key = self.shared_key(plan.hints.session.as_deref());
        let (mut request, views, chosen_by) = self.route_inputs(plan, key);
        if plan.reads && router::floor_matters(&request, &views) {
            // Only reads that a replica could serve pay for reading a named session's floor.
            request.floor = self.current_floor(plan.hints.after_lsn).await;
        }
        let mut deciding = self.decide(request, views, chosen_by, plan.hints.after_lsn);
        if deciding.wait {
            self.wait_for_replica(&mut deciding).await;
        }
        self.record(deciding)
    }

    /// [`Session::choose_node`] without awaiting anything, for a request of the
    /// connection's own session (no named session: no floor to read from the store): the
    /// node, or the decision to finish once a replica has had time to catch up.
    pub(super) fn choose_node_now(&mut self, plan: &Plan) -> Result<Node, Box<Deciding>> {
        let (mut request, views, chosen_by) = self.route_inputs(plan, None);
        if plan.reads && router::floor_matters(&request, &views) {
            self.routing.request.stored = None;
            request.floor = self.with_after_lsn(self.routing.floors.floor(), plan.hints.after_lsn);
        }
        let deciding = self.decide(request, views, chosen_by, plan.hints.after_lsn);
        if deciding.wait {
            return Err(Box::new(deciding));
        }
        Ok(self.record(deciding))
    }

    /// A decision made to wait: wait, then count it.
    pub(super) async fn finish_choice(&mut self, mut deciding: Deciding) -> Node {
        self.wait_for_replica(&mut deciding).await;
        self.record(deciding)
    }

    /// What a request of named session `key` (`None`: the connection's own) needs, as the
    /// router sees it (with the replicas it may use), and which rule or hint chose a target
    /// for it. Notes the request in flight.
    fn route_inputs(
        &mut self,
        plan: &Plan,
        key: Option<String>,
    ) -> (Request, Views, Option<RouteReason>) {
        for _ in 0..plan.hints.errors {
            self.ctx.metrics.hint_error();
        }
        let rules = self.ctx.rules.policy(
            plan.hints.tag.as_deref(),
            &plan.tables,
            self.front.state.application_name(),
        );
        let mut need = policy::requirement(
            &plan.hints,
            &rules,
            &self.routing.settings,
            &self.ctx.config.consistency,
        );
        if need.chosen_by.is_none() && !plan.read_only {
            // What made a write of it, when it is not a plain write.
            if plan.unparseable {
                need.chosen_by = Some(RouteReason::Unparseable);
            } else if plan.begins {
                need.chosen_by = Some(RouteReason::Transaction);
            }
        }
        if plan.node_local && need.chosen_by != Some(RouteReason::Hint) {
            need.route = Some(RouteTarget::Primary);
            need.chosen_by = Some(RouteReason::NodeLocal);
        }
        // Only the connection's own reads stick to a replica; a named session's are bounded
        // by the floor it stores, and `eventual` reads promise no order at all.
        let monotonic = need.level != ConsistencyLevel::Eventual;
        // One snapshot of the monitor's view for the whole decision.
        let snapshot = self.ctx.topology.snapshot();
        let mut views = replica_views(&self.ctx, &snapshot);
        let stick_to = if key.is_none() && monotonic {
            self.resolve_unprobed();
            self.resolve_sticky(&snapshot, &views)
        } else {
            None
        };
        let floor = match key {
            None => self.routing.floors.floor(),
            Some(_) => Floor::None,
        };
        self.routing.request = InFlight {
            key,
            stored: None,
            raises_shared: !plan.read_only || plan.reads,
            may_write: !plan.read_only,
            monotonic,
        };
        let request = Request {
            read_only: plan.read_only,
            pinned: self.front.state.pin.is_some(),
            level: need.level,
            route: need.route,
            max_lag: need.max_lag,
            floor,
        };
        if let Some(i) = stick_to {
            for (j, view) in views.iter_mut().enumerate() {
                view.in_pool &= j == i;
            }
        }
        (request, views, need.chosen_by)
    }

    /// Routes `request` once, and says whether waiting for a replica could change that.
    fn decide(
        &mut self,
        mut request: Request,
        mut views: Views,
        chosen_by: Option<RouteReason>,
        after_lsn: Option<u64>,
    ) -> Deciding {
        let lost_timeline = self.rebase_floor(&mut request);
        let started = Instant::now();
        self.routing.floors.apply_last_read(&mut views, started);
        if let Some(view) = self.routing.exclude.take().and_then(|i| views.get_mut(i)) {
            view.in_pool = false;
        }
        if std::mem::take(&mut self.routing.force_primary) {
            views.iter_mut().for_each(|view| view.in_pool = false);
        }
        self.routing.tiebreak = self.routing.tiebreak.wrapping_add(1);
        let tiebreak = self.routing.tiebreak;
        let route = router::route(&request, &views, tiebreak);
        let max_wait = self.ctx.config.consistency.max_wait;
        // The floor is unknown only because the connection's last request on the primary
        // awaits a sample: one shared refresh of the primary can settle it.
        let can_wait = !max_wait.is_zero();
        let unprobed = can_wait
            && route == Route::Primary(Cause::FloorUnknown)
            && self.routing.request.key.is_none()
            && self.routing.floors.unprobed().is_some();
        let wait = unprobed || (can_wait && self.worth_waiting(route, &request, &views));
        Deciding {
            request,
            views,
            chosen_by,
            lost_timeline,
            started,
            deadline: started + max_wait,
            tiebreak,
            route,
            wait,
            unprobed,
            after_lsn,
            waited: false,
        }
    }

    /// Whether waiting for a replica could serve a request routed to the primary: it fell
    /// back for a reason a replica catching up removes, and (for a floor ahead) a replica
    /// can reach it within `max_wait` by its measured lag.
    fn worth_waiting(&self, route: Route, request: &Request, views: &[ReplicaView]) -> bool {
        let Route::Primary(cause) = route else {
            return false;
        };
        if !cause.worth_waiting() {
            return false;
        }
        if cause == Cause::FloorAhead && !self.wait_can_succeed(request, views) {
            self.ctx.metrics.wait_outcome(WaitOutcome::Skipped);
            return false;
        }
        true
    }

    /// Waits up to `consistency.max_wait` for a replica to reach the request's floor (first
    /// for the floor itself, when a request on the primary awaits a sample).
    async fn wait_for_replica(&mut self, d: &mut Deciding) {
        if std::mem::take(&mut d.unprobed) {
            // Not a wait for a replica yet: the sample replaces the probe a write had.
            if !self.refresh_unprobed(d.deadline).await {
                return;
            }
            d.request.floor = self.with_after_lsn(self.routing.floors.floor(), d.after_lsn);
            d.lost_timeline = self.rebase_floor(&mut d.request);
            d.route = router::route(&d.request, &d.views, d.tiebreak);
            if !self.worth_waiting(d.route, &d.request, &d.views) {
                return;
            }
        }
        while let Route::Primary(cause) = d.route {
            if !cause.worth_waiting() || Instant::now() >= d.deadline {
                break;
            }
            d.waited = true;
            if !refresh_views(&self.ctx, &mut d.views, d.deadline).await {
                break;
            }
            d.route = router::route(&d.request, &d.views, d.tiebreak);
        }
    }

    /// Counts the decision and names its node.
    fn record(&mut self, d: Deciding) -> Node {
        if router::floor_matters(&d.request, &d.views) {
            self.routing.replica_reader = true;
        } else if d.chosen_by == Some(RouteReason::Transaction) {
            // A read-write transaction block: its requests never read from a replica.
            self.routing.replica_reader = false;
        }
        if d.waited {
            self.ctx.metrics.consistency_wait(d.started.elapsed());
            let outcome = match d.route {
                Route::Replica(..) => WaitOutcome::CaughtUp,
                Route::Primary(_) => WaitOutcome::TimedOut,
            };
            self.ctx.metrics.wait_outcome(outcome);
        }
        let context = FallbackContext {
            waited: d.waited,
            unknown: match (&self.routing.request.key, d.request.floor) {
                (_, floor) if floor != Floor::Unknown => None,
                (Some(_), _) => Some(Unknown::Store),
                (None, _) => self.routing.floors.unknown(),
            },
            other_timeline: d.lost_timeline
                || match d.request.floor {
                    Floor::At(floor) => d
                        .views
                        .iter()
                        .filter(|v| v.in_pool)
                        .all(|v| v.timeline != floor.timeline),
                    _ => false,
                },
        };
        record_route(&self.ctx, d.route, context, d.chosen_by);
        d.route.node()
    }
}

/// A routing decision under way: routed once, maybe to wait for a replica.
#[derive(Debug)]
pub(super) struct Deciding {
    request: Request,
    views: Views,
    chosen_by: Option<RouteReason>,
    lost_timeline: bool,
    started: Instant,
    deadline: Instant,
    tiebreak: usize,
    route: Route,
    /// A replica could catch up within `max_wait`: worth waiting for.
    wait: bool,
    /// The floor awaits a sample of the primary ([`crate::router::Unprobed`]): refresh
    /// it first.
    unprobed: bool,
    /// The request's `after_lsn` hint, to apply again to a refreshed floor.
    after_lsn: Option<u64>,
    waited: bool,
}

impl<C: ClientStream> Session<C> {
    /// Puts a floor from an older timeline on the newest one, or marks it unknown when the
    /// write behind it was lost in a failover (DESIGN.md §1 rule 5). True when lost.
    fn rebase_floor(&self, request: &mut Request) -> bool {
        let Floor::At(floor) = request.floor else {
            return false;
        };
        let view = self.ctx.topology.primary();
        if floor.timeline >= view.newest_timeline() {
            return false;
        }
        let (newest, switched) = view.timeline();
        match router::timeline::rebase(request.floor, newest, switched) {
            router::timeline::Rebased::Floor(floor) => {
                request.floor = floor;
                false
            }
            router::timeline::Rebased::Lost => {
                request.floor = Floor::Unknown;
                true
            }
        }
    }

    /// The named session of a request with this `session=` hint, if it has one.
    pub(super) fn shared_key(&self, hinted: Option<&str>) -> Option<String> {
        let owner = policy::Owner {
            mode: self.ctx.config.session.key,
            scope: self.ctx.config.session.scope,
            database: &self.link.login.database,
            user: &self.link.login.user,
        };
        policy::shared_key(hinted, &self.routing.settings, owner)
    }
}

impl<C: ClientStream> Session<C> {
    /// Whether a replica may reach the request's floor within `max_wait`, judged by the
    /// replicas' measured lag and when the primary wrote the floor (DESIGN.md §1): a wait
    /// that cannot succeed is not started.
    fn wait_can_succeed(&self, request: &Request, views: &[ReplicaView]) -> bool {
        let Floor::At(floor) = request.floor else {
            return true;
        };
        let age = self
            .ctx
            .topology
            .primary_short_of(floor.lsn)
            .map(|at| at.elapsed());
        let lag = &self.ctx.config.lag;
        let max_wait = self.ctx.config.consistency.max_wait;
        router::wait::can_catch_up(views, floor, age, max_wait, lag.poll_interval)
    }
}

/// Count a routing decision (`causeway_queries_total`, fallbacks by reason).
fn record_route(
    ctx: &Context,
    route: Route,
    context: FallbackContext,
    chosen_by: Option<RouteReason>,
) {
    let target = match route.node() {
        Node::Primary => "primary",
        Node::Replica(i) => ctx.replicas.get(i).map_or("replica", |r| &*r.addr.name),
    };
    let cause = route.cause();
    let label = policy::route_label(cause, chosen_by);
    match ctx.timers_of(route.node()) {
        Some(timers) => timers.route(label),
        None => ctx.metrics.query(target, label),
    }
    tracing::debug!(target, reason = %label, router = ?cause, ?context, "routed");
    if let Some(fallback) = policy::fallback_label(cause, context) {
        ctx.metrics.fallback(fallback);
    }
}

/// The replicas as the router sees them (a few: kept inline, not on the heap).
type Views = smallvec::SmallVec<[ReplicaView; 4]>;

/// The replicas as the router sees them in `snapshot`.
fn replica_views(ctx: &Context, snapshot: &TopologySnapshot) -> Views {
    let primary_timeline = snapshot.primary().and_then(|p| p.timeline);
    let now = tokio::time::Instant::now();
    ctx.replicas
        .iter()
        .map(|replica| {
            let status = snapshot.node(&replica.addr.name);
            ReplicaView {
                // A read candidate must be in recovery: an elected or split-brain primary
                // is never read from as a replica.
                in_pool: status.is_some_and(|s| s.is_usable_at(now) && s.in_recovery == Some(true)),
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

/// The timeline of replica `i`: the monitor's, else the primary's, else 0.
pub(super) fn replica_timeline(ctx: &Context, i: usize) -> u32 {
    let snapshot = ctx.topology.snapshot();
    ctx.replicas
        .get(i)
        .and_then(|r| snapshot.node(&r.addr.name))
        .and_then(|s| s.timeline)
        .or_else(|| snapshot.primary().and_then(|p| p.timeline))
        .unwrap_or(0)
}

/// One shared refresh of every usable replica's replay position. Returns false when
/// nothing could be refreshed.
async fn refresh_views(ctx: &Context, views: &mut [ReplicaView], deadline: Instant) -> bool {
    let topology = &ctx.topology;
    let refreshes = ctx
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
