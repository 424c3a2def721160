//! Real client programs through Causeway: psql scripts, pgbench in all three query modes with
//! more clients than server connections, psycopg 3 with server-side prepared statements, and
//! asyncpg (which prepares every statement).

use std::time::Duration;

use crate::support::{assert_success, python_dir, run_program, Proxy};

const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";
const PGBENCH: &str = "/usr/lib/postgresql/15/bin/pgbench";

fn pg_env(proxy: &Proxy) -> Vec<(&'static str, String)> {
    vec![
        ("PGHOST", "127.0.0.1".to_owned()),
        ("PGPORT", proxy.port().to_string()),
        ("PGUSER", "app".to_owned()),
        ("PGPASSWORD", "secret".to_owned()),
        ("PGDATABASE", "app".to_owned()),
    ]
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn psql_script() {
    let proxy = Proxy::start("[proxy]\npool_size = 2\n").await;
    let env = pg_env(&proxy);
    let script = r#"
\set ON_ERROR_STOP on
DROP TABLE IF EXISTS psql_t;
CREATE TABLE psql_t (id serial primary key, v text);
INSERT INTO psql_t (v) SELECT 'row ' || g FROM generate_series(1, 100) g;
BEGIN;
UPDATE psql_t SET v = v || '!' WHERE id <= 10;
SAVEPOINT s1;
DELETE FROM psql_t;
ROLLBACK TO SAVEPOINT s1;
COMMIT;
\copy psql_t (v) FROM stdin
copied 1
copied 2
\.
SELECT count(*) = 102 AS total_ok, count(*) FILTER (WHERE v LIKE '%!') AS bang FROM psql_t \gset
\if :total_ok
\echo total ok
\else
\echo wrong total
SELECT 1/0;
\endif
SELECT :bang AS bang;
PREPARE q(int) AS SELECT v FROM psql_t WHERE id = $1;
EXECUTE q(5);
SET search_path TO public;
SHOW search_path;
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.sql");
    std::fs::write(&path, script).unwrap();
    let out = run_program(
        PSQL,
        &["-X", "-q", "-f", path.to_str().unwrap()],
        &env_refs(&env),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_success("psql script", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("total ok"), "{stdout}");
    assert!(stdout.contains("row 5!"), "{stdout}");
}

#[tokio::test]
async fn pgbench_all_query_modes_with_more_clients_than_connections() {
    let proxy = Proxy::start("[proxy]\npool_size = 4\n").await;
    let env = pg_env(&proxy);
    let env = env_refs(&env);
    let init = run_program(
        PGBENCH,
        &["-i", "-q", "-s", "1", "--no-vacuum"],
        &env,
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_success("pgbench -i", &init);
    for mode in ["simple", "extended", "prepared"] {
        for extra in [&[][..], &["-S"][..]] {
            let mut args = vec!["-n", "-c", "12", "-j", "2", "-t", "150", "-M", mode];
            args.extend_from_slice(extra);
            let out = run_program(PGBENCH, &args, &env, Duration::from_secs(180))
                .await
                .unwrap();
            assert_success(&format!("pgbench -M {mode} {extra:?}"), &out);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains("number of transactions actually processed: 1800/1800"),
                "pgbench -M {mode} {extra:?}:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.contains("number of failed transactions: 0"),
                "pgbench -M {mode} reported failures:\n{stdout}"
            );
        }
    }
}

async fn python(script: &str, proxy: &Proxy) {
    let dsn = format!("postgresql://app:secret@127.0.0.1:{}/app", proxy.port());
    let path = python_dir().join(script);
    let out = run_program(
        "python3",
        &[path.to_str().unwrap(), &dsn],
        &[],
        Duration::from_secs(180),
    )
    .await
    .unwrap();
    assert_success(script, &out);
}

#[tokio::test]
async fn psycopg3_with_server_side_prepared_statements() {
    let proxy = Proxy::start("[proxy]\npool_size = 3\n").await;
    python("psycopg_check.py", &proxy).await;
}

#[tokio::test]
async fn asyncpg_prepares_everything() {
    let proxy = Proxy::start("[proxy]\npool_size = 3\n").await;
    python("asyncpg_check.py", &proxy).await;
}
