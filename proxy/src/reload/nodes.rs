//! The per-node handles a [`crate::context::Context`] carries (addresses, replica load
//! counters, metric timers), built from a configuration at start and again by a reload that
//! changes the replicas; and the steps that apply such a change to the running pools,
//! monitor and metrics.

use std::sync::Arc;

use crate::backend::{NodeAddr, ReplicaNode};
use crate::config::{Config, PRIMARY_NODE_NAME};
use crate::context::Context;
use crate::metrics::{Metrics, NodeTimers};
use crate::monitor::NodeChanges;

/// The nodes of one configuration, as sessions use them.
#[derive(Debug, Clone)]
pub struct NodeHandles {
    /// `[primary]`.
    pub primary: NodeAddr,
    /// `[primary]`, then the replicas in config order.
    pub nodes: Arc<[NodeAddr]>,
    /// The replicas in config order; following failovers also `[primary]`, last.
    pub replicas: Arc<[ReplicaNode]>,
    /// Metric handles: the primary's, then each of `replicas`.
    pub timers: Arc<[NodeTimers]>,
}

impl NodeHandles {
    /// The handles of `config`'s nodes.
    pub fn new(config: &Config, metrics: &Metrics) -> NodeHandles {
        let primary = NodeAddr {
            name: Arc::from(PRIMARY_NODE_NAME),
            host: Arc::from(config.primary.host.as_str()),
            port: config.primary.port,
        };
        let configured = config.replicas.iter().map(|r| {
            ReplicaNode::new(
                NodeAddr {
                    name: Arc::from(r.name.as_str()),
                    host: Arc::from(r.host.as_str()),
                    port: r.port,
                },
                r.weight,
            )
        });
        let nodes: Arc<[NodeAddr]> = std::iter::once(primary.clone())
            .chain(configured.clone().map(|r| r.addr))
            .collect();
        // Following failovers, `[primary]` serves reads too once it is a replica again
        // (read candidates must be in recovery): it comes last, so replica indices are
        // the configured ones.
        let old_primary = (config.failover.follows() && !config.replicas.is_empty())
            .then(|| ReplicaNode::new(primary.clone(), 1));
        let replicas: Arc<[ReplicaNode]> = configured.chain(old_primary).collect();
        let timers = std::iter::once(&*primary.name)
            .chain(replicas.iter().map(|r| &*r.addr.name))
            .map(|node| metrics.node_timers(node))
            .collect();
        NodeHandles {
            primary,
            nodes,
            replicas,
            timers,
        }
    }
}

/// Applies a change of replicas (and `[lag]`) from `running` to `next`: removed replicas
/// leave the monitor's topology first (no new reads go there from then on) and their pools
/// are retired (idle connections close now, the rest when they come back); added ones join
/// the topology unknown, get a monitor task, a clean pool address and metric series at
/// zero. Returns what changed.
pub(super) fn apply(ctx: &Context, running: &Config, next: &Config) -> NodeChanges {
    let changes = crate::monitor::Monitor::reconfigure(&ctx.topology, running, next);
    for name in &changes.removed {
        let Some(old) = running.replicas.iter().find(|r| &r.name == name) else {
            continue;
        };
        let addr = NodeAddr {
            name: Arc::from(old.name.as_str()),
            host: Arc::from(old.host.as_str()),
            port: old.port,
        };
        let pools = ctx.pools.retire_node(&addr);
        ctx.metrics
            .set_replica(name, 0, std::time::Duration::ZERO, false);
        ctx.metrics.set_server_connections(name, 0, 0);
        tracing::info!(node = %name, pools, "pools of the removed replica retired");
    }
    let mut added = Vec::new();
    for replica in next
        .replicas
        .iter()
        .filter(|r| changes.added.contains(&r.name))
    {
        ctx.pools.admit_node(&NodeAddr {
            name: Arc::from(replica.name.as_str()),
            host: Arc::from(replica.host.as_str()),
            port: replica.port,
        });
        added.push(replica.name.as_str());
    }
    if !added.is_empty() {
        ctx.metrics
            .start_at_zero(PRIMARY_NODE_NAME, &added, next.failover.follows());
    }
    changes
}
