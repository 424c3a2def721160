//! One client connection: startup and authentication, then a loop that relays requests to a
//! pooled server connection held for one transaction (or the whole session) and replies back,
//! keeping the client's session state consistent across server connections.

mod client_msg;
mod command;
pub mod probe;
pub mod relay;
pub mod reset;
mod route;
pub mod startup;
pub mod state;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::backend::{BackendError, Login, Pool, PoolError, ServerConn};
use crate::cancel::{CancelRegistry, CancelSlot, CancelTarget};
use crate::config::PoolMode;
use crate::context::Context;
use crate::protocol::encode::{self, PgError};
use crate::protocol::startup::StartupError;
use crate::protocol::{try_split, FrameError, SqlState};
use relay::{Outcome, Relay};
use state::{ClientState, StatementDef};

/// Stop reading from one side while this much is buffered for the other (backpressure).
const HIGH_WATER: usize = 1 << 20;
/// Further server connections tried when the one checked out turns out to be dead.
const ACQUIRE_RETRIES: usize = 2;

/// Why a session ended or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("client disconnected")]
    ClientGone,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Startup(StartupError),
    #[error(transparent)]
    Auth(crate::auth::AuthError),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Sync(#[from] reset::SyncError),
    #[error("server connection lost: {0}")]
    ServerLost(String),
    #[error("server sent a message that matches no request: {0}")]
    Desync(#[from] relay::Desync),
    /// An error already described by a ready-made ErrorResponse.
    #[error("{0}")]
    Client(PgError),
}

impl SessionError {
    /// The ErrorResponse the client gets, if it can still receive one.
    pub fn to_client(&self) -> Option<PgError> {
        let err = match self {
            SessionError::ClientGone | SessionError::Io(_) => return None,
            SessionError::Frame(e) => PgError::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string())
                .with_hint("the client sent a malformed or oversized message; max_message_bytes sets the limit"),
            SessionError::Startup(e) => PgError::fatal(e.sqlstate(), e.to_string()),
            SessionError::Auth(e) => PgError::fatal(e.sqlstate(), e.to_string()),
            SessionError::Protocol(m) => PgError::fatal(SqlState::PROTOCOL_VIOLATION, m.clone()),
            SessionError::Pool(PoolError::CheckoutTimeout(..)) => PgError::fatal(SqlState::TOO_MANY_CONNECTIONS, self.to_string())
                .with_hint("all server connections are busy; raise [proxy] pool_size or checkout_timeout, or reduce load"),
            SessionError::Pool(PoolError::Backend(BackendError::Refused(refusal))) => {
                PgError::fatal(leak_code(&refusal.fields.code), refusal.fields.message.clone())
            }
            SessionError::Pool(PoolError::Backend(e @ BackendError::NoPassword { .. })) => {
                PgError::fatal(SqlState::INVALID_AUTHORIZATION_SPECIFICATION, e.to_string())
                    .with_hint("set this user's password in a [[users]] entry of Causeway's config")
            }
            SessionError::Pool(PoolError::Backend(e @ BackendError::UnsupportedAuth { .. })) => {
                PgError::fatal(SqlState::INVALID_AUTHORIZATION_SPECIFICATION, e.to_string()).with_hint(
                    "configure the server to use scram-sha-256, md5, password or trust for Causeway's logins",
                )
            }
            SessionError::Pool(PoolError::Backend(e)) => PgError::fatal(SqlState::CONNECTION_FAILURE, e.to_string())
                .with_hint("check that the PostgreSQL server is running and reachable from Causeway"),
            SessionError::Sync(e) => PgError::fatal(SqlState::CONNECTION_FAILURE, e.to_string())
                .with_hint("reconnect; the session state could not be restored on a server connection"),
            SessionError::ServerLost(_) | SessionError::Desync(_) => PgError::fatal(SqlState::CONNECTION_FAILURE, self.to_string())
                .with_hint("the transaction in progress, if any, was not committed by Causeway; reconnect and retry"),
            SessionError::Client(e) => e.clone(),
        };
        Some(err)
    }

    /// Whether this is an ordinary disconnect not worth a log line above debug.
    pub fn is_disconnect(&self) -> bool {
        matches!(self, SessionError::ClientGone | SessionError::Io(_))
    }
}

/// SQLSTATEs relayed from a server refusal keep their code when it is well formed.
fn leak_code(code: &str) -> SqlState {
    const RELAYED: [SqlState; 7] = [
        SqlState::INVALID_PASSWORD,
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
        SqlState::UNDEFINED_DATABASE,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::INSUFFICIENT_PRIVILEGE,
        SqlState::ADMIN_SHUTDOWN,
    ];
    let state = SqlState::from_code(code);
    if RELAYED.contains(&state) {
        state
    } else {
        SqlState::CONNECTION_FAILURE
    }
}

