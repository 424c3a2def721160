//! Reload in place against the real cluster: `POST /reload` applies users, consistency
//! defaults and rules to new connections while open ones keep working, reports the keys
//! that need a restart, and changes nothing for an invalid file; twenty reloads while
//! pgbench runs (a new connection per transaction), half of them removing a replica and
//! half adding it back, cost no client an error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use integration_tests::ports::free_port;
use integration_tests::Cluster;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::support::{
    assert_success, counter, eventually, http_get, http_request, merge_toml, run_program, sqlstate,
};

const PGBENCH: &str = "/usr/lib/postgresql/15/bin/pgbench";

/// Causeway started from a config file, as the binary is, so a reload rereads it.
pub(crate) struct Instance {
    pub(crate) addr: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) file: PathBuf,
    base: String,
    /// The monitor's view, to wait for admissions and evictions.
    pub(crate) topology: causeway::monitor::Topology,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Instance {
    async fn start(extra: &str) -> Instance {
        Instance::start_on(Cluster::shared(), None, extra).await
    }

    /// Causeway on `cluster` with only `app` of its users and, when `replicas` is given,
    /// only those of its replicas.
    pub(crate) async fn start_on(
        cluster: &Cluster,
        replicas: Option<&[&str]>,
        extra: &str,
    ) -> Instance {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
        let mut table: toml::Table = cluster
            .causeway_config_toml("127.0.0.1:0", &admin.to_string(), "")
            .parse()
            .unwrap();
        // Only `app` at first: `app_md5` comes in with a reload.
        if let Some(toml::Value::Array(users)) = table.get_mut("users") {
            users.retain(|u| u.get("name").and_then(|n| n.as_str()) == Some("app"));
        }
        if let (Some(keep), Some(toml::Value::Array(list))) = (replicas, table.get_mut("replicas"))
        {
            list.retain(|r| {
                r.get("name")
                    .and_then(|n| n.as_str())
                    .is_some_and(|n| keep.contains(&n))
            });
        }
        let base = toml::to_string(&table).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("causeway.toml");
        std::fs::write(&file, merge_toml(&base, extra)).unwrap();
        let config = causeway::config::Config::load(&file).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ctx = causeway::Context::new(config, causeway::Shutdown::default()).unwrap();
        ctx.reload.set_path(file.clone());
        let topology = ctx.topology.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(causeway::server::run(ctx, listener, async move {
            let _ = stopped.await;
        }));
        let instance = Instance {
            addr,
            admin,
            file,
            base,
            topology,
            _dir: dir,
            stop: Some(stop),
            task,
        };
        eventually(Duration::from_secs(10), "admin server up", || async {
            tokio::net::TcpStream::connect(admin)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await;
        instance
    }

    /// Rewrites the file as the base config with `extra` merged in.
    pub(crate) fn write(&self, extra: &str) {
        std::fs::write(&self.file, merge_toml(&self.base, extra)).unwrap();
    }

    pub(crate) async fn reload(&self) -> (u16, String) {
        let reply = http_request(self.admin, "POST", "/reload").await;
        (reply.status, reply.body)
    }

    /// The admin console (database `causeway`) as `app`.
    pub(crate) async fn console(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let conn = format!(
            "host=127.0.0.1 port={} user=app password=secret dbname=causeway",
            self.addr.port()
        );
        let (console, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(console)
    }

    pub(crate) async fn connect(
        &self,
        user: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let conn = format!(
            "host=127.0.0.1 port={} user={user} password=secret dbname=app connect_timeout=10",
            self.addr.port()
        );
        let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    pub(crate) async fn reloads(&self, result: &str) -> f64 {
        let text = http_get(self.admin, "/metrics").await.body;
        counter(
            &text,
            "causeway_config_reloads_total",
            &[("result", result)],
        )
    }

    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .expect("causeway stopped")
            .unwrap();
    }
}

async fn show(client: &tokio_postgres::Client, what: &str) -> String {
    let rows = client.simple_query(&format!("SHOW {what}")).await.unwrap();
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap()
}

#[tokio::test]
async fn reload_applies_users_and_defaults_to_new_connections_and_keeps_open_ones() {
    let causeway = Instance::start("[consistency]\ndefault = \"session\"\n").await;
    let open = causeway.connect("app").await.unwrap();
    assert_eq!(show(&open, "causeway.consistency").await, "session");
    let refused = causeway
        .connect("app_md5")
        .await
        .expect_err("not a user yet");
    assert!(
        sqlstate(&refused).is_some_and(|c| c.starts_with("28")),
        "{refused}"
    );
    assert_eq!(causeway.reloads("success").await, 0.0);

    // Users (the list replaces the old one), a consistency default, the lag limits and a
    // restart-only key change together.
    causeway.write(
        "[consistency]\ndefault = \"eventual\"\n\n\
         [[users]]\nname = \"app\"\npassword = \"secret\"\n\n\
         [[users]]\nname = \"app_md5\"\npassword = \"secret\"\n\n\
         [lag]\nmax_bytes = 4096\n\n[proxy]\nworkers = 3\n",
    );
    let (status, body) = causeway.reload().await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("users") && body.contains("consistency"),
        "{body}"
    );
    assert!(
        body.contains("lag") && body.contains("need a restart (left as they were): proxy.workers"),
        "{body}"
    );
    assert_eq!(causeway.reloads("success").await, 1.0);

    let added = causeway
        .connect("app_md5")
        .await
        .expect("app_md5 after reload");
    added.simple_query("SELECT 1").await.unwrap();
    let fresh = causeway.connect("app").await.unwrap();
    assert_eq!(show(&fresh, "causeway.consistency").await, "eventual");
    // The connection that was open keeps working, with the settings it started with.
    assert_eq!(show(&open, "causeway.consistency").await, "session");
    open.simple_query("SELECT 1").await.unwrap();

    // An invalid file changes nothing and says why.
    std::fs::write(&causeway.file, "[proxy]\npool_size = \"many\"\n").unwrap();
    let (status, body) = causeway.reload().await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("nothing changed"), "{body}");
    assert_eq!(causeway.reloads("failure").await, 1.0);
    let still = causeway
        .connect("app_md5")
        .await
        .expect("previous users stay");
    assert_eq!(show(&still, "causeway.consistency").await, "eventual");
    assert_eq!(
        http_request(causeway.admin, "GET", "/reload").await.status,
        405
    );

    // The console's RELOAD does the same.
    causeway.write("[proxy]\nadmin_users = [\"app\"]\n");
    assert_eq!(causeway.reload().await.0, 200);
    let console = causeway
        .console()
        .await
        .expect("app is an admin user after the reload");
    std::fs::write(&causeway.file, "not toml at all").unwrap();
    let err = console
        .simple_query("RELOAD")
        .await
        .expect_err("invalid file");
    assert_eq!(sqlstate(&err).as_deref(), Some("F0000"), "{err}");
    causeway.write("[proxy]\nadmin_users = [\"app\"]\n\n[consistency]\ndefault = \"strong\"\n");
    console.simple_query("RELOAD").await.expect("RELOAD");
    let fresh = causeway.connect("app").await.unwrap();
    assert_eq!(show(&fresh, "causeway.consistency").await, "strong");
    assert_eq!(causeway.reloads("failure").await, 2.0);

    // Pool sizes change in place, for the pools that exist.
    causeway.write("[proxy]\nadmin_users = [\"app\"]\npool_size = 3\n");
    console.simple_query("RELOAD").await.expect("RELOAD");
    let pools = console.simple_query("SHOW POOLS").await.unwrap();
    let sizes: Vec<(String, String)> = pools
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some((
                row.get("user")?.to_owned(),
                row.get("pool_size")?.to_owned(),
            )),
            _ => None,
        })
        .collect();
    // app_md5 is no longer listed: its pool keeps its size while its sessions last.
    let app: Vec<&str> = sizes
        .iter()
        .filter(|(user, _)| user == "app")
        .map(|(_, size)| size.as_str())
        .collect();
    assert!(
        !app.is_empty() && app.iter().all(|size| *size == "3"),
        "{sizes:?}"
    );
    causeway.stop().await;
}

