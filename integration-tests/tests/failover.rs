//! Failover (DESIGN.md §9), each test on a private cluster: a real promotion under a write
//! load with `[failover] mode = "follow"` (writes resume, no acknowledged write is lost,
//! read-your-writes and monotonic reads hold across the timeline change, the old primary
//! restarted standalone is never used), and service while the primary is down (logins and
//! eventual reads go on, writes wait `query_wait_timeout`, then fail with 08006 or succeed
//! once the primary is back; users looked up with `auth_query` log in from a replica's
//! `pg_authid`). Metrics name the node that served a write after a promotion.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::PgNode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::routing::wait_in_pool;
use crate::support::{counter, eventually, prepared_cluster, sqlstate, Proxy};

/// Concurrent writers of the load.
const WRITERS: i32 = 4;

/// What the writers saw.
#[derive(Default)]
struct Tally {
    /// (writer, id) of every insert whose success reached the client.
    acked: Mutex<Vec<(i32, i32)>>,
    /// When the latest acknowledgement arrived.
    last_ack: Mutex<Option<Instant>>,
    /// Reads that missed the session's own acknowledged write, or went backwards.
    violations: Mutex<Vec<String>>,
    reads: std::sync::atomic::AtomicUsize,
}

/// A client through `proxy` in the named session of `writer` (its floor outlives the
/// connection, so read-your-writes holds across reconnects).
async fn session_client(proxy: &Proxy, writer: i32) -> Result<Client, tokio_postgres::Error> {
    let conn = format!(
        "{} options='-c causeway.session=fo-writer-{writer}'",
        proxy.conn_string("app")
    );
    let (client, connection) = tokio_postgres::connect(&conn, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Inserts (writer, 1), (writer, 2), ... until `stop`, reading the writer's newest row back
/// after each acknowledged insert; reconnects after any error (an insert whose answer was
/// lost counts as not acknowledged).
async fn writer(proxy: Arc<Proxy>, writer: i32, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let limit = Duration::from_secs(30);
    let mut client: Option<Client> = None;
    let (mut id, mut seen) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let c = match client.take() {
            Some(c) if !c.is_closed() => c,
            _ => match session_client(&proxy, writer).await {
                Ok(c) => c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        id += 1;
        let insert = tokio::time::timeout(
            limit,
            c.execute("INSERT INTO fo_acks VALUES ($1, $2)", &[&writer, &id]),
        )
        .await;
        match insert {
            Ok(Ok(1)) => {
                tally.acked.lock().unwrap().push((writer, id));
                *tally.last_ack.lock().unwrap() = Some(Instant::now());
            }
            _ => continue,
        }
        // The read right after the acknowledged insert `id`.
        let read = tokio::time::timeout(
            limit,
            c.query_one(
                "SELECT coalesce(max(id), 0) FROM fo_acks WHERE writer = $1",
                &[&writer],
            ),
        )
        .await;
        match read {
            Ok(Ok(row)) => {
                let max: i32 = row.get(0);
                tally.reads.fetch_add(1, Ordering::Relaxed);
                if max < id || max < seen {
                    tally.violations.lock().unwrap().push(format!(
                        "writer {writer} read {max} after its write {id} and a read of {seen}"
                    ));
                }
                seen = seen.max(max);
                client = Some(c);
            }
            _ => continue,
        }
    }
}

/// Runs a blocking node operation (pg_ctl) off the runtime.
async fn blocking(node: &PgNode, op: fn(&PgNode) -> anyhow::Result<()>) {
    let node = node.clone();
    tokio::task::spawn_blocking(move || op(&node))
        .await
        .unwrap()
        .unwrap();
}

/// The port of the server a request with `hint` runs on through `client`.
async fn served_by(client: &Client, hint: &str) -> i32 {
    client
        .query_one(&format!("{hint} SELECT inet_server_port()"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_promotion_under_write_load_is_followed() {
    let (cluster, _) = prepared_cluster(
        false,
        "CREATE TABLE fo_acks (writer int, id int, PRIMARY KEY (writer, id)); \
         GRANT ALL ON fo_acks TO app",
        None,
    )
    .await;
    let proxy = Arc::new(
        Proxy::start_with(
            &cluster,
            "[failover]\nmode = \"follow\"\nquery_wait_timeout = \"20s\"\n",
        )
        .await,
    );
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    let (replica1, replica2) = (cluster.node("replica1"), cluster.node("replica2"));
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (1..=WRITERS)
        .map(|w| tokio::spawn(writer(proxy.clone(), w, tally.clone(), stop.clone())))
        .collect();
    eventually(
        Duration::from_secs(10),
        "writes before the failover",
        || async {
            let n = tally.acked.lock().unwrap().len();
            (n >= 40).then_some(()).ok_or(n)
        },
    )
    .await;

    // The failover: the primary stops (fast), replica1 is promoted, replica2 follows it.
    let acked_before = tally.acked.lock().unwrap().len();
    blocking(&cluster.primary, PgNode::stop).await;
    let stopped = Instant::now();
    replica1.promote().await.unwrap();
    replica2.follow(replica1).await.unwrap();
    let resumed = eventually(Duration::from_secs(10), "writes resume", || async {
        match *tally.last_ack.lock().unwrap() {
            Some(at) if at > stopped => Ok(at - stopped),
            other => Err(format!("last acknowledgement {other:?}")),
        }
    })
    .await;
    let acked_at_resume = tally.acked.lock().unwrap().len();
    replica2
        .wait_streaming(2, Duration::from_secs(20))
        .await
        .unwrap();
    // The other replica, streaming the new timeline, serves reads again.
    wait_in_pool(&proxy, &["replica2"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }

    // No acknowledged write is missing on the new primary.
    let acked = tally.acked.lock().unwrap().clone();
    let new_primary = replica1.client().await.unwrap();
    let rows: Vec<(i32, i32)> = new_primary
        .query("SELECT writer, id FROM fo_acks", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let present: std::collections::HashSet<_> = rows.into_iter().collect();
    let missing: Vec<_> = acked.iter().filter(|a| !present.contains(a)).collect();
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    let violations = tally.violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "RYW/MR violations: {violations:?}");
    // Writes after the promotion are labelled by the node that served them, replica1
    // (only a write routed while no primary was elected, at most one per writer, keeps
    // the last primary's name).
    let metrics = proxy.metrics.encode();
    let on_new = |name: &str, labels: &[(&str, &str)]| counter(&metrics, name, labels) as usize;
    let writes_after = acked.len() - acked_at_resume;
    let labelled = on_new(
        "causeway_queries_total",
        &[("target", "replica1"), ("reason", "write")],
    );
    assert!(
        labelled + WRITERS as usize >= writes_after && labelled > 0,
        "{labelled} writes labelled replica1, {writes_after} acknowledged after the promotion"
    );
    let timed = on_new(
        "causeway_query_duration_seconds_count",
        &[("target", "replica1")],
    );
    assert!(
        timed >= labelled,
        "{timed} timed on replica1, {labelled} writes"
    );
    println!(
        "failover: writes resumed {resumed:?} after the primary stopped; {} writes \
         acknowledged ({acked_before} before), {} reads checked",
        acked.len(),
        tally.reads.load(Ordering::Relaxed)
    );
    let client = proxy.client().await;
    let port = i32::from(replica1.port);
    assert_eq!(
        served_by(&client, "/* causeway: route=primary */").await,
        port
    );

    // The old primary comes back standalone on the old timeline (split brain): a marker
    // written there directly is never seen through Causeway, nothing is sent to it.
    blocking(&cluster.primary, PgNode::start).await;
    let old = cluster.primary.client().await.unwrap();
    old.batch_execute("INSERT INTO fo_acks VALUES (-1, -1)")
        .await
        .unwrap();
    // Longer than the monitor's reconnection backoff, so it has seen the node.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hints = [
        "/* causeway: route=primary */",
        "/* causeway: consistency=eventual */",
        "/* causeway: consistency=session */",
        "",
    ];
    for round in 0..10 {
        let hint = hints[round % hints.len()];
        let marker: i64 = client
            .query_one(
                &format!("{hint} SELECT count(*) FROM fo_acks WHERE writer = -1"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(marker, 0, "the old primary served {hint:?}");
        client
            .execute("INSERT INTO fo_acks VALUES (0, $1)", &[&(round as i32)])
            .await
            .unwrap();
    }
    assert_eq!(
        served_by(&client, "/* causeway: route=primary */").await,
        port
    );
    let on_old: i64 = old
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' \
             AND application_name <> 'causeway-monitor'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(on_old, 0, "client connections on the old primary");
    let written_there: i64 = old
        .query_one("SELECT count(*) FROM fo_acks WHERE writer = 0", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(written_there, 0, "writes reached the old primary");
    drop(old);

    // Rebuilt as a replica of the new primary, the old primary serves reads again.
    let (old_primary, new_primary) = (cluster.primary.clone(), replica1.clone());
    tokio::task::spawn_blocking(move || old_primary.rebuild_as_replica(&new_primary))
        .await
        .unwrap()
        .unwrap();
    cluster
        .primary
        .wait_streaming(2, Duration::from_secs(20))
        .await
        .unwrap();
    let old_port = i32::from(cluster.primary.port);
    eventually(
        Duration::from_secs(20),
        "the old primary, a replica again, serves a read",
        || async {
            let port = served_by(&client, "/* causeway: consistency=eventual */").await;
            (port == old_port).then_some(()).ok_or(port)
        },
    )
    .await;
    assert_eq!(
        served_by(&client, "/* causeway: route=primary */").await,
        port
    );
}

/// With the primary stopped: a new client logs in, an eventual read runs on a replica, a
/// write waits `query_wait_timeout` and fails with 08006; a write issued just before the
/// primary restarts succeeds.
async fn service_without_the_primary(mode: &str) {
    let (cluster, _) = prepared_cluster(
        false,
        "CREATE TABLE fo_down (id int); INSERT INTO fo_down SELECT generate_series(1, 10); \
         GRANT ALL ON fo_down TO app",
        None,
    )
    .await;
    let wait = Duration::from_secs(5);
    let extra = format!("[failover]\nmode = \"{mode}\"\nquery_wait_timeout = \"5s\"\n");
    let proxy = Proxy::start_with(&cluster, &extra).await;
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    // No client connected yet: the first login cannot use parameters seen before.
    blocking(&cluster.primary, PgNode::stop).await;

    let (client, count) = eventually(
        Duration::from_secs(10),
        "a login and an eventual read without the primary",
        || async {
            let client = proxy.client_as("app").await.map_err(|e| e.to_string())?;
            let row = client
                .query_one(
                    "/* causeway: consistency=eventual */ SELECT count(*) FROM fo_down",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((client, row.get::<_, i64>(0)))
        },
    )
    .await;
    assert_eq!(count, 10);
    // A session read with nothing written yet needs no primary either.
    let row = client
        .query_one("SELECT count(*) FROM fo_down", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 10);

    let started = Instant::now();
    let err = client
        .execute("INSERT INTO fo_down VALUES (11)", &[])
        .await
        .expect_err("no write without a primary");
    let waited = started.elapsed();
    assert_eq!(err.code(), Some(&SqlState::CONNECTION_FAILURE), "{err:?}");
    let message = err.as_db_error().map(|e| e.message().to_owned());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("query_wait_timeout")),
        "{message:?}"
    );
    assert!(
        waited >= wait - Duration::from_millis(200) && waited < wait * 2,
        "the write failed after {waited:?}"
    );

    // The primary restarts while a write waits: the write succeeds.
    let writer = proxy.client().await;
    let write =
        tokio::spawn(async move { writer.execute("INSERT INTO fo_down VALUES (12)", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocking(&cluster.primary, PgNode::start).await;
    let written = write.await.unwrap();
    assert_eq!(
        written.unwrap(),
        1,
        "the waiting write ran once the primary was back"
    );
    let primary = cluster.primary.client().await.unwrap();
    let ids: Vec<i32> = primary
        .query("SELECT id FROM fo_down WHERE id > 10", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, [12], "only the write reported as committed is there");
    println!("{mode}: a write without a primary failed after {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_primary_logins_and_replica_reads_go_on_and_writes_wait() {
    service_without_the_primary("off").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_primary_in_follow_mode_writes_wait_for_it() {
    service_without_the_primary("follow").await;
}

/// `[auth] auth_query` users log in while the primary is down: the lookup runs on a
/// replica the monitor has admitted (its `pg_shadow` is the primary's, replicated), and
/// their eventual reads run there. A wrong password is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_primary_auth_query_users_log_in_from_a_replica() {
    let (cluster, _) = prepared_cluster(
        false,
        "SET password_encryption = 'scram-sha-256'; \
         CREATE ROLE fo_lookup LOGIN PASSWORD 'lookup-pw-3Rt'; \
         GRANT SELECT ON pg_catalog.pg_shadow TO app_trust; \
         CREATE TABLE fo_auth (id int); INSERT INTO fo_auth VALUES (1), (2); \
         GRANT SELECT ON fo_auth TO fo_lookup",
        None,
    )
    .await;
    let proxy = Proxy::start_with(
        &cluster,
        // pg_shadow's grant above is in database app (views are per database).
        "[auth]\nauth_user = \"app_trust\"\nauth_database = \"app\"\n\
         [failover]\nquery_wait_timeout = \"2s\"\n",
    )
    .await;
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    // Nobody has logged in as fo_lookup: nothing is cached.
    blocking(&cluster.primary, PgNode::stop).await;
    let login = |password: &'static str| {
        let conn = format!(
            "host=127.0.0.1 port={} user=fo_lookup password={password} dbname=app \
             connect_timeout=10",
            proxy.port()
        );
        async move {
            let (client, connection) = tokio_postgres::connect(&conn, NoTls).await?;
            tokio::spawn(connection);
            Ok::<_, tokio_postgres::Error>(client)
        }
    };
    // Right after the stop a loaded machine may still be re-probing the replicas (each
    // lookup tries only admitted ones): the login must succeed within a few seconds.
    let client = eventually(
        Duration::from_secs(10),
        "an auth_query user logs in without the primary",
        || login("lookup-pw-3Rt"),
    )
    .await;
    let count: i64 = client
        .query_one(
            "/* causeway: consistency=eventual */ SELECT count(*) FROM fo_auth",
            &[],
        )
        .await
        .expect("an eventual read on a replica")
        .get(0);
    assert_eq!(count, 2);
    let err = login("wrong").await.expect_err("a wrong password");
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{err}");
    blocking(&cluster.primary, PgNode::start).await;
}