/// A server connection held by this client, with what was sent to it and not yet answered.
struct Held {
    conn: Box<ServerConn>,
    /// The pool the connection goes back to.
    pool: Arc<Pool>,
    target: route::Target,
    /// The causal probe appended behind each request (when floors are tracked).
    probe: Option<probe::ProbeKind>,
    /// The current request enters COPY FROM STDIN: no probe can follow it.
    skip_probe: bool,
    /// The current request starts / ends a transaction block (where the probe may run).
    begins_tx: bool,
    ends_tx: bool,
    /// When the request in flight was sent (for `causeway_query_duration_seconds`).
    started: Option<std::time::Instant>,
    /// When the last request was answered: the connection's last use if it goes back now.
    answered: Option<std::time::Instant>,
    /// The messages of a replica read, kept until its first result in case a recovery
    /// conflict cancels it and it must run elsewhere.
    retry: Option<Vec<crate::protocol::Message>>,
    out: BytesMut,
    relay: Relay,
    /// The client's unnamed statement exists on this server connection.
    has_unnamed: bool,
    /// Extended-protocol messages were sent since the last Sync.
    unsynced: bool,
}

/// What relaying replies left to do that has to wait.
enum Deferred {
    /// A causal probe answered: record the position (may write to the session store).
    Probed(
        probe::ProbeKind,
        route::Target,
        Option<crate::lsn::Position>,
    ),
    /// A recovery conflict cancelled a replica read: run it elsewhere (reusable: the
    /// connection itself is fine).
    Retry(Held, bool),
}

/// Events the session loop reacts to.
enum Event {
    ClientData,
    ServerData,
    ServerEof,
    Wrote,
    Drain,
    Terminate,
    IdleTimeout,
    /// The replicas have replayed a floor the store could not take (see `output_hold`).
    HoldOver,
}

/// A wait that keeps the client's output back (see [`Session::output_hold`]); a task of
/// its own, aborted with the session.
type OutputHold = tokio_util::task::AbortOnDropHandle<()>;

/// A client connection after startup.
pub struct Session {
    ctx: Arc<Context>,
    client: TcpStream,
    inbuf: BytesMut,
    to_client: BytesMut,
    state: ClientState,
    pool: Arc<Pool>,
    /// Server login of this client (pools on every node use it).
    login: Login,
    pool_size: Option<usize>,
    routing: route::Routing,
    server: Option<Held>,
    tx_status: u8,
    pid: i32,
    cancel: Arc<CancelSlot>,
    unnamed: Option<Arc<StatementDef>>,
    portals: std::collections::HashMap<bytes::Bytes, Arc<StatementDef>>,
    draining: bool,
    signals: crate::shutdown::Signals,
    /// Buffers of the last released server connection, reused by the next one.
    spare_out: BytesMut,
    spare_relay: Relay,
    /// Drop client messages until Sync (after an error Causeway raised without a server).
    skip_until_sync: bool,
    max_message: usize,
    session_mode: bool,
    /// The client's address, named by the info lines logged for it (see [`serve`]).
    peer: SocketAddr,
    /// While set, nothing is written to the client: a write's ReadyForQuery waits until
    /// the replicas have replayed a floor the session store could not take. The server
    /// connection goes back to the pool meanwhile.
    output_hold: Option<OutputHold>,
}

/// Serve one accepted client connection until it ends. The future is boxed so that the
/// task spawned for it is small: tokio moves a task's future several times while spawning
/// it.
pub fn serve(
    ctx: Arc<Context>,
    client: TcpStream,
    peer: SocketAddr,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(serve_connection(ctx, client, peer))
}

async fn serve_connection(ctx: Arc<Context>, client: TcpStream, peer: SocketAddr) {
    let _ = client.set_nodelay(true);
    // At debug level: a span the log subscriber keeps costs microseconds per connection
    // (its fields are formatted when it is created and recorded). With debug logs on, every
    // line logged for the client is in it; the few info lines name the client themselves.
    // User and database are recorded once the startup packet has been read.
    let span = tracing::debug_span!(
        "client",
        client.addr = %peer,
        user = tracing::field::Empty,
        database = tracing::field::Empty,
    );
    // The request loop's future (with everything it awaits inline) is several kilobytes:
    // boxed, it is not part of this one.
    let result = Box::pin(handshake(&ctx, client, peer))
        .instrument(span.clone())
        .await;
    match result {
        Ok(Some(mut session)) => {
            let outcome = Box::pin(session.run()).instrument(span.clone()).await;
            Box::pin(session.finish(outcome)).instrument(span).await;
        }
        Ok(None) => {}
        Err((mut stream, err)) => {
            report(&mut stream, peer, &err).instrument(span).await;
        }
    }
}

async fn report(stream: &mut TcpStream, peer: SocketAddr, err: &SessionError) {
    if err.is_disconnect() {
        tracing::debug!(%err, "client connection ended");
    } else {
        tracing::info!(client.addr = %peer, %err, "client connection failed");
    }
    if let Some(pg) = err.to_client() {
        let _ = stream.write_all(&pg.to_bytes()).await;
    }
}

