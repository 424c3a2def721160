//! The metric families Causeway exports (name, help, labels, buckets) written down once, and
//! the helpers that create and register them in a registry and encode it.
//!
//! The names are a contract with dashboards and alerts (DESIGN.md §6): never rename one.

use prometheus::core::Collector;
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use Kind::{Counter, Gauge};

/// The Prometheus type of a family.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family.
#[derive(Debug)]
pub(super) struct Family {
    pub(super) name: &'static str,
    pub(super) help: &'static str,
    pub(super) kind: Kind,
    pub(super) labels: &'static [&'static str],
    /// Histogram bucket upper bounds in seconds (empty for other kinds).
    pub(super) buckets: &'static [f64],
}

/// Sub-millisecond to seconds: a query's time on a server.
const QUERY_BUCKETS_S: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// About 1 ms to 1 s: `consistency.max_wait` is tens of milliseconds.
const WAIT_BUCKETS_S: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
];
/// 100 µs to 100 ms: session-store calls have a 10 ms default timeout.
const STORE_BUCKETS_S: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];
/// 100 µs to 30 s (the default checkout timeout).
const CHECKOUT_BUCKETS_S: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0,
];

const fn family(
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
) -> Family {
    Family {
        name,
        help,
        kind,
        labels,
        buckets: &[],
    }
}

const fn histogram(
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    buckets: &'static [f64],
) -> Family {
    Family {
        name,
        help,
        kind: Kind::Histogram,
        labels,
        buckets,
    }
}

pub(super) const REPLICA_LAG_BYTES: Family = family(
    "causeway_replica_lag_bytes",
    "WAL bytes the replica is behind the primary.",
    Gauge,
    &["replica"],
);
pub(super) const REPLICA_LAG_SECONDS: Family = family(
    "causeway_replica_lag_seconds",
    "Seconds the replica's replay is behind the primary.",
    Gauge,
    &["replica"],
);
pub(super) const REPLICA_IN_POOL: Family = family(
    "causeway_replica_in_pool",
    "1 if the replica receives reads, 0 if it is evicted.",
    Gauge,
    &["replica"],
);
pub(super) const REPLICA_LAG_MAX_BYTES: Family = family(
    "causeway_replica_lag_max_bytes",
    "Eviction threshold on replica lag in bytes (lag.max_bytes).",
    Gauge,
    &[],
);
pub(super) const REPLICA_LAG_MAX_SECONDS: Family = family(
    "causeway_replica_lag_max_seconds",
    "Eviction threshold on replica lag in seconds (lag.max_seconds).",
    Gauge,
    &[],
);
pub(super) const REPLICA_EVICTIONS: Family = family(
    "causeway_replica_evictions_total",
    "Replicas taken out of the read pool, by reason.",
    Counter,
    &["replica", "reason"],
);
pub(super) const QUERIES: Family = family(
    "causeway_queries_total",
    "Queries routed, by target node and the reason it was chosen.",
    Counter,
    &["target", "reason"],
);
pub(super) const QUERY_DURATION: Family = histogram(
    "causeway_query_duration_seconds",
    "Time from forwarding a query to the server until the server was ready again.",
    &["target"],
    QUERY_BUCKETS_S,
);
pub(super) const CONSISTENCY_FALLBACKS: Family = family(
    "causeway_consistency_fallbacks_total",
    "Reads sent to the primary because no replica was fresh enough, by reason.",
    Counter,
    &["reason"],
);
pub(super) const CONSISTENCY_WAIT: Family = histogram(
    "causeway_consistency_wait_seconds",
    "Time reads waited for a replica to replay the session's writes.",
    &[],
    WAIT_BUCKETS_S,
);
pub(super) const CONSISTENCY_WAITS: Family = family(
    "causeway_consistency_waits_total",
    "Reads whose session floor was ahead of every replica, by what waiting did: caught_up, \
     timed_out, or skipped (no replica could reach the floor within max_wait).",
    Counter,
    &["outcome"],
);
pub(super) const SESSION_STORE_ERRORS: Family = family(
    "causeway_session_store_errors_total",
    "Failed session-store operations, by operation.",
    Counter,
    &["op"],
);
pub(super) const SESSION_STORE_DURATION: Family = histogram(
    "causeway_session_store_duration_seconds",
    "Session-store operation latency, by operation.",
    &["op"],
    STORE_BUCKETS_S,
);
pub(super) const SESSION_STORE_UP: Family = family(
    "causeway_session_store_up",
    "1 while the session store answers, 0 while it fails or is unreachable.",
    Gauge,
    &[],
);
pub(super) const CLIENT_CONNECTIONS: Family = family(
    "causeway_client_connections",
    "Client connections open now.",
    Gauge,
    &[],
);
pub(super) const SERVER_CONNECTIONS: Family = family(
    "causeway_server_connections",
    "Server connections open now, by node and state (idle or active).",
    Gauge,
    &["node", "state"],
);
pub(super) const HINT_ERRORS: Family = family(
    "causeway_hint_errors_total",
    "Query hints that could not be parsed or applied.",
    Counter,
    &[],
);
pub(super) const CLIENTS_WAITING: Family = family(
    "causeway_clients_waiting",
    "Clients waiting for a server connection now.",
    Gauge,
    &[],
);
pub(super) const CHECKOUT_WAIT: Family = histogram(
    "causeway_pool_checkout_wait_seconds",
    "Time clients waited to check out a server connection, by node.",
    &["node"],
    CHECKOUT_BUCKETS_S,
);
pub(super) const PINS: Family = family(
    "causeway_pins_total",
    "Clients pinned to one server connection, by reason.",
    Counter,
    &["reason"],
);
pub(super) const PROTOCOL_ERRORS: Family = family(
    "causeway_protocol_errors_total",
    "Protocol violations from clients or servers, by kind.",
    Counter,
    &["kind"],
);
pub(super) const CLASSIFY_CACHE: Family = family(
    "causeway_classify_cache_total",
    "Statement classifications answered from the classification cache (hit) or by parsing (miss).",
    Counter,
    &["result"],
);
pub(super) const CONFIG_RELOADS: Family = family(
    "causeway_config_reloads_total",
    "Configuration reloads (SIGHUP, POST /reload, RELOAD), by result: success or failure \
     (an unreadable or invalid file, which changes nothing).",
    Counter,
    &["result"],
);
pub(super) const PRIMARY_CHANGES: Family = family(
    "causeway_primary_changes_total",
    "Times the primary moved to another configured node (failover.mode = \"follow\").",
    Counter,
    &[],
);
pub(super) const PRIMARY: Family = family(
    "causeway_primary",
    "1 for the node that is the primary now, 0 for the others (all 0 while there is none).",
    Gauge,
    &["node"],
);
pub(super) const BUILD_INFO: Family = family(
    "causeway_build_info",
    "Always 1; the version label says which build is running.",
    Gauge,
    &["version"],
);

