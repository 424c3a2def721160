//! Test support: run Causeway in-process against the shared cluster, connect clients through
//! it, and run external programs (psql, pgbench, python drivers).

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use anyhow::Context as _;
use integration_tests::Cluster;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A Causeway instance serving on a loopback port for the duration of a test.
pub struct Proxy {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Start Causeway against the shared cluster with `extra` TOML appended to the config
    /// (later keys of a section must be given as whole sections, e.g. `[auth]`).
    pub async fn start(extra: &str) -> Proxy {
        Proxy::start_with(Cluster::shared(), extra).await
    }

    /// Start Causeway against `cluster` with `proxy_keys` inside `[proxy]` and `extra`
    /// sections appended.
    pub async fn start_with(cluster: &Cluster, extra: &str) -> Proxy {
        init_logging();
        let toml = merge_toml(
            &cluster.causeway_config_toml("127.0.0.1:0", "127.0.0.1:0", ""),
            extra,
        );
        let config = causeway::config::Config::from_toml(&toml)
            .unwrap_or_else(|e| panic!("test config rejected: {e}\n{toml}"));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy port");
        let addr = listener.local_addr().expect("proxy address");
        let ctx = causeway::Context::new(config, causeway::Shutdown::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(causeway::server::run(ctx, listener, async move {
            let _ = stopped.await;
        }));
        Proxy {
            addr,
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
