//! Unit tests for the metrics: the DESIGN.md §6 names, label spellings, guards, isolation.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;

/// The names dashboards and alerts rely on (DESIGN.md §6), plus the pool and build metrics.
const CONTRACT_NAMES: &[&str] = &[
    "causeway_replica_lag_bytes",
    "causeway_replica_lag_seconds",
    "causeway_replica_in_pool",
    "causeway_replica_lag_max_bytes",
    "causeway_replica_lag_max_seconds",
    "causeway_replica_evictions_total",
    "causeway_queries_total",
    "causeway_query_duration_seconds",
    "causeway_consistency_fallbacks_total",
    "causeway_consistency_wait_seconds",
    "causeway_consistency_waits_total",
    "causeway_session_store_errors_total",
    "causeway_session_store_duration_seconds",
    "causeway_session_store_up",
    "causeway_client_connections",
    "causeway_server_connections",
    "causeway_hint_errors_total",
    "causeway_clients_waiting",
    "causeway_pool_checkout_wait_seconds",
    "causeway_pins_total",
    "causeway_protocol_errors_total",
    "causeway_classify_cache_total",
    "causeway_config_reloads_total",
    "causeway_primary_changes_total",
    "causeway_primary",
    "causeway_build_info",
];

/// One observation of every metric.
fn observe_each(m: &Metrics) -> GaugeGuard {
    m.set_replica("replica1", 4096, Duration::from_millis(1500), true);
    m.eviction("replica2", "lag_bytes");
    m.set_lag_limits(16 << 20, Duration::from_millis(2500));
    m.query("replica1", RouteReason::FreshReplica);
    m.query_duration("replica1", Duration::from_micros(700));
    m.fallback(FallbackReason::WaitTimeout);
    m.consistency_wait(Duration::from_millis(3));
    m.wait_outcome(WaitOutcome::Skipped);
    m.store_error(StoreOp::Advance);
    m.store_duration(StoreOp::Get, Duration::from_micros(300));
    m.set_server_connections("primary", 2, 1);
    m.hint_error();
    m.checkout_wait("primary", Duration::from_millis(2));
    m.pinned("temp_table");
    m.protocol_error(ProtocolKind::ClientFrame);
    m.set_classify_cache(5, 2);
    m.waiting_for_server()
}

/// The sample line for `series` (a name with labels), if present.
fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
}

#[test]
fn every_contract_name_has_samples_after_one_observation_each() {
    let m = Metrics::new();
    let _waiting = observe_each(&m);
    let _client = m.client_connected();
    let text = m.encode();
    for name in CONTRACT_NAMES {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && !l.starts_with('#')),
            "no samples for {name} in:\n{text}"
        );
    }
}

#[test]
fn every_contract_name_is_listed_before_any_observation() {
    let text = Metrics::new().encode();
    for name in CONTRACT_NAMES {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing from:\n{text}"
        );
    }
    assert_eq!(family::ALL.len(), CONTRACT_NAMES.len());
}

#[test]
fn label_values_are_the_expected_strings() {
    let m = Metrics::new();
    let _waiting = observe_each(&m);
    let text = m.encode();
    let expected = [
        ("causeway_replica_lag_bytes{replica=\"replica1\"}", "4096"),
        ("causeway_replica_lag_seconds{replica=\"replica1\"}", "1.5"),
        ("causeway_replica_in_pool{replica=\"replica1\"}", "1"),
        ("causeway_replica_lag_max_bytes", "16777216"),
        ("causeway_replica_lag_max_seconds", "2.5"),
        (
            "causeway_replica_evictions_total{reason=\"lag_bytes\",replica=\"replica2\"}",
            "1",
        ),
        (
            "causeway_queries_total{reason=\"fresh_replica\",target=\"replica1\"}",
            "1",
        ),
        (
            "causeway_query_duration_seconds_bucket{target=\"replica1\",le=\"0.001\"}",
            "1",
        ),
        (
            "causeway_consistency_fallbacks_total{reason=\"wait_timeout\"}",
            "1",
        ),
        (
            "causeway_consistency_fallbacks_total{reason=\"floor_ahead\"}",
            "0",
        ),
        ("causeway_consistency_wait_seconds_count", "1"),
        ("causeway_session_store_errors_total{op=\"advance\"}", "1"),
        ("causeway_session_store_errors_total{op=\"get\"}", "0"),
        (
            "causeway_session_store_duration_seconds_count{op=\"get\"}",
            "1",
        ),
        (
            "causeway_server_connections{node=\"primary\",state=\"idle\"}",
            "2",
        ),
        (
            "causeway_server_connections{node=\"primary\",state=\"active\"}",
            "1",
        ),
        ("causeway_hint_errors_total", "1"),
        ("causeway_clients_waiting", "1"),
        (
            "causeway_pool_checkout_wait_seconds_count{node=\"primary\"}",
            "1",
        ),
        ("causeway_pins_total{reason=\"temp_table\"}", "1"),
        ("causeway_protocol_errors_total{kind=\"client_frame\"}", "1"),
    ];
    for (series, value) in expected {
        assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
    }
    let build = format!(
        "causeway_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&text, &build), Some("1"));
}

#[test]
fn enum_spellings_are_snake_case_and_distinct() {
    let spellings: [Vec<&str>; 5] = [
        RouteReason::ALL.iter().map(|r| r.as_str()).collect(),
        FallbackReason::ALL.iter().map(|r| r.as_str()).collect(),
        StoreOp::ALL.iter().map(|r| r.as_str()).collect(),
        ConnState::ALL.iter().map(|r| r.as_str()).collect(),
        CacheResult::ALL.iter().map(|r| r.as_str()).collect(),
    ];
    for values in spellings {
        let mut unique = values.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), values.len(), "duplicate in {values:?}");
        assert!(
            values.iter().all(|v| labels::is_snake_case(v)),
            "{values:?}"
        );
    }
    assert_eq!(
        RouteReason::ConsistencyStrong.to_string(),
        "consistency_strong"
    );
    assert_eq!(
        FallbackReason::NoEligibleReplica.to_string(),
        "no_eligible_replica"
    );
}

