//! Read routing against the real cluster: writes only ever reach the primary, reads reach
//! fresh replicas, read-your-writes and monotonic reads hold with lagging and paused
//! replicas, hints and rules change the target, evicted replicas serve nothing.

use std::time::Duration;

use integration_tests::{Cluster, ClusterOptions};
use tokio_postgres::Client;

use crate::support::{counter, eventually, prepared_cluster, sqlstate, wait_active, Proxy};

/// Which node served a statement: `inet_server_port()` of the connection it ran on.
async fn served_by(client: &Client, sql: &str) -> i32 {
    let row = client.query_one(sql, &[]).await.unwrap();
    row.get::<_, i32>(0)
}

pub(crate) fn node_of(cluster: &Cluster, port: i32) -> String {
    if port == i32::from(cluster.primary.port) {
        return "primary".into();
    }
    cluster
        .replicas
        .iter()
        .find(|r| i32::from(r.port) == port)
        .map_or_else(|| format!("port {port}"), |r| r.name.clone())
}

/// Waits (up to 30 s) until the monitor has every one of `replicas` in the pool.
pub(crate) async fn wait_in_pool(proxy: &Proxy, replicas: &[&str]) {
    eventually(Duration::from_secs(30), "replicas in the pool", || async {
        let text = proxy.metrics.encode();
        let out: Vec<&str> = replicas
            .iter()
            .copied()
            .filter(|r| counter(&text, "causeway_replica_in_pool", &[("replica", r)]) != 1.0)
            .collect();
        out.is_empty()
            .then_some(())
            .ok_or_else(|| format!("not in the pool: {out:?}"))
    })
    .await;
}

#[tokio::test]
async fn reads_reach_replicas_and_writes_only_the_primary() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start_routed("").await;
    let client = proxy.client().await;
    client
        .batch_execute("DROP TABLE IF EXISTS route_t; CREATE TABLE route_t (id int primary key, v text); CREATE SEQUENCE IF NOT EXISTS route_seq")
        .await
        .unwrap();
    cluster
        .wait_replicas_caught_up(Duration::from_secs(10))
        .await
        .unwrap();
    // Writes and anything not provably read-only run on the primary (on a replica they
    // would fail with 25006, so success proves it too).
    let primary = i32::from(cluster.primary.port);
    for sql in [
        "INSERT INTO route_t VALUES (1, 'a') RETURNING inet_server_port()",
        "WITH u AS (UPDATE route_t SET v = 'b' WHERE id = 1 RETURNING 1) SELECT inet_server_port() FROM u",
        "SELECT inet_server_port() FROM route_t WHERE id = 1 FOR UPDATE",
        "SELECT inet_server_port() FROM route_t FOR SHARE SKIP LOCKED",
        "SELECT inet_server_port() FROM (SELECT nextval('route_seq')) s",
        "SELECT inet_server_port() FROM (SELECT pg_advisory_xact_lock(7)) s",
        "/* causeway: route=replica */ SELECT inet_server_port() FROM (SELECT setval('route_seq', 5)) s",
        "SELECT inet_server_port() FROM (SELECT 1) s; DELETE FROM route_t WHERE id = 99",
    ] {
        let rows = client.simple_query(sql).await.unwrap();
        let port = rows
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|p| p.parse::<i32>().unwrap()),
                _ => None,
            })
            .unwrap();
        assert_eq!(port, primary, "{sql} ran on {}", node_of(cluster, port));
    }
    // A fresh session's reads go to replicas (once the monitor has them in the pool; other
    // tests load the shared cluster, so allow for a brief eviction).
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    let reader = proxy.client().await;
    eventually(
        Duration::from_secs(20),
        "a read reaches a replica",
        || async {
            let node = node_of(
                cluster,
                served_by(&reader, "SELECT inet_server_port()").await,
            );
            if node.starts_with("replica") {
                Ok(())
            } else {
                Err(format!("the last read ran on {node}"))
            }
        },
    )
    .await;
    let text = proxy.metrics.encode();
    assert!(
        counter(
            &text,
            "causeway_queries_total",
            &[("target", "primary"), ("reason", "write")]
        ) >= 7.0
    );
}