/// Startup and authentication, bounded by `startup_timeout`.
async fn handshake(
    ctx: &Arc<Context>,
    mut client: TcpStream,
    peer: SocketAddr,
) -> Result<Option<Box<Session>>, (TcpStream, SessionError)> {
    let timeout = ctx.config.proxy.startup_timeout;
    let result = tokio::time::timeout(timeout, startup_session(ctx, &mut client)).await;
    match result {
        Ok(Ok(Some(parts))) => Ok(Some(Box::new(Session::new(
            ctx.clone(),
            client,
            peer,
            parts,
        )))),
        Ok(Ok(None)) => Ok(None),
        Ok(Err(err)) => Err((client, err)),
        Err(_) => Err((
            client,
            SessionError::Client(
                PgError::fatal(
                    SqlState::PROTOCOL_VIOLATION,
                    "timed out waiting for startup and authentication",
                )
                .with_hint("raise [proxy] startup_timeout if clients authenticate slowly"),
            ),
        )),
    }
}

struct Startup {
    state: ClientState,
    pool: Arc<Pool>,
    login: Login,
    pool_size: Option<usize>,
    session_key: Option<String>,
    out: BytesMut,
    /// Bytes the client sent after its startup: the first of its messages.
    pending: BytesMut,
    server: Option<Box<ServerConn>>,
    pid: i32,
    cancel: Arc<CancelSlot>,
}

async fn startup_session(
    ctx: &Context,
    client: &mut TcpStream,
) -> Result<Option<Startup>, SessionError> {
    // What the client sends after its startup packet (and password), kept for the session.
    let mut pending = BytesMut::new();
    let message = match startup::read_opening(client, &mut pending).await? {
        startup::Opening::Gone => return Ok(None),
        startup::Opening::Cancel { pid, key } => {
            ctx.cancels
                .cancel(pid, &key, ctx.config.proxy.connect_timeout)
                .await;
            return Ok(None);
        }
        startup::Opening::Startup(message) => message,
    };
    if ctx.shutdown.drain.is_cancelled() {
        return Err(SessionError::Client(PgError::fatal(
            SqlState::CANNOT_CONNECT_NOW,
            "Causeway is shutting down",
        )));
    }
    if ctx.clients.load(Ordering::Relaxed) >= ctx.config.proxy.max_client_connections {
        return Err(SessionError::Client(
            PgError::fatal(
                SqlState::TOO_MANY_CONNECTIONS,
                "sorry, too many clients already",
            )
            .with_hint("raise [proxy] max_client_connections or use fewer connections"),
        ));
    }
    let user = message.param("user").unwrap_or_default().to_owned();
    let database = message.param("database").unwrap_or(&user).to_owned();
    tracing::Span::current()
        .record("user", user.as_str())
        .record("database", database.as_str());
    let (params, causeway_params) =
        startup::session_params(&message).map_err(SessionError::Client)?;
    let session_key = causeway_params
        .into_iter()
        .find(|(name, _)| name == "causeway.session")
        .map(|(_, value)| value);
    let mut out = BytesMut::new();
    startup::negotiate(&message, &mut out);
    startup::authenticate(ctx, client, &user, &mut out, &mut pending).await?;
    let user_cfg = ctx.config.user(&user);
    let login = Login {
        user: user.clone(),
        database,
        password: user_cfg.and_then(|u| u.password.clone()),
    };
    let pool_size = user_cfg.and_then(|u| u.pool_size);
    let pool = ctx.pools.get(&ctx.primary, &login, pool_size);
    let state = ClientState::new(params);
    let session_mode = ctx.config.proxy.pool_mode == PoolMode::Session;
    // Like PgBouncer, a client whose startup parameters a server connection of this pool
    // has already accepted gets the server's parameters from the pool, without waiting
    // for a server connection (under load all of them may be busy).
    let known = pool
        .startup_params()
        .filter(|_| !session_mode && pool.accepted_startup(state.fingerprint()));
    if let Some(server_params) = known {
        let (pid, cancel) = ctx.cancels.register();
        write_startup_reply(
            &mut out,
            &server_params,
            &state,
            pid,
            CancelRegistry::secret(&cancel),
        );
        return Ok(Some(Startup {
            state,
            pool,
            login,
            pool_size,
            session_key,
            out,
            pending,
            server: None,
            pid,
            cancel,
        }));
    }
    // Otherwise check out a server connection now: it proves the database and login
    // work, gives the server's parameters, and validates the client's startup parameters.
    let mut server = pool.checkout().await?;
    reset::apply(&state, &mut server, ctx.config.proxy.max_message_bytes).await?;
    pool.accept_startup(state.fingerprint());
    let (pid, cancel) = ctx.cancels.register();
    write_startup_reply(
        &mut out,
        &server.params,
        &state,
        pid,
        CancelRegistry::secret(&cancel),
    );
    let server = if session_mode {
        Some(server)
    } else {
        pool.checkin(server);
        None
    };
    Ok(Some(Startup {
        state,
        pool,
        login,
        pool_size,
        session_key,
        out,
        pending,
        server,
        pid,
        cancel,
    }))
}

fn write_startup_reply(
    out: &mut BytesMut,
    server_params: &[(String, String)],
    state: &ClientState,
    pid: i32,
    secret: i32,
) {
    // One allocation for the whole reply (about fifteen ParameterStatus messages).
    let params: usize = server_params
        .iter()
        .map(|(n, v)| 7 + n.len() + v.len())
        .sum();
    out.reserve(params + 64);
    for (name, value) in server_params {
        let client_value = state
            .startup
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str());
        encode::parameter_status(out, name, client_value.unwrap_or(value));
    }
    encode::backend_key_data(out, pid, secret);
    encode::ready_for_query(out, b'I');
}

