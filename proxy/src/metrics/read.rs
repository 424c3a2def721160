//! Totals per node read back from the metrics, for the admin console's `SHOW STATS`: the
//! series that exist are read, none is created by reading.

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;

use super::Metrics;

/// What Causeway has counted for one node since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeTotals {
    /// Requests routed to the node (`causeway_queries_total`, every reason).
    pub queries: u64,
    /// Requests timed on the node (`causeway_query_duration_seconds_count`).
    pub timed: u64,
    /// Their total time, in seconds.
    pub query_seconds: f64,
    /// Checkouts from the node's pools (`causeway_pool_checkout_wait_seconds_count`).
    pub checkouts: u64,
    /// Total time clients waited for those checkouts, in seconds.
    pub wait_seconds: f64,
    /// Times the node (a replica) was taken out of the read pool.
    pub evictions: u64,
}

impl Metrics {
    /// The totals of node `node`.
    pub fn node_totals(&self, node: &str) -> NodeTotals {
        let s = &self.shared;
        let (timed, query_seconds) = histogram(&s.query_duration.collect(), "target", node);
        let (checkouts, wait_seconds) = histogram(&s.checkout_wait.collect(), "node", node);
        NodeTotals {
            queries: counter(&s.queries.collect(), "target", node),
            timed,
            query_seconds,
            checkouts,
            wait_seconds,
            evictions: counter(&s.replica_evictions.collect(), "replica", node),
        }
    }
}

fn has_label(metric: &prometheus::proto::Metric, name: &str, value: &str) -> bool {
    metric
        .get_label()
        .iter()
        .any(|l| l.name() == name && l.value() == value)
}

fn counter(families: &[MetricFamily], label: &str, value: &str) -> u64 {
    let total: f64 = families
        .iter()
        .flat_map(|f| f.get_metric())
        .filter(|m| has_label(m, label, value))
        .map(|m| m.get_counter().get_value())
        .sum();
    // Counters here are integers kept as f64 by the protobuf.
    total as u64
}

fn histogram(families: &[MetricFamily], label: &str, value: &str) -> (u64, f64) {
    families
        .iter()
        .flat_map(|f| f.get_metric())
        .filter(|m| has_label(m, label, value))
        .map(|m| m.get_histogram())
        .fold((0, 0.0), |(count, sum), h| {
            (count + h.get_sample_count(), sum + h.get_sample_sum())
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::metrics::{Metrics, RouteReason};

    #[test]
    fn totals_add_up_one_nodes_series_and_create_none() {
        let m = Metrics::new();
        m.query("primary", RouteReason::Write);
        m.query("primary", RouteReason::Hint);
        m.query("replica1", RouteReason::ReadOnly);
        m.query_duration("primary", Duration::from_millis(500));
        m.checkout_wait("primary", Duration::from_millis(250));
        m.eviction("replica1", "paused");
        let before = m.encode();
        let primary = m.node_totals("primary");
        assert_eq!((primary.queries, primary.timed), (2, 1));
        assert!((primary.query_seconds - 0.5).abs() < 1e-9);
        assert_eq!(primary.checkouts, 1);
        assert!((primary.wait_seconds - 0.25).abs() < 1e-9);
        let replica = m.node_totals("replica1");
        assert_eq!((replica.queries, replica.evictions), (1, 1));
        assert_eq!(m.node_totals("nowhere"), Default::default());
        assert_eq!(m.encode(), before);
    }
}
