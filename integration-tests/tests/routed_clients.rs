//! Real clients through a routed Causeway (reads on replicas): psycopg 3 with server-side
//! prepared statements, asyncpg, and pgbench in all three query modes with more clients
//! than server connections, read-only and read-mostly with a read-your-writes check.

use std::time::Duration;

use integration_tests::{Cluster, ClusterOptions};

use crate::routing::wait_in_pool;
use crate::routing_corpus::wait_reads_reach_replicas;
use crate::support::{assert_success, counter, python_dir, run_program, Proxy};

const PGBENCH: &str = "/usr/lib/postgresql/15/bin/pgbench";

/// pgbench clients (12) against `pool_size = 4` per node.
const CLIENTS: u32 = 12;

/// A read-mostly transaction of separate autocommit statements: 9 selects and 1 update.
/// Each client also owns one account (`aid = client_id + 1`) and checks that the read after
/// its own update sees it, and that the read before it sees the previous iteration's
/// update: a stale read makes the cast fail, which aborts the client.
const READ_MOSTLY: &str = r"\set aid random(1, 100000 * :scale)
\set mine 1 + :client_id
SELECT abalance AS before FROM pgbench_accounts WHERE aid = :mine \gset
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid + 1;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid + 2;
SELECT bbalance FROM pgbench_branches WHERE bid = 1;
SELECT count(*) FROM pgbench_tellers;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid + 3;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid + 4;
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :mine;
SELECT abalance AS after FROM pgbench_accounts WHERE aid = :mine \gset
\if :after != :before + 1
SELECT ('read-your-writes violated: ' || :before || ' then ' || :after)::int;
\endif
";

/// A client program: the command and its arguments, each script given its own table name
/// (so it cannot collide with the primary-only runs of the same script in clients.rs).
/// Every script takes a last `readback` argument for its read-only mode.
struct Program {
    name: &'static str,
    command: String,
    args: Vec<String>,
}

impl Program {
    fn python(script: &'static str, dsn: &str, table: &str) -> Program {
        let path = python_dir().join(script);
        Program {
            name: script,
            command: "python3".into(),
            args: vec![path.display().to_string(), dsn.into(), table.into()],
        }
    }

    /// pgJDBC (Debian's jar) running `JdbcCheck.java` in source-file mode.
    fn jdbc(proxy: &Proxy, table: &str) -> Program {
        let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("java/JdbcCheck.java");
        let url = format!("jdbc:postgresql://127.0.0.1:{}/app", proxy.port());
        Program {
            name: "JdbcCheck.java",
            command: "java".into(),
            args: vec![
                "-cp".into(),
                "/usr/share/java/postgresql.jar".into(),
                source.display().to_string(),
                url,
                "app".into(),
                "secret".into(),
                table.into(),
            ],
        }
    }

    /// node-postgres (installed into integration-tests/node by scripts/setup.sh).
    fn node(proxy: &Proxy, table: &str) -> Program {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("node/pg_check.js");
        Program {
            name: "pg_check.js",
            command: "node".into(),
            args: vec![script.display().to_string(), dsn(proxy), table.into()],
        }
    }

