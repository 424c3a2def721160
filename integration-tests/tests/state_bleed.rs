//! Session state under transaction pooling: a client's SETs, role and prepared statements
//! follow it to every server connection it uses, and never reach the next client.

use std::time::Duration;

use crate::support::{eventually, sqlstate, Proxy};

async fn show(client: &tokio_postgres::Client, what: &str) -> String {
    let rows = client.simple_query(&format!("SHOW {what}")).await.unwrap();
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap()
}

async fn current_user(client: &tokio_postgres::Client) -> String {
    client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn session_state_follows_the_client_and_never_leaks() {
    // One server connection: every client below shares it, one transaction at a time.
    let proxy = Proxy::start("[proxy]\npool_size = 1\n").await;
    let a = proxy.client().await;
    let c = proxy.client().await;
    a.batch_execute("CREATE SCHEMA IF NOT EXISTS bleed")
        .await
        .unwrap();
    a.batch_execute(
        "SET search_path TO bleed, public; SET statement_timeout = '1234ms'; \
         SET application_name = 'client-a'; SET ROLE app_reader; \
         SET default_transaction_read_only = on",
    )
    .await
    .unwrap();
    a.batch_execute("BEGIN; SET work_mem = '7MB'; ROLLBACK")
        .await
        .unwrap();
    a.batch_execute("BEGIN; SET LOCAL lock_timeout = '3s'; COMMIT")
        .await
        .unwrap();
    a.batch_execute("SET TIME ZONE 'Asia/Tokyo'").await.unwrap();
    a.batch_execute("PREPARE a_stmt AS SELECT 41 + 1")
        .await
        .unwrap();
    let named = a
        .prepare("SELECT current_setting('search_path')")
        .await
        .unwrap();

    // Another client uses the server connection in between: it sees its own defaults...
    assert_eq!(show(&c, "search_path").await, "\"$user\", public");
    assert_eq!(current_user(&c).await, "app");
    assert_eq!(show(&c, "default_transaction_read_only").await, "off");
    // ...and A still has everything it set, replayed on its next turn.
    assert_eq!(show(&a, "search_path").await, "bleed, public");
    assert_eq!(show(&a, "statement_timeout").await, "1234ms");
    assert_eq!(show(&a, "application_name").await, "client-a");
    assert_eq!(show(&a, "TimeZone").await, "Asia/Tokyo");
    assert_eq!(
        show(&a, "work_mem").await,
        "4MB",
        "rolled-back SET must not stick"
    );
    assert_eq!(
        show(&a, "lock_timeout").await,
        "0",
        "SET LOCAL must not stick"
    );
    assert_eq!(current_user(&a).await, "app_reader");
    let v: i32 = a.query_one("EXECUTE a_stmt", &[]).await.unwrap().get(0);
    assert_eq!(v, 42);
    let sp: String = a.query_one(&named, &[]).await.unwrap().get(0);
    assert_eq!(sp, "bleed, public");
    drop(a);
    // Not a wait for a condition B's assertions need (B shares the one server connection
    // either way): A's disconnect is handled first, as in the common case.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    // The next client on that server connection sees defaults.
    let b = proxy.client().await;
    assert_eq!(show(&b, "search_path").await, "\"$user\", public");
    assert_eq!(show(&b, "statement_timeout").await, "0");
    assert_ne!(show(&b, "application_name").await, "client-a");
    assert_eq!(show(&b, "default_transaction_read_only").await, "off");
    assert_ne!(show(&b, "TimeZone").await, "Asia/Tokyo");
    assert_eq!(current_user(&b).await, "app");
    let err = b.simple_query("EXECUTE a_stmt").await.unwrap_err();
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("26000"),
        "A's SQL prepared statement leaked"
    );
    b.batch_execute("PREPARE a_stmt AS SELECT 2").await.unwrap();
    let v: i32 = b.query_one("EXECUTE a_stmt", &[]).await.unwrap().get(0);
    assert_eq!(v, 2);
    b.batch_execute("DEALLOCATE a_stmt").await.unwrap();
    b.batch_execute("CREATE TEMP TABLE IF NOT EXISTS write_check (v int)")
        .await
        .unwrap();
}

#[tokio::test]
async fn deallocate_and_discard_all_are_tracked() {
    let proxy = Proxy::start("[proxy]\npool_size = 1\n").await;
    let a = proxy.client().await;
    let other = proxy.client().await;
    let stmt = a.prepare("SELECT 1").await.unwrap();
    a.batch_execute("PREPARE p1 AS SELECT 1; SET search_path TO pg_catalog")
        .await
        .unwrap();
    a.batch_execute("DEALLOCATE ALL").await.unwrap();
    other.batch_execute("SELECT 1").await.unwrap();
    let err = a.simple_query("EXECUTE p1").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("26000"));
    let err = a.query(&stmt, &[]).await.unwrap_err();
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("26000"),
        "DEALLOCATE ALL drops protocol statements too"
    );
    assert_eq!(show(&a, "search_path").await, "pg_catalog");
    a.batch_execute("DISCARD ALL").await.unwrap();
    other.batch_execute("SELECT 1").await.unwrap();
    assert_eq!(show(&a, "search_path").await, "\"$user\", public");
    // Names are free again after DEALLOCATE ALL / DISCARD ALL.
    a.batch_execute("PREPARE p1 AS SELECT 3").await.unwrap();
    let v: i32 = a.query_one("EXECUTE p1", &[]).await.unwrap().get(0);
    assert_eq!(v, 3);
}

#[tokio::test]
async fn unreplayable_statements_pin_the_client() {
    let proxy = Proxy::start("[proxy]\npool_size = 2\n").await;
    let a = proxy.client().await;
    a.batch_execute("CREATE TEMP TABLE pinned_tmp (v int); INSERT INTO pinned_tmp VALUES (1)")
        .await
        .unwrap();
    let others: Vec<_> = futures_util::future::join_all((0..4).map(|_| proxy.client())).await;
    for o in &others {
        o.batch_execute("SELECT pg_sleep(0.01)").await.unwrap();
    }
    // A keeps its server connection, so its temporary table is still there.
    let n: i64 = a
        .query_one("SELECT count(*) FROM pinned_tmp", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let locked: bool = a
        .query_one("SELECT pg_try_advisory_lock(4242)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(locked);
    let held: bool = a
        .query_one(
            "SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(held, "advisory lock is held by A's own server connection");
    let pinned: i32 = a
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    drop(a);
    // The pinned server connection is closed, not reused: its backend ends, and with it
    // the lock and the temp table.
    let direct = integration_tests::Cluster::shared()
        .primary
        .client()
        .await
        .unwrap();
    eventually(
        Duration::from_secs(15),
        "A's pinned backend ends",
        || async {
            let state: Option<Option<String>> = direct
                .query_opt(
                    "SELECT state FROM pg_stat_activity WHERE pid = $1",
                    &[&pinned],
                )
                .await
                .unwrap()
                .map(|r| r.get(0));
            state.map_or(Ok(()), |state| {
                Err(format!("backend {pinned} is still there ({state:?})"))
            })
        },
    )
    .await;
    let b = proxy.client().await;
    let locked: bool = b
        .query_one("SELECT pg_try_advisory_lock(4242)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(locked, "advisory lock leaked to the next client");
    b.batch_execute("SELECT pg_advisory_unlock(4242)")
        .await
        .unwrap();
    let err = b
        .simple_query("SELECT * FROM pinned_tmp")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42P01"));
}
