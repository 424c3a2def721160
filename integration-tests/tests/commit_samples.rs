//! Read-your-writes without a probe per write (DESIGN.md §1 rule 1: a probe that starts
//! after a commit covers it): a connection-scoped session's requests on the primary send no
//! probe statement; its next replica read takes the monitor's first sample of the primary
//! since the request ended, or one shared refresh of it. Named sessions still probe (their
//! floor must be stored before the client sees the result).

use std::sync::Arc;
use std::time::Duration;

use integration_tests::PgNode;

use crate::routing::{node_of, wait_in_pool};
use crate::support::{delay_replicas, prepared_cluster, Proxy};

const SETUP: &str = "CREATE TABLE samples_t (id int PRIMARY KEY, owner int); \
     GRANT ALL ON samples_t TO PUBLIC";

/// Calls of the session's commit-position probe on `node` (`pg_stat_statements`; the
/// monitor's own sample is another statement).
async fn primary_probe_calls(node: &PgNode) -> i64 {
    let client = node.client().await.unwrap();
    client
        .query_one(
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements \
             WHERE query LIKE 'SELECT pg_catalog.pg_current_wal_insert_lsn()%'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Each write is read back at once through the same connection, with replicas that apply
/// WAL 100 ms late: every read sees its write, most of them on a replica after a short
/// wait, and no write sent a probe. A named session's writes still do.
#[tokio::test]
async fn connection_scoped_writes_send_no_probe_and_are_read_back() {
    let (cluster, primary) = prepared_cluster(false, SETUP, None).await;
    delay_replicas(&cluster, Duration::from_millis(100)).await;
    let proxy = Proxy::start_with(&cluster, "[consistency]\nmax_wait = \"1s\"\n").await;
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    let before = primary_probe_calls(&cluster.primary).await;
    let client = proxy.client().await;
    let mut on_replicas = 0;
    for id in 0..20 {
        client
            .execute("INSERT INTO samples_t VALUES ($1, 0)", &[&id])
            .await
            .unwrap();
        let row = client
            .query_one(
                "SELECT inet_server_port(), count(*)::int FROM samples_t WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(1), 1, "the read missed write {id}");
        if node_of(&cluster, row.get(0)) != "primary" {
            on_replicas += 1;
        }
    }
    assert!(on_replicas >= 15, "{on_replicas}/20 reads on replicas");
    let after = primary_probe_calls(&cluster.primary).await;
    assert_eq!(after, before, "connection-scoped writes sent probes");
    // The position a client hands to another session covers its last write.
    let lsn_before: String = primary
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    client
        .execute("INSERT INTO samples_t VALUES (100, 0)", &[])
        .await
        .unwrap();
    let token = client
        .simple_query("SHOW causeway.session_lsn")
        .await
        .unwrap()
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a session LSN");
    let newer: bool = primary
        .query_one(
            "SELECT $1::text::pg_lsn > $2::text::pg_lsn",
            &[&token, &lsn_before],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        newer,
        "session_lsn {token} does not cover the write after {lsn_before}"
    );
    // A named session stores its floor before the client sees the result: it probes.
    for id in 200..205 {
        client
            .execute(
                "/* causeway: session=samples-1 */ INSERT INTO samples_t VALUES ($1, 1)",
                &[&id],
            )
            .await
            .unwrap();
    }
    let named = primary_probe_calls(&cluster.primary).await;
    assert!(
        named >= after + 5,
        "named-session writes probed {} times",
        named - after
    );
}

/// Eight connections write and read back their own rows at once, replicas 50 ms late:
/// they share the primary's samples, and no read misses its connection's write.
#[tokio::test]
async fn concurrent_writers_share_samples_and_read_their_writes() {
    let (cluster, _primary) = prepared_cluster(false, SETUP, None).await;
    delay_replicas(&cluster, Duration::from_millis(50)).await;
    let proxy = Proxy::start_with(&cluster, "[consistency]\nmax_wait = \"500ms\"\n").await;
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    let before = primary_probe_calls(&cluster.primary).await;
    let on_replicas = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for owner in 0..8 {
        let client = proxy.client().await;
        let replica_ports: Vec<i32> = cluster.replicas.iter().map(|r| i32::from(r.port)).collect();
        let on_replicas = Arc::clone(&on_replicas);
        tasks.push(tokio::spawn(async move {
            for i in 0..15 {
                let id = 1000 + owner * 100 + i;
                client
                    .execute("INSERT INTO samples_t VALUES ($1, $2)", &[&id, &owner])
                    .await
                    .unwrap();
                let row = client
                    .query_one(
                        "SELECT inet_server_port(), count(*)::int FROM samples_t \
                         WHERE owner = $1 AND id >= 1000",
                        &[&owner],
                    )
                    .await
                    .unwrap();
                assert_eq!(row.get::<_, i32>(1), i + 1, "owner {owner} missed a write");
                if replica_ports.contains(&row.get(0)) {
                    on_replicas.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let on_replicas = on_replicas.load(std::sync::atomic::Ordering::Relaxed);
    assert!(on_replicas >= 60, "{on_replicas}/120 reads on replicas");
    assert_eq!(primary_probe_calls(&cluster.primary).await, before);
}
