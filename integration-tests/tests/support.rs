//! Test support: run Causeway in-process against the shared cluster, connect clients through
//! it, and run external programs (psql, pgbench, python drivers).

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use anyhow::Context as _;
use integration_tests::{Cluster, ClusterOptions};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A Causeway instance serving on a loopback port for the duration of a test.
pub struct Proxy {
    pub addr: SocketAddr,
    /// The instance's metrics (the same registry its admin server exports).
    pub metrics: causeway::metrics::Metrics,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Start Causeway against the shared cluster's primary only (no replicas configured, so
    /// nothing is routed), with `extra` TOML merged into the config section by section.
    pub async fn start(extra: &str) -> Proxy {
        Proxy::launch(Cluster::shared(), extra, false).await
    }

    /// Start Causeway against the shared cluster with its replicas (reads are routed).
    pub async fn start_routed(extra: &str) -> Proxy {
        Proxy::launch(Cluster::shared(), extra, true).await
    }

    /// Start Causeway against `cluster` with its replicas and `extra` merged in.
    pub async fn start_with(cluster: &Cluster, extra: &str) -> Proxy {
        Proxy::launch(cluster, extra, true).await
    }

    async fn launch(cluster: &Cluster, extra: &str, replicas: bool) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy port");
        Proxy::launch_on(cluster, listener, extra, replicas).await
    }

    /// Start Causeway on `listener` (bound beforehand, e.g. so peered instances can name
    /// each other's ports in their configs).
    pub async fn launch_on(
        cluster: &Cluster,
        listener: TcpListener,
        extra: &str,
        replicas: bool,
    ) -> Proxy {
        init_logging();
        let mut toml = merge_toml(
            &cluster.causeway_config_toml("127.0.0.1:0", "127.0.0.1:0", ""),
            extra,
        );
        if !replicas {
            let mut table: toml::Table = toml.parse().expect("merged config is TOML");
            table.remove("replicas");
            toml = toml::to_string(&table).expect("serialize config");
        }
        let config = causeway::config::Config::from_toml(&toml)
            .unwrap_or_else(|e| panic!("test config rejected: {e}\n{toml}"));
        let addr = listener.local_addr().expect("proxy address");
        let ctx = causeway::Context::new(config, causeway::Shutdown::default())
            .expect("session store set up");
        let metrics = ctx.metrics.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(causeway::server::run(ctx, listener, async move {
            let _ = stopped.await;
        }));
        Proxy {
            addr,
            metrics,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Port Causeway listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// libpq-style connection string through the proxy.
    pub fn conn_string(&self, user: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password=secret dbname=app connect_timeout=10",
            self.port()
        )
    }

    /// A tokio-postgres client through the proxy (its connection task is spawned).
    pub async fn client(&self) -> tokio_postgres::Client {
        self.client_as("app")
            .await
            .expect("connect through causeway")
    }

    /// A tokio-postgres client through the proxy as `user`.
    pub async fn client_as(
        &self,
        user: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) =
            tokio_postgres::connect(&self.conn_string(user), tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Trigger a graceful shutdown (as SIGTERM does) and wait for it to finish.
    pub async fn shutdown(mut self, within: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(within, task)
                .await
                .expect("causeway shut down in time")
                .expect("causeway task did not panic");
        }
    }

    /// Trigger a graceful shutdown without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Run an external program to completion off the async runtime, with a time limit.
pub async fn run_program(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> anyhow::Result<Output> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = tokio::time::timeout(timeout, cmd.output())
        .await
        .with_context(|| format!("{program} {args:?} timed out after {timeout:?}"))?
        .with_context(|| format!("could not run {program}"))?;
    Ok(output)
}

/// Assert a program succeeded, printing its output otherwise.
pub fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Directory holding the Python driver scripts.
pub fn python_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// The SQLSTATE of a tokio-postgres error, if the server (or Causeway) sent one.
pub fn sqlstate(err: &tokio_postgres::Error) -> Option<String> {
    err.code().map(|c| c.code().to_owned())
}

/// Merge `extra` TOML into `base` section by section (keys in `extra` win).
pub fn merge_toml(base: &str, extra: &str) -> String {
    let mut base: toml::Table = base.parse().expect("harness config is TOML");
    let extra: toml::Table = extra.parse().expect("test config is TOML");
    for (key, value) in extra {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(section)), toml::Value::Table(more)) => section.extend(more),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
    toml::to_string(&base).expect("serialize merged config")
}

