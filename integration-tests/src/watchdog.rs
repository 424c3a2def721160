//! A detached shell process that tears a cluster down when the owning process dies
//! without running destructors (e.g. a shared cluster kept in a `static`).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// Waits for the owner to die (or the directory to vanish), then: SIGQUIT to every
/// postmaster (an immediate shutdown), SIGKILL to every Redis (`redis*/redis.pid`), SIGKILL to any postmaster still
/// alive after 5s, and finally removes the directory unless `$3` is "keep".
/// `alive` treats zombies as dead: where PID 1 does not reap orphans (some containers),
/// `kill -0` would report an exited process as alive forever.
const SCRIPT: &str = r#"
owner="$1"; dir="$2"; keep="$3"
alive() {
  s=$(sed -n 's/.*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null)
  [ -n "$s" ] && [ "$s" != Z ] && [ "$s" != X ]
}
while alive "$owner" && [ -d "$dir" ]; do sleep 1; done
[ -d "$dir" ] || exit 0
# Servers that are not PostgreSQL or Redis (Prometheus) leave <name>/prometheus.pid.
for f in "$dir"/*/prometheus.pid; do
  [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
done
pids=""
for f in "$dir"/*/data/postmaster.pid; do
  [ -f "$f" ] || continue
  p=$(head -n 1 "$f")
  [ -n "$p" ] && kill -QUIT "$p" 2>/dev/null && pids="$pids $p"
done
for f in "$dir"/redis*/redis.pid; do
  [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
done
i=0
for p in $pids; do
  while alive "$p" && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL "$p" 2>/dev/null
done
[ "$keep" = keep ] || rm -rf "$dir"
"#;

/// Spawns the watchdog for cluster directory `dir`, owned by this process. It runs in
/// its own process group (a Ctrl-C aimed at the tests does not kill it) with no stdio
/// inherited (it does not keep cargo waiting for output).
pub fn spawn(dir: &Path, keep: bool) -> anyhow::Result<Child> {
    Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("causeway-cluster-watchdog")
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(if keep { "keep" } else { "remove" })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("spawning the cluster watchdog (sh)")
}
