//! Self-tests of the cluster harness against real PostgreSQL and Redis servers.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::{Cluster, ClusterOptions, PgNode};

use crate::support::eventually;

const CATCH_UP: Duration = Duration::from_secs(15);

/// Row count of `table` on `node`.
async fn count(node: &PgNode, table: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {table}");
    node.query_one_string(&sql)
        .await
        .unwrap()
        .unwrap()
        .parse()
        .unwrap()
}

/// Runs `sql` on `node` (simple protocol).
async fn exec(node: &PgNode, sql: &str) {
    node.client()
        .await
        .unwrap()
        .batch_execute(sql)
        .await
        .unwrap();
}

/// Polls until `table` on `node` has `want` rows; returns how long that took.
async fn wait_count(node: &PgNode, table: &str, want: i64, timeout: Duration) -> Duration {
    let start = Instant::now();
    let what = format!("{}: {table} has {want} rows", node.name);
    eventually(timeout, &what, || async {
        let rows = count(node, table).await;
        (rows == want)
            .then_some(())
            .ok_or_else(|| format!("{rows} rows"))
    })
    .await;
    start.elapsed()
}

#[tokio::test]
async fn shared_cluster_nodes_answer_and_roles_work() {
    let c = Cluster::shared();
    assert_eq!(c.replicas.len(), 2);
    assert!(c.dir().is_dir());
    let rec = "SELECT pg_is_in_recovery()";
    assert_eq!(
        c.primary.query_one_string(rec).await.unwrap().as_deref(),
        Some("f")
    );
    for name in ["replica1", "replica2"] {
        let node = c.node(name);
        assert_eq!(
            node.query_one_string(rec).await.unwrap().as_deref(),
            Some("t")
        );
    }
    for user in ["app", "app_md5", "app_trust"] {
        for node in std::iter::once(&c.primary).chain(&c.replicas) {
            let client = node.connect(user, "app").await.unwrap();
            let row = client
                .query_one("SELECT current_user::text", &[])
                .await
                .unwrap();
            assert_eq!(row.get::<_, String>(0), user);
        }
    }
    let app = c.primary.connect("app", "app").await.unwrap();
    app.batch_execute("SET ROLE app_reader").await.unwrap();
    let sql = "SELECT string_agg(application_name, ',' ORDER BY application_name) \
               FROM pg_stat_replication";
    let names = c.primary.query_one_string(sql).await.unwrap();
    assert_eq!(names.as_deref(), Some("replica1,replica2"));
    let pgss = c
        .primary
        .query_one_string("SELECT count(*) FROM pg_stat_statements");
    assert!(pgss.await.unwrap().is_some());
}

#[tokio::test]
async fn shared_cluster_row_reaches_both_replicas() {
    let c = Cluster::shared();
    exec(
        &c.primary,
        "CREATE TABLE harness_repl (id int); INSERT INTO harness_repl VALUES (1)",
    )
    .await;
    c.wait_replicas_caught_up(CATCH_UP).await.unwrap();
    for r in &c.replicas {
        assert_eq!(count(r, "harness_repl").await, 1, "{}", r.name);
    }
}

#[tokio::test]
async fn shared_cluster_lsns_are_monotonic() {
    let c = Cluster::shared();
    let r1 = c.node("replica1");
    let before_r = r1.lsns().await.unwrap();
    let before_p = c.primary.lsns().await.unwrap();
    assert!(!before_p.in_recovery && before_r.in_recovery);
    assert_eq!((before_p.timeline, before_r.timeline), (1, 1));
    assert!(before_p.replay.is_none() && before_r.insert.is_none());
    assert!(before_r.replay.unwrap() <= before_p.insert.unwrap());
    exec(
        &c.primary,
        "CREATE TABLE harness_lsn (id int); INSERT INTO harness_lsn VALUES (1)",
    )
    .await;
    c.wait_replicas_caught_up(CATCH_UP).await.unwrap();
    let after_r = r1.lsns().await.unwrap();
    let after_p = c.primary.lsns().await.unwrap();
    assert!(after_p.insert.unwrap() > before_p.insert.unwrap());
    assert!(after_r.replay.unwrap() > before_r.replay.unwrap());
    assert!(after_r.receive.unwrap() >= before_r.receive.unwrap());
    assert!(after_r.replay.unwrap() <= after_p.insert.unwrap());
}

#[tokio::test]
async fn shared_cluster_redis_answers_ping() {
    let redis = Cluster::shared().redis.as_ref().unwrap();
    assert!(redis.url().ends_with(&redis.port.to_string()));
    let mut s = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    s.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"+PONG\r\n");
}

#[tokio::test]
async fn shared_cluster_causeway_config_names_every_node() {
    let c = Cluster::shared();
    let toml = c.causeway_config_toml("127.0.0.1:1", "127.0.0.1:2", "[auth]\nmethod = \"md5\"\n");
    assert!(toml.contains("listen = \"127.0.0.1:1\"\nadmin_listen = \"127.0.0.1:2\""));
    assert!(toml.contains(&format!(
        "[primary]\nhost = \"127.0.0.1\"\nport = {}",
        c.primary.port
    )));
    for r in &c.replicas {
        assert!(toml.contains(&format!(
            "name = \"{}\"\nhost = \"127.0.0.1\"\nport = {}",
            r.name, r.port
        )));
    }
    assert_eq!(toml.matches("[[users]]").count(), 3);
    assert!(toml.ends_with("[auth]\nmethod = \"md5\"\n"));
}

