//! Replica monitoring and eviction (DESIGN.md §5).
//!
//! One named, cancellable task per node (the primary and each replica) keeps a control
//! connection and samples the node every `lag.poll_interval`, each probe bounded by
//! `lag.probe_timeout`, in one statement per poll:
//! - primary: `pg_is_in_recovery()`, `pg_current_wal_insert_lsn()` (normalized past a page
//!   header) and its timeline; the samples form the lag history;
//! - replica: recovery state, replay and receive LSNs, replay pause state, and the WAL
//!   receiver's presence and timeline.
//!
//! Each replica's lag (bytes and seconds, `history`) and health are judged by a pure
//! state machine (`eviction`): evicted at once, readmitted only after staying clean for
//! `lag.readmit_after`. The result is published through a [`Topology`] handle that the
//! router reads per statement.
//!
//! # Login
//! The control connections log in as the first `[[users]]` entry with a non-empty
//! password (else the first entry, else `postgres`), to `monitor.database` (default
//! `postgres`: a database every cluster has; the database named like the user, libpq's
//! default, often does not exist), with `application_name=causeway-monitor`. That user needs no special
//! rights, but only with `pg_read_all_stats` (e.g. via `pg_monitor`) does PostgreSQL show
//! it the WAL receiver's timeline; without it the timeline check is skipped.
//!
//! # Layout
//! - `sample`: what a probe returns; `probe`: the connection and the SQL.
//! - `history`: the primary's recent positions, and lag from them.
//! - `reason`, `eviction`: the reason enum and the state machine (pure).
//! - `topology`: the shared handle; `task`: the per-node loop.
//! - `catch_up`: waiting until the replicas have replayed a position.
//! - `control`: what a reload changes in the running monitor (nodes, `[lag]`).

mod catch_up;
mod control;
mod eviction;
mod history;
mod primary;
mod probe;
mod reason;
mod sample;
mod task;
mod topology;

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::config::{Config, PRIMARY_NODE_NAME};
use crate::shutdown::Shutdown;

pub use primary::{Current, PrimaryView};
pub use probe::ProbeError;
pub use reason::{EvictionReason, State};
pub use topology::{NodeStatus, Role, Sampled, Topology, TopologySnapshot};

pub use control::{node_changes, NodeChanges};

use control::{Node, Settings, Spawner};
use history::PrimaryHistory;
use probe::Login;

/// Entry point of the monitor.
#[derive(Debug)]
pub struct Monitor;

impl Monitor {
    /// The [`Topology`] of the configured nodes, all unknown until their tasks sample
    /// them: built before the shared context, which hands it to every session.
    pub fn topology(config: &Config) -> Topology {
        let lag = &config.lag;
        let statuses = nodes(config)
            .iter()
            .map(|node| NodeStatus::new(Arc::clone(&node.name), node.role, lag.stale_after))
            .collect();
        let names = nodes(config).into_iter().map(|node| node.name).collect();
        Topology::new(
            statuses,
            PrimaryHistory::new(lag.max_seconds, lag.poll_interval),
            PrimaryView::new(config.failover.follows(), names),
        )
    }

    /// Starts one monitor task per node on `tracker`, publishing to `topology` (made by
    /// [`Monitor::topology`]; `config` is the latest generation, whose nodes it has). The
    /// tasks stop on `shutdown.drain` (or when a reload removes their node); their control
    /// connections close with them (or on `shutdown.terminate`).
    pub fn spawn(config: &Config, topology: &Topology, shutdown: &Shutdown, tracker: &TaskTracker) {
        // Validated with the config; a file gone since then leaves the nodes unmonitored
        // (so unused for reads) rather than monitored in plaintext.
        match crate::tls::ServerTls::new(&config.server_tls) {
            Ok(tls) => Monitor::spawn_with_tls(config, topology, shutdown, tracker, tls),
            Err(err) => {
                tracing::error!(%err, "server_tls cannot be set up; the replica monitor does not start");
            }
        }
    }

    /// [`Monitor::spawn`] with the `[server_tls]` handle the pools use, so that a reload's
    /// TLS files reach the monitor's next connections too.
    pub fn spawn_with_tls(
        config: &Config,
        topology: &Topology,
        shutdown: &Shutdown,
        tracker: &TaskTracker,
        tls: crate::tls::ServerTls,
    ) {
        let lag = &config.lag;
        let login = Login::from_config(config);
        let nodes = nodes(config);
        tracing::info!(user = login.user(), database = login.database(), nodes = nodes.len(), poll_interval = ?lag.poll_interval,
            "starting the replica monitor");
        let spawner = topology.set_spawner(Spawner {
            tls,
            tracker: tracker.clone(),
            drain: shutdown.drain.clone(),
            terminate: shutdown.terminate.clone(),
            follow: config.failover.follows(),
            settings: tokio::sync::watch::Sender::new(Settings {
                lag: lag.clone(),
                login,
            }),
        });
        // After the spawner is in place: a node a reload adds from now on is started by
        // the reload, one added before is in this list (`start` runs once per node).
        for (name, id, probes) in topology.node_ids() {
            if let Some(node) = nodes.iter().find(|n| n.name == name) {
                spawner.start(topology, node.clone(), id, probes);
            }
        }
    }

    /// Applies a reloaded `[lag]` and replica list to the running monitor: the tasks judge
    /// their next sample by the new limits; removed replicas leave the topology at once
    /// (no new reads) and their tasks stop; added ones join it unknown (no reads until
    /// their task has sampled them and admitted them, as at startup) and get a task.
    /// `running` is the configuration the monitor runs now.
    pub fn reconfigure(topology: &Topology, running: &Config, next: &Config) -> NodeChanges {
        let lag = &next.lag;
        if running.lag != *lag {
            topology.with_history(|history| history.set_limits(lag.max_seconds, lag.poll_interval));
        }
        if let Some(spawner) = topology.spawner() {
            let settings = Settings {
                lag: lag.clone(),
                login: Login::from_config(next),
            };
            spawner.settings.send_if_modified(|now| {
                let changed = *now != settings;
                *now = settings;
                changed
            });
        }
        let changes = node_changes(&running.replicas, &next.replicas);
        for name in &changes.removed {
            if topology.remove_node(name) {
                tracing::info!(node = %name, "replica removed by a reload: no new reads, monitor stopped");
            }
        }
        for replica in next
            .replicas
            .iter()
            .filter(|r| changes.added.contains(&r.name))
        {
            match topology.spawner() {
                Some(spawner) => spawner.add(topology, replica, lag.stale_after),
                None => {
                    let status = NodeStatus::new(
                        Arc::from(replica.name.as_str()),
                        Role::Replica,
                        lag.stale_after,
                    );
                    topology.add_node(status);
                }
            }
            tracing::info!(node = %replica.name, host = %replica.host, port = replica.port,
                "replica added by a reload: reads go there once the monitor admits it");
        }
        changes
    }
}

/// The primary, then the replicas in config order.
fn nodes(config: &Config) -> Vec<Node> {
    let primary = Node {
        name: Arc::from(PRIMARY_NODE_NAME),
        role: Role::Primary,
        host: Arc::from(config.primary.host.as_str()),
        port: config.primary.port,
    };
    let replicas = config.replicas.iter().map(|replica| Node {
        name: Arc::from(replica.name.as_str()),
        role: Role::Replica,
        host: Arc::from(replica.host.as_str()),
        port: replica.port,
    });
    std::iter::once(primary).chain(replicas).collect()
}
