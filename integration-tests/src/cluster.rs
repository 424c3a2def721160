//! The test cluster: a primary, streaming replicas and Redis in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio_postgres::types::PgLsn;

use crate::pg::{PgNode, HOST};
use crate::pg_init::{create_primary, create_replica};
use crate::process::chown_for_postgres;
use crate::redis::RedisNode;
use crate::watchdog;

/// Environment variable that, when set to `1`, keeps the cluster directory on teardown.
pub const KEEP_ENV: &str = "CAUSEWAY_KEEP_CLUSTER";

/// What [`Cluster::start`] starts.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of streaming replicas, named replica1, replica2, ... (default 2).
    pub replicas: usize,
    /// Whether to start a Redis server (default true).
    pub redis: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            replicas: 2,
            redis: true,
        }
    }
}

/// A server certificate and its key (PEM) for [`Cluster::start_tls`].
#[derive(Debug, Clone)]
pub struct ServerCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A running cluster. Dropping it stops every server immediately and removes its
/// directory; a watchdog process does the same if this process dies without Drop.
#[derive(Debug)]
pub struct Cluster {
    /// The primary (node name "primary").
    pub primary: PgNode,
    /// Hot standbys streaming from the primary ("replica1", ...).
    pub replicas: Vec<PgNode>,
    /// Redis, if [`ClusterOptions::redis`].
    pub redis: Option<RedisNode>,
    teardown: Teardown,
}

impl Cluster {
    /// Starts a cluster in a fresh temporary directory (blocking, a few seconds).
    pub fn start(opts: ClusterOptions) -> anyhow::Result<Cluster> {
        Cluster::start_inner(opts, None)
    }

    /// [`Cluster::start`] with `ssl = on` on every node (`cert` in each data directory) and
    /// a pg_hba that admits the test users over TLS only (`hostssl`); the harness's own
    /// `postgres` logins and replication stay plaintext, and role `app_clear` (created by the
    /// test) may log in with a cleartext password on any connection.
    pub fn start_tls(opts: ClusterOptions, cert: &ServerCertificate) -> anyhow::Result<Cluster> {
        Cluster::start_inner(opts, Some(cert))
    }

    fn start_inner(
        opts: ClusterOptions,
        tls: Option<&ServerCertificate>,
    ) -> anyhow::Result<Cluster> {
        let dir = make_dir()?;
        let keep = std::env::var(KEEP_ENV).is_ok_and(|v| v == "1");
        if keep {
            eprintln!(
                "{KEEP_ENV}=1: cluster directory {} will be kept",
                dir.display()
            );
        }
        let mut teardown = Teardown {
            dir: dir.clone(),
            keep,
            watchdog: None,
        };
        teardown.watchdog = Some(watchdog::spawn(&dir, keep)?);
        let primary = create_primary(&dir, tls)
            .with_context(|| format!("starting the primary in {}", dir.display()))?;
        let redis = start_redis_if(opts.redis, &dir);
        let replicas = start_replicas(&dir, &primary, opts.replicas);
        let redis = redis
            .join()
            .map_err(|_| anyhow::anyhow!("redis thread panicked"))?;
        let replicas = replicas.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        let redis = redis?;
        Ok(Cluster {
            primary,
            replicas,
            redis,
            teardown,
        })
    }

