//! Client authentication (scram-sha-256, md5, trust) and server logins (scram, md5, trust)
//! through Causeway.

use std::time::Duration;

use crate::support::{sqlstate, Proxy};

async fn login(
    proxy: &Proxy,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let conn = format!(
        "host=127.0.0.1 port={} user={user} password={password} dbname=app connect_timeout=10",
        proxy.port()
    );
    let (client, conn) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

#[tokio::test]
async fn scram_clients_and_all_server_login_methods() {
    let proxy = Proxy::start("").await;
    for user in ["app", "app_md5"] {
        let client = login(&proxy, user, "secret").await.unwrap();
        let who: String = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, user);
    }
    let err = login(&proxy, "app", "wrong").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"));
    let err = login(&proxy, "nobody", "secret").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"));
}

#[tokio::test]
async fn md5_clients() {
    let proxy = Proxy::start("[auth]\nmethod = \"md5\"\n").await;
    let client = login(&proxy, "app", "secret").await.unwrap();
    client.query_one("SELECT 1", &[]).await.unwrap();
    let err = login(&proxy, "app", "wrong").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"));
}

#[tokio::test]
async fn trust_clients_and_trust_server_logins() {
    let proxy = Proxy::start("[auth]\nmethod = \"trust\"\n").await;
    let client = login(&proxy, "app_trust", "ignored").await.unwrap();
    let who: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "app_trust");
}

#[tokio::test]
async fn server_refusals_are_relayed() {
    let proxy = Proxy::start("").await;
    let conn = format!(
        "host=127.0.0.1 port={} user=app password=secret dbname=no_such_db connect_timeout=10",
        proxy.port()
    );
    let err = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .err()
        .expect("connection refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("3D000"), "{err}");
    let conn = format!(
        "host=127.0.0.1 port={} user=app password=secret dbname=app options='-c no_such.setting_x=1 -c work_mem=nonsense'",
        proxy.port()
    );
    let err = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .err()
        .expect("connection refused");
    assert!(
        err.code().is_some(),
        "a bad startup parameter is an error with a SQLSTATE: {err}"
    );
}

/// A client whose startup parameters a server connection already accepted logs in without
/// waiting for a server connection (PgBouncer's behaviour): with the only one held in a
/// transaction, the login completes at once and its query runs once the transaction ends.
/// Parameters never accepted are still checked on a server connection at login.
#[tokio::test]
async fn known_startup_parameters_log_in_without_a_server_connection() {
    let proxy = Proxy::start("[proxy]\npool_size = 1\ncheckout_timeout = \"10s\"\n").await;
    let first = proxy.client().await;
    first.simple_query("SELECT 1").await.unwrap();
    drop(first);
    let mut holder = proxy.client().await;
    let tx = holder.transaction().await.unwrap();
    tx.simple_query("SELECT 1").await.unwrap();

    let started = std::time::Instant::now();
    let second = tokio::time::timeout(Duration::from_secs(2), proxy.client())
        .await
        .expect("a known client logs in while the only server connection is busy");
    assert!(started.elapsed() < Duration::from_secs(2));
    let query = tokio::spawn(async move { second.simple_query("SELECT 2").await.map(|_| ()) });
    // Time passing to show that the query does not run while the transaction holds the
    // only server connection: nothing to poll for.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !query.is_finished(),
        "its query waits for the server connection"
    );
    tx.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), query)
        .await
        .expect("the query runs once the transaction ends")
        .unwrap()
        .unwrap();

    // Different (invalid) parameters are still refused at login.
    let conn = format!(
        "host=127.0.0.1 port={} user=app password=secret dbname=app options='-c work_mem=nonsense'",
        proxy.port()
    );
    let err = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .err()
        .expect("a bad startup parameter is refused at login");
    assert!(err.code().is_some(), "{err}");
}