    async fn run(&self, extra: &[&str]) {
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        let out = run_program(&self.command, &args, &[], Duration::from_secs(180))
            .await
            .unwrap();
        assert_success(self.name, &out);
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

fn dsn(proxy: &Proxy) -> String {
    format!("postgresql://app:secret@127.0.0.1:{}/app", proxy.port())
}

/// Reads served by replicas so far.
fn replica_reads(proxy: &Proxy) -> f64 {
    let text = proxy.metrics.encode();
    ["replica1", "replica2"]
        .iter()
        .map(|r| counter(&text, "causeway_queries_total", &[("target", r)]))
        .sum()
}

/// Runs `script` (its writing workers), then, once the replicas have caught up, its
/// `readback` mode, whose prepared reads must reach a replica and see every row.
///
/// While the workers write, every read's floor is a write a few milliseconds old, and on a
/// loaded machine no replica may replay it within `max_wait`: all of those reads may rightly
/// go to the primary, so only the read-back is required to reach a replica.
async fn run_then_read_back(proxy: &Proxy, program: Program) {
    program.run(&[]).await;
    let during = replica_reads(proxy);
    Cluster::shared()
        .wait_replicas_caught_up(Duration::from_secs(20))
        .await
        .unwrap();
    wait_in_pool(proxy, &["replica1", "replica2"]).await;
    program.run(&["readback"]).await;
    let after = replica_reads(proxy);
    println!(
        "{}: replica reads: {during} while writing, {} in the read-back",
        program.name,
        after - during
    );
    assert!(
        after > during,
        "no read-back reached a replica; fallbacks:\n{}",
        fallbacks(proxy)
    );
}

/// The consistency fallback counters, for failure messages.
fn fallbacks(proxy: &Proxy) -> String {
    proxy
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("causeway_consistency_fallbacks_total"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn psycopg3_prepared_statements_through_routing() {
    let proxy = Proxy::start_routed("[proxy]\npool_size = 3\n").await;
    let program = Program::python("psycopg_check.py", &dsn(&proxy), "routed_py_t");
    run_then_read_back(&proxy, program).await;
}

/// The script's final count runs on its setup connection after the workers finished: a
/// read of other connections' writes, which per-connection sessions do not order. One
/// shared session key (a startup parameter, as `options=-c causeway.session=...` would
/// be) makes every connection read all of the script's writes.
#[tokio::test]
async fn asyncpg_prepares_everything_through_routing() {
    let proxy = Proxy::start_routed("[proxy]\npool_size = 3\n").await;
    let dsn = format!("{}?causeway.session=routed_asyncpg", dsn(&proxy));
    run_then_read_back(
        &proxy,
        Program::python("asyncpg_check.py", &dsn, "routed_apg_t"),
    )
    .await;
}

/// pgJDBC switches to named server-side statements after five executions
/// (`prepareThreshold`), batches inserts, and uses transactions and read-only mode.
#[tokio::test]
async fn jdbc_prepared_statements_through_routing() {
    let proxy = Proxy::start_routed("[proxy]\npool_size = 3\n").await;
    run_then_read_back(&proxy, Program::jdbc(&proxy, "routed_jdbc_t")).await;
}

/// node-postgres: unnamed parameterized statements and named prepared statements.
#[tokio::test]
async fn node_postgres_through_routing() {
    let proxy = Proxy::start_routed("[proxy]\npool_size = 3\n").await;
    run_then_read_back(&proxy, Program::node(&proxy, "routed_node_t")).await;
}

fn pg_env(proxy: &Proxy) -> Vec<(&'static str, String)> {
    vec![
        ("PGHOST", "127.0.0.1".to_owned()),
        ("PGPORT", proxy.port().to_string()),
        ("PGUSER", "app".to_owned()),
        ("PGPASSWORD", "secret".to_owned()),
        ("PGDATABASE", "app".to_owned()),
    ]
}

/// Runs pgbench with `args` (plus `-n -c 12 -j 2`) and checks that all `expected`
/// transactions were processed without failures.
async fn pgbench(env: &[(&str, &str)], args: &[&str], expected: u32) {
    let clients = CLIENTS.to_string();
    let mut all = vec!["-n", "-c", &clients, "-j", "2"];
    all.extend_from_slice(args);
    let out = run_program(PGBENCH, &all, env, Duration::from_secs(120))
        .await
        .unwrap();
    let what = format!("pgbench {all:?}");
    assert_success(&what, &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "number of transactions actually processed: {expected}/{expected}"
        )),
        "{what}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{what} reported failures:\n{stdout}"
    );
}

/// pgbench's tables have fixed names, so this runs on a private cluster.
#[tokio::test]
async fn pgbench_all_query_modes_through_routing() {
    let cluster = Cluster::start(ClusterOptions {
        replicas: 2,
        redis: false,
    })
    .unwrap();
    let proxy = Proxy::start_with(&cluster, "[proxy]\npool_size = 4\n").await;
    let env = pg_env(&proxy);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let init = run_program(
        PGBENCH,
        &["-i", "-q", "-s", "1"],
        &env,
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_success("pgbench -i", &init);
    cluster
        .wait_replicas_caught_up(Duration::from_secs(10))
        .await
        .unwrap();
    wait_reads_reach_replicas(&proxy, &cluster).await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("read_mostly.sql");
    std::fs::write(&script, READ_MOSTLY).unwrap();
    let script = script.to_str().unwrap();
    for mode in ["simple", "extended", "prepared"] {
        let before = replica_reads(&proxy);
        pgbench(&env, &["-M", mode, "-S", "-t", "100"], CLIENTS * 100).await;
        let after = replica_reads(&proxy);
        assert!(after > before, "-M {mode} -S: no read reached a replica");
        pgbench(&env, &["-M", mode, "-f", script, "-t", "30"], CLIENTS * 30).await;
    }
    println!(
        "pgbench through routing: {} replica reads",
        replica_reads(&proxy)
    );
}
