//! The Grafana dashboard and the Prometheus alert rules against a real Prometheus that
//! scrapes a Causeway routing a workload over a private cluster, while one replica's replay
//! is paused: every dashboard expression and variable query returns data, every alert rule
//! loads and its series exist, the replica-evicted alert catches the paused replica, and
//! `/status` follows pause → eviction → resume → readmission with the right reasons.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::ports::free_port;
use integration_tests::prometheus::Prometheus;
use integration_tests::{Cluster, ClusterOptions};
use serde_json::Value;

use crate::support::{eventually, http_get, Proxy};

/// The repository root (dashboards/ and docker/ live there).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests sits in the repository")
        .to_owned()
}

/// The dashboard JSON.
pub fn dashboard() -> Value {
    let path = repo_root().join("dashboards/causeway.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?} is not JSON: {e}"))
}

/// Every panel query (`expr`) in the dashboard, in order.
pub fn panel_exprs(dashboard: &Value) -> Vec<String> {
    let mut exprs = Vec::new();
    collect_exprs(&dashboard["panels"], &mut exprs);
    exprs
}

fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(expr)) = map.get("expr") {
                out.push(expr.clone());
            }
            map.values().for_each(|v| collect_exprs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The selectors behind the dashboard's `label_values(selector, label)` variables, with
/// the label each must carry.
pub fn variable_selectors(dashboard: &Value) -> Vec<(String, String)> {
    let list = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    list.iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let query = v["definition"].as_str().expect("variable definition");
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| panic!("unexpected variable query {query}"));
            let (selector, label) = inner.rsplit_once(',').expect("label_values(sel, label)");
            (selector.trim().to_owned(), label.trim().to_owned())
        })
        .collect()
}

/// A dashboard expression as Grafana sends it with every instance and replica selected.
fn as_sent(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$instance", ".*")
        .replace("$replica", ".*")
}

/// An alert expression of the form `A <op> number` rewritten as `A <op> bool number`, which
/// keeps every series of `A` (0 or 1) instead of only the firing ones.
fn with_bool(expr: &str) -> String {
    let ops = [" == ", " != ", " >= ", " <= ", " > ", " < "];
    let (at, op) = ops
        .iter()
        .filter_map(|op| expr.rfind(op).map(|at| (at, *op)))
        .max_by_key(|(at, _)| *at)
        .unwrap_or_else(|| panic!("alert expression without a comparison: {expr}"));
    format!("{}bool {}", &expr[..at + op.len()], &expr[at + op.len()..])
}

/// One node of `/status`.
async fn status_node(admin: SocketAddr, name: &str) -> Value {
    let reply = http_get(admin, "/status").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let json: Value = serde_json::from_str(&reply.body).expect("/status is JSON");
    json["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no node {name} in /status: {json:#}"))
}

/// Polls `/status` until `name` satisfies `want`; returns the node and the time it took.
async fn wait_status(
    admin: SocketAddr,
    name: &str,
    what: &str,
    want: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let started = Instant::now();
    let node = eventually(Duration::from_secs(15), what, || async {
        let node = status_node(admin, name).await;
        if want(&node) {
            Ok(node)
        } else {
            Err(format!("/status has {node:#}"))
        }
    })
    .await;
    (node, started.elapsed())
}

/// Queries `expr` until it returns at least one sample, for up to 15 s.
async fn wait_query(prometheus: &Prometheus, expr: &str) -> Vec<Value> {
    eventually(Duration::from_secs(15), expr, || async {
        let samples = prometheus.query(expr).await.unwrap();
        if samples.is_empty() {
            Err(format!(
                "no samples; prometheus log:\n{}",
                prometheus.log_tail()
            ))
        } else {
            Ok(samples)
        }
    })
    .await
}