#[test]
fn classify_cache_counters_follow_the_classifier_totals() {
    let m = Metrics::new();
    let hit = "causeway_classify_cache_total{result=\"hit\"}";
    let miss = "causeway_classify_cache_total{result=\"miss\"}";
    let text = m.encode();
    assert_eq!(
        (sample(&text, hit), sample(&text, miss)),
        (Some("0"), Some("0"))
    );
    m.set_classify_cache(10, 3);
    m.set_classify_cache(10, 3);
    m.set_classify_cache(12, 3);
    let text = m.encode();
    assert_eq!(
        (sample(&text, hit), sample(&text, miss)),
        (Some("12"), Some("3"))
    );
}

#[test]
fn guards_decrement_when_dropped() {
    let m = Metrics::new();
    let first = m.client_connected();
    let second = m.client_connected();
    assert_eq!(
        sample(&m.encode(), "causeway_client_connections"),
        Some("2")
    );
    drop(first);
    assert_eq!(
        sample(&m.encode(), "causeway_client_connections"),
        Some("1")
    );
    drop(second);
    assert_eq!(
        sample(&m.encode(), "causeway_client_connections"),
        Some("0")
    );
    m.set_client_connections(7);
    assert_eq!(
        sample(&m.encode(), "causeway_client_connections"),
        Some("7")
    );
}

#[test]
fn instances_are_isolated_and_clones_shared() {
    let a = Metrics::new();
    let b = Metrics::new();
    a.hint_error();
    let shared = a.clone();
    std::thread::spawn(move || shared.hint_error())
        .join()
        .unwrap();
    assert_eq!(sample(&a.encode(), "causeway_hint_errors_total"), Some("2"));
    assert_eq!(sample(&b.encode(), "causeway_hint_errors_total"), Some("0"));
}

/// Families whose label values cannot be known before the event: listed by name only on a
/// fresh instance.
const LABELS_UNKNOWN_IN_ADVANCE: &[&str] = &[];

#[test]
fn a_fresh_instance_with_its_nodes_has_samples_in_every_family() {
    let m = Metrics::new();
    m.start_at_zero("primary", &["replica1", "replica2"], false);
    let text = m.encode();
    for name in CONTRACT_NAMES {
        let has_samples = text
            .lines()
            .any(|l| !l.starts_with('#') && l.starts_with(name));
        assert_eq!(
            has_samples,
            !LABELS_UNKNOWN_IN_ADVANCE.contains(name),
            "{name} in:\n{text}"
        );
    }
    for series in [
        "causeway_queries_total{reason=\"write\",target=\"primary\"}",
        "causeway_queries_total{reason=\"fresh_replica\",target=\"replica2\"}",
        "causeway_replica_evictions_total{reason=\"paused\",replica=\"replica1\"}",
        "causeway_pins_total{reason=\"temporary_object\"}",
        "causeway_session_store_duration_seconds_count{op=\"advance\"}",
        "causeway_server_connections{node=\"replica1\",state=\"idle\"}",
        "causeway_replica_in_pool{replica=\"replica2\"}",
    ] {
        assert_eq!(sample(&text, series), Some("0"), "{series} in:\n{text}");
    }
}