/// 1,000 write-then-read iterations with replica1 paused and replica2 live: every read
/// sees the write just made.
#[tokio::test]
async fn read_your_writes_with_a_paused_replica() {
    let cluster = Cluster::start(ClusterOptions {
        replicas: 2,
        redis: false,
    })
    .unwrap();
    let proxy = Proxy::start_with(&cluster, "").await;
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    let client = proxy.client().await;
    client
        .batch_execute("CREATE TABLE ryw (id int primary key)")
        .await
        .unwrap();
    cluster
        .wait_replicas_caught_up(Duration::from_secs(10))
        .await
        .unwrap();
    cluster.node("replica1").pause_replay().await.unwrap();
    let mut on_replica = 0;
    let insert = client.prepare("INSERT INTO ryw VALUES ($1)").await.unwrap();
    let check = client
        .prepare("SELECT inet_server_port(), count(*)::int FROM ryw WHERE id = $1")
        .await
        .unwrap();
    for i in 0..1000i32 {
        if i % 2 == 0 {
            client
                .simple_query(&format!("INSERT INTO ryw VALUES ({i})"))
                .await
                .unwrap();
            let rows = client
                .simple_query(&format!(
                    "SELECT inet_server_port(), count(*) FROM ryw WHERE id = {i}"
                ))
                .await
                .unwrap();
            let row = rows
                .iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some((r.get(0).unwrap().to_owned(), r.get(1).unwrap().to_owned()))
                    }
                    _ => None,
                })
                .unwrap();
            assert_eq!(
                row.1, "1",
                "simple protocol read {i} missed its write (on {})",
                row.0
            );
            if row.0 != cluster.primary.port.to_string() {
                on_replica += 1;
            }
        } else {
            client.execute(&insert, &[&i]).await.unwrap();
            let row = client.query_one(&check, &[&i]).await.unwrap();
            let port: i32 = row.get(0);
            assert_eq!(
                row.get::<_, i32>(1),
                1,
                "extended read {i} missed its write (on {})",
                node_of(&cluster, port)
            );
            if port != i32::from(cluster.primary.port) {
                on_replica += 1;
                assert_ne!(
                    node_of(&cluster, port),
                    "replica1",
                    "paused replica served a read"
                );
            }
        }
    }
    println!("read-your-writes: {on_replica}/1000 reads served by a replica");
    // Both replicas paused: reads fall back to the primary, and that is counted.
    cluster.node("replica2").pause_replay().await.unwrap();
    let before = counter(
        &proxy.metrics.encode(),
        "causeway_consistency_fallbacks_total",
        &[],
    );
    for i in 1000..1020i32 {
        client.execute(&insert, &[&i]).await.unwrap();
        let row = client.query_one(&check, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(1), 1);
        assert_eq!(row.get::<_, i32>(0), i32::from(cluster.primary.port));
    }
    let after = counter(
        &proxy.metrics.encode(),
        "causeway_consistency_fallbacks_total",
        &[],
    );
    assert!(
        after >= before + 20.0,
        "fallbacks counted: {before} -> {after}"
    );
}

