//! tokio-postgres through Causeway: simple and extended queries, prepared statements shared
//! by many clients over few server connections, transactions, errors, COPY, cancel, NOTICE
//! and NOTIFY.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::support::{sqlstate, wait_active, Proxy};

#[tokio::test]
async fn simple_and_extended_queries() {
    let proxy = Proxy::start("").await;
    let client = proxy.client().await;
    let rows = client
        .simple_query("SELECT 1 AS one; SELECT 'two'")
        .await
        .unwrap();
    let values: Vec<_> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(values, vec!["1", "two"]);
    let row = client
        .query_one("SELECT $1::int + 1, $2::text", &[&41i32, &"x"])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(row.get::<_, String>(1), "x");
    // An empty query and a syntax error keep the connection usable.
    client.simple_query("").await.unwrap();
    let err = client.simple_query("SELEC 1").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42601"));
    assert_eq!(
        client
            .query_one("SELECT 7", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );
}

#[tokio::test]
async fn prepared_statements_survive_transaction_pooling() {
    // 12 clients share 2 server connections; each keeps named statements and reuses them.
    let proxy = Proxy::start("[proxy]\npool_size = 2\nmax_prepared_statements = 3\n").await;
    let setup = proxy.client().await;
    setup
        .batch_execute(
            "DROP TABLE IF EXISTS prep_t; CREATE TABLE prep_t (id int primary key, v text)",
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for c in 0..12i32 {
        let client = proxy.client().await;
        tasks.push(tokio::spawn(async move {
            let shared = client
                .prepare("SELECT count(*) FROM prep_t WHERE id >= $1")
                .await
                .unwrap();
            let own = client
                .prepare(&format!("SELECT $1::int * {c} + 0 * {c}"))
                .await
                .unwrap();
            let insert = client
                .prepare("INSERT INTO prep_t VALUES ($1, $2)")
                .await
                .unwrap();
            for i in 0..40i32 {
                let n: i32 = client.query_one(&own, &[&i]).await.unwrap().get(0);
                assert_eq!(n, i * c);
                client.query_one(&shared, &[&0i32]).await.unwrap();
                if i % 10 == 0 {
                    client
                        .execute(&insert, &[&(c * 1000 + i), &"x"])
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n: i64 = setup
        .query_one("SELECT count(*) FROM prep_t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 48);
}

#[tokio::test]
async fn transactions_commit_roll_back_and_fail() {
    let proxy = Proxy::start("[proxy]\npool_size = 1\n").await;
    let mut client = proxy.client().await;
    client
        .batch_execute("DROP TABLE IF EXISTS tx_t; CREATE TABLE tx_t (v int)")
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO tx_t VALUES (1)", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO tx_t VALUES (2)", &[])
        .await
        .unwrap();
    let err = tx
        .execute("INSERT INTO tx_t VALUES ('x')", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("22P02"));
    let err = tx.execute("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("25P02"));
    tx.rollback().await.unwrap();
    // A second client on the only server connection must not see an open transaction.
    let other = proxy.client().await;
    let rows: Vec<i32> = other
        .query("SELECT v FROM tx_t ORDER BY v", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, vec![1]);
}

#[tokio::test]
async fn copy_in_and_out() {
    let proxy = Proxy::start("").await;
    let client = proxy.client().await;
    client
        .batch_execute("DROP TABLE IF EXISTS copy_t; CREATE TABLE copy_t (id int, v text)")
        .await
        .unwrap();
    let sink = client
        .copy_in("COPY copy_t FROM STDIN (FORMAT csv, HEADER)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    let mut data = String::from("id,v\n");
    for i in 0..5000 {
        data.push_str(&format!("{i},row {i}\n"));
    }
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 5000);
    let stream = client
        .copy_out("COPY (SELECT * FROM copy_t ORDER BY id) TO STDOUT (FORMAT csv, HEADER)")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    let text: String = chunks
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    assert!(
        text.starts_with("id,v\n0,row 0\n"),
        "CSV header and first row kept"
    );
    assert_eq!(text.lines().count(), 5001);
    // A COPY that fails mid-way leaves the connection usable.
    let sink = client
        .copy_in("COPY copy_t FROM STDIN (FORMAT csv)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1,ok\nnot-a-number,x\n"))
        .await
        .unwrap();
    let err = sink.finish().await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("22P02"));
    let n: i64 = client
        .query_one("SELECT count(*) FROM copy_t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 5000);
}

#[tokio::test]
async fn cancel_reaches_only_the_running_query() {
    let proxy = Proxy::start("[proxy]\npool_size = 2\n").await;
    let client = proxy.client().await;
    let bystander = proxy.client().await;
    let token = client.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move {
        let res = client.simple_query("SELECT pg_sleep(20)").await;
        (client, res)
    });
    let other = tokio::spawn(async move {
        let res = bystander
            .query_one("SELECT 1 FROM pg_sleep(1.5)", &[])
            .await;
        (bystander, res)
    });
    // Cancel only once the query runs (a cancel that arrives first cancels nothing, and the
    // test would wait out the 20 s sleep).
    let direct = integration_tests::Cluster::shared()
        .primary
        .client()
        .await
        .unwrap();
    wait_active(&direct, "SELECT pg_sleep(20)%", "the query to cancel runs").await;
    token.cancel_query(NoTls).await.unwrap();
    let (client, res) = sleeper.await.unwrap();
    let err = res.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"));
    assert!(started.elapsed() < Duration::from_secs(10));
    let (_bystander, res) = other.await.unwrap();
    res.expect("the other client's query was not cancelled");
    // A stale key (nothing running) cancels nothing later on.
    token.cancel_query(NoTls).await.unwrap();
    // Time for a (wrong) cancel to land on the query below: nothing to poll for.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let row = client
        .query_one("SELECT 1 FROM pg_sleep(0.3)", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
}

#[tokio::test]
async fn notices_and_notifications_are_forwarded() {
    let proxy = Proxy::start("").await;
    let (listener, mut conn) = tokio_postgres::connect(&proxy.conn_string("app"), NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(msg)) = messages.next().await {
            let _ = tx.send(msg);
        }
    });
    listener
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        Ok(Some(AsyncMessage::Notice(n))) => assert_eq!(n.message(), "hello from plpgsql"),
        other => panic!("expected a notice, got {other:?}"),
    }
    listener
        .batch_execute("LISTEN causeway_test")
        .await
        .unwrap();
    let notifier = proxy.client().await;
    notifier
        .batch_execute("NOTIFY causeway_test, 'payload-1'")
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        Ok(Some(AsyncMessage::Notification(n))) => {
            assert_eq!(n.channel(), "causeway_test");
            assert_eq!(n.payload(), "payload-1");
        }
        other => panic!("expected a notification, got {other:?}"),
    }
}

#[tokio::test]
async fn pipelined_queries_keep_their_order_and_errors() {
    // tokio-postgres pipelines concurrent queries on one connection, each with its own Sync.
    let proxy = Proxy::start("[proxy]\npool_size = 1\n").await;
    let client = proxy.client().await;
    let stmt = client.prepare("SELECT $1::int * 10").await.unwrap();
    let futures = (0..60i32).map(|i| {
        let client = &client;
        let stmt = &stmt;
        async move {
            if i == 30 {
                client.query_one("SELECT 1/0", &[]).await.map(|_| -1)
            } else if i % 2 == 0 {
                client
                    .query_one(stmt, &[&i])
                    .await
                    .map(|r| r.get::<_, i32>(0))
            } else {
                client
                    .query_one("SELECT $1::int * 10", &[&i])
                    .await
                    .map(|r| r.get::<_, i32>(0))
            }
        }
    });
    let results = futures_util::future::join_all(futures).await;
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(v) => assert_eq!(v, i as i32 * 10),
            Err(e) => {
                assert_eq!(i, 30);
                assert_eq!(sqlstate(&e).as_deref(), Some("22012"));
            }
        }
    }
}

#[tokio::test]
async fn session_mode_resets_connections_between_clients() {
    let proxy = Proxy::start("[proxy]\npool_mode = \"session\"\npool_size = 1\n").await;
    let a = proxy.client().await;
    a.batch_execute(
        "SET search_path TO pg_catalog; CREATE TEMP TABLE session_tmp (v int); PREPARE sp AS SELECT 1",
    )
    .await
    .unwrap();
    let pid: i32 = a
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    drop(a);
    // Not a wait for a condition B's assertions need (with one server connection B waits
    // for it anyway): A's disconnect is handled first, as in the common case.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = proxy.client().await;
    let pid_b: i32 = b
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pid, pid_b, "session mode reuses the server connection");
    let path: String = b
        .query_one("SELECT current_setting('search_path')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(path, "\"$user\", public");
    let temps: i64 = b
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname = 'session_tmp'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(temps, 0);
    let prepared: i64 = b
        .query_one(
            "SELECT count(*) FROM pg_prepared_statements WHERE name = 'sp'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(prepared, 0);
}
