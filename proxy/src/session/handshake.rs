//! The start of a client connection: the opening packets, the admission checks, client
//! authentication (`client_auth`), the pool the client's requests use, and the first reply
//! (parameters, cancel key, ReadyForQuery), all bounded by `startup_timeout`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::client_auth::{self, Opening};
use super::dispatch::Routing;
use super::frontend::Frontend;
use super::link::Link;
use super::state::ClientState;
use super::{startup_params, ClientStream, Session, SessionError};
use crate::backend::{Login, Pool, PoolError, ServerConn};
use crate::cancel::{CancelRegistry, CancelSlot};
use crate::config::PoolMode;
use crate::context::Context;
use crate::protocol::encode;
use crate::protocol::TxStatus;
use crate::router::Node;

/// A place among a bounded number of connections, given back when dropped.
pub(super) struct Admission(Arc<AtomicUsize>);

impl Admission {
    /// A place, if fewer than `max` are taken: the check and the count are one atomic step.
    pub(super) fn take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Admission> {
        if counter.fetch_add(1, Ordering::AcqRel) >= max {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admission(counter.clone()))
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What startup settled for the session.
struct Startup {
    admission: Admission,
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

/// What startup settled: a session, or the admin console (database `causeway`).
enum Begun {
    Session(Box<Startup>),
    Console {
        admission: Admission,
        out: BytesMut,
        pending: BytesMut,
    },
}

/// An authenticated client connection.
pub(super) enum Opened<C> {
    Session(Box<Session<C>>),
    Console(ConsoleClient<C>),
}

/// An admin-console client after startup ([`crate::console`]).
pub(super) struct ConsoleClient<C> {
    client: C,
    out: BytesMut,
    pending: BytesMut,
    _admission: Admission,
}

impl<C: ClientStream> ConsoleClient<C> {
    /// Serve the console until the client leaves.
    pub(super) async fn serve(mut self, ctx: Arc<Context>) {
        let (out, pending) = (self.out, self.pending);
        if let Err(err) = crate::console::serve(ctx, &mut self.client, out, pending).await {
            tracing::info!(%err, "admin console connection ended");
        }
    }
}

/// Startup and authentication, bounded by `startup_timeout`. `None` when the connection
/// carried a cancel request or ended before a startup packet.
pub(super) async fn handshake<C: ClientStream>(
    ctx: &Arc<Context>,
    mut client: C,
    peer: SocketAddr,
    opened: crate::tls::Opened,
) -> Result<Option<Opened<C>>, (C, SessionError)> {
    let timeout = ctx.config.proxy.startup_timeout;
    // Set while startup waits for a server connection, to report the real cause when the
    // startup timeout strikes there (all server connections busy, or the server slow).
    let waiting_for_server = std::sync::atomic::AtomicBool::new(false);
    let started = tokio::time::Instant::now();
    let starting = start(ctx, &mut client, peer, &waiting_for_server, opened);
    match tokio::time::timeout(timeout, starting).await {
        Ok(Ok(Some(Begun::Session(parts)))) => Ok(Some(Opened::Session(Box::new(Session::new(
            ctx.clone(),
            client,
            *parts,
        ))))),
        Ok(Ok(Some(Begun::Console {
            admission,
            out,
            pending,
        }))) => Ok(Some(Opened::Console(ConsoleClient {
            client,
            out,
            pending,
            _admission: admission,
        }))),
        Ok(Ok(None)) => Ok(None),
        Ok(Err(err)) => Err((client, err)),
        // PAUSE held the login's first checkout past the startup timeout.
        Err(_) if waiting_for_server.load(Ordering::Relaxed) && ctx.console.pause.is_paused() => {
            Err((client, PoolError::Paused(started.elapsed()).into()))
        }
        Err(_) if waiting_for_server.load(Ordering::Relaxed) => {
            let node = ctx.primary.to_string();
            let waited = started.elapsed();
            Err((client, PoolError::CheckoutTimeout(waited, node).into()))
        }
        Err(_) => Err((client, SessionError::StartupTimeout)),
    }
}

/// Log a connection that failed before its session began, and tell the client why.
pub(super) async fn report<C: ClientStream>(stream: &mut C, peer: SocketAddr, err: &SessionError) {
    if err.is_disconnect() {
        tracing::debug!(%err, "client connection ended");
    } else {
        tracing::info!(client.addr = %peer, %err, "client connection failed");
    }
    if let Some(pg) = err.to_client() {
        let _ = stream.write_all(&pg.to_bytes()).await;
        let _ = stream.flush().await;
    }
}

async fn start<C: ClientStream>(
    ctx: &Context,
    client: &mut C,
    peer: SocketAddr,
    waiting_for_server: &std::sync::atomic::AtomicBool,
    opened: crate::tls::Opened,
) -> Result<Option<Begun>, SessionError> {
    // What the client sends after its startup packet (and password), kept for the session;
    // it starts with what the TLS negotiation read of the startup packet, if anything.
    let mut pending = opened.pending;
    let message = match client_auth::read_opening(client, &mut pending).await? {
        Opening::Gone => return Ok(None),
        Opening::Cancel { pid, key } => {
            ctx.cancels
                .cancel(pid, &key, ctx.config.proxy.connect_timeout)
                .await;
            return Ok(None);
        }
        Opening::Startup(message) => message,
    };
    if ctx.shutdown.drain.is_cancelled() {
        return Err(SessionError::ShuttingDown);
    }
    let admission = Admission::take(&ctx.clients, ctx.config.proxy.max_client_connections)
        .ok_or(SessionError::TooManyClients)?;
    let user = message.param("user").unwrap_or_default().to_owned();
    let tls_mode = ctx.config.client_tls.sslmode;
    crate::tls::check_client_transport(tls_mode, &opened.encryption, &user)
        .map_err(SessionError::Client)?;
    let database = message.param("database").unwrap_or(&user).to_owned();
    // Escaped (Debug): names from a client not yet authenticated go into logs.
    tracing::Span::current()
        .record("user", tracing::field::debug(&user))
        .record("database", tracing::field::debug(&database));
    let (params, causeway_params) =
        client_auth::session_params(&message).map_err(SessionError::Client)?;
    let session_key = causeway_params
        .into_iter()
        .find(|(name, _)| name == "causeway.session")
        .map(|(_, value)| value)
        .filter(|key| {
            // An unusable key is a hint error (DESIGN.md §3): ignored, counted.
            let valid = crate::hints::valid_session_key(key);
            if !valid {
                ctx.metrics.hint_error();
            }
            valid
        });
    let mut out = BytesMut::new();
    client_auth::negotiate(&message, &mut out);
    let credential = client_auth::authenticate(ctx, client, &user, &mut out, &mut pending).await?;
    if database == crate::console::DATABASE {
        if !crate::console::is_admin(&ctx.config, &user) {
            return Err(SessionError::Client(crate::console::refusal(&user)));
        }
        // A key no cancel matches: there is nothing to cancel on the console.
        crate::console::startup_reply(ctx, &mut out, rand::random(), rand::random());
        return Ok(Some(Begun::Console {
            admission,
            out,
            pending,
        }));
    }
    let user_cfg = ctx.config.user(&user);
    let mut login = Login {
        user: user.clone(),
        database,
        credential: Arc::new(credential),
        allow_cleartext: ctx.config.auth.allow_server_cleartext,
        generation: ctx.generation,
    };
    let pool_size = user_cfg.and_then(|u| u.pool_size);
    let pool = ctx.pools.get(ctx.primary_now(), &login, pool_size);
    if let Some(shared) = pool.same_credential(&login.credential) {
        login.credential = shared;
    }
    let state = ClientState::new(params);
    let session_mode = ctx.config.proxy.pool_mode == PoolMode::Session;
    // Like PgBouncer, a client whose startup parameters a server connection of this pool
    // has already accepted gets the server's parameters from the pool, without waiting
    // for a server connection (under load all of them may be busy).
    let known = pool
        .startup_params()
        .filter(|_| !session_mode && pool.accepted_startup(state.fingerprint()));
    let (server_params, server) = match known {
        Some(params) => (params, None),
        // Check out a server connection now: it proves the database and login work,
        // gives the server's parameters, and validates the client's startup parameters
        // (without a primary, a replica's: see `startup_params`).
        None => {
            let (login, state) = (&login, &state);
            startup_params::first_server(
                ctx,
                &pool,
                login,
                pool_size,
                state,
                session_mode,
                waiting_for_server,
            )
            .await?
        }
    };
    let info = crate::console::registry::ClientInfo::new(&login.user, &login.database, peer);
    let (pid, cancel) = ctx.cancels.register(info);
    write_startup_reply(
        &mut out,
        &server_params,
        &state,
        pid,
        CancelRegistry::secret(&cancel),
    );
    Ok(Some(Begun::Session(Box::new(Startup {
        admission,
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
    }))))
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
            .map(|(_, v)| v.as_str())
            .map(|v| match name.eq_ignore_ascii_case("client_encoding") {
                // Reported in PostgreSQL's spelling, whatever the client sent.
                true => crate::protocol::encoding::canonical(v).unwrap_or(v),
                false => v,
            });
        encode::parameter_status(out, name, client_value.unwrap_or(value));
    }
    encode::backend_key_data(out, pid, secret);
    encode::ready_for_query(out, TxStatus::Idle);
}

impl<C: ClientStream> Session<C> {
    fn new(ctx: Arc<Context>, client: C, parts: Startup) -> Session<C> {
        let proxy = &ctx.config.proxy;
        let max_message = proxy.max_message_bytes;
        let session_mode = proxy.pool_mode == PoolMode::Session;
        let db_stats = ctx.console.stats.database(&parts.login.database);
        let front = Frontend::new(
            parts.state,
            proxy.max_client_prepared_statements,
            proxy.max_client_prepared_bytes,
            session_mode,
        );
        let link = Link::new(
            parts.pool,
            parts.login,
            parts.pool_size,
            parts.cancel,
            session_mode,
        );
        let routing = Routing::new(parts.session_key, !ctx.replicas.is_empty());
        let signals = ctx.shutdown.subscribe();
        let mut session = Session {
            ctx,
            client,
            // The startup packet's read buffer is not kept unless it holds more.
            inbuf: if parts.pending.is_empty() {
                BytesMut::new()
            } else {
                parts.pending
            },
            to_client: parts.out,
            max_message,
            front,
            link,
            routing,
            pid: parts.pid,
            draining: false,
            signals,
            output_hold: None,
            stats: Box::new(crate::console::stats::SessionStats::new(db_stats)),
            _admission: parts.admission,
        };
        if let Some(conn) = parts.server {
            let pool = session.link.pool.clone();
            session.hold(conn, Node::Primary, pool);
        }
        session
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admissions_are_counted_atomically_and_given_back() {
        let counter = Arc::new(AtomicUsize::new(0));
        let first = Admission::take(&counter, 2);
        let second = Admission::take(&counter, 2);
        assert!(first.is_some() && second.is_some());
        assert!(Admission::take(&counter, 2).is_none());
        assert_eq!(counter.load(Ordering::Relaxed), 2);
        drop(first);
        assert!(Admission::take(&counter, 2).is_some());
        drop(second);
        assert_eq!(counter.load(Ordering::Relaxed), 0);
    }
}
