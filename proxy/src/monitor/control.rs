//! Nodes and `[lag]` changed by a reload, applied to the running monitor: what it needs to
//! start a node's task later ([`Spawner`], kept by the topology once the monitor runs), and
//! the pure comparison of two node lists ([`node_changes`]).

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::probe::{Kind, Login, ProbeTarget};
use super::task::{NodeTask, TaskContext};
use super::topology::{NodeStatus, Probes, Role, Topology};
use crate::config::{LagConfig, ReplicaConfig};

/// What a reload may change in every node task: read at every poll.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub(crate) lag: LagConfig,
    /// Who the control connections log in as (`[monitor]`, the first `[[users]]` entry
    /// with a password).
    pub(crate) login: Login,
}

/// What every node task shares; kept so a reload can start tasks for added nodes.
#[derive(Debug)]
pub(crate) struct Spawner {
    pub(crate) tls: crate::tls::ServerTls,
    pub(crate) tracker: TaskTracker,
    pub(crate) drain: CancellationToken,
    pub(crate) terminate: CancellationToken,
    pub(crate) follow: bool,
    /// The settings as the tasks read them at every poll; a reload sends new ones.
    pub(crate) settings: watch::Sender<Settings>,
}

/// A node a task is started for.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) name: Arc<str>,
    pub(crate) role: Role,
    pub(crate) host: Arc<str>,
    pub(crate) port: u16,
}

impl Spawner {
    /// Starts the monitor task of `node`, known to `topology` under `id` (unless one was
    /// started for it already: the monitor's start and a reload may both see a new node).
    pub(crate) fn start(&self, topology: &Topology, node: Node, id: u64, probes: Arc<Probes>) {
        if probes
            .started
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let (kind, primary_limits) = match node.role {
            // Following failovers, any node may become a replica: all get its limits.
            Role::Primary => (Kind::Primary, !self.follow),
            Role::Replica => (Kind::Replica, false),
        };
        let settings = self.settings.subscribe();
        let (poll_interval, timeout, login) = {
            let now = settings.borrow();
            (
                now.lag.poll_interval,
                now.lag.probe_timeout,
                now.login.clone(),
            )
        };
        let span = tracing::info_span!("monitor", node = %node.name);
        let task = NodeTask::new(TaskContext {
            id,
            probes,
            name: node.name,
            kind,
            target: ProbeTarget {
                host: node.host,
                port: node.port,
                login,
                timeout,
                tls: self.tls.clone(),
            },
            settings,
            primary_limits,
            poll_interval,
            topology: topology.clone(),
            tracker: self.tracker.clone(),
            drain: self.drain.clone(),
            terminate: self.terminate.clone(),
            server_version: Default::default(),
            follow: self.follow,
        });
        self.tracker.spawn(task.run().instrument(span));
    }

    /// Adds replica `replica` to `topology` (unknown, so unused until its task has
    /// sampled it and the state machine admits it) and starts its task.
    pub(crate) fn add(
        &self,
        topology: &Topology,
        replica: &ReplicaConfig,
        stale: std::time::Duration,
    ) {
        let node = Node {
            name: Arc::from(replica.name.as_str()),
            role: Role::Replica,
            host: Arc::from(replica.host.as_str()),
            port: replica.port,
        };
        let status = NodeStatus::new(Arc::clone(&node.name), Role::Replica, stale);
        let (id, probes) = topology.add_node(status);
        self.start(topology, node, id, probes);
    }
}

/// How the replicas of a reloaded file differ from the running ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeChanges {
    /// Replicas to stop using (gone from the file, or at another address), by name.
    pub removed: Vec<String>,
    /// Replicas to start using (new in the file, or at another address), by name.
    pub added: Vec<String>,
}

impl NodeChanges {
    /// Whether the replica set stays as it is (a changed weight is not a change of nodes).
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty()
    }
}

/// Compares the running replicas with the new file's (pure). A replica whose host or port
/// changed is removed and added again: it is another server.
pub fn node_changes(running: &[ReplicaConfig], new: &[ReplicaConfig]) -> NodeChanges {
    let same = |a: &ReplicaConfig, b: &ReplicaConfig| {
        a.name == b.name && a.host == b.host && a.port == b.port
    };
    NodeChanges {
        removed: running
            .iter()
            .filter(|old| !new.iter().any(|n| same(old, n)))
            .map(|old| old.name.clone())
            .collect(),
        added: new
            .iter()
            .filter(|n| !running.iter().any(|old| same(old, n)))
            .map(|n| n.name.clone())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(name: &str, port: u16) -> ReplicaConfig {
        ReplicaConfig {
            name: name.into(),
            host: "db".into(),
            port,
            weight: 1,
        }
    }

    #[test]
    fn added_removed_and_moved_replicas() {
        let running = [replica("r1", 5433), replica("r2", 5434)];
        assert!(node_changes(&running, &running).is_empty());
        let reweighted = [
            replica("r1", 5433),
            ReplicaConfig {
                weight: 5,
                ..replica("r2", 5434)
            },
        ];
        assert!(node_changes(&running, &reweighted).is_empty());
        let changes = node_changes(&running, &[replica("r2", 5434), replica("r3", 5435)]);
        assert_eq!(changes.removed, ["r1"]);
        assert_eq!(changes.added, ["r3"]);
        // Another address under the same name: another server.
        let moved = node_changes(&running, &[replica("r1", 6000), replica("r2", 5434)]);
        assert_eq!(
            (moved.removed, moved.added),
            (vec!["r1".into()], vec!["r1".into()])
        );
        let all_gone = node_changes(&running, &[]);
        assert_eq!(all_gone.removed, ["r1", "r2"]);
    }
}
