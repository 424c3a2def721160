//! Server side of the proxy: connections to PostgreSQL nodes (startup and authentication with
//! configured credentials) and bounded pools of them per (node, database, user).

pub mod conn;
pub mod pool;
pub mod prepared;
pub mod server_state;

pub use conn::{BackendError, Login, ServerConn};
pub use pool::{Pool, PoolError, PoolKey, PoolSettings, Pools};
pub use server_state::ServerState;

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
