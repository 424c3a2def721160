//! The compose stack's PostgreSQL scripts without Docker: `docker/postgres/primary-init.sh`
//! prepares a primary made the way the postgres image makes one (scram-sha-256 over TCP),
//! `docker/postgres/replica-entrypoint.sh` clones it into a streaming replica, and Causeway,
//! run with `docker/causeway.toml` pointed at them, routes reads to that replica.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::ports::free_port;
use integration_tests::process::{
    chown_for_postgres, is_root, log_tail, pg_command, run, PG_BIN_DIR, PG_OS_USER,
};
use tokio::net::TcpListener;

use crate::dashboards::repo_root;
use crate::support::{eventually, http_get};

const REPLICATION_PASSWORD: &str = "replicator-secret";
const APP_PASSWORD: &str = "secret";

/// A scratch directory with a primary and a replica: `primary/data`, `replica1/data`.
/// Drop stops both; the watchdog does it if the test process dies first.
struct Scratch {
    dir: PathBuf,
    watchdog: Child,
    replica: Option<Child>,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("causeway-docker-")
            .tempdir()
            .unwrap()
            .keep();
        for sub in ["primary", "replica1"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        chown_for_postgres(&dir).unwrap();
        let watchdog = integration_tests::spawn_watchdog(&dir, false).unwrap();
        Scratch {
            dir,
            watchdog,
            replica: None,
        }
    }

    fn data(&self, node: &str) -> PathBuf {
        self.dir.join(node).join("data")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for node in ["replica1", "primary"] {
            let data = self.data(node);
            if data.join("postmaster.pid").exists() {
                let _ = pg_command("pg_ctl", &self.dir)
                    .args(["stop", "-w", "-m", "immediate", "-D"])
                    .arg(&data)
                    .output();
            }
        }
        if let Some(mut replica) = self.replica.take() {
            let _ = replica.kill();
            let _ = replica.wait();
        }
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `sh script args` as the PostgreSQL OS user with exactly `env` (and PATH) set, as the
/// postgres image runs it.
fn script(name: &str, env: &[(&str, String)], args: &[String]) -> Command {
    let path = repo_root().join("docker/postgres").join(name);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_OS_USER, "--", "env", "-i"]);
        c
    } else {
        let mut c = Command::new("env");
        c.arg("-i");
        c
    };
    cmd.arg(format!("PATH={PG_BIN_DIR}:/usr/bin:/bin"));
    cmd.args(env.iter().map(|(k, v)| format!("{k}={v}")));
    cmd.arg("sh").arg(path).args(args).stdin(Stdio::null());
    cmd
}

/// initdb and start a primary the way the postgres image does: a superuser password,
/// trust on the local socket, scram-sha-256 for TCP (`host all all all` appended).
fn start_primary(scratch: &Scratch, port: u16) {
    let node_dir = scratch.dir.join("primary");
    let data = scratch.data("primary");
    let pwfile = node_dir.join("pwfile");
    fs::write(&pwfile, "postgres-secret\n").unwrap();
    chown_for_postgres(&node_dir).unwrap();
    run(
        pg_command("initdb", &node_dir)
            .args(["--no-sync", "--no-instructions", "-U", "postgres"])
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
            ])
            .args(["--locale=C", "--pwfile"])
            .arg(&pwfile)
            .arg("-D")
            .arg(&data),
        "initdb",
    )
    .unwrap();
    let hba = data.join("pg_hba.conf");
    let mut rules = fs::read_to_string(&hba).unwrap();
    rules += "host all all all scram-sha-256\n";
    fs::write(&hba, rules).unwrap();
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1",
        node_dir.display()
    );
    run(
        pg_command("pg_ctl", &node_dir)
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(node_dir.join("postgres.log"))
            .args(["-o", &options]),
        "starting the primary",
    )
    .unwrap();
}

