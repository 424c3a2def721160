//! Routing corpus: every write-class statement runs on the primary and never on a replica,
//! and fresh reads reach replicas, asserted through each node's own `pg_stat_statements`.
//!
//! Each statement names its own marker relation (`mk_w07`, `mk_r03`, ...): PostgreSQL 15
//! leaves column aliases out of the query id, so statements that differ only in an alias
//! would share one `pg_stat_statements` entry, while distinct relations never do. Only
//! executed entries count (`calls > 0`): parse analysis alone (a Parse or Describe on a
//! replica) records an entry with no calls and runs nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, TryStreamExt};
use integration_tests::{Cluster, ClusterOptions, PgNode};
use tokio_postgres::Client;

use crate::support::{counter, eventually, sqlstate, Proxy};

/// Number of generic marker tables `mk_w01 ..` (writes) and `mk_r01 ..` (reads).
const WRITE_TABLES: usize = 80;
const READ_TABLES: usize = 20;

/// Objects beyond the generic marker tables, created as `app` (so it owns them) on the
/// primary before Causeway starts.
const SETUP_SQL: &str = "
CREATE SEQUENCE corpus_seq;
CREATE TABLE corpus_counter (id int PRIMARY KEY, n int NOT NULL);
INSERT INTO corpus_counter VALUES (1, 0);
CREATE FUNCTION bump() RETURNS int LANGUAGE sql VOLATILE
  AS $$ UPDATE corpus_counter SET n = n + 1 WHERE id = 1 RETURNING n $$;
CREATE FUNCTION cw_probe() RETURNS int LANGUAGE sql VOLATILE AS $$ SELECT inet_server_port() $$;
CREATE PROCEDURE mk_w30_proc(n int) LANGUAGE sql AS $$ INSERT INTO mk_w30 VALUES (n, 0) $$;
CREATE VIEW mk_w46_view AS SELECT id, v FROM mk_w46;
ALTER TABLE mk_w47 SET UNLOGGED;
CREATE MATERIALIZED VIEW mk_w69_mv AS SELECT id, v FROM mk_w69;
CREATE SCHEMA corpus_s;
CREATE FUNCTION corpus_s.touch() RETURNS int LANGUAGE sql VOLATILE
  AS $$ UPDATE mk_w79 SET v = v + 1 RETURNING v $$;
";