/// One replica applies WAL seconds late, the other at once: a session reading an
/// ever-growing counter never sees it go backwards, while replica reads still happen.
#[tokio::test]
async fn monotonic_reads_with_a_lagging_replica() {
    let (cluster, setup) = prepared_cluster(
        false,
        "CREATE TABLE mr (id int primary key, v bigint); INSERT INTO mr VALUES (1, 0); GRANT ALL ON mr TO app",
        Some(("replica1", Duration::from_millis(1500))),
    )
    .await;
    let proxy = Proxy::start_with(&cluster, "").await;
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    let writer = tokio::spawn(async move {
        for _ in 0..300 {
            setup
                .batch_execute("UPDATE mr SET v = v + 1 WHERE id = 1")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let reader = proxy.client().await;
    let read = reader
        .prepare("SELECT inet_server_port(), v FROM mr WHERE id = 1")
        .await
        .unwrap();
    let mut last = -1i64;
    let mut replica_reads = 0;
    let mut reads = 0;
    while !writer.is_finished() || reads < 2000 {
        let row = reader.query_one(&read, &[]).await.unwrap();
        let (port, v): (i32, i64) = (row.get(0), row.get(1));
        assert!(
            v >= last,
            "read {reads} went back in time: {v} after {last} (on {})",
            node_of(&cluster, port)
        );
        last = v;
        reads += 1;
        if port != i32::from(cluster.primary.port) {
            replica_reads += 1;
        }
        if reads > 20_000 {
            break;
        }
    }
    writer.await.unwrap();
    println!("monotonic reads: {replica_reads}/{reads} reads served by replicas");
    assert!(replica_reads > 0, "replica reads happened");
}

#[tokio::test]
async fn hints_and_rules_change_the_target() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start_routed(
        "[[rules]]\ntag = \"checkout\"\nconsistency = \"strong\"\n\n\
         [[rules]]\ntables = [\"hint_accounts\"]\nconsistency = \"strong\"\n\n\
         [[rules]]\napplication_name = \"reporting\"\nconsistency = \"eventual\"\n",
    )
    .await;
    let client = proxy.client().await;
    client
        .batch_execute("DROP TABLE IF EXISTS hint_accounts; CREATE TABLE hint_accounts (id int); DROP TABLE IF EXISTS hint_other; CREATE TABLE hint_other (id int)")
        .await
        .unwrap();
    cluster
        .wait_replicas_caught_up(Duration::from_secs(10))
        .await
        .unwrap();
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    let primary = i32::from(cluster.primary.port);
    let fresh = proxy.client().await;
    for sql in [
        "/* causeway: route=primary */ SELECT inet_server_port()",
        "SELECT inet_server_port() /*causeway_route='primary',controller='cart'*/",
        "/*NO LOAD BALANCE*/ SELECT inet_server_port()",
        "/* causeway: consistency=strong */ SELECT inet_server_port()",
        "/* causeway: tag=checkout */ SELECT inet_server_port()",
        "SELECT inet_server_port() FROM hint_accounts RIGHT JOIN (SELECT 1) s ON true",
        // An operator's strong rule is a floor no hint lowers.
        "/* causeway: consistency=eventual */ SELECT inet_server_port() FROM hint_accounts \
         RIGHT JOIN (SELECT 1) s ON true",
        "/* causeway: tag=checkout, route=replica */ SELECT inet_server_port()",
    ] {
        for _ in 0..5 {
            assert_eq!(served_by(&fresh, sql).await, primary, "{sql}");
        }
    }
    // A hint inside a string literal is not a hint. A new connection: the primary reads
    // above made the primary's position `fresh`'s floor, which a loaded replica may not
    // replay within max_wait.
    let literal = proxy.client().await;
    let mut replica_seen = false;
    for _ in 0..20 {
        let port = served_by(
            &literal,
            "SELECT inet_server_port() FROM (SELECT '/* causeway: route=primary */') s",
        )
        .await;
        replica_seen |= port != primary;
    }
    assert!(replica_seen, "a hint in a string literal must not route");
    // SET / SHOW causeway.* are answered by Causeway.
    fresh
        .batch_execute("SET causeway.consistency = 'strong'")
        .await
        .unwrap();
    for _ in 0..5 {
        assert_eq!(
            served_by(&fresh, "SELECT inet_server_port()").await,
            primary
        );
    }
    let shown = fresh
        .simple_query("SHOW causeway.consistency")
        .await
        .unwrap();
    assert!(
        matches!(&shown[..], [tokio_postgres::SimpleQueryMessage::RowDescription(_), tokio_postgres::SimpleQueryMessage::Row(r), ..] if r.get(0) == Some("strong"))
    );
    fresh
        .batch_execute("RESET causeway.consistency")
        .await
        .unwrap();
    let err = fresh
        .batch_execute("SET causeway.consistency = 'sometimes'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("22023"));
    // The session LSN token is served as X/Y.
    client
        .batch_execute("INSERT INTO hint_other VALUES (1)")
        .await
        .unwrap();
    let token = client
        .simple_query("SHOW causeway.session_lsn")
        .await
        .unwrap();
    let token = token
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap();
    assert!(token.contains('/') && token != "0/0", "{token}");
    // A malformed hint changes nothing and is counted.
    let before = counter(&proxy.metrics.encode(), "causeway_hint_errors_total", &[]);
    fresh
        .simple_query("/* causeway: route=sideways, colour=blue */ SELECT 1")
        .await
        .unwrap();
    let after = counter(&proxy.metrics.encode(), "causeway_hint_errors_total", &[]);
    assert!(after >= before + 2.0, "{before} -> {after}");
    // application_name rule: eventual.
    let conn = format!("{} application_name=reporting", proxy.conn_string("app"));
    let (reporting, c) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(c);
    reporting
        .batch_execute("INSERT INTO hint_other VALUES (2)")
        .await
        .unwrap();
    let port = served_by(&reporting, "SELECT inet_server_port()").await;
    assert_ne!(
        port, primary,
        "eventual reads may go to a replica right after a write"
    );
}

/// A replica out of the pool serves nothing, not even `consistency=eventual` reads.
#[tokio::test]
async fn evicted_replica_serves_nothing() {
    let cluster = Cluster::start(ClusterOptions {
        replicas: 2,
        redis: false,
    })
    .unwrap();
    let proxy = Proxy::start_with(&cluster, "[lag]\nmax_bytes = 1048576\n").await;
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    let client = proxy.client().await;
    cluster.node("replica1").pause_replay().await.unwrap();
    client
        .batch_execute("CREATE TABLE evict_t AS SELECT g AS id, repeat('x', 1000) AS pad FROM generate_series(1, 3000) g")
        .await
        .unwrap();
    // The monitor evicts the paused replica once it is 1 MB behind (the table is ~3 MB).
    eventually(
        Duration::from_secs(15),
        "paused replica1 evicted",
        || async {
            let in_pool = counter(
                &proxy.metrics.encode(),
                "causeway_replica_in_pool",
                &[("replica", "replica1")],
            );
            (in_pool == 0.0)
                .then_some(())
                .ok_or_else(|| format!("causeway_replica_in_pool{{replica1}} = {in_pool}"))
        },
    )
    .await;
    let replica1 = i32::from(cluster.node("replica1").port);
    for _ in 0..100 {
        let port = served_by(
            &client,
            "/* causeway: consistency=eventual */ SELECT inet_server_port()",
        )
        .await;
        assert_ne!(port, replica1, "an evicted replica served a read");
    }
    cluster.node("replica1").resume_replay().await.unwrap();
}

/// A replica read cancelled by a recovery conflict before any row reached the client runs
/// again elsewhere; the client sees its result, not the 40001.
#[tokio::test]
async fn recovery_conflicts_before_any_row_are_retried_elsewhere() {
    let cluster = Cluster::start(ClusterOptions {
        replicas: 2,
        redis: false,
    })
    .unwrap();
    let primary = cluster.primary.client().await.unwrap();
    primary
        .batch_execute(
            "CREATE TABLE rc (id int, pad text); \
             INSERT INTO rc SELECT g, repeat('x', 100) FROM generate_series(1, 10000) g; \
             GRANT ALL ON rc TO app",
        )
        .await
        .unwrap();
    cluster
        .wait_replicas_caught_up(Duration::from_secs(10))
        .await
        .unwrap();
    let replica1 = cluster.node("replica1").client().await.unwrap();
    for sql in [
        "ALTER SYSTEM SET hot_standby_feedback = off",
        "ALTER SYSTEM SET max_standby_streaming_delay = '100ms'",
        "SELECT pg_reload_conf()",
    ] {
        replica1.batch_execute(sql).await.unwrap();
    }
    // replica2 is stopped: its hot_standby_feedback would keep VACUUM from removing rows.
    cluster.node("replica2").stop().unwrap();
    let proxy = Proxy::start_with(&cluster, "").await;
    wait_in_pool(&proxy, &["replica1"]).await;
    let client = proxy.client().await;
    let read = tokio::spawn(async move {
        let row = client
            .query_one(
                "SELECT inet_server_port(), count(*) FROM rc, (SELECT pg_sleep(2)) s",
                &[],
            )
            .await;
        row.map(|r| (r.get::<_, i32>(0), r.get::<_, i64>(1)))
    });
    // The read must hold its snapshot on replica1 before the rows it needs are vacuumed.
    wait_active(&replica1, "%pg_sleep(2)%", "the read runs on replica1").await;
    primary.batch_execute("DELETE FROM rc").await.unwrap();
    primary.batch_execute("VACUUM rc").await.unwrap();
    let (port, _count) = read
        .await
        .unwrap()
        .expect("the client never sees the recovery conflict");
    assert_ne!(
        port,
        i32::from(cluster.node("replica1").port),
        "retried elsewhere"
    );
    let text = proxy.metrics.encode();
    assert_eq!(
        counter(
            &text,
            "causeway_consistency_fallbacks_total",
            &[("reason", "recovery_conflict")]
        ),
        1.0,
        "{text}"
    );
}

/// Statements that read a node's own state (sessions, locks, backend pid) answer for the
/// node that runs them: they go to the primary, where the client's session runs, unless a
/// hint routes them.
#[tokio::test]
async fn node_local_views_are_read_on_the_primary() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start_routed("").await;
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    let primary = i32::from(cluster.primary.port);
    let client = proxy.client().await;
    for sql in [
        "SELECT inet_server_port() FROM pg_stat_activity LIMIT 1",
        "SELECT inet_server_port() FROM pg_catalog.pg_locks LIMIT 1",
        "SELECT inet_server_port() WHERE pg_backend_pid() > 0",
        "SELECT inet_server_port() WHERE NOT pg_is_in_recovery()",
    ] {
        for _ in 0..3 {
            assert_eq!(served_by(&client, sql).await, primary, "{sql}");
        }
    }
    let hinted = proxy.client().await;
    let sql = "/* causeway: route=replica, consistency=eventual */ \
               SELECT inet_server_port() FROM pg_stat_activity LIMIT 1";
    let mut on_replica = false;
    for _ in 0..5 {
        on_replica |= served_by(&hinted, sql).await != primary;
    }
    assert!(on_replica, "a hint still routes a node-local read");
    let text = proxy.metrics.encode();
    assert!(counter(&text, "causeway_queries_total", &[("reason", "node_local")]) >= 12.0);
}

/// `weight` is each replica's share of reads, also with serial traffic (one read at a
/// time, so no replica ever has a request outstanding when the next is routed).
#[tokio::test]
async fn weights_split_serial_reads() {
    let cluster = Cluster::shared();
    let (r1, r2) = (&cluster.replicas[0], &cluster.replicas[1]);
    let extra = format!(
        "[[replicas]]\nname = \"{}\"\nhost = \"{}\"\nport = {}\nweight = 1\n\n\
         [[replicas]]\nname = \"{}\"\nhost = \"{}\"\nport = {}\nweight = 3\n",
        r1.name,
        r1.host(),
        r1.port,
        r2.name,
        r2.host(),
        r2.port
    );
    let proxy = Proxy::start_routed(&extra).await;
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    let client = proxy.client().await;
    let mut counts = std::collections::HashMap::<String, u32>::new();
    for _ in 0..400 {
        let port = served_by(
            &client,
            "/* causeway: consistency=eventual */ SELECT inet_server_port()",
        )
        .await;
        *counts.entry(node_of(cluster, port)).or_default() += 1;
    }
    let light = counts.get("replica1").copied().unwrap_or(0);
    let heavy = counts.get("replica2").copied().unwrap_or(0);
    // 100 : 300 expected; allow for brief evictions while other tests load the cluster.
    assert!(
        light + heavy >= 360 && (60..=140).contains(&light) && (220..=340).contains(&heavy),
        "weights 1:3 gave {counts:?}"
    );
}

/// `SET`, `RESET` and `DISCARD` read and write no data: a request made only of them gets no
/// causal probe, so it does not raise the session's floor to the primary's position. Drivers
/// send such requests on connect (pgJDBC's `SET extra_float_digits`, Rails, Django's
/// `SET TIME ZONE`); with lagging replicas they would otherwise send the next reads to the
/// primary. Data requests still raise it.
#[tokio::test]
async fn settings_alone_do_not_move_the_floor() {
    let (cluster, primary) = prepared_cluster(
        false,
        "CREATE TABLE set_floor (id int); GRANT ALL ON set_floor TO PUBLIC",
        None,
    )
    .await;
    crate::support::delay_replicas(&cluster, Duration::from_secs(2)).await;
    let proxy = Proxy::start_with(&cluster, "").await;
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    let client = proxy.client().await;
    for (setting, extended) in [
        ("SET application_name = 'set_floor'", false),
        ("SET statement_timeout = '5s'", true),
        ("RESET application_name", false),
        ("SET extra_float_digits = 3", true),
    ] {
        // Another client writes, so the primary is ahead of the (delayed) replicas.
        primary
            .execute("INSERT INTO set_floor VALUES (1)", &[])
            .await
            .unwrap();
        if extended {
            client.execute(setting, &[]).await.unwrap();
        } else {
            client.simple_query(setting).await.unwrap();
        }
        let port = served_by(&client, "SELECT inet_server_port()").await;
        assert_ne!(
            node_of(&cluster, port),
            "primary",
            "the read after {setting:?} went to the primary"
        );
    }
    // A write through Causeway does raise it: the read that follows is on the primary.
    client
        .simple_query("INSERT INTO set_floor VALUES (2)")
        .await
        .unwrap();
    let port = served_by(
        &client,
        "SELECT count(*)::int * 0 + inet_server_port() FROM set_floor",
    )
    .await;
    assert_eq!(
        node_of(&cluster, port),
        "primary",
        "read-your-writes after an INSERT"
    );
}

/// `SELECT set_config('name', 'value', false)` alone is the `SET` it amounts to (Django on
/// psycopg 3 sets `TimeZone` so on every connection): tracked and replayed on whichever
/// server the client uses next, not a pin that keeps every read on the primary.
#[tokio::test]
async fn set_config_is_replayed_like_set_not_pinned() {
    let cluster = Cluster::shared();
    let proxy = Proxy::start_routed("").await;
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    let client = proxy.client().await;
    let pins = |text: &str| counter(text, "causeway_pins_total", &[("reason", "set_config")]);
    let before = pins(&proxy.metrics.encode());
    client
        .simple_query("SELECT pg_catalog.set_config('application_name', 'cw_set_config', false)")
        .await
        .unwrap();
    // Reads reach replicas, each seeing the setting replayed there.
    eventually(Duration::from_secs(20), "a read on a replica", || async {
        let rows = client
            .query_one(
                "SELECT inet_server_port(), current_setting('application_name')",
                &[],
            )
            .await
            .unwrap();
        let (port, name): (i32, String) = (rows.get(0), rows.get(1));
        assert_eq!(name, "cw_set_config", "on {}", node_of(cluster, port));
        (node_of(cluster, port) != "primary")
            .then_some(())
            .ok_or_else(|| "the read ran on the primary".to_string())
    })
    .await;
    assert_eq!(
        pins(&proxy.metrics.encode()),
        before,
        "set_config pinned the client"
    );
    // With anything more in the statement it is still a pin (its effect is not known).
    client
        .simple_query("SELECT set_config('application_name', 'x', false), 1")
        .await
        .unwrap();
    assert_eq!(pins(&proxy.metrics.encode()), before + 1.0);
}

/// Every route reason is counted by what happened: text that does not parse as
/// `unparseable`, a read-write `BEGIN` as `transaction` (its block stays on the primary).
#[tokio::test]
async fn unparseable_text_and_transactions_are_counted_as_such() {
    let proxy = Proxy::start_routed("").await;
    let client = proxy.client().await;
    let count = |reason: &str| {
        counter(
            &proxy.metrics.encode(),
            "causeway_queries_total",
            &[("target", "primary"), ("reason", reason)],
        )
    };
    let (unparseable, transaction) = (count("unparseable"), count("transaction"));
    let err = client.simple_query("SELEC 1").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42601"));
    client
        .batch_execute("BEGIN; SELECT 1; COMMIT")
        .await
        .unwrap();
    client.simple_query("BEGIN").await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    client.simple_query("COMMIT").await.unwrap();
    assert_eq!(count("unparseable"), unparseable + 1.0);
    assert_eq!(count("transaction"), transaction + 2.0);
}