/// A client as `app` with its password over TCP, retried while the server starts.
async fn connect_app(port: u16, within: Duration) -> tokio_postgres::Client {
    let dsn = format!(
        "host=127.0.0.1 port={port} user=app password={APP_PASSWORD} dbname=app \
         connect_timeout=5"
    );
    let what = format!("connect as app to port {port}");
    let (client, conn) = eventually(within, &what, || {
        tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
    })
    .await;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Runs `sql` (one text column, one row) on `client` until it returns `want`.
async fn wait_value(client: &tokio_postgres::Client, sql: &str, want: &str) {
    eventually(Duration::from_secs(15), sql, || async {
        let got: Option<String> = match client.query_opt(sql, &[]).await {
            Ok(row) => row.map(|r| r.get(0)),
            Err(_) => None,
        };
        (got.as_deref() == Some(want))
            .then_some(())
            .ok_or_else(|| format!("{got:?}, want {want}"))
    })
    .await;
}

#[tokio::test]
async fn docker_postgres_scripts_make_a_streaming_replica_without_docker() {
    let started = Instant::now();
    let mut scratch = Scratch::new();
    let (primary_port, replica_port) = (free_port().unwrap(), free_port().unwrap());
    start_primary(&scratch, primary_port);

    let init_env = [
        ("PGDATA", scratch.data("primary").display().to_string()),
        ("PGHOST", scratch.dir.join("primary").display().to_string()),
        ("PGPORT", primary_port.to_string()),
        ("POSTGRES_USER", "postgres".to_owned()),
        ("REPLICATION_PASSWORD", REPLICATION_PASSWORD.to_owned()),
        ("APP_PASSWORD", APP_PASSWORD.to_owned()),
    ];
    let out = run(
        &mut script("primary-init.sh", &init_env, &[]),
        "primary-init.sh",
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("database app ready"));

    let replica_dir = scratch.dir.join("replica1");
    let log = fs::File::create(replica_dir.join("entrypoint.log")).unwrap();
    let replica_env = [
        ("PGDATA", scratch.data("replica1").display().to_string()),
        ("PRIMARY_HOST", "127.0.0.1".to_owned()),
        ("PRIMARY_PORT", primary_port.to_string()),
        ("REPLICATION_PASSWORD", REPLICATION_PASSWORD.to_owned()),
        ("REPLICA_NAME", "replica1".to_owned()),
        ("PRIMARY_WAIT_SECONDS", "10".to_owned()),
    ];
    let args: Vec<String> = [
        format!("port={replica_port}"),
        "listen_addresses=127.0.0.1".to_owned(),
        format!("unix_socket_directories={}", replica_dir.display()),
    ]
    .iter()
    .flat_map(|setting| ["-c".to_owned(), setting.clone()])
    .collect();
    let child = script("replica-entrypoint.sh", &replica_env, &args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("run replica-entrypoint.sh");
    scratch.replica = Some(child);

    let primary = connect_app(primary_port, Duration::from_secs(5)).await;
    let replica_log = replica_dir.join("entrypoint.log");
    let replica = tokio::select! {
        client = connect_app(replica_port, Duration::from_secs(30)) => client,
        () = exited(&mut scratch) => panic!(
            "replica-entrypoint.sh exited:\n{}",
            log_tail(&replica_log, 30)
        ),
    };
    let monitor: bool = primary
        .query_one("SELECT pg_has_role('app', 'pg_monitor', 'member')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(monitor, "app is not a pg_monitor member");
    wait_value(
        &primary,
        "SELECT application_name || ' ' || state FROM pg_stat_replication",
        "replica1 streaming",
    )
    .await;
    wait_value(&replica, "SELECT pg_is_in_recovery()::text", "true").await;
    primary
        .batch_execute("CREATE TABLE docker_check (v text); INSERT INTO docker_check VALUES ('42')")
        .await
        .unwrap();
    wait_value(&replica, "SELECT v FROM docker_check", "42").await;

    causeway_routes_to_the_replica(primary_port, replica_port).await;
    eprintln!(
        "docker scripts: replica streaming and routed in {:?}",
        started.elapsed()
    );
}

/// Resolves when the replica's entrypoint process has exited. No deadline of its own (so
/// not `eventually`): it is raced against a connection attempt that has one.
async fn exited(scratch: &mut Scratch) {
    loop {
        if let Some(child) = scratch.replica.as_mut() {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Causeway with `docker/causeway.toml`, its hosts pointed at the local nodes (one
/// replica) and a local Redis, sends reads to the replica.
async fn causeway_routes_to_the_replica(primary_port: u16, replica_port: u16) {
    let redis = integration_tests::Cluster::shared()
        .start_redis("docker")
        .unwrap();
    let path = repo_root().join("docker/causeway.toml");
    let mut table: toml::Table = fs::read_to_string(&path).unwrap().parse().unwrap();
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    let edits = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"{admin}\"\n\
         [primary]\nhost = \"127.0.0.1\"\nport = {primary_port}\n\
         [[replicas]]\nname = \"replica1\"\nhost = \"127.0.0.1\"\nport = {replica_port}\n\
         [session_store]\nurl = \"{}\"\n",
        redis.url()
    );
    let edits: toml::Table = edits.parse().unwrap();
    for (section, value) in edits {
        match (table.get_mut(&section), value) {
            (Some(toml::Value::Table(old)), toml::Value::Table(new)) => old.extend(new),
            (_, value) => {
                table.insert(section, value);
            }
        }
    }
    let config = causeway::config::Config::from_toml(&toml::to_string(&table).unwrap())
        .unwrap_or_else(|e| panic!("adapted {}: {e}", path.display()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let ctx = causeway::Context::new(config, causeway::Shutdown::default()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(causeway::server::run(ctx, listener, async move {
        let _ = stopped.await;
    }));

    eventually(
        Duration::from_secs(15),
        "replica1 joins the pool",
        || async {
            // The admin port opens a moment after the server task starts.
            let json: serde_json::Value = if tokio::net::TcpStream::connect(admin).await.is_ok() {
                serde_json::from_str(&http_get(admin, "/status").await.body).unwrap()
            } else {
                serde_json::Value::Null
            };
            (json["nodes"][1]["in_pool"] == true)
                .then_some(())
                .ok_or_else(|| format!("/status: {json:#}"))
        },
    )
    .await;
    let client = connect_app(port, Duration::from_secs(5)).await;
    let served_by: i32 = client
        .query_one("SELECT inet_server_port()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        served_by,
        i32::from(replica_port),
        "a fresh read goes to the replica"
    );
    drop(client);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("causeway stopped")
        .unwrap();
}
