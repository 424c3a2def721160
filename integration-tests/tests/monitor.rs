//! Replica monitoring and eviction (DESIGN.md §5) against real PostgreSQL: the monitor runs
//! on its own (no proxy) and the tests watch its `Topology` while they pause, delay, stop,
//! start and promote nodes of private clusters.

use std::time::Duration;

use causeway::config::Config;
use causeway::monitor::{EvictionReason, Monitor, NodeStatus, State, Topology, TopologySnapshot};
use causeway::Shutdown;
use integration_tests::{Cluster, ClusterOptions, PgNode};
use tokio::time::Instant;

use crate::support::eventually;

/// A monitor running against a cluster; its tasks stop when this is dropped.
struct Running {
    topology: Topology,
    shutdown: Shutdown,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.start_drain();
    }
}

/// The cluster's Causeway config with `lag` keys in `[lag]`.
fn config(cluster: &Cluster, lag: &str) -> Config {
    let toml =
        cluster.causeway_config_toml("127.0.0.1:0", "127.0.0.1:0", &format!("[lag]\n{lag}\n"));
    Config::from_toml(&toml).unwrap_or_else(|e| panic!("test config rejected: {e}\n{toml}"))
}

/// Logs the monitor's tracing output when `CAUSEWAY_LOG` is set (e.g. `CAUSEWAY_LOG=info`).
fn init_logging() {
    if let Ok(filter) = std::env::var("CAUSEWAY_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Starts a monitor for `cluster` with `lag` keys in `[lag]`.
fn start(cluster: &Cluster, lag: &str) -> Running {
    start_with(&config(cluster, lag))
}

/// Starts a monitor with `config`.
fn start_with(config: &Config) -> Running {
    init_logging();
    let shutdown = Shutdown::default();
    // A tokio_util TaskTracker (that crate is not a dependency of this one).
    let tasks = Default::default();
    let topology = Monitor::topology(config);
    Monitor::spawn(config, &topology, &shutdown, &tasks);
    Running { topology, shutdown }
}

/// A private cluster without Redis (blocking start, run off the async threads).
pub(crate) async fn private_cluster(replicas: usize) -> Cluster {
    tokio::task::spawn_blocking(move || {
        Cluster::start(ClusterOptions {
            replicas,
            redis: false,
        })
    })
    .await
    .unwrap()
    .expect("start a private cluster")
}

/// Runs a blocking node operation (pg_ctl) without stalling the monitor tasks.
async fn node_op(node: &PgNode, op: fn(&PgNode) -> anyhow::Result<()>) {
    let node = node.clone();
    tokio::task::spawn_blocking(move || op(&node))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e:#}"));
}

fn node<'a>(snapshot: &'a TopologySnapshot, name: &str) -> &'a NodeStatus {
    snapshot
        .node(name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

fn usable(snapshot: &TopologySnapshot, name: &str) -> bool {
    node(snapshot, name).is_usable()
}

fn reason(snapshot: &TopologySnapshot, name: &str) -> Option<EvictionReason> {
    node(snapshot, name).reason
}

/// One line per node, for failure messages.
fn describe(snapshot: &TopologySnapshot) -> String {
    let lines: Vec<String> = snapshot
        .nodes()
        .iter()
        .map(|n| {
            format!(
                "{} {} replay={:?} insert={:?} lag_bytes={:?} lag_seconds={:?} paused={} \
                 error={:?}",
                n.name,
                n.state,
                n.replay_lsn,
                n.insert_lsn,
                n.lag_bytes,
                n.lag_seconds,
                n.paused,
                n.last_error
            )
        })
        .collect();
    lines.join("\n")
}

/// Polls the topology until `condition` holds; returns how long that took.
async fn wait_until(
    topology: &Topology,
    what: &str,
    within: Duration,
    condition: impl Fn(&TopologySnapshot) -> bool,
) -> Duration {
    let start = Instant::now();
    eventually(within, what, || async {
        let snapshot = topology.snapshot();
        if condition(&snapshot) {
            Ok(())
        } else {
            Err(format!("topology:\n{}", describe(&snapshot)))
        }
    })
    .await;
    start.elapsed()
}

async fn all_in_pool(topology: &Topology, names: &[&str]) -> Duration {
    wait_until(
        topology,
        "every node in the pool",
        // Generous: a cluster just started on two loaded cores may take seconds to answer.
        Duration::from_secs(30),
        |s| names.iter().all(|name| usable(s, name)),
    )
    .await
}

fn evictions(topology: &Topology, replica: &str, reason: &str) -> u64 {
    topology
        .eviction_counts()
        .iter()
        .filter(|(name, label, _)| &**name == replica && *label == reason)
        .map(|(_, _, n)| n)
        .sum()
}

/// Evictions of `replica` for any reason.
fn replica_evictions(topology: &Topology, replica: &str) -> u64 {
    EvictionReason::ALL
        .iter()
        .map(|reason| evictions(topology, replica, reason.label()))
        .sum()
}

async fn exec(node: &PgNode, sql: &str) {
    let client = node.client().await.unwrap();
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test]
async fn monitor_idle_replicas_stay_in_pool_then_stop_start_and_promote() {
    let cluster = private_cluster(2).await;
    let lag = "poll_interval = \"100ms\"\nreadmit_after = \"1s\"";
    let monitor = start(&cluster, lag);
    let topology = &monitor.topology;
    all_in_pool(topology, &["primary", "replica1", "replica2"]).await;

    // An idle primary must not make replicas look behind (the insert LSN sits just past a
    // page header after initdb, and nothing is written for 3 s).
    let idle_until = Instant::now() + Duration::from_secs(3);
    let (mut max_bytes, mut max_seconds) = (0, Duration::ZERO);
    while Instant::now() < idle_until {
        let snapshot = topology.snapshot();
        for name in ["replica1", "replica2"] {
            let replica = node(&snapshot, name);
            assert!(
                replica.is_usable(),
                "{name} left the pool:\n{}",
                describe(&snapshot)
            );
            max_bytes = max_bytes.max(replica.lag_bytes.unwrap_or(u64::MAX));
            max_seconds = max_seconds.max(replica.lag_seconds.unwrap_or(Duration::MAX));
        }
        // Sampling through a fixed 3 s window (the scenario), not waiting for anything.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Background WAL (e.g. a running-xacts record) may show for a moment: "about zero".
    assert!(
        max_bytes < 65_536,
        "lag_bytes {max_bytes} on an idle cluster"
    );
    assert!(
        max_seconds < Duration::from_secs(1),
        "lag_seconds {max_seconds:?} when idle"
    );
    wait_until(topology, "zero lag", Duration::from_secs(2), |s| {
        ["replica1", "replica2"].iter().all(|name| {
            node(s, name).lag_bytes == Some(0) && node(s, name).lag_seconds == Some(Duration::ZERO)
        })
    })
    .await;
    let snapshot = topology.snapshot();
    let primary = node(&snapshot, "primary");
    assert_eq!(primary.timeline, Some(1));
    assert!(primary.insert_lsn.is_some() && primary.in_recovery == Some(false));

    // A stopped replica leaves the pool; the other stays.
    node_op(cluster.node("replica2"), PgNode::stop).await;
    let took = wait_until(topology, "replica2 evicted", Duration::from_secs(2), |s| {
        !usable(s, "replica2")
    })
    .await;
    let snapshot = topology.snapshot();
    assert!(
        matches!(
            reason(&snapshot, "replica2"),
            Some(EvictionReason::Unreachable | EvictionReason::Stale)
        ),
        "{}",
        describe(&snapshot)
    );
    assert!(usable(&snapshot, "replica1"));
    eprintln!("stopped replica2 evicted after {took:?}");

    // Started again, it returns (after reconnecting and readmit_after).
    let evicted = replica_evictions(topology, "replica2");
    let started = Instant::now();
    node_op(cluster.node("replica2"), PgNode::start).await;
    wait_until(topology, "replica2 back", Duration::from_secs(5), |s| {
        usable(s, "replica2")
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "readmitted before readmit_after"
    );
    assert_eq!(
        replica_evictions(topology, "replica2"),
        evicted,
        "evicted again while coming back: {:?}",
        topology.eviction_counts()
    );
    let down =
        evictions(topology, "replica2", "unreachable") + evictions(topology, "replica2", "stale");
    assert!(down >= 1, "{:?}", topology.eviction_counts());

    // A promoted replica is evicted as promoted.
    cluster.node("replica1").promote().await.unwrap();
    wait_until(
        topology,
        "replica1 evicted as promoted",
        Duration::from_secs(2),
        |s| reason(s, "replica1") == Some(EvictionReason::Promoted),
    )
    .await;
    // While promoting, the WAL receiver stops first and (on a loaded machine) a probe may
    // time out, so the eviction may also be counted as no_wal_receiver or unreachable
    // before the state reads promoted. What matters: replica1 never comes back.
    assert!(
        replica_evictions(topology, "replica1") >= 1,
        "{:?}",
        topology.eviction_counts()
    );
    for _ in 0..10 {
        let snapshot = topology.snapshot();
        assert!(!usable(&snapshot, "replica1"), "{}", describe(&snapshot));
        // Time passing to show that replica1 does not come back: nothing to poll for.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(usable(&topology.snapshot(), "replica2"));
}

#[tokio::test]
async fn monitor_paused_replica_is_evicted_and_readmitted_after_hysteresis() {
    let cluster = private_cluster(2).await;
    let lag = "poll_interval = \"100ms\"\nmax_bytes = 1048576\nreadmit_after = \"1s\"";
    let monitor = start(&cluster, lag);
    let topology = &monitor.topology;
    exec(&cluster.primary, "CREATE TABLE mon_fill (v text)").await;
    all_in_pool(topology, &["primary", "replica1", "replica2"]).await;

    cluster.node("replica1").pause_replay().await.unwrap();
    let took = wait_until(
        topology,
        "paused replica1 evicted",
        Duration::from_millis(700),
        |s| !usable(s, "replica1"),
    )
    .await;
    eprintln!("paused replica1 evicted after {took:?}");
    // ~2 MB of WAL: replica1's lag passes max_bytes; pausing stays the reason.
    exec(
        &cluster.primary,
        "INSERT INTO mon_fill SELECT repeat('x', 1000) FROM generate_series(1, 2000)",
    )
    .await;
    wait_until(
        topology,
        "replica1 lag_bytes > 1 MB",
        Duration::from_secs(2),
        |s| node(s, "replica1").lag_bytes.is_some_and(|b| b > 1_048_576),
    )
    .await;
    let snapshot = topology.snapshot();
    assert!(
        matches!(
            reason(&snapshot, "replica1"),
            Some(EvictionReason::Paused | EvictionReason::LagBytes)
        ),
        "{}",
        describe(&snapshot)
    );
    cluster
        .wait_replicas_caught_up(Duration::from_secs(5))
        .await
        .unwrap();
    wait_until(
        topology,
        "replica2 in the pool",
        Duration::from_secs(3),
        |s| usable(s, "replica2"),
    )
    .await;

    // Resumed: back only after staying clean for readmit_after.
    let resumed = Instant::now();
    cluster.node("replica1").resume_replay().await.unwrap();
    let back = wait_until(
        topology,
        "replica1 readmitted",
        Duration::from_secs(5),
        |s| usable(s, "replica1"),
    )
    .await;
    assert!(
        resumed.elapsed() >= Duration::from_secs(1),
        "readmitted {back:?} after resume, before readmit_after"
    );
    assert_eq!(evictions(topology, "replica1", "paused"), 1);
    assert_eq!(
        replica_evictions(topology, "replica2"),
        0,
        "replica2 was evicted: {:?}",
        topology.eviction_counts()
    );
    eprintln!("replica1 readmitted {back:?} after resume");
}

#[tokio::test]
async fn monitor_apply_delay_evicts_by_lag_seconds() {
    let cluster = private_cluster(1).await;
    let lag = "poll_interval = \"100ms\"\nmax_seconds = \"1s\"\nreadmit_after = \"500ms\"";
    let monitor = start(&cluster, lag);
    let topology = &monitor.topology;
    exec(&cluster.primary, "CREATE TABLE mon_ticks (at timestamptz)").await;
    all_in_pool(topology, &["primary", "replica1"]).await;

    let replica = cluster.node("replica1");
    replica
        .set_apply_delay(Duration::from_secs(3))
        .await
        .unwrap();
    // A write every 200 ms: each commit waits 3 s before replay.
    let primary = cluster.primary.clone();
    let writer = tokio::spawn(async move {
        let client = primary.client().await.unwrap();
        loop {
            client
                .batch_execute("INSERT INTO mon_ticks VALUES (now())")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let took = wait_until(
        topology,
        "replica1 evicted by lag_seconds",
        Duration::from_secs(4),
        |s| !usable(s, "replica1"),
    )
    .await;
    let snapshot = topology.snapshot();
    assert_eq!(
        reason(&snapshot, "replica1"),
        Some(EvictionReason::LagSeconds),
        "{}",
        describe(&snapshot)
    );
    eprintln!("delayed replica1 evicted after {took:?}");

    replica.set_apply_delay(Duration::ZERO).await.unwrap();
    let back = wait_until(
        topology,
        "replica1 readmitted",
        Duration::from_secs(5),
        |s| usable(s, "replica1"),
    )
    .await;
    writer.abort();
    let snapshot = topology.snapshot();
    let lag_seconds = node(&snapshot, "replica1")
        .lag_seconds
        .unwrap_or(Duration::MAX);
    assert!(
        lag_seconds < Duration::from_millis(500),
        "{}",
        describe(&snapshot)
    );
    assert_eq!(evictions(topology, "replica1", "lag_seconds"), 1);
    assert_eq!(node(&snapshot, "replica1").state, State::InPool);
    eprintln!("replica1 readmitted {back:?} after the delay was reset");
}

#[tokio::test]
async fn monitor_concurrent_refreshes_share_one_probe() {
    let cluster = Cluster::shared();
    let shutdown = Shutdown::default();
    // A tokio_util TaskTracker (that crate is not a dependency of this one).
    let tasks = Default::default();
    // A slow poll, so the periodic probes stay out of the way.
    let lag = "poll_interval = \"1s\"\nstale_after = \"3s\"";
    let config = config(cluster, lag);
    let topology = Monitor::topology(&config);
    Monitor::spawn(&config, &topology, &shutdown, &tasks);
    all_in_pool(&topology, &["primary", "replica1"]).await;
    // Not a wait for a condition: lets the probe round that just put replica1 in the pool
    // settle before probes are counted.
    tokio::time::sleep(Duration::from_millis(50)).await;

    let before = topology.probe_count("replica1").unwrap();
    let known = node(&topology.snapshot(), "replica1").replay_lsn.unwrap();
    let asked = Instant::now();
    let deadline = asked + Duration::from_secs(2);
    let refreshes = (0..50).map(|_| {
        let topology = topology.clone();
        tokio::spawn(async move { topology.refresh_replica("replica1", deadline).await })
    });
    let results = futures_util::future::join_all(refreshes).await;
    let took = asked.elapsed();
    let probes = topology.probe_count("replica1").unwrap() - before;
    for result in results {
        let lsn = result.unwrap().expect("a fresh replay LSN");
        assert!(lsn >= known, "replay never goes back");
    }
    assert!(
        (1..=2).contains(&probes),
        "50 refreshes took {probes} probes"
    );
    assert!(
        took < Duration::from_millis(500),
        "refreshes waited {took:?}: no early wake-up"
    );
    assert_eq!(topology.refresh_replica("nope", deadline).await, None);

    // The tasks stop on drain.
    shutdown.start_drain();
    tasks.close();
    tokio::time::timeout(Duration::from_secs(2), tasks.wait())
        .await
        .expect("monitor tasks stop on drain");
}

/// A config for `cluster` whose only user is `user` (password `password`), with `extra`
/// sections appended.
fn config_for_user(cluster: &Cluster, user: &str, password: &str, extra: &str) -> Config {
    let mut toml = format!(
        "[primary]\nhost = \"127.0.0.1\"\nport = {}\n\n",
        cluster.primary.port
    );
    for replica in &cluster.replicas {
        toml += &format!(
            "[[replicas]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\n\n",
            replica.name, replica.port
        );
    }
    toml += &format!("[[users]]\nname = \"{user}\"\npassword = \"{password}\"\n\n");
    toml += "[lag]\npoll_interval = \"100ms\"\n\n";
    toml += extra;
    Config::from_toml(&toml).unwrap_or_else(|e| panic!("test config rejected: {e}\n{toml}"))
}

/// Issue 15: the only configured user is `mysite_user`, whose database is `mysite`; no
/// database is named like the user. The monitor used to log in to database
/// `mysite_user`, so every node stayed unreachable and every read went to the primary.
/// It now logs in to `monitor.database` (default `postgres`).
#[tokio::test]
async fn monitor_logs_in_to_monitor_database_not_the_users_namesake() {
    let cluster = private_cluster(1).await;
    exec(
        &cluster.primary,
        "CREATE ROLE mysite_user LOGIN PASSWORD 'mysite-pw'",
    )
    .await;
    exec(&cluster.primary, "CREATE DATABASE mysite OWNER mysite_user").await;

    // Default: database "postgres", which every cluster has (CONNECT granted to PUBLIC).
    let config = config_for_user(&cluster, "mysite_user", "mysite-pw", "");
    assert_eq!(config.monitor.database, "postgres");
    let monitor = start_with(&config);
    all_in_pool(&monitor.topology, &["primary", "replica1"]).await;
    drop(monitor);

    // The configured database is the one used: the user's own works...
    let config = config_for_user(
        &cluster,
        "mysite_user",
        "mysite-pw",
        "[monitor]\ndatabase = \"mysite\"\n",
    );
    let monitor = start_with(&config);
    all_in_pool(&monitor.topology, &["primary", "replica1"]).await;
    drop(monitor);

    // ...and one that does not exist keeps the nodes out, saying why.
    let config = config_for_user(
        &cluster,
        "mysite_user",
        "mysite-pw",
        "[monitor]\ndatabase = \"mysite_user\"\n",
    );
    let monitor = start_with(&config);
    wait_until(
        &monitor.topology,
        "replica1 unreachable: no database mysite_user",
        Duration::from_secs(30),
        |s| {
            let replica = node(s, "replica1");
            !replica.is_usable()
                && replica
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("mysite_user"))
        },
    )
    .await;
}
