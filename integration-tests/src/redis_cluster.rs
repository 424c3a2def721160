//! A Redis Cluster of a few primaries (no replicas) on loopback, made with
//! `redis-cli --cluster create`, for the session store's cluster mode.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::redis::{command, RedisNode};

/// Cluster nodes; stopped on drop.
#[derive(Debug)]
pub struct RedisCluster {
    pub nodes: Vec<RedisNode>,
}

impl RedisCluster {
    /// Starts `count` (at least 3) cluster-enabled servers under `dir` (as `redis-cluster-N`,
    /// which the cluster watchdog also cleans up), assigns all slots and waits until every
    /// node reports the cluster healthy.
    pub(crate) fn start(dir: &Path, count: usize) -> anyhow::Result<RedisCluster> {
        let nodes = (0..count)
            .map(|i| {
                RedisNode::create_with(
                    &dir.join(format!("redis-cluster-{i}")),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    ],
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let cluster = RedisCluster { nodes };
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .context("running redis-cli --cluster create (is redis-tools installed?)")?;
        if !output.status.success() {
            bail!(
                "redis-cli --cluster create failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        cluster.wait_healthy()?;
        Ok(cluster)
    }

    /// `host:port` of every node (the form `session_store.cluster_nodes` takes).
    pub fn addresses(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let healthy = self.nodes.iter().all(|n| {
                command(n.port, "CLUSTER INFO").is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            if healthy {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the Redis Cluster did not become healthy within 20s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
