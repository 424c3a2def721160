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
mod failover;
mod frontend;
mod handshake;
mod link;
mod plan;
mod prepared;
pub mod probe;
pub mod relay;
mod replies;
pub mod reset;
pub mod state;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;
use tracing::Instrument;

use crate::context::Context;
use dispatch::Routing;
pub use error::SessionError;
use frontend::Frontend;
use link::Link;

/// Stop reading from one side while this much is buffered for the other (backpressure).
const HIGH_WATER: usize = 1 << 20;

/// What a client connection is: TCP in production, an in-memory duplex in unit tests (and
/// TLS later).
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientStream for T {}

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

/// A wait that keeps the client's output back (see `causal`); a task of its own, aborted
/// with the session.
type OutputHold = tokio_util::task::AbortOnDropHandle<()>;

/// A client connection after startup.
pub struct Session<C> {
    ctx: Arc<Context>,
    client: C,
    /// The client's address, named by the info lines logged for it.
    peer: SocketAddr,
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
    Box::pin(serve_connection(ctx, client, peer))
}

/// Serve one client connection of any stream type until it ends.
pub async fn serve_connection<C: ClientStream>(ctx: Arc<Context>, client: C, peer: SocketAddr) {
    // At debug level: a span the log subscriber keeps costs microseconds per connection.
    // User and database are recorded once the startup packet has been read.
    let span = tracing::debug_span!(
        "client",
        client.addr = %peer,
        user = tracing::field::Empty,
        database = tracing::field::Empty,
    );
    // The request loop's future is several kilobytes: boxed, it is not part of this one.
    let result = Box::pin(handshake::handshake(&ctx, client, peer))
        .instrument(span.clone())
        .await;
    match result {
        Ok(Some(mut session)) => {
            let outcome = Box::pin(session.run()).instrument(span.clone()).await;
            Box::pin(session.finish(outcome)).instrument(span).await;
        }
        Ok(None) => {}
        Err((mut stream, err)) => {
            handshake::report(&mut stream, peer, &err)
                .instrument(span)
                .await
        }
    }
}

impl<C: ClientStream> Session<C> {
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
            if self.routing.stalled && self.link.server.is_none() {
                self.routing.stalled = false;
                self.dispatch_batch().await?;
                // Requests that arrived behind the stalled one are already buffered.
                self.on_client_data().await?;
                continue;
            }
            if self.draining && self.is_quiescent() {
                return Err(SessionError::AdminShutdown);
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
                Event::Terminate => return Err(SessionError::AdminShutdown),
                Event::IdleTimeout => return Err(SessionError::IdleTimeout),
                Event::HoldOver => self.output_hold = None,
            }
        }
    }

    /// Whether nothing is in flight and no transaction is open.
    fn is_quiescent(&self) -> bool {
        self.front.tx.is_idle()
            && self.link.server.as_ref().is_none_or(link::Held::is_idle)
            && self.to_client.is_empty()
    }

    /// Wait for the next thing to do. Polled in this order: replies first, then requests,
    /// writes, and the rare signals and timers last.
    async fn next_event(&mut self) -> Result<Event, SessionError> {
        let read_client = !self.routing.stalled
            && self
                .link
                .server
                .as_ref()
                .is_none_or(|h| h.out.len() < HIGH_WATER);
        let read_server = self.to_client.len() < HIGH_WATER;
        let idle_timeout = self.ctx.config.proxy.client_idle_timeout;
        let idle_timer =
            !idle_timeout.is_zero() && self.is_quiescent() && self.link.server.is_none();
        let write_client = !self.to_client.is_empty() && self.output_hold.is_none();
        let mut idle = std::pin::pin!(async move {
            if idle_timer {
                tokio::time::sleep(idle_timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
        });
        let Session {
            client,
            inbuf,
            to_client,
            link,
            signals,
            draining,
            output_hold,
            ..
        } = self;
        reserve_for_read(inbuf);
        if let Some(held) = link.server.as_mut() {
            reserve_for_read(&mut held.conn.read_buf);
        }
        std::future::poll_fn(|cx| {
            if let (true, Some(held)) = (read_server, link.server.as_mut()) {
                let stream = Pin::new(&mut held.conn.stream);
                if let Poll::Ready(n) = poll_read_buf(stream, cx, &mut held.conn.read_buf) {
                    let eof = matches!(n, Ok(0) | Err(_));
                    return Poll::Ready(Ok(if eof {
                        Event::ServerEof
                    } else {
                        Event::ServerData
                    }));
                }
            }
            if read_client {
                if let Poll::Ready(n) = poll_read_buf(Pin::new(&mut *client), cx, inbuf) {
                    return Poll::Ready(match n {
                        Ok(0) => Err(SessionError::ClientGone),
                        Ok(_) => Ok(Event::ClientData),
                        Err(e) => Err(e.into()),
                    });
                }
            }
            if write_client {
                if let Poll::Ready(n) = Pin::new(&mut *client).poll_write(cx, to_client) {
                    to_client.advance(n?);
                    return Poll::Ready(Ok(Event::Wrote));
                }
            }
            if let Some(held) = link.server.as_mut().filter(|h| !h.out.is_empty()) {
                if let Poll::Ready(n) = Pin::new(&mut held.conn.stream).poll_write(cx, &held.out) {
                    return Poll::Ready(Ok(match n {
                        Ok(n) => {
                            held.out.advance(n);
                            Event::Wrote
                        }
                        Err(_) => Event::ServerEof,
                    }));
                }
            }
            // Terminate always follows drain: one signal to wait for at a time.
            let signal = if *draining {
                &mut signals.terminate
            } else {
                &mut signals.drain
            };
            if Pin::new(signal).poll(cx).is_ready() {
                return Poll::Ready(Ok(if *draining {
                    Event::Terminate
                } else {
                    Event::Drain
                }));
            }
            if idle.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(Event::IdleTimeout));
            }
            if let Some(hold) = output_hold.as_mut() {
                if Pin::new(hold).poll(cx).is_ready() {
                    return Poll::Ready(Ok(Event::HoldOver));
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Write what can be written without waiting. A replica read whose connection broke
    /// before any result comes back to be run elsewhere.
    fn flush_now(&mut self) -> Result<Option<link::Held>, SessionError> {
        if self.output_hold.is_none() {
            try_write_all(&mut self.client, &mut self.to_client)?;
        }
        if let Some(held) = self.link.server.as_mut() {
            if try_write_all(&mut held.conn.stream, &mut held.out).is_err() {
                return self.on_server_lost();
            }
        }
        Ok(None)
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
                        user = %self.link.login.user,
                        database = %self.link.login.database,
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
            let write = self.client.write_all(&self.to_client);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), write).await;
        }
        if let Some(held) = self.link.take(&self.ctx.replicas) {
            let tx = self.front.tx;
            self.link
                .retire(held, tx, &mut self.front.state, self.max_message)
                .await;
        }
        self.ctx.cancels.unregister(self.pid);
        self.ctx
            .clients
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Make room for a full read: a nearly full `BytesMut` would otherwise grow by 64 bytes
/// at a time.
fn reserve_for_read(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
}

/// Write as much of `buf` as the stream takes now, without waiting.
fn try_write_all<W: AsyncWrite + Unpin>(stream: &mut W, buf: &mut BytesMut) -> std::io::Result<()> {
    let mut cx = TaskContext::from_waker(std::task::Waker::noop());
    while !buf.is_empty() {
        match Pin::new(&mut *stream).poll_write(&mut cx, buf) {
            Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => buf.advance(n),
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    Ok(())
}
