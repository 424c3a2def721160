//! The server connection a client holds: checked out (from a replica's pool or the
//! primary's), brought to the client's session state, held while a transaction or request
//! is open, given back when idle, or retired (wiped or closed) when the client leaves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::probe::ProbeKind;
use super::relay::Relay;
use super::reset::{self, SyncError};
use super::state::{ClientState, Effect};
use super::{ClientStream, Session, SessionError};
use crate::backend::{BackendError, Login, Pool, PoolError, ReplicaNode, ServerConn};
use crate::cancel::{CancelSlot, CancelTarget};
use crate::context::Context;
use crate::metrics::FallbackReason;
use crate::protocol::TxStatus;
use crate::router::Node;

mod primary;

pub(super) use primary::unavailable;

/// Further server connections tried when the one checked out turns out to be dead.
const ACQUIRE_RETRIES: usize = 2;

/// How long a session-mode connection's `DISCARD ALL` may take before it is closed instead.
const DISCARD_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest retry list kept for the next replica read.
const SPARE_RETRY_MAX: usize = 8;

/// A server connection held by this client, with what was sent to it and not yet answered.
pub(super) struct Held {
    pub conn: Box<ServerConn>,
    /// The pool the connection goes back to.
    pub pool: Arc<Pool>,
    pub node: Node,
    /// The causal probe appended behind each request (when floors are tracked).
    pub probe: Option<ProbeKind>,
    /// The current request enters COPY FROM STDIN: no probe can follow it.
    pub skip_probe: bool,
    /// The request being sent only changes session settings: it gets no causal probe.
    pub state_only: bool,
    /// The request being sent belongs to a named session: on the primary it gets the
    /// probe (its floor is stored before the client sees the result); the connection's
    /// own requests there wait for a monitor sample instead ([`crate::router::Unprobed`]).
    pub keyed: bool,
    /// The current request starts / ends a transaction block (where the probe may run).
    pub begins_tx: bool,
    pub ends_tx: bool,
    /// When the request in flight was sent (for `causeway_query_duration_seconds`).
    pub started: Option<Instant>,
    /// When the last request was answered: the connection's last use if it goes back now.
    pub answered: Option<Instant>,
    /// The messages of a replica read, kept until its first result in case a recovery
    /// conflict cancels it and it must run elsewhere.
    pub retry: Option<Vec<crate::protocol::Message>>,
    pub out: BytesMut,
    pub relay: Relay,
    /// The client's unnamed statement exists on this server connection.
    pub has_unnamed: bool,
    /// Extended-protocol messages were sent since the last Sync.
    pub unsynced: bool,
}

impl Held {
    /// Every request sent on it has been answered and no extended-protocol sequence is
    /// open.
    pub(super) fn is_idle(&self) -> bool {
        self.relay.is_idle() && !self.unsynced
    }
}

/// The client's side of the pools: its login, its primary pool, and the connection held.
pub(super) struct Link {
    pub server: Option<Held>,
    /// The primary's pool for this login (switched when the primary changes).
    pub pool: Arc<Pool>,
    /// Server login of this client (pools on every node use it).
    pub login: Login,
    pool_size: Option<usize>,
    pub cancel: Arc<CancelSlot>,
    /// Buffers of the last released server connection, reused by the next one.
    spare_out: BytesMut,
    pub spare_relay: Relay,
    /// The emptied retry list of the last replica read, for the next one.
    spare_retry: Vec<crate::protocol::Message>,
    /// `pool_mode = "session"`: the connection is held for the client's whole session.
    pub session_mode: bool,
    /// The replicas' pools for this login, by replica index, looked up on first use (a
    /// lookup builds and hashes a key: not worth doing for every request).
    replica_pools: Vec<Option<Arc<Pool>>>,
}

impl Link {
    pub(super) fn new(
        pool: Arc<Pool>,
        login: Login,
        pool_size: Option<usize>,
        cancel: Arc<CancelSlot>,
        session_mode: bool,
    ) -> Link {
        Link {
            server: None,
            pool,
            login,
            pool_size,
            cancel,
            spare_out: BytesMut::new(),
            spare_relay: Relay::default(),
            spare_retry: Vec::new(),
            session_mode,
            replica_pools: Vec::new(),
        }
    }

