//! A `redis-server` child process of a test cluster, plus a tiny raw RESP client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use std::os::unix::process::CommandExt;

use crate::ports::free_port;
use crate::process;

/// How many ports [`RedisNode::create`] tries before giving up.
const PORT_ATTEMPTS: usize = 5;

/// A Redis server on 127.0.0.1 without persistence.
#[derive(Debug)]
pub struct RedisNode {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Working directory (`--dir`), holding the pid file and log.
    pub dir: PathBuf,
    /// Server log.
    pub log_file: PathBuf,
    /// A config file passed first (Sentinel mode needs one it can rewrite).
    config_file: Option<PathBuf>,
    /// Extra `redis-server` arguments (e.g. cluster mode).
    extra_args: Vec<String>,
    /// Pid file (used by the cluster watchdog).
    pub pid_file: PathBuf,
    child: Mutex<Option<Child>>,
}

impl RedisNode {
    /// Starts a server in `dir` (created) on a free port, retrying on port clashes.
    pub(crate) fn create(dir: &Path) -> anyhow::Result<RedisNode> {
        RedisNode::create_with(dir, &[])
    }

    /// Starts a Sentinel in `dir` that monitors the server on `primary_port` as
    /// `service` (quorum 1, down after 1 s).
    pub(crate) fn create_sentinel(
        dir: &Path,
        service: &str,
        primary_port: u16,
    ) -> anyhow::Result<RedisNode> {
        std::fs::create_dir_all(dir).context("creating sentinel directory")?;
        let config = dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "sentinel monitor {service} 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds {service} 1000\n\
                 sentinel failover-timeout {service} 5000\n"
            ),
        )
        .context("writing sentinel.conf")?;
        RedisNode::create_inner(dir, Some(config), &["--sentinel"])
    }

    /// Starts a server in `dir` with extra `redis-server` arguments.
    pub(crate) fn create_with(dir: &Path, extra_args: &[&str]) -> anyhow::Result<RedisNode> {
        RedisNode::create_inner(dir, None, extra_args)
    }

    fn create_inner(
        dir: &Path,
        config_file: Option<PathBuf>,
        extra_args: &[&str],
    ) -> anyhow::Result<RedisNode> {
        std::fs::create_dir_all(dir).context("creating redis directory")?;
        let mut last_err = anyhow!("redis: no start attempted");
        for _ in 0..PORT_ATTEMPTS {
            let node = RedisNode {
                port: free_port()?,
                dir: dir.to_path_buf(),
                log_file: dir.join("redis.log"),
                pid_file: dir.join("redis.pid"),
                config_file: config_file.clone(),
                extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
                child: Mutex::new(None),
            };
            match node.start() {
                Ok(()) => return Ok(node),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and waits until it answers as itself.
    pub fn start(&self) -> anyhow::Result<()> {
        let mut guard = self.lock()?;
        if let Some(child) = guard.as_mut() {
            if child.try_wait()?.is_none() {
                return Ok(());
            }
        }
        let child = Command::new("redis-server")
            .args(&self.config_file)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            // DEBUG SLEEP makes the server slow on purpose in fault tests.
            .args(["--enable-debug-command", "local"])
            .args(&self.extra_args)
            .arg("--dir")
            .arg(&self.dir)
            .arg("--pidfile")
            .arg(&self.pid_file)
            .arg("--logfile")
            .arg(&self.log_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("spawning redis-server (is it installed? see scripts/setup.sh)")?;
        let pid = child.id();
        *guard = Some(child);
        drop(guard);
        self.wait_ready(pid)
    }

    /// Waits until the server on our port reports our child's pid.
    fn wait_ready(&self, pid: u32) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let want = format!("process_id:{pid}\r\n");
        loop {
            if let Ok(info) = command(self.port, "INFO server") {
                if info.contains(&want) {
                    return Ok(());
                }
            }
            let exited = self.lock()?.as_mut().map(|c| c.try_wait()).transpose()?;
            if exited.flatten().is_some() || Instant::now() > deadline {
                let _ = self.kill();
                bail!(
                    "redis-server on port {} did not start\n--- tail of {} ---\n{}",
                    self.port,
                    self.log_file.display(),
                    process::log_tail(&self.log_file, 10)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(&self) -> anyhow::Result<()> {
        self.signal_and_reap("TERM")
    }

    /// Kills the server with SIGKILL and waits for it to exit.
    pub fn kill(&self) -> anyhow::Result<()> {
        self.signal_and_reap("KILL")
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        match self.lock() {
            Ok(mut g) => g.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None))),
            Err(_) => false,
        }
    }

    fn signal_and_reap(&self, signal: &str) -> anyhow::Result<()> {
        let mut guard = self.lock()?;
        if let Some(mut child) = guard.take() {
            process::signal(&[child.id()], signal)?;
            child.wait().context("waiting for redis-server to exit")?;
        }
        Ok(())
    }

    fn lock(&self) -> anyhow::Result<MutexGuard<'_, Option<Child>>> {
        self.child
            .lock()
            .map_err(|_| anyhow!("redis child lock poisoned"))
    }
}

/// Sends one inline command (e.g. `PING`) to the Redis server on `port` and returns the
/// raw reply text (a simple reply line, or a bulk reply read until complete).
pub fn command(port: u16, cmd: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(format!("{cmd}\r\n").as_bytes())?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !reply_complete(&reply) {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// Whether `reply` holds a complete RESP simple or bulk reply.
fn reply_complete(reply: &[u8]) -> bool {
    let text = String::from_utf8_lossy(reply);
    let Some((head, rest)) = text.split_once("\r\n") else {
        return false;
    };
    match head.strip_prefix('$').map(str::parse::<usize>) {
        Some(Ok(len)) => rest.len() >= len + 2,
        _ => true,
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