/// Every family, so families without samples yet can still be listed in the output.
pub(super) const ALL: &[&Family] = &[
    &REPLICA_LAG_BYTES,
    &REPLICA_LAG_SECONDS,
    &REPLICA_IN_POOL,
    &REPLICA_LAG_MAX_BYTES,
    &REPLICA_LAG_MAX_SECONDS,
    &REPLICA_EVICTIONS,
    &QUERIES,
    &QUERY_DURATION,
    &CONSISTENCY_FALLBACKS,
    &CONSISTENCY_WAIT,
    &CONSISTENCY_WAITS,
    &SESSION_STORE_ERRORS,
    &SESSION_STORE_DURATION,
    &SESSION_STORE_UP,
    &CLIENT_CONNECTIONS,
    &SERVER_CONNECTIONS,
    &HINT_ERRORS,
    &CLIENTS_WAITING,
    &CHECKOUT_WAIT,
    &PINS,
    &PROTOCOL_ERRORS,
    &CLASSIFY_CACHE,
    &CONFIG_RELOADS,
    &PRIMARY_CHANGES,
    &PRIMARY,
    &BUILD_INFO,
];

// === impl Family ===

impl Family {
    fn opts(&self) -> Opts {
        Opts::new(self.name, self.help)
    }

    fn histogram_opts(&self) -> HistogramOpts {
        HistogramOpts::new(self.name, self.help).buckets(self.buckets.to_vec())
    }

    pub(super) fn counter(&self, registry: &Registry) -> prometheus::Result<IntCounter> {
        register(registry, IntCounter::with_opts(self.opts())?)
    }

    pub(super) fn counter_vec(&self, registry: &Registry) -> prometheus::Result<IntCounterVec> {
        register(registry, IntCounterVec::new(self.opts(), self.labels)?)
    }

    pub(super) fn gauge(&self, registry: &Registry) -> prometheus::Result<IntGauge> {
        register(registry, IntGauge::with_opts(self.opts())?)
    }

    pub(super) fn gauge_vec(&self, registry: &Registry) -> prometheus::Result<IntGaugeVec> {
        register(registry, IntGaugeVec::new(self.opts(), self.labels)?)
    }

    /// A gauge with fractional values (seconds).
    pub(super) fn float_gauge(&self, registry: &Registry) -> prometheus::Result<prometheus::Gauge> {
        register(registry, prometheus::Gauge::with_opts(self.opts())?)
    }

    /// A labelled gauge with fractional values (seconds).
    pub(super) fn float_gauge_vec(&self, registry: &Registry) -> prometheus::Result<GaugeVec> {
        register(registry, GaugeVec::new(self.opts(), self.labels)?)
    }

    pub(super) fn histogram(&self, registry: &Registry) -> prometheus::Result<Histogram> {
        register(registry, Histogram::with_opts(self.histogram_opts())?)
    }

    pub(super) fn histogram_vec(&self, registry: &Registry) -> prometheus::Result<HistogramVec> {
        register(
            registry,
            HistogramVec::new(self.histogram_opts(), self.labels)?,
        )
    }

    /// `# HELP` and `# TYPE` lines: a family with no samples yet.
    fn header(&self) -> String {
        let kind = match self.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n",
            name = self.name,
            help = self.help
        )
    }
}

fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> prometheus::Result<C> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

/// The registry in the Prometheus text format. Labelled families with no samples yet (no
/// eviction has happened, say) are still listed by name, so scrapers and tests see every
/// family from the start.
pub(super) fn encode(registry: &Registry) -> String {
    let gathered = registry.gather();
    let mut text = String::new();
    if let Err(err) = TextEncoder::new().encode_utf8(&gathered, &mut text) {
        tracing::warn!(%err, "encoding metrics failed");
    }
    for family in ALL {
        if !gathered.iter().any(|mf| mf.name() == family.name) {
            text.push_str(&family.header());
        }
    }
    text
}
