//! The session's event sources, polled together: server replies, client requests, writes
//! both ways (with backpressure), shutdown signals, the idle timer and a held output.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use std::mem::MaybeUninit;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

use super::link::Held;
use super::{ClientStream, Session, SessionError, HIGH_WATER};
use crate::shutdown::Stage;

/// Events the session loop reacts to.
pub(super) enum Event {
    ClientData,
    ServerData,
    ServerEof,
    Wrote,
    Drain,
    Terminate,
    IdleTimeout,
    /// The client held a server connection in a transaction (or an unsynced extended
    /// request) without a word for `idle_transaction_timeout`.
    IdleInTransaction,
    /// The replicas have replayed a floor the store could not take (see `output_hold`).
    HoldOver,
}

impl<C: ClientStream> Session<C> {
    /// Wait for the next thing to do. Polled in this order: replies first, then requests,
    /// writes, and the rare signals and timers last.
    pub(super) async fn next_event(&mut self) -> Result<Event, SessionError> {
        // A client is read while what it asked for can still be buffered: requests for the
        // server, and replies it has not read yet, whoever made them (Causeway answers some
        // messages itself, e.g. a Sync with nothing to sync).
        let read_client = !self.routing.stalled
            && self.to_client.len() < HIGH_WATER
            && self
                .link
                .server
                .as_mut()
                .is_none_or(|h| h.out.len() < HIGH_WATER && !h.relay.saturated(&mut h.out));
        let read_server = self.to_client.len() < HIGH_WATER;
        let idle_timer = self.idle_timer();
        let write_client = !self.to_client.is_empty() && self.output_hold.is_none();
        let mut idle = std::pin::pin!(async move {
            match idle_timer {
                Some((timeout, event)) => {
                    tokio::time::sleep(timeout).await;
                    event
                }
                None => std::future::pending().await,
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
        // An empty client buffer without room for a full read is not grown for one: most
        // idle clients send nothing for long, and a request usually fits on the stack.
        let read_in_place = !inbuf.is_empty() || inbuf.capacity() >= READ_ROOM;
        if read_in_place {
            reserve_for_read(inbuf);
        }
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
                let polled = if read_in_place {
                    poll_read_buf(Pin::new(&mut *client), cx, inbuf)
                } else {
                    poll_read_via_stack(&mut *client, cx, inbuf)
                };
                if let Poll::Ready(n) = polled {
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
            // Terminate always follows drain: one stage to wait for at a time.
            let stage = if *draining {
                Stage::Terminate
            } else {
                Stage::Drain
            };
            if signals.poll_stage(stage, cx).is_ready() {
                return Poll::Ready(Ok(if *draining {
                    Event::Terminate
                } else {
                    Event::Drain
                }));
            }
            if let Poll::Ready(event) = idle.as_mut().poll(cx) {
                return Poll::Ready(Ok(event));
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

    /// Write the startup reply without waiting, and free its buffer (sized for it alone)
    /// once it is written: a client that stays idle would keep it.
    pub(super) fn flush_startup_reply(&mut self) -> Result<(), SessionError> {
        let unsent = self.to_client.len();
        try_write_all(&mut self.client, &mut self.to_client)?;
        self.stats.sent += unsent.saturating_sub(self.to_client.len()) as u64;
        if self.to_client.is_empty() {
            self.to_client = BytesMut::new();
        }
        Ok(())
    }

    /// The timer that runs while the client says nothing, if one applies: the idle-session
    /// timeout without a server connection, the idle-in-transaction one while the client
    /// holds a server connection that waits for it (DESIGN.md §6).
    fn idle_timer(&self) -> Option<(std::time::Duration, Event)> {
        let proxy = &self.ctx.config.proxy;
        match self.link.server.as_ref() {
            None => (!proxy.client_idle_timeout.is_zero() && self.is_quiescent())
                .then_some((proxy.client_idle_timeout, Event::IdleTimeout)),
            Some(held) => {
                let waits_for_client = (!self.front.tx.is_idle() || held.unsynced)
                    && held.relay.is_idle()
                    && held.out.is_empty()
                    && self.to_client.is_empty();
                (!proxy.idle_transaction_timeout.is_zero() && waits_for_client)
                    .then_some((proxy.idle_transaction_timeout, Event::IdleInTransaction))
            }
        }
    }

    /// Write what can be written without waiting. A replica read whose connection broke
    /// before any result comes back to be run elsewhere.
    pub(super) fn flush_now(&mut self) -> Result<Option<Held>, SessionError> {
        if self.output_hold.is_none() {
            let unsent = self.to_client.len();
            try_write_all(&mut self.client, &mut self.to_client)?;
            // For SHOW STATS (the buffer only shrinks here).
            self.stats.sent += unsent.saturating_sub(self.to_client.len()) as u64;
        }
        if let Some(held) = self.link.server.as_mut() {
            if try_write_all(&mut held.conn.stream, &mut held.out).is_err() {
                return self.on_server_lost();
            }
        }
        Ok(None)
    }
}

/// Spare room that makes a read worth doing in place.
const READ_ROOM: usize = 4096;

/// Bytes read at most through the stack (the rest waits in the socket for the next read).
const STACK_READ: usize = 8192;

/// An idle client's empty buffers keep at most this much capacity: the small requests and
/// results of OLTP traffic then reuse theirs, and a large result's memory goes back.
const IDLE_KEEP: usize = 1024;

/// Make room for a full read: a nearly full `BytesMut` would otherwise grow by 64 bytes
/// at a time.
fn reserve_for_read(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_ROOM {
        buf.reserve(16 * 1024);
    }
}

/// Read into a stack buffer and append what came to `buf`, which grows only by that much.
fn poll_read_via_stack<R: AsyncRead + Unpin>(
    stream: &mut R,
    cx: &mut TaskContext<'_>,
    buf: &mut BytesMut,
) -> Poll<std::io::Result<usize>> {
    let mut space = [MaybeUninit::<u8>::uninit(); STACK_READ];
    let mut read = ReadBuf::uninit(&mut space);
    match Pin::new(stream).poll_read(cx, &mut read) {
        Poll::Ready(Ok(())) => {
            buf.extend_from_slice(read.filled());
            Poll::Ready(Ok(read.filled().len()))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// Free an empty buffer's memory if it holds more than [`IDLE_KEEP`] (a large request's or
/// result's).
pub(super) fn shrink_if_large(buf: &mut BytesMut) {
    // `try_reclaim` counts the whole allocation of an empty, unshared buffer.
    if buf.is_empty() && buf.try_reclaim(IDLE_KEEP + 1) {
        *buf = BytesMut::new();
    }
}

/// Push onto a list an idle client keeps emptied for its next request: the first push
/// makes room for one entry only (most requests are one message, a simple Query), where
/// `Vec` would make room for four (issue 11: memory per idle client).
#[inline]
pub(super) fn push_kept<T>(list: &mut Vec<T>, item: T) {
    if list.capacity() == 0 {
        list.reserve_exact(1);
    }
    list.push(item);
}

/// [`push_kept`] for a queue.
#[inline]
pub(crate) fn push_back_kept<T>(queue: &mut std::collections::VecDeque<T>, item: T) {
    if queue.capacity() == 0 {
        queue.reserve_exact(1);
    }
    queue.push_back(item);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_lists_make_room_for_one_request_message_first() {
        let mut list = Vec::new();
        push_kept(&mut list, 1);
        assert_eq!(list.capacity(), 1, "a simple Query keeps room for one");
        push_kept(&mut list, 2);
        assert!(
            list.capacity() >= 2,
            "an extended request grows it as usual"
        );
        let mut queue = std::collections::VecDeque::new();
        push_back_kept(&mut queue, 1);
        assert_eq!(queue.capacity(), 1);
        push_back_kept(&mut queue, 2);
        assert_eq!(queue.iter().copied().collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn an_empty_buffer_gives_back_a_large_allocation_and_keeps_a_small_one() {
        let mut large = BytesMut::with_capacity(64 * 1024);
        large.extend_from_slice(&[1; 60 * 1024]);
        large.advance(60 * 1024);
        shrink_if_large(&mut large);
        assert_eq!(large.capacity(), 0);

        let mut small = BytesMut::with_capacity(256);
        small.extend_from_slice(b"SELECT 1");
        let message = small.split_to(4).freeze();
        shrink_if_large(&mut small);
        assert_eq!(small.len(), 4, "a buffer with data is kept");
        small.clear();
        shrink_if_large(&mut small);
        drop(message);
        assert!(
            small.try_reclaim(200),
            "a small buffer keeps its allocation"
        );
    }
}
