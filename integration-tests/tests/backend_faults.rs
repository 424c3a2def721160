//! Connections that die mid-flight: a client gone mid-transaction or mid-result, a server
//! backend terminated mid-query, the primary restarted under a connected client. Nothing is
//! committed that the client was not told about, no server connection is reused dirty, and
//! the proxy serves again once PostgreSQL does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use integration_tests::{Cluster, ClusterOptions, PgNode};
use tokio::task::JoinHandle;

use crate::routing::wait_in_pool;
use crate::support::{counter, prepared_cluster, sqlstate, Proxy};

/// A client whose connection can be cut without a Terminate message (`abort` drops the socket).
async fn abortable(proxy: &Proxy) -> (tokio_postgres::Client, JoinHandle<()>) {
    let (client, conn) = tokio_postgres::connect(&proxy.conn_string("app"), tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (client, task)
}

/// Awaits `fut` with a deadline, so a hang fails the test.
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(15), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 15 s"))
}

/// A proxy with one server connection (so the next client gets the very one a failed
/// client used) and an empty table `table (id int)`; returns it and the client that made it.
async fn one_connection_with_table(table: &str) -> (Proxy, tokio_postgres::Client) {
    let proxy = Proxy::start("[proxy]\npool_size = 1\n").await;
    let client = proxy.client().await;
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int)"
        ))
        .await
        .unwrap();
    (proxy, client)
}

#[tokio::test]
async fn a_client_gone_mid_transaction_leaves_no_trace() {
    let (proxy, _setup) = one_connection_with_table("bf_tx").await;
    let (gone, task) = abortable(&proxy).await;
    gone.batch_execute(
        "BEGIN; INSERT INTO bf_tx VALUES (1); LOCK TABLE bf_tx IN ACCESS EXCLUSIVE MODE",
    )
    .await
    .unwrap();
    task.abort();
    drop(gone);
    // The next client sees no row (the transaction was not left open on the connection it
    // gets: there it would see its own uncommitted row) and no lock (it was rolled back).
    let next = proxy.client().await;
    let count: i64 = within(
        "count after the client left",
        next.query_one("SELECT count(*) FROM bf_tx", &[]),
    )
    .await
    .unwrap()
    .get(0);
    assert_eq!(
        count, 0,
        "a dead client's transaction must not commit or leak"
    );
    let status: Option<i64> = within(
        "xid after the client left",
        next.query_one("SELECT txid_current_if_assigned()", &[]),
    )
    .await
    .unwrap()
    .get(0);
    assert_eq!(
        status, None,
        "the server connection is outside any transaction"
    );
    let direct = Cluster::shared().primary.client().await.unwrap();
    within(
        "lock taken directly",
        direct.batch_execute("BEGIN; LOCK TABLE bf_tx IN ACCESS EXCLUSIVE MODE NOWAIT; ROLLBACK"),
    )
    .await
    .expect("the dead client's lock was released");
}