    /// Replica `index`'s pool for this login.
    fn replica_pool(&mut self, ctx: &Context, index: usize, replica: &ReplicaNode) -> Arc<Pool> {
        if self.replica_pools.len() <= index {
            self.replica_pools.resize(index + 1, None);
        }
        let login = &self.login;
        let pool_size = self.pool_size;
        let slot = &mut self.replica_pools[index];
        Arc::clone(slot.get_or_insert_with(|| ctx.pools.get(&replica.addr, login, pool_size)))
    }

    /// Free what the request buffer grew to for a large request (nothing is in flight).
    pub(super) fn shrink_idle_buffers(&mut self) {
        super::io::shrink_if_large(&mut self.spare_out);
        if let Some(held) = self.server.as_mut() {
            super::io::shrink_if_large(&mut held.out);
        }
    }

    /// An idle connection of `node` that is already in the client's state, with its pool,
    /// if one is there now (the primary's only while it is the current one).
    fn try_checkout_in_sync(
        &mut self,
        ctx: &Context,
        node: Node,
        state: &ClientState,
        now: Instant,
    ) -> Option<(Box<ServerConn>, Arc<Pool>)> {
        let pool = match node {
            Node::Primary => {
                if !self.primary_current(ctx) {
                    return None;
                }
                self.pool.clone()
            }
            Node::Replica(index) => {
                let replica = ctx.replicas.get(index)?;
                self.replica_pool(ctx, index, replica)
            }
        };
        let conn = pool.try_checkout(now)?;
        if reset::in_sync(state, &conn.session) {
            return Some((conn, pool));
        }
        // The general path syncs it (and may get this same connection back).
        pool.checkin(conn);
        None
    }

    /// Hold `conn` (with the load bookkeeping and the cancel target).
    pub(super) fn hold(
        &mut self,
        conn: Box<ServerConn>,
        node: Node,
        pool: Arc<Pool>,
        probe: Option<ProbeKind>,
        guarded: bool,
        replicas: &[ReplicaNode],
    ) {
        if let Some(replica) = node.replica().and_then(|i| replicas.get(i)) {
            replica.started();
        }
        self.cancel.attach(CancelTarget {
            host: conn.node.host.clone(),
            port: conn.node.port,
            pid: conn.pid,
            secret: conn.secret,
        });
        let mut relay = std::mem::take(&mut self.spare_relay);
        if guarded {
            relay.guard();
        }
        self.server = Some(Held {
            conn,
            pool,
            node,
            probe,
            skip_probe: false,
            state_only: false,
            keyed: false,
            begins_tx: false,
            ends_tx: false,
            started: None,
            answered: None,
            retry: guarded.then(|| std::mem::take(&mut self.spare_retry)),
            out: std::mem::take(&mut self.spare_out),
            relay,
            has_unnamed: false,
            unsynced: false,
        });
    }

    /// In transaction mode, give the server connection back once it is idle.
    pub(super) fn release_if_idle(&mut self, tx: TxStatus, pinned: bool, replicas: &[ReplicaNode]) {
        let releasable = self.server.as_ref().is_some_and(|held| {
            !self.session_mode
                && !pinned
                && tx.is_idle()
                && held.is_idle()
                && !held.relay.conflicted()
                && held.out.is_empty()
                && held.conn.read_buf.is_empty()
        });
        if !releasable {
            return;
        }
        if let Some(mut held) = self.take(replicas) {
            if let Some(mut retry) = held
                .retry
                .take()
                .filter(|r| r.capacity() <= SPARE_RETRY_MAX)
            {
                retry.clear();
                self.spare_retry = retry;
            }
            self.spare_out = held.out;
            self.spare_relay = held.relay;
            let now = held.answered.unwrap_or_else(Instant::now);
            self.put_back(held.conn, &held.pool, now);
        }
    }