/// Reads and writes through Causeway until `stop`, bounded to 3000 rounds: a shared
/// session (session-store traffic, read-your-writes), a plain reader, one pinned client
/// and one malformed hint.
async fn workload(proxy: &Proxy, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u32> {
    let writer = proxy.client().await;
    let reader = proxy.client().await;
    let pinned = proxy.client().await;
    writer
        .batch_execute("DROP TABLE IF EXISTS dash_events; CREATE TABLE dash_events (v int)")
        .await
        .unwrap();
    writer
        .batch_execute("SET causeway.session = 'dashboards'")
        .await
        .unwrap();
    pinned
        .batch_execute("CREATE TEMP TABLE dash_pinned (v int)")
        .await
        .unwrap();
    reader
        .simple_query("/* causeway: consistency=sometimes */ SELECT 1")
        .await
        .unwrap();
    tokio::spawn(async move {
        let mut rounds = 0;
        while !stop.load(Ordering::Relaxed) && rounds < 3000 {
            writer
                .execute("INSERT INTO dash_events VALUES ($1)", &[&(rounds as i32)])
                .await
                .unwrap();
            writer
                .query_one("SELECT count(*) FROM dash_events", &[])
                .await
                .unwrap();
            reader.simple_query("SELECT 1").await.unwrap();
            rounds += 1;
            // Pacing the workload, not waiting for anything.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(pinned);
        rounds
    })
}

#[tokio::test]
async fn dashboards_prometheus_scrapes_a_paused_replica_and_every_query_has_data() {
    let cluster = tokio::task::spawn_blocking(|| {
        Cluster::start(ClusterOptions {
            replicas: 2,
            redis: false,
        })
    })
    .await
    .unwrap()
    .expect("start a private cluster");
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    let proxy = Proxy::start_with(
        &cluster,
        &format!(
            "[proxy]\nadmin_listen = \"{admin}\"\n\n[lag]\npoll_interval = \"100ms\"\n\
             max_seconds = \"30s\"\nreadmit_after = \"1s\"\n"
        ),
    )
    .await;
    let rules = repo_root().join("dashboards/prometheus/alerts.yml");
    let prometheus = Prometheus::start(&cluster.dir().join("prometheus"), &[admin], &[rules])
        .await
        .expect("start prometheus");
    for replica in ["replica1", "replica2"] {
        wait_status(admin, replica, "in the pool", |n| n["in_pool"] == true).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load = workload(&proxy, stop.clone()).await;
    wait_query(&prometheus, r#"causeway_queries_total{target="replica2"}"#).await;

    // Pause → eviction, in /status and in Prometheus.
    cluster.node("replica1").pause_replay().await.unwrap();
    let (evicted, took) = wait_status(admin, "replica1", "paused replica1 evicted", |n| {
        n["state"] == "evicted"
    })
    .await;
    eprintln!("paused replica1 evicted after {took:?}");
    assert_eq!(evicted["reason"], "paused", "{evicted:#}");
    assert_eq!(
        (evicted["in_pool"].as_bool(), evicted["paused"].as_bool()),
        (Some(false), Some(true)),
        "{evicted:#}"
    );
    assert_eq!(evicted["role"], "replica");
    assert!(evicted["lag_bytes"].is_u64() && evicted["lag_seconds"].is_f64());
    assert!(evicted["replay_lsn"]
        .as_str()
        .is_some_and(|l| l.contains('/')));
    let other = status_node(admin, "replica2").await;
    assert_eq!(
        (&other["state"], &other["reason"]),
        (&"in_pool".into(), &Value::Null)
    );

    let firing = wait_query(&prometheus, "causeway_replica_in_pool == 0").await;
    let labels: Vec<&Value> = firing.iter().map(|s| &s["metric"]["replica"]).collect();
    assert_eq!(labels, [&Value::from("replica1")], "{firing:?}");
    wait_query(
        &prometheus,
        r#"causeway_replica_evictions_total{replica="replica1",reason="paused"}"#,
    )
    .await;
    assert_alert_active(&prometheus, "CausewayReplicaEvicted", "replica1").await;
    // rate() and increase() need scrapes on both sides of the eviction: poll until every
    // expression has data rather than sleeping for a fixed two scrapes.
    check_every_expression(&prometheus).await;
    let all_out = prometheus
        .query("sum by (instance) (causeway_replica_in_pool) == 0")
        .await
        .unwrap();
    assert!(all_out.is_empty(), "replica2 is still in: {all_out:?}");

    // Resume → readmission after readmit_after.
    let resumed = Instant::now();
    cluster.node("replica1").resume_replay().await.unwrap();
    let (back, _) = wait_status(admin, "replica1", "replica1 readmitted", |n| {
        n["state"] == "in_pool"
    })
    .await;
    let after = resumed.elapsed();
    eprintln!("replica1 readmitted {after:?} after resume");
    assert!(
        after >= Duration::from_secs(1),
        "readmitted before readmit_after"
    );
    assert_eq!(
        (&back["reason"], &back["paused"]),
        (&Value::Null, &false.into())
    );
    wait_query(
        &prometheus,
        r#"causeway_replica_in_pool{replica="replica1"} == 1"#,
    )
    .await;

    stop.store(true, Ordering::Relaxed);
    let rounds = load.await.unwrap();
    eprintln!("workload: {rounds} rounds");
    proxy.shutdown(Duration::from_secs(10)).await;
}

/// Every dashboard panel query, variable selector and alert expression returns data
/// within 30 s, and every alert rule is loaded and healthy.
async fn check_every_expression(prometheus: &Prometheus) {
    let dashboard = dashboard();
    let exprs = panel_exprs(&dashboard);
    assert!(exprs.len() >= 20, "only {} panel queries", exprs.len());
    let rules = alert_rules(prometheus).await;
    assert_eq!(
        rules
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>(),
        [
            "CausewayReplicaEvicted",
            "CausewayAllReplicasOut",
            "CausewayFallbackRateHigh",
            "CausewaySessionStoreDown",
            "CausewaySessionStoreUnreachable",
            "CausewayDown",
            "CausewayNoPrimary",
            "CausewayPrimaryChanged"
        ]
    );
    eventually(
        Duration::from_secs(30),
        "every expression returns data",
        || async {
            let dead = dead_expressions(prometheus, &dashboard, &exprs, &rules).await;
            dead.is_empty()
                .then_some(())
                .ok_or_else(|| format!("queries without data:\n{}", dead.join("\n")))
        },
    )
    .await;
    eprintln!(
        "{} panel queries and {} alert rules return data",
        exprs.len(),
        rules.len()
    );
}

/// The panel queries, variable selectors and alert expressions that return no data.
async fn dead_expressions(
    prometheus: &Prometheus,
    dashboard: &Value,
    exprs: &[String],
    rules: &[(String, String)],
) -> Vec<String> {
    let mut dead = Vec::new();
    for expr in exprs {
        if prometheus.query(&as_sent(expr)).await.unwrap().is_empty() {
            dead.push(format!("panel: {expr}"));
        }
    }
    for (selector, label) in variable_selectors(dashboard) {
        let samples = prometheus.query(&as_sent(&selector)).await.unwrap();
        if !samples.iter().any(|s| s["metric"][&label].is_string()) {
            dead.push(format!("variable: {selector} has no {label}"));
        }
    }
    for (name, query) in rules {
        if prometheus
            .query(&with_bool(query))
            .await
            .unwrap()
            .is_empty()
        {
            dead.push(format!("alert {name}: {query}"));
        }
    }
    dead
}

/// Name and expression of every alerting rule Prometheus loaded, checking each is healthy.
async fn alert_rules(prometheus: &Prometheus) -> Vec<(String, String)> {
    let data = prometheus.api("rules?type=alert").await.unwrap();
    let mut rules = Vec::new();
    for group in data["groups"].as_array().expect("rule groups") {
        for rule in group["rules"].as_array().expect("rules") {
            assert_eq!(rule["health"], "ok", "{rule:#}");
            let name = rule["name"].as_str().expect("rule name").to_owned();
            rules.push((name, rule["query"].as_str().expect("query").to_owned()));
        }
    }
    rules
}

/// Waits until alert `name` is pending or firing for `replica`.
async fn assert_alert_active(prometheus: &Prometheus, name: &str, replica: &str) {
    let what = format!("{name} for {replica} active");
    eventually(Duration::from_secs(15), &what, || async {
        let data = prometheus.api("alerts").await.unwrap();
        let alerts = data["alerts"].as_array().cloned().unwrap_or_default();
        let active = alerts.iter().any(|a| {
            a["labels"]["alertname"] == name
                && a["labels"]["replica"] == replica
                && matches!(a["state"].as_str(), Some("pending" | "firing"))
        });
        active
            .then_some(())
            .ok_or_else(|| format!("alerts: {alerts:#?}"))
    })
    .await;
}

#[test]
fn dashboards_alert_expressions_keep_their_series_with_bool() {
    assert_eq!(
        with_bool("causeway_replica_in_pool == 0"),
        "causeway_replica_in_pool == bool 0"
    );
    assert_eq!(
        with_bool("sum(rate(a[5m])) / sum(rate(b[5m])) > 0.2"),
        "sum(rate(a[5m])) / sum(rate(b[5m])) > bool 0.2"
    );
}
