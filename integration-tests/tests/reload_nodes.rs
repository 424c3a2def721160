//! Reload in place of the nodes and the lag limits, against a private cluster: a replica
//! added by a reload is monitored, listed and read from once admitted; a replica removed
//! while clients hold connections takes no new read, costs no client an error, and its
//! server connections close; lowering `[lag]` limits evicts a delayed replica and raising
//! them readmits it; an invalid file changes none of it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use causeway::monitor::{EvictionReason, Topology};
use integration_tests::Cluster;
use tokio_postgres::SimpleQueryMessage;

use crate::monitor::private_cluster;
use crate::reload::Instance;
use crate::support::{counter, eventually, http_get, setup_on_primary};

const LAG: &str =
    "[lag]\npoll_interval = \"100ms\"\nreadmit_after = \"300ms\"\nmax_seconds = \"10s\"\n";

/// The config file's extra part: console access, replica reads, `[lag]` with `lag_extra`
/// and the replicas named in `replicas`.
fn extra(cluster: &Cluster, replicas: &[&str], lag_extra: &str) -> String {
    let mut s = format!(
        "[proxy]\nadmin_users = [\"app\"]\n\n[consistency]\ndefault = \"eventual\"\n\n{LAG}{lag_extra}\n"
    );
    for name in replicas {
        let port = cluster.node(name).port;
        s += &format!("[[replicas]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\n\n");
    }
    s
}

async fn port_of_read(client: &tokio_postgres::Client) -> Result<u16, tokio_postgres::Error> {
    let row = client.query_one("SELECT inet_server_port()", &[]).await?;
    let port: i32 = row.get(0);
    Ok(u16::try_from(port).unwrap_or(0))
}

/// Ports `reads` reads went to, with their counts.
async fn read_ports(client: &tokio_postgres::Client, reads: usize) -> BTreeMap<u16, usize> {
    let mut ports = BTreeMap::new();
    for _ in 0..reads {
        *ports
            .entry(port_of_read(client).await.unwrap())
            .or_default() += 1;
    }
    ports
}

async fn usable(topology: &Topology, name: &str, want: bool, within: Duration) {
    let what = format!("{name} usable = {want}");
    let started = std::time::Instant::now();
    eventually(within, &what, || async {
        let now = topology.replica_in_pool(name);
        (now == want)
            .then_some(())
            .ok_or_else(|| format!("{:?}", topology.snapshot().node(name).map(|n| n.state)))
    })
    .await;
    eprintln!("{what} after {:?}", started.elapsed());
}

/// Reads a replica refused and Causeway ran again on the primary, so far.
async fn standby_refused(causeway: &Instance) -> f64 {
    let text = http_get(causeway.admin, "/metrics").await.body;
    counter(
        &text,
        "causeway_consistency_fallbacks_total",
        &[("reason", "standby_refused")],
    )
}

/// Rows of the admin console's `SHOW NODES`: (name, port).
async fn show_nodes(causeway: &Instance) -> Vec<(String, Option<String>)> {
    let console = causeway.console().await.expect("console");
    let rows = console.simple_query("SHOW NODES").await.unwrap();
    rows.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some((
                row.get("name")?.to_owned(),
                row.get("port").map(str::to_owned),
            )),
            _ => None,
        })
        .collect()
}

