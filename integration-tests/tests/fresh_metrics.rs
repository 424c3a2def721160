//! A fresh Causeway instance, before any client has connected, already exports every series
//! the Grafana dashboard and the alert rules select (label matchers included): no panel
//! shows "No data" and `increase()` sees each series' first event.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use integration_tests::ports::free_port;

use crate::dashboards::{dashboard, panel_exprs, repo_root, variable_selectors};
use crate::support::{eventually, http_get, Proxy};

/// One label matcher of a selector: `label op value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    label: String,
    op: String,
    value: String,
}

/// One `causeway_*` selector: the metric name and its label matchers.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    name: String,
    matchers: Vec<Matcher>,
}

/// Every `causeway_*` selector in a PromQL text (several expressions may be joined).
pub fn selectors(text: &str) -> Vec<Selector> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("causeway_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        let mut matchers = Vec::new();
        let after = &tail[end..];
        let mut consumed = end;
        if let Some(body) = after.strip_prefix('{') {
            let close = body.find('}').expect("selector braces close");
            matchers = parse_matchers(&body[..close]);
            consumed += close + 2;
        }
        out.push(Selector { name, matchers });
        rest = &tail[consumed..];
    }
    out
}

fn parse_matchers(body: &str) -> Vec<Matcher> {
    let mut matchers = Vec::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let op_at = rest.find(['=', '!']).expect("matcher has an operator");
        let label = rest[..op_at].trim().to_owned();
        let op_len = if ["=~", "!=", "!~"]
            .iter()
            .any(|op| rest[op_at..].starts_with(op))
        {
            2
        } else {
            1
        };
        let op = rest[op_at..op_at + op_len].to_owned();
        let value_part = rest[op_at + op_len..].trim_start();
        let value_part = value_part.strip_prefix('"').expect("quoted matcher value");
        let close = value_part.find('"').expect("closing quote");
        let value = value_part[..close].replace("\\\"", "\"");
        matchers.push(Matcher { label, op, value });
        rest = value_part[close + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    matchers
}

/// The samples in a Prometheus text exposition: (name, labels).
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = parse_matchers(labels)
            .into_iter()
            .map(|m| (m.label, m.value))
            .collect();
        out.push((name.to_owned(), labels));
    }
    out
}

/// Whether a sample of the family `selector.name` satisfies every matcher (dashboard
/// variables such as `$instance` match anything; `instance` and `job` are Prometheus's).
fn matches(selector: &Selector, name: &str, labels: &BTreeMap<String, String>) -> bool {
    let family = ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    if name != selector.name && family != selector.name {
        return false;
    }
    selector.matchers.iter().all(|m| {
        if m.value.contains('$') || m.label == "instance" || m.label == "job" {
            return true;
        }
        let value = labels.get(&m.label).map_or("", String::as_str);
        match m.op.as_str() {
            "=" => value == m.value,
            "!=" => value != m.value,
            op => panic!("matcher {op} on {} not supported by this test", m.label),
        }
    })
}

/// The `expr` of every rule in the alert rules file.
pub fn alert_exprs() -> Vec<String> {
    let path = repo_root().join("dashboards/prometheus/alerts.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let rules: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            exprs.push(rule["expr"].as_str().expect("expr").to_owned());
        }
    }
    exprs
}

#[tokio::test]
async fn fresh_metrics_every_dashboard_and_alert_series_exists_before_any_client() {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    let proxy = Proxy::start_routed(&format!("[proxy]\nadmin_listen = \"{admin}\"\n")).await;
    // The admin server starts in the background: wait until it accepts (no client yet).
    eventually(Duration::from_secs(10), "admin server up", || async {
        tokio::net::TcpStream::connect(admin)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;
    let text = http_get(admin, "/metrics").await.body;
    let exposed = samples(&text);

    let board = dashboard();
    let mut queries = panel_exprs(&board).join("\n");
    for (selector, _) in variable_selectors(&board) {
        queries += &format!("\n{selector}");
    }
    let alerts = alert_exprs().join("\n");
    let wanted = selectors(&format!("{queries}\n{alerts}"));
    assert!(wanted.len() >= 30, "only {} selectors", wanted.len());
    let missing: Vec<&Selector> = wanted
        .iter()
        .filter(|s| {
            !exposed
                .iter()
                .any(|(name, labels)| matches(s, name, labels))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "selectors without a series on a fresh instance: {missing:#?}\n{text}"
    );
    // The examples, by series.
    for series in [
        "causeway_queries_total{reason=\"write\",target=\"primary\"} 0",
        "causeway_queries_total{reason=\"read_only\",target=\"replica1\"} 0",
        "causeway_replica_evictions_total{reason=\"lag_bytes\",replica=\"replica2\"} 0",
        "causeway_pins_total{reason=\"advisory_lock\"} 0",
        "causeway_session_store_duration_seconds_count{op=\"get\"} 0",
    ] {
        assert!(text.lines().any(|l| l == series), "no {series} in:\n{text}");
    }
    proxy.shutdown(Duration::from_secs(10)).await;
}

#[test]
fn fresh_metrics_selectors_are_parsed_with_their_matchers() {
    let got = selectors(
        "sum(rate(causeway_queries_total{instance=~\"$instance\",target!=\"primary\"}[1m])) \
         / causeway_pins_total",
    );
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].name, "causeway_queries_total");
    assert_eq!(
        got[0].matchers[1],
        Matcher {
            label: "target".into(),
            op: "!=".into(),
            value: "primary".into()
        }
    );
    assert_eq!(got[1].name, "causeway_pins_total");
    assert!(got[1].matchers.is_empty());
    let labels = BTreeMap::from([("target".to_owned(), "replica1".to_owned())]);
    assert!(matches(&got[0], "causeway_queries_total", &labels));
    let primary = BTreeMap::from([("target".to_owned(), "primary".to_owned())]);
    assert!(!matches(&got[0], "causeway_queries_total", &primary));
}