impl Session {
    fn new(ctx: Arc<Context>, client: TcpStream, peer: SocketAddr, parts: Startup) -> Session {
        ctx.clients.fetch_add(1, Ordering::Relaxed);
        let max_message = ctx.config.proxy.max_message_bytes;
        let session_mode = ctx.config.proxy.pool_mode == PoolMode::Session;
        let signals = ctx.shutdown.subscribe();
        let mut session = Session {
            ctx,
            client,
            inbuf: parts.pending,
            to_client: parts.out,
            state: parts.state,
            pool: parts.pool,
            login: parts.login,
            pool_size: parts.pool_size,
            routing: route::Routing::new(parts.session_key),
            server: None,
            tx_status: b'I',
            pid: parts.pid,
            cancel: parts.cancel,
            unnamed: None,
            portals: Default::default(),
            draining: false,
            signals,
            spare_out: BytesMut::with_capacity(8192),
            spare_relay: Relay::default(),
            skip_until_sync: false,
            max_message,
            session_mode,
            peer,
            output_hold: None,
        };
        if let Some(conn) = parts.server {
            let pool = session.pool.clone();
            session.hold(conn, route::Target::Primary, pool);
        }
        session
    }

    /// The request loop.
    async fn run(&mut self) -> Result<(), SessionError> {
        // Messages the client pipelined behind its startup or password.
        if !self.inbuf.is_empty() {
            self.on_client_data().await?;
        }
        loop {
            if let Some(lost) = self.flush_now()? {
                self.retry_elsewhere(lost, false).await?;
                continue;
            }
            self.release_if_idle();
            if self.routing.stalled && self.server.is_none() {
                self.routing.stalled = false;
                self.dispatch_batch().await?;
                // Requests that arrived behind the stalled one are already buffered.
                self.on_client_data().await?;
                continue;
            }
            if self.draining && self.is_quiescent() {
                return Err(SessionError::Client(PgError::fatal(
                    SqlState::ADMIN_SHUTDOWN,
                    "terminating connection due to administrator command",
                )));
            }
            match self.next_event().await? {
                Event::ClientData => self.on_client_data().await?,
                Event::ServerData => {
                    if let Some(deferred) = self.relay_replies()? {
                        self.on_deferred(deferred).await?;
                    }
                }
                Event::ServerEof => {
                    if let Some(lost) = self.on_server_lost()? {
                        self.retry_elsewhere(lost, false).await?;
                    }
                }
                Event::Wrote => {}
                Event::Drain => self.draining = true,
                Event::Terminate => {
                    return Err(SessionError::Client(PgError::fatal(
                        SqlState::ADMIN_SHUTDOWN,
                        "terminating connection due to administrator command",
                    )))
                }
                Event::IdleTimeout => {
                    return Err(SessionError::Client(PgError::fatal(
                        SqlState::IDLE_SESSION_TIMEOUT,
                        "terminating connection due to idle-session timeout",
                    )))
                }
                Event::HoldOver => self.output_hold = None,
            }
        }
    }

    /// Whether nothing is in flight and no transaction is open.
    fn is_quiescent(&self) -> bool {
        self.tx_status == b'I'
            && self
                .server
                .as_ref()
                .is_none_or(|h| h.relay.is_idle() && !h.unsynced)
            && self.to_client.is_empty()
    }

    async fn next_event(&mut self) -> Result<Event, SessionError> {
        let read_client = !self.routing.stalled
            && self
                .server
                .as_ref()
                .is_none_or(|h| h.out.len() < HIGH_WATER);
        let read_server = self.to_client.len() < HIGH_WATER;
        let idle_timeout = self.ctx.config.proxy.client_idle_timeout;
        let idle_timer = !idle_timeout.is_zero() && self.is_quiescent() && self.server.is_none();
        let draining = self.draining;
        let drain = &mut self.signals.drain;
        let terminate = &mut self.signals.terminate;
        reserve_for_read(&mut self.inbuf);
        let (mut client_rd, mut client_wr) = self.client.split();
        let (server_rd, server_wr) = match self.server.as_mut() {
            Some(held) => {
                reserve_for_read(&mut held.conn.read_buf);
                let (rd, wr) = held.conn.stream.split();
                (
                    Some((rd, &mut held.conn.read_buf)),
                    Some((wr, &mut held.out)),
                )
            }
            None => (None, None),
        };
        let to_client = &mut self.to_client;
        let write_client = !to_client.is_empty() && self.output_hold.is_none();
        let output_hold = &mut self.output_hold;
        let inbuf = &mut self.inbuf;
        // Biased: polled in this order, without drawing a random number per call; replies
        // first, then requests, writes, and the rare signals last.
        tokio::select! {
            biased;
            n = read_opt(server_rd), if read_server => {
                match n {
                    Ok(0) | Err(_) => Ok(Event::ServerEof),
                    Ok(_) => Ok(Event::ServerData),
                }
            }
            n = client_rd.read_buf(inbuf), if read_client => {
                if n? == 0 { Err(SessionError::ClientGone) } else { Ok(Event::ClientData) }
            }
            n = client_wr.write(to_client), if write_client => {
                let n = n?;
                to_client.advance(n);
                Ok(Event::Wrote)
            }
            n = write_opt(server_wr) => {
                match n {
                    Ok(_) => Ok(Event::Wrote),
                    Err(_) => Ok(Event::ServerEof),
                }
            }
            _ = drain, if !draining => Ok(Event::Drain),
            // Terminate always follows drain: one signal to wait for at a time.
            _ = terminate, if draining => Ok(Event::Terminate),
            _ = async { tokio::time::sleep(idle_timeout).await }, if idle_timer => Ok(Event::IdleTimeout),
            _ = async {
                if let Some(hold) = output_hold {
                    let _ = hold.await;
                }
            }, if output_hold.is_some() => Ok(Event::HoldOver),
        }
    }