    /// Stop using the held server connection (with the load bookkeeping).
    pub(super) fn take(&mut self, replicas: &[ReplicaNode]) -> Option<Held> {
        let held = self.server.take()?;
        if let Some(replica) = held.node.replica().and_then(|i| replicas.get(i)) {
            replica.finished();
        }
        Some(held)
    }

    /// Return a connection to its pool, unless a cancel may still be on its way to it.
    pub(super) fn put_back(&self, conn: Box<ServerConn>, pool: &Pool, now: Instant) {
        if self.cancel.detach() {
            conn.close();
        } else {
            pool.checkin_at(conn, now);
        }
    }

    /// A connection whose read must run elsewhere: back to its pool when it is fine and
    /// idle, closed otherwise (requests it never answered stay in its queue).
    pub(super) fn discard(&mut self, held: Held, reusable: bool) {
        if reusable && !self.cancel.detach() {
            held.pool.checkin(held.conn);
            self.spare_relay = held.relay;
        } else {
            held.conn.close();
        }
    }

    /// The client left while holding `held`: return it to the pool if it is clean (wiped
    /// with `DISCARD ALL` in session mode), else close it.
    pub(super) async fn retire(
        &mut self,
        held: Held,
        tx: TxStatus,
        state: &mut ClientState,
        max_message: usize,
    ) {
        let clean = tx.is_idle() && held.is_idle() && held.out.is_empty();
        if !clean || (state.pin.is_some() && !self.session_mode) {
            self.cancel.detach();
            held.conn.close();
            return;
        }
        let mut conn = held.conn;
        if self.session_mode {
            // Session mode lets the client do anything: wipe the connection like PgBouncer.
            *state = ClientState::new(Vec::new());
            let _ = state.on_complete(Effect::DiscardAll);
            if discard_all(&mut conn, max_message).await.is_err() {
                self.cancel.detach();
                conn.close();
                return;
            }
        }
        self.put_back(conn, &held.pool, Instant::now());
    }

    /// A server connection on `node`, brought to the client's state; a replica that cannot
    /// give one falls back to the primary (only reads are ever sent to replicas).
    pub(super) async fn acquire(
        &mut self,
        ctx: &Context,
        node: Node,
        state: &ClientState,
        max_message: usize,
    ) -> Result<(Box<ServerConn>, Node, Arc<Pool>), SessionError> {
        let mut node = node;
        let mut attempts = 0;
        loop {
            let (mut conn, got, pool) = self.checkout(ctx, node).await?;
            match reset::apply(state, &mut conn, max_message).await {
                Ok(()) => return Ok((conn, got, pool)),
                // A pooled connection can die while idle (a shutdown, a crash, a terminated
                // backend) before the pool notices. Nothing of the client's request was
                // sent on it, so another connection is tried; a replica read goes to the
                // primary.
                Err(SyncError::Backend(err)) if attempts < ACQUIRE_RETRIES => {
                    attempts += 1;
                    tracing::info!(
                        node = %conn.node.name,
                        %err,
                        "server connection lost while restoring session state; trying another"
                    );
                    conn.close();
                    if got != Node::Primary {
                        ctx.metrics.fallback(FallbackReason::ReplicaLost);
                        node = Node::Primary;
                    }
                }
                Err(err) => {
                    conn.close();
                    return Err(err.into());
                }
            }
        }
    }

    async fn checkout(
        &mut self,
        ctx: &Context,
        node: Node,
    ) -> Result<(Box<ServerConn>, Node, Arc<Pool>), SessionError> {
        if let Some((index, replica)) = node
            .replica()
            .and_then(|i| ctx.replicas.get(i).map(|r| (i, r)))
        {
            let pool = self.replica_pool(ctx, index, replica);
            match timed_checkout(ctx, &pool, node).await {
                Ok(conn) => return Ok((conn, node, pool)),
                // Not resumed in time: the primary would wait again.
                Err(err @ PoolError::Paused(_)) => return Err(err.into()),
                Err(err) => {
                    tracing::info!(
                        user = ?self.login.user,
                        database = ?self.login.database,
                        replica = %replica.addr.name,
                        %err,
                        "replica unavailable, reading from the primary"
                    );
                    ctx.metrics.fallback(FallbackReason::NoEligibleReplica);
                }
            }
        }
        let conn = self.checkout_primary(ctx).await?;
        Ok((conn, Node::Primary, self.pool.clone()))
    }
}

