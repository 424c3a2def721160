//! Query cancellation: Causeway hands each client its own (process id, key) pair and maps a
//! CancelRequest carrying it to the server connection running that client's query, if any.
//! A server connection that received a cancel is never handed to another client, so a late
//! cancel can only hit the query it was meant for. At most one cancel is forwarded per
//! request (a client repeating CancelRequest opens no further server connections), outgoing
//! cancel connections are bounded process-wide, and with peering (`[proxy] peer_id`,
//! `[[peers]]`) a cancel for another instance's client is passed on to it.

mod key;
mod send;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;

pub use key::MAX_PEER_ID;
pub use send::MAX_OUTGOING;

use crate::console::registry::ClientInfo;
use key::Route;

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
    /// No cancel was forwarded for the client's current request yet.
    armed: AtomicBool,
    /// Who the client is, for the admin console and log lines.
    info: ClientInfo,
}

impl CancelSlot {
    fn new(secret: i32, info: ClientInfo) -> CancelSlot {
        CancelSlot {
            secret,
            state: Mutex::new(SlotState::default()),
            armed: AtomicBool::new(true),
            info,
        }
    }

    /// Who the client is (see [`crate::console::registry`]).
    pub fn info(&self) -> &ClientInfo {
        &self.info
    }

    /// The client now runs on this server connection.
    pub fn attach(&self, target: CancelTarget) {
        if let Ok(mut state) = self.state.lock() {
            *state = SlotState {
                target: Some(target),
                cancelled: false,
            };
        }
        self.rearm();
    }

    /// The client sent a new request: a cancel may be forwarded for it.
    pub fn rearm(&self) {
        self.armed.store(true, Ordering::Relaxed);
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

    /// The server connection to cancel, unless none is held or a cancel was already
    /// forwarded for the current request.
    fn take_target(&self) -> Option<CancelTarget> {
        let mut state = self.state.lock().ok()?;
        let target = state.target.clone()?;
        if !self.armed.swap(false, Ordering::Relaxed) {
            return None;
        }
        state.cancelled = true;
        Some(target)
    }
}

/// Another Causeway instance that cancels may be forwarded to (`[[peers]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub host: Arc<str>,
    pub port: u16,
}

/// All clients' cancel keys. A cheap clonable handle.
#[derive(Debug, Clone, Default)]
pub struct CancelRegistry {
    slots: Arc<DashMap<i32, Arc<CancelSlot>>>,
    outgoing: send::Outgoing,
    /// This instance's `peer_id` (0: no peering).
    peer_id: u8,
    peers: Arc<HashMap<u8, Peer>>,
}

impl CancelRegistry {
    /// A registry for the instance `peer_id` (0: no peering) with these peers; an entry
    /// with the instance's own id is skipped (every instance may share one peer list).
    pub fn new(peer_id: u8, peers: impl IntoIterator<Item = (u8, Peer)>) -> CancelRegistry {
        let peers = peers
            .into_iter()
            .filter(|(id, _)| peer_id != 0 && *id != peer_id)
            .collect();
        CancelRegistry {
            peer_id,
            peers: Arc::new(peers),
            ..CancelRegistry::default()
        }
    }

    /// Allocate a fresh (process id, key) for a client; it is listed by the admin console
    /// until unregistered.
    pub fn register(&self, info: ClientInfo) -> (i32, Arc<CancelSlot>) {
        let mut rng = rand::rng();
        loop {
            let pid = key::new_pid(self.peer_id, &mut rng);
            if let dashmap::Entry::Vacant(entry) = self.slots.entry(pid) {
                let slot = Arc::new(CancelSlot::new(key::new_secret(&mut rng), info));
                entry.insert(slot.clone());
                return (pid, slot);
            }
        }
    }

    /// The secret of a registered client (for its BackendKeyData).
    pub fn secret(slot: &CancelSlot) -> i32 {
        slot.secret
    }

    /// Calls `f` with every registered client's process id and slot.
    pub fn for_each_slot(&self, mut f: impl FnMut(i32, &CancelSlot)) {
        for entry in self.slots.iter() {
            f(*entry.key(), entry.value());
        }
    }

    /// Forget a client that disconnected.
    pub fn unregister(&self, pid: i32) {
        self.slots.remove(&pid);
    }