/// Sessions of the proxy's pools on `node` (not the monitor's control connection).
async fn pool_sessions(node: &tokio_postgres::Client) -> i64 {
    node.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' \
         AND backend_type = 'client backend' AND application_name <> 'causeway-monitor' \
         AND pid <> pg_backend_pid()",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn monitor_sessions(node: &tokio_postgres::Client) -> i64 {
    node.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'causeway-monitor'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn reload_adds_and_removes_replicas_and_moves_lag_limits() {
    let cluster = private_cluster(2).await;
    let r2_port = cluster.node("replica2").port;
    let causeway = Instance::start_on(
        &cluster,
        Some(&["replica1"]),
        &extra(&cluster, &["replica1"], ""),
    )
    .await;
    let topology = &causeway.topology;
    usable(topology, "replica1", true, Duration::from_secs(10)).await;
    let metrics = http_get(causeway.admin, "/metrics").await.body;
    assert!(!metrics.contains("replica=\"replica2\""), "{metrics}");
    assert!(show_nodes(&causeway)
        .await
        .iter()
        .all(|(n, _)| n != "replica2"));

    // A volatile user function that writes: once Causeway has read it from pg_proc, its
    // calls go to the primary, and a reload must not forget it.
    let primary = setup_on_primary(
        &cluster,
        "CREATE SEQUENCE reload_seq; GRANT USAGE ON SEQUENCE reload_seq TO app; \
         CREATE FUNCTION reload_next() RETURNS bigint LANGUAGE sql VOLATILE \
         AS $$ SELECT nextval('reload_seq') $$",
    )
    .await;
    let caller = causeway.connect("app").await.unwrap();
    eventually(
        Duration::from_secs(10),
        "reload_next() known as a write",
        || async {
            caller
                .query_one("SELECT reload_next()", &[])
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        },
    )
    .await;

    // (a) Added by a reload: monitored, then read from, listed, and in the metrics.
    causeway.write(&extra(&cluster, &["replica1", "replica2"], ""));
    let (status, body) = causeway.reload().await;
    assert_eq!(status, 200, "{body}");
    let refused = || standby_refused(&causeway);
    let before = refused().await;
    for _ in 0..5 {
        caller
            .query_one("SELECT reload_next()", &[])
            .await
            .expect("a volatile function still goes to the primary after a reload");
    }
    // Straight to the primary: no replica refused it first.
    assert_eq!(refused().await, before);
    assert!(body.contains("replicas added: replica2"), "{body}");
    usable(topology, "replica2", true, Duration::from_secs(10)).await;
    let reader = causeway.connect("app").await.unwrap();
    let ports = read_ports(&reader, 60).await;
    eprintln!("reads by port after adding replica2 (port {r2_port}): {ports:?}");
    assert!(
        ports.contains_key(&r2_port),
        "no read reached replica2: {ports:?}"
    );
    let nodes = show_nodes(&causeway).await;
    assert!(
        nodes.contains(&("replica2".to_owned(), Some(r2_port.to_string()))),
        "{nodes:?}"
    );
    let status = http_get(causeway.admin, "/status").await.body;
    assert!(status.contains("\"replica2\""), "{status}");
    eventually(
        Duration::from_secs(5),
        "replica2 in the metrics",
        || async {
            let text = http_get(causeway.admin, "/metrics").await.body;
            let in_pool = counter(
                &text,
                "causeway_replica_in_pool",
                &[("replica", "replica2")],
            );
            (in_pool == 1.0).then_some(()).ok_or(in_pool)
        },
    )
    .await;

    // (a2) Moved: `replica2` now names replica1's server. A connection that read from the
    // old address never goes back there (its pool is retired: it reads elsewhere), and the
    // old address's pool connections close; moved back, reads reach it again.
    let r1_port = cluster.node("replica1").port;
    let moved = extra(&cluster, &["replica1", "replica2"], "").replace(
        &format!("name = \"replica2\"\nhost = \"127.0.0.1\"\nport = {r2_port}"),
        &format!("name = \"replica2\"\nhost = \"127.0.0.1\"\nport = {r1_port}"),
    );
    causeway.write(&moved);
    let (status, body) = causeway.reload().await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("replicas added: replica2") && body.contains("replicas removed: replica2"),
        "{body}"
    );
    usable(topology, "replica2", true, Duration::from_secs(10)).await;
    for client in [&reader, &causeway.connect("app").await.unwrap()] {
        let ports = read_ports(client, 40).await;
        assert!(
            !ports.contains_key(&r2_port),
            "read from the old address: {ports:?}"
        );
    }
    let replica2 = cluster.node("replica2").client().await.unwrap();
    eventually(
        Duration::from_secs(5),
        "pool connections at the old address closed",
        || async {
            let pool = pool_sessions(&replica2).await;
            (pool == 0)
                .then_some(())
                .ok_or(format!("{pool} pool connections"))
        },
    )
    .await;
    causeway.write(&extra(&cluster, &["replica1", "replica2"], ""));
    assert_eq!(causeway.reload().await.0, 200);
    usable(topology, "replica2", true, Duration::from_secs(10)).await;
    let ports = read_ports(&causeway.connect("app").await.unwrap(), 60).await;
    assert!(
        ports.contains_key(&r2_port),
        "moved back, no read reached replica2: {ports:?}"
    );

    // (b) Removed while clients hold connections that read from it.
    let mut held = Vec::new();
    for _ in 0..3 {
        let client = causeway.connect("app").await.unwrap();
        read_ports(&client, 20).await;
        held.push(client);
    }
    let replica2 = cluster.node("replica2").client().await.unwrap();
    assert!(
        pool_sessions(&replica2).await > 0,
        "no pool connection on replica2"
    );
    let removed = Arc::new(AtomicBool::new(false));
    let late_hits = Arc::new(AtomicUsize::new(0));
    let busy = {
        let client = causeway.connect("app").await.unwrap();
        let (removed, late_hits) = (removed.clone(), late_hits.clone());
        tokio::spawn(async move {
            let mut reads = 0;
            while reads < 400 {
                let after = removed.load(Ordering::SeqCst);
                let port = port_of_read(&client)
                    .await
                    .expect("a read during the reload");
                if after && port == r2_port {
                    late_hits.fetch_add(1, Ordering::SeqCst);
                }
                reads += 1;
                if after {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    causeway.write(&extra(&cluster, &["replica1"], ""));
    let (status, body) = causeway.reload().await;
    removed.store(true, Ordering::SeqCst);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("replicas removed: replica2"), "{body}");
    assert!(topology.snapshot().node("replica2").is_none());
    for client in &held {
        let ports = read_ports(client, 30).await;
        assert!(
            !ports.contains_key(&r2_port),
            "read from a removed replica: {ports:?}"
        );
    }
    busy.await.expect("the busy client saw no error");
    assert_eq!(
        late_hits.load(Ordering::SeqCst),
        0,
        "reads reached replica2 after its removal"
    );
    eventually(
        Duration::from_secs(5),
        "replica2's pool and monitor connections closed",
        || async {
            let (pool, monitor) = (
                pool_sessions(&replica2).await,
                monitor_sessions(&replica2).await,
            );
            (pool == 0 && monitor == 0)
                .then_some(())
                .ok_or(format!("{pool} pool and {monitor} monitor connections"))
        },
    )
    .await;
    let nodes = show_nodes(&causeway).await;
    assert!(nodes.iter().all(|(n, _)| n != "replica2"), "{nodes:?}");
    let status = http_get(causeway.admin, "/status").await.body;
    assert!(!status.contains("\"replica2\""), "{status}");

    // (c) Lag limits: replica1 replays 1.5 s late while the primary writes.
    primary
        .batch_execute("CREATE TABLE reload_ticks (at timestamptz)")
        .await
        .unwrap();
    cluster
        .node("replica1")
        .set_apply_delay(Duration::from_millis(1500))
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        loop {
            if primary
                .batch_execute("INSERT INTO reload_ticks VALUES (now())")
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        topology.replica_in_pool("replica1"),
        "under 10s of lag: in the pool"
    );
    for (lowered, reason) in [
        ("[lag]\nmax_bytes = 64\n", EvictionReason::LagBytes),
        (
            "[lag]\nmax_seconds = \"700ms\"\n",
            EvictionReason::LagSeconds,
        ),
    ] {
        let config = extra(&cluster, &["replica1"], "").replace(LAG, &merge_lag(lowered));
        causeway.write(&config);
        let (status, body) = causeway.reload().await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("lag"), "{body}");
        usable(topology, "replica1", false, Duration::from_secs(3)).await;
        let state = topology.snapshot().node("replica1").and_then(|n| n.reason);
        assert_eq!(state, Some(reason));
        // Raised again: readmitted after readmit_after of clean samples.
        causeway.write(&extra(&cluster, &["replica1"], ""));
        assert_eq!(causeway.reload().await.0, 200);
        usable(topology, "replica1", true, Duration::from_secs(5)).await;
    }

    // `[monitor] database`: the control connections open again, to the new database.
    let replica1 = cluster.node("replica1").client().await.unwrap();
    causeway.write(&format!(
        "{}\n[monitor]\ndatabase = \"app\"\n",
        extra(&cluster, &["replica1"], "")
    ));
    let (status, body) = causeway.reload().await;
    assert!(status == 200 && body.contains("monitor"), "{body}");
    eventually(
        Duration::from_secs(5),
        "the monitor logged in to app",
        || async {
            let row = replica1
            .query_one(
                "SELECT count(*) FILTER (WHERE datname = 'app'), count(*) FROM pg_stat_activity \
                 WHERE application_name = 'causeway-monitor'",
                &[],
            )
            .await
            .unwrap();
            let (app, all): (i64, i64) = (row.get(0), row.get(1));
            (app == 1 && all == 1)
                .then_some(())
                .ok_or(format!("{app} of {all} in app"))
        },
    )
    .await;
    usable(topology, "replica1", true, Duration::from_secs(5)).await;

    // (d) An invalid file changes nothing: the nodes and limits stay.
    let failures = causeway.reloads("failure").await;
    let duplicate = extra(&cluster, &["replica1", "replica1"], "").replace(LAG, "");
    causeway.write(&format!("{duplicate}[lag]\nmax_bytes = 64\n"));
    let (status, body) = causeway.reload().await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("nothing changed"), "{body}");
    assert_eq!(causeway.reloads("failure").await, failures + 1.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        topology.replica_in_pool("replica1"),
        "the lag limits stayed"
    );
    let names: Vec<String> = topology
        .snapshot()
        .nodes()
        .iter()
        .map(|n| n.name.to_string())
        .collect();
    assert_eq!(names, ["primary", "replica1"]);
    writer.abort();
    cluster
        .node("replica1")
        .set_apply_delay(Duration::ZERO)
        .await
        .unwrap();
    causeway.stop().await;
}

/// The test's `[lag]` section with the keys of `more` (a `[lag]` section) replacing its own.
fn merge_lag(more: &str) -> String {
    let mut lag: toml::Table = LAG.parse().unwrap();
    let more: toml::Table = more.parse().unwrap();
    if let (Some(toml::Value::Table(base)), Some(toml::Value::Table(more))) =
        (lag.get_mut("lag"), more.get("lag"))
    {
        base.extend(more.clone());
    }
    toml::to_string(&lag).unwrap()
}

#[tokio::test]
async fn a_reload_adds_the_first_replica_to_a_primary_only_instance() {
    // Private: a busy shared primary could refuse the function refresh's connection.
    let cluster = &private_cluster(1).await;
    setup_on_primary(
        cluster,
        "CREATE SEQUENCE reload_first_seq; \
         GRANT USAGE ON SEQUENCE reload_first_seq TO app; \
         CREATE FUNCTION reload_first_next() RETURNS bigint LANGUAGE sql \
         VOLATILE AS $$ SELECT nextval('reload_first_seq') $$",
    )
    .await;
    let causeway = Instance::start_on(cluster, Some(&[]), &extra(cluster, &[], "")).await;
    let r1_port = cluster.node("replica1").port;
    let before = causeway.connect("app").await.unwrap();
    let ports = read_ports(&before, 10).await;
    assert!(!ports.contains_key(&r1_port), "{ports:?}");

    causeway.write(&extra(cluster, &["replica1"], ""));
    let (status, body) = causeway.reload().await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("replicas added: replica1"), "{body}");
    usable(
        &causeway.topology,
        "replica1",
        true,
        Duration::from_secs(10),
    )
    .await;
    let after = causeway.connect("app").await.unwrap();
    let ports = read_ports(&after, 20).await;
    assert!(
        ports.contains_key(&r1_port),
        "no read reached replica1: {ports:?}"
    );
    // The reload woke the volatile-function refresh: calls of a writing function go
    // straight to the primary well before its 30 s interval.
    let refused = || standby_refused(&causeway);
    // (Well within the refresh's 30 s interval; a loaded machine takes a few seconds.)
    let asked = std::time::Instant::now();
    eventually(
        Duration::from_secs(15),
        "reload_first_next() known as a write",
        || async {
            let before = refused().await;
            after
                .query_one("SELECT reload_first_next()", &[])
                .await
                .map_err(|e| e.to_string())?;
            let now = refused().await;
            (now == before)
                .then_some(())
                .ok_or_else(|| "refused by the replica first".to_owned())
        },
    )
    .await;
    eprintln!(
        "volatile functions read {:?} after the reload",
        asked.elapsed()
    );
    // The connection from before the reload keeps its primary-only settings.
    let ports = read_ports(&before, 10).await;
    assert!(!ports.contains_key(&r1_port), "{ports:?}");
    causeway.stop().await;
}
