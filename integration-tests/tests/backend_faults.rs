//! Connections that die mid-flight: a client gone mid-transaction or mid-result, a server
//! backend terminated mid-query or mid-result, the primary restarted under a connected
//! client. Nothing is committed that the client was not told about, no result cut short
//! looks complete, no server connection is reused dirty, and the proxy serves again once
//! PostgreSQL does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use integration_tests::{Cluster, ClusterOptions, PgNode};
use tokio::task::JoinHandle;
use tokio_postgres::error::{Severity, SqlState};

use crate::routing::{node_of, wait_in_pool};
use crate::support::{counter, eventually, prepared_cluster, sqlstate, Proxy};

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

/// The big result a client leaves in the middle of: about 40 MB of rows, far more than the
/// socket buffers hold. The marker finds its backend in `pg_stat_activity`.
const BIG_RESULT: &str = "SELECT 'bf-mid-result', repeat('x', 1000) FROM generate_series(1, 40000)";

#[tokio::test]
async fn a_client_gone_mid_result_does_not_hand_rows_to_the_next() {
    let proxy = Proxy::start("[proxy]\npool_size = 1\n").await;
    let (gone, task) = abortable(&proxy).await;
    // Take the first rows of the result, then cut the connection with the rest in flight.
    let rows = within(
        "the first rows of a big result",
        gone.query_raw(BIG_RESULT, std::iter::empty::<i32>()),
    )
    .await
    .unwrap();
    let mut rows = Box::pin(rows);
    for _ in 0..5 {
        let row = within("a row of the big result", rows.next())
            .await
            .expect("the result has more rows")
            .unwrap();
        assert_eq!(row.get::<_, &str>(0), "bf-mid-result");
    }
    task.abort();
    drop(rows);
    drop(gone);
    // The next client shares the one server connection: it gets its own answers, not the
    // rest of the big result.
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
    // And no backend is left running (or stuck sending) the abandoned query.
    let direct = Cluster::shared().primary.client().await.unwrap();
    eventually(
        Duration::from_secs(15),
        "the abandoned query ends",
        || async {
            let left: Vec<String> = direct
                .query(
                    "SELECT state FROM pg_stat_activity WHERE state <> 'idle' \
                     AND query LIKE '%bf-mid-result%' AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            left.is_empty()
                .then_some(())
                .ok_or_else(|| format!("backends still on it: {left:?}"))
        },
    )
    .await;
}

/// The server gone mid-result: the backend streaming a big result is terminated after
/// the client has its first rows. The rest of the result must end in an error (FATAL, the
/// server's 57P01 or Causeway's 08006 for the lost server connection, depending on whether
/// the backend could still send its message), never in a short result that looks complete;
/// the next client is served.
#[tokio::test]
async fn a_backend_terminated_mid_result_fails_the_result() {
    let proxy = Proxy::start("[proxy]\npool_size = 1\n").await;
    let client = proxy.client().await;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let sql = "SELECT 'bf-server-gone', repeat('x', 1000) FROM generate_series(1, 40000)";
    let rows = within(
        "the first rows",
        client.query_raw(sql, std::iter::empty::<i32>()),
    )
    .await
    .unwrap();
    let mut rows = Box::pin(rows);
    for _ in 0..5 {
        within("a row of the big result", rows.next())
            .await
            .expect("the result has more rows")
            .unwrap();
    }
    let direct = Cluster::shared().primary.client().await.unwrap();
    let terminated: bool = direct
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(terminated, "the backend was terminated");
    let mut received = 5;
    let err = loop {
        match within("the rest of the result", rows.next()).await {
            Some(Ok(_)) => received += 1,
            Some(Err(err)) => break err,
            None => panic!("the result ended cleanly after {received} of 40000 rows"),
        }
    };
    assert!(received < 40_000, "all rows arrived before the kill");
    assert!(
        matches!(
            err.code(),
            Some(c) if *c == SqlState::ADMIN_SHUTDOWN || *c == SqlState::CONNECTION_FAILURE
        ),
        "after {received} rows: {err:?}"
    );
    assert_fatal(&err);
    eprintln!(
        "backend terminated mid-result: {received} rows, then {:?}",
        err.code()
    );
    let next = proxy.client().await;
    let got: i32 = within(
        "a new client after the kill",
        next.query_one("SELECT 7", &[]),
    )
    .await
    .unwrap()
    .get(0);
    assert_eq!(got, 7);
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
        // Terminate the backend only once it is inside the transaction, in the pg_sleep.
        eventually(
            Duration::from_secs(15),
            "the write reaches pg_sleep",
            || async {
                let running: Option<String> = direct
                    .query_opt(
                        "SELECT query FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                        &[&pid],
                    )
                    .await
                    .unwrap()
                    .map(|r| r.get(0));
                match running {
                    Some(query) if query.contains("pg_sleep(10)") => Ok(()),
                    other => Err(format!("backend {pid} runs {other:?}")),
                }
            },
        )
        .await;
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
    // The client gets the server's own FATAL 57P01 and is closed, as it would be connected
    // to PostgreSQL directly: its session (and transaction) is gone.
    let err = result.expect_err("a terminated transaction must not report success");
    assert_eq!(err.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{err:?}");
    assert_fatal(&err);
    let again = within(
        "the same client after the kill",
        client.simple_query("SELECT 1"),
    )
    .await
    .expect_err("the client the kill hit is closed");
    assert!(again.is_closed(), "{again:?}");
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
}

/// Asserts `err` came from an ErrorResponse of severity FATAL (the connection ends).
fn assert_fatal(err: &tokio_postgres::Error) {
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {err:?}"));
    assert_eq!(db.parsed_severity(), Some(Severity::Fatal), "{err:?}");
}

#[tokio::test]
async fn the_primary_restarting_fails_requests_cleanly_then_recovers() {
    let cluster = Cluster::start(ClusterOptions {
        replicas: 0,
        redis: false,
    })
    .unwrap();
    // query_wait_timeout = "0": requests fail at once instead of waiting for the primary
    // (failover.rs tests the wait).
    let proxy = Proxy::start_with(
        &cluster,
        "[proxy]\npool_size = 2\n[failover]\nquery_wait_timeout = \"0\"\n",
    )
    .await;
    let client = proxy.client().await;
    client
        .batch_execute("CREATE TABLE bf_restart (id int); INSERT INTO bf_restart VALUES (1)")
        .await
        .unwrap();
    cluster.primary.stop().unwrap();
    // Past the pool's check delay, so the dead idle connections are noticed on checkout
    // (the scenario: a fixed wait, no condition to poll for).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // While the primary is down a request fails at once with FATAL 08006 (Causeway cannot
    // reach the server), which closes the client; a new client fares the same.
    let err = within(
        "a write while the primary is down",
        client.batch_execute("INSERT INTO bf_restart VALUES (2)"),
    )
    .await
    .expect_err("a write cannot succeed while the primary is down");
    assert_eq!(err.code(), Some(&SqlState::CONNECTION_FAILURE), "{err:?}");
    assert_fatal(&err);
    assert!(client.is_closed(), "FATAL closes the client");
    let err = within("a new client while the primary is down", async {
        proxy
            .client_as("app")
            .await?
            .batch_execute("SELECT 1")
            .await
    })
    .await
    .expect_err("no request succeeds while the primary is down");
    assert_eq!(err.code(), Some(&SqlState::CONNECTION_FAILURE), "{err:?}");
    cluster.primary.start().unwrap();
    // Once PostgreSQL is back, clients are served again without restarting Causeway.
    let rows = eventually(
        Duration::from_secs(30),
        "served after the restart",
        || async {
            let attempt = async {
                let c = proxy.client_as("app").await?;
                c.query_one("SELECT count(*) FROM bf_restart", &[]).await
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(row)) => Ok(row.get::<_, i64>(0)),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(rows, 1, "only the write reported as committed is there");
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
    // Both sleeps are the scenario: reads run for a while before the fault, and for 2 s
    // after it to show that none fails and none reaches the dead node.
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
    eventually(
        Duration::from_secs(20),
        "the restarted replica2 serves a read",
        || async {
            let row = client.query_one("SELECT inet_server_port()", &[]).await;
            let port = row.unwrap().get::<_, i32>(0);
            (port == replica2)
                .then_some(())
                .ok_or_else(|| format!("the last read ran on {}", node_of(&cluster, port)))
        },
    )
    .await;
}
