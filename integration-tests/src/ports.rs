//! Free loopback port allocation for the servers a cluster starts.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

use anyhow::{bail, Context};

/// Ports already handed out by this process, so two nodes never get the same one.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Returns a loopback TCP port that is free right now and was not returned before by
/// this process. Another process may still take it before the caller binds it, so
/// callers retry with a new port when a server fails with "address in use".
pub fn free_port() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        let port = listener
            .local_addr()
            .context("reading bound address")?
            .port();
        drop(listener);
        let mut seen = handed_out()
            .lock()
            .map_err(|_| anyhow::anyhow!("port registry lock poisoned"))?;
        if seen.insert(port) {
            return Ok(port);
        }
    }
    bail!("could not find a free loopback port after 50 attempts")
}