    /// Write what can be written without waiting. A replica read whose connection broke
    /// before any result comes back to be run elsewhere.
    fn flush_now(&mut self) -> Result<Option<Held>, SessionError> {
        if self.output_hold.is_none() {
            try_write_all(&self.client, &mut self.to_client)?;
        }
        if let Some(held) = self.server.as_mut() {
            if try_write_all(&held.conn.stream, &mut held.out).is_err() {
                return self.on_server_lost();
            }
        }
        Ok(None)
    }

    async fn on_client_data(&mut self) -> Result<(), SessionError> {
        while !self.routing.stalled {
            // Refuse an unknown message type before waiting for a body it announces.
            if let Some(&first) = self.inbuf.first() {
                if !crate::protocol::is_frontend_tag(first) {
                    return Err(SessionError::Protocol(format!(
                        "invalid frontend message type {first}"
                    )));
                }
            }
            let Some(msg) = try_split(&mut self.inbuf, self.max_message)? else {
                break;
            };
            if let Some(msg) = self.handle_now(msg)? {
                self.on_client_message(msg).await?;
            }
            if let Some(held) = self.server.as_mut() {
                held.relay.emit_ready_synthetic(&mut self.to_client);
            }
        }
        Ok(())
    }

    /// Do what relaying replies left to do that has to wait, then relay the rest.
    async fn on_deferred(&mut self, mut deferred: Deferred) -> Result<(), SessionError> {
        loop {
            match deferred {
                Deferred::Probed(kind, target, position) => {
                    self.on_probed(kind, target, position).await;
                }
                Deferred::Retry(held, reusable) => {
                    return self.retry_elsewhere(held, reusable).await
                }
            }
            match self.relay_replies()? {
                Some(next) => deferred = next,
                None => return Ok(()),
            }
        }
    }

