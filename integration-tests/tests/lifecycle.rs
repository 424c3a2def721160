//! Shutdown and timeouts: SIGTERM-style drain lets open transactions finish before closing
//! with 57P01, a deadline bounds it, idle clients are closed by `client_idle_timeout`.

use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;

use crate::support::Proxy;

#[tokio::test]
async fn drain_lets_transactions_finish_then_closes_with_57p01() {
    let mut proxy = Proxy::start("[proxy]\nshutdown_timeout = \"20s\"\n").await;
    let setup = proxy.client().await;
    setup
        .batch_execute("DROP TABLE IF EXISTS drain_t; CREATE TABLE drain_t (v int)")
        .await
        .unwrap();
    let (idle, idle_conn) =
        tokio_postgres::connect(&proxy.conn_string("app"), tokio_postgres::NoTls)
            .await
            .unwrap();
    let idle_task = tokio::spawn(idle_conn);
    let mut busy = proxy.client().await;
    let tx = busy.transaction().await.unwrap();
    tx.execute("INSERT INTO drain_t VALUES (1)", &[])
        .await
        .unwrap();

    proxy.begin_shutdown();
    // The idle client is told why it is disconnected.
    let err = tokio::time::timeout(Duration::from_secs(5), idle_task)
        .await
        .expect("idle client closed promptly")
        .unwrap()
        .expect_err("connection ends with an error");
    assert_eq!(err.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{err}");
    assert!(idle.is_closed());
    // New connections are refused: the listener is closed, so no SQLSTATE, just a refusal.
    let err = proxy
        .client_as("app")
        .await
        .expect_err("no new connections while draining");
    let io = std::error::Error::source(&err).and_then(|e| e.downcast_ref::<std::io::Error>());
    assert_eq!(
        io.map(std::io::Error::kind),
        Some(std::io::ErrorKind::ConnectionRefused),
        "{err:?}"
    );
    // The open transaction may finish and commit.
    tx.execute("INSERT INTO drain_t VALUES (2)", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    proxy.shutdown(Duration::from_secs(10)).await;
    let direct = integration_tests::Cluster::shared()
        .primary
        .client()
        .await
        .unwrap();
    let n: i64 = direct
        .query_one("SELECT count(*) FROM drain_t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "the transaction that was open at shutdown committed");
}

#[tokio::test]
async fn drain_deadline_closes_open_transactions() {
    let mut proxy = Proxy::start("[proxy]\nshutdown_timeout = \"1s\"\n").await;
    let (mut client, conn) =
        tokio_postgres::connect(&proxy.conn_string("app"), tokio_postgres::NoTls)
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let tx = client.transaction().await.unwrap();
    tx.execute("SELECT 1", &[]).await.unwrap();
    let began = Instant::now();
    proxy.begin_shutdown();
    // At the deadline the open transaction is closed with 57P01, which the idle client's
    // connection reports as the error it ended with.
    let err = tokio::time::timeout(Duration::from_secs(15), conn)
        .await
        .expect("the open transaction is closed at the drain deadline")
        .unwrap()
        .expect_err("connection ends with an error");
    let closed_after = began.elapsed();
    assert_eq!(err.code(), Some(&SqlState::ADMIN_SHUTDOWN), "{err}");
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed {closed_after:?} after shutdown began, before the 1 s shutdown_timeout"
    );
    let err = tx
        .execute("SELECT 1", &[])
        .await
        .expect_err("the closed transaction cannot go on");
    assert!(err.is_closed(), "{err}");
    proxy.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn idle_clients_time_out() {
    let proxy = Proxy::start("[proxy]\nclient_idle_timeout = \"300ms\"\n").await;
    let (client, conn) = tokio_postgres::connect(&proxy.conn_string("app"), tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    client.query_one("SELECT 1", &[]).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("closed by idle timeout")
        .unwrap()
        .expect_err("closed with an error");
    assert_eq!(err.code().map(|c| c.code()), Some("57P05"), "{err}");
}