/// How a case is sent through Causeway.
#[derive(Debug, Clone, Copy)]
enum Run {
    /// One simple-protocol Query (possibly several statements).
    Simple(&'static str),
    /// Extended protocol: tokio-postgres prepares a named statement, then binds it.
    Extended(&'static str),
    /// Extended protocol with `$1` bound to the integer 1.
    WithParam(&'static str),
    /// Each statement its own simple Query, in order (explicit transactions).
    Steps(&'static [&'static str]),
    /// `COPY ... TO STDOUT` (tokio-postgres runs it with the extended protocol).
    CopyOut(&'static str),
    /// A simple Query: the text followed by a parenthesized list of about a megabyte of
    /// integers (for `IN`).
    InList(&'static str),
}

/// A statement (or sequence) and the marker relations it executes against.
#[derive(Debug, Clone, Copy)]
struct Case {
    markers: &'static [&'static str],
    run: Run,
}

const fn case(markers: &'static [&'static str], run: Run) -> Case {
    Case { markers, run }
}

/// Write-class statements run on one connection that never pins (each must be routed on
/// its own merits). Covers DESIGN.md §2 and the routing corpus of user-asks.md B.4 #20.
const WRITES: &[Case] = &[
    // Plain DML, both protocols.
    case(&["mk_w01"], Run::Simple("INSERT INTO mk_w01 VALUES (2, 0)")),
    case(&["mk_w02"], Run::Simple("UPDATE mk_w02 SET v = v + 1")),
    case(&["mk_w03"], Run::Simple("DELETE FROM mk_w03 WHERE id = 1")),
    case(
        &["mk_w04"],
        Run::Simple(
            "MERGE INTO mk_w04 t USING (VALUES (1), (2)) s(id) ON t.id = s.id \
             WHEN MATCHED THEN UPDATE SET v = t.v + 1 WHEN NOT MATCHED THEN INSERT VALUES (s.id, 0)",
        ),
    ),
    // Locking reads: all four strengths, NOWAIT / SKIP LOCKED / OF, nested.
    case(&["mk_w05"], Run::Simple("SELECT id FROM mk_w05 FOR UPDATE")),
    case(
        &["mk_w06"],
        Run::Extended("SELECT id FROM mk_w06 FOR NO KEY UPDATE NOWAIT"),
    ),
    case(
        &["mk_w07"],
        Run::Simple("SELECT id FROM mk_w07 FOR SHARE SKIP LOCKED"),
    ),
    case(&["mk_w08"], Run::Extended("SELECT id FROM mk_w08 FOR KEY SHARE")),
    case(
        &["mk_w09"],
        Run::Simple(
            "SELECT a.id FROM mk_w09 a JOIN corpus_counter c ON c.id = a.id FOR UPDATE OF a SKIP LOCKED",
        ),
    ),
    case(
        &["mk_w10"],
        Run::Extended(
            "SELECT a.id FROM mk_w10 a, corpus_counter c WHERE c.id = a.id FOR SHARE OF a NOWAIT",
        ),
    ),
    case(
        &["mk_w11"],
        Run::Simple("SELECT * FROM (SELECT id FROM mk_w11 FOR UPDATE) s"),
    ),
    case(
        &["mk_w12"],
        Run::Extended("WITH l AS (SELECT id FROM mk_w12 FOR NO KEY UPDATE) SELECT * FROM l"),
    ),
    // CTEs with DML.
    case(
        &["mk_w13"],
        Run::Simple("WITH d AS (DELETE FROM mk_w13 WHERE id = 1 RETURNING id) SELECT count(*) FROM d"),
    ),
    case(
        &["mk_w14"],
        Run::Extended("WITH i AS (INSERT INTO mk_w14 VALUES (2, 0) RETURNING id) SELECT id FROM i"),
    ),
    case(
        &["mk_w15"],
        Run::Simple(
            "WITH r AS (SELECT 1 AS one), u AS (UPDATE mk_w15 SET v = v + 1 RETURNING v) \
             SELECT * FROM r, u",
        ),
    ),
    // Sequences.
    case(
        &["mk_w16"],
        Run::Simple("SELECT nextval('corpus_seq') FROM mk_w16"),
    ),
    case(
        &["mk_w17"],
        Run::Simple("SELECT setval('corpus_seq', 100) FROM mk_w17"),
    ),
    case(
        &["mk_w18"],
        Run::Extended("SELECT pg_catalog.nextval('corpus_seq') FROM mk_w18"),
    ),
    // Transaction-level advisory locks (they would succeed on a standby: only the
    // statistics tell).
    case(
        &["mk_w19"],
        Run::Simple("SELECT pg_advisory_xact_lock(19) FROM mk_w19"),
    ),
    case(
        &["mk_w20"],
        Run::Extended("SELECT pg_try_advisory_xact_lock(20) FROM mk_w20"),
    ),
    case(
        &["mk_w21"],
        Run::Simple("SELECT pg_advisory_xact_lock_shared(21) FROM mk_w21"),
    ),
    case(
        &["mk_w22"],
        Run::Extended("SELECT pg_try_advisory_xact_lock_shared(22) FROM mk_w22"),
    ),
    // Volatile user functions (from pg_proc), called in several ways.
    case(&["mk_w23"], Run::Simple("SELECT bump() FROM mk_w23")),
    case(&["mk_w24"], Run::Extended("SELECT public.bump() FROM mk_w24")),
    case(
        &["mk_w25"],
        Run::Simple("SELECT * FROM mk_w25, LATERAL bump() b"),
    ),
    case(&["mk_w57"], Run::Simple("VALUES ((SELECT bump() FROM mk_w57))")),
    case(&["mk_w78"], Run::Extended("SELECT \"bump\"() FROM mk_w78")),
    case(&["mk_w79"], Run::Simple("SELECT corpus_s.touch() FROM mk_w79")),
    // SELECT INTO, EXPLAIN ANALYZE of DML, DO, CALL.
    case(
        &["mk_w26"],
        Run::Simple("SELECT id, v INTO mk_w26_copy FROM mk_w26"),
    ),
    case(
        &["mk_w27"],
        Run::Simple("EXPLAIN ANALYZE INSERT INTO mk_w27 VALUES (2, 0)"),
    ),
    case(
        &["mk_w28"],
        Run::Extended("EXPLAIN (ANALYZE, COSTS OFF) UPDATE mk_w28 SET v = v + 1"),
    ),
    case(
        &["mk_w29"],
        Run::Simple("DO $$ BEGIN UPDATE mk_w29 SET v = v + 1; END $$"),
    ),
    case(&["mk_w30_proc"], Run::Simple("CALL mk_w30_proc(30)")),
    // LOCK inside a transaction; a plain transaction with a read and a write; SET
    // TRANSACTION READ WRITE; savepoints; a locking cursor; serializable (standbys
    // cannot run it, so even its reads belong to the primary).
    case(
        &["mk_w31"],
        Run::Steps(&[
            "BEGIN",
            "LOCK TABLE mk_w31 IN SHARE MODE",
            "COMMIT",
        ]),
    ),
    case(
        &["mk_w41", "mk_w42"],
        Run::Steps(&[
            "BEGIN",
            "SELECT count(*) FROM mk_w41",
            "UPDATE mk_w42 SET v = v + 1",
            "COMMIT",
        ]),
    ),
    case(
        &["mk_w43"],
        Run::Steps(&[
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "INSERT INTO mk_w43 VALUES (2, 0)",
            "COMMIT",
        ]),
    ),
    case(
        &["mk_w71"],
        Run::Steps(&[
            "BEGIN",
            "SET TRANSACTION READ WRITE",
            "INSERT INTO mk_w71 VALUES (2, 0)",
            "COMMIT",
        ]),
    ),
    case(
        &["mk_w72"],
        Run::Steps(&[
            "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY",
            "SELECT * FROM mk_w72",
            "COMMIT",
        ]),
    ),
    case(
        &["mk_w75"],
        Run::Steps(&[
            "BEGIN",
            "SAVEPOINT a",
            "UPDATE mk_w75 SET v = v + 1",
            "ROLLBACK TO SAVEPOINT a",
            "UPDATE mk_w75 SET v = v + 1",
            "COMMIT",
        ]),
    ),
    case(
        &["mk_w76"],
        Run::Steps(&[
            "BEGIN",
            "DECLARE mk_cursor CURSOR FOR SELECT id FROM mk_w76 FOR UPDATE",
            "FETCH ALL FROM mk_cursor",
            "COMMIT",
        ]),
    ),
    // Multi-statement strings: the whole string goes where its writing part must.
    case(
        &["mk_w33", "mk_w34"],
        Run::Simple("SELECT id FROM mk_w33; DELETE FROM mk_w34 WHERE id = 1"),
    ),
    case(
        &["mk_w35", "mk_w36"],
        Run::Simple("INSERT INTO mk_w35 VALUES (2, 0); SELECT * FROM mk_w36"),
    ),
    case(
        &["mk_w52", "mk_w53"],
        Run::Simple(
            "SELECT ';DELETE' FROM mk_w52 WHERE $q$;$q$ <> ''; UPDATE mk_w53 SET v = v + 1",
        ),
    ),
    // NOTIFY, SQL PREPARE / EXECUTE of DML and of a locking read.
    case(&["mk_w37"], Run::Simple("NOTIFY mk_w37, 'hello'")),
    case(
        &["mk_w38"],
        Run::Simple("SELECT pg_notify('mk_channel', 'x') FROM mk_w38"),
    ),
    case(
        &["mk_w39"],
        Run::Steps(&[
            "PREPARE mk_w39_ins(int) AS INSERT INTO mk_w39 VALUES ($1, 0)",
            "EXECUTE mk_w39_ins(2)",
            "DEALLOCATE mk_w39_ins",
        ]),
    ),
    case(
        &["mk_w40"],
        Run::Steps(&[
            "PREPARE mk_w40_sel AS SELECT id FROM mk_w40 FOR UPDATE",
            "EXECUTE mk_w40_sel",
            "DEALLOCATE mk_w40_sel",
        ]),
    ),
    // A view, an unlogged table, hints that cannot move a write.
    case(
        &["mk_w46_view"],
        Run::Simple("INSERT INTO mk_w46_view VALUES (2, 0)"),
    ),
    case(&["mk_w47"], Run::Extended("INSERT INTO mk_w47 VALUES (2, 0)")),
    case(
        &["mk_w50"],
        Run::Simple("/* causeway: route=replica */ UPDATE mk_w50 SET v = v + 1"),
    ),
    case(
        &["mk_w51"],
        Run::Extended("/* causeway: consistency=eventual */ INSERT INTO mk_w51 VALUES (2, 0)"),
    ),
    // Parameters over the extended protocol.
    case(
        &["mk_w54"],
        Run::WithParam("INSERT INTO mk_w54 VALUES ($1 + 1, 0) RETURNING id"),
    ),
    case(&["mk_w55"], Run::WithParam("UPDATE mk_w55 SET v = v + $1")),
    case(&["mk_w56"], Run::WithParam("DELETE FROM mk_w56 WHERE id = $1")),
    case(
        &["mk_w74"],
        Run::WithParam("SELECT v FROM mk_w74 WHERE id = $1 FOR UPDATE"),
    ),
    // COPY TO STDOUT of a query that calls a volatile function, and of a DML statement.
    case(
        &["mk_w58"],
        Run::CopyOut("COPY (SELECT bump() FROM mk_w58) TO STDOUT"),
    ),
    case(
        &["mk_w59"],
        Run::CopyOut("COPY (DELETE FROM mk_w59 RETURNING id) TO STDOUT"),
    ),
    // A megabyte IN list (the classifier must not give up on it).
    case(&["mk_w70"], Run::InList("DELETE FROM mk_w70 WHERE id IN")),
    // Built-in side-effecting functions.
    case(
        &["mk_w60"],
        Run::Simple("SELECT set_config('application_name', 'corpus', true) FROM mk_w60"),
    ),
    case(&["mk_w61"], Run::Simple("SELECT txid_current() FROM mk_w61")),
    case(&["mk_w62"], Run::Extended("SELECT lo_create(0) FROM mk_w62")),
    // DDL and maintenance.
    case(&["mk_w63"], Run::Simple("TRUNCATE mk_w63")),
    case(
        &["mk_w64_new"],
        Run::Simple("CREATE TABLE mk_w64_new AS SELECT 1 AS id"),
    ),
    case(
        &["mk_w65"],
        Run::Simple("ALTER TABLE mk_w65 ADD COLUMN extra int"),
    ),
    case(&["mk_w66"], Run::Simple("CREATE INDEX ON mk_w66 (v)")),
    case(&["mk_w67"], Run::Simple("ANALYZE mk_w67")),
    case(&["mk_w68"], Run::Simple("VACUUM mk_w68")),
    case(
        &["mk_w69_mv"],
        Run::Simple("REFRESH MATERIALIZED VIEW mk_w69_mv"),
    ),
];

/// Read-only statements, each on a fresh connection (no floor), after the replicas have
/// caught up: every one should run on a replica.
const READS: &[Case] = &[
    case(&["mk_r01"], Run::Simple("SELECT * FROM mk_r01")),
    case(
        &["mk_r02"],
        Run::Simple("VALUES ((SELECT id FROM mk_r02), 2)"),
    ),
    case(&["mk_r03"], Run::Simple("TABLE mk_r03")),
    case(&["geqo_seed"], Run::Simple("SHOW geqo_seed")),
    case(&["mk_r05"], Run::Simple("EXPLAIN SELECT * FROM mk_r05")),
    case(
        &["mk_r06"],
        Run::Simple("WITH c AS (SELECT * FROM mk_r06) SELECT count(*) FROM c"),
    ),
    case(
        &["mk_r07"],
        Run::Simple("/* DELETE FROM mk_r07; */ SELECT 'DELETE FROM mk_r07' AS d FROM mk_r07"),
    ),
    case(
        &["mk_r08"],
        Run::Simple("SELECT '/* causeway: route=primary */' AS s FROM mk_r08"),
    ),
    case(&["mk_r09"], Run::Extended("SELECT id, v FROM mk_r09")),
    case(
        &["mk_r10"],
        Run::Simple("EXPLAIN INSERT INTO mk_r10 VALUES (5, 0)"),
    ),
    case(
        &["mk_r11"],
        Run::Simple("EXPLAIN ANALYZE SELECT * FROM mk_r11"),
    ),
    case(
        &["mk_r12"],
        Run::Steps(&["BEGIN READ ONLY", "SELECT * FROM mk_r12", "COMMIT"]),
    ),
    case(
        &["mk_r15"],
        Run::Steps(&[
            "START TRANSACTION READ ONLY",
            "DECLARE mk_read_cursor CURSOR FOR SELECT * FROM mk_r15",
            "FETCH ALL FROM mk_read_cursor",
            "COMMIT",
        ]),
    ),
    case(
        &["mk_r17"],
        Run::Simple("/* causeway: route=replica */ SELECT v FROM mk_r17"),
    ),
    case(
        &["mk_r13"],
        Run::WithParam("SELECT v FROM mk_r13 WHERE id = $1"),
    ),
    case(
        &["mk_r14"],
        Run::CopyOut("COPY (SELECT * FROM mk_r14) TO STDOUT"),
    ),
    case(&["mk_r19"], Run::CopyOut("COPY mk_r19 TO STDOUT")),
    case(
        &["mk_r16"],
        Run::InList("SELECT count(*) FROM mk_r16 WHERE id IN"),
    ),
    case(
        &["mk_r18"],
        Run::Extended("WITH RECURSIVE n(i) AS (SELECT id FROM mk_r18 UNION ALL SELECT i + 1 FROM n WHERE i < 3) SELECT * FROM n"),
    ),
];

#[tokio::test]
async fn write_class_statements_run_only_on_the_primary() {
    let started = Instant::now();
    let cluster = Cluster::start(ClusterOptions {
        replicas: 2,
        redis: false,
    })
    .unwrap();
    setup(&cluster).await;
    cluster
        .wait_replicas_caught_up(Duration::from_secs(10))
        .await
        .unwrap();
    // The function list is read from pg_proc when Causeway starts: bump() exists by then.
    let proxy = Proxy::start_with(&cluster, "").await;
    wait_reads_reach_replicas(&proxy, &cluster).await;
    wait_volatile_functions_loaded(&proxy, &cluster).await;
    for node in nodes(&cluster) {
        reset_statements(node).await;
    }

    let mut failures = Vec::new();
    let mut written: Vec<&'static str> = Vec::new();
    // Statements routed on their own merits: one connection that must never pin.
    let client = proxy.client().await;
    for case in WRITES {
        if let Err(e) = run(&client, case.run).await {
            failures.push(format!("{:?} failed through Causeway: {e}", case.run));
        }
        written.extend_from_slice(case.markers);
    }
    written.extend(transaction_with_parameters(&client, &mut failures).await);
    written.extend(copy_in(&client, &mut failures).await);
    written.extend(deep_nesting(&client, &mut failures).await);
    let pins = counter(&proxy.metrics.encode(), "causeway_pins_total", &[]);
    assert_eq!(
        pins, 0.0,
        "the corpus connection was pinned, so its statements were not routed one by one"
    );
    unparseable_goes_to_the_primary(&proxy, &client).await;
    drop(client);
    // Statements that pin their client (each on its own connection).
    written.extend(pinning_cases(&proxy, &mut failures).await);
    assert!(
        failures.is_empty(),
        "write-class statements failed (a write routed to a standby fails there):\n{}",
        failures.join("\n")
    );
    assert!(written.len() >= 40, "{} write markers", written.len());

    // Reads on fresh sessions, once the replicas have everything.
    cluster
        .wait_replicas_caught_up(Duration::from_secs(10))
        .await
        .unwrap();
    let mut read: Vec<&'static str> = Vec::new();
    let mut retried = 0;
    for case in READS {
        retried += read_on_a_replica(&proxy, &cluster, case.run).await;
        read.extend_from_slice(case.markers);
    }
    assert!(read.len() >= 10, "{} read markers", read.len());

    let stats = collect_statements(&cluster).await;
    check_writes(&stats, &written);
    check_reads(&stats, &read);
    println!(
        "routing corpus: {} write markers on the primary only, {} reads on replicas \
         ({retried} read(s) retried after a fallback to the primary) in {:?}",
        written.len(),
        read.len(),
        started.elapsed()
    );
}

/// `SET TRANSACTION` right after `BEGIN` works as on PostgreSQL (it must come before the
/// transaction's first query): Causeway's causal probe must not run inside the
/// transaction right after BEGIN (it used to, giving 25001).
#[tokio::test]
async fn set_transaction_right_after_begin() {
    let proxy = Proxy::start_routed("").await;
    let client = proxy.client().await;
    for steps in [
        &[
            "BEGIN",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SELECT 1",
            "COMMIT",
        ][..],
        &[
            "BEGIN READ ONLY",
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "SELECT 1",
            "COMMIT",
        ][..],
        &["BEGIN", "SET TRANSACTION READ ONLY, DEFERRABLE", "COMMIT"][..],
    ] {
        for sql in steps {
            if let Err(e) = client.simple_query(sql).await {
                let _ = client.simple_query("ROLLBACK").await;
                panic!("{steps:?}: {sql} failed through Causeway: {e:?}");
            }
        }
    }
}

/// The generic marker tables (one row each) and the objects of [`SETUP_SQL`], as `app`.
async fn setup(cluster: &Cluster) {
    let app = cluster.primary.connect("app", "app").await.unwrap();
    let mut sql = String::new();
    for (prefix, count) in [("mk_w", WRITE_TABLES), ("mk_r", READ_TABLES)] {
        for i in 1..=count {
            sql += &format!(
                "CREATE TABLE {prefix}{i:02} (id int PRIMARY KEY, v int NOT NULL DEFAULT 0); \
                 INSERT INTO {prefix}{i:02} VALUES (1, 0);\n"
            );
        }
    }
    sql += SETUP_SQL;
    app.batch_execute(&sql).await.unwrap();
}

fn nodes(cluster: &Cluster) -> impl Iterator<Item = &PgNode> {
    std::iter::once(&cluster.primary).chain(&cluster.replicas)
}

/// Waits until fresh sessions' reads have reached every replica: the monitor has put them
/// all in the pool, and each has actually served a read.
pub(crate) async fn wait_reads_reach_replicas(proxy: &Proxy, cluster: &Cluster) {
    let missing: std::cell::RefCell<Vec<u16>> =
        std::cell::RefCell::new(cluster.replicas.iter().map(|r| r.port).collect());
    eventually(
        Duration::from_secs(20),
        "reads reach every replica",
        || async {
            let client = proxy.client().await;
            for _ in 0..10 {
                let port: i32 = client
                    .query_one("SELECT inet_server_port()", &[])
                    .await
                    .unwrap()
                    .get(0);
                missing.borrow_mut().retain(|p| i32::from(*p) != port);
            }
            let missing = missing.borrow();
            missing
                .is_empty()
                .then_some(())
                .ok_or_else(|| format!("no read on the replicas on ports {missing:?}"))
        },
    )
    .await;
}

/// Waits until Causeway knows the volatile user functions: `cw_probe()` (volatile, returns
/// the port it ran on) is a read until the list is loaded, then it goes to the primary.
/// Every replica is in the pool and each probe is a fresh session, so a read would go to a
/// replica.
async fn wait_volatile_functions_loaded(proxy: &Proxy, cluster: &Cluster) {
    eventually(
        Duration::from_secs(20),
        "Causeway loads the volatile functions from pg_proc",
        || async {
            let client = proxy.client().await;
            let port: i32 = client
                .query_one("SELECT cw_probe()", &[])
                .await
                .unwrap()
                .get(0);
            (port == i32::from(cluster.primary.port))
                .then_some(())
                .ok_or_else(|| format!("cw_probe() ran as a read on port {port}"))
        },
    )
    .await;
}

/// Clears `pg_stat_statements` on `node` (works on a standby too: it is shared memory and
/// a local file, not WAL).
async fn reset_statements(node: &PgNode) {
    node.client()
        .await
        .unwrap()
        .batch_execute("SELECT pg_stat_statements_reset()")
        .await
        .unwrap_or_else(|e| panic!("pg_stat_statements_reset() on {}: {e}", node.name));
}

async fn run(client: &Client, run: Run) -> Result<(), tokio_postgres::Error> {
    match run {
        Run::Simple(sql) => client.simple_query(sql).await.map(drop),
        Run::Extended(sql) => client.query(sql, &[]).await.map(drop),
        Run::WithParam(sql) => client.query(sql, &[&1i32]).await.map(drop),
        Run::CopyOut(sql) => {
            let stream = client.copy_out(sql).await?;
            stream.try_collect::<Vec<Bytes>>().await.map(drop)
        }
        Run::InList(sql) => client
            .simple_query(&format!("{sql} ({})", in_list()))
            .await
            .map(drop),
        Run::Steps(steps) => {
            for sql in steps {
                if let Err(e) = client.simple_query(sql).await {
                    let _ = client.simple_query("ROLLBACK").await;
                    return Err(e);
                }
            }
            Ok(())
        }
    }
}

/// A transaction over the extended protocol with parameters: a read, then a write.
async fn transaction_with_parameters(
    client: &Client,
    failures: &mut Vec<String>,
) -> Vec<&'static str> {
    let tx = async {
        client.batch_execute("BEGIN").await?;
        client
            .query("SELECT v FROM mk_w44 WHERE id = $1", &[&1i32])
            .await?;
        client
            .execute("UPDATE mk_w45 SET v = v + $1", &[&1i32])
            .await?;
        client.batch_execute("COMMIT").await
    };
    if let Err(e) = tx.await {
        let _ = client.batch_execute("ROLLBACK").await;
        failures.push(format!("mk_w44/mk_w45 (extended, in a transaction): {e}"));
    }
    vec!["mk_w44", "mk_w45"]
}

/// COPY FROM STDIN (tokio-postgres: extended protocol).
async fn copy_in(client: &Client, failures: &mut Vec<String>) -> Vec<&'static str> {
    let copy = async {
        let sink = client.copy_in("COPY mk_w32 (id, v) FROM STDIN").await?;
        futures_util::pin_mut!(sink);
        sink.send(Bytes::from_static(b"2\t0\n3\t0\n")).await?;
        sink.finish().await.map(drop)
    };
    if let Err(e) = copy.await {
        failures.push(format!("COPY mk_w32 FROM STDIN: {e}"));
    }
    vec!["mk_w32"]
}