#[tokio::test]
async fn pause_replay_and_apply_delay_hold_back_one_replica() {
    let c = Cluster::start(ClusterOptions {
        replicas: 2,
        redis: false,
    })
    .unwrap();
    let (r1, r2) = (c.node("replica1"), c.node("replica2"));
    exec(&c.primary, "CREATE TABLE t (id int)").await;
    c.wait_replicas_caught_up(CATCH_UP).await.unwrap();

    r1.pause_replay().await.unwrap();
    assert!(r1.is_replay_paused().await.unwrap());
    exec(&c.primary, "INSERT INTO t VALUES (1)").await;
    c.wait_replicas_caught_up(CATCH_UP).await.unwrap(); // skips the paused replica
    assert_eq!(count(r2, "t").await, 1);
    // Time passing to show that the paused replica does not apply the insert.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(r1, "t").await, 0);
    let (l1, lp) = (r1.lsns().await.unwrap(), c.primary.lsns().await.unwrap());
    assert!(l1.replay.unwrap() < lp.insert.unwrap());
    r1.resume_replay().await.unwrap();
    c.wait_replicas_caught_up(CATCH_UP).await.unwrap();
    assert_eq!(count(r1, "t").await, 1);

    r1.set_apply_delay(Duration::from_secs(2)).await.unwrap();
    let inserted = Instant::now();
    exec(&c.primary, "INSERT INTO t VALUES (2)").await;
    let fast = wait_count(r2, "t", 2, CATCH_UP).await;
    assert_eq!(count(r1, "t").await, 1, "replica1 applied before its delay");
    wait_count(r1, "t", 2, CATCH_UP).await;
    let slow = inserted.elapsed();
    assert!(fast < Duration::from_millis(1500), "replica2 took {fast:?}");
    assert!(
        slow >= Duration::from_millis(1900),
        "replica1 took only {slow:?}"
    );
    r1.set_apply_delay(Duration::ZERO).await.unwrap();
    exec(&c.primary, "INSERT INTO t VALUES (3)").await;
    assert!(wait_count(r1, "t", 3, CATCH_UP).await < Duration::from_millis(1500));
}

#[tokio::test]
async fn stop_kill_start_promote_and_drop() {
    let c = Cluster::start(ClusterOptions {
        replicas: 1,
        redis: true,
    })
    .unwrap();
    let r1 = c.node("replica1");
    exec(&c.primary, "CREATE TABLE t (id int)").await;

    r1.stop().unwrap();
    assert!(!r1.is_running());
    assert!(r1.client().await.is_err());
    exec(&c.primary, "INSERT INTO t VALUES (1)").await;
    r1.start().unwrap();
    assert!(r1.is_running());
    c.wait_replicas_caught_up(CATCH_UP).await.unwrap();
    assert_eq!(count(r1, "t").await, 1);

    r1.kill().unwrap();
    assert!(!r1.is_running());
    exec(&c.primary, "INSERT INTO t VALUES (2)").await;
    r1.start().unwrap();
    c.wait_replicas_caught_up(CATCH_UP).await.unwrap();
    assert_eq!(count(r1, "t").await, 2);

    let redis = c.redis.as_ref().unwrap();
    redis.stop().unwrap();
    assert!(!redis.is_running() && TcpStream::connect(("127.0.0.1", redis.port)).is_err());
    redis.start().unwrap();
    assert!(integration_tests::redis::command(redis.port, "PING")
        .unwrap()
        .starts_with("+PONG"));

    c.primary.stop().unwrap();
    r1.promote().await.unwrap();
    let l = r1.lsns().await.unwrap();
    assert!(!l.in_recovery && l.insert.is_some());
    assert_eq!(l.timeline, 2);
    exec(r1, "INSERT INTO t VALUES (3)").await;
    assert_eq!(count(r1, "t").await, 3);

    let (dir, ports) = (c.dir().to_path_buf(), [r1.port, redis.port]);
    drop(c);
    assert!(!dir.exists());
    for port in ports {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still open"
        );
    }
}

#[test]
fn watchdog_cleans_up_when_owner_is_killed() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cluster"))
        .args(["up", "--replicas", "0", "--no-redis"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut dir, mut port) = (None, None);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(d) = line.strip_prefix("directory: ") {
            dir = Some(PathBuf::from(d));
        }
        if let Some(rest) = line.strip_prefix("primary   port ") {
            port = rest
                .split_whitespace()
                .next()
                .map(|p| p.parse::<u16>().unwrap());
        }
        if line.starts_with("ready") {
            break;
        }
    }
    let (dir, port) = (dir.unwrap(), port.unwrap());
    assert!(dir.is_dir() && TcpStream::connect(("127.0.0.1", port)).is_ok());
    child.kill().unwrap(); // SIGKILL: no destructors run
    child.wait().unwrap();
    let start = Instant::now();
    while dir.exists() || TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "watchdog did not clean up {dir:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