    /// The process-wide default cluster ([`ClusterOptions::default`]), started on first
    /// use. Tests sharing it must not stop, pause, delay or promote its nodes.
    ///
    /// # Panics
    /// If the cluster cannot start; the message names what failed and where its log is.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
        let started = SHARED.get_or_init(|| {
            Cluster::start(ClusterOptions::default()).map_err(|e| format!("{e:#}"))
        });
        match started {
            Ok(c) => c,
            Err(e) => panic!(
                "the shared test cluster could not start (run scripts/setup.sh to install \
                 PostgreSQL 15 and redis-server; set {KEEP_ENV}=1 to keep its directory \
                 for inspection): {e}"
            ),
        }
    }

    /// The cluster's temporary directory.
    pub fn dir(&self) -> &Path {
        &self.teardown.dir
    }

    /// Starts another Redis server in `dir/redis-<name>` (for tests that kill or slow it
    /// without disturbing the cluster's own). Stopped on drop, or by the watchdog.
    pub fn start_redis(&self, name: &str) -> anyhow::Result<RedisNode> {
        RedisNode::create(&self.dir().join(format!("redis-{name}")))
    }

    /// Starts a Redis server in `dir/redis-<name>` replicating from `primary`.
    pub fn start_redis_replica(
        &self,
        name: &str,
        primary: &RedisNode,
    ) -> anyhow::Result<RedisNode> {
        let port = primary.port.to_string();
        RedisNode::create_with(
            &self.dir().join(format!("redis-{name}")),
            &["--replicaof", "127.0.0.1", &port],
        )
    }

    /// Starts a Redis Sentinel in `dir/redis-<name>` monitoring `primary` as `service`.
    pub fn start_sentinel(
        &self,
        name: &str,
        service: &str,
        primary: &RedisNode,
    ) -> anyhow::Result<RedisNode> {
        RedisNode::create_sentinel(
            &self.dir().join(format!("redis-{name}")),
            service,
            primary.port,
        )
    }

    /// Starts a Redis Cluster of `count` primaries under this cluster's directory.
    pub fn start_redis_cluster(&self, count: usize) -> anyhow::Result<crate::RedisCluster> {
        crate::RedisCluster::start(self.dir(), count)
    }

    /// The node named `name` ("primary", "replica1", ...), if any.
    pub fn get_node(&self, name: &str) -> Option<&PgNode> {
        std::iter::once(&self.primary)
            .chain(&self.replicas)
            .find(|n| n.name == name)
    }

    /// The node named `name` ("primary", "replica1", ...).
    ///
    /// # Panics
    /// If there is no such node.
    pub fn node(&self, name: &str) -> &PgNode {
        match self.get_node(name) {
            Some(n) => n,
            None => panic!("no node named {name:?} in this cluster"),
        }
    }

    /// Waits until every running, unpaused replica that is still in recovery has replayed
    /// up to the primary's current insert LSN (normalized past a page header).
    pub async fn wait_replicas_caught_up(&self, timeout: Duration) -> anyhow::Result<()> {
        let target = self
            .primary
            .lsns()
            .await?
            .insert
            .context("primary has no insert LSN")?;
        let target = normalize_lsn(target);
        let deadline = Instant::now() + timeout;
        for replica in &self.replicas {
            if !replica.is_running() || replica.is_replay_paused().await? {
                continue;
            }
            loop {
                let lsns = replica.lsns().await?;
                if !lsns.in_recovery || lsns.replay.is_some_and(|r| r >= target) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{} did not catch up within {timeout:?}: replay {:?} < primary {target}",
                        replica.name,
                        lsns.replay
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(())
    }

    /// A Causeway TOML config (DESIGN.md §6) for this cluster: `[proxy]` with the given
    /// listen addresses, `[primary]`, one `[[replicas]]` per replica and `[[users]]` for
    /// app / app_md5 (password "secret") and app_trust (empty password), followed by
    /// `extra` verbatim (e.g. `[auth]` or `[session_store]` sections).
    pub fn causeway_config_toml(&self, listen: &str, admin_listen: &str, extra: &str) -> String {
        let mut s = format!(
            "# generated by the causeway integration-tests harness for {}\n",
            self.dir().display()
        );
        s += &format!("[proxy]\nlisten = \"{listen}\"\nadmin_listen = \"{admin_listen}\"\n\n");
        s += &format!(
            "[primary]\nhost = \"{HOST}\"\nport = {}\n\n",
            self.primary.port
        );
        for r in &self.replicas {
            s += &format!(
                "[[replicas]]\nname = \"{}\"\nhost = \"{HOST}\"\nport = {}\n\n",
                r.name, r.port
            );
        }
        for (user, password) in [("app", "secret"), ("app_md5", "secret"), ("app_trust", "")] {
            s += &format!("[[users]]\nname = \"{user}\"\npassword = \"{password}\"\n\n");
        }
        if let Some(redis) = &self.redis {
            s += &format!(
                "# Redis for [session_store] kind = \"redis\": {}\n",
                redis.url()
            );
        }
        s + extra
    }
}

/// Creates the cluster directory (owned by the postgres OS user when we are root).
fn make_dir() -> anyhow::Result<PathBuf> {
    let dir = tempfile::Builder::new()
        .prefix("causeway-cluster-")
        .tempdir()
        .context("creating the cluster temp directory")?
        .keep();
    chown_for_postgres(&dir)?;
    Ok(dir)
}

/// Starts Redis in `dir/redis` on a background thread when `enabled`.
fn start_redis_if(
    enabled: bool,
    dir: &Path,
) -> std::thread::JoinHandle<anyhow::Result<Option<RedisNode>>> {
    let redis_dir = dir.join("redis");
    std::thread::spawn(move || {
        if !enabled {
            return Ok(None);
        }
        RedisNode::create(&redis_dir).map(Some)
    })
}

/// Creates and starts `count` replicas in parallel.
fn start_replicas(dir: &Path, primary: &PgNode, count: usize) -> Vec<anyhow::Result<PgNode>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (1..=count)
            .map(|i| {
                let name = format!("replica{i}");
                scope.spawn(move || {
                    create_replica(dir, &name, primary)
                        .with_context(|| format!("starting {name} in {}", dir.display()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("replica thread panicked")))
            })
            .collect()
    })
}

/// If `lsn` points just past a WAL page header (short header: 24 bytes into an 8 KiB
/// page; long header: 40 bytes into a 16 MiB segment), returns the page start: a
/// replica that replayed everything reports the page start until more WAL arrives.
pub fn normalize_lsn(lsn: PgLsn) -> PgLsn {
    const PAGE: u64 = 8192;
    const SEGMENT: u64 = 16 * 1024 * 1024;
    let v = u64::from(lsn);
    if v % SEGMENT == 40 || (v % PAGE == 24 && v % SEGMENT != 24) {
        PgLsn::from(v - v % PAGE)
    } else {
        lsn
    }
}

/// Stops every PostgreSQL server under the directory and removes it on drop (Redis is
/// stopped by [`RedisNode`]'s own Drop). Also used when [`Cluster::start`] fails halfway.
#[derive(Debug)]
struct Teardown {
    dir: PathBuf,
    keep: bool,
    watchdog: Option<Child>,
}

impl Teardown {
    /// Every node found under the directory (whatever got created so far).
    fn nodes_on_disk(&self) -> Vec<PgNode> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .map(|name| PgNode::new(&name, &self.dir, 0))
            .filter(|n| n.data_dir.is_dir())
            .collect()
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Some(mut child) = self.watchdog.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let nodes = self.nodes_on_disk();
        let stops: Vec<Child> = nodes
            .iter()
            .filter_map(PgNode::spawn_stop_immediate)
            .collect();
        for mut c in stops {
            let _ = c.wait();
        }
        if self.keep {
            eprintln!(
                "{KEEP_ENV}=1: keeping cluster directory {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
