//! The admin console (database `causeway`) against the real cluster: every SHOW command
//! with tokio-postgres and psql (`-c` and a script as an interactive session runs it),
//! PAUSE holding new queries and new logins until RESUME while a transaction in flight
//! completes, SHOW STATS counts, and everyone but `[proxy] admin_users` refused with 28000.

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::SimpleQueryMessage;

use crate::support::{assert_success, eventually, run_program, sqlstate, Proxy};

const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";

/// The admin user of these tests (a `[[users]]` entry of the harness, password "secret").
const ADMIN: &str = "app_md5";

type Row = HashMap<String, Option<String>>;

async fn start() -> Proxy {
    Proxy::start_routed(&format!("[proxy]\nadmin_users = [\"{ADMIN}\"]\n")).await
}

async fn console(
    proxy: &Proxy,
    user: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let conn = format!(
        "host=127.0.0.1 port={} user={user} password=secret dbname=causeway connect_timeout=10",
        proxy.port()
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The rows of a console command, by column name.
async fn rows(client: &tokio_postgres::Client, command: &str) -> Vec<Row> {
    let messages = client
        .simple_query(command)
        .await
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                row.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_owned(), row.get(i).map(str::to_owned)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn value<'a>(row: &'a Row, column: &str) -> Option<&'a str> {
    row.get(column)
        .unwrap_or_else(|| panic!("no column {column} in {row:?}"))
        .as_deref()
}

fn find<'a>(rows: &'a [Row], want: &[(&str, &str)]) -> Option<&'a Row> {
    rows.iter()
        .find(|r| want.iter().all(|(c, v)| value(r, c) == Some(*v)))
}

