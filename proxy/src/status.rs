//! What the admin server reports about this proxy: configured nodes, pools and clients for
//! `/status`, sampled gauges for `/metrics`, and readiness (the primary accepts TCP
//! connections).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::admin::StatusSource;
use crate::context::Context;
use crate::metrics::Metrics;
use crate::monitor::{NodeStatus, Topology};

/// A readiness probe gives up on the primary after this long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// A probe result is reused for this long, so frequent `/readyz` calls cost one connect.
const PROBE_CACHE: Duration = Duration::from_secs(1);

/// The [`StatusSource`] of a running proxy.
#[derive(Debug)]
pub struct ProxyStatus {
    ctx: Context,
    // Locked only to read or store a result, never during the probe.
    last_probe: Mutex<Option<Probe>>,
}

#[derive(Debug, Clone)]
struct Probe {
    at: Instant,
    result: Result<(), String>,
}

// === impl ProxyStatus ===

impl ProxyStatus {
    /// Report on the proxy that `ctx` belongs to.
    pub fn new(ctx: Context) -> ProxyStatus {
        ProxyStatus {
            ctx,
            last_probe: Mutex::new(None),
        }
    }

    /// Configured nodes: the primary, then the replicas.
    fn nodes(&self) -> Vec<Value> {
        let primary = &self.ctx.primary;
        let mut nodes = vec![json!({
            "name": &*primary.name,
            "role": "primary",
            "host": &*primary.host,
            "port": primary.port,
        })];
        // The replicas of the latest reload.
        let live = self.ctx.reload.live();
        nodes.extend(live.config.replicas.iter().map(|r| {
            json!({
                "name": r.name,
                "role": "replica",
                "host": r.host,
                "port": r.port,
                "weight": r.weight,
            })
        }));
        let snapshot = self.ctx.topology.snapshot();
        for node in &mut nodes {
            let name = node["name"].as_str().unwrap_or_default().to_owned();
            if let (Some(status), Some(fields)) = (snapshot.node(&name), node.as_object_mut()) {
                fields.extend(monitor_fields(status));
            }
        }
        nodes
    }

    /// Every pool with its connection counts.
    fn pools(&self) -> Vec<Value> {
        let mut pools: Vec<Value> = self
            .ctx
            .pools
            .all()
            .iter()
            .map(|pool| {
                let (idle, in_use) = pool.counts();
                json!({
                    "node": &*pool.key.node,
                    "database": pool.key.database,
                    "user": pool.key.user,
                    "idle": idle,
                    "in_use": in_use,
                })
            })
            .collect();
        pools.sort_by_key(|p| p.to_string());
        pools
    }

    /// Which node is the primary (`failover`): now (`null` while there is none), the last
    /// one elected, its timeline, and how many times it changed.
    fn primary(&self) -> Value {
        let view = self.ctx.topology.primary();
        let name = |i: usize| view.name(i).map(|n| n.to_string());
        let (timeline, _) = view.timeline();
        json!({
            "mode": self.ctx.config.failover.mode.as_str(),
            "node": view.current().node.and_then(name),
            "last_elected": name(view.last_elected()),
            "timeline": (timeline > 0).then_some(timeline),
            "changes": view.changes(),
        })
    }

    /// Names of the nodes `config` (the latest reload's) configures, primary first.
    fn node_names<'a>(
        &'a self,
        config: &'a crate::config::Config,
    ) -> impl Iterator<Item = &'a str> {
        std::iter::once(&*self.ctx.primary.name)
            .chain(config.replicas.iter().map(|r| r.name.as_str()))
    }

    fn cached_probe(&self) -> Option<Result<(), String>> {
        let last = self.last_probe.lock().ok()?;
        let probe = last.as_ref()?;
        (probe.at.elapsed() < PROBE_CACHE).then(|| probe.result.clone())
    }

    /// Whether a TCP connect to the primary (the elected one while following failovers)
    /// succeeds within 1 s; cached for a moment, so frequent probes do not pile up.
    fn probe_primary(&self) -> Result<(), String> {
        if let Some(result) = self.cached_probe() {
            return result;
        }
        let elected = self.ctx.topology.primary().node_or_last();
        let primary = self.ctx.nodes.get(elected).unwrap_or(&self.ctx.primary);
        let result = connect(&primary.host, primary.port, PROBE_TIMEOUT).map_err(|err| {
            format!(
                "primary {}:{} unreachable: {err}",
                primary.host, primary.port
            )
        });
        self.store_probe(&result);
        result
    }

    fn store_probe(&self, result: &Result<(), String>) {
        if let Ok(mut last) = self.last_probe.lock() {
            *last = Some(Probe {
                at: Instant::now(),
                result: result.clone(),
            });
        }
    }
}

