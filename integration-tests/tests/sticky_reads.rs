//! Monotonic reads without a probe (DESIGN.md §1 rule 2): a connection-scoped session's
//! replica reads send no probe statement; the session stays on the replica it last read
//! from until the monitor has sampled that replica since, and that sample becomes its
//! floor. Shared sessions still probe (the floor must reach the store).

use std::time::Duration;

use integration_tests::PgNode;

use crate::routing::{node_of, wait_in_pool};
use crate::support::{counter, eventually, prepared_cluster, Proxy};

const REPLICA_PROBE: &str = "SELECT pg_catalog.pg_last_wal_replay_lsn()";

/// Calls of the session probe statement on `node` (from `pg_stat_statements`).
async fn probe_calls(node: &PgNode) -> i64 {
    let client = node.client().await.unwrap();
    let row = client
        .query_one(
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements WHERE query = $1",
            &[&REPLICA_PROBE],
        )
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test]
async fn connection_scoped_replica_reads_send_no_probe() {
    let (cluster, _) = prepared_cluster(
        false,
        "CREATE TABLE sticky_t (id int primary key); INSERT INTO sticky_t VALUES (1); \
         GRANT ALL ON sticky_t TO PUBLIC",
        None,
    )
    .await;
    let proxy = Proxy::start_with(&cluster, "").await;
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    let before =
        probe_calls(cluster.node("replica1")).await + probe_calls(cluster.node("replica2")).await;
    let client = proxy.client().await;
    let mut on_replicas = 0;
    for _ in 0..200 {
        let row = client
            .query_one(
                "SELECT inet_server_port(), count(*)::int FROM sticky_t",
                &[],
            )
            .await
            .unwrap();
        if node_of(&cluster, row.get(0)) != "primary" {
            on_replicas += 1;
        }
    }
    let after =
        probe_calls(cluster.node("replica1")).await + probe_calls(cluster.node("replica2")).await;
    assert!(on_replicas > 150, "{on_replicas}/200 reads on replicas");
    assert_eq!(after, before, "connection-scoped reads sent probes");
    // A shared session must raise the stored floor after a replica read: it still probes.
    for _ in 0..20 {
        client
            .query_one(
                "/* causeway: session=shared-1 */ SELECT count(*) FROM sticky_t",
                &[],
            )
            .await
            .unwrap();
    }
    let shared =
        probe_calls(cluster.node("replica1")).await + probe_calls(cluster.node("replica2")).await;
    assert!(shared > after, "shared-session reads probe");
}

