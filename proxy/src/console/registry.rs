//! The clients connected now, for `SHOW CLIENTS`, `SHOW SERVERS` and `SHOW POOLS`: each
//! session's cancel slot, which lives exactly as long as its session, carries what the console
//! shows of it (written once when the session starts, never per message) and the server
//! connection it holds now (which the session already updates when it takes or gives back a
//! connection). No second map: an idle client costs no more than its slot (issue 11).

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use crate::cancel::{CancelRegistry, CancelTarget};

/// What the console shows of one client.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub user: Box<str>,
    pub database: Box<str>,
    pub addr: SocketAddr,
    pub connected_at: SystemTime,
    pub since: Instant,
}

/// One client as listed: its info and the server connection it holds now, if any.
#[derive(Debug, Clone)]
pub struct ClientRow {
    pub pid: i32,
    pub info: ClientInfo,
    pub server: Option<CancelTarget>,
}

impl ClientInfo {
    /// A client connected now.
    pub fn new(user: &str, database: &str, addr: SocketAddr) -> ClientInfo {
        ClientInfo {
            user: user.into(),
            database: database.into(),
            addr,
            connected_at: SystemTime::now(),
            since: Instant::now(),
        }
    }
}

/// Every client with a session now, oldest first.
pub fn list(cancels: &CancelRegistry) -> Vec<ClientRow> {
    let mut rows = Vec::new();
    cancels.for_each_slot(|pid, slot| {
        rows.push(ClientRow {
            pid,
            info: slot.info().clone(),
            server: slot.target(),
        });
    });
    rows.sort_by_key(|row| (row.info.since, row.pid));
    rows
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn clients_are_listed_while_registered_with_the_server_they_hold() {
        let cancels = CancelRegistry::default();
        let addr: SocketAddr = "127.0.0.1:5555".parse().unwrap_or_else(|_| unreachable!());
        let (pid, slot) = cancels.register(ClientInfo::new("app", "appdb", addr));
        let rows = list(&cancels);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].pid, &*rows[0].info.user), (pid, "app"));
        assert!(rows[0].server.is_none());
        slot.attach(CancelTarget {
            host: Arc::from("127.0.0.1"),
            port: 5432,
            pid: 77,
            secret: 1,
        });
        assert_eq!(list(&cancels)[0].server.as_ref().map(|t| t.pid), Some(77));
        cancels.unregister(pid);
        assert!(list(&cancels).is_empty());
    }
}
