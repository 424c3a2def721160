//! One client connection: startup and authentication, then a loop that relays requests to a
//! pooled server connection held for one transaction (or the whole session) and replies back,
//! keeping the client's session state consistent across server connections.
//!
//! # The path of a request, in order
//! - this file: [`Session::run`] waits for an [`Event`] (client bytes, server bytes, writes,
//!   signals, timers) and hands it on;
//! - `frontend`: frames client messages and dispatches each one: answered by Causeway
//!   (`command`), collected into a request to route (`dispatch`), or forwarded on the held
//!   server connection, with statement renaming and lazy prepares in `prepared`;
//! - `dispatch`: classifies a collected request (`plan`), asks the pure router
//!   ([`crate::router`]) for a node, and `link` acquires a connection there (restoring the
//!   client's session state with `reset`);
//! - `replies`: matches server replies to requests (`relay`), relays them, and hands causal
//!   probe answers to `causal` (floors and the session store);
//! - `failover`: a replica read that loses its server before any result runs elsewhere;
//!   anything else lost ends the session with the error from `error`.

mod causal;
mod client_auth;
mod command;
mod dispatch;
mod error;
mod extended_command;
mod failover;
mod frontend;
mod handshake;
mod io;
mod link;
mod plan;
mod prepared;
pub mod probe;
pub mod relay;
mod replies;
pub mod reset;
mod startup_params;
pub mod state;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::context::Context;
use dispatch::Routing;
pub use error::SessionError;
use frontend::Frontend;
use io::Event;
use link::Link;

/// Stop reading from one side while this much is buffered for the other (backpressure).
const HIGH_WATER: usize = 1 << 20;

/// What a client connection is: TCP or TLS over TCP in production, an in-memory duplex in
/// unit tests.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static> ClientStream for T {}

/// A wait that keeps the client's output back (see `causal`); a task of its own, aborted
/// with the session.
type OutputHold = tokio_util::task::AbortOnDropHandle<()>;

/// A client connection after startup.
pub struct Session<C> {
    ctx: Arc<Context>,
    client: C,
    inbuf: BytesMut,
    to_client: BytesMut,
    max_message: usize,
    /// The client's protocol state: session state, transaction status, statements, portals.
    front: Frontend,
    /// The server connection held for the client, and the pools it comes from.
    link: Link,
    /// Floors, `SET causeway.*` settings and the request being collected for routing.
    routing: Routing,
    /// The client's cancel key id.
    pid: i32,
    draining: bool,
    signals: crate::shutdown::Signals,
    /// While set, nothing is written to the client: a write's ReadyForQuery waits until
    /// the replicas have replayed a floor the session store could not take. The server
    /// connection goes back to the pool meanwhile.
    output_hold: Option<OutputHold>,
    /// Counts for `SHOW STATS`, added to the database's totals at each transaction end
    /// (boxed: 8 bytes in the session, whose size idle clients pay).
    stats: Box<crate::console::stats::SessionStats>,
    /// The client's place among `max_client_connections`, given back with the session.
    _admission: handshake::Admission,
}

/// Serve one accepted TCP client connection until it ends. The future is boxed so that the
/// task spawned for it is small: tokio moves a task's future several times while spawning
/// it.
pub fn serve(
    ctx: Arc<Context>,
    client: TcpStream,
    peer: SocketAddr,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let _ = client.set_nodelay(true);
    if ctx.client_tls.is_some() {
        return Box::pin(crate::tls::serve(ctx, client, peer));
    }
    Box::pin(serve_connection(ctx, client, peer))
}

/// Serve one plaintext client connection of any stream type until it ends.
pub fn serve_connection<C: ClientStream>(
    ctx: Arc<Context>,
    client: C,
    peer: SocketAddr,
) -> impl Future<Output = ()> {
    serve_opened(ctx, client, peer, crate::tls::Opened::default())
}

/// Serve one client connection whose opening (TLS or not, see [`crate::tls::serve`]) is
/// done, until it ends.
///
/// The future is small while the client is idle (issue 11: memory per idle client): the
/// arguments go into the boxed handshake at once (an async fn would keep a copy of them for
/// its whole life), and what follows the handshake is one boxed future of its own.
pub fn serve_opened<C: ClientStream>(
    ctx: Arc<Context>,
    client: C,
    peer: SocketAddr,
    opened: crate::tls::Opened,
) -> impl Future<Output = ()> + Send {
    // At debug level: a span the log subscriber keeps costs microseconds per connection.
    // User and database are recorded once the startup packet has been read.
    let span = tracing::debug_span!(
        "client",
        client.addr = %peer,
        user = tracing::field::Empty,
        database = tracing::field::Empty,
    );
    // Connections still in startup are capped too: silent ones must not take every
    // descriptor (they are closed at once past the cap).
    let cap = ctx.config.proxy.max_client_connections;
    let starting = handshake::Admission::take(&ctx.starting, cap);
    let handshake = starting.is_some().then(|| {
        let ctx = ctx.clone();
        Box::pin(async move { handshake::handshake(&ctx, client, peer, opened).await })
    });
    async move {
        let (Some(starting), Some(handshake)) = (starting, handshake) else {
            tracing::debug!(client.addr = %peer, "too many connections in startup; closed");
            return;
        };
        let result = handshake.instrument(span.clone()).await;
        drop(starting);
        after_handshake(ctx, peer, result).instrument(span).await;
    }
}