/// An UPDATE nested deeper than the classifier's tree decoder goes: it must still reach
/// the primary.
async fn deep_nesting(client: &Client, failures: &mut Vec<String>) -> Vec<&'static str> {
    let depth = 300;
    let update = format!(
        "UPDATE mk_w77 SET v = {}1{}",
        "(".repeat(depth),
        ")".repeat(depth)
    );
    if let Err(e) = client.simple_query(&update).await {
        failures.push(format!("UPDATE nested {depth} deep: {e}"));
    }
    vec!["mk_w77"]
}

/// About a megabyte of integers, comma-separated.
fn in_list() -> String {
    (1..=140_000)
        .map(|i| (i * 7).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Statements that pin their client: a temporary table (and a read of it, which must
/// follow it to the primary), a session advisory lock, LISTEN.
async fn pinning_cases(proxy: &Proxy, failures: &mut Vec<String>) -> Vec<&'static str> {
    let cases: [(&str, &[&str]); 3] = [
        (
            "mk_w48",
            &[
                "CREATE TEMP TABLE mk_w48 (id int)",
                "INSERT INTO mk_w48 VALUES (1)",
                "SELECT count(*) FROM mk_w48",
            ],
        ),
        (
            "mk_w49",
            &[
                "SELECT pg_advisory_lock(49) FROM mk_w49",
                "SELECT pg_advisory_unlock(49) FROM mk_w49",
            ],
        ),
        ("mk_w73", &["LISTEN mk_w73", "UNLISTEN mk_w73"]),
    ];
    let mut markers = Vec::new();
    for (marker, steps) in cases {
        let client = proxy.client().await;
        for sql in steps {
            if let Err(e) = client.simple_query(sql).await {
                failures.push(format!("{sql} (pinned connection): {e}"));
            }
        }
        markers.push(marker);
    }
    markers
}

/// Text PostgreSQL's parser rejects is routed to the primary (and fails there). Counted
/// by target only: the `unparseable` reason label is never emitted (reported).
async fn unparseable_goes_to_the_primary(proxy: &Proxy, client: &Client) {
    let routed = |target: &str| {
        counter(
            &proxy.metrics.encode(),
            "causeway_queries_total",
            &[("target", target)],
        )
    };
    let before = [routed("primary"), routed("replica1"), routed("replica2")];
    let err = client
        .simple_query("SELEC id FROM mk_w01")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42601"), "{err}");
    let after = [routed("primary"), routed("replica1"), routed("replica2")];
    assert_eq!(
        after,
        [before[0] + 1.0, before[1], before[2]],
        "unparseable text must go to the primary (queries per primary, replica1, replica2)"
    );
}

/// Runs a read on a fresh session (no floor). If any of it went to the primary (counted
/// by Causeway: a replica can leave the pool for a moment on a loaded machine), waits for
/// the replicas and tries again, up to 5 times; `pg_stat_statements` has the last word.
/// Returns the number of retries.
async fn read_on_a_replica(proxy: &Proxy, cluster: &Cluster, read: Run) -> usize {
    let on_primary = || {
        counter(
            &proxy.metrics.encode(),
            "causeway_queries_total",
            &[("target", "primary")],
        )
    };
    for attempt in 0..5 {
        let fresh = proxy.client().await;
        let before = on_primary();
        run(&fresh, read)
            .await
            .unwrap_or_else(|e| panic!("read {read:?} failed: {e}"));
        if on_primary() == before {
            return attempt;
        }
        println!("read {read:?} went to the primary (attempt {attempt}); retrying");
        wait_reads_reach_replicas(proxy, cluster).await;
    }
    5
}

/// Executed statements (`calls > 0`) in database `app` per node name.
async fn collect_statements(cluster: &Cluster) -> BTreeMap<String, Vec<String>> {
    let mut stats = BTreeMap::new();
    for node in nodes(cluster) {
        let rows = node
            .client()
            .await
            .unwrap()
            .query(
                "SELECT s.query FROM pg_stat_statements s \
                 JOIN pg_database d ON d.oid = s.dbid \
                 WHERE d.datname = 'app' AND s.calls > 0",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("reading pg_stat_statements on {}: {e}", node.name));
        stats.insert(
            node.name.clone(),
            rows.iter().map(|r| r.get::<_, String>(0)).collect(),
        );
    }
    stats
}

/// Every write marker ran on the primary and on no replica.
fn check_writes(stats: &BTreeMap<String, Vec<String>>, markers: &[&str]) {
    let mut problems = Vec::new();
    for marker in markers {
        for (node, queries) in stats {
            let hits: Vec<&String> = queries.iter().filter(|q| mentions(q, marker)).collect();
            if node == "primary" && hits.is_empty() {
                problems.push(format!(
                    "{marker}: not executed on the primary: {}",
                    describe(marker)
                ));
            }
            if node != "primary" {
                for q in hits {
                    problems.push(format!(
                        "{marker}: executed on {node}: {} (case {})",
                        short(q),
                        describe(marker)
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "write-class statements on the wrong node:\n{}",
        problems.join("\n")
    );
}

/// Every read marker ran on a replica.
fn check_reads(stats: &BTreeMap<String, Vec<String>>, markers: &[&str]) {
    let mut missing = Vec::new();
    let mut per_replica: BTreeMap<&str, usize> = BTreeMap::new();
    for marker in markers {
        let on: Vec<&str> = stats
            .iter()
            .filter(|(node, queries)| {
                *node != "primary" && queries.iter().any(|q| mentions(q, marker))
            })
            .map(|(node, _)| node.as_str())
            .collect();
        if on.is_empty() {
            let primary = stats["primary"].iter().any(|q| mentions(q, marker));
            missing.push(format!(
                "{marker} (ran on the primary: {primary}): {}",
                describe(marker)
            ));
        }
        for node in on {
            *per_replica.entry(node).or_default() += 1;
        }
    }
    println!("fresh reads per replica: {per_replica:?}");
    assert!(
        missing.is_empty(),
        "fresh reads that reached no replica:\n{}",
        missing.join("\n")
    );
}

/// The corpus case that uses `marker`, for messages.
fn describe(marker: &str) -> String {
    WRITES
        .iter()
        .chain(READS)
        .find(|c| c.markers.contains(&marker))
        .map_or_else(
            || "see its function in routing_corpus.rs".to_owned(),
            |c| short(&format!("{:?}", c.run)),
        )
}

/// Whether `query` names `marker` as a whole identifier.
fn mentions(query: &str, marker: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    query.match_indices(marker).any(|(at, _)| {
        let before = query[..at].chars().next_back();
        let after = query[at + marker.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// The start of a (possibly huge) query text, for messages.
fn short(query: &str) -> String {
    query.chars().take(200).collect()
}
