//! A named session is the whole scope (DESIGN.md §3): one client connection serving many
//! end users in turn (an application pool) carries no floor from one user's requests to
//! another's, its unnamed requests keep their own floor, and a key belongs to its database
//! user unless `[session] scope = "global"`.

use std::time::Duration;

use crate::routing::{node_of, wait_in_pool};
use crate::support::{counter, prepared_cluster, Proxy};

/// The one value a simple query returns.
async fn show(client: &tokio_postgres::Client, sql: &str) -> String {
    let rows = client.simple_query(sql).await.unwrap();
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default()
}

/// One pooled connection writes for user `a` while both replicas apply WAL 2 s late: `a`
/// reads its writes (on the primary), while user `b`'s reads and the connection's unnamed
/// reads, which never wrote, stay on the replicas. Before named sessions were their own
/// scope, `a`'s writes raised the connection's floor and sent every read to the primary.
#[tokio::test]
async fn pooled_keys_do_not_mix() {
    let (cluster, _) = prepared_cluster(
        false,
        "CREATE TABLE named_t (id int primary key); GRANT ALL ON named_t TO PUBLIC",
        None,
    )
    .await;
    crate::support::delay_replicas(&cluster, Duration::from_secs(2)).await;
    let proxy = Proxy::start_with(&cluster, "").await;
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    let client = proxy.client().await;
    let (mut b_on_replicas, mut unnamed_on_replicas) = (0, 0);
    for id in 0..20 {
        client
            .execute(
                "/* causeway: session=a */ INSERT INTO named_t VALUES ($1)",
                &[&id],
            )
            .await
            .unwrap();
        let seen: i64 = client
            .query_one(
                "/* causeway: session=a */ SELECT count(*) FROM named_t WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(seen, 1, "a's read missed its write {id}");
        let port = |sql: &'static str| {
            let client = &client;
            async move { client.query_one(sql, &[]).await.unwrap().get::<_, i32>(0) }
        };
        let b = port("/* causeway: session=b */ SELECT inet_server_port()").await;
        b_on_replicas += usize::from(node_of(&cluster, b) != "primary");
        let unnamed = port("SELECT inet_server_port()").await;
        unnamed_on_replicas += usize::from(node_of(&cluster, unnamed) != "primary");
    }
    assert!(
        b_on_replicas >= 18,
        "b read {b_on_replicas}/20 times from replicas"
    );
    assert!(
        unnamed_on_replicas >= 18,
        "unnamed reads {unnamed_on_replicas}/20 from replicas"
    );
}

/// The same key used by two database users names two sessions by default, one with
/// `scope = "global"`; an unusable key in the startup options is ignored and counted.
#[tokio::test]
async fn a_key_of_another_user_is_another_session() {
    let (cluster, _) = prepared_cluster(
        false,
        "CREATE TABLE scoped_t (id int); GRANT ALL ON scoped_t TO PUBLIC",
        None,
    )
    .await;
    for (config, shared) in [("", false), ("[session]\nscope = \"global\"\n", true)] {
        let proxy = Proxy::start_with(&cluster, config).await;
        let writer = proxy.client_as("app").await.unwrap();
        writer
            .batch_execute("SET causeway.session = 'k'")
            .await
            .unwrap();
        writer
            .batch_execute("INSERT INTO scoped_t VALUES (1)")
            .await
            .unwrap();
        assert_ne!(show(&writer, "SHOW causeway.session_lsn").await, "0/0");
        let other = proxy.client_as("app_md5").await.unwrap();
        other
            .batch_execute("SET causeway.session = 'k'")
            .await
            .unwrap();
        let lsn = show(&other, "SHOW causeway.session_lsn").await;
        assert_eq!(lsn != "0/0", shared, "another user's k ({config:?}): {lsn}");
    }
    let proxy = Proxy::start_with(&cluster, "").await;
    let before = counter(&proxy.metrics.encode(), "causeway_hint_errors_total", &[]);
    let long = "k".repeat(300);
    let conn = format!(
        "{} options='-c causeway.session={long}'",
        proxy.conn_string("app")
    );
    let (client, task) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(task);
    assert_eq!(show(&client, "SHOW causeway.session").await, "");
    let after = counter(&proxy.metrics.encode(), "causeway_hint_errors_total", &[]);
    assert_eq!(after, before + 1.0, "the unusable key was counted");
}