/// Log Causeway's tracing output when `CAUSEWAY_LOG` is set (e.g. `CAUSEWAY_LOG=debug`).
fn init_logging() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if let Ok(filter) = std::env::var("CAUSEWAY_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// One reply from an HTTP server (the admin port).
pub struct HttpReply {
    pub status: u16,
    /// Status line and headers.
    pub head: String,
    pub body: String,
}

impl HttpReply {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// `GET path` with a hand-written HTTP/1.1 request (`Connection: close`), read to EOF.
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpReply {
    http_request(addr, "GET", path).await
}

/// `method path` with a hand-written HTTP/1.1 request and no body, read to EOF.
pub async fn http_request(addr: SocketAddr, method: &str, path: &str) -> HttpReply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send HTTP request");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("HTTP reply within 10 s")
        .expect("read HTTP reply");
    let text = String::from_utf8(raw).expect("HTTP reply is UTF-8");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("incomplete HTTP reply: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status code in {head:?}"));
    HttpReply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// Waits (up to 10 s) until `proxy`'s session store answers (`causeway_session_store_up`).
pub async fn wait_store_up(proxy: &Proxy) {
    eventually(
        Duration::from_secs(10),
        "the session store comes up",
        || async {
            let up = counter(&proxy.metrics.encode(), "causeway_session_store_up", &[]);
            if up >= 1.0 {
                Ok(())
            } else {
                Err(format!("causeway_session_store_up = {up}"))
            }
        },
    )
    .await;
}

/// How often [`eventually`] asks again.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Polls `check` every 25 ms until it returns `Ok`, and returns that value. `Err` describes
/// what was observed instead; if no call that *started* after `timeout` succeeded either,
/// panics naming `what` and the last observed state (so a stalled runtime on a loaded
/// machine cannot fail a check that was never retried after the deadline).
pub async fn eventually<T, S, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    S: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, S>>,
{
    let started = tokio::time::Instant::now();
    loop {
        let late = started.elapsed() >= timeout;
        match check().await {
            Ok(value) => return value,
            Err(state) if late => panic!(
                "{what}: not within {timeout:?} (gave up after {:?}); last observed: {state}",
                started.elapsed()
            ),
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// Sum of a counter's samples in Prometheus text whose labels contain every `label=value`
/// pair given (e.g. `counter(&text, "causeway_queries_total", &[("target", "replica1")])`).
pub fn counter(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            let rest = &l[name.len()..];
            rest.starts_with('{') || rest.starts_with(' ')
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A private cluster (two replicas; Redis if `redis`) where `setup_sql` ran on the primary
/// and both replicas replayed it, and replica `delayed` (if any) then applies WAL that late.
/// Returns the primary connection used for the setup.
pub async fn prepared_cluster(
    redis: bool,
    setup_sql: &str,
    delayed: Option<(&str, Duration)>,
) -> (Cluster, tokio_postgres::Client) {
    let cluster = Cluster::start(ClusterOptions { replicas: 2, redis }).expect("cluster starts");
    let primary = setup_on_primary(&cluster, setup_sql).await;
    if let Some((replica, delay)) = delayed {
        cluster
            .node(replica)
            .set_apply_delay(delay)
            .await
            .expect("apply delay set");
    }
    (cluster, primary)
}

/// Runs `setup_sql` on `cluster`'s primary and waits until both replicas have replayed it;
/// returns the primary connection.
pub async fn setup_on_primary(
    cluster: &integration_tests::Cluster,
    setup_sql: &str,
) -> tokio_postgres::Client {
    let primary = cluster.primary.client().await.expect("primary connection");
    primary
        .batch_execute(setup_sql)
        .await
        .unwrap_or_else(|e| panic!("setup SQL failed: {e}\n{setup_sql}"));
    cluster
        .wait_replicas_caught_up(Duration::from_secs(10))
        .await
        .expect("replicas catch up");
    primary
}

/// Waits until exactly one other session on `node` runs a query matching `pattern` (SQL
/// `LIKE`): a test that cancels, conflicts with or kills a running query must not act
/// before it runs.
pub async fn wait_active(node: &tokio_postgres::Client, pattern: &str, what: &str) {
    eventually(Duration::from_secs(15), what, || async {
        let running: i64 = node
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                 AND query LIKE $1 AND pid <> pg_backend_pid()",
                &[&pattern],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        (running == 1)
            .then_some(())
            .ok_or_else(|| format!("{running} such queries active"))
    })
    .await;
}

/// Makes both replicas of `cluster` apply WAL `delay` late (`recovery_min_apply_delay`).
pub async fn delay_replicas(cluster: &integration_tests::Cluster, delay: Duration) {
    for replica in ["replica1", "replica2"] {
        cluster
            .node(replica)
            .set_apply_delay(delay)
            .await
            .expect("apply delay set");
    }
}
