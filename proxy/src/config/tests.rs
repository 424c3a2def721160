//! Tests for config parsing, defaults and validation.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use super::*;

const MINIMAL: &str = include_str!("../../../config/minimal.toml");
const REFERENCE: &str = include_str!("../../../config/causeway.toml");

fn minimal() -> Config {
    Config::from_toml(MINIMAL).unwrap()
}

/// Applies `change` to the minimal config and expects validation to fail on `field` with a
/// message containing every one of `needles`.
fn assert_rejects(change: impl FnOnce(&mut Config), field: &str, needles: &[&str]) {
    let mut config = minimal();
    change(&mut config);
    let err = config.validate().unwrap_err();
    assert_eq!(err.field(), Some(field), "{err}");
    let text = err.to_string();
    assert!(text.starts_with(field), "{text}");
    for needle in needles {
        assert!(text.contains(needle), "{text:?} should contain {needle:?}");
    }
}

fn parse_error(text: &str) -> String {
    match Config::from_toml(text) {
        Err(ConfigError::Parse(err)) => err.to_string(),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn minimal_file_parses_with_documented_values_and_defaults() {
    let config = minimal();
    assert_eq!(config.proxy, ProxyConfig::default());
    assert_eq!(config.proxy.listen, "127.0.0.1:6432");
    assert_eq!(config.proxy.admin_listen, "127.0.0.1:9930");
    assert_eq!(config.proxy.pool_mode, PoolMode::Transaction);
    assert_eq!(config.proxy.pool_size, 20);
    assert_eq!(config.proxy.max_client_connections, 1000);
    assert_eq!(config.proxy.connect_timeout, Duration::from_secs(5));
    assert_eq!(config.proxy.startup_timeout, Duration::from_secs(15));
    assert_eq!(config.proxy.checkout_timeout, Duration::from_secs(30));
    assert_eq!(config.proxy.client_idle_timeout, Duration::ZERO);
    assert_eq!(config.proxy.server_idle_timeout, Duration::from_secs(600));
    assert_eq!(config.proxy.server_lifetime, Duration::from_secs(3600));
    assert_eq!(config.proxy.max_message_bytes, 67_108_864);
    assert_eq!(config.proxy.max_client_prepared_bytes, 16 << 20);
    assert_eq!(config.proxy.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(config.proxy.max_prepared_statements, 500);
    assert_eq!(config.proxy.max_client_prepared_statements, 10_000);
    assert_eq!(config.proxy.workers, 0);
    assert!(config.proxy.worker_threads() >= 1);
    let auto: Vec<usize> = [1, 2, 3, 4, 8, 64]
        .into_iter()
        .map(super::proxy::auto_workers)
        .collect();
    assert_eq!(auto, [1, 1, 1, 2, 4, 32]);

    assert_eq!(config.primary.host, "127.0.0.1");
    assert_eq!(config.primary.port, 5432);
    let replicas: Vec<_> = config
        .replicas
        .iter()
        .map(|r| (r.name.as_str(), r.host.as_str(), r.port, r.weight))
        .collect();
    assert_eq!(
        replicas,
        [
            ("replica1", "127.0.0.1", 5433, 1),
            ("replica2", "127.0.0.1", 5434, 1)
        ]
    );
    let app = config.user("app").unwrap();
    assert_eq!(app.password.as_deref(), Some("secret"));
    assert_eq!(app.pool_size, None);
    assert!(config.user("nobody").is_none());
    assert_eq!(config.pool_size_for("app"), 20);
    assert_eq!(config.replica("replica2").unwrap().port, 5434);

    assert_eq!(config.auth.method, AuthMethod::ScramSha256);
    assert_eq!(config.consistency.default, ConsistencyLevel::Session);
    assert_eq!(config.consistency.max_wait, Duration::from_millis(20));
    assert_eq!(config.consistency.max_lag, Duration::from_secs(1));
    assert_eq!(config.lag, LagConfig::default());
    assert_eq!(config.lag.poll_interval, Duration::from_millis(50));
    assert_eq!(config.lag.max_bytes, 16_777_216);
    assert_eq!(config.lag.max_seconds, Duration::from_secs(5));
    assert_eq!(config.lag.readmit_fraction, 0.5);
    assert_eq!(config.lag.readmit_after, Duration::from_secs(1));
    assert_eq!(config.lag.stale_after, Duration::from_secs(1));
    assert_eq!(config.lag.probe_timeout, Duration::from_secs(1));
    assert_eq!(config.monitor, MonitorConfig::default());
    assert_eq!(config.monitor.database, "postgres");
    assert_eq!(config.session.key, SessionKeyMode::Connection);
    assert_eq!(config.session_store, SessionStoreConfig::default());
    assert_eq!(config.session_store.kind, SessionStoreKind::Memory);
    assert_eq!(config.session_store.url, "redis://127.0.0.1:6379");
    assert_eq!(config.session_store.session_ttl, Duration::from_secs(60));
    assert_eq!(config.session_store.timeout, Duration::from_millis(10));
    assert!(config.session_store.cluster_nodes.is_empty());
    assert!(config.rules.is_empty());
    assert_eq!(config.functions, FunctionsConfig::default());
}

#[test]
fn reference_file_parses_and_states_the_defaults() {
    let reference = Config::from_toml(REFERENCE).unwrap();
    // The reference file sets every key to its default over the same nodes and users.
    assert_eq!(reference, minimal());
}

#[test]
fn reference_file_rule_examples_parse() {
    let examples: String = REFERENCE
        .lines()
        .skip_while(|line| *line != "# [[rules]]")
        .take_while(|line| line.starts_with('#'))
        .map(|line| format!("{}\n", line.trim_start_matches('#').trim_start()))
        .collect();
    let config = Config::from_toml(&format!("{MINIMAL}\n{examples}")).unwrap();
    assert_eq!(config.rules.len(), 4);
    assert_eq!(config.rules[2].max_lag, Some(Duration::from_secs(30)));
    assert_eq!(config.rules[3].route, Some(RouteTarget::Primary));
}

#[test]
fn only_node_addresses_are_required() {
    let config = Config::from_toml("[primary]\nhost = \"db\"\nport = 5432\n").unwrap();
    assert!(config.replicas.is_empty());
    assert!(config.users.is_empty());
    assert_eq!(config.proxy, ProxyConfig::default());

    let err = parse_error("[proxy]\nlisten = \"127.0.0.1:6432\"\n");
    assert!(err.contains("missing field `primary`"), "{err}");
    let err = parse_error("[primary]\nhost = \"db\"\n");
    assert!(err.contains("missing field `port`"), "{err}");
    let err = parse_error(&format!(
        "{MINIMAL}\n[[replicas]]\nname = \"r3\"\nport = 1\n"
    ));
    assert!(err.contains("missing field `host`"), "{err}");
}

#[test]
fn design_rules_example_parses() {
    let rules = r#"
[[rules]]
tag = "checkout"                 # matches /* causeway: tag=checkout */
consistency = "strong"

[[rules]]
tables = ["accounts", "inventory"]   # any statement touching these tables
consistency = "strong"

[[rules]]
application_name = "reporting"
consistency = "eventual"
"#;
    let config = Config::from_toml(&format!("{MINIMAL}{rules}")).unwrap();
    let matchers: Vec<_> = config.rules.iter().map(|r| r.matcher().unwrap()).collect();
    let tables = ["accounts".to_owned(), "inventory".to_owned()];
    assert_eq!(
        matchers,
        [
            RuleMatcher::Tag("checkout"),
            RuleMatcher::Tables(&tables),
            RuleMatcher::ApplicationName("reporting"),
        ]
    );
    assert_eq!(
        config.rules[2].consistency,
        Some(ConsistencyLevel::Eventual)
    );
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let cases = [
        ("[proxy]\n", "pol_size"),
        ("[lag]\n", "max_byte"),
        ("[session]\n", "keys"),
    ];
    for (section, typo) in cases {
        let text = MINIMAL.replacen(section, &format!("{section}{typo} = 1\n"), 1);
        assert_ne!(text, MINIMAL, "{section}");
        let err = parse_error(&text);
        assert!(err.contains(&format!("unknown field `{typo}`")), "{err}");
        assert!(err.contains("line"), "{err}");
    }
    let err = parse_error(&format!("{MINIMAL}\n[sesion_store]\nkind = \"redis\"\n"));
    assert!(err.contains("unknown field `sesion_store`"), "{err}");
    let err = parse_error(&format!(
        "{MINIMAL}\n[[users]]\nname = \"b\"\npasword = \"x\"\n"
    ));
    assert!(err.contains("unknown field `pasword`"), "{err}");
}

#[test]
fn unknown_keywords_are_rejected_with_the_choices() {
    let cases = [
        (
            "pool_mode = \"transaction\"",
            "pool_mode = \"statement\"",
            "statement",
        ),
        (
            "default = \"session\"",
            "default = \"linearizable\"",
            "linearizable",
        ),
        ("key = \"connection\"", "key = \"tenant\"", "tenant"),
        ("kind = \"memory\"", "kind = \"etcd\"", "etcd"),
    ];
    for (from, to, value) in cases {
        let err = parse_error(&MINIMAL.replacen(from, to, 1));
        assert!(err.contains(&format!("unknown variant `{value}`")), "{err}");
        assert!(err.contains("expected"), "{err}");
    }
    let err = parse_error(&format!("{MINIMAL}\n[auth]\nmethod = \"scram\"\n"));
    assert!(err.contains("`scram-sha-256`"), "{err}");
    let config = Config::from_toml(&format!("{MINIMAL}\n[auth]\nmethod = \"md5\"\n")).unwrap();
    assert_eq!(config.auth.method, AuthMethod::Md5);
}

#[test]
fn keywords_parse_from_hint_text() {
    assert_eq!("Eventual".parse(), Ok(ConsistencyLevel::Eventual));
    assert_eq!(" bounded ".parse(), Ok(ConsistencyLevel::Bounded));
    assert_eq!("replica".parse(), Ok(RouteTarget::Replica));
    assert_eq!("scram-sha-256".parse(), Ok(AuthMethod::ScramSha256));
    let err = "sometimes".parse::<ConsistencyLevel>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown value \"sometimes\"; expected one of: strong, session, bounded, eventual"
    );
    for level in ConsistencyLevel::ALL {
        assert_eq!(level.to_string().parse(), Ok(*level));
    }
}

#[test]
fn durations_in_the_file() {
    let text = MINIMAL.replacen("max_wait = \"20ms\"", "max_wait = \"1.5s\"", 1);
    assert_eq!(
        Config::from_toml(&text).unwrap().consistency.max_wait,
        Duration::from_millis(1500)
    );
    let text = MINIMAL.replacen("max_wait = \"20ms\"", "max_wait = \"0\"", 1);
    assert_eq!(
        Config::from_toml(&text).unwrap().consistency.max_wait,
        Duration::ZERO
    );
    let cases = [
        ("max_wait = \"10\"", "needs a unit"),
        ("max_wait = \"soon\"", "\"soon\""),
        ("max_wait = 20", "expected a duration string"),
        ("max_wait = \"-20ms\"", "negative"),
    ];
    for (replacement, needle) in cases {
        let err = parse_error(&MINIMAL.replacen("max_wait = \"20ms\"", replacement, 1));
        assert!(err.contains(needle), "{replacement}: {err}");
        assert!(err.contains("max_wait"), "{replacement}: {err}");
    }
}

#[test]
fn proxy_values_are_validated() {
    assert_rejects(
        |c| c.proxy.listen = "localhost:6432".into(),
        "proxy.listen",
        &["\"localhost:6432\"", "socket address"],
    );
    assert_rejects(
        |c| c.proxy.admin_listen = "9930".into(),
        "proxy.admin_listen",
        &["\"9930\""],
    );
    assert_rejects(
        |c| c.proxy.admin_listen = c.proxy.listen.clone(),
        "proxy.admin_listen",
        &["own port"],
    );
    assert_rejects(
        |c| c.proxy.pool_size = 0,
        "proxy.pool_size",
        &["0", "at least 1"],
    );
    assert_rejects(
        |c| c.proxy.max_client_connections = 0,
        "proxy.max_client_connections",
        &["at least 1"],
    );
    assert_rejects(
        |c| c.proxy.max_message_bytes = 1023,
        "proxy.max_message_bytes",
        &["1023", "between 1024 and 1073741824"],
    );
    assert_rejects(
        |c| c.proxy.max_message_bytes = (1 << 30) + 1,
        "proxy.max_message_bytes",
        &["1073741825"],
    );
    assert_rejects(
        |c| c.proxy.connect_timeout = Duration::ZERO,
        "proxy.connect_timeout",
        &["zero"],
    );
    let mut config = minimal();
    config.proxy.listen = "[::1]:6432".into();
    config.proxy.max_message_bytes = 1024;
    config.validate().unwrap();
}

#[test]
fn nodes_are_validated() {
    assert_rejects(|c| c.primary.port = 0, "primary.port", &["0"]);
    assert_rejects(|c| c.primary.host.clear(), "primary.host", &["empty"]);
    assert_rejects(|c| c.replicas[1].port = 0, "replicas[1].port", &["0"]);
    assert_rejects(
        |c| c.replicas[0].name.clear(),
        "replicas[0].name",
        &["empty"],
    );
    assert_rejects(
        |c| c.replicas[1].name = "replica1".into(),
        "replicas[1].name",
        &["\"replica1\"", "unique"],
    );
    assert_rejects(
        |c| c.replicas[0].name = "primary".into(),
        "replicas[0].name",
        &["\"primary\"", "reserved"],
    );
    assert_rejects(
        |c| c.replicas[0].weight = 0,
        "replicas[0].weight",
        &["1 or more"],
    );
    let mut config = minimal();
    config.replicas.clear();
    config.validate().unwrap();
}

#[test]
fn users_are_validated() {
    assert_rejects(|c| c.users[0].name.clear(), "users[0].name", &["empty"]);
    assert_rejects(
        |c| c.users.push(c.users[0].clone()),
        "users[1].name",
        &["\"app\"", "unique"],
    );
    assert_rejects(
        |c| c.users[0].password = None,
        "users[0].password",
        &["\"app\"", "\"scram-sha-256\"", "trust"],
    );
    assert_rejects(
        |c| {
            c.auth.method = AuthMethod::Md5;
            c.users[0].password = None;
        },
        "users[0].password",
        &["\"md5\""],
    );
    assert_rejects(
        |c| c.users[0].pool_size = Some(0),
        "users[0].pool_size",
        &["at least 1"],
    );
    let mut config = minimal();
    config.auth.method = AuthMethod::Trust;
    config.users[0].password = None;
    config.users[0].pool_size = Some(5);
    config.validate().unwrap();
    assert_eq!(config.pool_size_for("app"), 5);
}

#[test]
fn secrets_and_auth_lookup_are_validated() {
    let scram = postgres_protocol::password::scram_sha_256(b"pw");
    let mut config = minimal();
    config.users[0].password = Some(scram.clone());
    config.validate().unwrap();
    config.users[0].password = Some("md56a422f785c9e20873908ce25d1736ae2".into());
    config.validate().unwrap();
    let broken = scram[..scram.len() - 4].to_owned();
    assert_rejects(
        |c| c.users[0].password = Some(broken),
        "users[0].password",
        &["pg_authid", "SCRAM-SHA-256$"],
    );
    assert_rejects(
        |c| c.auth.auth_user = Some("nobody".into()),
        "auth.auth_user",
        &["\"nobody\"", "[[users]]"],
    );
    let secret = scram;
    assert_rejects(
        move |c| {
            c.users[0].password = Some(secret);
            c.auth.auth_user = Some("app".into());
        },
        "auth.auth_user",
        &["SCRAM secret"],
    );
    assert_rejects(
        |c| {
            c.auth.auth_user = Some("app".into());
            c.auth.auth_query = "SELECT 1".into();
        },
        "auth.auth_query",
        &["$1"],
    );
    assert_rejects(
        |c| c.auth.auth_cache_ttl = Duration::ZERO,
        "auth.auth_cache_ttl",
        &["60s"],
    );
    let config = Config::from_toml(&format!(
        "{MINIMAL}\n[auth]\nauth_user = \"app\"\nauth_cache_ttl = \"5m\"\n"
    ))
    .unwrap();
    assert_eq!(config.auth.auth_query, DEFAULT_AUTH_QUERY);
    assert_eq!(config.auth.auth_cache_ttl, Duration::from_secs(300));
    assert!(!config.auth.allow_server_cleartext);
}

#[test]
fn the_monitor_logs_in_with_a_plaintext_password_only() {
    let scram = postgres_protocol::password::scram_sha_256(b"pw");
    let config = Config::from_toml(&format!(
        "[primary]\nhost = \"h\"\nport = 5432\n\
         [[users]]\nname = \"s\"\npassword = \"{scram}\"\n\
         [[users]]\nname = \"m\"\npassword = \"md56a422f785c9e20873908ce25d1736ae2\"\n\
         [[users]]\nname = \"p\"\npassword = \"plain\"\n"
    ))
    .unwrap();
    assert_eq!(config.control_login(), ("p", Some("plain")));
    let mut secrets_only = config;
    secrets_only.users.pop();
    assert_eq!(secrets_only.control_login(), ("s", None));
}

#[test]
fn lag_is_validated() {
    for bad in [0.0, -0.5, 1.5, f64::NAN] {
        assert_rejects(
            |c| c.lag.readmit_fraction = bad,
            "lag.readmit_fraction",
            &["greater than 0 and at most 1"],
        );
    }
    assert_rejects(
        |c| c.lag.poll_interval = Duration::ZERO,
        "lag.poll_interval",
        &["zero"],
    );
    assert_rejects(
        |c| c.lag.stale_after = Duration::from_millis(10),
        "lag.stale_after",
        &["10ms", "poll_interval"],
    );
    let mut config = minimal();
    config.lag.readmit_fraction = 1.0;
    config.validate().unwrap();
}

#[test]
fn monitor_database_is_read_and_validated() {
    let config =
        Config::from_toml(&format!("{MINIMAL}\n[monitor]\ndatabase = \"mysite\"\n")).unwrap();
    assert_eq!(config.monitor.database, "mysite");
    assert!(parse_error(&format!("{MINIMAL}\n[monitor]\ndbname = \"x\"\n")).contains("dbname"));
    assert_rejects(
        |c| c.monitor.database = String::new(),
        "monitor.database",
        &["empty", "postgres"],
    );
    assert_rejects(
        |c| c.monitor.database = "a\0b".into(),
        "monitor.database",
        &["NUL"],
    );
    assert_rejects(
        |c| c.monitor.database = "d".repeat(64),
        "monitor.database",
        &["64 bytes", "63"],
    );
    let mut config = minimal();
    config.monitor.database = "d".repeat(63);
    config.validate().unwrap();
}

#[test]
fn session_ttl_must_outlast_eviction() {
    assert_rejects(
        |c| c.session_store.session_ttl = Duration::from_secs(6),
        "session_store.session_ttl",
        &["6s", "6.05s", "stale read"],
    );
    assert_rejects(
        |c| c.lag.max_seconds = Duration::from_secs(59),
        "session_store.session_ttl",
        &["60s", "lag.max_seconds"],
    );
    let mut config = minimal();
    config.session_store.session_ttl = Duration::from_millis(6050);
    config.validate().unwrap();
}

#[test]
fn redis_store_needs_an_address() {
    let redis = |c: &mut Config| c.session_store.kind = SessionStoreKind::Redis;
    assert_rejects(
        |c| {
            redis(c);
            c.session_store.url = "http://cache:6379".into();
        },
        "session_store.url",
        &[
            "\"http://cache:6379\"",
            "redis://",
            "rediss://",
            "redis+sentinel://",
        ],
    );
    assert_rejects(
        |c| {
            redis(c);
            c.session_store.url.clear();
        },
        "session_store.url",
        &["cluster_nodes"],
    );
    assert_rejects(
        |c| {
            redis(c);
            c.session_store.cluster_nodes = vec!["a:7000".into(), String::new()];
        },
        "session_store.cluster_nodes[1]",
        &["host:port"],
    );
    assert_rejects(
        |c| c.session_store.timeout = Duration::ZERO,
        "session_store.timeout",
        &["zero"],
    );
    let mut config = minimal();
    redis(&mut config);
    config.validate().unwrap();
    config.session_store.url.clear();
    config.session_store.cluster_nodes = vec!["a:7000".into(), "b:7000".into()];
    config.validate().unwrap();
    // A bad URL does not matter while the store is in memory.
    let mut config = minimal();
    config.session_store.url = "nonsense".into();
    config.validate().unwrap();
}

#[test]
fn rules_need_one_matcher_and_an_action() {
    let strong = RuleConfig {
        tag: Some("checkout".into()),
        consistency: Some(ConsistencyLevel::Strong),
        ..RuleConfig::default()
    };
    assert_rejects(
        |c| {
            c.rules.push(strong.clone());
            c.rules.push(RuleConfig {
                tables: vec!["accounts".into()],
                ..strong.clone()
            });
        },
        "rules[1]",
        &["2 matchers", "exactly one"],
    );
    assert_rejects(
        |c| {
            c.rules.push(RuleConfig {
                tag: None,
                ..strong.clone()
            })
        },
        "rules[0]",
        &["0 matchers"],
    );
    assert_rejects(
        |c| {
            c.rules.push(RuleConfig {
                consistency: None,
                ..strong.clone()
            })
        },
        "rules[0]",
        &["no action"],
    );
    assert_rejects(
        |c| {
            c.rules.push(RuleConfig {
                max_lag: Some(Duration::from_secs(1)),
                ..strong.clone()
            })
        },
        "rules[0].max_lag",
        &["bounded"],
    );
    assert_rejects(
        |c| {
            c.rules.push(RuleConfig {
                tag: None,
                tables: vec!["t".into(), " ".into()],
                ..strong.clone()
            })
        },
        "rules[0].tables[1]",
        &["empty"],
    );
    let mut config = minimal();
    config.rules.push(RuleConfig {
        consistency: None,
        route: Some(RouteTarget::Replica),
        ..strong
    });
    config.validate().unwrap();
}

#[test]
fn functions_are_validated() {
    assert_rejects(
        |c| {
            c.functions.writes = vec!["audit_log".into()];
            c.functions.read_only = vec!["Audit_Log".into()];
        },
        "functions.read_only",
        &["\"Audit_Log\"", "functions.writes"],
    );
    assert_rejects(
        |c| c.functions.writes = vec![String::new()],
        "functions.writes[0]",
        &["empty"],
    );
}

#[test]
fn load_names_the_file() {
    let dir = std::env::temp_dir().join(format!("causeway-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let missing = dir.join("missing.toml");
    let err = Config::load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.toml"), "{err}");

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, MINIMAL.replace("port = 5432", "port = 0")).unwrap();
    let err = Config::load(&bad).unwrap_err();
    assert!(err.to_string().contains("bad.toml"), "{err}");
    assert_eq!(err.field(), Some("primary.port"));
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.starts_with("primary.port: 0"), "{source}");

    let good = dir.join("good.toml");
    std::fs::write(&good, MINIMAL).unwrap();
    assert_eq!(Config::load(&good).unwrap(), minimal());
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!Path::new(&good).exists());
}

#[test]
fn debug_output_hides_passwords() {
    let text = format!("{:?}", minimal());
    assert!(!text.contains("secret"), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
}

#[test]
fn debug_output_never_shows_a_password() {
    let config = Config::from_toml(
        "[primary]\nhost = \"127.0.0.1\"\nport = 5432\n\
         [[users]]\nname = \"app\"\npassword = \"s3cret-user\"\n\
         [session_store]\nkind = \"redis\"\nurl = \"redis://app:s3cret-redis@127.0.0.1:6379/0\"\n",
    )
    .expect("config");
    let shown = format!("{config:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    let endpoint = crate::config::StoreEndpoint::parse(&config.session_store).expect("endpoint");
    assert!(!format!("{endpoint:?}").contains("s3cret"));
    let login = crate::backend::Login::with_password("app", "app", Some("s3cret"));
    assert!(!format!("{login:?}").contains("s3cret"));
}

/// docs/configuration.md carries config/causeway.toml verbatim, so the documented keys and
/// defaults are the ones these tests check against the code.
#[test]
fn reference_file_is_the_one_in_the_docs() {
    let doc = include_str!("../../../docs/configuration.md");
    let block = format!("```toml\n{REFERENCE}```\n<!-- END config/causeway.toml -->");
    assert!(
        doc.contains(&block),
        "docs/configuration.md does not carry config/causeway.toml as it is: run scripts/sync-docs.sh"
    );
}
