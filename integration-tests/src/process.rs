//! Process helpers: running PostgreSQL tools as the right OS user, signals, /proc.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Directory holding the PostgreSQL 15 server binaries.
pub const PG_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// OS user that runs PostgreSQL when this process runs as root.
pub const PG_OS_USER: &str = "postgres";

/// Whether this process runs as root (`id -u` prints 0). PostgreSQL refuses to run as
/// root, so its tools are then run as [`PG_OS_USER`].
pub fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// Full path of a PostgreSQL binary such as `pg_ctl`.
pub fn pg_bin(name: &str) -> PathBuf {
    Path::new(PG_BIN_DIR).join(name)
}

/// A command for PostgreSQL tool `name`, run as [`PG_OS_USER`] when we are root.
/// Its working directory is `cwd` (the other user may not be able to enter ours).
pub fn pg_command(name: &str, cwd: &Path) -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_OS_USER, "--"]).arg(pg_bin(name));
        c
    } else {
        Command::new(pg_bin(name))
    };
    cmd.current_dir(cwd).stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to completion and fails, naming `what` and quoting its output, when it
/// exits unsuccessfully.
pub fn run(cmd: &mut Command, what: &str) -> anyhow::Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: could not run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Makes `path` (recursively) owned by [`PG_OS_USER`] when we are root; no-op otherwise.
pub fn chown_for_postgres(path: &Path) -> anyhow::Result<()> {
    if is_root() {
        let owner = format!("{PG_OS_USER}:{PG_OS_USER}");
        run(
            Command::new("chown").arg("-R").arg(owner).arg(path),
            "chown of the cluster directory",
        )?;
    }
    Ok(())
}

/// Whether process `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_state(&stat).is_some_and(|s| s != "Z" && s != "X"),
        Err(_) => false,
    }
}

/// The state field of a `/proc/PID/stat` line (the comm field may contain spaces).
fn stat_state(stat: &str) -> Option<&str> {
    stat.rsplit_once(')')?.1.split_whitespace().next()
}

/// The parent pid field of a `/proc/PID/stat` line.
fn stat_ppid(stat: &str) -> Option<u32> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Pids of the live direct children of `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| stat_ppid(&s))
                == Some(parent)
        })
        .collect()
}

/// Sends `signal` (e.g. "KILL", "TERM") to each pid with the `kill` command.
pub fn signal(pids: &[u32], signal: &str) -> anyhow::Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("kill");
    cmd.arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string));
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    cmd.status().context("running kill")?;
    Ok(())
}

/// Waits until none of `pids` is alive, failing after `timeout`.
pub fn wait_dead(pids: &[u32], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while pids.iter().any(|&p| is_alive(p)) {
        if Instant::now() > deadline {
            bail!("processes {pids:?} still alive after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The last `lines` lines of a log file, or a note that it cannot be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