impl StatusSource for ProxyStatus {
    fn reload(&self) -> Result<String, String> {
        crate::reload::reload(&self.ctx)
            .map(|report| report.to_string())
            .map_err(|err| err.to_string())
    }

    fn status(&self) -> Value {
        let config = &self.ctx.config;
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "draining": self.ctx.shutdown.drain.is_cancelled(),
            "pool_mode": config.proxy.pool_mode.as_str(),
            "clients": self.ctx.clients.load(Ordering::Relaxed),
            "primary": self.primary(),
            "nodes": self.nodes(),
            "pools": self.pools(),
            "session_store": self.ctx.store.health(),
        })
    }

    /// Not ready while draining, or when a TCP connect to the primary fails within 1 s
    /// (with `[proxy] ready_without_primary`, unless a replica is in the read pool).
    /// Blocks for up to the probe timeout (the admin server calls it off the runtime).
    fn ready(&self) -> Result<(), String> {
        if self.ctx.shutdown.drain.is_cancelled() {
            return Err("shutting down".to_owned());
        }
        let primary = self.probe_primary();
        let without_primary = self.ctx.reload.live().config.proxy.ready_without_primary;
        let replica_in_pool = || {
            let snapshot = self.ctx.topology.snapshot();
            let in_pool = snapshot.replicas().any(|n| n.is_usable());
            in_pool
        };
        readiness(primary, without_primary, replica_in_pool)
    }
    fn collect(&self, metrics: &Metrics) {
        metrics.set_client_connections(self.ctx.clients.load(Ordering::Relaxed));
        let classifier = &self.ctx.classifier;
        metrics.set_classify_cache(classifier.cache_hits(), classifier.cache_misses());
        let view = self.ctx.topology.primary();
        let live = self.ctx.reload.live();
        let names: Vec<&str> = self.node_names(&live.config).collect();
        let current = view.current().node.and_then(|i| names.get(i).copied());
        metrics.set_primary(view.changes(), current, &names);
        let pools = self.ctx.pools.all();
        for node in self.node_names(&live.config) {
            let (idle, active) = pools
                .iter()
                .filter(|pool| &*pool.key.node == node)
                .map(|pool| pool.counts())
                .fold((0, 0), |(i, a), (idle, in_use)| (i + idle, a + in_use));
            metrics.set_server_connections(node, idle, active);
        }
    }
}

/// `/readyz` from the primary probe: ready when the primary is reachable; with
/// `without_primary` (`[proxy] ready_without_primary`), also while a replica is in the read
/// pool (asked only when the primary is not reachable).
fn readiness(
    primary: Result<(), String>,
    without_primary: bool,
    replica_in_pool: impl FnOnce() -> bool,
) -> Result<(), String> {
    match primary {
        Err(err) if without_primary => {
            if replica_in_pool() {
                Ok(())
            } else {
                Err(format!("{err}; no replica in the read pool either"))
            }
        }
        result => result,
    }
}

