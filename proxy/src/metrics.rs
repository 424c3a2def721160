//! Prometheus metrics: one [`Metrics`] handle owning its registry (no global registry, so tests
//! can isolate it), typed recording methods whose label values come from enums or configured
//! node names, and RAII guards for in-flight gauges. The admin server exports it.

mod family;
mod known;
mod labels;
mod read;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Registry,
};

pub use labels::{
    CacheResult, ConnState, FallbackReason, ProtocolKind, ReloadResult, RouteReason, StoreOp,
    WaitOutcome,
};
pub use read::NodeTotals;

/// All of Causeway's metrics. A cheap clonable handle; clones share one registry.
#[derive(Clone)]
pub struct Metrics {
    shared: Arc<Shared>,
}

struct Shared {
    registry: Registry,
    replica_lag_bytes: IntGaugeVec,
    replica_lag_seconds: GaugeVec,
    replica_in_pool: IntGaugeVec,
    replica_lag_max_bytes: IntGauge,
    replica_lag_max_seconds: Gauge,
    replica_evictions: IntCounterVec,
    queries: IntCounterVec,
    query_duration: HistogramVec,
    consistency_fallbacks: IntCounterVec,
    consistency_wait: Histogram,
    consistency_waits: IntCounterVec,
    session_store_errors: IntCounterVec,
    session_store_duration: HistogramVec,
    session_store_up: IntGauge,
    client_connections: IntGauge,
    server_connections: IntGaugeVec,
    hint_errors: IntCounter,
    clients_waiting: IntGauge,
    checkout_wait: HistogramVec,
    pins: IntCounterVec,
    protocol_errors: IntCounterVec,
    classify_cache: IntCounterVec,
    config_reloads: IntCounterVec,
    primary_changes: IntCounter,
    primary: IntGaugeVec,
    /// Serialises [`Metrics::set_classify_cache`]'s read-then-add.
    classify_cache_sync: Mutex<()>,
}

// === impl Metrics ===

impl Metrics {
    /// A fresh set of metrics in a new registry.
    pub fn new() -> Metrics {
        match Metrics::try_new() {
            Ok(metrics) => metrics,
            // Names, labels and buckets are constants: this fails only if one is malformed or
            // registered twice, which the unit tests rule out.
            Err(err) => unreachable!("static metric definitions are invalid: {err}"),
        }
    }

    fn try_new() -> prometheus::Result<Metrics> {
        use family::*;
        let r = Registry::new();
        let shared = Shared {
            replica_lag_bytes: REPLICA_LAG_BYTES.gauge_vec(&r)?,
            replica_lag_seconds: REPLICA_LAG_SECONDS.float_gauge_vec(&r)?,
            replica_in_pool: REPLICA_IN_POOL.gauge_vec(&r)?,
            replica_lag_max_bytes: REPLICA_LAG_MAX_BYTES.gauge(&r)?,
            replica_lag_max_seconds: REPLICA_LAG_MAX_SECONDS.float_gauge(&r)?,
            replica_evictions: REPLICA_EVICTIONS.counter_vec(&r)?,
            queries: QUERIES.counter_vec(&r)?,
            query_duration: QUERY_DURATION.histogram_vec(&r)?,
            consistency_fallbacks: CONSISTENCY_FALLBACKS.counter_vec(&r)?,
            consistency_wait: CONSISTENCY_WAIT.histogram(&r)?,
            consistency_waits: CONSISTENCY_WAITS.counter_vec(&r)?,
            session_store_errors: SESSION_STORE_ERRORS.counter_vec(&r)?,
            session_store_duration: SESSION_STORE_DURATION.histogram_vec(&r)?,
            session_store_up: SESSION_STORE_UP.gauge(&r)?,
            client_connections: CLIENT_CONNECTIONS.gauge(&r)?,
            server_connections: SERVER_CONNECTIONS.gauge_vec(&r)?,
            hint_errors: HINT_ERRORS.counter(&r)?,
            clients_waiting: CLIENTS_WAITING.gauge(&r)?,
            checkout_wait: CHECKOUT_WAIT.histogram_vec(&r)?,
            pins: PINS.counter_vec(&r)?,
            protocol_errors: PROTOCOL_ERRORS.counter_vec(&r)?,
            classify_cache: CLASSIFY_CACHE.counter_vec(&r)?,
            config_reloads: CONFIG_RELOADS.counter_vec(&r)?,
            primary_changes: PRIMARY_CHANGES.counter(&r)?,
            primary: PRIMARY.gauge_vec(&r)?,
            classify_cache_sync: Mutex::new(()),
            registry: r,
        };
        shared.session_store_up.set(1);
        BUILD_INFO
            .gauge_vec(&shared.registry)?
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // Counters whose label values are all known start at 0, so the first event shows
        // up as an increase.
        for reason in FallbackReason::ALL {
            shared
                .consistency_fallbacks
                .with_label_values(&[reason.as_str()]);
        }
        for outcome in WaitOutcome::ALL {
            shared
                .consistency_waits
                .with_label_values(&[outcome.as_str()]);
        }
        for result in CacheResult::ALL {
            shared.classify_cache.with_label_values(&[result.as_str()]);
        }
        for op in StoreOp::ALL {
            shared
                .session_store_errors
                .with_label_values(&[op.as_str()]);
        }
        for result in ReloadResult::ALL {
            shared.config_reloads.with_label_values(&[result.as_str()]);
        }
        Ok(Metrics {
            shared: Arc::new(shared),
        })
    }

