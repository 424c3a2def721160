//! The admin HTTP server of an in-process Causeway: every DESIGN.md §6 metric name on
//! `/metrics`, the client gauge following open clients, `/healthz`, `/readyz`, the `/status`
//! JSON, refusals for unknown paths and methods, and the port closing on shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use integration_tests::ports::free_port;

use crate::support::{eventually, http_get, http_request, Proxy};

/// The names dashboards and alerts rely on (DESIGN.md §6), plus the pool and build metrics.
const METRIC_NAMES: &[&str] = &[
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
    "causeway_build_info",
];

/// Causeway with its admin server on a free loopback port.
async fn start_with_admin() -> (Proxy, SocketAddr) {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port().expect("a free admin port")));
    let proxy = Proxy::start(&format!("[proxy]\nadmin_listen = \"{admin}\"\n")).await;
    (proxy, admin)
}

/// The value of an unlabelled sample, or of a series given with its labels.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Scrape until `series` has `want`, for up to 15 s (sessions end asynchronously).
async fn assert_gauge_eventually(admin: SocketAddr, series: &str, want: f64) {
    eventually(Duration::from_secs(15), series, || async {
        let got = sample(&http_get(admin, "/metrics").await.body, series);
        (got == Some(want))
            .then_some(())
            .ok_or_else(|| format!("{got:?}, want {want}"))
    })
    .await;
}

#[tokio::test]
async fn admin_endpoints_report_on_the_running_proxy() {
    let (proxy, admin) = start_with_admin().await;
    let first = proxy.client().await;
    let second = proxy.client().await;
    for client in [&first, &second] {
        client.simple_query("SELECT 1").await.unwrap();
    }

    let metrics = http_get(admin, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    for name in METRIC_NAMES {
        assert!(
            metrics.body.contains(&format!("# TYPE {name} ")),
            "{name} missing from /metrics:\n{}",
            metrics.body
        );
    }
    assert_eq!(
        sample(&metrics.body, "causeway_client_connections"),
        Some(2.0)
    );
    let idle = sample(
        &metrics.body,
        "causeway_server_connections{node=\"primary\",state=\"idle\"}",
    );
    assert!(idle >= Some(1.0), "idle primary connections: {idle:?}");
    drop(second);
    assert_gauge_eventually(admin, "causeway_client_connections", 1.0).await;

    let health = http_get(admin, "/healthz").await;
    assert_eq!((health.status, health.body.trim()), (200, "ok"));
    let ready = http_get(admin, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);

    let status = http_get(admin, "/status").await;
    assert_eq!(status.status, 200);
    assert_eq!(status.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    assert_eq!(json["nodes"][0]["name"], "primary", "{json:#}");
    assert!(
        json["pools"]
            .as_array()
            .is_some_and(|pools| pools.iter().any(|p| p["node"] == "primary")),
        "{json:#}"
    );

    assert_eq!(http_get(admin, "/no-such-page").await.status, 404);
    assert_eq!(http_request(admin, "POST", "/metrics").await.status, 405);
    first.simple_query("SELECT 1").await.unwrap();

    drop(first);
    proxy.shutdown(Duration::from_secs(10)).await;
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "admin port still open after shutdown"
    );
}
