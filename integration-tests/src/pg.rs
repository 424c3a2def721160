//! A PostgreSQL node of a test cluster: paths, and process control (start, stop, kill).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::process::{self, pg_command};

/// Loopback address every node listens on.
pub const HOST: &str = "127.0.0.1";

/// One PostgreSQL server (primary or replica) of a [`crate::Cluster`].
///
/// Layout: `node_dir/data` is PGDATA, `node_dir/postgres.log` the server log, and
/// `node_dir` also holds the Unix socket.
#[derive(Debug, Clone)]
pub struct PgNode {
    /// "primary", "replica1", "replica2", ...
    pub name: String,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Directory of this node (socket directory, parent of data and log).
    pub node_dir: PathBuf,
    /// PGDATA.
    pub data_dir: PathBuf,
    /// Server log (pg_ctl -l).
    pub log_file: PathBuf,
}

impl PgNode {
    /// Describes node `name` living in `cluster_dir/name` on `port` (nothing is created).
    pub(crate) fn new(name: &str, cluster_dir: &Path, port: u16) -> PgNode {
        let node_dir = cluster_dir.join(name);
        PgNode {
            name: name.to_string(),
            port,
            data_dir: node_dir.join("data"),
            log_file: node_dir.join("postgres.log"),
            node_dir,
        }
    }

    /// The host to connect to: always "127.0.0.1".
    pub fn host(&self) -> &str {
        HOST
    }

    /// A libpq / tokio-postgres key-value connection string for `user` and database
    /// `db`; includes `password=secret` for the password roles `app` and `app_md5`.
    pub fn conn_string(&self, user: &str, db: &str) -> String {
        let mut s = format!("host={HOST} port={} user={user} dbname={db}", self.port);
        if user == "app" || user == "app_md5" {
            s.push_str(" password=secret");
        }
        s
    }

    /// A `psql` command line connecting to this node as `user` to database `db`.
    pub fn psql_command(&self, user: &str, db: &str) -> String {
        let password = if user == "app" || user == "app_md5" {
            "PGPASSWORD=secret "
        } else {
            ""
        };
        format!("{password}psql -h {HOST} -p {} -U {user} {db}", self.port)
    }

    /// Starts the server with `pg_ctl start -w` (after [`stop`](Self::stop) or
    /// [`kill`](Self::kill); same port). Fails with the log tail if it does not come up.
    pub fn start(&self) -> anyhow::Result<()> {
        self.remove_stale_lock_files()?;
        let out = pg_command("pg_ctl", &self.node_dir)
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file)
            .output()
            .with_context(|| format!("{}: running pg_ctl start", self.name))?;
        if !out.status.success() {
            bail!(
                "{} (port {}) failed to start: {}\n--- tail of {} ---\n{}",
                self.name,
                self.port,
                String::from_utf8_lossy(&out.stderr).trim(),
                self.log_file.display(),
                process::log_tail(&self.log_file, 20)
            );
        }
        Ok(())
    }

    /// Stops the server with `pg_ctl stop -m fast` and waits for it to be down.
    pub fn stop(&self) -> anyhow::Result<()> {
        process::run(
            pg_command("pg_ctl", &self.node_dir)
                .args(["stop", "-w", "-m", "fast", "-D"])
                .arg(&self.data_dir),
            &format!("{}: pg_ctl stop", self.name),
        )?;
        Ok(())
    }

    /// Simulates a crash: SIGKILL to the postmaster and all its child processes, then
    /// waits until they are gone (so [`start`](Self::start) can run right away).
    pub fn kill(&self) -> anyhow::Result<()> {
        let pid = self
            .postmaster_pid()
            .with_context(|| format!("{}: no postmaster.pid, is it running?", self.name))?;
        let mut pids = process::children_of(pid);
        pids.push(pid);
        process::signal(&pids, "KILL")?;
        process::wait_dead(&pids, Duration::from_secs(10))
            .with_context(|| format!("{}: waiting for killed processes", self.name))
    }

    /// Removes the lock files (`postmaster.pid`, socket lock) of a dead postmaster.
    /// PostgreSQL replaces stale ones itself unless their pid still exists, which a
    /// zombie does where PID 1 does not reap orphans (some containers).
    fn remove_stale_lock_files(&self) -> anyhow::Result<()> {
        let Some(pid) = self.postmaster_pid() else {
            return Ok(());
        };
        if process::is_alive(pid) {
            return Ok(());
        }
        let socket = self.node_dir.join(format!(".s.PGSQL.{}", self.port));
        let lock = self.node_dir.join(format!(".s.PGSQL.{}.lock", self.port));
        for path in [socket, lock, self.data_dir.join("postmaster.pid")] {
            if path.exists() {
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
        Ok(())
    }

    /// Whether the postmaster named in `postmaster.pid` is alive.
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some_and(process::is_alive)
    }

    /// The postmaster's pid from the first line of `postmaster.pid`, if present.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Begins an immediate shutdown (`pg_ctl stop -m immediate`) without waiting, for
    /// teardown; `None` when the node is not running.
    pub(crate) fn spawn_stop_immediate(&self) -> Option<Child> {
        if !self.is_running() {
            return None;
        }
        pg_command("pg_ctl", &self.node_dir)
            .args(["stop", "-w", "-m", "immediate", "-D"])
            .arg(&self.data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
    }
}