    /// Inspect the buffered replies in place and copy what the client should see, until
    /// they run out or one needs [`Session::on_deferred`]. Plain
    /// functions all the way: this runs for every reply.
    fn relay_replies(&mut self) -> Result<Option<Deferred>, SessionError> {
        loop {
            let Some(held) = self.server.as_mut() else {
                return Ok(None);
            };
            let conn = &mut held.conn;
            let msg = match crate::protocol::next_ref(&conn.read_buf, self.max_message) {
                Ok(Some(msg)) => msg,
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(SessionError::ServerLost(format!(
                        "{} sent a malformed message: {e}",
                        conn.node.name
                    )))
                }
            };
            let consumed = msg.raw.len();
            let was_conflicted = held.relay.conflicted();
            let outcome =
                held.relay
                    .on_message(msg, &mut self.state, &mut conn.session, &mut self.to_client);
            conn.read_buf.advance(consumed);
            if !was_conflicted && held.relay.conflicted() {
                tracing::info!(
                    client.addr = %self.peer,
                    user = %self.login.user,
                    database = %self.login.database,
                    node = %conn.node.name,
                    lost = held.relay.lost(),
                    "a replica read was cancelled or its connection is ending before any \
                     result; it will run elsewhere"
                );
            }
            match outcome? {
                Outcome::Continue => {}
                Outcome::Probed(position) => {
                    let kind = held.probe.unwrap_or(probe::ProbeKind::Primary);
                    return Ok(Some(Deferred::Probed(kind, held.target, position)));
                }
                Outcome::Ready(status) => {
                    let unprobed_read = match (held.target, held.probe) {
                        (route::Target::Replica(i), None) => Some(i),
                        _ => None,
                    };
                    if let Some(started) = held.started.take() {
                        let now = std::time::Instant::now();
                        if let Some(timers) = self.ctx.timers.get(held.target.index()) {
                            timers.query(now.saturating_duration_since(started));
                        }
                        held.answered = Some(now);
                    }
                    if let Some(i) = unprobed_read {
                        self.stick_to(i);
                    }
                    self.tx_status = status;
                    if status == b'I' {
                        self.portals.clear();
                    }
                }
                Outcome::Fatal => {
                    // The server is closing this connection; whatever it said in answer to
                    // a request was relayed.
                    let held = self.take_server();
                    self.cancel.detach();
                    if let Some(mut held) = held {
                        if held.relay.conflicted() {
                            return Ok(Some(Deferred::Retry(held, false)));
                        }
                        if self.tx_status == b'I' && held.relay.is_idle() && !held.unsynced {
                            tracing::debug!(
                                node = %held.conn.node.name,
                                "the server ended a connection between requests"
                            );
                            return Ok(None);
                        }
                        if self.read_done_position_lost(&mut held) {
                            return Ok(None);
                        }
                    }
                    return Err(SessionError::ServerLost(
                        "the server ended the connection".into(),
                    ));
                }
            }
            if let Some(held) = self.server.as_ref() {
                if held.relay.conflicted() && held.relay.is_idle() {
                    if let Some(held) = self.take_server() {
                        return Ok(Some(Deferred::Retry(held, true)));
                    }
                }
            }
        }
    }

    /// A recovery conflict cancelled a replica read, or its connection went away, before
    /// any result reached the client: run the same messages again, avoiding that replica
    /// (DESIGN.md §5).
    async fn retry_elsewhere(
        &mut self,
        mut held: Held,
        reusable: bool,
    ) -> Result<(), SessionError> {
        let sent = held.retry.take().unwrap_or_default();
        let excluded = match held.target {
            route::Target::Replica(i) => Some(i),
            route::Target::Primary => None,
        };
        let reason = if held.relay.lost() {
            crate::metrics::FallbackReason::ReplicaLost
        } else {
            crate::metrics::FallbackReason::RecoveryConflict
        };
        held.relay.end_conflict();
        if reusable && !self.cancel.detach() {
            held.pool.checkin(held.conn);
            // Idle: nothing is left in its queue.
            self.spare_relay = held.relay;
        } else {
            // Requests the broken connection never answered stay in its queue.
            held.conn.close();
        }
        // The cancelled attempt's named statements never reached the client.
        for msg in &sent {
            if msg.tag == crate::protocol::tag::PARSE {
                if let Some(parse) = crate::protocol::extended::Parse::decode(msg.body()) {
                    if !parse.name.is_empty() {
                        self.state.statements.remove(parse.name);
                    }
                }
            }
        }
        self.ctx.metrics.fallback(reason);
        self.routing.exclude = excluded;
        self.routing.batch = sent;
        self.dispatch_batch().await
    }

    /// The server connection broke. A replica read none of whose replies reached the
    /// client is returned, to run elsewhere; otherwise the client is told (08006).
    fn on_server_lost(&mut self) -> Result<Option<Held>, SessionError> {
        let Some(mut held) = self.take_server() else {
            return Ok(None);
        };
        self.cancel.detach();
        let name = held.conn.node.name.clone();
        let was_idle = held.relay.is_idle() && !held.unsynced;
        if self.tx_status == b'I' && was_idle {
            tracing::debug!(node = %name, "idle server connection closed");
            return Ok(None);
        }
        if self.read_done_position_lost(&mut held) {
            return Ok(None);
        }
        if held.retry.is_some() && held.relay.connection_lost() {
            tracing::info!(
                client.addr = %self.peer,
                user = %self.login.user,
                database = %self.login.database,
                node = %name,
                "replica connection lost before any result; the read will run elsewhere"
            );
            return Ok(Some(held));
        }
        Err(SessionError::ServerLost(format!(
            "connection to {name} closed"
        )))
    }

    /// A replica read was answered in full but its connection went away before the
    /// position probe behind it did: the client gets its ReadyForQuery, and the session's
    /// floor becomes unknown (its reads go to the primary until a write sets it again).
    /// Returns false, doing nothing, for anything else.
    fn read_done_position_lost(&mut self, held: &mut Held) -> bool {
        if self.tx_status != b'I' || !held.relay.awaits_only_replica_probe() {
            return false;
        }
        tracing::info!(
            client.addr = %self.peer,
            node = %held.conn.node.name,
            "replica connection lost after a read's result, before its position; \
             this session reads from the primary until its next write"
        );
        self.routing.floor = crate::router::Floor::Unknown;
        held.relay.release_ready(&mut self.to_client);
        true
    }

    /// Take a server connection for this client and bring it to the client's state.
    async fn acquire(&mut self, target: route::Target) -> Result<(), SessionError> {
        if self.server.is_some() {
            return Ok(());
        }
        let mut target = target;
        let mut attempts = 0;
        loop {
            let (mut conn, got, pool) = self.checkout(target).await?;
            match reset::apply(&self.state, &mut conn, self.max_message).await {
                Ok(()) => {
                    self.hold(conn, got, pool);
                    return Ok(());
                }
                // A pooled connection can die while idle (a shutdown, a crash, a terminated
                // backend) before the pool notices. Nothing of the client's request was
                // sent on it, so another connection is tried; a replica read goes to the
                // primary.
                Err(reset::SyncError::Backend(err)) if attempts < ACQUIRE_RETRIES => {
                    attempts += 1;
                    tracing::info!(
                        node = %conn.node.name,
                        %err,
                        "server connection lost while restoring session state; trying another"
                    );
                    conn.close();
                    if matches!(got, route::Target::Replica(_)) {
                        self.ctx
                            .metrics
                            .fallback(crate::metrics::FallbackReason::ReplicaLost);
                        target = route::Target::Primary;
                    }
                }
                Err(err) => {
                    conn.close();
                    return Err(err.into());
                }
            }
        }
    }

    /// A server connection on `target`; a replica that cannot give one falls back to the
    /// primary (only reads are ever sent to replicas, so that is always safe).
    async fn checkout(
        &self,
        target: route::Target,
    ) -> Result<(Box<ServerConn>, route::Target, Arc<Pool>), SessionError> {
        if let route::Target::Replica(i) = target {
            if let Some(replica) = self.ctx.replicas.get(i) {
                let pool = self
                    .ctx
                    .pools
                    .get(&replica.addr, &self.login, self.pool_size);
                match self.timed_checkout(&pool, target).await {
                    Ok(conn) => return Ok((conn, target, pool)),
                    Err(err) => {
                        tracing::info!(
                            client.addr = %self.peer,
                            user = %self.login.user,
                            database = %self.login.database,
                            replica = %replica.addr.name,
                            %err,
                            "replica unavailable, reading from the primary"
                        );
                        self.ctx
                            .metrics
                            .fallback(crate::metrics::FallbackReason::NoEligibleReplica);
                    }
                }
            }
        }
        let conn = self
            .timed_checkout(&self.pool, route::Target::Primary)
            .await?;
        Ok((conn, route::Target::Primary, self.pool.clone()))
    }

    /// Check out with the pool metrics: clients waiting, and how long they waited.
    async fn timed_checkout(
        &self,
        pool: &Pool,
        target: route::Target,
    ) -> Result<Box<ServerConn>, PoolError> {
        let timers = self.ctx.timers.get(target.index());
        if let Some(conn) = pool.try_checkout(std::time::Instant::now()) {
            // No wait: no clock reads and no waiting gauge on the per-request path.
            if let Some(timers) = timers {
                timers.checkout(Duration::ZERO);
            }
            return Ok(conn);
        }
        let _waiting = self.ctx.metrics.waiting_for_server();
        let started = std::time::Instant::now();
        let result = pool.checkout().await;
        if let Some(timers) = timers {
            timers.checkout(started.elapsed());
        }
        result
    }

    fn hold(&mut self, conn: Box<ServerConn>, target: route::Target, pool: Arc<Pool>) {
        if let route::Target::Replica(i) = target {
            if let Some(replica) = self.ctx.replicas.get(i) {
                replica.started();
            }
        }
        // Connection-scoped reads on a replica need no probe: the session sticks to that
        // replica until the monitor samples it (route::Routing::sticky). A shared session
        // must store its raised floor for other connections, so it probes.
        let probed = match target {
            route::Target::Primary => true,
            route::Target::Replica(_) => self.routing.request_key.is_some(),
        };
        let probe = (self.routing_enabled() && probed).then(|| route::probe_kind(self, target));
        // A replica read outside a transaction can still move if a recovery conflict
        // cancels it before its first result.
        let retry =
            (matches!(target, route::Target::Replica(_)) && self.tx_status == b'I').then(Vec::new);
        self.cancel.attach(CancelTarget {
            host: conn.node.host.clone(),
            port: conn.node.port,
            pid: conn.pid,
            secret: conn.secret,
        });
        self.server = Some(Held {
            conn,
            pool,
            target,
            probe,
            skip_probe: false,
            begins_tx: false,
            ends_tx: false,
            started: None,
            answered: None,
            retry,
            out: std::mem::take(&mut self.spare_out),
            relay: std::mem::take(&mut self.spare_relay),
            has_unnamed: false,
            unsynced: false,
        });
        if let Some(held) = self.server.as_mut() {
            if held.retry.is_some() {
                held.relay.guard();
            }
        }
    }

    /// In transaction mode, give the server connection back once it is idle.
    fn release_if_idle(&mut self) {
        let releasable = match &self.server {
            Some(held) => {
                !self.session_mode
                    && self.state.pin.is_none()
                    && self.tx_status == b'I'
                    && held.relay.is_idle()
                    && !held.relay.conflicted()
                    && !held.unsynced
                    && held.out.is_empty()
                    && held.conn.read_buf.is_empty()
            }
            None => false,
        };
        if releasable {
            if let Some(held) = self.take_server() {
                self.spare_out = held.out;
                self.spare_relay = held.relay;
                let now = held.answered.unwrap_or_else(std::time::Instant::now);
                self.put_back(held.conn, &held.pool, now);
            }
        }
    }

    /// Stop using the held server connection (with the load bookkeeping).
    fn take_server(&mut self) -> Option<Held> {
        let held = self.server.take()?;
        if let route::Target::Replica(i) = held.target {
            if let Some(replica) = self.ctx.replicas.get(i) {
                replica.finished();
            }
        }
        Some(held)
    }

    fn put_back(&mut self, conn: Box<ServerConn>, pool: &Pool, now: std::time::Instant) {
        if self.cancel.detach() {
            // A cancel may still be on its way to this server process: never reuse it.
            conn.close();
        } else {
            pool.checkin_at(conn, now);
        }
    }

    /// Clean up after the loop ended: report, return or close the server connection.
    async fn finish(&mut self, outcome: Result<(), SessionError>) {
        if let Err(err) = &outcome {
            if !matches!(err, SessionError::ClientGone) {
                if err.is_disconnect() {
                    tracing::debug!(%err, "client connection ended");
                } else {
                    tracing::info!(
                        client.addr = %self.peer,
                        user = %self.login.user,
                        database = %self.login.database,
                        %err,
                        "client session ended with an error"
                    );
                }
                if let Some(pg) = err.to_client() {
                    pg.encode(&mut self.to_client);
                }
            }
        }
        if !self.to_client.is_empty() {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                self.client.write_all(&self.to_client),
            )
            .await;
        }
        if let Some(held) = self.take_server() {
            self.retire(held).await;
        }
        self.ctx.cancels.unregister(self.pid);
        self.ctx.clients.fetch_sub(1, Ordering::Relaxed);
    }

    /// A client left while holding a server connection.
    async fn retire(&mut self, held: Held) {
        let clean =
            self.tx_status == b'I' && held.relay.is_idle() && !held.unsynced && held.out.is_empty();
        if !clean || (self.state.pin.is_some() && !self.session_mode) {
            self.cancel.detach();
            held.conn.close();
            return;
        }
        let pool = held.pool;
        let mut conn = held.conn;
        if self.session_mode {
            // Session mode lets the client do anything: wipe the connection like PgBouncer.
            self.state = ClientState::new(Vec::new());
            let discard = crate::session::state::Effect::DiscardAll;
            let _ = self.state.on_complete(discard);
            if run_discard_all(&mut conn, self.max_message).await.is_err() {
                self.cancel.detach();
                conn.close();
                return;
            }
        }
        self.put_back(conn, &pool, std::time::Instant::now());
    }
}

