//! The clients connected now, for `SHOW CLIENTS`, `SHOW SERVERS` and `SHOW POOLS`: an entry
//! per session written once when it starts and removed when it ends (never per message);
//! which server connection a client holds comes from its cancel slot, which the session
//! already updates when it takes or gives back a connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use dashmap::DashMap;

use crate::cancel::{CancelSlot, CancelTarget};

/// What the console shows of one client.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub user: String,
    pub database: String,
    pub addr: SocketAddr,
    pub connected_at: SystemTime,
    pub since: Instant,
    slot: Arc<CancelSlot>,
}

/// One client as listed: its info and the server connection it holds now, if any.
#[derive(Debug, Clone)]
pub struct ClientRow {
    pub pid: i32,
    pub info: ClientInfo,
    pub server: Option<CancelTarget>,
}

/// Clients by their cancel-key process id. A cheap clonable handle.
#[derive(Debug, Clone, Default)]
pub struct ClientRegistry {
    clients: Arc<DashMap<i32, ClientInfo>>,
}

impl ClientRegistry {
    /// Lists a client until the returned guard is dropped.
    pub fn register(
        &self,
        pid: i32,
        user: &str,
        database: &str,
        addr: SocketAddr,
        slot: Arc<CancelSlot>,
    ) -> Registered {
        let info = ClientInfo {
            user: user.to_owned(),
            database: database.to_owned(),
            addr,
            connected_at: SystemTime::now(),
            since: Instant::now(),
            slot,
        };
        self.clients.insert(pid, info);
        Registered {
            clients: self.clients.clone(),
            pid,
        }
    }

    /// Every client now, oldest first.
    pub fn list(&self) -> Vec<ClientRow> {
        let mut rows: Vec<ClientRow> = self
            .clients
            .iter()
            .map(|entry| ClientRow {
                pid: *entry.key(),
                server: entry.value().slot.target(),
                info: entry.value().clone(),
            })
            .collect();
        rows.sort_by_key(|row| (row.info.since, row.pid));
        rows
    }
}

/// Removes its client from the registry when dropped.
#[derive(Debug)]
pub struct Registered {
    clients: Arc<DashMap<i32, ClientInfo>>,
    pid: i32,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.clients.remove(&self.pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cancel::CancelRegistry;

    #[test]
    fn clients_are_listed_while_registered_with_the_server_they_hold() {
        let cancels = CancelRegistry::default();
        let registry = ClientRegistry::default();
        let (pid, slot) = cancels.register();
        let addr: SocketAddr = "127.0.0.1:5555".parse().unwrap_or_else(|_| unreachable!());
        let guard = registry.register(pid, "app", "appdb", addr, slot.clone());
        let rows = registry.list();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].pid, rows[0].info.user.as_str()), (pid, "app"));
        assert!(rows[0].server.is_none());
        slot.attach(CancelTarget {
            host: Arc::from("127.0.0.1"),
            port: 5432,
            pid: 77,
            secret: 1,
        });
        assert_eq!(registry.list()[0].server.as_ref().map(|t| t.pid), Some(77));
        drop(guard);
        assert!(registry.list().is_empty());
    }
}