    /// Everything in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        family::encode(&self.shared.registry)
    }

    // --- routing and consistency ---

    /// A query was routed to `target` (a node name) for `reason`.
    pub fn query(&self, target: &str, reason: RouteReason) {
        self.shared
            .queries
            .with_label_values(&[target, reason.as_str()])
            .inc();
    }

    /// A query on `target` took `elapsed` (forwarded until the server was ready again).
    pub fn query_duration(&self, target: &str, elapsed: Duration) {
        self.shared
            .query_duration
            .with_label_values(&[target])
            .observe(elapsed.as_secs_f64());
    }

    /// A read fell back to the primary for `reason`.
    pub fn fallback(&self, reason: FallbackReason) {
        self.shared
            .consistency_fallbacks
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// A read waited `waited` for a replica to catch up with the session.
    pub fn consistency_wait(&self, waited: Duration) {
        self.shared.consistency_wait.observe(waited.as_secs_f64());
    }

    /// What waiting for a replica did for a read whose floor was ahead of every replica.
    pub fn wait_outcome(&self, outcome: WaitOutcome) {
        self.shared
            .consistency_waits
            .with_label_values(&[outcome.as_str()])
            .inc();
    }

    /// The classifier's running totals of cache hits and misses (kept by the classifier,
    /// which has no metrics handle; copied here when metrics are collected). Totals
    /// never go down, so the counters only ever advance to them.
    pub fn set_classify_cache(&self, hits: u64, misses: u64) {
        let _sync = self
            .shared
            .classify_cache_sync
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (result, total) in [(CacheResult::Hit, hits), (CacheResult::Miss, misses)] {
            let counter = self
                .shared
                .classify_cache
                .with_label_values(&[result.as_str()]);
            let delta = total.saturating_sub(counter.get());
            if delta > 0 {
                counter.inc_by(delta);
            }
        }
    }

    /// A configuration reload ended with `result`.
    pub fn config_reload(&self, result: ReloadResult) {
        self.shared
            .config_reloads
            .with_label_values(&[result.as_str()])
            .inc();
    }

    /// A query hint could not be parsed or applied.
    pub fn hint_error(&self) {
        self.shared.hint_errors.inc();
    }

    // --- replicas ---

    /// The replica monitor's latest view of `replica`.
    pub fn set_replica(&self, replica: &str, lag_bytes: u64, lag: Duration, in_pool: bool) {
        let s = &self.shared;
        s.replica_lag_bytes
            .with_label_values(&[replica])
            .set(saturating_i64(lag_bytes));
        s.replica_lag_seconds
            .with_label_values(&[replica])
            .set(lag.as_secs_f64());
        s.replica_in_pool
            .with_label_values(&[replica])
            .set(i64::from(in_pool));
    }

    /// The eviction thresholds (`lag.max_bytes`, `lag.max_seconds`), exported so dashboards
    /// can draw them next to the lag they limit.
    pub fn set_lag_limits(&self, max_bytes: u64, max_seconds: Duration) {
        let s = &self.shared;
        s.replica_lag_max_bytes.set(saturating_i64(max_bytes));
        s.replica_lag_max_seconds.set(max_seconds.as_secs_f64());
    }

    /// `replica` was taken out of the read pool. `reason` is a lowercase snake_case
    /// label value from the monitor's reason enum.
    pub fn eviction(&self, replica: &str, reason: &'static str) {
        debug_assert!(labels::is_snake_case(reason), "bad label {reason:?}");
        self.shared
            .replica_evictions
            .with_label_values(&[replica, reason])
            .inc();
    }

    // --- session store ---

    /// A session-store `op` took `elapsed` (successful or not).
    pub fn store_duration(&self, op: StoreOp, elapsed: Duration) {
        self.shared
            .session_store_duration
            .with_label_values(&[op.as_str()])
            .observe(elapsed.as_secs_f64());
    }

    /// A session-store `op` failed or timed out.
    pub fn store_error(&self, op: StoreOp) {
        self.shared
            .session_store_errors
            .with_label_values(&[op.as_str()])
            .inc();
    }

    /// Whether the session store answers now.
    pub fn set_store_up(&self, up: bool) {
        self.shared.session_store_up.set(i64::from(up));
    }

    // --- failover ---

    /// `causeway_primary_changes_total` up to `total` (a count kept by the monitor), and
    /// `causeway_primary{node}` 1 for `primary` among `nodes`.
    pub fn set_primary(&self, total: u64, primary: Option<&str>, nodes: &[&str]) {
        let counter = &self.shared.primary_changes;
        counter.inc_by(total.saturating_sub(counter.get()));
        for node in nodes {
            let is = primary == Some(*node);
            self.shared
                .primary
                .with_label_values(&[node])
                .set(i64::from(is));
        }
    }

    // --- connections and pools ---

    /// A client connected; the returned guard counts it in `causeway_client_connections`
    /// until it is dropped.
    pub fn client_connected(&self) -> GaugeGuard {
        GaugeGuard::new(&self.shared.client_connections)
    }

    /// Set `causeway_client_connections` from a count kept elsewhere. Use either this or
    /// [`Metrics::client_connected`], not both.
    pub fn set_client_connections(&self, clients: usize) {
        self.shared
            .client_connections
            .set(saturating_i64(clients as u64));
    }

    /// A client started waiting for a server connection; the guard counts it in
    /// `causeway_clients_waiting` until it is dropped.
    pub fn waiting_for_server(&self) -> GaugeGuard {
        GaugeGuard::new(&self.shared.clients_waiting)
    }

    /// Histogram handles for one node, looked up once: a label lookup per observation
    /// hashes and takes a lock, which the per-request path should not pay.
    pub fn node_timers(&self, node: &str) -> NodeTimers {
        NodeTimers {
            query_duration: self.shared.query_duration.with_label_values(&[node]),
            checkout_wait: self.shared.checkout_wait.with_label_values(&[node]),
            routes: RouteReason::ALL
                .iter()
                .map(|_| std::sync::OnceLock::new())
                .collect(),
            queries: self.shared.queries.clone(),
            node: Arc::from(node),
        }
    }

    /// A checkout from a pool of `node` took `waited`.
    pub fn checkout_wait(&self, node: &str, waited: Duration) {
        self.shared
            .checkout_wait
            .with_label_values(&[node])
            .observe(waited.as_secs_f64());
    }

    /// Server connections to `node` now, summed over its pools.
    pub fn set_server_connections(&self, node: &str, idle: usize, active: usize) {
        for (state, count) in [(ConnState::Idle, idle), (ConnState::Active, active)] {
            self.shared
                .server_connections
                .with_label_values(&[node, state.as_str()])
                .set(saturating_i64(count as u64));
        }
    }

    /// A client was pinned to one server connection. `reason` is a lowercase snake_case
    /// label value from the session's reason enum.
    pub fn pinned(&self, reason: &'static str) {
        debug_assert!(labels::is_snake_case(reason), "bad label {reason:?}");
        self.shared.pins.with_label_values(&[reason]).inc();
    }

    /// A client or server broke the protocol.
    pub fn protocol_error(&self, kind: ProtocolKind) {
        self.shared
            .protocol_errors
            .with_label_values(&[kind.as_str()])
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

// === impl GaugeGuard ===

/// Holds one unit of an in-flight gauge (clients connected, clients waiting): incremented
/// when created, decremented when dropped, so early returns and panics cannot leak it.
#[derive(Debug)]
#[must_use = "the gauge is decremented when the guard is dropped"]
pub struct GaugeGuard {
    gauge: IntGauge,
}

/// The guard [`Metrics::client_connected`] returns.
pub type ClientGuard = GaugeGuard;

impl GaugeGuard {
    fn new(gauge: &IntGauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard {
            gauge: gauge.clone(),
        }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests;

/// `causeway_query_duration_seconds` and `causeway_pool_checkout_wait_seconds` of one node.
#[derive(Debug, Clone)]
pub struct NodeTimers {
    query_duration: prometheus::Histogram,
    checkout_wait: prometheus::Histogram,
    /// `causeway_queries_total{target=<this node>}` per route reason, resolved on first use
    /// (only combinations that occur are created).
    routes: Box<[std::sync::OnceLock<prometheus::IntCounter>]>,
    queries: prometheus::IntCounterVec,
    node: Arc<str>,
}

impl NodeTimers {
    /// A request was routed to this node for `reason` (`causeway_queries_total`), without a
    /// label lookup after the first.
    pub fn route(&self, reason: RouteReason) {
        let counter = self.routes.get(reason as usize).map(|slot| {
            slot.get_or_init(|| {
                self.queries
                    .with_label_values(&[&*self.node, reason.as_str()])
            })
        });
        match counter {
            Some(counter) => counter.inc(),
            None => self
                .queries
                .with_label_values(&[&*self.node, reason.as_str()])
                .inc(),
        }
    }

    /// A request on this node took `elapsed`.
    pub fn query(&self, elapsed: Duration) {
        self.query_duration.observe(elapsed.as_secs_f64());
    }

    /// A checkout from this node's pool took `waited`.
    pub fn checkout(&self, waited: Duration) {
        self.checkout_wait.observe(waited.as_secs_f64());
    }
}
