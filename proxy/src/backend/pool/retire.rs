//! A reload removed a node: its pools are retired. They leave the map (a node added again
//! under the same name gets new pools), their idle connections close at once, connections
//! in use close when they come back, and a session that kept such a pool, or asks for one
//! at the removed address, gets an error for a new connection (a replica read then goes to
//! the primary).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use super::{Pool, PoolError, PoolKey, Pools};
use crate::backend::{BackendError, Login, NodeAddr};

impl Pools {
    /// Retire every pool of `node` (the address a reload removed); returns how many
    /// there were.
    pub fn retire_node(&self, node: &NodeAddr) -> usize {
        if let Ok(mut gone) = self.shared.gone.lock() {
            if !gone.iter().any(|g| same_addr(g, node)) {
                gone.push(node.clone());
            }
        }
        let mut retired = Vec::new();
        self.shared.pools.retain(|key, pool| {
            let keep = key.node != node.name;
            if !keep {
                retired.push(pool.clone());
            }
            keep
        });
        for pool in &retired {
            pool.retire();
        }
        retired.len()
    }

    /// A reload added `node` (perhaps again): pools for it are made as usual.
    pub fn admit_node(&self, node: &NodeAddr) {
        if let Ok(mut gone) = self.shared.gone.lock() {
            gone.retain(|g| !same_addr(g, node));
        }
    }

    /// Whether `node` is an address a reload removed (asked only when a pool is made).
    pub(super) fn is_gone(&self, node: &NodeAddr) -> bool {
        self.shared
            .gone
            .lock()
            .is_ok_and(|gone| gone.iter().any(|g| same_addr(g, node)))
    }

    /// A pool of a removed node, not kept in the map, that opens no connection.
    pub(super) fn retired_pool(&self, key: PoolKey, node: &NodeAddr, login: &Login) -> Arc<Pool> {
        Arc::new(Pool {
            key,
            node: node.clone(),
            login: Mutex::new(login.clone()),
            size: AtomicUsize::new(0),
            permits: Arc::new(Semaphore::new(0)),
            settings: self.shared.settings.clone(),
            idle: Mutex::new(Vec::new()),
            startup_params: Mutex::new(None),
            accepted: Mutex::new(HashSet::new()),
            next_id: self.shared.next_id.clone(),
            waiters: super::super::waiters::Waiters::default(),
            retired: AtomicBool::new(true),
        })
    }
}

fn same_addr(a: &NodeAddr, b: &NodeAddr) -> bool {
    a.name == b.name && a.host == b.host && a.port == b.port
}

impl Pool {
    /// No new connections from now on; idle ones close now, those in use on check-in.
    pub(super) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        // `checkin` reads the flag under this lock: nothing is parked after the drain.
        self.close_idle();
    }

    /// Whether its node was removed by a reload.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    pub(super) fn retired_error(&self) -> PoolError {
        PoolError::Backend(BackendError::Connect {
            node: self.node.name.to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the node was removed from the configuration by a reload",
            ),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tests::{login, node, pools};
    use crate::backend::NodeAddr;

    #[tokio::test]
    async fn a_retired_pool_leaves_the_map_and_refuses_new_connections() {
        let pools = pools();
        let kept = pools.get(&node("r2"), &login("app", "app", None), None);
        let held = pools.get(&node("r1"), &login("app", "app", None), None);
        pools.get(&node("r1"), &login("app", "other", None), None);
        assert_eq!(pools.retire_node(&node("r1")), 2);
        assert_eq!(pools.retire_node(&node("r1")), 0);
        assert!(held.is_retired() && !kept.is_retired());
        let err = held.checkout().await.unwrap_err();
        assert!(err.to_string().contains("removed"), "{err}");
        let names: Vec<String> = pools.all().iter().map(|p| p.key.node.to_string()).collect();
        assert_eq!(names, ["r2"]);
        // A session from before the reload asks for the old address: retired, not kept.
        let late = pools.get(&node("r1"), &login("app", "app", None), None);
        assert!(late.is_retired());
        assert_eq!(pools.all().len(), 1);
        // The same name at another address (a moved replica): a new pool.
        let moved = NodeAddr {
            port: 2,
            ..node("r1")
        };
        pools.admit_node(&moved);
        assert!(!pools
            .get(&moved, &login("app", "app", None), None)
            .is_retired());
        // Added back at the old address: pools are made as usual again.
        pools.retire_node(&moved);
        pools.admit_node(&node("r1"));
        assert!(!pools
            .get(&node("r1"), &login("app", "app", None), None)
            .is_retired());
    }
}
