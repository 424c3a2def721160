//! The Kubernetes manifests (`deploy/kubernetes/`) checked offline: every document parses,
//! has the fields its kind requires, and fits the others (selectors match the pod labels,
//! ports and probes name the container's ports, mounts name volumes, the config the init
//! container assembles from the ConfigMap and the Secret passes Causeway's own config check
//! and listens where the container ports say).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_norway::Value;

use crate::dashboards::repo_root;

fn dir() -> PathBuf {
    repo_root().join("deploy/kubernetes")
}

/// Every document of every manifest, by kind.
fn manifests() -> BTreeMap<String, Value> {
    let kustomization = read("kustomization.yaml");
    let resources = kustomization["resources"].as_sequence().expect("resources");
    let mut by_kind = BTreeMap::new();
    for file in resources {
        let file = file.as_str().expect("resource file name");
        let doc = read(file);
        let kind = doc["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: no kind"))
            .to_owned();
        assert!(doc["apiVersion"].is_string(), "{file}: no apiVersion");
        assert!(
            doc["metadata"]["name"].is_string(),
            "{file}: no metadata.name"
        );
        assert!(by_kind.insert(kind.clone(), doc).is_none(), "two {kind}s");
    }
    // Every YAML file in the directory is listed.
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    let listed: BTreeSet<String> = resources
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(on_disk, listed, "kustomization.yaml resources");
    by_kind
}

fn read(file: &str) -> Value {
    let path = dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path:?} is not YAML: {e}"))
}

fn labels(value: &Value) -> BTreeMap<String, String> {
    value
        .as_mapping()
        .unwrap_or_else(|| panic!("labels: {value:?}"))
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn is_subset(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {value:?}"))
}

#[test]
fn kubernetes_manifests_have_every_kind_and_fit_together() {
    let m = manifests();
    let kinds: Vec<&str> = m.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "Secret",
            "Service"
        ]
    );
    let (deploy, service, pdb) = (&m["Deployment"], &m["Service"], &m["PodDisruptionBudget"]);
    assert_eq!(deploy["apiVersion"], Value::from("apps/v1"));
    assert_eq!(pdb["apiVersion"], Value::from("policy/v1"));
    assert_eq!(deploy["spec"]["replicas"].as_u64(), Some(2));

    let pod = &deploy["spec"]["template"];
    let pod_labels = labels(&pod["metadata"]["labels"]);
    for (what, selector) in [
        ("Deployment", &deploy["spec"]["selector"]["matchLabels"]),
        ("Service", &service["spec"]["selector"]),
        (
            "PodDisruptionBudget",
            &pdb["spec"]["selector"]["matchLabels"],
        ),
    ] {
        assert!(
            is_subset(&labels(selector), &pod_labels),
            "{what} selector does not match the pod labels"
        );
    }
    assert_eq!(pdb["spec"]["minAvailable"].as_u64(), Some(1));

    let containers = pod["spec"]["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let proxy = &containers[0];
    assert!(proxy["image"].is_string());
    let ports: BTreeMap<&str, u64> = proxy["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                str_of(&p["name"], "port name"),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &proxy[probe]["httpGet"];
        assert_eq!(str_of(&get["path"], probe), path);
        assert_eq!(str_of(&get["port"], probe), "admin");
    }
    let annotations = labels(&pod["metadata"]["annotations"]);
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    assert_eq!(
        annotations["prometheus.io/port"],
        ports["admin"].to_string()
    );
    for port in service["spec"]["ports"].as_sequence().unwrap() {
        let target = str_of(&port["targetPort"], "targetPort");
        assert!(
            ports.contains_key(target),
            "Service targets no port {target}"
        );
    }
    assert!(
        !service["spec"]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|p| p["targetPort"] == "admin"),
        "the Service must not expose the unauthenticated admin port"
    );

    // Mounts name volumes; volumes name the ConfigMap and the Secret.
    let volumes: BTreeMap<&str, &Value> = pod["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| (str_of(&v["name"], "volume name"), v))
        .collect();
    let init = pod["spec"]["initContainers"].as_sequence().unwrap();
    for container in init.iter().chain(containers) {
        for mount in container["volumeMounts"].as_sequence().unwrap() {
            let name = str_of(&mount["name"], "mount name");
            assert!(volumes.contains_key(name), "no volume {name}");
        }
    }
    assert_eq!(
        volumes["config"]["configMap"]["name"],
        m["ConfigMap"]["metadata"]["name"]
    );
    assert_eq!(
        volumes["users"]["secret"]["secretName"],
        m["Secret"]["metadata"]["name"]
    );
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();

    // The file the init container assembles passes Causeway's config check and agrees
    // with the container's ports and the pod's grace period.
    let script = init[0]["command"].as_sequence().unwrap().last().unwrap();
    let script = str_of(script, "init command");
    assert!(
        script.contains("/etc/causeway/config/causeway.toml")
            && script.contains("/etc/causeway/users/users.toml")
            && script.contains("--check-config"),
        "{script}"
    );
    let args: Vec<&str> = proxy["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| str_of(a, "arg"))
        .collect();
    assert_eq!(args, ["--config", "/run/causeway/causeway.toml"]);
    let config_text = str_of(&m["ConfigMap"]["data"]["causeway.toml"], "causeway.toml");
    let users_text = str_of(&m["Secret"]["stringData"]["users.toml"], "users.toml");
    assert!(
        !config_text.contains("[[users]]"),
        "users belong in the Secret"
    );
    let config = causeway::config::Config::from_toml(&format!("{config_text}{users_text}"))
        .unwrap_or_else(|e| panic!("the assembled config is rejected: {e}"));
    let port_of = |addr: &str| addr.rsplit_once(':').unwrap().1.parse::<u64>().unwrap();
    assert_eq!(port_of(&config.proxy.listen), ports["postgres"]);
    assert_eq!(port_of(&config.proxy.admin_listen), ports["admin"]);
    assert!(config.proxy.listen.starts_with("0.0.0.0:"));
    assert_eq!(
        config.session_store.kind.as_str(),
        "redis",
        "pods share floors"
    );
    assert_eq!(config.users.len(), 1);
    assert!(config.proxy.shutdown_timeout.as_secs() < grace);
}
