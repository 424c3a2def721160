//! Server side of the proxy: connections to PostgreSQL nodes (startup and authentication with
//! configured credentials) and bounded pools of them per (node, database, user).

pub mod conn;
mod login;
pub mod pool;
pub mod prepared;
pub mod rows;
pub mod server_state;
mod simple_query;
pub mod waiters;

pub use conn::{BackendError, ServerConn};
pub use login::{Credential, Login};
pub use pool::{Pool, PoolError, PoolKey, PoolSettings, Pools};
pub use server_state::{empty_fingerprint, state_fingerprint, ServerState};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Where a node listens, and its name in metrics, logs and routing (`primary`, `replica1`...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeAddr {
    pub name: Arc<str>,
    pub host: Arc<str>,
    pub port: u16,
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}:{})", self.name, self.host, self.port)
    }
}

/// A configured replica and how many requests this proxy runs on it now (for balancing).
#[derive(Debug)]
pub struct ReplicaNode {
    pub addr: NodeAddr,
    pub weight: u32,
    outstanding: AtomicUsize,
}

impl ReplicaNode {
    /// A replica with no requests running.
    pub fn new(addr: NodeAddr, weight: u32) -> ReplicaNode {
        ReplicaNode {
            addr,
            weight,
            outstanding: AtomicUsize::new(0),
        }
    }

    /// Requests running on it now.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// A request started on it.
    pub fn started(&self) {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
    }

    /// A request on it finished.
    pub fn finished(&self) {
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}
