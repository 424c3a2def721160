//! The framework guides of docs/integration.md, each run as a program against Causeway with
//! two replicas that apply WAL a second late (so a read that reaches a replica cannot see a
//! write made just before it): read-your-writes across connections of one named end-user
//! session, other sessions' reads on replicas, hinted and transactional reads on the primary.
//! Also checks that every snippet the guide shows is the programs' code, verbatim.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::routing::wait_in_pool;
use crate::support::Proxy;
use crate::support::{assert_success, delay_replicas, prepared_cluster, python_dir, run_program};

/// Tables the programs use, readable by the `app` user.
const SETUP: &str = "
CREATE TABLE guide_notes (id serial PRIMARY KEY, user_id int NOT NULL, body text NOT NULL);
CREATE TABLE guide_orders (id serial PRIMARY KEY, user_id int NOT NULL, item text NOT NULL);
GRANT ALL ON guide_notes, guide_orders TO PUBLIC;
GRANT ALL ON SEQUENCE guide_notes_id_seq, guide_orders_id_seq TO PUBLIC;
";

/// How late the replicas apply WAL: far beyond `max_wait` (20 ms), within `lag.max_seconds`
/// and under the readmission threshold (half of it), and long enough that a loaded machine
/// still finishes a program's steps before the replicas replay its write.
const REPLICA_DELAY: Duration = Duration::from_secs(2);

/// The replicas are late on purpose: keep them in the pool however busy the machine is
/// (with the default 5 s limit, an eviction under load needs the lag below 2.5 s again).
const LAG: &str = "[lag]\nmax_seconds = \"30s\"\n";

