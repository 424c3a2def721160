//! The session's event sources, polled together: server replies, client requests, writes
//! both ways (with backpressure), shutdown signals, the idle timer and a held output.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWrite;
use tokio_util::io::poll_read_buf;

use super::link::Held;
use super::{ClientStream, Session, SessionError, HIGH_WATER};

/// Events the session loop reacts to.
pub(super) enum Event {
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

impl<C: ClientStream> Session<C> {
    /// Wait for the next thing to do. Polled in this order: replies first, then requests,
    /// writes, and the rare signals and timers last.
    pub(super) async fn next_event(&mut self) -> Result<Event, SessionError> {
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
    pub(super) fn flush_now(&mut self) -> Result<Option<Held>, SessionError> {
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