#[test]
fn only_combinations_that_occur_start_at_zero() {
    let m = Metrics::new();
    m.start_at_zero("primary", &["replica1"], false);
    m.start_at_zero("primary", &["replica1"], false);
    let text = m.encode();
    let count = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
    // A replica is never written to or pinned; the primary is never "evicted" by a replica
    // reason; in_recovery is the primary's reason.
    assert_eq!(
        sample(
            &text,
            "causeway_queries_total{reason=\"write\",target=\"replica1\"}"
        ),
        None
    );
    assert_eq!(
        sample(
            &text,
            "causeway_queries_total{reason=\"read_only\",target=\"primary\"}"
        ),
        None
    );
    assert_eq!(
        count("causeway_queries_total{"),
        known::PRIMARY_ROUTES.len() + known::REPLICA_ROUTES.len()
    );
    assert_eq!(count("causeway_replica_evictions_total{"), 8);
    assert_eq!(
        sample(
            &text,
            "causeway_replica_evictions_total{reason=\"in_recovery\",replica=\"replica1\"}"
        ),
        None
    );
    assert_eq!(
        count("causeway_pins_total{"),
        crate::sql::PinReason::ALL.len()
    );
}

#[test]
fn every_route_the_router_labels_is_started_on_its_node() {
    use crate::router::{policy::route_label, Cause};
    // Every cause without a hint/rule: the label must be pre-created on the node kind the
    // cause routes to (replica causes route to replicas, the rest to the primary).
    let replica_causes = [Cause::Eventual, Cause::Bounded, Cause::FreshReplica];
    let all = [
        Cause::Write,
        Cause::Pinned,
        Cause::Strong,
        Cause::HintPrimary,
        Cause::Eventual,
        Cause::FreshReplica,
        Cause::Bounded,
        Cause::NoReplica,
        Cause::FloorAhead,
        Cause::FloorUnknown,
        Cause::LagTooHigh,
    ];
    for cause in all {
        let label = route_label(cause, None);
        let started = if replica_causes.contains(&cause) {
            known::REPLICA_ROUTES
        } else {
            known::PRIMARY_ROUTES
        };
        assert!(started.contains(&label), "{cause:?} → {label}");
    }
}

#[test]
fn following_failovers_every_node_gets_both_roles_series() {
    let m = Metrics::new();
    m.start_at_zero("primary", &["replica1"], true);
    let text = m.encode();
    for series in [
        "causeway_queries_total{reason=\"write\",target=\"replica1\"}",
        "causeway_queries_total{reason=\"read_only\",target=\"primary\"}",
        "causeway_replica_evictions_total{reason=\"paused\",replica=\"primary\"}",
    ] {
        assert_eq!(sample(&text, series), Some("0"), "{series} in:\n{text}");
    }
}

/// docs/monitoring.md's metric reference names every family and every label value, so the
/// page cannot fall behind the code.
#[test]
fn the_docs_name_every_family_and_label_value() {
    let doc = include_str!("../../../docs/monitoring.md");
    let reference = doc
        .split("## Metric reference")
        .nth(1)
        .expect("docs/monitoring.md has a metric reference");
    for family in super::family::ALL {
        assert!(
            reference.contains(&format!("`{}`", family.name)),
            "docs/monitoring.md does not describe {}",
            family.name
        );
    }
    let values = RouteReason::ALL
        .iter()
        .map(|v| v.as_str())
        .chain(FallbackReason::ALL.iter().map(|v| v.as_str()))
        .chain(WaitOutcome::ALL.iter().map(|v| v.as_str()))
        .chain(StoreOp::ALL.iter().map(|v| v.as_str()))
        .chain(CacheResult::ALL.iter().map(|v| v.as_str()))
        .chain(ConnState::ALL.iter().map(|v| v.as_str()))
        .chain(ReloadResult::ALL.iter().map(|v| v.as_str()))
        .chain(ProtocolKind::ALL.iter().map(|v| v.as_str()))
        .chain(
            crate::monitor::EvictionReason::ALL
                .iter()
                .map(|v| v.label()),
        )
        .chain(crate::sql::PinReason::ALL.iter().map(|v| v.label()));
    for value in values {
        assert!(
            reference.contains(&format!("`{value}`")),
            "docs/monitoring.md's metric reference does not list the label value {value:?}"
        );
    }
}

/// A node's pre-resolved route counters are the `causeway_queries_total` series of that
/// node, and only the reasons used appear.
#[test]
fn node_route_counters_are_the_queries_series() {
    let m = Metrics::new();
    let replica = m.node_timers("replica1");
    replica.route(RouteReason::FreshReplica);
    replica.route(RouteReason::FreshReplica);
    m.query("replica1", RouteReason::FreshReplica);
    let text = m.encode();
    assert_eq!(
        sample(
            &text,
            "causeway_queries_total{reason=\"fresh_replica\",target=\"replica1\"}"
        ),
        Some("3")
    );
    assert!(
        !text.contains("reason=\"write\",target=\"replica1\""),
        "{text}"
    );
}