#[tokio::test]
async fn reload_twenty_times_under_pgbench_costs_no_client_an_error() {
    let causeway = Instance::start("").await;
    let setup = causeway.connect("app").await.unwrap();
    setup
        .batch_execute(
            "DROP TABLE IF EXISTS reload_bench; \
             CREATE TABLE reload_bench (id int PRIMARY KEY, v int NOT NULL DEFAULT 0); \
             INSERT INTO reload_bench (id) SELECT g FROM generate_series(1, 100) g",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bench.sql");
    std::fs::write(
        &script,
        "\\set id random(1, 100)\n\
         UPDATE reload_bench SET v = v + 1 WHERE id = :id;\n\
         SELECT v FROM reload_bench WHERE id = :id;\n",
    )
    .unwrap();
    let port = causeway.addr.port().to_string();
    let env = [("PGPASSWORD", "secret")];
    let script_path = script.to_str().unwrap().to_owned();
    let bench = tokio::spawn(async move {
        let args = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "app",
            "-n",
            "-c",
            "4",
            "-j",
            "2",
            "-T",
            "8",
            "-f",
            &script_path,
            "app",
        ];
        let persistent = run_program(PGBENCH, &args, &env, Duration::from_secs(60));
        // A second run opens a new connection per transaction, so reloads meet logins.
        let mut args_c = args.to_vec();
        args_c.insert(0, "-C");
        let reconnecting = run_program(PGBENCH, &args_c, &env, Duration::from_secs(60));
        let (a, b) = tokio::join!(persistent, reconnecting);
        (a.unwrap(), b.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Every other reload removes replica2 and the next adds it back (with the lag limits
    // moved too): reads move off it and back while pgbench runs.
    let cluster = Cluster::shared();
    let replica = |name: &str| {
        let port = cluster.node(name).port;
        format!("[[replicas]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\n\n")
    };
    for round in 0..20 {
        let wait = if round % 2 == 0 { "30ms" } else { "20ms" };
        let (replicas, max_bytes) = if round % 2 == 0 {
            (replica("replica1"), 8 << 20)
        } else {
            (replica("replica1") + &replica("replica2"), 16 << 20)
        };
        causeway.write(&format!(
            "[consistency]\nmax_wait = \"{wait}\"\n\n[lag]\nmax_bytes = {max_bytes}\n\n\
             [[rules]]\ntag = \"round{round}\"\nroute = \"primary\"\n\n{replicas}"
        ));
        let (status, body) = causeway.reload().await;
        assert_eq!(status, 200, "reload {round}: {body}");
        let moved = if round % 2 == 0 { "removed" } else { "added" };
        assert!(
            body.contains(&format!("replicas {moved}: replica2")),
            "reload {round}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (persistent, reconnecting) = bench.await.unwrap();
    for (what, out) in [("pgbench", &persistent), ("pgbench -C", &reconnecting)] {
        assert_success(what, out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("number of failed transactions: 0"),
            "{what}:\n{stdout}"
        );
        eprintln!(
            "{what}: {}",
            stdout
                .lines()
                .find(|l| l.contains("actually processed"))
                .unwrap_or_default()
        );
    }
    assert_eq!(causeway.reloads("success").await, 20.0);
    assert_eq!(causeway.reloads("failure").await, 0.0);
    causeway.stop().await;
}