async fn run_discard_all(
    conn: &mut ServerConn,
    max_message: usize,
) -> Result<(), reset::SyncError> {
    conn.session.forget_everything();
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::query("DISCARD ALL", &mut out)
        .map_err(BackendError::Io)?;
    tokio::time::timeout(Duration::from_secs(5), async {
        conn.stream
            .write_all(&out)
            .await
            .map_err(BackendError::Io)?;
        loop {
            match try_split(&mut conn.read_buf, max_message) {
                Ok(Some(msg)) if msg.tag == crate::protocol::tag::READY_FOR_QUERY => break,
                Ok(Some(msg)) if msg.tag == crate::protocol::tag::ERROR_RESPONSE => {
                    return Err(reset::SyncError::Refused(Box::new(
                        crate::protocol::ErrorFields::parse(msg.body()),
                    )))
                }
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => {
                    return Err(reset::SyncError::Backend(BackendError::Protocol {
                        node: conn.node.to_string(),
                        message: e.to_string(),
                    }))
                }
            }
            if conn
                .stream
                .read_buf(&mut conn.read_buf)
                .await
                .map_err(BackendError::Io)?
                == 0
            {
                return Err(reset::SyncError::Backend(BackendError::Closed {
                    node: conn.node.to_string(),
                }));
            }
        }
        conn.session.fingerprint = Some(ClientState::empty_fingerprint());
        Ok(())
    })
    .await
    .map_err(|_| {
        reset::SyncError::Backend(BackendError::Closed {
            node: "timeout".into(),
        })
    })?
}