/// What the monitor knows about a node, for `/status`.
fn monitor_fields(status: &NodeStatus) -> serde_json::Map<String, Value> {
    let lsn = |l: Option<crate::lsn::Lsn>| l.map(|l| l.to_string());
    let value = json!({
        "state": status.state.label(),
        "reason": status.reason.map(|r| r.label()),
        "in_pool": status.is_usable(),
        "timeline": status.timeline,
        "insert_lsn": lsn(status.insert_lsn),
        "replay_lsn": lsn(status.replay_lsn),
        "receive_lsn": lsn(status.receive_lsn),
        "lag_bytes": status.lag_bytes,
        "lag_seconds": status.lag_seconds.map(|d| d.as_secs_f64()),
        "paused": status.paused,
        "in_recovery": status.in_recovery,
        "wal_receiver": status.wal_receiver,
        "last_sample_age_ms": status.last_sample_age().map(|d| d.as_millis() as u64),
        "last_error": status.last_error.as_deref(),
    });
    match value {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// Copy the monitor's view into the replica gauges, and new evictions into the eviction
/// counter (`seen` remembers the counts already published).
pub fn publish_topology(
    topology: &Topology,
    metrics: &Metrics,
    seen: &mut HashMap<(Arc<str>, &'static str), u64>,
) {
    let snapshot = topology.snapshot();
    for replica in snapshot.replicas() {
        metrics.set_replica(
            &replica.name,
            replica.lag_bytes.unwrap_or(0),
            replica.lag_seconds.unwrap_or_default(),
            replica.is_usable(),
        );
    }
    for (replica, reason, count) in topology.eviction_counts() {
        let before = seen.insert((replica.clone(), reason), count).unwrap_or(0);
        for _ in before..count {
            metrics.eviction(&replica, reason);
        }
    }
}

/// Open (and close) a TCP connection to `host:port`, trying each resolved address until one
/// answers or `timeout` has passed. Blocking.
fn connect(host: &str, port: u16, timeout: Duration) -> std::io::Result<()> {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    let mut last_err = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out",
            ));
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(_) => return Ok(()),
            Err(err) => last_err = err,
        }
    }
    Err(last_err)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::shutdown::Shutdown;

    fn status_for(primary_port: u16) -> ProxyStatus {
        let toml = format!(
            "[primary]\nhost = \"127.0.0.1\"\nport = {primary_port}\n\n\
             [[replicas]]\nname = \"replica1\"\nhost = \"127.0.0.1\"\nport = 1\n\n\
             [[users]]\nname = \"app\"\npassword = \"secret\"\n"
        );
        let config = Config::from_toml(&toml).unwrap();
        ProxyStatus::new(Context::new(config, Shutdown::default()).expect("context"))
    }

    #[test]
    fn status_names_the_configured_nodes() {
        let status = status_for(5432).status();
        assert_eq!(status["nodes"][0]["name"], "primary");
        assert_eq!(status["nodes"][0]["role"], "primary");
        assert_eq!(status["nodes"][1]["name"], "replica1");
        assert_eq!(status["primary"]["mode"], "off");
        assert_eq!(status["primary"]["node"], "primary");
        assert_eq!(status["primary"]["changes"], 0);
        assert_eq!(status["pools"], json!([]));
        assert_eq!(status["clients"], 0);
    }

    #[test]
    fn ready_without_primary_needs_a_replica_in_the_pool() {
        let down = || Err("primary db:5432 unreachable: refused".to_owned());
        assert_eq!(readiness(Ok(()), false, || false), Ok(()));
        assert_eq!(readiness(Ok(()), true, || false), Ok(()));
        assert_eq!(readiness(down(), false, || true), down(), "the default");
        assert_eq!(readiness(down(), true, || true), Ok(()));
        let err = readiness(down(), true, || false).unwrap_err();
        assert!(err.contains("no replica in the read pool"), "{err}");
    }

    #[test]
    fn the_opt_in_is_read_from_the_config_and_off_by_default() {
        let base = "[primary]\nhost = \"db\"\nport = 5432\n";
        let config = Config::from_toml(base).unwrap();
        assert!(!config.proxy.ready_without_primary);
        let on = format!("[proxy]\nready_without_primary = true\n\n{base}");
        assert!(Config::from_toml(&on).unwrap().proxy.ready_without_primary);
    }

    #[test]
    fn ready_follows_the_primary_and_draining() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let source = status_for(port);
        assert_eq!(source.ready(), Ok(()));
        source.ctx.shutdown.start_drain();
        assert_eq!(source.ready(), Err("shutting down".to_owned()));

        drop(listener);
        let source = status_for(port);
        let err = source.ready().unwrap_err();
        assert!(err.contains("unreachable"), "{err}");
    }

    #[test]
    fn collect_reports_every_configured_node() {
        let source = status_for(5432);
        let metrics = Metrics::new();
        source.collect(&metrics);
        let text = metrics.encode();
        for series in [
            "causeway_server_connections{node=\"primary\",state=\"idle\"} 0",
            "causeway_server_connections{node=\"replica1\",state=\"active\"} 0",
            "causeway_client_connections 0",
            "causeway_primary_changes_total 0",
            "causeway_primary{node=\"primary\"} 1",
            "causeway_primary{node=\"replica1\"} 0",
        ] {
            assert!(text.contains(series), "{series} in:\n{text}");
        }
    }
}
