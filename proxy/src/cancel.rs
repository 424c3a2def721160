//! Query cancellation: Causeway hands each client its own (process id, key) pair and maps a
//! CancelRequest carrying it to the server connection running that client's query, if any.
//! A server connection that received a cancel is never handed to another client, so a late
//! cancel can only hit the query it was meant for.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use dashmap::DashMap;
use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Where a client's current query runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelTarget {
    pub host: Arc<str>,
    pub port: u16,
    pub pid: i32,
    pub secret: i32,
}

#[derive(Debug, Default)]
struct SlotState {
    target: Option<CancelTarget>,
    cancelled: bool,
}

/// One client's entry: its key and its current server connection.
#[derive(Debug)]
pub struct CancelSlot {
    secret: i32,
    // Locked briefly, never across an await.
    state: Mutex<SlotState>,
}

impl CancelSlot {
    /// The client now runs on this server connection.
    pub fn attach(&self, target: CancelTarget) {
        if let Ok(mut state) = self.state.lock() {
            *state = SlotState {
                target: Some(target),
                cancelled: false,
            };
        }
    }

    /// The client leaves its server connection. Returns whether a cancel was sent to it
    /// meanwhile, in which case the connection must be closed rather than reused.
    pub fn detach(&self) -> bool {
        match self.state.lock() {
            Ok(mut state) => std::mem::take(&mut *state).cancelled,
            Err(_) => true,
        }
    }

    /// The server connection the client holds now, if any (for the admin console).
    pub fn target(&self) -> Option<CancelTarget> {
        self.state.lock().ok()?.target.clone()
    }

    fn take_target(&self) -> Option<CancelTarget> {
        let mut state = self.state.lock().ok()?;
        let target = state.target.clone()?;
        state.cancelled = true;
        Some(target)
    }
}

/// All clients' cancel keys. A cheap clonable handle.
#[derive(Debug, Clone, Default)]
pub struct CancelRegistry {
    slots: Arc<DashMap<i32, Arc<CancelSlot>>>,
}

impl CancelRegistry {
    /// Allocate a fresh (process id, key) for a client.
    pub fn register(&self) -> (i32, Arc<CancelSlot>) {
        let mut rng = rand::rng();
        loop {
            let pid = rng.random_range(1..i32::MAX);
            if let dashmap::Entry::Vacant(entry) = self.slots.entry(pid) {
                let slot = Arc::new(CancelSlot {
                    secret: rng.random(),
                    state: Mutex::new(SlotState::default()),
                });
                entry.insert(slot.clone());
                return (pid, slot);
            }
        }
    }

    /// The secret of a registered client (for its BackendKeyData).
    pub fn secret(slot: &CancelSlot) -> i32 {
        slot.secret
    }

    /// Forget a client that disconnected.
    pub fn unregister(&self, pid: i32) {
        self.slots.remove(&pid);
    }

    /// Handle a CancelRequest: if the key matches a client that is running a query, forward
    /// a cancel to its server. Unknown or stale keys do nothing, as in PostgreSQL.
    pub async fn cancel(&self, pid: i32, key: &[u8], timeout: Duration) {
        let Some(slot) = self.slots.get(&pid).map(|s| s.value().clone()) else {
            return;
        };
        let Ok(key) = <[u8; 4]>::try_from(key) else {
            return;
        };
        if !crate::auth::constant_time_eq(&key, &slot.secret.to_be_bytes()) {
            return;
        }
        let Some(target) = slot.take_target() else {
            return;
        };
        if let Err(err) = tokio::time::timeout(timeout, send_cancel(&target)).await {
            tracing::debug!(%err, "cancel request to server timed out");
        }
    }
}

async fn send_cancel(target: &CancelTarget) {
    let mut buf = BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(target.pid, target.secret, &mut buf);
    match TcpStream::connect((&*target.host, target.port)).await {
        Ok(mut stream) => {
            if let Err(err) = stream.write_all(&buf).await {
                tracing::debug!(%err, "could not send cancel request");
            }
            // The server closes the connection when done; wait for that briefly.
            let mut sink = [0u8; 1];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await;
        }
        Err(err) => tracing::debug!(%err, "could not connect to send cancel request"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_reports_a_cancel_sent_while_attached() {
        let registry = CancelRegistry::default();
        let (_, slot) = registry.register();
        slot.attach(CancelTarget {
            host: "127.0.0.1".into(),
            port: 1,
            pid: 5,
            secret: 6,
        });
        assert!(slot.take_target().is_some());
        assert!(slot.detach());
        assert!(!slot.detach());
        assert!(slot.take_target().is_none());
    }
}