/// A guide program: its command line once Causeway listens on `port` and the primary on
/// `primary`.
enum Program {
    Python(&'static str, &'static [&'static str]),
    Node,
    Jdbc,
}

impl Program {
    fn command(&self, port: u16, primary: u16) -> (String, Vec<String>) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dsn = format!("postgresql://app:secret@127.0.0.1:{port}/app");
        let display = |p: std::path::PathBuf| p.display().to_string();
        match self {
            Program::Python(script, extra) => {
                let mut args = vec![display(python_dir().join(script)), dsn, primary.to_string()];
                args.extend(extra.iter().map(|a| (*a).to_owned()));
                ("python3".into(), args)
            }
            Program::Node => (
                "node".into(),
                vec![
                    display(dir.join("node/pg_guide.js")),
                    dsn,
                    primary.to_string(),
                ],
            ),
            Program::Jdbc => (
                "java".into(),
                vec![
                    "-cp".into(),
                    "/usr/share/java/postgresql.jar".into(),
                    display(dir.join("java/JdbcGuide.java")),
                    format!("jdbc:postgresql://127.0.0.1:{port}/app?assumeMinServerVersion=10"),
                    "app".into(),
                    "secret".into(),
                    primary.to_string(),
                ],
            ),
        }
    }
}

/// Runs `program` against a fresh cluster's Causeway.
async fn run_guide(program: Program) {
    let (cluster, _primary) = prepared_cluster(false, SETUP, None).await;
    delay_replicas(&cluster, REPLICA_DELAY).await;
    let proxy = Proxy::start_with(&cluster, LAG).await;
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    let (command, args) = program.command(proxy.port(), cluster.primary.port);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_program(&command, &args, &[], Duration::from_secs(60))
        .await
        .unwrap();
    assert_success(&format!("{command} {args:?}"), &out);
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test]
async fn psycopg2_guide() {
    run_guide(Program::Python("psycopg2_guide.py", &[])).await;
}

#[tokio::test]
async fn sqlalchemy_guide() {
    run_guide(Program::Python("sqlalchemy_guide.py", &[])).await;
}

#[tokio::test]
async fn django_guide_on_psycopg3() {
    run_guide(Program::Python("django_guide.py", &["psycopg"])).await;
}

#[tokio::test]
async fn django_guide_on_psycopg2() {
    run_guide(Program::Python("django_guide.py", &["psycopg2"])).await;
}

#[tokio::test]
async fn node_postgres_guide() {
    run_guide(Program::Node).await;
}

#[tokio::test]
async fn pgjdbc_guide() {
    run_guide(Program::Jdbc).await;
}

/// A session named inside a transaction (psycopg2 sends `BEGIN` before the first statement,
/// so its `SET causeway.session` lands there) is the transaction's: its commit raises that
/// key's floor, and another connection of the key reads the write. Inside a transaction on
/// a replica (chosen for the floor it began with) the `SET` is refused with 0A000.
#[tokio::test]
async fn a_key_named_inside_a_transaction_is_the_transactions() {
    let (cluster, _primary) = prepared_cluster(false, SETUP, None).await;
    delay_replicas(&cluster, REPLICA_DELAY).await;
    let proxy = Proxy::start_with(&cluster, LAG).await;
    wait_in_pool(&proxy, &["replica1", "replica2"]).await;
    let writer = proxy.client().await;
    writer.batch_execute("BEGIN").await.unwrap();
    writer
        .batch_execute("SET causeway.session = 'in-tx'")
        .await
        .unwrap();
    writer
        .batch_execute("INSERT INTO guide_notes (user_id, body) VALUES (5, 'in-tx'); COMMIT")
        .await
        .unwrap();
    let reader = proxy.client().await;
    reader
        .execute("SET causeway.session = $1", &[&"in-tx"])
        .await
        .unwrap();
    let seen: i64 = reader
        .query_one("SELECT count(*) FROM guide_notes WHERE body = 'in-tx'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        seen, 1,
        "the other connection of the key missed the transaction's write"
    );
    let fresh = proxy.client().await;
    fresh.batch_execute("BEGIN READ ONLY").await.unwrap();
    let port: i32 = fresh
        .query_one("SELECT inet_server_port()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(
        port,
        i32::from(cluster.primary.port),
        "BEGIN READ ONLY ran on the primary"
    );
    let err = fresh
        .batch_execute("SET causeway.session = 'in-tx'")
        .await
        .unwrap_err();
    assert_eq!(
        crate::support::sqlstate(&err).as_deref(),
        Some("0A000"),
        "{err}"
    );
    fresh.batch_execute("COMMIT").await.unwrap();
}

/// The regions between `# guide:begin NAME` and `# guide:end NAME` (or `//` comments) in
/// `text`, dedented.
fn regions(text: &str) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut open: Option<(String, Vec<&str>)> = None;
    for line in text.lines() {
        let marker = line.trim_start();
        let marker = marker
            .strip_prefix("# ")
            .or_else(|| marker.strip_prefix("// "))
            .unwrap_or("");
        if let Some(name) = marker.strip_prefix("guide:begin ") {
            open = Some((name.trim().to_owned(), Vec::new()));
        } else if let Some(name) = marker.strip_prefix("guide:end ") {
            let (begun, lines) = open.take().expect("guide:end without guide:begin");
            assert_eq!(begun, name.trim(), "guide markers do not nest");
            found.insert(begun, dedent(&lines));
        } else if let Some((_, lines)) = open.as_mut() {
            lines.push(line);
        }
    }
    assert!(open.is_none(), "unterminated guide:begin");
    found
}

/// `lines` without the indentation they all share, joined with newlines.
fn dedent(lines: &[&str]) -> String {
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// docs/integration.md shows each region as a fenced block right after a line
/// `<!-- snippet: integration-tests/DIR/FILE#NAME -->`; each must equal the program's.
#[test]
fn guide_snippets_are_the_tested_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/integration.md")).unwrap();
    let mut checked = 0;
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(reference) = line
            .trim()
            .strip_prefix("<!-- snippet: ")
            .and_then(|r| r.strip_suffix(" -->"))
        else {
            continue;
        };
        let (file, name) = reference.split_once('#').expect("snippet: FILE#NAME");
        let fence = lines.next().unwrap_or_default();
        assert!(fence.starts_with("```"), "no code block after {reference}");
        let shown: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        let program = std::fs::read_to_string(root.join(file)).unwrap();
        let code = regions(&program);
        let expected = code
            .get(name)
            .unwrap_or_else(|| panic!("{file} has no region {name}"));
        assert_eq!(
            &shown.join("\n"),
            expected,
            "docs/integration.md's {reference} differs from the program"
        );
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} snippets found");
}
