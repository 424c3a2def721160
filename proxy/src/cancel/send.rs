//! Sending a CancelRequest over a new TCP connection (to a server, or to a peer instance),
//! bounded process-wide: at most [`MAX_OUTGOING`] such connections are open at once, and
//! each, including the wait for its turn, within a timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Outgoing cancel connections open at once, process-wide.
pub const MAX_OUTGOING: usize = 32;

/// The process-wide bound on outgoing cancel connections, and how many were opened.
#[derive(Debug, Clone)]
pub(super) struct Outgoing {
    permits: Arc<Semaphore>,
    opened: Arc<AtomicU64>,
}

impl Default for Outgoing {
    fn default() -> Self {
        Outgoing {
            permits: Arc::new(Semaphore::new(MAX_OUTGOING)),
            opened: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Outgoing {
    /// Connections opened to send a cancel so far.
    pub(super) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Send a CancelRequest for (`pid`, `key`) to `host:port`, giving up after `timeout`
    /// (counting the wait for a free slot). Failures are logged at debug level only: a
    /// cancel is best effort, as in PostgreSQL.
    pub(super) async fn send(
        &self,
        host: &str,
        port: u16,
        pid: i32,
        key: [u8; 4],
        timeout: Duration,
    ) {
        let run = async {
            let Ok(_permit) = self.permits.acquire().await else {
                return;
            };
            self.opened.fetch_add(1, Ordering::Relaxed);
            send_once(host, port, pid, key).await;
        };
        if tokio::time::timeout(timeout, run).await.is_err() {
            tracing::debug!(host, port, "cancel request timed out");
        }
    }
}

async fn send_once(host: &str, port: u16, pid: i32, key: [u8; 4]) {
    let mut buf = BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(pid, i32::from_be_bytes(key), &mut buf);
    match TcpStream::connect((host, port)).await {
        Ok(mut stream) => {
            if let Err(err) = stream.write_all(&buf).await {
                tracing::debug!(%err, "could not send cancel request");
            }
            // The receiver closes the connection when done; wait for that briefly.
            let mut sink = [0u8; 1];
            let _ = stream.read(&mut sink).await;
        }
        Err(err) => tracing::debug!(%err, "could not connect to send cancel request"),
    }
}