async fn read_opt(
    side: Option<(tokio::net::tcp::ReadHalf<'_>, &mut BytesMut)>,
) -> std::io::Result<usize> {
    match side {
        Some((mut rd, buf)) => rd.read_buf(buf).await,
        None => std::future::pending().await,
    }
}

async fn write_opt(
    side: Option<(tokio::net::tcp::WriteHalf<'_>, &mut BytesMut)>,
) -> std::io::Result<usize> {
    match side {
        Some((mut wr, buf)) if !buf.is_empty() => {
            let n = wr.write(buf).await?;
            buf.advance(n);
            Ok(n)
        }
        _ => std::future::pending().await,
    }
}

/// Make room for a full read: a nearly full `BytesMut` would otherwise grow by 64 bytes
/// at a time.
fn reserve_for_read(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
}

fn try_write_all(stream: &TcpStream, buf: &mut BytesMut) -> std::io::Result<()> {
    while !buf.is_empty() {
        match stream.try_write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf.advance(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The future of a connection stays small: it is copied into its box, and an unboxed
    /// request loop made it about 10 KB.
    #[tokio::test]
    async fn the_per_connection_task_is_small() {
        let config: crate::config::Config =
            toml::from_str("[primary]\nhost = \"127.0.0.1\"\nport = 5432\n").expect("config");
        let ctx = crate::context::Context::new(config, crate::shutdown::Shutdown::default())
            .expect("context");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let task = super::serve_connection(std::sync::Arc::new(ctx), client, addr);
        let size = std::mem::size_of_val(&task);
        assert!(size < 2048, "the per-connection future is {size} bytes");
    }
}