#[tokio::test]
async fn console_show_commands_report_pools_clients_servers_nodes_stats_and_config() {
    let proxy = start().await;
    let app = proxy.client().await;
    app.simple_query("SELECT 1").await.unwrap();
    // A transaction holds a primary connection while the console looks.
    app.batch_execute("BEGIN").await.unwrap();
    let backend: i32 = app
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let admin = console(&proxy, ADMIN)
        .await
        .expect("admin opens the console");

    let pools = rows(&admin, "SHOW POOLS").await;
    let primary = find(
        &pools,
        &[("database", "app"), ("user", "app"), ("node", "primary")],
    )
    .unwrap_or_else(|| panic!("no app pool on the primary: {pools:?}"));
    assert_eq!(value(primary, "sv_active"), Some("1"), "{primary:?}");
    assert_eq!(value(primary, "cl_active"), Some("1"), "{primary:?}");
    assert_eq!(value(primary, "cl_waiting"), Some("0"));
    assert_eq!(value(primary, "pool_mode"), Some("transaction"));

    let clients = rows(&admin, "show clients;").await;
    let client = find(&clients, &[("user", "app"), ("state", "active")])
        .unwrap_or_else(|| panic!("app client not active: {clients:?}"));
    assert_eq!(value(client, "node"), Some("primary"));
    assert_eq!(
        value(client, "remote_pid"),
        Some(backend.to_string().as_str())
    );
    assert_eq!(value(client, "addr"), Some("127.0.0.1"));
    assert!(value(client, "connect_time").is_some_and(|t| t.ends_with(" UTC")));

    let servers = rows(&admin, "SHOW SERVERS").await;
    let pid = backend.to_string();
    let server = find(&servers, &[("remote_pid", &pid)])
        .unwrap_or_else(|| panic!("server {backend} not listed: {servers:?}"));
    assert_eq!(
        (
            value(server, "state"),
            value(server, "node"),
            value(server, "user")
        ),
        (Some("active"), Some("primary"), Some("app"))
    );

    let nodes = eventually(
        Duration::from_secs(15),
        "every node in the pool",
        || async {
            let nodes = rows(&admin, "SHOW NODES").await;
            let in_pool = nodes
                .iter()
                .filter(|n| value(n, "state") == Some("in_pool"))
                .count();
            (in_pool == 3)
                .then_some(nodes.clone())
                .ok_or(format!("{nodes:?}"))
        },
    )
    .await;
    let names: Vec<_> = nodes.iter().map(|n| value(n, "name")).collect();
    assert_eq!(names, [Some("primary"), Some("replica1"), Some("replica2")]);
    let replica = find(&nodes, &[("name", "replica1")]).unwrap();
    assert_eq!(value(replica, "role"), Some("replica"));
    assert!(value(replica, "lag_bytes").is_some_and(|b| b.parse::<u64>().is_ok()));
    assert_eq!(value(replica, "reason"), None);

    app.batch_execute("COMMIT").await.unwrap();
    let stats = rows(&admin, "SHOW NODE_STATS").await;
    let primary = find(&stats, &[("node", "primary")]).unwrap();
    let queries: u64 = value(primary, "total_query_count")
        .unwrap()
        .parse()
        .unwrap();
    // Requests routed: SELECT 1 and the transaction (its statements ride its connection).
    assert!(queries >= 2, "{primary:?}");
    assert_eq!(stats.len(), 3);

    let config = rows(&admin, "SHOW CONFIG").await;
    let setting = |key: &str| {
        find(&config, &[("key", key)]).and_then(|r| value(r, "value").map(str::to_owned))
    };
    assert_eq!(setting("users.0.password").as_deref(), Some("***"));
    assert_eq!(setting("proxy.admin_users").as_deref(), Some(ADMIN));
    assert!(!format!("{config:?}").contains("secret"), "{config:?}");

    assert_eq!(rows(&admin, "SHOW HELP").await.len(), 11);
    for (command, code) in [
        ("SELECT 1", "42601"),
        ("SHOW DATABASES", "42601"),
        ("RELOAD", "0A000"),
        ("RESUME", "55000"),
    ] {
        let err = admin.simple_query(command).await.expect_err(command);
        assert_eq!(sqlstate(&err).as_deref(), Some(code), "{command}: {err}");
        let message = err.as_db_error().map(|e| e.message()).unwrap_or_default();
        let says = match code {
            "42601" => "SHOW POOLS, SHOW CLIENTS",
            // An in-process instance has no file to reread (tests/reload.rs reloads one).
            "0A000" => "--config",
            _ => "not paused",
        };
        assert!(message.contains(says), "{command}: {err:?}");
    }
    // The extended protocol is refused, and the console stays usable.
    let err = admin
        .query("SHOW POOLS", &[])
        .await
        .expect_err("extended query");
    assert_eq!(sqlstate(&err).as_deref(), Some("0A000"), "{err}");
    assert!(!rows(&admin, "SHOW POOLS").await.is_empty());
    proxy.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn console_works_with_psql_c_and_a_script() {
    let proxy = start().await;
    let port = proxy.port().to_string();
    let env = [("PGPASSWORD", "secret")];
    let base = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        ADMIN,
        "-d",
        "causeway",
    ];

    let mut args = base.to_vec();
    args.extend(["-c", "SHOW POOLS"]);
    let out = run_program(PSQL, &args, &env, Duration::from_secs(30))
        .await
        .unwrap();
    assert_success("psql -c 'SHOW POOLS'", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cl_active") && text.contains("sv_idle"),
        "{text}"
    );

    // As an interactive session would: psql's own startup, several commands, \q.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("console.sql");
    std::fs::write(&script, "SHOW NODES;\nSHOW CONFIG;\nshow help\n;\n\\q\n").unwrap();
    let mut args = base.to_vec();
    let path = script.to_str().unwrap();
    args.extend(["-v", "ON_ERROR_STOP=1", "-f", path]);
    let out = run_program(PSQL, &args, &env, Duration::from_secs(30))
        .await
        .unwrap();
    assert_success("psql -f console.sql", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "replica2",
        "lag_bytes",
        "session_store.kind",
        "SHOW POOLS",
        "(11 rows)",
    ] {
        assert!(text.contains(expected), "no {expected} in:\n{text}");
    }
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("WARNING"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    proxy.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn console_refuses_everyone_but_admin_users() {
    let proxy = start().await;
    let err = console(&proxy, "app").await.expect_err("app is no admin");
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
    let hint = err.as_db_error().and_then(|e| e.hint()).unwrap_or_default();
    assert!(hint.contains("admin_users"), "{err:?}");
    // An admin user still authenticates: a wrong password is 28P01.
    let conn = format!(
        "host=127.0.0.1 port={} user={ADMIN} password=wrong dbname=causeway",
        proxy.port()
    );
    let err = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .err()
        .expect("wrong password");
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{err}");
    // Without admin_users, nobody gets the console.
    let closed = Proxy::start_routed("").await;
    let err = console(&closed, ADMIN).await.expect_err("console closed");
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
    // The application database is unaffected.
    proxy.client().await.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn console_pause_lets_a_transaction_finish_and_holds_new_queries_until_resume() {
    let proxy = start().await;
    let setup = proxy.client().await;
    setup
        .batch_execute("CREATE TABLE IF NOT EXISTS console_pause (v int)")
        .await
        .unwrap();
    let writer = proxy.client().await;
    let reader = proxy.client().await;
    reader.simple_query("SELECT 1").await.unwrap();
    writer
        .batch_execute("BEGIN; INSERT INTO console_pause VALUES (1)")
        .await
        .unwrap();

    let admin = console(&proxy, ADMIN).await.unwrap();
    let pause = tokio::spawn(async move { admin.simple_query("PAUSE").await.map(|_| admin) });
    // PAUSE waits for the transaction in flight.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pause.is_finished(),
        "PAUSE returned while a transaction was open"
    );
    let held = tokio::spawn(async move { reader.simple_query("SELECT 2").await.map(|_| reader) });
    // The transaction in flight runs to its end while paused.
    writer
        .batch_execute("INSERT INTO console_pause VALUES (2); COMMIT")
        .await
        .unwrap();
    let admin = tokio::time::timeout(Duration::from_secs(10), pause)
        .await
        .expect("PAUSE returns once the transaction ended")
        .unwrap()
        .expect("PAUSE succeeds");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "a new query ran while paused");
    let pools = rows(&admin, "SHOW POOLS").await;
    // The held read waits at the gate of the pool it was routed to.
    let total = |column: &str| -> u64 {
        pools
            .iter()
            .filter(|p| value(p, "user") == Some("app"))
            .map(|p| value(p, column).unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(
        (total("cl_waiting"), total("sv_active")),
        (1, 0),
        "{pools:?}"
    );

    admin.simple_query("RESUME").await.expect("RESUME");
    tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the held query runs after RESUME")
        .unwrap()
        .expect("and succeeds");
    let count: i64 = writer
        .query_one("SELECT count(*) FROM console_pause WHERE v IN (1, 2)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(count >= 2, "{count}");
    proxy.shutdown(Duration::from_secs(10)).await;
}

/// The totals of `pool`s of user `user` in SHOW POOLS, for `columns`.
fn pool_totals(pools: &[Row], user: &str, columns: &[&str]) -> Vec<u64> {
    columns
        .iter()
        .map(|column| {
            pools
                .iter()
                .filter(|p| value(p, "user") == Some(user))
                .map(|p| value(p, column).unwrap().parse::<u64>().unwrap())
                .sum()
        })
        .collect()
}

/// PAUSE holds a new client's login where it needs its first server connection (a fresh
/// instance has no parameters to log it in with): the login does not complete and no
/// server connection is opened until RESUME. With a short `query_wait_timeout`, a login
/// held longer fails with 57P03.
#[tokio::test]
async fn console_pause_holds_a_new_login_until_resume() {
    let proxy = start().await;
    let admin = console(&proxy, ADMIN).await.unwrap();
    admin.simple_query("PAUSE").await.expect("PAUSE");
    let login = tokio::spawn({
        let conn = proxy.conn_string("app");
        async move {
            let (client, connection) =
                tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            Ok::<_, tokio_postgres::Error>(client)
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!login.is_finished(), "a login completed while paused");
    let pools = rows(&admin, "SHOW POOLS").await;
    let [waiting, active, idle, used] = pool_totals(
        &pools,
        "app",
        &["cl_waiting", "sv_active", "sv_idle", "sv_used"],
    )[..] else {
        unreachable!()
    };
    assert_eq!(waiting, 1, "{pools:?}");
    assert_eq!(
        active + idle + used,
        0,
        "a server connection was opened: {pools:?}"
    );

    admin.simple_query("RESUME").await.expect("RESUME");
    let client = tokio::time::timeout(Duration::from_secs(10), login)
        .await
        .expect("the login completes after RESUME")
        .unwrap()
        .expect("and succeeds");
    client.simple_query("SELECT 1").await.expect("a query");
    // The time the login was held counts as waiting for a server, in SHOW STATS too: most
    // of the second slept above (on a loaded machine the login reaches its checkout a few
    // hundred milliseconds after it started; CI once saw 0.8 s).
    let stats = rows(&admin, "SHOW STATS").await;
    let app = find(&stats, &[("database", "app")]).expect("a row for app");
    let waited: u64 = value(app, "total_wait_time").unwrap().parse().unwrap();
    assert!(waited >= 500_000, "{app:?}");
    proxy.shutdown(Duration::from_secs(10)).await;

    let short = Proxy::start_routed(&format!(
        "[proxy]\nadmin_users = [\"{ADMIN}\"]\n[failover]\nquery_wait_timeout = \"1s\"\n"
    ))
    .await;
    let admin = console(&short, ADMIN).await.unwrap();
    admin.simple_query("PAUSE").await.expect("PAUSE");
    let started = std::time::Instant::now();
    let err = short
        .client_as("app")
        .await
        .expect_err("a login held past query_wait_timeout fails");
    let waited = started.elapsed();
    assert_eq!(sqlstate(&err).as_deref(), Some("57P03"), "{err}");
    assert!(format!("{err:?}").contains("paused"), "{err:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "failed after {waited:?}"
    );
    admin.simple_query("RESUME").await.expect("RESUME");
    short.client().await.simple_query("SELECT 1").await.unwrap();
    short.shutdown(Duration::from_secs(10)).await;
}

/// SHOW STATS counts transactions, requests, bytes and times per database, with
/// PgBouncer's columns: N single-statement transactions and one explicit transaction
/// through a fresh instance give exact counts and plausible bytes and times.
#[tokio::test]
async fn console_show_stats_counts_transactions_queries_bytes_and_time() {
    const N: u64 = 25;
    let proxy = Proxy::start(&format!("[proxy]\nadmin_users = [\"{ADMIN}\"]\n")).await;
    let client = proxy.client().await;
    for _ in 0..N {
        client.simple_query("SELECT 1").await.unwrap();
    }
    client.simple_query("BEGIN").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.simple_query("SELECT 1").await.unwrap();
    client.simple_query("COMMIT").await.unwrap();
    drop(client);

    let admin = console(&proxy, ADMIN).await.unwrap();
    let columns = [
        "total_xact_count",
        "total_query_count",
        "total_received",
        "total_sent",
        "total_xact_time",
        "total_query_time",
        "total_wait_time",
        "avg_xact_time",
        "avg_query_time",
    ];
    // The session's last counts are added when it ends, just after the client leaves.
    let stats = eventually(Duration::from_secs(10), "the session's counts", || async {
        let stats = rows(&admin, "SHOW STATS").await;
        let Some(app) = find(&stats, &[("database", "app")]) else {
            return Err(format!("{stats:?}"));
        };
        let got: HashMap<&str, u64> = columns
            .iter()
            .map(|c| (*c, value(app, c).unwrap().parse::<u64>().unwrap()))
            .collect();
        // Terminate (5 bytes) is the last thing read.
        (got["total_received"] >= N * 14 + 5)
            .then_some(got.clone())
            .ok_or(format!("{got:?}"))
    })
    .await;
    println!("SHOW STATS after {N} + 1 transactions: {stats:?}");
    assert_eq!(stats["total_xact_count"], N + 1, "{stats:?}");
    assert_eq!(stats["total_query_count"], N + 3, "{stats:?}");
    // Each `SELECT 1` is a 14-byte Query and a 66-byte reply (RowDescription, DataRow,
    // CommandComplete, ReadyForQuery); the transaction adds its three queries, the
    // startup reply a few hundred bytes.
    let (received, sent) = (stats["total_received"], stats["total_sent"]);
    assert!((N * 14..N * 14 + 100).contains(&received), "{stats:?}");
    assert!((N * 66..N * 66 + 1500).contains(&sent), "{stats:?}");
    // The explicit transaction spans its 200 ms pause; requests do not.
    assert!(stats["total_xact_time"] >= 200_000, "{stats:?}");
    assert!(
        stats["total_query_time"] < stats["total_xact_time"],
        "{stats:?}"
    );
    assert!(stats["total_query_time"] > 0, "{stats:?}");
    assert!(
        stats["avg_xact_time"] > stats["avg_query_time"],
        "{stats:?}"
    );
    let by_node = rows(&admin, "SHOW NODE_STATS").await;
    let primary = find(&by_node, &[("node", "primary")]).unwrap();
    // Without replicas nothing is routed; every transaction took a checkout.
    let checkouts: u64 = value(primary, "total_checkout_count")
        .unwrap()
        .parse()
        .unwrap();
    assert!(checkouts > N, "{primary:?}");
    proxy.shutdown(Duration::from_secs(10)).await;
}