#[tokio::test]
async fn a_client_gone_mid_result_does_not_hand_rows_to_the_next() {
    let proxy = Proxy::start("[proxy]\npool_size = 1\n").await;
    let (gone, task) = abortable(&proxy).await;
    // About 40 MB of rows: far more than the socket buffers hold when the client leaves.
    let big = tokio::spawn(async move {
        gone.simple_query("SELECT repeat('x', 1000) FROM generate_series(1, 40000)")
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    task.abort();
    let _ = big.await;
    let next = proxy.client().await;
    for i in 0..20i32 {
        let got: i32 = within(
            "query after a client left mid-result",
            next.query_one("SELECT $1::int", &[&i]),
        )
        .await
        .unwrap()
        .get(0);
        assert_eq!(got, i, "the next client got someone else's rows");
    }
}

#[tokio::test]
async fn a_terminated_backend_fails_its_query_and_commits_nothing() {
    let (proxy, client) = one_connection_with_table("bf_kill").await;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let direct = Cluster::shared().primary.client().await.unwrap();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        direct
            .query_one("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap()
            .get::<_, bool>(0)
    });
    let result = within(
        "a write whose backend is terminated",
        client.batch_execute("BEGIN; INSERT INTO bf_kill VALUES (1); SELECT pg_sleep(10); COMMIT"),
    )
    .await;
    assert!(killer.await.unwrap(), "the backend was terminated");
    let err = result.expect_err("a terminated transaction must not report success");
    eprintln!("terminated mid-transaction: {err:?}");
    let code = sqlstate(&err);
    assert!(
        matches!(code.as_deref(), Some("57P01" | "08006")),
        "the client is told why: {err:?}"
    );
    // The row never committed; a new client works at once on a new server connection.
    let next = proxy.client().await;
    let count: i64 = within(
        "count after the kill",
        next.query_one("SELECT count(*) FROM bf_kill", &[]),
    )
    .await
    .unwrap()
    .get(0);
    assert_eq!(count, 0);
    // The client the kill hit can go on if it is still connected (it is closed otherwise,
    // as PostgreSQL's own would be); either way it gets an answer, not a hang.
    if !client.is_closed() {
        let again = within(
            "the same client after the kill",
            client.simple_query("SELECT 1"),
        )
        .await;
        if let Err(e) = again {
            assert!(client.is_closed() || sqlstate(&e).is_some(), "{e:?}");
        }
    }
}

#[tokio::test]
async fn the_primary_restarting_fails_requests_cleanly_then_recovers() {
    let cluster = Cluster::start(ClusterOptions {
        replicas: 0,
        redis: false,
    })
    .unwrap();
    let proxy = Proxy::start_with(&cluster, "[proxy]\npool_size = 2\n").await;
    let client = proxy.client().await;
    client
        .batch_execute("CREATE TABLE bf_restart (id int); INSERT INTO bf_restart VALUES (1)")
        .await
        .unwrap();
    cluster.primary.stop().unwrap();
    // Past the pool's check delay, so the dead idle connections are noticed on checkout.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // While the primary is down every request fails, with a SQLSTATE, and quickly.
    for _ in 0..3 {
        let result = within(
            "a write while the primary is down",
            client.batch_execute("INSERT INTO bf_restart VALUES (2)"),
        )
        .await;
        let err = result.expect_err("a write cannot succeed while the primary is down");
        eprintln!("while the primary is down: {err:?}");
        assert!(sqlstate(&err).is_some() || client.is_closed(), "{err:?}");
        if client.is_closed() {
            break;
        }
    }
    cluster.primary.start().unwrap();
    // Once PostgreSQL is back, clients are served again without restarting Causeway.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let attempt = async {
            let c = proxy.client_as("app").await?;
            c.query_one("SELECT count(*) FROM bf_restart", &[]).await
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(row)) => break row.get::<_, i64>(0),
            other => {
                eprintln!("after the restart: {other:?}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "not served 30 s after the primary came back: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(rows, 1, "only the write reported as committed is there");
    // The client that saw the outage, if still open, is served too.
    if !client.is_closed() {
        let served = within(
            "the same client after the restart",
            client.simple_query("SELECT 1"),
        )
        .await;
        assert!(served.is_ok() || client.is_closed(), "{served:?}");
    }
}

/// Routed readers: each loops a read until `stop`, checking every result; returns the
/// errors it saw and how many reads the `dead` replica served after `dead_at` + 500 ms.
fn readers(
    clients: Vec<tokio_postgres::Client>,
    dead: i32,
    dead_at: Arc<OnceLock<Instant>>,
    stop: Arc<AtomicBool>,
) -> Vec<JoinHandle<(Vec<String>, usize)>> {
    clients
        .into_iter()
        .map(|client| {
            let (dead_at, stop) = (dead_at.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut errors, mut on_dead) = (Vec::new(), 0);
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let sql = "SELECT inet_server_port(), count(*) FROM bf_reads";
                    match client.query_one(sql, &[]).await {
                        Ok(row) => {
                            assert_eq!(row.get::<_, i64>(1), 100);
                            let late = dead_at
                                .get()
                                .is_some_and(|t| started > *t + Duration::from_millis(500));
                            on_dead += usize::from(late && row.get::<_, i32>(0) == dead);
                        }
                        Err(e) => {
                            errors.push(format!("{:?} {e:?}", sqlstate(&e)));
                            if client.is_closed() {
                                break;
                            }
                        }
                    }
                }
                (errors, on_dead)
            })
        })
        .collect()
}

/// Runs four routed readers for 2.5 s, calling `fault` after 0.5 s on `node`; asserts no
/// reader saw an error and `node` served nothing after the fault.
async fn reads_survive(proxy: &Proxy, cluster: &Cluster, node: &str, fault: fn(&PgNode)) {
    let dead = i32::from(cluster.node(node).port);
    let dead_at = Arc::new(OnceLock::new());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(proxy.client().await);
    }
    let tasks = readers(clients, dead, dead_at.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    fault(cluster.node(node));
    dead_at.set(Instant::now()).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let (errors, on_dead) = task.await.unwrap();
        assert!(errors.is_empty(), "{node}: a reader saw errors: {errors:?}");
        assert_eq!(on_dead, 0, "{node} served reads after it went down");
    }
}

/// Replicas going down under routed read load, killed (`kill -9`: the connections just
/// end) or shut down (`pg_ctl stop -m fast`: each backend sends FATAL 57P01 first): a read
/// that had no result yet runs again elsewhere, so clients see no error; nothing is read
/// from the dead replica; a restarted replica is readmitted and serves again.
#[tokio::test]
async fn replicas_going_down_under_read_load_cost_clients_nothing() {
    let (cluster, _) = prepared_cluster(
        false,
        "CREATE TABLE bf_reads (id int); INSERT INTO bf_reads SELECT generate_series(1, 100); \
         GRANT ALL ON bf_reads TO app",
        None,
    )
    .await;
    let proxy = Proxy::start_with(&cluster, "").await;
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    reads_survive(&proxy, &cluster, "replica2", |n| n.kill().unwrap()).await;
    cluster.node("replica2").start().unwrap();
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    reads_survive(&proxy, &cluster, "replica1", |n| n.stop().unwrap()).await;
    let lost = counter(
        &proxy.metrics.encode(),
        "causeway_consistency_fallbacks_total",
        &[("reason", "replica_lost")],
    );
    println!("reads moved off a replica going down: {lost}");
    // The restarted replica2 serves again.
    let client = proxy.client().await;
    let replica2 = i32::from(cluster.node("replica2").port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let row = client.query_one("SELECT inet_server_port()", &[]).await;
        if row.unwrap().get::<_, i32>(0) == replica2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted replica serves no read"
        );
    }
}