/// What a connection does once its handshake ended: its session, the admin console, or
/// the report of a failed startup.
fn after_handshake<C: ClientStream>(
    ctx: Arc<Context>,
    peer: SocketAddr,
    result: Result<Option<handshake::Opened<C>>, (C, SessionError)>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    match result {
        Ok(Some(handshake::Opened::Session(mut session))) => Box::pin(async move {
            let outcome = session.run().await;
            Box::pin(session.finish(outcome)).await;
        }),
        Ok(Some(handshake::Opened::Console(console))) => Box::pin(console.serve(ctx)),
        Ok(None) => Box::pin(std::future::ready(())),
        Err((mut stream, err)) => Box::pin(async move {
            if let Some(kind) = err.protocol_kind() {
                ctx.metrics.protocol_error(kind);
            }
            handshake::report(&mut stream, peer, &err).await
        }),
    }
}

impl<C: ClientStream> Session<C> {
    /// The request loop.
    ///
    /// Its future is kept by every idle client, and is as large as the largest state it
    /// awaits in: the rare paths are boxed, and no value the loop only passes on (a lost
    /// connection, an event) stays in its frame across an await (issue 11: memory per idle
    /// client).
    async fn run(&mut self) -> Result<(), SessionError> {
        self.flush_startup_reply()?;
        // Messages the client pipelined behind its startup or password.
        if !self.inbuf.is_empty() {
            self.on_client_data().await?;
        }
        loop {
            let lost = self.flush_now()?;
            if let Some(retry) = self.retry_boxed(lost) {
                retry.await?;
                continue;
            }
            self.release_if_idle();
            self.shrink_idle_buffers();
            if self.routing.stalled && self.link.server.is_none() {
                self.routing.stalled = false;
                Box::pin(self.dispatch_batch()).await?;
                // Requests that arrived behind the stalled one are already buffered.
                self.on_client_data().await?;
                continue;
            }
            if self.draining && self.is_quiescent() {
                return Err(SessionError::AdminShutdown);
            }
            // For SHOW STATS: an event reads into the client buffer or writes from the
            // output, nothing else, so the lengths' difference is what it read or wrote.
            self.stats.mark(self.inbuf.len(), self.to_client.len());
            let event = self.next_event().await?;
            match event {
                Event::ClientData => {
                    self.stats.read_to(self.inbuf.len());
                    self.on_client_data().await?
                }
                Event::ServerData => {
                    let deferred = self.relay_replies()?;
                    if let Some(deferred) = deferred {
                        Box::pin(self.on_deferred(deferred)).await?;
                    }
                }
                Event::ServerEof => {
                    let lost = self.on_server_lost()?;
                    if let Some(retry) = self.retry_boxed(lost) {
                        retry.await?;
                    }
                }
                Event::Wrote => self.stats.wrote_to(self.to_client.len()),
                Event::Drain => self.draining = true,
                Event::Terminate => return Err(SessionError::AdminShutdown),
                Event::IdleTimeout => return Err(SessionError::IdleTimeout),
                Event::IdleInTransaction => return Err(SessionError::IdleInTransaction),
                Event::HoldOver => self.output_hold = None,
            }
        }
    }

    /// The retry of a request whose server connection was lost, boxed with the connection
    /// (see [`Session::run`]).
    fn retry_boxed(
        &mut self,
        lost: Option<link::Held>,
    ) -> Option<Pin<Box<impl Future<Output = Result<(), SessionError>> + '_>>> {
        lost.map(|held| Box::pin(self.retry_elsewhere(held, false)))
    }

    /// Between requests, give back what the buffers grew to for a large one (a client may
    /// stay idle for long). Busy clients keep theirs: nothing is in flight here.
    fn shrink_idle_buffers(&mut self) {
        if !self.link.server.as_ref().is_none_or(link::Held::is_idle) {
            return;
        }
        io::shrink_if_large(&mut self.inbuf);
        io::shrink_if_large(&mut self.to_client);
        self.link.shrink_idle_buffers();
    }

    /// Whether nothing is in flight and no transaction is open.
    fn is_quiescent(&self) -> bool {
        self.front.tx.is_idle()
            && self.link.server.as_ref().is_none_or(link::Held::is_idle)
            && self.to_client.is_empty()
    }

    /// The client's address, named by the info lines logged for it (kept in its cancel
    /// slot: one copy per client).
    fn peer(&self) -> SocketAddr {
        self.link.cancel.info().addr
    }

    /// Clean up after the loop ended: report, return or close the server connection.
    async fn finish(&mut self, outcome: Result<(), SessionError>) {
        if let Some(kind) = outcome.as_ref().err().and_then(SessionError::protocol_kind) {
            self.ctx.metrics.protocol_error(kind);
        }
        if let Err(err) = &outcome {
            if !matches!(err, SessionError::ClientGone) {
                if err.is_disconnect() {
                    tracing::debug!(%err, "client connection ended");
                } else {
                    tracing::info!(
                        client.addr = %self.peer(),
                        user = ?self.link.login.user,
                        database = ?self.link.login.database,
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
            let write = async {
                self.client.write_all(&self.to_client).await?;
                self.client.flush().await
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), write).await;
        }
        if let Some(held) = self.link.take(&self.ctx.replicas) {
            let tx = self.front.tx;
            self.link
                .retire(held, tx, &mut self.front.state, self.max_message)
                .await;
        }
        self.ctx.cancels.unregister(self.pid);
    }
}