/// The session reads a counter on a fresh replica; that replica is then evicted while the
/// other one applies WAL 1.5 s late. The reads that follow must not go back in time: the
/// monitor's sample of the first replica becomes the floor, which the late one does not
/// meet, so they go to the primary until it does.
#[tokio::test]
async fn leaving_a_replica_keeps_reads_monotonic() {
    let (cluster, setup) = prepared_cluster(
        false,
        "CREATE TABLE sticky_mr (id int primary key, v bigint); \
         INSERT INTO sticky_mr VALUES (1, 0); GRANT ALL ON sticky_mr TO PUBLIC",
        Some(("replica2", Duration::from_millis(1500))),
    )
    .await;
    // Only replica1 in the pool at first, so the session settles there.
    cluster.node("replica2").pause_replay().await.unwrap();
    let proxy = Proxy::start_with(&cluster, "").await;
    wait_in_pool(&proxy, &["replica1"]).await;
    let writer = tokio::spawn(async move {
        for _ in 0..300 {
            setup
                .batch_execute("UPDATE sticky_mr SET v = v + 1 WHERE id = 1")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let reader = proxy.client().await;
    let read = reader
        .prepare("SELECT inet_server_port(), v FROM sticky_mr WHERE id = 1")
        .await
        .unwrap();
    let (mut last, mut reads) = (-1i64, 0);
    let mut check = |port: i32, v: i64, reads: &mut i32| {
        assert!(
            v >= last,
            "read {reads} went back in time: {v} after {last} (on {})",
            node_of(&cluster, port)
        );
        last = v;
        *reads += 1;
    };
    for _ in 0..200 {
        let row = reader.query_one(&read, &[]).await.unwrap();
        check(row.get(0), row.get(1), &mut reads);
    }
    // Swap: replica2 (1.5 s behind) comes back, replica1 leaves.
    cluster.node("replica2").resume_replay().await.unwrap();
    cluster.node("replica1").pause_replay().await.unwrap();
    let mut by_node = std::collections::BTreeMap::new();
    while !writer.is_finished() {
        let row = reader.query_one(&read, &[]).await.unwrap();
        let port: i32 = row.get(0);
        *by_node.entry(node_of(&cluster, port)).or_insert(0) += 1;
        check(port, row.get(1), &mut reads);
    }
    writer.await.unwrap();
    println!("after the swap: {by_node:?}");
}

/// A replica that restarts may come back behind what a read there saw (its replay position
/// is only as durable as its WAL flush). A session stuck to it after an unprobed read must
/// not trust it again on the monitor's word from a new control connection: the next read
/// goes to the primary (`monitor_stale`), which re-establishes the session's floor, and
/// reads return to replicas after that.
#[tokio::test]
async fn a_restarted_replica_is_not_trusted_until_reprobed() {
    let (cluster, _) = prepared_cluster(
        false,
        "CREATE TABLE sticky_restart (id int); INSERT INTO sticky_restart VALUES (1); \
         GRANT ALL ON sticky_restart TO PUBLIC",
        None,
    )
    .await;
    let proxy = Proxy::start_with(&cluster, "").await;
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    let client = proxy.client().await;
    // The simple protocol: one request per read (tokio-postgres's query_one would add a
    // Parse/Describe request, which moves the session too).
    let port_of = |messages: Vec<tokio_postgres::SimpleQueryMessage>| {
        messages
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .and_then(|p| p.parse::<i32>().ok())
            .expect("a port")
    };
    let read = "SELECT inet_server_port() FROM sticky_restart";
    // A read that lands on a replica (the session then sticks to it, unprobed).
    let stuck = eventually(Duration::from_secs(20), "a read on a replica", || async {
        let node = node_of(&cluster, port_of(client.simple_query(read).await.unwrap()));
        if node == "primary" {
            Err("the read ran on the primary".to_string())
        } else {
            Ok(node)
        }
    })
    .await;
    let evictions = |text: &str| {
        counter(
            text,
            "causeway_replica_evictions_total",
            &[("replica", stuck.as_str()), ("reason", "unreachable")],
        )
    };
    let evicted = evictions(&proxy.metrics.encode());
    cluster.node(&stuck).stop().unwrap();
    cluster.node(&stuck).start().unwrap();
    // The monitor notices (its control connection ended), then readmits the replica.
    eventually(
        Duration::from_secs(20),
        "the monitor sees the restart",
        || async {
            (evictions(&proxy.metrics.encode()) > evicted)
                .then_some(())
                .ok_or_else(|| "no eviction yet".to_string())
        },
    )
    .await;
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    let stale = |text: &str| {
        counter(
            text,
            "causeway_consistency_fallbacks_total",
            &[("reason", "monitor_stale")],
        )
    };
    let before = stale(&proxy.metrics.encode());
    let node = node_of(&cluster, port_of(client.simple_query(read).await.unwrap()));
    assert_eq!(node, "primary", "the first read after {stuck} restarted");
    let text = proxy.metrics.encode();
    assert_eq!(
        stale(&text),
        before + 1.0,
        "{}",
        text.lines()
            .filter(|l| l.starts_with("causeway_consistency_fallbacks_total")
                || l.starts_with("causeway_queries_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The primary read re-established the floor: replicas serve the session again.
    eventually(
        Duration::from_secs(20),
        "reads back on replicas",
        || async {
            let node = node_of(&cluster, port_of(client.simple_query(read).await.unwrap()));
            (node != "primary")
                .then_some(())
                .ok_or_else(|| "still on the primary".to_string())
        },
    )
    .await;
}