/// Check out with the pool metrics: clients waiting, and how long they waited.
async fn timed_checkout(
    ctx: &Context,
    pool: &Pool,
    node: Node,
) -> Result<Box<ServerConn>, PoolError> {
    let timers = ctx.timers_of(node);
    if ctx.console.pause.is_paused() {
        // PAUSE on the admin console: wait (counted as waiting) until RESUME.
        let held = crate::console::pause::hold_checkout(ctx, pool).await?;
        ctx.console.stats.waited(&pool.key.database, held);
    }
    if let Some(conn) = pool.try_checkout(Instant::now()) {
        // No wait: no clock reads and no waiting gauge on the per-request path.
        if let Some(timers) = timers {
            timers.checkout(Duration::ZERO);
        }
        return Ok(conn);
    }
    let _waiting = ctx.metrics.waiting_for_server();
    let started = Instant::now();
    let result = pool.checkout().await;
    let waited = started.elapsed();
    if let Some(timers) = timers {
        timers.checkout(waited);
    }
    ctx.console.stats.waited(&pool.key.database, waited);
    result
}

/// Wipe a session-mode connection before another client gets it.
async fn discard_all(conn: &mut ServerConn, max_message: usize) -> Result<(), BackendError> {
    conn.session.forget_everything();
    let node = conn.node.to_string();
    let run = conn.simple_query("DISCARD ALL", max_message);
    match tokio::time::timeout(DISCARD_TIMEOUT, run).await {
        Ok(Ok(None)) => {
            conn.session.fingerprint = Some(crate::backend::empty_fingerprint());
            Ok(())
        }
        Ok(Ok(Some(refused))) => Err(BackendError::Protocol {
            node,
            message: format!("DISCARD ALL failed: {}", refused.message),
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(BackendError::Timeout { node }),
    }
}

impl<C: ClientStream> Session<C> {
    /// Hold an idle connection of `node` that needs no state sync, if one is there now: no
    /// wait, no pool timer, one clock reading for the checkout and the request's start.
    pub(super) fn acquire_in_sync(&mut self, node: Node) -> bool {
        let now = Instant::now();
        let Some((conn, pool)) =
            self.link
                .try_checkout_in_sync(&self.ctx, node, &self.front.state, now)
        else {
            return false;
        };
        if let Some(timers) = self.ctx.timers_of(node) {
            timers.checkout(Duration::ZERO);
        }
        self.hold(conn, node, pool);
        if let Some(held) = self.link.server.as_mut() {
            held.started = Some(now);
        }
        true
    }

    /// Take a server connection for this client on `node` (or the primary) and bring it to
    /// the client's state; nothing to do while one is held.
    pub(super) async fn acquire(&mut self, node: Node) -> Result<(), SessionError> {
        if self.link.server.is_some() {
            return Ok(());
        }
        let (conn, got, pool) = self
            .link
            .acquire(&self.ctx, node, &self.front.state, self.max_message)
            .await?;
        self.hold(conn, got, pool);
        Ok(())
    }

    /// Hold `conn` with the probe its node needs, and guarded while a replica read outside
    /// a transaction can still move if a recovery conflict cancels it before its first
    /// result.
    pub(super) fn hold(&mut self, conn: Box<ServerConn>, node: Node, pool: Arc<Pool>) {
        let probe = self.routing.probe_for(&self.ctx, node);
        let guarded = node != Node::Primary && self.front.tx.is_idle();
        self.link
            .hold(conn, node, pool, probe, guarded, &self.ctx.replicas);
    }

    /// In transaction mode, give the server connection back once it is idle.
    pub(super) fn release_if_idle(&mut self) {
        let pinned = self.front.state.pin.is_some();
        self.link
            .release_if_idle(self.front.tx, pinned, &self.ctx.replicas);
    }
}
