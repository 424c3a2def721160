//! Client authentication (scram-sha-256, md5, trust) and server logins (scram, md5, trust)
//! through Causeway.

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
