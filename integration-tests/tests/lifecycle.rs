//! Shutdown and timeouts: SIGTERM-style drain lets open transactions finish before closing
//! with 57P01, a deadline bounds it, idle clients are closed by `client_idle_timeout`.

use std::time::Duration;

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
    assert_eq!(err.code().map(|c| c.code()), Some("57P01"), "{err}");
    assert!(idle.is_closed());
    // New connections are refused.
    assert!(proxy.client_as("app").await.is_err());
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
    let mut client = proxy.client().await;
    let tx = client.transaction().await.unwrap();
    tx.execute("SELECT 1", &[]).await.unwrap();
    proxy.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(tx.execute("SELECT 1", &[]).await.is_err());
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
