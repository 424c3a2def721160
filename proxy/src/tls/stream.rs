//! [`Flushing`]: a TLS stream that pushes its encrypted output to the socket by itself.
//!
//! A TLS stream accepts plaintext into its own buffer and may keep the records it could not
//! send yet until it is flushed; the session and the login exchanges write and then wait to
//! read, so each read (and each write) here first flushes what is pending. The plaintext path
//! never goes through this type.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream (a TLS stream in practice) whose reads and writes flush pending output first.
#[derive(Debug)]
pub struct Flushing<S>(pub S);

impl<S> Flushing<S> {
    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.0
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Flushing<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        // A write error shows on the next write; a pending flush wakes us when writable.
        let _ = Pin::new(&mut self.0).poll_flush(cx);
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Flushing<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        ready!(Pin::new(&mut self.0).poll_flush(cx))?;
        let written = ready!(Pin::new(&mut self.0).poll_write(cx, buf))?;
        let _ = Pin::new(&mut self.0).poll_flush(cx);
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