    /// TCP connections opened so far to send cancels (to servers and peers).
    pub fn connections_opened(&self) -> u64 {
        self.outgoing.opened()
    }

    /// Handle a CancelRequest: if the key matches a client that is running a query, forward
    /// a cancel to its server (once per request); if it names a peer instance, pass it on
    /// to that instance. Unknown or stale keys do nothing, as in PostgreSQL.
    pub async fn cancel(&self, pid: i32, key: &[u8], timeout: Duration) {
        let Ok(key) = <[u8; 4]>::try_from(key) else {
            return;
        };
        match key::route(self.peer_id, pid, key, |id| self.peers.contains_key(&id)) {
            Route::Local => self.cancel_local(pid, key, timeout).await,
            Route::Peer { id, key } => {
                if let Some(peer) = self.peers.get(&id) {
                    tracing::debug!(peer = id, "forwarding a cancel request to a peer");
                    self.outgoing
                        .send(&peer.host, peer.port, pid, key, timeout)
                        .await;
                }
            }
            Route::Exhausted => {
                tracing::debug!(peer = ?key::peer_of(pid), "cancel request already forwarded once; dropped");
            }
        }
    }

    async fn cancel_local(&self, pid: i32, key: [u8; 4], timeout: Duration) {
        let Some(slot) = self.slots.get(&pid).map(|s| s.value().clone()) else {
            return;
        };
        let key = key::local_secret(key);
        if !crate::auth::constant_time_eq(&key, &slot.secret.to_be_bytes()) {
            return;
        }
        let Some(target) = slot.take_target() else {
            return;
        };
        self.outgoing
            .send(
                &target.host,
                target.port,
                target.pid,
                target.secret.to_be_bytes(),
                timeout,
            )
            .await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn target() -> CancelTarget {
        CancelTarget {
            host: "127.0.0.1".into(),
            port: 1,
            pid: 5,
            secret: 6,
        }
    }

    fn client() -> ClientInfo {
        ClientInfo::new(
            "app",
            "app",
            std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
        )
    }

    #[test]
    fn detach_reports_a_cancel_sent_while_attached() {
        let registry = CancelRegistry::default();
        let (_, slot) = registry.register(client());
        slot.attach(target());
        assert!(slot.take_target().is_some());
        assert!(slot.detach());
        assert!(!slot.detach());
        assert!(slot.take_target().is_none());
    }

    #[test]
    fn one_cancel_per_request_until_the_next_request() {
        let registry = CancelRegistry::default();
        let (_, slot) = registry.register(client());
        slot.attach(target());
        assert!(slot.take_target().is_some());
        for _ in 0..100 {
            assert!(slot.take_target().is_none(), "repeated cancels are dropped");
        }
        slot.rearm();
        assert!(
            slot.take_target().is_some(),
            "a new request can be cancelled"
        );
        assert!(slot.take_target().is_none());
        assert!(slot.detach());
        slot.attach(target());
        assert!(slot.take_target().is_some(), "a new attachment re-arms");
    }

    #[tokio::test]
    async fn repeated_cancels_open_one_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = tokio::spawn(async move {
            let mut count = 0;
            while let Ok(Ok((stream, _))) =
                tokio::time::timeout(Duration::from_millis(300), listener.accept()).await
            {
                drop(stream);
                count += 1;
            }
            count
        });
        let registry = CancelRegistry::default();
        let (pid, slot) = registry.register(client());
        slot.attach(CancelTarget { port, ..target() });
        let key = CancelRegistry::secret(&slot).to_be_bytes();
        for _ in 0..50 {
            registry.cancel(pid, &key, Duration::from_secs(2)).await;
        }
        assert_eq!(accepted.await.unwrap(), 1);
        assert_eq!(registry.connections_opened(), 1);
    }

    #[test]
    fn own_id_is_not_a_peer() {
        let peer = |port| Peer {
            host: "127.0.0.1".into(),
            port,
        };
        let registry = CancelRegistry::new(1, [(1, peer(1)), (2, peer(2))]);
        assert_eq!(registry.peers.len(), 1);
        assert!(registry.peers.contains_key(&2));
        let (pid, _) = registry.register(client());
        assert_eq!(key::peer_of(pid), Some(1));
    }
}
